"""mTLS client certificates that stand for a role (--certificate-role SUBJECT=ROLE), with real handshakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pki import Pki

from papr.v1 import hotplug_pb2, hotplug_pb2_grpc, platform_pb2, platform_pb2_grpc, rtas_pb2, rtas_pb2_grpc
from papr_emu import PaprServer
from papr_emu.model import Platforms, default_geometry
from papr_emu.security import Security, SecurityError

ADMIN_TOKEN = "admin-token-for-certificate-tests"


@pytest.fixture()
def mtls(tmp_path: Path) -> Iterator[tuple[PaprServer, Pki]]:
    pki = Pki.make(tmp_path)
    server_cert = pki.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    security = Security.load(
        tls_cert=server_cert.cert_path, tls_key=server_cert.key_path, tls_client_ca=pki.ca_path,
        admin_token_file=tmp_path / "admin.token",
        certificate_roles={"CN=job-7": "guest:default", "CN=ops": "manager:default", "CN=ci-admin": "admin"},
    )  # fmt: skip
    platforms = Platforms()
    platforms.create("default", default_geometry())
    platforms.create("other", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"], security=security)
    server.start()
    try:
        yield server, pki
    finally:
        server.stop(grace=0)


def channel_as(server: PaprServer, pki: Pki, subject: str) -> grpc.Channel:
    issued = pki.issue(subject, client=True)
    return grpc.secure_channel(server.addresses[0], grpc.ssl_channel_credentials(pki.ca_pem, issued.key_pem,
                                                                                  issued.cert_pem))  # fmt: skip


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def sense(platform: str) -> rtas_pb2.GetSensorStateRequest:
    return rtas_pb2.GetSensorStateRequest(platform=platform, sensor_type=9003, sensor_index=0x10000000)


def test_a_mapped_certificate_acts_as_its_role(mtls: tuple[PaprServer, Pki]) -> None:
    server, pki = mtls
    with channel_as(server, pki, "job-7") as guest, channel_as(server, pki, "ops") as ops:
        rtas = rtas_pb2_grpc.RtasServiceStub(guest)
        assert rtas.GetSensorState(sense("default"), timeout=10).state == 1
        assert code_of(lambda: rtas.GetSensorState(sense("other"), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        listing = platform_pb2_grpc.PlatformServiceStub(guest).ListPlatforms
        assert (
            code_of(lambda: listing(platform_pb2.ListPlatformsRequest(), timeout=10))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        devices = hotplug_pb2_grpc.HotplugServiceStub(ops).ListDevices(
            hotplug_pb2.ListDevicesRequest(platform="default"), timeout=10
        )
        assert [d.id for d in devices.devices] == ["core0", "phb0"]
        ops_rtas = rtas_pb2_grpc.RtasServiceStub(ops)
        assert (
            code_of(lambda: ops_rtas.GetSensorState(sense("default"), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        )


def test_an_unmapped_certificate_needs_a_token_and_a_token_beats_the_certificate(mtls: tuple[PaprServer, Pki]) -> None:
    server, pki = mtls
    with channel_as(server, pki, "nobody") as nobody, channel_as(server, pki, "job-7") as guest:
        rtas = rtas_pb2_grpc.RtasServiceStub(nobody)
        assert code_of(lambda: rtas.GetSensorState(sense("default"), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        assert rtas.GetSensorState(sense("other"), timeout=10, metadata=admin).state == 1
        # The guest certificate with a wrong token: the token decides, and it is not valid.
        wrong = (("authorization", "Bearer not-a-token"),)
        guest_rtas = rtas_pb2_grpc.RtasServiceStub(guest)
        assert code_of(lambda: guest_rtas.GetSensorState(sense("default"), metadata=wrong, timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_certificate_roles_need_mtls_and_tokens(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    cert = pki.issue("server", dns=["localhost"])
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    with pytest.raises(SecurityError, match="needs mTLS"):
        Security.load(tls_cert=cert.cert_path, tls_key=cert.key_path, admin_token_file=tmp_path / "admin.token",
                      certificate_roles={"CN=x": "admin"})  # fmt: skip
    with pytest.raises(SecurityError, match="admin takes no platform"):
        Security.load(tls_cert=cert.cert_path, tls_key=cert.key_path, tls_client_ca=pki.ca_path,
                      admin_token_file=tmp_path / "admin.token", certificate_roles={"CN=x": "admin:p"})  # fmt: skip
    with pytest.raises(SecurityError, match="the role is admin"):
        Security.load(tls_cert=cert.cert_path, tls_key=cert.key_path, tls_client_ca=pki.ca_path,
                      admin_token_file=tmp_path / "admin.token", certificate_roles={"CN=x": "root"})  # fmt: skip
