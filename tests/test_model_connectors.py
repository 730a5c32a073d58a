"""Every cell of the connector state tables, driven in-process on a bare :class:`Drc`.

No server and no platform: each test builds one connector in a given state, calls
:func:`papr_emu.model.drc.set_indicator` or :func:`papr_emu.model.drc.configure_step` with
a recording fake owner, and checks the RTAS status, the state afterwards, and which owner
callbacks ran. The expected tables are the observed QEMU 7.2 tables
(``shared/reference/qemu-7.2-observed.md``), copied from ``tests/test_state_tables.py``
(which checks the same cells end to end through gRPC) and written independently of the
model's own transition tables; the unplug-pending exceptions are spelled out below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

import pytest

from papr_emu.model import rtas, work_area
from papr_emu.model.devices import Dimm
from papr_emu.model.devicetree import Node, cells, string
from papr_emu.model.drc import (
    CPU,
    DRC_TYPES,
    LMB,
    PCI,
    PHB,
    PMEM,
    Drc,
    DrcState,
    DrcType,
    RefusalSignal,
    configure_step,
    drc_type_by_shift,
    set_indicator,
)

ISO, IND, ALLOC = rtas.ISOLATION_STATE, rtas.DR_INDICATOR, rtas.ALLOCATION_STATE
U, A, UI, C = (
    DrcState.LOGICAL_UNUSABLE,
    DrcState.LOGICAL_AVAILABLE,
    DrcState.LOGICAL_UNISOLATE,
    DrcState.LOGICAL_CONFIGURED,
)
P, PU, PC = DrcState.PHYSICAL_POWERON, DrcState.PHYSICAL_UNISOLATE, DrcState.PHYSICAL_CONFIGURED

# --- fakes -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeDevice:
    """What a connector knows of its occupant: an id."""

    id: str = "dev"


def small_fragment() -> Node:
    """A small fragment with a child node: its walk exercises every configure-connector status."""
    return Node(
        "dev@1",
        [("reg", cells(1, 2)), ("compatible", string("test,dev"))],
        [Node("child@0", [("empty", b"")])],
    )


#: The statuses a walk of small_fragment() returns, with the name each status-2/3 call writes.
FRAGMENT_WALK: Final = (
    (rtas.CC_NEXT_CHILD, "dev@1", None),
    (rtas.CC_NEXT_PROPERTY, "reg", cells(1, 2)),
    (rtas.CC_NEXT_PROPERTY, "compatible", b"test,dev\0"),
    (rtas.CC_NEXT_CHILD, "child@0", None),
    (rtas.CC_NEXT_PROPERTY, "empty", b""),
    (rtas.CC_PREVIOUS_PARENT, None, None),
    (rtas.CC_COMPLETE, None, None),
)

Call = tuple[str, int, RefusalSignal | None]


@dataclass
class RecordingOwner:
    """A :class:`~papr_emu.model.drc.DrcOwner` that records what the transitions ask of it."""

    node: Node = field(default_factory=small_fragment)
    calls: list[Call] = field(default_factory=list)

    def release(self, drc: Drc[Any]) -> None:
        self.calls.append(("release", drc.index, None))

    def refuse_unplug(self, drc: Drc[Any], signal: RefusalSignal) -> None:
        self.calls.append(("refuse_unplug", drc.index, signal))

    def fragment(self, drc: Drc[Any]) -> Node:
        self.calls.append(("fragment", drc.index, None))
        return self.node

    # A QEMU-style platform: it provides nothing the guest asks for and allows nothing extra.
    def provide(self, drc: Drc[Any]) -> bool:
        return False

    def may_isolate(self, drc: Drc[Any]) -> bool:
        return False

    def released_on_deallocate(self, drc: Drc[Any]) -> bool:
        return False

    def configured(self, drc: Drc[Any]) -> None:
        pass

    def callbacks(self) -> list[Call]:
        """The calls that are decisions (release, refusal), without fragment builds."""
        return [call for call in self.calls if call[0] != "fragment"]


def snapshot(drc: Drc[Any]) -> tuple[object, ...]:
    """Everything a connector holds."""
    return (drc.state, drc.device, drc.unplug_requested, drc.cursor, drc.walk, drc.dr_indicator)


def guest_area(index: int, fill: int = 0xA5) -> bytearray:
    """A fresh 4096-byte work area as a guest passes it: the index in cell 0, garbage elsewhere."""
    area = bytearray([fill]) * work_area.WORK_AREA_SIZE
    struct.pack_into(">I", area, 0, index)
    return area


# --- the logical table (CPU, LMB, PHB, PMEM) -----------------------------------------------------------

Op = tuple[int, int] | str
LOGICAL_OPS: Final[dict[str, Op]] = {
    "alloc usable": (ALLOC, 1),
    "alloc unusable": (ALLOC, 0),
    "alloc exchange": (ALLOC, 2),
    "alloc recover": (ALLOC, 3),
    "unisolate": (ISO, 1),
    "isolate": (ISO, 0),
    "iso value 2": (ISO, 2),
    "dr-indicator": (IND, 1),
    "indicator 9000": (9000, 0),
    "configure-connector": "cc",
}
LOGICAL_STATES: Final = ("unusable-empty", "unusable-device", "available", "unisolate", "configured")
LOGICAL_START: Final = {"unusable-empty": U, "unusable-device": U, "available": A, "unisolate": UI, "configured": C}
# Expected (status, state afterwards) per state in LOGICAL_STATES order, no unplug pending
# (as in tests/test_state_tables.py; the LMB isolate guard is an exception, below).
LOGICAL_TABLE: Final[dict[str, list[tuple[int, DrcState]]]] = {
    "alloc usable": [(-3, U), (0, A), (0, A), (0, UI), (0, C)],
    "alloc unusable": [(0, U), (0, U), (0, U), (-3, UI), (-3, C)],
    "alloc exchange": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "alloc recover": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "unisolate": [(-3, U), (-3, U), (0, UI), (0, UI), (0, C)],
    "isolate": [(0, U), (0, U), (0, A), (-3, UI), (0, A)],
    "iso value 2": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "dr-indicator": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "indicator 9000": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "configure-connector": [(-9003, U), (-9003, U), (-9003, A), (2, UI), (2, C)],
}
LOGICAL_TYPES: Final = {"cpu": (CPU, 1), "lmb": (LMB, 4), "phb": (PHB, 2), "pmem": (PMEM, 0)}


def expected_logical(
    drc_type: DrcType, state: str, operation: str, pending: bool
) -> tuple[int, DrcState, list[tuple[str, RefusalSignal | None]]]:
    """(status, state afterwards, owner callbacks) from the observed table and its unplug exceptions."""
    status, after = LOGICAL_TABLE[operation][LOGICAL_STATES.index(state)]
    callbacks: list[tuple[str, RefusalSignal | None]] = []
    if operation == "alloc usable" and state == "unusable-device" and pending:
        status, after = -3, U  # the host wants it gone: it cannot be re-acquired
    if operation == "alloc unusable" and state == "available" and pending:
        callbacks = [("release", None)]  # the guest gave it back: the unplug completes
    if operation == "unisolate" and state in ("unisolate", "configured") and pending:
        callbacks = [("refuse_unplug", RefusalSignal.UNISOLATE)]
    if operation == "isolate" and state == "configured" and drc_type is LMB and not pending:
        status, after = -1, C  # the LMB isolate guard
    if operation == "configure-connector" and status == rtas.CC_NEXT_CHILD and drc_type is LMB and pending:
        callbacks = [("refuse_unplug", RefusalSignal.CONFIGURE_CONNECTOR)]  # an LMB only
    return status, after, callbacks


def make_drc(drc_type: DrcType, drc_id: int, state: DrcState, device: bool, pending: bool) -> Drc[FakeDevice]:
    drc: Drc[FakeDevice] = Drc(drc_type, drc_type.index(drc_id))
    drc.state = state
    drc.device = FakeDevice() if device else None
    drc.unplug_requested = pending
    return drc


def run(drc: Drc[Any], operation: Op, owner: RecordingOwner) -> int:
    if operation == "cc":
        return configure_step(drc, guest_area(drc.index), owner)
    assert not isinstance(operation, str)
    indicator, value = operation
    return set_indicator(drc, indicator, value, owner)


LOGICAL_CELLS: Final = [
    pytest.param(kind, state, operation, pending, id=f"{kind}-{state}-{operation}{'-pending' if pending else ''}")
    for kind in LOGICAL_TYPES
    for state in LOGICAL_STATES
    for operation in LOGICAL_OPS
    for pending in (False, True)
    if not (pending and state == "unusable-empty")  # no device, nothing to unplug
]


@pytest.mark.parametrize(("kind", "state", "operation", "pending"), LOGICAL_CELLS)
def test_logical_table(kind: str, state: str, operation: str, pending: bool) -> None:
    drc_type, drc_id = LOGICAL_TYPES[kind]
    drc = make_drc(drc_type, drc_id, LOGICAL_START[state], state != "unusable-empty", pending)
    device, before = drc.device, snapshot(drc)
    owner = RecordingOwner()
    expected_status, expected_state, expected_callbacks = expected_logical(drc_type, state, operation, pending)

    status = run(drc, LOGICAL_OPS[operation], owner)

    assert status == expected_status
    assert drc.state == expected_state
    assert owner.callbacks() == [(name, drc.index, signal) for name, signal in expected_callbacks]
    # Detaching a device and clearing the unplug flag are the owner's job, never the connector's.
    assert drc.device is device
    assert drc.unplug_requested is pending
    assert drc.dr_indicator == rtas.DR_INDICATOR_INACTIVE  # a logical connector has no DR indicator
    if status < 0:
        assert snapshot(drc) == before, "a refused call changed the connector"
        assert owner.calls == [], "a refused call reached the owner"


# --- the physical table (PCI) ------------------------------------------------------------------------

PHYSICAL_OPS: Final[dict[str, Op]] = {**LOGICAL_OPS, "dr-indicator 4": (IND, 4)}
PHYSICAL_STATES: Final = ("empty", "poweron", "unisolate", "configured")
PHYSICAL_START: Final = {"empty": P, "poweron": P, "unisolate": PU, "configured": PC}
PHYSICAL_TABLE: Final[dict[str, list[tuple[int, DrcState]]]] = {
    "alloc usable": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "alloc unusable": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "alloc exchange": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "alloc recover": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "unisolate": [(-3, P), (0, PU), (0, PU), (0, PC)],
    "isolate": [(0, P), (0, P), (-3, PU), (0, P)],
    "iso value 2": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "dr-indicator": [(0, P), (0, P), (0, PU), (0, PC)],
    "dr-indicator 4": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "indicator 9000": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "configure-connector": [(-9003, P), (-9003, P), (2, PU), (2, PC)],
}
PCI_SLOT1: Final = 8  # PHB 0, slot 1, function 0: index 0x40000008

PHYSICAL_CELLS: Final = [
    pytest.param(state, operation, pending, id=f"{state}-{operation}{'-pending' if pending else ''}")
    for state in PHYSICAL_STATES
    for operation in PHYSICAL_OPS
    for pending in (False, True)
    if not (pending and state == "empty")
]


@pytest.mark.parametrize(("state", "operation", "pending"), PHYSICAL_CELLS)
def test_physical_table(state: str, operation: str, pending: bool) -> None:
    drc = make_drc(PCI, PCI_SLOT1, PHYSICAL_START[state], state != "empty", pending)
    device, before = drc.device, snapshot(drc)
    owner = RecordingOwner()
    expected_status, expected_state = PHYSICAL_TABLE[operation][PHYSICAL_STATES.index(state)]
    # No refusal semantics on a physical connector; only isolate from CONFIGURED completes an unplug
    # (isolate in POWERON is a no-op even with an unplug pending).
    released = operation == "isolate" and state == "configured" and pending

    status = run(drc, PHYSICAL_OPS[operation], owner)

    assert status == expected_status
    assert drc.state == expected_state
    assert owner.callbacks() == ([("release", drc.index, None)] if released else [])
    assert drc.device is device
    assert drc.unplug_requested is pending
    if operation == "dr-indicator":
        assert drc.dr_indicator == 1  # stored, also on an empty slot
    if status < 0:
        assert snapshot(drc) == before, "a refused call changed the connector"
        assert owner.calls == []


@pytest.mark.parametrize("value", sorted(rtas.DR_INDICATOR_VALUES))
@pytest.mark.parametrize("device", [False, True], ids=["empty", "device"])
def test_dr_indicator_values_are_stored(value: int, device: bool) -> None:
    drc = make_drc(PCI, PCI_SLOT1, P, device, pending=False)
    drc.dr_indicator = 3 - value  # anything else
    assert set_indicator(drc, IND, value, RecordingOwner()) == rtas.SUCCESS
    assert drc.dr_indicator == value
    assert drc.state == P


# --- refusals and no-ops in the middle of a configure-connector walk ---------------------------------

MID_WALK_CASES: Final = [
    pytest.param(kind, state, operation, id=f"{kind}-{state}-{operation}")
    for kind, states in (("cpu", ("unisolate", "configured")), ("lmb", ("unisolate", "configured")))
    for state in states
    for operation in LOGICAL_OPS
    if operation != "configure-connector"
    and expected_logical(LOGICAL_TYPES[kind][0], state, operation, False)[:2]
    in ((-3, LOGICAL_START[state]), (-1, LOGICAL_START[state]), (0, LOGICAL_START[state]))
] + [
    pytest.param("pci", state, operation, id=f"pci-{state}-{operation}")
    for state in ("unisolate", "configured")
    for operation in PHYSICAL_OPS
    if operation not in ("configure-connector", "dr-indicator")
    and PHYSICAL_TABLE[operation][PHYSICAL_STATES.index(state)][1] == PHYSICAL_START[state]
]


@pytest.mark.parametrize(("kind", "state", "operation"), MID_WALK_CASES)
def test_refusals_and_no_ops_keep_the_walk(kind: str, state: str, operation: str) -> None:
    """A call that does not change the state leaves a configure-connector walk where it was."""
    if kind == "pci":
        drc = make_drc(PCI, PCI_SLOT1, PHYSICAL_START[state], device=True, pending=False)
        op = PHYSICAL_OPS[operation]
    else:
        drc_type, drc_id = LOGICAL_TYPES[kind]
        drc = make_drc(drc_type, drc_id, LOGICAL_START[state], device=True, pending=False)
        op = LOGICAL_OPS[operation]
    owner = RecordingOwner()
    for _ in range(2):
        assert configure_step(drc, guest_area(drc.index), owner) > 0
    before = snapshot(drc)
    assert drc.cursor == 2
    owner.calls.clear()

    status = run(drc, op, owner)

    assert status <= 0
    assert snapshot(drc) == before
    assert owner.calls == []
    assert configure_step(drc, guest_area(drc.index), owner) == FRAGMENT_WALK[2][0]  # resumes


# --- entity sense ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(LOGICAL_TYPES))
@pytest.mark.parametrize(
    ("state", "device", "sense"),
    [
        (U, False, rtas.SENSE_UNUSABLE),
        (U, True, rtas.SENSE_UNUSABLE),  # hot-added, not yet acquired by the guest
        (A, True, rtas.SENSE_PRESENT),
        (UI, True, rtas.SENSE_PRESENT),
        (C, True, rtas.SENSE_PRESENT),
    ],
)
def test_logical_entity_sense(kind: str, state: DrcState, device: bool, sense: int) -> None:
    drc_type, drc_id = LOGICAL_TYPES[kind]
    for pending in (False, True) if device else (False,):
        assert make_drc(drc_type, drc_id, state, device, pending).entity_sense() == sense


@pytest.mark.parametrize(
    ("state", "device", "sense"),
    [
        (P, False, rtas.SENSE_EMPTY),
        (P, True, rtas.SENSE_PRESENT),  # present at once, before the guest does anything
        (PU, True, rtas.SENSE_PRESENT),
        (PC, True, rtas.SENSE_PRESENT),
    ],
)
def test_physical_entity_sense(state: DrcState, device: bool, sense: int) -> None:
    for pending in (False, True) if device else (False,):
        assert make_drc(PCI, PCI_SLOT1, state, device, pending).entity_sense() == sense


def test_new_connectors_start_empty() -> None:
    for drc_type in DRC_TYPES:
        drc: Drc[FakeDevice] = Drc(drc_type, drc_type.index(4))
        assert drc.state == (P if drc_type.physical else U)
        assert (drc.device, drc.unplug_requested, drc.cursor, drc.walk) == (None, False, 0, None)
        assert drc.entity_sense() == (rtas.SENSE_EMPTY if drc_type.physical else rtas.SENSE_UNUSABLE)


@pytest.mark.parametrize("drc_type", DRC_TYPES, ids=lambda t: t.label)
@pytest.mark.parametrize("device", [False, True], ids=["empty", "device"])
def test_reset(drc_type: DrcType, device: bool) -> None:
    """QEMU's DRC reset: ready with a device, empty without; the walk starts over."""
    drc = make_drc(drc_type, 4, drc_type.connector_class.unisolate_state, device, pending=False)
    drc.cursor = 3
    drc.reset()
    connector_class = drc_type.connector_class
    assert drc.state == (connector_class.ready_state if device else connector_class.empty_state)
    assert (drc.cursor, drc.walk) == (0, None)
    if drc_type.physical:
        assert drc.dr_indicator == (rtas.DR_INDICATOR_ACTIVE if device else rtas.DR_INDICATOR_INACTIVE)


