"""Guest-side RTAS sequences, as the Linux pseries DLPAR code makes them, one connector or many.

Per connector, :meth:`Guest.acquire_drc`, :meth:`Guest.release_drc` and
:meth:`Guest.configure_connector` are the kernel's ``dlpar_acquire_drc``,
``dlpar_release_drc`` and ``dlpar_configure_connector``. :meth:`Guest.acquire_drcs`
and :meth:`Guest.release_drcs` run the same sequences for many connectors in a few
round trips (RtasService.Session or ExecuteBatch): the calls, their order, the
checks and the rollbacks are the kernel's, connector by connector.

Example::

    with Guest(connect().rtas, "default") as guest:           # one Session stream, opened lazily
        guest.acquire_drc(0x80000004)                           # sense 2 -> usable -> unisolate
        node = guest.configure_connector(0x80000004)            # memory@40000000
        guest.release_drc(0x80000004)                           # sense 1 -> isolate -> unusable
        batch = guest.acquire_drcs(range(0x80000005, 0x80000008), configure=True)
        batch.raise_first()                                     # RtasError naming the connector, if any failed
        print(batch.done, batch.results[0].node.name)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Final, Literal

from papr.v1 import rtas_pb2, rtas_pb2_grpc

from .transport import (
    DEFAULT_MAX_BATCH_CALLS,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_WALK_CALLS,
    WALK_CONTINUES,
    RetryPolicy,
    RtasTransport,
    Transport,
    result_bytes,
    status_of,
)
from .workarea import (
    COMPLETE,
    NEXT_CHILD,
    NEXT_PROPERTY,
    NEXT_SIBLING,
    PREVIOUS_PARENT,
    CcItem,
    DtNode,
    new_work_area,
    read_item,
)

ISOLATION_STATE, DR_INDICATOR, ALLOCATION_STATE, DR_ENTITY_SENSE = 9001, 9002, 9003, 9003
ISOLATE, UNISOLATE = 0, 1
UNUSABLE, USABLE = 0, 1
SENSE_EMPTY, SENSE_PRESENT, SENSE_UNUSABLE = 0, 1, 2
#: query-cpu-stopped-state's rets[1] (Linux's QCSS_STOPPED, QCSS_STOPPING, QCSS_NOT_STOPPED).
THREAD_STOPPED, THREAD_STOPPING, THREAD_RUNNING = 0, 1, 2
#: configure_items' limit on one configure-connector loop (a fragment that never completes).
MAX_CONFIGURE_CALLS: Final = 100_000
#: ConfigureConnectorWalk.max_calls per walk: a CPU core's or PHB's fragment fits; a longer one
#: continues with another walk. A batch's size limit counts each walk as this many work areas.
DEFAULT_WALK_CALLS: Final = 16
#: ReferenceGuest's unary_concurrency: connectors whose sequences run at once over ``"unary"``.
#: 1: every call in the kernel's order. 8 is faster (on a 2-core VM a 1 TiB DIMM's add + remove goes
#: from 42-52 s to 27-36 s; the server's CPU per call is then the limit; 4 to 8 do about as well, 16 no
#: better), but an add that fails midway leaves the LMBs that were in flight added, which the kernel's
#: one-at-a-time loop never does: so it is opt-in.
DEFAULT_UNARY_CONCURRENCY: Final = 1


class RtasError(Exception):
    """An RTAS call in a guest sequence returned an unexpected status."""

    def __init__(self, call: str, drc_index: int, status: int) -> None:
        super().__init__(f"{call} on {drc_index:#x} returned {status}")
        self.call, self.drc_index, self.status = call, drc_index, status


@dataclass
class DrcResult:
    """What a many-connector sequence did on one connector: ``error`` None if it completed."""

    drc_index: int
    error: RtasError | None = None
    node: DtNode | None = None  # the configured node (configure=True, or reconfigure_drcs)


@dataclass
class DrcBatch:
    """The outcome of :meth:`Guest.acquire_drcs`, :meth:`Guest.release_drcs` or :meth:`Guest.reconfigure_drcs`.

    ``results`` has one entry per connector the sequence ran on, in order; ``not_attempted``
    the connectors it never touched (after the first failure unless ``keep_going``, or
    once ``count`` connectors were done). ``overrun``: how many of the last ``results``
    ran only because they were under way when an earlier connector failed (over
    ``"unary"`` with ``unary_concurrency`` > 1, without ``keep_going``); a sequential
    run, like the kernel's, would not have touched them. Always 0 otherwise.
    """

    results: list[DrcResult] = field(default_factory=list)
    not_attempted: list[int] = field(default_factory=list)
    overrun: int = 0

    @property
    def in_order(self) -> list[DrcResult]:
        """``results`` without the overrun: what a sequential run reports."""
        return self.results[: len(self.results) - self.overrun]

    @property
    def done(self) -> list[int]:
        """The connectors the sequence completed on, in order."""
        return [r.drc_index for r in self.results if r.error is None]

    @property
    def failures(self) -> list[DrcResult]:
        return [r for r in self.results if r.error is not None]

    def raise_first(self) -> None:
        """Raise the first connector's error, if any connector failed."""
        for result in self.results:
            if result.error is not None:
                raise result.error


