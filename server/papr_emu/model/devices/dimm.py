"""A DIMM: a run of 256 MiB LMBs at a guest address, in one memory slot.

Example::

    >>> dimm = Dimm("dimm0", hotplugged=True, size=512 << 20, slot=0, address=1 << 30)
    >>> [hex(i) for i in dimm.drc_indexes], dimm.fragment(0x80000005, None).name
    (['0x80000004', '0x80000005'], 'memory@50000000')
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import ClassVar

from ..devicetree import Node
from ..drc import LMB, DrcType
from ..errors import InvalidArgument
from ..fragments import lmb_node
from ..rtas import LMB_SIZE
from ..rtas_log import HP_ACTION_ADD, HP_ACTION_REMOVE, HP_ID_DRC_COUNT, HP_ID_DRC_COUNT_INDEXED, HotplugLog
from .base import Device, DeviceType, FragmentContext, PlugContext
from .inventory import Inventory
from .memory_device import MemoryDevice


@dataclass(frozen=True, slots=True)
class DimmRequest:
    """Plug a DIMM: size, and optionally the slot and guest address (else QEMU's first fit)."""

    size: int
    slot: int | None = None
    address: int | None = None


@dataclass(frozen=True, slots=True)
class DimmParams:
    size: int
    slot: int
    address: int


@dataclass(eq=False)
class Dimm(MemoryDevice):
    type: ClassVar[DeviceType] = DeviceType.DIMM
    drc_type: ClassVar[DrcType] = LMB
    request_type: ClassVar[builtins.type] = DimmRequest
    unplug_in_progress: ClassVar[str | None] = "Memory unplug already in progress for device {id}"
    unplug_needs_hotplug_events: ClassVar[str | None] = "Memory hot unplug not supported for this guest"

    @property
    def drc_ids(self) -> range:
        first = self.address // LMB_SIZE
        return range(first, first + self.size // LMB_SIZE)

    @property
    def params(self) -> DimmParams:
        return DimmParams(self.size, self.slot, self.address)

    @property
    def memory_blocks(self) -> int:
        return len(self.drc_ids)

    @property
    def assigned_memory(self) -> tuple[int, int] | None:
        return self.address, self.size

    @classmethod
    def default_id(cls, request: DimmRequest, inventory: Inventory[Device]) -> str:
        """QEMU-style "dimm<n>": the first free n."""
        n = 0
        while f"dimm{n}" in inventory:
            n += 1
        return f"dimm{n}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: DimmRequest) -> Dimm:
        size = request.size
        if size <= 0 or size % LMB_SIZE:
            raise InvalidArgument("dimm.size_bytes", size, "Hotplugged memory size must be a multiple of 256 MB")
        slot, address = cls.place(context, size, request.slot, request.address, "dimm")
        return Dimm(device_id, context.hotplugged, size=size, slot=slot, address=address)

    def plug_logs(self, inventory: Inventory[Device], count_indexed: bool) -> list[HotplugLog]:
        resource, indexes = self.drc_type.hotplug_resource, self.drc_indexes
        if count_indexed:  # the guest negotiated the hot-plug event source
            return [HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_COUNT_INDEXED, indexes[0], len(indexes))]
        return [HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_COUNT, count=len(indexes))]  # any free LMBs

    def unplug_logs(self, inventory: Inventory[Device]) -> list[HotplugLog]:
        resource, indexes = self.drc_type.hotplug_resource, self.drc_indexes
        return [HotplugLog(resource, HP_ACTION_REMOVE, HP_ID_DRC_COUNT_INDEXED, indexes[0], len(indexes))]

    def fragment(self, drc_index: int, context: FragmentContext | None, hotplugged: bool = True) -> Node:
        return lmb_node(self.drc_type.id(drc_index) * LMB_SIZE)


def dimms_by_address(inventory: Inventory[Device]) -> list[Dimm]:
    """The DIMMs in address order (how QEMU places the next one and lists them in drconf memory)."""
    return sorted(inventory.of_type(Dimm), key=lambda d: d.address)
