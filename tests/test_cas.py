"""CAS: option vector 5, what it changes (logs, tree), and the drconf and drc-info encodings."""

from __future__ import annotations

import struct

import grpc
import pytest

from conftest import new_platform
from helpers import Watcher, connector
from papr.v1 import connector_pb2, device_pb2, guest_pb2, hotplug_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client, Guest, parse_hotplug_event
from papr_emu_client.fdt import read_dtb

GiB = 1 << 30


def vector(*bits: tuple[int, int], length: int = 24) -> bytes:
    """Option vector 5 with the given (byte, mask) bits: byte 0 is the length byte."""
    data = bytearray(length)
    data[0] = length - 2
    for byte, mask in bits:
        data[byte] |= mask
    return bytes(data)


HP_EVT, DRCONF, DRMEM_V2, DRC_INFO = (6, 0x04), (2, 0x20), (22, 0x80), (22, 0x40)


def cas(client: Client, platform: str, ov5: bytes) -> guest_pb2.NegotiatedOptions:
    return client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=platform, option_vector_5=ov5)
    ).options


def tree(client: Client, platform: str):  # type: ignore[no-untyped-def]
    return read_dtb(client.device_tree(platform))


def worked_example(client: Client) -> str:
    """-m 4G,slots=4,maxmem=8G with one 1 GiB DIMM at 4 GiB on node 0 (papr-drc.md 7.2)."""
    return new_platform(
        client,
        platform_pb2.Geometry(memory_bytes=4 * GiB, max_memory_bytes=8 * GiB, memory_slots=4),
        coldplug=[
            platform_pb2.ColdplugDevice(
                id="dimm0", spec=device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=GiB))
            )
        ],
    )


def test_dynamic_memory_v1_worked_example(client: Client) -> None:
    name = worked_example(client)
    assert "ibm,dynamic-reconfiguration-memory" not in tree(client, name).children  # pre-CAS
    options = cas(client, name, vector(HP_EVT, DRCONF))
    assert (options.negotiated, options.hotplug_events, options.drconf_memory, options.dynamic_memory_v2) == (
        True,
        True,
        True,
        False,
    )
    drconf = tree(client, name).children["ibm,dynamic-reconfiguration-memory"]
    assert "ibm,dynamic-memory-v2" not in drconf.properties
    v1 = drconf.properties["ibm,dynamic-memory"]
    assert len(v1) == 772
    expected = struct.pack(">I", 32)
    for k in range(16):
        expected += struct.pack(">QIIII", k << 28, 0, 0, 0xFFFFFFFF, 0xA0)
    for k in range(4):
        expected += struct.pack(">QIIII", 4 * GiB + (k << 28), 0x80000010 + k, 0, 0, 0x08)
    for k in range(12):
        expected += struct.pack(">QIIII", 5 * GiB + (k << 28), 0x80000014 + k, 0, 0xFFFFFFFF, 0)
    assert v1 == expected
    assert drconf.properties["ibm,lmb-size"] == struct.pack(">Q", 256 << 20)
    assert drconf.cells("ibm,associativity-lookup-arrays") == [1, 4, 0, 0, 0, 0]
    assert drconf.cells("ibm,memory-flags-mask") == [0xFF]
    assert drconf.cells("ibm,memory-preservation-time") == [0]


def test_dynamic_memory_v2_worked_example(client: Client) -> None:
    name = worked_example(client)
    cas(client, name, vector(HP_EVT, DRCONF, DRMEM_V2))
    drconf = tree(client, name).children["ibm,dynamic-reconfiguration-memory"]
    assert "ibm,dynamic-memory" not in drconf.properties
    assert drconf.properties["ibm,dynamic-memory-v2"] == bytes.fromhex(
        "00000003"
        "00000010"
        "0000000000000000"
        "00000000"
        "ffffffff"
        "000000a0"
        "00000004"
        "0000000100000000"
        "80000010"
        "00000000"
        "00000108"
        "0000000c"
        "0000000140000000"
        "80000014"
        "ffffffff"
        "00000000"
    )


def parse_drc_info(value: bytes) -> list[tuple[str, str, int, int, int, int, int]]:
    """ibm,drc-info written from LoPAR: count, then per record two NUL-terminated strings and five
    unaligned cells (index start, name suffix start, number of elements, increment, power domain)."""
    (count,) = struct.unpack_from(">I", value, 0)
    offset, records = 4, []
    for _ in range(count):
        end = value.index(b"\0", offset)
        drc_type = value[offset:end].decode()
        offset = end + 1
        end = value.index(b"\0", offset)
        prefix = value[offset:end].decode()
        offset = end + 1
        start, suffix, number, increment, domain = struct.unpack_from(">IIIIi", value, offset)
        offset += 20
        records.append((drc_type, prefix, start, suffix, number, increment, domain))
    assert offset == len(value), "trailing bytes after the last record"
    return records


def expand(records: list[tuple[str, str, int, int, int, int, int]]) -> dict[int, tuple[str, str]]:
    """Every connector a record set describes (Linux: last index = start + (n - 1) * increment)."""
    return {
        start + n * inc: (f"{prefix}{suffix + n * inc}", drc_type)
        for drc_type, prefix, start, suffix, number, inc, _ in records
        for n in range(number)
    }


