"""What one client may make a shared server hold: every limit has a default, a flag and a TOML key.

A request that would go over a limit is refused with :class:`~.errors.ResourceExhausted`,
which names the limit, its value, its flag and its key, and changes nothing.

Example::

    >>> budget = Budget(limit=4)
    >>> budget.reserve(3), budget.reserve(2), budget.used
    (True, False, 3)
    >>> LIMITS["queued_event_logs"].flag
    '--max-queued-event-logs'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Final

from .errors import ResourceExhausted


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's limits (the defaults fit a shared server on a 2-core, 24 GiB machine)."""

    #: Platforms one server holds.
    platforms: int = 256
    #: LMBs (256 MiB each) attached to DIMMs on one platform: 262,144 is 64 TiB, the largest maxmem.
    lmbs_per_platform: int = 262_144
    #: LMBs attached on all platforms together (about 200 B each: 1,048,576 is about 200 MB).
    lmbs: int = 1_048_576
    #: Hotplug event logs queued on one platform, waiting for the guest's check-exception.
    queued_event_logs: int = 4096
    #: Open streams (WatchEvents, WatchInterrupts, RTAS sessions) on the server. An idle stream
    #: holds no thread, a few kilobytes; 2,000 idle ones leave unary calls as fast (bench/idle_streams.py).
    streams: int = 4096
    #: Open streams on one platform (a guest stub holds three: events, interrupts, its RTAS session).
    streams_per_platform: int = 64
    #: Bytes in one request or response message (gRPC's own default, 4 MiB).
    message_bytes: int = 4 << 20
    #: RTAS calls in one ExecuteBatch or Session request (a walk counts as one).
    batch_calls: int = 16_384

    def __post_init__(self) -> None:
        for item in fields(self):
            check_limit(item.name, getattr(self, item.name))


@dataclass(frozen=True, slots=True)
class LimitOption:
    """How a limit is set: its command-line flag, its key in the TOML file's [limits] table."""

    name: str
    help: str

    @property
    def flag(self) -> str:
        return "--max-" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        return f"limits.{self.name}"


LIMITS: Final = {
    option.name: option
    for option in (
        LimitOption("platforms", "platforms the server holds"),
        LimitOption("lmbs_per_platform", "256 MiB LMBs attached to DIMMs on one platform"),
        LimitOption("lmbs", "256 MiB LMBs attached on all platforms together"),
        LimitOption("queued_event_logs", "hotplug event logs queued on one platform for the guest"),
        LimitOption("streams", "open WatchEvents/WatchInterrupts/Session streams"),
        LimitOption("streams_per_platform", "open streams on one platform"),
        LimitOption("message_bytes", "bytes in one request or response"),
        LimitOption("batch_calls", "RTAS calls in one ExecuteBatch or Session request"),
    )
}


def check_limit(name: str, value: object) -> None:
    """ValueError naming the limit's TOML key unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{LIMITS[name].key}: {value!r} is not a positive integer")


def exhausted(name: str, value: int, what: str) -> ResourceExhausted:
    """The refusal for limit ``name`` (at ``value``): ``what`` says what the request would have done."""
    option = LIMITS[name]
    return ResourceExhausted(name, value, f"{what} ({option.flag} / {option.key})")


class Budget:
    """A count shared by threads (LMBs on all platforms), that never goes over ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, count: int) -> bool:
        """Take ``count`` if it fits; False (nothing taken) if not."""
        with self._lock:
            if self.used + count > self.limit:
                return False
            self.used += count
            return True

    def release(self, count: int) -> None:
        with self._lock:
            self.used -= count
