"""Dynamic Reconfiguration Connectors: states, types and the RTAS transitions.

Modelled on QEMU 7.2 ``hw/ppc/spapr_drc.c``: each transition is a small
function returning an RTAS status, and :data:`LOGICAL_TRANSITIONS` /
:data:`PHYSICAL_TRANSITIONS` say, state by state, which one an operation
runs. What differs per connector type (index type bits, name prefix, type
string, logical or physical, the LMB isolate guard) is data on
:class:`DrcType`. :func:`set_indicator` decodes a set-indicator call into an
operation, and :func:`configure_step` is one ibm,configure-connector call.

Example::

    >>> LMB.index(4), LMB.name(4)
    (2147483652, 'LMB 4')
    >>> drc = Drc(LMB, LMB.index(4))
    >>> drc.state, drc.entity_sense()
    (<DrcState.LOGICAL_UNUSABLE: 1>, 2)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from . import rtas, work_area
from .devicetree import Node, WalkItem
from .rtas_log import HP_RESOURCE_CPU, HP_RESOURCE_MEMORY, HP_RESOURCE_PCI, HP_RESOURCE_PHB, HP_RESOURCE_PMEM


class DrcState(enum.IntEnum):
    """QEMU's SpaprDrcState values (migrated by QEMU: they never change)."""

    INVALID = 0
    LOGICAL_UNUSABLE = 1
    LOGICAL_AVAILABLE = 2
    LOGICAL_UNISOLATE = 3
    LOGICAL_CONFIGURED = 4
    PHYSICAL_AVAILABLE = 5
    PHYSICAL_POWERON = 6
    PHYSICAL_UNISOLATE = 7
    PHYSICAL_CONFIGURED = 8


class Operation(enum.Enum):
    """A guest set-indicator operation on a connector."""

    SET_USABLE = "allocation-state usable"
    SET_UNUSABLE = "allocation-state unusable"
    UNISOLATE = "isolation-state unisolate"
    ISOLATE = "isolation-state isolate"


class RefusalSignal(enum.Enum):
    """How a guest says it refuses a pending unplug."""

    CONFIGURE_CONNECTOR = "configure-connector"
    UNISOLATE = "unisolate"


class Occupant(Protocol):
    """What a connector knows of the device attached to it."""

    @property
    def id(self) -> str: ...


OccupantT = TypeVar("OccupantT", bound=Occupant)


class DrcOwner(Protocol):
    """What a transition may ask of the platform that owns the connector."""

    def release(self, drc: Drc[Any]) -> None:
        """The device on ``drc`` is given back: detach it (its unplug may complete)."""

    def refuse_unplug(self, drc: Drc[Any], signal: RefusalSignal) -> None:
        """The guest refused the pending unplug of the device on ``drc``."""

    def fragment(self, drc: Drc[Any]) -> Node:
        """The device-tree node configure-connector hands out for ``drc`` (it has a device)."""

    # The hooks below let a platform hand out and take back resources the guest asks for
    # itself (PowerVM-style LMBs); QEMU's platforms answer False / do nothing.

    def provide(self, drc: Drc[Any]) -> bool:
        """The guest acquires an empty ``drc``: attach a device to it now if the platform grants one."""

    def may_isolate(self, drc: Drc[Any]) -> bool:
        """The guest isolates ``drc`` with no unplug pending where the type needs one: allow it (and mark it)?"""

    def released_on_deallocate(self, drc: Drc[Any]) -> bool:
        """The guest sets ``drc`` unusable with no unplug pending: does its device go all the same?"""

    def configured(self, drc: Drc[Any]) -> None:
        """A configure-connector sequence on ``drc`` completed (it is in its ready state)."""


Transition = Callable[["Drc[Any]", DrcOwner], int]


