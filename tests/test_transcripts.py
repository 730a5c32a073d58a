"""Transcripts (serve --record) and their replay (papr-emu replay), through real servers.

A reference-guest run is recorded and replays clean; a recorded result changed by hand is
reported at its line; the default platform (made by the server, not by CreatePlatform)
replays from its header; a platform deleted and created again gets a second file; the C++
and Node guest stubs' runs are recorded and replay clean (so a change in papr-emu that would
change what a stub sees shows up as a difference); a transcript that cannot be written (a
file size limit standing in for a full disk) stops that platform's recording, with a
structured log event, and the server answers on.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cpp_stub import check_run as check_cpp_run
from test_cpp_stub import reference_outcomes, stub_binary  # noqa: F401 (fixtures)
from test_cpp_stub import run_stub as run_cpp_stub
from test_node_stub import check_stub_run as check_node_run
from test_node_stub import node  # noqa: F401 (a fixture)
from test_node_stub import run_stub as run_node_stub

from conftest import new_platform
from helpers import Watcher, last_sequence
from papr.v1 import device_pb2, fault_pb2, guest_pb2, hotplug_pb2, platform_pb2
from papr_emu import PaprServer
from papr_emu.model import DimmRequest, Platforms, default_geometry
from papr_emu.replay import load, replay
from papr_emu.service import convert
from papr_emu_client import Client, ReferenceGuest, RefusalPolicy, connect

DIMM = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=768 << 20))  # three LMBs
HOTPLUG_EVENTS_VECTOR = bytes([22, 0, 0, 0, 0, 0, 0x04]) + bytes(17)  # CAS: hot-plug event source
SESSION = "/papr.v1.RtasService/Session"


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("transcripts")


@pytest.fixture(scope="module")
def recording(record_dir: Path) -> Iterator[PaprServer]:
    """A server recording into record_dir, on TCP and a unix socket, with the `default` platform."""
    socket_dir = tempfile.mkdtemp(prefix="papr-rec-")  # short: it holds a unix socket
    platforms = Platforms()
    platforms.create("default", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0", f"unix:{socket_dir}/papr.sock"], record=record_dir)
    server.start()
    yield server
    server.stop(grace=0.5)


@pytest.fixture(scope="module")
def rec_client(recording: PaprServer) -> Iterator[Client]:
    with connect(recording.addresses[0]) as client:
        yield client


@pytest.fixture(scope="module")
def replay_client(client: Client) -> Client:
    """Replays run on the suite's other server (not recording): a fresh server sees them as a stranger would."""
    return client


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_closed(path: Path, last_method: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The transcript once its platform's DeletePlatform line and every stream's end are in it."""
    deadline = time.monotonic() + timeout
    while True:
        records = lines(path)
        opened = {r["stream"] for r in records if r.get("call") == "open"}
        ended = {r["stream"] for r in records if r.get("call") == "end"}
        if any(r.get("method") == last_method for r in records) and opened == ended:
            # A client that went away is CANCELLED, whether its stream was waiting or sending.
            assert not [r for r in records if r.get("code") == "UNKNOWN"], path
            return records
        assert time.monotonic() < deadline, f"{path} did not close: {opened - ended} open"
        time.sleep(0.05)


def reference_guest_run(client: Client, platform: str, transport: str = "session") -> list[str]:
    """Add a DIMM, remove it, add it again, and a removal the guest refuses (unisolate): the results."""
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=platform, option_vector_5=HOTPLUG_EVENTS_VECTOR)
    )
    guest = ReferenceGuest(client, platform, transport=transport)  # type: ignore[arg-type]
    guest.start()
    plug = hotplug_pb2.PlugDeviceRequest(platform=platform, id="dimm-rec", spec=DIMM)
    unplug = hotplug_pb2.UnplugDeviceRequest(platform=platform, id="dimm-rec")
    try:
        client.hotplug.PlugDevice(plug)
        guest.wait_for(1)
        client.hotplug.UnplugDevice(unplug)
        guest.wait_for(2)
        lmbs = client.hotplug.PlugDevice(plug).device.drc_indexes
        guest.wait_for(3)
        guest.policy = RefusalPolicy(lmbs_not_offlinable={lmbs[1]}, signal="unisolate")
        client.hotplug.UnplugDevice(unplug)
        return [outcome.result for outcome in guest.wait_for(4)]
    finally:
        guest.stop()
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


@pytest.fixture(scope="module")
def guest_transcript(rec_client: Client, record_dir: Path) -> Path:
    platform = new_platform(rec_client)
    assert reference_guest_run(rec_client, platform) == ["done", "done", "done", "refused"]
    path = record_dir / f"{platform}.jsonl"
    wait_closed(path, "/papr.v1.PlatformService/DeletePlatform")
    return path


def test_a_reference_guest_run_is_recorded(guest_transcript: Path) -> None:
    header, *records = lines(guest_transcript)
    platform = guest_transcript.stem
    assert header["transcript"] == "papr-emu" and header["version"] == 1 and header["platform"] == platform
    assert header["created_by"] == "rpc"
    assert header["create"]["geometry"]["memory_slots"] == 4  # the platform as created
    assert [r["n"] for r in records] == list(range(1, len(records) + 1))  # every call has its place, in file order
    methods = [r["method"] for r in records if "method" in r]
    assert methods[0] == "/papr.v1.PlatformService/CreatePlatform"
    assert methods[-1] == "/papr.v1.PlatformService/DeletePlatform"
    assert methods.count("/papr.v1.HotplugService/PlugDevice") == 2
    # The guest's RTAS calls went over one Session: its requests and responses pair up, in order.
    (session,) = [r["stream"] for r in records if r.get("method") == SESSION]
    sent = [r for r in records if r.get("stream") == session and r["call"] == "send"]
    received = [r for r in records if r.get("stream") == session and r["call"] == "receive"]
    assert len(sent) == len(received) > 8
    assert [len(r["request"]["calls"]) for r in sent] == [len(r["response"]["results"]) for r in received]
    # Its interrupt stream ended when the guest stopped (cancelled by the client).
    ends = [r for r in records if r["call"] == "end"]
    assert {r["code"] for r in ends} <= {"CANCELLED", "OK"}, ends


def test_a_reference_guest_run_replays_clean(guest_transcript: Path, replay_client: Client) -> None:
    report = replay(guest_transcript, replay_client)
    assert report.first is None, report.text()
    assert report.calls == len(lines(guest_transcript)) - 1
    assert report.text().startswith("clean:")
    # The replay platform is gone again.
    names = [p.name for p in replay_client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms]
    assert report.platform not in names


def _session_result(records: list[dict[str, Any]], kind: str) -> tuple[int, dict[str, Any]]:
    """The index (in records) of the first Session response with a `kind` result, and that result."""
    for index, record in enumerate(records):
        for result in record.get("response", {}).get("results", []) if record.get("call") == "receive" else []:
            if kind in result:
                return index, result
    raise AssertionError(f"no {kind} result recorded")


@pytest.mark.parametrize("transport", ["session", "unary"])
def test_a_run_under_extended_delays_replays_clean(
    rec_client: Client, record_dir: Path, replay_client: Client, transport: str
) -> None:
    """The guest waited out each 990x before calling again; the replay waits as long, so the
    platform finds no retry too soon there either (an extra conduct_finding event otherwise)."""
    platform = new_platform(rec_client)
    rule = fault_pb2.FaultRule(name="slow", effect=fault_pb2.FAULT_EFFECT_EXTENDED_DELAY, status=9902,
                               call=fault_pb2.FAULT_CALL_SET_INDICATOR, times=3)  # fmt: skip
    rec_client.faults.AddFaultRule(fault_pb2.AddFaultRuleRequest(platform=platform, rule=rule))
    watcher = Watcher(rec_client, platform)  # its events are recorded: a finding would be one more
    try:
        assert reference_guest_run(rec_client, platform, transport) == ["done", "done", "done", "refused"]
    finally:
        watcher.close()
    path = record_dir / f"{platform}.jsonl"
    records = wait_closed(path, "/papr.v1.PlatformService/DeletePlatform")
    answers = [  # set-indicator's answers, unary or in a session's results
        r.get("response", {})
        if r.get("method") == "/papr.v1.RtasService/SetIndicator"
        else result.get("set_indicator", {})
        for r in records
        for result in r.get("response", {}).get("results", [{"set_indicator": {}}])
    ]
    assert [a.get("status") for a in answers].count(9902) == 3, "the rule fired in the recorded run"
    report = replay(path, replay_client)
    assert report.first is None, report.text()


def test_a_changed_result_is_reported_at_its_line(
    guest_transcript: Path, replay_client: Client, tmp_path: Path
) -> None:
    header, *records = lines(guest_transcript)
    changed = copy.deepcopy(records)
    index, result = _session_result(changed, "get_sensor_state")
    result["get_sensor_state"]["state"] = 7  # the guest saw 2 (empty) or 1 (present)
    mutated = tmp_path / "mutated.jsonl"
    mutated.write_text("".join(json.dumps(r) + "\n" for r in [header, *changed]))
    report = replay(mutated, replay_client)
    first = report.first
    assert first is not None
    assert first.line == index + 2  # the header is line 1
    assert first.method == SESSION and first.what.startswith("response ")
    assert first.path.endswith(".get_sensor_state.state") and first.recorded == 7
    assert first.replayed in (1, 2, None)  # proto3 JSON leaves a 0 state out
    assert f"line {first.line}" in report.text()


def test_a_changed_unary_response_and_event_log(guest_transcript: Path, replay_client: Client, tmp_path: Path) -> None:
    """A PlugDevice response with another DRC index, and an RTAS event log with another action."""
    header, *records = lines(guest_transcript)
    changed = copy.deepcopy(records)
    plug = next(i for i, r in enumerate(changed) if r.get("method") == "/papr.v1.HotplugService/PlugDevice")
    changed[plug]["response"]["device"]["drc_indexes"][0] += 1
    mutated = tmp_path / "plug.jsonl"
    mutated.write_text("".join(json.dumps(r) + "\n" for r in [header, *changed]))
    first = replay(mutated, replay_client).first
    assert first is not None and first.line == plug + 2 and first.path == "device.drc_indexes[0]"

    changed = copy.deepcopy(records)
    index, result = _session_result(changed, "check_exception")
    log = bytearray(base64.b64decode(result["check_exception"]["buffer"]))
    assert log[24:26] == b"PH"
    log[32:40] = bytes(8)  # the creation time is not compared...
    result["check_exception"]["buffer"] = base64.b64encode(bytes(log)).decode()
    same = tmp_path / "time.jsonl"
    same.write_text("".join(json.dumps(r) + "\n" for r in [header, *changed]))
    assert replay(same, replay_client).first is None
    log[0x69] ^= 3  # ...the HP section's action is (add <-> remove)
    result["check_exception"]["buffer"] = base64.b64encode(bytes(log)).decode()
    mutated.write_text("".join(json.dumps(r) + "\n" for r in [header, *changed]))
    first = replay(mutated, replay_client).first
    assert first is not None and first.line == index + 2 and first.path.endswith("check_exception.buffer")


def test_replay_command(guest_transcript: Path, client: Client, server: PaprServer, tmp_path: Path) -> None:
    """papr-emu replay: exit 0 and "clean" (in-process server, and --server with -o json); exit 1 naming the line."""
    # The installed command (python -m from the checkout could find a stale papr_emu.egg-info's entry points).
    command = [str(Path(sys.executable).parent / "papr-emu"), "replay"]
    result = subprocess.run([*command, str(guest_transcript)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("clean:")
    header, *records = lines(guest_transcript)
    index, result_json = _session_result(records, "get_sensor_state")
    result_json["get_sensor_state"]["state"] = 7
    mutated = tmp_path / "mutated.jsonl"
    mutated.write_text("".join(json.dumps(r) + "\n" for r in [header, *records]))
    result = subprocess.run(
        [*command, str(mutated), "--server", server.addresses[0], "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["result"] == "differs" and report["difference"]["line"] == index + 2
    result = subprocess.run([*command, str(tmp_path / "missing.jsonl")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_a_torn_last_line_is_dropped_and_a_newer_format_refused(guest_transcript: Path, tmp_path: Path) -> None:
    text = guest_transcript.read_text()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text + '{"n": 999, "call": "un')  # the server was killed while writing
    assert len(load(torn).records) == len(text.splitlines()) - 1
    header, *rest = text.splitlines(keepends=True)
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**json.loads(header), "version": 2}) + "\n" + "".join(rest))
    with pytest.raises(Exception, match="format version 2"):
        load(newer)


def test_the_default_platform_replays_from_its_header(
    rec_client: Client, record_dir: Path, replay_client: Client
) -> None:
    """A platform the server made: its header describes it (geometry, boot devices), then its calls."""
    request = platform_pb2.GetPlatformRequest(platform="default")
    before = rec_client.platforms.GetPlatform(request).platform
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
    rec_client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="default", id="core-rec", spec=spec))
    rec_client.platforms.GetPlatform(request)
    header, *records = lines(record_dir / "default.jsonl")
    assert header["created_by"] == "server" and header["described"]["name"] == "default"
    assert header["snapshot"]["platform"] == "default"  # docs/snapshots.md
    assert header["described"]["device_count"] == before.device_count
    assert [r["method"] for r in records][-2:] == [
        "/papr.v1.HotplugService/PlugDevice",
        "/papr.v1.PlatformService/GetPlatform",
    ]
    report = replay(record_dir / "default.jsonl", replay_client)
    assert report.first is None, report.text()


def test_a_platform_with_state_before_its_first_call_replays_from_its_snapshot(
    recording: PaprServer, rec_client: Client, record_dir: Path, replay_client: Client, tmp_path: Path
) -> None:
    """A platform in a state no CreatePlatform makes (as a state directory brings one back): CAS done and
    a DIMM hot-added, its event log queued for the guest, all without a call. Its header's snapshot
    restores that; the CreatePlatformRequest alone would not (a boot DIMM, no log queued)."""
    geometry = convert.geometry_from_pb(
        platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4)
    )
    name = "pre-state"
    made = recording.platforms.create(name, geometry)
    made.client_architecture_support(HOTPLUG_EVENTS_VECTOR)
    made.plug("dimm-pre", DimmRequest(size=768 << 20))
    guest = ReferenceGuest(rec_client, name)
    guest.start()
    try:
        assert [o.result for o in guest.wait_for(1)] == ["done"]  # the queued log, handled
    finally:
        guest.stop()
        rec_client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
    path = record_dir / f"{name}.jsonl"
    wait_closed(path, "/papr.v1.PlatformService/DeletePlatform")
    report = replay(path, replay_client)
    assert report.first is None, report.text()

    header, *records = lines(path)
    assert header["created_by"] == "server" and header["snapshot"]["cas"]
    del header["snapshot"]
    without = tmp_path / "no-snapshot.jsonl"
    without.write_text("".join(json.dumps(r) + "\n" for r in [header, *records]))
    first = replay(without, replay_client).first
    # Made by CreatePlatform, the DIMM is a boot DIMM: configured, not waiting for the guest.
    assert first is not None and first.line == 2 and first.path.endswith("entity_sense"), first


def test_a_restored_platform_replays_clean(rec_client: Client, record_dir: Path, replay_client: Client) -> None:
    """RestorePlatform starts a file as CreatePlatform does; replay restores the same snapshot."""
    source = new_platform(rec_client)
    rec_client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=source, option_vector_5=HOTPLUG_EVENTS_VECTOR)
    )
    rec_client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=source, id="dimm-snap", spec=DIMM))
    snapshot = rec_client.platforms.SnapshotPlatform(platform_pb2.SnapshotPlatformRequest(platform=source)).snapshot
    restored = f"{source}-restored"
    rec_client.platforms.RestorePlatform(platform_pb2.RestorePlatformRequest(name=restored, snapshot=snapshot))
    guest = ReferenceGuest(rec_client, restored)
    guest.start()
    try:
        assert [o.result for o in guest.wait_for(1)] == ["done"]  # the log queued before the snapshot
    finally:
        guest.stop()
        for name in (source, restored):
            rec_client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
    path = record_dir / f"{restored}.jsonl"
    header, first_call, *_ = wait_closed(path, "/papr.v1.PlatformService/DeletePlatform")
    assert header["created_by"] == "rpc" and first_call["method"] == "/papr.v1.PlatformService/RestorePlatform"
    report = replay(path, replay_client)
    assert report.first is None, report.text()
    report = replay(record_dir / f"{source}.jsonl", replay_client)  # SnapshotPlatform in it: the document differs
    assert report.first is None, report.text()  # in times and name, which replay leaves out


def test_a_platform_created_again_gets_a_new_file(rec_client: Client, record_dir: Path) -> None:
    name = new_platform(rec_client)
    delete = platform_pb2.DeletePlatformRequest(platform=name)
    rec_client.platforms.DeletePlatform(delete)
    rec_client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name))
    rec_client.platforms.DeletePlatform(delete)
    first, second = lines(record_dir / f"{name}.jsonl"), lines(record_dir / f"{name}.2.jsonl")
    assert [r.get("method") for r in first[1:]] == [
        "/papr.v1.PlatformService/CreatePlatform",
        "/papr.v1.PlatformService/DeletePlatform",
    ]
    assert "geometry" in first[0]["create"] and "geometry" not in second[0]["create"]  # each as it was made
    assert not (record_dir / f"{name}.3.jsonl").exists()


# --- the cross-language guest stubs ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["session", "unary"])
def test_cpp_stub_transcript_replays_clean(
    recording: PaprServer,
    rec_client: Client,
    record_dir: Path,
    replay_client: Client,
    stub_binary: Path,  # noqa: F811
    reference_outcomes: list[dict[str, Any]],  # noqa: F811
    mode: str,
) -> None:
    platform = new_platform(rec_client)
    try:
        result = run_cpp_stub(stub_binary, recording.addresses[1], platform, *(["--unary"] if mode == "unary" else []))
        check_cpp_run(result, reference_outcomes, mode)
    finally:
        rec_client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))
    path = record_dir / f"{platform}.jsonl"
    records = wait_closed(path, "/papr.v1.PlatformService/DeletePlatform")
    assert any(r.get("method") == SESSION for r in records) == (mode == "session")
    report = replay(path, replay_client)
    assert report.first is None, report.text()


@pytest.mark.parametrize("rtas", ["session", "unary"])
def test_node_stub_transcript_replays_clean(
    recording: PaprServer,
    rec_client: Client,
    record_dir: Path,
    replay_client: Client,
    node: str,  # noqa: F811
    rtas: str,
) -> None:
    from test_node_stub import PLAINTEXT

    node_platform, python_platform = new_platform(rec_client), new_platform(rec_client)
    after = {p: last_sequence(rec_client, p) for p in (node_platform, python_platform)}
    try:
        result = run_node_stub(node, recording.addresses[1], node_platform, *(["--unary"] if rtas == "unary" else []))
        check_node_run(result, rec_client, node_platform, python_platform, after, rtas, PLAINTEXT)
    finally:
        for platform in (node_platform, python_platform):
            rec_client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))
    for platform in (node_platform, python_platform):  # the stub's, and the reference guest's
        path = record_dir / f"{platform}.jsonl"
        wait_closed(path, "/papr.v1.PlatformService/DeletePlatform")
        report = replay(path, replay_client)
        assert report.first is None, f"{platform}: {report.text()}"


# --- a transcript that cannot be written ----------------------------------------------------------

FILE_SIZE_LIMIT = 64 << 10  # RLIMIT_FSIZE: a write past it fails with EFBIG, as a full disk fails with ENOSPC


def _limited_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process


def test_a_failed_write_stops_that_recording_only(tmp_path: Path) -> None:
    record = tmp_path / "rec"
    socket = Path(tempfile.mkdtemp(prefix="papr-fsz-")) / "papr.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "papr_emu.cli", "serve", "--listen", f"unix:{socket}", "--record", str(record),
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_limited_file_size,
    )  # fmt: skip
    try:
        with connect(f"unix:{socket}", timeout=30) as client:
            big, small = new_platform(client), new_platform(client)
            request = platform_pb2.ListConnectorsRequest(platform=big, page_size=4096)
            for _ in range(40):  # each answer is several KB of JSON: the file passes the limit
                assert client.platforms.ListConnectors(request).connectors
            # The server answers on, and the other platform is still recorded.
            client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=small))
            assert client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=big)).platform.name == big
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "transcript.failed"]
    assert len(failed) == 1, stderr  # once: recording that platform stopped
    assert failed[0]["platform"] == big and failed[0]["recording"] == "stopped" and failed[0]["level"] == "error"
    assert os.path.getsize(record / f"{big}.jsonl") <= FILE_SIZE_LIMIT
    small_records = lines(record / f"{small}.jsonl")
    assert [r.get("method") for r in small_records[1:]] == [
        "/papr.v1.PlatformService/CreatePlatform",
        "/papr.v1.PlatformService/GetPlatform",
    ]
    assert process.returncode == 0


def test_the_config_file_names_the_directory(tmp_path: Path) -> None:
    """[server] record, relative to the file's directory, as the other paths in it."""
    from papr_emu.config import load_config

    path = tmp_path / "papr.toml"
    path.write_text('[server]\nrecord = "transcripts"\n')
    assert load_config(path).record == tmp_path / "transcripts"
    path.write_text("[server]\nrecord = 5\n")
    with pytest.raises(Exception, match=r"server\.record"):
        load_config(path)


def test_tokens_never_reach_a_transcript(tmp_path: Path, replay_client: Client) -> None:
    """On a server that requires tokens: CreatePlatform's tokens are left out, MintToken is not recorded,
    and the transcript still replays clean (on a server without tokens)."""
    from papr.v1 import access_pb2
    from papr_emu.security import Security

    admin_token = "admin-" + os.urandom(16).hex()
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(admin_token)
    record = tmp_path / "rec"
    server = PaprServer(
        Platforms(), ["127.0.0.1:0"], security=Security.load(admin_token_file=admin_file, environ={}), record=record
    )
    server.start()
    try:
        with connect(server.addresses[0], token=admin_token) as admin:
            name = new_platform(admin)
            created = admin.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name))
            assert created.platform.name == name
            minted = admin.access.MintToken(
                access_pb2.MintTokenRequest(role=access_pb2.ROLE_GUEST, platform=name)
            ).token.token
            again = admin.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=f"{name}-b"))
            secrets = [minted, again.guest_token.token, again.manager_token.token]
            assert all(secrets)
    finally:
        server.stop(grace=0.5)
    text = "".join(path.read_text() for path in record.iterdir())
    assert not any(secret in text for secret in [*secrets, admin_token])
    assert "MintToken" not in text and "_token" not in text
    report = replay(record / f"{name}.jsonl", replay_client)
    assert report.first is None, report.text()
