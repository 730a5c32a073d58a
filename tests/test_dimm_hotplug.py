"""A full DIMM hot-add and hot-unplug, through a real server, byte by byte."""

from __future__ import annotations

import struct

from helpers import Watcher, connector, drain, last_sequence
from papr.v1 import connector_pb2, device_pb2, hotplug_pb2, rtas_pb2
from papr_emu_client import Client, Guest, new_work_area

LMB = 256 << 20
ISOLATION, ALLOCATION, SENSE = 9001, 9003, 9003


def plug_dimm(client: Client, platform: str, size: int, device_id: str = "dimm1") -> device_pb2.Device:
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=size))
    return client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id=device_id, spec=spec)).device


def expected_lmb_items(address: int) -> list[tuple[int, str, bytes]]:
    return [
        (2, f"memory@{address:x}", b""),
        (3, "ibm,associativity", struct.pack(">5I", 4, 0, 0, 0, 0)),
        (3, "reg", struct.pack(">QQ", address, LMB)),
        (3, "device_type", b"memory\0"),
        (0, "", b""),
    ]


def configure_byte_by_byte(guest: Guest, index: int, expected: list[tuple[int, str, bytes]]) -> None:
    """Walk configure-connector and check every byte QEMU 7.2 would write (and none else)."""
    area = bytearray(new_work_area(index))
    area[0x1000 - 4 :] = b"\xde\xad\xbe\xef"  # guest bytes past the data must survive
    for status_expected, name, value in expected:
        status, out = guest.configure_step(bytes(area))
        assert status == status_expected
        reference = bytearray(area)
        if status == 2:
            struct.pack_into(">I", reference, 8, 0x14)
            encoded = name.encode() + b"\0"
            reference[0x14 : 0x14 + len(encoded)] = encoded
        elif status == 3:
            encoded = name.encode() + b"\0"
            value_offset = 0x14 + len(encoded)
            struct.pack_into(">III", reference, 8, 0x14, len(value), value_offset)
            reference[0x14:value_offset] = encoded
            reference[value_offset : value_offset + len(value)] = value
        assert len(out) == 4096
        assert out == bytes(reference), f"work area differs after status {status} ({name})"
        area = bytearray(out)


def test_dimm_hot_add_and_unplug(client: Client, platform: str, guest: Guest) -> None:
    watcher = Watcher(client, platform)
    before = watcher.subscribed_after
    dimm = plug_dimm(client, platform, 1 << 30)
    assert list(dimm.drc_indexes) == [0x80000004, 0x80000005, 0x80000006, 0x80000007]
    assert dimm.spec.dimm.address == 1 << 30 and dimm.spec.dimm.slot == 0 and dimm.hotplugged
    added = watcher.wait_for(1)[0]
    assert added.sequence == before + 1
    assert added.WhichOneof("kind") == "device_added"
    assert list(added.device_added.device.drc_indexes) == list(dimm.drc_indexes)

    for n, index in enumerate(dimm.drc_indexes):
        c = connector(client, platform, index)
        assert c.state == connector_pb2.DRC_STATE_LOGICAL_UNUSABLE and c.device_id == "dimm1"
        assert guest.sense(index) == (0, 2)
        assert guest.set_indicator(ALLOCATION, index, 1) == 0
        assert connector(client, platform, index).state == connector_pb2.DRC_STATE_LOGICAL_AVAILABLE
        assert guest.sense(index) == (0, 1)
        assert guest.set_indicator(ISOLATION, index, 1) == 0
        configure_byte_by_byte(guest, index, expected_lmb_items((1 << 30) + n * LMB))
        assert connector(client, platform, index).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED

    # Without an unplug pending, the LMB isolate guard refuses with -1 and changes nothing.
    assert guest.set_indicator(ISOLATION, 0x80000004, 0) == -1
    assert connector(client, platform, 0x80000004).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED

    outcome = client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="dimm1"))
    assert not outcome.deleted and outcome.device.unplug_pending
    requested = watcher.wait_for(2)[1]
    assert requested.unplug_requested.device_id == "dimm1"
    assert list(requested.unplug_requested.drc_indexes) == list(dimm.drc_indexes)
    for index in dimm.drc_indexes:
        assert connector(client, platform, index).unplug_pending
    assert drain(guest) == 2  # the add and the remove log, fetched before the remove starts

    for n, index in enumerate(dimm.drc_indexes):
        assert guest.sense(index) == (0, 1)
        # A pending unplug: the guest cannot re-acquire (usable is a no-op here, CONFIGURED).
        assert guest.set_indicator(ISOLATION, index, 0) == 0
        assert guest.set_indicator(ALLOCATION, index, 0) == 0
        c = connector(client, platform, index)
        assert c.state == connector_pb2.DRC_STATE_LOGICAL_UNUSABLE and not c.unplug_pending
        assert c.device_id == ""
        if n < 3:
            assert len(watcher.wait_for(3, timeout=0.2)) == 2  # no DEVICE_DELETED yet
    deleted = watcher.wait_for(3)[2]
    assert deleted.device_deleted.device_id == "dimm1"
    assert deleted.device_deleted.released_by_drc_index == 0x80000007
    assert list(deleted.device_deleted.drc_indexes) == list(dimm.drc_indexes)
    assert last_sequence(client, platform) == before + 3
    watcher.close()


def test_unplug_of_never_acquired_dimm_is_immediate(client: Client, platform: str, guest: Guest) -> None:
    plug_dimm(client, platform, 2 * LMB)
    outcome = client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="dimm1"))
    assert outcome.deleted
    assert guest.sense(0x80000004) == (0, 2)
    assert guest.set_indicator(ALLOCATION, 0x80000004, 1) == -3  # empty again


def test_configure_connector_resumes_and_replays(client: Client, platform: str, guest: Guest) -> None:
    plug_dimm(client, platform, LMB)
    guest.acquire_drc(0x80000004)
    first = guest.configure_step(new_work_area(0x80000004))
    # A fresh work area in mid-sequence resumes where the connector's cursor is.
    second = guest.configure_step(new_work_area(0x80000004))
    assert first[0] == 2 and second[0] == 3
    assert connector(client, platform, 0x80000004).configure_in_progress
    items = guest.configure_items(0x80000004)
    assert [i.status for i in items] == [3, 3, 0]
    # After completion a new loop replays the whole fragment.
    replay = guest.configure_items(0x80000004)
    assert [(i.status, i.name) for i in replay][:2] == [(2, "memory@40000000"), (3, "ibm,associativity")]
    assert connector(client, platform, 0x80000004).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED


def test_configure_connector_on_unacquired_lmb_is_not_configurable(client: Client, platform: str, guest: Guest) -> None:
    plug_dimm(client, platform, LMB)
    assert guest.configure_step(new_work_area(0x80000004))[0] == -9003
    guest.set_indicator(ALLOCATION, 0x80000004, 1)
    assert guest.configure_step(new_work_area(0x80000004))[0] == -9003  # AVAILABLE
    assert guest.configure_step(new_work_area(0x80000010))[0] == -3  # no such connector
    area = new_work_area(0x80000004)
    reply = client.rtas.ConfigureConnector(rtas_pb2.ConfigureConnectorRequest(platform=platform, work_area=area))
    assert reply.work_area == area  # refusals write nothing
