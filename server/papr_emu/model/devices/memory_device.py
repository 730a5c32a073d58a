"""What DIMMs and NVDIMMs share: a memory slot and a range of device memory.

QEMU numbers the slots of every memory device (pc-dimm and nvdimm) together and
places each in one device-memory address space, lowest fit first; each type checks
its own size rules and then asks :meth:`MemoryDevice.place` for a slot and address.

Example::

    >>> from papr_emu.model import Geometry
    >>> from papr_emu.model.devices import Inventory
    >>> g = Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4)
    >>> context = PlugContext(g, Inventory(), hotplugged=True)
    >>> slot, address = MemoryDevice.place(context, 256 << 20, None, None, "dimm")
    >>> slot, hex(address)
    (0, '0x40000000')
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ..errors import FailedPrecondition, InvalidArgument
from ..geometry import MemoryModel
from ..rtas import LMB_SIZE
from .base import Device, PlugContext
from .inventory import Inventory


@dataclass(eq=False)
class MemoryDevice(Device):
    """A device in a memory slot, occupying ``size`` bytes of device memory from ``address``."""

    size: int = 0
    slot: int = 0
    address: int = 0

    @property
    def slot_key(self) -> Hashable:
        return self.slot

    @property
    def slot_family(self) -> type:
        return MemoryDevice  # DIMMs and NVDIMMs take slots from one set

    @classmethod
    def place(
        cls, context: PlugContext, size: int, slot: int | None, address: int | None, field: str
    ) -> tuple[int, int]:
        """The slot and guest address for ``size`` bytes, or the error QEMU refuses them with.

        ``slot`` / ``address`` None: QEMU's defaults (the lowest free slot, the lowest
        range that fits). ``field`` prefixes the request fields an error names.
        """
        g, inventory = context.geometry, context.inventory
        if g.memory_model is MemoryModel.LMB:
            raise FailedPrecondition(
                "this platform assigns memory by LMB (memory model lmb): ask for it with RequestMemory"
            )
        if not g.lmb_count:
            raise FailedPrecondition(
                "memory devices (e.g. for memory hotplug) are not enabled, please specify the maxmem option"
            )
        if slot is not None:
            if not 0 <= slot < g.slots:
                raise InvalidArgument(f"{field}.slot", slot, f"invalid slot# {slot}, should be less than {g.slots}")
            if inventory.occupant(MemoryDevice, slot) is not None:
                raise FailedPrecondition(f"slot {slot} is busy", f"{field}.slot", slot)
        else:
            free = [s for s in range(g.slots) if inventory.occupant(MemoryDevice, s) is None]
            if not free:
                raise FailedPrecondition("no free slots available")
            slot = free[0]
        devices = memory_devices_by_address(inventory)
        used = sum(d.size for d in devices)
        if used + size > g.device_memory_size:
            raise FailedPrecondition(
                f"not enough space, currently {used:#x} in use of total space for memory devices "
                f"{g.device_memory_size:#x}"
            )
        if address is not None:
            if address % LMB_SIZE:
                raise InvalidArgument(f"{field}.address", address, "must be aligned to 256 MiB (one LMB)")
            if address < g.device_memory_base or address + size > g.device_memory_end:
                raise InvalidArgument(
                    f"{field}.address",
                    address,
                    f"can't add memory device [{address:#x}:{address + size - 1:#x}], usable range for "
                    f"memory devices [{g.device_memory_base:#x}:{g.device_memory_end - 1:#x}]",
                )
            for other in devices:
                if address < other.address + other.size and other.address < address + size:
                    raise FailedPrecondition(
                        f"address range conflicts with memory device id='{other.id}'", f"{field}.address", address
                    )
        else:  # QEMU's first fit, in address order
            address = g.device_memory_base
            for other in devices:
                if address + size <= other.address:
                    break
                address = max(address, other.address + other.size)
            if address + size > g.device_memory_end:
                raise FailedPrecondition(
                    "could not find position in guest address space for memory device - "
                    "memory fragmented due to alignments"
                )
        return slot, address


def memory_devices_by_address(inventory: Inventory[Device]) -> list[MemoryDevice]:
    """Every memory device (DIMMs and NVDIMMs) in address order: how QEMU places the next one."""
    return sorted(inventory.of_type(MemoryDevice), key=lambda d: d.address)
