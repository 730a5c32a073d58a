"""The platform's full device tree, built from the same node builders configure-connector uses.

The tree is the one the guest would boot with now (as after a machine reset): every
attached device whose unplug is not pending is present, with its connector's
``ibm,my-drc-index``; each node that has DR children carries either the four
``ibm,drc-*`` arrays or, once the guest negotiated it at CAS, ``ibm,drc-info``.
After CAS with drconf memory the tree has ``/ibm,dynamic-reconfiguration-memory``.

Example::

    >>> from papr_emu.model import Platform, default_geometry
    >>> root = build_device_tree(Platform("p", default_geometry()))
    >>> [child.name for child in root.children][:4]
    ['chosen', 'memory@0', 'cpus', 'rtas']
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .devicetree import EMPTY, Node, cells, string, strings, u64
from .drc_table import DrcRange
from .fragments import LMB_ASSOCIATIVITY
from .rtas import LIVE_INSERTION_DOMAIN, LMB_SIZE
from .rtas_log import IRQ_EPOW, IRQ_HOTPLUG

if TYPE_CHECKING:
    from .platform import Platform

#: QEMU 7.2's RTAS tokens, as in its /rtas node.
RTAS_TOKENS: Final = {
    "display-character": 0x2000, "get-time-of-day": 0x2001, "set-time-of-day": 0x2002, "power-off": 0x2003,
    "system-reboot": 0x2004, "query-cpu-stopped-state": 0x2005, "start-cpu": 0x2006, "stop-self": 0x2007,
    "ibm,get-system-parameter": 0x2008, "ibm,set-system-parameter": 0x2009, "ibm,set-xive": 0x200A,
    "ibm,get-xive": 0x200B, "ibm,int-off": 0x200C, "ibm,int-on": 0x200D, "check-exception": 0x200E,
    "event-scan": 0x200F, "ibm,set-tce-bypass": 0x2010, "quiesce": 0x2011, "nvram-fetch": 0x2012,
    "nvram-store": 0x2013, "read-pci-config": 0x2014, "write-pci-config": 0x2015, "ibm,read-pci-config": 0x2016,
    "ibm,write-pci-config": 0x2017, "ibm,query-interrupt-source-number": 0x2018, "ibm,change-msi": 0x2019,
    "set-indicator": 0x201A, "set-power-level": 0x201B, "get-power-level": 0x201C, "get-sensor-state": 0x201D,
    "ibm,configure-connector": 0x201E, "ibm,os-term": 0x201F, "ibm,set-eeh-option": 0x2020,
    "ibm,get-config-addr-info2": 0x2021, "ibm,read-slot-reset-state2": 0x2022, "ibm,set-slot-reset": 0x2023,
    "ibm,configure-pe": 0x2024, "ibm,slot-error-detail": 0x2025, "ibm,query-pe-dma-window": 0x2026,
    "ibm,create-pe-dma-window": 0x2027, "ibm,remove-pe-dma-window": 0x2028, "ibm,reset-pe-dma-window": 0x2029,
    "ibm,suspend-me": 0x202A, "ibm,nmi-register": 0x202B, "ibm,nmi-interlock": 0x202C,
}  # fmt: skip

XICS_PHANDLE: Final = 0x1111
RTAS_ERROR_LOG_MAX: Final = 2048

# ibm,dynamic-memory flag bits (LoPAR "Flag Word").
LMB_ASSIGNED: Final = 0x08
LMB_DRC_INVALID: Final = 0x20
LMB_RESERVED: Final = 0x80
LMB_HOT_REMOVABLE: Final = 0x100
NO_ASSOCIATIVITY: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class DrcInfoRecord:
    """One ibm,drc-info record: a run of connectors with sequential indexes and name suffixes."""

    type_string: str
    name_prefix: str
    first_index: int
    first_suffix: int
    count: int
    increment: int
    power_domain: int = -1

    def encode(self) -> bytes:
        """Strings NUL-terminated, then five cells, unaligned (LoPAR)."""
        return (
            string(self.type_string)
            + string(self.name_prefix)
            + cells(self.first_index, self.first_suffix, self.count, self.increment, self.power_domain)
        )


@dataclass(frozen=True, slots=True)
class DrcArrays:
    """The four ibm,drc-* arrays of a node, one entry per connector."""

    indexes: Sequence[int]
    names: Sequence[str]
    types: Sequence[str]

    @classmethod
    def from_ranges(cls, ranges: Sequence[DrcRange]) -> DrcArrays:
        """Every connector of the ranges, in range order (ascending index)."""
        return cls(
            indexes=[i for r in ranges for i in r.indexes()],
            names=[r.type.name(drc_id) for r in ranges for drc_id in r.ids()],
            types=[r.type.type_string for r in ranges for _ in r.ids()],
        )

    def properties(self) -> list[tuple[str, bytes]]:
        """In QEMU's wire order: types, names, power-domains (all -1, live insertion), indexes."""
        count = cells(len(self.indexes))
        return [
            ("ibm,drc-types", count + strings(self.types)),
            ("ibm,drc-names", count + strings(self.names)),
            ("ibm,drc-power-domains", count + cells(*[LIVE_INSERTION_DOMAIN] * len(self.indexes))),
            ("ibm,drc-indexes", count + cells(*self.indexes)),
        ]