@pytest.mark.parametrize(
    ("drc_type", "drc_id", "index", "name"),
    [
        (CPU, 1, 0x10000001, "CPU 1"),
        (PHB, 2, 0x20000002, "PHB 2"),
        (PCI, 0x10008, 0x40010008, "C65544"),
        (LMB, 4, 0x80000004, "LMB 4"),
        (PMEM, 3, 0x90000003, "PMEM 3"),
    ],
    ids=lambda v: v.label if isinstance(v, DrcType) else None,
)
def test_indexes_and_names(drc_type: DrcType, drc_id: int, index: int, name: str) -> None:
    drc: Drc[FakeDevice] = Drc(drc_type, drc_type.index(drc_id))
    assert (drc.index, drc.id, drc.name) == (index, drc_id, name)
    assert drc_type_by_shift(index >> 28) is drc_type


# --- configure-connector -----------------------------------------------------------------------------


def expected_area(index: int, status: int, name: str | None, value: bytes | None) -> bytearray:
    """The work area after one call, built from the documented layout (qemu-7.2-observed.md)."""
    area = guest_area(index)
    if status == rtas.CC_NEXT_CHILD:
        assert name is not None
        struct.pack_into(">I", area, 8, 0x14)
        area[0x14 : 0x14 + len(name) + 1] = name.encode() + b"\0"
    elif status == rtas.CC_NEXT_PROPERTY:
        assert name is not None and value is not None
        value_offset = 0x14 + len(name) + 1  # right after the name's NUL, unaligned
        struct.pack_into(">III", area, 8, 0x14, len(value), value_offset)
        area[0x14:value_offset] = name.encode() + b"\0"
        area[value_offset : value_offset + len(value)] = value
    return area  # previous parent and complete write nothing


