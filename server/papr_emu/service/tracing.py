"""OpenTelemetry tracing, on when ``opentelemetry-instrumentation-grpc`` is installed (``pip install papr-emu[otel]``).

One span per RPC, made by the instrumentation's own grpc.aio server interceptor (``rpc.system``,
``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``, the peer, the caller's trace context),
with the platform the request names added as ``papr.platform``. The spans go to the process's
tracer provider: install ``opentelemetry-distro`` and run the server under
``opentelemetry-instrument papr-emu serve`` with the ``OTEL_*`` variables (exporter, endpoint;
checked with ``OTEL_TRACES_EXPORTER=console``), or set one with the SDK when embedding
PaprServer. ``opentelemetry-instrument`` patches ``grpc.aio.server`` itself; the interceptor
is then not added a second time (one span per RPC, checked as well). ``OTEL_SDK_DISABLED=true``
turns tracing off, and its import with it (60-110 ms of start-up measured here; 50-150 us per RPC).

Example::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    PaprServer(platforms, ["127.0.0.1:0"]).start()   # exporter.get_finished_spans(): one per RPC
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from typing import Any

import grpc

from .decoding import Observe, platform_of

PLATFORM_ATTRIBUTE = "papr.platform"
STATUS_CODE_ATTRIBUTE = "rpc.grpc.status_code"
_SERVER_FAULTS = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
     grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}
)  # fmt: skip
_INSTRUMENTATION = "opentelemetry.instrumentation.grpc"


def enabled() -> bool:
    """The instrumentation package is installed and ``OTEL_SDK_DISABLED`` is not ``true``."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    try:
        return find_spec(_INSTRUMENTATION) is not None
    except ImportError:  # find_spec imports the parent packages: no opentelemetry at all
        return False


def server_interceptor() -> grpc.aio.ServerInterceptor | None:
    """The instrumentation's span-per-RPC interceptor; None if ``grpc.aio.server`` is instrumented already."""
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer, aio_server_interceptor

    instrumentor = GrpcAioInstrumentorServer()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:  # opentelemetry-instrument did it
        return None
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]
    return interceptor


def annotating(observe: Observe | None) -> Observe:
    """An ``observe`` hook that completes the RPC's span, then calls ``observe`` (if any).

    DecodeInHandler calls it inside the span (the instrumentation's interceptor comes first).
    It adds the platform, and the gRPC code: the instrumentation sees a code set or given to
    ``abort`` only, while the services end a refused call with ``abort_with_status`` (for the
    rich error details), which it leaves as OK.
    """
    from opentelemetry import trace

    def annotate(method: str, request: Any, code: grpc.StatusCode, seconds: float) -> None:
        span = trace.get_current_span()
        platform = platform_of(method, request)
        if platform:
            span.set_attribute(PLATFORM_ATTRIBUTE, platform)
        span.set_attribute(STATUS_CODE_ATTRIBUTE, code.value[0])
        if code in _SERVER_FAULTS:  # the semantic conventions: a server span is an error for these only
            span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
        if observe is not None:
            observe(method, request, code, seconds)

    return annotate
