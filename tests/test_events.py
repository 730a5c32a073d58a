"""WatchEvents: gap-free delivery, replay, slow watchers, platform deletion."""

from __future__ import annotations

import grpc
import pytest

from conftest import new_platform
from helpers import Watcher, events_since, last_sequence
from papr.v1 import device_pb2, hotplug_pb2, interrupt_pb2, platform_pb2
from papr_emu import PaprServer
from papr_emu.model import CpuCoreParams, Platform
from papr_emu_client import Client


def churn(server: PaprServer, platform: str, cycles: int) -> None:
    """Plug and unplug a core the guest never acquires: two events per cycle, fast (in-process).

    The guest reads the two hotplug logs each cycle queues, as a guest would: unread ones are
    bounded (limits.queued_event_logs).
    """
    model = server.platforms.get(platform)
    for _ in range(cycles):
        model.plug("churn", CpuCoreParams(1))
        assert model.unplug("churn").deleted
        assert [model.check_exception(0xFFFFFFFF, 0)[0] for _ in range(2)] == [0, 0]


def test_events_are_gap_free_and_ordered(client: Client, server: PaprServer, platform: str) -> None:
    watcher = Watcher(client, platform)
    churn(server, platform, 50)
    events = watcher.wait_for(100)
    assert [e.sequence for e in events] == list(range(watcher.subscribed_after + 1, watcher.subscribed_after + 101))
    assert [e.WhichOneof("kind") for e in events[:2]] == ["device_added", "device_deleted"]
    assert all(e.platform == platform for e in events)
    watcher.close()


def test_replay_after_sequence(client: Client, server: PaprServer, platform: str) -> None:
    boot = events_since(client, platform, 0)
    assert [e.device_added.device.id for e in boot] == ["core0", "phb0"]  # coldplugged devices
    assert not any(e.device_added.device.hotplugged for e in boot)
    churn(server, platform, 3)
    replayed = events_since(client, platform, 2)
    assert [e.sequence for e in replayed] == [3, 4, 5, 6, 7, 8]
    watcher = Watcher(client, platform, after=5)
    assert [e.sequence for e in watcher.wait_for(3)] == [6, 7, 8]
    churn(server, platform, 1)
    assert [e.sequence for e in watcher.wait_for(5)] == [6, 7, 8, 9, 10]
    watcher.close()


def test_after_sequence_out_of_range(client: Client, server: PaprServer, platform: str) -> None:
    with pytest.raises(grpc.RpcError) as ahead:
        list(client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform, after_sequence=99)))
    assert ahead.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "after_sequence" in ahead.value.details()
    churn(server, platform, 2100)  # more than the 4096 retained
    with pytest.raises(grpc.RpcError) as old:
        list(client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform, after_sequence=0)))
    assert old.value.code() == grpc.StatusCode.OUT_OF_RANGE and "no longer retained" in old.value.details()


def test_slow_watcher_is_cut_off_and_resumes_without_loss(client: Client, server: PaprServer, platform: str) -> None:
    stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform))
    start = int(dict(stream.initial_metadata())["papr-subscribed-after"])
    churn(server, platform, 2000)  # 4000 events while the watcher reads nothing
    received = []
    with pytest.raises(grpc.RpcError) as cut:
        for response in stream:
            received.append(response.event.sequence)
    assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    last = received[-1]
    assert f"after_sequence={last}" in cut.value.details()
    assert received == list(range(start + 1, last + 1))
    rest = events_since(client, platform, last)
    assert [e.sequence for e in rest] == list(range(last + 1, start + 4001))


def test_deleting_the_platform_ends_its_streams(client: Client) -> None:
    name = new_platform(client)
    watcher = Watcher(client, name)
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
    error = watcher.wait_for_end()
    assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND
    assert "deleted" in error.details()


def test_management_event_payloads(client: Client, platform: str) -> None:
    watcher = Watcher(client, platform)
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20, slot=2))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="m", spec=spec))
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="m"))
    added, deleted = watcher.wait_for(2)
    device = added.device_added.device
    assert (device.id, device.type, device.spec.dimm.slot, device.spec.dimm.address) == (
        "m",
        device_pb2.DEVICE_TYPE_DIMM,
        2,
        1 << 30,
    )
    assert deleted.device_deleted.released_by_drc_index == 0  # completed inside the request
    assert deleted.time.seconds >= added.time.seconds > 0
    assert last_sequence(client, platform) == deleted.sequence
    watcher.close()


@pytest.mark.parametrize("stream", ["WatchEvents", "WatchInterrupts"])
def test_a_stream_opened_as_its_platform_is_deleted_ends_at_once(
    client: Client, server: PaprServer, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    """The delete lands between the servicer's platform lookup and its subscription (a hook makes
    the race happen every time): the stream must end with NOT_FOUND, not wait forever."""
    name = new_platform(client)
    method = "subscribe_events" if stream == "WatchEvents" else "watch_interrupts"
    subscribe = getattr(Platform, method)

    def deleted_first(self: Platform, *args: object) -> object:
        server.platforms.delete(self.name)
        return subscribe(self, *args)

    monkeypatch.setattr(Platform, method, deleted_first)
    if stream == "WatchEvents":
        call = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=name), timeout=10)
    else:
        call = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=name), timeout=10)
    with pytest.raises(grpc.RpcError) as ended:
        list(call)
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND, ended.value.details()
    assert "was deleted" in (ended.value.details() or "")
