"""The gRPC server: papr.v1 services, health, reflection; start and stop.

One asyncio event loop, on a thread of its own, serves every RPC (grpc.aio): an
open stream costs no thread, so thousands of idle watchers and sessions do not
starve unary calls. Model calls that may block run on ``max_workers`` threads
(see :mod:`papr_emu.service.running`). The public API stays synchronous.

Example::

    server = PaprServer(platforms, ["127.0.0.1:0"])
    server.start()            # binds, then reports SERVING
    print(server.addresses)   # ['127.0.0.1:41231']
    server.stop(grace=1.0)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from papr.v1 import (
    access_pb2,
    access_pb2_grpc,
    fault_pb2,
    fault_pb2_grpc,
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

from .model import Platforms
from .reflection import add_reflection
from .security import Security
from .service import GuestServicer, HotplugServicer, InterruptServicer, PlatformServicer, RtasServicer, tracing
from .service.access import AccessServicer, Guard
from .service.decoding import DecodeInHandler, Observe
from .service.faults import FaultServicer
from .service.running import Runner
from .service.streams import StreamSlots

DEFAULT_LISTEN = "127.0.0.1:50051"
#: Threads for model calls that may block (plugs, platform creation, device-tree exports, and RTAS
#: calls on a platform another thread is inside); streams and quick calls need none.
DEFAULT_MAX_WORKERS = 8
SERVICE_NAMES = (
    rtas_pb2.DESCRIPTOR.services_by_name["RtasService"].full_name,
    platform_pb2.DESCRIPTOR.services_by_name["PlatformService"].full_name,
    hotplug_pb2.DESCRIPTOR.services_by_name["HotplugService"].full_name,
    interrupt_pb2.DESCRIPTOR.services_by_name["InterruptService"].full_name,
    guest_pb2.DESCRIPTOR.services_by_name["GuestService"].full_name,
    access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
    fault_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name,
)
#: How often pending unplugs are checked against their platform's timeout policy.
TIMEOUT_TICK_SECONDS = 0.1

if TYPE_CHECKING:
    from pathlib import Path

    from .service.metrics import MetricsHttp, RpcMetrics
    from .service.transcript import Recorder

log = structlog.get_logger("papr_emu.server")
T = TypeVar("T")


class ListenError(Exception):
    """An address could not be bound."""


class PaprServer:
    """One gRPC server over a set of platforms, listening on TCP and/or unix sockets."""

    def __init__(
        self,
        platforms: Platforms,
        listen: Sequence[str] = (DEFAULT_LISTEN,),
        max_workers: int = DEFAULT_MAX_WORKERS,
        security: Security | None = None,
        metrics_listen: str | None = None,
        access_log: bool = False,
        record: Path | None = None,
    ) -> None:
        """``security``: TLS, tokens and the rest (none by default: fit for loopback and unix sockets).
        ``metrics_listen``: HOST:PORT to serve Prometheus metrics on (off by default); ``access_log``:
        one log event per RPC (see :mod:`papr_emu.service.metrics`); ``record``: a directory to write
        each platform's transcript into (see :mod:`papr_emu.service.transcript`).

        Raises SecurityError for a listener a network peer could reach unprotected.
        """
        if max_workers < 1:
            raise ValueError(f"--max-workers must be a positive integer, not {max_workers}")
        self.security = security or Security()
        self.security.check_listeners(list(listen))
        self._metrics_listen = metrics_listen
        self._metrics: RpcMetrics | None = None
        self._metrics_http: MetricsHttp | None = None
        self.metrics_address: str | None = None  # HOST:PORT bound, once started
        self._access_log = access_log
        self._observe: Observe | None = None
        if metrics_listen is not None or access_log:
            # Imported only when asked for: prometheus_client adds about 50 ms to every cold start.
            from .service.metrics import RpcMetrics, observer, split_address

            if metrics_listen is not None:
                split_address(metrics_listen)  # ValueError unless HOST:PORT
                self.security.check_metrics_listener(metrics_listen)
                self._metrics = RpcMetrics()
            self._observe = observer(self._metrics, access_log)
        self._tracing: grpc.aio.ServerInterceptor | None = None
        if tracing.enabled():  # opentelemetry-instrumentation-grpc installed: a span per RPC
            self._tracing = tracing.server_interceptor()
            self._observe = tracing.annotating(self._observe)
        self.platforms = platforms
        self._recorder: Recorder | None = None
        if record is not None:
            from .service.transcript import Recorder
            from .transcript_version import distribution_version

            self._recorder = Recorder(record, platforms, distribution_version())  # ValueError: cannot make it
        self._listen = list(listen)
        self._executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="papr-model")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="papr-aio", daemon=True)
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self.addresses: list[str] = []
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._ticker = threading.Thread(target=self._expire_unplugs, name="papr-unplug-timeouts", daemon=True)

    def _build(self) -> grpc.aio.Server:
        """The server and its services (on the loop: grpc.aio binds a server to the loop it is made on)."""
        limits = self.platforms.limits
        tokens = self.security.tokens
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limits.message_bytes),
                ("grpc.max_send_message_length", limits.message_bytes),
            ],
            interceptors=[
                # First, so that its span is current while the handler runs (annotating adds the platform).
                *([self._tracing] if self._tracing is not None else []),
                DecodeInHandler(
                    Guard(tokens, self.security.certificate_roles).check if tokens is not None else None,
                    self._observe,
                ),
                # After the decoding: it records the parsed requests the handlers see, and their results.
                *([self._recorder.interceptor()] if self._recorder is not None else []),
            ],
        )
        runner = Runner(self._executor)
        slots = StreamSlots(limits)  # the streaming RPCs share the stream limits
        if self._metrics is not None:
            from .service.metrics import ModelCollector

            self._metrics.registry.register(ModelCollector(self.platforms, slots))
        platforms = self.platforms
        rtas_pb2_grpc.add_RtasServiceServicer_to_server(RtasServicer(platforms, slots, runner), server)
        platform_pb2_grpc.add_PlatformServiceServicer_to_server(PlatformServicer(platforms, runner, tokens), server)
        access_pb2_grpc.add_AccessServiceServicer_to_server(AccessServicer(platforms, tokens), server)
        hotplug_pb2_grpc.add_HotplugServiceServicer_to_server(HotplugServicer(platforms, slots, runner), server)
        interrupt_pb2_grpc.add_InterruptServiceServicer_to_server(InterruptServicer(platforms, slots, runner), server)
        guest_pb2_grpc.add_GuestServiceServicer_to_server(GuestServicer(platforms, runner), server)
        fault_pb2_grpc.add_FaultServiceServicer_to_server(FaultServicer(platforms, slots, runner), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.security.reflection:
            add_reflection(server, (*SERVICE_NAMES, health.SERVICE_NAME))  # v1 and v1alpha, with the .proto comments
        return server

    def _credentials(self) -> grpc.ServerCredentials | None:
        tls = self.security.tls
        if tls is None:
            return None
        return grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.client_ca, require_client_auth=tls.client_ca is not None
        )

    def _expire_unplugs(self) -> None:
        """Apply each platform's unplug timeout policy (a no-op for platforms without one)."""
        while not self._stopping.wait(TIMEOUT_TICK_SECONDS):
            for platform in self.platforms.list():
                try:
                    platform.expire_unplugs()
                except Exception:  # never let one platform stop the ticker for the others
                    log.exception("unplug_timeouts.failed", platform=platform.name)

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self) -> None:
        server = self._server = self._build()
        credentials = self._credentials()
        for address in self._listen:
            try:
                if credentials is None:
                    port = server.add_insecure_port(address)
                else:
                    port = server.add_secure_port(address, credentials)
            except RuntimeError as error:
                raise ListenError(f"cannot listen on {address}: {error}") from None
            if port == 0 and not address.startswith("unix:"):
                raise ListenError(f"cannot listen on {address}")
            if address.startswith("unix:"):
                self.addresses.append(address)
            else:
                host = address.rsplit(":", 1)[0]
                self.addresses.append(f"{host}:{port}")
        if self._metrics is not None and self._metrics_listen is not None:
            try:
                from .service.metrics import MetricsHttp

                self._metrics_http = MetricsHttp(self._metrics.registry, self._metrics_listen)
            except OSError as error:
                raise ListenError(f"cannot serve metrics on {self._metrics_listen}: {error.strerror}") from None
            self.metrics_address = self._metrics_http.address
        # The socket files are made when the server starts: made private from the first instant (no
        # window in which another user could connect), then given the mode asked for.
        previous = os.umask(0o177)
        try:
            await server.start()
        finally:
            os.umask(previous)
        for address in self._listen:
            if address.startswith("unix:"):
                path = address[len("unix://") :] if address.startswith("unix://") else address[len("unix:") :]
                os.chmod(path, self.security.unix_socket_mode)
        assert self._health is not None
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def start(self) -> None:
        self._loop_thread.start()
        try:
            self._on_loop(self._start())
        except BaseException:
            self._stop_metrics()
            self._close_loop()
            raise
        self._ticker.start()
        tls = self.security.tls
        log.info(
            "server.serving", addresses=self.addresses, platforms=[p.name for p in self.platforms.list()],
            tls=tls is not None, mtls=tls is not None and tls.client_ca is not None,
            tokens=self.security.tokens is not None, reflection=self.security.reflection,
            metrics=self.metrics_address, access_log=self._access_log,
        )  # fmt: skip

    async def _stop(self, grace: float | None) -> None:
        assert self._server is not None and self._health is not None
        await self._health.enter_graceful_shutdown()
        for platform in self.platforms.list():
            platform.close("shutdown")  # ends event streams and sessions so in-flight watchers finish
        await self._server.stop(grace)

    def stop(self, grace: float | None = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopping.set()
        if self._server is not None:
            self._on_loop(self._stop(grace))
        if self._recorder is not None:
            self._recorder.close()
        self._stop_metrics()
        self._close_loop()
        log.info("server.stopped")

    def _stop_metrics(self) -> None:
        if self._metrics_http is not None:
            self._metrics_http.stop()
            self._metrics_http = None

    def _close_loop(self) -> None:
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
        self._loop.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stopped or ``timeout`` passed; True if it stopped."""
        return self._stopped.wait(timeout)
