"""CPU thread states (query-cpu-stopped-state, start-cpu, stop-self) through a real server, and the
reference guest's CPU add and remove, which online and offline the threads as Linux does.

QEMU 7.2's answers (recorded by the conformance scenarios cpu-threads-*): a thread is named by its
vCPU id; only vCPU 0 runs after reset; query gives [0, 0 stopped | 2 running] or -3; start-cpu 0, -1
when the thread is not stopped, -3 when there is no such thread; stop-self takes any cells.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from conftest import new_platform
from helpers import Watcher, connector, drain, plug, unplug
from papr.v1 import connector_pb2, device_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu.model import Platform, default_geometry
from papr_emu.model.geometry import Geometry
from papr_emu_client import Client, Guest, ReferenceGuest
from papr_emu_client.guest import ALLOCATION_STATE, ISOLATION_STATE

QUERY, START, STOP_SELF = 0x2005, 0x2006, 0x2007  # QEMU 7.2's tokens, as in /rtas
STOPPED, RUNNING = 0, 2
SMT2 = platform_pb2.Geometry(
    memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=2, max_cpus=8, threads_per_core=2
)
CORE2, CORE4 = 0x10000002, 0x10000004


def core(core_id: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core_id))


@pytest.fixture
def smt2(client: Client) -> Iterator[str]:
    name = new_platform(client, SMT2)
    yield name
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))


def states(guest: Guest, cpu_ids: range | list[int]) -> list[tuple[int, int]]:
    return [guest.query_cpu_stopped_state(cpu_id) for cpu_id in cpu_ids]


def raw(client: Client, platform: str, token: int, nret: int, *args: int, caller: int = 0) -> list[int]:
    request = rtas_pb2.CallRequest(
        platform=platform, token=token, nargs=len(args), nret=nret, args=list(args), calling_cpu_id=caller
    )
    return list(client.rtas.Call(request).rets)


# --- the calls, typed and raw ---------------------------------------------------------------------


def test_after_boot_only_vcpu_0_runs(client: Client, smt2: str) -> None:
    guest = Guest(client.rtas, smt2)
    # The boot core 0 has threads 0 and 1; vCPUs 2.. are not plugged.
    assert states(guest, range(4)) == [(0, RUNNING), (0, STOPPED), (-3, 0), (-3, 0)]
    assert states(guest, [0xFFFFFFFF]) == [(-3, 0)]


def test_a_hot_added_cores_threads_start_stopped_and_start_one_by_one(client: Client, smt2: str) -> None:
    guest = Guest(client.rtas, smt2)
    plug(client, smt2, "core2", core(2))
    assert states(guest, [2, 3]) == [(0, STOPPED)] * 2  # before configure: the threads exist already
    # As in QEMU, start-cpu does not look at the connector: it works before the guest acquires it.
    assert guest.start_cpu(3, 0x60, 3) == 0
    assert states(guest, [2, 3]) == [(0, STOPPED), (0, RUNNING)]
    assert guest.start_cpu(3, 0x60, 3) == -1  # not stopped: hardware error
    assert guest.start_cpu(2, 0x60, 2) == 0
    assert guest.start_cpu(4, 0x60, 4) == -3  # no such thread
    assert states(guest, [2, 3, 4]) == [(0, RUNNING), (0, RUNNING), (-3, 0)]


def test_stop_self_stops_the_calling_thread(client: Client, smt2: str) -> None:
    guest = Guest(client.rtas, smt2)
    plug(client, smt2, "core2", core(2))
    for cpu_id in (2, 3):
        assert guest.start_cpu(cpu_id, 0x60, cpu_id) == 0
    assert guest.stop_self(3) == 0
    assert states(guest, [2, 3]) == [(0, RUNNING), (0, STOPPED)]
    assert guest.stop_self(3) == 0  # already stopped: unchanged, as QEMU
    assert guest.stop_self(6) == -3  # names no thread: it cannot have called
    assert states(guest, [0, 1, 2, 3]) == [(0, RUNNING), (0, STOPPED), (0, RUNNING), (0, STOPPED)]
    assert guest.start_cpu(3, 0x60, 3) == 0  # a stopped thread starts again


def test_the_raw_calls_take_qemus_cells(client: Client, smt2: str) -> None:
    plug(client, smt2, "core2", core(2))
    assert raw(client, smt2, QUERY, 2, 2) == [0, STOPPED]
    assert raw(client, smt2, QUERY, 1, 2) == [-3]  # nret 1: QEMU wants 2
    assert raw(client, smt2, QUERY, 2, 2, 0) == [-3, 0]  # nargs 2
    assert raw(client, smt2, START, 1, 2, 0x60) == [-3]  # nargs 2: nothing starts
    assert raw(client, smt2, QUERY, 2, 2) == [0, STOPPED]
    assert raw(client, smt2, START, 1, 2, 0x60, 2) == [0]
    assert raw(client, smt2, START, 1, 2, 0x60, 2) == [-1]
    # stop-self: the caller is calling_cpu_id; any nargs and nret, as QEMU takes it.
    assert raw(client, smt2, STOP_SELF, 1, caller=2) == [0]
    assert raw(client, smt2, QUERY, 2, 2) == [0, STOPPED]
    assert raw(client, smt2, STOP_SELF, 3, 7, caller=2) == [0, 0, 0]
    assert raw(client, smt2, STOP_SELF, 0) == []  # the default caller: vCPU 0, as under QEMU's qtest
    assert raw(client, smt2, QUERY, 2, 0) == [0, STOPPED]
    assert raw(client, smt2, STOP_SELF, 1, caller=9) == [-3]


def test_batches_and_sessions_give_what_the_unary_calls_give(client: Client) -> None:
    calls = [
        rtas_pb2.RtasCall(start_cpu=rtas_pb2.StartCpuRequest(cpu_id=1, start_address=0x60, r3=1)),
        rtas_pb2.RtasCall(query_cpu_stopped_state=rtas_pb2.QueryCpuStoppedStateRequest(cpu_id=1)),
        rtas_pb2.RtasCall(start_cpu=rtas_pb2.StartCpuRequest(cpu_id=1, start_address=0x60, r3=1)),
        rtas_pb2.RtasCall(stop_self=rtas_pb2.StopSelfRequest(cpu_id=1)),
        rtas_pb2.RtasCall(query_cpu_stopped_state=rtas_pb2.QueryCpuStoppedStateRequest(cpu_id=1)),
        rtas_pb2.RtasCall(stop_self=rtas_pb2.StopSelfRequest(cpu_id=5)),
        rtas_pb2.RtasCall(raw=rtas_pb2.CallRequest(token=STOP_SELF, nret=1, calling_cpu_id=0)),
        rtas_pb2.RtasCall(query_cpu_stopped_state=rtas_pb2.QueryCpuStoppedStateRequest(cpu_id=0)),
    ]
    expected = [
        ("start_cpu", [0]),
        ("query_cpu_stopped_state", [0, RUNNING]),
        ("start_cpu", [-1]),
        ("stop_self", [0]),
        ("query_cpu_stopped_state", [0, STOPPED]),
        ("stop_self", [-3]),
        ("raw", [0]),
        ("query_cpu_stopped_state", [0, STOPPED]),
    ]

    def cells(result: rtas_pb2.RtasResult) -> tuple[str, list[int]]:
        kind = str(result.WhichOneof("result"))
        reply: Any = getattr(result, kind)
        if kind == "raw":
            return kind, list(reply.rets)
        return kind, [reply.status, reply.state] if kind == "query_cpu_stopped_state" else [reply.status]

    runs: dict[str, Callable[[str], list[rtas_pb2.RtasResult]]] = {
        "batch": lambda p: list(
            client.rtas.ExecuteBatch(rtas_pb2.ExecuteBatchRequest(platform=p, calls=calls)).results
        ),
        "session": lambda p: list(
            next(iter(client.rtas.Session(iter([rtas_pb2.SessionRequest(platform=p, calls=calls)])))).results
        ),
        "unary": lambda p: Guest(client.rtas, p, "unary").calls.run(calls),
    }
    for how, run in runs.items():
        platform = new_platform(client, SMT2)
        try:
            assert [cells(r) for r in run(platform)] == expected, how
        finally:
            client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


# --- unplug while threads run ---------------------------------------------------------------------


def test_releasing_a_core_whose_threads_run_deletes_it_with_them(client: Client, smt2: str) -> None:
    """docs/unplug.md: as QEMU 7.2, the isolate and the release succeed; the threads go with the core."""
    guest = Guest(client.rtas, smt2)
    watcher = Watcher(client, smt2)
    plug(client, smt2, "core2", core(2))
    drain(guest)
    guest.acquire_drc(CORE2)
    guest.configure_items(CORE2)
    assert guest.start_cpu(2, 0x60, 2) == 0
    unplug(client, smt2, "core2")
    drain(guest)
    assert guest.set_indicator(ISOLATION_STATE, CORE2, 0) == 0  # thread 2 still runs
    assert states(guest, [2, 3]) == [(0, RUNNING), (0, STOPPED)]  # isolated, not yet released
    assert guest.set_indicator(ALLOCATION_STATE, CORE2, 0) == 0
    # Isolating a core whose thread runs is a conduct finding (issue 12), then the core goes.
    kinds = [str(e.WhichOneof("kind")) for e in watcher.wait_for(4)]
    assert kinds[-2:] == ["conduct_finding", "device_deleted"], kinds
    assert states(guest, [2, 3]) == [(-3, 0)] * 2
    assert guest.start_cpu(2, 0x60, 2) == -3
    assert guest.stop_self(2) == -3
    watcher.close()
    # A new core in the same place starts with its threads stopped.
    plug(client, smt2, "core2b", core(2))
    assert states(guest, [2, 3]) == [(0, STOPPED)] * 2


# --- the reference guest --------------------------------------------------------------------------


class Recorder(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The RtasService calls a unary-transport guest makes, in order, as (method, request)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method.startswith("/papr.v1.RtasService/"):
            self.calls.append((details.method.rsplit("/", 1)[1], request))
        return continuation(details, request)


@pytest.fixture
def recorded(server: PaprServer) -> Iterator[tuple[Client, Recorder]]:
    recorder = Recorder()
    with Client.over(grpc.intercept_channel(grpc.insecure_channel(server.addresses[0]), recorder)) as client:
        yield client, recorder


def thread_calls(recorder: Recorder) -> list[tuple[str, int]]:
    """The thread calls and the DR indicator calls, with the vCPU id or the indicator type."""
    out = []
    for method, request in recorder.calls:
        if method in ("QueryCpuStoppedState", "StartCpu", "StopSelf"):
            out.append((method, request.cpu_id))
        elif method == "SetIndicator":
            out.append((f"SetIndicator {request.indicator_type}/{request.new_state}", request.indicator_index))
    return out


def test_reference_guest_onlines_a_new_cores_threads_and_stops_them_before_isolating(
    recorded: tuple[Client, Recorder],
) -> None:
    client, recorder = recorded
    platform = new_platform(client, SMT2)
    try:
        guest = ReferenceGuest(client, platform, transport="unary")
        plug(client, platform, "core4", core(4))
        [added] = guest.handle_pending()
        assert (added.result, added.detail) == ("done", "PowerPC,POWER9@4")
        assert states(guest.rtas, [4, 5]) == [(0, RUNNING)] * 2
        # dlpar_cpu_add: acquire (allocation, unisolate), configure, then per thread (from the node's
        # ibm,ppc-interrupt-server#s) query-cpu-stopped-state and start-cpu (smp_startup_cpu).
        assert thread_calls(recorder) == [
            ("SetIndicator 9003/1", CORE4),
            ("SetIndicator 9001/1", CORE4),
            ("QueryCpuStoppedState", 4),
            ("StartCpu", 4),
            ("QueryCpuStoppedState", 5),
            ("StartCpu", 5),
            ("QueryCpuStoppedState", 4),
            ("QueryCpuStoppedState", 5),
        ]
        starts = [r for m, r in recorder.calls if m == "StartCpu"]
        assert [(r.start_address, r.r3) for r in starts] == [(0x60, 4), (0x60, 5)]  # r3: the vCPU id

        recorder.calls.clear()
        unplug(client, platform, "core4")
        [removed] = guest.handle_pending()
        assert removed.result == "done"
        # dlpar_cpu_remove: each online thread stops itself, another polls until it reads stopped;
        # only then dlpar_release_drc isolates and sets the allocation unusable.
        assert thread_calls(recorder) == [
            ("QueryCpuStoppedState", 4),
            ("StopSelf", 4),
            ("QueryCpuStoppedState", 4),
            ("QueryCpuStoppedState", 5),
            ("StopSelf", 5),
            ("QueryCpuStoppedState", 5),
            ("SetIndicator 9001/0", CORE4),
            ("SetIndicator 9003/0", CORE4),
        ]
        assert connector(client, platform, CORE4).state == connector_pb2.DRC_STATE_LOGICAL_UNUSABLE
        assert states(guest.rtas, [4, 5]) == [(-3, 0)] * 2
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_reference_guest_removes_a_boot_core_stopping_only_the_threads_that_run(client: Client) -> None:
    # A boot core (core 2 of smp 4, threads 2) has no configured node in the guest: its threads
    # follow from the geometry. Only thread 2 runs (started here); thread 3 was never started.
    geometry = platform_pb2.Geometry()
    geometry.CopyFrom(SMT2)
    geometry.cpus = 4
    platform = new_platform(client, geometry)
    try:
        guest = ReferenceGuest(client, platform)
        assert guest.rtas.start_cpu(2, 0x60, 2) == 0
        unplug(client, platform, "core2")
        [removed] = guest.handle_pending()
        assert removed.result == "done"
        assert states(guest.rtas, [2, 3]) == [(-3, 0)] * 2
        assert connector(client, platform, CORE2).state == connector_pb2.DRC_STATE_LOGICAL_UNUSABLE
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


# --- the model, in process ------------------------------------------------------------------------


def test_model_thread_states() -> None:
    platform = Platform("p", Geometry.build(1 << 30, 4 << 30, slots=4, cpus=4, max_cpus=8, threads=4))
    assert [platform.query_cpu_stopped_state(n) for n in range(5)] == [(0, 2), (0, 0), (0, 0), (0, 0), (-3, 0)]
    assert platform.start_cpu(3, 0x60, 3) == 0
    assert platform.start_cpu(3, 0x60, 3) == -1
    assert platform.stop_self(3) == 0
    assert platform.stop_self(3) == 0
    assert platform.stop_self(4) == -3
    assert platform.start_cpu(8, 0, 0) == -3  # beyond max_cpus
    assert [platform.query_cpu_stopped_state(n)[1] for n in range(4)] == [2, 0, 0, 0]
    assert default_geometry().threads == 1