@pytest.mark.parametrize(
    ("drc_type", "drc_id"), [(CPU, 1), (LMB, 4), (PHB, 2), (PCI, PCI_SLOT1)], ids=["cpu", "lmb", "phb", "pci"]
)
@pytest.mark.parametrize("start", ["unisolate", "configured"])
def test_configure_walks_the_fragment(drc_type: DrcType, drc_id: int, start: str) -> None:
    connector_class = drc_type.connector_class
    state = connector_class.unisolate_state if start == "unisolate" else connector_class.ready_state
    drc = make_drc(drc_type, drc_id, state, device=True, pending=False)
    owner = RecordingOwner()
    for step, (expected_status, name, value) in enumerate(FRAGMENT_WALK):
        area = guest_area(drc.index)  # a fresh area every call: the position lives on the connector
        status = configure_step(drc, area, owner)
        assert status == expected_status, f"step {step}"
        assert area == expected_area(drc.index, status, name, value), f"step {step}"
        if status != rtas.CC_COMPLETE:
            assert drc.state == state, "the state changes only when the walk completes"
            assert drc.cursor == step + 1
    assert drc.state == connector_class.ready_state
    assert (drc.cursor, drc.walk) == (0, None)
    assert owner.calls == [("fragment", drc.index, None)], "the fragment is built once per walk"


