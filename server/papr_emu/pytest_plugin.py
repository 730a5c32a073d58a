"""A pytest plugin: a throwaway papr-emu server per test, and a client connected to it.

Installed with papr-emu (entry point ``pytest11``), so any project's tests can use it.
It lives in the server package because it starts a server; the client library never
imports the server.

Example::

    def test_dimm_hot_add(papr_emu):
        dimm = papr_emu.hotplug.PlugDevice(...)
        Guest(papr_emu.rtas, papr_emu.platform).acquire_drc(dimm.drc_indexes[0])

The server listens on a free loopback port and holds the built-in default platform
(``-m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4``) named ``papr_emu.platform``.

``papr_emu_secure`` is the same with TLS and bearer tokens on: a throwaway CA (made with
``cryptography``, which it needs) signs the server's certificate, and the client it yields
trusts that CA and sends the admin token. ``connect_as(token)`` connects with another token,
e.g. the guest token ``CreatePlatform`` returned::

    def test_guest_is_confined(papr_emu_secure):
        created = papr_emu_secure.platforms.CreatePlatform(...)
        with papr_emu_secure.connect_as(created.guest_token.token) as guest:
            guest.rtas.GetSensorState(...)

While either fixture lives, ``PAPR_EMU_HOST`` is its server's address (and for
``papr_emu_secure``, ``PAPR_EMU_CA`` its CA file and ``PAPR_EMU_TOKEN`` the admin token; the
other ``PAPR_EMU_*`` variables are unset), so code under test that calls ``connect()`` with
no arguments reaches it; the variables are restored afterwards.

``papr_emu_platform`` creates more platforms on that server, deleted after the test; with
no arguments, the default platform's geometry under a new name::

    def test_big_guest(papr_emu, papr_emu_platform):
        name = papr_emu_platform(memory="4G", max_memory="64G", slots=8, cpus=2, max_cpus=8,
                                 coldplug=[{"type": "dimm", "id": "dimm0", "size": "1G"}])
        names = papr_emu_platform.from_config("platforms.toml")  # every [[platform]] of the file

``papr_emu_session`` (and ``papr_emu_secure_session``) is one server for the whole session;
with ``papr_emu_scope = session`` in the ini file, ``papr_emu`` and ``papr_emu_secure`` are
those (tests then share the default platform: give each its own with ``papr_emu_platform``).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from papr.v1 import fault_pb2, platform_pb2
from papr_emu_client import Client, Credentials, connect_with
from papr_emu_client.connect import (
    CA_VARIABLE,
    CERT_VARIABLE,
    HOST_VARIABLE,
    KEY_VARIABLE,
    SERVER_NAME_VARIABLE,
    TOKEN_VARIABLE,
)

from . import config
from .access import TokenStore
from .model import (
    DEFAULT_PLATFORM,
    Platforms,
    default_geometry,
)
from .security import Security, TlsFiles
from .server import PaprServer
from .service import convert
from .service.faults import rule_to_pb

SCOPE_OPTION = "papr_emu_scope"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        SCOPE_OPTION,
        "papr-emu fixtures: 'function' (default), a server per test; 'session', one server for the session",
        default="function",
    )


@dataclass
class PaprEmuFixture(Client):
    """A connected client, plus the server's address and its default platform's name."""

    address: str = ""
    platform: str = "default"


@dataclass
class PaprEmuSecureFixture(PaprEmuFixture):
    """:class:`PaprEmuFixture` of a server with TLS and tokens: its CA, and the admin token the client sends."""

    ca_pem: bytes = b""
    ca_path: Path = Path()
    admin_token: str = field(default="", repr=False)

    def connect_as(self, token: str | None, cert: bytes | None = None, key: bytes | None = None) -> Client:
        """Another client of this server, over TLS, with ``token`` (None: no token), optionally a certificate.

        Example::

            with papr_emu_secure.connect_as(guest_token) as guest:
                guest.rtas.SetIndicator(...)
        """
        return connect_with(Credentials(ca=self.ca_pem, cert=cert, key=key, token=token), self.address)


def _fixture(client: Client, kind: type[PaprEmuFixture], address: str, **extra: object) -> PaprEmuFixture:
    return kind(
        client.channel,
        client.rtas,
        client.platforms,
        client.hotplug,
        client.interrupts,
        client.guest,
        address=address,
        platform=DEFAULT_PLATFORM,
        **extra,
    )


def _serve(security: Security | None = None) -> PaprServer:
    platforms = Platforms()
    platforms.create(DEFAULT_PLATFORM, default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"], security=security)
    server.start()
    return server


_CONNECT_VARIABLES = (HOST_VARIABLE, CA_VARIABLE, CERT_VARIABLE, KEY_VARIABLE, TOKEN_VARIABLE, SERVER_NAME_VARIABLE)


@contextlib.contextmanager
def exported(variables: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a string) or unset (None) environment variables for the block; restore them after."""
    saved = {name: os.environ.get(name) for name in variables}
    try:
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _environment(fixture: PaprEmuFixture) -> dict[str, str | None]:
    """The PAPR_EMU_* variables under which ``connect()`` reaches the fixture's server as its client does."""
    variables: dict[str, str | None] = dict.fromkeys(_CONNECT_VARIABLES)
    variables[HOST_VARIABLE] = fixture.address
    if isinstance(fixture, PaprEmuSecureFixture):
        variables[CA_VARIABLE] = str(fixture.ca_path)
        variables[TOKEN_VARIABLE] = fixture.admin_token
    return variables


