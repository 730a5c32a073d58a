"""The C++ guest stub (client/cpp) against a real server: DIMM hot-add, hot-remove and a
removal refused by unisolate, with the same outcomes as the Python ReferenceGuest, its
RTAS calls batched over one RtasService.Session (or, with --unary, one unary RPC each);
in plaintext, and over mTLS to a server that requires tokens (the platform's guest token
for the guest's RPCs, its manager token for HotplugService's), configured by the
PAPR_EMU_* variables or by options. Under busy and extended-delay fault rules the stub calls
again as Linux does and ends the same; no run leaves a conduct finding.

The stub is built with CMake in a directory under the system temp dir, reused across
runs. It needs a C++ compiler, CMake, pkg-config, protoc with the gRPC C++ plugin and the
gRPC/protobuf C++ libraries; without them the test fails (it never skips) and says what
to install.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pki import Issued, Pki
from stub_faults import FAULTS, F, add_fault_rules, check_faults

from conftest import new_platform
from helpers import connector, events_since, last_sequence
from papr.v1 import (
    connector_pb2,
    device_pb2,
    fault_pb2,
    guest_pb2,
    hotplug_pb2,
    platform_pb2,
)
from papr_emu import PaprServer
from papr_emu.model import Platforms
from papr_emu.security import Security
from papr_emu_client import Client, Outcome, ReferenceGuest, RefusalPolicy
from papr_emu_client.transport import RetryPolicy

SOURCE_DIR = Path(__file__).resolve().parent.parent / "client" / "cpp"
# One build directory per checkout, so that two clones do not fight over a CMake cache.
BUILD_DIR = Path(tempfile.gettempdir()) / "papr-cpp-build" / hashlib.sha256(str(SOURCE_DIR).encode()).hexdigest()[:12]
APT_PACKAGES = "g++ cmake pkg-config protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev"
CONFIGURE_TIMEOUT = 120
BUILD_TIMEOUT = 480  # a cold build is ~45 s on 2 cores; generous for a loaded CI machine
STUB_TIMEOUT = 60  # the stub bounds each wait at 10 s and its streams at 60 s

DEVICE_ID = "dimm-cpp"
DIMM_BYTES = 768 << 20  # three LMBs
# Option vector 5 with byte 6 bit 0x04 (hot-plug event source): count-indexed DIMM adds.
HOTPLUG_EVENTS_VECTOR = bytes([22, 0, 0, 0, 0, 0, 0x04]) + bytes(17)
EXPECTED_EVENT_KINDS = [
    "device_added",
    "unplug_requested",
    "device_deleted",
    "device_added",
    "unplug_requested",
    "unplug_rejected",
]

# A cold build can take longer than the suite's default per-test timeout.
pytestmark = pytest.mark.timeout(CONFIGURE_TIMEOUT + BUILD_TIMEOUT + 2 * STUB_TIMEOUT)


def _missing_tools() -> list[str]:
    missing = [tool for tool in ("cmake", "pkg-config", "protoc", "grpc_cpp_plugin") if shutil.which(tool) is None]
    if not any(shutil.which(compiler) for compiler in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    if shutil.which("pkg-config") is not None:
        check = subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"], capture_output=True, timeout=30)
        if check.returncode != 0:
            missing.append("the grpc++ and protobuf pkg-config modules")
    return missing


def _run_build_step(command: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} took more than {timeout} s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def stub_binary() -> Path:
    """client/cpp built (incrementally) with warnings as errors; the papr-guest-cpp path."""
    missing = _missing_tools()
    if missing:
        pytest.fail(
            f"cannot build the C++ stub: missing {', '.join(missing)}. On Debian 12: "
            f"apt-get install -y --no-install-recommends {APT_PACKAGES}",
            pytrace=False,
        )
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building the same tree
        _run_build_step(
            ["cmake", "-S", str(SOURCE_DIR), "-B", str(BUILD_DIR), "-DPAPR_GUEST_WERROR=ON"], CONFIGURE_TIMEOUT
        )
        _run_build_step(["cmake", "--build", str(BUILD_DIR), "-j", "2"], BUILD_TIMEOUT)
    binary = BUILD_DIR / "papr-guest-cpp"
    assert binary.is_file(), f"the build did not produce {binary}"
    return binary


RTAS_SERVICE = "/papr.v1.RtasService/"
SESSION = RTAS_SERVICE + "Session"
# configure-connector walks the scenario makes: 3 LMBs added twice, 1 re-added on the refusal.
EXPECTED_WALKS = 7


def run_stub(
    binary: Path, target: str | None, platform: str, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The stub on `platform`, with $PAPR_EMU_HOST = `target` (unset if None), the PAPR_EMU_*
    variables of `env` and none of the caller's."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PAPR_EMU_")}
    env = {**clean, **({"PAPR_EMU_HOST": target} if target is not None else {}), **(env or {})}
    return subprocess.run(
        [str(binary), *flags, platform], env=env, capture_output=True, text=True, timeout=STUB_TIMEOUT
    )


def check_wire(summary: dict[str, Any], mode: str, fired: Sequence[fault_pb2.FaultFired] = ()) -> None:
    """What the stub's last line says went over the wire: its transport's own account
    (``rtas``) and the per-method RPC counts of a client interceptor (``grpc``); with the
    busy and extended-delay faults that `fired`, one call again for each, and each seen."""
    rtas, rpcs = summary["rtas"], summary["grpc"]
    rtas_rpcs = {method: counts for method, counts in rpcs.items() if method.startswith(RTAS_SERVICE)}
    assert rtas["transport"] == mode
    assert (rtas["retries"], summary["fault_events"]) == (len(fired), len(fired)), summary
    # A walk answered "call again" goes on as a walk of its own.
    walk_retries = sum(f.call == fault_pb2.FAULT_CALL_CONFIGURE_CONNECTOR for f in fired)
    assert rtas["walks"] == EXPECTED_WALKS + walk_retries
    # Each walk made several calls (with faults, calls are sent again, one at a time).
    assert fired or rtas["rtas_calls"] > rtas["batched_calls"]
    if mode == "session":
        # Every RTAS call went through one Session, one request (and response) per batch,
        # batches of several calls where the kernel makes several in a row; no unary RPC.
        batches = rtas["batches"]
        assert rtas_rpcs == {SESSION: {"calls": 1, "sent": batches, "received": batches}}, rpcs
        assert rtas["rpcs"] == 1
        assert fired or rtas["batched_calls"] > batches
    else:
        # One unary RPC per RTAS call, no Session.
        assert SESSION not in rtas_rpcs
        assert sum(counts["calls"] for counts in rtas_rpcs.values()) == rtas["rpcs"] == rtas["rtas_calls"], rpcs
        assert all(counts["sent"] == counts["received"] == counts["calls"] for counts in rtas_rpcs.values()), rpcs


def outcome_fields(outcome: Outcome) -> dict[str, Any]:
    """The fields the C++ stub prints, from a ReferenceGuest outcome."""
    return {
        "resource": outcome.event.resource,
        "action": outcome.event.action,
        "result": outcome.result,
        "drc_indexes": list(outcome.drc_indexes),
    }


@pytest.fixture(scope="module")
def reference_outcomes(client: Client) -> list[dict[str, Any]]:
    """The same scenario played by the Python ReferenceGuest on its own fresh platform."""
    platform = new_platform(client)
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=platform, option_vector_5=HOTPLUG_EVENTS_VECTOR)
    )
    guest = ReferenceGuest(client, platform)
    guest.start()
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=DIMM_BYTES))
    plug = hotplug_pb2.PlugDeviceRequest(platform=platform, id=DEVICE_ID, spec=spec)
    unplug = hotplug_pb2.UnplugDeviceRequest(platform=platform, id=DEVICE_ID)
    try:
        client.hotplug.PlugDevice(plug)
        assert len(guest.wait_for(1)) == 1
        client.hotplug.UnplugDevice(unplug)
        assert len(guest.wait_for(2)) == 2
        lmbs = client.hotplug.PlugDevice(plug).device.drc_indexes
        assert len(guest.wait_for(3)) == 3
        guest.policy = RefusalPolicy(lmbs_not_offlinable={lmbs[1]}, signal="unisolate")
        client.hotplug.UnplugDevice(unplug)
        outcomes = guest.wait_for(4)
    finally:
        guest.stop()
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))
    fields = [outcome_fields(o) for o in outcomes]
    # The scenario must exercise what it is meant to, or the comparison proves little.
    assert [f["result"] for f in fields] == ["done", "done", "done", "refused"], outcomes
    return fields


@pytest.fixture
def cpp_platform(client: Client) -> Iterator[str]:
    name = new_platform(client)
    yield name
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))


@pytest.mark.parametrize(("transport", "mode"), [("tcp", "session"), ("unix", "session"), ("tcp", "unary")])
def test_cpp_stub_matches_reference_guest(
    server: PaprServer,
    client: Client,
    stub_binary: Path,
    reference_outcomes: list[dict[str, Any]],
    cpp_platform: str,
    transport: str,
    mode: str,
) -> None:
    target = server.addresses[0 if transport == "tcp" else 1]
    assert target.startswith("unix:") == (transport == "unix")
    boot_events = last_sequence(client, cpp_platform)  # device_added for the coldplugged devices
    result = run_stub(stub_binary, target, cpp_platform, *(["--unary"] if mode == "unary" else []))
    check_run(result, reference_outcomes, mode)
    assert check_platform(client, cpp_platform, boot_events) == []


def check_run(
    result: subprocess.CompletedProcess[str],
    reference_outcomes: list[dict[str, Any]],
    mode: str,
    fired: Sequence[fault_pb2.FaultFired] = (),
) -> None:
    """The stub passed, its event lines match the reference guest's, its last line `mode`
    (and a call again for each fault that `fired`)."""
    assert result.returncode == 0, f"papr-guest-cpp exited {result.returncode}:\n{result.stderr}"
    *lines, summary = [json.loads(line) for line in result.stdout.splitlines()]
    keys = ("resource", "action", "result", "drc_indexes")
    assert [{k: line[k] for k in keys} for line in lines] == reference_outcomes, result.stderr
    check_wire(summary, mode, fired)


def check_platform(client: Client, platform: str, boot_events: int) -> list[fault_pb2.FaultFired]:
    """What the platform saw, independently of the stub's own checks: no conduct finding,
    the scenario's events (besides fault_fired), the DIMM whole. Returns the faults that fired."""
    conduct = client.faults.GetConduct(fault_pb2.GetConductRequest(platform=platform))
    assert (list(conduct.findings), conduct.total) == ([], 0)
    events = events_since(client, platform, boot_events)
    kinds = [e.WhichOneof("kind") for e in events]
    assert [kind for kind in kinds if kind != "fault_fired"] == EXPECTED_EVENT_KINDS
    device = client.hotplug.GetDevice(hotplug_pb2.GetDeviceRequest(platform=platform, id=DEVICE_ID)).device
    assert not device.unplug_pending
    for index in device.drc_indexes:
        c = connector(client, platform, index)
        assert (c.state, c.unplug_pending) == (connector_pb2.DRC_STATE_LOGICAL_CONFIGURED, False)
    return [e.fault_fired for e in events if e.WhichOneof("kind") == "fault_fired"]


