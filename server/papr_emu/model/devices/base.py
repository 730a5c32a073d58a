"""What every pluggable device is and does; each device type fills in its part.

A device type is one :class:`Device` subclass: its parameters, QEMU's rules for
plugging it (:meth:`Device.prepare`), the node configure-connector hands out for
each of its connectors, the hotplug event logs it announces, and what goes with
it when it is deleted. The platform orchestrates; it never asks which type a
device is.

Example::

    >>> from papr_emu.model.devices import CpuCore
    >>> core = CpuCore("core1", hotplugged=True, core_id=1)
    >>> [hex(i) for i in core.drc_indexes], core.slot_key, core.parent_path
    (['0x10000001'], 1, '/cpus')
"""

from __future__ import annotations

import builtins
import enum
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol

from ..devicetree import Node, PropertyList
from ..drc import DrcType
from ..drc_table import DrcRange
from ..errors import FailedPrecondition
from ..geometry import Geometry
from ..rtas_log import HP_ACTION_ADD, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, HotplugLog
from .inventory import Inventory

DEVICE_ID_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class DeviceType(enum.Enum):
    """The kinds of pluggable device; each has one :class:`Device` subclass."""

    DIMM = "dimm"
    CPU_CORE = "cpu-core"
    PCI_FUNCTION = "pci-function"
    PHB = "phb"
    NVDIMM = "nvdimm"
    LMB = "lmb"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """An immutable snapshot of a device."""

    id: str
    type: DeviceType
    params: Any  # the type's parameters dataclass (DimmParams, CpuCoreParams, ...)
    drc_indexes: Sequence[int]  # ascending; a range for a DIMM (it can own 262,144 LMBs)
    hotplugged: bool
    unplug_pending: bool


class FragmentContext(Protocol):
    """What a device's device-tree node needs from its platform besides the device itself."""

    @property
    def hpt_shift(self) -> int:
        """log2 of the hash page table size (ibm,pft-size of CPU nodes)."""

    def dr_properties(self, path: str) -> PropertyList:
        """The DR properties (ibm,drc-* arrays or ibm,drc-info) of the node at ``path``."""

    def nodes_under(self, path: str, hotplugged: bool = True) -> list[Node]:
        """The nodes of the devices under the node at ``path`` (a PHB's functions), each with its own."""


@dataclass(frozen=True, slots=True)
class PlugContext:
    """What QEMU checks a plug request against: the machine's shape and the devices present."""

    geometry: Geometry
    inventory: Inventory[Device]
    hotplugged: bool


