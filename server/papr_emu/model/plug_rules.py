"""QEMU 7.2's rules for plugging and unplugging, and the hotplug event logs each request queues.

Pure functions over the geometry and the inventory: what a device_add would be
refused with (QEMU's error texts, with the field and value they concern), which
device an accepted request becomes, and which hotplug logs it announces.

Example::

    >>> from papr_emu.model import Geometry
    >>> g = Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4)
    >>> prepare(g, Inventory(), "dimm1", DimmRequest(size=512 << 20), hotplugged=True).drc_indexes
    range(2147483652, 2147483654)
"""

from __future__ import annotations

from dataclasses import dataclass

from .devices import (
    DEVICE_ID_PATTERN,
    CpuCore,
    CpuCoreParams,
    Device,
    Dimm,
    PciFunction,
    PciFunctionParams,
    Phb,
    PhbParams,
)
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .geometry import MAX_PHBS, Geometry
from .inventory import PCI_FUNCTIONS, PCI_SLOTS, Inventory
from .rtas import LMB_SIZE
from .rtas_log import (
    HP_ACTION_ADD,
    HP_ACTION_REMOVE,
    HP_ID_DRC_COUNT,
    HP_ID_DRC_COUNT_INDEXED,
    HP_ID_DRC_INDEX,
    HotplugLog,
)


@dataclass(frozen=True, slots=True)
class DimmRequest:
    """Plug a DIMM: size, and optionally the slot and guest address (else QEMU's first fit)."""

    size: int
    slot: int | None = None
    address: int | None = None


PlugRequest = DimmRequest | CpuCoreParams | PciFunctionParams | PhbParams


def pick_id(inventory: Inventory, request: PlugRequest) -> str:
    """A free id named after the device ("dimm0", "core2", "phb1", "pci0.3.0")."""
    if isinstance(request, DimmRequest):
        n = 0
        while f"dimm{n}" in inventory:
            n += 1
        return f"dimm{n}"
    if isinstance(request, CpuCoreParams):
        base = f"core{request.core_id}"
    elif isinstance(request, PhbParams):
        base = f"phb{request.index}"
    else:
        base = f"pci{request.phb_index}.{request.slot}.{request.function}"
    candidate, n = base, 0
    while candidate in inventory:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def prepare(geometry: Geometry, inventory: Inventory, device_id: str, request: PlugRequest, hotplugged: bool) -> Device:
    """The device a plug request becomes, or the error QEMU would refuse it with."""
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise InvalidArgument(
            "id", device_id, "must be a letter followed by letters, digits, '-', '.' or '_' (at most 64)"
        )
    if device_id in inventory:
        raise AlreadyExists("id", device_id, "a device with this id exists")
    if isinstance(request, DimmRequest):
        return _prepare_dimm(geometry, inventory, device_id, request, hotplugged)
    if isinstance(request, CpuCoreParams):
        return _prepare_core(geometry, inventory, device_id, request, hotplugged)
    if isinstance(request, PhbParams):
        return _prepare_phb(inventory, device_id, request, hotplugged)
    return _prepare_pci(inventory, device_id, request, hotplugged)


def _prepare_dimm(g: Geometry, inventory: Inventory, device_id: str, request: DimmRequest, hotplugged: bool) -> Dimm:
    size = request.size
    if size <= 0 or size % LMB_SIZE:
        raise InvalidArgument("dimm.size_bytes", size, "Hotplugged memory size must be a multiple of 256 MB")
    if not g.lmb_count:
        raise FailedPrecondition(
            "memory devices (e.g. for memory hotplug) are not enabled, please specify the maxmem option"
        )
    if request.slot is not None:
        if request.slot >= g.slots:
            raise InvalidArgument(
                "dimm.slot", request.slot, f"invalid slot# {request.slot}, should be less than {g.slots}"
            )
        if inventory.dimm_in_slot(request.slot) is not None:
            raise FailedPrecondition(f"slot {request.slot} is busy", "dimm.slot", request.slot)
        slot = request.slot
    else:
        free = [s for s in range(g.slots) if inventory.dimm_in_slot(s) is None]
        if not free:
            raise FailedPrecondition("no free slots available")
        slot = free[0]
    dimms = inventory.dimms()
    used = sum(d.size for d in dimms)
    if used + size > g.device_memory_size:
        raise FailedPrecondition(
            f"not enough space, currently {used:#x} in use of total space for memory devices {g.device_memory_size:#x}"
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
                "could not find position in guest address space for memory device - memory fragmented due to alignments"
            )
    return Dimm(device_id, hotplugged, size=size, slot=slot, address=address)


def _prepare_core(
    g: Geometry, inventory: Inventory, device_id: str, request: CpuCoreParams, hotplugged: bool
) -> CpuCore:
    core_id = request.core_id
    if core_id % g.threads:
        raise InvalidArgument("cpu_core.core_id", core_id, f"invalid core id {core_id}")
    if core_id >= g.max_cpus:
        raise InvalidArgument("cpu_core.core_id", core_id, f"core id {core_id} out of range")
    if inventory.core(core_id) is not None:
        raise FailedPrecondition(f"core {core_id} already populated", "cpu_core.core_id", core_id)
    return CpuCore(device_id, hotplugged, core_id=core_id, threads=g.threads)


