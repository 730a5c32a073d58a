"""The state directory (``serve --state-dir DIR``): platforms that outlive the server process.

Each platform has a directory ``DIR/platforms/<name>/`` with ``snapshot.json`` (a
:mod:`~papr_emu.model.snapshot` document and the number of journal records it covers) and
``journal.jsonl``: one line per call that can change the platform (a JSON array: the call's
name, its arguments and keyword arguments, and its wall-clock and monotonic readings; the
calls of one RTAS batch or session message share one line, an array of such arrays) (every RTAS call, plug,
unplug, CAS, memory request, fault rule, timeout sweep), written before the call's answer
leaves the server. A line holds the call's name and arguments and the clock readings the
call made, so replaying it at start-up does exactly what it did (the model is
deterministic given its clocks). Every ``compact_every`` records the platform is
snapshotted again and the journal starts over.

Durability: a line is written with one ``write()`` to the file, so once a call has
answered, its record survives the server being killed (``kill -9``); with
``sync = true`` each record is also ``fsync``-ed (surviving a machine crash, at a cost per
call). A torn last line (the server killed in the middle of the write) is recognised and
dropped: that call never answered. Why a journal of calls rather than SQLite: see
``bench/state_store.py`` and the README's performance section.

Each server run has an incarnation id (``Platforms.incarnation``, a UUID) that its events and
event streams carry, so a watcher that resumes can tell it talks to a new run; the snapshot
file names the run its journal was written in, so replayed calls remake their events in it.

Example::

    >>> import tempfile
    >>> from papr_emu.model import Platforms, default_geometry
    >>> with tempfile.TemporaryDirectory() as path:
    ...     state = StateDir(path)
    ...     platforms = Platforms(store=state)
    ...     _ = platforms.create("p", default_geometry()).set_indicator(9003, 0x10000001, 1)
    ...     state.close()
    ...     again = StateDir(path)
    ...     [p.name for p in again.recover(Platforms(store=again))]
    ['p']
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from .model.snapshot_codec import decode, encode

if TYPE_CHECKING:
    from .model import Platform, Platforms

JOURNAL_FORMAT: Final = 1
DEFAULT_COMPACT_EVERY: Final = 20_000

log = structlog.get_logger("papr_emu.state")


class StateError(Exception):
    """The state directory cannot be used (locked by another server, unreadable): one line."""


class ClockTape:
    """A platform's clocks: the real ones, with each call's readings recorded or played back."""

    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall, self._mono = wall, mono
        self._recording: list[list[float]] | None = None  # [wall readings, monotonic readings]
        self._playing: list[list[float]] | None = None

    def time(self) -> float:
        return self._read(0, self._wall)

    def monotonic(self) -> float:
        return self._read(1, self._mono)

    def _read(self, which: int, real: Callable[[], float]) -> float:
        if self._playing is not None and self._playing[which]:
            return self._playing[which].pop(0)
        value = real()
        if self._recording is not None:
            self._recording[which].append(value)
        return value

    def start(self) -> None:
        """Record the readings from now on (one call's)."""
        self._recording = [[], []]

    def stop(self) -> list[list[float]]:
        """The readings since :meth:`start`: [wall, monotonic]."""
        readings, self._recording = self._recording or [[], []], None
        return readings

    @contextlib.contextmanager
    def playing(self, readings: list[list[float]], offset: float) -> Iterator[None]:
        """Play back a record's readings; monotonic ones moved by ``offset`` (another run's clock)."""
        self._playing = [list(readings[0]), [m + offset for m in readings[1]]]
        try:
            yield
        finally:
            self._playing = None


class _CallRecord:
    """One call's record: the clock readings it makes, then the line (a context manager; cheap on purpose)."""

    __slots__ = ("args", "kwargs", "name", "store")

    def __init__(self, store: PlatformStore, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.store, self.name, self.args, self.kwargs = store, name, args, kwargs

    def __enter__(self) -> None:
        self.store.tape.start()

    def __exit__(self, *exc: object) -> None:
        wall, mono = self.store.tape.stop()
        # [op, args, kwargs, wall-clock readings, monotonic readings]; encoded when written
        self.store._append([self.name, self.args, self.kwargs, wall, mono])


def _encode_default(value: object) -> object:
    """What json cannot write by itself (bytes, enums, dataclasses): the snapshot codec's form."""
    return encode(value)


def _line(value: object) -> bytes:
    return (json.dumps(value, separators=(",", ":"), default=_encode_default) + "\n").encode()


class PlatformStore:
    """One platform's snapshot and journal."""

    def __init__(self, directory: Path, tape: ClockTape, sync: bool, compact_every: int) -> None:
        self.directory = directory
        self.tape = tape
        self._sync = sync
        self._compact_every = compact_every
        self._records = 0  # records in the journal since the snapshot
        self._total = 0  # records ever (the snapshot covers the first ``total - records``)
        self._journal: int | None = None
        self._pending: list[list[Any]] | None = None  # a group's records, written when it ends
        self.platform: Platform | None = None
        self.broken = False

    # --- writing ---------------------------------------------------------------------------------

    def start(self, platform: Platform, covered: int = 0) -> None:
        """Write the platform's snapshot and an empty journal; record its calls from now on."""
        self.platform = platform
        self._total = covered
        self._write_snapshot()
        platform.recorder = self

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CallRecord:
        """Around one call (under the platform's lock): its record is written before it returns."""
        return _CallRecord(self, name, args, kwargs)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Calls made inside (an RTAS batch) are written together, one line, when it ends (group commit)."""
        outer = self._pending is None
        if outer:
            self._pending = []
        try:
            yield
        finally:
            if outer:
                records, self._pending = self._pending, None
                if records:  # one record: its line; several: one line holding the list of them
                    self._write(_line(records[0] if len(records) == 1 else records), len(records))

    def _append(self, record: list[Any]) -> None:
        if self._pending is not None:
            self._pending.append(record)
        else:
            self._write(_line(record), 1)

    def _write(self, data: bytes, count: int) -> None:
        if self.broken or self._journal is None:
            return
        try:
            os.write(self._journal, data)
            if self._sync:
                os.fsync(self._journal)
        except OSError as error:  # a full disk: the platform goes on, no longer durable, and says so
            self.broken = True
            log.error("state.write_failed", directory=str(self.directory), error=str(error))
            return
        self._records += count
        self._total += count
        if self._records >= self._compact_every:
            self._write_snapshot()

    def _write_snapshot(self) -> None:
        assert self.platform is not None
        document = {
            "journal_format": JOURNAL_FORMAT,
            "covers": self._total,
            "monotonic": time.monotonic(),  # what the journal's monotonic readings are measured against
            "incarnation": self.platform.incarnation,  # the run the journal's calls are made in
            "snapshot": self.platform.snapshot(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / "snapshot.json.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(document, file, separators=(",", ":"))
            file.flush()
            if self._sync:
                os.fsync(file.fileno())
        # The journal goes with the old snapshot: start a new one first, then make the snapshot current.
        fresh = self.directory / "journal.jsonl.new"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.replace(temporary, self.directory / "snapshot.json")
        os.replace(fresh, self.directory / "journal.jsonl")
        if self._journal is not None:
            os.close(self._journal)
        self._journal = fd
        self._records = 0

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None

    def delete(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- reading ---------------------------------------------------------------------------------

    def records(self) -> tuple[dict[str, Any], list[list[Any]]]:
        """The snapshot document and the journal's whole records (a torn last line is dropped and cut)."""
        document = json.loads((self.directory / "snapshot.json").read_text(encoding="utf-8"))
        path = self.directory / "journal.jsonl"
        data = path.read_bytes() if path.exists() else b""
        records: list[list[Any]] = []
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn: the call it records never answered
            try:
                value = json.loads(line)
            except ValueError:
                break
            if value and isinstance(value[0], list):  # a group: several records in one line
                records.extend(value)
            else:
                records.append(value)
            good += len(line)
        if good < len(data):
            log.warning("state.torn_record", directory=str(self.directory), dropped_bytes=len(data) - good)
            with open(path, "r+b") as file:
                file.truncate(good)
        return document, records


def replay(platform: Platform, tape: ClockTape, records: list[list[Any]], offset: float) -> None:
    """Make every journaled call again, with its recorded clock readings."""
    from .model import PlatformError  # the model imports nothing from here

    for op, encoded_args, encoded_kwargs, wall, mono in records:
        method = getattr(platform, op)
        args = decode(encoded_args, "args")
        kwargs = {k: decode(v, f"kwargs.{k}") for k, v in encoded_kwargs.items()}
        with tape.playing([wall, mono], offset):
            try:
                method(*args, **kwargs)  # no recorder yet: not journaled again
            except PlatformError:
                pass  # it was refused the first time too


class StateDir:
    """A state directory: its lock and its platforms' stores."""

    def __init__(self, path: str | os.PathLike[str], sync: bool = False, compact_every: int = DEFAULT_COMPACT_EVERY):
        self.path = Path(path)
        self.sync = sync
        self.compact_every = compact_every
        try:
            (self.path / "platforms").mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StateError(f"state directory {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StateError(f"state directory {self.path} is in use by another papr-emu server") from None
        self._stores: dict[str, PlatformStore] = {}
        self._mutex = threading.Lock()

    def store_for(self, name: str) -> PlatformStore:
        """A new store for platform ``name`` (its clocks: :attr:`PlatformStore.tape`)."""
        store = PlatformStore(self.path / "platforms" / name, ClockTape(), self.sync, self.compact_every)
        with self._mutex:
            self._stores[name] = store
        return store

    def forget(self, name: str) -> None:
        """The platform was deleted: its directory goes."""
        with self._mutex:
            store = self._stores.pop(name, None)
        if store is not None:
            store.delete()

    def recover(self, platforms: Platforms) -> list[Platform]:
        """Bring back every platform the directory holds, in name order; the snapshot's then the journal's calls."""
        from .model import Platform

        recovered = []
        for directory in sorted(p for p in (self.path / "platforms").iterdir() if p.is_dir()):
            name = directory.name
            if not (directory / "snapshot.json").exists():  # created and killed before its first write
                shutil.rmtree(directory, ignore_errors=True)
                continue
            store = PlatformStore(directory, ClockTape(), self.sync, self.compact_every)
            document, records = store.records()
            snapshot = document["snapshot"]
            tape = store.tape
            offset = time.monotonic() - float(document["monotonic"])  # this run's monotonic clock vs the last
            incarnation = str(document.get("incarnation", ""))

            def build(
                name: str = name,
                snapshot: dict[str, Any] = snapshot,
                tape: ClockTape = tape,
                records: list[list[Any]] = records,
                offset: float = offset,
                incarnation: str = incarnation,
            ) -> Platform:
                platform = Platform.restore(
                    name, snapshot, clock=tape.time, monotonic=tape.monotonic,
                    limits=platforms.limits, lmb_budget=platforms.lmbs, incarnation=incarnation,
                )  # fmt: skip
                replay(platform, tape, records, offset)  # the events it makes again are the last run's
                return platform

            platform = platforms.adopt(name, build)
            with self._mutex:
                self._stores[name] = store
            store.start(platform, int(document["covers"]) + len(records))
            log.info("state.recovered", platform=name, records=len(records))
            recovered.append(platform)
        return recovered

    def close(self) -> None:
        with self._mutex:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


__all__ = ["ClockTape", "PlatformStore", "StateDir", "StateError", "replay"]
