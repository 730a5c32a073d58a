"""PowerVM-style memory requests through a real server: a MEMORY_MODEL_LMB platform, the six Linux
memory functions in the reference guest (add and remove, by count, by index and by indexed count),
their rollbacks, and what the platform makes of them (MemoryRequestFinished)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import pytest

from conftest import new_platform
from helpers import Watcher, connector, connectors, plug, snapshot
from papr.v1 import connector_pb2, device_pb2, guest_pb2, hotplug_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client, Guest, ReferenceGuest, RefusalPolicy
from papr_emu_client.errorlog import parse_hotplug_event
from papr_emu_client.fdt import nodes_by_path, read_dtb

S, H = connector_pb2, hotplug_pb2
LMB4, LMB5, LMB6, LMB7, LMB8 = 0x80000004, 0x80000005, 0x80000006, 0x80000007, 0x80000008
ADD, REMOVE = H.MEMORY_ACTION_ADD, H.MEMORY_ACTION_REMOVE
COMPLETED, REFUSED, CANCELLED = H.MEMORY_OUTCOME_COMPLETED, H.MEMORY_OUTCOME_REFUSED, H.MEMORY_OUTCOME_CANCELLED


@pytest.fixture
def lmb_platform(client: Client) -> Iterator[str]:
    """-m 1G,maxmem=4G with PowerVM's memory model: LMB connectors 0x80000004..0x8000000f, no DIMM slots."""
    geometry = platform_pb2.Geometry(
        memory_bytes=1 << 30, max_memory_bytes=4 << 30, cpus=1, max_cpus=4, memory_model=platform_pb2.MEMORY_MODEL_LMB
    )
    name = new_platform(client, geometry)
    yield name
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))


def request(client: Client, platform: str, action: int, **target: object) -> H.RequestMemoryResponse:
    return client.hotplug.RequestMemory(H.RequestMemoryRequest(platform=platform, action=action, **target))


def by_range(first: int, count: int) -> H.LmbRange:
    return H.LmbRange(first_drc_index=first, count=count)


def finished(watcher: Watcher, count: int) -> list[H.MemoryRequestFinished]:
    """The MemoryRequestFinished events among the first ``count`` events the watcher sees."""
    return [e.memory_request_finished for e in watcher.wait_for(count) if e.HasField("memory_request_finished")]


def assigned(client: Client, platform: str) -> list[int]:
    """The LMB connectors with an LMB assigned (configured by the guest)."""
    lmbs = connectors(client, platform, connector_pb2.DRC_TYPE_LMB, attached_only=True)
    return [c.index for c in lmbs if c.state == S.DRC_STATE_LOGICAL_CONFIGURED]


def guest_with(client: Client, platform: str, policy: RefusalPolicy | None = None) -> ReferenceGuest:
    guest = ReferenceGuest(client, platform, policy)
    guest.start()
    return guest


def test_the_six_linux_memory_functions_complete(client: Client, lmb_platform: str) -> None:
    watcher = Watcher(client, lmb_platform)
    stub = guest_with(client, lmb_platform)
    try:
        response = request(client, lmb_platform, ADD, count=3)
        assert (response.target_lmbs, response.description) == (3, "add 3 LMBs by count")
        assert stub.wait_for(1)[0].result == "done"
        request(client, lmb_platform, ADD, drc_index=LMB8)
        assert stub.wait_for(2)[1].result == "done"
        request(client, lmb_platform, ADD, indexed_count=by_range(LMB6, 4))  # covers 7 and 9: 6 and 8 are assigned
        assert stub.wait_for(3)[2].detail == "2 LMBs"
        assert assigned(client, lmb_platform) == [LMB4, LMB5, LMB6, LMB7, LMB8, 0x80000009]
        request(client, lmb_platform, REMOVE, count=2)  # Linux picks the first removable ones
        assert stub.wait_for(4)[3].result == "done"
        request(client, lmb_platform, REMOVE, drc_index=LMB8)
        assert stub.wait_for(5)[4].result == "done"
        request(client, lmb_platform, REMOVE, indexed_count=by_range(LMB6, 2))
        assert stub.wait_for(6)[5].result == "done"
        assert assigned(client, lmb_platform) == [0x80000009]
    finally:
        stub.stop()
    events = finished(watcher, 6)
    assert [(e.request_id, e.action, e.id_type, e.outcome, e.lmbs_changed) for e in events] == [
        (1, ADD, 3, COMPLETED, 3),
        (2, ADD, 2, COMPLETED, 1),
        (3, ADD, 4, COMPLETED, 2),
        (4, REMOVE, 3, COMPLETED, 2),
        (5, REMOVE, 2, COMPLETED, 1),
        (6, REMOVE, 4, COMPLETED, 2),
    ]
    assert (events[2].first_drc_index, events[2].count) == (LMB6, 4)
    # No device events for LMBs, and no devices: the request reports for them.
    kinds = {e.WhichOneof("kind") for e in watcher.events}
    assert kinds == {"memory_request_finished"}
    devices = client.hotplug.ListDevices(H.ListDevicesRequest(platform=lmb_platform)).devices
    assert [d.id for d in devices] == ["core0", "phb0"]


