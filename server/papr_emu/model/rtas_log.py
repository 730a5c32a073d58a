"""RTAS hotplug event logs (PAPR v6 platform event log with PH, UH and HP sections).

The byte layout is QEMU 7.2's (116 bytes, captured in docs/qemu-7.2/fragments.json),
with one fix: the platform log id is big-endian, like every other field (QEMU
stores it without byte-swapping; see docs/compat.md).

Example::

    >>> log = HotplugLog(HP_RESOURCE_CPU, HP_ACTION_ADD, HP_ID_DRC_INDEX, index=0x10000001)
    >>> blob = encode_hotplug_log(log, plid=0, when=datetime(2026, 11, 25, 13, 55, 18))
    >>> len(blob), blob[:4].hex(), blob[0x68:0x74].hex()
    (116, '063460e5', '010102001000000100000000')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Final

LOG_SIZE: Final = 116  # 8-byte fixed header + 108-byte extended log
EXTENDED_LENGTH: Final = 108
SUMMARY_HOTPLUG: Final = 0x063460E5  # v6, severity event, not recovered, extended, initiator hotplug, type 0xE5

# Event classes (check-exception / event-scan mask bits) and QEMU's interrupt numbers.
EVENT_CLASS_EPOW: Final = 0x40000000
EVENT_CLASS_HOTPLUG: Final = 0x10000000
IRQ_EPOW: Final = 0x1000
IRQ_HOTPLUG: Final = 0x1001

# HP section: resource types, actions, identifier types.
HP_RESOURCE_CPU: Final = 1
HP_RESOURCE_MEMORY: Final = 2
HP_RESOURCE_SLOT: Final = 3
HP_RESOURCE_PHB: Final = 4
HP_RESOURCE_PCI: Final = 5
HP_RESOURCE_PMEM: Final = 6
HP_ACTION_ADD: Final = 1
HP_ACTION_REMOVE: Final = 2
HP_ID_DRC_NAME: Final = 1
HP_ID_DRC_INDEX: Final = 2
HP_ID_DRC_COUNT: Final = 3
HP_ID_DRC_COUNT_INDEXED: Final = 4


@dataclass(frozen=True, slots=True)
class HotplugLog:
    """What one hotplug event says: resource, action, and the identifier."""

    resource: int
    action: int
    id_type: int
    index: int = 0  # DRC index (id type 2) or first DRC index (id type 4)
    count: int = 0  # DRC count (id types 3 and 4)

    def identifier_words(self) -> tuple[int, int]:
        if self.id_type == HP_ID_DRC_INDEX:
            return self.index, 0
        if self.id_type == HP_ID_DRC_COUNT:
            return self.count, 0
        return self.count, self.index


def _bcd(value: int, digits: int) -> int:
    result = 0
    for position in range(digits):
        result |= (value // 10**position % 10) << (4 * position)
    return result


def encode_hotplug_log(log: HotplugLog, plid: int, when: datetime) -> bytes:
    """The 116 bytes check-exception writes for a hotplug event."""
    date = (_bcd(when.year, 4) << 16) | (_bcd(when.month, 2) << 8) | _bcd(when.day, 2)
    time = (_bcd(when.hour, 2) << 24) | (_bcd(when.minute, 2) << 16) | (_bcd(when.second, 2) << 8)
    header = struct.pack(">II", SUMMARY_HOTPLUG, EXTENDED_LENGTH)
    # v6 extended header: valid | new log | big-endian; PowerPC format | platform event log format 14.
    extended = struct.pack(">BBB9x4s", 0x86, 0, 0x8E, b"IBM\0")
    main_a = struct.pack(
        ">2sHBBHII8xcxxB4x8xI4x", b"PH", 48, 0, 0, 0, date, time, b"H", 3, plid & 0xFFFFFFFF
    )  # creator 'H' (hypervisor), 3 sections
    main_b = struct.pack(">2sHBBHBBBB4x2xH4x", b"UH", 24, 0, 0, 0, 0x80, 0, 0, 0, 0)  # subsystem 0x80: hotplug
    word0, word1 = log.identifier_words()
    hotplug = struct.pack(">2sHBBHBBBBII", b"HP", 20, 1, 0, 0, log.resource, log.action, log.id_type, 0, word0, word1)
    blob = header + extended + main_a + main_b + hotplug
    assert len(blob) == LOG_SIZE
    return blob
