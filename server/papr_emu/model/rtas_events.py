"""Pending RTAS event logs of a platform (FIFO) and its event interrupts.

QEMU keeps one FIFO of pending event logs; check-exception takes the first
one whose event class is in the caller's mask, and every queued log pulses its
source's interrupt (again after each check-exception that leaves logs of that
class, and on event-scan). Watchers of the interrupt line stand in for the
guest's interrupt handler: they are told "a log of this class is pending".

Example::

    >>> from papr_emu.model.rtas_log import HP_ACTION_ADD, HP_ID_DRC_INDEX, HP_RESOURCE_CPU
    >>> queue = RtasEventQueue(clock=lambda: 0.0)
    >>> line = queue.watch_interrupts()
    >>> log = HotplugLog(HP_RESOURCE_CPU, HP_ACTION_ADD, HP_ID_DRC_INDEX, index=0x10000001)
    >>> queue.push(log, EVENT_CLASS_HOTPLUG).plid
    0
    >>> line.next(timeout=0)
    Interrupt(irq=4097, event_class=268435456)
    >>> status, blob = queue.pop(0xFFFFFFFF, 2048)
    >>> status, len(blob), queue.pop(0xFFFFFFFF, 2048)
    (0, 116, (1, b''))
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from . import rtas
from .mailbox import Mailbox
from .rtas_log import (
    EVENT_CLASS_HOTPLUG,
    HP_ID_DRC_COUNT_INDEXED,
    HP_ID_DRC_INDEX,
    IRQ_EPOW,
    IRQ_HOTPLUG,
    HotplugLog,
    encode_hotplug_log,
)  # fmt: skip

__all__ = [
    "EVENT_CLASS_HOTPLUG", "Interrupt", "InterruptLine", "InterruptWatch", "LogFault", "QueuedLog", "RtasEventQueue",
]  # fmt: skip

#: Fetched logs remembered to excuse their twins (see :meth:`RtasEventQueue.undrained`); the oldest go first.
FETCHED_REMEMBERED: Final = 1024

#: How fault injection mangles a hotplug log as it is queued (see faults.py's log effects).
LogFault = Literal["drop", "duplicate", "reorder", "withhold-interrupt", "spurious-interrupt"]


@dataclass(frozen=True, slots=True)
class QueuedLog:
    """A pending event log: what it says, its class, and its bytes (made when it was queued)."""

    log: HotplugLog
    event_class: int
    plid: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A pulse of one event source's interrupt: a log of ``event_class`` is pending."""

    irq: int
    event_class: int

    @classmethod
    def of_class(cls, event_class: int) -> Interrupt:
        return cls(IRQ_HOTPLUG if event_class == EVENT_CLASS_HOTPLUG else IRQ_EPOW, event_class)


#: One watcher of the interrupt line; pulses of one class coalesce while unread.
InterruptWatch = Mailbox[Interrupt]


class InterruptLine:
    """The platform's event interrupts (EPOW 0x1000, hotplug 0x1001), pulsed per event class."""

    def __init__(self) -> None:
        self._watches: set[InterruptWatch] = set()
        self._closed: str | None = None

    def watch(self, pending: list[int]) -> InterruptWatch:
        """A new watcher; it learns at once of the classes that have logs pending."""
        watch: InterruptWatch = Mailbox((Interrupt.of_class(c) for c in pending), coalesce=True)
        if self._closed is not None:  # watching as the platform went: the stream ends at once
            watch.close(self._closed)
        else:
            self._watches.add(watch)
        return watch

    def unwatch(self, watch: InterruptWatch) -> None:
        self._watches.discard(watch)

    def pulse(self, event_class: int) -> None:
        interrupt = Interrupt.of_class(event_class)
        for watch in list(self._watches):
            watch.put(interrupt)

    def close(self, reason: str) -> None:
        """End every watcher with ``reason``, and any made later."""
        self._closed = reason
        for watch in self._watches:
            watch.close(reason)
        self._watches.clear()


