"""A DIMM: a run of 256 MiB LMBs at a guest address, in one memory slot.

Example::

    >>> dimm = Dimm("dimm0", hotplugged=True, size=512 << 20, slot=0, address=1 << 30)
    >>> [hex(i) for i in dimm.drc_indexes], dimm.fragment(0x80000005, None).name
    (['0x80000004', '0x80000005'], 'memory@50000000')
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

from ..devicetree import Node
from ..drc import LMB, DrcType
from ..errors import FailedPrecondition, InvalidArgument
from ..fragments import lmb_node
from ..rtas import LMB_SIZE
from ..rtas_log import HP_ACTION_ADD, HP_ACTION_REMOVE, HP_ID_DRC_COUNT, HP_ID_DRC_COUNT_INDEXED, HotplugLog
from .base import Device, DeviceType, FragmentContext, PlugContext
from .inventory import Inventory


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
class Dimm(Device):
    type: ClassVar[DeviceType] = DeviceType.DIMM
    drc_type: ClassVar[DrcType] = LMB
    request_type: ClassVar[builtins.type] = DimmRequest
    unplug_in_progress: ClassVar[str | None] = "Memory unplug already in progress for device {id}"
    unplug_needs_hotplug_events: ClassVar[str | None] = "Memory hot unplug not supported for this guest"

    size: int = 0
    slot: int = 0
    address: int = 0

    @property
    def drc_ids(self) -> range:
        first = self.address // LMB_SIZE
        return range(first, first + self.size // LMB_SIZE)

    @property
    def params(self) -> DimmParams:
        return DimmParams(self.size, self.slot, self.address)

    @property
    def slot_key(self) -> Hashable:
        return self.slot

    @property
    def memory_blocks(self) -> int:
        return len(self.drc_ids)

    @classmethod
    def default_id(cls, request: DimmRequest, inventory: Inventory[Device]) -> str:
        """QEMU-style "dimm<n>": the first free n."""
        n = 0
        while f"dimm{n}" in inventory:
            n += 1
        return f"dimm{n}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: DimmRequest) -> Dimm:
        g, inventory, size = context.geometry, context.inventory, request.size
        if size <= 0 or size % LMB_SIZE:
            raise InvalidArgument("dimm.size_bytes", size, "Hotplugged memory size must be a multiple of 256 MB")
        if not g.lmb_count:
            raise FailedPrecondition(
                "memory devices (e.g. for memory hotplug) are not enabled, please specify the maxmem option"
            )
        if request.slot is not None:
            if not 0 <= request.slot < g.slots:
                raise InvalidArgument(
                    "dimm.slot", request.slot, f"invalid slot# {request.slot}, should be less than {g.slots}"
                )
            if inventory.occupant(Dimm, request.slot) is not None:
                raise FailedPrecondition(f"slot {request.slot} is busy", "dimm.slot", request.slot)
            slot = request.slot
        else:
            free = [s for s in range(g.slots) if inventory.occupant(Dimm, s) is None]
            if not free:
                raise FailedPrecondition("no free slots available")
            slot = free[0]
        dimms = dimms_by_address(inventory)
        used = sum(d.size for d in dimms)
        if used + size > g.device_memory_size:
            raise FailedPrecondition(
                f"not enough space, currently {used:#x} in use of total space for memory devices "
                f"{g.device_memory_size:#x}"
            )
        if request.address is not None:
            address = request.address
            if address % LMB_SIZE:
                raise InvalidArgument("dimm.address", address, "must be aligned to 256 MiB (one LMB)")
            if address < g.device_memory_base or address + size > g.device_memory_end:
                raise InvalidArgument(
                    "dimm.address",
                    address,
                    f"can't add memory device [{address:#x}:{address + size - 1:#x}], usable range for "
                    f"memory devices [{g.device_memory_base:#x}:{g.device_memory_end - 1:#x}]",
                )
            for other in dimms:
                if address < other.address + other.size and other.address < address + size:
                    raise FailedPrecondition(
                        f"address range conflicts with memory device id='{other.id}'", "dimm.address", address
                    )
        else:  # QEMU's first fit, in address order
            address = g.device_memory_base
            for other in dimms:
                if address + size <= other.address:
                    break
                address = max(address, other.address + other.size)
            if address + size > g.device_memory_end:
                raise FailedPrecondition(
                    "could not find position in guest address space for memory device - "
                    "memory fragmented due to alignments"
                )
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
