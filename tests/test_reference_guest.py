"""The reference guest stub, reacting to interrupts, against a real server: add, remove,
refused remove, remove again; for memory, CPUs, PCI functions and PHBs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import Watcher, connector, plug, unplug
from papr.v1 import connector_pb2, device_pb2, hotplug_pb2
from papr_emu_client import Client, ReferenceGuest, RefusalPolicy

S = connector_pb2
LMBS = [0x80000004, 0x80000005, 0x80000006]


@pytest.fixture
def stub(client: Client, platform: str) -> Iterator[ReferenceGuest]:
    guest = ReferenceGuest(client, platform)
    guest.start()
    yield guest
    guest.stop()


def kinds(watcher: Watcher, count: int) -> list[str]:
    return [str(e.WhichOneof("kind")) for e in watcher.wait_for(count)]


@pytest.mark.parametrize("signal", ["unisolate", "configure-connector"])
def test_memory_add_remove_refused_and_again(client: Client, platform: str, stub: ReferenceGuest, signal: str) -> None:
    stub.policy = RefusalPolicy(lmbs_not_offlinable={0x80000006}, signal=signal)  # type: ignore[arg-type]
    watcher = Watcher(client, platform)
    plug(client, platform, "dimm1", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=3 << 28)))
    added = stub.wait_for(1)[0]
    assert (added.result, added.drc_indexes) == ("done", tuple(LMBS))  # add by count: the first free LMBs
    assert all(connector(client, platform, i).state == S.DRC_STATE_LOGICAL_CONFIGURED for i in LMBS)

    unplug(client, platform, "dimm1")
    refused = stub.wait_for(2)[1]
    assert refused.result == "refused" and "0x80000006 cannot be offlined" in refused.detail
    assert kinds(watcher, 3) == ["device_added", "unplug_requested", "unplug_rejected"]
    rejection = watcher.events[2].unplug_rejected
    assert rejection.drc_index == 0x80000004  # the first LMB re-added carries the signal
    assert rejection.signal == (
        hotplug_pb2.REFUSAL_SIGNAL_UNISOLATE
        if signal == "unisolate"
        else hotplug_pb2.REFUSAL_SIGNAL_CONFIGURE_CONNECTOR
    )
    for index in LMBS:
        c = connector(client, platform, index)
        assert (c.state, c.device_id, c.unplug_pending) == (S.DRC_STATE_LOGICAL_CONFIGURED, "dimm1", False)
    assert stub.assigned_lmbs >= set(LMBS)

    stub.policy = RefusalPolicy()  # the memory can go now
    unplug(client, platform, "dimm1")
    removed = stub.wait_for(3)[2]
    assert (removed.result, removed.drc_indexes) == ("done", tuple(LMBS))
    assert kinds(watcher, 5)[3:] == ["unplug_requested", "device_deleted"]
    assert watcher.events[4].device_deleted.released_by_drc_index == LMBS[-1]
    watcher.close()


def test_memory_refused_at_the_first_lmb_gives_no_signal(client: Client, platform: str, stub: ReferenceGuest) -> None:
    stub.policy = RefusalPolicy(lmbs_not_offlinable={0x80000004})
    plug(client, platform, "dimm1", device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=2 << 28)))
    stub.wait_for(1)
    unplug(client, platform, "dimm1")
    outcome = stub.wait_for(2)[1]
    assert outcome.result == "refused" and outcome.drc_indexes == ()
    # Linux re-adds only what it removed: nothing, so no RTAS call tells the platform. Still pending.
    assert connector(client, platform, 0x80000004).unplug_pending


def test_cpu_add_remove_refused_and_again(client: Client, platform: str, stub: ReferenceGuest) -> None:
    stub.policy = RefusalPolicy(busy_cpus={0x10000002})
    watcher = Watcher(client, platform)
    plug(client, platform, "core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    assert stub.wait_for(1)[0].detail == "PowerPC,POWER9@2"
    unplug(client, platform, "core2")
    assert stub.wait_for(2)[1].result == "refused"
    assert kinds(watcher, 3) == ["device_added", "unplug_requested", "unplug_rejected"]
    assert not connector(client, platform, 0x10000002).unplug_pending
    stub.policy = RefusalPolicy()
    unplug(client, platform, "core2")
    assert stub.wait_for(3)[2].result == "done"
    assert kinds(watcher, 5)[3:] == ["unplug_requested", "device_deleted"]
    assert connector(client, platform, 0x10000002).device_id == ""
    watcher.close()


def test_pci_and_phb_cycles(client: Client, platform: str, stub: ReferenceGuest) -> None:
    spec = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_VIRTIO_NET))
    plug(client, platform, "nic", spec)
    assert stub.wait_for(1)[0].detail == "ethernet@3"
    c = connector(client, platform, 0x40000018)
    assert (c.state, c.dr_indicator) == (S.DRC_STATE_PHYSICAL_CONFIGURED, 1)
    unplug(client, platform, "nic")
    assert stub.wait_for(2)[1].result == "done"
    c = connector(client, platform, 0x40000018)
    assert (c.state, c.device_id, c.dr_indicator) == (S.DRC_STATE_PHYSICAL_POWERON, "", 0)

    plug(client, platform, "phb3", device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=3)))
    assert stub.wait_for(3)[2].detail == "pci@800000020000003"
    unplug(client, platform, "phb3")
    assert stub.wait_for(4)[3].result == "done"
    assert connector(client, platform, 0x20000003).device_id == ""
    assert [o.result for o in stub.outcomes] == ["done"] * 4
