"""OpenTelemetry: with opentelemetry-instrumentation-grpc installed, a span per RPC with its method,
gRPC code and the platform it names (papr_emu.service.tracing); OTEL_SDK_DISABLED=true turns it off.

The server runs in a process of its own (a tracer provider is process-wide and set once), with
the SDK's in-memory exporter; the test calls it over a real port and reads the spans it printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import grpc
import pytest

from papr.v1 import hotplug_pb2, platform_pb2
from papr_emu_client import connect

pytest.importorskip("opentelemetry.instrumentation.grpc", reason="the otel extra is not installed")
pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

SERVER = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from papr_emu import PaprServer
from papr_emu.model import Platforms, default_geometry

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
platforms = Platforms()
platforms.create("default", default_geometry())
server = PaprServer(platforms, ["127.0.0.1:0"], metrics_listen=sys.argv[1] if len(sys.argv) > 1 else None)
server.start()
print("address", server.addresses[0], flush=True)
sys.stdin.read()  # until the test closes it
server.stop(0.5)
for span in exporter.get_finished_spans():
    print("span", json.dumps({"name": span.name, "kind": span.kind.name, "attributes": dict(span.attributes)}))
"""


def traced(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """Run the server, make three RPCs, and return the spans it recorded."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        target = next(line for line in process.stdout if line.startswith("address ")).split()[1]  # logs go first
        client = connect(target, timeout=10)
        try:
            client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="default"))
            client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform="default"))
            with pytest.raises(grpc.RpcError) as missing:
                client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            client.close()
        out, _ = process.communicate("", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0
    return [json.loads(line.removeprefix("span ")) for line in out.splitlines() if line.startswith("span ")]


def environment(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # conftest turns tracing off
    return env | changes


@pytest.mark.parametrize("metrics", [False, True], ids=["alone", "with-metrics"])
def test_a_span_per_rpc_with_its_platform(metrics: bool) -> None:
    spans = traced(environment(), *(["127.0.0.1:0"] if metrics else []))
    by_method = {(s["name"], s["attributes"].get("papr.platform")): s for s in spans}
    get = by_method[("/papr.v1.PlatformService/GetPlatform", "default")]
    assert get["kind"] == "SERVER" and get["attributes"]["rpc.system"] == "grpc"
    assert get["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert by_method[("/papr.v1.HotplugService/ListDevices", "default")]
    missing = by_method[("/papr.v1.HotplugService/ListDevices", "nope")]
    assert missing["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(spans) == 3  # one per RPC, not two (the interceptor is added once)


def test_otel_sdk_disabled_turns_it_off() -> None:
    assert traced(environment(OTEL_SDK_DISABLED="true")) == []