def test_configure_replays_from_the_start_after_completion() -> None:
    drc = make_drc(CPU, 1, UI, device=True, pending=False)
    owner = RecordingOwner()
    statuses = [configure_step(drc, guest_area(drc.index), owner) for _ in FRAGMENT_WALK]
    assert statuses == [status for status, _, _ in FRAGMENT_WALK]
    area = guest_area(drc.index)
    assert configure_step(drc, area, owner) == rtas.CC_NEXT_CHILD
    assert area == expected_area(drc.index, rtas.CC_NEXT_CHILD, "dev@1", None)
    assert drc.state == C
    assert [name for name, _, _ in owner.calls] == ["fragment", "fragment"]


def test_configure_lmb_fragment_has_no_previous_parent() -> None:
    """An LMB: next child, three properties, complete (5 calls, no status 4), as QEMU 7.2."""
    dimm = Dimm("dimm0", hotplugged=True, size=256 << 20, slot=0, address=1 << 30)
    drc: Drc[Dimm] = Drc(LMB, LMB.index(4))
    drc.device, drc.state = dimm, UI
    owner = RecordingOwner(node=dimm.fragment(drc.index, None))
    area = guest_area(drc.index)
    assert configure_step(drc, area, owner) == rtas.CC_NEXT_CHILD
    assert area[0x14 : 0x14 + 16] == b"memory@40000000\0"
    statuses = [configure_step(drc, guest_area(drc.index), owner) for _ in range(4)]
    assert statuses == [rtas.CC_NEXT_PROPERTY] * 3 + [rtas.CC_COMPLETE]
    assert drc.state == C


