"""RtasService.ExecuteBatch and Session through a real server: a batch gives exactly what the same
calls give one by one, is checked whole before anything runs, and runs with no other call in between."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import new_platform
from helpers import connector, plug, snapshot
from papr.v1 import connector_pb2, device_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu.model import Limits, Platforms
from papr_emu_client import Client, Guest, connect, new_work_area

Code = grpc.StatusCode

# QEMU 7.2's tokens, as in /rtas.
CHECK_EXCEPTION, EVENT_SCAN, SET_INDICATOR = 0x200E, 0x200F, 0x201A
SET_POWER_LEVEL, GET_POWER_LEVEL, GET_SENSOR_STATE, CONFIGURE_CONNECTOR = 0x201B, 0x201C, 0x201D, 0x201E
WORK_AREA_ADDRESS, LOG_ADDRESS = 0x1010000, 0x1020000
ISOLATION, ALLOCATION, SENSE = 9001, 9003, 9003
ALL_EVENTS = 0xFFFFFFFF

LMB0, LMB1, LMB_FREE = 0x80000004, 0x80000005, 0x80000006  # the DIMM's two LMBs, and one with no device
CPU1, NO_SUCH_DRC = 0x10000001, 0x7777
PCI3, PCI_FREE = 0x40000018, 0x40000020  # PHB 0's slot 3 (an e1000 plugged), slot 4 (empty)


# Building calls. ------------------------------------------------------------------------------


def set_indicator(indicator: int, index: int, state: int) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(
        set_indicator=rtas_pb2.SetIndicatorRequest(indicator_type=indicator, indicator_index=index, new_state=state)
    )


def sense(index: int, sensor: int = SENSE) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(get_sensor_state=rtas_pb2.GetSensorStateRequest(sensor_type=sensor, sensor_index=index))


def configure(area: bytes) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(configure_connector=rtas_pb2.ConfigureConnectorRequest(work_area=area))


def walk(area: bytes, max_calls: int = 0) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(
        configure_connector_walk=rtas_pb2.ConfigureConnectorWalk(work_area=area, max_calls=max_calls)
    )


def check_exception(mask: int = ALL_EVENTS, length: int = 2048) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(
        check_exception=rtas_pb2.CheckExceptionRequest(vector_offset=0x500, event_mask=mask, buffer_length=length)
    )


def event_scan(mask: int = ALL_EVENTS) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(event_scan=rtas_pb2.EventScanRequest(event_mask=mask, buffer_length=2048))


def power(domain: int, level: int | None = None) -> rtas_pb2.RtasCall:
    if level is None:
        return rtas_pb2.RtasCall(get_power_level=rtas_pb2.GetPowerLevelRequest(power_domain=domain))
    return rtas_pb2.RtasCall(set_power_level=rtas_pb2.SetPowerLevelRequest(power_domain=domain, level=level))


def raw(token: int, nret: int, *args: int, buffers: dict[int, bytes] | None = None) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(
        raw=rtas_pb2.CallRequest(
            token=token,
            nargs=len(args),
            nret=nret,
            args=list(args),
            buffers=[rtas_pb2.GuestBuffer(address=a, data=d) for a, d in (buffers or {}).items()],
        )
    )


def raw_configure(index: int) -> rtas_pb2.RtasCall:
    return raw(CONFIGURE_CONNECTOR, 1, WORK_AREA_ADDRESS, 0, buffers={WORK_AREA_ADDRESS: new_work_area(index)})


def raw_check_exception(length: int = 2048) -> rtas_pb2.RtasCall:
    return raw(CHECK_EXCEPTION, 1, 0x500, 0, ALL_EVENTS, 0, LOG_ADDRESS, length, buffers={LOG_ADDRESS: bytes(length)})


# Running them. --------------------------------------------------------------------------------


def batch(
    client: Client, platform: str, calls: list[rtas_pb2.RtasCall], stop: bool = False
) -> list[rtas_pb2.RtasResult]:
    request = rtas_pb2.ExecuteBatchRequest(platform=platform, calls=calls, stop_at_nonzero_status=stop)
    return list(client.rtas.ExecuteBatch(request, timeout=30).results)


_UNARY = {
    "set_indicator": "SetIndicator",
    "get_sensor_state": "GetSensorState",
    "configure_connector": "ConfigureConnector",
    "set_power_level": "SetPowerLevel",
    "get_power_level": "GetPowerLevel",
    "check_exception": "CheckException",
    "event_scan": "EventScan",
    "raw": "Call",
}


def unary(client: Client, platform: str, call: rtas_pb2.RtasCall) -> rtas_pb2.RtasResult:
    """The call made as its own unary RPC (a walk as a guest's configure-connector loop), as a batch result."""
    kind = call.WhichOneof("call")
    assert kind is not None
    if kind == "configure_connector_walk":
        spec = call.configure_connector_walk
        area, steps = spec.work_area, []
        for _ in range(spec.max_calls or 64):
            reply = client.rtas.ConfigureConnector(
                rtas_pb2.ConfigureConnectorRequest(platform=platform, work_area=area, memory_extent=spec.memory_extent)
            )
            steps.append(reply)
            area = reply.work_area
            if reply.status not in (1, 2, 3, 4):
                break
        return rtas_pb2.RtasResult(configure_connector_walk=rtas_pb2.ConfigureConnectorWalkResult(calls=steps))
    request = type(getattr(call, kind))()
    request.CopyFrom(getattr(call, kind))
    request.platform = platform
    return rtas_pb2.RtasResult(**{kind: getattr(client.rtas, _UNARY[kind])(request)})


def status_of(result: rtas_pb2.RtasResult) -> int:
    kind = result.WhichOneof("result")
    assert kind is not None
    response = getattr(result, kind)
    if kind == "raw":
        return int(response.rets[0]) if response.rets else 0
    if kind == "configure_connector_walk":
        return int(response.calls[-1].status)
    return int(response.status)


def unary_all(client: Client, platform: str, calls: list[rtas_pb2.RtasCall], stop: bool = False) -> list[Any]:
    results = []
    for call in calls:
        results.append(unary(client, platform, call))
        if stop and status_of(results[-1]):
            break
    return results


def _timeless(log: bytes) -> bytes:
    """An event log without its creation date and time (bytes 0x20..0x27)."""
    return log[:0x20] + log[0x28:] if len(log) >= 0x28 else log


def comparable(result: rtas_pb2.RtasResult) -> bytes:
    """A result, with the creation time of any event log it carries cleared (two platforms log at other instants)."""
    copy = rtas_pb2.RtasResult()
    copy.CopyFrom(result)
    if copy.HasField("check_exception"):
        copy.check_exception.buffer = _timeless(copy.check_exception.buffer)
    for buffer in copy.raw.buffers:
        if buffer.address == LOG_ADDRESS:
            buffer.data = _timeless(buffer.data)
    return copy.SerializeToString(deterministic=True)


def state(client: Client, platform: str) -> tuple[object, ...]:
    """The connectors, devices and the number of unread event logs of a platform."""
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    return (*snapshot(client, platform), info.pending_rtas_events)


def rpc_error(call: Callable[[], object], code: grpc.StatusCode, *words: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, error.details()
    for word in words:
        assert word in (error.details() or ""), (word, error.details())
    return error


def field_violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


# Platforms. -----------------------------------------------------------------------------------

DIMM = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20))
CORE1 = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
E1000 = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_E1000))


