"""Plain views of a platform, taken under its lock: what device-tree nodes are built from.

The device tree and the configure-connector fragments are built from these
views, not from the platform object, so the tree builders depend on data only.

Example::

    >>> from papr_emu.model.drc import CPU
    >>> view = FragmentView(hpt_shift=24, drc_info=False,
    ...                     drc_ranges=(DrcRange(CPU, 0, 4, 1, "/cpus"),))
    >>> [r.count for r in view.ranges_under("/cpus")], view.dr_properties("/")[3]
    ([4], ('ibm,drc-indexes', b'\\x00\\x00\\x00\\x00'))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .cas import CasOptions
from .devices import Device
from .devicetree import Node, PropertyList
from .dr_properties import dr_properties
from .drc_table import DrcRange
from .geometry import Geometry


@dataclass(frozen=True, slots=True)
class FragmentView:
    """What device fragments need from their platform (a :class:`~.devices.FragmentContext`)."""

    hpt_shift: int  # log2 of the hash page table size, fixed at reset
    drc_info: bool  # the guest negotiated ibm,drc-info at CAS
    drc_ranges: tuple[DrcRange, ...]  # every connector range, ascending
    devices: tuple[Device, ...] = ()  # the devices whose nodes sit under other nodes (a PHB's functions)

    def ranges_under(self, parent_path: str) -> list[DrcRange]:
        """The connector ranges listed under the node at ``parent_path`` ("/", "/cpus", a PHB)."""
        return [r for r in self.drc_ranges if r.parent_path == parent_path]

    def dr_properties(self, path: str) -> PropertyList:
        return dr_properties(self.ranges_under(path), self.drc_info)

    def nodes_under(self, path: str, hotplugged: bool = True) -> list[Node]:
        """The nodes of ``devices`` under the node at ``path``, in boot order, each with the nodes under it.

        The one builder of nested nodes: the boot tree's ("/", "/cpus", a PHB's bus) and a
        PHB fragment's functions.
        """
        under = sorted((d for d in self.devices if d.parent_path == path), key=lambda d: d.boot_order)
        return [d.fragment(d.drc_indexes[0], self, hotplugged) for d in under]


@dataclass(frozen=True, slots=True)
class PlatformView:
    """What the full device tree is built from."""

    geometry: Geometry
    options: CasOptions
    fragments: FragmentView
    present: tuple[Device, ...]  # attached devices whose unplug is not pending, by id
    #: (address, size) of the LMB-backed memory drconf memory shows assigned, in address order: one
    #: extent per DIMM (QEMU lists each DIMM as a set), or per run of assigned LMBs (PowerVM style).
    assigned_extents: tuple[tuple[int, int], ...]


def assigned_extents(devices: Iterable[Device], merge_runs: bool = False) -> tuple[tuple[int, int], ...]:
    """The devices' assigned memory in address order; ``merge_runs``: adjacent extents become one.

    >>> from papr_emu.model.devices import Lmb
    >>> lmbs = [Lmb(f"lmb{n}", hotplugged=True, lmb_id=n) for n in (5, 4, 7)]
    >>> [(hex(a), s >> 28) for a, s in assigned_extents(lmbs, merge_runs=True)]
    [('0x40000000', 2), ('0x70000000', 1)]
    """
    extents: list[tuple[int, int]] = []
    for address, size in sorted(m for d in devices if (m := d.assigned_memory) is not None):
        if merge_runs and extents and sum(extents[-1]) == address:
            extents[-1] = (extents[-1][0], extents[-1][1] + size)
        else:
            extents.append((address, size))
    return tuple(extents)