def test_drc_info_replaces_the_arrays(client: Client) -> None:
    name = new_platform(
        client,
        platform_pb2.Geometry(
            memory_bytes=GiB, max_memory_bytes=4 * GiB, memory_slots=2, cpus=2, max_cpus=8, threads_per_core=2
        ),
    )
    before = tree(client, name)
    assert "ibm,drc-indexes" in before.properties and "ibm,drc-info" not in before.properties
    cas(client, name, vector(HP_EVT, DRCONF, DRC_INFO))
    after = tree(client, name)
    for node in (after, after.children["cpus"], after.children["pci@800000020000000"]):
        assert "ibm,drc-info" in node.properties
        assert not any(k.startswith("ibm,drc-") and k != "ibm,drc-info" for k in node.properties), "never both"
    root_records = parse_drc_info(after.properties["ibm,drc-info"])
    assert root_records == [
        ("PHB", "PHB ", 0x20000000, 0, 31, 1, -1),
        ("MEM", "LMB ", 0x80000004, 4, 12, 1, -1),
        ("PMEM", "PMEM ", 0x90000000, 0, 2, 1, -1),
    ]
    assert parse_drc_info(after.children["cpus"].properties["ibm,drc-info"]) == [
        ("CPU", "CPU ", 0x10000000, 0, 4, 2, -1)
    ]
    # The records describe exactly the connectors the arrays listed before CAS.
    for node_before, node_after in ((before, after), (before.children["cpus"], after.children["cpus"])):
        indexes = node_before.cells("ibm,drc-indexes")[1:]
        names = [n.decode() for n in node_before.properties["ibm,drc-names"][4:].split(b"\0")[:-1]]
        types = [t.decode() for t in node_before.properties["ibm,drc-types"][4:].split(b"\0")[:-1]]
        assert expand(parse_drc_info(node_after.properties["ibm,drc-info"])) == {
            i: (n, t) for i, n, t in zip(indexes, names, types, strict=True)
        }


def test_cas_switches_event_routing_and_dimm_identifiers(client: Client, platform: str) -> None:
    def plug_dimm(device_id: str) -> None:
        client.hotplug.PlugDevice(
            hotplug_pb2.PlugDeviceRequest(
                platform=platform,
                id=device_id,
                spec=device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=2 << 28)),
            )
        )

    def check(mask: int) -> rtas_pb2.CheckExceptionResponse:
        return client.rtas.CheckException(
            rtas_pb2.CheckExceptionRequest(platform=platform, event_mask=mask, buffer_length=2048)
        )

    plug_dimm("before")  # pre-CAS: by count, on the EPOW source
    assert check(0x10000000).status == 1
    event = parse_hotplug_event(check(0x40000000).buffer)
    assert (event.id_type, event.count) == (3, 2)
    cas(client, platform, vector(HP_EVT))
    plug_dimm("after")  # post-CAS: count-indexed, on the hot-plug source
    assert check(0x40000000).status == 1
    event = parse_hotplug_event(check(0x10000000).buffer)
    assert (event.id_type, event.count, event.index) == (4, 2, 0x80000006)


def test_cas_completes_pending_plugs_and_unplugs_and_drops_logs(client: Client, platform: str, guest: Guest) -> None:
    spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="pending-plug", spec=spec))
    spec2 = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="pending-unplug", spec=spec2))
    guest.acquire_drc(0x10000002)
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="pending-unplug"))
    watcher = Watcher(client, platform)
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    assert info.pending_rtas_events == 3 and not info.options.negotiated
    cas(client, platform, vector(HP_EVT))
    assert connector(client, platform, 0x10000001).state == connector_pb2.DRC_STATE_LOGICAL_CONFIGURED
    c = connector(client, platform, 0x10000002)
    assert (c.device_id, c.state) == ("", connector_pb2.DRC_STATE_LOGICAL_UNUSABLE)
    assert watcher.wait_for(1)[0].device_deleted.device_id == "pending-unplug"
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    assert info.pending_rtas_events == 0 and info.options.hotplug_events
    assert "PowerPC,POWER9@1" in tree(client, platform).children["cpus"].children
    watcher.close()


@pytest.mark.parametrize("ov5", [b"", b"\x05", b"\x05\x00\x00", b"\x00\x00\x00"])
def test_bad_vectors(client: Client, platform: str, ov5: bytes) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        cas(client, platform, ov5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "option_vector_5" in refused.value.details()
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    assert not info.options.negotiated
    with pytest.raises(grpc.RpcError) as missing:
        cas(client, "nope", vector(HP_EVT))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("bits", "refused"),
    [
        (None, False),  # no CAS yet: the guest will learn of it at CAS
        ([HP_EVT, DRCONF], False),  # the hot-plug event source: the guest is told
        ([DRCONF], True),  # a guest without it cannot be told (QEMU's spapr_memory_hot_unplug_supported)
        ([], False),  # an empty vector: QEMU treats it as no CAS
    ],
)
def test_dimm_unplug_needs_the_hot_plug_event_source_after_cas(
    client: Client, platform: str, bits: list[tuple[int, int]] | None, refused: bool
) -> None:
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=2 << 28))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="d", spec=spec))
    if bits is not None:
        cas(client, platform, vector(*bits))
    before = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    request = hotplug_pb2.UnplugDeviceRequest(platform=platform, id="d")
    if refused:
        with pytest.raises(grpc.RpcError) as caught:
            client.hotplug.UnplugDevice(request)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == "Memory hot unplug not supported for this guest"
        after = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
        assert after == before  # nothing changed, nothing queued
        # A CPU core unplugs either way (QEMU checks memory only).
        core = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="c", spec=core))
        client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="c"))
    else:
        client.hotplug.UnplugDevice(request)
