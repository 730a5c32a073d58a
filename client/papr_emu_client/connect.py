"""Connecting to a papr-emu server, in plain text or over TLS (mTLS), with a bearer token.

``PAPR_EMU_HOST`` (``host:port`` or ``unix:PATH``) names the server, as cloud
emulators do with their ``*_EMULATOR_HOST`` variables. A server that requires
TLS or tokens is reached with the arguments of :func:`connect`, or, when they are
not given, these variables:

=========================  =====================================================
``PAPR_EMU_CA``            PEM file of the CA that signed the server's certificate: TLS is on
``PAPR_EMU_CERT``          PEM file of this client's certificate (mTLS; with ``PAPR_EMU_KEY``)
``PAPR_EMU_KEY``           PEM file of that certificate's private key
``PAPR_EMU_TOKEN``         bearer token, sent as ``authorization: Bearer <token>`` on every call
``PAPR_EMU_SERVER_NAME``   the name to check the server's certificate against (when the target
                           is a unix socket or an address the certificate does not name)
=========================  =====================================================

Example::

    from papr_emu_client import connect

    client = connect()                  # $PAPR_EMU_HOST, else 127.0.0.1:50051; plain text unless $PAPR_EMU_CA
    client.rtas.GetSensorState(...)
    admin = connect("emu.example:50051", ca="ca.pem", token=open("admin-token").read().strip())
    guest = connect("unix:/run/papr.sock", ca=ca_pem_bytes, server_name="emu.example", token=guest_token)
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from papr.v1 import (
    access_pb2_grpc,
    fault_pb2_grpc,
    guest_pb2_grpc,
    hotplug_pb2_grpc,
    interrupt_pb2_grpc,
    platform_pb2,
    platform_pb2_grpc,
    rtas_pb2_grpc,
)

DEFAULT_TARGET = "127.0.0.1:50051"
HOST_VARIABLE = "PAPR_EMU_HOST"
CA_VARIABLE: Final = "PAPR_EMU_CA"
CERT_VARIABLE: Final = "PAPR_EMU_CERT"
KEY_VARIABLE: Final = "PAPR_EMU_KEY"
TOKEN_VARIABLE: Final = "PAPR_EMU_TOKEN"
SERVER_NAME_VARIABLE: Final = "PAPR_EMU_SERVER_NAME"

#: PEM material: a path to a file (``str`` or ``Path``), or the PEM bytes themselves.
Pem = str | os.PathLike[str] | bytes


@dataclass
class Client:
    """A channel and the papr.v1 stubs on it (``access``, AccessService, is made from the channel)."""

    channel: grpc.Channel
    rtas: rtas_pb2_grpc.RtasServiceStub
    platforms: platform_pb2_grpc.PlatformServiceStub
    hotplug: hotplug_pb2_grpc.HotplugServiceStub
    interrupts: interrupt_pb2_grpc.InterruptServiceStub
    guest: guest_pb2_grpc.GuestServiceStub
    access: access_pb2_grpc.AccessServiceStub = field(init=False, repr=False)
    faults: fault_pb2_grpc.FaultServiceStub = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.access = access_pb2_grpc.AccessServiceStub(self.channel)
        self.faults = fault_pb2_grpc.FaultServiceStub(self.channel)

    @classmethod
    def over(cls, channel: grpc.Channel) -> Client:
        """The stubs on a channel made elsewhere (an intercepted one, say)."""
        return cls(
            channel,
            rtas_pb2_grpc.RtasServiceStub(channel),
            platform_pb2_grpc.PlatformServiceStub(channel),
            hotplug_pb2_grpc.HotplugServiceStub(channel),
            interrupt_pb2_grpc.InterruptServiceStub(channel),
            guest_pb2_grpc.GuestServiceStub(channel),
        )

    def device_tree(self, platform: str) -> bytes:
        """The platform's device tree as a DTB (GetDeviceTree's chunks, joined)."""
        chunks = self.platforms.GetDeviceTree(platform_pb2.GetDeviceTreeRequest(platform=platform))
        return b"".join(response.chunk for response in chunks)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def target_from_env(target: str | None = None) -> str:
    """The explicit target, else $PAPR_EMU_HOST, else 127.0.0.1:50051."""
    return target or os.environ.get(HOST_VARIABLE) or DEFAULT_TARGET


@dataclass(frozen=True)
class Credentials:
    """What :func:`connect` uses to reach a server: TLS material (PEM bytes), a token, a TLS name.

    Example::

        settings = Credentials.resolve(ca="ca.pem")      # the rest from $PAPR_EMU_CERT, $PAPR_EMU_TOKEN, ...
        settings.tls                                      # True
    """

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    token: str | None = field(default=None, repr=False)  # never shown: it is a secret
    server_name: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @classmethod
    def resolve(
        cls,
        ca: Pem | None = None,
        cert: Pem | None = None,
        key: Pem | None = None,
        token: str | None = None,
        server_name: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Credentials:
        """The arguments given, else the ``PAPR_EMU_*`` variables; files read.

        Raises ValueError for a certificate without its key (or the reverse) or a client
        certificate without a CA, and OSError (naming the file) for a file that cannot be read.
        """
        env = os.environ if environ is None else environ
        ca_pem = _pem(ca if ca is not None else env.get(CA_VARIABLE) or None, "CA")
        cert_pem = _pem(cert if cert is not None else env.get(CERT_VARIABLE) or None, "client certificate")
        key_pem = _pem(key if key is not None else env.get(KEY_VARIABLE) or None, "client key")
        if (cert_pem is None) != (key_pem is None):
            raise ValueError(
                f"a client certificate and its key go together: give both or neither (--cert/--key, "
                f"${CERT_VARIABLE}/${KEY_VARIABLE})"
            )
        if cert_pem is not None and ca_pem is None:
            raise ValueError(
                f"a client certificate needs TLS: give the CA of the server's certificate (--ca, ${CA_VARIABLE})"
            )
        token = token if token is not None else env.get(TOKEN_VARIABLE) or None
        server_name = server_name if server_name is not None else env.get(SERVER_NAME_VARIABLE) or None
        return cls(ca_pem, cert_pem, key_pem, token.strip() if token else None, server_name)

    def channel(self, target: str) -> grpc.Channel:
        """A channel to ``target``: TLS if there is a CA, the token on every call if there is one."""
        options: list[tuple[str, Any]] = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        if self.tls:
            credentials = grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
            channel = grpc.secure_channel(target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        if self.token:
            channel = grpc.intercept_channel(channel, BearerToken(self.token))
        return channel


def _pem(value: Pem | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    path = Path(value)
    try:
        return path.read_bytes()
    except OSError as error:
        raise OSError(f"{what} {path}: {error.strerror}") from None


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    """A call's details with the token added (``grpc.ClientCallDetails`` is an interface without a constructor)."""


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """A client interceptor adding ``authorization: Bearer <token>`` to every call, on any channel.

    (gRPC's call credentials need a TLS channel; this works on plain-text loopback and unix
    sockets too.) The token never appears in its repr.

    Example::

        channel = grpc.intercept_channel(grpc.insecure_channel("unix:/tmp/papr.sock"), BearerToken(token))
    """

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [entry for entry in details.metadata or () if entry[0] != "authorization"]
        return _CallDetails(
            details.method,
            details.timeout,
            [*metadata, self._entry],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), requests)


