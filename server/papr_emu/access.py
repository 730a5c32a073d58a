"""Who may call what: roles, bearer tokens, and the rule of each RPC. Pure Python, no gRPC.

A server started with an admin token requires a token on every RPC but health and
reflection. Tokens are random (256 bits); the store keeps only their SHA-256 digests,
so a presented token is hashed and looked up, and never compared byte by byte with
a secret (the admin token's digest is compared with ``hmac.compare_digest``).

Example::

    >>> tokens = TokenStore("s3cret-admin-token-of-32-chars-or-more")
    >>> guest = tokens.mint(Role.GUEST, "p")
    >>> grant = tokens.identify(guest.token)
    >>> decide(grant, "/papr.v1.RtasService/SetIndicator", "p") is None
    True
    >>> decide(grant, "/papr.v1.RtasService/SetIndicator", "q").code
    'PERMISSION_DENIED'
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Final

#: Shorter admin tokens are refused at start: they could be guessed.
MIN_ADMIN_TOKEN_LENGTH: Final = 16


class Role(enum.Enum):
    ADMIN = "admin"
    MANAGER = "manager"
    GUEST = "guest"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a presented token allows (``platform`` is empty for an admin)."""

    token_id: str
    role: Role
    platform: str


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A new token: the secret (shown once) and what it grants."""

    token: str
    grant: Grant


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused call: the gRPC status name and a one-line message."""

    code: str  # "UNAUTHENTICATED" or "PERMISSION_DENIED"
    message: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The tokens in force; thread-safe."""

    def __init__(self, admin_token: str) -> None:
        if len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(f"the admin token must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
        self._admin_digest = _digest(admin_token)
        self.admin_id = self._admin_digest[:16]
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}  # by digest

    def identify(self, token: str) -> Grant | None:
        """The grant of a presented token, or None if it is unknown or revoked."""
        digest = _digest(token)
        if hmac.compare_digest(digest, self._admin_digest):
            return Grant(self.admin_id, Role.ADMIN, "")
        return self._grants.get(digest)

    def mint(self, role: Role, platform: str) -> MintedToken:
        token = f"papr-{role.value}-{secrets.token_urlsafe(32)}"
        digest = _digest(token)
        grant = Grant(digest[:16], role, "" if role is Role.ADMIN else platform)
        with self._lock:
            self._grants[digest] = grant
        return MintedToken(token, grant)

    def revoke(self, token_id: str) -> bool:
        """Revoke a minted token by id; False if there is none (the start-up admin token cannot be)."""
        with self._lock:
            for digest, grant in self._grants.items():
                if grant.token_id == token_id:
                    del self._grants[digest]
                    return True
        return False

    def revoke_platform(self, platform: str) -> int:
        """Revoke every token of a platform (it was deleted); how many there were."""
        with self._lock:
            gone = [d for d, g in self._grants.items() if g.platform == platform and g.role is not Role.ADMIN]
            for digest in gone:
                del self._grants[digest]
        return len(gone)

    def grants(self, platform: str = "") -> list[Grant]:
        """The minted tokens in force (of one platform if given), sorted by id; no secrets."""
        with self._lock:
            found = [g for g in self._grants.values() if not platform or g.platform == platform]
        return sorted(found, key=lambda g: g.token_id)


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call an RPC: its roles besides admin; ``scoped`` if it acts on one platform."""

    roles: frozenset[Role]
    scoped: bool = True


_ADMIN_ONLY: Final = Rule(frozenset(), scoped=False)
_MANAGER: Final = Rule(frozenset({Role.MANAGER}))
_GUEST: Final = Rule(frozenset({Role.GUEST}))
_READ: Final = Rule(frozenset({Role.MANAGER, Role.GUEST}))

#: The rule of each service's RPCs, by service, then by method ("*": every method).
RULES: Final[dict[str, dict[str, Rule]]] = {
    "papr.v1.PlatformService": {
        "CreatePlatform": _ADMIN_ONLY,
        "ListPlatforms": _ADMIN_ONLY,
        "DeletePlatform": _ADMIN_ONLY,
        "GetPlatform": _READ,
        "ListConnectors": _READ,
        "GetConnector": _READ,
        "GetDeviceTree": _READ,
        "SnapshotPlatform": _MANAGER,
        "RestorePlatform": _ADMIN_ONLY,  # it creates a platform
    },
    "papr.v1.HotplugService": {"*": _MANAGER},
    "papr.v1.FaultService": {"*": _MANAGER},  # fault rules and the guest's conduct report
    "papr.v1.RtasService": {"*": _GUEST},
    "papr.v1.InterruptService": {"*": _GUEST},
    "papr.v1.GuestService": {"*": _GUEST},
    "papr.v1.AccessService": {"*": _ADMIN_ONLY},
}
#: Services anyone may call: load balancers and tools need them without a token.
OPEN_SERVICES: Final = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
)


def rule_of(method: str) -> Rule | None:
    """The rule of ``/package.Service/Method``; None for an open service (and unknown methods)."""
    service, _, name = method.lstrip("/").partition("/")
    rules = RULES.get(service)
    if rules is None:
        return None
    return rules.get(name) or rules.get("*") or _ADMIN_ONLY


def decide(grant: Grant | None, method: str, platform: str, token_given: bool = True) -> Denial | None:
    """None if ``grant`` may call ``method`` on ``platform`` (the request's platform field); else why not.

    The messages never depend on whether ``platform`` exists.
    """
    rule = rule_of(method)
    if rule is None:
        return None
    if grant is None:
        if not token_given:
            return Denial(
                "UNAUTHENTICATED", "this server requires a token: send the metadata 'authorization: Bearer <token>'"
            )
        return Denial("UNAUTHENTICATED", "the bearer token is not valid (unknown, or revoked)")
    if grant.role is Role.ADMIN:
        return None
    name = method.rsplit("/", 1)[-1]
    if grant.role not in rule.roles:
        return Denial("PERMISSION_DENIED", f"a {grant.role.value} token may not call {name}")
    if rule.scoped and platform != grant.platform:
        return Denial("PERMISSION_DENIED", f"this {grant.role.value} token is for another platform than the request's")
    return None


def parse_role(text: str, where: str) -> tuple[Role, str]:
    """``"admin"``, ``"manager:P"`` or ``"guest:P"`` -> (role, platform); ValueError naming ``where``.

    >>> parse_role("guest:job7", "x")
    (<Role.GUEST: 'guest'>, 'job7')
    """
    name, _, platform = text.partition(":")
    try:
        role = Role(name)
    except ValueError:
        raise ValueError(f"{where}: {text!r}: the role is admin, manager:PLATFORM or guest:PLATFORM") from None
    if (role is Role.ADMIN) != (not platform):
        raise ValueError(f"{where}: {text!r}: admin takes no platform; manager and guest take one (guest:NAME)")
    return role, platform


def bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, or None."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
