"""RTAS calls as the protos carry them, run on a platform, their results written into protos.

One runner per kind of call serves both the unary RPC of that kind and an entry of
a batch (ExecuteBatch, Session), so the two cannot drift apart. A call is first
checked (:func:`check`, raising InvalidArgument and changing nothing); its runner
then calls the platform and writes the RTAS return cells into the response
message it is given, in place (a batch of thousands of calls builds no
intermediate objects), and returns the status.

Example::

    plan = check("get_sensor_state", request)            # InvalidArgument if malformed
    response = rtas_pb2.GetSensorStateResponse()
    status = RUNNERS["get_sensor_state"](platform, request, response, plan)
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from typing import Any, Final, cast

from google.protobuf.message import Message

from papr.v1 import rtas_pb2

from ..model import InvalidArgument, Platform
from ..model.limits import Limits, exhausted
from ..model.rtas_dispatch import (
    DEFAULT_WALK_CALLS,
    MAX_WALK_CALLS,
    Buffers,
    PreparedCall,
    prepare,
    walk_configure_connector,
)
from ..model.work_area import WORK_AREA_SIZE

#: What a call needs besides its request once checked: a raw call's prepared form, a walk's call count.
Plan = PreparedCall | int | None
Runner = Callable[[Platform, Any, Any, Plan], int]
#: What a result costs in a response besides its buffers (tags, lengths, status, a few cells).
_RESULT_OVERHEAD: Final = 32


def _set_indicator(p: Platform, r: rtas_pb2.SetIndicatorRequest, out: rtas_pb2.SetIndicatorResponse, _: Plan) -> int:
    out.status = status = p.set_indicator(r.indicator_type, r.indicator_index, r.new_state)
    return status


def _get_sensor_state(
    p: Platform, r: rtas_pb2.GetSensorStateRequest, out: rtas_pb2.GetSensorStateResponse, _: Plan
) -> int:
    status, out.state = p.get_sensor_state(r.sensor_type, r.sensor_index)
    out.status = status
    return status


def _configure_connector(
    p: Platform, r: rtas_pb2.ConfigureConnectorRequest, out: rtas_pb2.ConfigureConnectorResponse, _: Plan
) -> int:
    # r.memory_extent is args[1]: LoPAR's memory extent, owed after status 5 (see the proto).
    status, out.work_area = p.configure_connector(r.work_area, r.memory_extent)
    out.status = status
    return status


def _set_power_level(
    p: Platform, r: rtas_pb2.SetPowerLevelRequest, out: rtas_pb2.SetPowerLevelResponse, _: Plan
) -> int:
    status, out.level = p.set_power_level(r.power_domain, r.level)
    out.status = status
    return status


def _get_power_level(
    p: Platform, r: rtas_pb2.GetPowerLevelRequest, out: rtas_pb2.GetPowerLevelResponse, _: Plan
) -> int:
    status, out.level = p.get_power_level(r.power_domain)
    out.status = status
    return status


def _check_exception(
    p: Platform, r: rtas_pb2.CheckExceptionRequest, out: rtas_pb2.CheckExceptionResponse, _: Plan
) -> int:
    # The other cells (vector offset, additional information, critical) are not used, as in QEMU.
    status, out.buffer = p.check_exception(r.event_mask, r.buffer_length)
    out.status = status
    return status


def _event_scan(p: Platform, r: rtas_pb2.EventScanRequest, out: rtas_pb2.EventScanResponse, _: Plan) -> int:
    out.status = status = p.event_scan(r.event_mask, r.buffer_length)
    return status


def _query_cpu_stopped_state(
    p: Platform, r: rtas_pb2.QueryCpuStoppedStateRequest, out: rtas_pb2.QueryCpuStoppedStateResponse, _: Plan
) -> int:
    status, out.state = p.query_cpu_stopped_state(r.cpu_id)
    out.status = status
    return status


def _start_cpu(p: Platform, r: rtas_pb2.StartCpuRequest, out: rtas_pb2.StartCpuResponse, _: Plan) -> int:
    out.status = status = p.start_cpu(r.cpu_id, r.start_address, r.r3)
    return status


def _stop_self(p: Platform, r: rtas_pb2.StopSelfRequest, out: rtas_pb2.StopSelfResponse, _: Plan) -> int:
    out.status = status = p.stop_self(r.cpu_id)
    return status


def _raw(p: Platform, r: rtas_pb2.CallRequest, out: rtas_pb2.CallResponse, plan: Plan) -> int:
    assert isinstance(plan, PreparedCall)
    rets = plan.run(p)
    out.rets.extend(rets)
    for address, data in plan.memory.regions.items():
        out.buffers.add(address=address, data=bytes(data))
    out.SetInParent()  # nret 0 and no buffers still answer with a (empty) raw result
    return rets[0] if rets else 0


def _configure_connector_walk(
    p: Platform, r: rtas_pb2.ConfigureConnectorWalk, out: rtas_pb2.ConfigureConnectorWalkResult, plan: Plan
) -> int:
    assert isinstance(plan, int)
    calls = walk_configure_connector(p, r.work_area, plan, r.memory_extent)
    for status, area in calls:
        out.calls.add(status=status, work_area=area)
    return calls[-1][0]


#: The response message of each kind of call when it is made as a unary RPC.
RESPONSES: Final[dict[str, type[Message]]] = {
    "set_indicator": rtas_pb2.SetIndicatorResponse,
    "get_sensor_state": rtas_pb2.GetSensorStateResponse,
    "configure_connector": rtas_pb2.ConfigureConnectorResponse,
    "set_power_level": rtas_pb2.SetPowerLevelResponse,
    "get_power_level": rtas_pb2.GetPowerLevelResponse,
    "check_exception": rtas_pb2.CheckExceptionResponse,
    "event_scan": rtas_pb2.EventScanResponse,
    "query_cpu_stopped_state": rtas_pb2.QueryCpuStoppedStateResponse,
    "start_cpu": rtas_pb2.StartCpuResponse,
    "stop_self": rtas_pb2.StopSelfResponse,
    "raw": rtas_pb2.CallResponse,
}

#: The runner of each kind of call, by its field name in RtasCall (and RtasResult).
RUNNERS: Final[dict[str, Runner]] = {
    "set_indicator": _set_indicator,
    "get_sensor_state": _get_sensor_state,
    "configure_connector": _configure_connector,
    "set_power_level": _set_power_level,
    "get_power_level": _get_power_level,
    "check_exception": _check_exception,
    "event_scan": _event_scan,
    "query_cpu_stopped_state": _query_cpu_stopped_state,
    "start_cpu": _start_cpu,
    "stop_self": _stop_self,
    "raw": _raw,
    "configure_connector_walk": _configure_connector_walk,
}


def _check_work_area(area: bytes) -> None:
    if len(area) != WORK_AREA_SIZE:
        raise InvalidArgument(
            "work_area", len(area), f"ibm,configure-connector's work area must be exactly {WORK_AREA_SIZE} bytes"
        )


def check(kind: str, request: Message) -> Plan:
    """Check one call of ``kind`` (a field name of RtasCall); InvalidArgument names the bad field."""
    if kind == "configure_connector":
        _check_work_area(request.work_area)  # type: ignore[attr-defined]
    elif kind == "raw":
        return _prepare_raw(request)  # type: ignore[arg-type]
    elif kind == "configure_connector_walk":
        _check_work_area(request.work_area)  # type: ignore[attr-defined]
        max_calls: int = request.max_calls  # type: ignore[attr-defined]
        if max_calls > MAX_WALK_CALLS:
            raise InvalidArgument("max_calls", max_calls, f"a walk makes at most {MAX_WALK_CALLS} calls")
        return max_calls or DEFAULT_WALK_CALLS
    return None


def _prepare_raw(r: rtas_pb2.CallRequest) -> PreparedCall:
    regions: dict[int, bytearray] = {}
    for n, buffer in enumerate(r.buffers):
        if buffer.address in regions:
            raise InvalidArgument(f"buffers[{n}].address", buffer.address, "given twice")
        regions[buffer.address] = bytearray(buffer.data)
    return prepare(r.token, r.nargs, r.nret, list(r.args), Buffers(regions), r.calling_cpu_id)


def _response_bytes(kind: str, request: Any, plan: Plan) -> int:
    """The most bytes the result of a checked call can take in a response."""
    if kind == "configure_connector":
        return WORK_AREA_SIZE + _RESULT_OVERHEAD
    if kind == "configure_connector_walk":
        assert isinstance(plan, int)
        return plan * (WORK_AREA_SIZE + _RESULT_OVERHEAD)
    if kind == "check_exception":
        return int(request.buffer_length) + _RESULT_OVERHEAD
    if kind == "raw":
        assert isinstance(plan, PreparedCall)
        return sum(len(d) + 16 for d in plan.memory.regions.values()) + 5 * plan.nret + _RESULT_OVERHEAD
    return _RESULT_OVERHEAD


#: Kinds whose results are small and fixed: checking them needs nothing but their platform field.
_SMALL: Final = frozenset(
    {
        "set_indicator", "get_sensor_state", "set_power_level", "get_power_level", "event_scan",
        "query_cpu_stopped_state", "start_cpu", "stop_self",
    }
)  # fmt: skip


def _other_platform(n: int, kind: str, named: str, platform: str) -> InvalidArgument:
    return InvalidArgument(f"calls[{n}].{kind}.platform", named, f"the batch is for platform {platform!r}")


class Batch:
    """The checked calls of one ExecuteBatch or Session request for ``platform``.

    Raises InvalidArgument naming ``calls[i]...``, or ResourceExhausted when the
    batch has more calls than the limit or its results could outgrow one message.
    Nothing has run then.

    Example::

        batch = Batch("p", request.calls, limits)
        response = rtas_pb2.ExecuteBatchResponse()
        platform.run_exclusive(lambda: batch.run(platform, response.results, stop_at_nonzero=False))
    """

    def __init__(self, platform: str, calls: Sequence[rtas_pb2.RtasCall], limits: Limits) -> None:
        if len(calls) > limits.batch_calls:
            raise exhausted("batch_calls", limits.batch_calls, f"the batch has {len(calls)} calls")
        # The hot path of a big batch (thousands of typed calls): comprehensions over the calls, a
        # per-call loop only for the calls that need more checks.
        kinds: list[str | None] = [call.WhichOneof("call") for call in calls]
        self.requests: list[Any] = [
            getattr(call, kind) if kind else None for call, kind in zip(calls, kinds, strict=True)
        ]
        self.plans: list[Plan] = [None] * len(calls)
        response_bytes = _RESULT_OVERHEAD * len(calls)
        if not _SMALL.issuperset(kinds):
            for n, (kind, request) in enumerate(zip(kinds, self.requests, strict=True)):
                if kind in _SMALL:
                    continue
                if kind is None:
                    raise InvalidArgument(f"calls[{n}]", "", "sets none of the calls of RtasCall")
                named = getattr(request, "platform", "")
                if named and named != platform:
                    raise _other_platform(n, kind, named, platform)
                try:
                    self.plans[n] = plan = check(kind, request)
                except InvalidArgument as error:
                    field = f"calls[{n}].{kind}.{error.field}" if error.field else f"calls[{n}].{kind}"
                    raise InvalidArgument(field, error.value, error.reason) from None
                response_bytes += _response_bytes(kind, request, plan) - _RESULT_OVERHEAD
        self.kinds = cast(list[str], kinds)  # no None is left: the loop above refuses it
        for n, (kind, request) in enumerate(zip(self.kinds, self.requests, strict=True)):
            if kind in _SMALL and request.platform and request.platform != platform:
                raise _other_platform(n, kind, request.platform, platform)
        if response_bytes > limits.message_bytes:
            raise exhausted(
                "message_bytes", limits.message_bytes,
                f"the batch's results could take {response_bytes} bytes (each configure-connector call returns "
                f"its {WORK_AREA_SIZE}-byte work area; a walk counts max_calls of them): split it",
            )  # fmt: skip

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def has_walks(self) -> bool:
        return "configure_connector_walk" in self.kinds

    def run(self, platform: Platform, results: MutableSequence[rtas_pb2.RtasResult], stop_at_nonzero: bool) -> None:
        """Run the calls in order, adding one result each to ``results`` (the caller holds the platform)."""
        add = results.add  # type: ignore[attr-defined]
        for kind, request, plan in zip(self.kinds, self.requests, self.plans, strict=True):
            status = RUNNERS[kind](platform, request, getattr(add(), kind), plan)
            if stop_at_nonzero and status:
                break
