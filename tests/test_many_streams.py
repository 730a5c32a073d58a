"""Open streams cost the server no thread: hundreds of idle watchers and sessions leave it serving.

The old thread-per-stream server stopped answering anyone once 64 streams (its
worker count) were open; these tests hold several times that and check that
unary calls, the health check, a new session and a watcher's events still work.
They check behaviour (answers arrive, within generous deadlines), not speed:
bench/idle_streams.py measures latency.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import device_pb2, hotplug_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu.model import Limits, Platforms, default_geometry
from papr_emu_client import connect

STREAMS = 400
PLATFORMS = 8


def test_hundreds_of_idle_streams_leave_the_server_serving() -> None:
    # Room for the idle streams, plus the one session the test opens on p0.
    platforms = Platforms(Limits(streams=STREAMS + 1, streams_per_platform=STREAMS // PLATFORMS + 1))
    for n in range(PLATFORMS):
        platforms.create(f"p{n}", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"], max_workers=2)
    server.start()
    requests: queue.SimpleQueue[rtas_pb2.SessionRequest | None] = queue.SimpleQueue()

    def session_requests() -> Iterator[rtas_pb2.SessionRequest]:
        while (request := requests.get()) is not None:
            yield request

    try:
        with connect(server.addresses[0]) as client:
            streams: list[grpc.Call] = []
            for n in range(STREAMS):
                platform = f"p{n % PLATFORMS}"
                if n % 2:
                    call = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=platform))
                else:
                    call = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform))
                streams.append(call)
            for call in streams:
                call.initial_metadata()  # every stream is held by the server
            # Unary calls, the health check and a session all still answer.
            sense = rtas_pb2.GetSensorStateRequest(platform="p0", sensor_type=9003, sensor_index=0x10000000)
            assert client.rtas.GetSensorState(sense, timeout=10).state == 1
            health = health_pb2_grpc.HealthStub(client.channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            session = client.rtas.Session(session_requests(), timeout=30)
            call = rtas_pb2.RtasCall(get_sensor_state=sense)
            requests.put(rtas_pb2.SessionRequest(platform="p0", calls=[call]))
            assert next(session).results[0].get_sensor_state.state == 1
            # A plug on p1 reaches every watcher of p1 (the idle streams are live, not stuck).
            spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
            client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="p1", id="c1", spec=spec), timeout=10)
            watchers = [s for n, s in enumerate(streams) if n % PLATFORMS == 1 and n % 2 == 0]
            for watcher in watchers:
                assert next(watcher).event.device_added.device.id == "c1"
            # Deleting a platform ends its streams at once, with NOT_FOUND.
            client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="p2"), timeout=10)
            for n, stream in enumerate(streams):
                if n % PLATFORMS == 2:
                    try:
                        for _ in stream:
                            pass
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.NOT_FOUND
            for stream in streams:
                stream.cancel()
            requests.put(None)
    finally:
        requests.put(None)
        server.stop(grace=0)
