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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from . import plug_rules, rtas, work_area
from .cas import CasOptions
from .devices import (
    CpuCore,
    CpuCoreParams,
    Device,
    DeviceInfo,
    DeviceType,
    Dimm,
    PciFunction,
    Phb,
    PhbParams,
    pci_drc_id,
)
from .devicetree import Node
from .drc import CPU, DRC_TYPES, LMB, PCI, PHB, PMEM, Drc, DrcState, DrcType, Operation, RefusalSignal
from .drc_table import DrcRange, DrcTable
from .dtb import to_dtb
from .errors import InvalidArgument, NotFound
from .events import DeviceAdded, DeviceDeleted, EventLog, UnplugRejected, UnplugRequested, UnplugTimedOut
from .fragments import (
    cpu_core_node,
    hpt_shift_for_ram_size,
    lmb_node,
    pci_function_node,
    phb_node,
    phb_node_name,
)
from .geometry import MAX_PHBS, Geometry
from .inventory import PCI_FUNCTIONS, PCI_SLOTS, Inventory
from .plug_rules import DimmRequest, PlugRequest
from .rtas_events import RtasEventQueue
from .rtas_log import EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG, HotplugLog
from .tree import build_device_tree, dr_properties


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


def _compact(indexes: set[int]) -> Sequence[int]:
    """Ascending indexes, as a range when they are consecutive (a big DIMM's are: kept events stay small)."""
    ordered = sorted(indexes)
    if ordered and ordered[-1] - ordered[0] + 1 == len(ordered):
        return range(ordered[0], ordered[-1] + 1)
    return tuple(ordered)


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
        self.inventory = Inventory()
        self._build_connectors()
        boot: list[tuple[str, PlugRequest]] = [
            (f"core{core_id}", CpuCoreParams(core_id)) for core_id in geometry.core_ids()[: geometry.boot_cores]
        ]
        boot.append(("phb0", PhbParams(0)))
        for device_id, request in [*boot, *coldplug]:
            self._plug(device_id, request, hotplugged=False)
        # QEMU sizes the hash page table at reset for boot RAM plus coldplugged DIMMs.
        boot_ram = geometry.memory + sum(d.size for d in self.inventory.dimms())
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
                len(self.inventory),
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
                    i for d in self.inventory for i in d.attached
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
            return [d.info() for d in self.inventory if device_type is None or d.type is device_type]

    def _device(self, device_id: str) -> Device:
        device = self.inventory.get(device_id)
        if device is None:
            raise NotFound("id", device_id, "device")
        return device

    # --- plug -------------------------------------------------------------------------------------

    def plug(self, device_id: str, request: PlugRequest) -> DeviceInfo:
        """Hot-plug a device (QMP device_add); an empty id gets one picked."""
        with self.lock:
            return self._plug(device_id, request, hotplugged=True).info()

    def _plug(self, device_id: str, request: PlugRequest, hotplugged: bool) -> Device:
        device = plug_rules.prepare(
            self.geometry, self.inventory, device_id or plug_rules.pick_id(self.inventory, request), request, hotplugged
        )
        self._attach(device)
        if hotplugged:
            for log in plug_rules.plug_logs(self.inventory, device, count_indexed=self.options.hotplug_events):
                self._queue_log(log)
        self.log.info(
            "device.plugged",
            device=device.id,
            device_type=device.type.value,
            drc_index=device.drc_indexes[0],
            drc_count=len(device.drc_indexes),
            hotplugged=hotplugged,
        )
        self.events.publish(DeviceAdded(device.info()))
        return device

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
        self.inventory.add(device)

    # --- unplug -----------------------------------------------------------------------------------

    def unplug(self, device_id: str) -> UnplugOutcome:
        """Request a hot-unplug (QMP device_del)."""
        with self.lock:
            device = self._device(device_id)
            plug_rules.check_unplug(device)
            if device.unplug_pending:  # only a CPU core gets here: QEMU re-sends its remove event
                self.log.info("device.unplug_repeated", device=device.id)
            else:
                if isinstance(device, PciFunction):
                    for other in plug_rules.other_functions(self.inventory, device):
                        self._request_unplug(other)
                self._request_unplug(device)
            for log in plug_rules.unplug_logs(self.inventory, device):
                self._queue_log(log)
            return UnplugOutcome(device.id not in self.inventory, device.info())

    def _request_unplug(self, device: Device) -> None:
        """Mark the device's connectors unplug-pending; release those the guest never acquired."""
        device.unplug_pending = True
        for index in sorted(device.attached):
            drc = self._drcs.get(index)
            assert drc is not None
            drc.unplug_requested = True
            if drc.state == drc.type.connector_class.empty_state:
                self._release(drc, released_by=0)  # never acquired by the guest: gone at once
        if device.id not in self.inventory:
            return  # every connector was released: the device is gone already
        timeout = self.unplug_timeouts.for_type(device.type)
        if timeout is not None:
            device.unplug_deadline = self._monotonic() + timeout
        self.log.info("device.unplug_requested", device=device.id, drc_index=min(device.attached))
        self.events.publish(UnplugRequested(device.id, device.type, _compact(device.attached)))

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
        self.log.info("drc.released", drc_index=drc.index, device=device.id, left=len(device.attached))
        if not device.attached:
            self._delete(device, released_by)

    def _delete(self, device: Device, released_by: int) -> None:
        if isinstance(device, Phb):
            # The PHB's bus goes with it, and with the bus every function still on it.
            for function in self.inventory.functions_on(device.index):
                for index in list(function.attached):
                    drc = self._drcs.get(index)
                    assert drc is not None
                    self._release(drc, released_by)  # the last one deletes the function
            self._drcs.remove_range(self._pci_range(device.index))
        self.inventory.remove(device)
        device.unplug_pending = False
        self.log.info("device.deleted", device=device.id, drc_index=released_by)
        self.events.publish(DeviceDeleted(device.id, device.type, device.drc_indexes, released_by))

    def refuse_unplug(self, drc: Drc, signal: RefusalSignal) -> None:
        """The guest refused the pending unplug: cancel it (for a DIMM, on every LMB)."""
        device = drc.device
        assert device is not None
        self._cancel_unplug(device)
        self.log.warning("device.unplug_rejected", device=device.id, drc_index=drc.index, signal=signal.value)
        self.events.publish(UnplugRejected(device.id, device.type, signal, drc.index))

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

    def _queue_log(self, log: HotplugLog) -> None:
        event_class = EVENT_CLASS_HOTPLUG if self.options.hotplug_events else EVENT_CLASS_EPOW
        queued = self.rtas_events.push(log, event_class)
        self.log.debug("rtas.event_queued", drc_index=log.index, action=log.action, plid=queued.plid)

    def check_exception(self, event_mask: int, buffer_length: int) -> tuple[int, bytes]:
        """RTAS check-exception: (0, the first pending log of a class in the mask, truncated) or (1, b"")."""
        with self.lock:
            status, blob = self.rtas_events.pop(event_mask, buffer_length)
            self.log.debug("rtas.check_exception", mask=event_mask, status=status, length=len(blob))
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
                d for d in self.inventory
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
                "rtas.set_indicator", drc_index=index, indicator=indicator_type, value=new_state,
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
            self.log.debug("rtas.configure_connector", drc_index=index, status=status)
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
            self.log.error("rtas.configure_connector.overflow", drc_index=index, item=item.name)
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
        return phb_node(device.index, drc.index, dr_properties(self, "/" + phb_node_name(device.index)), hotplugged)

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

    def drc_ranges(self, parent_path: str) -> list[DrcRange]:
        """The connector ranges listed under the node at ``parent_path`` ("/", "/cpus", a PHB)."""
        with self.lock:
            return [r for r in self._drcs.ranges() if r.parent_path == parent_path]

    def dimm_extents(self) -> list[tuple[int, int]]:
        """(address, size) of the DIMMs in the boot tree, in address order."""
        return [(d.address, d.size) for d in self.inventory.dimms() if not d.unplug_pending]

    def present_nodes(self, parent_path: str) -> list[Node]:
        """Boot-tree nodes of the present devices listed under ``parent_path`` ("/cpus" or "/")."""
        present = self.inventory.present()
        if parent_path == "/cpus":
            cores = sorted((d for d in present if isinstance(d, CpuCore)), key=lambda d: d.core_id)
            return [self._boot_node(core) for core in cores]
        nodes: list[Node] = []
        for phb in sorted((d for d in present if isinstance(d, Phb)), key=lambda d: d.index):
            node = self._boot_node(phb)
            functions = (d for d in present if isinstance(d, PciFunction) and d.phb_index == phb.index)
            node.children = [self._boot_node(f) for f in sorted(functions, key=lambda d: d.devfn)]
            nodes.append(node)
        return nodes

    def _boot_node(self, device: Device) -> Node:
        """A single-connector device's node as the boot tree has it."""
        drc = self._drcs.get(device.drc_indexes[0])
        assert drc is not None
        return self._fragment(device, drc, hotplugged=False)

    def device_tree(self) -> Node:
        """The full device tree the guest would boot with now."""
        with self.lock:
            return build_device_tree(self)

    def device_tree_blob(self) -> bytes:
        """The full device tree as a DTB (version 17)."""
        return to_dtb(self.device_tree())

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
            for index in sorted(i for d in self.inventory for i in d.attached):
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
