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
    dimm_extents: tuple[tuple[int, int], ...]  # (address, size) of the present DIMMs, in address order
