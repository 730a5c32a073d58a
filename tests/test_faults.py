"""Fault injection through a real server, one fault at a time, with the reference guest handling
each as Linux (and librtas) do; the API's checks; seeded rules replay the same sequence."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import grpc
import pytest

from conftest import new_platform
from helpers import Watcher, connector, drain, plug
from papr.v1 import connector_pb2, device_pb2, fault_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr.v1 import hotplug_pb2 as H
from papr_emu_client import Client, Guest, ReferenceGuest
from papr_emu_client.transport import RetryPolicy
from papr_emu_client.workarea import new_work_area

S, F = connector_pb2, fault_pb2
LMB, LMB2 = 0x80000004, 0x80000005
CPU1 = 0x10000001
DIMM = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))


def add_rule(client: Client, platform: str, name: str, effect: int, **fields: object) -> fault_pb2.FaultRule:
    rule = fault_pb2.FaultRule(name=name, effect=effect, **fields)  # type: ignore[arg-type]
    return client.faults.AddFaultRule(fault_pb2.AddFaultRuleRequest(platform=platform, rule=rule)).rule


def rules(client: Client, platform: str) -> dict[str, fault_pb2.FaultRule]:
    listed = client.faults.ListFaultRules(fault_pb2.ListFaultRulesRequest(platform=platform)).rules
    return {r.name: r for r in listed}


def findings(client: Client, platform: str) -> list[fault_pb2.ConductFinding]:
    return list(client.faults.GetConduct(fault_pb2.GetConductRequest(platform=platform)).findings)


class Sleeps:
    """A RetryPolicy sleep that records each delay (and sleeps it, so the platform sees real time)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


def guest_for(client: Client, platform: str, retry: RetryPolicy | None = None) -> ReferenceGuest:
    return ReferenceGuest(client, platform, retry=retry or RetryPolicy())


def fired(watcher: Watcher, count: int) -> list[fault_pb2.FaultFired]:
    events = watcher.wait_for(count, timeout=5)
    return [e.fault_fired for e in events if e.WhichOneof("kind") == "fault_fired"]


@pytest.mark.parametrize(
    "call",
    [F.FAULT_CALL_GET_SENSOR_STATE, F.FAULT_CALL_SET_INDICATOR, F.FAULT_CALL_CONFIGURE_CONNECTOR],
)
def test_busy_is_called_again_at_once(client: Client, platform: str, call: int) -> None:
    add_rule(client, platform, "busy", F.FAULT_EFFECT_BUSY, call=call, drc_index=LMB, times=3)
    watcher = Watcher(client, platform)
    plug(client, platform, "dimm1", DIMM)
    sleeps = Sleeps()
    guest = guest_for(client, platform, RetryPolicy(sleep=sleeps))
    (outcome,) = guest.handle_pending()
    guest.close()
    assert (outcome.result, outcome.drc_indexes) == ("done", (LMB,))
    assert connector(client, platform, LMB).state == S.DRC_STATE_LOGICAL_CONFIGURED
    assert sleeps.delays == []  # busy: again at once (the kernel only yields)
    assert (rules(client, platform)["busy"].fired, findings(client, platform)) == (3, [])
    events = fired(watcher, 4)
    assert [(e.rule, e.effect, e.call, e.drc_index, e.status) for e in events] == [
        ("busy", F.FAULT_EFFECT_BUSY, call, LMB, -2)
    ] * 3
    watcher.close()


def test_extended_delay_sleeps_the_hint_and_only_on_isolation_state(client: Client, platform: str) -> None:
    add_rule(client, platform, "slow", F.FAULT_EFFECT_EXTENDED_DELAY, call=F.FAULT_CALL_SET_INDICATOR, status=9902,
             times=1)  # fmt: skip
    plug(client, platform, "dimm1", DIMM)
    sleeps = Sleeps()
    guest = guest_for(client, platform, RetryPolicy(sleep=sleeps))
    (outcome,) = guest.handle_pending()
    guest.close()
    assert outcome.result == "done"
    assert sleeps.delays == [pytest.approx(0.1)]  # 10^2 ms
    rule = rules(client, platform)["slow"]
    # allocation-state usable does not match (990x is for isolation-state only): the unisolate and
    # its retry do.
    assert (rule.matched, rule.fired) == (2, 1)
    assert findings(client, platform) == []


