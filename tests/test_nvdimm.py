"""NVDIMMs through a real server: QEMU 7.2's plug rules and node, the reference guest's add and
remove (Linux's pmem.c), a refused unplug, and the device tree that configure-connector and the
DT export share."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import pytest

from helpers import Watcher, connector, plug, snapshot, unplug
from papr.v1 import connector_pb2, device_pb2, guest_pb2, platform_pb2
from papr_emu_client import Client, Guest, ReferenceGuest
from papr_emu_client.fdt import nodes_by_path, read_dtb

S = connector_pb2
PMEM0, PMEM1 = 0x90000000, 0x90000001
UUID = "01234567-89AB-cdef-0123-456789abcdef"
ISOLATION, ALLOCATION = 9001, 9003


def nvdimm(size: int = 256 << 20, label: int | None = 128 << 10, uuid: str = UUID, **kw: int) -> device_pb2.DeviceSpec:
    spec = device_pb2.NvdimmSpec(size_bytes=size, uuid=uuid, **kw)
    if label is not None:
        spec.label_size_bytes = label
    return device_pb2.DeviceSpec(nvdimm=spec)


def dimm(size: int = 256 << 20) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=size))


# The ibm,pmemory node of a 512 MiB NVDIMM with a 256 KiB label in slot 0, as QEMU 7.2 walks it.
EXPECTED_NODE = [
    ("ibm,cache-flush-required", b""),
    ("ibm,pmem-application", b"operating-system\0"),
    ("ibm,metadata-size", struct.pack(">I", 256 << 10)),
    ("ibm,number-of-blocks", struct.pack(">Q", 2)),
    ("ibm,block-size", struct.pack(">Q", 256 << 20)),
    ("ibm,my-drc-index", struct.pack(">I", PMEM0)),
    ("ibm,unit-guid", UUID.lower().encode() + b"\0"),
    ("ibm,associativity", struct.pack(">5I", 4, 0, 0, 0, 0)),
    ("device_type", b"ibm,pmemory\0"),
    ("compatible", b"ibm,pmemory\0"),
    ("reg", struct.pack(">I", PMEM0)),
]


@pytest.fixture
def stub(client: Client, platform: str) -> Iterator[ReferenceGuest]:
    guest = ReferenceGuest(client, platform)
    guest.start()
    yield guest
    guest.stop()


def test_plug_places_nvdimms_and_dimms_in_one_slot_set_and_address_space(client: Client, platform: str) -> None:
    first = plug(client, platform, "nv1", nvdimm())
    assert list(first.drc_indexes) == [PMEM0] and first.type == device_pb2.DEVICE_TYPE_NVDIMM
    spec = first.spec.nvdimm
    assert (spec.slot, spec.address, spec.label_size_bytes, spec.uuid) == (0, 1 << 30, 128 << 10, UUID.lower())
    # QEMU 7.2 (conformance scenario nvdimm-cycle): the next DIMM takes slot 1 and the range after it.
    after = plug(client, platform, "dimm1", dimm())
    assert (after.spec.dimm.slot, after.spec.dimm.address) == (1, (1 << 30) + (256 << 20))
    assert list(after.drc_indexes) == [0x80000005]
    second = plug(client, platform, "nv2", nvdimm(512 << 20, uuid="11111111-2222-3333-4444-555555555555"))
    assert list(second.drc_indexes) == [0x90000002] and second.spec.nvdimm.address == (1 << 30) + (512 << 20)
    c = connector(client, platform, PMEM0)
    assert (c.device_id, c.state, c.name) == ("nv1", S.DRC_STATE_LOGICAL_UNUSABLE, "PMEM 0")
    assert connector(client, platform, 0x80000004).device_id == ""  # the NVDIMM's range has no LMB


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        (nvdimm(label=None), grpc.StatusCode.INVALID_ARGUMENT, "PAPR requires NVDIMM devices to have label-size set"),
        (nvdimm(label=4096), grpc.StatusCode.INVALID_ARGUMENT, "is required at least 0x20000"),
        (nvdimm(128 << 20), grpc.StatusCode.INVALID_ARGUMENT, "to be a multiple of 256MB"),
        (nvdimm(0), grpc.StatusCode.INVALID_ARGUMENT, "nvdimm.size_bytes"),
        (nvdimm(uuid=""), grpc.StatusCode.INVALID_ARGUMENT, "NVDIMM device requires the uuid to be set"),
        (nvdimm(uuid="00000000-0000-0000-0000-000000000000"), grpc.StatusCode.INVALID_ARGUMENT, "requires the uuid"),
        (nvdimm(uuid="not-a-uuid"), grpc.StatusCode.INVALID_ARGUMENT, "nvdimm.uuid: 'not-a-uuid': must be a UUID"),
        (nvdimm(slot=1), grpc.StatusCode.FAILED_PRECONDITION, "slot 1 is busy"),
        (nvdimm(slot=9), grpc.StatusCode.INVALID_ARGUMENT, "invalid slot# 9, should be less than 4"),
        (nvdimm(address=1 << 30), grpc.StatusCode.FAILED_PRECONDITION, "conflicts with memory device id='dimm0'"),
        (nvdimm(4 << 30), grpc.StatusCode.FAILED_PRECONDITION, "not enough space"),
    ],
)
def test_refused_plugs_change_nothing(
    client: Client, platform: str, spec: device_pb2.DeviceSpec, code: grpc.StatusCode, message: str
) -> None:
    plug(client, platform, "dimm0", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20, slot=1)))
    before = snapshot(client, platform)
    with pytest.raises(grpc.RpcError) as refused:
        plug(client, platform, "nv", spec)
    assert refused.value.code() == code and message in refused.value.details(), refused.value.details()
    assert snapshot(client, platform) == before


def test_guest_configures_the_node_qemu_hands_out_and_the_tree_shows_it(
    client: Client, platform: str, guest: Guest
) -> None:
    plug(client, platform, "nv1", nvdimm(512 << 20, 256 << 10))
    guest.acquire_drc(PMEM0)
    node = guest.configure_connector(PMEM0)
    assert node.name == "ibm,pmemory@90000000" and not node.children
    assert [(name, node.properties[name]) for name in node.property_order] == EXPECTED_NODE
    # One source of truth: the exported tree holds the same node under /ibm,persistent-memory.
    nodes = nodes_by_path(read_dtb(client.device_tree(platform)))
    parent = nodes["/ibm,persistent-memory"]
    assert (parent["device_type"], parent["#address-cells"], parent["#size-cells"]) == (
        b"ibm,persistent-memory\0", struct.pack(">I", 1), struct.pack(">I", 0))  # fmt: skip
    assert list(nodes["/ibm,persistent-memory/ibm,pmemory@90000000"].items()) == EXPECTED_NODE


def test_drconf_memory_leaves_an_nvdimm_range_free(client: Client, platform: str, guest: Guest) -> None:
    plug(client, platform, "nv1", nvdimm())
    plug(client, platform, "dimm1", dimm())
    ov5 = bytearray(24)  # option vector 5: length byte, then drconf memory (byte 2) and drmem v2 (byte 22)
    ov5[0], ov5[2], ov5[22] = 22, 0x20, 0x80
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=platform, option_vector_5=bytes(ov5))
    )
    memory = nodes_by_path(read_dtb(client.device_tree(platform)))["/ibm,dynamic-reconfiguration-memory"]
    value = memory["ibm,dynamic-memory-v2"]
    sets = [struct.unpack_from(">IQIII", value, 4 + 24 * n) for n in range(struct.unpack_from(">I", value)[0])]
    # (count, address, first DRC index, associativity index, flags): the NVDIMM's LMB is a free set.
    assert sets[1:3] == [(1, 1 << 30, 0x80000004, 0xFFFFFFFF, 0), (1, 0x50000000, 0x80000005, 0, 0x108)]


def test_reference_guest_adds_and_removes_an_nvdimm(client: Client, platform: str, stub: ReferenceGuest) -> None:
    watcher = Watcher(client, platform)
    plug(client, platform, "nv1", nvdimm())
    added = stub.wait_for(1)[0]
    assert (added.result, added.detail, added.drc_indexes) == ("done", "ibm,pmemory@90000000", (PMEM0,))
    assert connector(client, platform, PMEM0).state == S.DRC_STATE_LOGICAL_CONFIGURED
    unplug(client, platform, "nv1")  # QEMU 7.2 refuses this (docs/compat.md #17)
    removed = stub.wait_for(2)[1]
    assert (removed.event.resource, removed.event.id_type, removed.result) == (6, 2, "done")
    kinds = [str(e.WhichOneof("kind")) for e in watcher.wait_for(3)]
    assert kinds == ["device_added", "unplug_requested", "device_deleted"]
    c = connector(client, platform, PMEM0)
    assert (c.device_id, c.state) == ("", S.DRC_STATE_LOGICAL_UNUSABLE)
    # The slot and the address range are free again.
    again = plug(client, platform, "nv2", nvdimm())
    assert (again.spec.nvdimm.slot, again.spec.nvdimm.address) == (0, 1 << 30)


def test_unisolate_during_an_nvdimm_unplug_refuses_it(client: Client, platform: str, guest: Guest) -> None:
    plug(client, platform, "nv1", nvdimm())
    guest.acquire_drc(PMEM0)
    guest.configure_connector(PMEM0)
    watcher = Watcher(client, platform)
    unplug(client, platform, "nv1")
    assert guest.set_indicator(ISOLATION, PMEM0, 1) == 0  # the guest refuses: it keeps the device
    events = watcher.wait_for(2)
    assert [str(e.WhichOneof("kind")) for e in events] == ["unplug_requested", "unplug_rejected"]
    assert events[1].unplug_rejected.device_id == "nv1"
    c = connector(client, platform, PMEM0)
    assert (c.device_id, c.state, c.unplug_pending) == ("nv1", S.DRC_STATE_LOGICAL_CONFIGURED, False)


def test_nvdimm_unplug_timeout_is_a_policy_field(client: Client) -> None:
    name = "nvdimm-timeouts"
    timeouts = platform_pb2.UnplugTimeouts(nvdimm_seconds=5)
    created = client.platforms.CreatePlatform(
        platform_pb2.CreatePlatformRequest(name=name, unplug_timeouts=timeouts)
    ).platform
    try:
        assert created.unplug_timeouts.nvdimm_seconds == 5
        with pytest.raises(grpc.RpcError) as refused:
            client.platforms.CreatePlatform(
                platform_pb2.CreatePlatformRequest(
                    name=name + "-bad", unplug_timeouts=platform_pb2.UnplugTimeouts(nvdimm_seconds=-1)
                )
            )
        assert "unplug_timeouts.nvdimm_seconds" in refused.value.details()
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
