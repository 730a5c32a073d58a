"""RtasService: the guest's RTAS calls, typed and raw, over one dispatcher.

Statuses go back in-band with gRPC OK; only requests that are not well-formed
RTAS calls (unknown platform, a work area of the wrong size, buffers that do not
match the call) are gRPC errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from papr.v1 import rtas_pb2, rtas_pb2_grpc

from ..model import PlatformError, Platforms
from ..model import rtas as t
from ..model.errors import InvalidArgument
from ..model.rtas_dispatch import Buffers, Capture, GuestMemory, dispatch, run_call
from .errors import abort

_NO_BUFFERS = Capture()  # for calls that point at no buffer (nothing is ever written to it)


class RtasServicer(rtas_pb2_grpc.RtasServiceServicer):
    def __init__(self, platforms: Platforms) -> None:
        self._platforms = platforms

    def _call(
        self,
        name: str,
        context: grpc.ServicerContext,
        token: int,
        args: Sequence[int],
        memory: GuestMemory = _NO_BUFFERS,
    ) -> list[int]:
        """A typed call: its cells come from typed fields, so it goes straight to the call's function."""
        try:
            return run_call(self._platforms.get(name), token, args, memory)
        except PlatformError as error:
            abort(context, error)

    def SetIndicator(
        self, request: rtas_pb2.SetIndicatorRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.SetIndicatorResponse:
        args = (request.indicator_type, request.indicator_index, request.new_state)
        (status,) = self._call(request.platform, context, t.TOKEN_SET_INDICATOR, args)
        return rtas_pb2.SetIndicatorResponse(status=status)

    def GetSensorState(
        self, request: rtas_pb2.GetSensorStateRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.GetSensorStateResponse:
        args = (request.sensor_type, request.sensor_index)
        status, state = self._call(request.platform, context, t.TOKEN_GET_SENSOR_STATE, args)
        return rtas_pb2.GetSensorStateResponse(status=status, state=state)

    def ConfigureConnector(
        self, request: rtas_pb2.ConfigureConnectorRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.ConfigureConnectorResponse:
        memory = Capture({0: request.work_area})
        args = (0, request.memory_extent)
        (status,) = self._call(request.platform, context, t.TOKEN_IBM_CONFIGURE_CONNECTOR, args, memory)
        return rtas_pb2.ConfigureConnectorResponse(status=status, work_area=memory.written[0])

    def SetPowerLevel(
        self, request: rtas_pb2.SetPowerLevelRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.SetPowerLevelResponse:
        args = (request.power_domain & 0xFFFFFFFF, request.level)
        status, level = self._call(request.platform, context, t.TOKEN_SET_POWER_LEVEL, args)
        return rtas_pb2.SetPowerLevelResponse(status=status, level=level)

    def GetPowerLevel(
        self, request: rtas_pb2.GetPowerLevelRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.GetPowerLevelResponse:
        args = (request.power_domain & 0xFFFFFFFF,)
        status, level = self._call(request.platform, context, t.TOKEN_GET_POWER_LEVEL, args)
        return rtas_pb2.GetPowerLevelResponse(status=status, level=level)

    def CheckException(
        self, request: rtas_pb2.CheckExceptionRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.CheckExceptionResponse:
        memory = Capture()
        args = (request.vector_offset, request.additional_info, request.event_mask, request.critical, 0,
                request.buffer_length)  # fmt: skip
        (status,) = self._call(request.platform, context, t.TOKEN_CHECK_EXCEPTION, args, memory)
        return rtas_pb2.CheckExceptionResponse(status=status, buffer=memory.written.get(0, b""))

    def EventScan(
        self, request: rtas_pb2.EventScanRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.EventScanResponse:
        args = (request.event_mask, request.critical, 0, request.buffer_length)
        (status,) = self._call(request.platform, context, t.TOKEN_EVENT_SCAN, args)
        return rtas_pb2.EventScanResponse(status=status)

    def Call(self, request: rtas_pb2.CallRequest, context: grpc.ServicerContext) -> rtas_pb2.CallResponse:
        regions: dict[int, bytearray] = {}
        for n, buffer in enumerate(request.buffers):
            if buffer.address in regions:
                abort(context, InvalidArgument(f"buffers[{n}].address", buffer.address, "given twice"))
            regions[buffer.address] = bytearray(buffer.data)
        memory = Buffers(regions)
        if len(request.args) != request.nargs:
            abort(
                context,
                InvalidArgument(
                    "args", len(request.args), f"has {len(request.args)} cells but nargs is {request.nargs}"
                ),
            )
        try:
            platform = self._platforms.get(request.platform)
            rets = dispatch(platform, request.token, request.nargs, request.nret, list(request.args), memory)
        except PlatformError as error:
            abort(context, error)
        return rtas_pb2.CallResponse(
            rets=rets,
            buffers=[rtas_pb2.GuestBuffer(address=a, data=bytes(d)) for a, d in memory.regions.items()],
        )
