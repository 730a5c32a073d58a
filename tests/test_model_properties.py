"""Property tests on the pure platform model: any sequence of calls keeps it consistent.

Invariants after every step: a connector without a device is in its empty state and not
unplug-pending; devices and connectors agree on who is attached to what; a refused call
(negative RTAS status or a PlatformError) changes nothing; event sequence numbers have no gaps.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papr_emu.model import (
    CpuCoreParams,
    DimmRequest,
    DrcState,
    Geometry,
    PciFunctionParams,
    PciModel,
    Platform,
    PlatformError,
)

INDEXES = [
    0x10000000,
    0x10000001,
    0x10000002,
    0x80000004,
    0x80000005,
    0x80000006,
    0x80000007,
    0x40000008,
    0x40000009,
    0x20000001,
    0x12345678,
]

operations = st.one_of(
    st.tuples(st.just("plug_dimm"), st.integers(1, 3)),
    st.tuples(st.just("plug_core"), st.integers(1, 2)),
    st.tuples(st.just("plug_pci"), st.integers(0, 1)),
    st.tuples(st.just("unplug"), st.sampled_from(["dimm0", "dimm1", "core1", "core2", "pci0.1.0", "pci0.1.1"])),
    st.tuples(st.just("set"), st.sampled_from([9001, 9002, 9003, 9004]), st.sampled_from(INDEXES), st.integers(0, 3)),
    st.tuples(st.just("cc"), st.sampled_from(INDEXES)),
    st.tuples(st.just("cas"), st.integers(0, 0xFF)),
    st.tuples(st.just("check_exception"), st.sampled_from([0x10000000, 0x40000000, 0xFFFFFFFF]), st.integers(0, 200)),
)


def state_of(platform: Platform) -> Any:
    """What a refused call must leave alone. The conduct report is not in it: a refused call may
    well be a finding (configure-connector before unisolate), which is an event of its own."""
    connectors, _ = platform.connectors(limit=10_000)
    findings = platform.findings()[1]
    return connectors, platform.devices(), platform.info().last_event_sequence - findings


def check_invariants(platform: Platform) -> None:
    """Connectors and devices agree: seen through the public snapshots only."""
    devices = {d.id: d for d in platform.devices()}
    attached: dict[str, set[int]] = {}
    connectors, _ = platform.connectors(limit=10_000)
    for connector in connectors:
        empty = connector.type.connector_class.empty_state
        if not connector.device_id:
            assert connector.state == empty and not connector.unplug_pending, connector
        else:
            assert connector.device_id in devices, connector
            assert connector.index in devices[connector.device_id].drc_indexes
            attached.setdefault(connector.device_id, set()).add(connector.index)
        assert connector.state != DrcState.INVALID
    for device in devices.values():
        assert attached.get(device.id), f"{device.id} has no connector but still exists"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=60))
def test_any_sequence_keeps_the_model_consistent(steps: list[tuple[Any, ...]]) -> None:
    platform = Platform("prop", Geometry.build(1 << 30, 4 << 30, slots=4, cpus=1, max_cpus=4), clock=lambda: 0.0)
    dimms = 0
    for step in steps:
        before = state_of(platform)
        refused = False
        try:
            if step[0] == "plug_dimm":
                platform.plug(f"dimm{dimms % 2}", DimmRequest(size=step[1] << 28))
                dimms += 1
            elif step[0] == "plug_core":
                platform.plug("", CpuCoreParams(step[1]))
            elif step[0] == "plug_pci":
                platform.plug("", PciFunctionParams(0, 1, step[1], PciModel.E1000))
            elif step[0] == "unplug":
                platform.unplug(step[1])
            elif step[0] == "set":
                refused = platform.set_indicator(step[1], step[2], step[3]) < 0
            elif step[0] == "cas":
                vector = bytearray(24)
                vector[0], vector[2], vector[6], vector[22] = 22, step[1] & 0x20, step[1] & 0x04, step[1] & 0xC0
                platform.client_architecture_support(bytes(vector))
            elif step[0] == "check_exception":
                status, blob = platform.check_exception(step[1], step[2])
                assert status in (0, 1) and len(blob) <= step[2]
            else:
                area = step[1].to_bytes(4, "big") + bytes(4092)
                status, out = platform.configure_connector(area)
                refused = status < 0
                if refused:
                    assert out == area
        except PlatformError:
            refused = True
        if refused:
            assert state_of(platform) == before, step
        check_invariants(platform)
        assert platform.device_tree_blob()[:4] == b"\xd0\x0d\xfe\xed"
    subscription, last = platform.subscribe_events(after_sequence=0)
    sequences = [event.sequence for event in iter(lambda: subscription.next(timeout=0), None)]
    assert sequences == list(range(1, last + 1))
