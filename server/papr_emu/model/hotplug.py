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
from .devices import Device, Inventory, PlugRequest
from .devicetree import Node
from .drc import Drc, RefusalSignal
from .drc_table import DrcTable
from .errors import FailedPrecondition
from .events import DeviceAdded, DeviceDeleted, EventLog, UnplugRejected, UnplugRequested, UnplugTimedOut
from .geometry import Geometry
from .limits import Budget, Limits, exhausted
from .rtas_events import RtasEventQueue
from .rtas_log import EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG, HotplugLog
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
        self._events.publish(UnplugRequested(device.id, device.type, _compact(device.attached)))

    # --- the DrcOwner protocol: what connector transitions call back ------------------------------

    def release(self, drc: Drc[Any]) -> None:
        """The guest gave back ``drc`` with an unplug pending."""
        self._release(drc, released_by=drc.index)

    def refuse_unplug(self, drc: Drc[Any], signal: RefusalSignal) -> None:
        """The guest refused the pending unplug: cancel it (for a DIMM, on every LMB)."""
        device = drc.device
        assert isinstance(device, Device)
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
        """
        for index in sorted(i for d in self._inventory for i in d.attached):
            drc = self._drcs.get(index)
            if drc is None:  # its PHB went away with an earlier release
                continue
            if drc.unplug_requested:
                self._release(drc, released_by=0)
            drc.reset()
        return self._rtas_events.drop()

    def fragment_view(self, devices: tuple[Device, ...] = ()) -> FragmentView:
        """What fragments are built from; ``devices``: those whose nodes nest under other nodes' (a PHB's)."""
        return FragmentView(self.hpt_shift, self.options.drc_info, tuple(self._drcs.ranges()), devices)

    def _queue_logs(self, logs: Iterable[HotplugLog]) -> None:
        event_class = EVENT_CLASS_HOTPLUG if self.options.hotplug_events else EVENT_CLASS_EPOW
        for log in logs:
            queued = self._rtas_events.push(log, event_class)
            self.log.debug("rtas.event_queued", drc_index=log.index, action=log.action, plid=queued.plid)
