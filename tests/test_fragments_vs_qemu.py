"""Configure-connector sequences compared with what QEMU 7.2 returned for the same devices.

The reference data (docs/qemu-7.2/fragments.json) was captured from Debian's QEMU 7.2 by
docs/qemu-7.2/capture.py. Differences allowed here are the ones docs/compat.md lists.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from papr.v1 import device_pb2, hotplug_pb2
from papr_emu_client import CcItem, Client, Guest
from papr_emu_client.constants import DRC_ARRAYS

CAPTURE = json.loads((Path(__file__).parent.parent / "docs" / "qemu-7.2" / "fragments.json").read_text())
DEVICES: dict[str, Any] = CAPTURE["devices"]

SPECS = {
    "cpu_core1": device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)),
    "pci_e1000_addr3": device_pb2.DeviceSpec(
        pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_E1000)
    ),
    "pci_virtio_net_addr4": device_pb2.DeviceSpec(
        pci_function=device_pb2.PciFunctionSpec(slot=4, model=device_pb2.PCI_MODEL_VIRTIO_NET)
    ),
    "phb1": device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=1)),
    "lmb_dimm256": device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)),
}


def qemu_items(name: str) -> list[CcItem]:
    return [
        CcItem(step["rc"], step["name"] or "", bytes.fromhex(step["value_hex"] or ""))
        for step in DEVICES[name]["cc_steps"]
    ]


def drc_table(properties: dict[str, bytes]) -> dict[int, tuple[str, str, int]]:
    """The four parallel arrays as {index: (name, type, power domain)} (QEMU's order is hash order)."""
    count, *indexes = struct.unpack(f">{len(properties['ibm,drc-indexes']) // 4}I", properties["ibm,drc-indexes"])
    names = properties["ibm,drc-names"][4:].split(b"\0")[:count]
    types = properties["ibm,drc-types"][4:].split(b"\0")[:count]
    domains = struct.unpack(f">{count}I", properties["ibm,drc-power-domains"][4:])
    return {i: (n.decode(), t.decode(), d) for i, n, t, d in zip(indexes, names, types, domains, strict=True)}


def ours(client: Client, platform: str, guest: Guest, name: str) -> list[CcItem]:
    device = client.hotplug.PlugDevice(
        hotplug_pb2.PlugDeviceRequest(platform=platform, id="dev", spec=SPECS[name])
    ).device
    index = device.drc_indexes[0]
    assert index == int(DEVICES[name]["drc_index"], 16)
    if device.type != device_pb2.DEVICE_TYPE_PCI_FUNCTION:
        assert guest.sense(index) == (0, 2)
        assert guest.set_indicator(9003, index, 1) == 0
    else:
        assert guest.sense(index) == (0, 1)  # physical: present as soon as plugged
    assert guest.set_indicator(9001, index, 1) == 0
    return guest.configure_items(index)


@pytest.mark.parametrize("name", ["cpu_core1", "pci_e1000_addr3", "pci_virtio_net_addr4"])
def test_same_sequence_as_qemu(client: Client, platform: str, guest: Guest, name: str) -> None:
    assert ours(client, platform, guest, name) == qemu_items(name)


def test_phb_sequence_as_qemu_up_to_array_order(client: Client, platform: str, guest: Guest) -> None:
    mine, theirs = ours(client, platform, guest, "phb1"), qemu_items("phb1")
    assert [(i.status, i.name) for i in mine] == [(i.status, i.name) for i in theirs]
    for a, b in zip(mine, theirs, strict=True):
        if a.name not in DRC_ARRAYS:
            assert a == b, a.name
    props_mine = {i.name: i.value for i in mine if i.status == 3}
    props_theirs = {i.name: i.value for i in theirs if i.status == 3}
    table = drc_table(props_mine)
    assert table == drc_table(props_theirs)
    assert len(table) == 256 and table[0x40010018] == ("C65560", "28", 0xFFFFFFFF)
    assert list(table) == sorted(table)  # papr-emu lists connectors in index order


def test_lmb_sequence_as_qemu_but_true_address(client: Client, platform: str, guest: Guest) -> None:
    mine, theirs = ours(client, platform, guest, "lmb_dimm256"), qemu_items("lmb_dimm256")
    assert theirs[0].name == "memory@800000040000000"  # QEMU 7.2: DRC index x 256 MiB
    assert mine[0].name == "memory@40000000"  # the DIMM's real address (docs/compat.md)
    assert mine[2].value == struct.pack(">QQ", 0x40000000, 256 << 20)
    assert [(i.status, i.name) for i in mine[1:]] == [(i.status, i.name) for i in theirs[1:]]
    assert mine[1] == theirs[1] and mine[3] == theirs[3]
