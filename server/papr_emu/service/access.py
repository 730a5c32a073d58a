"""AccessService (minting, revoking and listing tokens) and the check of each call's token.

Example::

    guard = Guard(tokens)   # tokens: the server's TokenStore, or None when tokens are off
    await guard.check("/papr.v1.RtasService/SetIndicator", request, context)  # aborts if refused
"""

from __future__ import annotations

from typing import Any, Final

import grpc
import structlog

from papr.v1 import access_pb2, access_pb2_grpc

from ..access import Grant, Role, TokenStore, bearer, decide
from ..model import FailedPrecondition, InvalidArgument, NotFound, Platforms
from .errors import abort

ROLE_TO_PB: Final = {Role.ADMIN: access_pb2.ROLE_ADMIN, Role.MANAGER: access_pb2.ROLE_MANAGER,
                     Role.GUEST: access_pb2.ROLE_GUEST}  # fmt: skip
ROLE_FROM_PB: Final = {v: k for k, v in ROLE_TO_PB.items()}

log = structlog.get_logger("papr_emu.access")


def token_to_pb(grant: Grant, token: str = "") -> access_pb2.AccessToken:
    return access_pb2.AccessToken(
        token=token, token_id=grant.token_id, role=ROLE_TO_PB[grant.role], platform=grant.platform
    )


class Guard:
    """Refuses a call whose bearer token may not make it (see :mod:`papr_emu.access`); off without tokens."""

    def __init__(self, tokens: TokenStore | None, certificate_roles: dict[str, Grant] | None = None) -> None:
        self._tokens = tokens
        self._subjects = certificate_roles or {}

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    async def check(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        if self._tokens is None:
            return
        token = bearer(context.invocation_metadata())
        grant = self._tokens.identify(token) if token is not None else self._by_certificate(context)
        # An empty platform name is let through: the handler refuses it (it names no platform).
        platform = getattr(request, "platform", "")
        denial = decide(grant, method, platform or (grant.platform if grant else ""), token is not None or bool(grant))
        if denial is not None:
            # The token itself is never logged; its id says which one it was.
            log.info("access.denied", method=method, token_id=grant.token_id if grant else None, code=denial.code)
            await context.abort(getattr(grpc.StatusCode, denial.code), denial.message)

    def _by_certificate(self, context: grpc.aio.ServicerContext) -> Grant | None:
        """The role of the peer's (verified, mTLS) certificate subject, if one is mapped."""
        if not self._subjects:
            return None
        subjects = context.auth_context().get("x509_subject") or []
        return self._subjects.get(subjects[0].decode(errors="replace")) if subjects else None


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    def __init__(self, platforms: Platforms, tokens: TokenStore | None) -> None:
        self._platforms = platforms
        self._tokens = tokens

    async def _store(self, context: grpc.aio.ServicerContext) -> TokenStore:
        if self._tokens is None:
            await abort(
                context, FailedPrecondition("this server requires no tokens (start it with --admin-token-file)")
            )
        return self._tokens

    async def MintToken(
        self, request: access_pb2.MintTokenRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.MintTokenResponse:
        tokens = await self._store(context)
        role = ROLE_FROM_PB.get(request.role)
        if role is None:
            await abort(
                context, InvalidArgument("role", request.role, "must be ROLE_ADMIN, ROLE_MANAGER or ROLE_GUEST")
            )
        if role is Role.ADMIN and request.platform:
            await abort(context, InvalidArgument("platform", request.platform, "an admin token is for no platform"))
        if role is not Role.ADMIN:
            if not request.platform:
                await abort(context, InvalidArgument("platform", "", f"a {role.value} token is for one platform"))
            try:
                self._platforms.get(request.platform)
            except NotFound as error:
                await abort(context, error)
        minted = tokens.mint(role, request.platform)
        log.info("access.minted", token_id=minted.grant.token_id, role=role.value, platform=request.platform)
        return access_pb2.MintTokenResponse(token=token_to_pb(minted.grant, minted.token))

    async def RevokeToken(
        self, request: access_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.RevokeTokenResponse:
        tokens = await self._store(context)
        if request.token_id == tokens.admin_id:
            await abort(context, FailedPrecondition("the admin token given at start cannot be revoked"))
        if not tokens.revoke(request.token_id):
            await abort(context, NotFound("token_id", request.token_id, "token"))
        log.info("access.revoked", token_id=request.token_id)
        return access_pb2.RevokeTokenResponse()

    async def ListTokens(
        self, request: access_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.ListTokensResponse:
        tokens = await self._store(context)
        return access_pb2.ListTokensResponse(tokens=[token_to_pb(g) for g in tokens.grants(request.platform)])
