"""A PCI function on a PHB's root bus; function 0 speaks for its whole slot.

QEMU 7.2 announces a multi-function slot when function 0 arrives (functions
plugged before it wait), and unplugging function 0 takes the slot's other
functions with it.

Example::

    >>> f = PciFunction("nic", hotplugged=True, phb_index=0, slot=1, function=2)
    >>> hex(f.drc_indexes[0]), f.parent_path
    ('0x4000000a', '/pci@800000020000000')
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

from ..devicetree import Node
from ..drc import PCI, DrcType
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..fragments import E1000_DATA, VIRTIO_NET_DATA, PciDeviceData, pci_function_node, phb_node_name
from ..rtas_log import HP_ACTION_ADD, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, HotplugLog
from .base import Device, DeviceType, FragmentContext, PlugContext
from .inventory import Inventory
from .phb import PCI_FUNCTIONS, PCI_SLOTS, Phb, pci_drc_id


class PciModel(enum.Enum):
    """Emulated PCI device models: QEMU's device name and its config-space data."""

    E1000 = ("e1000", E1000_DATA)
    VIRTIO_NET = ("virtio-net-pci", VIRTIO_NET_DATA)

    @property
    def qemu_name(self) -> str:
        return self.value[0]

    @property
    def data(self) -> PciDeviceData:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class PciFunctionParams:
    phb_index: int
    slot: int
    function: int
    model: PciModel


@dataclass(eq=False)
class PciFunction(Device):
    type: ClassVar[DeviceType] = DeviceType.PCI_FUNCTION
    drc_type: ClassVar[DrcType] = PCI
    request_type: ClassVar[builtins.type] = PciFunctionParams
    unplug_in_progress: ClassVar[str | None] = "PCI device unplug already in progress for device {id}"

    phb_index: int = 0
    slot: int = 0
    function: int = 0
    model: PciModel = PciModel.E1000

    @property
    def devfn(self) -> int:
        return (self.slot << 3) | self.function

    @property
    def drc_ids(self) -> range:
        drc_id = pci_drc_id(self.phb_index, self.devfn)
        return range(drc_id, drc_id + 1)

    @property
    def params(self) -> PciFunctionParams:
        return PciFunctionParams(self.phb_index, self.slot, self.function, self.model)

    @property
    def slot_key(self) -> Hashable:
        return (self.phb_index, self.devfn)

    @property
    def parent_path(self) -> str:
        return "/" + phb_node_name(self.phb_index)

    @property
    def boot_order(self) -> int:
        return self.devfn

    @classmethod
    def id_base(cls, request: PciFunctionParams) -> str:
        return f"pci{request.phb_index}.{request.slot}.{request.function}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: PciFunctionParams) -> PciFunction:
        inventory = context.inventory
        for field, value in (("phb_index", request.phb_index), ("slot", request.slot), ("function", request.function)):
            if value < 0:
                raise InvalidArgument(f"pci_function.{field}", value, "must not be negative")
        if request.slot >= PCI_SLOTS:
            raise InvalidArgument("pci_function.slot", request.slot, f"must be below {PCI_SLOTS}")
        if request.function >= PCI_FUNCTIONS:
            raise InvalidArgument("pci_function.function", request.function, f"must be below {PCI_FUNCTIONS}")
        if inventory.occupant(Phb, request.phb_index) is None:
            raise NotFound("pci_function.phb_index", request.phb_index, f"PHB (bus 'pci.{request.phb_index}')")
        occupant = _function(inventory, request.phb_index, request.slot, request.function)
        if occupant is not None:
            raise FailedPrecondition(
                f"PCI: slot {request.slot} function {request.function} not available for "
                f'{request.model.qemu_name}, in use by {occupant.model.qemu_name},id "{occupant.id}"'
            )
        function0 = _function(inventory, request.phb_index, request.slot, 0)
        if context.hotplugged and request.function != 0 and function0 is not None:
            raise FailedPrecondition(
                f"PCI: slot {request.slot} function 0 already occupied by {function0.model.qemu_name}, "
                "additional functions can no longer be exposed to guest."
            )
        return PciFunction(
            device_id, context.hotplugged, phb_index=request.phb_index, slot=request.slot,
            function=request.function, model=request.model,
        )  # fmt: skip

    def plug_logs(self, inventory: Inventory[Device], count_indexed: bool) -> list[HotplugLog]:
        """Function 0 announces every present function of its slot; the others wait for function 0."""
        if self.function != 0:
            return []
        return [
            HotplugLog(self.drc_type.hotplug_resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, index)
            for index in self._slot_connectors(inventory, range(PCI_FUNCTIONS))
        ]

    def unplug_companions(self, inventory: Inventory[Device]) -> list[Device]:
        """Unplugging function 0 takes the slot's other functions with it (QEMU 7.2 cascades)."""
        if self.function != 0:
            return []
        others = (_function(inventory, self.phb_index, self.slot, f) for f in range(1, PCI_FUNCTIONS))
        return [f for f in others if f is not None and not f.unplug_pending]

    def unplug_logs(self, inventory: Inventory[Device]) -> list[HotplugLog]:
        """Function 0 announces the removal of every function still present, last function first.

        A function the guest never unisolated is already gone and gets no log.
        """
        if self.function != 0:
            return []
        return [
            HotplugLog(self.drc_type.hotplug_resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, index)
            for index in self._slot_connectors(inventory, range(PCI_FUNCTIONS - 1, -1, -1))
        ]

    def _slot_connectors(self, inventory: Inventory[Device], functions: range) -> list[int]:
        """The connectors still attached to the slot's functions, in the order of ``functions``."""
        indexes: list[int] = []
        for function in functions:
            present = _function(inventory, self.phb_index, self.slot, function)
            if present is not None:
                indexes.extend(present.attached)
        return indexes

    def fragment(self, drc_index: int, context: FragmentContext, hotplugged: bool = True) -> Node:
        model = self.model
        return pci_function_node(model.data, model.qemu_name, self.phb_index, 0, self.slot, self.function, drc_index)


def _function(inventory: Inventory[Device], phb_index: int, slot: int, function: int) -> PciFunction | None:
    return inventory.occupant(PciFunction, (phb_index, (slot << 3) | function))
