"""A minimal flattened-device-tree reader written from the devicetree specification (for tests).

Example::

    root = read_dtb(Path("docs/qemu-7.2/default-pre-cas.dtb").read_bytes())
    root.children["cpus"].properties["ibm,drc-indexes"]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


@dataclass
class FdtNode:
    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, FdtNode] = field(default_factory=dict)

    def cells(self, name: str) -> list[int]:
        value = self.properties[name]
        return list(struct.unpack(f">{len(value) // 4}I", value))


def read_dtb(blob: bytes) -> FdtNode:
    magic, _total, off_struct, off_strings, *_ = struct.unpack_from(">10I", blob, 0)
    assert magic == FDT_MAGIC, "not a flattened device tree"
    offset = off_struct
    stack: list[FdtNode] = []
    root: FdtNode | None = None
    while True:
        (token,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if token == FDT_BEGIN_NODE:
            end = blob.index(b"\0", offset)
            node = FdtNode(blob[offset:end].decode())
            offset = (end + 1 + 3) & ~3
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
            stack[-1].properties[blob[off_strings + name_offset : name_end].decode()] = blob[offset : offset + length]
            offset = (offset + length + 3) & ~3
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            assert root is not None
            return root
        else:
            raise ValueError(f"bad FDT token {token} at {offset - 4}")
