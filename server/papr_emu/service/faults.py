"""FaultService: a platform's fault rules, and the guest's conduct report (RPC and stream)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from papr.v1 import connector_pb2, fault_pb2, fault_pb2_grpc

from ..model import InvalidArgument, Platforms, SubscriptionClosed, SubscriptionOverflow
from ..model.conduct import Finding, FindingKind
from ..model.events import ConductFindingEvent, FaultFired
from ..model.faults import Call, Effect, FaultRule
from .errors import call_or_abort
from .running import Runner, inline
from .streams import AsyncReader, StreamSlots, abort_closed, stream_metadata

_CALL_TO_PB: Final = {
    Call.SET_INDICATOR: fault_pb2.FAULT_CALL_SET_INDICATOR,
    Call.GET_SENSOR_STATE: fault_pb2.FAULT_CALL_GET_SENSOR_STATE,
    Call.CONFIGURE_CONNECTOR: fault_pb2.FAULT_CALL_CONFIGURE_CONNECTOR,
    Call.SET_POWER_LEVEL: fault_pb2.FAULT_CALL_SET_POWER_LEVEL,
    Call.GET_POWER_LEVEL: fault_pb2.FAULT_CALL_GET_POWER_LEVEL,
    Call.CHECK_EXCEPTION: fault_pb2.FAULT_CALL_CHECK_EXCEPTION,
    Call.EVENT_SCAN: fault_pb2.FAULT_CALL_EVENT_SCAN,
    Call.HOTPLUG_LOG: fault_pb2.FAULT_CALL_HOTPLUG_LOG,
}
_CALL_FROM_PB: Final = {v: k for k, v in _CALL_TO_PB.items()}
_EFFECT_TO_PB: Final = {
    Effect.BUSY: fault_pb2.FAULT_EFFECT_BUSY,
    Effect.EXTENDED_DELAY: fault_pb2.FAULT_EFFECT_EXTENDED_DELAY,
    Effect.HARDWARE_ERROR: fault_pb2.FAULT_EFFECT_HARDWARE_ERROR,
    Effect.NOT_SUPPORTED_IN_SYSTEM: fault_pb2.FAULT_EFFECT_NOT_SUPPORTED_IN_SYSTEM,
    Effect.NOT_SUPPORTED_IN_CONNECTOR: fault_pb2.FAULT_EFFECT_NOT_SUPPORTED_IN_CONNECTOR,
    Effect.NEED_MEMORY: fault_pb2.FAULT_EFFECT_NEED_MEMORY,
    Effect.REFUSE_HOT_ADD: fault_pb2.FAULT_EFFECT_REFUSE_HOT_ADD,
    Effect.LOG_DROP: fault_pb2.FAULT_EFFECT_LOG_DROP,
    Effect.LOG_DUPLICATE: fault_pb2.FAULT_EFFECT_LOG_DUPLICATE,
    Effect.LOG_REORDER: fault_pb2.FAULT_EFFECT_LOG_REORDER,
    Effect.INTERRUPT_DELAY: fault_pb2.FAULT_EFFECT_INTERRUPT_DELAY,
    Effect.INTERRUPT_DUPLICATE: fault_pb2.FAULT_EFFECT_INTERRUPT_DUPLICATE,
}
_EFFECT_FROM_PB: Final = {v: k for k, v in _EFFECT_TO_PB.items()}
_DRC_TYPE_TO_PB: Final = {
    "CPU": connector_pb2.DRC_TYPE_CPU,
    "PHB": connector_pb2.DRC_TYPE_PHB,
    "PCI": connector_pb2.DRC_TYPE_PCI,
    "LMB": connector_pb2.DRC_TYPE_LMB,
    "PMEM": connector_pb2.DRC_TYPE_PMEM,
}
_DRC_TYPE_FROM_PB: Final = {v: k for k, v in _DRC_TYPE_TO_PB.items()}
_FINDING_TO_PB: Final = {
    FindingKind.CONFIGURE_NOT_UNISOLATED: fault_pb2.CONDUCT_FINDING_KIND_CONFIGURE_NOT_UNISOLATED,
    FindingKind.RETRY_TOO_SOON: fault_pb2.CONDUCT_FINDING_KIND_RETRY_TOO_SOON,
    FindingKind.ISOLATE_IN_USE: fault_pb2.CONDUCT_FINDING_KIND_ISOLATE_IN_USE,
    FindingKind.ABANDONED_CONFIGURE: fault_pb2.CONDUCT_FINDING_KIND_ABANDONED_CONFIGURE,
    FindingKind.NO_EXTENT_PAGE: fault_pb2.CONDUCT_FINDING_KIND_NO_EXTENT_PAGE,
    FindingKind.UNISOLATE_UNALLOCATED: fault_pb2.CONDUCT_FINDING_KIND_UNISOLATE_UNALLOCATED,
    FindingKind.LOG_NOT_DRAINED: fault_pb2.CONDUCT_FINDING_KIND_LOG_NOT_DRAINED,
}


def rule_from_pb(message: fault_pb2.FaultRule, field: str = "rule") -> FaultRule:
    """A rule from its message (matched and fired ignored); InvalidArgument names the bad field."""
    effect = _EFFECT_FROM_PB.get(message.effect)
    if effect is None:
        raise InvalidArgument(f"{field}.effect", message.effect, "must be set to a FaultEffect")
    call = _CALL_FROM_PB.get(message.call) if message.call else None
    if message.call and call is None:
        raise InvalidArgument(f"{field}.call", message.call, "not a FaultCall")
    drc_type = _DRC_TYPE_FROM_PB.get(message.drc_type, "") if message.drc_type else ""
    if message.drc_type and not drc_type:
        raise InvalidArgument(f"{field}.drc_type", message.drc_type, "not a DrcType")
    probability = message.probability if message.HasField("probability") else 1.0
    try:
        return FaultRule(
            message.name, effect, call, message.drc_index, drc_type, message.device_id, message.status,
            message.times, probability, message.seed,
        )  # fmt: skip
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}.{error.field}", error.value, error.reason) from None


def rule_to_pb(rule: FaultRule) -> fault_pb2.FaultRule:
    return fault_pb2.FaultRule(
        name=rule.name, effect=_EFFECT_TO_PB[rule.effect],
        call=_CALL_TO_PB[rule.call] if rule.call else fault_pb2.FAULT_CALL_UNSPECIFIED,
        drc_index=rule.drc_index, drc_type=_DRC_TYPE_TO_PB.get(rule.drc_type, connector_pb2.DRC_TYPE_UNSPECIFIED),
        device_id=rule.device_id, status=rule.status, times=rule.times, probability=rule.probability,
        seed=rule.seed, matched=rule.matched, fired=rule.fired,
    )  # fmt: skip


def fault_fired_to_pb(body: FaultFired) -> fault_pb2.FaultFired:
    return fault_pb2.FaultFired(
        rule=body.rule, effect=_EFFECT_TO_PB[body.effect], call=_CALL_TO_PB[body.call],
        drc_index=body.drc_index, status=body.status,
    )  # fmt: skip


def finding_to_pb(finding: Finding) -> fault_pb2.ConductFinding:
    time = Timestamp()
    time.FromNanoseconds(int(finding.time * 1e9))
    return fault_pb2.ConductFinding(
        kind=_FINDING_TO_PB[finding.kind], requirement=finding.kind.requirement,
        explanation=finding.kind.explanation, call=finding.call, drc_index=finding.drc_index,
        detail=finding.detail, time=time,
    )  # fmt: skip


class FaultServicer(fault_pb2_grpc.FaultServiceServicer):
    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None, runner: Runner | None = None) -> None:
        self._platforms = platforms
        self._slots = slots or StreamSlots(platforms.limits)
        self._run = runner or Runner()

    async def AddFaultRule(
        self, request: fault_pb2.AddFaultRuleRequest, context: grpc.aio.ServicerContext
    ) -> fault_pb2.AddFaultRuleResponse:
        def add() -> fault_pb2.AddFaultRuleResponse:
            platform = self._platforms.get(request.platform)
            return fault_pb2.AddFaultRuleResponse(rule=rule_to_pb(platform.add_fault_rule(rule_from_pb(request.rule))))

        return await call_or_abort(context, self._run.blocking(add))

    async def ListFaultRules(
        self, request: fault_pb2.ListFaultRulesRequest, context: grpc.aio.ServicerContext
    ) -> fault_pb2.ListFaultRulesResponse:
        rules = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).fault_rules())
        )
        return fault_pb2.ListFaultRulesResponse(rules=[rule_to_pb(r) for r in rules])

    async def ClearFaultRules(
        self, request: fault_pb2.ClearFaultRulesRequest, context: grpc.aio.ServicerContext
    ) -> fault_pb2.ClearFaultRulesResponse:
        names = frozenset(request.names)
        removed = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).clear_fault_rules(names))
        )
        return fault_pb2.ClearFaultRulesResponse(removed=removed)

    async def GetConduct(
        self, request: fault_pb2.GetConductRequest, context: grpc.aio.ServicerContext
    ) -> fault_pb2.GetConductResponse:
        findings, total = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).findings())
        )
        return fault_pb2.GetConductResponse(findings=[finding_to_pb(f) for f in findings], total=total)

    async def WatchConduct(
        self, request: fault_pb2.WatchConductRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[fault_pb2.WatchConductResponse]:
        with contextlib.ExitStack() as stack:
            await call_or_abort(context, inline(lambda: stack.enter_context(self._slots.hold(request.platform))))
            platform = await call_or_abort(context, inline(lambda: self._platforms.get(request.platform)))
            after = request.after_sequence if request.HasField("after_sequence") else None
            subscription, subscribed_after = await call_or_abort(
                context, self._run.quick(platform, lambda: platform.subscribe_events(after))
            )
            stack.callback(platform.unsubscribe_events, subscription)
            reader = AsyncReader(subscription)
            stack.callback(reader.close)
            await context.send_initial_metadata(stream_metadata(subscribed_after, platform.incarnation))
            while True:
                try:
                    event = await reader.next()
                except SubscriptionOverflow as overflow:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"watcher fell behind by more than the queue limit; last sequence sent: "
                        f"{overflow.last_sequence}; resume with after_sequence={overflow.last_sequence}",
                    )
                except SubscriptionClosed as closed:
                    await abort_closed(context, closed, request.platform)
                if isinstance(event.body, ConductFindingEvent):
                    yield fault_pb2.WatchConductResponse(
                        sequence=event.sequence, finding=finding_to_pb(event.body.finding)
                    )