@dataclass(eq=False)
class Device:
    """A plugged device. ``attached`` holds the indexes of connectors it is attached to now.

    Subclasses set the class variables and override the hooks below; the defaults fit a
    device with one connector that announces itself with one log naming that connector.
    """

    type: ClassVar[DeviceType]
    drc_type: ClassVar[DrcType]
    #: The plug request class this type is made from (its parameters, or a request with defaults).
    request_type: ClassVar[builtins.type]
    #: QEMU's refusal of a second device_del while one is pending; None: QEMU re-sends the request.
    unplug_in_progress: ClassVar[str | None] = None
    #: False: the type's devices publish no DeviceAdded / DeviceDeleted / UnplugRequested events
    #: (an LMB on a PowerVM-style platform: its memory request reports for all of them).
    announced: ClassVar[bool] = True
    #: False: ListDevices leaves the type's devices out (there may be hundreds of thousands).
    listed: ClassVar[bool] = True
    #: False: UnplugTimeouts has no key for the type (it is not unplugged with UnplugDevice).
    unplug_timeout: ClassVar[bool] = True
    #: True: the device goes when the guest sets its connector unusable, unplug or not (an LMB the
    #: guest acquired and gives back on a PowerVM-style platform is unassigned again).
    released_when_unusable: ClassVar[bool] = False
    #: QEMU's refusal of a device_del when the guest negotiated CAS without the hot-plug event source
    #: (:attr:`CasOptions.hotplug_events_or_none` false); None: the type unplugs either way.
    unplug_needs_hotplug_events: ClassVar[str | None] = None

    id: str
    hotplugged: bool
    unplug_pending: bool = field(default=False, init=False)
    unplug_deadline: float | None = field(default=None, init=False)  # monotonic seconds, when a timeout applies
    attached: set[int] = field(default_factory=set, init=False)

    # --- identity ----------------------------------------------------------------------------------

    @property
    def drc_ids(self) -> range:
        """The ids of the connectors the device owns (consecutive)."""
        raise NotImplementedError

    @property
    def params(self) -> Any:
        """The type's parameters, as a frozen dataclass."""
        raise NotImplementedError

    @property
    def slot_key(self) -> Hashable:
        """What no two devices of this type may share (core id, DIMM slot, PHB index, ...)."""
        raise NotImplementedError

    @property
    def slot_family(self) -> builtins.type:
        """The class whose devices share slot keys: the type itself, or a base (memory slots)."""
        return type(self)

    @property
    def memory_blocks(self) -> int:
        """256 MiB LMBs of memory the device attaches (what the memory limits count)."""
        return 0

    @property
    def assigned_memory(self) -> tuple[int, int] | None:
        """(address, size) of the LMB-backed memory the guest's drconf memory shows assigned, if any."""
        return None

    @property
    def parent_path(self) -> str | None:
        """Path of the node the device's node sits under ("/cpus", "/", a PHB); None: no node of its own."""
        return None

    @property
    def boot_order(self) -> int:
        """Sort key among its siblings in the boot tree."""
        return 0

    @property
    def drc_indexes(self) -> range:
        """Every connector the device owns, ascending (ids are consecutive, so indexes are too)."""
        first = self.drc_type.index(self.drc_ids.start)
        return range(first, first + len(self.drc_ids))

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.id, self.type, self.params, self.drc_indexes, self.hotplugged, self.unplug_pending)

    # --- plugging ----------------------------------------------------------------------------------

    @classmethod
    def default_id(cls, request: Any, inventory: Inventory[Device]) -> str:
        """A free id named after the device ("core2", "phb1"); the base from :meth:`id_base`."""
        base = cls.id_base(request)
        candidate, n = base, 0
        while candidate in inventory:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    @classmethod
    def id_base(cls, request: Any) -> str:
        raise NotImplementedError

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: Any) -> Device:
        """The device ``request`` becomes, or the error QEMU would refuse it with."""
        raise NotImplementedError

    def connector_ranges(self) -> list[DrcRange]:
        """Connectors the device brings with it (a PHB's PCI slots): added on attach, removed on delete."""
        return []

    def plug_logs(self, inventory: Inventory[Device], count_indexed: bool) -> list[HotplugLog]:
        """QEMU's hotplug "add" logs for the device, hot-plugged and attached."""
        return [HotplugLog(self.drc_type.hotplug_resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, self.drc_indexes[0])]

    # --- unplugging --------------------------------------------------------------------------------

    def check_unplug(self) -> None:
        """QEMU's refusals of a device_del (the device exists)."""
        if self.unplug_pending and self.unplug_in_progress is not None:
            raise FailedPrecondition(self.unplug_in_progress.format(id=self.id))

    def unplug_companions(self, inventory: Inventory[Device]) -> list[Device]:
        """Other devices a device_del of this one also requests the unplug of."""
        return []

    def unplug_logs(self, inventory: Inventory[Device]) -> list[HotplugLog]:
        """QEMU's hotplug "remove" logs for an unplug request (after the connectors were marked)."""
        return [HotplugLog(self.drc_type.hotplug_resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, self.drc_indexes[0])]

    def dependents(self, inventory: Inventory[Device]) -> list[Device]:
        """Devices that go when this one is deleted (the functions on a PHB's bus)."""
        return []

    # --- device tree -------------------------------------------------------------------------------

    def fragment(self, drc_index: int, context: FragmentContext, hotplugged: bool = True) -> Node:
        """The node configure-connector hands out for ``drc_index`` (``hotplugged=False``: the boot tree's)."""
        raise NotImplementedError

    def children_path(self) -> str | None:
        """Path of the device's own node, when other devices sit under it (a PHB's bus)."""
        return None