def delete(client: Client, platform: str) -> None:
    with contextlib.suppress(grpc.RpcError):
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


@contextlib.contextmanager
def plugged_platforms(client: Client, count: int = 2, acquire: bool = False) -> Iterator[list[str]]:
    """``count`` identical fresh platforms, each with a 512 MiB DIMM (LMB0, LMB1), CPU core 1 and an e1000
    in PCI slot 3 plugged (three hotplug logs queued); with ``acquire``, the guest acquired LMB0 (ready for
    configure-connector)."""
    names = [new_platform(client) for _ in range(count)]
    try:
        for name in names:
            assert list(plug(client, name, "dimm0", DIMM).drc_indexes) == [LMB0, LMB1]
            plug(client, name, "core1", CORE1)
            assert list(plug(client, name, "nic3", E1000).drc_indexes) == [PCI3]
            if acquire:
                Guest(client.rtas, name).acquire_drc(LMB0)
        yield names
    finally:
        for name in names:
            delete(client, name)


@pytest.fixture
def twins(client: Client) -> Iterator[list[str]]:
    with plugged_platforms(client) as names:
        yield names


@pytest.fixture
def acquired_twins(client: Client) -> Iterator[list[str]]:
    with plugged_platforms(client, acquire=True) as names:
        yield names


# A batch is its calls made one by one. --------------------------------------------------------

GUEST_CYCLE = [
    sense(LMB0),
    set_indicator(ALLOCATION, LMB0, 1),
    set_indicator(ISOLATION, LMB0, 1),
    *[configure(new_work_area(LMB0)) for _ in range(3)],
    walk(new_work_area(LMB0)),
    configure(new_work_area(LMB0)),
    raw(GET_SENSOR_STATE, 2, SENSE, LMB1),
    raw(SET_INDICATOR, 1, ALLOCATION, LMB1, 1),
    raw(SET_INDICATOR, 1, ISOLATION, LMB1, 1),
    raw_configure(LMB1),
    raw_configure(LMB1),
    sense(CPU1),
    set_indicator(ALLOCATION, CPU1, 1),
    set_indicator(ISOLATION, CPU1, 1),
    walk(new_work_area(CPU1), max_calls=4),
    sense(PCI3),
    set_indicator(9002, PCI3, 1),
    set_indicator(ISOLATION, PCI3, 1),
    walk(new_work_area(PCI3)),
    set_indicator(ISOLATION, PCI_FREE, 1),
    set_indicator(ISOLATION, LMB_FREE, 1),  # -3: no device
    set_indicator(ISOLATION, LMB1, 0),  # -3: isolating an LMB part-way through configure-connector
    set_indicator(ISOLATION, LMB0, 0),  # -1: isolating a configured LMB that is not being unplugged
    sense(NO_SUCH_DRC),
    configure(new_work_area(NO_SUCH_DRC)),
    walk(new_work_area(LMB_FREE)),
    power(-1),
    power(-1, 50),
    power(7),
    power(7, 100),
    check_exception(),
    raw_check_exception(),
    check_exception(mask=0x10000000),  # not in the class of the logs (EPOW before CAS): 1
    check_exception(),
    check_exception(),  # none left: 1
    check_exception(length=16),
    event_scan(),
    raw(EVENT_SCAN, 1, ALL_EVENTS, 0, 0, 2048),
    raw(0x2999, 1, 1, 2),  # unknown token: -3 in-band
    raw(GET_SENSOR_STATE, 1, SENSE, LMB0),  # an nret the call does not take: -3 in-band
]


