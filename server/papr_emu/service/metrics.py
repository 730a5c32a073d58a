"""Prometheus metrics and the per-RPC access log, both off unless asked for.

Per RPC (through :class:`~papr_emu.service.decoding.DecodeInHandler`'s ``observe`` hook,
so requests are timed only when one of the two is on):

- ``papr_emu_rpcs_total{method,code}``: RPCs ended, by method and gRPC code;
- ``papr_emu_rpc_duration_seconds{method,code}``: their duration (a stream's whole life);
- the access log: one ``rpc`` event with method, platform, code and duration_ms.

Read from the model at scrape time (:class:`ModelCollector`), through its public surface:
``papr_emu_platforms``, and per platform ``papr_emu_attached_lmbs``,
``papr_emu_pending_unplugs``, ``papr_emu_queued_event_logs``, ``papr_emu_open_streams``, and
the counters ``papr_emu_faults_fired_total`` and ``papr_emu_conduct_findings_total``.

Example::

    metrics = RpcMetrics()
    metrics.registry.register(ModelCollector(platforms, slots))
    server = grpc.aio.server(interceptors=[DecodeInHandler(observe=observer(metrics, access_log=True))])
    http = MetricsHttp(metrics.registry, "127.0.0.1:9100")  # GET /metrics
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..addresses import host_port
from ..model import Platforms
from .decoding import Observe, platform_of
from .streams import StreamSlots

#: RTAS calls take tens of microseconds, plugs and exports milliseconds; streams last until closed.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class RpcMetrics:
    """The RPC counter and histogram, in a registry of their own (one per server)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._count = Counter("papr_emu_rpcs", "RPCs ended, by method and gRPC code", ("method", "code"),
                              registry=self.registry)  # fmt: skip
        self._duration = Histogram(
            "papr_emu_rpc_duration_seconds", "RPC duration (a stream's whole life), by method and gRPC code",
            ("method", "code"), buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}  # labels() costs a lock and more

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            labels = (method.lstrip("/"), code.name)
            children = self._children.setdefault(
                (method, code), (self._count.labels(*labels), self._duration.labels(*labels))
            )
        children[0].inc()
        children[1].observe(seconds)


def observer(metrics: RpcMetrics | None, access_log: bool) -> Observe | None:
    """The ``observe`` hook for DecodeInHandler: metrics, the access log, both, or None (nothing timed)."""
    log = structlog.get_logger("papr_emu.access")

    def record(method: str, request: Any, code: grpc.StatusCode, seconds: float) -> None:
        if metrics is not None:
            metrics.observe(method, code, seconds)
        if access_log:
            log.info(
                "rpc", method=method.lstrip("/"), platform=platform_of(method, request), code=code.name,
                duration_ms=round(seconds * 1000, 3),
            )  # fmt: skip

    return record if metrics is not None or access_log else None


class ModelCollector(Collector):
    """Gauges read at scrape time from the platforms and the open streams (nothing kept between scrapes)."""

    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None) -> None:
        self._platforms = platforms
        self._slots = slots

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no describe-time scrape of the model

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        listed = self._platforms.list()
        yield GaugeMetricFamily("papr_emu_platforms", "Platforms the server holds", value=len(listed))
        lmbs = GaugeMetricFamily("papr_emu_attached_lmbs", "LMB connectors with a DIMM attached", labels=["platform"])
        pending = GaugeMetricFamily("papr_emu_pending_unplugs", "Devices whose unplug is pending", labels=["platform"])
        logs = GaugeMetricFamily(
            "papr_emu_queued_event_logs", "RTAS event logs waiting for check-exception", labels=["platform"]
        )
        fired = CounterMetricFamily("papr_emu_faults_fired", "Fault rules fired (FaultService)", labels=["platform"])
        findings = CounterMetricFamily(
            "papr_emu_conduct_findings", "Guest conduct findings made (FaultService.GetConduct)", labels=["platform"]
        )
        for platform in listed:
            gauges = platform.gauges()
            lmbs.add_metric([platform.name], gauges.attached_lmbs)
            pending.add_metric([platform.name], gauges.pending_unplugs)
            logs.add_metric([platform.name], gauges.queued_event_logs)
            fired.add_metric([platform.name], gauges.faults_fired)
            findings.add_metric([platform.name], gauges.conduct_findings)
        yield from (lmbs, pending, logs, fired, findings)
        if self._slots is not None:
            streams = GaugeMetricFamily(
                "papr_emu_open_streams", "Open streams (WatchEvents, WatchInterrupts, RTAS sessions)",
                labels=["platform"],
            )  # fmt: skip
            _, by_platform = self._slots.counts()
            for name in sorted({p.name for p in listed} | set(by_platform)):
                streams.add_metric([name], by_platform.get(name, 0))
            yield streams


def split_address(address: str) -> tuple[str, int]:
    """``127.0.0.1:9100`` -> ("127.0.0.1", 9100), ``[::1]:0`` -> ("::1", 0); ValueError otherwise."""
    try:
        return host_port(address)
    except ValueError as error:
        raise ValueError(f"--metrics-listen: {error}") from None


class MetricsHttp:
    """``GET /metrics`` over plain HTTP on its own thread (prometheus_client's server)."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        """Binds at once; OSError if the address cannot be bound."""
        host, port = split_address(address)
        self._server, self._thread = start_http_server(port, host, registry=registry)
        bound = self._server.server_port
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        thread: threading.Thread = self._thread
        thread.join(5)
