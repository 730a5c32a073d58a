"""The guest library over RtasService.Session and ExecuteBatch: the same calls, outcomes, events
and connector states as over one unary RPC per call, in few messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from conftest import new_platform
from helpers import connectors, events_since, last_sequence, plug, unplug
from papr.v1 import (
    connector_pb2,
    device_pb2,
    hotplug_pb2,
    platform_pb2,
)
from papr_emu import PaprServer
from papr_emu_client import Client, Guest, ReferenceGuest, RefusalPolicy, Transport

S = connector_pb2
TRANSPORTS: list[Transport] = ["session", "batch", "unary"]
LMBS = [0x80000004, 0x80000005, 0x80000006]
BIG = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=65 << 30, memory_slots=4, cpus=1, max_cpus=4)


def dimm(size: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=size))


def event_summary(event: hotplug_pb2.Event) -> tuple[Any, ...]:
    """What an event says, without its sequence number, platform and times (a finding has one too)."""
    kind = event.WhichOneof("kind")
    body = type(getattr(event, str(kind)))()
    body.CopyFrom(getattr(event, str(kind)))
    if "time" in body.DESCRIPTOR.fields_by_name:
        body.ClearField("time")
    return (kind, body.SerializeToString(deterministic=True))


def states(client: Client, platform: str) -> list[tuple[int, int, str, bool]]:
    return [(c.index, c.state, c.device_id, c.unplug_pending) for c in connectors(client, platform)]


def reference_scenario(client: Client, transport: Transport) -> tuple[list[Any], list[Any], list[Any]]:
    """DIMM add, refused removes (both signals), remove; a DIMM refused at its first LMB (stays
    pending); CPU add, busy, remove; PHB and PCI cycles."""
    platform = new_platform(client)
    after = last_sequence(client, platform)
    guest = ReferenceGuest(client, platform, transport=transport)
    outcomes: list[Any] = []

    def handle() -> None:
        outcomes.extend((o.event, o.result, o.detail, o.drc_indexes) for o in guest.handle_pending())

    try:
        plug(client, platform, "dimm1", dimm(3 << 28))
        handle()
        for signal in ("unisolate", "configure-connector"):
            guest.policy = RefusalPolicy(lmbs_not_offlinable={0x80000006}, signal=signal)  # type: ignore[arg-type]
            unplug(client, platform, "dimm1")
            handle()
        guest.policy = RefusalPolicy()
        unplug(client, platform, "dimm1")
        handle()
        plug(client, platform, "dimm2", dimm(2 << 28))
        handle()
        guest.policy = RefusalPolicy(lmbs_not_offlinable={0x80000004})  # the first LMB: nothing re-added
        unplug(client, platform, "dimm2")
        handle()  # the unplug stays pending
        plug(client, platform, "core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
        handle()
        guest.policy = RefusalPolicy(busy_cpus={0x10000002})
        unplug(client, platform, "core2")
        handle()
        guest.policy = RefusalPolicy()
        unplug(client, platform, "core2")
        handle()
        plug(client, platform, "phb3", device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=3)))
        spec = device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_VIRTIO_NET)
        plug(client, platform, "nic", device_pb2.DeviceSpec(pci_function=spec))
        handle()
        unplug(client, platform, "nic")
        unplug(client, platform, "phb3")
        handle()
        events = [event_summary(e) for e in events_since(client, platform, after)]
        return outcomes, events, states(client, platform)
    finally:
        guest.stop()
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_reference_guest_flows_are_the_same_over_every_transport(client: Client) -> None:
    unary = reference_scenario(client, "unary")
    outcomes = [result for _event, result, _detail, _indexes in unary[0]]
    dimm_flow = ["done", "refused", "refused", "done", "done", "refused"]
    assert outcomes == [*dimm_flow, "done", "refused", "done", *["done"] * 4]
    for transport in ("session", "batch"):
        assert reference_scenario(client, transport) == unary, transport  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_big_dimm_add_and_remove(client: Client, transport: Transport) -> None:
    """256 LMBs (64 GiB): more than one batch's worth of configure-connector walks."""
    platform = new_platform(client, BIG)
    try:
        device = plug(client, platform, "big", dimm(64 << 30))
        with ReferenceGuest(client, platform, transport=transport) as guest:
            (added,) = guest.handle_pending()
            assert (added.result, added.drc_indexes) == ("done", tuple(device.drc_indexes))
            assert all(c.state == S.DRC_STATE_LOGICAL_CONFIGURED for c in connectors(client, platform, S.DRC_TYPE_LMB)
                       if c.device_id == "big")  # fmt: skip
            unplug(client, platform, "big")
            (removed,) = guest.handle_pending()
            assert (removed.result, removed.drc_indexes) == ("done", tuple(device.drc_indexes))
        assert not [c for c in connectors(client, platform, attached_only=True) if c.device_id == "big"]
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def batch_scenario(client: Client, transport: Transport) -> tuple[list[Any], list[Any]]:
    """acquire_drcs failing midway (wrong sense, then an empty connector), and release_drcs refused."""
    platform = new_platform(client)
    try:
        plug(client, platform, "dimm1", dimm(3 << 28))
        with Guest(client.rtas, platform, transport) as guest:
            guest.acquire_drc(0x80000005)  # already acquired: its sense is 1, not 2
            report: list[Any] = []
            for indexes, keep_going in ((LMBS, False), ([0x80000006, 0x80000009, 0x80000004], True)):
                batch = guest.acquire_drcs(indexes, configure=True, keep_going=keep_going)
                report.append(
                    (
                        [(r.drc_index, str(r.error) if r.error else r.node and r.node.name) for r in batch.results],
                        batch.not_attempted,
                        states(client, platform),
                    )
                )
            # No unplug pending: isolating an LMB is refused (-1); release_drcs stops there.
            batch = guest.release_drcs(LMBS)
            report.append(([(r.drc_index, r.error and r.error.call, r.error and r.error.status) for r in batch.results],
                           batch.not_attempted, states(client, platform)))  # fmt: skip
            return report, [event_summary(e) for e in events_since(client, platform, 0)]
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


