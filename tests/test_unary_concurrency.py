"""unary_concurrency: several LMBs' sequences under way at once over one unary RPC per call.

Each LMB's calls stay in the kernel's order; only the interleaving between LMBs changes. So
outcomes, connector states and events must be those of the session transport and of the
sequential unary guest (unary_concurrency=1). Events are compared as a multiset, since in
general calls on different LMBs may reach the platform in any order. Here they also come in
the same order: every event is a device's, and the two that an LMB's call triggers (the
refusal signal's UnplugRejected, the last release's DeviceDeleted) are pinned by the guest
running the first LMB alone and the last after all the others.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from test_guest_sessions import event_summary

from conftest import new_platform
from helpers import connectors, events_since, last_sequence, plug, unplug
from papr.v1 import (
    connector_pb2,
    device_pb2,
    guest_pb2,
    platform_pb2,
)
from papr_emu import PaprServer
from papr_emu_client import Client, Guest, ReferenceGuest, RefusalPolicy, Transport

S = connector_pb2
LMB0 = 0x80000004  # the first hotpluggable LMB (at 1 GiB)
BIG = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=65 << 30, memory_slots=4, cpus=1, max_cpus=4)
MODES: list[tuple[Transport, int]] = [("session", 1), ("unary", 1), ("unary", 8)]


def dimm(lmbs: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=lmbs << 28))


def states(client: Client, platform: str) -> list[tuple[int, int, str, bool]]:
    return [(c.index, c.state, c.device_id, c.unplug_pending) for c in connectors(client, platform)]


class InFlight(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts unary RTAS RPCs by method, and the most that were under way at once."""

    def __init__(self) -> None:
        self.rpcs: Counter[str] = Counter()
        self.now = self.most = 0
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        rtas = details.method.startswith("/papr.v1.RtasService/")
        if rtas:
            with self._lock:
                self.rpcs[details.method.rsplit("/", 1)[1]] += 1
                self.now += 1
                self.most = max(self.most, self.now)
        try:
            return continuation(details, request)  # a blocking call: done when it returns
        finally:
            if rtas:
                with self._lock:
                    self.now -= 1

    def reset(self) -> None:
        self.rpcs.clear()
        self.most = 0


@pytest.fixture
def counted(server: PaprServer) -> Iterator[tuple[Client, InFlight]]:
    census = InFlight()
    channel = grpc.intercept_channel(grpc.insecure_channel(server.addresses[1]), census)
    client = Client.over(channel)
    with client:
        yield client, census


def memory_scenario(client: Client, transport: Transport, concurrency: int, count_indexed: bool) -> dict[str, Any]:
    """16-LMB DIMMs: add; removes refused midway (both signals); remove; an add that fails at the
    7th LMB (another client took it); a remove refused at the first LMB. ``count_indexed``: the
    guest negotiated the hot-plug event source, so adds name their LMBs (the first failure ends
    the add); else adds are by count (a failing LMB is skipped, any free LMB tried instead)."""
    platform = new_platform(client, BIG)
    if count_indexed:
        ov5 = bytearray(24)
        ov5[0], ov5[6] = 22, 0x04  # option vector 5: length, and the hot-plug event source bit
        request = guest_pb2.ClientArchitectureSupportRequest(platform=platform, option_vector_5=bytes(ov5))
        assert client.guest.ClientArchitectureSupport(request).options.hotplug_events
    after = last_sequence(client, platform)
    guest = ReferenceGuest(client, platform, transport=transport, unary_concurrency=concurrency)
    steps: list[Any] = []

    def handle() -> None:
        for o in guest.handle_pending():
            steps.append((o.event, o.result, o.detail, o.drc_indexes, states(client, platform)))

    try:
        plug(client, platform, "dimm1", dimm(16))
        handle()
        for signal in ("unisolate", "configure-connector"):
            # LMBs 0-10 are removed, the 12th cannot be offlined: 11 LMBs re-added.
            guest.policy = RefusalPolicy(lmbs_not_offlinable={LMB0 + 11}, signal=signal)  # type: ignore[arg-type]
            unplug(client, platform, "dimm1")
            handle()
        guest.policy = RefusalPolicy()
        unplug(client, platform, "dimm1")
        handle()
        second = plug(client, platform, "dimm2", dimm(16))
        with Guest(client.rtas, platform, "unary") as other:
            other.acquire_drc(second.drc_indexes[6])  # its sense is now 1: the guest's acquire fails there
        handle()
        third = plug(client, platform, "dimm3", dimm(16))
        handle()
        guest.policy = RefusalPolicy(lmbs_not_offlinable={third.drc_indexes[0]})  # nothing removed or re-added
        unplug(client, platform, "dimm3")
        handle()  # the unplug stays pending
        events = [event_summary(e) for e in events_since(client, platform, after)]
        return {"steps": steps, "events": events, "assigned": sorted(guest.assigned_lmbs), "dimm2": second}
    finally:
        guest.stop()
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