def test_extended_delay_of_9905_is_clamped_to_one_second_as_linux(client: Client, platform: str) -> None:
    add_rule(client, platform, "slowest", F.FAULT_EFFECT_EXTENDED_DELAY, call=F.FAULT_CALL_CONFIGURE_CONNECTOR,
             status=9905, times=1)  # fmt: skip
    plug(client, platform, "dimm1", DIMM)
    sleeps = Sleeps()
    guest = guest_for(client, platform, RetryPolicy(sleep=sleeps))
    assert guest.handle_pending()[0].result == "done"
    guest.close()
    assert sleeps.delays == [1.0]
    assert findings(client, platform) == []  # a retry after Linux's clamped 1 s is not early


def test_retry_before_the_extended_delay_is_a_finding(client: Client, platform: str) -> None:
    add_rule(client, platform, "slow", F.FAULT_EFFECT_EXTENDED_DELAY, call=F.FAULT_CALL_CONFIGURE_CONNECTOR,
             status=9903, times=1)  # fmt: skip
    plug(client, platform, "dimm1", DIMM)
    guest = guest_for(client, platform, RetryPolicy(delay_scale=0))  # an impatient guest
    assert guest.handle_pending()[0].result == "done"
    guest.close()
    (finding,) = findings(client, platform)
    assert (finding.kind, finding.requirement, finding.call, finding.drc_index) == (
        F.CONDUCT_FINDING_KIND_RETRY_TOO_SOON, "R1-13.5.3.4-3", "ibm,configure-connector", LMB,
    )  # fmt: skip
    assert finding.detail.endswith("ms early") and finding.explanation


def test_another_indicator_after_an_extended_delay_is_no_retry(client: Client, platform: str) -> None:
    add_rule(client, platform, "slow", F.FAULT_EFFECT_EXTENDED_DELAY, call=F.FAULT_CALL_SET_INDICATOR,
             status=9903, times=1)  # fmt: skip
    plug(client, platform, "core1", CORE1)
    guest = Guest(client.rtas, platform, retry=None)
    drain(guest)
    assert guest.set_indicator(9003, CPU1, 1) == 0  # allocation: no rule on it (isolation only)
    assert guest.set_indicator(9001, CPU1, 1) == 9903  # unisolate: wait 1 s
    guest.set_indicator(9002, CPU1, 1)  # at once, the DR indicator (-3 here): another call, no retry
    assert findings(client, platform) == []
    assert guest.set_indicator(9001, CPU1, 1) == 0  # the unisolate again, too soon: that one is early
    assert [f.kind for f in findings(client, platform)] == [F.CONDUCT_FINDING_KIND_RETRY_TOO_SOON]
    guest.close()


def test_hardware_error_aborts_the_add_and_rolls_back(client: Client) -> None:
    # PowerVM's memory model (QEMU's DIMM platforms refuse to isolate an LMB no unplug asked for,
    # so Linux's rollback of a DIMM add cannot give LMBs back there).
    geometry = platform_pb2.Geometry(
        memory_bytes=1 << 30, max_memory_bytes=4 << 30, cpus=1, max_cpus=4, memory_model=platform_pb2.MEMORY_MODEL_LMB
    )
    platform = new_platform(client, geometry)
    # The second LMB's acquire fails: Linux's dlpar_memory_add_by_ic gives back the first.
    add_rule(client, platform, "broken", F.FAULT_EFFECT_HARDWARE_ERROR, call=F.FAULT_CALL_SET_INDICATOR,
             drc_index=LMB2, times=1)  # fmt: skip
    watcher = Watcher(client, platform)
    request = H.RequestMemoryRequest(platform=platform, action=H.MEMORY_ACTION_ADD,
                                     indexed_count=H.LmbRange(first_drc_index=LMB, count=2))  # fmt: skip
    client.hotplug.RequestMemory(request)
    guest = guest_for(client, platform)
    (outcome,) = guest.handle_pending()
    guest.close()
    assert (outcome.result, outcome.detail) == ("failed", "added 1 of 2 LMBs")
    for index in (LMB, LMB2):  # both back with the platform
        c = connector(client, platform, index)
        assert (c.state, c.device_id) == (S.DRC_STATE_LOGICAL_UNUSABLE, ""), hex(index)
    assert [(e.rule, e.call, e.drc_index, e.status) for e in fired(watcher, 2)] == [
        ("broken", F.FAULT_CALL_SET_INDICATOR, LMB2, -1)
    ]
    assert findings(client, platform) == []
    watcher.close()
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


