"""Snapshots: a platform restored from a snapshot taken at any point of a random guest and
management flow answers every following call as the original does (a property test, in
process); the committed version-1 snapshot still restores; malformed documents are refused
naming where; and the PlatformService RPCs round-trip through a real server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papr.v1 import platform_pb2
from papr_emu.model import (
    CpuCoreParams,
    DimmRequest,
    Geometry,
    MemoryAction,
    MemoryModel,
    NvdimmRequest,
    PciFunctionParams,
    PciModel,
    PhbParams,
    Platform,
    PlatformError,
    UnplugTimeouts,
)
from papr_emu.model.rtas_log import HP_ID_DRC_COUNT, HP_ID_DRC_COUNT_INDEXED, HP_ID_DRC_INDEX
from papr_emu.model.snapshot import SnapshotError
from papr_emu_client import Client
from papr_emu_client.workarea import new_work_area

DATA = Path(__file__).parent / "data"
MiB = 1 << 20
DIMM_GEOMETRY = Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4)
LMB_GEOMETRY = Geometry.build(1 << 30, 3 << 30, cpus=1, max_cpus=4, memory_model=MemoryModel.LMB)
UUID = "01234567-89ab-cdef-0123-456789abcdef"

# Connectors worth poking: CPU, PHB, LMB, PMEM, and PCI on PHB 0 and PHB 1's bus.
INDEXES = [0x10000000, 0x10000001, 0x10000002, 0x20000001, 0x80000004, 0x80000005, 0x80000006, 0x90000000,
           0x40000008, 0x40000009, 0x40000018, 0x40010008]  # fmt: skip
DEVICES = ["d1", "d2", "c1", "c2", "p1", "p2", "h1", "n1"]
PLUGS = {
    "d1": DimmRequest(512 * MiB), "d2": DimmRequest(256 * MiB), "c1": CpuCoreParams(1), "c2": CpuCoreParams(2),
    "p1": PciFunctionParams(0, 1, 0, PciModel.E1000), "p2": PciFunctionParams(1, 1, 0, PciModel.VIRTIO_NET),
    "h1": PhbParams(1), "n1": NvdimmRequest(256 * MiB, 128 << 10, UUID),
}  # fmt: skip
VECTORS = [bytes([22] + [0] * 23), bytes([22, 0, 0x20, 0, 0, 0, 0x04] + [0] * 15 + [0x80, 0])]

Op = tuple[Any, ...]

ops = st.one_of(
    st.tuples(st.just("plug"), st.sampled_from(DEVICES)),
    st.tuples(st.just("unplug"), st.sampled_from(DEVICES)),
    st.tuples(st.just("indicator"), st.sampled_from([9001, 9002, 9003]), st.sampled_from(INDEXES), st.integers(0, 2)),
    st.tuples(st.just("acquire"), st.sampled_from(INDEXES)),
    st.tuples(st.just("sense"), st.sampled_from(INDEXES)),
    st.tuples(st.just("configure"), st.sampled_from(INDEXES)),
    st.tuples(st.just("check_exception"), st.sampled_from([0xFFFFFFFF, 0x04000000, 0x40000000])),
    st.tuples(st.just("cas"), st.sampled_from(range(len(VECTORS)))),
    st.tuples(st.just("tick"), st.floats(0, 20)),
    st.tuples(st.just("threads"), st.sampled_from([0, 1, 2])),
    st.tuples(
        st.just("memory"),
        st.sampled_from(list(MemoryAction)),
        st.sampled_from([HP_ID_DRC_COUNT, HP_ID_DRC_INDEX, HP_ID_DRC_COUNT_INDEXED]),
        st.integers(1, 3),
        st.sampled_from(INDEXES[4:7]),
    ),
)


class Clocks:
    """Wall and monotonic clocks the test moves by hand (the same for both platforms)."""

    def __init__(self) -> None:
        self.wall, self.mono = 1_800_000_000.0, 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def apply(platform: Platform, op: Op, clocks: Clocks) -> object:
    """Run one call; its result, or the error it raised (type and message)."""
    try:
        kind = op[0]
        if kind == "plug":
            return platform.plug(op[1], PLUGS[op[1]])
        if kind == "unplug":
            return platform.unplug(op[1])
        if kind == "indicator":
            return platform.set_indicator(op[1], op[2], op[3])
        if kind == "acquire":
            return platform.set_indicator(9003, op[1], 1), platform.set_indicator(9001, op[1], 1)
        if kind == "sense":
            return platform.get_sensor_state(9003, op[1])
        if kind == "configure":
            return platform.configure_connector(new_work_area(op[1]))
        if kind == "check_exception":
            return platform.check_exception(op[1], 2048)
        if kind == "cas":
            return platform.client_architecture_support(VECTORS[op[1]])
        if kind == "tick":
            clocks.wall += op[1]
            clocks.mono += op[1]
            return platform.expire_unplugs()
        if kind == "threads":
            return platform.query_cpu_stopped_state(op[1]), platform.start_cpu(op[1], 0x60, op[1])
        if kind == "memory":
            return platform.request_memory(op[1], op[2], op[3], op[4]).describe()
        raise AssertionError(op)
    except PlatformError as error:
        return type(error).__name__, error.message


def without_name(document: dict[str, Any]) -> str:
    """The document as text, with the platform's name taken out (a restore may rename)."""
    text = json.dumps({k: v for k, v in document.items() if k != "platform"}, sort_keys=True)
    return text.replace(f'"{document["platform"]}"', '"<name>"')