Accept = Callable[[int, DtNode], str | None]
Progress = Callable[[int], None]
_Phase = Literal["acquire", "release", "unisolate"]


def _sense_call(index: int) -> rtas_pb2.RtasCall:
    request = rtas_pb2.GetSensorStateRequest(sensor_type=DR_ENTITY_SENSE, sensor_index=index)
    return rtas_pb2.RtasCall(get_sensor_state=request)


def _indicator_call(indicator: int, index: int, value: int) -> rtas_pb2.RtasCall:
    request = rtas_pb2.SetIndicatorRequest(indicator_type=indicator, indicator_index=index, new_state=value)
    return rtas_pb2.RtasCall(set_indicator=request)


def _walk_call(area: bytes, max_calls: int) -> rtas_pb2.RtasCall:
    return rtas_pb2.RtasCall(
        configure_connector_walk=rtas_pb2.ConfigureConnectorWalk(work_area=area, max_calls=max_calls)
    )


def build_node(items: Iterable[CcItem]) -> DtNode:
    """dlpar_configure_connector's tree building: the node a configure-connector sequence describes."""
    root: DtNode | None = None
    stack: list[DtNode] = []
    last: DtNode | None = None
    for item in items:
        if item.status == NEXT_CHILD:
            node = DtNode(item.name)
            if stack:
                stack[-1].children.append(node)
            else:
                root = node
            stack.append(node)
            last = node
        elif item.status == NEXT_SIBLING:
            node = DtNode(item.name)
            stack.pop()
            if stack:
                stack[-1].children.append(node)
            stack.append(node)
            last = node
        elif item.status == NEXT_PROPERTY:
            assert last is not None
            last.properties[item.name] = item.value
            last.property_order.append(item.name)
        elif item.status == PREVIOUS_PARENT:
            stack.pop()
            last = stack[-1] if stack else None
    assert root is not None
    return root