@pytest.mark.parametrize(
    ("effect", "status"),
    [(F.FAULT_EFFECT_NOT_SUPPORTED_IN_SYSTEM, -9001), (F.FAULT_EFFECT_NOT_SUPPORTED_IN_CONNECTOR, -9002)],
)
def test_configure_connector_not_supported_fails_the_add(
    client: Client, platform: str, effect: int, status: int
) -> None:
    add_rule(client, platform, "unsupported", effect, times=1)
    plug(client, platform, "core1", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    guest = guest_for(client, platform)
    (outcome,) = guest.handle_pending()
    guest.close()
    # dlpar_cpu_add: configure-connector failed, the connector is released; QEMU's state machine
    # refuses to isolate a connector unisolated but never configured (-3), which Linux ignores.
    assert outcome.result == "failed"
    assert rules(client, platform)["unsupported"].fired == 1
    assert connector(client, platform, CPU1).state == S.DRC_STATE_LOGICAL_UNISOLATE
    assert findings(client, platform) == []


def test_status_5_is_answered_with_an_extent_page_and_the_fragment_continues(client: Client, platform: str) -> None:
    add_rule(client, platform, "more-memory", F.FAULT_EFFECT_NEED_MEMORY, drc_index=CPU1, times=1)
    plug(client, platform, "core1", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    guest = guest_for(client, platform)
    (outcome,) = guest.handle_pending()
    guest.close()
    assert (outcome.result, outcome.detail) == ("done", "PowerPC,POWER9@1")
    assert connector(client, platform, CPU1).state == S.DRC_STATE_LOGICAL_CONFIGURED
    assert "ibm,my-drc-index" in guest.nodes[CPU1].properties  # the whole node, nothing lost at the 5
    assert findings(client, platform) == []


def test_status_5_answered_without_a_page_is_5_again_and_a_finding(client: Client, platform: str) -> None:
    add_rule(client, platform, "more-memory", F.FAULT_EFFECT_NEED_MEMORY, drc_index=CPU1, times=1)
    plug(client, platform, "core1", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    guest = Guest(client.rtas, platform, retry=None)  # sees every status as it comes
    drain(guest)
    guest.acquire_drc(CPU1)
    area = new_work_area(CPU1)
    assert guest.configure_step(area)[0] == 5
    assert findings(client, platform) == []
    assert guest.configure_step(area)[0] == 5  # no page in args[1]: still 5, and a finding
    (finding,) = findings(client, platform)
    assert (finding.kind, finding.requirement, finding.drc_index) == (
        F.CONDUCT_FINDING_KIND_NO_EXTENT_PAGE, "R1-13.5.3.5-1", CPU1,
    )  # fmt: skip
    guest.close()


CORE1 = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
CORE2 = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2))
NIC = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_VIRTIO_NET))
PCI_SLOT3 = 0x40000018
EPOW_IRQ = 0x1000


@pytest.mark.parametrize(("spec", "index", "empty"), [
    (CORE1, CPU1, S.DRC_STATE_LOGICAL_UNUSABLE), (NIC, PCI_SLOT3, S.DRC_STATE_PHYSICAL_POWERON),
])  # fmt: skip
def test_firmware_refuses_a_hot_add(
    client: Client, platform: str, spec: device_pb2.DeviceSpec, index: int, empty: int
) -> None:
    add_rule(client, platform, "disturbs", F.FAULT_EFFECT_REFUSE_HOT_ADD, drc_index=index)
    watcher = Watcher(client, platform)
    device = plug(client, platform, "dev", spec)
    guest = guest_for(client, platform)
    (outcome,) = guest.handle_pending()
    guest.close()
    assert (outcome.result, outcome.drc_indexes) == ("rejected", (index,))
    assert "returned -9005" in outcome.detail
    c = connector(client, platform, index)
    assert (c.state, c.device_id) == (empty, device.id)  # plugged, unusable: the acquire rolled back
    events = watcher.wait_for(2)
    assert events[1].fault_fired == F.FaultFired(
        rule="disturbs", effect=F.FAULT_EFFECT_REFUSE_HOT_ADD, call=F.FAULT_CALL_SET_INDICATOR, drc_index=index,
        status=-9005,
    )  # fmt: skip
    assert findings(client, platform) == []
    watcher.close()