@pytest.mark.parametrize(
    ("target", "identifier"),
    [
        ({"count": 2}, (3, 2, 0)),
        ({"drc_index": LMB5}, (2, 0, LMB5)),
        ({"indexed_count": by_range(LMB5, 2)}, (4, 2, LMB5)),
    ],
    ids=["count", "index", "indexed-count"],
)
def test_the_log_carries_the_identifier_type(
    client: Client, lmb_platform: str, target: dict[str, object], identifier: tuple[int, int, int]
) -> None:
    request(client, lmb_platform, ADD, **target)
    reply = client.rtas.CheckException(
        rtas_pb2.CheckExceptionRequest(platform=lmb_platform, event_mask=0xFFFFFFFF, buffer_length=2048)
    )
    event = parse_hotplug_event(reply.buffer)
    assert (event.resource, event.action, event.id_type, event.count, event.index) == (2, 1, *identifier)


def test_add_rollbacks_end_refused(client: Client, lmb_platform: str) -> None:
    watcher = Watcher(client, lmb_platform)
    stub = guest_with(client, lmb_platform, RefusalPolicy(lmbs_not_addable={LMB6}))
    try:
        # LMB6 is configured, then its add_memory fails: 6, then 4 and 5 are given back.
        request(client, lmb_platform, ADD, indexed_count=by_range(LMB4, 3))
        outcome = stub.wait_for(1)[0]
        assert (outcome.result, outcome.detail) == ("failed", "added 2 of 3 LMBs")
        request(client, lmb_platform, ADD, drc_index=LMB6)  # by index: the one LMB is given back
        assert stub.wait_for(2)[1].result == "failed"
        request(client, lmb_platform, ADD, count=3)  # by count LMB6 is skipped: 4, 5, then 7
        assert stub.wait_for(3)[2].result == "done"
    finally:
        stub.stop()
    events = finished(watcher, 6)
    # An add completes when its last LMB is configured; when the guest then fails that LMB, the
    # request is pending again and ends once more: the last event for an id is its outcome.
    assert [(e.request_id, e.outcome, e.lmbs_changed) for e in events] == [
        (1, COMPLETED, 3), (1, REFUSED, 0), (2, COMPLETED, 1), (2, REFUSED, 0), (3, COMPLETED, 3), (3, COMPLETED, 3),
    ]  # fmt: skip
    assert assigned(client, lmb_platform) == [LMB4, LMB5, LMB7]


def test_remove_refusals_and_what_stays_pending(client: Client, lmb_platform: str) -> None:
    watcher = Watcher(client, lmb_platform)
    policy = RefusalPolicy(lmbs_not_offlinable={LMB5})
    stub = guest_with(client, lmb_platform, policy)
    try:
        request(client, lmb_platform, ADD, count=3)
        stub.wait_for(1)
        request(client, lmb_platform, REMOVE, count=3)  # LMB5 cannot go: 4 and 6 are re-added
        assert stub.wait_for(2)[1].result == "refused"
        request(client, lmb_platform, REMOVE, indexed_count=by_range(LMB4, 3))  # 4 is offlined, then 5 fails
        assert stub.wait_for(3)[2].result == "refused"
        request(client, lmb_platform, REMOVE, drc_index=LMB5)  # Linux gives up silently: still pending
        assert stub.wait_for(4)[3].result == "refused"
    finally:
        stub.stop()
    events = finished(watcher, 4)
    summary = [(e.outcome, e.signal, e.drc_index) for e in events]
    assert summary == [
        (COMPLETED, H.REFUSAL_SIGNAL_UNSPECIFIED, 0),
        (REFUSED, H.REFUSAL_SIGNAL_CONFIGURE_CONNECTOR, LMB4),  # by count: configure-connector of LMB4
        (REFUSED, H.REFUSAL_SIGNAL_UNISOLATE, LMB4),  # by indexed count: the 5.13+ unisolate hint
    ]
    assert assigned(client, lmb_platform) == [LMB4, LMB5, LMB6]
    with pytest.raises(grpc.RpcError) as pending:
        request(client, lmb_platform, ADD, count=1)
    assert pending.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "memory request 4 (remove LMB 0x80000005 by index) is still pending" in pending.value.details()
    assert connector(client, lmb_platform, LMB5).unplug_pending
    # CAS resets the connectors and drops the log: the request is cancelled, the LMB stays.
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=lmb_platform, option_vector_5=bytes([22] + [0] * 23))
    )
    cancelled = finished(watcher, 5)[-1]
    assert (cancelled.request_id, cancelled.outcome) == (4, CANCELLED)
    c = connector(client, lmb_platform, LMB5)
    assert (c.device_id, c.state, c.unplug_pending) == ("lmb5", S.DRC_STATE_LOGICAL_CONFIGURED, False)


