"""A minimal flattened-device-tree reader (devicetree specification, chapter 5), for the DRC survey.

Example::

    >>> import struct
    >>> strings = b"ibm,drc-indexes\\0"
    >>> body = struct.pack(">I", 1) + b"\\0\\0\\0\\0" + struct.pack(">III", 3, 8, 0) + struct.pack(">II", 1, 0x10000000)
    >>> body += struct.pack(">II", 2, 9)
    >>> header = struct.pack(">10I", 0xD00DFEED, 40 + len(body) + len(strings), 40, 40 + len(body), 40, 17, 16, 0,
    ...                      len(strings), len(body))
    >>> nodes = read_dtb(header + body + strings)
    >>> nodes["/"]["ibm,drc-indexes"].hex()
    '0000000110000000'
"""

from __future__ import annotations

import struct

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


class BadDtb(ValueError):
    """The blob is not a flattened device tree this reader understands."""


def read_dtb(blob: bytes) -> dict[str, dict[str, bytes]]:
    """Every node of the tree by path ("/", "/cpus", ...), with its properties in blob order."""
    if len(blob) < 40:
        raise BadDtb(f"{len(blob)} bytes: shorter than an FDT header")
    magic, _total, off_struct, off_strings = struct.unpack_from(">4I", blob, 0)
    if magic != FDT_MAGIC:
        raise BadDtb(f"magic {magic:#x}: not a flattened device tree")
    nodes: dict[str, dict[str, bytes]] = {}
    path: list[str] = []
    offset = off_struct
    while True:
        (token,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if token == FDT_BEGIN_NODE:
            end = blob.index(b"\0", offset)
            path.append(blob[offset:end].decode("ascii", "replace"))
            offset = (end + 4) & ~3
            nodes["/" + "/".join(p for p in path[1:])] = {}
        elif token == FDT_END_NODE:
            path.pop()
        elif token == FDT_PROP:
            length, name_offset = struct.unpack_from(">II", blob, offset)
            offset += 8
            name_end = blob.index(b"\0", off_strings + name_offset)
            name = blob[off_strings + name_offset : name_end].decode("ascii", "replace")
            nodes["/" + "/".join(path[1:])][name] = blob[offset : offset + length]
            offset = (offset + length + 3) & ~3
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            return nodes
        else:
            raise BadDtb(f"bad token {token} at offset {offset - 4}")