def busy_sequence(client: Client, seed: int) -> list[int]:
    platform = new_platform(client)
    try:
        add_rule(client, platform, "coin", F.FAULT_EFFECT_BUSY, call=F.FAULT_CALL_GET_SENSOR_STATE,
                 probability=0.5, seed=seed)  # fmt: skip
        guest = Guest(client.rtas, platform, retry=None)
        statuses = [guest.sense(CPU1)[0] for _ in range(40)]
        guest.close()
        assert rules(client, platform)["coin"].fired == statuses.count(-2)
        return statuses
    finally:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_a_seeded_rule_fires_the_same_calls_on_every_run(client: Client) -> None:
    first = busy_sequence(client, 7)
    assert 5 < first.count(-2) < 35 and set(first) == {0, -2}
    assert busy_sequence(client, 7) == first
    assert busy_sequence(client, 8) != first


def test_rules_are_listed_and_cleared(client: Client, platform: str) -> None:
    add_rule(client, platform, "a", F.FAULT_EFFECT_BUSY)
    added = add_rule(client, platform, "b", F.FAULT_EFFECT_EXTENDED_DELAY, drc_type=S.DRC_TYPE_LMB)
    assert (added.status, added.probability, added.call) == (9901, 1.0, F.FAULT_CALL_UNSPECIFIED)
    assert list(rules(client, platform)) == ["a", "b"]
    clear = client.faults.ClearFaultRules
    with pytest.raises(grpc.RpcError) as error:
        clear(F.ClearFaultRulesRequest(platform=platform, names=["a", "nope"]))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in str(error.value.details())
    assert list(rules(client, platform)) == ["a", "b"]  # nothing removed
    assert clear(F.ClearFaultRulesRequest(platform=platform, names=["a"])).removed == 1
    assert clear(F.ClearFaultRulesRequest(platform=platform)).removed == 1
    assert rules(client, platform) == {}


@pytest.mark.parametrize(("rule", "code", "words"), [
    (F.FaultRule(name="x"), grpc.StatusCode.INVALID_ARGUMENT, "rule.effect"),
    (F.FaultRule(name="x y", effect=F.FAULT_EFFECT_BUSY), grpc.StatusCode.INVALID_ARGUMENT, "rule.name"),
    (F.FaultRule(name="x", effect=F.FAULT_EFFECT_NEED_MEMORY, call=F.FAULT_CALL_SET_INDICATOR),
     grpc.StatusCode.INVALID_ARGUMENT, "LoPAR allows need-memory only on ibm,configure-connector"),
    (F.FaultRule(name="x", effect=F.FAULT_EFFECT_BUSY, call=F.FAULT_CALL_CHECK_EXCEPTION),
     grpc.StatusCode.INVALID_ARGUMENT, "rule.call"),
    (F.FaultRule(name="x", effect=F.FAULT_EFFECT_EXTENDED_DELAY, status=9906), grpc.StatusCode.INVALID_ARGUMENT,
     "9900 to 9905"),
    (F.FaultRule(name="x", effect=F.FAULT_EFFECT_BUSY, status=-1), grpc.StatusCode.INVALID_ARGUMENT, "always -2"),
    (F.FaultRule(name="x", effect=F.FAULT_EFFECT_BUSY, probability=1.5), grpc.StatusCode.INVALID_ARGUMENT,
     "rule.probability"),
    (F.FaultRule(name="x", effect=F.FAULT_EFFECT_LOG_DROP, call=F.FAULT_CALL_SET_INDICATOR),
     grpc.StatusCode.INVALID_ARGUMENT, "hotplug-log"),
    (F.FaultRule(name="dup", effect=F.FAULT_EFFECT_BUSY), grpc.StatusCode.ALREADY_EXISTS, "dup"),
])  # fmt: skip
def test_malformed_rules_are_refused_and_change_nothing(
    client: Client, platform: str, rule: fault_pb2.FaultRule, code: grpc.StatusCode, words: str
) -> None:
    add_rule(client, platform, "dup", F.FAULT_EFFECT_HARDWARE_ERROR)
    with pytest.raises(grpc.RpcError) as error:
        client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=platform, rule=rule))
    assert error.value.code() == code and words in str(error.value.details())
    assert list(rules(client, platform)) == ["dup"]


