"""How a guest's RTAS calls reach the server: one unary RPC per call, ExecuteBatch, or a Session stream.

:class:`RtasTransport` runs a list of ``RtasCall`` messages and returns their
``RtasResult`` messages, whatever the transport:

* ``"session"``: one ``RtasService.Session`` bidi stream, opened on first use and
  kept until :meth:`RtasTransport.close`; each batch is one request and one response.
* ``"batch"``: one ``RtasService.ExecuteBatch`` RPC per batch; no stream is held.
* ``"unary"``: one typed RPC per call (a walk becomes its ConfigureConnector calls),
  exactly what a guest made before batches existed.

It also knows what the server checks before a batch runs (``--max-batch-calls``,
and the worst-case result size against ``--max-message-bytes``), so callers can
split their calls into batches that are never refused.

Example::

    transport = RtasTransport(connect().rtas, "default", "session")
    call = rtas_pb2.RtasCall(get_sensor_state=rtas_pb2.GetSensorStateRequest(sensor_type=9003,
                                                                             sensor_index=0x80000004))
    (result,) = transport.run([call])
    print(result.get_sensor_state.state)   # 2
    transport.close()
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

import grpc

from papr.v1 import rtas_pb2, rtas_pb2_grpc

Transport = Literal["session", "batch", "unary"]
_Request = TypeVar(
    "_Request",
    rtas_pb2.SetIndicatorRequest,
    rtas_pb2.GetSensorStateRequest,
    rtas_pb2.ConfigureConnectorRequest,
    rtas_pb2.SetPowerLevelRequest,
    rtas_pb2.GetPowerLevelRequest,
    rtas_pb2.CheckExceptionRequest,
    rtas_pb2.EventScanRequest,
    rtas_pb2.QueryCpuStoppedStateRequest,
    rtas_pb2.StartCpuRequest,
    rtas_pb2.StopSelfRequest,
    rtas_pb2.CallRequest,
)
TRANSPORTS: Final[tuple[Transport, ...]] = ("session", "batch", "unary")

# The server's defaults (--max-message-bytes, --max-batch-calls); a server started with lower
# limits needs the same values given to RtasTransport.
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 << 20
DEFAULT_MAX_BATCH_CALLS: Final = 16_384
# ConfigureConnectorWalk.max_calls: 0 means this many; the server refuses more than MAX_WALK_CALLS.
DEFAULT_WALK_CALLS: Final = 64
MAX_WALK_CALLS: Final = 512
WORK_AREA_BYTES: Final = 4096
# What the server reckons one result costs besides its buffers (rtas_calls._RESULT_OVERHEAD).
RESULT_OVERHEAD: Final = 32
WALK_CONTINUES: Final = frozenset({1, 2, 3, 4})  # next sibling, next child, next property, previous parent
BUSY: Final = -2
CC_NEED_MEMORY: Final = 5  # ibm,configure-connector: call again with a memory extent page in args[1]
#: The guest real address RetryPolicy passes as the memory extent page after status 5 (any non-zero
#: page address: the platform only checks that one is passed).
EXTENT_PAGE: Final = 0x0F00_0000


@dataclass(frozen=True)
class RetryPolicy:
    """How a guest's RTAS layer answers "call again": Linux's ``rtas_busy_delay``, and status 5 as
    LoPAR says (neither Linux nor librtas 2.0.x calls again after 5: docs/faults.md).

    busy (-2): call again at once (the kernel only yields). Extended delay 9900+n: sleep 10^n ms,
    clamped to [1 ms, 1 s] as Linux does, times ``delay_scale`` (1: as Linux; tests may shrink it,
    at the price of retrying sooner than the platform asked: a conduct finding), then call again.
    ibm,configure-connector status 5: call again at once with a memory extent page in args[1], and
    keep passing it (LoPAR R1-13.5.3.5-1; librtas means to, but its loop returns 5).
    After ``max_retries`` calls again, the last status stands.

    Example::

        >>> RetryPolicy().delay(9902), RetryPolicy().delay(9905), RetryPolicy().delay(-2)
        (0.1, 1.0, 0.0)
    """

    delay_scale: float = 1.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    max_retries: int = 10_000
    extent_address: int = EXTENT_PAGE

    def delay(self, status: int) -> float | None:
        """Seconds to wait before calling again after ``status``; None: not a "call again" status."""
        if status == BUSY:
            return 0.0
        if 9900 <= status <= 9905:
            hinted_ms: int = 10 ** (status - 9900)
            return min(max(hinted_ms, 1), 1000) / 1000 * self.delay_scale
        return None


def result_bytes(call: rtas_pb2.RtasCall) -> int:
    """The most bytes the server counts for this call's result when it checks a batch's size.

    Mirrors the server's estimate, so a batch whose sum is within ``--max-message-bytes``
    is never refused RESOURCE_EXHAUSTED.

    Example::

        >>> walk = rtas_pb2.ConfigureConnectorWalk(work_area=bytes(4096), max_calls=8)
        >>> result_bytes(rtas_pb2.RtasCall(configure_connector_walk=walk))
        33024
    """
    kind = call.WhichOneof("call")
    if kind == "configure_connector":
        return WORK_AREA_BYTES + RESULT_OVERHEAD
    if kind == "configure_connector_walk":
        return (call.configure_connector_walk.max_calls or DEFAULT_WALK_CALLS) * (WORK_AREA_BYTES + RESULT_OVERHEAD)
    if kind == "check_exception":
        return call.check_exception.buffer_length + RESULT_OVERHEAD
    if kind == "raw":
        raw = call.raw
        return sum(len(b.data) + 16 for b in raw.buffers) + 5 * raw.nret + RESULT_OVERHEAD
    return RESULT_OVERHEAD


def status_of(result: rtas_pb2.RtasResult) -> int:
    """The RTAS status of any result (a walk's is its last call's; a raw call's is rets[0])."""
    kind = result.WhichOneof("result")
    if kind is None:
        raise ValueError("an RtasResult with no result set")
    if kind == "raw":
        return int(result.raw.rets[0]) if result.raw.rets else 0
    if kind == "configure_connector_walk":
        return int(result.configure_connector_walk.calls[-1].status)
    return int(getattr(result, kind).status)


class _Session:
    """One open ``RtasService.Session`` stream: a request goes in, its response comes out.

    The request iterator is fed from a queue on gRPC's own consumer thread; it holds only
    the queue (not this object), so dropping the session lets :func:`_end` run.
    """

    def __init__(self, rtas: rtas_pb2_grpc.RtasServiceStub) -> None:
        self._requests: queue.SimpleQueue[rtas_pb2.SessionRequest | None] = queue.SimpleQueue()
        self._call = rtas.Session(_feed(self._requests))
        self._finalizer = weakref.finalize(self, _end, self._requests, self._call)

    def alive(self) -> bool:
        return not self._call.done()

    def exchange(self, request: rtas_pb2.SessionRequest) -> rtas_pb2.SessionResponse:
        """Send one batch and wait for its response; grpc.RpcError if the session ended."""
        self._requests.put(request)
        try:
            response: rtas_pb2.SessionResponse = next(self._call)
        except StopIteration:
            raise RuntimeError("the server ended the RTAS session without answering") from None
        return response

    def close(self) -> None:
        self._finalizer()


def _feed(requests: queue.SimpleQueue[rtas_pb2.SessionRequest | None]) -> Iterator[rtas_pb2.SessionRequest]:
    while (request := requests.get()) is not None:
        yield request


def _end(requests: queue.SimpleQueue[rtas_pb2.SessionRequest | None], call: object) -> None:
    # Half-close (the server ends the stream once it has answered) and cancel, so that neither
    # the server's stream slot nor gRPC's consumer thread outlives the session.
    requests.put(None)
    call.cancel()  # type: ignore[attr-defined]


class RtasTransport:
    """Runs batches of RTAS calls for one platform over the chosen transport (thread-safe).

    Example::

        transport = RtasTransport(client.rtas, "default")          # "session" by default
        results = transport.run(calls, stop_at_nonzero_status=True)
        transport.close()                                          # ends the stream, if one is open
    """

    def __init__(
        self,
        rtas: rtas_pb2_grpc.RtasServiceStub,
        platform: str,
        transport: Transport = "session",
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_calls: int = DEFAULT_MAX_BATCH_CALLS,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``retry``: call again after busy, extended delay and configure-connector's 5 (None: never;
        the caller sees those statuses)."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
        self.rtas = rtas
        self.platform = platform
        self.transport: Transport = transport
        self.max_message_bytes = max_message_bytes
        self.max_batch_calls = 1 if transport == "unary" else max_batch_calls
        self._lock = threading.Lock()  # one batch at a time on the session: responses come back in order
        self._session: _Session | None = None
        self.retry = retry

    @property
    def batched(self) -> bool:
        """True when several calls travel in one message (session or batch)."""
        return self.transport != "unary"

    def run(
        self, calls: Sequence[rtas_pb2.RtasCall], stop_at_nonzero_status: bool = False
    ) -> list[rtas_pb2.RtasResult]:
        """Run ``calls`` in order; one result per call run (fewer after a stop at a non-zero status).

        Batches must fit the server's limits (see :func:`result_bytes`); over ``"unary"``
        any number of calls runs, one RPC each. With a retry policy, a call answered "call
        again" is called again (after its delay) before the calls after it run; in a batch that
        does not stop at a non-zero status, the calls after it ran already, and it is called
        again after them.
        """
        results = self._run(calls, stop_at_nonzero_status)
        if self.retry is None:
            return results
        done: list[rtas_pb2.RtasResult] = []
        calls = list(calls)
        while True:
            again = next((k for k, r in enumerate(results) if self._again(calls[k], r)), None)
            if again is None:
                return done + results
            fixed = self._call_again(calls[again], results[again])
            done += [*results[:again], fixed]
            if not stop_at_nonzero_status:
                calls, results = calls[again + 1 :], results[again + 1 :]
                continue
            calls = calls[again + 1 :]
            if status_of(fixed) or not calls:
                return done
            results = self._run(calls, stop_at_nonzero_status)

    def _again(self, call: rtas_pb2.RtasCall, result: rtas_pb2.RtasResult) -> bool:
        assert self.retry is not None
        kind = call.WhichOneof("call")
        if kind == "raw":
            return False  # the raw calling convention is the caller's own loop
        status = status_of(result)
        return self.retry.delay(status) is not None or (
            status == CC_NEED_MEMORY and kind in ("configure_connector", "configure_connector_walk")
        )

    def _call_again(self, call: rtas_pb2.RtasCall, result: rtas_pb2.RtasResult) -> rtas_pb2.RtasResult:
        """``call`` again until it is not answered "call again" (or the policy's limit); a walk's
        result holds its calls without the ones answered "call again"."""
        retry = self.retry
        assert retry is not None
        kind = call.WhichOneof("call")
        steps: list[rtas_pb2.ConfigureConnectorResponse] = []
        for _ in range(retry.max_retries):
            if not self._again(call, result):
                break
            status = status_of(result)
            delay = retry.delay(status)
            if delay:
                retry.sleep(delay)
            call = self._next_try(call, result, status, steps)
            result = self._run([call], False)[0]
        if kind == "configure_connector_walk":
            merged = rtas_pb2.ConfigureConnectorWalkResult(calls=[*steps, *result.configure_connector_walk.calls])
            return rtas_pb2.RtasResult(configure_connector_walk=merged)
        return result

    def _next_try(
        self,
        call: rtas_pb2.RtasCall,
        result: rtas_pb2.RtasResult,
        status: int,
        steps: list[rtas_pb2.ConfigureConnectorResponse],
    ) -> rtas_pb2.RtasCall:
        """The call to make again: the same, or for configure-connector the work area it left (the
        call answered "again" changed nothing in it) and, after a 5, the extent page."""
        assert self.retry is not None
        kind = call.WhichOneof("call")
        extent = self.retry.extent_address if status == CC_NEED_MEMORY else None
        if kind == "configure_connector":
            again = rtas_pb2.ConfigureConnectorRequest()
            again.CopyFrom(call.configure_connector)
            if extent is not None:
                again.memory_extent = extent
            return rtas_pb2.RtasCall(configure_connector=again)
        if kind == "configure_connector_walk":
            made = list(result.configure_connector_walk.calls)
            steps.extend(made[:-1])
            walk = rtas_pb2.ConfigureConnectorWalk()
            walk.CopyFrom(call.configure_connector_walk)
            walk.work_area = made[-1].work_area
            walk.max_calls = max((walk.max_calls or DEFAULT_WALK_CALLS) - len(made) + 1, 1)
            if extent is not None:
                walk.memory_extent = extent
            return rtas_pb2.RtasCall(configure_connector_walk=walk)
        return call

    def _run(self, calls: Sequence[rtas_pb2.RtasCall], stop_at_nonzero_status: bool) -> list[rtas_pb2.RtasResult]:
        if self.transport == "unary":
            results: list[rtas_pb2.RtasResult] = []
            for call in calls:
                results.append(self._unary(call))
                if stop_at_nonzero_status and status_of(results[-1]):
                    break
            return results
        if self.transport == "batch":
            reply = self.rtas.ExecuteBatch(
                rtas_pb2.ExecuteBatchRequest(
                    platform=self.platform, calls=calls, stop_at_nonzero_status=stop_at_nonzero_status
                )
            )
            return list(reply.results)
        request = rtas_pb2.SessionRequest(
            platform=self.platform, calls=calls, stop_at_nonzero_status=stop_at_nonzero_status
        )
        with self._lock:
            session = self._session
            if session is None or not session.alive():
                # Lazily, and again after the server ended the last one (a malformed request,
                # the platform deleted): the next batch gets a fresh session.
                session = self._session = _Session(self.rtas)
            try:
                return list(session.exchange(request).results)
            except grpc.RpcError:
                session.close()
                self._session = None
                raise

    def one(self, call: rtas_pb2.RtasCall) -> rtas_pb2.RtasResult:
        """Run one call (a unary RPC, or a batch of one)."""
        return self.run([call])[0]

    def close(self) -> None:
        """End the session stream, if one is open; the transport stays usable (it reopens on demand)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # --- one call, one typed RPC --------------------------------------------------------------

    def _unary(self, call: rtas_pb2.RtasCall) -> rtas_pb2.RtasResult:
        kind = call.WhichOneof("call")
        rtas = self.rtas
        if kind == "set_indicator":
            return rtas_pb2.RtasResult(set_indicator=rtas.SetIndicator(self._named(call.set_indicator)))
        if kind == "get_sensor_state":
            return rtas_pb2.RtasResult(get_sensor_state=rtas.GetSensorState(self._named(call.get_sensor_state)))
        if kind == "configure_connector":
            return rtas_pb2.RtasResult(
                configure_connector=rtas.ConfigureConnector(self._named(call.configure_connector))
            )
        if kind == "set_power_level":
            return rtas_pb2.RtasResult(set_power_level=rtas.SetPowerLevel(self._named(call.set_power_level)))
        if kind == "get_power_level":
            return rtas_pb2.RtasResult(get_power_level=rtas.GetPowerLevel(self._named(call.get_power_level)))
        if kind == "check_exception":
            return rtas_pb2.RtasResult(check_exception=rtas.CheckException(self._named(call.check_exception)))
        if kind == "event_scan":
            return rtas_pb2.RtasResult(event_scan=rtas.EventScan(self._named(call.event_scan)))
        if kind == "query_cpu_stopped_state":
            return rtas_pb2.RtasResult(
                query_cpu_stopped_state=rtas.QueryCpuStoppedState(self._named(call.query_cpu_stopped_state))
            )
        if kind == "start_cpu":
            return rtas_pb2.RtasResult(start_cpu=rtas.StartCpu(self._named(call.start_cpu)))
        if kind == "stop_self":
            return rtas_pb2.RtasResult(stop_self=rtas.StopSelf(self._named(call.stop_self)))
        if kind == "raw":
            return rtas_pb2.RtasResult(raw=rtas.Call(self._named(call.raw)))
        if kind == "configure_connector_walk":
            # The guest's own loop, one ConfigureConnector RPC per call, as the server's walk does it.
            walk = call.configure_connector_walk
            area, steps = walk.work_area, rtas_pb2.ConfigureConnectorWalkResult()
            for _ in range(walk.max_calls or DEFAULT_WALK_CALLS):
                reply = rtas.ConfigureConnector(
                    rtas_pb2.ConfigureConnectorRequest(
                        platform=self.platform, work_area=area, memory_extent=walk.memory_extent
                    )
                )
                steps.calls.append(reply)
                area = reply.work_area
                if reply.status not in WALK_CONTINUES:
                    break
            return rtas_pb2.RtasResult(configure_connector_walk=steps)
        raise ValueError("an RtasCall with no call set")

    def _named(self, request: _Request) -> _Request:
        # Batch entries may leave the platform empty; a unary RPC must name it.
        if not request.platform:
            named = type(request)()
            named.CopyFrom(request)
            named.platform = self.platform
            return named
        return request