class Drc(Generic[OccupantT]):
    """One connector: its state, attached device, unplug flag and cursor.

    ``walk`` and ``cursor`` hold the configure-connector position: the
    fragment being walked (built when a walk starts) and the next item.
    """

    __slots__ = ("cursor", "device", "dr_indicator", "index", "state", "type", "unplug_requested", "walk")

    def __init__(self, drc_type: DrcType, index: int) -> None:
        self.type = drc_type
        self.index = index
        self.state: DrcState = drc_type.connector_class.empty_state
        self.device: OccupantT | None = None
        self.unplug_requested = False
        self.dr_indicator = rtas.DR_INDICATOR_INACTIVE
        self.walk: tuple[WalkItem, ...] | None = None
        self.cursor = 0

    @property
    def id(self) -> int:
        return self.type.id(self.index)

    @property
    def name(self) -> str:
        return self.type.name(self.id)

    def entity_sense(self) -> int:
        """What get-sensor-state(dr-entity-sense) reports (QEMU 7.2)."""
        return self.type.connector_class.entity_sense(self)

    def is_initial(self) -> bool:
        """As made: empty state, no device, no unplug, indicator off, no walk under way."""
        return (
            self.state == self.type.connector_class.empty_state
            and self.device is None
            and not self.unplug_requested
            and self.dr_indicator == rtas.DR_INDICATOR_INACTIVE
            and self.walk is None
        )

    def rewind(self) -> None:
        """Put the configure-connector cursor back at the fragment's start."""
        self.walk = None
        self.cursor = 0

    def reset(self) -> None:
        """QEMU's DRC reset (coldplug, machine reset): ready if a device is attached."""
        connector_class = self.type.connector_class
        self.state = connector_class.ready_state if self.device is not None else connector_class.empty_state
        if connector_class.physical:
            self.dr_indicator = rtas.DR_INDICATOR_ACTIVE if self.device is not None else rtas.DR_INDICATOR_INACTIVE
        self.rewind()

    def __repr__(self) -> str:
        device = self.device.id if self.device is not None else None
        return f"Drc({self.index:#x} {self.state.name} device={device} unplug={self.unplug_requested})"


# --- transitions -----------------------------------------------------------------------------------


def no_op(drc: Drc[Any], owner: DrcOwner) -> int:
    """A null transition always succeeds (LoPAR)."""
    return rtas.SUCCESS


def refused(drc: Drc[Any], owner: DrcOwner) -> int:
    """The state forbids the operation: QEMU answers -3."""
    return rtas.PARAMETER_ERROR


def allocate(drc: Drc[Any], owner: DrcOwner) -> int:
    """UNUSABLE -> AVAILABLE: the guest acquires the resource (one the platform may provide now)."""
    if drc.device is None and not drc.unplug_requested:
        owner.provide(drc)
    if drc.device is None or drc.unplug_requested:
        # Nothing to allocate, or the host wants it gone: "no such indicator" (-3).
        return rtas.PARAMETER_ERROR
    drc.state = DrcState.LOGICAL_AVAILABLE
    return rtas.SUCCESS


def deallocate(drc: Drc[Any], owner: DrcOwner) -> int:
    """AVAILABLE -> UNUSABLE: the guest gives the resource back; completes a pending unplug."""
    drc.state = DrcState.LOGICAL_UNUSABLE
    if drc.unplug_requested or (drc.device is not None and owner.released_on_deallocate(drc)):
        owner.release(drc)
    return rtas.SUCCESS


def unisolate_logical(drc: Drc[Any], owner: DrcOwner) -> int:
    """AVAILABLE -> UNISOLATE; configure-connector starts from the top."""
    drc.state = DrcState.LOGICAL_UNISOLATE
    drc.rewind()
    return rtas.SUCCESS


def unisolate_owned(drc: Drc[Any], owner: DrcOwner) -> int:
    """UNISOLATE/CONFIGURED: a no-op, unless an unplug is pending: then the guest refuses it."""
    if drc.unplug_requested and drc.device is not None:
        owner.refuse_unplug(drc, RefusalSignal.UNISOLATE)
    return rtas.SUCCESS


def isolate_logical(drc: Drc[Any], owner: DrcOwner) -> int:
    """CONFIGURED -> AVAILABLE (no release here; that waits for allocation unusable)."""
    if drc.type.isolate_needs_pending_unplug and not drc.unplug_requested and not owner.may_isolate(drc):
        # QEMU: memory removed "by count" may pick LMBs of a DIMM that is not
        # being unplugged; refusing keeps the guest from giving back memory
        # the platform cannot reclaim.
        return rtas.HARDWARE_ERROR
    drc.state = DrcState.LOGICAL_AVAILABLE
    return rtas.SUCCESS


def unisolate_physical(drc: Drc[Any], owner: DrcOwner) -> int:
    """POWERON -> UNISOLATE, only with a device in the slot."""
    if drc.device is None:
        return rtas.PARAMETER_ERROR
    drc.state = DrcState.PHYSICAL_UNISOLATE
    drc.rewind()
    return rtas.SUCCESS


def isolate_physical(drc: Drc[Any], owner: DrcOwner) -> int:
    """CONFIGURED -> POWERON; completes a pending unplug."""
    drc.state = DrcState.PHYSICAL_POWERON
    if drc.unplug_requested:
        owner.release(drc)
    return rtas.SUCCESS


_S = DrcState

