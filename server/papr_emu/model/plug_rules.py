"""The checks every plug request passes before its device type's own rules.

Example::

    >>> from papr_emu.model import Geometry
    >>> from papr_emu.model.devices import DimmRequest, Inventory
    >>> g = Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4)
    >>> prepare(g, Inventory(), "dimm1", DimmRequest(size=512 << 20), hotplugged=True).drc_indexes
    range(2147483652, 2147483654)
"""

from __future__ import annotations

from .devices import DEVICE_ID_PATTERN, Device, Inventory, PlugContext, PlugRequest, device_class_for
from .errors import AlreadyExists, InvalidArgument
from .geometry import Geometry


def prepare(
    geometry: Geometry, inventory: Inventory[Device], device_id: str, request: PlugRequest, hotplugged: bool
) -> Device:
    """The device a plug request becomes (an empty id gets one picked), or the error QEMU would refuse it with."""
    device_class = device_class_for(request)
    device_id = device_id or device_class.default_id(request, inventory)
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise InvalidArgument(
            "id", device_id, "must be a letter followed by letters, digits, '-', '.' or '_' (at most 64)"
        )
    if device_id in inventory:
        raise AlreadyExists("id", device_id, "a device with this id exists")
    return device_class.prepare(PlugContext(geometry, inventory, hotplugged), device_id, request)
