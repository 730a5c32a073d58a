"""PlatformService: create, inspect and delete platforms; list their connectors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc

from papr.v1 import platform_pb2, platform_pb2_grpc

from ..access import Role, TokenStore
from ..model import InvalidArgument, Platforms
from ..model.limits import exhausted
from . import convert
from .access import token_to_pb
from .errors import call_or_abort
from .running import Runner

DEFAULT_PAGE_SIZE = 256
DTB_CHUNK = 1 << 20
MAX_PAGE_SIZE = 4096
_PAGE_TOKEN_PREFIX = "drc:"


def encode_page_token(next_index: int) -> str:
    return f"{_PAGE_TOKEN_PREFIX}{next_index:08x}"


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        if not token.startswith(_PAGE_TOKEN_PREFIX) or len(token) != len(_PAGE_TOKEN_PREFIX) + 8:
            raise ValueError(token)
        return int(token[len(_PAGE_TOKEN_PREFIX) :], 16)
    except ValueError:
        raise InvalidArgument("page_token", token, "not a next_page_token of this API") from None


class PlatformServicer(platform_pb2_grpc.PlatformServiceServicer):
    def __init__(self, platforms: Platforms, runner: Runner | None = None, tokens: TokenStore | None = None) -> None:
        self._platforms = platforms
        self._run = runner or Runner()
        self._tokens = tokens  # None: the server requires no tokens

    async def CreatePlatform(
        self, request: platform_pb2.CreatePlatformRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.CreatePlatformResponse:
        def create() -> platform_pb2.CreatePlatformResponse:
            geometry = convert.geometry_from_pb(request.geometry)
            coldplug = [
                (item.id, convert.plug_request_from_pb(item.spec, f"coldplug[{n}].spec"))
                for n, item in enumerate(request.coldplug)
            ]
            timeouts = convert.unplug_timeouts_from_pb(request.unplug_timeouts)
            platform = self._platforms.create(request.name, geometry, coldplug, timeouts)
            response = platform_pb2.CreatePlatformResponse(platform=convert.platform_to_pb(platform.info()))
            self._mint_tokens(platform.name, response)
            return response

        return await call_or_abort(context, self._run.blocking(create))

    def _mint_tokens(
        self, name: str, response: platform_pb2.CreatePlatformResponse | platform_pb2.RestorePlatformResponse
    ) -> None:
        """A new platform's manager and guest tokens, on a server that requires tokens."""
        if self._tokens is not None:
            manager = self._tokens.mint(Role.MANAGER, name)
            guest = self._tokens.mint(Role.GUEST, name)
            response.manager_token.CopyFrom(token_to_pb(manager.grant, manager.token))
            response.guest_token.CopyFrom(token_to_pb(guest.grant, guest.token))

    async def SnapshotPlatform(
        self, request: platform_pb2.SnapshotPlatformRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.SnapshotPlatformResponse:
        def take() -> platform_pb2.SnapshotPlatformResponse:
            document = self._platforms.get(request.platform).snapshot()
            data = json.dumps(document, separators=(",", ":")).encode()
            limit = self._platforms.limits.message_bytes
            if len(data) + 64 > limit:
                raise exhausted("message_bytes", limit, f"the snapshot takes {len(data)} bytes")
            return platform_pb2.SnapshotPlatformResponse(snapshot=data, format_version=document["version"])

        return await call_or_abort(context, self._run.blocking(take))

    async def RestorePlatform(
        self, request: platform_pb2.RestorePlatformRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.RestorePlatformResponse:
        def restore() -> platform_pb2.RestorePlatformResponse:
            try:
                document = json.loads(request.snapshot)
            except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested absurdly deep
                raise InvalidArgument("snapshot", "", f"is not a JSON document ({error})") from None
            platform = self._platforms.restore(request.name, document)
            response = platform_pb2.RestorePlatformResponse(platform=convert.platform_to_pb(platform.info()))
            self._mint_tokens(platform.name, response)
            return response

        return await call_or_abort(context, self._run.blocking(restore))

    async def GetPlatform(
        self, request: platform_pb2.GetPlatformRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.GetPlatformResponse:
        info = await call_or_abort(context, self._run.blocking(lambda: self._platforms.get(request.platform).info()))
        return platform_pb2.GetPlatformResponse(platform=convert.platform_to_pb(info))

    async def ListPlatforms(
        self, request: platform_pb2.ListPlatformsRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.ListPlatformsResponse:
        infos = await self._run.blocking(lambda: [p.info() for p in self._platforms.list()])
        return platform_pb2.ListPlatformsResponse(platforms=[convert.platform_to_pb(i) for i in infos])

    async def DeletePlatform(
        self, request: platform_pb2.DeletePlatformRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.DeletePlatformResponse:
        await call_or_abort(context, self._run.blocking(lambda: self._platforms.delete(request.platform)))
        if self._tokens is not None:
            self._tokens.revoke_platform(request.platform)  # a platform made later under this name is another
        return platform_pb2.DeletePlatformResponse()

    async def ListConnectors(
        self, request: platform_pb2.ListConnectorsRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.ListConnectorsResponse:
        def page() -> platform_pb2.ListConnectorsResponse:
            platform = self._platforms.get(request.platform)
            if request.page_size > MAX_PAGE_SIZE:
                raise InvalidArgument("page_size", request.page_size, f"must be at most {MAX_PAGE_SIZE}")
            connectors, next_index = platform.connectors(
                start_index=decode_page_token(request.page_token),
                limit=request.page_size or DEFAULT_PAGE_SIZE,
                drc_type=convert.drc_type_from_pb(request.type),
                attached_only=request.attached_only,
            )
            return platform_pb2.ListConnectorsResponse(
                connectors=[convert.connector_to_pb(c) for c in connectors],
                next_page_token=encode_page_token(next_index) if next_index is not None else "",
            )

        return await call_or_abort(context, self._run.blocking(page))

    async def GetConnector(
        self, request: platform_pb2.GetConnectorRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.GetConnectorResponse:
        info = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).connector(request.drc_index))
        )
        return platform_pb2.GetConnectorResponse(connector=convert.connector_to_pb(info))

    async def GetDeviceTree(
        self, request: platform_pb2.GetDeviceTreeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[platform_pb2.GetDeviceTreeResponse]:
        dtb = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).device_tree_blob())
        )
        for offset in range(0, len(dtb), DTB_CHUNK):
            yield platform_pb2.GetDeviceTreeResponse(chunk=dtb[offset : offset + DTB_CHUNK], total_size=len(dtb))
