"""papr-emu client library: connect to a server and drive it as a guest or a manager.

Example::

    from papr_emu_client import Guest, connect

    client = connect()                                   # honours $PAPR_EMU_HOST, $PAPR_EMU_CA, $PAPR_EMU_TOKEN...
    guest = Guest(client.rtas, "default")
    guest.acquire_drc(0x80000004)
    node = guest.configure_connector(0x80000004)         # memory@40000000
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager: the function `connect` and its module share a name, and importing the module (which any
# client module does) would otherwise leave the module where the function belongs.
from .connect import HOST_VARIABLE, BearerToken, Client, Credentials, connect, connect_with, target_from_env

if TYPE_CHECKING:
    from .errorlog import HotplugEvent, MalformedLog, parse_hotplug_event
    from .guest import DrcBatch, DrcResult, Guest, RtasError
    from .reference_guest import Outcome, ReferenceGuest, RefusalPolicy
    from .transport import RtasTransport, Transport
    from .workarea import CcItem, DtNode, new_work_area, read_item

#: Where each other public name lives. The package imports a module when one of its names is
#: first used (PEP 562): the server imports only the constants and sizes it shares, and starts faster.
_HOMES = {
    "errorlog": ("HotplugEvent", "MalformedLog", "parse_hotplug_event"),
    "guest": ("DrcBatch", "DrcResult", "Guest", "RtasError"),
    "reference_guest": ("Outcome", "ReferenceGuest", "RefusalPolicy"),
    "transport": ("RtasTransport", "Transport"),
    "workarea": ("CcItem", "DtNode", "new_work_area", "read_item"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'papr_emu_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


__all__ = [
    "HOST_VARIABLE",
    "BearerToken",
    "CcItem",
    "Client",
    "Credentials",
    "DrcBatch",
    "DrcResult",
    "DtNode",
    "Guest",
    "HotplugEvent",
    "MalformedLog",
    "Outcome",
    "ReferenceGuest",
    "RefusalPolicy",
    "RtasError",
    "RtasTransport",
    "Transport",
    "connect",
    "connect_with",
    "new_work_area",
    "parse_hotplug_event",
    "read_item",
    "target_from_env",
]
