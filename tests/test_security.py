"""Issue 11, done when: TLS, mTLS and per-platform tokens, proven with real TLS handshakes (CA from tests/pki.py).

One TLS server with tokens (TCP and a unix socket) serves most tests; the mTLS, listener and
logging tests start servers of their own (in process, or `papr-emu serve` as a subprocess).
The expected permissions are written out here from the issue, not read from the server's rules.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pki import Issued, Pki

from papr.v1 import (
    access_pb2,
    device_pb2,
    guest_pb2,
    hotplug_pb2,
    interrupt_pb2,
    platform_pb2,
    rtas_pb2,
)
from papr_emu import PaprServer
from papr_emu.access import TokenStore
from papr_emu.cli import main
from papr_emu.model import Platforms, default_geometry
from papr_emu.security import Security, TlsFiles
from papr_emu_client import BearerToken, Client, Credentials, ReferenceGuest, RefusalPolicy, connect, connect_with

Code = grpc.StatusCode
ADMIN_TOKEN = "admin-token-of-the-security-tests-0123456789"
PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]
MISSING = "no-such-platform"
READS = {"GetPlatform", "ListConnectors", "GetConnector", "GetDeviceTree"}


# --- every papr.v1 RPC, from the descriptors ------------------------------------------------------


@dataclass(frozen=True)
class Method:
    service: str  # "papr.v1.RtasService"
    name: str
    request_class: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def short(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"

    def request(self, platform: str) -> bytes:
        """A request naming ``platform`` where the message has a platform field."""
        request = self.request_class()
        if "platform" in request.DESCRIPTOR.fields_by_name:
            request.platform = platform  # type: ignore[attr-defined]
        return request.SerializeToString()


def _methods() -> list[Method]:
    found = []
    for module in (platform_pb2, hotplug_pb2, rtas_pb2, interrupt_pb2, guest_pb2, access_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(
                    Method(
                        service.full_name,
                        method.name,
                        message_factory.GetMessageClass(method.input_type),
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    return found


METHODS = _methods()
assert {m.service for m in METHODS} == {
    f"papr.v1.{s}"
    for s in ("PlatformService", "HotplugService", "RtasService", "InterruptService", "GuestService", "AccessService")
}
assert any(m.client_streaming for m in METHODS) and any(m.server_streaming for m in METHODS)


def allowed(role: str, method: Method) -> bool:
    """What the issue says a guest or manager token may call (on its own platform)."""
    service = method.service.rsplit(".", 1)[-1]
    if method.service == "papr.v1.PlatformService" and method.name in READS:
        return True
    if role == "guest":
        return service in ("RtasService", "InterruptService", "GuestService")
    # A manager may snapshot its platform; restoring one creates a platform (admin only).
    return service == "HotplugService" or method.name == "SnapshotPlatform"


def outcome(channel: grpc.Channel, method: Method, platform: str, timeout: float = 5.0) -> tuple[grpc.StatusCode, str]:
    """The status of one call of ``method`` on ``platform`` (a stream: of its first response), raw bytes."""
    raw = method.request(platform)
    try:
        if method.client_streaming:
            stream = channel.stream_stream(method.path)(iter([raw]), timeout=timeout)
            next(stream, None)
            stream.cancel()
        elif method.server_streaming:
            stream = channel.unary_stream(method.path)(raw, timeout=timeout)
            next(stream, None)
            stream.cancel()
        else:
            channel.unary_unary(method.path)(raw, timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return Code.OK, ""


def expect(code: grpc.StatusCode, call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return str(caught.value.details())


def geometry() -> platform_pb2.Geometry:
    return platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4)


def dimm(size: int = 256 << 20) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=size))


def sense(platform: str, index: int = 0x10000000) -> rtas_pb2.GetSensorStateRequest:
    return rtas_pb2.GetSensorStateRequest(platform=platform, sensor_type=9003, sensor_index=index)


# --- one TLS server with tokens ------------------------------------------------------------------


@dataclass
class Secure:
    server: PaprServer
    pki: Pki
    tcp: str
    unix: str
    admin: Client
    tokens: dict[str, platform_pb2.CreatePlatformResponse]  # by platform: what CreatePlatform returned

    def client(self, token: str | None, target: str | None = None, **kw: Any) -> Client:
        """A TLS client of this server (trusting its CA) with ``token``; the PAPR_EMU_* variables play no part."""
        return connect_with(Credentials(ca=self.pki.ca_pem, token=token, **kw), target or self.tcp)

    def create(self, name: str) -> platform_pb2.CreatePlatformResponse:
        created = self.admin.platforms.CreatePlatform(
            platform_pb2.CreatePlatformRequest(name=name, geometry=geometry())
        )
        self.tokens[name] = created
        return created

    def guest(self, platform: str) -> str:
        return self.tokens[platform].guest_token.token

    def manager(self, platform: str) -> str:
        return self.tokens[platform].manager_token.token


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    directory = tmp_path_factory.mktemp("tls")
    pki = Pki.make(directory)
    issued = pki.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    security = Security(tls=TlsFiles(issued.cert_pem, issued.key_pem), tokens=TokenStore(ADMIN_TOKEN))
    server = PaprServer(Platforms(), ["127.0.0.1:0", f"unix:{directory}/papr.sock"], security=security)
    server.start()
    try:
        tcp, unix = server.addresses
        with connect_with(Credentials(ca=pki.ca_pem, token=ADMIN_TOKEN), tcp) as admin:
            state = Secure(server, pki, tcp, unix, admin, {})
            state.create("a")
            state.create("b")
            yield state
    finally:
        server.stop(grace=0.5)


# --- no credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.short)
def test_no_token_is_unauthenticated_on_every_rpc(secure: Secure, method: Method) -> None:
    with secure.client(None) as anonymous:
        code, details = outcome(anonymous.channel, method, "a")
        assert code == Code.UNAUTHENTICATED, (code, details)
        assert "authorization: Bearer" in details
    with secure.client("papr-guest-not-a-token-of-this-server") as forged:
        code, details = outcome(forged.channel, method, "a")
        assert code == Code.UNAUTHENTICATED, (code, details)


def test_health_and_reflection_need_no_token(secure: Secure) -> None:
    with secure.client(None) as anonymous:
        health = health_pb2_grpc.HealthStub(anonymous.channel)
        for service in ("", "papr.v1.RtasService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(anonymous.channel)
        listed = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in listed for s in r.list_services_response.service}
        assert {"papr.v1.RtasService", "papr.v1.AccessService", "grpc.health.v1.Health"} <= names


def test_no_reflection_turns_it_off() -> None:
    security = Security(tokens=TokenStore(ADMIN_TOKEN), reflection=False)
    server = PaprServer(Platforms(), ["127.0.0.1:0"], security=security)
    server.start()
    try:
        with connect_with(Credentials(), server.addresses[0]) as anonymous:
            reflection = reflection_pb2_grpc.ServerReflectionStub(anonymous.channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            expect(Code.UNIMPLEMENTED, lambda: list(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
            health = health_pb2_grpc.HealthStub(anonymous.channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        server.stop(grace=0)


# --- roles and platforms -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.short)
def test_a_guest_of_a_is_refused_on_b_alike_whether_b_exists_or_not(secure: Secure, method: Method) -> None:
    with secure.client(secure.guest("a")) as guest:
        code, on_b = outcome(guest.channel, method, "b")
        assert code == Code.PERMISSION_DENIED, (code, on_b)
        code, on_missing = outcome(guest.channel, method, MISSING)
        assert code == Code.PERMISSION_DENIED, (code, on_missing)
        assert on_b == on_missing
        assert "'b'" not in on_b and MISSING not in on_missing


@pytest.mark.parametrize("role", ["guest", "manager"])
def test_each_role_may_call_exactly_its_rpcs_on_its_platform(secure: Secure, role: str) -> None:
    name = f"matrix-{role}"
    created = secure.create(name)
    token = created.guest_token if role == "guest" else created.manager_token
    assert token.platform == name and token.role == (
        access_pb2.ROLE_GUEST if role == "guest" else access_pb2.ROLE_MANAGER
    )
    refused, passed = {}, {}
    with secure.client(token.token) as client:
        for method in METHODS:
            # An allowed stream may wait for events: its deadline says it got past the check. Unary calls
            # get a long deadline, so a slow refusal is never taken for a pass.
            streams = method.server_streaming or method.client_streaming
            code, details = outcome(client.channel, method, name, timeout=1.0 if streams else 20.0)
            assert code != Code.UNAUTHENTICATED, (method.short, details)
            (refused if code == Code.PERMISSION_DENIED else passed)[method.short] = details
    assert set(passed) == {m.short for m in METHODS if allowed(role, m)}, refused
    assert {"PlatformService.CreatePlatform", "PlatformService.ListPlatforms", "PlatformService.DeletePlatform"} <= set(
        refused
    )
    assert refused["PlatformService.DeletePlatform"] == f"a {role} token may not call DeletePlatform"


def test_a_guest_token_runs_its_platform(secure: Secure) -> None:
    """The reference guest, with only a guest token, takes a DIMM the manager plugged (session, interrupts...)."""
    with secure.client(secure.manager("a")) as manager, secure.client(secure.guest("a")) as client:
        events = manager.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform="a"), timeout=20)
        events.initial_metadata()  # the server sends its headers once subscribed: the plug below is seen
        plugged = manager.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="a", id="g-dimm", spec=dimm()))
        interrupts = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform="a"), timeout=10)
        assert next(interrupts).irq
        interrupts.cancel()
        guest = ReferenceGuest(client, "a", RefusalPolicy())
        try:
            outcomes = guest.handle_pending()
        finally:
            guest.close()
        assert [o.result for o in outcomes] == ["done"]
        assert list(outcomes[0].drc_indexes) == list(plugged.device.drc_indexes)
        assert next(events).event.WhichOneof("kind") == "device_added"
        events.cancel()
        # Unary RTAS, a batch, the read RPCs and CAS.
        assert client.rtas.GetSensorState(sense("a")).state == 1
        batch = rtas_pb2.ExecuteBatchRequest(platform="a", calls=[rtas_pb2.RtasCall(get_sensor_state=sense("a"))])
        assert client.rtas.ExecuteBatch(batch).results[0].get_sensor_state.state == 1
        assert client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="a")).platform.name == "a"
        index = plugged.device.drc_indexes[0]
        connector = client.platforms.GetConnector(platform_pb2.GetConnectorRequest(platform="a", drc_index=index))
        assert connector.connector.device_id == "g-dimm"
        assert client.device_tree("a").startswith(b"\xd0\x0d\xfe\xed")
        ov5 = bytes([22]) + bytes(23)  # option vector 5, no bits set
        client.guest.ClientArchitectureSupport(
            guest_pb2.ClientArchitectureSupportRequest(platform="a", option_vector_5=ov5)
        )
        # A session opened on a cannot reach b, not even by naming it later.
        calls = [
            rtas_pb2.SessionRequest(platform="a", calls=[rtas_pb2.RtasCall(get_sensor_state=sense("a"))]),
            rtas_pb2.SessionRequest(platform="b", calls=[rtas_pb2.RtasCall(get_sensor_state=sense("b"))]),
        ]
        stream = client.rtas.Session(iter(calls), timeout=10)
        assert next(stream).results[0].get_sensor_state.state == 1
        expect(Code.INVALID_ARGUMENT, lambda: next(stream))
        bad_batch = rtas_pb2.ExecuteBatchRequest(platform="a", calls=[rtas_pb2.RtasCall(get_sensor_state=sense("b"))])
        expect(Code.INVALID_ARGUMENT, lambda: client.rtas.ExecuteBatch(bad_batch))


def test_a_manager_plugs_on_its_platform_only_and_makes_no_rtas_calls(secure: Secure) -> None:
    with secure.client(secure.manager("a")) as manager:
        added = manager.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="a", id="m-dimm", spec=dimm()))
        assert added.device.id == "m-dimm"
        listed = manager.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform="a")).devices
        assert "m-dimm" in [d.id for d in listed]
        denied = expect(
            Code.PERMISSION_DENIED,
            lambda: manager.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="a")),
        )
        assert "DeletePlatform" in denied
        expect(Code.PERMISSION_DENIED, lambda: manager.rtas.GetSensorState(sense("a")))
        session = manager.rtas.Session(iter([rtas_pb2.SessionRequest(platform="a")]), timeout=5)
        expect(Code.PERMISSION_DENIED, lambda: next(session))
        on_b = hotplug_pb2.PlugDeviceRequest(platform="b", id="x", spec=dimm())
        expect(Code.PERMISSION_DENIED, lambda: manager.hotplug.PlugDevice(on_b))
        manager.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform="a", id="m-dimm"))
    assert secure.admin.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="a")).platform.name == "a"


# --- token life cycle ----------------------------------------------------------------------------


def test_minted_tokens_work_and_revoked_ones_are_unauthenticated(secure: Secure) -> None:
    access = secure.admin.access
    minted = access.MintToken(access_pb2.MintTokenRequest(role=access_pb2.ROLE_GUEST, platform="a")).token
    assert minted.token.startswith("papr-guest-") and minted.platform == "a" and len(minted.token_id) == 16
    with secure.client(minted.token) as guest:
        assert guest.rtas.GetSensorState(sense("a")).state == 1
        access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=minted.token_id))
        details = expect(Code.UNAUTHENTICATED, lambda: guest.rtas.GetSensorState(sense("a")))
        assert "not valid" in details
    expect(Code.NOT_FOUND, lambda: access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=minted.token_id)))
    # An admin token minted works as admin, and can be revoked; the start-up one cannot.
    admin = access.MintToken(access_pb2.MintTokenRequest(role=access_pb2.ROLE_ADMIN)).token
    with secure.client(admin.token) as second:
        assert "a" in [p.name for p in second.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms]
        second.access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=admin.token_id))
        expect(Code.UNAUTHENTICATED, lambda: second.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()))
    start_up_id = TokenStore(ADMIN_TOKEN).admin_id
    expect(Code.FAILED_PRECONDITION, lambda: access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=start_up_id)))
    request = access_pb2.MintTokenRequest(role=access_pb2.ROLE_GUEST, platform=MISSING)
    expect(Code.NOT_FOUND, lambda: access.MintToken(request))


def test_deleting_a_platform_revokes_its_tokens_even_if_it_comes_back(secure: Secure) -> None:
    created = secure.create("doomed")
    extra = secure.admin.access.MintToken(access_pb2.MintTokenRequest(role=access_pb2.ROLE_GUEST, platform="doomed"))
    tokens = [created.guest_token.token, created.manager_token.token, extra.token.token]
    with secure.client(tokens[0]) as guest:
        assert guest.rtas.GetSensorState(sense("doomed")).state == 1
    secure.admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="doomed"))
    secure.create("doomed")  # the same name again: new tokens, the old ones stay dead
    read = platform_pb2.GetPlatformRequest(platform="doomed")
    for token in tokens:
        with secure.client(token) as client:
            expect(Code.UNAUTHENTICATED, lambda c=client: c.platforms.GetPlatform(read))  # type: ignore[misc]
    with secure.client(secure.guest("doomed")) as fresh:
        assert fresh.platforms.GetPlatform(read).platform.name == "doomed"


def test_list_tokens_never_shows_secrets(secure: Secure) -> None:
    created = secure.create("listed")
    minted = secure.admin.access.MintToken(access_pb2.MintTokenRequest(role=access_pb2.ROLE_MANAGER, platform="listed"))
    secrets = {created.guest_token.token, created.manager_token.token, minted.token.token, ADMIN_TOKEN}
    everything = secure.admin.access.ListTokens(access_pb2.ListTokensRequest())
    listed = secure.admin.access.ListTokens(access_pb2.ListTokensRequest(platform="listed"))
    assert [t.token_id for t in listed.tokens] == sorted(
        [created.guest_token.token_id, created.manager_token.token_id, minted.token.token_id]
    )
    assert {t.platform for t in listed.tokens} == {"listed"}
    assert all(t.token == "" for t in everything.tokens) and len(everything.tokens) > len(listed.tokens)
    for response in (everything, listed):
        blob = response.SerializeToString()
        assert not any(secret.encode() in blob for secret in secrets)


# --- TLS and mTLS handshakes ---------------------------------------------------------------------


def test_tls_is_required_and_verified(secure: Secure, tmp_path: Path) -> None:
    with pytest.raises(grpc.FutureTimeoutError):  # plain text to a TLS listener
        connect_with(Credentials(token=ADMIN_TOKEN), secure.tcp, timeout=1)
    stranger = Pki.make(tmp_path, "stranger-ca")
    with pytest.raises(grpc.FutureTimeoutError):  # a client that does not trust the server's CA
        connect(secure.tcp, timeout=1, ca=stranger.ca_path, token=ADMIN_TOKEN)
    # The unix socket speaks TLS too; its certificate names localhost, not the socket's path.
    with pytest.raises(grpc.FutureTimeoutError):
        connect_with(Credentials(ca=secure.pki.ca_pem, token=ADMIN_TOKEN), secure.unix, timeout=1)
    with secure.client(ADMIN_TOKEN, secure.unix, server_name="localhost") as over_unix:
        assert over_unix.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="a")).platform.name == "a"


def _tls_server(pki: Pki, dns: list[str], ips: list[str], client_ca: bool) -> PaprServer:
    issued = pki.issue("server", dns=dns, ips=ips)
    tls = TlsFiles(issued.cert_pem, issued.key_pem, pki.ca_pem if client_ca else None)
    platforms = Platforms()
    platforms.create("default", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"], security=Security(tls=tls, tokens=TokenStore(ADMIN_TOKEN)))
    server.start()
    return server


def test_server_name_override(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    server = _tls_server(pki, ["papr.test"], [], client_ca=False)
    try:
        with pytest.raises(grpc.FutureTimeoutError):  # 127.0.0.1 is not in the certificate
            connect(server.addresses[0], timeout=1, ca=pki.ca_pem, token=ADMIN_TOKEN)
        with connect(server.addresses[0], ca=pki.ca_path, token=ADMIN_TOKEN, server_name="papr.test") as client:
            client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())
    finally:
        server.stop(grace=0)


def test_mtls_refuses_a_handshake_without_a_client_certificate(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    server = _tls_server(pki, ["localhost"], ["127.0.0.1"], client_ca=True)
    target = server.addresses[0]
    try:
        with pytest.raises(grpc.FutureTimeoutError):
            connect(target, timeout=1, ca=pki.ca_pem, token=ADMIN_TOKEN)
        # A raw call fails at the transport, before any token is looked at.
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(pki.ca_pem))
        with channel:
            health = health_pb2_grpc.HealthStub(channel)
            expect(Code.UNAVAILABLE, lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2))
        foreign = Pki.make(tmp_path, "foreign-ca").issue("intruder", client=True)
        with pytest.raises(grpc.FutureTimeoutError):  # a certificate of another CA
            connect(target, timeout=1, ca=pki.ca_pem, cert=foreign.cert_pem, key=foreign.key_pem)
        job: Issued = pki.issue("job-7", client=True)
        with connect(target, ca=pki.ca_path, cert=job.cert_path, key=job.key_path, token=ADMIN_TOKEN) as client:
            assert [p.name for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms] == [
                "default"
            ]
            # The certificate proves who may connect; the token still decides what it may do.
            with connect(target, ca=pki.ca_pem, cert=job.cert_pem, key=job.key_pem, token="") as anonymous:
                expect(Code.UNAUTHENTICATED, lambda: anonymous.rtas.GetSensorState(sense("default")))
    finally:
        server.stop(grace=0)


def test_client_settings_come_from_the_environment(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPR_EMU_HOST", secure.unix)
    monkeypatch.setenv("PAPR_EMU_CA", str(secure.pki.ca_path))
    monkeypatch.setenv("PAPR_EMU_TOKEN", secure.guest("a"))
    monkeypatch.setenv("PAPR_EMU_SERVER_NAME", "localhost")
    with connect() as client:
        assert client.rtas.GetSensorState(sense("a")).state == 1
    with connect(token=ADMIN_TOKEN) as admin:  # an argument beats its variable
        admin.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())
    monkeypatch.setenv("PAPR_EMU_CERT", str(secure.pki.ca_path))
    with pytest.raises(ValueError, match="certificate and its key go together"):
        connect()
    monkeypatch.delenv("PAPR_EMU_CERT")
    monkeypatch.setenv("PAPR_EMU_CA", str(secure.pki.directory / "absent.pem"))
    with pytest.raises(OSError, match=r"^CA .*absent.pem: No such file or directory$"):
        connect()
    assert "s3cret" not in repr(Credentials(token="s3cret")) + repr(BearerToken("s3cret"))


# --- papr-emu serve: which listeners, files, sockets --------------------------------------------


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PAPR_EMU, "serve", "--log-format", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """The one error line of a `papr-emu serve` that must not start (exit status 2)."""
    process = serve(*args, env=env)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2, err
    errors = [line for line in err.splitlines() if not line.startswith("{")]  # JSON lines are the log
    assert len(errors) == 1 and errors[0].startswith("papr-emu: "), err
    assert "Traceback" not in err
    return errors[0]


def serving(process: subprocess.Popen[str]) -> tuple[list[str], list[str]]:
    """Wait for the server.serving log line; its addresses, and the lines read so far."""
    assert process.stderr is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"server exited ({process.wait()}): {''.join(lines)}")
        lines.append(line)
        if line.startswith("{") and json.loads(line)["event"] == "server.serving":
            return list(json.loads(line)["addresses"]), lines
    raise AssertionError("no server.serving")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_an_unprotected_network_listener_refuses_to_start() -> None:
    line = refused("--listen", "0.0.0.0:0")
    assert "refusing to listen on 0.0.0.0:0" in line
    assert "TLS (--tls-cert, --tls-key)" in line and "tokens (--admin-token-file)" in line and "--insecure" in line
    # TLS alone, or tokens alone, are not enough; the message names what is missing.
    line = refused("--listen", "0.0.0.0:0", env={"PAPR_EMU_ADMIN_TOKEN": ADMIN_TOKEN})
    assert "without TLS (--tls-cert, --tls-key):" in line and "tokens (" not in line


def test_insecure_or_tls_and_tokens_start_off_loopback(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    insecure = serve("--listen", "0.0.0.0:0", "--insecure")
    processes.append(insecure)
    addresses, _ = serving(insecure)
    port = addresses[0].rsplit(":", 1)[1]
    with connect_with(Credentials(), f"127.0.0.1:{port}") as client:
        client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())

    pki = Pki.make(tmp_path)
    issued = pki.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN + "\n")
    protected = serve(
        "--listen", "0.0.0.0:0", "--tls-cert", str(issued.cert_path), "--tls-key", str(issued.key_path),
        "--admin-token-file", str(tmp_path / "admin.token"),
    )  # fmt: skip
    processes.append(protected)
    addresses, _ = serving(protected)
    target = f"127.0.0.1:{addresses[0].rsplit(':', 1)[1]}"
    with connect(target, ca=pki.ca_pem, token=ADMIN_TOKEN) as admin:
        assert [p.name for p in admin.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms] == [
            "default"
        ]
    protected.send_signal(signal.SIGTERM)
    assert protected.wait(20) == 0


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--tls-cert", "{d}/absent.pem", "--tls-key", "{d}/key.pem"], ["--tls-cert", "absent.pem", "No such file"]),
        (["--tls-cert", "{d}/cert.pem", "--tls-key", "{d}/absent.key"], ["--tls-key", "absent.key", "No such file"]),
        (["--tls-cert", "{d}/cert.pem"], ["--tls-cert and --tls-key go together"]),
        (["--tls-client-ca", "{d}/cert.pem"], ["--tls-client-ca", "needs --tls-cert"]),
        (
            ["--tls-cert", "{d}/cert.pem", "--tls-key", "{d}/key.pem", "--tls-client-ca", "{d}/absent-ca.pem"],
            ["--tls-client-ca", "absent-ca.pem", "No such file"],
        ),
        (["--admin-token-file", "{d}/absent.token"], ["--admin-token-file", "absent.token", "No such file"]),
        (["--admin-token-file", "{d}/short.token"], ["at least 16 characters"]),
        (["--unix-socket-mode", "rw"], []),
    ],
    ids=[
        "cert-missing",
        "key-missing",
        "cert-alone",
        "client-ca-alone",
        "client-ca-missing",
        "token-file-missing",
        "token-short",
        "mode-not-octal",
    ],
)
def test_bad_security_settings_are_one_line_errors(tmp_path: Path, flags: list[str], words: list[str]) -> None:
    pki = Pki.make(tmp_path)
    issued = pki.issue("server", ips=["127.0.0.1"])
    issued.cert_path.rename(tmp_path / "cert.pem")
    issued.key_path.rename(tmp_path / "key.pem")
    (tmp_path / "short.token").write_text("too-short")
    args = [flag.replace("{d}", str(tmp_path)) for flag in flags]
    if words:
        line = refused("--listen", "127.0.0.1:0", *args)
        for word in words:
            assert word in line, line
    else:  # argparse's own usage error: exit 2 as well
        process = serve("--listen", "127.0.0.1:0", *args)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 2 and "not an octal file mode" in err


def test_a_certificate_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "garbage.key").write_text("not a key\n")
    line = refused("--listen", "127.0.0.1:0", "--tls-cert", f"{tmp_path}/garbage.pem", "--tls-key",
                   f"{tmp_path}/garbage.key")  # fmt: skip
    assert "--tls-cert" in line or "--tls-key" in line, line


@pytest.mark.parametrize(("flags", "mode"), [([], 0o600), (["--unix-socket-mode", "660"], 0o660)])
def test_unix_socket_mode(tmp_path: Path, processes: list[subprocess.Popen[str]], flags: list[str], mode: int) -> None:
    socket = tmp_path / "papr.sock"
    process = serve("--listen", f"unix:{socket}", *flags)
    processes.append(process)
    serving(process)
    assert stat.S_ISSOCK(socket.stat().st_mode) and stat.S_IMODE(socket.stat().st_mode) == mode


# --- logs and the CLI ----------------------------------------------------------------------------


def test_tokens_never_reach_the_log(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    socket = f"unix:{tmp_path}/papr.sock"
    process = serve("--listen", socket, "--log-level", "debug", env={"PAPR_EMU_ADMIN_TOKEN": ADMIN_TOKEN})
    processes.append(process)
    serving(process)
    used = [ADMIN_TOKEN]
    with connect(socket, token=ADMIN_TOKEN) as admin:
        created = admin.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name="p", geometry=geometry()))
        minted = admin.access.MintToken(access_pb2.MintTokenRequest(role=access_pb2.ROLE_GUEST, platform="p")).token
        used += [created.guest_token.token, created.manager_token.token, minted.token]
        with connect(socket, token=created.manager_token.token) as manager:
            manager.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="p", id="d", spec=dimm()))
            expect(Code.PERMISSION_DENIED, lambda: manager.rtas.GetSensorState(sense("p")))
        with connect(socket, token=minted.token) as guest:
            guest_runner = ReferenceGuest(guest, "p", RefusalPolicy())
            try:
                assert [o.result for o in guest_runner.handle_pending()] == ["done"]
            finally:
                guest_runner.close()
            admin.access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=minted.token_id))
            expect(Code.UNAUTHENTICATED, lambda: guest.rtas.GetSensorState(sense("p")))
        forged = "papr-guest-forged-token-that-the-server-never-made"
        used.append(forged)
        with connect(socket, token=forged) as stranger:
            expect(Code.UNAUTHENTICATED, lambda: stranger.rtas.GetSensorState(sense("p")))
        admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="p"))
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    log = out + err
    assert process.returncode == 0, log
    assert "access.minted" in log and "access.denied" in log and minted.token_id in log  # it did log, by id
    assert "rtas." in log  # debug: every call logged
    for secret in used:
        assert secret not in log
        assert secret.split("-")[-1] not in log  # not even the random part


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAPR_EMU_")}
    return subprocess.run([*PAPR_EMU, *args], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_health_command_over_tls(secure: Secure) -> None:
    env = {"PAPR_EMU_HOST": secure.tcp, "PAPR_EMU_CA": str(secure.pki.ca_path)}
    done = cli("health", env=env)  # no token needed
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr
    done = cli("health", "--timeout", "1", env={"PAPR_EMU_HOST": secure.tcp})  # plain text: no answer
    assert done.returncode == 1 and done.stderr.startswith("papr-emu: no answer from") and done.stdout == ""
    done = cli("health", "--server", secure.unix, "--server-name", "localhost", env=env)
    assert done.returncode == 0, done.stderr


def test_cli_over_tls_with_tokens(secure: Secure) -> None:
    env = {"PAPR_EMU_HOST": secure.tcp, "PAPR_EMU_CA": str(secure.pki.ca_path), "PAPR_EMU_TOKEN": ADMIN_TOKEN}
    done = cli("create", "cli-made", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("created cli-made: ") and lines[0].endswith(" connectors")
    assert [line.split()[:2] for line in lines[1:]] == [["manager", "token"], ["guest", "token"]]
    guest_token = lines[2].rsplit(" ", 1)[1]
    done = cli("token", "mint", "--role", "manager", "--platform", "cli-made", env=env)
    assert done.returncode == 0, done.stderr
    manager_token = done.stdout.strip()
    assert manager_token.startswith("papr-manager-") and "\n" not in manager_token
    token_id = done.stderr.split()[3]
    done = cli("token", "list", "--platform", "cli-made", env=env)
    assert done.returncode == 0 and done.stdout.splitlines()[0].split() == ["TOKEN_ID", "ROLE", "PLATFORM"]
    assert token_id in done.stdout and "papr-" not in done.stdout
    # The guest's token (in the variable) reads its connectors; the platform table is the admin's.
    done = cli("connectors", "--platform", "cli-made", "--type", "cpu", env={**env, "PAPR_EMU_TOKEN": guest_token})
    assert done.returncode == 0 and done.stdout.splitlines()[1].split()[0] == "0x10000000", done.stderr
    done = cli("platforms", env={**env, "PAPR_EMU_TOKEN": guest_token})
    assert done.returncode == 1 and done.stderr.startswith("papr-emu: PERMISSION_DENIED: ")
    done = cli("token", "revoke", token_id, env=env)
    assert (done.returncode, done.stdout) == (0, f"revoked {token_id}\n"), done.stderr
    done = cli("devices", "--platform", "cli-made", "--token", manager_token, env=env)  # --token beats the variable
    assert done.returncode == 1 and done.stderr.startswith("papr-emu: UNAUTHENTICATED: "), done.stderr


def test_cli_in_process_options(secure: Secure, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--server", secure.unix, "--ca", str(secure.pki.ca_path), "--server-name", "localhost"]
    assert main(["platforms", *base, "--token", ADMIN_TOKEN]) == 0
    assert "a " in capsys.readouterr().out
    # Options accepted after a plug's device kind too.
    code = main(["plug", "--platform", "a", "dimm", "--size", "256M", "--id", "cli-dimm", *base, "--token",
                 secure.manager("a")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("plugged cli-dimm")
    assert main(["token", "mint", "--role", "admin", "--platform", "a", *base, "--token", ADMIN_TOKEN]) == 1
    assert "drop --platform" in capsys.readouterr().err
    assert main(["platforms", *base, "--cert", str(secure.pki.ca_path)]) == 1
    assert capsys.readouterr().err.startswith("papr-emu: a client certificate and its key go together")
    assert main(["platforms", "--server", secure.unix, "--ca", "/nonexistent/ca.pem"]) == 1
    assert capsys.readouterr().err == "papr-emu: CA /nonexistent/ca.pem: No such file or directory\n"


def test_nothing_set_keeps_plain_text(monkeypatch: pytest.MonkeyPatch, server: PaprServer) -> None:
    for variable in ("PAPR_EMU_CA", "PAPR_EMU_CERT", "PAPR_EMU_KEY", "PAPR_EMU_TOKEN", "PAPR_EMU_SERVER_NAME"):
        monkeypatch.delenv(variable, raising=False)
    settings = Credentials.resolve()
    assert not settings.tls and settings.token is None
    with connect(server.addresses[1]) as client:
        client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())
