"""Connector tables for QEMU-like geometries, as QEMU 7.2 builds them."""

from __future__ import annotations

from pathlib import Path

from conftest import new_platform
from helpers import connectors
from papr.v1 import connector_pb2, platform_pb2
from papr_emu_client import Client, Guest
from papr_emu_client.connectors import list_all
from papr_emu_client.fdt import read_dtb

S = connector_pb2
QEMU_DTB = read_dtb((Path(__file__).parent.parent / "docs" / "qemu-7.2" / "default-pre-cas.dtb").read_bytes())


def test_default_geometry_matches_qemu(client: Client, platform: str, guest: Guest) -> None:
    everything = connectors(client, platform)
    by_type: dict[int, list[connector_pb2.Connector]] = {}
    for c in everything:
        by_type.setdefault(c.type, []).append(c)
    cpu = by_type[S.DRC_TYPE_CPU]
    assert [(c.index, c.name, c.type_name) for c in cpu] == [(0x10000000 + n, f"CPU {n}", "CPU") for n in range(4)]
    lmb = by_type[S.DRC_TYPE_LMB]
    assert [(c.index, c.name, c.type_name) for c in lmb] == [(0x80000000 + n, f"LMB {n}", "MEM") for n in range(4, 16)]
    phb = by_type[S.DRC_TYPE_PHB]
    assert [(c.index, c.name) for c in phb] == [(0x20000000 + n, f"PHB {n}") for n in range(31)]
    pmem = by_type[S.DRC_TYPE_PMEM]
    assert [(c.index, c.name, c.type_name) for c in pmem] == [(0x90000000 + n, f"PMEM {n}", "PMEM") for n in range(4)]
    pci = by_type[S.DRC_TYPE_PCI]
    assert [(c.index, c.name, c.type_name, c.physical) for c in pci] == [
        (0x40000000 + n, f"C{n}", "28", True) for n in range(256)
    ]
    assert all(c.power_domain == -1 for c in everything)
    assert [c.index for c in everything] == sorted(c.index for c in everything)

    # The same indexes as QEMU 7.2's boot device tree (its arrays are in hash order).
    root_indexes = QEMU_DTB.cells("ibm,drc-indexes")
    assert root_indexes[0] == len(root_indexes) - 1 == 47
    assert sorted(root_indexes[1:]) == sorted(c.index for c in [*lmb, *phb, *pmem])
    assert sorted(QEMU_DTB.children["cpus"].cells("ibm,drc-indexes")[1:]) == [c.index for c in cpu]
    phb0 = QEMU_DTB.children["pci@800000020000000"]
    assert sorted(phb0.cells("ibm,drc-indexes")[1:]) == [c.index for c in pci]
    names = phb0.properties["ibm,drc-names"][4:].split(b"\0")[:-1]
    assert sorted(n.decode() for n in names) == sorted(c.name for c in pci)
    assert {c.parent_path for c in pci} == {"/pci@800000020000000"} and {c.parent_path for c in cpu} == {"/cpus"}

    # Coldplugged devices start as QEMU's do; everything else is empty.
    sense = {c.index: guest.sense(c.index) for c in everything}
    assert sense[0x10000000] == (0, 1) and sense[0x20000000] == (0, 1)
    assert all(sense[c.index] == (0, 2) for c in [*cpu[1:], *lmb, *phb[1:], *pmem])
    assert all(sense[c.index] == (0, 0) for c in pci)


def test_paging(client: Client, platform: str) -> None:
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = client.platforms.ListConnectors(
            platform_pb2.ListConnectorsRequest(platform=platform, page_size=50, page_token=token)
        )
        assert len(page.connectors) <= 50
        seen += [c.index for c in page.connectors]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 7 and len(seen) == 307 and seen == sorted(seen)
    # The client library's helper follows the same tokens (the raw loop above counts the pages).
    assert [c.index for c in list_all(client.platforms, platform, page_size=50)] == seen
    attached = connectors(client, platform, attached_only=True)
    assert [(c.index, c.device_id) for c in attached] == [(0x10000000, "core0"), (0x20000000, "phb0")]
    only_lmb = connectors(client, platform, type=S.DRC_TYPE_LMB)
    assert len(only_lmb) == 12


def test_larger_geometries(client: Client) -> None:
    # -m 4G,slots=32,maxmem=1T -smp 4,maxcpus=16,threads=2 (threads > 1: core ids step by 2)
    name = new_platform(
        client,
        platform_pb2.Geometry(
            memory_bytes=4 << 30,
            max_memory_bytes=1 << 40,
            memory_slots=32,
            cpus=4,
            max_cpus=16,
            threads_per_core=2,
        ),
    )
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name)).platform
    counts = {c.type: c.count for c in info.connector_counts}
    assert counts[S.DRC_TYPE_LMB] == ((1 << 40) - (4 << 30)) // (256 << 20) == 4080
    assert counts[S.DRC_TYPE_CPU] == 8 and counts[S.DRC_TYPE_PMEM] == 32
    cpu = connectors(client, name, type=S.DRC_TYPE_CPU)
    assert [c.index for c in cpu] == [0x10000000 + 2 * n for n in range(8)]
    assert [c.device_id for c in cpu[:3]] == ["core0", "core2", ""]  # cpus=4, threads=2: two boot cores
    lmb = connectors(client, name, type=S.DRC_TYPE_LMB)
    assert lmb[0].index == 0x80000010 and lmb[-1].index == 0x80000010 + 4079
    # Boot memory that is not a multiple of 1 GiB: device memory starts at the next GiB.
    odd = new_platform(client, platform_pb2.Geometry(memory_bytes=1280 << 20, max_memory_bytes=2 << 30, memory_slots=1))
    assert [c.name for c in connectors(client, odd, type=S.DRC_TYPE_LMB)] == ["LMB 8", "LMB 9", "LMB 10"]
    none = new_platform(client, platform_pb2.Geometry())
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=none)).platform
    assert info.geometry.memory_bytes == 512 << 20 and info.geometry.max_cpus == 1
    assert {c.type for c in info.connector_counts} == {S.DRC_TYPE_CPU, S.DRC_TYPE_PHB, S.DRC_TYPE_PCI}
