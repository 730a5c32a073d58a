"""ibm,client-architecture-support: the option-vector-5 bits papr-emu acts on.

The vector is given as the guest holds it (and as /chosen/ibm,architecture-vec-5
shows it): byte 0 is the length byte (the number of bytes that follow, minus one),
and "byte N" of LoPAR and of Linux's OV5 constants (``byte << 8 | mask``) is
``vector[N]``.

Example::

    >>> vector = bytearray(24); vector[0] = 22  # 23 bytes follow the length byte
    >>> vector[2], vector[6], vector[22] = 0x20, 0x04, 0xC0
    >>> options = CasOptions.from_vector(bytes(vector))
    >>> options.hotplug_events, options.drconf_memory, options.dynamic_memory_v2, options.drc_info
    (True, True, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import InvalidArgument

# (byte, mask) as in Linux's OV5_* constants.
OV5_DRCONF_MEMORY: Final = (2, 0x20)
OV5_HP_EVT: Final = (6, 0x04)
OV5_DRMEM_V2: Final = (22, 0x80)
OV5_DRC_INFO: Final = (22, 0x40)
PRE_CAS_VECTOR: Final = b"\x00\x00"  # QEMU 7.2's /chosen/ibm,architecture-vec-5 before CAS


@dataclass(frozen=True, slots=True)
class CasOptions:
    """What the guest negotiated; all False before CAS."""

    vector: bytes = PRE_CAS_VECTOR
    negotiated: bool = False
    hotplug_events: bool = False  # dedicated hot-plug event source; count-indexed DIMM adds
    drconf_memory: bool = False  # /ibm,dynamic-reconfiguration-memory
    dynamic_memory_v2: bool = False  # ibm,dynamic-memory-v2 instead of ibm,dynamic-memory
    drc_info: bool = False  # ibm,drc-info instead of the four ibm,drc-* arrays

    @property
    def hotplug_events_or_none(self) -> bool:
        """QEMU's ``spapr_memory_hot_unplug_supported``: the hot-plug event source was negotiated, or
        nothing was (before CAS, or a vector of none of the options QEMU offers), so a guest can still
        be told of an unplug. Else QEMU refuses a DIMM's device_del."""
        return self.hotplug_events or not (self.drconf_memory or self.dynamic_memory_v2 or self.drc_info)

    @classmethod
    def from_vector(cls, vector: bytes) -> CasOptions:
        if len(vector) < 2:
            raise InvalidArgument("option_vector_5", vector.hex(), "too short: a length byte and at least one byte")
        if vector[0] + 2 != len(vector):
            raise InvalidArgument(
                "option_vector_5",
                vector.hex(),
                f"the length byte says {vector[0] + 1} bytes follow, but {len(vector) - 1} do",
            )

        def bit(option: tuple[int, int]) -> bool:
            byte, mask = option
            return byte < len(vector) and bool(vector[byte] & mask)

        return cls(
            vector=bytes(vector),
            negotiated=True,
            hotplug_events=bit(OV5_HP_EVT),
            drconf_memory=bit(OV5_DRCONF_MEMORY),
            dynamic_memory_v2=bit(OV5_DRMEM_V2),
            drc_info=bit(OV5_DRC_INFO),
        )
