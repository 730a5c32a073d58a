"""What the two server streams (WatchEvents, WatchInterrupts) share: polling and how they end.

A stream's thread blocks on its watcher's queue at most :data:`POLL_SECONDS` at a
time, so it notices a client that went away.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, NoReturn

import grpc

from ..model import Limits, SubscriptionClosed
from ..model.errors import shorten
from ..model.limits import exhausted

#: How often a blocked stream checks whether its client went away.
POLL_SECONDS: Final = 0.25


def abort_closed(context: grpc.ServicerContext, closed: SubscriptionClosed, platform: str) -> NoReturn:
    """End a stream whose watcher was closed: the server stops, or the platform was deleted."""
    if closed.reason == "shutdown":
        context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
    context.abort(grpc.StatusCode.NOT_FOUND, f"platform: {shorten(platform)}: was deleted")
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