@pytest.mark.parametrize("drc_type", [CPU, LMB, PHB, PCI], ids=lambda t: t.label)
def test_unisolate_rewinds_a_walk(drc_type: DrcType) -> None:
    """Isolate in mid-walk, then unisolate: configure-connector starts from the top again."""
    connector_class = drc_type.connector_class
    pending = drc_type is LMB  # the LMB isolate guard lets only an LMB being unplugged go
    drc = make_drc(drc_type, PCI_SLOT1 if drc_type.physical else 4, connector_class.ready_state, True, pending)
    owner = RecordingOwner()
    for _ in range(3):
        assert configure_step(drc, guest_area(drc.index), owner) > 0
    assert drc.cursor == 3
    assert set_indicator(drc, ISO, rtas.ISOLATE, owner) == rtas.SUCCESS
    assert drc.state == (P if drc_type.physical else A)
    owner.calls.clear()

    assert set_indicator(drc, ISO, rtas.UNISOLATE, owner) == rtas.SUCCESS

    assert drc.state == connector_class.unisolate_state
    assert (drc.cursor, drc.walk) == (0, None)
    assert owner.calls == [], "unisolate from AVAILABLE/POWERON is no refusal"
    area = guest_area(drc.index)
    assert configure_step(drc, area, owner) == rtas.CC_NEXT_CHILD
    assert area == expected_area(drc.index, rtas.CC_NEXT_CHILD, "dev@1", None)
    assert [call for call in owner.calls if call[0] == "fragment"] == [("fragment", drc.index, None)]


