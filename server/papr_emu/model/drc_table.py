"""A platform's connectors: contiguous ranges per type, objects made on demand.

A connector that was never touched is in its type's empty state with no
device, so it need not exist as an object: the table holds ranges (a handful
per platform) and creates a :class:`~.drc.Drc` the first time a connector is
looked up for a change. Building a platform is therefore cheap whatever its
size, and an idle connector costs nothing.

Example::

    >>> from papr_emu.model.drc import LMB
    >>> table = DrcTable()
    >>> table.add_range(DrcRange(LMB, first_id=4, count=12, step=1, parent_path="/"))
    >>> table.get(0x80000004).name, table.get(0x80000010)
    ('LMB 4', None)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic

from .drc import DRC_TYPES, Drc, DrcType, OccupantT

__all__ = ["DrcRange", "DrcTable"]


@dataclass(frozen=True, slots=True)
class DrcRange:
    """Connectors ``first_id, first_id + step, ...`` (``count`` of them) of one type."""

    type: DrcType
    first_id: int
    count: int
    step: int
    parent_path: str

    @property
    def first_index(self) -> int:
        return self.type.index(self.first_id)

    @property
    def last_index(self) -> int:
        return self.type.index(self.first_id + (self.count - 1) * self.step)

    def ids(self) -> range:
        return range(self.first_id, self.first_id + self.count * self.step, self.step)

    def indexes(self) -> range:
        first = self.first_index
        return range(first, first + self.count * self.step, self.step)

    def holds(self, index: int) -> bool:
        offset = index - self.first_index
        return 0 <= offset < self.count * self.step and offset % self.step == 0


class DrcTable(Generic[OccupantT]):
    """Ranges sorted by first index, plus the connectors that have been materialised."""

    def __init__(self) -> None:
        self._ranges: list[DrcRange] = []
        self._firsts: list[int] = []
        self._drcs: dict[int, Drc[OccupantT]] = {}

    def add_range(self, drc_range: DrcRange) -> None:
        if drc_range.count <= 0:
            return
        position = bisect.bisect(self._firsts, drc_range.first_index)
        self._ranges.insert(position, drc_range)
        self._firsts.insert(position, drc_range.first_index)

    def remove_range(self, drc_range: DrcRange) -> None:
        position = self._ranges.index(drc_range)
        del self._ranges[position]
        del self._firsts[position]
        for index in drc_range.indexes():
            self._drcs.pop(index, None)

    def range_of(self, index: int) -> DrcRange | None:
        position = bisect.bisect(self._firsts, index) - 1
        if position >= 0 and self._ranges[position].holds(index):
            return self._ranges[position]
        return None

    def get(self, index: int) -> Drc[OccupantT] | None:
        """The connector with this index (made on first use), or None if there is none."""
        drc = self._drcs.get(index)
        if drc is None:
            drc_range = self.range_of(index)
            if drc_range is None:
                return None
            drc = self._drcs[index] = Drc(drc_range.type, index)
        return drc

    def peek(self, index: int) -> Drc[OccupantT] | None:
        """Like :meth:`get` for reading only: an untouched connector is not stored."""
        drc = self._drcs.get(index)
        if drc is None:
            drc_range = self.range_of(index)
            return None if drc_range is None else Drc(drc_range.type, index)
        return drc

    def materialised(self) -> list[Drc[OccupantT]]:
        """The connectors not in their initial state (a snapshot's); the rest exist only as ranges."""
        return [d for d in self._drcs.values() if not d.is_initial()]

    def ranges(self, drc_type: DrcType | None = None) -> list[DrcRange]:
        return [r for r in self._ranges if drc_type is None or r.type is drc_type]

    def iter_from(self, start_index: int, drc_type: DrcType | None = None) -> Iterator[tuple[Drc[OccupantT], DrcRange]]:
        """Connectors with index >= start_index, ascending (untouched ones not stored)."""
        for drc_range in self.ranges(drc_type):
            if drc_range.last_index < start_index:
                continue
            for index in drc_range.indexes():
                if index >= start_index:
                    drc = self._drcs.get(index)
                    yield (drc if drc is not None else Drc(drc_range.type, index)), drc_range

    def count(self, drc_type: DrcType | None = None) -> int:
        return sum(r.count for r in self.ranges(drc_type))

    def counts(self) -> list[tuple[DrcType, int]]:
        """(type, count) in DRC type order, for types that have connectors."""
        result = [(t, self.count(t)) for t in sorted(DRC_TYPES, key=lambda t: t.type_shift)]
        return [(t, n) for t, n in result if n]