#: Logical connectors (CPU, LMB, PHB, PMEM): operation -> state -> transition.
LOGICAL_TRANSITIONS: Final[Mapping[Operation, Mapping[DrcState, Transition]]] = {
    Operation.SET_USABLE: {
        _S.LOGICAL_UNUSABLE: allocate,
        _S.LOGICAL_AVAILABLE: no_op,
        _S.LOGICAL_UNISOLATE: no_op,
        _S.LOGICAL_CONFIGURED: no_op,
    },
    Operation.SET_UNUSABLE: {
        _S.LOGICAL_UNUSABLE: no_op,
        _S.LOGICAL_AVAILABLE: deallocate,
        _S.LOGICAL_UNISOLATE: refused,
        _S.LOGICAL_CONFIGURED: refused,
    },
    Operation.UNISOLATE: {
        _S.LOGICAL_UNUSABLE: refused,
        _S.LOGICAL_AVAILABLE: unisolate_logical,
        _S.LOGICAL_UNISOLATE: unisolate_owned,
        _S.LOGICAL_CONFIGURED: unisolate_owned,
    },
    Operation.ISOLATE: {
        _S.LOGICAL_UNUSABLE: no_op,
        _S.LOGICAL_AVAILABLE: no_op,
        _S.LOGICAL_UNISOLATE: refused,  # not allowed before the fragment is configured
        _S.LOGICAL_CONFIGURED: isolate_logical,
    },
}

#: Physical connectors (PCI): no allocation state; no refusal semantics on unisolate.
PHYSICAL_TRANSITIONS: Final[Mapping[Operation, Mapping[DrcState, Transition]]] = {
    Operation.UNISOLATE: {
        _S.PHYSICAL_POWERON: unisolate_physical,
        _S.PHYSICAL_UNISOLATE: no_op,
        _S.PHYSICAL_CONFIGURED: no_op,
    },
    Operation.ISOLATE: {
        _S.PHYSICAL_POWERON: no_op,  # no release here, even with an unplug pending
        _S.PHYSICAL_UNISOLATE: refused,
        _S.PHYSICAL_CONFIGURED: isolate_physical,
    },
}


def _logical_sense(drc: Drc[Any]) -> int:
    return rtas.SENSE_UNUSABLE if drc.state == DrcState.LOGICAL_UNUSABLE else rtas.SENSE_PRESENT


def _physical_sense(drc: Drc[Any]) -> int:
    return rtas.SENSE_PRESENT if drc.device is not None else rtas.SENSE_EMPTY


@dataclass(frozen=True, slots=True)
class ConnectorClass:
    """Logical or physical: the states and transitions a connector follows."""

    physical: bool
    empty_state: DrcState
    ready_state: DrcState
    unisolate_state: DrcState
    transitions: Mapping[Operation, Mapping[DrcState, Transition]]
    entity_sense: Callable[[Drc[Any]], int]

    def configurable(self, state: DrcState) -> bool:
        """configure-connector may walk in the unisolate and the ready state."""
        return state in (self.unisolate_state, self.ready_state)


LOGICAL: Final = ConnectorClass(
    physical=False,
    empty_state=DrcState.LOGICAL_UNUSABLE,
    ready_state=DrcState.LOGICAL_CONFIGURED,
    unisolate_state=DrcState.LOGICAL_UNISOLATE,
    transitions=LOGICAL_TRANSITIONS,
    entity_sense=_logical_sense,
)

PHYSICAL: Final = ConnectorClass(
    physical=True,
    empty_state=DrcState.PHYSICAL_POWERON,
    ready_state=DrcState.PHYSICAL_CONFIGURED,
    unisolate_state=DrcState.PHYSICAL_UNISOLATE,
    transitions=PHYSICAL_TRANSITIONS,
    entity_sense=_physical_sense,
)


@dataclass(frozen=True, slots=True)
class DrcType:
    """What differs per connector type; all of it is data."""

    label: str  # short name: "CPU", "PHB", "PCI", "LMB", "PMEM"
    type_shift: int  # top nibble of the index; also QEMU's SpaprDrcType shift
    type_string: str  # ibm,drc-types
    name_prefix: str  # ibm,drc-names = prefix + decimal id
    connector_class: ConnectorClass
    hotplug_resource: int  # resource type in hotplug event logs (HP section)
    isolate_needs_pending_unplug: bool = False  # the LMB isolate guard (-1)
    configure_refuses_unplug: bool = False  # configure-connector with unplug pending = refusal

    def index(self, drc_id: int) -> int:
        return (self.type_shift << 28) | (drc_id & 0x0FFFFFFF)

    @staticmethod
    def id(index: int) -> int:
        """The connector id: the index without its type bits."""
        return index & 0x0FFFFFFF

    def name(self, drc_id: int) -> str:
        return f"{self.name_prefix}{drc_id}"

    @property
    def physical(self) -> bool:
        return self.connector_class.physical