def test_configure_on_a_pending_lmb_refuses_the_unplug_and_still_walks() -> None:
    drc = make_drc(LMB, 4, C, device=True, pending=True)
    owner = RecordingOwner()
    area = guest_area(drc.index)
    assert configure_step(drc, area, owner) == rtas.CC_NEXT_CHILD
    assert owner.calls == [
        ("refuse_unplug", drc.index, RefusalSignal.CONFIGURE_CONNECTOR),
        ("fragment", drc.index, None),
    ]
    assert area == expected_area(drc.index, rtas.CC_NEXT_CHILD, "dev@1", None)


@pytest.mark.parametrize("drc_type", [CPU, PHB, PMEM, PCI], ids=lambda t: t.label)
def test_configure_on_other_pending_connectors_just_walks(drc_type: DrcType) -> None:
    """Only an LMB treats configure-connector as a refusal; a CPU just replays its tree."""
    drc = make_drc(drc_type, 4 if drc_type is not PCI else PCI_SLOT1, drc_type.connector_class.ready_state, True, True)
    owner = RecordingOwner()
    statuses = [configure_step(drc, guest_area(drc.index), owner) for _ in FRAGMENT_WALK]
    assert statuses == [status for status, _, _ in FRAGMENT_WALK]
    assert owner.callbacks() == []
    assert drc.unplug_requested


