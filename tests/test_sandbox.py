"""papr-emu sandbox: unmodified librtas 2.0.4 (built from Debian's source by .ci/librtas) drives DR flows.

tests/sandbox/dlpar.c, a guest-side DLPAR program on librtas, runs inside the sandbox against a
real server; on a twin platform the reference guest handles the same event. Both must report the
same outcome and leave the connectors in the same states, and the sandbox's /proc/device-tree
must match GetDeviceTree after each flow. The same flows run again under fault rules on the
sandbox's platform (busy, extended delay, hardware error, configure-connector status 5), which
exercise librtas's own retry handling (docs/sandbox.md, "Under fault rules").

Needs PRoot (Debian's proot) and the librtas build (``.ci/librtas``, into $PAPR_EMU_LIBRTAS or
~/.cache/papr-emu/librtas-2.0.4); without them the tests are skipped, saying so, unless
$PAPR_EMU_SANDBOX_REQUIRED is set (.ci/run sets it), when they fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import new_platform
from helpers import connector, events_since, plug, unplug
from papr.v1 import connector_pb2, device_pb2, fault_pb2, guest_pb2, platform_pb2
from papr_emu import PaprServer
from papr_emu_client import Client, Guest, Outcome, ReferenceGuest, RefusalPolicy
from papr_emu_client.connectors import list_all
from papr_emu_client.errorlog import (
    ACTION_ADD,
    EVENT_CLASS_EPOW,
    EVENT_CLASS_HOTPLUG,
    RESOURCE_CPU,
    RESOURCE_PCI,
    parse_hotplug_event,
)
from papr_emu_client.fdt import nodes_by_path, read_dtb
from papr_emu_sandbox.cli import RMO, Sandbox, open_sandbox
from papr_emu_sandbox.tree import differences

LIBRTAS = Path(os.environ.get("PAPR_EMU_LIBRTAS") or Path.home() / ".cache/papr-emu/librtas-2.0.4")
SOURCE = Path(__file__).parent / "sandbox" / "dlpar.c"
NIC_DRC, CORE_DRC = 0x40000018, 0x10000002
NIC = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_VIRTIO_NET))
NIC_NODE, CORE_NODE = "/pci@800000020000000/ethernet@3", "/cpus/PowerPC,POWER9@2"
F = fault_pb2


def missing_prerequisite() -> str | None:
    if shutil.which("proot") is None:
        return "PRoot not installed (apt-get install proot; .ci/run installs it)"
    if not (LIBRTAS / "lib" / "librtas.so.2").exists():
        return f"librtas 2.0.4 not built in {LIBRTAS} (run .ci/librtas)"
    if shutil.which("gcc") is None:
        return "no gcc to build tests/sandbox/dlpar.c"
    return None


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    reason = missing_prerequisite()
    if reason is not None:
        if os.environ.get("PAPR_EMU_SANDBOX_REQUIRED"):
            pytest.fail(f"{reason}, and $PAPR_EMU_SANDBOX_REQUIRED is set")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def dlpar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/sandbox/dlpar.c, built against librtas 2.0.4."""
    program = tmp_path_factory.mktemp("dlpar") / "dlpar"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{LIBRTAS}/include", "-o", str(program), str(SOURCE),
         f"-L{LIBRTAS}/lib", "-lrtas", f"-Wl,-rpath,{LIBRTAS}/lib"],
        check=True,
    )  # fmt: skip
    return program


def linux_cas(client: Client, platform: str) -> None:
    """CAS as a Linux guest makes it: hotplug events, drconf memory, ibm,dynamic-memory-v2."""
    vector = bytearray(24)
    vector[0] = 22  # the length byte: 23 bytes follow
    vector[2], vector[6], vector[22] = 0x20, 0x04, 0x80
    client.guest.ClientArchitectureSupport(
        guest_pb2.ClientArchitectureSupportRequest(platform=platform, option_vector_5=bytes(vector))
    )


