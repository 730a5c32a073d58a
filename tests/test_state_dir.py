"""The state directory: platforms survive a restart and kill -9, with their devices, connector
states, queued logs and event sequence; the journal replays exactly (property test, in
process); a torn last record is dropped; compaction; one server per directory."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_cli import PAPR_EMU, wait_serving
from test_snapshots import DIMM_GEOMETRY, LMB_GEOMETRY, Clocks, Op, apply, ops, without_name

from helpers import last_sequence
from papr.v1 import device_pb2, guest_pb2, hotplug_pb2, platform_pb2, rtas_pb2
from papr_emu.model import CpuCoreParams, Platforms, default_geometry
from papr_emu.state import StateDir, StateError
from papr_emu_client import Client, Guest

MiB = 1 << 20


def journal_lines(path: Path, name: str) -> list[str]:
    return (path / "platforms" / name / "journal.jsonl").read_text().splitlines()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    geometry=st.sampled_from([DIMM_GEOMETRY, LMB_GEOMETRY]),
    calls=st.lists(ops, max_size=40),
    compact=st.integers(3, 50),
)
def test_a_recovered_platform_is_the_one_that_was_kept(
    tmp_path_factory: pytest.TempPathFactory, geometry: Any, calls: list[Op], compact: int
) -> None:
    path = tmp_path_factory.mktemp("state")
    state = StateDir(path, compact_every=compact)
    platforms = Platforms(store=state)
    platform = platforms.create("p", geometry)
    clocks = Clocks()  # the ops move only "tick"'s clock; the platform reads the real ones, recorded
    for op in calls:
        apply(platform, op, clocks)
    kept = platform.snapshot()
    state.close()  # the process goes; what is on disk stays
    again = StateDir(path, compact_every=compact)
    recovered = again.recover(Platforms(store=again))
    assert [p.name for p in recovered] == ["p"]
    document = recovered[0].snapshot()
    # Unplug deadlines are kept as "seconds left": both read moments later, so compare them apart.
    for device in (*kept["devices"], *document["devices"]):
        left = device.pop("unplug_timeout_left")
        device["timeout"] = left is not None
    assert without_name(document) == without_name(kept)
    again.close()


def test_a_torn_last_record_is_dropped(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    platform = Platforms(store=state).create("p", default_geometry())
    platform.plug("core1", CpuCoreParams(1))
    state.close()
    journal = tmp_path / "platforms" / "p" / "journal.jsonl"
    assert len(journal.read_bytes().splitlines()) == 1
    with open(journal, "ab") as file:
        file.write(b'{"op":"unplug","args":["cor')  # killed in the middle of the write: never answered
    again = StateDir(tmp_path)
    (recovered,) = again.recover(Platforms(store=again))
    assert [d.id for d in recovered.devices()] == ["core0", "core1", "phb0"]  # the plug, not the torn unplug
    assert not recovered.device("core1").unplug_pending
    kept = json.loads((tmp_path / "platforms" / "p" / "snapshot.json").read_text())
    assert kept["covers"] == 1 and journal.read_bytes() == b""  # recovery starts from a fresh snapshot
    again.close()


def test_compaction_and_deletion(tmp_path: Path) -> None:
    state = StateDir(tmp_path, compact_every=4)
    platforms = Platforms(store=state)
    platform = platforms.create("p", default_geometry())
    for _ in range(10):
        platform.get_sensor_state(9003, 0x10000000)
    assert len(journal_lines(tmp_path, "p")) == 2  # 10 records: two snapshots of 4, then 2
    assert json.loads((tmp_path / "platforms" / "p" / "snapshot.json").read_text())["covers"] == 8
    platforms.delete("p")
    assert not (tmp_path / "platforms" / "p").exists()
    state.close()


def test_one_server_per_directory(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    with pytest.raises(StateError, match="in use by another papr-emu server"):
        StateDir(tmp_path)
    state.close()


# --- a real server, killed ------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[subprocess.Popen[bytes], Client]:
        socket = f"unix:{tmp_path}/papr.sock"
        process = subprocess.Popen(
            [*PAPR_EMU, "serve", "--listen", socket, "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
        channel = wait_serving(socket, process)
        return process, Client.over(channel)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_kill_9_loses_nothing_acknowledged(server: Any) -> None:
    process, client = server()
    platforms = client.platforms
    platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name="kept", geometry=platform_pb2.Geometry(
        memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4)))  # fmt: skip
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform="kept", option_vector_5=bytes([22, 0, 0x20] + [0] * 21))
    )
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 * MiB))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="kept", id="dimm1", spec=spec))
    core = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="kept", id="core1", spec=core))
    guest = Guest(client.rtas, "kept")
    guest.acquire_drc(0x80000004)
    node = guest.configure_connector(0x80000004)
    guest.acquire_drc(0x10000001)
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform="kept", id="core1"))  # pending
    before = platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="kept")).platform
    connectors = platforms.ListConnectors(platform_pb2.ListConnectorsRequest(platform="kept", attached_only=True))
    tree = client.device_tree("kept")
    process.send_signal(signal.SIGKILL)
    process.wait(10)

    process, client = server()
    after = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="kept")).platform
    assert after.last_event_sequence == before.last_event_sequence
    assert after.pending_rtas_events == before.pending_rtas_events
    assert after.options == before.options
    again = client.platforms.ListConnectors(platform_pb2.ListConnectorsRequest(platform="kept", attached_only=True))
    assert again == connectors
    assert client.device_tree("kept") == tree
    assert Guest(client.rtas, "kept").configure_connector(0x80000004) == node  # a replay of the same fragment
    names = [p.name for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms]
    assert names == ["default", "kept"]
    # Events go on from the same sequence: the next is the one after.
    stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform="kept"))
    assert dict(stream.initial_metadata())["papr-subscribed-after"] == str(before.last_event_sequence)
    stream.cancel()
    status = client.rtas.GetSensorState(rtas_pb2.GetSensorStateRequest(platform="kept", sensor_type=9003,
                                                                       sensor_index=0x80000005))  # fmt: skip
    assert (status.status, status.state) == (0, 2)


def test_a_second_server_on_the_directory_is_refused(server: Any, tmp_path: Path) -> None:
    server()
    result = subprocess.run(
        [*PAPR_EMU, "serve", "--listen", f"unix:{tmp_path}/other.sock", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is in use by another papr-emu server"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_keeps_state_too(server: Any) -> None:
    process, client = server()
    client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name="x"))
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    _, client = server()
    names = [p.name for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms]
    assert names == ["default", "x"]


def test_a_resuming_watcher_sees_each_restart(server: Any) -> None:
    """Events carry the run that made them; a new stream names the run it is served by."""

    def watch(client: Client, after: int) -> tuple[str, list[hotplug_pb2.Event]]:
        stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform="w", after_sequence=after))
        incarnation = dict(stream.initial_metadata())["papr-incarnation"]
        events = [next(stream).event for _ in range(last_sequence(client, "w") - after)]
        stream.cancel()
        return incarnation, events

    def plug_core(client: Client, core_id: int) -> None:
        spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core_id))
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="w", id=f"core{core_id}", spec=spec))

    runs = []
    for core_id in (1, 2, 3):  # three runs, each killed after plugging a core
        process, client = server()
        if core_id == 1:
            geometry = platform_pb2.Geometry(
                memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4
            )
            client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name="w", geometry=geometry))
        plug_core(client, core_id)
        incarnation, events = watch(client, 0)
        runs.append(incarnation)
        # Sequence numbers go on across runs; each event keeps the run that made it.
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        plugged = [
            e for e in events if e.device_added.device.id.startswith("core") and e.device_added.device.hotplugged
        ]
        assert [e.device_added.device.id for e in plugged] == [f"core{n}" for n in range(1, core_id + 1)]
        assert [e.incarnation for e in plugged] == runs
        assert {e.incarnation for e in events if e not in plugged} == {runs[0]}  # the platform's own, at creation
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert len(set(runs)) == 3 and all(len(r) == 36 for r in runs)  # a UUID per run
