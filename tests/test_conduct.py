"""The guest's conduct report through a real server: a deliberately sloppy stub makes each kind of
finding; refusal signals and the reference guest's flows make none; the stream and the RPC agree."""

from __future__ import annotations

import grpc
import pytest

from helpers import Watcher, drain, plug, unplug
from papr.v1 import device_pb2, fault_pb2, guest_pb2
from papr_emu_client import Client, Guest, ReferenceGuest
from papr_emu_client.workarea import new_work_area

F = fault_pb2
CPU1 = 0x10000001
LMBS = [0x80000004, 0x80000005]
ISO, ALLOC = 9001, 9003
CORE1 = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))


def findings(client: Client, platform: str) -> list[fault_pb2.ConductFinding]:
    return list(client.faults.GetConduct(fault_pb2.GetConductRequest(platform=platform)).findings)


def kinds(client: Client, platform: str) -> list[tuple[int, str, int]]:
    return [(f.kind, f.requirement, f.drc_index) for f in findings(client, platform)]


def plug_and_drain(client: Client, platform: str, guest: Guest, device_id: str, spec: device_pb2.DeviceSpec) -> None:
    plug(client, platform, device_id, spec)
    assert drain(guest) >= 1


def test_configure_connector_before_unisolate(client: Client, platform: str, guest: Guest) -> None:
    plug_and_drain(client, platform, guest, "core1", CORE1)
    assert guest.configure_step(new_work_area(CPU1))[0] == -9003  # never acquired
    (finding,) = findings(client, platform)
    assert (finding.kind, finding.requirement, finding.call, finding.drc_index, finding.detail) == (
        F.CONDUCT_FINDING_KIND_CONFIGURE_NOT_UNISOLATED, "R1-13.5.4.2-2", "ibm,configure-connector", CPU1,
        "connector LOGICAL_UNUSABLE",
    )  # fmt: skip
    assert "set-indicator unisolate, then ibm,configure-connector" in finding.explanation


def test_unisolate_without_allocation(client: Client, platform: str, guest: Guest) -> None:
    plug_and_drain(client, platform, guest, "core1", CORE1)
    assert guest.set_indicator(ISO, CPU1, 1) == -3
    assert kinds(client, platform) == [(F.CONDUCT_FINDING_KIND_UNISOLATE_UNALLOCATED, "R1-13.5.3.4-5", CPU1)]
    assert findings(client, platform)[0].call == "set-indicator(9001, 0x10000001, 1)"


def test_configure_connector_abandoned_half_way(client: Client, platform: str, guest: Guest) -> None:
    plug_and_drain(client, platform, guest, "core1", CORE1)
    guest.acquire_drc(CPU1)
    assert guest.configure_step(new_work_area(CPU1))[0] == 2  # the node: the sequence has begun
    assert findings(client, platform) == []
    guest.set_indicator(ALLOC, CPU1, 0)  # gives the connector back without finishing or an error
    assert kinds(client, platform) == [(F.CONDUCT_FINDING_KIND_ABANDONED_CONFIGURE, "R1-13.5.3.5-4", CPU1)]


def test_isolating_a_cpu_whose_threads_run(client: Client, platform: str, guest: Guest) -> None:
    plug_and_drain(client, platform, guest, "core1", CORE1)
    guest.acquire_drc(CPU1)
    guest.configure_connector(CPU1)
    assert guest.start_cpu(1, 0x60, 1) == 0  # thread 1 runs
    guest.release_drc(CPU1)  # no stop-self first
    (finding,) = findings(client, platform)
    assert (finding.kind, finding.requirement, finding.detail) == (
        F.CONDUCT_FINDING_KIND_ISOLATE_IN_USE, "R1-13.7.4.1.1-1", "threads 1 run",
    )  # fmt: skip


