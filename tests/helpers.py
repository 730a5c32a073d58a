"""Small helpers shared by the tests (state snapshots, event collection)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from papr.v1 import connector_pb2, device_pb2, hotplug_pb2, platform_pb2
from papr_emu_client import Client, Guest
from papr_emu_client.connectors import list_all


def connectors(
    client: Client,
    platform: str,
    type: connector_pb2.DrcType.ValueType = connector_pb2.DRC_TYPE_UNSPECIFIED,
    attached_only: bool = False,
) -> list[connector_pb2.Connector]:
    """Every connector of a platform (papr_emu_client.connectors.list_all), as a list."""
    return list(list_all(client.platforms, platform, type=type, attached_only=attached_only))


def plug(client: Client, platform: str, device_id: str, spec: device_pb2.DeviceSpec) -> device_pb2.Device:
    """HotplugService.PlugDevice; the device as plugged."""
    return client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id=device_id, spec=spec)).device


def unplug(client: Client, platform: str, device_id: str) -> hotplug_pb2.UnplugDeviceResponse:
    """HotplugService.UnplugDevice."""
    return client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id=device_id))


def drain(guest: Guest) -> int:
    """Fetch every queued event log with check-exception, as a guest's interrupt handler does; how many."""
    fetched = 0
    while guest.check_exception(0xFFFFFFFF, 2048)[0] == 0:
        fetched += 1
    return fetched


def connector(client: Client, platform: str, index: int) -> connector_pb2.Connector:
    return client.platforms.GetConnector(platform_pb2.GetConnectorRequest(platform=platform, drc_index=index)).connector


def snapshot(client: Client, platform: str) -> tuple[bytes, ...]:
    """The whole observable state of a platform, for "nothing changed" checks."""
    devices = client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=platform))
    return (
        *(c.SerializeToString() for c in connectors(client, platform)),
        devices.SerializeToString(),
    )


def events_since(client: Client, platform: str, after: int) -> list[hotplug_pb2.Event]:
    """Retained events after a sequence number (replayed through WatchEvents)."""
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    wanted = info.last_event_sequence - after
    if wanted <= 0:
        return []
    stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform, after_sequence=after))
    events = []
    for response in stream:
        events.append(response.event)
        if len(events) == wanted:
            break
    stream.cancel()
    return events


def last_sequence(client: Client, platform: str) -> int:
    return client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform.last_event_sequence


class Watcher:
    """A live WatchEvents stream read on a background thread."""

    def __init__(self, client: Client, platform: str, after: int | None = None) -> None:
        request = hotplug_pb2.WatchEventsRequest(platform=platform)
        if after is not None:
            request.after_sequence = after
        self.call = client.hotplug.WatchEvents(request)
        self.subscribed_after = int(dict(self.call.initial_metadata())["papr-subscribed-after"])
        self.events: list[hotplug_pb2.Event] = []
        self.error: grpc.RpcError | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                with self._changed:
                    self.events.append(response.event)
                    self._changed.notify_all()
        except grpc.RpcError as error:
            with self._changed:
                self.error = error
                self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[hotplug_pb2.Event]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.events) >= count or self.error is not None, timeout)
            return list(self.events)

    def wait_for_end(self, timeout: float = 10.0) -> grpc.RpcError | None:
        self._thread.join(timeout)
        return self.error

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)

    def __iter__(self) -> Iterator[hotplug_pb2.Event]:
        return iter(self.events)
