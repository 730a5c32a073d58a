"""The gRPC server: papr.v1 services, health, reflection; start and stop.

Example::

    server = PaprServer(platforms, ["127.0.0.1:0"])
    server.start()            # binds, then reports SERVING
    print(server.addresses)   # ['127.0.0.1:41231']
    server.stop(grace=1.0)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent import futures

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from papr.v1 import (
    guest_pb2,
    guest_pb2_grpc,
    hotplug_pb2,
    hotplug_pb2_grpc,
    interrupt_pb2,
    interrupt_pb2_grpc,
    platform_pb2,
    platform_pb2_grpc,
    rtas_pb2,
    rtas_pb2_grpc,
)

from .model import LIMITS, Platforms
from .service import GuestServicer, HotplugServicer, InterruptServicer, PlatformServicer, RtasServicer
from .service.decoding import DecodeInHandler
from .service.streams import StreamSlots

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_MAX_WORKERS = 64
SERVICE_NAMES = (
    rtas_pb2.DESCRIPTOR.services_by_name["RtasService"].full_name,
    platform_pb2.DESCRIPTOR.services_by_name["PlatformService"].full_name,
    hotplug_pb2.DESCRIPTOR.services_by_name["HotplugService"].full_name,
    interrupt_pb2.DESCRIPTOR.services_by_name["InterruptService"].full_name,
    guest_pb2.DESCRIPTOR.services_by_name["GuestService"].full_name,
)
#: How often pending unplugs are checked against their platform's timeout policy.
TIMEOUT_TICK_SECONDS = 0.1

log = structlog.get_logger("papr_emu.server")


class ListenError(Exception):
    """An address could not be bound."""


class PaprServer:
    """One gRPC server over a set of platforms, listening on TCP and/or unix sockets."""

    def __init__(
        self,
        platforms: Platforms,
        listen: Sequence[str] = (DEFAULT_LISTEN,),
        max_workers: int = DEFAULT_MAX_WORKERS,
    ) -> None:
        if platforms.limits.streams >= max_workers:
            raise ValueError(
                f"{LIMITS['streams'].flag} ({platforms.limits.streams}) must be below --max-workers ({max_workers}): "
                "each open stream holds a worker thread, and unary calls need some of their own"
            )
        self.platforms = platforms
        self._listen = list(listen)
        self._health = health.HealthServicer()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="papr-rpc"),
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", platforms.limits.message_bytes),
                ("grpc.max_send_message_length", platforms.limits.message_bytes),
            ],
            interceptors=[DecodeInHandler()],
        )
        slots = StreamSlots(platforms.limits)  # the streaming RPCs share the stream limits
        rtas_pb2_grpc.add_RtasServiceServicer_to_server(RtasServicer(platforms, slots), self._server)
        platform_pb2_grpc.add_PlatformServiceServicer_to_server(PlatformServicer(platforms), self._server)
        hotplug_pb2_grpc.add_HotplugServiceServicer_to_server(HotplugServicer(platforms, slots), self._server)
        interrupt_pb2_grpc.add_InterruptServiceServicer_to_server(InterruptServicer(platforms, slots), self._server)
        guest_pb2_grpc.add_GuestServiceServicer_to_server(GuestServicer(platforms), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.addresses: list[str] = []
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._expire_unplugs, name="papr-unplug-timeouts", daemon=True)

    def _expire_unplugs(self) -> None:
        """Apply each platform's unplug timeout policy (a no-op for platforms without one)."""
        while not self._stopping.wait(TIMEOUT_TICK_SECONDS):
            for platform in self.platforms.list():
                try:
                    platform.expire_unplugs()
                except Exception:  # never let one platform stop the ticker for the others
                    log.exception("unplug_timeouts.failed", platform=platform.name)

    def start(self) -> None:
        for address in self._listen:
            try:
                port = self._server.add_insecure_port(address)
            except RuntimeError as error:
                raise ListenError(f"cannot listen on {address}: {error}") from None
            if port == 0 and not address.startswith("unix:"):
                raise ListenError(f"cannot listen on {address}")
            if address.startswith("unix:"):
                self.addresses.append(address)
            else:
                host = address.rsplit(":", 1)[0]
                self.addresses.append(f"{host}:{port}")
        self._server.start()
        self._ticker.start()
        for name in ("", *SERVICE_NAMES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("server.serving", addresses=self.addresses, platforms=[p.name for p in self.platforms.list()])

    def stop(self, grace: float | None = 2.0) -> None:
        self._stopping.set()
        self._health.enter_graceful_shutdown()
        for platform in self.platforms.list():
            platform.close("shutdown")  # ends event streams so in-flight watchers finish
        self._server.stop(grace).wait()
        log.info("server.stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))
