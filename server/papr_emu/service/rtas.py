"""RtasService: the guest's RTAS calls, a thin adapter over Platform.

Statuses go back in-band with gRPC OK; only requests that are not well-formed
RTAS calls (unknown platform, a work area of the wrong size) are gRPC errors.
"""

from __future__ import annotations

import grpc

from papr.v1 import rtas_pb2, rtas_pb2_grpc

from ..model import Platform, PlatformError, Platforms
from .errors import abort


class RtasServicer(rtas_pb2_grpc.RtasServiceServicer):
    def __init__(self, platforms: Platforms) -> None:
        self._platforms = platforms

    def _platform(self, name: str, context: grpc.ServicerContext) -> Platform:
        try:
            return self._platforms.get(name)
        except PlatformError as error:
            abort(context, error)

    def SetIndicator(
        self, request: rtas_pb2.SetIndicatorRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.SetIndicatorResponse:
        platform = self._platform(request.platform, context)
        status = platform.set_indicator(request.indicator_type, request.indicator_index, request.new_state)
        return rtas_pb2.SetIndicatorResponse(status=status)

    def GetSensorState(
        self, request: rtas_pb2.GetSensorStateRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.GetSensorStateResponse:
        platform = self._platform(request.platform, context)
        status, state = platform.get_sensor_state(request.sensor_type, request.sensor_index)
        return rtas_pb2.GetSensorStateResponse(status=status, state=state)

    def ConfigureConnector(
        self, request: rtas_pb2.ConfigureConnectorRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.ConfigureConnectorResponse:
        platform = self._platform(request.platform, context)
        try:
            status, area = platform.configure_connector(request.work_area)
        except PlatformError as error:
            abort(context, error)
        return rtas_pb2.ConfigureConnectorResponse(status=status, work_area=area)

    def SetPowerLevel(
        self, request: rtas_pb2.SetPowerLevelRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.SetPowerLevelResponse:
        platform = self._platform(request.platform, context)
        status, level = platform.set_power_level(request.power_domain, request.level)
        return rtas_pb2.SetPowerLevelResponse(status=status, level=level)

    def GetPowerLevel(
        self, request: rtas_pb2.GetPowerLevelRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.GetPowerLevelResponse:
        platform = self._platform(request.platform, context)
        status, level = platform.get_power_level(request.power_domain)
        return rtas_pb2.GetPowerLevelResponse(status=status, level=level)

    def CheckException(
        self, request: rtas_pb2.CheckExceptionRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.CheckExceptionResponse:
        platform = self._platform(request.platform, context)
        status, buffer = platform.check_exception(request.event_mask, request.buffer_length)
        return rtas_pb2.CheckExceptionResponse(status=status, buffer=buffer)

    def EventScan(
        self, request: rtas_pb2.EventScanRequest, context: grpc.ServicerContext
    ) -> rtas_pb2.EventScanResponse:
        platform = self._platform(request.platform, context)
        return rtas_pb2.EventScanResponse(status=platform.event_scan(request.event_mask, request.buffer_length))