def drc_info_records(ranges: Sequence[DrcRange]) -> list[DrcInfoRecord]:
    return [
        DrcInfoRecord(r.type.type_string, r.type.name_prefix, r.first_index, r.first_id, r.count, r.step)
        for r in ranges
        if r.count
    ]


def encode_drc_info(records: Sequence[DrcInfoRecord]) -> bytes:
    return cells(len(records)) + b"".join(r.encode() for r in records)


def dr_properties(platform: Platform, path: str) -> list[tuple[str, bytes]]:
    """The DR properties of the node at ``path``: ibm,drc-info after CAS asked for it, else the arrays."""
    ranges = platform.drc_ranges(path)
    if platform.options.drc_info:
        return [("ibm,drc-info", encode_drc_info(drc_info_records(ranges)))]
    return DrcArrays.from_ranges(ranges).properties()


def _rtas_node(platform: Platform) -> Node:
    g = platform.geometry
    properties = [(name, cells(token)) for name, token in sorted(RTAS_TOKENS.items(), key=lambda kv: -kv[1])]
    properties += [
        ("ibm,lrdr-capacity", u64(g.device_memory_end, LMB_SIZE) + cells(g.max_cores)),
        ("ibm,extended-os-term", EMPTY),
        ("ibm,change-msix-capable", EMPTY),
        ("rtas-event-scan-rate", cells(1)),
        ("rtas-error-log-max", cells(RTAS_ERROR_LOG_MAX)),
        ("rtas-size", cells(0x85C)),
        ("ibm,max-associativity-domains", cells(4, 0, 0, 0, 1)),
        ("ibm,associativity-reference-points", cells(4, 4, 2)),
    ]
    return Node("rtas", properties)


def _event_sources_node() -> Node:
    return Node(
        "event-sources",
        [
            ("interrupt-ranges", cells(IRQ_EPOW, 1, IRQ_HOTPLUG, 1)),
            ("#interrupt-cells", cells(2)),
            ("interrupt-controller", EMPTY),
        ],
        [
            Node("hot-plug-events", [("interrupts", cells(IRQ_HOTPLUG, 0))]),
            Node("epow-events", [("interrupts", cells(IRQ_EPOW, 0))]),
        ],
    )