def test_refusal_signals_are_not_findings(client: Client, platform: str, guest: Guest) -> None:
    plug_and_drain(
        client, platform, guest, "dimm1", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20))
    )
    for index in LMBS:
        guest.acquire_drc(index)
        guest.configure_connector(index)
    unplug(client, platform, "dimm1")
    assert guest.set_indicator(ISO, LMBS[0], 1) == 0  # unisolate during an unplug: refused (5.13+)
    unplug(client, platform, "dimm1")
    guest.configure_connector(LMBS[1])  # configure-connector during an unplug: refused (older kernels)
    assert findings(client, platform) == []


def test_starting_a_dr_sequence_without_fetching_its_log(client: Client, platform: str, guest: Guest) -> None:
    plug(client, platform, "core1", CORE1)  # its add log is queued and its interrupt pulsed
    guest.acquire_drc(CPU1)  # allocation usable, then unisolate: one finding for the one log
    (finding,) = findings(client, platform)
    assert (finding.kind, finding.requirement, finding.call, finding.drc_index, finding.detail) == (
        F.CONDUCT_FINDING_KIND_LOG_NOT_DRAINED, "R1-10.2-4", "set-indicator(9003, 0x10000001, 1)", CPU1,
        "hotplug log 0 still queued",
    )  # fmt: skip
    assert "check-exception" in finding.explanation
    guest.configure_connector(CPU1)
    assert drain(guest) == 1  # fetched late: no more findings for that log
    unplug(client, platform, "core1")  # a remove log, not fetched before the isolate
    guest.release_drc(CPU1)
    assert [(f.kind, f.call) for f in findings(client, platform)][1:] == [
        (F.CONDUCT_FINDING_KIND_LOG_NOT_DRAINED, "set-indicator(9001, 0x10000001, 0)")
    ]


def test_a_log_not_announced_or_for_another_connector_is_no_finding(
    client: Client, platform: str, guest: Guest
) -> None:
    ov5 = bytes([22, 0, 0, 0, 0, 0, 0x04] + [0] * 17)  # the hot-plug event source: DIMM logs name their LMBs
    client.guest.ClientArchitectureSupport(guest_pb2.ClientArchitectureSupportRequest(platform=platform,
                                                                                      option_vector_5=ov5))  # fmt: skip
    plug_and_drain(client, platform, guest, "core1", CORE1)
    plug(client, platform, "dimm1", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)))
    guest.acquire_drc(CPU1)  # dimm1's queued log names LMB 4, not core 1
    assert findings(client, platform) == []
    guest.acquire_drc(LMBS[0])  # ... and does make a finding on LMB 4
    assert kinds(client, platform) == [(F.CONDUCT_FINDING_KIND_LOG_NOT_DRAINED, "R1-10.2-4", LMBS[0])]
    assert drain(guest) == 1
    # A log queued with its interrupt withheld (a fault) was never announced.
    rule = F.FaultRule(name="quiet", effect=F.FAULT_EFFECT_INTERRUPT_DELAY, device_id="dimm2")
    client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=platform, rule=rule))
    plug(client, platform, "dimm2", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20)))
    (quiet,) = client.faults.ListFaultRules(F.ListFaultRulesRequest(platform=platform)).rules
    assert quiet.fired == 1
    guest.acquire_drc(LMBS[1])
    assert len(findings(client, platform)) == 1


def test_a_duplicated_log_is_no_finding_while_its_twin_is_handled(client: Client, platform: str, guest: Guest) -> None:
    rule = F.FaultRule(name="twice", effect=F.FAULT_EFFECT_LOG_DUPLICATE, device_id="core1")
    client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=platform, rule=rule))
    plug(client, platform, "core1", CORE1)
    assert guest.check_exception(0xFFFFFFFF, 2048)[0] == 0  # the first copy; its twin stays queued
    guest.acquire_drc(CPU1)
    assert findings(client, platform) == []


def test_a_cas_ends_every_sequence_under_way(client: Client, platform: str, guest: Guest) -> None:
    plug_and_drain(client, platform, guest, "core1", CORE1)
    guest.acquire_drc(CPU1)
    assert guest.configure_step(new_work_area(CPU1))[0] == 2  # a sequence under way
    ov5 = bytes([22] + [0] * 23)
    client.guest.ClientArchitectureSupport(guest_pb2.ClientArchitectureSupportRequest(platform=platform,
                                                                                      option_vector_5=ov5))  # fmt: skip
    guest.set_indicator(9002, CPU1, 1)  # the connector was reset with the rest: nothing abandoned
    assert findings(client, platform) == []


