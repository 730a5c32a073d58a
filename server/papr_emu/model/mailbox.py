"""One stream watcher's queue: the platform puts, the watcher takes with :meth:`Mailbox.next`.

A thread may block in ``next``; an asyncio reader instead registers a waker
(:meth:`Mailbox.set_waker`) that is called whenever there is something to take.

Bounded (a watcher that falls behind is cut off, not allowed to grow memory) or
coalescing (an item already waiting is not queued twice), and closable with a
reason that the watcher gets once the queue is drained.

Example::

    >>> box: Mailbox[int] = Mailbox(limit=2)
    >>> box.put(1), box.put(2), box.put(3)
    (True, True, False)
    >>> box.next(timeout=0), box.next(timeout=0)
    (1, 2)
    >>> box.next(timeout=0)
    Traceback (most recent call last):
    ...
    papr_emu.model.mailbox.MailboxOverflow: the watcher fell behind by more than 2 items
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class SubscriptionClosed(Exception):
    """The stream must end: the platform was deleted, or the server is stopping."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MailboxOverflow(Exception):
    """More items arrived than the mailbox's limit while the watcher was not reading."""


class Mailbox(Generic[T]):
    """A blocking queue for one watcher; thread-safe."""

    def __init__(self, backlog: Iterable[T] = (), limit: int | None = None, coalesce: bool = False) -> None:
        self._items: collections.deque[T] = collections.deque(backlog)
        self._limit = limit
        self._coalesce = coalesce
        self._ready = threading.Condition(threading.Lock())
        self._overflowed = False
        self._closed: str | None = None
        self._waker: Callable[[], None] | None = None

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Call ``waker`` (on the putting thread) whenever an item, an overflow or the close arrives.

        It must not block: an asyncio reader passes ``loop.call_soon_threadsafe(event.set)``.
        It is called at once if something is already waiting.
        """
        with self._ready:
            self._waker = waker
            if waker is not None and (self._items or self._overflowed or self._closed is not None):
                waker()

    def _wake(self) -> None:
        self._ready.notify_all()
        if self._waker is not None:
            self._waker()

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and the mailbox is cut off) if it is full."""
        with self._ready:
            if not (self._coalesce and item in self._items):
                if self._limit is not None and len(self._items) >= self._limit:
                    self._overflowed = True
                    self._wake()
                    return False
                self._items.append(item)
            self._wake()
            return True

    def close(self, reason: str) -> None:
        with self._ready:
            self._closed = reason
            self._wake()

    def next(self, timeout: float | None) -> T | None:
        """The next item, or None after ``timeout`` seconds; raises MailboxOverflow or SubscriptionClosed."""
        with self._ready:
            if timeout != 0 and not self._items and not self._overflowed and self._closed is None:
                self._ready.wait(timeout)
            if self._items:
                return self._items.popleft()
            if self._overflowed:
                raise MailboxOverflow(f"the watcher fell behind by more than {self._limit} items")
            if self._closed is not None:
                raise SubscriptionClosed(self._closed)
            return None
