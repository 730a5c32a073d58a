"""Immutable snapshots the platform hands to callers outside its lock.

Example::

    >>> from papr_emu.model.drc import LMB, Drc
    >>> from papr_emu.model.drc_table import DrcRange
    >>> info = ConnectorInfo.of(Drc(LMB, 0x80000004), DrcRange(LMB, 4, 12, 1, "/"))
    >>> info.name, info.state.name, info.device_id
    ('LMB 4', 'LOGICAL_UNUSABLE', '')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import rtas
from .cas import CasOptions
from .devices import DeviceInfo
from .drc import Drc, DrcState, DrcType
from .drc_table import DrcRange
from .geometry import Geometry
from .unplug_timeouts import UnplugTimeouts


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    """An immutable snapshot of one connector."""

    index: int
    name: str
    type: DrcType
    state: DrcState
    entity_sense: int
    device_id: str
    unplug_pending: bool
    dr_indicator: int
    parent_path: str
    configure_in_progress: bool
    power_domain: int = rtas.LIVE_INSERTION_DOMAIN

    @classmethod
    def of(cls, drc: Drc[Any], drc_range: DrcRange) -> ConnectorInfo:
        return cls(
            index=drc.index,
            name=drc.name,
            type=drc.type,
            state=drc.state,
            entity_sense=drc.entity_sense(),
            device_id=drc.device.id if drc.device is not None else "",
            unplug_pending=drc.unplug_requested,
            dr_indicator=drc.dr_indicator,
            parent_path=drc_range.parent_path,
            configure_in_progress=drc.cursor > 0,
        )


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """An immutable snapshot of a platform's shape."""

    name: str
    geometry: Geometry
    connector_counts: tuple[tuple[DrcType, int], ...]
    device_count: int
    last_event_sequence: int
    unplug_timeouts: UnplugTimeouts
    pending_rtas_events: int
    options: CasOptions


@dataclass(frozen=True, slots=True)
class PlatformGauges:
    """A platform's counts now, for the metrics read at scrape time."""

    attached_lmbs: int  # LMB connectors with a DIMM attached
    pending_unplugs: int  # devices whose unplug was requested and has not completed
    queued_event_logs: int  # RTAS event logs waiting for check-exception
    faults_fired: int = 0  # fault rules fired since the platform was made (or restored) in this run
    conduct_findings: int = 0  # conduct findings ever made (kept across restores)


@dataclass(frozen=True, slots=True)
class UnplugOutcome:
    """What an unplug request did: deleted at once, or now waiting for the guest."""

    deleted: bool
    device: DeviceInfo