@contextlib.contextmanager
def _plain_server() -> Iterator[PaprEmuFixture]:
    server = _serve()
    try:
        # Plain text and no token, whatever the PAPR_EMU_* variables of the test run say.
        client = connect_with(Credentials(), server.addresses[0])
        fixture = _fixture(client, PaprEmuFixture, server.addresses[0])
        try:
            with exported(_environment(fixture)):
                yield fixture
        finally:
            fixture.close()
    finally:
        server.stop(grace=0.5)


@contextlib.contextmanager
def _secure_server(directory: Path) -> Iterator[PaprEmuSecureFixture]:
    ca_pem, cert_pem, key_pem = throwaway_tls(["127.0.0.1", "localhost"])
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_pem)
    admin_token = secrets.token_urlsafe(32)
    server = _serve(Security(tls=TlsFiles(cert_pem, key_pem), tokens=TokenStore(admin_token)))
    try:
        address = server.addresses[0]
        client = connect_with(Credentials(ca=ca_pem, token=admin_token), address)
        fixture = _fixture(
            client, PaprEmuSecureFixture, address, ca_pem=ca_pem, ca_path=ca_path, admin_token=admin_token
        )
        assert isinstance(fixture, PaprEmuSecureFixture)
        try:
            with exported(_environment(fixture)):
                yield fixture
        finally:
            fixture.close()
    finally:
        server.stop(grace=0.5)


def _session_scoped(request: pytest.FixtureRequest) -> bool:
    scope = str(request.config.getini(SCOPE_OPTION)).strip() or "function"
    if scope not in ("function", "session"):
        raise pytest.UsageError(f"{SCOPE_OPTION} = {scope!r}: must be 'function' or 'session'")
    return scope == "session"


@pytest.fixture(scope="session")
def papr_emu_session() -> Iterator[PaprEmuFixture]:
    """One server for the whole test session (stopped at its end); yields a connected client.

    ``PAPR_EMU_HOST`` names it from its first use to the end of the session. Tests share its
    default platform; :func:`papr_emu_platform` gives each its own.
    """
    with _plain_server() as fixture:
        yield fixture


@pytest.fixture(scope="session")
def papr_emu_secure_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaprEmuSecureFixture]:
    """:func:`papr_emu_secure` for the whole test session."""
    with _secure_server(tmp_path_factory.mktemp("papr-emu-tls")) as fixture:
        yield fixture


@pytest.fixture
def papr_emu(request: pytest.FixtureRequest) -> Iterator[PaprEmuFixture]:
    """A fresh server on a free port, stopped after the test; yields a connected client.

    With ``papr_emu_scope = session`` (ini), the session's server instead (:func:`papr_emu_session`).
    ``PAPR_EMU_HOST`` is its address during the test.
    """
    if _session_scoped(request):
        shared: PaprEmuFixture = request.getfixturevalue("papr_emu_session")
        with exported(_environment(shared)):
            yield shared
        return
    with _plain_server() as fixture:
        yield fixture


@pytest.fixture
def papr_emu_secure(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PaprEmuSecureFixture]:
    """:func:`papr_emu` with TLS and tokens on; yields a client that trusts its CA and sends the admin token."""
    if _session_scoped(request):
        shared: PaprEmuSecureFixture = request.getfixturevalue("papr_emu_secure_session")
        with exported(_environment(shared)):
            yield shared
        return
    with _secure_server(tmp_path_factory.mktemp("papr-emu-tls")) as fixture:
        yield fixture


_names = itertools.count(1)


