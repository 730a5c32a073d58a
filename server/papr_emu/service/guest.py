"""GuestService: ibm,client-architecture-support."""

from __future__ import annotations

import grpc

from papr.v1 import guest_pb2, guest_pb2_grpc

from ..model import Platforms
from . import convert
from .errors import call_or_abort
from .running import Runner


class GuestServicer(guest_pb2_grpc.GuestServiceServicer):
    def __init__(self, platforms: Platforms, runner: Runner | None = None) -> None:
        self._platforms = platforms
        self._run = runner or Runner()

    async def ClientArchitectureSupport(
        self, request: guest_pb2.ClientArchitectureSupportRequest, context: grpc.aio.ServicerContext
    ) -> guest_pb2.ClientArchitectureSupportResponse:
        options = await call_or_abort(
            context,
            self._run.blocking(
                lambda: self._platforms.get(request.platform).client_architecture_support(request.option_vector_5)
            ),
        )
        return guest_pb2.ClientArchitectureSupportResponse(options=convert.options_to_pb(options))