def test_a_batch_gives_what_the_calls_give_one_by_one(client: Client, twins: list[str]) -> None:
    batched, one_by_one = twins
    results = batch(client, batched, GUEST_CYCLE)
    expected = unary_all(client, one_by_one, GUEST_CYCLE)
    assert len(results) == len(GUEST_CYCLE)
    assert [r.WhichOneof("result") for r in results] == [c.WhichOneof("call") for c in GUEST_CYCLE]
    assert [comparable(r) for r in results] == [comparable(r) for r in expected]
    assert state(client, batched) == state(client, one_by_one)
    # The batch really did something: both LMBs and the core were acquired, both logs read.
    assert [status_of(r) for r in results] == [
        *(0, 0, 0, 2, 3, 3, 0, 2),  # LMB0 acquired and walked; the next call replays the fragment
        *(0, 0, 0, 2, 3),  # LMB1 acquired, part-way through its fragment
        *(0, 0, 0, 3),  # core 1 acquired, its walk stopped by max_calls
        *(0, 0, 0, 0, -3),  # the e1000 acquired and walked; an empty slot cannot be unisolated
        *(-3, -3, -1, -3, -3, -9003),
        *(0, 0, -3, -3),  # power levels
        *(0, 0, 1, 0, 1, 1),  # three logs read (none of the hotplug class before CAS), then none
        *(1, 1),  # event-scan always 1
        *(-3, -3),
    ]
    assert [results[n].get_sensor_state.state for n in (0, 13, 17)] == [2, 2, 1]
    # LMB0's walk resumed after the three single calls and finished the 5-item fragment.
    walks = [len(results[n].configure_connector_walk.calls) for n in (6, 16, 20)]
    assert walks[:2] == [2, 4] and walks[2] > 4
    logs = results[32].check_exception, results[33].raw, results[35].check_exception
    assert logs[0].status == 0 and len(logs[0].buffer) == 116
    assert logs[1].rets == [0] and logs[1].buffers[0].address == LOG_ADDRESS and logs[1].buffers[0].data[:2] != b"\0\0"
    assert logs[2].status == 0 and len(logs[2].buffer) == 116
    assert results[36].check_exception.status == 1 and results[36].check_exception.buffer == b""
    assert connector(client, batched, LMB0).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED
    assert connector(client, batched, LMB1).state == connector_pb2.DRC_STATE_LOGICAL_UNISOLATE
    assert connector(client, batched, PCI3).state == connector_pb2.DRC_STATE_PHYSICAL_CONFIGURED
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=batched)).platform
    assert info.pending_rtas_events == 0


# A sequence of calls over a few connectors; a walk's max_calls small enough to stop midway.
_INDEXES = st.sampled_from([LMB0, LMB1, LMB_FREE, CPU1, PCI3, PCI_FREE, NO_SUCH_DRC])
_CALLS = st.one_of(
    st.builds(set_indicator, st.sampled_from([ISOLATION, 9002, ALLOCATION]), _INDEXES, st.integers(0, 3)),
    st.builds(sense, _INDEXES, st.sampled_from([SENSE, ISOLATION])),
    st.builds(lambda index: configure(new_work_area(index)), _INDEXES),
    st.builds(lambda index, n: walk(new_work_area(index), n), _INDEXES, st.integers(0, 4)),
    st.builds(lambda index: raw_configure(index), _INDEXES),
    st.builds(lambda index, value: raw(SET_INDICATOR, 1, ALLOCATION, index, value), _INDEXES, st.integers(0, 1)),
    st.builds(check_exception, st.sampled_from([ALL_EVENTS, 0x10000000, 0x40000000]), st.sampled_from([8, 2048])),
    st.builds(raw_check_exception, st.sampled_from([64, 2048])),
    st.builds(event_scan),
    st.builds(power, st.sampled_from([-1, 3]), st.sampled_from([None, 0, 100])),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(_CALLS, min_size=1, max_size=24), stop=st.booleans())
def test_any_batch_gives_what_its_calls_give_one_by_one(
    client: Client, calls: list[rtas_pb2.RtasCall], stop: bool
) -> None:
    with plugged_platforms(client) as (batched, one_by_one):
        results = batch(client, batched, calls, stop)
        expected = unary_all(client, one_by_one, calls, stop)
        assert [comparable(r) for r in results] == [comparable(r) for r in expected]
        assert state(client, batched) == state(client, one_by_one)


# Configure-connector walks. -------------------------------------------------------------------


def test_a_walk_is_the_guests_configure_connector_loop(client: Client, acquired_twins: list[str]) -> None:
    walked, looped = acquired_twins
    [result] = batch(client, walked, [walk(new_work_area(LMB0))])
    steps = [(c.status, c.work_area) for c in result.configure_connector_walk.calls]
    expected = unary(client, looped, walk(new_work_area(LMB0))).configure_connector_walk.calls
    assert steps == [(c.status, c.work_area) for c in expected]
    assert 5 <= len(steps) <= 7 and steps[0][0] == 2 and steps[-1][0] == 0
    assert {s for s, _ in steps[1:-1]} <= {1, 2, 3, 4}
    assert connector(client, walked, LMB0).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED
    assert connector(client, walked, LMB0) == connector(client, looped, LMB0)
    # After completion, the next walk replays the fragment from the start, as the loop does.
    [again] = batch(client, walked, [walk(new_work_area(LMB0))])
    assert [(c.status, c.work_area) for c in again.configure_connector_walk.calls] == steps


