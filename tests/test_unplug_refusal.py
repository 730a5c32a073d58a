"""The guest refuses an unplug: by configure-connector (LMB) or by unisolate (logical DRCs)."""

from __future__ import annotations

from helpers import Watcher, connector, drain
from papr.v1 import connector_pb2, device_pb2, hotplug_pb2
from papr_emu_client import Client, Guest

S = connector_pb2
ISO, ALLOC = 9001, 9003
LMBS = [0x80000004, 0x80000005, 0x80000006]


def plug_configured_dimm(client: Client, platform: str, guest: Guest) -> Watcher:
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=3 * (256 << 20)))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="dimm1", spec=spec))
    drain(guest)  # the guest's interrupt handler fetches each log before the DR calls
    for index in LMBS:
        guest.acquire_drc(index)
        guest.configure_items(index)
    watcher = Watcher(client, platform)
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="dimm1"))
    drain(guest)
    assert all(connector(client, platform, i).unplug_pending for i in LMBS)
    return watcher


def assert_dimm_whole_and_not_pending(client: Client, platform: str) -> None:
    for index in LMBS:
        c = connector(client, platform, index)
        assert (c.device_id, c.unplug_pending) == ("dimm1", False), hex(index)
    device = client.hotplug.GetDevice(hotplug_pb2.GetDeviceRequest(platform=platform, id="dimm1")).device
    assert not device.unplug_pending


def test_dimm_refused_by_configure_connector(client: Client, platform: str, guest: Guest) -> None:
    watcher = plug_configured_dimm(client, platform, guest)
    items = guest.configure_items(0x80000005)  # re-adding an LMB (kernels before 5.13)
    assert [i.status for i in items] == [2, 3, 3, 3, 0]  # the node is still replayed
    assert_dimm_whole_and_not_pending(client, platform)
    rejected = watcher.wait_for(2)[1].unplug_rejected
    assert (rejected.device_id, rejected.drc_index) == ("dimm1", 0x80000005)
    assert rejected.signal == hotplug_pb2.REFUSAL_SIGNAL_CONFIGURE_CONNECTOR
    assert guest.set_indicator(ISO, 0x80000004, 0) == -1  # the guard is back: not being unplugged
    assert len(watcher.wait_for(3, timeout=0.3)) == 2
    watcher.close()


def test_dimm_refused_by_unisolate_emits_one_event(client: Client, platform: str, guest: Guest) -> None:
    watcher = plug_configured_dimm(client, platform, guest)
    assert guest.sense(0x80000004) == (0, 1)
    assert guest.set_indicator(ISO, 0x80000004, 1) == 0
    assert_dimm_whole_and_not_pending(client, platform)
    assert guest.set_indicator(ISO, 0x80000005, 1) == 0  # second unisolate: nothing pending, no event
    events = watcher.wait_for(3, timeout=0.3)
    assert [e.WhichOneof("kind") for e in events] == ["unplug_requested", "unplug_rejected"]
    assert events[1].unplug_rejected.signal == hotplug_pb2.REFUSAL_SIGNAL_UNISOLATE
    watcher.close()


def test_partial_release_then_refusal_then_unplug_again(client: Client, platform: str, guest: Guest) -> None:
    watcher = plug_configured_dimm(client, platform, guest)
    guest.release_drc(0x80000004)  # the guest gave one LMB back
    assert connector(client, platform, 0x80000004).device_id == ""
    guest.configure_items(0x80000005)  # ... then refused the rest
    # Unlike QEMU 7.2 (which leaves LMB 4 without a device and later aborts), the DIMM is whole.
    assert_dimm_whole_and_not_pending(client, platform)
    c = connector(client, platform, 0x80000004)
    assert (c.state, c.entity_sense) == (S.DRC_STATE_LOGICAL_UNUSABLE, 2)
    guest.acquire_drc(0x80000004)  # the guest can take it again
    guest.configure_items(0x80000004)
    # And a later unplug works from scratch.
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="dimm1"))
    drain(guest)
    for index in LMBS:
        guest.release_drc(index)
    kinds = [e.WhichOneof("kind") for e in watcher.wait_for(4)]
    assert kinds == ["unplug_requested", "unplug_rejected", "unplug_requested", "device_deleted"]
    watcher.close()


def test_cpu_refused_by_unisolate_and_retried(client: Client, platform: str, guest: Guest) -> None:
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=3))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="core3", spec=spec))
    drain(guest)
    guest.acquire_drc(0x10000003)
    guest.configure_items(0x10000003)
    watcher = Watcher(client, platform)
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="core3"))
    drain(guest)
    assert guest.set_indicator(ISO, 0x10000003, 1) == 0  # "CPU busy"
    assert not connector(client, platform, 0x10000003).unplug_pending
    events = watcher.wait_for(2)
    assert events[1].unplug_rejected.device_id == "core3"
    # Retried: this time the guest lets it go.
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="core3"))
    drain(guest)
    guest.release_drc(0x10000003)
    assert watcher.wait_for(4)[3].WhichOneof("kind") == "device_deleted"
    watcher.close()