class Twins:
    """Two platforms alike: the reference guest runs on one, librtas in the sandbox on the other."""

    def __init__(self, client: Client, sandbox: Sandbox, dlpar: Path, reference: str, platform: str) -> None:
        self.client, self.sandbox, self.dlpar = client, sandbox, dlpar
        self.reference_platform, self.platform = reference, platform
        self.guest = ReferenceGuest(client, reference, transport="unary")

    def plug(self, device_id: str, spec: device_pb2.DeviceSpec) -> None:
        for platform in (self.reference_platform, self.platform):
            plug(self.client, platform, device_id, spec)

    def unplug(self, device_id: str) -> None:
        for platform in (self.reference_platform, self.platform):
            unplug(self.client, platform, device_id)

    def reference(self) -> Outcome:
        (outcome,) = self.guest.handle_pending()
        return outcome

    def run(self, *args: str) -> tuple[str, str, tuple[int, ...]]:
        """Run dlpar in the sandbox; its outcome line as (result, detail, DRC indexes)."""
        output = subprocess.run(
            self.sandbox.command([str(self.dlpar), *args]), env=self.sandbox.environment(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = [line for line in output.stdout.splitlines() if line.startswith("outcome: ")]
        assert lines, f"no outcome (exit {output.returncode}): {output.stdout}{output.stderr}"
        result, detail, indexes = lines[0].removeprefix("outcome: ").split("|")
        return result, detail, tuple(int(i, 16) for i in indexes.split(",") if i)

    def same_outcome(self, *args: str) -> Outcome:
        """The reference guest's outcome for the pending event, and the sandbox's run of dlpar ARGS agree."""
        expected = self.reference()
        assert self.run(*args) == (expected.result, expected.detail, expected.drc_indexes)
        return expected

    def check_platforms_alike(self) -> None:
        def states(platform: str) -> list[tuple[int, int, str, bool]]:
            return [
                (c.index, c.state, c.device_id, c.unplug_pending)
                for c in list_all(self.client.platforms, platform)
            ]  # fmt: skip

        assert states(self.platform) == states(self.reference_platform)

    def check_tree(self, *unconfigured: str) -> None:
        """The sandbox's /proc/device-tree is the platform's exported tree, but for the nodes of devices
        ``unconfigured`` (a failed add: the export has the plugged device's node, the guest never added it)."""
        exported = nodes_by_path(read_dtb(self.client.device_tree(self.platform)))
        expected = [f"{path}: only in the export" for path in unconfigured]
        assert differences(self.sandbox.bridge.tree.nodes(), exported) == expected
        assert self.sandbox.bridge.findings == []


@pytest.fixture
def twins(client: Client, dlpar: Path, tmp_path: Path) -> Iterator[Twins]:
    reference, platform = new_platform(client), new_platform(client)
    for name in (reference, platform):
        linux_cas(client, name)
    with open_sandbox(client, platform, tmp_path / "sandbox") as sandbox:
        yield Twins(client, sandbox, dlpar, reference, platform)
    for name in (reference, platform):
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))


def test_pci_slot_add_and_remove(twins: Twins) -> None:
    twins.check_tree()
    twins.plug("nic", NIC)
    assert twins.same_outcome("pci-add", hex(NIC_DRC)).detail == "ethernet@3"
    twins.check_platforms_alike()
    nic = twins.sandbox.bridge.tree.nodes()["/pci@800000020000000/ethernet@3"]
    assert int.from_bytes(nic["ibm,my-drc-index"], "big") == NIC_DRC
    twins.check_tree()

    twins.unplug("nic")
    assert twins.same_outcome("pci-remove", hex(NIC_DRC)).result == "done"
    twins.check_platforms_alike()
    assert connector(twins.client, twins.platform, NIC_DRC).device_id == ""
    assert "/pci@800000020000000/ethernet@3" not in twins.sandbox.bridge.tree.nodes()
    twins.check_tree()


def test_dimm_lmbs_add_refused_unplug_and_unplug(twins: Twins) -> None:
    twins.plug("dimm0", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20)))
    added = twins.reference()
    assert added.result == "done" and len(added.drc_indexes) == 2
    assert twins.run("memory-add", *map(hex, added.drc_indexes)) == ("done", "2 LMBs", added.drc_indexes)
    twins.check_platforms_alike()
    twins.check_tree()

    first, last = added.drc_indexes
    twins.guest.policy = RefusalPolicy(lmbs_not_offlinable={last})
    twins.unplug("dimm0")
    refused = twins.reference()
    assert (refused.result, refused.detail) == ("refused", f"LMB {last:#x} cannot be offlined")
    assert twins.run("memory-remove", hex(first), hex(last), f"refuse={last:#x}") == (
        refused.result, refused.detail, refused.drc_indexes
    )  # fmt: skip
    assert not connector(twins.client, twins.platform, first).unplug_pending  # the signal cancelled the unplug
    twins.check_platforms_alike()
    twins.check_tree()

    twins.guest.policy = RefusalPolicy()
    twins.unplug("dimm0")
    removed = twins.reference()
    assert twins.run("memory-remove", *map(hex, removed.drc_indexes)) == ("done", "2 LMBs", removed.drc_indexes)
    twins.check_platforms_alike()
    assert all(connector(twins.client, twins.platform, i).device_id == "" for i in removed.drc_indexes)
    twins.check_tree()


