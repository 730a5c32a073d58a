"""What the two server streams (WatchEvents, WatchInterrupts) share: polling and how they end.

A stream's thread blocks on its watcher's queue at most :data:`POLL_SECONDS` at a
time, so it notices a client that went away.
"""

from __future__ import annotations

from typing import Final, NoReturn

import grpc

from ..model import SubscriptionClosed
from ..model.errors import shorten

#: How often a blocked stream checks whether its client went away.
POLL_SECONDS: Final = 0.25


def abort_closed(context: grpc.ServicerContext, closed: SubscriptionClosed, platform: str) -> NoReturn:
    """End a stream whose watcher was closed: the server stops, or the platform was deleted."""
    if closed.reason == "shutdown":
        context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
    context.abort(grpc.StatusCode.NOT_FOUND, f"platform: {shorten(platform)}: was deleted")
    raise AssertionError("unreachable: abort raises")
