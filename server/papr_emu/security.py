"""How the server protects itself: TLS material, the admin token, and which listeners are safe.

Safe defaults without friction: on loopback addresses and unix sockets a server
without TLS and tokens works as it always did; any other listener needs both
TLS and an admin token (so tokens are required), or the operator's explicit
``--insecure``. Unix sockets are created with mode 0600 unless told otherwise.

Example::

    security = Security.load(tls_cert=Path("s.pem"), tls_key=Path("s.key"), admin_token_file=Path("admin"))
    security.check_listeners(["0.0.0.0:50051"])   # SecurityError unless TLS and tokens (or insecure)
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .access import Grant, TokenStore, parse_role

#: The environment variable that may hold the admin token (instead of --admin-token-file).
ADMIN_TOKEN_ENV: Final = "PAPR_EMU_ADMIN_TOKEN"
DEFAULT_UNIX_SOCKET_MODE: Final = 0o600


class SecurityError(Exception):
    """The security settings are unusable or unsafe; the message is one line."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes of the server's certificate chain and key, and of the CA its clients' certificates need."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None  # mTLS: clients must present a certificate this CA signed


@dataclass(frozen=True)
class Security:
    """The server's security settings (the default: none, for loopback and unix sockets)."""

    tls: TlsFiles | None = None
    tokens: TokenStore | None = None
    insecure: bool = False
    reflection: bool = True
    unix_socket_mode: int = DEFAULT_UNIX_SOCKET_MODE
    #: mTLS client certificates whose subject (``CN=job-7``) stands for a role when they send no token.
    certificate_roles: dict[str, Grant] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_client_ca: Path | None = None,
        admin_token_file: Path | None = None,
        insecure: bool = False,
        reflection: bool = True,
        unix_socket_mode: int = DEFAULT_UNIX_SOCKET_MODE,
        certificate_roles: dict[str, str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Security:
        """Read the files named (SecurityError naming the one that is missing or bad)."""
        environ = dict(os.environ) if environ is None else environ
        if (tls_cert is None) != (tls_key is None):
            raise SecurityError("--tls-cert and --tls-key go together: give both or neither")
        if tls_client_ca is not None and tls_cert is None:
            raise SecurityError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if not 0 <= unix_socket_mode <= 0o777:
            raise SecurityError(f"--unix-socket-mode: {unix_socket_mode:o} is not a file mode (e.g. 600 or 660)")
        tls = None
        if tls_cert is not None and tls_key is not None:
            tls = TlsFiles(
                _read(tls_cert, "--tls-cert"),
                _read(tls_key, "--tls-key"),
                _read(tls_client_ca, "--tls-client-ca") if tls_client_ca is not None else None,
            )
            _check_pem(tls_cert, tls_key, tls_client_ca)
        admin_token = None
        if admin_token_file is not None:
            admin_token = _read(admin_token_file, "--admin-token-file").decode(errors="replace").strip()
        elif environ.get(ADMIN_TOKEN_ENV):
            admin_token = environ[ADMIN_TOKEN_ENV].strip()
        tokens = None
        if admin_token is not None:
            try:
                tokens = TokenStore(admin_token)
            except ValueError as error:
                raise SecurityError(str(error)) from None
        subjects: dict[str, Grant] = {}
        for subject, spec in (certificate_roles or {}).items():
            if tls is None or tls.client_ca is None or tokens is None:
                raise SecurityError("--certificate-role needs mTLS (--tls-client-ca) and tokens (--admin-token-file)")
            try:
                role, platform = parse_role(spec, f"--certificate-role {subject}")
            except ValueError as error:
                raise SecurityError(str(error)) from None
            subjects[subject] = Grant(f"certificate {subject}", role, platform)
        return cls(tls, tokens, insecure, reflection, unix_socket_mode, subjects)

    def check_listeners(self, addresses: list[str]) -> None:
        """SecurityError for a listener a network peer could reach without TLS and tokens (unless insecure)."""
        if self.insecure or (self.tls is not None and self.tokens is not None):
            return
        for address in addresses:
            if not is_local(address):
                missing = " and ".join(
                    what for what, absent in (("TLS (--tls-cert, --tls-key)", self.tls is None),
                                              ("tokens (--admin-token-file)", self.tokens is None)) if absent
                )  # fmt: skip
                raise SecurityError(
                    f"refusing to listen on {address} without {missing}: anyone who can reach it could "
                    "control every platform; add them, listen on loopback or a unix socket, or say --insecure"
                )

    def check_metrics_listener(self, address: str) -> None:
        """SecurityError for a metrics address off loopback unless insecure: the metrics are plain HTTP,
        need no token, and show platform names (TLS and tokens do not cover them)."""
        if not self.insecure and not is_local(address):
            raise SecurityError(
                f"refusing to serve metrics on {address}: they are plain HTTP without tokens and show platform "
                "names; serve them on loopback, or say --insecure"
            )


def is_local(address: str) -> bool:
    """True for a unix socket or a loopback host (``127.0.0.1:50051``, ``[::1]:1``, ``localhost:1``)."""
    if address.startswith("unix:") or address.startswith("unix-abstract:"):
        return True
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def _check_pem(cert: Path, key: Path, client_ca: Path | None) -> None:
    """SecurityError naming the file unless it holds what its flag says (gRPC would only fail to bind)."""
    import ssl  # here: a server without TLS starts without it (13 ms)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise SecurityError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its private key ({error.reason})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as error:
            raise SecurityError(f"--tls-client-ca {client_ca}: not PEM CA certificates ({error.reason})") from None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SecurityError(f"{flag} {path}: {error.strerror}") from None