CPU: Final = DrcType("CPU", 1, "CPU", "CPU ", LOGICAL, HP_RESOURCE_CPU)
PHB: Final = DrcType("PHB", 2, "PHB", "PHB ", LOGICAL, HP_RESOURCE_PHB)
PCI: Final = DrcType("PCI", 4, "28", "C", PHYSICAL, HP_RESOURCE_PCI)
LMB: Final = DrcType(
    "LMB",
    8,
    "MEM",
    "LMB ",
    LOGICAL,
    HP_RESOURCE_MEMORY,
    isolate_needs_pending_unplug=True,
    configure_refuses_unplug=True,
)
PMEM: Final = DrcType("PMEM", 9, "PMEM", "PMEM ", LOGICAL, HP_RESOURCE_PMEM)

DRC_TYPES: Final = (CPU, PHB, PCI, LMB, PMEM)
_DRC_TYPE_BY_SHIFT: Final = {t.type_shift: t for t in DRC_TYPES}


def drc_type_by_shift(type_shift: int) -> DrcType | None:
    """The connector type whose index carries ``type_shift`` in its top nibble (QEMU's SpaprDrcType)."""
    return _DRC_TYPE_BY_SHIFT.get(type_shift)


# --- RTAS calls on one connector -------------------------------------------------------------------

_ISOLATION_OPERATIONS: Final = {rtas.ISOLATE: Operation.ISOLATE, rtas.UNISOLATE: Operation.UNISOLATE}
_ALLOCATION_OPERATIONS: Final = {
    rtas.ALLOCATION_UNUSABLE: Operation.SET_UNUSABLE,
    rtas.ALLOCATION_USABLE: Operation.SET_USABLE,
}


def set_indicator(drc: Drc[Any], indicator_type: int, new_state: int, owner: DrcOwner) -> int:
    """RTAS set-indicator on ``drc``: decode the indicator into an operation and run its transition.

    Allocation state exists on logical connectors only, the DR indicator on physical ones;
    anything else is "no such indicator" (-3), as QEMU answers.
    """
    if indicator_type == rtas.ISOLATION_STATE:
        operation = _ISOLATION_OPERATIONS.get(new_state)
    elif indicator_type == rtas.ALLOCATION_STATE and not drc.type.physical:
        operation = _ALLOCATION_OPERATIONS.get(new_state)
    elif indicator_type == rtas.DR_INDICATOR and drc.type.physical:
        if new_state not in rtas.DR_INDICATOR_VALUES:
            return rtas.PARAMETER_ERROR
        drc.dr_indicator = new_state
        return rtas.SUCCESS
    else:
        return rtas.PARAMETER_ERROR
    if operation is None:
        return rtas.PARAMETER_ERROR
    transition = drc.type.connector_class.transitions[operation][drc.state]
    return transition(drc, owner)


def configure_step(drc: Drc[Any], out: bytearray, owner: DrcOwner) -> int:
    """One ibm,configure-connector call on ``drc``: write the next walk item into the work area ``out``.

    Returns the RTAS status: next child / next property / previous parent, complete at the
    fragment's end (the connector is then in its ready state), or an error.
    """
    if not drc.type.connector_class.configurable(drc.state):
        return rtas.NOT_CONFIGURABLE
    if drc.type.configure_refuses_unplug and drc.unplug_requested:
        # An older kernel re-adding an LMB after a failed removal: it refuses the unplug.
        owner.refuse_unplug(drc, RefusalSignal.CONFIGURE_CONNECTOR)
    if drc.walk is None:
        drc.walk = tuple(owner.fragment(drc).walk())
        drc.cursor = 0
    item = drc.walk[drc.cursor]
    if item.kind == "end":
        if drc.cursor == len(drc.walk) - 1:
            drc.state = drc.type.connector_class.ready_state
            drc.rewind()  # a new sequence replays the fragment from the start
            owner.configured(drc)
            return rtas.CC_COMPLETE
        drc.cursor += 1
        return rtas.CC_PREVIOUS_PARENT
    if item.kind == "begin":
        written, status = work_area.write_node_name(out, item.name), rtas.CC_NEXT_CHILD
    else:
        written, status = work_area.write_property(out, item.name, item.value), rtas.CC_NEXT_PROPERTY
    if not written:
        return rtas.HARDWARE_ERROR  # the item does not fit in the work area
    drc.cursor += 1
    return status
