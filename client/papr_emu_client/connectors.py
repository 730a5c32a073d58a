"""A platform's connectors through PlatformService.ListConnectors, every page of them.

Example::

    from papr_emu_client import connect
    from papr_emu_client.connectors import list_all
    from papr.v1 import connector_pb2

    client = connect()
    lmbs = list(list_all(client.platforms, "default", type=connector_pb2.DRC_TYPE_LMB))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from papr.v1 import connector_pb2, platform_pb2, platform_pb2_grpc

# The API's largest page (platform.proto: page_size 0..4096): the fewest round trips.
MAX_PAGE_SIZE: Final = 4096


def list_all(
    platforms: platform_pb2_grpc.PlatformServiceStub,
    platform: str,
    *,
    type: connector_pb2.DrcType.ValueType = connector_pb2.DRC_TYPE_UNSPECIFIED,
    attached_only: bool = False,
    page_size: int = MAX_PAGE_SIZE,
) -> Iterator[connector_pb2.Connector]:
    """Every connector of ``platform`` (optionally one type, or only those with a device), in index order.

    Follows ``next_page_token`` until the last page; a page is fetched only when the one
    before it has been consumed.
    """
    token = ""
    while True:
        page = platforms.ListConnectors(
            platform_pb2.ListConnectorsRequest(
                platform=platform, type=type, attached_only=attached_only, page_size=page_size, page_token=token
            )
        )
        yield from page.connectors
        token = page.next_page_token
        if not token:
            return
