"""Pluggable devices: one class per type, and the registry that maps requests to them.

Adding a device type: write its :class:`Device` subclass in a module of its own
(parameters, QEMU's plug rules, fragment, event logs, and any hooks that differ
from the defaults), add its :class:`DeviceType` member, and list the class in
:data:`DEVICE_CLASSES`.

Example::

    >>> device_class_for(CpuCoreParams(1)).__name__, device_class_of(DeviceType.DIMM).__name__
    ('CpuCore', 'Dimm')
"""

from __future__ import annotations

from typing import Final

from .base import DEVICE_ID_PATTERN, Device, DeviceInfo, DeviceType, FragmentContext, PlugContext
from .cpu_core import CpuCore, CpuCoreParams
from .dimm import Dimm, DimmParams, DimmRequest, dimms_by_address
from .inventory import Inventory
from .lmb import Lmb, LmbParams
from .memory_device import MemoryDevice, memory_devices_by_address
from .nvdimm import Nvdimm, NvdimmParams, NvdimmRequest
from .pci_function import PciFunction, PciFunctionParams, PciModel
from .phb import PCI_FUNCTIONS, PCI_SLOTS, Phb, PhbParams, pci_drc_id

#: Every device type, registered here once.
DEVICE_CLASSES: Final[tuple[type[Device], ...]] = (Dimm, CpuCore, PciFunction, Phb, Nvdimm, Lmb)

#: What a plug request may be: one request class per device type.
PlugRequest = DimmRequest | CpuCoreParams | PciFunctionParams | PhbParams | NvdimmRequest

_BY_REQUEST: Final = {cls.request_type: cls for cls in DEVICE_CLASSES}
_BY_TYPE: Final = {cls.type: cls for cls in DEVICE_CLASSES}


def device_class_for(request: object) -> type[Device]:
    """The device class a plug request makes."""
    return _BY_REQUEST[type(request)]


def device_class_of(device_type: DeviceType) -> type[Device]:
    return _BY_TYPE[device_type]


__all__ = [
    "DEVICE_CLASSES",
    "DEVICE_ID_PATTERN",
    "PCI_FUNCTIONS",
    "PCI_SLOTS",
    "CpuCore",
    "CpuCoreParams",
    "Device",
    "DeviceInfo",
    "DeviceType",
    "Dimm",
    "DimmParams",
    "DimmRequest",
    "FragmentContext",
    "Inventory",
    "Lmb",
    "LmbParams",
    "MemoryDevice",
    "Nvdimm",
    "NvdimmParams",
    "NvdimmRequest",
    "PciFunction",
    "PciFunctionParams",
    "PciModel",
    "Phb",
    "PhbParams",
    "PlugContext",
    "PlugRequest",
    "device_class_for",
    "device_class_of",
    "dimms_by_address",
    "memory_devices_by_address",
    "pci_drc_id",
]
