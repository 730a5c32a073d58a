"""JSON for the model's plain values: dataclasses, enums, bytes, sets and ranges, tagged.

Only the classes registered in :data:`CLASSES` can come back out of a snapshot (it may
come from anyone with access to the API): a tag naming anything else is an error, never
an import.

Example::

    >>> from papr_emu.model.devices import DimmParams
    >>> data = encode(DimmParams(size=256 << 20, slot=1, address=1 << 30))
    >>> data
    {'__type__': 'DimmParams', 'size': 268435456, 'slot': 1, 'address': 1073741824}
    >>> decode(data) == DimmParams(256 << 20, 1, 1 << 30)
    True
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final

from .conduct import Finding, FindingKind
from .devices import (
    DeviceInfo,
    DeviceType,
    DimmParams,
    DimmRequest,
    LmbParams,
    NvdimmParams,
    NvdimmRequest,
    PciFunctionParams,
    PciModel,
    PhbParams,
)
from .devices.cpu_core import CpuCoreParams
from .drc import DrcState, RefusalSignal
from .events import (
    ConductFindingEvent,
    DeviceAdded,
    DeviceDeleted,
    FaultFired,
    UnplugRejected,
    UnplugRequested,
    UnplugTimedOut,
)
from .faults import Call, Effect, FaultRule
from .memory_requests import MemoryAction, MemoryOutcome, MemoryRequest, MemoryRequestFinished
from .rtas_log import HotplugLog

#: Every class a snapshot may name, by its name.
CLASSES: Final[dict[str, type]] = {
    cls.__name__: cls
    for cls in (
        DeviceInfo, DeviceType, DimmParams, DimmRequest, LmbParams, NvdimmParams, NvdimmRequest, PciFunctionParams,
        PciModel, PhbParams, CpuCoreParams, DrcState, RefusalSignal, DeviceAdded, DeviceDeleted, UnplugRejected,
        UnplugRequested, UnplugTimedOut, FaultFired, ConductFindingEvent, Finding, FindingKind, Call, Effect,
        MemoryAction, MemoryOutcome, MemoryRequest, MemoryRequestFinished, HotplugLog, FaultRule,
    )
}  # fmt: skip


class CodecError(ValueError):
    """A value that does not decode: what and where."""


def encode(value: Any) -> Any:
    """A JSON-ready form of ``value``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": type(value).__name__, "name": value.name}  # names: some values are data
    if isinstance(value, bytes):
        return {"__bytes__": value.hex()}
    if isinstance(value, range):
        return {"__range__": [value.start, value.stop]}
    if isinstance(value, set | frozenset):
        return {"__set__": sorted(value)}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A field named _x is state the class rebuilds from the others (FaultRule's random
        # generator, from its seed and how many calls it drew for): not data.
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name[0] != "_"}
        return {"__type__": type(value).__name__, **fields}
    raise CodecError(f"cannot encode a {type(value).__name__}")


def _registered(name: object, where: str) -> type:
    cls = CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CodecError(f"{where}: {name!r} is not a type a snapshot may hold")
    return cls


def decode(data: Any, where: str = "value") -> Any:
    """The value :func:`encode` made; CodecError naming ``where`` for anything else."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return tuple(decode(v, f"{where}[{n}]") for n, v in enumerate(data))
    if not isinstance(data, dict):
        raise CodecError(f"{where}: {type(data).__name__} is not a snapshot value")
    try:
        if "__enum__" in data:
            enum_class = _registered(data["__enum__"], where)
            assert issubclass(enum_class, enum.Enum)
            return enum_class[data["name"]]
        if "__bytes__" in data:
            return bytes.fromhex(data["__bytes__"])
        if "__range__" in data:
            start, stop = data["__range__"]
            return range(int(start), int(stop))
        if "__set__" in data:
            return {int(v) for v in data["__set__"]}
        cls = _registered(data.get("__type__"), where)
        fields = {k: decode(v, f"{where}.{k}") for k, v in data.items() if k != "__type__"}
        return cls(**fields)
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise CodecError(f"{where}: {error}") from None


__all__ = ["CLASSES", "CodecError", "decode", "encode"]
