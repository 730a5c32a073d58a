"""Every cell of the reference state tables (qemu-7.2-observed.md), driven through RTAS.

The expected tables below are written from the observations, independently of the
server's own transition tables; each refusal must also leave the platform unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from helpers import connector, snapshot
from papr.v1 import connector_pb2, device_pb2, hotplug_pb2
from papr_emu_client import Client, Guest, new_work_area

S = connector_pb2
ISO, IND, ALLOC = 9001, 9002, 9003

# (indicator, value) or "cc" -> expected status per state, and the state after success.
Op = tuple[int, int] | str
LOGICAL_OPS: dict[str, Op] = {
    "alloc usable": (ALLOC, 1),
    "alloc unusable": (ALLOC, 0),
    "alloc exchange": (ALLOC, 2),
    "unisolate": (ISO, 1),
    "isolate": (ISO, 0),
    "iso value 2": (ISO, 2),
    "dr-indicator": (IND, 1),
    "configure-connector": "cc",
}
LOGICAL_STATES = ("unusable-empty", "unusable-device", "available", "unisolate", "configured")
U, A, UI, C = (
    S.DRC_STATE_LOGICAL_UNUSABLE,
    S.DRC_STATE_LOGICAL_AVAILABLE,
    S.DRC_STATE_LOGICAL_UNISOLATE,
    S.DRC_STATE_LOGICAL_CONFIGURED,
)
# expected (status, state afterwards) per operation, per state in LOGICAL_STATES order
LOGICAL_TABLE: dict[str, list[tuple[int, int]]] = {
    "alloc usable": [(-3, U), (0, A), (0, A), (0, UI), (0, C)],
    "alloc unusable": [(0, U), (0, U), (0, U), (-3, UI), (-3, C)],
    "alloc exchange": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "unisolate": [(-3, U), (-3, U), (0, UI), (0, UI), (0, C)],
    "isolate": [(0, U), (0, U), (0, A), (-3, UI), (0, A)],  # CONFIGURED: LMB is special, below
    "iso value 2": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "dr-indicator": [(-3, U), (-3, U), (-3, A), (-3, UI), (-3, C)],
    "configure-connector": [(-9003, U), (-9003, U), (-9003, A), (2, UI), (2, C)],
}

KINDS: dict[str, tuple[device_pb2.DeviceSpec, int, int]] = {
    # spec, its connector, an empty connector of the same type
    "lmb": (device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)), 0x80000004, 0x80000005),
    "cpu": (device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)), 0x10000001, 0x10000003),
    "phb": (device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=2)), 0x20000002, 0x20000003),
}


def run(guest: Guest, index: int, op: Op) -> int:
    if op == "cc":
        return guest.configure_step(new_work_area(index))[0]
    indicator, value = op
    return guest.set_indicator(indicator, index, value)


def bring_to(client: Client, platform: str, guest: Guest, kind: str, state: str) -> int:
    spec, index, empty = KINDS[kind]
    if state == "unusable-empty":
        return empty
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="dev", spec=spec))
    steps: list[Callable[[], int]] = [
        lambda: guest.set_indicator(ALLOC, index, 1),
        lambda: guest.set_indicator(ISO, index, 1),
        lambda: len(guest.configure_items(index)) and 0,
    ]
    for step in steps[: LOGICAL_STATES.index(state) - 1]:
        assert step() == 0
    return index


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("state", LOGICAL_STATES)
@pytest.mark.parametrize("operation", sorted(LOGICAL_OPS))
def test_logical_table(client: Client, platform: str, guest: Guest, kind: str, state: str, operation: str) -> None:
    index = bring_to(client, platform, guest, kind, state)
    expected_status, expected_state = LOGICAL_TABLE[operation][LOGICAL_STATES.index(state)]
    if kind == "lmb" and operation == "isolate" and state == "configured":
        expected_status, expected_state = -1, C  # the LMB isolate guard: no unplug pending
    before = snapshot(client, platform)
    status = run(guest, index, LOGICAL_OPS[operation])
    assert status == expected_status
    assert connector(client, platform, index).state == expected_state
    if status < 0:
        assert snapshot(client, platform) == before, "a refused call changed the platform"


PHYSICAL_STATES = ("empty", "poweron", "unisolate", "configured")
P, PU, PC = S.DRC_STATE_PHYSICAL_POWERON, S.DRC_STATE_PHYSICAL_UNISOLATE, S.DRC_STATE_PHYSICAL_CONFIGURED
PHYSICAL_TABLE: dict[str, list[tuple[int, int]]] = {
    "alloc usable": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "alloc unusable": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "unisolate": [(-3, P), (0, PU), (0, PU), (0, PC)],
    "isolate": [(0, P), (0, P), (-3, PU), (0, P)],
    "iso value 2": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "dr-indicator": [(0, P), (0, P), (0, PU), (0, PC)],
    "dr-indicator 4": [(-3, P), (-3, P), (-3, PU), (-3, PC)],
    "configure-connector": [(-9003, P), (-9003, P), (2, PU), (2, PC)],
}
PHYSICAL_OPS: dict[str, Op] = {**LOGICAL_OPS, "dr-indicator 4": (IND, 4)}


@pytest.mark.parametrize("state", PHYSICAL_STATES)
@pytest.mark.parametrize("operation", sorted(PHYSICAL_TABLE))
def test_physical_table(client: Client, platform: str, guest: Guest, state: str, operation: str) -> None:
    index = 0x40000008  # PHB 0 slot 1 function 0
    if state != "empty":
        spec = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=1, model=device_pb2.PCI_MODEL_E1000))
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="nic", spec=spec))
        if state in ("unisolate", "configured"):
            assert guest.set_indicator(ISO, index, 1) == 0
        if state == "configured":
            guest.configure_items(index)
    expected_status, expected_state = PHYSICAL_TABLE[operation][PHYSICAL_STATES.index(state)]
    before = snapshot(client, platform)
    assert run(guest, index, PHYSICAL_OPS[operation]) == expected_status
    assert connector(client, platform, index).state == expected_state
    if expected_status < 0:
        assert snapshot(client, platform) == before


def test_unknown_indexes_and_types(client: Client, platform: str, guest: Guest) -> None:
    before = snapshot(client, platform)
    for index in (0, 0x80000000, 0x80000010, 0x50000000, 0x30000000, 0x40010000, 0xFFFFFFFF):
        assert guest.sense(index) == (-3, 0)
        assert guest.set_indicator(ISO, index, 1) == -3
        assert guest.set_indicator(ALLOC, index, 1) == -3
        assert guest.configure_step(new_work_area(index))[0] == -3
    assert guest.set_indicator(9000, 0x10000000, 0) == -3  # unknown indicator type
    from papr.v1 import rtas_pb2

    reply = client.rtas.GetSensorState(
        rtas_pb2.GetSensorStateRequest(platform=platform, sensor_type=9001, sensor_index=0x10000000)
    )
    assert (reply.status, reply.state) == (-3, 0)  # only dr-entity-sense exists
    for domain in (-1, 0, 1):
        set_reply = client.rtas.SetPowerLevel(
            rtas_pb2.SetPowerLevelRequest(platform=platform, power_domain=domain, level=0)
        )
        get_reply = client.rtas.GetPowerLevel(rtas_pb2.GetPowerLevelRequest(platform=platform, power_domain=domain))
        expected = (0, 100) if domain == -1 else (-3, 0)
        assert (set_reply.status, set_reply.level) == expected
        assert (get_reply.status, get_reply.level) == expected
    assert snapshot(client, platform) == before


def test_pending_unplug_blocks_reacquire_and_unusable_releases(client: Client, platform: str, guest: Guest) -> None:
    spec, index, _ = KINDS["lmb"]
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="dev", spec=spec))
    assert guest.set_indicator(ALLOC, index, 1) == 0  # AVAILABLE
    client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id="dev"))
    assert connector(client, platform, index).unplug_pending
    assert guest.set_indicator(ALLOC, index, 1) == 0  # AVAILABLE: no-op even with unplug pending
    assert guest.set_indicator(ALLOC, index, 0) == 0  # -> UNUSABLE, releases
    c = connector(client, platform, index)
    assert (c.state, c.device_id) == (U, "")
    assert guest.set_indicator(ALLOC, index, 1) == -3
