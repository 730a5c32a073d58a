"""One emulated pSeries platform: connectors, devices, RTAS calls, hotplug.

Everything a platform does happens under its own lock, so each RTAS call and
each plug or unplug is atomic, and platforms never wait for one another.
Every request is validated before anything changes: a refused request
changes nothing.

Example (a DIMM hot-add, as a guest would acquire and configure one LMB)::

    >>> p = Platform("default", Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4))
    >>> dimm = p.plug("dimm0", DimmRequest(size=256 << 20))
    >>> hex(dimm.drc_indexes[0])
    '0x80000004'
    >>> p.get_sensor_state(rtas.DR_ENTITY_SENSE, 0x80000004)
    (0, 2)
    >>> p.set_indicator(rtas.ALLOCATION_STATE, 0x80000004, rtas.ALLOCATION_USABLE)
    0
    >>> p.set_indicator(rtas.ISOLATION_STATE, 0x80000004, rtas.UNISOLATE)
    0
    >>> area = bytearray(4096); area[0:4] = (0x80000004).to_bytes(4, "big")
    >>> status, area = p.configure_connector(bytes(area)); status, area[20:36]
    (2, b'memory@40000000\\x00')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from . import rtas, work_area
from .cas import CasOptions
from .devices import (
    DEVICE_ID_PATTERN,
    CpuCore,
    CpuCoreParams,
    Device,
    DeviceInfo,
    DeviceType,
    Dimm,
    PciFunction,
    PciFunctionParams,
    Phb,
    PhbParams,
    pci_drc_id,
)
from .devicetree import Node
from .drc import CPU, DRC_TYPES, LMB, PCI, PHB, PMEM, Drc, DrcState, DrcType, Operation, RefusalSignal
from .drc_table import DrcRange, DrcTable
from .dtb import to_dtb
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .events import DeviceAdded, DeviceDeleted, EventLog, UnplugRejected, UnplugRequested, UnplugTimedOut
from .fragments import (
    DrcArrays,
    cpu_core_node,
    hpt_shift_for_ram_size,
    lmb_node,
    pci_function_node,
    phb_node,
    phb_node_name,
)
from .geometry import MAX_PHBS, Geometry
from .rtas import LMB_SIZE
from .rtas_events import RtasEventQueue
from .rtas_log import (
    EVENT_CLASS_EPOW,
    EVENT_CLASS_HOTPLUG,
    HP_ACTION_ADD,
    HP_ACTION_REMOVE,
    HP_ID_DRC_COUNT,
    HP_ID_DRC_COUNT_INDEXED,
    HP_ID_DRC_INDEX,
    HotplugLog,
)
from .tree import build_device_tree, dr_properties

PCI_SLOTS = 32
PCI_FUNCTIONS = 8


@dataclass(frozen=True, slots=True)
class DimmRequest:
    """Plug a DIMM: size, and optionally the slot and guest address (else QEMU's first fit)."""

    size: int
    slot: int | None = None
    address: int | None = None


PlugRequest = DimmRequest | CpuCoreParams | PciFunctionParams | PhbParams


@dataclass(frozen=True, slots=True)
class UnplugTimeouts:
    """Per device type: seconds an unplug may stay pending before the platform cancels it.

    None (the default for every type) means no timeout: QEMU has none, and a guest
    that is slow is not a guest that refused. Memory never gets one unless asked:
    offlining memory under load can take arbitrarily long, so any fixed timeout
    would cancel unplugs the guest is still completing.
    """

    cpu_core: float | None = None
    dimm: float | None = None
    pci_function: float | None = None
    phb: float | None = None

    def for_type(self, device_type: DeviceType) -> float | None:
        return {
            DeviceType.CPU_CORE: self.cpu_core,
            DeviceType.DIMM: self.dimm,
            DeviceType.PCI_FUNCTION: self.pci_function,
            DeviceType.PHB: self.phb,
        }[device_type]


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """An immutable snapshot of one connector."""

    index: int
    name: str
    type: DrcType
    state: DrcState
    entity_sense: int
    device_id: str
    unplug_pending: bool
    dr_indicator: int
    parent_path: str
    configure_in_progress: bool
    power_domain: int = rtas.LIVE_INSERTION_DOMAIN


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """An immutable snapshot of a platform's shape."""

    name: str
    geometry: Geometry
    connector_counts: tuple[tuple[DrcType, int], ...]
    device_count: int
    last_event_sequence: int
    unplug_timeouts: UnplugTimeouts
    pending_rtas_events: int
    options: CasOptions


@dataclass(frozen=True, slots=True)
class UnplugOutcome:
    """What an unplug request did: deleted at once, or now waiting for the guest."""

    deleted: bool
    device: DeviceInfo


class Platform:
    """A platform: its geometry, connector table, devices and event log."""

    def __init__(
        self,
        name: str,
        geometry: Geometry,
        coldplug: Iterable[tuple[str, PlugRequest]] = (),
        clock: Callable[[], float] = time.time,
        unplug_timeouts: UnplugTimeouts | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.geometry = geometry
        self.lock = threading.RLock()
        self.events = EventLog(name, clock)
        self.rtas_events = RtasEventQueue(clock)
        # What the guest negotiated at CAS. Before it, hotplug logs go to the EPOW source, DIMM adds
        # are counted (not indexed), and the tree has the four ibm,drc-* arrays and no drconf memory.
        self.options = CasOptions()
        self.unplug_timeouts = unplug_timeouts or UnplugTimeouts()
        self._monotonic = monotonic
        self.log = structlog.get_logger("papr_emu.platform").bind(platform=name)
        self._drcs = DrcTable()
        self._devices: dict[str, Device] = {}
        self._cores: dict[int, CpuCore] = {}
        self._dimms: dict[int, Dimm] = {}  # by slot
        self._phbs: dict[int, Phb] = {}
        self._pci: dict[tuple[int, int], PciFunction] = {}  # by (phb index, devfn)
        self._build_connectors()
        self._hpt_shift = hpt_shift_for_ram_size(geometry.memory)
        boot: list[tuple[str, PlugRequest]] = [
            (f"core{core_id}", CpuCoreParams(core_id)) for core_id in geometry.core_ids()[: geometry.boot_cores]
        ]
        boot.append(("phb0", PhbParams(0)))
        for device_id, request in [*boot, *coldplug]:
            self._plug(device_id, request, hotplugged=False)
        # QEMU sizes the hash page table at reset for boot RAM plus coldplugged DIMMs.
        boot_ram = geometry.memory + sum(d.size for d in self._dimms.values())
        self._hpt_shift = hpt_shift_for_ram_size(boot_ram)

    # --- construction -----------------------------------------------------------------------------

    def _build_connectors(self) -> None:
        g = self.geometry
        self._drcs.add_range(DrcRange(CPU, 0, g.max_cores, g.threads, "/cpus"))
        self._drcs.add_range(DrcRange(PHB, 0, MAX_PHBS, 1, "/"))
        self._drcs.add_range(DrcRange(LMB, g.first_lmb_id, g.lmb_count, 1, "/"))
        self._drcs.add_range(DrcRange(PMEM, 0, g.slots, 1, "/"))

    @staticmethod
    def _pci_range(phb_index: int) -> DrcRange:
        return DrcRange(PCI, pci_drc_id(phb_index, 0), PCI_SLOTS * PCI_FUNCTIONS, 1, "/" + phb_node_name(phb_index))

    # --- snapshots --------------------------------------------------------------------------------

    def info(self) -> PlatformInfo:
        with self.lock:
            return PlatformInfo(
                self.name,
                self.geometry,
                tuple(self._drcs.counts()),
                len(self._devices),
                self.events.last_sequence,
                self.unplug_timeouts,
                len(self.rtas_events),
                self.options,
            )

    def _connector_info(self, drc: Drc, drc_range: DrcRange) -> ConnectorInfo:
        return ConnectorInfo(
            index=drc.index,
            name=drc.name,
            type=drc.type,
            state=drc.state,
            entity_sense=drc.entity_sense(),
            device_id=drc.device.id if drc.device is not None else "",
            unplug_pending=drc.unplug_requested,
            dr_indicator=drc.dr_indicator,
            parent_path=drc_range.parent_path,
            configure_in_progress=drc.cursor > 0,
        )

    def connector(self, index: int) -> ConnectorInfo:
        with self.lock:
            drc = self._drcs.peek(index)
            drc_range = self._drcs.range_of(index)
            if drc is None or drc_range is None:
                raise NotFound("drc_index", index, "connector")
            return self._connector_info(drc, drc_range)

    def connectors(
        self,
        start_index: int = 0,
        limit: int = 256,
        drc_type: DrcType | None = None,
        attached_only: bool = False,
    ) -> tuple[list[ConnectorInfo], int | None]:
        """Up to ``limit`` connectors from ``start_index`` on, and the index to continue from."""
        with self.lock:
            page: list[ConnectorInfo] = []
            if attached_only:
                indexes = sorted(
                    i for d in self._devices.values() for i in d.attached
                    if i >= start_index and (drc_type is None or d.drc_type is drc_type)
                )  # fmt: skip
                for index in indexes[: limit + 1]:
                    drc, drc_range = self._drcs.peek(index), self._drcs.range_of(index)
                    assert drc is not None and drc_range is not None
                    page.append(self._connector_info(drc, drc_range))
            else:
                for drc, drc_range in self._drcs.iter_from(start_index, drc_type):
                    page.append(self._connector_info(drc, drc_range))
                    if len(page) > limit:
                        break
            if len(page) > limit:
                return page[:limit], page[limit].index
            return page, None

    def device(self, device_id: str) -> DeviceInfo:
        with self.lock:
            return self._device(device_id).info()

    def devices(self, device_type: DeviceType | None = None) -> list[DeviceInfo]:
        with self.lock:
            return [d.info() for _, d in sorted(self._devices.items()) if device_type is None or d.type is device_type]

    def _device(self, device_id: str) -> Device:
        device = self._devices.get(device_id)
        if device is None:
            raise NotFound("id", device_id, "device")
        return device

    def drc_arrays(self, parent_path: str) -> DrcArrays:
        """The ibm,drc-* arrays of the node at ``parent_path`` (ascending index order)."""
        with self.lock:
            ranges = [r for r in self._drcs.ranges() if r.parent_path == parent_path]
            indexes = [i for r in ranges for i in r.indexes()]
            return DrcArrays(
                indexes=indexes,
                names=[r.type.name(drc_id) for r in ranges for drc_id in r.ids()],
                types=[r.type.type_string for r in ranges for _ in r.ids()],
                power_domains=[rtas.LIVE_INSERTION_DOMAIN] * len(indexes),
            )

    # --- plug -------------------------------------------------------------------------------------

    def plug(self, device_id: str, request: PlugRequest) -> DeviceInfo:
        """Hot-plug a device (QMP device_add); an empty id gets one picked."""
        with self.lock:
            return self._plug(device_id, request, hotplugged=True).info()

    def _plug(self, device_id: str, request: PlugRequest, hotplugged: bool) -> Device:
        device_id = device_id or self._pick_id(request)
        if not DEVICE_ID_PATTERN.fullmatch(device_id):
            raise InvalidArgument(
                "id", device_id, "must be a letter followed by letters, digits, '-', '.' or '_' (at most 64)"
            )
        if device_id in self._devices:
            raise AlreadyExists("id", device_id, "a device with this id exists")
        device = self._prepare(device_id, request, hotplugged)
        self._attach(device)
        if hotplugged:
            self._queue_plug_logs(device)
        self.log.info(
            "device.plugged",
            device=device.id,
            device_type=device.type.value,
            drc_index=f"{device.drc_indexes[0]:#x}",
            drc_count=len(device.drc_indexes),
            hotplugged=hotplugged,
        )
        self.events.publish(DeviceAdded(device.info()))
        return device

    def _pick_id(self, request: PlugRequest) -> str:
        """A free id named after the device ("dimm0", "core2", "phb1", "pci0.3.0")."""
        if isinstance(request, DimmRequest):
            n = 0
            while f"dimm{n}" in self._devices:
                n += 1
            return f"dimm{n}"
        if isinstance(request, CpuCoreParams):
            base = f"core{request.core_id}"
        elif isinstance(request, PhbParams):
            base = f"phb{request.index}"
        else:
            base = f"pci{request.phb_index}.{request.slot}.{request.function}"
        candidate, n = base, 0
        while candidate in self._devices:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _prepare(self, device_id: str, request: PlugRequest, hotplugged: bool) -> Device:
        if isinstance(request, DimmRequest):
            return self._prepare_dimm(device_id, request, hotplugged)
        if isinstance(request, CpuCoreParams):
            return self._prepare_core(device_id, request, hotplugged)
        if isinstance(request, PhbParams):
            return self._prepare_phb(device_id, request, hotplugged)
        return self._prepare_pci(device_id, request, hotplugged)

    def _prepare_dimm(self, device_id: str, request: DimmRequest, hotplugged: bool) -> Dimm:
        g = self.geometry
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
            if request.slot in self._dimms:
                raise FailedPrecondition(f"slot {request.slot} is busy", "dimm.slot", request.slot)
            slot = request.slot
        else:
            free = [s for s in range(g.slots) if s not in self._dimms]
            if not free:
                raise FailedPrecondition("no free slots available")
            slot = free[0]
        used = sum(d.size for d in self._dimms.values())
        if used + size > g.device_memory_size:
            raise FailedPrecondition(
                f"not enough space, currently {used:#x} in use of total space for memory devices "
                f"{g.device_memory_size:#x}"
            )
        taken = sorted((d.address, d.address + d.size, d.id) for d in self._dimms.values())
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
            for start, end, other in taken:
                if address < end and start < address + size:
                    raise FailedPrecondition(
                        f"address range conflicts with memory device id='{other}'", "dimm.address", address
                    )
        else:
            address = g.device_memory_base
            for start, end, _ in taken:
                if address + size <= start:
                    break
                address = max(address, end)
            if address + size > g.device_memory_end:
                raise FailedPrecondition(
                    "could not find position in guest address space for memory device - "
                    "memory fragmented due to alignments"
                )
        return Dimm(device_id, hotplugged, size=size, slot=slot, address=address)

    def _prepare_core(self, device_id: str, request: CpuCoreParams, hotplugged: bool) -> CpuCore:
        g = self.geometry
        core_id = request.core_id
        if core_id % g.threads:
            raise InvalidArgument("cpu_core.core_id", core_id, f"invalid core id {core_id}")
        if core_id >= g.max_cpus:
            raise InvalidArgument("cpu_core.core_id", core_id, f"core id {core_id} out of range")
        if core_id in self._cores:
            raise FailedPrecondition(f"core {core_id} already populated", "cpu_core.core_id", core_id)
        return CpuCore(device_id, hotplugged, core_id=core_id, threads=g.threads)

    def _prepare_phb(self, device_id: str, request: PhbParams, hotplugged: bool) -> Phb:
        if request.index >= MAX_PHBS:
            raise InvalidArgument("phb.index", request.index, f'"index" for PAPR PHB is too large (max {MAX_PHBS - 1})')
        if request.index in self._phbs:
            raise FailedPrecondition(f"PHB {request.index} already attached", "phb.index", request.index)
        return Phb(device_id, hotplugged, index=request.index)

    def _prepare_pci(self, device_id: str, request: PciFunctionParams, hotplugged: bool) -> PciFunction:
        if request.slot >= PCI_SLOTS:
            raise InvalidArgument("pci_function.slot", request.slot, f"must be below {PCI_SLOTS}")
        if request.function >= PCI_FUNCTIONS:
            raise InvalidArgument("pci_function.function", request.function, f"must be below {PCI_FUNCTIONS}")
        if request.phb_index not in self._phbs:
            raise NotFound("pci_function.phb_index", request.phb_index, f"PHB (bus 'pci.{request.phb_index}')")
        devfn = (request.slot << 3) | request.function
        occupant = self._pci.get((request.phb_index, devfn))
        if occupant is not None:
            raise FailedPrecondition(
                f"PCI: slot {request.slot} function {request.function} not available for "
                f'{request.model.qemu_name}, in use by {occupant.model.qemu_name},id "{occupant.id}"'
            )
        function0 = self._pci.get((request.phb_index, request.slot << 3))
        if hotplugged and request.function != 0 and function0 is not None:
            raise FailedPrecondition(
                f"PCI: slot {request.slot} function 0 already occupied by {function0.model.qemu_name}, "
                "additional functions can no longer be exposed to guest."
            )
        return PciFunction(
            device_id, hotplugged, phb_index=request.phb_index, slot=request.slot,
            function=request.function, model=request.model,
        )  # fmt: skip

    def _attach(self, device: Device) -> None:
        """Attach a validated device to its connectors (coldplug: straight to the ready state)."""
        if isinstance(device, Phb):
            self._drcs.add_range(self._pci_range(device.index))
        for index in device.drc_indexes:
            drc = self._drcs.get(index)
            assert drc is not None and drc.device is None, f"connector {index:#x} not free"
            drc.device = device
            device.attached.add(index)
            if not device.hotplugged:
                drc.reset()
        self._devices[device.id] = device
        if isinstance(device, Dimm):
            self._dimms[device.slot] = device
        elif isinstance(device, CpuCore):
            self._cores[device.core_id] = device
        elif isinstance(device, Phb):
            self._phbs[device.index] = device
        elif isinstance(device, PciFunction):
            self._pci[(device.phb_index, device.devfn)] = device

    # --- unplug -----------------------------------------------------------------------------------

    def unplug(self, device_id: str) -> UnplugOutcome:
        """Request a hot-unplug (QMP device_del)."""
        with self.lock:
            device = self._device(device_id)
            self._check_unplug(device)
            if device.unplug_pending:  # only a CPU core gets here: QEMU re-sends its remove event
                self.log.info("device.unplug_repeated", device=device.id)
                self._queue_unplug_logs(device)
                return UnplugOutcome(False, device.info())
            if isinstance(device, PciFunction) and device.function == 0:
                # QEMU 7.2: unplugging function 0 takes every other function of the slot with it.
                for function in range(1, PCI_FUNCTIONS):
                    other = self._pci.get((device.phb_index, (device.slot << 3) | function))
                    if other is not None and not other.unplug_pending:
                        self._request_unplug(other)
            deleted = self._request_unplug(device)
            self._queue_unplug_logs(device)
            return UnplugOutcome(deleted, device.info())

    def _check_unplug(self, device: Device) -> None:
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

    def _request_unplug(self, device: Device) -> bool:
        """Mark the device's connectors unplug-pending; release those the guest never acquired.

        Returns True if the device is gone already.
        """
        device.unplug_pending = True
        for index in sorted(device.attached):
            drc = self._drcs.get(index)
            assert drc is not None
            drc.unplug_requested = True
            if drc.state == drc.type.connector_class.empty_state:
                self._release(drc, released_by=0)  # never acquired by the guest: gone at once
        if device.id not in self._devices:
            return True
        timeout = self.unplug_timeouts.for_type(device.type)
        if timeout is not None:
            device.unplug_deadline = self._monotonic() + timeout
        self.log.info("device.unplug_requested", device=device.id, drc_index=f"{min(device.attached):#x}")
        self.events.publish(UnplugRequested(device.id, device.type, tuple(sorted(device.attached))))
        return False

    # --- release and refusal (the DrcOwner protocol) ----------------------------------------------

    def release(self, drc: Drc) -> None:
        """The guest gave back ``drc`` with an unplug pending (called by transitions)."""
        self._release(drc, released_by=drc.index)

    def _release(self, drc: Drc, released_by: int) -> None:
        device = drc.device
        assert device is not None
        drc.device = None
        drc.unplug_requested = False
        drc.rewind()
        device.attached.discard(drc.index)
        self.log.info("drc.released", drc_index=f"{drc.index:#x}", device=device.id, left=len(device.attached))
        if not device.attached:
            self._delete(device, released_by)

    def _delete(self, device: Device, released_by: int) -> None:
        if isinstance(device, Phb):
            # The PHB's bus goes with it, and with the bus every function still on it.
            for (phb_index, _), function in sorted(self._pci.items()):
                if phb_index == device.index:
                    for index in list(function.attached):
                        drc = self._drcs.get(index)
                        assert drc is not None
                        drc.device = None
                        drc.unplug_requested = False
                        drc.reset()
                        function.attached.discard(index)
                    self._delete(function, released_by)
            self._drcs.remove_range(self._pci_range(device.index))
            del self._phbs[device.index]
        elif isinstance(device, Dimm):
            del self._dimms[device.slot]
        elif isinstance(device, CpuCore):
            del self._cores[device.core_id]
        elif isinstance(device, PciFunction):
            del self._pci[(device.phb_index, device.devfn)]
        del self._devices[device.id]
        device.unplug_pending = False
        self.log.info("device.deleted", device=device.id, drc_index=f"{released_by:#x}")
        self.events.publish(DeviceDeleted(device.id, device.type, device.drc_indexes, released_by))

    def refuse_unplug(self, drc: Drc, signal: RefusalSignal) -> None:
        """The guest refused the pending unplug: cancel it (for a DIMM, on every LMB)."""
        device = drc.device
        assert device is not None
        self._cancel_unplug(device)
        self.log.warning("device.unplug_rejected", device=device.id, drc_index=f"{drc.index:#x}", signal=signal.value)
        self.events.publish(UnplugRejected(device.id, device.type, signal.value, drc.index))

    def _cancel_unplug(self, device: Device) -> None:
        """Clear the unplug on every connector the device owns.

        Unlike QEMU 7.2, connectors the guest already released (LMBs of a DIMM) are
        re-attached, UNUSABLE with the device, so the device is whole again and can be
        acquired or unplugged later.
        """
        for index in device.drc_indexes:
            drc = self._drcs.get(index)
            assert drc is not None
            if drc.device is None:
                assert drc.state == drc.type.connector_class.empty_state
                drc.device = device
                device.attached.add(index)
            drc.unplug_requested = False
        device.unplug_pending = False
        device.unplug_deadline = None

    # --- hotplug event logs -----------------------------------------------------------------------

    def _queue_log(self, resource: int, action: int, id_type: int, index: int = 0, count: int = 0) -> None:
        event_class = EVENT_CLASS_HOTPLUG if self.options.hotplug_events else EVENT_CLASS_EPOW
        queued = self.rtas_events.push(HotplugLog(resource, action, id_type, index, count), event_class)
        self.log.debug("rtas.event_queued", drc_index=f"{index:#x}", action=action, plid=queued.plid)

    def _queue_plug_logs(self, device: Device) -> None:
        """QEMU's hotplug "add" requests for a hot-plugged device."""
        resource = device.drc_type.hotplug_resource
        indexes = device.drc_indexes
        if isinstance(device, Dimm):
            if self.options.hotplug_events:
                self._queue_log(resource, HP_ACTION_ADD, HP_ID_DRC_COUNT_INDEXED, indexes[0], len(indexes))
            else:  # the guest picks any free LMBs
                self._queue_log(resource, HP_ACTION_ADD, HP_ID_DRC_COUNT, count=len(indexes))
        elif isinstance(device, PciFunction):
            # Function 0 announces every present function of its slot; others wait for function 0.
            if device.function == 0:
                for index in self._present_slot_functions(device, range(PCI_FUNCTIONS)):
                    self._queue_log(resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, index)
        else:
            self._queue_log(resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, indexes[0])

    def _queue_unplug_logs(self, device: Device) -> None:
        """QEMU's hotplug "remove" requests for an unplug request."""
        resource = device.drc_type.hotplug_resource
        indexes = device.drc_indexes
        if isinstance(device, Dimm):
            self._queue_log(resource, HP_ACTION_REMOVE, HP_ID_DRC_COUNT_INDEXED, indexes[0], len(indexes))
        elif isinstance(device, PciFunction):
            # Function 0 announces the removal of every function still present, last function first;
            # a function the guest never unisolated is already gone and gets no log.
            if device.function == 0:
                for index in self._present_slot_functions(device, range(PCI_FUNCTIONS - 1, -1, -1)):
                    self._queue_log(resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, index)
        else:
            self._queue_log(resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, indexes[0])

    def _present_slot_functions(self, device: PciFunction, functions: range) -> list[int]:
        indexes: list[int] = []
        for function in functions:
            present = self._pci.get((device.phb_index, (device.slot << 3) | function))
            if present is not None:
                indexes.extend(present.attached)
        return indexes

    def check_exception(self, event_mask: int, buffer_length: int) -> tuple[int, bytes]:
        """RTAS check-exception: (0, the first pending log of a class in the mask, truncated) or (1, b"")."""
        with self.lock:
            status, blob = self.rtas_events.pop(event_mask, buffer_length)
            self.log.debug("rtas.check_exception", mask=f"{event_mask:#x}", status=status, length=len(blob))
            return status, blob

    def event_scan(self, event_mask: int, buffer_length: int) -> int:
        """RTAS event-scan as QEMU does it: re-pulse the pending classes' interrupts, return 1."""
        with self.lock:
            self.rtas_events.repulse()
            return rtas.NO_ERRORS_FOUND

    # --- unplug timeouts --------------------------------------------------------------------------

    def expire_unplugs(self, now: float | None = None) -> list[str]:
        """Cancel pending unplugs whose timeout has passed; returns the device ids."""
        with self.lock:
            now = self._monotonic() if now is None else now
            expired = [
                d for _, d in sorted(self._devices.items())
                if d.unplug_pending and d.unplug_deadline is not None and d.unplug_deadline <= now
            ]  # fmt: skip
            for device in expired:
                timeout = self.unplug_timeouts.for_type(device.type)
                self._cancel_unplug(device)
                self.log.warning("device.unplug_timed_out", device=device.id, timeout=timeout)
                self.events.publish(UnplugTimedOut(device.id, device.type, timeout or 0.0))
            return [d.id for d in expired]

    # --- RTAS -------------------------------------------------------------------------------------

    def set_indicator(self, indicator_type: int, index: int, new_state: int) -> int:
        """RTAS set-indicator; returns the RTAS status."""
        with self.lock:
            status = self._set_indicator(indicator_type, index, new_state)
            self.log.debug(
                "rtas.set_indicator", drc_index=f"{index:#x}", indicator=indicator_type, value=new_state,
                status=status,
            )  # fmt: skip
            return status

    def _set_indicator(self, indicator_type: int, index: int, new_state: int) -> int:
        drc = self._drcs.get(index)
        if drc is None:
            return rtas.PARAMETER_ERROR
        if indicator_type == rtas.ISOLATION_STATE:
            operation = {rtas.ISOLATE: Operation.ISOLATE, rtas.UNISOLATE: Operation.UNISOLATE}.get(new_state)
        elif indicator_type == rtas.ALLOCATION_STATE and not drc.type.physical:
            operation = {
                rtas.ALLOCATION_UNUSABLE: Operation.SET_UNUSABLE,
                rtas.ALLOCATION_USABLE: Operation.SET_USABLE,
            }.get(new_state)
        elif indicator_type == rtas.DR_INDICATOR and drc.type.physical:
            if new_state not in rtas.DR_INDICATOR_VALUES:
                return rtas.PARAMETER_ERROR
            drc.dr_indicator = new_state
            return rtas.SUCCESS
        else:
            return rtas.PARAMETER_ERROR
        if operation is None:
            return rtas.PARAMETER_ERROR
        transition = drc.type.connector_class.transitions[operation][drc.state]
        return transition(drc, self)

    def get_sensor_state(self, sensor_type: int, index: int) -> tuple[int, int]:
        """RTAS get-sensor-state; returns (status, value), value 0 on error as QEMU writes it."""
        with self.lock:
            drc = self._drcs.peek(index)
            if sensor_type != rtas.DR_ENTITY_SENSE or drc is None:
                return rtas.PARAMETER_ERROR, 0
            return rtas.SUCCESS, drc.entity_sense()

    def configure_connector(self, area: bytes) -> tuple[int, bytes]:
        """RTAS ibm,configure-connector over one 4096-byte work area; returns (status, work area)."""
        if len(area) != work_area.WORK_AREA_SIZE:
            raise InvalidArgument("work_area", len(area), "must be exactly 4096 bytes")
        with self.lock:
            out = bytearray(area)
            index = work_area.drc_index(out)
            status = self._configure_step(index, out)
            self.log.debug("rtas.configure_connector", drc_index=f"{index:#x}", status=status)
            return status, bytes(out)

    def _configure_step(self, index: int, out: bytearray) -> int:
        drc = self._drcs.get(index)
        if drc is None:
            return rtas.PARAMETER_ERROR
        if not drc.type.connector_class.configurable(drc.state):
            return rtas.NOT_CONFIGURABLE
        if drc.type.configure_refuses_unplug and drc.unplug_requested:
            # An older kernel re-adding an LMB after a failed removal: it refuses the unplug.
            self.refuse_unplug(drc, RefusalSignal.CONFIGURE_CONNECTOR)
        if drc.walk is None:
            assert drc.device is not None  # configurable states always have a device
            drc.walk = tuple(self._fragment(drc.device, drc).walk())
            drc.cursor = 0
        item = drc.walk[drc.cursor]
        if item.kind == "end":
            if drc.cursor == len(drc.walk) - 1:
                drc.state = drc.type.connector_class.ready_state
                drc.rewind()  # a new sequence replays the fragment from the start
                return rtas.CC_COMPLETE
            drc.cursor += 1
            return rtas.CC_PREVIOUS_PARENT
        if item.kind == "begin":
            written, status = work_area.write_node_name(out, item.name), rtas.CC_NEXT_CHILD
        else:
            written, status = work_area.write_property(out, item.name, item.value), rtas.CC_NEXT_PROPERTY
        if not written:
            self.log.error("rtas.configure_connector.overflow", drc_index=f"{index:#x}", item=item.name)
            return rtas.HARDWARE_ERROR
        drc.cursor += 1
        return status

    def _fragment(self, device: Device, drc: Drc, hotplugged: bool = True) -> Node:
        """The device-tree node configure-connector hands out for ``drc``."""
        if isinstance(device, Dimm):
            return lmb_node(device.lmb_address(drc.index))
        if isinstance(device, CpuCore):
            return cpu_core_node(device.core_id, device.threads, drc.index, self._hpt_shift, hotplugged)
        if isinstance(device, PciFunction):
            model = device.model
            return pci_function_node(
                model.data, model.qemu_name, device.phb_index, 0, device.slot, device.function, drc.index
            )
        assert isinstance(device, Phb)
        return phb_node(device.index, drc.index, dr_properties(self, "/" + phb_node_name(device.index)))

    def set_power_level(self, power_domain: int, level: int) -> tuple[int, int]:
        """RTAS set-power-level: only the live-insertion domain (-1); the level is always 100."""
        if power_domain != rtas.LIVE_INSERTION_DOMAIN:
            return rtas.PARAMETER_ERROR, 0
        return rtas.SUCCESS, rtas.FULL_POWER

    def get_power_level(self, power_domain: int) -> tuple[int, int]:
        """RTAS get-power-level: only the live-insertion domain (-1), at level 100."""
        if power_domain != rtas.LIVE_INSERTION_DOMAIN:
            return rtas.PARAMETER_ERROR, 0
        return rtas.SUCCESS, rtas.FULL_POWER

    # --- device tree and CAS ----------------------------------------------------------------------

    def drc_ranges(self) -> list[DrcRange]:
        with self.lock:
            return self._drcs.ranges()

    def _present(self) -> list[Device]:
        """Devices the guest would find at boot: attached, and not on their way out."""
        return [d for _, d in sorted(self._devices.items()) if not d.unplug_pending]

    def dimm_extents(self) -> list[tuple[int, int]]:
        return sorted((d.address, d.size) for d in self._present() if isinstance(d, Dimm))

    def present_nodes(self, parent_path: str) -> list[Node]:
        """Boot-tree nodes of the present devices listed under ``parent_path`` ("/cpus" or "/")."""
        nodes: list[Node] = []
        present = self._present()
        for device in sorted((d for d in present if isinstance(d, CpuCore)), key=lambda d: d.core_id):
            if parent_path == "/cpus":
                drc = self._drcs.get(device.drc_indexes[0])
                assert drc is not None
                nodes.append(self._fragment(device, drc, hotplugged=False))
        for phb in sorted((d for d in present if isinstance(d, Phb)), key=lambda d: d.index):
            if parent_path == "/":
                drc = self._drcs.get(phb.drc_indexes[0])
                assert drc is not None
                node = self._fragment(phb, drc)
                node.properties = [p for p in node.properties if p[0] != "name"]  # only hot-plugged PHBs have it
                for function in sorted(
                    (d for d in present if isinstance(d, PciFunction) and d.phb_index == phb.index),
                    key=lambda d: d.devfn,
                ):
                    function_drc = self._drcs.get(function.drc_indexes[0])
                    assert function_drc is not None
                    node.children.append(self._fragment(function, function_drc))
                nodes.append(node)
        return nodes

    def device_tree(self) -> Node:
        """The full device tree the guest would boot with now."""
        with self.lock:
            return build_device_tree(self)

    def device_tree_blob(self) -> bytes:
        """The full device tree as a DTB (version 17)."""
        with self.lock:
            return to_dtb(build_device_tree(self))

    def client_architecture_support(self, option_vector_5: bytes) -> CasOptions:
        """ibm,client-architecture-support with option vector 5, as QEMU 6.0+ handles it.

        Pending plugs and unplugs complete (every connector is reset), queued hotplug
        event logs are dropped, and the negotiated options take effect.
        """
        options = CasOptions.from_vector(option_vector_5)
        with self.lock:
            self.options = options
            # QEMU's DRC reset, on every connector with a device: a pending unplug completes
            # (release), then the connector is ready if it still has a device, else empty.
            for index in sorted(i for d in self._devices.values() for i in d.attached):
                drc = self._drcs.get(index)
                if drc is None:  # its PHB went away with an earlier release
                    continue
                if drc.unplug_requested:
                    self._release(drc, released_by=0)
                drc.reset()
            dropped = self.rtas_events.drop()
            self.log.info(
                "guest.cas",
                hotplug_events=options.hotplug_events,
                drconf_memory=options.drconf_memory,
                dynamic_memory_v2=options.dynamic_memory_v2,
                drc_info=options.drc_info,
                dropped_logs=dropped,
            )
            return options

    # --- lifecycle --------------------------------------------------------------------------------

    def close(self, reason: str = "deleted") -> None:
        """End every event subscription ("deleted": the platform is gone; "shutdown": the server stops)."""
        with self.lock:
            self.events.close(reason)
            self.rtas_events.interrupts.close(reason)


__all__ = [
    "DRC_TYPES",
    "ConnectorInfo",
    "DimmRequest",
    "Platform",
    "PlatformInfo",
    "PlugRequest",
    "UnplugOutcome",
    "UnplugTimeouts",
]