def test_max_calls_stops_a_walk_midway_and_a_later_walk_resumes(client: Client, acquired_twins: list[str]) -> None:
    walked, reference = acquired_twins
    full = unary(client, reference, walk(new_work_area(LMB0))).configure_connector_walk.calls
    full_steps = [(c.status, c.work_area) for c in full]
    assert len(full_steps) >= 4
    [first] = batch(client, walked, [walk(new_work_area(LMB0), max_calls=2)])
    first_steps = [(c.status, c.work_area) for c in first.configure_connector_walk.calls]
    assert len(first_steps) == 2 and first_steps[-1][0] in (2, 3, 4)
    assert first_steps == full_steps[:2]
    progress = connector(client, walked, LMB0)
    assert progress.configure_in_progress and progress.state == connector_pb2.DRC_STATE_LOGICAL_UNISOLATE
    # A later batch resumes from the work area the walk stopped with: one more step, then the rest.
    rest = batch(client, walked, [walk(first_steps[-1][1], max_calls=1), walk(first_steps[-1][1])])
    assert [r.WhichOneof("result") for r in rest] == ["configure_connector_walk"] * 2
    resumed = [(c.status, c.work_area) for r in rest for c in r.configure_connector_walk.calls]
    assert len(rest[0].configure_connector_walk.calls) == 1
    assert [s for s, _ in first_steps + resumed] == [s for s, _ in full_steps]
    assert (first_steps + resumed)[-1] == full_steps[-1]
    assert not connector(client, walked, LMB0).configure_in_progress
    assert connector(client, walked, LMB0).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED


def test_a_walk_on_a_connector_not_configurable_is_one_call(client: Client, twins: list[str]) -> None:
    platform = twins[0]
    results = batch(client, platform, [walk(new_work_area(LMB0)), walk(new_work_area(NO_SUCH_DRC))])
    assert [[c.status for c in r.configure_connector_walk.calls] for r in results] == [[-9003], [-3]]
    assert results[0].configure_connector_walk.calls[0].work_area == new_work_area(LMB0)


# stop_at_nonzero_status. ----------------------------------------------------------------------


def test_stop_at_nonzero_status_stops_after_the_first_nonzero_status(client: Client, twins: list[str]) -> None:
    stopped, not_stopped = twins
    calls = [
        sense(LMB0),  # 0
        set_indicator(ALLOCATION, LMB0, 1),  # 0
        set_indicator(ISOLATION, LMB_FREE, 1),  # -3
        set_indicator(ALLOCATION, LMB1, 1),  # 0, if it runs
        sense(LMB1),
    ]
    results = batch(client, stopped, calls, stop=True)
    assert [status_of(r) for r in results] == [0, 0, -3]
    assert connector(client, stopped, LMB0).state == connector_pb2.DRC_STATE_LOGICAL_AVAILABLE
    assert connector(client, stopped, LMB1).state == connector_pb2.DRC_STATE_LOGICAL_UNUSABLE  # did not run
    results = batch(client, not_stopped, calls)
    assert [status_of(r) for r in results] == [0, 0, -3, 0, 0]
    assert results[4].get_sensor_state.state == 1
    assert connector(client, not_stopped, LMB1).state == connector_pb2.DRC_STATE_LOGICAL_AVAILABLE


def test_stop_at_nonzero_status_counts_a_walks_last_status_and_positive_statuses(
    client: Client, acquired_twins: list[str]
) -> None:
    platform = acquired_twins[0]
    # A walk stopped by max_calls ends with 2..4: non-zero, so the batch stops there.
    results = batch(client, platform, [walk(new_work_area(LMB0), max_calls=1), sense(LMB1)], stop=True)
    assert len(results) == 1 and status_of(results[0]) == 2
    # A complete walk's status is 0: the batch goes on; check-exception with no log is 1: it stops.
    calls = [walk(new_work_area(LMB0)), check_exception(0x08000000), event_scan()]
    results = batch(client, platform, calls, stop=True)
    assert [status_of(r) for r in results] == [0, 1]
    assert [status_of(r) for r in batch(client, platform, [event_scan(), sense(LMB0)], stop=True)] == [1]
    assert [status_of(r) for r in batch(client, platform, [event_scan(), sense(LMB0)])] == [1, 0]


# A malformed call anywhere: nothing runs. -----------------------------------------------------