def test_the_platform_allows_only_what_a_request_covers(client: Client, lmb_platform: str) -> None:
    rtas = Guest(client.rtas, lmb_platform)
    assert rtas.set_indicator(9003, LMB4, 1) == -3  # no request: nothing to acquire
    request(client, lmb_platform, ADD, drc_index=LMB5)
    assert rtas.set_indicator(9003, LMB4, 1) == -3  # not the LMB the request names
    rtas.acquire_drc(LMB5)
    node = rtas.configure_connector(LMB5)
    assert node.name == "memory@50000000"
    request(client, lmb_platform, ADD, drc_index=LMB6)  # the add of LMB5 stands now
    assert rtas.set_indicator(9001, LMB5, 0) == -1  # no request covers its removal: QEMU's -1
    # The exported tree shows the assigned LMB in drconf memory, as one set.
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(
            platform=lmb_platform, option_vector_5=bytes([22, 0, 0x20] + [0] * 19 + [0x80, 0])
        )
    )
    memory = nodes_by_path(read_dtb(client.device_tree(lmb_platform)))["/ibm,dynamic-reconfiguration-memory"]
    value = memory["ibm,dynamic-memory-v2"]
    sets = [struct.unpack_from(">IQIII", value, 4 + 24 * n) for n in range(struct.unpack_from(">I", value)[0])]
    assert sets[1:] == [
        (1, 1 << 30, LMB4, 0xFFFFFFFF, 0),
        (1, 0x50000000, LMB5, 0, 0x108),
        (10, 0x60000000, LMB6, 0xFFFFFFFF, 0),
    ]


@pytest.mark.parametrize(
    ("action", "target", "code", "message"),
    [
        (ADD, {"count": 13}, grpc.StatusCode.FAILED_PRECONDITION, "add 13 LMBs: only 12 are unassigned"),
        (REMOVE, {"count": 1}, grpc.StatusCode.FAILED_PRECONDITION, "remove 1 LMBs: only 0 are assigned"),
        (ADD, {"count": 0}, grpc.StatusCode.INVALID_ARGUMENT, "count: 0: must be at least 1"),
        (ADD, {"drc_index": 0x80000003}, grpc.StatusCode.NOT_FOUND, "drc_index: 0x80000003: no such LMB connector"),
        (ADD, {"drc_index": 0x10000000}, grpc.StatusCode.NOT_FOUND, "no such LMB connector"),
        (ADD, {"indexed_count": by_range(0x8000000E, 3)}, grpc.StatusCode.NOT_FOUND, "indexed_count: 0x80000010"),
        (ADD, {"indexed_count": by_range(LMB4, 0)}, grpc.StatusCode.INVALID_ARGUMENT, "indexed_count.count"),
        (REMOVE, {"drc_index": LMB4}, grpc.StatusCode.FAILED_PRECONDITION, "LMB 0x80000004 is unassigned already"),
        (H.MEMORY_ACTION_UNSPECIFIED, {"count": 1}, grpc.StatusCode.INVALID_ARGUMENT, "action"),
        (ADD, {}, grpc.StatusCode.INVALID_ARGUMENT, "must set one of count, drc_index, indexed_count"),
    ],
)
def test_malformed_or_refused_requests_change_nothing(
    client: Client, lmb_platform: str, action: int, target: dict[str, object], code: grpc.StatusCode, message: str
) -> None:
    before = snapshot(client, lmb_platform)
    with pytest.raises(grpc.RpcError) as refused:
        request(client, lmb_platform, action, **target)
    assert refused.value.code() == code and message in refused.value.details(), refused.value.details()
    assert snapshot(client, lmb_platform) == before
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=lmb_platform)).platform
    assert info.pending_rtas_events == 0


def test_memory_models_keep_to_their_own_requests(client: Client, platform: str, lmb_platform: str) -> None:
    with pytest.raises(grpc.RpcError) as on_dimms:
        request(client, platform, ADD, count=1)
    assert (
        on_dimms.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "memory model dimm" in on_dimms.value.details()
    )
    with pytest.raises(grpc.RpcError) as on_lmbs:
        plug(client, lmb_platform, "d", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)))
    assert on_lmbs.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "memory model lmb" in on_lmbs.value.details()
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=lmb_platform)).platform
    assert info.geometry.memory_model == platform_pb2.MEMORY_MODEL_LMB
    with pytest.raises(grpc.RpcError) as bad:
        new_platform(client, platform_pb2.Geometry(memory_model=7))  # type: ignore[arg-type]
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "geometry.memory_model" in bad.value.details()