def connect(
    target: str | None = None,
    timeout: float | None = 10.0,
    *,
    ca: Pem | None = None,
    cert: Pem | None = None,
    key: Pem | None = None,
    token: str | None = None,
    server_name: str | None = None,
) -> Client:
    """Open a channel (waiting up to ``timeout`` s for it to be ready) and make the stubs.

    ``ca``, ``cert`` and ``key`` are PEM files (``str`` or ``Path``) or PEM ``bytes``. With
    ``ca`` the channel is TLS and checks the server's certificate against that CA (under
    ``server_name`` if given, else the target's host); ``cert`` and ``key`` add a client
    certificate (mTLS). ``token`` is sent as ``authorization: Bearer <token>`` on every call.
    Each argument not given comes from its variable (``PAPR_EMU_CA``, ``PAPR_EMU_CERT``,
    ``PAPR_EMU_KEY``, ``PAPR_EMU_TOKEN``, ``PAPR_EMU_SERVER_NAME``); with none, a plain-text
    channel without a token, as before. A TLS handshake that fails (an untrusted server,
    no client certificate for an mTLS server) looks like an unreachable server: the channel
    never gets ready (``grpc.FutureTimeoutError``).

    Example::

        client = connect("127.0.0.1:50051", ca="ca.pem", token=guest_token)
        client.rtas.GetSensorState(rtas_pb2.GetSensorStateRequest(platform="p", ...))
    """
    return connect_with(Credentials.resolve(ca, cert, key, token, server_name), target, timeout)


def connect_with(credentials: Credentials, target: str | None = None, timeout: float | None = 10.0) -> Client:
    """:func:`connect` with settings resolved already (the CLI resolves them once, for every command).

    Example::

        client = connect_with(Credentials.resolve(token=guest_token), "unix:/tmp/papr.sock")
    """
    channel = credentials.channel(target_from_env(target))
    if timeout is not None:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            channel.close()
            raise
    return Client.over(channel)
