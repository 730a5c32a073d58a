"""Plug and unplug orchestration over one platform's connectors and devices.

:class:`Hotplug` attaches validated devices, marks and releases connectors,
deletes devices (with what goes with them), cancels refused or timed-out
unplugs, and queues the hotplug event logs and management events each step
announces. It is the :class:`~.drc.DrcOwner` that connector transitions call
back. It takes no lock: the :class:`~.platform.Platform` facade calls it under
the platform's lock.

Example::

    >>> from papr_emu.model import Platform, default_geometry
    >>> from papr_emu.model.devices import CpuCoreParams
    >>> platform = Platform("p", default_geometry())
    >>> platform.plug("", CpuCoreParams(1)).id, platform.unplug("core1").deleted
    ('core1', True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import plug_rules
from .cas import CasOptions
from .devices import DEVICE_ID_PATTERN, Device, Inventory, Lmb, PlugRequest
from .devicetree import Node
from .drc import LMB, Drc, RefusalSignal
from .drc_table import DrcTable
from .errors import FailedPrecondition, InvalidArgument, NotFound
from .events import DeviceAdded, DeviceDeleted, EventLog, UnplugRejected, UnplugRequested, UnplugTimedOut
from .geometry import Geometry, MemoryModel
from .limits import Budget, Limits, exhausted
from .memory_requests import MemoryAction, MemoryOutcome, MemoryRequest, MemoryRequestFinished
from .rtas_events import RtasEventQueue
from .rtas_log import EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG, HP_ID_DRC_COUNT, HP_ID_DRC_INDEX, HotplugLog
from .snapshots import UnplugOutcome
from .unplug_timeouts import UnplugTimeouts
from .view import FragmentView


def _compact(indexes: set[int]) -> Sequence[int]:
    """Ascending indexes, as a range when they are consecutive (a big DIMM's are: kept events stay small)."""
    ordered = sorted(indexes)
    if ordered and ordered[-1] - ordered[0] + 1 == len(ordered):
        return range(ordered[0], ordered[-1] + 1)
    return tuple(ordered)


class Hotplug:
    """Device lifecycle of one platform: plug, unplug, release, delete, cancel."""

    def __init__(
        self,
        geometry: Geometry,
        drcs: DrcTable[Device],
        inventory: Inventory[Device],
        events: EventLog,
        rtas_events: RtasEventQueue,
        unplug_timeouts: UnplugTimeouts,
        monotonic: Callable[[], float],
        log: Any,
        limits: Limits,
        lmb_budget: Budget,
    ) -> None:
        self.geometry = geometry
        self._drcs = drcs
        self._inventory = inventory
        self._events = events
        self._rtas_events = rtas_events
        self.unplug_timeouts = unplug_timeouts
        self._monotonic = monotonic
        self.log = log  # structlog, bound to the platform
        # What the guest negotiated at CAS. Before it, hotplug logs go to the EPOW source, DIMM adds
        # are counted (not indexed), and the tree has the four ibm,drc-* arrays and no drconf memory.
        self.options = CasOptions()
        self.hpt_shift = 0  # set by the platform once the boot devices are in
        self.limits = limits
        self._lmb_budget = lmb_budget  # LMBs attached on every platform of the server
        self.lmbs = 0  # LMBs attached to DIMMs on this platform
        self.memory_request: MemoryRequest | None = None  # the pending one (MemoryModel.LMB)
        # The last add, completed when its last LMB was configured: until the next request the guest
        # may still fail an LMB of it (Linux: add_memory fails after configure-connector), which
        # makes it pending again.
        self._completed_add: MemoryRequest | None = None
        self._memory_requests = 0  # ids handed out

    def plug(self, device_id: str, request: PlugRequest, hotplugged: bool) -> Device:
        """Validate and attach a device (coldplug: its connectors go straight to the ready state)."""
        device = plug_rules.prepare(self.geometry, self._inventory, device_id, request, hotplugged)
        logs = self._logs_if_plugged(device) if hotplugged else []
        self._check_room(device, len(logs), "plugging")
        blocks = device.memory_blocks
        if self.lmbs + blocks > self.limits.lmbs_per_platform:
            raise exhausted(
                "lmbs_per_platform", self.limits.lmbs_per_platform,
                f"plugging {device.id} would attach {self.lmbs + blocks} LMBs on this platform",
            )  # fmt: skip
        if not self._lmb_budget.reserve(blocks):
            raise exhausted(
                "lmbs", self._lmb_budget.limit,
                f"plugging {device.id} would attach {self._lmb_budget.used + blocks} LMBs on the server",
            )  # fmt: skip
        self.lmbs += blocks
        for drc_range in device.connector_ranges():
            self._drcs.add_range(drc_range)
        for index in device.drc_indexes:
            drc = self._drcs.get(index)
            assert drc is not None and drc.device is None, f"connector {index:#x} not free"
            drc.device = device
            device.attached.add(index)
            if not hotplugged:
                drc.reset()  # coldplug: straight to the ready state
        self._inventory.add(device)
        self._queue_logs(logs)
        self.log.info(
            "device.plugged", device=device.id, device_type=device.type.value, drc_index=device.drc_indexes[0],
            drc_count=len(device.drc_indexes), hotplugged=hotplugged,
        )  # fmt: skip
        if device.announced:
            self._events.publish(DeviceAdded(device.info()))
        return device

    def unplug(self, device: Device) -> UnplugOutcome:
        """Request the device's unplug (QMP device_del): QEMU's refusals, then mark, release and announce."""
        if device.unplug_needs_hotplug_events is not None and not self.options.hotplug_events_or_none:
            raise FailedPrecondition(device.unplug_needs_hotplug_events)
        device.check_unplug()
        # Marking only takes logs away (a function the guest never acquired goes at once): an upper bound.
        self._check_room(device, len(device.unplug_logs(self._inventory)), "unplugging")
        if device.unplug_pending:  # a type QEMU lets re-request (a CPU core): the remove event is re-sent
            self.log.info("device.unplug_repeated", device=device.id)
        else:
            for other in [*device.unplug_companions(self._inventory), device]:
                self._request_unplug(other)
        self._queue_logs(device.unplug_logs(self._inventory))
        return UnplugOutcome(device.id not in self._inventory, device.info())

    def _request_unplug(self, device: Device) -> None:
        """Mark the device's connectors unplug-pending; release those the guest never acquired."""
        device.unplug_pending = True
        for index in sorted(device.attached):
            drc = self._drcs.get(index)
            assert drc is not None
            drc.unplug_requested = True
            if drc.state == drc.type.connector_class.empty_state:
                self._release(drc, released_by=0)  # never acquired by the guest: gone at once
        if device.id not in self._inventory:
            return  # every connector was released: the device is gone already
        timeout = self.unplug_timeouts.for_type(device.type)
        if timeout is not None:
            device.unplug_deadline = self._monotonic() + timeout
        self.log.info("device.unplug_requested", device=device.id, drc_index=min(device.attached))
        if device.announced:
            self._events.publish(UnplugRequested(device.id, device.type, _compact(device.attached)))

    # --- the DrcOwner protocol: what connector transitions call back ------------------------------

    def release(self, drc: Drc[Any]) -> None:
        """The guest gave back ``drc`` with an unplug pending."""
        self._release(drc, released_by=drc.index)

    def refuse_unplug(self, drc: Drc[Any], signal: RefusalSignal) -> None:
        """The guest refused the pending unplug: cancel it (for a DIMM, on every LMB)."""
        device = drc.device
        assert isinstance(device, Device)
        request = self.memory_request
        if request is not None and drc.index in request.marked:  # an LMB a memory request removes
            self._finish_memory_request(MemoryOutcome.REFUSED, signal, drc.index)
            return
        self._cancel_unplug(device)
        self.log.warning("device.unplug_rejected", device=device.id, drc_index=drc.index, signal=signal.value)
        self._events.publish(UnplugRejected(device.id, device.type, signal, drc.index))

    def fragment(self, drc: Drc[Any]) -> Node:
        """The node configure-connector hands out for ``drc``."""
        device = drc.device
        assert isinstance(device, Device)  # configurable states always have a device
        # A PHB's node holds its functions: every one attached now, unplug pending or not (QEMU walks
        # the bus as it is). Built at the start of each sequence, so a replay shows the bus of now.
        nested = tuple(self._inventory) if device.children_path() is not None else ()
        return device.fragment(drc.index, self.fragment_view(nested))

    def _release(self, drc: Drc[Device], released_by: int) -> None:
        device = drc.device
        assert device is not None
        drc.device = None
        drc.unplug_requested = False
        drc.rewind()
        device.attached.discard(drc.index)
        # Per connector, so debug: a DIMM has up to 262,144 of them; device.deleted sums it up at info.
        self.log.debug("drc.released", drc_index=drc.index, device=device.id, left=len(device.attached))
        if not device.attached:
            self._delete(device, released_by)
        if self.memory_request is not None:
            outcome = self.memory_request.released(drc.index)
            if outcome is not None:
                self._finish_memory_request(outcome)
                return
        completed = self._completed_add
        if completed is not None and drc.index in completed.held:
            # The guest gives back an LMB of the add it completed: it failed that LMB after all
            # (add_memory). The add is pending again: by count the guest may take another LMB;
            # it ends once more, completed or refused (the last event for an id is its outcome).
            self._completed_add = None
            self.memory_request = completed
            outcome = completed.released(drc.index)
            if outcome is not None:
                self._finish_memory_request(outcome)

    def _delete(self, device: Device, released_by: int) -> None:
        for dependent in device.dependents(self._inventory):
            for index in sorted(dependent.attached):
                drc = self._drcs.get(index)
                assert drc is not None
                self._release(drc, released_by)  # the last one deletes the dependent
        for drc_range in device.connector_ranges():
            self._drcs.remove_range(drc_range)
        self._inventory.remove(device)
        self._give_back(device.memory_blocks)
        device.unplug_pending = False
        if not device.announced:
            return
        self.log.info("device.deleted", device=device.id, drc_index=released_by, drc_count=len(device.drc_indexes))
        self._events.publish(DeviceDeleted(device.id, device.type, device.drc_indexes, released_by))

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

    def expire_unplugs(self, now: float | None = None) -> list[str]:
        """Cancel pending unplugs whose timeout has passed; returns the device ids."""
        now = self._monotonic() if now is None else now
        expired = [
            d for d in self._inventory
            if d.unplug_pending and d.unplug_deadline is not None and d.unplug_deadline <= now
        ]  # fmt: skip
        for device in expired:
            timeout = self.unplug_timeouts.for_type(device.type) or 0.0
            self._cancel_unplug(device)
            self.log.warning("device.unplug_timed_out", device=device.id, timeout=timeout)
            self._events.publish(UnplugTimedOut(device.id, device.type, timeout))
        return [d.id for d in expired]

    # --- the hooks for resources the guest asks for (PowerVM-style LMBs) -------------------------

    def provide(self, drc: Drc[Any]) -> bool:
        """The guest acquires an unassigned LMB: assign it if the pending add request covers it."""
        request = self.memory_request
        if request is None or drc.type is not LMB or not request.may_acquire(drc.index):
            return False
        if self.lmbs + 1 > self.limits.lmbs_per_platform or not self._lmb_budget.reserve(1):
            self.log.warning("memory.lmb_limit", drc_index=drc.index, lmbs=self.lmbs)
            return False  # the guest's acquire fails (-3), as for an LMB the platform cannot back
        self.lmbs += 1
        device = Lmb(f"lmb{drc.id}", hotplugged=True, lmb_id=drc.id)
        drc.device = device
        device.attached.add(drc.index)
        self._inventory.add(device)
        request.acquired(drc.index)
        return True

    def may_isolate(self, drc: Drc[Any]) -> bool:
        """An LMB added under the pending (or just completed) add request may be given back: a rollback."""
        requests = (r for r in (self.memory_request, self._completed_add) if r is not None)
        if drc.device is None or not any(r.may_give_back(drc.index) for r in requests):
            return False
        drc.unplug_requested = True  # released at allocation unusable
        drc.device.unplug_pending = True
        return True

    def released_on_deallocate(self, drc: Drc[Any]) -> bool:
        device = drc.device
        return isinstance(device, Device) and device.released_when_unusable

    def configured(self, drc: Drc[Any]) -> None:
        request = self.memory_request
        if request is not None and request.reached_configured(drc.index) is MemoryOutcome.COMPLETED:
            self._finish_memory_request(MemoryOutcome.COMPLETED)

    # --- PowerVM-style memory requests -----------------------------------------------------------

    def request_memory(self, action: MemoryAction, id_type: int, count: int, first_index: int) -> MemoryRequest:
        """Queue a request to add or remove LMBs (by count, index or indexed count); see memory_requests."""
        if self.geometry.memory_model is not MemoryModel.LMB:
            raise FailedPrecondition(
                "this platform's memory comes as DIMMs (memory model dimm): plug or unplug a DIMM instead"
            )
        if self.memory_request is not None:
            pending = self.memory_request
            raise FailedPrecondition(f"memory request {pending.id} ({pending.describe()}) is still pending")
        if id_type == HP_ID_DRC_INDEX:
            count = 1
        elif count < 1:
            raise InvalidArgument("count", count, "must be at least 1")
        adding = action is MemoryAction.ADD
        if id_type == HP_ID_DRC_COUNT:
            candidates = [d for d in self._lmb_connectors() if (d.device is None) == adding]
            if len(candidates) < count:
                state = "unassigned" if adding else "assigned"
                raise FailedPrecondition(f"{action.value} {count} LMBs: only {len(candidates)} are {state}")
            scope: frozenset[int] | None = None
            target = count
        else:
            field = "drc_index" if id_type == HP_ID_DRC_INDEX else "indexed_count"
            named = [self._lmb_connector(first_index + n, field) for n in range(count)]
            scope = frozenset(d.index for d in named if (d.device is None) == adding)
            if not scope:
                state = "assigned" if adding else "unassigned"
                what = f"LMB {first_index:#x} is" if count == 1 else f"every LMB from {first_index:#x} is"
                raise FailedPrecondition(f"{action.value}: {what} {state} already")
            target = len(scope)
        if adding and self.lmbs + target > self.limits.lmbs_per_platform:
            raise exhausted(
                "lmbs_per_platform", self.limits.lmbs_per_platform,
                f"adding {target} LMBs would attach {self.lmbs + target} LMBs on this platform",
            )  # fmt: skip
        queued, limit = len(self._rtas_events), self.limits.queued_event_logs
        if queued + 1 > limit:
            raise exhausted("queued_event_logs", limit, "a memory request queues one event log")
        self._completed_add = None  # a new request: the last add stands
        self._memory_requests += 1
        first = first_index if id_type != HP_ID_DRC_COUNT else 0
        request = MemoryRequest(self._memory_requests, action, id_type, first, count, target, scope)
        if not adding:
            covered = scope if scope is not None else {d.index for d in self._lmb_connectors() if d.device}
            for index in sorted(covered):
                drc = self._drcs.get(index)
                assert drc is not None and drc.device is not None
                drc.unplug_requested = True
                drc.device.unplug_pending = True
                request.marked.add(index)
        self.memory_request = request
        self._queue_logs([request.log()])
        self.log.info("memory.requested", request=request.id, what=request.describe(), target=target)
        return request

    def _lmb_connectors(self) -> list[Drc[Device]]:
        g = self.geometry
        found = (self._drcs.get(LMB.index(g.first_lmb_id + n)) for n in range(g.lmb_count))
        return [d for d in found if d is not None]

    def _lmb_connector(self, index: int, field: str) -> Drc[Device]:
        drc = self._drcs.get(index)
        if drc is None or drc.type is not LMB:
            raise NotFound(field, index, "LMB connector")
        return drc

    def _finish_memory_request(
        self, outcome: MemoryOutcome, signal: RefusalSignal | None = None, drc_index: int = 0
    ) -> None:
        request = self.memory_request
        assert request is not None
        self.memory_request = None
        if request.action is MemoryAction.ADD and outcome is MemoryOutcome.COMPLETED:
            self._completed_add = request
        for index in sorted(request.marked):  # what a remove marked and the guest kept
            drc = self._drcs.get(index)
            if drc is not None and drc.device is not None:
                drc.unplug_requested = False
                drc.device.unplug_pending = False
        self._announce_memory_outcome(request, outcome, signal, drc_index)

    def _announce_memory_outcome(
        self, request: MemoryRequest, outcome: MemoryOutcome, signal: RefusalSignal | None = None, drc_index: int = 0
    ) -> None:
        changed = request.lmbs_changed
        self.log.info(
            "memory.request_finished", request=request.id, what=request.describe(), outcome=outcome.value,
            lmbs=changed, drc_index=drc_index, signal=signal.value if signal else None,
        )  # fmt: skip
        self._events.publish(
            MemoryRequestFinished(
                request.id, request.action, request.id_type, request.first_index, request.count, outcome, changed,
                signal, drc_index,
            )
        )  # fmt: skip

    # --- snapshots -----------------------------------------------------------------------------------

    def now(self) -> float:
        """The monotonic time unplug deadlines are measured in."""
        return self._monotonic()

    def devices_in_plug_order(self) -> list[Device]:
        return self._inventory.in_plug_order()

    @property
    def memory_requests_issued(self) -> int:
        return self._memory_requests

    @property
    def completed_add(self) -> MemoryRequest | None:
        return self._completed_add

    def restore_device(self, device: Device, attached: set[int]) -> None:
        """Put back a device from a snapshot: its connector ranges, its slot, its LMBs, its connectors."""
        if device.id in self._inventory or not DEVICE_ID_PATTERN.fullmatch(device.id):
            raise ValueError(f"device id {device.id!r} is taken or malformed")
        if self._inventory.occupant(device.slot_family, device.slot_key) is not None:
            raise ValueError(f"{device.id}: its slot {device.slot_key!r} is taken")
        blocks = device.memory_blocks
        if self.lmbs + blocks > self.limits.lmbs_per_platform:
            raise exhausted("lmbs_per_platform", self.limits.lmbs_per_platform, f"restoring {device.id}")
        if not self._lmb_budget.reserve(blocks):
            raise exhausted("lmbs", self._lmb_budget.limit, f"restoring {device.id}")
        self.lmbs += blocks
        self._inventory.add(device)
        for drc_range in device.connector_ranges():
            self._drcs.add_range(drc_range)
        for index in sorted(attached):
            drc = self._drcs.get(index)
            if drc is None or drc.device is not None:
                raise ValueError(f"{device.id}: connector {index:#x} does not exist or is taken")
            drc.device = device
            device.attached.add(index)

    def restore_memory_requests(
        self, issued: int, pending: MemoryRequest | None, completed_add: MemoryRequest | None
    ) -> None:
        self._memory_requests = issued
        self.memory_request = pending
        self._completed_add = completed_add

    def check_invariants(self) -> None:
        """Devices and connectors agree (AssertionError naming what does not)."""
        for device in self._inventory.in_plug_order():
            for index in device.attached:
                drc = self._drcs.peek(index)
                assert drc is not None and drc.device is device, f"{device.id} is not on {index:#x}"
            for index in device.drc_indexes:
                drc = self._drcs.peek(index)
                if drc is not None and drc.unplug_requested:
                    assert drc.device is device, f"{index:#x} is unplug-pending without its device"
        for drc in self._drcs.materialised():
            assert drc.device is None or drc.index in drc.device.attached, f"{drc.index:#x}: device not attached"
            assert not drc.unplug_requested or drc.device is not None, f"{drc.index:#x}: unplug without a device"
        request = self.memory_request
        if request is not None:
            for index in request.marked:
                drc = self._drcs.peek(index)
                assert drc is not None and drc.device is not None, f"memory request marks {index:#x}: no LMB"

    # --- limits ------------------------------------------------------------------------------------

    def _logs_if_plugged(self, device: Device) -> list[HotplugLog]:
        """The logs plugging ``device`` would queue, worked out before anything changes."""
        device.attached.update(device.drc_indexes)
        self._inventory.add(device)
        try:
            return device.plug_logs(self._inventory, count_indexed=self.options.hotplug_events)
        finally:
            self._inventory.remove(device)
            device.attached.clear()

    def _check_room(self, device: Device, logs: int, doing: str) -> None:
        """Refuse a request whose event logs would not fit the queue (nothing queued is dropped)."""
        queued, limit = len(self._rtas_events), self.limits.queued_event_logs
        if queued + logs > limit:
            raise exhausted(
                "queued_event_logs", limit,
                f"{doing} {device.id} would queue {logs} event logs on top of the {queued} the guest has "
                "not read (check-exception)",
            )  # fmt: skip

    def _give_back(self, blocks: int) -> None:
        self.lmbs -= blocks
        self._lmb_budget.release(blocks)

    def release_memory(self) -> None:
        """The platform goes: its LMBs no longer count against the server's limit."""
        self._give_back(self.lmbs)

    def reset(self) -> int:
        """QEMU's DRC reset at CAS: pending plugs and unplugs complete; returns how many queued logs were dropped.

        On every connector with a device, a pending unplug completes (release), then the
        connector is ready if it still has a device, else empty; queued hotplug logs go.
        A pending memory request ends (cancelled: its log is gone) before anything else, so
        the LMBs it marked for removal stay.
        """
        if self.memory_request is not None:
            self._finish_memory_request(MemoryOutcome.CANCELLED)
        for index in sorted(i for d in self._inventory for i in d.attached):
            drc = self._drcs.get(index)
            if drc is None:  # its PHB went away with an earlier release
                continue
            if drc.unplug_requested:
                self._release(drc, released_by=0)
            drc.reset()
        return self._rtas_events.drop()

    def present_after_reset(self) -> list[Device]:
        """The devices a machine reset now would leave: pending unplugs completed (by id).

        LMBs marked for a pending memory request stay: a reset ends the request first.
        """
        marked = self.memory_request.marked if self.memory_request is not None else set()
        return [d for d in self._inventory if not d.unplug_pending or not d.attached.isdisjoint(marked)]

    def fragment_view(self, devices: tuple[Device, ...] = ()) -> FragmentView:
        """What fragments are built from; ``devices``: those whose nodes nest under other nodes' (a PHB's)."""
        return FragmentView(self.hpt_shift, self.options.drc_info, tuple(self._drcs.ranges()), devices)

    def _queue_logs(self, logs: Iterable[HotplugLog]) -> None:
        event_class = EVENT_CLASS_HOTPLUG if self.options.hotplug_events else EVENT_CLASS_EPOW
        for log in logs:
            queued = self._rtas_events.push(log, event_class)
            self.log.debug("rtas.event_queued", drc_index=log.index, action=log.action, plid=queued.plid)