class RtasEventQueue:
    """The FIFO of pending event logs; platform log ids count up from 0 per platform.

    One FIFO in QEMU's order, kept as one deque per event class (there are two): the
    log ids give the order across classes, so check-exception and event-scan cost the
    same whatever the number of queued logs.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_class: dict[int, collections.deque[QueuedLog]] = {}
        self._length = 0
        self._next_plid = 0
        self._interrupts = InterruptLine()
        #: Fault injection (faults.py): asked, per log pushed, how to mangle it (None: not at all).
        self.log_fault: Callable[[HotplugLog], LogFault | None] | None = None
        self._spurious_after: set[int] = set()  # plids whose check-exception is followed by a stray pulse
        # What the guest was told and what it fetched (the conduct report's LOG_NOT_DRAINED):
        self._announced_through: dict[int, int] = {}  # event class -> newest plid its interrupt announced
        self._fetched: dict[HotplugLog, int] = {}  # log fetched -> next_plid when it was (newest fetch)
        self._reported: set[int] = set()  # plids of queued logs already reported as not drained

    def __len__(self) -> int:
        return self._length

    def push(self, log: HotplugLog, event_class: int, *, faults: bool = True) -> QueuedLog:
        """Queue a log and pulse its class's interrupt; ``faults=False``: the log effects are not asked."""
        fault = self.log_fault(log) if self.log_fault is not None and faults else None
        when = datetime.fromtimestamp(self._clock(), UTC)
        queued = QueuedLog(log, event_class, self._next_plid, encode_hotplug_log(log, self._next_plid, when))
        self._next_plid += 1
        if fault == "drop":
            return queued  # never queued, no interrupt
        queue = self._by_class.setdefault(event_class, collections.deque())
        if fault == "reorder":
            queue.appendleft(queued)  # ahead of the logs of its class already pending
        else:
            queue.append(queued)
        self._length += 1
        if fault == "duplicate":
            self.push(log, event_class, faults=False)  # a second log, with its own plid and interrupt (once)
        elif fault == "spurious-interrupt":
            self._spurious_after.add(queued.plid)
        if fault != "withhold-interrupt":  # else event-scan or a later check-exception pulses it
            self._pulse(event_class)
        return queued

    def _pulse(self, event_class: int) -> None:
        """Pulse the class's interrupt: every log of the class queued so far is announced."""
        self._announced_through[event_class] = self._next_plid - 1
        self._interrupts.pulse(event_class)

    def watch_interrupts(self) -> InterruptWatch:
        return self._interrupts.watch(self.pending_classes())

    def unwatch_interrupts(self, watch: InterruptWatch) -> None:
        self._interrupts.unwatch(watch)

    def close(self, reason: str) -> None:
        """End every interrupt watcher with ``reason``."""
        self._interrupts.close(reason)

    def pending_classes(self) -> list[int]:
        """The classes with logs queued, in the order their oldest log was queued."""
        heads = sorted((queue[0].plid, event_class) for event_class, queue in self._by_class.items() if queue)
        return [event_class for _, event_class in heads]

    def pop(self, mask: int, buffer_length: int) -> tuple[int, bytes]:
        """check-exception: the first log of a class in ``mask``, truncated to ``buffer_length``."""
        queues = [queue for event_class, queue in self._by_class.items() if queue and event_class & mask]
        if not queues:
            return rtas.NO_ERRORS_FOUND, b""
        queued = min(queues, key=lambda queue: queue[0].plid).popleft()
        self._length -= 1
        self._reported.discard(queued.plid)
        self._fetched.pop(queued.log, None)  # re-inserted: the newest fetch goes last
        self._fetched[queued.log] = self._next_plid
        if len(self._fetched) > FETCHED_REMEMBERED:
            del self._fetched[next(iter(self._fetched))]
        self.repulse()
        if queued.plid in self._spurious_after:
            self._spurious_after.discard(queued.plid)
            self._interrupts.pulse(queued.event_class)  # a stray pulse: check-exception will answer 1
        return rtas.SUCCESS, queued.blob[: max(buffer_length, 0)]

    def repulse(self) -> None:
        """Pulse every class that still has logs queued (PAPR: the interrupt stays asserted)."""
        for event_class in self.pending_classes():
            self._pulse(event_class)

    def undrained(self, drc_index: int, action: int) -> QueuedLog | None:
        """The first queued log about connector ``drc_index`` with ``action`` that an interrupt announced
        and the guest has not fetched with check-exception; each is found once (then None).

        A log the same as one the guest fetched after this one was queued does not count: the
        guest is handling that very request (a duplicated log, or QEMU's re-sent CPU remove).

        >>> from papr_emu.model.rtas_log import HP_ACTION_ADD, HP_ID_DRC_INDEX, HP_RESOURCE_CPU
        >>> queue = RtasEventQueue(clock=lambda: 0.0)
        >>> _ = queue.push(HotplugLog(HP_RESOURCE_CPU, HP_ACTION_ADD, HP_ID_DRC_INDEX, 0x10000001), EVENT_CLASS_HOTPLUG)
        >>> queue.undrained(0x10000001, HP_ACTION_ADD).plid, queue.undrained(0x10000001, HP_ACTION_ADD)
        (0, None)
        """
        for event_class, queue in self._by_class.items():
            announced = self._announced_through.get(event_class, -1)
            for queued in queue:
                log = queued.log
                if (
                    queued.plid <= announced
                    and queued.plid not in self._reported
                    and log.action == action
                    and _names_connector(log, drc_index)
                    and self._fetched.get(log, -1) <= queued.plid
                ):
                    self._reported.add(queued.plid)
                    return queued
        return None

    def drain_state(self) -> dict[str, Any]:
        """What :meth:`undrained` and the stray pulses remember (a snapshot's), logs as they are."""
        return {
            "announced_through": sorted(self._announced_through.items()),
            "fetched": list(self._fetched.items()),
            "reported": sorted(self._reported),
            "spurious_after": sorted(self._spurious_after),
        }

    def restore_drain_state(self, state: dict[str, Any] | None) -> None:
        """Put back :meth:`drain_state`; None (a snapshot older than it): every queued log was announced."""
        if state is None:
            self._announced_through = {c: max(q.plid for q in queue) for c, queue in self._by_class.items() if queue}
            return
        self._announced_through = {int(c): int(p) for c, p in state["announced_through"]}
        self._fetched = {log: int(n) for log, n in state["fetched"]}
        self._reported = {int(p) for p in state["reported"]}
        self._spurious_after = {int(p) for p in state["spurious_after"]}

    @property
    def next_plid(self) -> int:
        return self._next_plid

    def queues(self) -> list[tuple[int, list[QueuedLog]]]:
        """Every queued log, per event class in queue order (a snapshot's)."""
        return [(event_class, list(queue)) for event_class, queue in self._by_class.items() if queue]

    def restore(self, queues: list[tuple[int, list[QueuedLog]]], next_plid: int) -> None:
        """Put back what :meth:`queues` and :attr:`next_plid` said (on an empty queue)."""
        plids = [q.plid for _, queue in queues for q in queue]
        if len(set(plids)) != len(plids) or any(not 0 <= p < next_plid for p in plids):
            raise ValueError("queued logs must have distinct platform log ids below next_plid")
        for event_class, queue in queues:
            if any(q.event_class != event_class for q in queue) or event_class in self._by_class:
                raise ValueError(f"queue of event class {event_class:#x}: a log of another class, or twice")
            self._by_class[event_class] = collections.deque(queue)
        self._length = len(plids)
        self._next_plid = next_plid

    def drop(self) -> int:
        """Drop every queued log; returns how many."""
        dropped = self._length
        self._by_class.clear()
        self._reported.clear()
        self._length = 0
        return dropped


def _names_connector(log: HotplugLog, drc_index: int) -> bool:
    """Whether the log names the connector: by index, or in its count-indexed range (logs by count name none)."""
    if log.id_type == HP_ID_DRC_INDEX:
        return log.index == drc_index
    if log.id_type == HP_ID_DRC_COUNT_INDEXED:
        return log.index <= drc_index < log.index + log.count
    return False
