"""The platform model: pure, deterministic, and free of gRPC.

Example::

    >>> from papr_emu.model import Platforms, default_geometry
    >>> platform = Platforms().create("default", default_geometry())
    >>> platform.get_sensor_state(9003, 0x10000000)
    (0, 1)
"""

from . import rtas
from .cas import CasOptions
from .devices import (
    DEVICE_CLASSES,
    CpuCoreParams,
    DeviceInfo,
    DeviceType,
    DimmParams,
    DimmRequest,
    NvdimmParams,
    NvdimmRequest,
    PciFunctionParams,
    PciModel,
    PhbParams,
    PlugRequest,
)
from .drc import DRC_TYPES, DrcState, DrcType, RefusalSignal, drc_type_by_shift
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PlatformError,
    ResourceExhausted,
)
from .events import (
    DeviceAdded,
    DeviceDeleted,
    Event,
    Subscription,
    SubscriptionOverflow,
    UnplugRejected,
    UnplugRequested,
    UnplugTimedOut,
)
from .geometry import Geometry, MemoryModel
from .limits import LIMITS, Budget, LimitOption, Limits
from .mailbox import SubscriptionClosed
from .memory_requests import MemoryAction, MemoryOutcome, MemoryRequest, MemoryRequestFinished
from .platform import Platform
from .registry import DEFAULT_PLATFORM, Platforms, default_geometry
from .rtas_events import Interrupt, InterruptWatch
from .snapshots import ConnectorInfo, PlatformGauges, PlatformInfo, UnplugOutcome
from .unplug_timeouts import TIMEOUT_KEYS, UnplugTimeouts, timeout_key

__all__ = [
    "DEFAULT_PLATFORM",
    "DEVICE_CLASSES",
    "DRC_TYPES",
    "LIMITS",
    "TIMEOUT_KEYS",
    "AlreadyExists",
    "Budget",
    "CasOptions",
    "ConnectorInfo",
    "CpuCoreParams",
    "DeviceAdded",
    "DeviceDeleted",
    "DeviceInfo",
    "DeviceType",
    "DimmParams",
    "DimmRequest",
    "DrcState",
    "DrcType",
    "Event",
    "FailedPrecondition",
    "Geometry",
    "Interrupt",
    "InterruptWatch",
    "InvalidArgument",
    "LimitOption",
    "Limits",
    "MemoryAction",
    "MemoryModel",
    "MemoryOutcome",
    "MemoryRequest",
    "MemoryRequestFinished",
    "NotFound",
    "NvdimmParams",
    "NvdimmRequest",
    "OutOfRange",
    "PciFunctionParams",
    "PciModel",
    "PhbParams",
    "Platform",
    "PlatformError",
    "PlatformGauges",
    "PlatformInfo",
    "Platforms",
    "PlugRequest",
    "RefusalSignal",
    "ResourceExhausted",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionOverflow",
    "UnplugOutcome",
    "UnplugRejected",
    "UnplugRequested",
    "UnplugTimedOut",
    "UnplugTimeouts",
    "default_geometry",
    "drc_type_by_shift",
    "rtas",
    "timeout_key",
]