def _dynamic_memory_v1(platform: Platform) -> bytes:
    g = platform.geometry
    entry = struct.Struct(">QIIII")
    backed = {a // LMB_SIZE + n for a, size in platform.dimm_extents() for n in range(size // LMB_SIZE)}
    first_device_lmb = g.first_lmb_id
    entries = [entry.pack(lmb * LMB_SIZE, 0, 0, NO_ASSOCIATIVITY, LMB_RESERVED | LMB_DRC_INVALID)
               for lmb in range(first_device_lmb)]  # fmt: skip
    for lmb in range(first_device_lmb, g.device_memory_end // LMB_SIZE):
        node, flags = (0, LMB_ASSIGNED) if lmb in backed else (NO_ASSOCIATIVITY, 0)
        entries.append(entry.pack(lmb * LMB_SIZE, 0x80000000 | lmb, 0, node, flags))
    return cells(len(entries)) + b"".join(entries)


def _dynamic_memory_v2(platform: Platform) -> bytes:
    g = platform.geometry

    def lmb_set(count: int, address: int, drc_index: int, node: int, flags: int) -> bytes:
        return struct.pack(">IQIII", count, address, drc_index, node, flags)

    sets = [lmb_set(g.first_lmb_id, 0, 0, NO_ASSOCIATIVITY, LMB_RESERVED | LMB_DRC_INVALID)]
    cursor = g.device_memory_base
    for address, size in platform.dimm_extents():
        if cursor < address:
            sets.append(lmb_set((address - cursor) // LMB_SIZE, cursor, 0x80000000 | cursor // LMB_SIZE,
                                NO_ASSOCIATIVITY, 0))  # fmt: skip
        sets.append(lmb_set(size // LMB_SIZE, address, 0x80000000 | address // LMB_SIZE, 0,
                            LMB_ASSIGNED | LMB_HOT_REMOVABLE))  # fmt: skip
        cursor = address + size
    if cursor < g.device_memory_end:
        sets.append(lmb_set((g.device_memory_end - cursor) // LMB_SIZE, cursor, 0x80000000 | cursor // LMB_SIZE,
                            NO_ASSOCIATIVITY, 0))  # fmt: skip
    return cells(len(sets)) + b"".join(sets)


def _dynamic_reconfiguration_memory(platform: Platform) -> Node:
    memory = ("ibm,dynamic-memory-v2", _dynamic_memory_v2(platform)) if platform.options.dynamic_memory_v2 else (
        "ibm,dynamic-memory", _dynamic_memory_v1(platform))  # fmt: skip
    associativity = LMB_ASSOCIATIVITY[4:]  # the lookup list of node 0: the associativity without its count
    return Node(
        "ibm,dynamic-reconfiguration-memory",
        [
            ("ibm,lmb-size", u64(LMB_SIZE)),
            ("ibm,memory-flags-mask", cells(0xFF)),
            ("ibm,memory-preservation-time", cells(0)),
            ("ibm,associativity-lookup-arrays", cells(1, len(associativity) // 4) + associativity),
            memory,
        ],
    )


def build_device_tree(platform: Platform) -> Node:
    """The full tree (caller holds the platform lock)."""
    g = platform.geometry
    root = Node(
        "",
        [
            *dr_properties(platform, "/"),
            ("#size-cells", cells(2)),
            ("#address-cells", cells(2)),
            ("compatible", string("qemu,pseries")),
            ("model", string("IBM pSeries (emulated by qemu)")),
            ("device_type", string("chrp")),
        ],
    )
    root.children.append(Node("chosen", [("ibm,architecture-vec-5", platform.options.vector)]))
    root.children.append(
        Node(
            "memory@0",
            [("ibm,associativity", LMB_ASSOCIATIVITY), ("reg", u64(0, g.memory)), ("device_type", string("memory"))],
        )
    )
    cpus = Node("cpus", [*dr_properties(platform, "/cpus"), ("#size-cells", cells(0)), ("#address-cells", cells(1))])
    cpus.children = platform.present_nodes("/cpus")
    root.children.append(cpus)
    root.children.append(_rtas_node(platform))
    root.children.append(_event_sources_node())
    root.children.append(
        Node(
            "interrupt-controller",
            [
                ("phandle", cells(XICS_PHANDLE)),
                ("linux,phandle", cells(XICS_PHANDLE)),
                ("#interrupt-cells", cells(2)),
                ("ibm,interrupt-server-ranges", cells(0, g.max_cpus)),
                ("interrupt-controller", EMPTY),
                ("compatible", string("IBM,ppc-xicp")),
                ("device_type", string("PowerPC-External-Interrupt-Presentation")),
            ],
        )
    )
    root.children.extend(platform.present_nodes("/"))
    if platform.options.drconf_memory and g.lmb_count:
        root.children.append(_dynamic_reconfiguration_memory(platform))
    return root


__all__ = [
    "RTAS_TOKENS",
    "DrcArrays",
    "DrcInfoRecord",
    "build_device_tree",
    "dr_properties",
    "drc_info_records",
    "encode_drc_info",
]
