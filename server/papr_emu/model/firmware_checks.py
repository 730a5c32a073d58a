"""The hooks every RTAS call goes through before it runs: fault rules and the guest's conduct report.

:class:`FirmwareChecks` ties a platform's :class:`~.faults.Faults` and
:class:`~.conduct.Conduct` to its connector table and event log: it says what a call targets,
answers with a fault's status when a rule fires (publishing ``FaultFired``), and publishes
each finding the conduct checks make (``ConductFindingEvent``). The platform calls it under
its lock; the checks never change a connector.

Example::

    >>> import structlog
    >>> from .drc_table import DrcTable
    >>> from .events import EventLog
    >>> from .faults import Effect
    >>> events = EventLog("p", clock=lambda: 0.0)
    >>> checks = FirmwareChecks(DrcTable(), events, lambda: 0.0, lambda: 0.0, structlog.get_logger())
    >>> checks.faults.add(FaultRule("broken-once", Effect.HARDWARE_ERROR, Call.EVENT_SCAN, times=1))
    >>> checks.fault(Call.EVENT_SCAN, 0, Target()), checks.fault(Call.EVENT_SCAN, 0, Target())
    (-1, None)
    >>> events.last_sequence  # the FaultFired event
    1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import rtas
from .conduct import Conduct, Finding
from .drc import Drc, DrcState
from .events import ConductFindingEvent, EventLog, FaultFired
from .faults import LOG_FAULTS, Call, FaultRule, Faults, Target
from .rtas_events import LogFault, QueuedLog
from .rtas_log import HotplugLog

if TYPE_CHECKING:
    from .drc_table import DrcTable

__all__ = ["FirmwareChecks"]


class FirmwareChecks:
    """A platform's fault rules and conduct report, as hooks on its RTAS calls."""

    def __init__(
        self,
        drcs: DrcTable[Any],
        events: EventLog,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        log: Any,
        undrained: Callable[[int, int], QueuedLog | None] = lambda index, action: None,
    ) -> None:
        self._drcs = drcs
        self._events = events
        self._log = log
        self.faults = Faults(monotonic)
        self.conduct = Conduct(clock, undrained=undrained)
        self.fired = 0  # rules fired in this process (a metric's counter)

    def target(self, drc: Drc[Any] | None, index: int, indicator: int = 0, value: int = 0) -> Target:
        """What fault rules match a call on: the connector, its type and device, and the indicator."""
        if drc is None:
            return Target(index, indicator=indicator, value=value)
        fresh = (
            indicator == rtas.ISOLATION_STATE and value == rtas.UNISOLATE and drc.device is not None
            and drc.state in (DrcState.LOGICAL_AVAILABLE, DrcState.PHYSICAL_POWERON)
        )  # fmt: skip
        device = drc.device.id if drc.device is not None else ""
        return Target(index, drc.type.label, device, indicator, value, fresh)

    def fault(self, call: Call, index: int, target: Target, memory_extent: int = 0) -> int | None:
        """Note an early retry, then the status a fault answers with (None: none fires, the call runs)."""
        early = self.faults.too_soon(call, target)  # another indicator on the connector is another call
        if early is not None:
            self.report([self.conduct.record_early(call, index, early)])
        if call is Call.CONFIGURE_CONNECTOR and self.faults.owes_extent(index) and not memory_extent:
            self.report([self.conduct.record_no_extent(index)])
        fired = self.faults.check(call, target, memory_extent)
        if fired is None:
            return None
        if fired.rule:  # a page still owed is no rule firing again
            self.fired += 1
            self._events.publish(FaultFired(fired.rule, fired.effect, fired.call, fired.drc_index, fired.status))
            self._log.info("fault.fired", rule=fired.rule, call=str(call), drc_index=index, status=fired.status)
        return fired.status

    def log_fault(self, log: HotplugLog) -> LogFault | None:
        """The hook on each hotplug log queued: how a log effect mangles it (None: not at all)."""
        drc = self._drcs.peek(log.index) if log.index else None
        fired = self.faults.check(Call.HOTPLUG_LOG, self.target(drc, log.index))
        if fired is None:
            return None
        self.fired += 1
        self._events.publish(FaultFired(fired.rule, fired.effect, fired.call, fired.drc_index, 0))
        self._log.info("fault.fired", rule=fired.rule, call=str(Call.HOTPLUG_LOG), drc_index=log.index)
        return LOG_FAULTS[fired.effect]

    def report(self, findings: list[Finding]) -> None:
        """Publish each finding as an event (and log it)."""
        for finding in findings:
            self._events.publish(ConductFindingEvent(finding))
            self._log.warning("guest.conduct", finding=finding.kind.name, drc_index=finding.drc_index)

    def reset(self) -> None:
        """Every connector was reset (CAS): no configure-connector sequence is under way, no page owed."""
        self.conduct.reset()
        self.faults.reset()

    def rules(self) -> list[FaultRule]:
        """The rules as they are now (copies: their counters do not move under the caller)."""
        return [FaultRule.from_dict(r.to_dict()) for r in self.faults.rules]
