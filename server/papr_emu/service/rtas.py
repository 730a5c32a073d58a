"""RtasService: the guest's RTAS calls, typed and raw, over one dispatcher.

Statuses go back in-band with gRPC OK; only requests that are not well-formed
RTAS calls (unknown platform, a work area of the wrong size, buffers that do not
match the call) are gRPC errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc

from papr.v1 import rtas_pb2, rtas_pb2_grpc

from ..model import InvalidArgument, Platform, PlatformError, Platforms
from .errors import abort
from .rtas_calls import RESPONSES, RUNNERS, Batch, check
from .running import Runner
from .streams import EndOnClose, StreamSlots, abort_closed

#: A batch of more calls than this runs on a worker thread, not on the event loop: other clients'
#: calls would wait for it there (a call takes a few microseconds, a walk up to 512 calls).
INLINE_BATCH_CALLS: Final = 64


class RtasServicer(rtas_pb2_grpc.RtasServiceServicer):
    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None, runner: Runner | None = None) -> None:
        self._platforms = platforms
        self._slots = slots or StreamSlots(platforms.limits)
        self._run = runner or Runner()

    async def _call(self, kind: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One call of ``kind`` (a field name of RtasCall): checked, run, its response message."""
        try:
            plan = check(kind, request)
            platform = self._platforms.get(request.platform)
            response = RESPONSES[kind]()
            run = RUNNERS[kind]
            await self._run.quick(platform, lambda: run(platform, request, response, plan))
            return response
        except PlatformError as error:
            await abort(context, error)

    async def SetIndicator(
        self, request: rtas_pb2.SetIndicatorRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.SetIndicatorResponse:
        return await self._call("set_indicator", request, context)  # type: ignore[no-any-return]

    async def GetSensorState(
        self, request: rtas_pb2.GetSensorStateRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.GetSensorStateResponse:
        return await self._call("get_sensor_state", request, context)  # type: ignore[no-any-return]

    async def ConfigureConnector(
        self, request: rtas_pb2.ConfigureConnectorRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.ConfigureConnectorResponse:
        return await self._call("configure_connector", request, context)  # type: ignore[no-any-return]

    async def SetPowerLevel(
        self, request: rtas_pb2.SetPowerLevelRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.SetPowerLevelResponse:
        return await self._call("set_power_level", request, context)  # type: ignore[no-any-return]

    async def GetPowerLevel(
        self, request: rtas_pb2.GetPowerLevelRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.GetPowerLevelResponse:
        return await self._call("get_power_level", request, context)  # type: ignore[no-any-return]

    async def CheckException(
        self, request: rtas_pb2.CheckExceptionRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.CheckExceptionResponse:
        return await self._call("check_exception", request, context)  # type: ignore[no-any-return]

    async def EventScan(
        self, request: rtas_pb2.EventScanRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.EventScanResponse:
        return await self._call("event_scan", request, context)  # type: ignore[no-any-return]

    async def QueryCpuStoppedState(
        self, request: rtas_pb2.QueryCpuStoppedStateRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.QueryCpuStoppedStateResponse:
        return await self._call("query_cpu_stopped_state", request, context)  # type: ignore[no-any-return]

    async def StartCpu(
        self, request: rtas_pb2.StartCpuRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.StartCpuResponse:
        return await self._call("start_cpu", request, context)  # type: ignore[no-any-return]

    async def StopSelf(
        self, request: rtas_pb2.StopSelfRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.StopSelfResponse:
        return await self._call("stop_self", request, context)  # type: ignore[no-any-return]

    async def Call(self, request: rtas_pb2.CallRequest, context: grpc.aio.ServicerContext) -> rtas_pb2.CallResponse:
        return await self._call("raw", request, context)  # type: ignore[no-any-return]

    async def _batch(self, platform: Platform, calls: Any, stop_at_nonzero: bool, results: Any) -> None:
        """Check every call, then run them all with no other call in between, adding to ``results``."""
        batch = Batch(platform.name, calls, self._platforms.limits)

        def run() -> None:
            batch.run(platform, results, stop_at_nonzero)

        if len(batch) > INLINE_BATCH_CALLS or batch.has_walks:
            await self._run.blocking(lambda: platform.run_exclusive(run))
        else:
            await self._run.quick(platform, run)

    async def ExecuteBatch(
        self, request: rtas_pb2.ExecuteBatchRequest, context: grpc.aio.ServicerContext
    ) -> rtas_pb2.ExecuteBatchResponse:
        response = rtas_pb2.ExecuteBatchResponse()
        try:
            platform = self._platforms.get(request.platform)
            await self._batch(platform, request.calls, request.stop_at_nonzero_status, response.results)
        except PlatformError as error:
            await abort(context, error)
        return response

    async def Session(
        self, request_iterator: AsyncIterator[rtas_pb2.SessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rtas_pb2.SessionResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        name = first.platform
        if not name:
            await abort(context, InvalidArgument("platform", "", "the first request of a session names its platform"))
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._slots.hold(name))
                platform = self._platforms.get(name)
            except PlatformError as error:
                await abort(context, error)
            # The platform's interrupt watch is closed when the platform is deleted (or the server
            # stops): its waker ends a session that is waiting for its next request.
            watch = await self._run.quick(platform, platform.watch_interrupts)  # never waits on the loop
            stack.callback(platform.unwatch_interrupts, watch)
            ending = EndOnClose(watch)
            stack.callback(ending.close)
            request: rtas_pb2.SessionRequest | None = first
            while request is not None:
                response = rtas_pb2.SessionResponse()
                try:
                    if request.platform and request.platform != name:
                        raise InvalidArgument("platform", request.platform, f"the session is on platform {name!r}")
                    # The platform the session opened on: one made later under the same name is another.
                    await self._batch(platform, request.calls, request.stop_at_nonzero_status, response.results)
                except PlatformError as error:
                    await abort(context, error)
                yield response
                request = await ending.or_next(requests)
            if ending.closed is not None:
                await abort_closed(context, ending.closed, name)
