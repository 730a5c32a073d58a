"""The devices plugged into a platform, by id and by the slot QEMU checks new ones against.

Example::

    >>> from papr_emu.model.devices import CpuCore
    >>> inventory: Inventory[CpuCore] = Inventory()
    >>> inventory.add(CpuCore("core1", hotplugged=True, core_id=1))
    >>> inventory.occupant(CpuCore, 1).id, len(inventory)
    ('core1', 1)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, Protocol, TypeVar


class Slotted(Protocol):
    """What the inventory files a device by."""

    @property
    def id(self) -> str: ...

    @property
    def slot_key(self) -> Hashable: ...

    @property
    def slot_family(self) -> type: ...

    @property
    def unplug_pending(self) -> bool: ...


DeviceT = TypeVar("DeviceT", bound=Slotted)
OfTypeT = TypeVar("OfTypeT")


class Inventory(Generic[DeviceT]):
    """Devices by id, and by (slot family, slot key): core id, memory slot, PHB index, (PHB, devfn).

    The slot family is the device's type, or a base class whose types share slots
    (DIMMs and NVDIMMs: :class:`~.memory_device.MemoryDevice`).
    """

    def __init__(self) -> None:
        self._devices: dict[str, DeviceT] = {}
        self._by_slot: dict[tuple[type, Hashable], DeviceT] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __iter__(self) -> Iterator[DeviceT]:
        """Devices sorted by id."""
        return iter([self._devices[k] for k in sorted(self._devices)])

    def in_plug_order(self) -> list[DeviceT]:
        """Devices in the order they were added (a PHB before the functions on its bus)."""
        return list(self._devices.values())

    def get(self, device_id: str) -> DeviceT | None:
        return self._devices.get(device_id)

    def add(self, device: DeviceT) -> None:
        self._devices[device.id] = device
        self._by_slot[(device.slot_family, device.slot_key)] = device

    def remove(self, device: DeviceT) -> None:
        del self._devices[device.id]
        del self._by_slot[(device.slot_family, device.slot_key)]

    def occupant(self, device_class: type[OfTypeT], slot_key: Hashable) -> OfTypeT | None:
        """The device of this slot family in this slot, if any."""
        device = self._by_slot.get((device_class, slot_key))
        assert device is None or isinstance(device, device_class)
        return device

    def of_type(self, device_class: type[OfTypeT]) -> list[OfTypeT]:
        """Devices of one type, sorted by id."""
        return [d for d in self if isinstance(d, device_class)]

    def present(self) -> list[DeviceT]:
        """Devices the guest would find at boot: attached, and not on their way out (sorted by id)."""
        return [d for d in self if not d.unplug_pending]