def make(geometry: Geometry, clocks: Clocks, name: str = "a") -> Platform:
    return Platform(
        name, geometry, clock=clocks.time, monotonic=clocks.monotonic, unplug_timeouts=UnplugTimeouts(cpu_core=30)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    geometry=st.sampled_from([DIMM_GEOMETRY, LMB_GEOMETRY]),
    before=st.lists(ops, max_size=40),
    after=st.lists(ops, max_size=25),
)
def test_a_restored_platform_answers_every_following_call_as_the_original(
    geometry: Geometry, before: list[Op], after: list[Op]
) -> None:
    clocks = Clocks()
    original = make(geometry, clocks)
    for op in before:
        apply(original, op, clocks)
    document = json.loads(json.dumps(original.snapshot()))  # what travels is JSON
    restored = Platform.restore("b", document, clock=clocks.time, monotonic=clocks.monotonic)
    assert without_name(restored.snapshot()) == without_name(document)
    for op in after:
        assert apply(restored, op, clocks) == apply(original, op, clocks), op
    assert without_name(restored.snapshot()) == without_name(original.snapshot())
    assert restored.device_tree_blob() == original.device_tree_blob()


def test_events_continue_after_the_snapshots_sequence() -> None:
    clocks = Clocks()
    original = make(DIMM_GEOMETRY, clocks)
    original.plug("c1", CpuCoreParams(1))
    restored = Platform.restore("b", original.snapshot(), clock=clocks.time, monotonic=clocks.monotonic)
    subscription, after = restored.subscribe_events(0)
    replayed = subscription.next(timeout=0)
    assert after == 3 and replayed is not None and (replayed.sequence, replayed.platform) == (1, "b")
    restored.plug("c2", CpuCoreParams(2))
    assert restored.info().last_event_sequence == 4


def test_a_pending_unplug_keeps_what_is_left_of_its_timeout() -> None:
    clocks = Clocks()
    original = make(DIMM_GEOMETRY, clocks)
    original.plug("c1", CpuCoreParams(1))
    original.set_indicator(9003, 0x10000001, 1)
    original.set_indicator(9001, 0x10000001, 1)
    original.unplug("c1")
    clocks.mono += 20
    document = original.snapshot()
    assert document["devices"][-1]["unplug_timeout_left"] == 10
    later = Clocks()  # another server, another monotonic clock
    restored = Platform.restore("b", document, clock=later.time, monotonic=later.monotonic)
    later.mono += 9
    assert restored.expire_unplugs() == []
    later.mono += 1
    assert restored.expire_unplugs() == ["c1"]


def committed_snapshot() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / "snapshot-v1.json").read_text())
    return document


def test_the_committed_version_1_snapshot_restores() -> None:
    """tests/data/snapshot-v1.json was written by the first snapshot version; every later one must read it."""
    document = committed_snapshot()
    assert document["version"] == 1
    restored = Platform.restore("old", document)
    devices = {d.id: d for d in restored.devices()}
    assert set(devices) == {"core0", "phb0", "dimm1", "core1", "nic", "nv1"}
    assert devices["dimm1"].unplug_pending and devices["core1"].unplug_pending is False
    assert restored.get_sensor_state(9003, 0x80000004) == (0, 1)  # the DIMM's first LMB, configured
    assert restored.info().last_event_sequence == document["events"]["last_sequence"]
    assert restored.check_exception(0xFFFFFFFF, 2048)[0] == 0  # its queued log is still there
    # The configure-connector sequence it was in the middle of goes on where it stopped.
    status, _ = restored.configure_connector(new_work_area(0x10000001))
    assert status == document_cursor_status(document, 0x10000001)


def document_cursor_status(document: dict[str, Any], index: int) -> int:
    """The status the next configure-connector call of ``index`` returns, read from the document's walk."""
    run = next(r for r in document["connectors"] if r["index"] == index)
    kind = run["walk"][run["cursor"]][0]
    return {"begin": 2, "property": 3, "end": 4}[kind]