@pytest.mark.parametrize(
    ("node", "fits"),
    [
        (Node("fit@0", [("p", bytes(work_area.WORK_AREA_SIZE - 0x14 - 2))]), True),  # ends at byte 4096
        (Node("big@0", [("p", bytes(work_area.WORK_AREA_SIZE - 0x14 - 1))]), False),
        (Node("big@0", [("blob", bytes(work_area.WORK_AREA_SIZE))]), False),
    ],
    ids=["exact-fit", "one-byte-over", "page"],
)
def test_configure_property_overflow(node: Node, fits: bool) -> None:
    drc = make_drc(CPU, 1, UI, device=True, pending=False)
    owner = RecordingOwner(node=node)
    assert configure_step(drc, guest_area(drc.index), owner) == rtas.CC_NEXT_CHILD
    name, value = node.properties[0]
    for _ in range(2):  # a retry fails the same way: the walk does not move on
        before, area = snapshot(drc), guest_area(drc.index)
        status = configure_step(drc, area, owner)
        if fits:
            assert status == rtas.CC_NEXT_PROPERTY
            assert area == expected_area(drc.index, status, name, value)
            break
        assert status == rtas.HARDWARE_ERROR
        assert area == guest_area(drc.index), "an overflow writes nothing"
        assert snapshot(drc) == before


@pytest.mark.parametrize(
    ("name_length", "fits"),
    [(work_area.WORK_AREA_SIZE - 0x14 - 1, True), (work_area.WORK_AREA_SIZE - 0x14, False)],
    ids=["exact-fit", "one-byte-over"],
)
def test_configure_node_name_overflow(name_length: int, fits: bool) -> None:
    drc = make_drc(PCI, PCI_SLOT1, PU, device=True, pending=False)
    name = "n" * name_length
    owner = RecordingOwner(node=Node(name))
    before, area = snapshot(drc), guest_area(drc.index)
    status = configure_step(drc, area, owner)
    if fits:
        assert status == rtas.CC_NEXT_CHILD
        assert area == expected_area(drc.index, status, name, None)
    else:
        assert status == rtas.HARDWARE_ERROR
        assert area == guest_area(drc.index)
        # The walk may be built already; the position and everything else stay.
        assert (drc.state, drc.device, drc.unplug_requested, drc.cursor) == before[:4]


@pytest.mark.parametrize("drc_type", DRC_TYPES, ids=lambda t: t.label)
def test_configure_not_configurable_states(drc_type: DrcType) -> None:
    """Every state but unisolate and ready answers -9003 and touches nothing."""
    connector_class = drc_type.connector_class
    prefix = "PHYSICAL" if drc_type.physical else "LOGICAL"
    configurable = (connector_class.unisolate_state, connector_class.ready_state)
    states = [s for s in DrcState if s.name.startswith(prefix) and s not in configurable]
    assert states
    for state in states:
        for device, pending in ((False, False), (True, False), (True, True)):
            drc = make_drc(drc_type, 4, state, device, pending)
            owner, before, area = RecordingOwner(), snapshot(drc), guest_area(drc.index)
            assert configure_step(drc, area, owner) == rtas.NOT_CONFIGURABLE
            assert snapshot(drc) == before
            assert area == guest_area(drc.index)
            assert owner.calls == []
