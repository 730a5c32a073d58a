"""An NVDIMM: persistent memory in a memory slot, on the PMEM connector of that slot.

As in QEMU 7.2's pseries, the guest sees no LMBs for it: configure-connector hands
out an ``ibm,pmemory@<drc index>`` node, which Linux attaches under
``/ibm,persistent-memory``; its range of device memory stays free in drconf memory.
QEMU refuses to unplug an NVDIMM ("not supported yet"); papr-emu unplugs it as LoPAR
and Linux's pseries PMEM code do, with a remove log by index (docs/compat.md #17).

Example::

    >>> nv = Nvdimm("nv1", hotplugged=True, size=256 << 20, slot=2, address=1 << 30,
    ...             label_size=128 << 10, uuid="01234567-89ab-cdef-0123-456789abcdef")
    >>> [hex(i) for i in nv.drc_indexes], nv.fragment(nv.drc_indexes[0], None).name
    (['0x90000002'], 'ibm,pmemory@90000002')
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import ClassVar, Final

from ..devicetree import Node
from ..drc import PMEM, DrcType
from ..errors import InvalidArgument
from ..fragments import PERSISTENT_MEMORY_PATH, SCM_BLOCK_SIZE, pmemory_node
from .base import Device, DeviceType, FragmentContext, PlugContext
from .inventory import Inventory
from .memory_device import MemoryDevice

#: QEMU's smallest namespace label area (MIN_NAMESPACE_LABEL_SIZE).
MIN_LABEL_SIZE: Final = 128 << 10
#: QEMU's UUID syntax (qemu_uuid_parse): 8-4-4-4-12 hex digits.
UUID_PATTERN: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
NIL_UUID: Final = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True, slots=True)
class NvdimmRequest:
    """Plug an NVDIMM: size (without the label area), label size, UUID; optionally slot and address."""

    size: int
    label_size: int | None
    uuid: str
    slot: int | None = None
    address: int | None = None


@dataclass(frozen=True, slots=True)
class NvdimmParams:
    size: int
    label_size: int
    uuid: str
    slot: int
    address: int


@dataclass(eq=False)
class Nvdimm(MemoryDevice):
    type: ClassVar[DeviceType] = DeviceType.NVDIMM
    drc_type: ClassVar[DrcType] = PMEM
    request_type: ClassVar[builtins.type] = NvdimmRequest

    label_size: int = MIN_LABEL_SIZE
    uuid: str = NIL_UUID

    @property
    def drc_ids(self) -> range:
        return range(self.slot, self.slot + 1)

    @property
    def params(self) -> NvdimmParams:
        return NvdimmParams(self.size, self.label_size, self.uuid, self.slot, self.address)

    @property
    def parent_path(self) -> str | None:
        return PERSISTENT_MEMORY_PATH

    @property
    def boot_order(self) -> int:
        return self.slot

    @classmethod
    def default_id(cls, request: NvdimmRequest, inventory: Inventory[Device]) -> str:
        """ "nvdimm<n>": the first free n."""
        n = 0
        while f"nvdimm{n}" in inventory:
            n += 1
        return f"nvdimm{n}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: NvdimmRequest) -> Nvdimm:
        """QEMU's checks, in its order: the label size, the size, the UUID, then slot and place."""
        if request.label_size is None:
            raise InvalidArgument(
                "nvdimm.label_size_bytes", None, "PAPR requires NVDIMM devices to have label-size set"
            )
        if request.label_size < MIN_LABEL_SIZE:
            raise InvalidArgument(
                "nvdimm.label_size_bytes",
                request.label_size,
                f"Property 'nvdimm.label-size' ({request.label_size:#x}) is required at least {MIN_LABEL_SIZE:#x}",
            )
        if request.size <= 0 or request.size % SCM_BLOCK_SIZE:
            raise InvalidArgument(
                "nvdimm.size_bytes",
                request.size,
                "PAPR requires NVDIMM memory size (excluding label) to be a multiple of 256MB",
            )
        if request.uuid and not UUID_PATTERN.fullmatch(request.uuid):
            raise InvalidArgument(
                "nvdimm.uuid", request.uuid, "must be a UUID like 01234567-89ab-cdef-0123-456789abcdef"
            )
        if not request.uuid or request.uuid == NIL_UUID:
            raise InvalidArgument("nvdimm.uuid", request.uuid, "NVDIMM device requires the uuid to be set")
        slot, address = cls.place(context, request.size, request.slot, request.address, "nvdimm")
        return Nvdimm(
            device_id, context.hotplugged, size=request.size, slot=slot, address=address,
            label_size=request.label_size, uuid=request.uuid.lower(),
        )  # fmt: skip

    def fragment(self, drc_index: int, context: FragmentContext | None, hotplugged: bool = True) -> Node:
        return pmemory_node(drc_index, self.size, self.label_size, self.uuid)