class _Job:
    """One connector's sequence: the calls it makes while everything succeeds, and what it does when not.

    ``pending`` holds the calls still to run (label, call). A batch carries them; each
    result comes back through :meth:`take`, which checks it as the kernel does and, on a
    failure, rolls back with single calls (the batch stopped at the failing call, so the
    rollback runs exactly where the kernel's would).
    """

    def __init__(
        self,
        guest: Guest,
        index: int,
        phase: _Phase,
        configure: bool,
        release_on_failure: bool,
        accept: Accept | None,
        walk_calls: int | None = None,
    ) -> None:
        self.guest, self.phase, self.configure = guest, phase, configure
        self.walk_calls = walk_calls or guest.walk_calls
        self.release_on_failure, self.accept = release_on_failure, accept
        self.result = DrcResult(index)
        self.pending: deque[tuple[str, rtas_pb2.RtasCall]] = deque()
        self.probe: tuple[int, int] | None = None  # (status, state) of a get-sensor-state made ahead
        self.started = self.finished = self.ran = False
        self.in_flight = 0  # of ``pending``, how many calls the batch under way carries
        self.predicted_ok = True
        self.items: list[CcItem] = []
        self.calls_left = MAX_CONFIGURE_CALLS

    @property
    def index(self) -> int:
        return self.result.drc_index

    def _sense_ok(self, status: int, state: int) -> bool:
        return status == 0 and state == (SENSE_UNUSABLE if self.phase == "acquire" else SENSE_PRESENT)

    def start(self) -> None:
        """Plan the calls, assuming each succeeds; a probe that already says the sense is wrong
        leaves only the sense (the kernel's last call here)."""
        self.started = True
        index = self.index
        self.pending.append(("sense", _sense_call(index)))
        sense_ok = self.probe is None or self._sense_ok(*self.probe)
        if self.phase == "acquire":
            if not sense_ok:
                self.predicted_ok = False
                return
            self.pending.append(("usable", _indicator_call(ALLOCATION_STATE, index, USABLE)))
            self.pending.append(("unisolate", _indicator_call(ISOLATION_STATE, index, UNISOLATE)))
        elif self.phase == "release":
            if not sense_ok:
                self.predicted_ok = False
                return
            self.pending.append(("isolate", _indicator_call(ISOLATION_STATE, index, ISOLATE)))
            self.pending.append(("unusable", _indicator_call(ALLOCATION_STATE, index, UNUSABLE)))
        elif sense_ok:  # dlpar_unisolate_drc: unisolate only when present, its status ignored
            self.pending.append(("unisolate-ignored", _indicator_call(ISOLATION_STATE, index, UNISOLATE)))
        if self.configure:
            self._walk(new_work_area(index))

    def _walk(self, area: bytes, resume: bool = False) -> None:
        call = ("walk", _walk_call(area, min(self.walk_calls, self.calls_left)))
        if resume:
            self.pending.appendleft(call)  # before anything still pending for this connector
        else:
            self.pending.append(call)

    def tolerates(self, label: str) -> bool:
        """A non-zero status of this call does not end the sequence (the kernel ignores it)."""
        return label == "unisolate-ignored"

    def fail(self, call: str, status: int) -> None:
        self.result.error = RtasError(call, self.index, status)
        self.pending.clear()
        self.finished = True

    def take(self, label: str, result: rtas_pb2.RtasResult) -> None:
        """The result of this job's next pending call (already removed from ``pending``)."""
        guest, index = self.guest, self.index
        status = status_of(result)
        if label == "sense":
            state = result.get_sensor_state.state
            if not self._sense_ok(status, state):
                if self.phase == "unisolate":
                    # Not present: no unisolate. If the batch already carries it (planned on a probe
                    # that another client made stale), it has run; its result is ignored anyway.
                    if self.in_flight == 0 and self.pending and self.pending[0][0] == "unisolate-ignored":
                        self.pending.popleft()
                else:
                    self.fail("get-sensor-state", status if status else -state)
                    return
        elif label == "usable" and status:
            self.fail("set-indicator(allocation usable)", status)
            return
        elif label == "unisolate" and status:
            guest.set_indicator(ALLOCATION_STATE, index, UNUSABLE)  # undo, result ignored
            self.fail("set-indicator(unisolate)", status)
            return
        elif label == "isolate" and status:
            self.fail("set-indicator(isolate)", status)
            return
        elif label == "unusable" and status:
            guest.set_indicator(ISOLATION_STATE, index, UNISOLATE)  # undo, result ignored
            self.fail("set-indicator(allocation unusable)", status)
            return
        elif label == "walk":
            calls = result.configure_connector_walk.calls
            self.items.extend(read_item(c.status, c.work_area) for c in calls)
            self.calls_left -= len(calls)
            if status == COMPLETE:
                self._configured()
                return
            if status not in WALK_CONTINUES:
                self._configure_failed("ibm,configure-connector", status)
                return
            if self.calls_left <= 0:
                self._configure_failed("ibm,configure-connector (no completion)", -1)
                return
            self._walk(calls[-1].work_area, resume=True)  # max_calls reached: the next walk resumes the cursor
        if not self.pending:
            self.finished = True

    def _configured(self) -> None:
        node = build_node(self.items)
        reason = self.accept(self.index, node) if self.accept is not None else None
        if reason is not None:
            self._configure_failed(reason, -1)
            return
        self.result.node = node
        if not self.pending:
            self.finished = True

    def _configure_failed(self, call: str, status: int) -> None:
        self.fail(call, status)
        if self.release_on_failure:
            # dlpar_acquire_drc's caller gives the connector back; if that fails too, its error
            # is what the caller sees (it propagates, as from release_drc in a loop).
            self.guest.release_drc(self.index)