def test_cpu_core_add_refused_unplug_and_unplug(twins: Twins) -> None:
    twins.plug("core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    assert twins.same_outcome("cpu-add", hex(CORE_DRC)).detail == "PowerPC,POWER9@2"
    twins.check_platforms_alike()
    assert "/cpus/PowerPC,POWER9@2" in twins.sandbox.bridge.tree.nodes()
    twins.check_tree()

    twins.guest.policy = RefusalPolicy(busy_cpus={CORE_DRC})
    twins.unplug("core2")
    assert twins.same_outcome("cpu-remove", hex(CORE_DRC), "busy") == Outcome(
        twins.guest.outcomes[-1].event, "refused", "CPU busy", (CORE_DRC,)
    )
    refused = connector(twins.client, twins.platform, CORE_DRC)
    assert (refused.state, refused.unplug_pending) == (connector_pb2.DRC_STATE_LOGICAL_CONFIGURED, False)
    twins.check_platforms_alike()
    twins.check_tree()

    twins.guest.policy = RefusalPolicy()
    twins.unplug("core2")
    assert twins.same_outcome("cpu-remove", hex(CORE_DRC)).result == "done"
    twins.check_platforms_alike()
    assert "/cpus/PowerPC,POWER9@2" not in twins.sandbox.bridge.tree.nodes()
    twins.check_tree()


# --- fault rules: librtas's own busy and extended-delay handling -----------------------------------
#
# librtas 2.0.4 (librtas_src/syscall_calls.c) retries -2 and 9900-9905 itself: _rtas_call() for
# rtas_set_indicator, rtas_get_sensor, rtas_set_power_level, rtas_get_power_level, and its own loop
# in rtas_cfg_connector(), both sleeping handle_delay()'s 1 ms for -2 and 10^n ms for 990n (no
# clamp), without limit unless rtas_delay_timeout() was called. docs/sandbox.md has the details.


def add_rule(client: Client, platform: str, name: str, effect: int, **fields: object) -> None:
    rule = fault_pb2.FaultRule(name=name, effect=effect, **fields)  # type: ignore[arg-type]
    client.faults.AddFaultRule(fault_pb2.AddFaultRuleRequest(platform=platform, rule=rule))


def fired_rules(client: Client, platform: str) -> dict[str, int]:
    listed = client.faults.ListFaultRules(fault_pb2.ListFaultRulesRequest(platform=platform)).rules
    return {rule.name: rule.fired for rule in listed}


def conduct(client: Client, platform: str, kind: int | None = None) -> list[fault_pb2.ConductFinding]:
    """The platform's conduct findings (of one kind)."""
    findings = client.faults.GetConduct(fault_pb2.GetConductRequest(platform=platform)).findings
    return [finding for finding in findings if kind is None or finding.kind == kind]


def last_sequence(client: Client, platform: str) -> int:
    request = platform_pb2.GetPlatformRequest(platform=platform)
    return client.platforms.GetPlatform(request).platform.last_event_sequence


def fault_events(client: Client, platform: str, after: int) -> list[tuple[str, int, int, int]]:
    """(rule, call, DRC index, status) of each FaultFired event since ``after``, in order."""
    return [
        (e.fault_fired.rule, e.fault_fired.call, e.fault_fired.drc_index, e.fault_fired.status)
        for e in events_since(client, platform, after) if e.WhichOneof("kind") == "fault_fired"
    ]  # fmt: skip


def test_librtas_waits_out_busy_and_extended_delays_in_a_pci_slot_add_and_remove(twins: Twins) -> None:
    """Each call of drmgr's PCI flow answered busy or 990x first (on the sandbox's platform only): librtas
    calls again after the hint, and the flow ends as the reference guest's does on its twin without faults."""
    client, platform = twins.client, twins.platform
    twins.plug("nic", NIC)
    # (name, effect, call, DRC index (0: any; set/get-power-level have none), status, times, probability, seed)
    adding = [
        ("led-busy", F.FAULT_EFFECT_BUSY, F.FAULT_CALL_SET_INDICATOR, NIC_DRC, 0, 1, 1.0, 0),  # the LED comes first
        ("sense-busy", F.FAULT_EFFECT_BUSY, F.FAULT_CALL_GET_SENSOR_STATE, NIC_DRC, 0, 2, 1.0, 0),
        ("power-delay", F.FAULT_EFFECT_EXTENDED_DELAY, F.FAULT_CALL_SET_POWER_LEVEL, 0, 9901, 1, 1.0, 0),
        ("power-busy", F.FAULT_EFFECT_BUSY, F.FAULT_CALL_SET_POWER_LEVEL, 0, 0, 1, 1.0, 0),
        ("level-busy", F.FAULT_EFFECT_BUSY, F.FAULT_CALL_GET_POWER_LEVEL, 0, 0, 1, 1.0, 0),
        # 990x on set-indicator matches isolation-state only: the unisolate, not the LED.
        ("unisolate-delay", F.FAULT_EFFECT_EXTENDED_DELAY, F.FAULT_CALL_SET_INDICATOR, NIC_DRC, 9901, 1, 1.0, 0),
        # Spread over the walk by seeded draws: busy and 990x in the middle of the fragment.
        ("walk-busy", F.FAULT_EFFECT_BUSY, F.FAULT_CALL_CONFIGURE_CONNECTOR, NIC_DRC, 0, 3, 0.3, 7),
        ("walk-delay", F.FAULT_EFFECT_EXTENDED_DELAY, F.FAULT_CALL_CONFIGURE_CONNECTOR, NIC_DRC, 9902, 2, 0.2, 3),
    ]
    removing = [
        ("isolate-delay", F.FAULT_EFFECT_EXTENDED_DELAY, F.FAULT_CALL_SET_INDICATOR, NIC_DRC, 9902, 1, 1.0, 0),
        ("indicator-busy", F.FAULT_EFFECT_BUSY, F.FAULT_CALL_SET_INDICATOR, NIC_DRC, 0, 2, 1.0, 0),
        ("power-off-delay", F.FAULT_EFFECT_EXTENDED_DELAY, F.FAULT_CALL_SET_POWER_LEVEL, 0, 9900, 1, 1.0, 0),
    ]

    def run(rules: list[tuple[str, int, int, int, int, int, float, int]], *args: str) -> None:
        for name, effect, call, index, status, times, probability, seed in rules:
            add_rule(client, platform, name, effect, call=call, drc_index=index, status=status, times=times,
                     probability=probability, seed=seed)  # fmt: skip
        after = last_sequence(client, platform)
        twins.same_outcome(*args)
        fired = fired_rules(client, platform)
        assert {name: fired[name] for name, *_ in rules} == {name: times for name, *_, times, _, _ in rules}
        events = fault_events(client, platform, after)
        for name, _effect, call, index, status, times, *_ in rules:
            answered = status or -2
            assert [e for e in events if e[0] == name] == [(name, call, index, answered)] * times, name
        twins.check_platforms_alike()
        twins.check_tree()

    run(adding, "pci-add", hex(NIC_DRC))
    twins.unplug("nic")
    run(removing, "pci-remove", hex(NIC_DRC))
    # librtas slept each hint in full before calling again (handle_delay: usleep(10^n ms)): no
    # RETRY_TOO_SOON; and no other finding (the bridge fetched the hotplug logs, as the kernel would).
    assert conduct(client, platform) == []


def test_librtas_rides_out_random_busy_and_delays_in_cpu_and_memory_flows(twins: Twins) -> None:
    """Seeded busy and 990x answers on any DR call of CPU and LMB flows (the kernel's calls, made
    through librtas): outcomes, connectors and tree as the reference guest's without faults."""
    client, platform = twins.client, twins.platform
    add_rule(client, platform, "busy", F.FAULT_EFFECT_BUSY, probability=0.25, seed=11)
    add_rule(client, platform, "delay", F.FAULT_EFFECT_EXTENDED_DELAY, status=9900, probability=0.25, seed=5)
    after = last_sequence(client, platform)

    twins.plug("core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    twins.same_outcome("cpu-add", hex(CORE_DRC))
    twins.plug("dimm0", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20)))
    added = twins.reference()
    assert twins.run("memory-add", *map(hex, added.drc_indexes)) == ("done", "2 LMBs", added.drc_indexes)
    twins.check_platforms_alike()
    twins.check_tree()

    twins.unplug("dimm0")
    removed = twins.reference()
    assert twins.run("memory-remove", *map(hex, removed.drc_indexes)) == ("done", "2 LMBs", removed.drc_indexes)
    twins.unplug("core2")
    twins.same_outcome("cpu-remove", hex(CORE_DRC))
    twins.check_platforms_alike()
    twins.check_tree()

    fired = fired_rules(client, platform)
    events = fault_events(client, platform, after)
    assert fired["busy"] > 5 and fired["delay"] > 2, fired
    assert (sum(e[0] == "busy" for e in events), sum(e[0] == "delay" for e in events)) == (
        fired["busy"],
        fired["delay"],
    )
    assert conduct(client, platform) == []  # no RETRY_TOO_SOON, nor anything else