def _prepare_phb(inventory: Inventory, device_id: str, request: PhbParams, hotplugged: bool) -> Phb:
    if request.index >= MAX_PHBS:
        raise InvalidArgument("phb.index", request.index, f'"index" for PAPR PHB is too large (max {MAX_PHBS - 1})')
    if inventory.phb(request.index) is not None:
        raise FailedPrecondition(f"PHB {request.index} already attached", "phb.index", request.index)
    return Phb(device_id, hotplugged, index=request.index)


def _prepare_pci(inventory: Inventory, device_id: str, request: PciFunctionParams, hotplugged: bool) -> PciFunction:
    if request.slot >= PCI_SLOTS:
        raise InvalidArgument("pci_function.slot", request.slot, f"must be below {PCI_SLOTS}")
    if request.function >= PCI_FUNCTIONS:
        raise InvalidArgument("pci_function.function", request.function, f"must be below {PCI_FUNCTIONS}")
    if inventory.phb(request.phb_index) is None:
        raise NotFound("pci_function.phb_index", request.phb_index, f"PHB (bus 'pci.{request.phb_index}')")
    occupant = inventory.pci_function(request.phb_index, request.slot, request.function)
    if occupant is not None:
        raise FailedPrecondition(
            f"PCI: slot {request.slot} function {request.function} not available for "
            f'{request.model.qemu_name}, in use by {occupant.model.qemu_name},id "{occupant.id}"'
        )
    function0 = inventory.pci_function(request.phb_index, request.slot, 0)
    if hotplugged and request.function != 0 and function0 is not None:
        raise FailedPrecondition(
            f"PCI: slot {request.slot} function 0 already occupied by {function0.model.qemu_name}, "
            "additional functions can no longer be exposed to guest."
        )
    return PciFunction(
        device_id, hotplugged, phb_index=request.phb_index, slot=request.slot, function=request.function,
        model=request.model,
    )  # fmt: skip


def check_unplug(device: Device) -> None:
    """QEMU's refusals of a device_del."""
    if not device.unplug_pending:
        if isinstance(device, CpuCore) and device.core_id == 0:
            raise FailedPrecondition("Boot CPU core may not be unplugged")
        return
    if isinstance(device, Dimm):
        raise FailedPrecondition(f"Memory unplug already in progress for device {device.id}")
    if isinstance(device, Phb):
        raise FailedPrecondition(f"PCI Host Bridge unplug already in progress for device {device.id}")
    if isinstance(device, PciFunction):
        raise FailedPrecondition(f"PCI device unplug already in progress for device {device.id}")


def other_functions(inventory: Inventory, device: PciFunction) -> list[PciFunction]:
    """The slot's other functions that unplugging function 0 takes with it (QEMU 7.2 cascades)."""
    if device.function != 0:
        return []
    others = (inventory.pci_function(device.phb_index, device.slot, f) for f in range(1, PCI_FUNCTIONS))
    return [f for f in others if f is not None and not f.unplug_pending]


def _present_slot_functions(inventory: Inventory, device: PciFunction, functions: range) -> list[int]:
    indexes: list[int] = []
    for function in functions:
        present = inventory.pci_function(device.phb_index, device.slot, function)
        if present is not None:
            indexes.extend(present.attached)
    return indexes


def plug_logs(inventory: Inventory, device: Device, count_indexed: bool) -> list[HotplugLog]:
    """QEMU's hotplug "add" logs for a hot-plugged device (after it is attached)."""
    resource = device.drc_type.hotplug_resource
    indexes = device.drc_indexes
    if isinstance(device, Dimm):
        if count_indexed:  # the guest negotiated the hot-plug event source
            return [HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_COUNT_INDEXED, indexes[0], len(indexes))]
        return [HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_COUNT, count=len(indexes))]  # any free LMBs
    if isinstance(device, PciFunction):
        # Function 0 announces every present function of its slot; the others wait for function 0.
        if device.function != 0:
            return []
        return [
            HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, index)
            for index in _present_slot_functions(inventory, device, range(PCI_FUNCTIONS))
        ]
    return [HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, indexes[0])]


def unplug_logs(inventory: Inventory, device: Device) -> list[HotplugLog]:
    """QEMU's hotplug "remove" logs for an unplug request (after the connectors were marked)."""
    resource = device.drc_type.hotplug_resource
    indexes = device.drc_indexes
    if isinstance(device, Dimm):
        return [HotplugLog(resource, HP_ACTION_REMOVE, HP_ID_DRC_COUNT_INDEXED, indexes[0], len(indexes))]
    if isinstance(device, PciFunction):
        # Function 0 announces the removal of every function still present, last function first;
        # a function the guest never unisolated is already gone and gets no log.
        if device.function != 0:
            return []
        return [
            HotplugLog(resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, index)
            for index in _present_slot_functions(inventory, device, range(PCI_FUNCTIONS - 1, -1, -1))
        ]
    return [HotplugLog(resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, indexes[0])]
