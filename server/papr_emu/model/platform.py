"""One emulated pSeries platform: the locked facade over its connectors, devices and event logs.

Everything a platform does happens under its own lock, so each RTAS call and
each plug or unplug is atomic, and platforms never wait for one another.
Every request is validated before anything changes: a refused request
changes nothing. What differs per device type is on the device classes
(:mod:`.devices`); what a connector does is in :mod:`.drc`.

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

import dataclasses
import enum
import functools
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

import structlog

from . import drc as connector
from . import rtas, snapshot, work_area
from .cas import CasOptions
from .conduct import Finding
from .devices import (
    CpuCore,
    CpuCoreParams,
    Device,
    DeviceInfo,
    DeviceType,
    DimmRequest,
    Inventory,
    PhbParams,
    PlugRequest,
    memory_devices_by_address,
)
from .devicetree import Node
from .drc import CPU, LMB, PHB, PMEM, DrcType
from .drc_table import DrcRange, DrcTable
from .dtb import to_dtb
from .errors import InvalidArgument, NotFound
from .events import EventLog, Subscription
from .faults import Call, FaultRule, Target
from .firmware_checks import FirmwareChecks
from .fragments import hpt_shift_for_ram_size
from .geometry import MAX_PHBS, Geometry, MemoryModel
from .hotplug import Hotplug
from .limits import Budget, Limits
from .memory_requests import MemoryAction, MemoryRequest
from .rtas_events import InterruptWatch, RtasEventQueue
from .snapshots import ConnectorInfo, PlatformGauges, PlatformInfo, UnplugOutcome
from .tree import build_device_tree
from .unplug_timeouts import UnplugTimeouts
from .view import PlatformView, assigned_extents

T = TypeVar("T")


class Busy(enum.Enum):
    """What :meth:`Platform.try_now` returns when another thread is inside the platform."""

    BUSY = "busy"


BUSY: Final = Busy.BUSY


class Recorder(Protocol):
    """Where a platform's calls are kept (a state directory's journal: papr_emu.state)."""

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AbstractContextManager[None]:
        """Around one call, under the platform's lock; the record is written before the call returns."""

    def group(self) -> AbstractContextManager[None]:
        """Calls made inside are written together when it ends (an RTAS batch: one write)."""


P = ParamSpec("P")