@pytest.mark.parametrize(
    ("flow", "call", "index", "times", "detail"),
    [
        # The LED's set-indicator fails first (drmgr and the reference guest ignore it), then the unisolate.
        ("pci-add", F.FAULT_CALL_SET_INDICATOR, NIC_DRC, 2, f"set-indicator(unisolate) on {NIC_DRC:#x} returned -1"),
        ("pci-add", F.FAULT_CALL_CONFIGURE_CONNECTOR, NIC_DRC, 1, f"ibm,configure-connector on {NIC_DRC:#x} "
         "returned -1"),
        # dlpar_acquire_drc's first call.
        ("cpu-add", F.FAULT_CALL_GET_SENSOR_STATE, CORE_DRC, 1, f"get-sensor-state on {CORE_DRC:#x} returned -1"),
    ],
)  # fmt: skip
def test_a_hardware_error_reaches_the_caller(twins: Twins, flow: str, call: int, index: int, times: int,
                                             detail: str) -> None:  # fmt: skip
    """-1 is no status librtas retries: rtas_set_indicator and rtas_cfg_connector return it as it came.
    The same rule on both twins: librtas's caller and the reference guest fail alike."""
    for name in (twins.reference_platform, twins.platform):
        add_rule(twins.client, name, "broken", F.FAULT_EFFECT_HARDWARE_ERROR, call=call, drc_index=index, times=times)
    if flow == "pci-add":
        twins.plug("nic", NIC)
    else:
        twins.plug("core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    after = last_sequence(twins.client, twins.platform)
    assert twins.same_outcome(flow, hex(index)) == Outcome(twins.guest.outcomes[-1].event, "failed", detail, ())
    assert fault_events(twins.client, twins.platform, after) == [("broken", call, index, -1)] * times
    twins.check_platforms_alike()
    twins.check_tree(NIC_NODE if flow == "pci-add" else CORE_NODE)


@pytest.mark.parametrize(
    ("call", "detail"),
    [
        # _rtas_call() turns handle_delay()'s RTAS_TIMEOUT (-1007) into RTAS_IO_ASSERT (-1098) ...
        (F.FAULT_CALL_SET_INDICATOR, f"set-indicator(unisolate) on {NIC_DRC:#x} returned -1098"),
        # ... rtas_cfg_connector() returns it as it is.
        (F.FAULT_CALL_CONFIGURE_CONNECTOR, f"ibm,configure-connector on {NIC_DRC:#x} returned -1007"),
    ],
)
def test_rtas_delay_timeout_cuts_the_hint_short(twins: Twins, call: int, detail: str) -> None:
    """With rtas_delay_timeout(5), librtas sleeps at most what is left of 5 ms: after a 9902 (100 ms) it
    calls again about 95 ms early (a RETRY_TOO_SOON finding, LoPAR R1-13.5.3.4-3), and a second 9902
    ends the call with a timeout status."""
    client, platform = twins.client, twins.platform
    twins.plug("nic", NIC)
    add_rule(client, platform, "slow", F.FAULT_EFFECT_EXTENDED_DELAY, call=call, drc_index=NIC_DRC, status=9902,
             times=2)  # fmt: skip
    assert twins.run("pci-add", hex(NIC_DRC), "timeout=5") == ("failed", detail, ())
    assert fired_rules(client, platform) == {"slow": 2}
    (early,) = conduct(client, platform, F.CONDUCT_FINDING_KIND_RETRY_TOO_SOON)
    assert early.drc_index == NIC_DRC and early.requirement == "R1-13.5.3.4-3"
    assert 0 < float(early.detail.removesuffix(" ms early")) <= 95, early.detail  # 100 ms - 5 ms - the round trip
    twins.check_tree(NIC_NODE)


def test_librtas_returns_configure_connector_status_5_to_its_caller(twins: Twins) -> None:
    """Status 5 (pass a memory extent page): rtas_cfg_connector() gets a page from its rmo buffer and
    `continue`s its do-while loop, whose condition (rc == CALL_AGAIN) is then false, so it returns 5
    without calling again. drmgr's configure_connector() fails on 5 ("insufficient memory"); so does dlpar."""
    client, platform = twins.client, twins.platform
    twins.plug("nic", NIC)
    add_rule(client, platform, "page", F.FAULT_EFFECT_NEED_MEMORY, drc_index=NIC_DRC, times=1)
    after = last_sequence(client, platform)
    assert twins.run("pci-add", hex(NIC_DRC)) == (
        "failed", f"ibm,configure-connector on {NIC_DRC:#x} returned 5", ()
    )  # fmt: skip
    assert fault_events(client, platform, after) == [("page", F.FAULT_CALL_CONFIGURE_CONNECTOR, NIC_DRC, 5)]
    assert conduct(client, platform, F.CONDUCT_FINDING_KIND_NO_EXTENT_PAGE) == []  # it never called again
    twins.check_tree(NIC_NODE)


def test_the_sandbox_fetches_event_logs_as_the_kernel_does(client: Client, dlpar: Path, tmp_path: Path) -> None:
    """No program in the sandbox sees an interrupt; the kernel's ras_hotplug_interrupt would have fetched each
    announced log with check-exception before any tool acts, so the bridge does: pending ones when it starts,
    then one per pulse. No log is left for a LOG_NOT_DRAINED finding, or any other."""
    platform = new_platform(client)
    linux_cas(client, platform)
    plug(client, platform, "nic", NIC)  # queued and pulsed before the sandbox exists
    with open_sandbox(client, platform, tmp_path / "sandbox") as sandbox:
        events = [parse_hotplug_event(blob) for blob in sandbox.bridge.logs]
        assert [(e.resource, e.action, e.index) for e in events] == [(RESOURCE_PCI, ACTION_ADD, NIC_DRC)]
        plug(client, platform, "core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
        deadline = time.monotonic() + 10
        while len(sandbox.bridge.logs) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the pulse's own check-exception, made on the bridge's thread
        core = parse_hotplug_event(sandbox.bridge.logs[-1])
        assert (len(sandbox.bridge.logs), core.resource, core.action, core.index) == (2, RESOURCE_CPU, ACTION_ADD,
                                                                                     CORE_DRC)  # fmt: skip
        for args in (["pci-add", hex(NIC_DRC)], ["cpu-add", hex(CORE_DRC)]):
            output = subprocess.run(
                sandbox.command([str(dlpar), *args]), env=sandbox.environment(), capture_output=True, text=True,
                timeout=60,
            ).stdout  # fmt: skip
            assert output.startswith("outcome: done|"), output
        assert len(sandbox.bridge.logs) == 2
    assert client.faults.GetConduct(fault_pb2.GetConductRequest(platform=platform)).findings == []
    assert Guest(client.rtas, platform).check_exception(EVENT_CLASS_EPOW | EVENT_CLASS_HOTPLUG, 2048)[0] == 1
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_the_tree_is_booted_again_after_cas(client: Client, tmp_path: Path) -> None:
    """A guest that booted before CAS sees the tree CAS gives once it boots again (the sandbox's next command)."""
    platform = new_platform(client)
    with open_sandbox(client, platform, tmp_path / "sandbox") as sandbox:
        assert "/ibm,dynamic-reconfiguration-memory" not in sandbox.bridge.tree.nodes()
    linux_cas(client, platform)
    with open_sandbox(client, platform, tmp_path / "sandbox") as sandbox:
        nodes = sandbox.bridge.tree.nodes()
        assert "ibm,dynamic-memory-v2" in nodes["/ibm,dynamic-reconfiguration-memory"]
        exported = nodes_by_path(read_dtb(client.device_tree(platform)))
        assert differences(nodes, exported) == []
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))