@pytest.mark.parametrize("mode", ["session", "unary"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_cpp_stub_calls_again_after_busy_and_extended_delay(
    client: Client,
    server: PaprServer,
    stub_binary: Path,
    reference_outcomes: list[dict[str, Any]],
    cpp_platform: str,
    fault: str,
    mode: str,
) -> None:
    """Under busy (-2) or extended delay (990x) on every kind of call it makes, the stub ends
    as without faults: it calls each one again (a busy one at once, a delayed one after the
    hint, so the platform finds no retry too soon), and the fault_fired events account for
    each call again."""
    add_fault_rules(client, cpp_platform, fault, probability=0.3)
    boot_events = last_sequence(client, cpp_platform)
    result = run_stub(stub_binary, server.addresses[0], cpp_platform, *(["--unary"] if mode == "unary" else []))
    assert result.returncode == 0, f"papr-guest-cpp exited {result.returncode}:\n{result.stderr}"
    fired = check_platform(client, cpp_platform, boot_events)  # no finding: no retry too soon
    check_run(result, reference_outcomes, mode, fired)
    check_faults(client, cpp_platform, fault, fired)


def test_cpp_stub_fails_loudly(server: PaprServer, stub_binary: Path) -> None:
    result = run_stub(stub_binary, server.addresses[0], "no-such-platform")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "FAIL: GetPlatform failed: NOT_FOUND" in result.stderr


# --- Over mTLS, to a server that requires tokens -------------------------------------------

SERVER_NAME = "localhost"  # in the server certificate's SAN, with 127.0.0.1
GEOMETRY = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4)


@dataclass(frozen=True)
class SecureServer:
    """A server with TLS, mTLS (client certificates from the test CA) and tokens, and its admin client."""

    server: PaprServer
    admin: Client
    pki: Pki
    client_cert: Issued
    directory: Path

    def tls_env(self, client_cert: bool = True) -> dict[str, str]:
        env = {"PAPR_EMU_CA": str(self.pki.ca_path)}
        if client_cert:
            env |= {"PAPR_EMU_CERT": str(self.client_cert.cert_path), "PAPR_EMU_KEY": str(self.client_cert.key_path)}
        return env

    def tls_options(self) -> list[str]:
        cert, key = self.client_cert.cert_path, self.client_cert.key_path
        return ["--ca", str(self.pki.ca_path), "--cert", str(cert), "--key", str(key), "--server-name", SERVER_NAME]

    def token_file(self, name: str, token: str) -> Path:
        path = self.directory / f"{name}.token"
        path.write_text(token + "\n")
        return path

    def create_platform(self) -> tuple[str, str, str]:
        """A fresh platform (the default geometry) and its guest and manager tokens."""
        name = f"secure{next(_secure_names)}"
        created = self.admin.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name, geometry=GEOMETRY))
        assert created.guest_token.token and created.manager_token.token
        return name, created.guest_token.token, created.manager_token.token


