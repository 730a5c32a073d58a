"""The Node.js guest stub (client/node/guest.js) against a real server: CPU core hot-add,
removal and refused removal, with the same outcomes as the Python ReferenceGuest, its RTAS
calls through one RtasService.Session stream (or, with --unary, one unary RPC per call).

Needs Node.js and npm (Debian: `apt-get install nodejs npm`); without them the test fails,
it never skips. If client/node/node_modules is missing, the test runs `npm ci` there
(the lock file is committed), which needs the npm registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import new_platform
from helpers import connector, events_since, last_sequence
from papr.v1 import connector_pb2, device_pb2, hotplug_pb2, platform_pb2
from papr_emu import PaprServer
from papr_emu_client import Client, Outcome, ReferenceGuest, RefusalPolicy

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


def run_stub(node: str, target: str, platform: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAPR_EMU_HOST": target}
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
    return [str(e.WhichOneof("kind")) for e in events_since(client, platform, after)]


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


def check_unary_only(summary: dict[str, Any]) -> None:
    """--unary: one unary RPC per RTAS call, no session; the configure-connector loop as calls."""
    assert summary["rtas"] == "unary"
    rpcs = rtas_rpcs(summary)
    assert "Session" not in rpcs and summary["session_streams"] == summary["session_requests"] == 0, summary
    assert set(rpcs) == {"CheckException", "GetSensorState", "SetIndicator", "ConfigureConnector"}, summary
    assert rpcs["GetSensorState"] == 4 and rpcs["SetIndicator"] == 2 + 2 + 2 + 1, summary
    assert summary["unary_rtas_calls"] == sum(rpcs.values()), summary


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
        assert result.returncode == 0, f"guest.js exited {result.returncode}:\n{result.stderr}"
        *lines, last = [json.loads(line) for line in result.stdout.splitlines()]
        summary = last["summary"]  # the RPCs the stub made, after the event lines
        (check_session_only if rtas == "session" else check_unary_only)(summary)

        expected = reference_outcomes(client, python_platform)
        assert [line["result"] for line in expected] == ["done", "done", "done", "refused"]
        assert lines == expected

        # The platform saw the same thing from both guests.
        assert event_kinds(client, node_platform, after[node_platform]) == EXPECTED_EVENT_KINDS
        assert event_kinds(client, python_platform, after[python_platform]) == EXPECTED_EVENT_KINDS
        rejected = events_since(client, node_platform, after[node_platform])[-1].unplug_rejected
        assert (rejected.signal, rejected.drc_index) == (hotplug_pb2.REFUSAL_SIGNAL_UNISOLATE, CORE_DRC)
        node_core, python_core = (connector(client, p, CORE_DRC) for p in (node_platform, python_platform))
        assert node_core == python_core
        assert (node_core.state, node_core.unplug_pending) == (connector_pb2.DRC_STATE_LOGICAL_CONFIGURED, False)
    finally:
        delete(client, node_platform)
        delete(client, python_platform)


def test_node_stub_fails_loudly(node: str, server: PaprServer) -> None:
    result = run_stub(node, server.addresses[1], "no-such-platform")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "NOT_FOUND" in result.stderr and "no-such-platform" in result.stderr
    assert '{"summary":' in result.stderr  # the RPCs made, on stderr after a failure
