"""papr-emu client library: connect to a server and drive it as a guest or a manager.

Example::

    from papr_emu_client import Guest, connect

    client = connect()                                   # honours $PAPR_EMU_HOST, $PAPR_EMU_CA, $PAPR_EMU_TOKEN...
    guest = Guest(client.rtas, "default")
    guest.acquire_drc(0x80000004)
    node = guest.configure_connector(0x80000004)         # memory@40000000
"""

from .connect import HOST_VARIABLE, BearerToken, Client, Credentials, connect, connect_with, target_from_env
from .errorlog import HotplugEvent, MalformedLog, parse_hotplug_event
from .guest import DrcBatch, DrcResult, Guest, RtasError
from .reference_guest import Outcome, ReferenceGuest, RefusalPolicy
from .transport import RtasTransport, Transport
from .workarea import CcItem, DtNode, new_work_area, read_item

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