_secure_names = iter(range(1_000_000))


def _admin_client(target: str, pki: Pki | None, cert: Issued | None, admin_token: str) -> Client:
    """A client with the admin token: over mTLS, or (no `pki`) over local credentials, which
    speak plaintext to a loopback server and, unlike an insecure channel, carry call credentials."""
    channel_credentials = (
        grpc.ssl_channel_credentials(pki.ca_pem, cert.key_pem, cert.cert_pem)
        if pki is not None and cert is not None
        else grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    credentials = grpc.composite_channel_credentials(
        channel_credentials, grpc.access_token_call_credentials(admin_token)
    )
    channel = grpc.secure_channel(target, credentials)
    grpc.channel_ready_future(channel).result(timeout=10)
    return Client.over(channel)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    directory = tmp_path_factory.mktemp("cpp-tls")
    pki = Pki.make(directory)
    server_cert = pki.issue("server", dns=[SERVER_NAME], ips=["127.0.0.1"])
    client_cert = pki.issue("cpp-stub", client=True)
    admin_token = "admin-" + os.urandom(16).hex()
    admin_file = directory / "admin.token"
    admin_file.write_text(admin_token)
    security = Security.load(
        tls_cert=server_cert.cert_path,
        tls_key=server_cert.key_path,
        tls_client_ca=pki.ca_path,
        admin_token_file=admin_file,
    )
    server = PaprServer(Platforms(), ["127.0.0.1:0", f"unix:{directory}/papr.sock"], security=security)
    server.start()
    try:
        admin = _admin_client(server.addresses[0], pki, client_cert, admin_token)
        try:
            yield SecureServer(server, admin, pki, client_cert, directory)
        finally:
            admin.close()
    finally:
        server.stop(grace=0.5)


@pytest.fixture(scope="module")
def plaintext_tokens(secure: SecureServer) -> Iterator[SecureServer]:
    """A server that requires tokens, in plaintext on loopback (which the server allows), and
    its admin client (the `pki` and `client_cert` fields are the TLS server's, unused here)."""
    admin_token = "admin-" + os.urandom(16).hex()
    admin_file = secure.directory / "plaintext-admin.token"
    admin_file.write_text(admin_token)
    server = PaprServer(Platforms(), ["127.0.0.1:0"], security=Security.load(admin_token_file=admin_file))
    server.start()
    try:
        admin = _admin_client(server.addresses[0], None, None, admin_token)
        try:
            yield SecureServer(server, admin, secure.pki, secure.client_cert, secure.directory)
        finally:
            admin.close()
    finally:
        server.stop(grace=0.5)


def test_cpp_stub_with_tokens_in_plaintext_on_loopback(
    plaintext_tokens: SecureServer, stub_binary: Path, reference_outcomes: list[dict[str, Any]]
) -> None:
    """Tokens without TLS, to a loopback server: the interceptor sends them on an insecure
    channel too (call credentials would not), here with one unary RPC per RTAS call."""
    platform, guest_token, manager_token = plaintext_tokens.create_platform()
    try:
        boot_events = last_sequence(plaintext_tokens.admin, platform)
        env = {"PAPR_EMU_TOKEN": guest_token, "PAPR_EMU_MANAGER_TOKEN": manager_token}
        result = run_stub(stub_binary, plaintext_tokens.server.addresses[0], platform, "--unary", env=env)
        assert_no_secret(result, guest_token, manager_token)
        assert ": plaintext, a guest and a manager token" in result.stderr
        check_run(result, reference_outcomes, "unary")
        assert check_platform(plaintext_tokens.admin, platform, boot_events) == []
    finally:
        plaintext_tokens.admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def assert_no_secret(result: subprocess.CompletedProcess[str], *tokens: str) -> None:
    for token in tokens:
        assert token not in result.stdout and token not in result.stderr, "the stub printed a token"


@pytest.mark.parametrize(("transport", "configured_by"), [("tcp", "env"), ("unix", "options")])
def test_cpp_stub_over_mtls_with_tokens(
    secure: SecureServer,
    stub_binary: Path,
    reference_outcomes: list[dict[str, Any]],
    transport: str,
    configured_by: str,
) -> None:
    """The same scenario and outcomes as in plaintext, over mTLS, the guest's RPCs with the
    platform's guest token and HotplugService's with its manager token (which the server
    checks: a guest token may not plug, a manager token may not make RTAS calls)."""
    platform, guest_token, manager_token = secure.create_platform()
    target = secure.server.addresses[0 if transport == "tcp" else 1]
    try:
        boot_events = last_sequence(secure.admin, platform)
        if configured_by == "env":
            env = {**secure.tls_env(), "PAPR_EMU_TOKEN": guest_token, "PAPR_EMU_MANAGER_TOKEN": manager_token}
            result = run_stub(stub_binary, target, platform, env=env)
        else:
            options = [
                *("--server", target),
                *secure.tls_options(),
                *("--token-file", str(secure.token_file("guest", guest_token))),
                *("--manager-token-file", str(secure.token_file("manager", manager_token))),
            ]
            result = run_stub(stub_binary, None, platform, *options)
        assert_no_secret(result, guest_token, manager_token)
        assert ": mTLS" in result.stderr and "a guest and a manager token" in result.stderr
        check_run(result, reference_outcomes, "session")
        assert check_platform(secure.admin, platform, boot_events) == []
    finally:
        secure.admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_cpp_stub_without_a_token_is_unauthenticated(secure: SecureServer, stub_binary: Path) -> None:
    platform = secure.create_platform()[0]
    try:
        result = run_stub(stub_binary, secure.server.addresses[0], platform, env=secure.tls_env())
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "FAIL: GetPlatform failed: UNAUTHENTICATED" in result.stderr
    finally:
        secure.admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_cpp_stub_with_a_guest_token_only_may_not_plug(secure: SecureServer, stub_binary: Path) -> None:
    """Why the stub takes a manager token: its management side (HotplugService) needs one."""
    platform, guest_token, _ = secure.create_platform()
    try:
        env = {**secure.tls_env(), "PAPR_EMU_TOKEN": guest_token}
        result = run_stub(stub_binary, secure.server.addresses[0], platform, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "FAIL: WatchEvents ended: PERMISSION_DENIED: a guest token may not call WatchEvents" in result.stderr
        assert_no_secret(result, guest_token)
    finally:
        secure.admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_cpp_stub_does_not_trust_another_ca(secure: SecureServer, stub_binary: Path, tmp_path: Path) -> None:
    """A server certificate from a CA the stub was not told to trust: no connection, and the
    failure says it is the certificate (after the stub's 10 s wait for the channel)."""
    other_ca = Pki.make(tmp_path, name="other-ca")
    platform, guest_token, manager_token = secure.create_platform()
    try:
        env = {
            **secure.tls_env(),
            "PAPR_EMU_CA": str(other_ca.ca_path),
            "PAPR_EMU_TOKEN": guest_token,
            "PAPR_EMU_MANAGER_TOKEN": manager_token,
        }
        result = run_stub(stub_binary, secure.server.addresses[0], platform, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        failure = next(line for line in result.stderr.splitlines() if "FAIL:" in line)
        assert f"FAIL: cannot reach papr-emu at {secure.server.addresses[0]} within 10 s: UNAVAILABLE" in failure
        assert "certificate verify failed" in failure.lower()
        assert_no_secret(result, guest_token, manager_token)
    finally:
        secure.admin.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_cpp_stub_gives_up_after_10000_calls_again(
    client: Client, server: PaprServer, stub_binary: Path, cpp_platform: str
) -> None:
    """A call busy for ever is called again 10,000 times (the reference guest's bound), then its
    status stands: the add fails on it, and the stub says so."""
    first_lmb = 0x80000004
    rule = F.FaultRule(
        name="stuck", effect=F.FAULT_EFFECT_BUSY, call=F.FAULT_CALL_GET_SENSOR_STATE, drc_index=first_lmb
    )
    client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=cpp_platform, rule=rule))
    result = run_stub(stub_binary, server.addresses[0], cpp_platform)
    assert result.returncode == 1, result.stderr
    (failure,) = [line for line in result.stderr.splitlines() if "FAIL:" in line]
    assert "add event: expected done" in failure and "get-sensor-state(dr-entity-sense)" in failure, failure
    assert "on 0x80000004 returned -2" in failure, failure
    (listed,) = client.faults.ListFaultRules(F.ListFaultRulesRequest(platform=cpp_platform)).rules
    assert listed.matched == listed.fired == 1 + RetryPolicy().max_retries  # the same bound as the reference guest
    conduct = client.faults.GetConduct(F.GetConductRequest(platform=cpp_platform))
    assert (list(conduct.findings), conduct.total) == ([], 0)  # busy may be called again at once
