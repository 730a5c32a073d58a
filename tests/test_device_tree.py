"""The exported device tree: readable by dtc and libfdt, DR properties byte by byte,
the same nodes configure-connector hands out, and QEMU 7.2's values where they overlap."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import libfdt
import pytest

from conftest import new_platform
from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu_client import Client, Guest
from papr_emu_client.fdt import FdtNode, read_dtb

QEMU = read_dtb((Path(__file__).parent.parent / "docs" / "qemu-7.2" / "default-pre-cas.dtb").read_bytes())


def dtb(client: Client, platform: str) -> bytes:
    return client.device_tree(platform)


def arrays(indexes: list[int], names: list[str], types: list[str]) -> dict[str, bytes]:
    count = struct.pack(">I", len(indexes))
    return {
        "ibm,drc-indexes": count + struct.pack(f">{len(indexes)}I", *indexes),
        "ibm,drc-names": count + b"".join(n.encode() + b"\0" for n in names),
        "ibm,drc-types": count + b"".join(t.encode() + b"\0" for t in types),
        "ibm,drc-power-domains": count + b"\xff\xff\xff\xff" * len(indexes),
    }


def dr_props(node: FdtNode) -> dict[str, bytes]:
    return {k: v for k, v in node.properties.items() if k.startswith("ibm,drc-")}


def test_dtc_and_libfdt_read_it(client: Client, platform: str) -> None:
    blob = dtb(client, platform)
    fdt = libfdt.Fdt(blob)
    assert fdt.version() == 17 and fdt.totalsize() == len(blob)
    assert fdt.path_offset("/cpus/PowerPC,POWER9@0") > 0
    assert fdt.getprop(fdt.path_offset("/rtas"), "set-indicator").as_uint32() == 0x201A
    if shutil.which("dtc") is None:
        pytest.fail("dtc (device-tree-compiler) is not installed; .ci/run installs it")
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", "-", "-"], input=blob, capture_output=True, timeout=30)
    assert dts.returncode == 0, dts.stderr.decode()
    text = dts.stdout.decode()
    assert "ibm,configure-connector = <0x201e>;" in text
    assert "ibm,my-drc-index = <0x10000000>;" in text
    # And back: dtc compiles its own output to the same tree.
    again = subprocess.run(
        ["dtc", "-I", "dts", "-O", "dtb", "-o", "-", "-"], input=dts.stdout, capture_output=True, timeout=30
    )
    assert again.returncode == 0 and read_dtb(again.stdout) == read_dtb(blob)


def test_dr_properties_byte_by_byte(client: Client, platform: str) -> None:
    root = read_dtb(dtb(client, platform))
    phbs, lmbs, pmems = range(31), range(4, 16), range(4)
    assert dr_props(root) == arrays(
        [0x20000000 + n for n in phbs] + [0x80000000 + n for n in lmbs] + [0x90000000 + n for n in pmems],
        [f"PHB {n}" for n in phbs] + [f"LMB {n}" for n in lmbs] + [f"PMEM {n}" for n in pmems],
        ["PHB"] * 31 + ["MEM"] * 12 + ["PMEM"] * 4,
    )
    cpus = root.children["cpus"]
    assert dr_props(cpus) == arrays([0x10000000 + n for n in range(4)], [f"CPU {n}" for n in range(4)], ["CPU"] * 4)
    phb0 = root.children["pci@800000020000000"]
    assert dr_props(phb0) == arrays([0x40000000 + n for n in range(256)], [f"C{n}" for n in range(256)], ["28"] * 256)
    assert phb0.cells("ibm,my-drc-index") == [0x20000000]
    assert cpus.children["PowerPC,POWER9@0"].cells("ibm,my-drc-index") == [0x10000000]
    # The same connectors as QEMU 7.2's boot tree, whose arrays are in hash order.
    for node, qemu in ((root, QEMU), (cpus, QEMU.children["cpus"]), (phb0, QEMU.children["pci@800000020000000"])):
        ours = dict(
            zip(node.cells("ibm,drc-indexes")[1:], node.properties["ibm,drc-names"][4:].split(b"\0"), strict=False)
        )
        theirs = dict(
            zip(qemu.cells("ibm,drc-indexes")[1:], qemu.properties["ibm,drc-names"][4:].split(b"\0"), strict=False)
        )
        assert ours == theirs


def test_same_values_as_qemu_where_they_overlap(client: Client, platform: str) -> None:
    root = read_dtb(dtb(client, platform))
    for name in ("rtas", "event-sources"):
        ours, theirs = root.children[name], QEMU.children[name]
        common = {k for k in theirs.properties if k in ours.properties}
        assert {k: ours.properties[k] for k in common} == {k: theirs.properties[k] for k in common}
    rtas = root.children["rtas"]
    assert {
        k for k, v in QEMU.children["rtas"].properties.items() if len(v) == 4 and v[:2] == b"\0\0" and v[2] == 0x20
    } <= set(rtas.properties)
    assert rtas.properties["ibm,lrdr-capacity"] == QEMU.children["rtas"].properties["ibm,lrdr-capacity"]
    assert root.children["event-sources"] == QEMU.children["event-sources"]
    assert root.children["cpus"].children["PowerPC,POWER9@0"] == QEMU.children["cpus"].children["PowerPC,POWER9@0"]
    assert root.children["memory@0"] == QEMU.children["memory@0"]
    ours_phb, theirs_phb = root.children["pci@800000020000000"], QEMU.children["pci@800000020000000"]
    common = {k for k in theirs_phb.properties if k in ours_phb.properties and not k.startswith("ibm,drc-")}
    assert len(common) >= 20
    assert {k: ours_phb.properties[k] for k in common} == {k: theirs_phb.properties[k] for k in common}


def test_tree_nodes_are_the_configure_connector_nodes(client: Client, platform: str, guest: Guest) -> None:
    for device_id, spec in (
        ("core3", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=3))),
        (
            "nic",
            device_pb2.DeviceSpec(
                pci_function=device_pb2.PciFunctionSpec(slot=2, function=0, model=device_pb2.PCI_MODEL_E1000)
            ),
        ),
        ("phb5", device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=5))),
    ):
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id=device_id, spec=spec))
    root = read_dtb(dtb(client, platform))
    guest.acquire_drc(0x10000003)
    cpu = guest.configure_connector(0x10000003)
    in_tree = root.children["cpus"].children["PowerPC,POWER9@3"]
    assert {k: v for k, v in cpu.properties.items() if k != "name"} == in_tree.properties
    guest.set_indicator(9001, 0x40000010, 1)
    nic = guest.configure_connector(0x40000010)
    assert root.children["pci@800000020000000"].children["ethernet@2"].properties == nic.properties
    guest.acquire_drc(0x20000005)
    phb = guest.configure_connector(0x20000005)
    assert {k: v for k, v in phb.properties.items() if k != "name"} == root.children["pci@800000020000005"].properties
    # A device whose unplug is pending is not in the boot tree (a reset would complete the unplug).
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="core3"))
    assert "PowerPC,POWER9@3" not in read_dtb(dtb(client, platform)).children["cpus"].children


def test_unknown_platform(client: Client) -> None:
    import grpc

    with pytest.raises(grpc.RpcError) as missing:
        dtb(client, "nope")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_threads_and_big_geometry(client: Client) -> None:
    name = new_platform(
        client,
        platform_pb2.Geometry(
            memory_bytes=4 << 30, max_memory_bytes=1 << 40, memory_slots=8, cpus=2, max_cpus=8, threads_per_core=2
        ),
    )
    root = read_dtb(dtb(client, name))
    assert root.children["cpus"].cells("ibm,drc-indexes") == [4, 0x10000000, 0x10000002, 0x10000004, 0x10000006]
    core = root.children["cpus"].children["PowerPC,POWER9@0"]
    assert core.cells("ibm,ppc-interrupt-server#s") == [0, 1]
    assert root.children["rtas"].cells("ibm,lrdr-capacity") == [0x100, 0, 0, 0x10000000, 4]
    assert root.cells("ibm,drc-indexes")[0] == 31 + 4080 + 8