def test_a_node_differing_from_configure_connector_is_a_finding(twins: Twins) -> None:
    """ofdt add_node of a node that is not the platform's: added, as the kernel would, and reported; the
    directory then shows the export's properties where the export has the node."""
    twins.plug("nic", NIC)
    nic = "/pci@800000020000000/ethernet@3"
    program = """
import os
unknown = b"add_node /cpus/x@1 reg 4 abcd"
wrong = b"add_node /pci@800000020000000/ethernet@3 reg 4 abcd vendor-id 4 0001"
for command in (unknown, wrong):
    fd = os.open("/proc/ppc64/ofdt", os.O_WRONLY)
    os.write(fd, command)
    os.close(fd)
"""
    code = subprocess.run(
        twins.sandbox.command([sys.executable, "-c", program]), env=twins.sandbox.environment(), timeout=60
    ).returncode  # fmt: skip
    assert code == 0
    nodes = twins.sandbox.bridge.tree.nodes()
    assert nodes["/cpus/x@1"] == {"reg": b"abcd"}
    exported = nodes_by_path(read_dtb(twins.client.device_tree(twins.platform)))
    assert nodes[nic] == exported[nic] and nodes[nic]["vendor-id"] == (0x1AF4).to_bytes(4, "big")
    assert twins.sandbox.bridge.findings[0] == "add_node /cpus/x@1: the platform's tree has no such node"
    assert twins.sandbox.bridge.findings[1].startswith(f"add_node {nic}: differs from what configure-connector")
    assert "reg, " in twins.sandbox.bridge.findings[1] and "vendor-id" in twins.sandbox.bridge.findings[1]