def test_giving_up_after_status_5_abandons_nothing(client: Client, platform: str, guest: Guest) -> None:
    rule = F.FaultRule(name="five", effect=F.FAULT_EFFECT_NEED_MEMORY, drc_index=CPU1, times=1)
    client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=platform, rule=rule))
    plug_and_drain(client, platform, guest, "core1", CORE1)
    raw = Guest(client.rtas, platform, retry=None)  # sees the 5 itself
    raw.acquire_drc(CPU1)
    assert raw.configure_step(new_work_area(CPU1))[0] == 5
    raw.set_indicator(ISO, CPU1, 0)  # as Linux does with 5: an error, the connector given back
    raw.set_indicator(ALLOC, CPU1, 0)
    raw.close()
    assert findings(client, platform) == []


def test_the_reference_guest_makes_no_findings(client: Client, platform: str) -> None:
    stub = ReferenceGuest(client, platform)
    stub.start()
    try:
        specs = [
            ("dimm1", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20))),
            ("core1", CORE1),
            (
                "nic",
                device_pb2.DeviceSpec(
                    pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_E1000)
                ),
            ),
            ("phb3", device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=3))),
            (
                "nv",
                device_pb2.DeviceSpec(
                    nvdimm=device_pb2.NvdimmSpec(
                        size_bytes=1 << 30, label_size_bytes=128 << 10, uuid="12345678-1234-1234-1234-123456789abc"
                    )
                ),
            ),
        ]
        for n, (device_id, spec) in enumerate(specs):
            plug(client, platform, device_id, spec)
            assert stub.wait_for(2 * n + 1)[-1].result == "done", device_id
            if device_id != "nv":  # NVDIMMs cannot be unplugged
                unplug(client, platform, device_id)
                assert stub.wait_for(2 * n + 2)[-1].result == "done", device_id
            else:
                stub.outcomes.append(stub.outcomes[-1])  # keep the count of two per device
    finally:
        stub.stop()
    assert client.faults.GetConduct(F.GetConductRequest(platform=platform)).total == 0


def test_watch_conduct_streams_each_finding_once(client: Client, platform: str, guest: Guest) -> None:
    call = client.faults.WatchConduct(F.WatchConductRequest(platform=platform))
    subscribed_after = int(dict(call.initial_metadata())["papr-subscribed-after"])
    watcher = Watcher(client, platform)
    plug_and_drain(client, platform, guest, "core1", CORE1)
    guest.set_indicator(ISO, CPU1, 1)
    guest.configure_step(new_work_area(CPU1))
    first, second = next(call), next(call)
    assert [first.finding.kind, second.finding.kind] == [
        F.CONDUCT_FINDING_KIND_UNISOLATE_UNALLOCATED, F.CONDUCT_FINDING_KIND_CONFIGURE_NOT_UNISOLATED,
    ]  # fmt: skip
    events = watcher.wait_for(3)
    assert [e.WhichOneof("kind") for e in events] == ["device_added", "conduct_finding", "conduct_finding"]
    assert [first.sequence, second.sequence] == [events[1].sequence, events[2].sequence]
    assert first.sequence > subscribed_after
    incarnation = dict(call.initial_metadata())["papr-incarnation"]
    assert len(incarnation) == 36 and {e.incarnation for e in events} == {incarnation}  # this server run
    assert [f.kind for f in findings(client, platform)] == [first.finding.kind, second.finding.kind]
    call.cancel()
    # Resuming after the first replays the second.
    again = client.faults.WatchConduct(F.WatchConductRequest(platform=platform, after_sequence=first.sequence))
    assert next(again).sequence == second.sequence
    again.cancel()
    watcher.close()


def test_watch_conduct_of_an_unknown_platform_is_not_found(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as error:
        next(client.faults.WatchConduct(F.WatchConductRequest(platform="nope")))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