class Guest:
    """RTAS helpers of a guest on one platform (the kernel's dlpar_* helpers), over a chosen transport.

    ``transport``: ``"session"`` (default: one RtasService.Session stream, opened on first
    use, ended by :meth:`close` or ``with``), ``"batch"`` (ExecuteBatch, no stream held) or
    ``"unary"`` (one typed RPC per RTAS call, as before batches existed). Every method works
    over all three; the many-connector methods make the same calls in the same order
    over all three, the batched transports just carry them in few messages.
    ``retry`` (default: as Linux): busy (-2) is called again at once, extended delay (990x) after
    its clamped delay, configure-connector's 5 with a memory extent page (as LoPAR says); None: the
    caller sees those statuses (see :class:`~papr_emu_client.transport.RetryPolicy`).
    ``max_message_bytes`` and ``max_batch_calls`` must match the server's limits when it
    runs with lower ones than the defaults.

    ``unary_concurrency`` (``"unary"`` only; default 1): the many-connector methods run the
    sequences of up to this many connectors at once, each on a thread of its own, each
    connector's calls still one after another in the kernel's order. gRPC's cost is per
    call, and the server serves many at once, so several calls in flight finish a DIMM's
    LMBs several times sooner. The first connector's sequence runs before any other starts,
    and the last one's after all others finished, so that the connector that carries a
    refusal signal or completes an unplug is the kernel's. After a failure (without
    ``keep_going``) no new connector starts; those under way finish and are reported after
    it (``DrcBatch.overrun``). Results are always in connector order.

    Example::

        guest = Guest(client.rtas, "default", transport="unary")
        assert guest.sense(0x80000004) == (0, 2)
        guest.close()
    """

    def __init__(
        self,
        rtas: rtas_pb2_grpc.RtasServiceStub,
        platform: str,
        transport: Transport = "session",
        *,
        walk_calls: int = DEFAULT_WALK_CALLS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_calls: int = DEFAULT_MAX_BATCH_CALLS,
        unary_concurrency: int = 1,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 (frozen: one default instance is fine)
    ) -> None:
        if not 1 <= walk_calls <= MAX_WALK_CALLS:
            raise ValueError(f"walk_calls {walk_calls}: must be 1 to {MAX_WALK_CALLS}")
        if unary_concurrency < 1:
            raise ValueError(f"unary_concurrency {unary_concurrency}: must be at least 1")
        self.rtas = rtas
        self.platform = platform
        self.walk_calls = walk_calls
        self.unary_concurrency = unary_concurrency
        self.calls = RtasTransport(
            rtas, platform, transport, max_message_bytes=max_message_bytes, max_batch_calls=max_batch_calls,
            retry=retry,
        )  # fmt: skip

    @property
    def transport(self) -> Transport:
        return self.calls.transport

    def close(self) -> None:
        """End the session stream if one is open (the guest stays usable: it reopens on demand)."""
        self.calls.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- single RTAS calls ------------------------------------------------------------------------

    def sense(self, drc_index: int) -> tuple[int, int]:
        """get-sensor-state(dr-entity-sense): (status, state)."""
        reply = self.calls.one(_sense_call(drc_index)).get_sensor_state
        return reply.status, reply.state

    def set_indicator(self, indicator: int, drc_index: int, value: int) -> int:
        return int(self.calls.one(_indicator_call(indicator, drc_index, value)).set_indicator.status)

    def configure_step(self, area: bytes) -> tuple[int, bytes]:
        """One ibm,configure-connector call: (status, work area after it)."""
        call = rtas_pb2.RtasCall(configure_connector=rtas_pb2.ConfigureConnectorRequest(work_area=area))
        reply = self.calls.one(call).configure_connector
        return reply.status, reply.work_area

    def set_power_level(self, power_domain: int, level: int) -> tuple[int, int]:
        """set-power-level: (status, level set)."""
        request = rtas_pb2.SetPowerLevelRequest(power_domain=power_domain, level=level)
        reply = self.calls.one(rtas_pb2.RtasCall(set_power_level=request)).set_power_level
        return reply.status, reply.level

    def query_cpu_stopped_state(self, cpu_id: int) -> tuple[int, int]:
        """query-cpu-stopped-state of thread ``cpu_id`` (its vCPU id): (status, 0 stopped / 2 running)."""
        request = rtas_pb2.QueryCpuStoppedStateRequest(cpu_id=cpu_id)
        reply = self.calls.one(rtas_pb2.RtasCall(query_cpu_stopped_state=request)).query_cpu_stopped_state
        return reply.status, reply.state

    def start_cpu(self, cpu_id: int, start_address: int, r3: int) -> int:
        """start-cpu: a stopped thread starts at ``start_address`` with ``r3``; the status."""
        request = rtas_pb2.StartCpuRequest(cpu_id=cpu_id, start_address=start_address, r3=r3)
        return int(self.calls.one(rtas_pb2.RtasCall(start_cpu=request)).start_cpu.status)

    def stop_self(self, cpu_id: int) -> int:
        """stop-self, made by thread ``cpu_id``: it stops; the status (0; -3 if there is no such thread)."""
        request = rtas_pb2.StopSelfRequest(cpu_id=cpu_id)
        return int(self.calls.one(rtas_pb2.RtasCall(stop_self=request)).stop_self.status)

    def check_exception(self, event_mask: int, buffer_length: int, vector_offset: int = 0x500) -> tuple[int, bytes]:
        """check-exception: (status, the log written to the buffer); status 1 when none is pending."""
        request = rtas_pb2.CheckExceptionRequest(
            vector_offset=vector_offset, event_mask=event_mask, buffer_length=buffer_length
        )
        reply = self.calls.one(rtas_pb2.RtasCall(check_exception=request)).check_exception
        return reply.status, reply.buffer

    # --- one connector ----------------------------------------------------------------------------

    def acquire_drc(self, drc_index: int) -> None:
        """dlpar_acquire_drc: sense must be 2; allocation usable; unisolate (undo on failure)."""
        status, state = self.sense(drc_index)
        if status != 0 or state != SENSE_UNUSABLE:
            raise RtasError("get-sensor-state", drc_index, status if status else -state)
        status = self.set_indicator(ALLOCATION_STATE, drc_index, USABLE)
        if status:
            raise RtasError("set-indicator(allocation usable)", drc_index, status)
        status = self.set_indicator(ISOLATION_STATE, drc_index, UNISOLATE)
        if status:
            self.set_indicator(ALLOCATION_STATE, drc_index, UNUSABLE)
            raise RtasError("set-indicator(unisolate)", drc_index, status)

    def release_drc(self, drc_index: int) -> None:
        """dlpar_release_drc: sense must be 1; isolate; allocation unusable (re-unisolate on failure)."""
        status, state = self.sense(drc_index)
        if status != 0 or state != SENSE_PRESENT:
            raise RtasError("get-sensor-state", drc_index, status if status else -state)
        status = self.set_indicator(ISOLATION_STATE, drc_index, ISOLATE)
        if status:
            raise RtasError("set-indicator(isolate)", drc_index, status)
        status = self.set_indicator(ALLOCATION_STATE, drc_index, UNUSABLE)
        if status:
            self.set_indicator(ISOLATION_STATE, drc_index, UNISOLATE)
            raise RtasError("set-indicator(allocation unusable)", drc_index, status)

    def configure_items(self, drc_index: int, max_calls: int = MAX_CONFIGURE_CALLS) -> list[CcItem]:
        """Call configure-connector until it completes; every item, in order.

        Batched transports send configure-connector walks of ``walk_calls`` calls each (a
        walk that stops short is continued by the next); ``"unary"`` makes one RPC per call.
        """
        area = new_work_area(drc_index)
        items: list[CcItem] = []
        while len(items) < max_calls:
            walk = self.calls.one(_walk_call(area, min(self.walk_calls, max_calls - len(items))))
            for step in walk.configure_connector_walk.calls:
                items.append(read_item(step.status, step.work_area))
                area = step.work_area
            status = items[-1].status
            if status == COMPLETE:
                return items
            if status not in WALK_CONTINUES:
                raise RtasError("ibm,configure-connector", drc_index, status)
        raise RtasError("ibm,configure-connector (no completion)", drc_index, -1)

    def configure_connector(self, drc_index: int) -> DtNode:
        """dlpar_configure_connector: build the node tree from the sequence."""
        return build_node(self.configure_items(drc_index))

    # --- many connectors --------------------------------------------------------------------------

    def acquire_drcs(
        self,
        indexes: Iterable[int],
        *,
        configure: bool = False,
        keep_going: bool = False,
        count: int | None = None,
        accept: Accept | None = None,
        progress: Progress | None = None,
        walk_calls: int | None = None,
    ) -> DrcBatch:
        """:meth:`acquire_drc` on each connector in order, in few round trips.

        With ``configure``, each connector's :meth:`configure_connector` follows its acquire
        (result in ``DrcResult.node``), and a configure failure (or ``accept(index, node)``
        returning a reason) releases the connector again with :meth:`release_drc`, as the
        kernel's callers do. The first failure ends the sequence unless ``keep_going``;
        ``count`` stops once that many connectors are done. ``progress(n)`` hears how many
        connectors are finished; ``walk_calls`` overrides the guest's walk size (an LMB's
        fragment is 5 calls: 8 lets about 127 LMBs share one 4 MiB message). An RtasError
        from a rollback's release propagates, as it would from the single-connector calls
        in a loop.

        Batched, get-sensor-state is read ahead for the next connectors in one message (the
        kernel's own sense call is still made, in place), so that a connector whose sense
        is wrong gets only that call, as in the kernel. Only another client changing a
        connector in between, or ``accept`` refusing a node, makes the batch have run calls
        the kernel would not have made by then (the later connectors' in that batch).

        Example::

            batch = guest.acquire_drcs(dimm.drc_indexes, configure=True)
            if batch.failures:
                first = batch.failures[0].error   # RtasError: .call, .drc_index, .status
        """
        jobs = [_Job(self, i, "acquire", configure, configure, accept, walk_calls) for i in indexes]
        return self._run_jobs(jobs, keep_going, count, progress)

    def release_drcs(
        self, indexes: Iterable[int], *, keep_going: bool = False, progress: Progress | None = None
    ) -> DrcBatch:
        """:meth:`release_drc` on each connector in order, in few round trips (see :meth:`acquire_drcs`).

        Example::

            guest.release_drcs(lmbs, keep_going=True)   # as a kernel ignoring each result
        """
        jobs = [_Job(self, i, "release", False, False, None) for i in indexes]
        return self._run_jobs(jobs, keep_going, None, progress)

    def reconfigure_drcs(
        self,
        indexes: Iterable[int],
        *,
        unisolate: bool = True,
        accept: Accept | None = None,
        progress: Progress | None = None,
        walk_calls: int | None = None,
    ) -> DrcBatch:
        """Re-add still-configured connectors, as a kernel that failed to remove them does:
        per connector, dlpar_unisolate_drc (if ``unisolate``: sense, then unisolate when
        present, its status ignored) and then the configure-connector sequence. Stops at the
        first failure (an error status, or ``accept`` refusing the node).

        Example::

            guest.reconfigure_drcs(removed_lmbs).raise_first()
        """
        phase: _Phase = "unisolate"
        jobs = [_Job(self, i, phase, True, False, accept, walk_calls) for i in indexes]
        if not unisolate:
            for job in jobs:  # configure-connector only: no sense, no unisolate
                job.started = True
                job._walk(new_work_area(job.index))
        return self._run_jobs(jobs, False, None, progress)

    def _probe(self, jobs: Sequence[_Job], start: int, window: int) -> int:
        """Read get-sensor-state ahead for ``jobs[start:start + window]``, in one message; the new start."""
        ahead = [job for job in jobs[start : start + window] if not job.started]
        if ahead:
            results = self.calls.run([_sense_call(job.index) for job in ahead])
            for job, result in zip(ahead, results, strict=True):
                job.probe = (result.get_sensor_state.status, result.get_sensor_state.state)
        return min(len(jobs), start + window)

    def _run_jobs(
        self, jobs: Sequence[_Job], keep_going: bool, count: int | None, progress: Progress | None
    ) -> DrcBatch:
        if not self.calls.batched and self.unary_concurrency > 1 and len(jobs) > 1:
            return self._run_jobs_concurrently(jobs, keep_going, count, progress)
        batch = DrcBatch()
        queue = deque(jobs)
        done = probed = 0  # jobs[:probed] have been read ahead (or needed no read-ahead)
        budget_calls, budget_bytes = self.calls.max_batch_calls, self.calls.max_message_bytes
        while queue:
            if count is not None and done >= count:
                break
            if self.calls.batched and probed < len(jobs) and probed - (len(jobs) - len(queue)) < 512:
                # Few read-ahead connectors left: read the next ones (with a count, about twice
                # what is still wanted, so a short add does not read a whole platform).
                wanted = len(jobs) if count is None else 2 * (count - done) + 16
                probed = self._probe(jobs, probed, min(budget_calls, wanted))
            calls: list[rtas_pb2.RtasCall] = []
            owners: list[tuple[_Job, str]] = []
            size = predicted = 0
            for job in queue:
                if not job.started:
                    if self.calls.batched and job.probe is None:
                        break  # not read ahead yet: the next round reads it
                    job.start()
                complete = True
                for label, call in job.pending:
                    cost = result_bytes(call)
                    if calls and (len(calls) >= budget_calls or size + cost > budget_bytes):
                        complete = False
                        break
                    calls.append(call)
                    owners.append((job, label))
                    job.in_flight += 1
                    size += cost
                if not complete:
                    break
                if not job.predicted_ok and not keep_going:
                    break  # the kernel stops after this connector's failing sense
                predicted += job.predicted_ok
                if count is not None and done + predicted >= count:
                    break
            results = self.calls.run(calls, stop_at_nonzero_status=True)
            for (job, label), result in zip(owners, results, strict=False):
                job.ran = True
                job.in_flight -= 1
                if job.finished:
                    continue  # ran after a check the probe could not foresee (see acquire_drcs)
                job.pending.popleft()
                job.take(label, result)
            for job, _label in owners:
                job.in_flight = 0  # what the batch carried and did not run (after a stop) is still pending
            stop = False
            while queue and queue[0].finished:
                job = queue.popleft()
                batch.results.append(job.result)
                if job.result.error is None:
                    done += 1
                elif not keep_going:
                    stop = True
            if progress is not None and owners:
                progress(len(batch.results))
            if stop:
                break
        batch.not_attempted = [job.index for job in queue if not job.ran]
        return batch

    def _run_job(self, job: _Job) -> None:
        """One connector's whole sequence, one unary RPC per call, in order (on a worker thread)."""
        if not job.started:
            job.start()
        while job.pending and not job.finished:
            label, call = job.pending[0]
            result = self.calls.one(call)
            job.ran = True
            job.pending.popleft()
            job.take(label, result)

    def _run_jobs_concurrently(
        self, jobs: Sequence[_Job], keep_going: bool, count: int | None, progress: Progress | None
    ) -> DrcBatch:
        """:meth:`_run_jobs` over ``"unary"`` with up to ``unary_concurrency`` connectors under way.

        Connectors start in order. One starts only while nothing stopped the sequence, and
        (with ``count``) while the connectors done and under way are fewer than ``count``:
        so the connectors started, and their results, are the sequential run's, plus after a
        failure those that were under way. An exception (an RtasError from a rollback's
        release, a grpc.RpcError) stops the starting too; once the others have finished, the
        first connector's (in order) is raised, as the sequential run raises it.
        """
        workers = min(self.unary_concurrency, len(jobs))
        running: dict[Future[None], int] = {}
        errors: dict[int, BaseException] = {}
        started = done = finished = 0
        stopped_at: int | None = None  # the first connector (in order) whose failure stops the sequence
        with ThreadPoolExecutor(workers, thread_name_prefix="unary-guest") as pool:
            while True:
                while (
                    started < len(jobs)
                    and stopped_at is None
                    and not errors
                    and len(running) < workers
                    and (count is None or done + len(running) < count)
                    # The first connector alone, then the others; the last once they finished.
                    and not (running and (started == 1 or started == len(jobs) - 1))
                ):
                    running[pool.submit(self._run_job, jobs[started])] = started
                    started += 1
                if not running:
                    break
                ended, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in ended:
                    position = running.pop(future)
                    finished += 1
                    error = future.exception()
                    if error is not None:
                        errors[position] = error
                    elif jobs[position].result.error is None:
                        done += 1
                    elif not keep_going and (stopped_at is None or position < stopped_at):
                        stopped_at = position
                if progress is not None:
                    progress(finished)
        if errors:
            raise errors[min(errors)]
        batch = DrcBatch([job.result for job in jobs[:started]], [job.index for job in jobs[started:]])
        if stopped_at is not None:
            batch.overrun = started - stopped_at - 1
        return batch


__all__ = [
    "DEFAULT_UNARY_CONCURRENCY",
    "DrcBatch",
    "DrcResult",
    "Guest",
    "RtasError",
    "build_node",
]