@pytest.mark.parametrize("transport", ["session", "batch"])
def test_batch_acquire_failing_midway(client: Client, transport: Transport) -> None:
    report, events = batch_scenario(client, transport)
    first, second, release = report
    # The first failure ends the sequence: 0x80000004 is acquired and configured, 0x80000005 fails
    # at its sense (1: already present) and is left as it was, 0x80000006 is never touched.
    assert first[0] == [(0x80000004, "memory@40000000"), (0x80000005, "get-sensor-state on 0x80000005 returned -1")]
    assert first[1] == [0x80000006]
    by_index = {index: (state, device) for index, state, device, _ in first[2]}
    assert by_index[0x80000004] == (S.DRC_STATE_LOGICAL_CONFIGURED, "dimm1")
    assert by_index[0x80000005][0] != S.DRC_STATE_LOGICAL_CONFIGURED
    assert by_index[0x80000006] == (S.DRC_STATE_LOGICAL_UNUSABLE, "dimm1")
    # keep_going: an empty connector refuses allocation (-3, nothing to undo), the others go on.
    assert second[0] == [
        (0x80000006, "memory@60000000"),
        (0x80000009, "set-indicator(allocation usable) on 0x80000009 returned -3"),
        (0x80000004, "get-sensor-state on 0x80000004 returned -1"),
    ]
    assert release[0] == [(0x80000004, "set-indicator(isolate)", -1)] and release[1] == LMBS[1:]
    # Exactly what the same calls one RPC each leave behind.
    assert (report, events) == batch_scenario(client, "unary")


class Census(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Counts RPCs by method, and the request messages sent on streams."""

    def __init__(self) -> None:
        self.rpcs: Counter[str] = Counter()
        self.stream_messages: Counter[str] = Counter()

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        self.rpcs[details.method] += 1
        return continuation(details, request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]) -> Any:
        self.rpcs[details.method] += 1

        def counted() -> Iterator[Any]:
            for request in requests:
                self.stream_messages[details.method] += 1
                yield request

        return continuation(details, counted())


@pytest.fixture
def census(server: PaprServer) -> Iterator[tuple[Client, Census]]:
    census = Census()
    channel = grpc.intercept_channel(grpc.insecure_channel(server.addresses[1]), census)
    client = Client.over(channel)
    with client:
        yield client, census


def rtas_rpcs(census: Census) -> dict[str, int]:
    return {m.rsplit("/", 1)[1]: n for m, n in census.rpcs.items() if m.startswith("/papr.v1.RtasService/")}


@pytest.mark.parametrize("transport", ["session", "unary"])
def test_the_session_is_what_carries_the_calls(census: tuple[Client, Census], transport: Transport) -> None:
    client, counts = census
    platform = new_platform(client, BIG)
    try:
        plug(client, platform, "big", dimm(32 << 30))  # 128 LMBs
        with ReferenceGuest(client, platform, transport=transport) as guest:
            counts.rpcs.clear()
            (added,) = guest.handle_pending()
            unplug(client, platform, "big")
            (removed,) = guest.handle_pending()
            assert (added.result, removed.result) == ("done", "done")
            assert len(added.drc_indexes) == 128
        rpcs = rtas_rpcs(counts)
        if transport == "session":
            # One stream; a handful of messages: check-exception x4, read-ahead senses, two batches
            # of acquire+walk, one of releases.
            assert rpcs == {"Session": 1}
            assert counts.stream_messages["/papr.v1.RtasService/Session"] <= 12
        else:
            assert "Session" not in rpcs and "ExecuteBatch" not in rpcs
            assert rpcs["SetIndicator"] == 4 * 128 and rpcs["ConfigureConnector"] == 5 * 128
            assert rpcs["GetSensorState"] == 2 * 128 and rpcs["CheckException"] == 4
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_a_session_reopens_after_the_server_ended_it(client: Client, platform: str) -> None:
    with Guest(client.rtas, platform) as guest:
        assert guest.sense(0x80000004) == (0, 2)
        with pytest.raises(grpc.RpcError) as error:
            guest.configure_step(b"short")  # malformed: the server ends the session
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert guest.sense(0x80000004) == (0, 2)  # a new session