_MALFORMED: dict[str, tuple[rtas_pb2.RtasCall, str]] = {
    "short work area": (configure(bytes(100)), "configure_connector.work_area"),
    "long work area": (configure(bytes(4097)), "configure_connector.work_area"),
    "walk work area": (walk(bytes(4095)), "configure_connector_walk.work_area"),
    "walk max_calls": (walk(new_work_area(LMB0), 513), "configure_connector_walk.max_calls"),
    "raw nargs mismatch": (
        rtas_pb2.RtasCall(raw=rtas_pb2.CallRequest(token=GET_SENSOR_STATE, nargs=3, nret=2, args=[SENSE, LMB0])),
        "raw.args",
    ),
    "raw nret too big": (raw(GET_SENSOR_STATE, 256, SENSE, LMB0), "raw.nret"),
    "raw buffer missing": (raw(CONFIGURE_CONNECTOR, 1, WORK_AREA_ADDRESS, 0), "raw.buffers"),
    "raw work area of the wrong size": (
        raw(CONFIGURE_CONNECTOR, 1, WORK_AREA_ADDRESS, 0, buffers={WORK_AREA_ADDRESS: bytes(100)}),
        "raw.buffers[0x1010000].data",
    ),
    "raw buffer given twice": (
        rtas_pb2.RtasCall(
            raw=rtas_pb2.CallRequest(
                token=CONFIGURE_CONNECTOR,
                nargs=2,
                nret=1,
                args=[WORK_AREA_ADDRESS, 0],
                buffers=[rtas_pb2.GuestBuffer(address=WORK_AREA_ADDRESS, data=new_work_area(LMB0))] * 2,
            )
        ),
        "raw.buffers[1].address",
    ),
    "raw buffer unused": (raw(GET_SENSOR_STATE, 2, SENSE, LMB0, buffers={LOG_ADDRESS: b"x"}), "raw.buffers"),
    "other platform": (
        rtas_pb2.RtasCall(set_indicator=rtas_pb2.SetIndicatorRequest(platform="default", indicator_type=ALLOCATION)),
        "set_indicator.platform",
    ),
    "other platform in a raw call": (
        rtas_pb2.RtasCall(raw=rtas_pb2.CallRequest(platform="nope", token=EVENT_SCAN, nargs=0, nret=1)),
        "raw.platform",
    ),
    "empty call": (rtas_pb2.RtasCall(), ""),
}


@pytest.mark.parametrize("position", [0, 3, 5])
@pytest.mark.parametrize("case", list(_MALFORMED))
def test_a_malformed_call_anywhere_and_nothing_runs(client: Client, twins: list[str], case: str, position: int) -> None:
    platform = twins[0]
    bad, field = _MALFORMED[case]
    good = [
        set_indicator(ALLOCATION, LMB0, 1),
        set_indicator(ISOLATION, LMB0, 1),
        walk(new_work_area(LMB0)),
        check_exception(),  # would take a log
        raw_check_exception(),  # and the other
    ]
    calls = [*good[:position], bad, *good[position:]]
    before = state(client, platform)
    path = f"calls[{position}]" + (f".{field}" if field else "")
    for stop in (False, True):
        error = rpc_error(lambda: batch(client, platform, calls, stop), Code.INVALID_ARGUMENT, path)  # noqa: B023
        assert field_violations(error) == [path]
    assert state(client, platform) == before
    # The same calls, well-formed, do run.
    assert [status_of(r) for r in batch(client, platform, good)] == [0, 0, 0, 0, 0]


# The unary RPC of a call naming a platform is on that platform; a walk's max_calls has no unary counterpart.
_UNARY_MALFORMED = [
    case
    for case, (_, field) in _MALFORMED.items()
    if field.endswith((".work_area", "args", "nret", "buffers", ".data", ".address"))
]


@pytest.mark.parametrize("case", _UNARY_MALFORMED)
def test_a_malformed_call_is_refused_as_its_unary_rpc_refuses_it(client: Client, twins: list[str], case: str) -> None:
    platform = twins[0]
    bad, field = _MALFORMED[case]
    kind = bad.WhichOneof("call")
    unary_error = rpc_error(lambda: unary(client, platform, bad), Code.INVALID_ARGUMENT)
    batch_error = rpc_error(lambda: batch(client, platform, [sense(LMB0), bad]), Code.INVALID_ARGUMENT)
    [unary_field] = field_violations(unary_error)
    assert field_violations(batch_error) == [f"calls[1].{kind}.{unary_field}"] == [f"calls[1].{field}"]
    assert (batch_error.details() or "").endswith((unary_error.details() or "").split(": ", 2)[-1])


def test_an_embedded_request_may_name_the_batchs_own_platform(client: Client, twins: list[str]) -> None:
    platform = twins[0]
    named = rtas_pb2.RtasCall(
        get_sensor_state=rtas_pb2.GetSensorStateRequest(platform=platform, sensor_type=SENSE, sensor_index=LMB0)
    )
    assert [r.get_sensor_state.state for r in batch(client, platform, [named, sense(LMB0)])] == [2, 2]


def test_an_empty_batch_runs_nothing(client: Client, twins: list[str]) -> None:
    before = state(client, twins[0])
    assert batch(client, twins[0], []) == []
    assert state(client, twins[0]) == before


def test_unknown_platform_is_not_found(client: Client) -> None:
    error = rpc_error(lambda: batch(client, "no-such-platform", [sense(LMB0)]), Code.NOT_FOUND, "no-such-platform")
    assert field_violations(error) == ["platform"]
    rpc_error(lambda: batch(client, "", [sense(LMB0)]), Code.NOT_FOUND)


