"""How long an unplug may stay pending, per device type, before the platform cancels it.

Example::

    >>> timeouts = UnplugTimeouts(cpu_core=30)
    >>> timeouts.for_type(DeviceType.CPU_CORE), timeouts.for_type(DeviceType.DIMM)
    (30.0, None)
    >>> UnplugTimeouts(dimm=-1)
    Traceback (most recent call last):
    ...
    papr_emu.model.errors.InvalidArgument: dimm: -1: must be a positive number of seconds
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from .devices import DeviceType, device_class_of
from .errors import InvalidArgument


def timeout_key(device_type: DeviceType) -> str:
    """The keyword a device type's timeout goes by ("cpu_core", "dimm", ...)."""
    return device_type.name.lower()


#: The device types an unplug timeout can apply to: those unplugged with UnplugDevice.
TIMED_TYPES: Final = tuple(t for t in DeviceType if device_class_of(t).unplug_timeout)

#: Every keyword :class:`UnplugTimeouts` accepts, one per such device type.
TIMEOUT_KEYS: Final = tuple(timeout_key(t) for t in TIMED_TYPES)


class UnplugTimeouts:
    """Per device type: seconds an unplug may stay pending before the platform cancels it.

    None (the default for every type) means no timeout: QEMU has none, and a guest
    that is slow is not a guest that refused. Memory never gets one unless asked:
    offlining memory under load can take arbitrarily long, so any fixed timeout
    would cancel unplugs the guest is still completing.
    """

    __slots__ = ("_seconds",)

    def __init__(self, **seconds: float | None) -> None:
        """Keywords from :data:`TIMEOUT_KEYS`; raises InvalidArgument naming the key that is wrong."""
        by_type: dict[DeviceType, float] = {}
        for device_type in TIMED_TYPES:
            value = seconds.pop(timeout_key(device_type), None)
            if value is None:
                continue
            try:  # a huge int from TOML does not fit a float: as wrong as a negative one
                number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
            except OverflowError:
                number = math.inf
            if not 0 < number < math.inf:
                raise InvalidArgument(timeout_key(device_type), value, "must be a positive number of seconds")
            by_type[device_type] = number
        for key, value in seconds.items():
            raise InvalidArgument(key, value, f"is not a device type (one of {', '.join(TIMEOUT_KEYS)})")
        self._seconds: Mapping[DeviceType, float] = by_type

    def for_type(self, device_type: DeviceType) -> float | None:
        return self._seconds.get(device_type)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnplugTimeouts) and self._seconds == other._seconds

    def __hash__(self) -> int:
        return hash(frozenset(self._seconds.items()))

    def __repr__(self) -> str:
        set_ = ", ".join(f"{timeout_key(t)}={s}" for t, s in self._seconds.items())
        return f"UnplugTimeouts({set_})"
