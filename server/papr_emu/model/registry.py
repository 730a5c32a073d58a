"""The set of platforms a server holds, by name.

Example::

    >>> platforms = Platforms()
    >>> platforms.create("lab", Geometry.build()).name
    'lab'
    >>> [p.name for p in platforms.list()]
    ['lab']
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from .devices import PlugRequest
from .errors import AlreadyExists, InvalidArgument, NotFound, PlatformError
from .geometry import Geometry
from .limits import Budget, Limits, exhausted
from .platform import Platform
from .unplug_timeouts import UnplugTimeouts

PLATFORM_NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9-]{0,62}")
DEFAULT_PLATFORM: Final = "default"


def default_geometry() -> Geometry:
    """The built-in default: QEMU's ``-m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4``."""
    return Geometry.build(memory=1 << 30, max_memory=4 << 30, slots=4, cpus=1, max_cpus=4)


class Clocks(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class PlatformRecord(Protocol):
    """Where one platform's calls go to be kept (a state directory's store)."""

    @property
    def tape(self) -> Clocks:
        """The clocks the platform must read (so its calls can be replayed)."""

    def start(self, platform: Platform) -> None:
        """Keep the platform as it is now, and its calls from now on."""


class Store(Protocol):
    """What keeps platforms across server runs (papr_emu.state.StateDir); the model does no I/O."""

    def store_for(self, name: str) -> PlatformRecord: ...

    def forget(self, name: str) -> None: ...


class Platforms:
    """Platforms by name. Creating and deleting lock the registry only briefly."""

    def __init__(self, limits: Limits | None = None, store: Store | None = None, incarnation: str = "") -> None:
        """``incarnation`` names this server run (a new UUID by default): every event made from now carries it."""
        self.limits = limits or Limits()
        self.incarnation = incarnation or str(uuid.uuid4())
        self.lmbs = Budget(self.limits.lmbs)  # shared by every platform
        self._lock = threading.Lock()
        self._platforms: dict[str, Platform] = {}
        self._store = store

    def create(
        self,
        name: str,
        geometry: Geometry,
        coldplug: Iterable[tuple[str, PlugRequest]] = (),
        unplug_timeouts: UnplugTimeouts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Platform:
        """A new platform; ``clock`` (wall-clock seconds) stamps its events and event logs."""
        return self._add(
            name,
            lambda clocks: Platform(
                name, geometry, coldplug, clock=clocks.time if clocks else clock, unplug_timeouts=unplug_timeouts,
                monotonic=clocks.monotonic if clocks else time.monotonic, limits=self.limits, lmb_budget=self.lmbs,
                incarnation=self.incarnation,
            ),
            "platform.created",
        )  # fmt: skip

    def restore(self, name: str, document: object, clock: Callable[[], float] = time.time) -> Platform:
        """A new platform named ``name`` in the state of a snapshot (:meth:`Platform.snapshot`)."""
        return self._add(
            name,
            lambda clocks: Platform.restore(
                name, document, clock=clocks.time if clocks else clock,
                monotonic=clocks.monotonic if clocks else time.monotonic, limits=self.limits, lmb_budget=self.lmbs,
                incarnation=self.incarnation,
            ),
            "platform.restored",
        )  # fmt: skip

    def adopt(self, name: str, build: Callable[[], Platform]) -> Platform:
        """Add a platform built elsewhere (a state directory's recovery, which keeps it itself).

        Built, it makes its events in this run's incarnation from now on.
        """

        def built(clocks: Clocks | None) -> Platform:
            platform = build()
            platform.incarnation = self.incarnation
            return platform

        return self._add(name, built, "platform.recovered", keep=False)

    def _add(self, name: str, build: Callable[[Clocks | None], Platform], event: str, keep: bool = True) -> Platform:
        if not PLATFORM_NAME_PATTERN.fullmatch(name):
            raise InvalidArgument(
                "name",
                name,
                "must be lower-case letters, digits and '-', starting with a letter (at most 63)",
            )
        with self._lock:
            self._check_free(name)
        # Built outside the registry lock (a large platform takes a moment); a racing create of
        # the same name is caught again below.
        record = self._store.store_for(name) if self._store is not None and keep else None
        platform = build(record.tape if record is not None else None)
        with self._lock:
            try:
                self._check_free(name)
            except PlatformError:
                platform.close()  # gives its LMBs back
                raise
            self._platforms[name] = platform
            if record is not None:
                record.start(platform)  # under the registry lock: a delete cannot come in between
        platform.log.info(event, connectors=sum(n for _, n in platform.info().connector_counts))
        return platform

    def _check_free(self, name: str) -> None:
        """The name is free and there is room for one more platform (caller holds the lock)."""
        if name in self._platforms:
            raise AlreadyExists("name", name, "a platform with this name exists")
        if len(self._platforms) >= self.limits.platforms:
            raise exhausted("platforms", self.limits.platforms, f"the server holds {len(self._platforms)} platforms")

    def get(self, name: str) -> Platform:
        platform = self._platforms.get(name)  # a dict read is atomic: no lock on every RTAS call
        if platform is None:
            raise NotFound("platform", name, "platform")
        return platform

    def list(self) -> list[Platform]:
        with self._lock:
            return [self._platforms[name] for name in sorted(self._platforms)]

    def delete(self, name: str) -> None:
        with self._lock:
            platform = self._platforms.pop(name, None)
        if platform is None:
            raise NotFound("platform", name, "platform")
        if self._store is not None:
            self._store.forget(name)
        platform.close()
        platform.log.info("platform.deleted")
