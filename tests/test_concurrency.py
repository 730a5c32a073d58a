"""Many stubs at once: each call atomic on its platform, platforms independent."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from conftest import new_platform
from helpers import connectors, events_since
from papr.v1 import device_pb2, hotplug_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu.model import default_geometry
from papr_emu_client import Client, Guest

GEOMETRY = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=9 << 30, memory_slots=32, cpus=1, max_cpus=16)


def core_cycles(client: Client, platform: str, core_id: int, rounds: int) -> None:
    guest = Guest(client.rtas, platform)
    index = 0x10000000 + core_id
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core_id))
    for _ in range(rounds):
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id=f"c{core_id}", spec=spec))
        guest.acquire_drc(index)
        guest.configure_items(index)
        client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id=f"c{core_id}"))
        guest.release_drc(index)


def dimm_cycles(client: Client, platform: str, slot: int, rounds: int) -> None:
    guest = Guest(client.rtas, platform)
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20, slot=slot))
    for _ in range(rounds):
        device = client.hotplug.PlugDevice(
            hotplug_pb2.PlugDeviceRequest(platform=platform, id=f"d{slot}", spec=spec)
        ).device
        for index in device.drc_indexes:
            guest.acquire_drc(index)
            guest.configure_items(index)
        client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id=f"d{slot}"))
        for index in device.drc_indexes:
            guest.release_drc(index)


def test_many_stubs_on_two_platforms(client: Client) -> None:
    platforms = [new_platform(client, GEOMETRY) for _ in range(2)]
    before = {p: client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=p)).platform for p in platforms}
    rounds = 8
    with ThreadPoolExecutor(max_workers=12) as pool:
        jobs = [pool.submit(core_cycles, client, p, core, rounds) for p in platforms for core in (1, 2, 3)]
        jobs += [pool.submit(dimm_cycles, client, p, slot, rounds) for p in platforms for slot in (0, 1, 2)]
        for job in jobs:
            job.result(timeout=120)
    for p in platforms:
        # Every device came and went; every connector is back to empty; the log has no gaps.
        assert [c.device_id for c in connectors(client, p, attached_only=True)] == ["core0", "phb0"]
        events = events_since(client, p, before[p].last_event_sequence)
        assert [e.sequence for e in events] == list(range(before[p].last_event_sequence + 1, events[-1].sequence + 1))
        kinds = [e.WhichOneof("kind") for e in events]
        assert (
            kinds.count("device_added")
            == kinds.count("device_deleted")
            == kinds.count("unplug_requested")
            == 6 * rounds
        )
        # These stubs never fetch event logs: what else is there is the conduct report saying so.
        assert set(kinds) - {"device_added", "device_deleted", "unplug_requested"} <= {"conduct_finding"}


def test_platforms_do_not_block_one_another(client: Client, server: PaprServer) -> None:
    """A call stuck inside one platform (its clock blocks while it publishes an event) holds up that
    platform only."""
    armed, held, release = threading.Event(), threading.Event(), threading.Event()

    def stalling_clock() -> float:
        if armed.is_set():
            held.set()
            release.wait(10)
        return 0.0

    busy = f"busy-{threading.get_ident()}"
    server.platforms.create(busy, default_geometry(), clock=stalling_clock)
    free = new_platform(client)
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
    armed.set()
    plug = threading.Thread(
        target=client.hotplug.PlugDevice, args=(hotplug_pb2.PlugDeviceRequest(platform=busy, spec=spec),)
    )
    plug.start()
    assert held.wait(5), "the plug never reached the platform's clock"
    try:
        reply = client.rtas.GetSensorState(
            rtas_pb2.GetSensorStateRequest(platform=free, sensor_type=9003, sensor_index=0x10000000),
            timeout=2,
        )
        assert (reply.status, reply.state) == (0, 1)
        with pytest.raises(grpc.RpcError) as blocked:
            client.rtas.GetSensorState(
                rtas_pb2.GetSensorStateRequest(platform=busy, sensor_type=9003, sensor_index=0x10000000),
                timeout=0.3,
            )
        assert blocked.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()
        plug.join()
