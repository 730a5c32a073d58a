"""A PCI host bridge: one connector, and a bus whose PCI connectors come and go with it.

Example::

    >>> phb = Phb("phb1", hotplugged=True, index=1)
    >>> phb.children_path(), [hex(r.first_index) for r in phb.connector_ranges()]
    ('/pci@800000020000001', ['0x40010000'])
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar, Final

from ..devicetree import Node
from ..drc import PCI, PHB, DrcType
from ..drc_table import DrcRange
from ..errors import FailedPrecondition, InvalidArgument
from ..fragments import phb_node, phb_node_name
from ..geometry import MAX_PHBS
from .base import Device, DeviceType, FragmentContext, PlugContext
from .inventory import Inventory

PCI_SLOTS: Final = 32
PCI_FUNCTIONS: Final = 8


def pci_drc_id(phb_index: int, devfn: int, chassis: int = 0) -> int:
    """QEMU: (phb index << 16) | (chassis << 8) | devfn; chassis 0 on a root bus."""
    return (phb_index << 16) | (chassis << 8) | devfn


@dataclass(frozen=True, slots=True)
class PhbParams:
    index: int


@dataclass(eq=False)
class Phb(Device):
    type: ClassVar[DeviceType] = DeviceType.PHB
    drc_type: ClassVar[DrcType] = PHB
    request_type: ClassVar[builtins.type] = PhbParams
    unplug_in_progress: ClassVar[str | None] = "PCI Host Bridge unplug already in progress for device {id}"

    index: int = 0

    @property
    def drc_ids(self) -> range:
        return range(self.index, self.index + 1)

    @property
    def params(self) -> PhbParams:
        return PhbParams(self.index)

    @property
    def slot_key(self) -> Hashable:
        return self.index

    @property
    def parent_path(self) -> str:
        return "/"

    @property
    def boot_order(self) -> int:
        return self.index

    @classmethod
    def id_base(cls, request: PhbParams) -> str:
        return f"phb{request.index}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: PhbParams) -> Phb:
        if request.index < 0:
            raise InvalidArgument("phb.index", request.index, "must not be negative")
        if request.index >= MAX_PHBS:
            raise InvalidArgument("phb.index", request.index, f'"index" for PAPR PHB is too large (max {MAX_PHBS - 1})')
        if context.inventory.occupant(Phb, request.index) is not None:
            raise FailedPrecondition(f"PHB {request.index} already attached", "phb.index", request.index)
        return Phb(device_id, context.hotplugged, index=request.index)

    def children_path(self) -> str:
        return "/" + phb_node_name(self.index)

    def connector_ranges(self) -> list[DrcRange]:
        """The PCI connectors of the bus: every devfn of its root bus."""
        return [DrcRange(PCI, pci_drc_id(self.index, 0), PCI_SLOTS * PCI_FUNCTIONS, 1, self.children_path())]

    def dependents(self, inventory: Inventory[Device]) -> list[Device]:
        """The bus goes with the PHB, and with the bus every function still on it."""
        bus = self.children_path()
        return sorted((d for d in inventory if d.parent_path == bus), key=lambda d: d.boot_order)

    def fragment(self, drc_index: int, context: FragmentContext, hotplugged: bool = True) -> Node:
        """The PHB node with, as children, the node of every function on its bus (QEMU's spapr_dt_phb)."""
        bus = self.children_path()
        node = phb_node(self.index, drc_index, context.dr_properties(bus), hotplugged)
        node.children = context.nodes_under(bus, hotplugged)
        return node
