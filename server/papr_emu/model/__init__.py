"""The platform model: pure, deterministic, and free of gRPC.

Example::

    >>> from papr_emu.model import Platforms, default_geometry
    >>> platform = Platforms().create("default", default_geometry())
    >>> platform.get_sensor_state(9003, 0x10000000)
    (0, 1)
"""

from . import rtas
from .devices import CpuCoreParams, DeviceInfo, DeviceType, PciFunctionParams, PciModel, PhbParams
from .drc import DRC_TYPES, DrcState, DrcType
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, OutOfRange, PlatformError
from .events import (
    DeviceAdded,
    DeviceDeleted,
    Event,
    Subscription,
    SubscriptionClosed,
    SubscriptionOverflow,
    UnplugRejected,
    UnplugRequested,
    UnplugTimedOut,
)
from .geometry import Geometry
from .platform import ConnectorInfo, Platform, PlatformInfo, UnplugOutcome, UnplugTimeouts
from .plug_rules import DimmRequest, PlugRequest
from .registry import DEFAULT_PLATFORM, Platforms, default_geometry

__all__ = [
    "DEFAULT_PLATFORM",
    "DRC_TYPES",
    "AlreadyExists",
    "ConnectorInfo",
    "CpuCoreParams",
    "DeviceAdded",
    "DeviceDeleted",
    "DeviceInfo",
    "DeviceType",
    "DimmRequest",
    "DrcState",
    "DrcType",
    "Event",
    "FailedPrecondition",
    "Geometry",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PciFunctionParams",
    "PciModel",
    "PhbParams",
    "Platform",
    "PlatformError",
    "PlatformInfo",
    "Platforms",
    "PlugRequest",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionOverflow",
    "UnplugOutcome",
    "UnplugRejected",
    "UnplugRequested",
    "UnplugTimedOut",
    "UnplugTimeouts",
    "default_geometry",
    "rtas",
]
