"""Pending RTAS event logs of a platform (FIFO) and its event interrupts.

QEMU keeps one FIFO of pending event logs; check-exception takes the first
one whose event class is in the caller's mask, and every queued log pulses its
source's interrupt (again after each check-exception that leaves logs of that
class, and on event-scan). Watchers of the interrupt line stand in for the
guest's interrupt handler: they are told "a log of this class is pending".

Example::

    >>> from papr_emu.model.rtas_log import HP_ACTION_ADD, HP_ID_DRC_INDEX, HP_RESOURCE_CPU
    >>> queue = RtasEventQueue(clock=lambda: 0.0)
    >>> line = queue.interrupts.subscribe()
    >>> log = HotplugLog(HP_RESOURCE_CPU, HP_ACTION_ADD, HP_ID_DRC_INDEX, index=0x10000001)
    >>> queue.push(log, EVENT_CLASS_HOTPLUG).plid
    0
    >>> line.next(timeout=0) == EVENT_CLASS_HOTPLUG
    True
    >>> status, blob = queue.pop(0xFFFFFFFF, 2048)
    >>> status, len(blob), queue.pop(0xFFFFFFFF, 2048)
    (0, 116, (1, b''))
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from . import rtas
from .events import SubscriptionClosed
from .rtas_log import EVENT_CLASS_HOTPLUG, HotplugLog, encode_hotplug_log

__all__ = ["EVENT_CLASS_HOTPLUG", "InterruptLine", "InterruptSubscription", "QueuedLog", "RtasEventQueue"]


@dataclass(frozen=True, slots=True)
class QueuedLog:
    """A pending event log: what it says, its class, and its bytes (made when it was queued)."""

    log: HotplugLog
    event_class: int
    plid: int
    blob: bytes


class InterruptSubscription:
    """One watcher of a platform's event interrupts; pulses of one class coalesce while unread."""

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._ready = threading.Condition(threading.Lock())
        self._closed: str | None = None

    def _pulse(self, event_class: int) -> None:
        with self._ready:
            if event_class not in self._pending:
                self._pending.append(event_class)
            self._ready.notify_all()

    def _close(self, reason: str) -> None:
        with self._ready:
            self._closed = reason
            self._ready.notify_all()

    def next(self, timeout: float | None) -> int | None:
        """The event class of the next pulse, None after ``timeout``; raises SubscriptionClosed."""
        with self._ready:
            if not self._pending and self._closed is None:
                self._ready.wait(timeout)
            if self._pending:
                return self._pending.pop(0)
            if self._closed is not None:
                raise SubscriptionClosed(self._closed)
            return None


class InterruptLine:
    """The platform's event interrupts (EPOW 0x1000, hotplug 0x1001), pulsed per event class."""

    def __init__(self) -> None:
        self._subscriptions: set[InterruptSubscription] = set()

    def subscribe(self, pending: list[int] | None = None) -> InterruptSubscription:
        subscription = InterruptSubscription()
        for event_class in pending or []:
            subscription._pulse(event_class)  # a late watcher still learns of pending logs
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: InterruptSubscription) -> None:
        self._subscriptions.discard(subscription)

    def pulse(self, event_class: int) -> None:
        for subscription in list(self._subscriptions):
            subscription._pulse(event_class)

    def close(self, reason: str) -> None:
        for subscription in self._subscriptions:
            subscription._close(reason)
        self._subscriptions.clear()


class RtasEventQueue:
    """The FIFO of pending event logs; platform log ids count up from 0 per platform."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._queue: collections.deque[QueuedLog] = collections.deque()
        self._next_plid = 0
        self.interrupts = InterruptLine()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, log: HotplugLog, event_class: int) -> QueuedLog:
        when = datetime.fromtimestamp(self._clock(), UTC)
        queued = QueuedLog(log, event_class, self._next_plid, encode_hotplug_log(log, self._next_plid, when))
        self._next_plid += 1
        self._queue.append(queued)
        self.interrupts.pulse(event_class)
        return queued

    def pending_classes(self) -> list[int]:
        classes: list[int] = []
        for queued in self._queue:
            if queued.event_class not in classes:
                classes.append(queued.event_class)
        return classes

    def pop(self, mask: int, buffer_length: int) -> tuple[int, bytes]:
        """check-exception: the first log of a class in ``mask``, truncated to ``buffer_length``."""
        for queued in self._queue:
            if queued.event_class & mask:
                self._queue.remove(queued)
                self.repulse()
                return rtas.SUCCESS, queued.blob[: max(buffer_length, 0)]
        return rtas.NO_ERRORS_FOUND, b""

    def repulse(self) -> None:
        """Pulse every class that still has logs queued (PAPR: the interrupt stays asserted)."""
        for event_class in self.pending_classes():
            self.interrupts.pulse(event_class)

    def drop(self, event_class: int | None = None) -> int:
        """Drop queued logs (of one class, or all); returns how many."""
        kept = [q for q in self._queue if event_class is not None and not q.event_class & event_class]
        dropped = len(self._queue) - len(kept)
        self._queue = collections.deque(kept)
        return dropped

    def snapshot(self) -> list[QueuedLog]:
        return list(self._queue)
