"""A minimal flattened-device-tree reader (devicetree specification, chapter 5), for the DTB
that PlatformService.GetDeviceTree returns (and QEMU's ``dumpdtb``).

Example::

    >>> import struct
    >>> strings = b"ibm,drc-indexes\\0"
    >>> body = struct.pack(">I", 1) + b"\\0\\0\\0\\0" + struct.pack(">III", 3, 8, 0) + struct.pack(">II", 1, 0x10000000)
    >>> body += struct.pack(">II", 2, 9)
    >>> header = struct.pack(">10I", 0xD00DFEED, 40 + len(body) + len(strings), 40, 40 + len(body), 40, 17, 16, 0,
    ...                      len(strings), len(body))
    >>> root = read_dtb(header + body + strings)
    >>> root.cells("ibm,drc-indexes"), nodes_by_path(root)["/"]["ibm,drc-indexes"].hex()
    ([1, 268435456], '0000000110000000')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


class BadDtb(ValueError):
    """The blob is not a flattened device tree this reader understands."""


@dataclass
class FdtNode:
    """A node: its name, properties in blob order, and children by name."""

    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, FdtNode] = field(default_factory=dict)

    def cells(self, name: str) -> list[int]:
        """A property's value as big-endian 32-bit cells."""
        value = self.properties[name]
        return list(struct.unpack(f">{len(value) // 4}I", value))


def read_dtb(blob: bytes) -> FdtNode:
    """The root node of a DTB."""
    if len(blob) < 40:
        raise BadDtb(f"{len(blob)} bytes: shorter than an FDT header")
    magic, _total, off_struct, off_strings = struct.unpack_from(">4I", blob, 0)
    if magic != FDT_MAGIC:
        raise BadDtb(f"magic {magic:#x}: not a flattened device tree")
    stack: list[FdtNode] = []
    root: FdtNode | None = None
    offset = off_struct
    while True:
        (token,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if token == FDT_BEGIN_NODE:
            end = blob.index(b"\0", offset)
            node = FdtNode(blob[offset:end].decode("ascii", "replace"))
            offset = (end + 4) & ~3
            if stack:
                stack[-1].children[node.name] = node
            else:
                root = node
            stack.append(node)
        elif token == FDT_END_NODE:
            stack.pop()
        elif token == FDT_PROP:
            length, name_offset = struct.unpack_from(">II", blob, offset)
            offset += 8
            name_end = blob.index(b"\0", off_strings + name_offset)
            name = blob[off_strings + name_offset : name_end].decode("ascii", "replace")
            stack[-1].properties[name] = blob[offset : offset + length]
            offset = (offset + length + 3) & ~3
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            if root is None:
                raise BadDtb("no root node")
            return root
        else:
            raise BadDtb(f"bad token {token} at offset {offset - 4}")


def nodes_by_path(root: FdtNode) -> dict[str, dict[str, bytes]]:
    """Every node's properties by path ("/", "/cpus", ...)."""
    nodes: dict[str, dict[str, bytes]] = {}

    def visit(node: FdtNode, path: str) -> None:
        nodes[path] = node.properties
        for name, child in node.children.items():
            visit(child, f"{path.rstrip('/')}/{name}")

    visit(root, "/")
    return nodes