def test_the_message_size_limit_counts_a_walk_as_max_calls_work_areas(client: Client, twins: list[str]) -> None:
    platform = twins[0]
    before = state(client, platform)
    # Two walks of 512 calls could return 1024 work areas: over the 4 MiB default.
    calls = [set_indicator(ALLOCATION, LMB0, 1), walk(new_work_area(LMB0), 512), walk(new_work_area(LMB1), 512)]
    rpc_error(lambda: batch(client, platform, calls), Code.RESOURCE_EXHAUSTED, "message_bytes", "--max-message-bytes")
    assert state(client, platform) == before
    # One of them fits.
    assert [status_of(r) for r in batch(client, platform, calls[:2])] == [0, -9003]


# Servers of their own, with small limits. -----------------------------------------------------


@contextlib.contextmanager
def serve(limits: Limits) -> Iterator[Client]:
    server = PaprServer(Platforms(limits), ["127.0.0.1:0"])
    server.start()
    try:
        with connect(server.addresses[0]) as client:
            yield client
    finally:
        server.stop(grace=0)


def test_too_many_calls_is_resource_exhausted(client: Client) -> None:
    with serve(Limits(batch_calls=4)) as limited, plugged_platforms(limited, 1) as [platform]:
        before = state(limited, platform)
        calls = [set_indicator(ALLOCATION, LMB0, 1), check_exception(), sense(LMB0), sense(LMB1), sense(LMB1)]
        rpc_error(
            lambda: batch(limited, platform, calls),
            Code.RESOURCE_EXHAUSTED, "batch_calls", "limit batch_calls = 4", "--max-batch-calls",
        )  # fmt: skip
        assert state(limited, platform) == before
        assert [status_of(r) for r in batch(limited, platform, calls[:4])] == [0, 0, 0, 0]
        # The same limit holds for each request of a session, which ends with it.
        responses = limited.rtas.Session(
            iter([rtas_pb2.SessionRequest(platform=platform, calls=calls[2:4]), rtas_pb2.SessionRequest(calls=calls)]),
            timeout=10,
        )
        assert [status_of(r) for r in next(responses).results] == [0, 0]
        rpc_error(lambda: next(responses), Code.RESOURCE_EXHAUSTED, "batch_calls")


def test_a_walk_counts_as_one_call(client: Client) -> None:
    with serve(Limits(batch_calls=2)) as limited, plugged_platforms(limited, 1, acquire=True) as [platform]:
        results = batch(limited, platform, [walk(new_work_area(LMB0)), walk(new_work_area(LMB0))])
        assert [status_of(r) for r in results] == [0, 0]
        assert len(results[0].configure_connector_walk.calls) > 2


def test_the_message_size_limit_is_the_servers() -> None:
    # 64 KiB: 15 results of a configure-connector call (4096-byte work area and a few bytes) fit, 16 may not.
    with serve(Limits(message_bytes=64 << 10)) as limited, plugged_platforms(limited, 1) as [platform]:
        fits = [configure(new_work_area(NO_SUCH_DRC)) for _ in range(15)]
        assert [status_of(r) for r in batch(limited, platform, fits)] == [-3] * 15
        assert len(batch(limited, platform, [walk(new_work_area(LMB0), 15)])) == 1
        before = state(limited, platform)
        for calls in (
            [set_indicator(ALLOCATION, LMB0, 1), *fits[:14], walk(new_work_area(LMB0), 2)],
            [set_indicator(ALLOCATION, LMB0, 1), walk(new_work_area(LMB0), 16)],
            [set_indicator(ALLOCATION, LMB0, 1), check_exception(length=70 << 10)],
        ):
            rpc_error(lambda: batch(limited, platform, calls), Code.RESOURCE_EXHAUSTED, "message_bytes")  # noqa: B023
            assert state(limited, platform) == before
        responses = limited.rtas.Session(
            iter([session_request(fits, platform), session_request([*fits[:14], walk(new_work_area(LMB0), 2)])])
        )
        assert len(next(responses).results) == 15
        rpc_error(lambda: next(responses), Code.RESOURCE_EXHAUSTED, "message_bytes", "--max-message-bytes")


# Sessions. ------------------------------------------------------------------------------------


def session_request(calls: list[rtas_pb2.RtasCall], platform: str = "", stop: bool = False) -> rtas_pb2.SessionRequest:
    return rtas_pb2.SessionRequest(platform=platform, calls=calls, stop_at_nonzero_status=stop)


class OpenSession:
    """A Session whose requests come from a queue, so the test decides when each is sent."""

    def __init__(self, client: Client, timeout: float = 30) -> None:
        self._requests: queue.Queue[rtas_pb2.SessionRequest | None] = queue.Queue()
        self.responses = client.rtas.Session(iter(self._requests.get, None), timeout=timeout)

    def send(self, request: rtas_pb2.SessionRequest) -> rtas_pb2.SessionResponse:
        self._requests.put(request)
        return next(self.responses)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._requests.put(None)  # the request stream ends: so does the session
        with contextlib.suppress(StopIteration, grpc.RpcError):
            next(self.responses)