def write_committed_snapshot() -> None:  # pragma: no cover - how tests/data/snapshot-v1.json was made
    clocks = Clocks()
    platform = make(DIMM_GEOMETRY, clocks, "v1")
    platform.plug("dimm1", DimmRequest(512 * MiB))
    platform.plug("core1", CpuCoreParams(1))
    platform.plug("nic", PciFunctionParams(0, 3, 0, PciModel.VIRTIO_NET))
    platform.plug("nv1", NvdimmRequest(256 * MiB, 128 << 10, UUID))
    while platform.check_exception(0xFFFFFFFF, 2048)[0] == 0:
        pass
    for index in (0x80000004, 0x80000005, 0x10000001):
        platform.set_indicator(9003, index, 1)
        platform.set_indicator(9001, index, 1)
    for index in (0x80000004, 0x80000005):
        status = 1
        while status != 0:
            status, _ = platform.configure_connector(new_work_area(index))
    for _ in range(3):
        platform.configure_connector(new_work_area(0x10000001))
    platform.unplug("dimm1")
    DATA.mkdir(exist_ok=True)
    (DATA / "snapshot-v1.json").write_text(json.dumps(platform.snapshot(), indent=1) + "\n")


MALFORMED: list[tuple[Callable[[dict[str, Any]], object], str]] = [
    (lambda d: [], "snapshot: must be a JSON object"),
    (lambda d: {**d, "format": "x"}, "snapshot.format: must be 'papr-emu/platform-snapshot'"),
    (lambda d: {**d, "version": 99}, "snapshot.version: 99 is not one this papr-emu reads"),
    (lambda d: {**d, "version": True}, "snapshot.version: True is not a int"),
    (lambda d: {**d, "geometry": {**d["geometry"], "threads": 3}}, "snapshot.geometry: geometry.threads_per_core"),
    (lambda d: {**d, "devices": d["devices"] + d["devices"][-1:]}, "snapshot.devices[6].fields.id"),
    (lambda d: {**d, "devices": [{**d["devices"][0], "type": "toaster"}]}, "snapshot: inconsistent"),
    (lambda d: {**d, "devices": [{**d["devices"][2], "fields": {"__type__": "os.system"}}]}, "snapshot"),
    (lambda d: {**d, "connectors": [{**d["connectors"][0], "index": 0x12345678}]}, "is no connector"),
    (lambda d: {**d, "connectors": [{**d["connectors"][0], "state": 8}]}, "is not a state of"),
    (lambda d: {**d, "events": {**d["events"], "last_sequence": 1}}, "snapshot: inconsistent"),
    (
        lambda d: {**d, "events": {**d["events"], "retained": [[1, 0.0, {"__type__": "Popen"}]]}},
        "'Popen' is not a type a snapshot may hold",
    ),
]


@pytest.mark.parametrize(("mangle", "message"), MALFORMED)
def test_malformed_snapshots_are_refused_naming_where(mangle: Callable[[dict[str, Any]], object], message: str) -> None:
    with pytest.raises(SnapshotError) as refused:
        Platform.restore("bad", mangle(committed_snapshot()))
    assert message in refused.value.message, refused.value.message


# --- through a real server ------------------------------------------------------------------------


@pytest.fixture
def snapshot_name(client: Client) -> Iterator[str]:
    yield "restored"
    try:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="restored"))
    except grpc.RpcError:
        pass


def test_snapshot_and_restore_rpcs(client: Client, platform: str, snapshot_name: str) -> None:
    from helpers import plug, snapshot
    from papr.v1 import device_pb2

    plug(client, platform, "dimm1", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 * MiB)))
    taken = client.platforms.SnapshotPlatform(platform_pb2.SnapshotPlatformRequest(platform=platform))
    assert taken.format_version == 1 and json.loads(taken.snapshot)["platform"] == platform
    restored = client.platforms.RestorePlatform(
        platform_pb2.RestorePlatformRequest(name=snapshot_name, snapshot=taken.snapshot)
    ).platform
    assert restored.name == snapshot_name and restored.last_event_sequence > 0
    assert snapshot(client, snapshot_name) == snapshot(client, platform)
    with pytest.raises(grpc.RpcError) as taken_name:
        client.platforms.RestorePlatform(platform_pb2.RestorePlatformRequest(name=platform, snapshot=taken.snapshot))
    assert taken_name.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as bad:
        client.platforms.RestorePlatform(platform_pb2.RestorePlatformRequest(name="other", snapshot=b"{not json"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "snapshot" in bad.value.details()