def test_an_unknown_platform_is_not_found(client: Client) -> None:
    for call, request in [
        (client.faults.ListFaultRules, F.ListFaultRulesRequest(platform="nope")),
        (client.faults.GetConduct, F.GetConductRequest(platform="nope")),
        (client.faults.ClearFaultRules, F.ClearFaultRulesRequest(platform="nope")),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            call(request)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


# --- hotplug event logs and interrupts -------------------------------------------------------------


def log_rule(client: Client, platform: str, effect: int, device_id: str) -> None:
    add_rule(client, platform, "log", effect, device_id=device_id, times=1)


def test_a_dropped_log_never_reaches_the_guest(client: Client, platform: str) -> None:
    watcher = Watcher(client, platform)
    log_rule(client, platform, F.FAULT_EFFECT_LOG_DROP, "")
    plug(client, platform, "core1", CORE1)
    guest = guest_for(client, platform)
    assert guest.handle_pending() == []
    guest.close()
    assert connector(client, platform, CPU1).state == S.DRC_STATE_LOGICAL_UNUSABLE
    (event,) = fired(watcher, 2)
    assert (event.rule, event.effect, event.call, event.drc_index) == (
        "log", F.FAULT_EFFECT_LOG_DROP, F.FAULT_CALL_HOTPLUG_LOG, CPU1,
    )  # fmt: skip
    watcher.close()


def test_a_duplicated_log_is_handled_twice(client: Client, platform: str) -> None:
    log_rule(client, platform, F.FAULT_EFFECT_LOG_DUPLICATE, "")
    plug(client, platform, "core1", CORE1)
    guest = guest_for(client, platform)
    outcomes = guest.handle_pending()
    guest.close()
    assert [(o.result, o.detail) for o in outcomes] == [
        ("done", "PowerPC,POWER9@1"),
        ("ignored", "CPU already present"),
    ]
    assert findings(client, platform) == []


def test_a_reordered_log_comes_first(client: Client, platform: str) -> None:
    plug(client, platform, "core1", CORE1)
    add_rule(client, platform, "log", F.FAULT_EFFECT_LOG_REORDER, device_id="core2")
    plug(client, platform, "core2", CORE2)
    guest = guest_for(client, platform)
    outcomes = guest.handle_pending()
    guest.close()
    assert [o.drc_indexes for o in outcomes] == [(0x10000002,), (CPU1,)]


def watch_interrupts(client: Client, platform: str) -> tuple[grpc.Future, queue.Queue[int]]:
    call = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=platform))
    call.initial_metadata()
    pulses: queue.Queue[int] = queue.Queue()

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):
            for pulse in call:
                pulses.put(pulse.irq)

    threading.Thread(target=read, daemon=True).start()
    return call, pulses


def test_a_withheld_interrupt_is_pulsed_by_event_scan(client: Client, platform: str) -> None:
    call, pulses = watch_interrupts(client, platform)
    log_rule(client, platform, F.FAULT_EFFECT_INTERRUPT_DELAY, "core1")
    plug(client, platform, "core1", CORE1)
    with pytest.raises(queue.Empty):
        pulses.get(timeout=0.3)  # the log is queued, its interrupt is not
    guest = Guest(client.rtas, platform)
    request = rtas_pb2.RtasCall(event_scan=rtas_pb2.EventScanRequest(event_mask=0xFFFFFFFF, buffer_length=2048))
    assert guest.calls.one(request).event_scan.status == 1
    assert pulses.get(timeout=5) == EPOW_IRQ  # event-scan pulses the classes with logs pending
    assert guest.check_exception(0xFFFFFFFF, 2048)[0] == 0
    guest.close()
    call.cancel()


def test_a_spurious_interrupt_finds_nothing(client: Client, platform: str) -> None:
    call, pulses = watch_interrupts(client, platform)
    log_rule(client, platform, F.FAULT_EFFECT_INTERRUPT_DUPLICATE, "core1")
    plug(client, platform, "core1", CORE1)
    assert pulses.get(timeout=5) == EPOW_IRQ  # no CAS: hotplug logs go to the EPOW source
    guest = Guest(client.rtas, platform)
    assert guest.check_exception(0xFFFFFFFF, 2048)[0] == 0
    assert pulses.get(timeout=5) == EPOW_IRQ  # a second pulse after the log was read...
    assert guest.check_exception(0xFFFFFFFF, 2048) == (1, b"")  # ...with nothing behind it
    guest.close()
    call.cancel()
