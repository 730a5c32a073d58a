"""Device-tree nodes of pluggable devices, as QEMU 7.2 builds them.

Each builder returns the :class:`~.devicetree.Node` that ibm,configure-connector
walks for a connector. Properties are listed in QEMU 7.2's wire order (libfdt
inserts each new property ahead of the previous ones, so the wire order is the
reverse of QEMU's creation order); the values were captured from QEMU 7.2
(``docs/qemu-7.2/fragments.json``) and are parametrised here by what varies
(address, core id, PHB index, slot and function).

Example::

    >>> node = lmb_node(0x40000000)
    >>> node.name, [name for name, _ in node.properties]
    ('memory@40000000', ['ibm,associativity', 'reg', 'device_type'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .devicetree import EMPTY, Node, cells, string, u64
from .rtas import LMB_SIZE

#: phandle of the interrupt controller (XICS) that PCI interrupt maps point at.
XICS_PHANDLE: Final = 0x1111

# --- memory ---------------------------------------------------------------------------------------

#: ibm,associativity of an LMB on NUMA node 0 (QEMU 7.2, FORM1, one node).
LMB_ASSOCIATIVITY: Final = cells(4, 0, 0, 0, 0)


def lmb_node(address: int) -> Node:
    """``memory@<addr>`` for one 256 MiB LMB at its true guest physical address.

    QEMU 7.2 names the node after DRC *index* x 256 MiB (``memory@800000040000000``
    for LMB 0x80000004); papr-emu uses the real address (docs/compat.md).
    """
    return Node(
        f"memory@{address:x}",
        [
            ("ibm,associativity", LMB_ASSOCIATIVITY),
            ("reg", u64(address, LMB_SIZE)),
            ("device_type", string("memory")),
        ],
    )


#: PAPR's minimum SCM (storage-class memory) block: an NVDIMM's size is counted in these.
SCM_BLOCK_SIZE: Final = 256 << 20

#: Where the guest finds its NVDIMMs: the parent of every ibm,pmemory node.
PERSISTENT_MEMORY_PATH: Final = "/ibm,persistent-memory"


def persistent_memory_node(children: list[Node]) -> Node:
    """``/ibm,persistent-memory``, as QEMU 7.2 puts it in every pseries tree (nvdimm=on, the default)."""
    return Node(
        PERSISTENT_MEMORY_PATH[1:],
        [("device_type", string("ibm,persistent-memory")), ("#size-cells", cells(0)), ("#address-cells", cells(1))],
        children,
    )


def pmemory_node(drc_index: int, size: int, label_size: int, uuid: str) -> Node:
    """``ibm,pmemory@<drc index>`` for an NVDIMM (QEMU 7.2's spapr_dt_nvdimm, node 0)."""
    return Node(
        f"ibm,pmemory@{drc_index:x}",
        [
            ("ibm,cache-flush-required", EMPTY),
            ("ibm,pmem-application", string("operating-system")),
            ("ibm,metadata-size", cells(label_size)),
            ("ibm,number-of-blocks", u64(size // SCM_BLOCK_SIZE)),
            ("ibm,block-size", u64(SCM_BLOCK_SIZE)),
            ("ibm,my-drc-index", cells(drc_index)),
            ("ibm,unit-guid", string(uuid)),
            ("ibm,associativity", LMB_ASSOCIATIVITY),
            ("device_type", string("ibm,pmemory")),
            ("compatible", string("ibm,pmemory")),
            ("reg", cells(drc_index)),
        ],
    )


# --- CPU cores ------------------------------------------------------------------------------------

CPU_NODE_PREFIX: Final = "PowerPC,POWER9"  # default CPU of QEMU 7.2's pseries-7.2 machine

# POWER9 v2.0 under TCG; values as QEMU 7.2 emits them, in wire order (see cpu_core_node).
_POWER9_RADIX_AP: Final = bytes.fromhex("0000000ca0000010200000154000001e")
_POWER9_PA_FEATURES: Final = bytes.fromhex(
    "4200f63fc7c080f080000000000000000000800080008000000080008000800080008000"
    "c000800080008000800080008000800080008000800080008000800080000000"
)
_POWER9_SEGMENT_PAGE_SIZES: Final = bytes.fromhex(
    "0000000c00000000000000010000000c000000000000001000000110000000010000001000000001"
)


def hpt_shift_for_ram_size(ram_size: int) -> int:
    """QEMU's spapr_hpt_shift_for_ramsize: a hash table of 1/128 of RAM, 2^18..2^46."""
    power_of_two = 1 << (ram_size - 1).bit_length()
    return min(max(power_of_two.bit_length() - 1 - 7, 18), 46)


def cpu_core_node(core_id: int, threads: int, drc_index: int, hpt_shift: int, hotplugged: bool = True) -> Node:
    """``PowerPC,POWER9@<vcpu id>`` with QEMU 7.2's properties.

    A hot-plugged core's node also has ``name`` (QEMU adds it because Linux matches CPU
    nodes by it); cores in the boot tree do not.
    """
    servers = [core_id + i for i in range(threads)]
    gservers = [v for server in servers for v in (server, 0)]
    name = [("name", string(f"{CPU_NODE_PREFIX}@{core_id:x}"))] if hotplugged else []
    return Node(
        f"{CPU_NODE_PREFIX}@{core_id:x}",
        [
            *name,
            ("ibm,dec-bits", cells(56)),
            ("ibm,processor-radix-AP-encodings", _POWER9_RADIX_AP),
            ("ibm,ppc-interrupt-gserver#s", cells(*gservers)),
            ("ibm,ppc-interrupt-server#s", cells(*servers)),
            ("ibm,pft-size", cells(0, hpt_shift)),
            ("ibm,chip-id", cells(0)),
            ("ibm,pa-features", _POWER9_PA_FEATURES),
            ("ibm,segment-page-sizes", _POWER9_SEGMENT_PAGE_SIZES),
            ("ibm,dfp", cells(1)),
            ("ibm,vmx", cells(2)),
            ("ibm,processor-segment-sizes", cells(28, 40, 0xFFFFFFFF, 0xFFFFFFFF)),
            ("ibm,spurr", cells(1)),
            ("ibm,purr", cells(1)),
            ("64-bit", EMPTY),
            ("status", string("okay")),
            ("ibm,slb-size", cells(32)),
            ("slb-size", cells(32)),
            ("clock-frequency", cells(1_000_000_000)),
            ("timebase-frequency", cells(512_000_000)),
            ("i-cache-size", cells(0x8000)),
            ("d-cache-size", cells(0x8000)),
            ("i-cache-line-size", cells(128)),
            ("i-cache-block-size", cells(128)),
            ("d-cache-line-size", cells(128)),
            ("d-cache-block-size", cells(128)),
            ("cpu-version", cells(0x004E1200)),
            ("device_type", string("cpu")),
            ("reg", cells(core_id)),
            ("ibm,my-drc-index", cells(drc_index)),
        ],
    )


# --- PCI functions --------------------------------------------------------------------------------

SPACE_IO: Final = 0x01000000
SPACE_MEM32: Final = 0x02000000
SPACE_MEM64: Final = 0x03000000


@dataclass(frozen=True, slots=True)
class Bar:
    """A PCI BAR (or expansion ROM) as QEMU lists it in ``reg``: space, config offset, size."""

    space: int
    register: int
    size: int


@dataclass(frozen=True, slots=True)
class PciDeviceData:
    """What QEMU 7.2 reads from a PCI model's config space into its node."""

    node_name: str
    vendor_id: int
    device_id: int
    revision_id: int
    class_code: int
    subsystem_vendor_id: int
    subsystem_id: int
    cache_line_size: int
    interrupt_pin: int
    msix_vectors: int  # 0: no ibm,req#msi-x
    bars: tuple[Bar, ...]


E1000_DATA: Final = PciDeviceData(
    "ethernet", 0x8086, 0x100E, 3, 0x020000, 0x1AF4, 0x1100, 0x10, 1, 0,
    (Bar(SPACE_MEM32, 0x10, 0x20000), Bar(SPACE_IO, 0x14, 0x40), Bar(SPACE_MEM32, 0x30, 0x40000)),
)  # fmt: skip
VIRTIO_NET_DATA: Final = PciDeviceData(
    "ethernet", 0x1AF4, 0x1000, 0, 0x020000, 0x1AF4, 0x0001, 0, 1, 4,
    (
        Bar(SPACE_IO, 0x10, 0x20),
        Bar(SPACE_MEM32, 0x14, 0x1000),
        Bar(SPACE_MEM64, 0x20, 0x4000),
        Bar(SPACE_MEM32, 0x30, 0x40000),
    ),
)  # fmt: skip


def pci_function_node(
    data: PciDeviceData, qemu_name: str, phb_index: int, bus: int, slot: int, function: int, drc_index: int
) -> Node:
    """``<class>@<slot>[,<fn>]`` as QEMU 7.2's spapr_dt_pci_device writes it (no guest BAR setup)."""
    devfn = (slot << 3) | function
    unit = f"{slot:x}" if function == 0 else f"{slot:x},{function:x}"
    config_address = (bus << 16) | (devfn << 8)
    reg = cells(config_address, 0, 0, 0, 0) + b"".join(
        cells(bar.space | config_address | bar.register, 0, 0, bar.size >> 32, bar.size & 0xFFFFFFFF)
        for bar in data.bars
    )
    location = f"qemu_{qemu_name}:{phb_index:04x}:{bus:02x}:{slot:02x}.{function:x}"
    properties = [
        ("max-latency", cells(0)),
        ("min-grant", cells(0)),
        ("reg", reg),
    ]
    if data.msix_vectors:
        properties.append(("ibm,req#msi-x", cells(data.msix_vectors)))
    properties += [
        ("ibm,my-drc-index", cells(drc_index)),
        ("ibm,loc-code", string(location)),
        ("devsel-speed", cells(0)),
        ("cache-line-size", cells(data.cache_line_size)),
        ("subsystem-vendor-id", cells(data.subsystem_vendor_id)),
        ("subsystem-id", cells(data.subsystem_id)),
    ]
    if data.interrupt_pin:
        properties.append(("interrupts", cells(data.interrupt_pin)))
    properties += [
        ("class-code", cells(data.class_code)),
        ("revision-id", cells(data.revision_id)),
        ("device-id", cells(data.device_id)),
        ("vendor-id", cells(data.vendor_id)),
    ]
    return Node(f"{data.node_name}@{unit}", properties)


# --- PHBs -----------------------------------------------------------------------------------------

PHB_BASE_BUID: Final = 0x800000020000000
_PCI_BASE: Final = 1 << 45  # 32 TiB
_IO_WINDOW: Final = 0x10000
_MEM32_WINDOW: Final = 2 << 30
_MEM64_WINDOW: Final = 1 << 40
_LSI_BASE: Final = 0x1200  # SPAPR_IRQ_PCI_LSI
_PCI_PINS: Final = 4


def phb_node_name(index: int) -> str:
    return f"pci@{PHB_BASE_BUID + index:x}"


def phb_node(index: int, drc_index: int, dr_properties: list[tuple[str, bytes]], hotplugged: bool = True) -> Node:
    """``pci@<buid>`` as QEMU 7.2 builds it; a hot-plugged PHB's node also has ``name`` (the boot tree's not)."""
    buid = PHB_BASE_BUID + index
    pio = _PCI_BASE + index * _IO_WINDOW
    mmio32 = _PCI_BASE + (index + 1) * _MEM32_WINDOW
    mmio64 = _PCI_BASE + (index + 1) * _MEM64_WINDOW
    ranges = (
        cells(SPACE_IO, 0, 0) + u64(pio) + u64(_IO_WINDOW)
        + cells(SPACE_MEM32, 0, 0x80000000) + u64(mmio32) + u64(_MEM32_WINDOW)
        + cells(SPACE_MEM64) + u64(mmio64) + u64(mmio64) + u64(_MEM64_WINDOW)
    )  # fmt: skip
    interrupt_map = b"".join(
        cells(slot << 11, 0, 0, pin + 1, XICS_PHANDLE, _LSI_BASE + index * _PCI_PINS + (pin + slot) % 4, 1)
        for slot in range(32)
        for pin in range(_PCI_PINS)
    )
    liobn = 0x80000000 | (index << 8)
    return Node(
        phb_node_name(index),
        [
            *([("name", string("pci"))] if hotplugged else []),
            *dr_properties,  # the four ibm,drc-* arrays of its PCI connectors (or ibm,drc-info)
            ("#size-cells", cells(2)),
            ("#address-cells", cells(3)),
            ("qemu,phb-enumerated", cells(1)),
            ("ibm,my-drc-index", cells(drc_index)),
            ("ibm,dma-window", cells(liobn) + u64(0) + u64(0x40000000)),
            ("ibm,#dma-size-cells", cells(2)),
            ("ibm,#dma-address-cells", cells(2)),
            ("interrupt-map", interrupt_map),
            ("interrupt-map-mask", cells(0xF800, 0, 0, 0xFFFFFFFF)),
            ("ibm,ddw-extensions", cells(2, 0x2029, 1)),
            ("ibm,ddw-applicable", cells(0x2026, 0x2027, 0x2028)),
            ("ibm,pe-total-#msi", cells(0xD00)),
            ("ibm,pci-config-space-type", cells(1)),
            ("reg", u64(buid, 0)),
            ("ranges", ranges),
            ("bus-range", cells(0, 0xFF)),
            ("used-by-rtas", EMPTY),
            ("#interrupt-cells", cells(1)),
            ("compatible", string("IBM,Logical_PHB")),
            ("device_type", string("pci")),
        ],
    )
