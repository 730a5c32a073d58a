"""Pluggable devices: DIMM, CPU core, PCI function, PHB.

A device knows its parameters and the connectors it owns; the platform
decides when it is attached and released. :meth:`Device.info` gives an
immutable snapshot for callers outside the platform lock.

Example::

    >>> dimm = Dimm("dimm0", hotplugged=True, size=512 << 20, slot=0, address=1 << 30)
    >>> [hex(i) for i in dimm.drc_indexes]
    ['0x80000004', '0x80000005']
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

from .drc import CPU, LMB, PCI, PHB, DrcType
from .fragments import E1000_DATA, VIRTIO_NET_DATA, PciDeviceData
from .rtas import LMB_SIZE

DEVICE_ID_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class DeviceType(enum.Enum):
    DIMM = "dimm"
    CPU_CORE = "cpu-core"
    PCI_FUNCTION = "pci-function"
    PHB = "phb"


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
class DimmParams:
    size: int
    slot: int
    address: int


@dataclass(frozen=True, slots=True)
class CpuCoreParams:
    core_id: int


@dataclass(frozen=True, slots=True)
class PciFunctionParams:
    phb_index: int
    slot: int
    function: int
    model: PciModel


@dataclass(frozen=True, slots=True)
class PhbParams:
    index: int


DeviceParams = DimmParams | CpuCoreParams | PciFunctionParams | PhbParams


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """An immutable snapshot of a device."""

    id: str
    type: DeviceType
    params: DeviceParams
    drc_indexes: Sequence[int]  # ascending; a range for a DIMM (it can own 262,144 LMBs)
    hotplugged: bool
    unplug_pending: bool


@dataclass(eq=False)
class Device:
    """A plugged device. ``attached`` holds the indexes of connectors it is attached to now."""

    type: ClassVar[DeviceType]
    drc_type: ClassVar[DrcType]

    id: str
    hotplugged: bool
    unplug_pending: bool = field(default=False, init=False)
    unplug_deadline: float | None = field(default=None, init=False)  # monotonic seconds, when a timeout applies
    attached: set[int] = field(default_factory=set, init=False)

    @property
    def drc_ids(self) -> range:
        raise NotImplementedError

    @property
    def params(self) -> DeviceParams:
        raise NotImplementedError

    @property
    def drc_indexes(self) -> range:
        """Every connector the device owns, ascending (ids are consecutive, so indexes are too)."""
        ids = self.drc_ids
        return range(self.drc_type.index(ids.start), self.drc_type.index(ids.start) + len(ids))

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.id, self.type, self.params, self.drc_indexes, self.hotplugged, self.unplug_pending)


@dataclass(eq=False)
class Dimm(Device):
    type: ClassVar[DeviceType] = DeviceType.DIMM
    drc_type: ClassVar[DrcType] = LMB

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

    def lmb_address(self, drc_index: int) -> int:
        return (drc_index & 0x0FFFFFFF) * LMB_SIZE


@dataclass(eq=False)
class CpuCore(Device):
    type: ClassVar[DeviceType] = DeviceType.CPU_CORE
    drc_type: ClassVar[DrcType] = CPU

    core_id: int = 0
    threads: int = 1

    @property
    def drc_ids(self) -> range:
        # vCPU id of thread 0 with vsmt == threads: the core id (QEMU 7.2, observed).
        return range(self.core_id, self.core_id + 1)

    @property
    def params(self) -> CpuCoreParams:
        return CpuCoreParams(self.core_id)


@dataclass(eq=False)
class PciFunction(Device):
    type: ClassVar[DeviceType] = DeviceType.PCI_FUNCTION
    drc_type: ClassVar[DrcType] = PCI

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


@dataclass(eq=False)
class Phb(Device):
    type: ClassVar[DeviceType] = DeviceType.PHB
    drc_type: ClassVar[DrcType] = PHB

    index: int = 0

    @property
    def drc_ids(self) -> range:
        return range(self.index, self.index + 1)

    @property
    def params(self) -> PhbParams:
        return PhbParams(self.index)


def pci_drc_id(phb_index: int, devfn: int, chassis: int = 0) -> int:
    """QEMU: (phb index << 16) | (chassis << 8) | devfn; chassis 0 on a root bus."""
    return (phb_index << 16) | (chassis << 8) | devfn