def _journaled(method: Callable[Concatenate[Platform, P], T]) -> Callable[Concatenate[Platform, P], T]:
    """A call that may change the platform: its recorder (if any) keeps it, in the order calls ran."""

    def call(self: Platform, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            if self.recorder is None:
                return method(self, *args, **kwargs)
            with self.recorder.call(method.__name__, args, kwargs):
                return method(self, *args, **kwargs)

    return functools.update_wrapper(call, method)  # type: ignore[return-value]


class Platform:
    """A platform: its geometry, connector table, devices and event logs."""

    def __init__(
        self,
        name: str,
        geometry: Geometry,
        coldplug: Iterable[tuple[str, PlugRequest]] = (),
        clock: Callable[[], float] = time.time,
        unplug_timeouts: UnplugTimeouts | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
        lmb_budget: Budget | None = None,
        boot: bool = True,
        incarnation: str = "",
    ) -> None:
        """``lmb_budget`` counts LMBs across the server's platforms (a platform of its own by default).

        ``boot=False`` leaves out the boot cores and PHB 0 (:meth:`restore` puts back its own).
        ``incarnation``: the server run its events are stamped with (see :attr:`incarnation`).
        """
        limits = limits or Limits()
        self.name = name
        self.geometry = geometry
        self._lock = threading.RLock()
        #: Keeps every call that may change the platform (``serve --state-dir``); None: nothing does.
        self.recorder: Recorder | None = None
        self._events = EventLog(name, clock)
        self._events.incarnation = incarnation
        self._rtas_events = RtasEventQueue(clock)
        self.log = structlog.get_logger("papr_emu.platform").bind(platform=name)
        self._drcs: DrcTable[Device] = DrcTable()
        self._checks = FirmwareChecks(self._drcs, self._events, clock, monotonic, self.log, self._rtas_events.undrained)
        self._rtas_events.log_fault = self._checks.log_fault
        self._inventory: Inventory[Device] = Inventory()
        self._hotplug = Hotplug(
            geometry, self._drcs, self._inventory, self._events, self._rtas_events,
            unplug_timeouts or UnplugTimeouts(), monotonic, self.log,
            limits, lmb_budget or Budget(limits.lmbs),
        )  # fmt: skip
        g = geometry
        self._drcs.add_range(DrcRange(CPU, 0, g.max_cores, g.threads, "/cpus"))
        self._drcs.add_range(DrcRange(PHB, 0, MAX_PHBS, 1, "/"))
        self._drcs.add_range(DrcRange(LMB, g.first_lmb_id, g.lmb_count, 1, "/"))
        self._drcs.add_range(DrcRange(PMEM, 0, g.slots, 1, "/"))
        devices: list[tuple[str, PlugRequest]] = [
            (f"core{core_id}", CpuCoreParams(core_id)) for core_id in g.core_ids()[: g.boot_cores]
        ]
        boot_devices: list[tuple[str, PlugRequest]] = [*devices, ("phb0", PhbParams(0))] if boot else []
        try:
            for device_id, request in [*boot_devices, *coldplug]:
                self._hotplug.plug(device_id, request, hotplugged=False)
        except Exception:
            self._hotplug.release_memory()  # the platform is not made: its DIMMs count no more
            raise
        # QEMU sizes the hash page table at reset for boot RAM plus coldplugged memory devices
        # (get_plugged_memory_size: NVDIMMs count too).
        boot_ram = g.memory + sum(d.size for d in memory_devices_by_address(self._inventory))
        self._hotplug.hpt_shift = hpt_shift_for_ram_size(boot_ram)

    @property
    def options(self) -> CasOptions:
        """What the guest negotiated at CAS (defaults before it)."""
        return self._hotplug.options

    @property
    def unplug_timeouts(self) -> UnplugTimeouts:
        return self._hotplug.unplug_timeouts

    # --- snapshots --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The platform's whole state as a JSON-ready document (see :mod:`.snapshot`)."""
        with self._lock:
            return snapshot.dump(
                self.name, self.geometry, self._drcs, self._hotplug, self._events, self._rtas_events,
                self._hotplug.now(), self._checks.conduct, self._checks.faults,
            )  # fmt: skip

    @classmethod
    def restore(
        cls,
        name: str,
        document: object,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
        lmb_budget: Budget | None = None,
        incarnation: str = "",
    ) -> Platform:
        """A platform named ``name`` in the state ``document`` describes; SnapshotError if it cannot be.

        Its retained events keep the incarnation they were made in; new ones get ``incarnation``.
        """
        snapshot.check_header(document)
        assert isinstance(document, dict)
        geometry, timeouts = snapshot.geometry_of(document)
        platform = cls(
            name, geometry, clock=clock, unplug_timeouts=timeouts, monotonic=monotonic, limits=limits,
            lmb_budget=lmb_budget, boot=False, incarnation=incarnation,
        )  # fmt: skip
        try:
            snapshot.load(
                document, platform._drcs, platform._hotplug, platform._events, platform._rtas_events, monotonic(),
                lambda event: dataclasses.replace(event, platform=name),
                platform._checks.conduct, platform._checks.faults,
            )  # fmt: skip
        except BaseException:
            platform.close()  # gives its LMBs back
            raise
        return platform

    @property
    def incarnation(self) -> str:
        """The server run whose events this platform now makes: a watcher that resumes compares it
        with the one it saw, to know whether it missed a restart (``serve --state-dir``)."""
        return self._events.incarnation

    @incarnation.setter
    def incarnation(self, incarnation: str) -> None:
        with self._lock:
            self._events.incarnation = incarnation

    def info(self) -> PlatformInfo:
        with self._lock:
            return PlatformInfo(
                self.name, self.geometry, tuple(self._drcs.counts()), len(self._inventory),
                self._events.last_sequence, self.unplug_timeouts, len(self._rtas_events), self.options,
            )  # fmt: skip

    def gauges(self) -> PlatformGauges:
        """Attached LMBs, pending unplugs, queued event logs, faults fired, findings (read-only; for metrics)."""
        with self._lock:
            return PlatformGauges(
                attached_lmbs=sum(len(d.attached) for d in self._inventory if d.drc_type is LMB),
                pending_unplugs=sum(1 for d in self._inventory if d.unplug_pending),
                queued_event_logs=len(self._rtas_events),
                faults_fired=self._checks.fired,
                conduct_findings=self._checks.conduct.total,
            )

    def connector(self, index: int) -> ConnectorInfo:
        with self._lock:
            drc, drc_range = self._drcs.peek(index), self._drcs.range_of(index)
            if drc is None or drc_range is None:
                raise NotFound("drc_index", index, "connector")
            return ConnectorInfo.of(drc, drc_range)

    def connectors(
        self, start_index: int = 0, limit: int = 256, drc_type: DrcType | None = None, attached_only: bool = False
    ) -> tuple[list[ConnectorInfo], int | None]:
        """Up to ``limit`` connectors from ``start_index`` on, and the index to continue from."""
        with self._lock:
            page: list[ConnectorInfo] = []
            if attached_only:
                indexes = sorted(
                    i for d in self._inventory for i in d.attached
                    if i >= start_index and (drc_type is None or d.drc_type is drc_type)
                )  # fmt: skip
                for index in indexes[: limit + 1]:
                    drc, drc_range = self._drcs.peek(index), self._drcs.range_of(index)
                    assert drc is not None and drc_range is not None
                    page.append(ConnectorInfo.of(drc, drc_range))
            else:
                for drc, drc_range in self._drcs.iter_from(start_index, drc_type):
                    page.append(ConnectorInfo.of(drc, drc_range))
                    if len(page) > limit:
                        break
            if len(page) > limit:
                return page[:limit], page[limit].index
            return page, None

    def device(self, device_id: str) -> DeviceInfo:
        with self._lock:
            return self._device(device_id).info()

    def devices(self, device_type: DeviceType | None = None) -> list[DeviceInfo]:
        """The devices, by id; LMBs of a PowerVM-style platform are connectors' business, not listed."""
        with self._lock:
            return [d.info() for d in self._inventory if d.listed and (device_type is None or d.type is device_type)]

    def _device(self, device_id: str) -> Device:
        device = self._inventory.get(device_id)
        if device is None:
            raise NotFound("id", device_id, "device")
        return device

    # --- plug and unplug (QMP device_add, device_del) ---------------------------------------------

    @_journaled
    def plug(self, device_id: str, request: PlugRequest) -> DeviceInfo:
        """Hot-plug a device (QMP device_add); an empty id gets one picked."""
        with self._lock:
            return self._hotplug.plug(device_id, request, hotplugged=True).info()

    @_journaled
    def unplug(self, device_id: str) -> UnplugOutcome:
        """Request a hot-unplug (QMP device_del)."""
        with self._lock:
            return self._hotplug.unplug(self._device(device_id))

    @_journaled
    def expire_unplugs(self, now: float | None = None) -> list[str]:
        """Cancel pending unplugs whose timeout has passed; returns the device ids."""
        with self._lock:
            return self._hotplug.expire_unplugs(now)

    @_journaled
    def request_memory(self, action: MemoryAction, id_type: int, count: int = 0, first_index: int = 0) -> MemoryRequest:
        """Ask the guest to add or remove LMBs (MemoryModel.LMB): by count, index or indexed count.

        The outcome arrives as a MemoryRequestFinished event; see :mod:`.memory_requests`.
        """
        with self._lock:
            return self._hotplug.request_memory(action, id_type, count, first_index)

    # --- RTAS -------------------------------------------------------------------------------------

    @_journaled
    def set_indicator(self, indicator_type: int, index: int, new_state: int) -> int:
        """RTAS set-indicator; returns the RTAS status."""
        with self._lock:
            drc = self._drcs.get(index)
            self._checks.report(self._checks.conduct.before_set_indicator(drc, indicator_type, new_state))
            fault = self._checks.fault(
                Call.SET_INDICATOR, index, self._checks.target(drc, index, indicator_type, new_state)
            )
            status = (
                fault
                if fault is not None
                else rtas.PARAMETER_ERROR
                if drc is None
                else connector.set_indicator(drc, indicator_type, new_state, self._hotplug)
            )
            self.log.debug(
                "rtas.set_indicator", drc_index=index, indicator=indicator_type, value=new_state, status=status
            )
            return status

    @_journaled
    def get_sensor_state(self, sensor_type: int, index: int) -> tuple[int, int]:
        """RTAS get-sensor-state; returns (status, value), value 0 on error as QEMU writes it."""
        with self._lock:
            drc = self._drcs.peek(index)
            fault = self._checks.fault(Call.GET_SENSOR_STATE, index, self._checks.target(drc, index))
            if fault is not None:
                return fault, 0
            if sensor_type != rtas.DR_ENTITY_SENSE or drc is None:
                return rtas.PARAMETER_ERROR, 0
            return rtas.SUCCESS, drc.entity_sense()

    def try_now(self, action: Callable[[], T]) -> T | Busy:
        """``action()`` at once if no other thread is inside the platform; else BUSY, nothing run.

        For an event loop: an RTAS call takes microseconds, but waiting for the lock
        (another thread's plug, say) would stall every client; it runs on a thread then.
        """
        if not self._lock.acquire(blocking=False):
            return BUSY
        try:
            if self.recorder is None:
                return action()
            with self.recorder.group():
                return action()
        finally:
            self._lock.release()

    def run_exclusive(self, action: Callable[[], T]) -> T:
        """``action()`` with no other call on the platform in between (an RTAS batch, say).

        A recorder writes the calls it made together (group commit), before it returns.
        """
        with self._lock:
            if self.recorder is None:
                return action()
            with self.recorder.group():
                return action()

    @_journaled
    def configure_connector(self, area: bytes, memory_extent: int = 0) -> tuple[int, bytes]:
        """RTAS ibm,configure-connector over one 4096-byte work area; returns (status, work area).

        ``memory_extent`` is args[1]: 0, or the page a guest passes after status 5.
        """
        if len(area) != work_area.WORK_AREA_SIZE:
            raise InvalidArgument("work_area", len(area), "must be exactly 4096 bytes")
        with self._lock:
            out = bytearray(area)
            index = work_area.drc_index(out)
            drc = self._drcs.get(index)
            self._checks.report(self._checks.conduct.before_configure(drc))
            fault = self._checks.fault(Call.CONFIGURE_CONNECTOR, index, self._checks.target(drc, index), memory_extent)
            status = (
                fault
                if fault is not None
                else rtas.PARAMETER_ERROR
                if drc is None
                else connector.configure_step(drc, out, self._hotplug)
            )
            self._checks.conduct.after_configure(index, status)
            if status == rtas.HARDWARE_ERROR:
                self.log.error("rtas.configure_connector.overflow", drc_index=index)
            self.log.debug("rtas.configure_connector", drc_index=index, status=status)
            return status, bytes(out)

    @_journaled
    def set_power_level(self, power_domain: int, level: int) -> tuple[int, int]:
        """RTAS set-power-level: only the live-insertion domain (-1); the level is always 100."""
        with self._lock:
            fault = self._checks.fault(Call.SET_POWER_LEVEL, 0, Target())
        return (fault, 0) if fault is not None else self._power_level(power_domain)

    @_journaled
    def get_power_level(self, power_domain: int) -> tuple[int, int]:
        """RTAS get-power-level: only the live-insertion domain (-1), at level 100."""
        with self._lock:
            fault = self._checks.fault(Call.GET_POWER_LEVEL, 0, Target())
        return (fault, 0) if fault is not None else self._power_level(power_domain)

    def _power_level(self, power_domain: int) -> tuple[int, int]:
        if power_domain != rtas.LIVE_INSERTION_DOMAIN:
            return rtas.PARAMETER_ERROR, 0
        return rtas.SUCCESS, rtas.FULL_POWER

    # --- faults and the guest's conduct (firmware_checks.py) --------------------------------------

    @_journaled
    def add_fault_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._checks.faults.add(rule)
            return rule

    def fault_rules(self) -> list[FaultRule]:
        """The rules as they are now (copies: their counters do not move under the caller)."""
        with self._lock:
            return self._checks.rules()

    @_journaled
    def clear_fault_rules(self, names: frozenset[str] = frozenset()) -> int:
        with self._lock:
            return self._checks.faults.clear(names)

    def findings(self) -> tuple[list[Finding], int]:
        """The retained findings, oldest first, and how many were ever made."""
        with self._lock:
            findings, total, _ = self._checks.conduct.state()
            return findings, total

    # --- RTAS: thread states -------------------------------------------------------------------------

    def _core_of(self, cpu_id: int) -> CpuCore | None:
        """The core whose thread has vCPU id ``cpu_id`` (QEMU's spapr_find_cpu), if it is plugged.

        A core with an unplug pending still has its threads until it is released, as in QEMU.
        """
        return self._inventory.occupant(CpuCore, cpu_id - cpu_id % self.geometry.threads)

    @_journaled
    def query_cpu_stopped_state(self, cpu_id: int) -> tuple[int, int]:
        """RTAS query-cpu-stopped-state: (0, 0 stopped / 2 running), or (-3, 0) for no such thread."""
        with self._lock:
            core = self._core_of(cpu_id)
            if core is None:
                return rtas.PARAMETER_ERROR, 0
            return rtas.SUCCESS, rtas.THREAD_RUNNING if core.is_running(cpu_id) else rtas.THREAD_STOPPED

    @_journaled
    def start_cpu(self, cpu_id: int, start: int, r3: int) -> int:
        """RTAS start-cpu: a stopped thread starts at ``start`` with ``r3``; QEMU 7.2's statuses.

        -3 for no such thread, -1 (hardware error) for a thread that is not stopped. As in QEMU,
        the core's connector state does not matter (a hot-added core's threads can be started
        before configure-connector); the entry point is logged, not used.
        """
        with self._lock:
            core = self._core_of(cpu_id)
            if core is None:
                status = rtas.PARAMETER_ERROR
            elif core.is_running(cpu_id):
                status = rtas.HARDWARE_ERROR
            else:
                core.start(cpu_id)
                status = rtas.SUCCESS
            self.log.info("rtas.start_cpu", cpu_id=cpu_id, start=hex(start), r3=hex(r3), status=status)
            return status

    @_journaled
    def stop_self(self, calling_cpu: int) -> int:
        """RTAS stop-self made by thread ``calling_cpu``: it enters the stopped state.

        On hardware the call does not return; here it returns 0 (QEMU 7.2 writes no return
        cell, so a guest's rets[0] keeps the 0 it holds). A thread already stopped stays so
        (0, as QEMU, whose qtest caller is always vCPU 0). A ``calling_cpu`` that names no
        thread cannot have made the call: -3, nothing changes.
        """
        with self._lock:
            core = self._core_of(calling_cpu)
            if core is None:
                status = rtas.PARAMETER_ERROR
            else:
                core.stop(calling_cpu)
                status = rtas.SUCCESS
            self.log.info("rtas.stop_self", cpu_id=calling_cpu, status=status)
            return status

    # --- RTAS event logs --------------------------------------------------------------------------

    @_journaled
    def check_exception(self, event_mask: int, buffer_length: int) -> tuple[int, bytes]:
        """RTAS check-exception: (0, the first pending log of a class in the mask, truncated) or (1, b"")."""
        with self._lock:
            fault = self._checks.fault(Call.CHECK_EXCEPTION, 0, Target())
            if fault is not None:
                return fault, b""
            status, blob = self._rtas_events.pop(event_mask, buffer_length)
            self.log.debug("rtas.check_exception", mask=event_mask, status=status, length=len(blob))
            return status, blob

    @_journaled
    def event_scan(self, event_mask: int, buffer_length: int) -> int:
        """RTAS event-scan as QEMU does it: re-pulse the pending classes' interrupts, return 1."""
        with self._lock:
            fault = self._checks.fault(Call.EVENT_SCAN, 0, Target())
            if fault is not None:
                return fault
            self._rtas_events.repulse()
            return rtas.NO_ERRORS_FOUND

    # --- device tree and CAS ----------------------------------------------------------------------

    def view(self) -> PlatformView:
        """A plain view of the platform now, for building its device tree."""
        with self._lock:
            present = tuple(self._hotplug.present_after_reset())
            extents = assigned_extents(present, merge_runs=self.geometry.memory_model is MemoryModel.LMB)
            fragments = self._hotplug.fragment_view(present)  # the boot tree: pending unplugs completed
            return PlatformView(self.geometry, self.options, fragments, present, extents)

    def device_tree(self) -> Node:
        """The full device tree the guest would boot with now."""
        with self._lock:  # the view holds live devices: build before anything changes them
            return build_device_tree(self.view())

    def device_tree_blob(self) -> bytes:
        """The full device tree as a DTB (version 17)."""
        return to_dtb(self.device_tree())

    @_journaled
    def client_architecture_support(self, option_vector_5: bytes) -> CasOptions:
        """ibm,client-architecture-support with option vector 5, as QEMU 6.0+ handles it.

        Pending plugs and unplugs complete (every connector is reset), queued hotplug
        event logs are dropped, and the negotiated options take effect.
        """
        options = CasOptions.from_vector(option_vector_5)
        with self._lock:
            self._hotplug.options = options
            dropped = self._hotplug.reset()
            self._checks.reset()
            self.log.info(
                "guest.cas", hotplug_events=options.hotplug_events, drconf_memory=options.drconf_memory,
                dynamic_memory_v2=options.dynamic_memory_v2, drc_info=options.drc_info, dropped_logs=dropped,
            )  # fmt: skip
            return options

    # --- watchers and lifecycle -------------------------------------------------------------------

    def subscribe_events(self, after_sequence: int | None = None) -> tuple[Subscription, int]:
        """A live event subscription (retained events after ``after_sequence`` first), and the
        sequence it starts after: no event falls between the two."""
        with self._lock:
            return self._events.subscribe(after_sequence), self._events.last_sequence

    def unsubscribe_events(self, subscription: Subscription) -> None:
        with self._lock:
            self._events.unsubscribe(subscription)

    def watch_interrupts(self) -> InterruptWatch:
        """A watcher of the event interrupts; it learns at once of the classes with logs pending."""
        with self._lock:
            return self._rtas_events.watch_interrupts()

    def unwatch_interrupts(self, watch: InterruptWatch) -> None:
        with self._lock:
            self._rtas_events.unwatch_interrupts(watch)

    def close(self, reason: str = "deleted") -> None:
        """End every watcher ("deleted": the platform is gone; "shutdown": the server stops)."""
        with self._lock:
            self._events.close(reason)
            self._rtas_events.close(reason)
            self._hotplug.release_memory()


__all__ = ["BUSY", "Busy", "DimmRequest", "Platform", "PlugRequest"]