def test_a_session_answers_each_request_in_order(client: Client, acquired_twins: list[str]) -> None:
    platform, reference = acquired_twins
    requests = [
        session_request([sense(LMB0), sense(LMB1)], platform),
        session_request([set_indicator(ALLOCATION, LMB1, 1), set_indicator(ISOLATION, LMB1, 1)]),
        session_request([]),  # an empty one has an empty answer
        session_request([walk(new_work_area(LMB0)), check_exception()], platform),  # may repeat the platform
        session_request([set_indicator(ISOLATION, LMB_FREE, 1), walk(new_work_area(LMB1))], stop=True),
        session_request([check_exception(), check_exception(), raw_configure(LMB1)]),
    ]
    session = OpenSession(client)
    try:
        responses = [session.send(request) for request in requests]  # one response each, as each is sent
    finally:
        session.close()
    assert [len(r.results) for r in responses] == [2, 2, 0, 2, 1, 3]
    for request, response in zip(requests, responses, strict=True):
        expected = unary_all(client, reference, list(request.calls), request.stop_at_nonzero_status)
        assert [comparable(r) for r in response.results] == [comparable(r) for r in expected]
    assert state(client, platform) == state(client, reference)
    assert [r.get_sensor_state.state for r in responses[0].results] == [1, 2]


def test_a_session_of_a_plain_iterator(client: Client, twins: list[str]) -> None:
    platform = twins[0]
    requests = [session_request([sense(LMB0)], platform), session_request([set_indicator(ALLOCATION, LMB0, 1)])]
    requests += [session_request([sense(LMB0)]) for _ in range(5)]
    responses = list(client.rtas.Session(iter(requests), timeout=30))
    assert [[status_of(r) for r in response.results] for response in responses] == [[0]] * 7
    assert [r.results[0].get_sensor_state.state for r in responses if r.results[0].HasField("get_sensor_state")] == [
        2,
        *[1] * 5,
    ]


def test_a_session_naming_another_platform_later_ends_after_the_earlier_requests_ran(
    client: Client, twins: list[str]
) -> None:
    platform, other = twins
    other_before = state(client, other)
    requests = [
        session_request([set_indicator(ALLOCATION, LMB0, 1)], platform),
        session_request([set_indicator(ALLOCATION, LMB1, 1)]),
        session_request([set_indicator(ISOLATION, LMB0, 1), check_exception()], other),
        session_request([set_indicator(ISOLATION, LMB1, 1)]),
    ]
    responses = client.rtas.Session(iter(requests), timeout=30)
    assert [status_of(r) for r in next(responses).results] == [0]
    assert [status_of(r) for r in next(responses).results] == [0]
    error = rpc_error(lambda: next(responses), Code.INVALID_ARGUMENT, "platform", other)
    assert field_violations(error) == ["platform"]
    # The first two ran; the third did not, nor did anything after it; the other platform is untouched.
    assert connector(client, platform, LMB0).state == connector_pb2.DRC_STATE_LOGICAL_AVAILABLE
    assert connector(client, platform, LMB1).state == connector_pb2.DRC_STATE_LOGICAL_AVAILABLE
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    assert info.pending_rtas_events == 3
    assert state(client, other) == other_before


def test_a_malformed_request_ends_a_session_before_its_calls_run(client: Client, twins: list[str]) -> None:
    platform = twins[0]
    requests = [
        session_request([set_indicator(ALLOCATION, LMB0, 1)], platform),
        session_request([set_indicator(ALLOCATION, LMB1, 1), configure(bytes(12))]),
        session_request([set_indicator(ISOLATION, LMB0, 1)]),
    ]
    responses = client.rtas.Session(iter(requests), timeout=30)
    next(responses)
    error = rpc_error(lambda: next(responses), Code.INVALID_ARGUMENT, "calls[1].configure_connector.work_area")
    assert field_violations(error) == ["calls[1].configure_connector.work_area"]
    assert connector(client, platform, LMB0).state == connector_pb2.DRC_STATE_LOGICAL_AVAILABLE
    assert connector(client, platform, LMB1).state == connector_pb2.DRC_STATE_LOGICAL_UNUSABLE


def test_a_session_first_request_must_name_the_platform(client: Client, twins: list[str]) -> None:
    platform = twins[0]
    before = state(client, platform)
    responses = client.rtas.Session(iter([session_request([set_indicator(ALLOCATION, LMB0, 1)])]), timeout=10)
    error = rpc_error(lambda: next(responses), Code.INVALID_ARGUMENT, "platform")
    assert field_violations(error) == ["platform"]
    assert state(client, platform) == before


def test_a_session_with_no_request_ends_with_no_response(client: Client) -> None:
    assert list(client.rtas.Session(iter([]), timeout=10)) == []


def test_a_session_on_an_unknown_platform_is_not_found(client: Client) -> None:
    responses = client.rtas.Session(iter([session_request([sense(LMB0)], "no-such-platform")]), timeout=10)
    rpc_error(lambda: next(responses), Code.NOT_FOUND, "no-such-platform")


def test_deleting_the_platform_ends_a_session_with_not_found(client: Client) -> None:
    platform = new_platform(client)
    session = OpenSession(client)
    try:
        assert [status_of(r) for r in session.send(session_request([sense(LMB0)], platform)).results] == [0]
        delete(client, platform)
        rpc_error(lambda: session.send(session_request([sense(LMB0)])), Code.NOT_FOUND)
    finally:
        session.close()


