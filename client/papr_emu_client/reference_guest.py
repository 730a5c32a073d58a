"""A reference guest: reacts to hotplug events the way the Linux pseries kernel does.

It waits for the event interrupt (InterruptService.WatchInterrupts), fetches each
log with check-exception, parses its HP section, and runs the kernel's DLPAR
sequences (arch/powerpc/platforms/pseries: dlpar.c, hotplug-cpu.c,
hotplug-memory.c, pmem.c), and drmgr's for PCI slots and PHBs. It can be told to refuse
an unplug ("LMB k cannot be offlined", "CPU busy") and which signal to give:
unisolate (kernels 5.12+/5.13+) or, for memory, a bare configure-connector
(older kernels).

The connector list (what a real guest reads from its device tree) comes from
PlatformService.ListConnectors.

Its RTAS calls go through one RtasService.Session stream by default, and the sequences
over many connectors (a DIMM's LMBs) travel in batches: a 1 TiB DIMM's 4,096 LMBs take a
few dozen round trips instead of about 45,000. ``transport="unary"`` makes one RPC per
RTAS call, as before; the calls, the outcomes and the events are the same. Over unary,
``unary_concurrency`` LMBs' sequences run at once, each LMB's calls in the kernel's order
(see :class:`~papr_emu_client.guest.Guest`); the default, 1, makes them one LMB after
another, every call in the kernel's order. CPU, PCI and PHB flows are always sequential.

Example::

    guest = ReferenceGuest(connect(), "default", RefusalPolicy(busy_cpus={0x10000001}))
    guest.handle_pending()      # process every queued event now
    guest.start()               # or: react to interrupts on a background thread
    ...
    guest.stop()                # also ends its session stream (close() alone does only that)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import grpc

from papr.v1 import connector_pb2, interrupt_pb2, platform_pb2

from .connect import Client
from .connectors import list_all
from .constants import HOT_ADD_REFUSED
from .errorlog import (
    ACTION_ADD,
    ACTION_REMOVE,
    EVENT_CLASS_EPOW,
    EVENT_CLASS_HOTPLUG,
    ID_COUNT,
    ID_COUNT_INDEXED,
    ID_INDEX,
    RESOURCE_CPU,
    RESOURCE_MEMORY,
    RESOURCE_PCI,
    RESOURCE_PHB,
    RESOURCE_PMEM,
    HotplugEvent,
    MalformedLog,
    parse_hotplug_event,
)
from .guest import (
    DEFAULT_UNARY_CONCURRENCY,
    DR_INDICATOR,
    ISOLATION_STATE,
    SENSE_PRESENT,
    THREAD_RUNNING,
    THREAD_STOPPED,
    UNISOLATE,
    Guest,
    RtasError,
)
from .transport import RetryPolicy, Transport
from .workarea import DtNode

RTAS_ERROR_LOG_MAX = 2048  # QEMU's rtas-error-log-max: the kernel's buffer size
LIVE_INSERTION = -1
# configure-connector walk size for LMBs: their fragment is 5 calls (memory@, three properties,
# complete), so 8 leaves room and lets about 127 LMBs share one 4 MiB batch.
LMB_WALK_CALLS = 8
# start-cpu's entry point for a new thread: Linux passes __pa(generic_secondary_smp_init); the
# platform logs it and runs nothing.
SECONDARY_ENTRY = 0x60
# pseries_cpu_die polls without a limit (warning every 120 s); the thread stops at once here.
CPU_DIE_POLLS = 100


@dataclass
class RefusalPolicy:
    """What the guest refuses to give back, and how it says so."""

    lmbs_not_offlinable: set[int] = field(default_factory=set)  # LMB DRC indexes ("cannot be offlined")
    lmbs_not_addable: set[int] = field(default_factory=set)  # LMB DRC indexes whose add_memory fails
    busy_cpus: set[int] = field(default_factory=set)  # CPU DRC indexes ("CPU busy")
    signal: Literal["unisolate", "configure-connector"] = "unisolate"


@dataclass(frozen=True)
class Outcome:
    """What the guest did with one event."""

    event: HotplugEvent
    result: Literal["done", "refused", "failed", "ignored", "rejected"]  # rejected: the platform refused an add
    detail: str = ""
    drc_indexes: tuple[int, ...] = ()


class ReferenceGuest:
    """Guest-side state (which LMBs are assigned, which nodes are attached) and DLPAR handlers."""

    def __init__(
        self,
        client: Client,
        platform: str,
        policy: RefusalPolicy | None = None,
        event_mask: int = EVENT_CLASS_EPOW | EVENT_CLASS_HOTPLUG,
        progress: Callable[[Outcome], None] | None = None,
        step: Callable[[str, int, int], None] | None = None,
        transport: Transport = "session",
        unary_concurrency: int = DEFAULT_UNARY_CONCURRENCY,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 (frozen: one default instance is fine)
    ) -> None:
        self.client = client
        self.platform = platform
        self.policy = policy or RefusalPolicy()
        self.event_mask = event_mask
        self.rtas = Guest(client.rtas, platform, transport, unary_concurrency=unary_concurrency, retry=retry)
        self.outcomes: list[Outcome] = []
        self._progress = progress
        self._step = step or (lambda label, done, total: None)  # per-LMB progress: (label, done, total)
        self._thread: threading.Thread | None = None
        self._call: grpc.Future | None = None
        self._lock = threading.Lock()
        # The guest's view at "boot": connectors the platform hands over configured.
        self.lmbs: list[int] = []
        self.assigned_lmbs: set[int] = set()
        self.nodes: dict[int, DtNode] = {}  # configured CPU, PCI and PHB nodes by DRC index
        for connector in list_all(self.client.platforms, self.platform):
            configured = connector.state in (
                connector_pb2.DRC_STATE_LOGICAL_CONFIGURED,
                connector_pb2.DRC_STATE_PHYSICAL_CONFIGURED,
            )
            if connector.type == connector_pb2.DRC_TYPE_LMB:
                self.lmbs.append(connector.index)
                if configured:
                    self.assigned_lmbs.add(connector.index)
            elif configured:
                self.nodes[connector.index] = DtNode(connector.name)

    # --- event loop -------------------------------------------------------------------------------

    def handle_pending(self) -> list[Outcome]:
        """check-exception until it returns 1, handling each log in order."""
        handled: list[Outcome] = []
        with self._lock:
            while True:
                status, log = self.rtas.check_exception(self.event_mask, RTAS_ERROR_LOG_MAX)
                if status != 0:
                    return handled
                outcome = self.handle_log(log)
                handled.append(outcome)

    def handle_log(self, blob: bytes) -> Outcome:
        try:
            event = parse_hotplug_event(blob)
        except MalformedLog as error:
            outcome = Outcome(HotplugEvent(0, 0, 0), "ignored", str(error))
        else:
            outcome = self.handle_event(event)
        self.outcomes.append(outcome)
        if self._progress is not None:
            self._progress(outcome)
        return outcome

    def start(self) -> None:
        """React to interrupts on a background thread until stop()."""
        call = self.client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=self.platform))
        call.initial_metadata()  # subscribed: no pulse can be missed from here on
        self._call = call
        self._thread = threading.Thread(target=self._run, args=(call,), name="reference-guest", daemon=True)
        self._thread.start()

    def _run(self, call: grpc.Future) -> None:
        try:
            for _pulse in call:
                self.handle_pending()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise

    def stop(self) -> None:
        """Stop the background thread (if started) and end the RTAS session."""
        if self._call is not None:
            self._call.cancel()
        if self._thread is not None:
            self._thread.join(10)
        self.close()

    def close(self) -> None:
        """End the RTAS session stream, if open (the guest reopens one if used again)."""
        self.rtas.close()

    def __enter__(self) -> ReferenceGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Outcome]:
        """Wait until ``count`` events have been handled (background mode)."""
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.outcomes)

    # --- dispatch ---------------------------------------------------------------------------------

    def handle_event(self, event: HotplugEvent) -> Outcome:
        handlers: dict[tuple[int, int], Callable[[HotplugEvent], Outcome]] = {
            (RESOURCE_CPU, ACTION_ADD): self.cpu_add,
            (RESOURCE_CPU, ACTION_REMOVE): self.cpu_remove,
            (RESOURCE_MEMORY, ACTION_ADD): self.memory_add,
            (RESOURCE_MEMORY, ACTION_REMOVE): self.memory_remove,
            (RESOURCE_PCI, ACTION_ADD): self.pci_add,
            (RESOURCE_PCI, ACTION_REMOVE): self.pci_remove,
            (RESOURCE_PHB, ACTION_ADD): self.phb_add,
            (RESOURCE_PHB, ACTION_REMOVE): self.phb_remove,
            (RESOURCE_PMEM, ACTION_ADD): self.pmem_add,
            (RESOURCE_PMEM, ACTION_REMOVE): self.pmem_remove,
        }
        handler = handlers.get((event.resource, event.action))
        if handler is None:
            return Outcome(event, "ignored", "no handler for this resource and action")
        try:
            return handler(event)
        except RtasError as error:
            if error.call == "set-indicator(unisolate)" and error.status == HOT_ADD_REFUSED:
                # The firmware refused the inserted entity (LoPAR R1-13.5.3.4-4); the acquire rolled back.
                return Outcome(event, "rejected", str(error), (error.drc_index,))
            return Outcome(event, "failed", str(error))

    # --- CPU (hotplug-cpu.c) ----------------------------------------------------------------------

    def cpu_add(self, event: HotplugEvent) -> Outcome:
        """dlpar_cpu_add: acquire, configure-connector, attach the node, then online its threads."""
        index = event.index
        if index in self.nodes:
            return Outcome(event, "ignored", "CPU already present", (index,))
        node = self._acquire_and_configure(index)
        self.nodes[index] = node  # dlpar_attach_node
        threads = self._cpu_threads(index)
        failure = self._online_threads(threads)
        if failure:
            # "Failed to online cpu": dlpar_online_cpu offlines what it onlined; detach; release.
            self._offline_threads(index, threads)
            del self.nodes[index]
            self.rtas.release_drc(index)
            return Outcome(event, "failed", failure, (index,))
        return Outcome(event, "done", node.name, (index,))

    def cpu_remove(self, event: HotplugEvent) -> Outcome:
        """dlpar_cpu_remove: offline the threads (each stops itself), then release; online them if that fails."""
        index = event.index
        if index not in self.nodes:
            return Outcome(event, "ignored", "no such CPU", (index,))
        if index in self.policy.busy_cpus:
            # Offlining failed ("CPU busy"): since 5.12 the kernel says so with unisolate.
            self._unisolate_drc(index)
            return Outcome(event, "refused", "CPU busy", (index,))
        threads = self._cpu_threads(index)
        self._offline_threads(index, threads)
        try:
            self.rtas.release_drc(index)
        except RtasError:
            self._online_threads(threads)  # "Failed to release drc": dlpar_online_cpu
            raise
        del self.nodes[index]
        return Outcome(event, "done", "", (index,))

    def _cpu_threads(self, index: int) -> list[int]:
        """The core's threads (vCPU ids): its node's ibm,ppc-interrupt-server#s, as Linux reads them.

        A core present at boot has no configured node here; its threads follow from the
        platform's geometry as QEMU numbers them (the core id, then one per thread).
        """
        servers = self.nodes[index].properties.get("ibm,ppc-interrupt-server#s")
        if servers is not None:
            return [int.from_bytes(servers[n : n + 4], "big") for n in range(0, len(servers), 4)]
        request = platform_pb2.GetPlatformRequest(platform=self.platform)
        threads = self.client.platforms.GetPlatform(request).platform.geometry.threads_per_core or 1
        core_id = index & 0x0FFF_FFFF
        return list(range(core_id, core_id + threads))

    def _online_threads(self, threads: list[int]) -> str:
        """dlpar_online_cpu: smp_startup_cpu for each thread; what failed ("" if none did)."""
        for cpu_id in threads:
            status, state = self.rtas.query_cpu_stopped_state(cpu_id)
            if status == 0 and state == THREAD_RUNNING:
                continue  # already out of firmware (kexec): nothing to start
            status = self.rtas.start_cpu(cpu_id, SECONDARY_ENTRY, cpu_id)
            if status:
                return f"start-cpu failed: {status} (thread {cpu_id})"
        return ""

    def _offline_threads(self, index: int, threads: list[int]) -> None:
        """dlpar_offline_cpu: each online thread calls stop-self (pseries_cpu_offline_self) and
        another thread polls query-cpu-stopped-state until it reads stopped (pseries_cpu_die).

        Which threads are online is the guest's own record in Linux; here it asks the platform.
        """
        for cpu_id in threads:
            status, state = self.rtas.query_cpu_stopped_state(cpu_id)
            if status or state == THREAD_STOPPED:
                continue  # not online
            self.rtas.stop_self(cpu_id)
            for _ in range(CPU_DIE_POLLS):
                status, state = self.rtas.query_cpu_stopped_state(cpu_id)
                if status or state == THREAD_STOPPED:
                    break  # stopped, or QCSS_HARDWARE_ERROR ("reported error while dying")
            else:
                raise RtasError(f"query-cpu-stopped-state (thread {cpu_id} did not stop)", index, THREAD_RUNNING)

    def _acquire_and_configure(self, index: int) -> DtNode:
        """dlpar_acquire_drc, then dlpar_configure_connector; dlpar_release_drc if that fails."""
        batch = self.rtas.acquire_drcs([index], configure=True)
        batch.raise_first()
        node = batch.results[0].node
        assert node is not None
        return node

    # --- memory (hotplug-memory.c) ----------------------------------------------------------------

    def _lmb_accept(self, index: int, node: DtNode) -> str | None:
        """dlpar_add_lmb after its configure-connector: the node needs the LMB's associativity,
        then add_memory must succeed (a policy can make it fail for given LMBs)."""
        if node.properties.get("ibm,associativity") is None:
            return "ibm,configure-connector (no ibm,associativity)"
        if index in self.policy.lmbs_not_addable:
            return "add_memory failed"
        return None

    def _remove_lmb(self, index: int) -> bool:
        """dlpar_remove_lmb: offline and remove; no RTAS calls. False if it cannot be offlined."""
        if index not in self.assigned_lmbs or index in self.policy.lmbs_not_offlinable:
            return False
        self.assigned_lmbs.discard(index)
        return True

    def _add_lmbs(self, candidates: list[int], wanted: int, keep_going: bool) -> tuple[list[int], list[int]]:
        """dlpar_acquire_drc then dlpar_add_lmb (configure-connector, then add_memory) per LMB.

        ``keep_going``: a failing LMB is skipped (by count); else the first failure ends the
        add (by indexed count). Returns (added in order, added beyond a failure by
        concurrent unary calls); the caller rolls back both.
        """
        batch = self.rtas.acquire_drcs(
            candidates,
            configure=True,
            keep_going=keep_going,
            count=wanted,
            accept=self._lmb_accept,
            walk_calls=LMB_WALK_CALLS,
            progress=lambda finished: self._step("memory add", min(finished, wanted), wanted),
        )
        added = [r.drc_index for r in batch.in_order if r.error is None]
        overrun = [r.drc_index for r in batch.results[len(batch.in_order) :] if r.error is None]
        self.assigned_lmbs.update(added + overrun)
        self._step("memory add", len(added), wanted)
        return added, overrun

    def _undo_add(self, added: list[int]) -> None:
        """The add failed: dlpar_remove_lmb, then dlpar_release_drc, on each LMB it added; the
        first release that fails ends the rollback with its error."""
        rollback = self.rtas.release_drcs(added)
        for result in rollback.results:
            self.assigned_lmbs.discard(result.drc_index)
        rollback.raise_first()

    def _lmb_range(self, event: HotplugEvent) -> list[int] | None:
        """get_lmb_range: the event's LMBs, or None if any is not in the device tree."""
        indexes = [event.index + n for n in range(event.count)]
        return indexes if event.count and all(i in self.lmbs for i in indexes) else None

    def memory_add(self, event: HotplugEvent) -> Outcome:
        """dlpar_memory_add_by_count, _by_index and _by_ic."""
        if event.id_type == ID_COUNT:
            candidates = [i for i in self.lmbs if i not in self.assigned_lmbs]
            if not event.count or len(candidates) < event.count:  # "validate that there are enough LMBs"
                return Outcome(event, "failed", f"not enough LMBs available ({len(candidates)} of {event.count})")
            added, overrun = self._add_lmbs(candidates, event.count, keep_going=True)
            wanted = event.count
        elif event.id_type == ID_INDEX:
            if event.index not in self.lmbs:
                return Outcome(event, "failed", "LMB not in the device tree", (event.index,))
            added, overrun = self._add_lmbs([event.index], 1, keep_going=False)
            if not added:  # dlpar_add_lmb failed: its LMB was released again, nothing to undo
                return Outcome(event, "failed", f"Failed to hot-add memory, drc index {event.index:x}")
            return Outcome(event, "done", "1 LMBs", tuple(added))
        elif event.id_type == ID_COUNT_INDEXED:
            indexes = self._lmb_range(event)
            if indexes is None:
                return Outcome(event, "failed", "index range not in the device tree")
            candidates = [i for i in indexes if i not in self.assigned_lmbs]
            wanted = len(candidates)
            added, overrun = self._add_lmbs(candidates, wanted, keep_going=False)
        else:
            return Outcome(event, "ignored", f"memory add by id type {event.id_type}")
        if len(added) < wanted:
            # "Memory hot-add failed, removing any added LMBs" (concurrent unary: those under way too)
            self._undo_add(added + overrun)
            return Outcome(event, "failed", f"added {len(added)} of {wanted} LMBs", tuple(added))
        return Outcome(event, "done", f"{len(added)} LMBs", tuple(added))

    def _release_removed(self, removed: list[int]) -> None:
        """After a successful remove: dlpar_release_drc on each; the kernel ignores its result."""
        self._step("memory remove", 0, len(removed))
        self.rtas.release_drcs(
            removed, keep_going=True, progress=lambda finished: self._step("memory remove", finished, len(removed))
        )
        self._step("memory remove", len(removed), len(removed))

    def _readd(self, removed: list[int], unisolate: bool) -> None:
        """A failed remove puts back what it took: dlpar_add_lmb (configure-connector on the
        still-configured LMB), after dlpar_unisolate_drc if ``unisolate`` (the hint kernels 5.13+
        give in remove_by_ic); the first failure propagates."""
        readded = self.rtas.reconfigure_drcs(
            removed, unisolate=unisolate, accept=self._lmb_accept, walk_calls=LMB_WALK_CALLS
        )
        self.assigned_lmbs.update(readded.done)
        readded.raise_first()

    def memory_remove(self, event: HotplugEvent) -> Outcome:
        """dlpar_memory_remove_by_count, _by_index and _by_ic."""
        if event.id_type == ID_COUNT:
            wanted = event.count
            removable = [i for i in self.lmbs if i in self.assigned_lmbs]
            if not wanted or len(removable) < wanted:
                return Outcome(event, "failed", f"Not enough LMBs available ({len(removable)} of {wanted})")
            removed: list[int] = []
            for index in self.lmbs:  # every LMB, in order; one that cannot be removed is skipped
                if self._remove_lmb(index):
                    removed.append(index)
                    if len(removed) == wanted:
                        break
            if len(removed) < wanted:
                # "Memory hot-remove failed, adding LMB's back": no unisolate hint on this path
                self._readd(removed, unisolate=False)
                return Outcome(event, "refused", f"removed {len(removed)} of {wanted} LMBs", tuple(removed))
            self._release_removed(removed)
            return Outcome(event, "done", f"{len(removed)} LMBs", tuple(removed))
        if event.id_type == ID_INDEX:
            if event.index not in self.lmbs:
                return Outcome(event, "failed", "LMB not in the device tree", (event.index,))
            if not self._remove_lmb(event.index):
                # The kernel gives up without a word to the platform: the request stays pending.
                return Outcome(event, "refused", f"LMB {event.index:#x} cannot be removed", (event.index,))
            self._release_removed([event.index])
            return Outcome(event, "done", "1 LMBs", (event.index,))
        if event.id_type != ID_COUNT_INDEXED:
            return Outcome(event, "ignored", f"memory remove by id type {event.id_type}")
        indexes = self._lmb_range(event)
        if indexes is None:
            return Outcome(event, "failed", "index range not in the device tree")
        removed = []
        failed_at = None
        for index in indexes:
            if index not in self.assigned_lmbs:
                continue  # already gone: a no-op for a range removal
            if not self._remove_lmb(index):
                failed_at = index
                break
            removed.append(index)
        if failed_at is not None:
            # "Memory indexed-count-remove failed, adding any removed LMBs": per LMB the unisolate
            # hint (kernels 5.13+: the refusal signal), then dlpar_add_lmb's configure-connector.
            self._readd(removed, unisolate=self.policy.signal == "unisolate")
            # As in Linux: if the very first LMB could not be offlined, nothing was removed, nothing
            # is re-added, and the platform hears nothing: the unplug stays pending.
            return Outcome(event, "refused", f"LMB {failed_at:#x} cannot be offlined", tuple(removed))
        self._release_removed(removed)
        return Outcome(event, "done", f"{len(removed)} LMBs", tuple(removed))

    def _unisolate_drc(self, index: int) -> None:
        """dlpar_unisolate_drc: sense must be 1; unisolate, result ignored."""
        status, state = self.rtas.sense(index)
        if status == 0 and state == SENSE_PRESENT:
            self.rtas.set_indicator(ISOLATION_STATE, index, UNISOLATE)

    # --- persistent memory (pmem.c) -------------------------------------------------------------

    def pmem_add(self, event: HotplugEvent) -> Outcome:
        """pmem_drc_add_node: acquire, configure-connector under /ibm,persistent-memory, attach."""
        if event.id_type != ID_INDEX:  # dlpar_hp_pmem: "Unsupported hotplug event type"
            return Outcome(event, "failed", f"Unsupported hotplug event type {event.id_type}")
        index = event.index
        if index in self.nodes:
            return Outcome(event, "ignored", "PMEM already present", (index,))
        self.nodes[index] = self._acquire_and_configure(index)
        return Outcome(event, "done", self.nodes[index].name, (index,))

    def pmem_remove(self, event: HotplugEvent) -> Outcome:
        """pmem_drc_remove_node: detach the ibm,pmemory node, then dlpar_release_drc (re-attach if that fails)."""
        if event.id_type != ID_INDEX:
            return Outcome(event, "failed", f"Unsupported hotplug event type {event.id_type}")
        index = event.index
        node = self.nodes.pop(index, None)
        if node is None:
            return Outcome(event, "failed", f"Attempting to remove unused DRC index {index:x}", (index,))
        try:
            self.rtas.release_drc(index)
        except RtasError:
            self.nodes[index] = node
            raise
        return Outcome(event, "done", "", (index,))

    # --- PCI and PHB (drmgr) ----------------------------------------------------------------------

    def pci_add(self, event: HotplugEvent) -> Outcome:
        index = event.index
        self.rtas.set_indicator(DR_INDICATOR, index, 1)  # LED active
        for _ in range(30):  # drmgr waits up to 30 s for the adapter to be sensed
            status, state = self.rtas.sense(index)
            if status == 0 and state != 0:
                break
            time.sleep(0.01)
        else:
            return Outcome(event, "failed", "slot stays empty", (index,))
        self.rtas.set_power_level(LIVE_INSERTION, 100)
        status = self.rtas.set_indicator(ISOLATION_STATE, index, UNISOLATE)
        if status:
            raise RtasError("set-indicator(unisolate)", index, status)
        self.nodes[index] = self.rtas.configure_connector(index)
        return Outcome(event, "done", self.nodes[index].name, (index,))

    def pci_remove(self, event: HotplugEvent) -> Outcome:
        index = event.index
        self.nodes.pop(index, None)  # the driver lets go, the node is removed
        status = self.rtas.set_indicator(ISOLATION_STATE, index, 0)
        if status:
            raise RtasError("set-indicator(isolate)", index, status)
        self.rtas.set_power_level(LIVE_INSERTION, 0)
        self.rtas.set_indicator(DR_INDICATOR, index, 0)  # LED off
        return Outcome(event, "done", "", (index,))

    def phb_add(self, event: HotplugEvent) -> Outcome:
        index = event.index
        self.nodes[index] = self._acquire_and_configure(index)
        return Outcome(event, "done", self.nodes[index].name, (index,))

    def phb_remove(self, event: HotplugEvent) -> Outcome:
        index = event.index
        self.nodes.pop(index, None)
        self.rtas.release_drc(index)
        return Outcome(event, "done", "", (index,))


__all__ = ["Outcome", "ReferenceGuest", "RefusalPolicy"]
