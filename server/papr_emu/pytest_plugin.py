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
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from papr_emu_client import Client, Credentials, connect_with

from .access import TokenStore
from .model import DEFAULT_PLATFORM, Platforms, default_geometry
from .security import Security, TlsFiles
from .server import PaprServer


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


@pytest.fixture
def papr_emu() -> Iterator[PaprEmuFixture]:
    """A fresh server on a free port, stopped after the test; yields a connected client."""
    server = _serve()
    try:
        # Plain text and no token, whatever the PAPR_EMU_* variables of the test run say.
        client = connect_with(Credentials(), server.addresses[0])
        fixture = _fixture(client, PaprEmuFixture, server.addresses[0])
        try:
            yield fixture
        finally:
            fixture.close()
    finally:
        server.stop(grace=0.5)


@pytest.fixture
def papr_emu_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaprEmuSecureFixture]:
    """:func:`papr_emu` with TLS and tokens on; yields a client that trusts its CA and sends the admin token."""
    directory = tmp_path_factory.mktemp("papr-emu-tls")
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
            yield fixture
        finally:
            fixture.close()
    finally:
        server.stop(grace=0.5)


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
