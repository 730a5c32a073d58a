"""What the streaming RPCs share: waiting on a watcher's queue from the event loop, their limits, their end.

An open stream costs no thread: it awaits an :class:`asyncio.Event` that the
watcher's queue sets (through ``call_soon_threadsafe``) when something arrives.
A client that goes away cancels the stream's task, which unsubscribes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Final, Generic, NoReturn, Protocol, TypeVar

import grpc

from ..model import Limits, SubscriptionClosed
from ..model.errors import shorten
from ..model.limits import exhausted

#: Initial metadata of the event streams (WatchEvents, WatchConduct): the sequence the stream starts after,
SUBSCRIBED_AFTER_KEY: Final = "papr-subscribed-after"
#: ... and this server run's incarnation (a resuming watcher compares it with its last event's).
INCARNATION_KEY: Final = "papr-incarnation"


def stream_metadata(subscribed_after: int, incarnation: str) -> tuple[tuple[str, str], ...]:
    """The initial metadata of an event stream."""
    return (SUBSCRIBED_AFTER_KEY, str(subscribed_after)), (INCARNATION_KEY, incarnation)


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Watched(Protocol[T_co]):
    """A watcher's queue (an event subscription, an interrupt watch)."""

    def next(self, timeout: float | None) -> T_co | None: ...

    def set_waker(self, waker: Callable[[], None] | None) -> None: ...


def _on_loop(callback: Callable[[], None]) -> Callable[[], None]:
    """A waker for a watcher's queue: runs ``callback`` on the running event loop, from any thread."""
    loop = asyncio.get_running_loop()

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: the server stopped, nobody reads any more
            pass

    return wake


class AsyncReader(Generic[T]):
    """Takes items from a watcher's queue on the event loop; no thread waits.

    Example::

        reader = AsyncReader(subscription)
        try:
            event = await reader.next()  # raises what the queue raises (closed, overflow)
        finally:
            reader.close()
    """

    def __init__(self, watched: Watched[T]) -> None:
        self._ready = asyncio.Event()
        self._watched = watched
        watched.set_waker(_on_loop(self._ready.set))

    async def next(self) -> T:
        """The next item; raises what the queue raises (closed, overflow)."""
        while True:
            self._ready.clear()
            item = self._watched.next(timeout=0)
            if item is not None:
                return item
            await self._ready.wait()

    def close(self) -> None:
        self._watched.set_waker(None)


async def abort_closed(context: grpc.aio.ServicerContext, closed: SubscriptionClosed, platform: str) -> NoReturn:
    """End a stream whose watcher was closed: the server stops, or the platform was deleted."""
    if closed.reason == "shutdown":
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
    await context.abort(grpc.StatusCode.NOT_FOUND, f"platform: {shorten(platform)}: was deleted")
    raise AssertionError("unreachable: abort raises")


class StreamSlots:
    """Counts open streams, in all and per platform, against the server's limits.

    Example::

        with slots.hold(request.platform):  # ResourceExhausted if no slot is free
            ...  # serve the stream
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._total = 0
        self._by_platform: dict[str, int] = {}

    def counts(self) -> tuple[int, dict[str, int]]:
        """Open streams now: in all, and per platform (a copy; read-only, for metrics)."""
        with self._lock:
            return self._total, dict(self._by_platform)

    @contextmanager
    def hold(self, platform: str) -> Iterator[None]:
        with self._lock:
            on_platform = self._by_platform.get(platform, 0)
            if self._total >= self._limits.streams:
                raise exhausted("streams", self._limits.streams, f"the server has {self._total} streams open")
            if on_platform >= self._limits.streams_per_platform:
                raise exhausted(
                    "streams_per_platform", self._limits.streams_per_platform,
                    f"platform {shorten(platform)} has {on_platform} streams open",
                )  # fmt: skip
            self._total += 1
            self._by_platform[platform] = on_platform + 1
        try:
            yield
        finally:
            with self._lock:
                self._total -= 1
                left = self._by_platform[platform] - 1
                if left:
                    self._by_platform[platform] = left
                else:
                    del self._by_platform[platform]


class EndOnClose:
    """Waits for a stream's next request, or for its platform to close, whichever comes first.

    ``watched`` is a queue the platform closes when it goes (its items are ignored).
    Waiting costs no task per request: the close cancels the one waiting read.

    Example::

        ending = EndOnClose(platform.watch_interrupts())
        request = await ending.or_next(requests)  # None at the end of the stream or on close
        if ending.closed is not None: ...         # the SubscriptionClosed that ended it
    """

    def __init__(self, watched: Watched[object]) -> None:
        self.closed: SubscriptionClosed | None = None
        self._watched = watched
        self._waiting: asyncio.Task[object] | None = None
        watched.set_waker(_on_loop(self._check))

    def _check(self) -> None:
        try:
            while self._watched.next(timeout=0) is not None:
                pass
        except SubscriptionClosed as closed:
            self.closed = closed
            if self._waiting is not None:
                self._waiting.cancel()

    async def or_next(self, requests: AsyncIterator[T]) -> T | None:
        if self.closed is not None:
            return None
        task = asyncio.current_task()
        assert task is not None
        self._waiting = task
        try:
            return await anext(requests, None)
        except asyncio.CancelledError:
            if self.closed is None:
                raise  # the client went away, or the server stops: not ours to swallow
            task.uncancel()
            return None
        finally:
            self._waiting = None

    def close(self) -> None:
        self._watched.set_waker(None)