class PlatformFactory:
    """Creates platforms on the ``papr_emu`` server and deletes them at teardown (the ``papr_emu_platform`` fixture).

    Example::

        def test_two_sockets(papr_emu, papr_emu_platform):
            name = papr_emu_platform(memory="2G", max_memory="8G", cpus=2, max_cpus=8,
                                     coldplug=[{"type": "cpu-core", "core_id": 2}])
            papr_emu.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=name))
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.created: list[str] = []

    def __call__(
        self,
        name: str | None = None,
        memory: int | str = "1G",
        max_memory: int | str = "4G",
        slots: int = 4,
        cpus: int = 1,
        max_cpus: int = 4,
        threads: int = 1,
        coldplug: Iterable[Mapping[str, Any] | platform_pb2.ColdplugDevice] = (),
        unplug_timeouts: Mapping[str, float] | None = None,
        faults: Iterable[Mapping[str, Any]] = (),
    ) -> str:
        """Create a platform and return its name (None: a new one, ``pytest-N``).

        The arguments are the config file's ``[[platform]]`` keys (sizes as bytes or "512M"),
        ``coldplug`` its ``[[platform.device]]`` tables (``{"type": "dimm", "size": "1G"}``) or
        ``ColdplugDevice`` messages, ``unplug_timeouts`` its ``[platform.unplug_timeouts]``
        (seconds by device type: ``{"cpu_core": 5}``), ``faults`` its ``[[platform.fault]]`` tables
        (``{"name": "b", "effect": "busy", "times": 2}``, in force from the first call); see docs/config.md.
        """
        messages = [d for d in coldplug if isinstance(d, platform_pb2.ColdplugDevice)]
        table: dict[str, Any] = {
            "name": name if name is not None else f"pytest-{next(_names)}",
            "memory": memory,
            "max_memory": max_memory,
            "slots": slots,
            "cpus": cpus,
            "max_cpus": max_cpus,
            "threads": threads,
            "device": [dict(d) for d in coldplug if not isinstance(d, platform_pb2.ColdplugDevice)],
            "unplug_timeouts": dict(unplug_timeouts or {}),
            "fault": [dict(f) for f in faults],
        }
        try:
            # The config file's own reading of a [[platform]] table: the same keys, defaults and errors.
            parsed = config.platform_config(table, "papr_emu_platform")
        except config.ConfigError as error:
            raise ValueError(str(error)) from None
        return self._create(parsed, messages)

    def from_config(self, path: str | os.PathLike[str]) -> list[str]:
        """Create every ``[[platform]]`` of a papr-emu config file (other tables ignored); their names."""
        try:
            platforms = config.load_config(Path(path)).platforms
        except config.ConfigError as error:
            raise ValueError(str(error)) from None
        return [self._create(platform) for platform in platforms]

    def _create(self, platform: config.PlatformConfig, extra: Iterable[platform_pb2.ColdplugDevice] = ()) -> str:
        request = platform_pb2.CreatePlatformRequest(
            name=platform.name,
            geometry=convert.geometry_to_pb(platform.geometry),
            coldplug=[
                *(platform_pb2.ColdplugDevice(id=i, spec=convert.plug_request_to_pb(r)) for i, r in platform.coldplug),
                *extra,
            ],
            unplug_timeouts=convert.unplug_timeouts_to_pb(platform.unplug_timeouts),
        )
        self.client.platforms.CreatePlatform(request)
        self.created.append(platform.name)
        for rule in platform.fault_rules():  # [[platform.fault]], as serve --config installs them
            self.client.faults.AddFaultRule(
                fault_pb2.AddFaultRuleRequest(platform=platform.name, rule=rule_to_pb(rule))
            )
        return platform.name

    def delete_all(self) -> None:
        """Delete what this factory created and still exists."""
        for name in reversed(self.created):
            try:
                self.client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:  # the test deleted it itself
                    raise
        self.created.clear()


@pytest.fixture
def papr_emu_platform(papr_emu: PaprEmuFixture) -> Iterator[PlatformFactory]:
    """A factory of platforms on the ``papr_emu`` server, deleted after the test; see :class:`PlatformFactory`."""
    factory = PlatformFactory(papr_emu)
    try:
        yield factory
    finally:
        factory.delete_all()


def throwaway_tls(names: list[str]) -> tuple[bytes, bytes, bytes]:
    """A new CA's certificate, and a server certificate it signed for ``names`` (IPs or DNS names) and its key.

    PEM bytes, valid for a day; needs ``cryptography`` (``pip install cryptography``).

    Example::

        ca_pem, cert_pem, key_pem = throwaway_tls(["127.0.0.1", "localhost"])
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.fail("papr_emu_secure needs the cryptography package for its throwaway CA: pip install cryptography")
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("papr-emu throwaway CA"))
        .issuer_name(name("papr-emu throwaway CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = []
    for entry in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            sans.append(x509.DNSName(entry))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem
