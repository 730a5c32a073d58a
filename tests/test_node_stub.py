"""The Node.js guest stub (client/node/guest.js) against a real server: CPU core hot-add,
removal and refused removal, with the same outcomes as the Python ReferenceGuest, its RTAS
calls through one RtasService.Session stream (or, with --unary, one unary RPC per call);
on a plaintext server, and on servers that require tokens (with TLS and mTLS, or plaintext
on loopback), the stub using the guest and manager tokens CreatePlatform returned. Under busy
and extended-delay fault rules the stub calls again as Linux does and ends the same; no run
leaves a conduct finding.

Needs Node.js and npm (Debian: `apt-get install nodejs npm`); without them the test fails,
it never skips. If client/node/node_modules is missing, the test runs `npm ci` there
(the lock file is committed), which needs the npm registry.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import secrets
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
    hotplug_pb2,
    platform_pb2,
)
from papr_emu import PaprServer
from papr_emu.model import Platforms
from papr_emu.security import Security
from papr_emu_client import Client, Outcome, ReferenceGuest, RefusalPolicy
from papr_emu_client.transport import RetryPolicy

NODE_DIR = Path(__file__).resolve().parent.parent / "client" / "node"
CORE_DRC = 0x10000001
STUB_TIMEOUT = 60  # the stub bounds its own waits at 10 s each and its whole run at 60 s
NPM_CI_TIMEOUT = 300

# What both guests must report, and the management events the platform must emit, in order.
EXPECTED_EVENT_KINDS = [
    "device_added",
    "unplug_requested",
    "device_deleted",
    "device_added",
    "unplug_requested",
    "unplug_rejected",
]
RTAS_SERVICE = "papr.v1.RtasService"
# The fewest session requests the scenario takes: per hot-add a check-exception, the acquire
# batch and a configure-connector walk; then a check-exception and the release batch; a
# check-exception and the unisolate batch (a stale interrupt pulse adds a check-exception).
MIN_SESSION_REQUESTS = 2 * 3 + 2 + 2


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: the Node.js stub test needs Node.js (>= 18) and npm; "
            "on Debian: apt-get install -y --no-install-recommends nodejs npm",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with client/node/node_modules installed (npm ci if missing)."""
    node = _tool("node")
    modules = NODE_DIR / "node_modules"
    if not all((modules / "@grpc" / name / "package.json").is_file() for name in ("grpc-js", "proto-loader")):
        npm = _tool("npm")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return node


# The variables the stub reads to connect: none leaks in from the environment the tests run in.
CONNECTION_VARIABLES = (
    "PAPR_EMU_HOST",
    "PAPR_EMU_CA",
    "PAPR_EMU_CERT",
    "PAPR_EMU_KEY",
    "PAPR_EMU_SERVER_NAME",
    "PAPR_EMU_TOKEN",
    "PAPR_EMU_MANAGER_TOKEN",
)
PLAINTEXT = {"tls": False, "client_cert": False, "tokens": "none", "channels": 1}


def run_stub(
    node: str, target: str, platform: str, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in CONNECTION_VARIABLES},
        "PAPR_EMU_HOST": target,
        **(env or {}),
    }
    return subprocess.run(
        [node, str(NODE_DIR / "guest.js"), *options, platform],
        env=env,
        capture_output=True,
        text=True,
        timeout=STUB_TIMEOUT,
    )


def as_line(outcome: Outcome) -> dict[str, Any]:
    return {
        "resource": outcome.event.resource,
        "action": outcome.event.action,
        "result": outcome.result,
        "drc_indexes": list(outcome.drc_indexes),
    }


def reference_outcomes(client: Client, platform: str) -> list[dict[str, Any]]:
    """The same scenario with the Python reference guest: add, remove, add, remove refused ("CPU busy")."""
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
    plug = hotplug_pb2.PlugDeviceRequest(platform=platform, id="core-node", spec=spec)
    unplug = hotplug_pb2.UnplugDeviceRequest(platform=platform, id="core-node")
    guest = ReferenceGuest(client, platform, RefusalPolicy())  # the first removal completes
    guest.start()
    try:
        client.hotplug.PlugDevice(plug)
        assert len(guest.wait_for(1)) == 1
        client.hotplug.UnplugDevice(unplug)
        assert len(guest.wait_for(2)) == 2
        client.hotplug.PlugDevice(plug)
        assert len(guest.wait_for(3)) == 3
        guest.policy = RefusalPolicy(busy_cpus={CORE_DRC})  # the second one is refused
        client.hotplug.UnplugDevice(unplug)
        outcomes = guest.wait_for(4)
    finally:
        guest.stop()
    assert len(outcomes) == 4, outcomes
    return [as_line(o) for o in outcomes]


def event_kinds(client: Client, platform: str, after: int) -> list[str]:
    """The kinds of the platform's events after `after`, but fault_fired."""
    kinds = [str(e.WhichOneof("kind")) for e in events_since(client, platform, after)]
    return [kind for kind in kinds if kind != "fault_fired"]


def faults_fired(client: Client, platform: str, after: int) -> list[fault_pb2.FaultFired]:
    return [e.fault_fired for e in events_since(client, platform, after) if e.WhichOneof("kind") == "fault_fired"]


def check_no_findings(client: Client, platform: str) -> None:
    conduct = client.faults.GetConduct(fault_pb2.GetConductRequest(platform=platform))
    assert (list(conduct.findings), conduct.total) == ([], 0), platform


def delete(client: Client, platform: str) -> None:
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def rtas_rpcs(summary: dict[str, Any]) -> dict[str, int]:
    """The RtasService RPCs the stub started (by its client interceptor's count), by method."""
    prefix = f"{RTAS_SERVICE}/"
    return {m.removeprefix(prefix): n for m, n in summary["rpcs"].items() if m.startswith(prefix)}


def check_session_only(summary: dict[str, Any]) -> None:
    """Every RTAS call went through one Session stream, batched: no unary RTAS RPC."""
    assert summary["rtas"] == "session"
    assert rtas_rpcs(summary) == {"Session": 1}, summary
    assert (summary["session_streams"], summary["unary_rtas_calls"]) == (1, 0), summary
    assert summary["session_requests"] == summary["session_responses"] >= MIN_SESSION_REQUESTS, summary


def check_unary_only(summary: dict[str, Any], fired: Sequence[fault_pb2.FaultFired] = ()) -> None:
    """--unary: one unary RPC per RTAS call, no session; the configure-connector loop as calls;
    one more call for each fault that `fired`."""
    assert summary["rtas"] == "unary"
    rpcs = rtas_rpcs(summary)
    assert "Session" not in rpcs and summary["session_streams"] == summary["session_requests"] == 0, summary
    assert set(rpcs) == {"CheckException", "GetSensorState", "SetIndicator", "ConfigureConnector"}, summary
    again = collections.Counter(f.call for f in fired)
    assert rpcs["GetSensorState"] == 4 + again[fault_pb2.FAULT_CALL_GET_SENSOR_STATE], summary
    assert rpcs["SetIndicator"] == 2 + 2 + 2 + 1 + again[fault_pb2.FAULT_CALL_SET_INDICATOR], summary
    assert summary["unary_rtas_calls"] == sum(rpcs.values()), summary


def check_stub_run(
    result: subprocess.CompletedProcess[str],
    client: Client,
    node_platform: str,
    python_platform: str,
    after: dict[str, int],
    rtas: str,
    security: dict[str, Any],
) -> list[fault_pb2.FaultFired]:
    """The stub's run on node_platform matches the reference guest's on python_platform, and
    neither has a conduct finding. Returns the faults that fired on node_platform: the stub
    called again once for each, and saw each fault_fired event."""
    assert result.returncode == 0, f"guest.js exited {result.returncode}:\n{result.stderr}"
    *lines, last = [json.loads(line) for line in result.stdout.splitlines()]
    summary = last["summary"]  # the RPCs the stub made, after the event lines
    check_no_findings(client, node_platform)
    fired = faults_fired(client, node_platform, after[node_platform])
    assert (summary["retries"], summary["fault_events"]) == (len(fired), len(fired)), summary
    if rtas == "session":
        check_session_only(summary)
    else:
        check_unary_only(summary, fired)
    assert summary["security"] == security, summary

    expected = reference_outcomes(client, python_platform)
    assert [line["result"] for line in expected] == ["done", "done", "done", "refused"]
    assert lines == expected

    # The platform saw the same thing from both guests.
    assert event_kinds(client, node_platform, after[node_platform]) == EXPECTED_EVENT_KINDS
    assert event_kinds(client, python_platform, after[python_platform]) == EXPECTED_EVENT_KINDS
    check_no_findings(client, python_platform)
    events = events_since(client, node_platform, after[node_platform])
    rejected = [e for e in events if e.WhichOneof("kind") == "unplug_rejected"][-1].unplug_rejected
    assert (rejected.signal, rejected.drc_index) == (hotplug_pb2.REFUSAL_SIGNAL_UNISOLATE, CORE_DRC)
    node_core, python_core = (connector(client, p, CORE_DRC) for p in (node_platform, python_platform))
    assert node_core == python_core
    assert (node_core.state, node_core.unplug_pending) == (connector_pb2.DRC_STATE_LOGICAL_CONFIGURED, False)
    return fired


@pytest.mark.parametrize(
    ("transport", "rtas"),
    [("unix", "session"), ("tcp", "session"), ("unix", "unary")],
)
def test_node_stub_matches_the_reference_guest(
    node: str, server: PaprServer, client: Client, transport: str, rtas: str
) -> None:
    target = server.addresses[1] if transport == "unix" else server.addresses[0]
    node_platform = new_platform(client)
    python_platform = new_platform(client)
    after = {p: last_sequence(client, p) for p in (node_platform, python_platform)}  # after the boot devices
    try:
        result = run_stub(node, target, node_platform, *(["--unary"] if rtas == "unary" else []))
        assert check_stub_run(result, client, node_platform, python_platform, after, rtas, PLAINTEXT) == []
    finally:
        delete(client, node_platform)
        delete(client, python_platform)


@pytest.mark.parametrize("rtas", ["session", "unary"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_node_stub_calls_again_after_busy_and_extended_delay(
    node: str, server: PaprServer, client: Client, fault: str, rtas: str
) -> None:
    """Under busy (-2) or extended delay (990x) on every kind of call it makes, the stub ends
    as the reference guest does without faults: it calls each one again (a busy one at once,
    a delayed one after the hint, so the platform finds no retry too soon), and the
    fault_fired events account for each call again."""
    node_platform = new_platform(client)
    python_platform = new_platform(client)
    add_fault_rules(client, node_platform, fault, probability=0.4)
    after = {p: last_sequence(client, p) for p in (node_platform, python_platform)}
    try:
        result = run_stub(node, server.addresses[1], node_platform, *(["--unary"] if rtas == "unary" else []))
        fired = check_stub_run(result, client, node_platform, python_platform, after, rtas, PLAINTEXT)
        check_faults(client, node_platform, fault, fired)
    finally:
        delete(client, node_platform)
        delete(client, python_platform)


def test_node_stub_gives_up_after_10000_calls_again(node: str, server: PaprServer, client: Client) -> None:
    """A call busy for ever is called again 10,000 times (the reference guest's bound), then its
    status stands: the acquire fails on it, and the stub says so."""
    platform = new_platform(client)
    rule = F.FaultRule(name="stuck", effect=F.FAULT_EFFECT_BUSY, call=F.FAULT_CALL_GET_SENSOR_STATE, drc_index=CORE_DRC)
    client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=platform, rule=rule))
    try:
        result = run_stub(node, server.addresses[1], platform)
        assert result.returncode == 1, result.stderr
        assert f"FAILED: acquire {CORE_DRC:#x}: sense -2/0, want 0/2" in result.stderr, result.stderr
        (listed,) = client.faults.ListFaultRules(F.ListFaultRulesRequest(platform=platform)).rules
        assert listed.matched == listed.fired == 1 + RetryPolicy().max_retries  # the same bound as the reference guest
        check_no_findings(client, platform)  # busy may be called again at once
    finally:
        delete(client, platform)


def test_node_stub_fails_loudly(node: str, server: PaprServer) -> None:
    result = run_stub(node, server.addresses[1], "no-such-platform")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "NOT_FOUND" in result.stderr and "no-such-platform" in result.stderr
    assert '{"summary":' in result.stderr  # the RPCs made, on stderr after a failure


# --- servers that require tokens --------------------------------------------------------------

SERVER_NAME = "papr-emu.test"  # a name the server certificate bears besides localhost and 127.0.0.1
_secure_names = itertools.count()


@dataclass
class SecuredServer:
    """A server requiring tokens (with TLS and mTLS, or plaintext on loopback), and its admin client."""

    server: PaprServer
    admin: Client
    directory: Path
    pki: Pki | None  # None: plaintext
    client_cert: Issued | None

    def tls_env(self, client_cert: bool = True) -> dict[str, str]:
        """The stub's TLS settings as environment variables (the CA, and the client certificate)."""
        if self.pki is None:
            return {}
        env = {"PAPR_EMU_CA": str(self.pki.ca_path)}
        if client_cert:
            assert self.client_cert is not None
            env |= {"PAPR_EMU_CERT": str(self.client_cert.cert_path), "PAPR_EMU_KEY": str(self.client_cert.key_path)}
        return env

    def tls_options(self) -> list[str]:
        """The same as command-line options, checking the server certificate for SERVER_NAME."""
        if self.pki is None or self.client_cert is None:
            return []
        cert, key = self.client_cert.cert_path, self.client_cert.key_path
        return ["--ca", str(self.pki.ca_path), "--cert", str(cert), "--key", str(key), "--server-name", SERVER_NAME]

    def create_platform(self) -> tuple[str, str, str]:
        """A new platform (geometry as conftest.new_platform's) and its guest and manager tokens."""
        name = f"tls{next(_secure_names)}"
        geometry = platform_pb2.Geometry(
            memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4
        )
        created = self.admin.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name, geometry=geometry))
        assert created.guest_token.token and created.manager_token.token
        return name, created.guest_token.token, created.manager_token.token

    def token_file(self, name: str, token: str) -> Path:
        path = self.directory / f"{name}.token"
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        return path


def _client(channel: grpc.Channel) -> Client:
    return Client.over(channel)


def _secured_server(tls: bool) -> Iterator[SecuredServer]:
    directory = Path(tempfile.mkdtemp(prefix="papr-node-"))  # short: it holds a unix socket
    admin_token = secrets.token_urlsafe(32)
    admin_file = directory / "admin.token"
    admin_file.touch(mode=0o600)
    admin_file.write_text(admin_token)
    pki = client_cert = None
    if tls:
        pki = Pki.make(directory)
        server_cert = pki.issue("server", dns=["localhost", SERVER_NAME], ips=["127.0.0.1"])
        client_cert = pki.issue("client", client=True)
        security = Security.load(
            tls_cert=server_cert.cert_path,
            tls_key=server_cert.key_path,
            tls_client_ca=pki.ca_path,
            admin_token_file=admin_file,
            environ={},
        )
    else:
        security = Security.load(admin_token_file=admin_file, environ={})
    server = PaprServer(Platforms(), ["127.0.0.1:0", f"unix:{directory}/papr.sock"], security=security)
    server.start()
    bearer = grpc.access_token_call_credentials(admin_token)
    if pki is not None and client_cert is not None:
        ssl = grpc.ssl_channel_credentials(pki.ca_pem, client_cert.key_pem, client_cert.cert_pem)
        channel = grpc.secure_channel(server.addresses[0], grpc.composite_channel_credentials(ssl, bearer))
    else:
        channel = grpc.intercept_channel(grpc.insecure_channel(server.addresses[0]), _AdminMetadata(admin_token))
    grpc.channel_ready_future(channel).result(timeout=10)
    try:
        yield SecuredServer(server, _client(channel), directory, pki, client_cert)
    finally:
        channel.close()
        server.stop(grace=0.5)
        shutil.rmtree(directory, ignore_errors=True)


class _AdminMetadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """`authorization: Bearer <admin token>` on a plaintext channel (grpc refuses call credentials there)."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self._metadata])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[SecuredServer]:
    """TLS, mTLS (client certificates of the test CA) and tokens."""
    yield from _secured_server(tls=True)


@pytest.fixture(scope="module")
def token_server() -> Iterator[SecuredServer]:
    """Tokens on plaintext loopback and unix-socket listeners."""
    yield from _secured_server(tls=False)


@pytest.mark.parametrize(
    ("secured", "transport", "rtas", "configured_by"),
    [
        ("tls_server", "tcp", "session", "env"),
        ("tls_server", "unix", "unary", "options"),
        ("token_server", "unix", "session", "env"),
        ("token_server", "tcp", "unary", "options"),
    ],
)
def test_node_stub_with_tokens_matches_the_reference_guest(
    node: str, request: pytest.FixtureRequest, secured: str, transport: str, rtas: str, configured_by: str
) -> None:
    """The same outcomes as on the plaintext server, with the guest and manager tokens of the platform:
    over TLS with a client certificate (or plaintext on loopback), configured by the PAPR_EMU_*
    variables or by options (token files; over TLS also --server-name)."""
    secure: SecuredServer = request.getfixturevalue(secured)
    target = secure.server.addresses[1] if transport == "unix" else secure.server.addresses[0]
    admin = secure.admin
    node_platform, guest_token, manager_token = secure.create_platform()
    python_platform, *_ = secure.create_platform()
    after = {p: last_sequence(admin, p) for p in (node_platform, python_platform)}
    options = ["--unary"] if rtas == "unary" else []
    env: dict[str, str] = {}
    if configured_by == "env":
        env = {**secure.tls_env(), "PAPR_EMU_TOKEN": guest_token, "PAPR_EMU_MANAGER_TOKEN": manager_token}
    else:
        options += [
            *secure.tls_options(),
            *("--token-file", str(secure.token_file("guest", guest_token))),
            *("--manager-token-file", str(secure.token_file("manager", manager_token))),
        ]
    try:
        result = run_stub(node, target, node_platform, *options, env=env)
        tls = secure.pki is not None
        security = {"tls": tls, "client_cert": tls, "tokens": "guest+manager", "channels": 2 if tls else 1}
        assert check_stub_run(result, admin, node_platform, python_platform, after, rtas, security) == []
        for token in (guest_token, manager_token):
            assert token not in result.stdout + result.stderr
    finally:
        delete(admin, node_platform)
        delete(admin, python_platform)


@pytest.mark.parametrize("secured", ["tls_server", "token_server"])
def test_node_stub_without_a_token_is_unauthenticated(node: str, request: pytest.FixtureRequest, secured: str) -> None:
    """No token: the first calls get UNAUTHENTICATED, and the stub says so and exits 1."""
    secure: SecuredServer = request.getfixturevalue(secured)
    platform, *_ = secure.create_platform()
    try:
        result = run_stub(node, secure.server.addresses[0], platform, env=secure.tls_env())
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "FAILED: Watch" in result.stderr and "UNAUTHENTICATED" in result.stderr, result.stderr
        assert "authorization: Bearer" in result.stderr  # the server's hint, in the stub's message
        assert '{"summary":' in result.stderr
    finally:
        delete(secure.admin, platform)


def test_node_stub_needs_the_manager_token_for_hotplug(node: str, tls_server: SecuredServer) -> None:
    """A guest token alone may not call HotplugService (WatchEvents): PERMISSION_DENIED, exit 1."""
    platform, guest_token, _ = tls_server.create_platform()
    try:
        env = {**tls_server.tls_env(), "PAPR_EMU_TOKEN": guest_token}
        result = run_stub(node, tls_server.server.addresses[0], platform, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "WatchEvents" in result.stderr and "PERMISSION_DENIED" in result.stderr, result.stderr
        assert guest_token not in result.stderr
    finally:
        delete(tls_server.admin, platform)


def test_node_stub_needs_a_client_certificate(node: str, tls_server: SecuredServer) -> None:
    """mTLS: without a client certificate the handshake fails (UNAVAILABLE), exit 1."""
    platform, guest_token, manager_token = tls_server.create_platform()
    try:
        env = {**tls_server.tls_env(client_cert=False), "PAPR_EMU_TOKEN": guest_token}
        env["PAPR_EMU_MANAGER_TOKEN"] = manager_token
        result = run_stub(node, tls_server.server.addresses[0], platform, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "UNAVAILABLE" in result.stderr, result.stderr
    finally:
        delete(tls_server.admin, platform)


def test_node_stub_keeps_tokens_off_plaintext_networks(node: str) -> None:
    """A token over plaintext to a non-loopback host is a usage error (exit 2); it is never printed."""
    token = "papr-guest-" + secrets.token_urlsafe(16)
    result = run_stub(node, "192.0.2.1:50051", "p", env={"PAPR_EMU_TOKEN": token})
    assert result.returncode == 2
    assert "clear text" in result.stderr and token not in result.stderr
    result = run_stub(node, "127.0.0.1:1", "p", env={"PAPR_EMU_CERT": "/nonexistent/client.pem"})
    assert result.returncode == 2 and "PAPR_EMU_CERT" in result.stderr
