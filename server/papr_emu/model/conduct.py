"""The guest's conduct report: each guest action that breaks a LoPAR requirement or the DR sequence.

QEMU accepts sloppy call sequences without a word; a guest author wants to hear of them.
The platform hands every RTAS call to :class:`Conduct` before it runs; a call that breaks a
rule becomes a :class:`Finding` with the requirement's number (LoPAR, chapter "Dynamic
Reconfiguration (DR) Architecture") and a one-line explanation. The call itself still runs
as it would have (the report observes; it never changes an answer).

Deliberate refusal signals are not findings: unisolate or configure-connector on a
connector whose unplug is pending is how Linux refuses a removal.

Example::

    >>> conduct = Conduct(clock=lambda: 0.0)
    >>> drc = Drc(LMB, 0x80000004)  # unusable: never allocated
    >>> conduct.before_set_indicator(drc, rtas.ISOLATION_STATE, rtas.UNISOLATE)[0].kind.name
    'UNISOLATE_UNALLOCATED'
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from . import rtas
from .devices import CpuCore
from .drc import CPU, LMB, Drc, DrcState  # noqa: F401  (LMB: the doctest)
from .rtas_log import HP_ACTION_ADD, HP_ACTION_REMOVE

if TYPE_CHECKING:
    from .rtas_events import QueuedLog

#: The set-indicator calls that start a DR sequence, and the hotplug action they start.
_STARTS: Final = {
    (rtas.ALLOCATION_STATE, rtas.ALLOCATION_USABLE): HP_ACTION_ADD,
    (rtas.ISOLATION_STATE, rtas.UNISOLATE): HP_ACTION_ADD,
    (rtas.ISOLATION_STATE, rtas.ISOLATE): HP_ACTION_REMOVE,
}

#: Findings a platform keeps (the oldest go first); the stream sees every one.
RETAINED_FINDINGS: Final = 4096


class FindingKind(enum.Enum):
    """A kind of finding: (the LoPAR requirement, what the guest did wrong)."""

    CONFIGURE_NOT_UNISOLATED = (
        "R1-13.5.4.2-2",
        "ibm,configure-connector on a connector the guest has not unisolated "
        "(bringing an entity online: set-indicator unisolate, then ibm,configure-connector)",
    )
    RETRY_TOO_SOON = (
        "R1-13.5.3.4-3",
        "called again before the extended delay (990x) it was answered with had passed",
    )
    ISOLATE_IN_USE = (
        "R1-13.7.4.1.1-1",
        "isolated a CPU connector while threads of its core still run (each must stop-self first)",
    )
    ABANDONED_CONFIGURE = (
        "R1-13.5.3.5-4",
        "left an ibm,configure-connector sequence half way (no complete, no error) and went on "
        "with set-indicator on the connector",
    )
    NO_EXTENT_PAGE = (
        "R1-13.5.3.5-1",
        "called ibm,configure-connector after status 5 without a memory extent page in args[1]",
    )
    UNISOLATE_UNALLOCATED = (
        "R1-13.5.3.4-5",
        "unisolated a logical connector without first setting its allocation-state usable",
    )
    LOG_NOT_DRAINED = (
        # "OSs must have interrupt handlers for the enabled interrupts ... which call the RTAS
        # check-exception function" (LoPAR 2.9, as docs/faults.md quotes it).
        "R1-10.2-4",
        "started a DR sequence on a connector whose hotplug event log an interrupt announced and the "
        "guest never fetched with check-exception (Linux fetches it in the interrupt handler)",
    )

    @property
    def requirement(self) -> str:
        return self.value[0]

    @property
    def explanation(self) -> str:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class Finding:
    """One breach: what, where, when; ``detail`` says what this call was."""

    kind: FindingKind
    call: str
    drc_index: int
    detail: str
    time: float

    @property
    def requirement(self) -> str:
        return self.kind.requirement

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.name, "call": self.call, "drc_index": self.drc_index, "detail": self.detail,
                "time": self.time}  # fmt: skip


#: configure-connector statuses after which the guest must call again (the sequence goes on).
_CONTINUES: Final = frozenset(
    {rtas.CC_NEXT_SIBLING, rtas.CC_NEXT_CHILD, rtas.CC_NEXT_PROPERTY, rtas.CC_PREVIOUS_PARENT}
)


class Conduct:
    """A platform's findings, and what it remembers of the guest's sequences to make them."""

    def __init__(
        self,
        clock: Callable[[], float],
        retained: int = RETAINED_FINDINGS,
        undrained: Callable[[int, int], QueuedLog | None] = lambda index, action: None,
    ) -> None:
        """``undrained(index, action)``: the announced, unfetched hotplug log about the connector, if any."""
        self._clock = clock
        self._undrained = undrained
        self.findings: collections.deque[Finding] = collections.deque(maxlen=retained)
        self.total = 0  # findings ever made (the deque keeps the newest)
        self._configuring: set[int] = set()  # connectors with a sequence under way (last status 1..4)

    def _finding(self, kind: FindingKind, call: str, drc_index: int, detail: str) -> Finding:
        finding = Finding(kind, call, drc_index, detail, self._clock())
        self.findings.append(finding)
        self.total += 1
        return finding

    def record_early(self, call: str, drc_index: int, early_seconds: float) -> Finding:
        """The guest called again ``early_seconds`` before the extended delay it was answered with passed."""
        detail = f"{early_seconds * 1000:.1f} ms early"
        return self._finding(FindingKind.RETRY_TOO_SOON, str(call), drc_index, detail)

    def record_no_extent(self, drc_index: int) -> Finding:
        """The guest called ibm,configure-connector again after status 5 with args[1] 0."""
        return self._finding(FindingKind.NO_EXTENT_PAGE, "ibm,configure-connector", drc_index, "args[1] is 0")

    def before_set_indicator(self, drc: Drc[Any] | None, indicator: int, value: int) -> list[Finding]:
        """The findings a set-indicator call makes, judged on the connector before the call runs."""
        if drc is None:
            return []
        found: list[Finding] = []
        call = f"set-indicator({indicator}, {drc.index:#x}, {value})"
        if drc.index in self._configuring:
            self._configuring.discard(drc.index)
            found.append(
                self._finding(FindingKind.ABANDONED_CONFIGURE, call, drc.index, "sequence left after a 2-4 status")
            )
        action = _STARTS.get((indicator, value))
        refusal = action == HP_ACTION_ADD and drc.unplug_requested  # a refusal signal, not an add
        if action is not None and not refusal and (log := self._undrained(drc.index, action)):
            detail = f"hotplug log {log.plid} still queued"
            found.append(self._finding(FindingKind.LOG_NOT_DRAINED, call, drc.index, detail))
        if indicator != rtas.ISOLATION_STATE:
            return found
        if (
            value == rtas.UNISOLATE
            and drc.state is DrcState.LOGICAL_UNUSABLE
            and not drc.unplug_requested  # not a refusal signal
        ):
            found.append(self._finding(FindingKind.UNISOLATE_UNALLOCATED, call, drc.index, "connector unusable"))
        if value == rtas.ISOLATE and drc.type is CPU and drc.state is DrcState.LOGICAL_CONFIGURED:
            core = drc.device
            if isinstance(core, CpuCore) and core.running_cpus():
                running = ", ".join(str(c) for c in core.running_cpus())
                found.append(self._finding(FindingKind.ISOLATE_IN_USE, call, drc.index, f"threads {running} run"))
        return found

    def before_configure(self, drc: Drc[Any] | None) -> list[Finding]:
        """The findings an ibm,configure-connector call makes before it runs."""
        if drc is None or drc.type.connector_class.configurable(drc.state):
            return []
        detail = f"connector {drc.state.name}"
        return [self._finding(FindingKind.CONFIGURE_NOT_UNISOLATED, "ibm,configure-connector", drc.index, detail)]

    def after_configure(self, drc_index: int, status: int) -> None:
        """Remember whether the connector's sequence goes on (a set-indicator then abandons it).

        Busy, extended delay and 5 (memory wanted) neither start nor end a sequence: a guest that
        gives up on one of those before the walk began (Linux, answered 5) abandons nothing.
        """
        if status in _CONTINUES:
            self._configuring.add(drc_index)
        elif not (status in (-2, 5) or 9900 <= status <= 9905):  # -2 busy
            self._configuring.discard(drc_index)

    def reset(self) -> None:
        """Every connector was reset (CAS): no sequence is under way."""
        self._configuring.clear()

    def state(self) -> tuple[list[Finding], int, list[int]]:
        """What a snapshot keeps: the retained findings, how many were ever made, the sequences under way."""
        return list(self.findings), self.total, sorted(self._configuring)

    def restore(self, findings: list[Finding], total: int, configuring: list[int]) -> None:
        """Put back :meth:`state` (on a report with no findings yet)."""
        self.findings.extend(findings)
        self.total = total
        self._configuring = set(configuring)


__all__ = ["RETAINED_FINDINGS", "Conduct", "Finding", "FindingKind"]
