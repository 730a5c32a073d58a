"""RtasService: the guest's RTAS calls, typed and raw, over one dispatcher.

Statuses go back in-band with gRPC OK; only requests that are not well-formed
RTAS calls (unknown platform, a work area of the wrong size, buffers that do not
match the call) are gRPC errors.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import grpc

from papr.v1 import rtas_pb2, rtas_pb2_grpc

from ..model import InvalidArgument, PlatformError, Platforms
from .errors import abort
from .rtas_calls import plan, plan_batch
from .streams import StreamSlots


class RtasServicer(rtas_pb2_grpc.RtasServiceServicer):
    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None) -> None:
        self._platforms = platforms
        self._slots = slots or StreamSlots(platforms.limits)

    def _call(self, kind: str, request: Any, context: grpc.ServicerContext) -> Any:
        """One call of ``kind`` (a field name of RtasCall): checked, run, its response message."""
        try:
            planned = plan(kind, request)
            return planned.step(self._platforms.get(request.platform))[1]
        except PlatformError as error:
            abort(context, error)

    def SetIndicator(
        self, request: rtas_pb2.SetIndicatorRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.SetIndicatorResponse:
        return self._call("set_indicator", request, context)  # type: ignore[no-any-return]

    def GetSensorState(
        self, request: rtas_pb2.GetSensorStateRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.GetSensorStateResponse:
        return self._call("get_sensor_state", request, context)  # type: ignore[no-any-return]

    def ConfigureConnector(
        self, request: rtas_pb2.ConfigureConnectorRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.ConfigureConnectorResponse:
        return self._call("configure_connector", request, context)  # type: ignore[no-any-return]

    def SetPowerLevel(
        self, request: rtas_pb2.SetPowerLevelRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.SetPowerLevelResponse:
        return self._call("set_power_level", request, context)  # type: ignore[no-any-return]

    def GetPowerLevel(
        self, request: rtas_pb2.GetPowerLevelRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.GetPowerLevelResponse:
        return self._call("get_power_level", request, context)  # type: ignore[no-any-return]

    def CheckException(
        self, request: rtas_pb2.CheckExceptionRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.CheckExceptionResponse:
        return self._call("check_exception", request, context)  # type: ignore[no-any-return]

    def EventScan(
        self, request: rtas_pb2.EventScanRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.EventScanResponse:
        return self._call("event_scan", request, context)  # type: ignore[no-any-return]

    def Call(self, request: rtas_pb2.CallRequest, context: grpc.ServicerContext) -> rtas_pb2.CallResponse:
        return self._call("raw", request, context)  # type: ignore[no-any-return]

    def ExecuteBatch(
        self, request: rtas_pb2.ExecuteBatchRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.ExecuteBatchResponse:
        try:
            platform = self._platforms.get(request.platform)
            steps = plan_batch(platform.name, request.calls, self._platforms.limits)
            results = platform.run_batch(steps, request.stop_at_nonzero_status)
        except PlatformError as error:
            abort(context, error)
        return rtas_pb2.ExecuteBatchResponse(results=results)

    def Session(
        self, request_iterator: Iterator[rtas_pb2.SessionRequest], context: grpc.ServicerContext
    ) -> Iterator[rtas_pb2.SessionResponse]:
        first = next(request_iterator, None)
        if first is None:
            return
        name = first.platform
        if not name:
            abort(context, InvalidArgument("platform", "", "the first request of a session names its platform"))
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._slots.hold(name))
                self._platforms.get(name)
            except PlatformError as error:
                abort(context, error)
            for request in itertools.chain((first,), request_iterator):
                try:
                    if request.platform and request.platform != name:
                        raise InvalidArgument("platform", request.platform, f"the session is on platform {name!r}")
                    platform = self._platforms.get(name)
                    steps = plan_batch(name, request.calls, self._platforms.limits)
                    results = platform.run_batch(steps, request.stop_at_nonzero_status)
                except PlatformError as error:
                    abort(context, error)
                yield rtas_pb2.SessionResponse(results=results)
