"""The ibm,configure-connector work area: 4096 bytes, big-endian cells.

Layout (QEMU 7.2, byte-exact): cell 0 = DRC index (input); for status 2
(next child) cell 2 = 0x14 and the node name, NUL-terminated, at 0x14; for
status 3 (next property) cell 2 = 0x14, cell 3 = value length, cell 4 = value
offset (right after the name's NUL, unaligned), name at 0x14, value at cell 4.
Nothing else is written: every other byte keeps what the guest passed in.

Example::

    >>> area = bytearray(WORK_AREA_SIZE)
    >>> write_property(area, "reg", b"\\x00\\x01")
    True
    >>> bytes(area[8:20]).hex(), bytes(area[20:26])
    ('000000140000000200000018', b'reg\\x00\\x00\\x01')
"""

from __future__ import annotations

import struct
from typing import Final

WORK_AREA_SIZE: Final = 4096
NAME_OFFSET: Final = 0x14  # QEMU's CC_VAL_DATA_OFFSET: (cell 4 + 1) * 4

_CELL = struct.Struct(">I")


def drc_index(area: bytes | bytearray) -> int:
    """Cell 0: the DRC index the guest asks to configure (re-read on every call)."""
    return int(_CELL.unpack_from(area, 0)[0])


def write_node_name(area: bytearray, name: str) -> bool:
    """Status 2: the node name at 0x14, its offset in cell 2. False if it cannot fit."""
    encoded = name.encode("ascii") + b"\0"
    if NAME_OFFSET + len(encoded) > WORK_AREA_SIZE:
        return False
    _CELL.pack_into(area, 8, NAME_OFFSET)
    area[NAME_OFFSET : NAME_OFFSET + len(encoded)] = encoded
    return True


def write_property(area: bytearray, name: str, value: bytes) -> bool:
    """Status 3: name at 0x14, value right after its NUL; cells 2, 3, 4.

    Returns False, writing nothing, if name and value do not fit in the page
    (QEMU would silently truncate the value; see docs/compat.md).
    """
    encoded = name.encode("ascii") + b"\0"
    value_offset = NAME_OFFSET + len(encoded)
    if value_offset + len(value) > WORK_AREA_SIZE:
        return False
    struct.pack_into(">III", area, 8, NAME_OFFSET, len(value), value_offset)
    area[NAME_OFFSET:value_offset] = encoded
    area[value_offset : value_offset + len(value)] = value
    return True