def test_ofdt_refusals_are_write_errors(twins: Twins) -> None:
    """Each write is one command, applied before write() returns; a refused one fails as the kernel's would."""
    program = """
import errno, os
def write(command):
    fd = os.open('/proc/ppc64/ofdt', os.O_WRONLY)
    try:
        os.write(fd, command)
        return 0
    except OSError as error:
        return error.errno
    finally:
        os.close(fd)
print(write(b'add_node /cpus reg 4 abcd'), write(b'remove_node /cpus'), write(b'remove_node /nope'),
      write(b'update_property /cpus x 1 y'), write(b'add_node /a/b reg 4 abcd'), write(b'add_node /x reg 9 ab'))
"""
    output = subprocess.run(
        twins.sandbox.command([sys.executable, "-c", program]), env=twins.sandbox.environment(),
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    codes = [errno.EINVAL, errno.EBUSY, errno.ENODEV, errno.EINVAL, errno.EINVAL, errno.EINVAL]
    assert output.split() == [str(code) for code in codes]
    twins.check_tree()  # nothing changed


RAW_CALLS = """
import ctypes, errno, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(token, args, nret):
    cells = [*args, *[0] * (16 - len(args))]
    buffer = ctypes.create_string_buffer(struct.pack(">3I16I", token, len(args), nret, *cells), 80)
    if libc.syscall(ctypes.c_long(255), buffer) != 0:
        return errno.errorcode[ctypes.get_errno()]
    return list(struct.unpack_from(f">{nret}i", buffer.raw, 12 + 4 * len(args)))
print(call(0x201D, [9003, 0x10000000], 2))        # get-sensor-state(dr-entity-sense) of core 0
print(call(0x201D, [9003, 0x10000003], 2))        # of core 3, a logical connector without a device: unusable
print(call(0x201E, [0x1000, 0], 1))               # configure-connector, work area outside the RMO
print(call(0x201D, list(range(10)), 10))          # 20 cells do not fit in args[16]
print(call(0x9999, [], 1))                        # a token the platform does not know
"""


def test_the_raw_rtas_syscall(twins: Twins) -> None:
    """The system call's ABI itself: big-endian struct rtas_args in, return cells after the arguments."""
    output = subprocess.run(
        twins.sandbox.command([sys.executable, "-c", RAW_CALLS]), env=twins.sandbox.environment(),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert output.splitlines() == ["[0, 1]", "[0, 2]", "EINVAL", "EINVAL", "[-3]"]


def test_a_call_the_server_cannot_answer_is_eio(client: Client, tmp_path: Path) -> None:
    """The platform deleted under the guest: the system call fails (EIO), as librtas sees a kernel error."""
    platform = new_platform(client)
    with open_sandbox(client, platform, tmp_path / "sandbox") as sandbox:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=platform))
        output = subprocess.run(
            sandbox.command([sys.executable, "-c", RAW_CALLS]), env=sandbox.environment(),
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    assert output.splitlines() == ["EIO", "EIO", "EINVAL", "EINVAL", "EIO"]


def test_the_guest_files(twins: Twins) -> None:
    script = "cat /proc/ppc64/rtas/rmo_buffer /proc/cpuinfo; ls /proc/device-tree/rtas; stat -c %s /dev/mem; id -u"
    output = subprocess.run(
        twins.sandbox.command(["sh", "-c", script]), env=twins.sandbox.environment(),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"{RMO.address:016x} {RMO.size:x}\n" in output
    assert "platform\t: pSeries" in output and "processor\t: 0" in output
    assert "ibm,configure-connector" in output.split()  # ls works (statx goes through fstatat)
    assert str(RMO.address + RMO.size) in output.split()
    assert output.split()[-1] == "0"  # root, as librtas requires


def cli(server: PaprServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "papr_emu.cli", "sandbox", "--server", server.addresses[0], *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_cli_runs_a_command_and_returns_its_status(server: PaprServer, client: Client) -> None:
    platform = new_platform(client)
    done = cli(server, "--platform", platform, "--", "sh", "-c", "cat /proc/device-tree/rtas/get-sensor-state; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout.encode() == (0x201D).to_bytes(4, "big")  # the token, as librtas reads it


def test_cli_binds_a_stand_in(server: PaprServer, client: Client, tmp_path: Path) -> None:
    (tmp_path / "C24").mkdir()
    (tmp_path / "C24" / "power").write_text("0\n")
    platform = new_platform(client)
    command = "echo 1 > /sys/bus/pci/slots/C24/power"
    done = cli(server, "--platform", platform, "--bind", f"{tmp_path}:/sys/bus/pci/slots", "--", "sh", "-c", command)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "C24" / "power").read_text() == "1\n"


def test_cli_errors(server: PaprServer, client: Client, tmp_path: Path) -> None:
    no_proot = cli(server, "--", "true", env={**os.environ, "PAPR_EMU_PROOT": "/nonexistent/proot"})
    assert no_proot.returncode == 125
    assert "PRoot not found (/nonexistent/proot)" in no_proot.stderr and "apt-get install proot" in no_proot.stderr
    no_platform = cli(server, "--platform", "nope", "--", "true")
    assert no_platform.returncode == 125 and "platform 'nope'" in no_platform.stderr
    proot = shutil.which("proot")
    assert proot is not None
    no_compiler = cli(
        server, "--", "true", env={"PATH": "/nonexistent", "XDG_CACHE_HOME": str(tmp_path), "PAPR_EMU_PROOT": proot}
    )
    assert no_compiler.returncode == 125 and "no C compiler found ($CC, cc or gcc)" in no_compiler.stderr
    bad_bind = cli(server, "--bind", "relative", "--", "true")
    assert bad_bind.returncode == 125 and "--bind relative: not HOST:GUEST" in bad_bind.stderr
    no_command = cli(server)
    assert no_command.returncode == 2 and "no command" in no_command.stderr


NEEDS_DRMGR = pytest.mark.skipif(
    not os.environ.get("PAPR_EMU_DRMGR"), reason="$PAPR_EMU_DRMGR names no drmgr (docs/sandbox.md)"
)


class Drmgr:
    """drmgr -c pci on slot C24 (slot 3) in the twins' sandbox, with stand-ins for the kernel's slot files."""

    def __init__(self, twins: Twins, tmp_path: Path) -> None:
        self.slots = tmp_path / "slots"
        (self.slots / "control").mkdir(parents=True)
        (self.slots / "C24").mkdir()
        for name in ("control/add_slot", "control/remove_slot", "C24/power"):
            (self.slots / name).touch()
        twins.sandbox.extra_bindings = [(str(self.slots), "/sys/bus/pci/slots")]
        self.sandbox = twins.sandbox

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = self.sandbox.command([os.environ["PAPR_EMU_DRMGR"], "-c", "pci", *args, "-s", "C24", "-n", "-I"])
        return subprocess.run(command, env=self.sandbox.environment(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, check=check)  # fmt: skip


@NEEDS_DRMGR
def test_drmgr_adds_and_removes_a_pci_slot(twins: Twins, tmp_path: Path) -> None:
    """drmgr, built from powerpc-utils' source (not in CI: no source reachable there), as docs/sandbox.md shows."""
    drmgr = Drmgr(twins, tmp_path)
    twins.plug("nic", NIC)
    drmgr.run("-a")
    assert connector(twins.client, twins.platform, NIC_DRC).state == connector_pb2.DRC_STATE_PHYSICAL_CONFIGURED
    assert (drmgr.slots / "C24" / "power").read_text().strip() == "1"
    twins.check_tree()
    twins.unplug("nic")
    drmgr.run("-r")
    assert connector(twins.client, twins.platform, NIC_DRC).device_id == ""
    assert "/pci@800000020000000/ethernet@3" not in twins.sandbox.bridge.tree.nodes()
    twins.check_tree()


@NEEDS_DRMGR
def test_drmgr_under_fault_rules(twins: Twins, tmp_path: Path) -> None:
    """drmgr never sees busy or 990x (librtas retries them); status 5 reaches it through rtas_cfg_connector
    and fails the add ("Configure_connector called with insufficient memory.")."""
    client, platform = twins.client, twins.platform
    drmgr = Drmgr(twins, tmp_path)
    add_rule(client, platform, "busy", F.FAULT_EFFECT_BUSY, drc_index=NIC_DRC, probability=0.3, seed=2)
    add_rule(client, platform, "delay", F.FAULT_EFFECT_EXTENDED_DELAY, status=9901, probability=0.3, seed=4)
    twins.plug("nic", NIC)
    drmgr.run("-a")
    assert connector(client, platform, NIC_DRC).state == connector_pb2.DRC_STATE_PHYSICAL_CONFIGURED
    twins.check_tree()
    twins.unplug("nic")
    drmgr.run("-r")
    assert connector(client, platform, NIC_DRC).device_id == ""
    twins.check_tree()
    fired = fired_rules(client, platform)
    assert fired["busy"] > 3 and fired["delay"] > 3, fired
    assert conduct(client, platform) == []

    client.faults.ClearFaultRules(fault_pb2.ClearFaultRulesRequest(platform=platform))
    add_rule(client, platform, "page", F.FAULT_EFFECT_NEED_MEMORY, drc_index=NIC_DRC, times=1)
    twins.plug("nic", NIC)
    failed = drmgr.run("-a", check=False)
    assert failed.returncode != 0
    assert "Configure_connector called with insufficient memory" in failed.stdout + failed.stderr
    assert fired_rules(client, platform) == {"page": 1}
    # drmgr's cleanup isolates the slot with the walk left after status 5 (LoPAR R1-13.5.3.5-4); the
    # platform refuses it (-3 from the unisolated state, as QEMU 7.2), so the slot stays unisolated.
    (abandoned,) = conduct(client, platform)
    assert (abandoned.kind, abandoned.call) == (
        F.CONDUCT_FINDING_KIND_ABANDONED_CONFIGURE, f"set-indicator(9001, {NIC_DRC:#x}, 0)"
    )  # fmt: skip
    assert connector(client, platform, NIC_DRC).state == connector_pb2.DRC_STATE_PHYSICAL_UNISOLATE
