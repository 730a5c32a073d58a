"""Hotplug event logs: bytes as QEMU 7.2 writes them, FIFO, masks, truncation, interrupts."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import grpc
import pytest

from conftest import new_platform
from helpers import plug, unplug
from papr.v1 import device_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client, Guest, parse_hotplug_event
from papr_emu_client.errorlog import sections

CAPTURE = json.loads((Path(__file__).parent.parent / "docs" / "qemu-7.2" / "fragments.json").read_text())
EPOW, HOTPLUG, ALL = 0x40000000, 0x10000000, 0xFFFFFFFF
VARYING = (slice(0x20, 0x28), slice(0x40, 0x44))  # creation date/time (BCD) and the platform log id


def check_exception(client: Client, platform: str, mask: int = ALL, length: int = 2048) -> tuple[int, bytes]:
    reply = client.rtas.CheckException(
        rtas_pb2.CheckExceptionRequest(platform=platform, vector_offset=0x500, event_mask=mask, buffer_length=length)
    )
    return reply.status, reply.buffer


def drain(client: Client, platform: str, mask: int = ALL) -> list[bytes]:
    logs = []
    while True:
        status, blob = check_exception(client, platform, mask)
        if status == 1:
            assert blob == b""
            return logs
        assert status == 0
        logs.append(blob)


def masked(blob: bytes) -> bytes:
    data = bytearray(blob)
    for part in VARYING:
        data[part] = bytes(part.stop - part.start)
    return bytes(data)


SPECS = {
    "lmb_dimm256": device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)),
    "cpu_core1": device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)),
    "pci_e1000_addr3": device_pb2.DeviceSpec(
        pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_E1000)
    ),
    "pci_virtio_net_addr4": device_pb2.DeviceSpec(
        pci_function=device_pb2.PciFunctionSpec(slot=4, model=device_pb2.PCI_MODEL_VIRTIO_NET)
    ),
    "phb1": device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=1)),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_logs_match_qemu_byte_for_byte(client: Client, platform: str, guest: Guest, name: str) -> None:
    captured = CAPTURE["devices"][name]
    device = plug(client, platform, "dev", SPECS[name])
    [added] = drain(client, platform)
    assert masked(added) == masked(bytes.fromhex(captured["logs_device_add"][0]["hex"]))
    index = device.drc_indexes[0]
    if device.type != device_pb2.DEVICE_TYPE_PCI_FUNCTION:
        guest.acquire_drc(index)
    else:
        guest.set_indicator(9001, index, 1)
    guest.configure_items(index)
    unplug(client, platform, "dev")
    [removed] = drain(client, platform)
    assert masked(removed) == masked(bytes.fromhex(captured["logs_device_del"][0]["hex"]))


def test_log_fields_decoded(client: Client, platform: str) -> None:
    before = time.time()
    plug(client, platform, "dimm", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=3 << 28)))
    plug(client, platform, "core", SPECS["cpu_core1"])
    dimm_log, core_log = drain(client, platform)
    for n, blob in enumerate((dimm_log, core_log)):
        assert len(blob) == 116
        summary, extended_length = struct.unpack_from(">II", blob, 0)
        assert summary == 0x063460E5
        assert summary >> 24 == 6  # version
        assert (summary >> 21) & 7 == 1  # severity: event
        assert (summary >> 19) & 3 == 2  # disposition: not recovered
        assert (summary >> 18) & 1 == 1  # extended log present
        assert (summary >> 12) & 0xF == 6  # initiator: hotplug
        assert summary & 0xFF == 0xE5  # type: hotplug
        assert extended_length == 108
        assert blob[8] == 0x86 and blob[10] == 0x8E and blob[20:24] == b"IBM\0"
        assert [(s.id, s.offset, s.length) for s in sections(blob)] == [
            ("PH", 0x18, 48),
            ("UH", 0x48, 24),
            ("HP", 0x60, 20),
        ]
        assert blob[0x30:0x31] == b"H" and blob[0x33] == 3  # creator hypervisor, 3 sections
        assert struct.unpack_from(">I", blob, 0x40)[0] == n  # PLID: per platform, big-endian (QEMU: unswapped)
        assert blob[0x50] == 0x80  # UH subsystem: hotplug
        assert blob[0x64] == 1  # HP section version
        date, clock = blob[0x20:0x24].hex(), blob[0x24:0x28].hex()
        stamp = time.strptime(date + clock[:6], "%Y%m%d%H%M%S")  # BCD digits read as decimal
        assert abs(time.mktime(stamp) - time.timezone - before) < 5  # UTC, now
    dimm, core = parse_hotplug_event(dimm_log), parse_hotplug_event(core_log)
    assert (dimm.resource, dimm.action, dimm.id_type, dimm.count) == (2, 1, 3, 3)  # pre-CAS: by count
    assert (core.resource, core.action, core.id_type, core.index) == (1, 1, 2, 0x10000001)


def test_fifo_masks_and_truncation(client: Client, platform: str) -> None:
    plug(client, platform, "a", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    plug(client, platform, "b", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    plug(client, platform, "c", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=3)))
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    assert info.pending_rtas_events == 3
    # Before CAS hotplug logs belong to the EPOW source: the hotplug class alone finds nothing.
    assert check_exception(client, platform, HOTPLUG) == (1, b"")
    status, first = check_exception(client, platform, EPOW, length=40)
    assert status == 0 and len(first) == 40  # truncated to the buffer (QEMU writes all 116)
    assert first[:4] == b"\x06\x34\x60\xe5"
    rest = drain(client, platform, EPOW)
    assert [parse_hotplug_event(b).index for b in rest] == [0x10000002, 0x10000003]  # FIFO; the first is gone
    scan = client.rtas.EventScan(rtas_pb2.EventScanRequest(platform=platform, event_mask=ALL, buffer_length=2048))
    assert scan.status == 1


def test_which_requests_queue_logs(client: Client, platform: str, guest: Guest) -> None:
    def pci(slot: int, function: int) -> device_pb2.DeviceSpec:
        return device_pb2.DeviceSpec(
            pci_function=device_pb2.PciFunctionSpec(slot=slot, function=function, model=device_pb2.PCI_MODEL_E1000)
        )

    def events() -> list[tuple[int, int, int, int]]:
        return [(e.resource, e.action, e.index, e.count) for e in map(parse_hotplug_event, drain(client, platform))]

    plug(client, platform, "f1", pci(6, 1))
    assert events() == []  # a non-zero function waits for function 0
    plug(client, platform, "f0", pci(6, 0))
    assert events() == [(5, 1, 0x40000030, 0), (5, 1, 0x40000031, 0)]  # function 0 announces the slot
    guest.set_indicator(9001, 0x40000030, 1)
    unplug(client, platform, "f0")  # f1 never unisolated: released at once, no log for it
    assert events() == [(5, 2, 0x40000030, 0)]

    plug(client, platform, "nic", pci(7, 0))
    events()
    assert unplug(client, platform, "nic").deleted
    assert events() == []  # never unisolated: gone at once, and QEMU queues no remove log

    plug(client, platform, "core", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    guest.acquire_drc(0x10000001)
    events()
    unplug(client, platform, "core")
    unplug(client, platform, "core")  # repeated: QEMU re-sends the remove log
    assert events() == [(1, 2, 0x10000001, 0), (1, 2, 0x10000001, 0)]

    plug(client, platform, "dimm", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=2 << 28)))
    events()
    assert unplug(client, platform, "dimm").deleted
    assert events() == [(2, 2, 0x80000004, 2)]  # released at once, yet the remove log is queued


def test_coldplug_queues_nothing(client: Client) -> None:
    name = new_platform(
        client,
        coldplug=[
            platform_pb2.ColdplugDevice(spec=device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=1 << 28)))
        ],
    )
    assert drain(client, name) == []


def test_interrupts_pulse_and_repulse(client: Client, platform: str) -> None:
    stream = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=platform))
    stream.initial_metadata()
    plug(client, platform, "a", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    plug(client, platform, "b", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    pulse = next(stream)
    assert (pulse.irq, pulse.event_class) == (0x1000, EPOW)  # pre-CAS: the EPOW source
    assert check_exception(client, platform)[0] == 0
    assert next(stream).event_class == EPOW  # one log left: pulsed again
    # A late watcher learns of the pending log at once.
    late = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=platform))
    assert next(late).event_class == EPOW
    drain(client, platform)
    client.rtas.EventScan(rtas_pb2.EventScanRequest(platform=platform, event_mask=ALL))
    stream.cancel()
    late.cancel()


def test_interrupt_stream_ends_when_platform_is_deleted(client: Client) -> None:
    name = new_platform(client)
    stream = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=name))
    stream.initial_metadata()
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
    with pytest.raises(grpc.RpcError) as ended:
        next(stream)
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND
