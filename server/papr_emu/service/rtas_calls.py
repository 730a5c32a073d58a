"""RTAS calls as the protos carry them, turned into steps a platform runs, and back.

One planner per call kind serves both the unary RPC of that kind and an entry of a
batch (ExecuteBatch, Session), so the two cannot drift apart. Planning checks the
request (raising InvalidArgument, changing nothing); the step it returns runs the
call on a platform and gives ``(status, response message)``.

Example::

    planned = plan("set_indicator", request)   # InvalidArgument if malformed
    status, response = planned.step(platform)  # rtas_pb2.SetIndicatorResponse
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import Message

from papr.v1 import rtas_pb2

from ..model import InvalidArgument, Platform
from ..model import rtas as t
from ..model.limits import Limits, exhausted
from ..model.rtas_dispatch import (
    DEFAULT_WALK_CALLS,
    MAX_WALK_CALLS,
    Buffers,
    Capture,
    prepare,
    run_call,
    walk_configure_connector,
)
from ..model.work_area import WORK_AREA_SIZE

Step = Callable[[Platform], tuple[int, Any]]
_NO_BUFFERS: Final = Capture()  # for calls that point at no buffer (nothing is ever written to it)
#: What a result costs in a response besides its buffers (tags, lengths, status, a few cells).
_RESULT_OVERHEAD: Final = 32


@dataclass(frozen=True, slots=True)
class Planned:
    """A checked call: what runs it, and the most bytes its result can take in a response."""

    step: Step
    response_bytes: int = _RESULT_OVERHEAD


def _set_indicator(r: rtas_pb2.SetIndicatorRequest) -> Planned:
    args = (r.indicator_type, r.indicator_index, r.new_state)

    def step(p: Platform) -> tuple[int, rtas_pb2.SetIndicatorResponse]:
        (status,) = run_call(p, t.TOKEN_SET_INDICATOR, args, _NO_BUFFERS)
        return status, rtas_pb2.SetIndicatorResponse(status=status)

    return Planned(step)


def _get_sensor_state(r: rtas_pb2.GetSensorStateRequest) -> Planned:
    args = (r.sensor_type, r.sensor_index)

    def step(p: Platform) -> tuple[int, rtas_pb2.GetSensorStateResponse]:
        status, state = run_call(p, t.TOKEN_GET_SENSOR_STATE, args, _NO_BUFFERS)
        return status, rtas_pb2.GetSensorStateResponse(status=status, state=state)

    return Planned(step)


def _work_area(area: bytes, field: str = "work_area") -> bytes:
    if len(area) != WORK_AREA_SIZE:
        raise InvalidArgument(field, len(area), f"ibm,configure-connector's work area must be {WORK_AREA_SIZE} bytes")
    return area


def _configure_connector(r: rtas_pb2.ConfigureConnectorRequest) -> Planned:
    area = _work_area(r.work_area)
    args = (0, r.memory_extent)

    def step(p: Platform) -> tuple[int, rtas_pb2.ConfigureConnectorResponse]:
        memory = Capture({0: area})
        (status,) = run_call(p, t.TOKEN_IBM_CONFIGURE_CONNECTOR, args, memory)
        return status, rtas_pb2.ConfigureConnectorResponse(status=status, work_area=memory.written[0])

    return Planned(step, WORK_AREA_SIZE + _RESULT_OVERHEAD)


def _set_power_level(r: rtas_pb2.SetPowerLevelRequest) -> Planned:
    args = (r.power_domain & 0xFFFFFFFF, r.level)

    def step(p: Platform) -> tuple[int, rtas_pb2.SetPowerLevelResponse]:
        status, level = run_call(p, t.TOKEN_SET_POWER_LEVEL, args, _NO_BUFFERS)
        return status, rtas_pb2.SetPowerLevelResponse(status=status, level=level)

    return Planned(step)


def _get_power_level(r: rtas_pb2.GetPowerLevelRequest) -> Planned:
    args = (r.power_domain & 0xFFFFFFFF,)

    def step(p: Platform) -> tuple[int, rtas_pb2.GetPowerLevelResponse]:
        status, level = run_call(p, t.TOKEN_GET_POWER_LEVEL, args, _NO_BUFFERS)
        return status, rtas_pb2.GetPowerLevelResponse(status=status, level=level)

    return Planned(step)


def _check_exception(r: rtas_pb2.CheckExceptionRequest) -> Planned:
    args = (r.vector_offset, r.additional_info, r.event_mask, r.critical, 0, r.buffer_length)

    def step(p: Platform) -> tuple[int, rtas_pb2.CheckExceptionResponse]:
        memory = Capture()
        (status,) = run_call(p, t.TOKEN_CHECK_EXCEPTION, args, memory)
        return status, rtas_pb2.CheckExceptionResponse(status=status, buffer=memory.written.get(0, b""))

    return Planned(step, r.buffer_length + _RESULT_OVERHEAD)


def _event_scan(r: rtas_pb2.EventScanRequest) -> Planned:
    args = (r.event_mask, r.critical, 0, r.buffer_length)

    def step(p: Platform) -> tuple[int, rtas_pb2.EventScanResponse]:
        (status,) = run_call(p, t.TOKEN_EVENT_SCAN, args, _NO_BUFFERS)
        return status, rtas_pb2.EventScanResponse(status=status)

    return Planned(step)


def _raw(r: rtas_pb2.CallRequest) -> Planned:
    regions: dict[int, bytearray] = {}
    for n, buffer in enumerate(r.buffers):
        if buffer.address in regions:
            raise InvalidArgument(f"buffers[{n}].address", buffer.address, "given twice")
        regions[buffer.address] = bytearray(buffer.data)
    memory = Buffers(regions)
    prepared = prepare(r.token, r.nargs, r.nret, list(r.args), memory)

    def step(p: Platform) -> tuple[int, rtas_pb2.CallResponse]:
        rets = prepared.run(p)
        buffers = [rtas_pb2.GuestBuffer(address=a, data=bytes(d)) for a, d in memory.regions.items()]
        return (rets[0] if rets else 0), rtas_pb2.CallResponse(rets=rets, buffers=buffers)

    return Planned(step, sum(len(d) + 16 for d in regions.values()) + 5 * r.nret + _RESULT_OVERHEAD)


def _configure_connector_walk(r: rtas_pb2.ConfigureConnectorWalk) -> Planned:
    area = _work_area(r.work_area)
    if r.max_calls > MAX_WALK_CALLS:
        raise InvalidArgument("max_calls", r.max_calls, f"a walk makes at most {MAX_WALK_CALLS} calls")
    max_calls = r.max_calls or DEFAULT_WALK_CALLS
    # r.memory_extent is args[1] of each call: LoPAR's memory extent, accepted and not used (see
    # ConfigureConnectorRequest), so the walk goes straight to the platform.

    def step(p: Platform) -> tuple[int, rtas_pb2.ConfigureConnectorWalkResult]:
        calls = walk_configure_connector(p, area, max_calls)
        result = rtas_pb2.ConfigureConnectorWalkResult(
            calls=[rtas_pb2.ConfigureConnectorResponse(status=status, work_area=out) for status, out in calls]
        )
        return calls[-1][0], result

    return Planned(step, max_calls * (WORK_AREA_SIZE + _RESULT_OVERHEAD))


#: The planner of each kind of call, by its field name in RtasCall (and RtasResult).
PLANNERS: Final[dict[str, Callable[[Any], Planned]]] = {
    "set_indicator": _set_indicator,
    "get_sensor_state": _get_sensor_state,
    "configure_connector": _configure_connector,
    "set_power_level": _set_power_level,
    "get_power_level": _get_power_level,
    "check_exception": _check_exception,
    "event_scan": _event_scan,
    "raw": _raw,
    "configure_connector_walk": _configure_connector_walk,
}


def plan(kind: str, request: Message) -> Planned:
    """Check one call of ``kind`` (a field name of RtasCall); InvalidArgument names the bad field."""
    return PLANNERS[kind](request)


def _renamed(error: InvalidArgument, prefix: str) -> InvalidArgument:
    return InvalidArgument(f"{prefix}.{error.field}" if error.field else prefix, error.value, error.reason)


def plan_batch(platform: str, calls: Sequence[rtas_pb2.RtasCall], limits: Limits) -> list[Step]:
    """Check every call of a batch for ``platform`` before any runs; the steps that wrap each result.

    Raises InvalidArgument naming ``calls[i]...``, or ResourceExhausted when the
    batch has more calls than the limit or its results could outgrow one message.
    """
    if len(calls) > limits.batch_calls:
        raise exhausted("batch_calls", limits.batch_calls, f"the batch has {len(calls)} calls")
    steps: list[Step] = []
    response_bytes = 0
    for n, call in enumerate(calls):
        kind = call.WhichOneof("call")
        if kind is None:
            raise InvalidArgument(f"calls[{n}]", "", "sets none of the calls of RtasCall")
        request = getattr(call, kind)
        named = getattr(request, "platform", "")
        if named and named != platform:
            raise InvalidArgument(f"calls[{n}].{kind}.platform", named, f"the batch is for platform {platform!r}")
        try:
            planned = PLANNERS[kind](request)
        except InvalidArgument as error:
            raise _renamed(error, f"calls[{n}].{kind}") from None
        response_bytes += planned.response_bytes
        steps.append(_wrapping(kind, planned.step))
    if response_bytes > limits.message_bytes:
        raise exhausted(
            "message_bytes", limits.message_bytes,
            f"the batch's results could take {response_bytes} bytes (each configure-connector call returns "
            f"its {WORK_AREA_SIZE}-byte work area; a walk counts max_calls of them): split it",
        )  # fmt: skip
    return steps


def _wrapping(kind: str, step: Step) -> Callable[[Platform], tuple[int, rtas_pb2.RtasResult]]:
    def wrapped(p: Platform) -> tuple[int, rtas_pb2.RtasResult]:
        status, response = step(p)
        return status, rtas_pb2.RtasResult(**{kind: response})

    return wrapped
