"""Parsing RTAS event logs as Linux does (get_pseries_errorlog, the HP section).

Example::

    >>> blob = bytes.fromhex(
    ...     "063460e50000006c86008e00000000000000000049424d00504800300000000020261125135518000000000000"
    ...     "0000004800000300000000000000000000000000000000000000005548001800000000800000000000000000000000"
    ...     "000000004850001401000000010102001000000100000000")
    >>> event = parse_hotplug_event(blob)
    >>> event.resource, event.action, event.id_type, hex(event.index)
    (1, 1, 2, '0x10000001')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RESOURCE_CPU, RESOURCE_MEMORY, RESOURCE_SLOT, RESOURCE_PHB, RESOURCE_PCI, RESOURCE_PMEM = 1, 2, 3, 4, 5, 6
ACTION_ADD, ACTION_REMOVE = 1, 2
ID_NAME, ID_INDEX, ID_COUNT, ID_COUNT_INDEXED = 1, 2, 3, 4
EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG = 0x40000000, 0x10000000
LOG_FORMAT_PLATFORM_EVENT = 14


class MalformedLog(ValueError):
    """The buffer is not a PAPR v6 platform event log with a hotplug section."""


@dataclass(frozen=True)
class HotplugEvent:
    """The HP section of a hotplug event log."""

    resource: int
    action: int
    id_type: int
    index: int = 0  # DRC index (ID_INDEX) or first index (ID_COUNT_INDEXED)
    count: int = 0  # DRC count (ID_COUNT, ID_COUNT_INDEXED)
    name: str = ""  # DRC name (ID_NAME)


@dataclass(frozen=True)
class Section:
    id: str
    offset: int
    length: int


def sections(blob: bytes) -> list[Section]:
    """The v6 log's sections (PH, UH, HP, ...), walked by their lengths as the kernel does."""
    if len(blob) < 24:
        raise MalformedLog(f"{len(blob)} bytes: shorter than a v6 header")
    summary, extended_length = struct.unpack_from(">II", blob, 0)
    if summary >> 24 != 6 or extended_length < 16:
        raise MalformedLog(f"summary {summary:#010x}, extended length {extended_length}: not a v6 extended log")
    if blob[10] & 0x0F != LOG_FORMAT_PLATFORM_EVENT or blob[20:24] != b"IBM\0":
        raise MalformedLog("not an IBM platform event log")
    found = []
    offset = 24
    end = min(len(blob), 8 + extended_length)
    while offset + 4 <= end:
        section_id, length = struct.unpack_from(">2sH", blob, offset)
        if length < 4:
            raise MalformedLog(f"section at {offset} has length {length}")
        found.append(Section(section_id.decode("ascii", "replace"), offset, length))
        offset += length
    return found


def parse_hotplug_event(blob: bytes) -> HotplugEvent:
    """The hotplug event in a log returned by check-exception."""
    for section in sections(blob):
        if section.id == "HP":
            payload = blob[section.offset + 8 : section.offset + section.length]
            if len(payload) < 4:
                raise MalformedLog("HP section too short")
            resource, action, id_type = payload[0], payload[1], payload[2]
            body = payload[4:]
            if id_type == ID_NAME:
                return HotplugEvent(resource, action, id_type, name=body.split(b"\0")[0].decode())
            if id_type == ID_INDEX:
                return HotplugEvent(resource, action, id_type, index=struct.unpack_from(">I", body)[0])
            if id_type == ID_COUNT:
                return HotplugEvent(resource, action, id_type, count=struct.unpack_from(">I", body)[0])
            count, index = struct.unpack_from(">II", body)
            return HotplugEvent(resource, action, id_type, index=index, count=count)
    raise MalformedLog("no HP section")
