"""Management events of one platform, with gap-free delivery to watchers.

Every event gets the next per-platform sequence number. The log keeps the
newest :data:`RETAINED_EVENTS` events, so a watcher can resume after a given
sequence; each live subscription has a bounded queue, and a subscription
whose queue overflows is cut off (the watcher learns the last sequence it
was given and can resume from there).

The platform publishes under its own lock, so subscribing and publishing are
ordered: a subscription sees every event published after it was made.

Example::

    >>> log = EventLog("default", clock=lambda: 0.0)
    >>> sub = log.subscribe()
    >>> log.publish(DeviceDeleted("dimm0", DeviceType.DIMM, (0x80000004,), 0)).sequence
    1
    >>> sub.next(timeout=0).sequence
    1
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from .conduct import Finding
from .devices import DeviceInfo, DeviceType
from .drc import RefusalSignal
from .errors import InvalidArgument, OutOfRange
from .faults import Call, Effect
from .mailbox import Mailbox, MailboxOverflow
from .memory_requests import MemoryRequestFinished

RETAINED_EVENTS: Final = 4096
SUBSCRIPTION_QUEUE_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True)
class DeviceAdded:
    device: DeviceInfo


@dataclass(frozen=True, slots=True)
class UnplugRequested:
    device_id: str
    device_type: DeviceType
    drc_indexes: Sequence[int]


@dataclass(frozen=True, slots=True)
class DeviceDeleted:
    device_id: str
    device_type: DeviceType
    drc_indexes: Sequence[int]
    released_by_drc_index: int  # 0: completed inside the unplug request


@dataclass(frozen=True, slots=True)
class Event:
    sequence: int
    platform: str
    time: float
    body: EventBody
    incarnation: str = ""  # the server run that made it (Platforms.incarnation)


class SubscriptionOverflow(Exception):
    """The watcher fell more than the queue limit behind; ``last_sequence`` was the last it got."""

    def __init__(self, last_sequence: int) -> None:
        super().__init__(f"watcher fell behind by more than {SUBSCRIPTION_QUEUE_LIMIT} events")
        self.last_sequence = last_sequence


class Subscription:
    """One watcher's bounded queue. ``next`` blocks until an event, a timeout, overflow or close."""

    def __init__(self, backlog: Iterable[Event], limit: int) -> None:
        self._mailbox: Mailbox[Event] = Mailbox(backlog, limit)
        self.last_delivered = 0

    def next(self, timeout: float | None) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one.

        Raises SubscriptionOverflow (the watcher fell behind) or SubscriptionClosed.
        """
        try:
            event = self._mailbox.next(timeout)
        except MailboxOverflow:
            raise SubscriptionOverflow(self.last_delivered) from None
        if event is not None:
            self.last_delivered = event.sequence
        return event

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """See :meth:`Mailbox.set_waker`: how an asyncio stream learns an event is waiting."""
        self._mailbox.set_waker(waker)


class EventLog:
    """Sequence numbers, retained history and live subscriptions of one platform."""

    def __init__(
        self,
        platform: str,
        clock: Callable[[], float] = time.time,
        retained: int = RETAINED_EVENTS,
        queue_limit: int = SUBSCRIPTION_QUEUE_LIMIT,
    ) -> None:
        self._platform = platform
        self._clock = clock
        self._history: collections.deque[Event] = collections.deque(maxlen=retained)
        self._subscriptions: set[Subscription] = set()
        self._queue_limit = queue_limit
        self._closed: str | None = None
        self.last_sequence = 0
        self.incarnation = ""  # stamped on each event published (the platform's owner sets it)

    def publish(self, body: EventBody) -> Event:
        self.last_sequence += 1
        event = Event(self.last_sequence, self._platform, self._clock(), body, self.incarnation)
        self._history.append(event)
        for subscription in list(self._subscriptions):
            if not subscription._mailbox.put(event):
                self._subscriptions.discard(subscription)
        return event

    def retained(self) -> list[Event]:
        """The events still retained, oldest first (a snapshot's)."""
        return list(self._history)

    def restore(self, retained: list[Event], last_sequence: int) -> None:
        """Continue after ``last_sequence`` with ``retained`` as the history (on a new log)."""
        sequences = [e.sequence for e in retained]
        if sequences != list(range(last_sequence - len(retained) + 1, last_sequence + 1)) or last_sequence < 0:
            raise ValueError("retained events must be the consecutive sequence numbers ending at last_sequence")
        self._history.extend(retained[-(self._history.maxlen or len(retained)) :])
        self.last_sequence = last_sequence

    @property
    def oldest_retained(self) -> int:
        """Sequence of the oldest event still retained (last + 1 when none is)."""
        return self._history[0].sequence if self._history else self.last_sequence + 1

    def subscribe(self, after_sequence: int | None = None) -> Subscription:
        """A live subscription; with ``after_sequence``, retained later events come first."""
        backlog: list[Event] = []
        if after_sequence is not None and after_sequence > self.last_sequence:
            raise InvalidArgument(
                "after_sequence", after_sequence, f"is ahead of the newest event ({self.last_sequence})"
            )
        if after_sequence is not None and after_sequence < self.last_sequence:
            oldest = self.oldest_retained
            if after_sequence + 1 < oldest:
                raise OutOfRange(
                    "after_sequence",
                    after_sequence,
                    f"events after it are no longer retained (oldest retained: {oldest})",
                )
            backlog = [e for e in self._history if e.sequence > after_sequence]
        subscription = Subscription(backlog, self._queue_limit + len(backlog))
        if self._closed is not None:  # subscribed as the platform went: the stream ends at once
            subscription._mailbox.close(self._closed)
        else:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self, reason: str) -> None:
        """End every subscription with ``reason`` ("deleted" or "shutdown"), and any made later."""
        self._closed = reason
        for subscription in self._subscriptions:
            subscription._mailbox.close(reason)
        self._subscriptions.clear()


@dataclass(frozen=True, slots=True)
class UnplugRejected:
    """The guest refused a pending unplug; the platform cancelled it."""

    device_id: str
    device_type: DeviceType
    signal: RefusalSignal
    drc_index: int  # the connector that carried the signal


@dataclass(frozen=True, slots=True)
class UnplugTimedOut:
    """A pending unplug outlived its device type's timeout; the platform cancelled it."""

    device_id: str
    device_type: DeviceType
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class FaultFired:
    """A fault rule fired on an RTAS call (see :mod:`.faults`): the call answered ``status``."""

    rule: str
    effect: Effect
    call: Call
    drc_index: int  # 0 for calls on no connector
    status: int


@dataclass(frozen=True, slots=True)
class ConductFindingEvent:
    """The guest broke a LoPAR requirement or the DR sequence (see :mod:`.conduct`)."""

    finding: Finding


EventBody = (
    DeviceAdded | UnplugRequested | DeviceDeleted | UnplugRejected | UnplugTimedOut | MemoryRequestFinished
    | FaultFired | ConductFindingEvent
)  # fmt: skip
