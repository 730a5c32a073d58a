"""The platform's full device tree, built from the same device fragments configure-connector walks.

The tree is the one the guest would boot with now (as after a machine reset): every
attached device whose unplug is not pending is present, with its connector's
``ibm,my-drc-index``; each node that has DR children carries either the four
``ibm,drc-*`` arrays or, once the guest negotiated it at CAS, ``ibm,drc-info``.
After CAS with drconf memory the tree has ``/ibm,dynamic-reconfiguration-memory``.

Example::

    >>> from papr_emu.model import Platform, default_geometry
    >>> root = build_device_tree(Platform("p", default_geometry()).view())
    >>> [child.name for child in root.children][:4]
    ['ibm,persistent-memory', 'chosen', 'memory@0', 'cpus']
"""

from __future__ import annotations

import struct
from typing import Final

from .devicetree import EMPTY, Node, cells, string, u64
from .fragments import LMB_ASSOCIATIVITY, PERSISTENT_MEMORY_PATH, XICS_PHANDLE, persistent_memory_node
from .rtas import LMB_SIZE
from .rtas_log import IRQ_EPOW, IRQ_HOTPLUG
from .view import PlatformView

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

RTAS_ERROR_LOG_MAX: Final = 2048

# ibm,dynamic-memory flag bits (LoPAR "Flag Word").
LMB_ASSIGNED: Final = 0x08
LMB_DRC_INVALID: Final = 0x20
LMB_RESERVED: Final = 0x80
LMB_HOT_REMOVABLE: Final = 0x100
NO_ASSOCIATIVITY: Final = 0xFFFFFFFF


def _rtas_node(view: PlatformView) -> Node:
    g = view.geometry
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


def _dynamic_memory_v1(view: PlatformView) -> bytes:
    g = view.geometry
    entry = struct.Struct(">QIIII")
    backed = {a // LMB_SIZE + n for a, size in view.assigned_extents for n in range(size // LMB_SIZE)}
    first_device_lmb = g.first_lmb_id
    entries = [entry.pack(lmb * LMB_SIZE, 0, 0, NO_ASSOCIATIVITY, LMB_RESERVED | LMB_DRC_INVALID)
               for lmb in range(first_device_lmb)]  # fmt: skip
    for lmb in range(first_device_lmb, g.device_memory_end // LMB_SIZE):
        node, flags = (0, LMB_ASSIGNED) if lmb in backed else (NO_ASSOCIATIVITY, 0)
        entries.append(entry.pack(lmb * LMB_SIZE, 0x80000000 | lmb, 0, node, flags))
    return cells(len(entries)) + b"".join(entries)


def _dynamic_memory_v2(view: PlatformView) -> bytes:
    g = view.geometry

    def lmb_set(count: int, address: int, drc_index: int, node: int, flags: int) -> bytes:
        return struct.pack(">IQIII", count, address, drc_index, node, flags)

    sets = [lmb_set(g.first_lmb_id, 0, 0, NO_ASSOCIATIVITY, LMB_RESERVED | LMB_DRC_INVALID)]
    cursor = g.device_memory_base
    for address, size in view.assigned_extents:
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


def _dynamic_reconfiguration_memory(view: PlatformView) -> Node:
    memory = ("ibm,dynamic-memory-v2", _dynamic_memory_v2(view)) if view.options.dynamic_memory_v2 else (
        "ibm,dynamic-memory", _dynamic_memory_v1(view))  # fmt: skip
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


def _boot_nodes(view: PlatformView, parent_path: str) -> list[Node]:
    """The nodes of the present devices under ``parent_path``, each with the devices under it."""
    return view.fragments.nodes_under(parent_path, hotplugged=False)


def build_device_tree(view: PlatformView) -> Node:
    """The full tree the guest would boot with."""
    g = view.geometry
    root = Node(
        "",
        [
            *view.fragments.dr_properties("/"),
            ("#size-cells", cells(2)),
            ("#address-cells", cells(2)),
            ("compatible", string("qemu,pseries")),
            ("model", string("IBM pSeries (emulated by qemu)")),
            ("device_type", string("chrp")),
        ],
    )
    root.children.append(persistent_memory_node(_boot_nodes(view, PERSISTENT_MEMORY_PATH)))
    root.children.append(Node("chosen", [("ibm,architecture-vec-5", view.options.vector)]))
    root.children.append(
        Node(
            "memory@0",
            [("ibm,associativity", LMB_ASSOCIATIVITY), ("reg", u64(0, g.memory)), ("device_type", string("memory"))],
        )
    )
    cpus = Node(
        "cpus", [*view.fragments.dr_properties("/cpus"), ("#size-cells", cells(0)), ("#address-cells", cells(1))]
    )
    cpus.children = _boot_nodes(view, "/cpus")
    root.children.append(cpus)
    root.children.append(_rtas_node(view))
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
    root.children.extend(_boot_nodes(view, "/"))
    if view.options.drconf_memory and g.lmb_count:
        root.children.append(_dynamic_reconfiguration_memory(view))
    return root


__all__ = ["RTAS_TOKENS", "build_device_tree"]
