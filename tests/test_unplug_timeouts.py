"""The unplug timeout policy: per device type, off by default, never on for memory unless asked."""

from __future__ import annotations

import grpc
import pytest

from conftest import new_platform
from helpers import Watcher, connector
from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu.model import CpuCoreParams, DimmRequest, Geometry, Platform, UnplugTimeouts
from papr_emu.model.rtas import ALLOCATION_STATE, ALLOCATION_USABLE, ISOLATION_STATE, UNISOLATE
from papr_emu_client import Client, Guest


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def acquired_platform(timeouts: UnplugTimeouts, clock: FakeClock) -> Platform:
    platform = Platform(
        "t", Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4), unplug_timeouts=timeouts, monotonic=clock
    )
    platform.plug("core1", CpuCoreParams(1))
    platform.plug("dimm", DimmRequest(size=2 << 28))
    for index in (0x10000001, 0x80000004, 0x80000005):
        platform.set_indicator(ALLOCATION_STATE, index, ALLOCATION_USABLE)
        platform.set_indicator(ISOLATION_STATE, index, UNISOLATE)
    return platform


def test_off_by_default_for_every_type() -> None:
    clock = FakeClock()
    platform = acquired_platform(UnplugTimeouts(), clock)
    platform.unplug("core1")
    platform.unplug("dimm")
    clock.now += 10**9
    assert platform.expire_unplugs() == []
    assert platform.device("core1").unplug_pending and platform.device("dimm").unplug_pending


def test_cpu_timeout_cancels_and_memory_stays_pending() -> None:
    clock = FakeClock()
    platform = acquired_platform(UnplugTimeouts(cpu_core=30.0), clock)
    platform.unplug("core1")
    platform.unplug("dimm")
    clock.now += 29.9
    assert platform.expire_unplugs() == []
    clock.now += 0.2
    assert platform.expire_unplugs() == ["core1"]
    core = platform.connector(0x10000001)
    assert (core.device_id, core.unplug_pending) == ("core1", False)
    assert platform.device("dimm").unplug_pending  # memory has no timeout unless asked
    subscription, _ = platform.subscribe_events(after_sequence=platform.info().last_event_sequence - 1)
    event = subscription.next(timeout=0).body  # type: ignore[union-attr]
    assert (event.device_id, event.timeout_seconds) == ("core1", 30.0)  # type: ignore[union-attr]
    # A new unplug request after the timeout starts from scratch.
    platform.unplug("core1")
    assert platform.device("core1").unplug_pending


def test_dimm_timeout_when_asked_restores_released_lmbs() -> None:
    clock = FakeClock()
    platform = acquired_platform(UnplugTimeouts(dimm=5.0), clock)
    for _ in range(5):  # configure both LMBs
        platform.configure_connector((0x80000004).to_bytes(4, "big") + bytes(4092))
        platform.configure_connector((0x80000005).to_bytes(4, "big") + bytes(4092))
    platform.unplug("dimm")
    platform.set_indicator(ISOLATION_STATE, 0x80000004, 0)
    platform.set_indicator(ALLOCATION_STATE, 0x80000004, 0)  # one LMB released
    assert platform.connector(0x80000004).device_id == ""
    clock.now += 6
    assert platform.expire_unplugs() == ["dimm"]
    assert platform.connector(0x80000004).device_id == "dimm"  # whole again, UNUSABLE
    assert platform.connector(0x80000005).unplug_pending is False


def test_timeout_through_the_server(client: Client) -> None:
    name = new_platform(
        client,
        platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=2 << 30, memory_slots=1, cpus=1, max_cpus=2),
        unplug_timeouts=platform_pb2.UnplugTimeouts(cpu_core_seconds=0.3),
    )
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name)).platform
    assert info.unplug_timeouts.HasField("cpu_core_seconds") and not info.unplug_timeouts.HasField("dimm_seconds")
    guest = Guest(client.rtas, name)
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=name, id="core1", spec=spec))
    guest.acquire_drc(0x10000001)
    watcher = Watcher(client, name)
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=name, id="core1"))
    events = watcher.wait_for(2, timeout=5)
    assert [e.WhichOneof("kind") for e in events] == ["unplug_requested", "unplug_timed_out"]
    assert events[1].unplug_timed_out.timeout_seconds == pytest.approx(0.3)
    assert not connector(client, name, 0x10000001).unplug_pending
    watcher.close()


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_timeouts(client: Client, seconds: float) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        client.platforms.CreatePlatform(
            platform_pb2.CreatePlatformRequest(
                name="bad-timeouts", unplug_timeouts=platform_pb2.UnplugTimeouts(phb_seconds=seconds)
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unplug_timeouts.phb_seconds" in refused.value.details()
