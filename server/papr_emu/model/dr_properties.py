"""The DR properties of a device-tree node: the four ibm,drc-* arrays, or ibm,drc-info after CAS.

Example::

    >>> from papr_emu.model.drc import CPU
    >>> ranges = [DrcRange(CPU, first_id=0, count=2, step=1, parent_path="/cpus")]
    >>> [name for name, _ in dr_properties(ranges, drc_info=False)]
    ['ibm,drc-types', 'ibm,drc-names', 'ibm,drc-power-domains', 'ibm,drc-indexes']
    >>> drc_info_records(ranges)[0].name_prefix
    'CPU '
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .devicetree import PropertyList, cells, string, strings
from .drc_table import DrcRange
from .rtas import LIVE_INSERTION_DOMAIN


@dataclass(frozen=True, slots=True)
class DrcInfoRecord:
    """One ibm,drc-info record: a run of connectors with sequential indexes and name suffixes."""

    type_string: str
    name_prefix: str
    first_index: int
    first_suffix: int
    count: int
    increment: int
    power_domain: int = -1

    def encode(self) -> bytes:
        """Strings NUL-terminated, then five cells, unaligned (LoPAR)."""
        return (
            string(self.type_string)
            + string(self.name_prefix)
            + cells(self.first_index, self.first_suffix, self.count, self.increment, self.power_domain)
        )


@dataclass(frozen=True, slots=True)
class DrcArrays:
    """The four ibm,drc-* arrays of a node, one entry per connector."""

    indexes: Sequence[int]
    names: Sequence[str]
    types: Sequence[str]

    @classmethod
    def from_ranges(cls, ranges: Sequence[DrcRange]) -> DrcArrays:
        """Every connector of the ranges, in range order (ascending index)."""
        return cls(
            indexes=[i for r in ranges for i in r.indexes()],
            names=[r.type.name(drc_id) for r in ranges for drc_id in r.ids()],
            types=[r.type.type_string for r in ranges for _ in r.ids()],
        )

    def properties(self) -> list[tuple[str, bytes]]:
        """In QEMU's wire order: types, names, power-domains (all -1, live insertion), indexes."""
        count = cells(len(self.indexes))
        return [
            ("ibm,drc-types", count + strings(self.types)),
            ("ibm,drc-names", count + strings(self.names)),
            ("ibm,drc-power-domains", count + cells(*[LIVE_INSERTION_DOMAIN] * len(self.indexes))),
            ("ibm,drc-indexes", count + cells(*self.indexes)),
        ]


def drc_info_records(ranges: Sequence[DrcRange]) -> list[DrcInfoRecord]:
    return [
        DrcInfoRecord(r.type.type_string, r.type.name_prefix, r.first_index, r.first_id, r.count, r.step)
        for r in ranges
        if r.count
    ]


def encode_drc_info(records: Sequence[DrcInfoRecord]) -> bytes:
    return cells(len(records)) + b"".join(r.encode() for r in records)


def dr_properties(ranges: Sequence[DrcRange], drc_info: bool) -> PropertyList:
    """The DR properties of a node listing ``ranges``: ibm,drc-info when CAS asked for it, else the arrays."""
    if drc_info:
        return [("ibm,drc-info", encode_drc_info(drc_info_records(ranges)))]
    return DrcArrays.from_ranges(ranges).properties()


__all__ = ["DrcArrays", "DrcInfoRecord", "dr_properties", "drc_info_records", "encode_drc_info"]