@pytest.mark.parametrize("count_indexed", [False, True], ids=["by-count", "count-indexed"])
def test_concurrent_unary_memory_flows_match_session_and_sequential(
    counted: tuple[Client, InFlight], count_indexed: bool
) -> None:
    client, census = counted
    runs: dict[tuple[Transport, int], dict[str, Any]] = {}
    rpcs: dict[tuple[Transport, int], Counter[str]] = {}
    most: dict[tuple[Transport, int], int] = {}
    for mode in MODES:
        census.reset()
        runs[mode] = memory_scenario(client, *mode, count_indexed)
        rpcs[mode], most[mode] = Counter(census.rpcs), census.most
    reference = runs["session", 1]
    results = [result for _event, result, _detail, _indexes, _states in reference["steps"]]
    assert results == ["done", "refused", "refused", "done", "failed", "done", "refused"]
    # The failed add is rolled back: the release of its first LMB is refused (no unplug pending:
    # QEMU's isolate guard), which ends the rollback with that error.
    assert reference["steps"][4][2] == f"set-indicator(isolate) on {LMB0:#x} returned -1"
    kinds = [kind for kind, _ in reference["events"]]
    assert kinds.count("unplug_rejected") == 2 and kinds.count("device_deleted") == 1
    # Concurrent and count-indexed: LMBs 2-9 of dimm2 start at once after the first, so at least
    # the 8th and 9th (maybe more, if others finished before the 7th's failure was seen) were
    # under way when the 7th failed, and were added. The rollback, like the sequential one, ends
    # at the first LMB's refused release: they stay added, and the guest counts them as its own.
    dimm2 = list(reference["dimm2"].drc_indexes)
    overrun = set(runs["unary", 8]["assigned"]) - set(reference["assigned"])
    if count_indexed:
        assert overrun == set(dimm2[7 : 7 + len(overrun)]) and 2 <= len(overrun) <= 9
    else:
        assert not overrun
    for mode in (("unary", 1), ("unary", 8)):
        run = runs[mode]
        extra = overrun if mode == ("unary", 8) else set()
        for n, (step, expected) in enumerate(zip(run["steps"], reference["steps"], strict=True)):
            assert step[:4] == expected[:4], (mode, n)  # the outcome
            differ = {index for (index, *state), (_, *want) in zip(step[4], expected[4], strict=True) if state != want}
            assert differ == (extra if n >= 4 else set()), (mode, n)  # every connector's state after it
        for index, state, device, pending in run["steps"][-1][4]:
            if index in extra:
                assert (state, device, pending) == (S.DRC_STATE_LOGICAL_CONFIGURED, "dimm2", False)
        assert Counter(run["events"]) == Counter(reference["events"]), mode  # the contract: a multiset
        assert run["events"] == reference["events"], mode  # and here even the order (module docstring)
        assert set(run["assigned"]) == set(reference["assigned"]) | extra, mode
    assert most["unary", 1] == 1
    assert most["unary", 8] > 1  # several LMBs' calls really were under way at once
    # The same RPCs, but for the overrun's acquires: sense, usable, unisolate, configure x5 each.
    n = len(overrun)
    assert rpcs["unary", 8] - rpcs["unary", 1] == Counter(
        {"GetSensorState": n, "SetIndicator": 2 * n, "ConfigureConnector": 5 * n}
    )
    assert not rpcs["unary", 1] - rpcs["unary", 8]


