"""Server limits: each refusal is RESOURCE_EXHAUSTED naming the limit, its value, flag and key,
and changes nothing; what a refused request would have taken stays free."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from helpers import snapshot
from papr.v1 import device_pb2, hotplug_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu.model import Limits, Platforms
from papr_emu_client import Client, connect

GiB = 1 << 30
GEOMETRY = platform_pb2.Geometry(memory_bytes=GiB, max_memory_bytes=9 * GiB, memory_slots=8, cpus=1, max_cpus=8)


def serve(limits: Limits) -> Iterator[Client]:
    server = PaprServer(Platforms(limits), ["127.0.0.1:0"])
    server.start()
    try:
        with connect(server.addresses[0]) as client:
            yield client
    finally:
        server.stop(grace=0)


@pytest.fixture()
def limited() -> Iterator[Client]:
    """A server of its own, with small limits on platforms and memory (an LMB is 256 MiB)."""
    yield from serve(Limits(platforms=2, lmbs_per_platform=12, lmbs=20))


@pytest.fixture()
def short_queue() -> Iterator[Client]:
    """A server of its own whose platforms queue at most three event logs."""
    yield from serve(Limits(queued_event_logs=3))


def create(client: Client, name: str) -> None:
    client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name, geometry=GEOMETRY))


def plug(client: Client, platform: str, device_id: str, spec: device_pb2.DeviceSpec) -> None:
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id=device_id, spec=spec))


def dimm(gib: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=gib * GiB))


def core(core_id: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core_id))


def exhausted(call: object, *words: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    for word in words:
        assert word in (caught.value.details() or ""), (word, caught.value.details())


def test_platforms_per_server(limited: Client) -> None:
    create(limited, "a")
    create(limited, "b")
    exhausted(lambda: create(limited, "c"), "limit platforms = 2", "--max-platforms", "limits.platforms")
    limited.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="b"))
    create(limited, "c")  # a deleted platform frees its place


def test_lmbs_per_platform_and_per_server(limited: Client) -> None:
    create(limited, "a")
    create(limited, "b")
    plug(limited, "a", "d0", dimm(2))  # 8 LMBs
    before = snapshot(limited, "a")
    exhausted(lambda: plug(limited, "a", "d1", dimm(2)), "limit lmbs_per_platform = 12", "16 LMBs on this platform")
    assert snapshot(limited, "a") == before
    plug(limited, "a", "d1", dimm(1))  # 12: exactly the limit
    plug(limited, "b", "d0", dimm(2))  # 20 on the server: exactly its limit
    exhausted(lambda: plug(limited, "b", "d1", dimm(1)), "limit lmbs = 20", "--max-lmbs", "24 LMBs on the server")
    # Unplugging a DIMM the guest never acquired deletes it at once and gives its LMBs back.
    limited.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform="a", id="d1"))
    plug(limited, "b", "d1", dimm(1))
    # So does deleting a platform: a's 8 LMBs are free for a new platform.
    exhausted(lambda: plug(limited, "a", "d1", dimm(1)), "limit lmbs = 20")
    limited.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform="a"))
    create(limited, "c")
    plug(limited, "c", "d0", dimm(2))


def test_queued_event_logs_per_platform(short_queue: Client) -> None:
    limited = short_queue
    create(limited, "a")
    for core_id in (1, 2, 3):
        plug(limited, "a", f"c{core_id}", core(core_id))  # one hotplug log each, unread
    before = snapshot(limited, "a")
    exhausted(lambda: plug(limited, "a", "c4", core(4)), "limit queued_event_logs = 3", "3 the guest has not read")
    exhausted(
        lambda: limited.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform="a", id="c1")),
        "--max-queued-event-logs",
    )
    assert snapshot(limited, "a") == before  # refused: nothing changed, nothing queued was dropped
    info = limited.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="a")).platform
    assert info.pending_rtas_events == 3
    # The guest reads one: there is room for one more.
    reply = limited.rtas.CheckException(
        rtas_pb2.CheckExceptionRequest(platform="a", event_mask=0xFFFFFFFF, buffer_length=2048)
    )
    assert reply.status == 0
    plug(limited, "a", "c4", core(4))


def test_limits_come_from_flags_and_the_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "papr.toml"
    config.write_text("[limits]\nplatforms = 1\nqueued_event_logs = 7\n")
    socket = tmp_path / "papr.sock"
    command = [sys.executable, "-m", "papr_emu.cli", "serve", "--listen", f"unix:{socket}", "--config", str(config)]
    process = subprocess.Popen([*command, "--max-platforms", "2"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with connect(f"unix:{socket}") as client:
            create(client, "a")  # the flag (2) beats the file (1); the file's config has no platform
            create(client, "b")
            exhausted(lambda: create(client, "c"), "limit platforms = 2")
    finally:
        process.terminate()
        process.wait(10)
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nplatforms = 0\n")
    result = subprocess.run([*command[:-1], str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "limits.platforms: 0 is not a positive integer" in result.stderr
    result = subprocess.run([*command, "--max-lmbs", "-1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--max-lmbs: '-1' is not a positive integer" in result.stderr


def watch(client: Client, platform: str, kind: str) -> grpc.Call:
    """An open stream, once the server holds it (it sends the headers after taking a slot)."""
    if kind == "events":
        stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform), timeout=30)
    else:
        stream = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=platform), timeout=30)
    stream.initial_metadata()
    return stream  # type: ignore[no-any-return]


def refused_stream(client: Client, platform: str, *words: str) -> None:
    stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform), timeout=10)
    exhausted(lambda: next(stream), *words)


@pytest.fixture()
def few_streams() -> Iterator[Client]:
    yield from serve(Limits(streams=3, streams_per_platform=2))


def test_streams_in_all_and_per_platform(few_streams: Client) -> None:
    client = few_streams
    create(client, "a")
    create(client, "b")
    # Held in variables: a stream object that is garbage-collected cancels its RPC, freeing the slot.
    first = watch(client, "a", "events")
    second = watch(client, "a", "interrupts")
    refused_stream(client, "a", "limit streams_per_platform = 2", "--max-streams-per-platform")
    third = watch(client, "b", "interrupts")
    refused_stream(client, "b", "limit streams = 3", "--max-streams", "limits.streams")
    # Unary calls still go through while the streams are held.
    assert client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="b"), timeout=5).platform.name == "b"
    first.cancel()  # the server's task for it is cancelled, which frees the slot
    deadline = time.monotonic() + 5
    while True:
        try:
            fourth = watch(client, "a", "events")
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.1)
    for stream in (second, third, fourth):
        stream.cancel()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--max-workers must be a positive integer"):
        PaprServer(Platforms(), ["127.0.0.1:0"], max_workers=0)


def test_message_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for client in serve(Limits(message_bytes=64 << 10)):
        create(client, "a")
        with pytest.raises(grpc.RpcError) as caught:
            client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="a" * (70 << 10)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "65536" in (caught.value.details() or "")  # gRPC's own message states the limit
