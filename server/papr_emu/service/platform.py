"""PlatformService: create, inspect and delete platforms; list their connectors."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from papr.v1 import platform_pb2, platform_pb2_grpc

from ..model import InvalidArgument, Platforms
from . import convert
from .errors import call_or_abort

DEFAULT_PAGE_SIZE = 256
DTB_CHUNK = 1 << 20
MAX_PAGE_SIZE = 4096
_PAGE_TOKEN_PREFIX = "drc:"


def encode_page_token(next_index: int) -> str:
    return f"{_PAGE_TOKEN_PREFIX}{next_index:08x}"


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        if not token.startswith(_PAGE_TOKEN_PREFIX) or len(token) != len(_PAGE_TOKEN_PREFIX) + 8:
            raise ValueError(token)
        return int(token[len(_PAGE_TOKEN_PREFIX) :], 16)
    except ValueError:
        raise InvalidArgument("page_token", token, "not a next_page_token of this API") from None


class PlatformServicer(platform_pb2_grpc.PlatformServiceServicer):
    def __init__(self, platforms: Platforms) -> None:
        self._platforms = platforms

    def CreatePlatform(
        self, request: platform_pb2.CreatePlatformRequest, context: grpc.ServicerContext
    ) -> platform_pb2.CreatePlatformResponse:
        def create() -> platform_pb2.CreatePlatformResponse:
            geometry = convert.geometry_from_pb(request.geometry)
            coldplug = [
                (item.id, convert.plug_request_from_pb(item.spec, f"coldplug[{n}].spec"))
                for n, item in enumerate(request.coldplug)
            ]
            timeouts = convert.unplug_timeouts_from_pb(request.unplug_timeouts)
            platform = self._platforms.create(request.name, geometry, coldplug, timeouts)
            return platform_pb2.CreatePlatformResponse(platform=convert.platform_to_pb(platform.info()))

        return call_or_abort(context, create)

    def GetPlatform(
        self, request: platform_pb2.GetPlatformRequest, context: grpc.ServicerContext
    ) -> platform_pb2.GetPlatformResponse:
        platform = call_or_abort(context, lambda: self._platforms.get(request.platform))
        return platform_pb2.GetPlatformResponse(platform=convert.platform_to_pb(platform.info()))

    def ListPlatforms(
        self, request: platform_pb2.ListPlatformsRequest, context: grpc.ServicerContext
    ) -> platform_pb2.ListPlatformsResponse:
        return platform_pb2.ListPlatformsResponse(
            platforms=[convert.platform_to_pb(p.info()) for p in self._platforms.list()]
        )

    def DeletePlatform(
        self, request: platform_pb2.DeletePlatformRequest, context: grpc.ServicerContext
    ) -> platform_pb2.DeletePlatformResponse:
        call_or_abort(context, lambda: self._platforms.delete(request.platform))
        return platform_pb2.DeletePlatformResponse()

    def ListConnectors(
        self, request: platform_pb2.ListConnectorsRequest, context: grpc.ServicerContext
    ) -> platform_pb2.ListConnectorsResponse:
        def page() -> platform_pb2.ListConnectorsResponse:
            platform = self._platforms.get(request.platform)
            if request.page_size > MAX_PAGE_SIZE:
                raise InvalidArgument("page_size", request.page_size, f"must be at most {MAX_PAGE_SIZE}")
            connectors, next_index = platform.connectors(
                start_index=decode_page_token(request.page_token),
                limit=request.page_size or DEFAULT_PAGE_SIZE,
                drc_type=convert.drc_type_from_pb(request.type),
                attached_only=request.attached_only,
            )
            return platform_pb2.ListConnectorsResponse(
                connectors=[convert.connector_to_pb(c) for c in connectors],
                next_page_token=encode_page_token(next_index) if next_index is not None else "",
            )

        return call_or_abort(context, page)

    def GetConnector(
        self, request: platform_pb2.GetConnectorRequest, context: grpc.ServicerContext
    ) -> platform_pb2.GetConnectorResponse:
        info = call_or_abort(context, lambda: self._platforms.get(request.platform).connector(request.drc_index))
        return platform_pb2.GetConnectorResponse(connector=convert.connector_to_pb(info))

    def GetDeviceTree(
        self, request: platform_pb2.GetDeviceTreeRequest, context: grpc.ServicerContext
    ) -> Iterator[platform_pb2.GetDeviceTreeResponse]:
        dtb = call_or_abort(context, lambda: self._platforms.get(request.platform).device_tree_blob())
        for offset in range(0, len(dtb), DTB_CHUNK):
            yield platform_pb2.GetDeviceTreeResponse(chunk=dtb[offset : offset + DTB_CHUNK], total_size=len(dtb))