def test_a_failure_midway_stops_new_lmbs_and_reports_those_under_way(client: Client) -> None:
    """acquire_drcs: the 7th of 16 LMBs fails. The first runs alone, then LMBs 2-9 start at once:
    8 and 9 at least finish after the failure (the overrun, reported after it); once the failure
    is seen no LMB starts, and those never started are untouched."""
    lmbs = list(range(LMB0, LMB0 + 16))
    reports: dict[int, Any] = {}
    for concurrency in (1, 8):
        platform = new_platform(client, BIG)
        try:
            plug(client, platform, "dimm1", dimm(16))
            with Guest(client.rtas, platform, "unary", unary_concurrency=concurrency) as guest:
                guest.acquire_drc(LMB0 + 6)
                batch = guest.acquire_drcs(lmbs, configure=True)
                reports[concurrency] = [
                    (r.drc_index, str(r.error) if r.error else r.node and r.node.name) for r in batch.in_order
                ]
                by_index = {c.index: c.state for c in connectors(client, platform, S.DRC_TYPE_LMB)}
                ran = 7 + batch.overrun
                assert len(batch.results) == ran and batch.not_attempted == lmbs[ran:]
                if concurrency == 1:
                    assert batch.overrun == 0
                else:
                    assert 2 <= batch.overrun <= 9
                    assert [(r.drc_index, r.error) for r in batch.results[7:]] == [(i, None) for i in lmbs[7:ran]]
                configured = [i for i in lmbs if by_index[i] == S.DRC_STATE_LOGICAL_CONFIGURED]
                assert configured == lmbs[:6] + lmbs[7:ran]
                assert all(by_index[i] == S.DRC_STATE_LOGICAL_UNUSABLE for i in lmbs[ran:])
        finally:
            client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))
    assert reports[8] == reports[1]  # in connector order, up to the failure: the sequential run's
    assert reports[1][6] == (LMB0 + 6, f"get-sensor-state on {LMB0 + 6:#x} returned -1")
    assert [name for _, name in reports[1][:6]] == [f"memory@{(4 + n) << 28:x}" for n in range(6)]


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_by_count_the_same_lmbs_are_added(client: Client, concurrency: int) -> None:
    """keep_going with a count (memory add by count): failing LMBs are skipped, and exactly the
    first ``count`` that succeed are added, never more, however many are under way."""
    platform = new_platform(client, BIG)
    try:
        plug(client, platform, "dimm1", dimm(32))
        with Guest(client.rtas, platform, "unary", unary_concurrency=concurrency) as guest:
            taken = {LMB0 + 2, LMB0 + 5, LMB0 + 6, LMB0 + 11}
            for index in taken:
                guest.acquire_drc(index)
            batch = guest.acquire_drcs(range(LMB0, LMB0 + 32), configure=True, keep_going=True, count=12)
            assert batch.overrun == 0
            assert batch.done == [i for i in range(LMB0, LMB0 + 16) if i not in taken]
            assert [f.drc_index for f in batch.failures] == sorted(taken)
            assert batch.not_attempted == list(range(LMB0 + 16, LMB0 + 32))
            configured = {c.index for c in connectors(client, platform, S.DRC_TYPE_LMB)
                          if c.state == S.DRC_STATE_LOGICAL_CONFIGURED}  # fmt: skip
            assert configured == set(batch.done)
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_unary_concurrency_must_be_positive(client: Client) -> None:
    with pytest.raises(ValueError, match="unary_concurrency 0"):
        Guest(client.rtas, "default", "unary", unary_concurrency=0)