def test_sessions_count_against_the_stream_limits() -> None:
    with serve(Limits(streams=3, streams_per_platform=2)) as limited:
        a, b = (new_platform(limited) for _ in range(2))
        held = [OpenSession(limited), OpenSession(limited)]
        try:
            for session in held:  # answered: the server holds their slots
                assert len(session.send(session_request([sense(LMB0)], a)).results) == 1
            refused = limited.rtas.Session(iter([session_request([sense(LMB0)], a)]), timeout=10)
            rpc_error(
                lambda: next(refused), Code.RESOURCE_EXHAUSTED, "limit streams_per_platform = 2",
                "--max-streams-per-platform",
            )  # fmt: skip
            # Another platform still has room, up to the server's limit.
            held.append(OpenSession(limited))
            assert len(held[2].send(session_request([sense(LMB0)], b)).results) == 1
            refused = limited.rtas.Session(iter([session_request([sense(LMB0)], b)]), timeout=10)
            rpc_error(lambda: next(refused), Code.RESOURCE_EXHAUSTED, "limit streams = 3", "--max-streams")
            # The held sessions still work, and unary calls go through meanwhile.
            assert len(held[0].send(session_request([sense(LMB1), sense(LMB1)])).results) == 2
            assert len(batch(limited, a, [sense(LMB0)])) == 1
            # A session that ends gives its slot back.
            held.pop(0).close()
            held.append(OpenSession(limited))
            assert len(held[-1].send(session_request([sense(LMB0)], a)).results) == 1
        finally:
            for session in held:
                session.close()


def test_a_cancelled_session_gives_its_slot_back() -> None:
    with serve(Limits(streams_per_platform=1)) as limited, plugged_platforms(limited, 1) as [platform]:
        held = OpenSession(limited)
        assert len(held.send(session_request([sense(LMB0)], platform)).results) == 1
        refused = limited.rtas.Session(iter([session_request([sense(LMB0)], platform)]), timeout=10)
        rpc_error(lambda: next(refused), Code.RESOURCE_EXHAUSTED, "streams_per_platform")
        held.responses.cancel()  # the client goes away with the request stream still open
        deadline = time.monotonic() + 10
        while True:
            try:
                again = limited.rtas.Session(iter([session_request([sense(LMB0)], platform)]), timeout=10)
                assert len(next(again).results) == 1
                break
            except grpc.RpcError as error:
                assert error.code() == Code.RESOURCE_EXHAUSTED and time.monotonic() < deadline, error
                time.sleep(0.1)
        held.close()


def test_deleting_the_platform_ends_an_idle_session(client: Client) -> None:
    platform = new_platform(client)
    session = OpenSession(client)
    ended: list[grpc.RpcError | None] = []

    def read_to_the_end() -> None:
        try:
            for _ in session.responses:
                pass
            ended.append(None)
        except grpc.RpcError as error:
            ended.append(error)

    reader = threading.Thread(target=read_to_the_end, daemon=True)
    try:
        assert len(session.send(session_request([sense(LMB0)], platform)).results) == 1
        reader.start()
        delete(client, platform)
        reader.join(3)  # the deletion closes the session's watch, whose waker ends the waiting read
        assert ended and ended[0] is not None and ended[0].code() == Code.NOT_FOUND, ended
    finally:
        session.close()
        if reader.is_alive():
            reader.join(10)


def test_a_session_does_not_follow_its_platforms_name_to_a_new_platform(client: Client) -> None:
    name = new_platform(client)
    geometry = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name)).platform.geometry
    session = OpenSession(client)
    try:
        assert [status_of(r) for r in session.send(session_request([sense(LMB0)], name)).results] == [0]
        delete(client, name)
        client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name, geometry=geometry))
        rpc_error(lambda: session.send(session_request([set_indicator(ALLOCATION, LMB0, 1)])), Code.NOT_FOUND)
    finally:
        session.close()
        delete(client, name)


# Atomicity. -----------------------------------------------------------------------------------


def test_batches_are_not_interleaved_with_other_clients_calls(
    server: PaprServer, client: Client, acquired_twins: list[str]
) -> None:
    platform = acquired_twins[0]
    # Each batch toggles LMB1 (usable, then unusable again) and steps LMB0's configure-connector cursor
    # through exactly one whole fragment: alone, it leaves the platform as it found it, so every run
    # of it gives the same results. Any call of another batch in between would show.
    fragment = len(unary(client, acquired_twins[1], walk(new_work_area(LMB0))).configure_connector_walk.calls)
    calls = [
        sense(LMB1),
        set_indicator(ALLOCATION, LMB1, 1),
        sense(LMB1),
        *[configure(new_work_area(LMB0)) for _ in range(fragment)],
        set_indicator(ALLOCATION, LMB1, 0),
        sense(LMB1),
    ]
    alone = [comparable(r) for r in batch(client, platform, calls)]
    assert [status_of(r) for r in batch(client, platform, calls)][:3] == [0, 0, 0]
    failures: list[object] = []

    def race(use_session: bool) -> None:
        try:
            with connect(server.addresses[0]) as own:
                if use_session:
                    requests = [session_request(calls, platform)] + [session_request(calls) for _ in range(29)]
                    runs = [list(r.results) for r in own.rtas.Session(iter(requests), timeout=60)]
                else:
                    runs = [batch(own, platform, calls) for _ in range(30)]
            for results in runs:
                if [comparable(r) for r in results] != alone:
                    failures.append([status_of(r) for r in results])
        except Exception as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=race, args=(n % 2 == 1,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert [comparable(r) for r in batch(client, platform, calls)] == alone
