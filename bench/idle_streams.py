"""Benchmark: unary calls and the health check while 2,000 idle streams are open, in one run.

The server runs in its own process with its default limits; this process is the
client. It measures the p50 and p99 latency of GetSensorState and of the health
Check, one call at a time, with no stream open, then with ``--streams`` idle
WatchEvents and WatchInterrupts streams open (spread over platforms and
channels, as many stubs would hold them), then after they are closed. Target:
p99 with the streams open within 2x of p99 without.

    python bench/idle_streams.py [--streams 2000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import grpc
from baseline import server_process
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import hotplug_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client, connect

STREAMS_PER_PLATFORM = 50  # below the default --max-streams-per-platform (64)
STREAMS_PER_CHANNEL = 100
GEOMETRY = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4)


def latencies(call: Callable[[], object], count: int) -> tuple[float, float]:
    """p50 and p99 of ``count`` calls, in microseconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


def open_streams(target: str, client: Client, count: int) -> tuple[list[grpc.Channel], list[grpc.Future]]:
    channels: list[grpc.Channel] = []
    streams: list[grpc.Future] = []
    platforms = (count + STREAMS_PER_PLATFORM - 1) // STREAMS_PER_PLATFORM
    for n in range(platforms):
        client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=f"idle{n}", geometry=GEOMETRY))
    for n in range(count):
        if n % STREAMS_PER_CHANNEL == 0:
            channels.append(grpc.insecure_channel(target))
        channel = channels[-1]
        platform = f"idle{n // STREAMS_PER_PLATFORM}"
        if n % 2:
            stream = channel.unary_stream(
                "/papr.v1.InterruptService/WatchInterrupts",
                request_serializer=interrupt_pb2.WatchInterruptsRequest.SerializeToString,
                response_deserializer=interrupt_pb2.WatchInterruptsResponse.FromString,
            )(interrupt_pb2.WatchInterruptsRequest(platform=platform))
        else:
            stream = channel.unary_stream(
                "/papr.v1.HotplugService/WatchEvents",
                request_serializer=hotplug_pb2.WatchEventsRequest.SerializeToString,
                response_deserializer=hotplug_pb2.WatchEventsResponse.FromString,
            )(hotplug_pb2.WatchEventsRequest(platform=platform))
        streams.append(stream)
    for stream in streams:
        stream.initial_metadata()  # the server holds it: it sends headers once it took a slot
    return channels, streams


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=2000, help="calls per latency measurement")
    options = parser.parse_args()

    with server_process() as served:
        target = served.target
        client = connect(target, timeout=30)
        health = health_pb2_grpc.HealthStub(client.channel)
        sense = rtas_pb2.GetSensorStateRequest(platform="default", sensor_type=9003, sensor_index=0x10000000)

        def measure(label: str) -> tuple[float, float, float, float]:
            latencies(lambda: client.rtas.GetSensorState(sense), 200)  # warm-up
            rtas = latencies(lambda: client.rtas.GetSensorState(sense), options.calls)
            check = latencies(lambda: health.Check(health_pb2.HealthCheckRequest()), options.calls)
            print(f"{label:>28}: GetSensorState p50 {rtas[0]:6.0f} us p99 {rtas[1]:6.0f} us; "
                  f"health Check p50 {check[0]:6.0f} us p99 {check[1]:6.0f} us")  # fmt: skip
            return (*rtas, *check)

        before = measure("no streams")
        start = time.perf_counter()
        channels, streams = open_streams(target, client, options.streams)
        opened = time.perf_counter() - start
        during = measure(f"{options.streams} idle streams")
        rss = _rss_kib(served.pid)
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()
        after = measure("after closing them")
        print(f"opening {options.streams} streams took {opened:.2f} s; server RSS with them open: {rss / 1024:.0f} MiB")
        print(f"p99 ratio with/without streams: GetSensorState {during[1] / before[1]:.2f}x, "
              f"health Check {during[3] / before[3]:.2f}x (target <= 2x); after closing: "
              f"{after[1] / before[1]:.2f}x, {after[3] / before[3]:.2f}x")  # fmt: skip
        client.close()
    return 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
