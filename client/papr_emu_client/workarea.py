"""Reading the ibm,configure-connector work area the way the Linux kernel does.

``dlpar_configure_connector()`` looks at the status and, for 1/2/3, at the
offsets in cells 2..4; this module does the same on the raw 4096 bytes.

Example::

    >>> area = bytearray(4096)
    >>> area[8:12] = (0x14).to_bytes(4, "big"); area[0x14:0x18] = b"cpu\\0"
    >>> read_item(2, bytes(area))
    CcItem(status=2, name='cpu', value=b'')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

WORK_AREA_SIZE = 4096
NEXT_SIBLING, NEXT_CHILD, NEXT_PROPERTY, PREVIOUS_PARENT, COMPLETE = 1, 2, 3, 4, 0


@dataclass(frozen=True)
class CcItem:
    """One configure-connector result: a node name (1/2), a property (3), or nothing."""

    status: int
    name: str = ""
    value: bytes = b""


def new_work_area(drc_index: int) -> bytes:
    """A fresh work area: cell 0 = the DRC index, cell 1 = 0, the rest zero."""
    return struct.pack(">II", drc_index, 0) + bytes(WORK_AREA_SIZE - 8)


def _c_string(area: bytes, offset: int) -> str:
    end = area.index(b"\0", offset)
    return area[offset:end].decode("ascii")


def read_item(status: int, area: bytes) -> CcItem:
    """Decode what a call with this status left in the work area."""
    if status in (NEXT_SIBLING, NEXT_CHILD):
        (name_offset,) = struct.unpack_from(">I", area, 8)
        return CcItem(status, _c_string(area, name_offset))
    if status == NEXT_PROPERTY:
        name_offset, length, value_offset = struct.unpack_from(">III", area, 8)
        return CcItem(status, _c_string(area, name_offset), bytes(area[value_offset : value_offset + length]))
    return CcItem(status)


@dataclass
class DtNode:
    """A node built from a configure-connector sequence."""

    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    property_order: list[str] = field(default_factory=list)
    children: list[DtNode] = field(default_factory=list)
