"""The devices plugged into a platform, by id and by what QEMU checks new ones against.

Example::

    >>> inventory = Inventory()
    >>> inventory.add(CpuCore("core1", hotplugged=True, core_id=1))
    >>> inventory.core(1).id, len(inventory)
    ('core1', 1)
"""

from __future__ import annotations

from collections.abc import Iterator

from .devices import CpuCore, Device, Dimm, PciFunction, Phb

PCI_SLOTS = 32
PCI_FUNCTIONS = 8


class Inventory:
    """Devices by id, plus indexes by core id, DIMM slot, PHB index and (PHB, devfn)."""

    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self._cores: dict[int, CpuCore] = {}
        self._dimms: dict[int, Dimm] = {}  # by slot
        self._phbs: dict[int, Phb] = {}
        self._pci: dict[tuple[int, int], PciFunction] = {}  # by (PHB index, devfn)

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __iter__(self) -> Iterator[Device]:
        """Devices sorted by id."""
        return iter([self._devices[k] for k in sorted(self._devices)])

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def add(self, device: Device) -> None:
        self._devices[device.id] = device
        if isinstance(device, Dimm):
            self._dimms[device.slot] = device
        elif isinstance(device, CpuCore):
            self._cores[device.core_id] = device
        elif isinstance(device, Phb):
            self._phbs[device.index] = device
        elif isinstance(device, PciFunction):
            self._pci[(device.phb_index, device.devfn)] = device

    def remove(self, device: Device) -> None:
        del self._devices[device.id]
        if isinstance(device, Dimm):
            del self._dimms[device.slot]
        elif isinstance(device, CpuCore):
            del self._cores[device.core_id]
        elif isinstance(device, Phb):
            del self._phbs[device.index]
        elif isinstance(device, PciFunction):
            del self._pci[(device.phb_index, device.devfn)]

    def core(self, core_id: int) -> CpuCore | None:
        return self._cores.get(core_id)

    def dimm_in_slot(self, slot: int) -> Dimm | None:
        return self._dimms.get(slot)

    def dimms(self) -> list[Dimm]:
        """DIMMs in address order."""
        return sorted(self._dimms.values(), key=lambda d: d.address)

    def phb(self, index: int) -> Phb | None:
        return self._phbs.get(index)

    def pci_function(self, phb_index: int, slot: int, function: int) -> PciFunction | None:
        return self._pci.get((phb_index, (slot << 3) | function))

    def functions_on(self, phb_index: int) -> list[PciFunction]:
        """The PCI functions on a PHB's bus, in devfn order."""
        return [f for (phb, _), f in sorted(self._pci.items()) if phb == phb_index]

    def present(self) -> list[Device]:
        """Devices the guest would find at boot: attached, and not on their way out (sorted by id)."""
        return [d for d in self if not d.unplug_pending]
