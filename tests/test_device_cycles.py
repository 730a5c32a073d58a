"""CPU core, PCI function and PHB hot-plug / hot-unplug cycles through a real server."""

from __future__ import annotations

import grpc
import pytest

from helpers import Watcher, connector, connectors, drain, plug, unplug
from papr.v1 import connector_pb2, device_pb2, hotplug_pb2, platform_pb2
from papr_emu_client import Client, Guest

ISOLATION, DR_INDICATOR, ALLOCATION = 9001, 9002, 9003
S = connector_pb2


def kinds(events: list[hotplug_pb2.Event]) -> list[str]:
    return [str(e.WhichOneof("kind")) for e in events]


def test_cpu_core_cycle(client: Client, platform: str, guest: Guest) -> None:
    watcher = Watcher(client, platform)
    core = plug(client, platform, "core2", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=2)))
    assert list(core.drc_indexes) == [0x10000002]
    assert connector(client, platform, 0x10000002).name == "CPU 2"
    assert drain(guest) == 1  # the add log, fetched as the guest's interrupt handler does
    guest.acquire_drc(0x10000002)
    node = guest.configure_connector(0x10000002)
    assert node.name == "PowerPC,POWER9@2"
    assert node.properties["ibm,my-drc-index"] == (0x10000002).to_bytes(4, "big")
    assert node.properties["ibm,ppc-interrupt-server#s"] == (2).to_bytes(4, "big")
    assert connector(client, platform, 0x10000002).state == S.DRC_STATE_LOGICAL_CONFIGURED

    assert not unplug(client, platform, "core2").deleted
    # configure-connector on a CPU with an unplug pending only replays: the unplug stays pending.
    assert [i.status for i in guest.configure_items(0x10000002)][-1] == 0
    assert connector(client, platform, 0x10000002).unplug_pending
    # A second request is accepted (QEMU re-sends the remove event) and changes nothing.
    assert not unplug(client, platform, "core2").deleted
    assert guest.set_indicator(ALLOCATION, 0x10000002, 0) == -3  # CONFIGURED: must isolate first
    assert drain(guest) == 2  # the remove log, twice
    guest.release_drc(0x10000002)
    c = connector(client, platform, 0x10000002)
    assert (c.state, c.device_id, c.unplug_pending) == (S.DRC_STATE_LOGICAL_UNUSABLE, "", False)
    events = watcher.wait_for(3)
    assert kinds(events) == ["device_added", "unplug_requested", "device_deleted"]
    assert events[2].device_deleted.released_by_drc_index == 0x10000002
    watcher.close()


def test_boot_core_is_configured_and_not_unpluggable(client: Client, platform: str, guest: Guest) -> None:
    c = connector(client, platform, 0x10000000)
    assert (c.state, c.device_id) == (S.DRC_STATE_LOGICAL_CONFIGURED, "core0")
    assert guest.sense(0x10000000) == (0, 1)
    # The boot core's fragment can be replayed, as for any configured connector.
    assert guest.configure_connector(0x10000000).name == "PowerPC,POWER9@0"


def test_pci_function_cycle_on_physical_connector(client: Client, platform: str, guest: Guest) -> None:
    index = 0x40000018  # PHB 0, slot 3, function 0: devfn 0x18
    assert connector(client, platform, index).state == S.DRC_STATE_PHYSICAL_POWERON
    assert guest.sense(index) == (0, 0)  # empty slot
    assert guest.set_indicator(ISOLATION, index, 1) == -3  # nothing to unisolate
    spec = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=3, model=device_pb2.PCI_MODEL_E1000))
    device = plug(client, platform, "nic1", spec)
    assert list(device.drc_indexes) == [index]
    assert guest.sense(index) == (0, 1)  # present at once: no allocation step for physical DRCs
    assert guest.set_indicator(ALLOCATION, index, 1) == -3
    assert guest.set_indicator(DR_INDICATOR, index, 1) == 0  # drmgr's LED
    assert connector(client, platform, index).dr_indicator == 1
    assert guest.set_indicator(DR_INDICATOR, index, 4) == -3
    assert guest.set_indicator(ISOLATION, index, 1) == 0
    assert connector(client, platform, index).state == S.DRC_STATE_PHYSICAL_UNISOLATE
    assert guest.set_indicator(ISOLATION, index, 0) == -3  # not before configured
    node = guest.configure_connector(index)
    assert node.name == "ethernet@3"
    assert connector(client, platform, index).state == S.DRC_STATE_PHYSICAL_CONFIGURED

    assert not unplug(client, platform, "nic1").deleted
    # Unisolate with an unplug pending is a plain no-op on a physical connector: no refusal.
    assert guest.set_indicator(ISOLATION, index, 1) == 0
    assert connector(client, platform, index).unplug_pending
    assert guest.set_indicator(ISOLATION, index, 0) == 0  # CONFIGURED -> POWERON releases it
    c = connector(client, platform, index)
    assert (c.state, c.device_id, c.entity_sense) == (S.DRC_STATE_PHYSICAL_POWERON, "", 0)


def test_pci_unplug_before_guest_unisolated_is_immediate(client: Client, platform: str, guest: Guest) -> None:
    spec = device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=5, model=device_pb2.PCI_MODEL_VIRTIO_NET))
    plug(client, platform, "nic2", spec)
    assert unplug(client, platform, "nic2").deleted
    assert guest.sense(0x40000028) == (0, 0)


def test_pci_multifunction_rules(client: Client, platform: str, guest: Guest) -> None:
    def spec(slot: int, function: int) -> device_pb2.DeviceSpec:
        return device_pb2.DeviceSpec(
            pci_function=device_pb2.PciFunctionSpec(slot=slot, function=function, model=device_pb2.PCI_MODEL_E1000)
        )

    plug(client, platform, "f1", spec(6, 1))
    plug(client, platform, "f0", spec(6, 0))
    assert drain(guest) == 2  # an add log per function, once function 0 is there
    for index in (0x40000030, 0x40000031):
        guest.set_indicator(ISOLATION, index, 1)
        guest.configure_connector(index)
    assert guest.configure_connector(0x40000031).name == "ethernet@6,1"
    watcher = Watcher(client, platform)
    # QEMU 7.2: unplugging function 0 takes the slot's other functions with it.
    assert not unplug(client, platform, "f0").deleted
    assert connector(client, platform, 0x40000031).unplug_pending
    with pytest.raises(grpc.RpcError) as again:
        unplug(client, platform, "f1")
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert again.value.details() == "PCI device unplug already in progress for device f1"
    assert drain(guest) == 2
    for index in (0x40000031, 0x40000030):
        assert guest.set_indicator(ISOLATION, index, 0) == 0
    events = watcher.wait_for(4)
    assert [(e.WhichOneof("kind"), e.unplug_requested.device_id or e.device_deleted.device_id) for e in events] == [
        ("unplug_requested", "f1"),
        ("unplug_requested", "f0"),
        ("device_deleted", "f1"),
        ("device_deleted", "f0"),
    ]
    watcher.close()


def test_phb_cycle(client: Client, platform: str, guest: Guest) -> None:
    before = {c.index for c in connectors(client, platform, type=S.DRC_TYPE_PCI)}
    assert before == set(range(0x40000000, 0x40000100))
    phb = plug(client, platform, "phb1", device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=1)))
    assert list(phb.drc_indexes) == [0x20000001]
    pci = connectors(client, platform, type=S.DRC_TYPE_PCI)
    added = sorted(c.index for c in pci if c.index not in before)
    assert added == list(range(0x40010000, 0x40010100))
    assert {c.parent_path for c in pci if c.index in added} == {"/pci@800000020000001"}
    spec = device_pb2.DeviceSpec(
        pci_function=device_pb2.PciFunctionSpec(phb_index=1, slot=1, model=device_pb2.PCI_MODEL_E1000)
    )
    plug(client, platform, "nic-on-phb1", spec)

    guest.acquire_drc(0x20000001)
    node = guest.configure_connector(0x20000001)
    assert node.name == "pci@800000020000001"
    assert node.properties["ibm,my-drc-index"] == (0x20000001).to_bytes(4, "big")
    assert [child.name for child in node.children] == ["ethernet@1"]  # the function on its bus

    watcher = Watcher(client, platform)
    assert not unplug(client, platform, "phb1").deleted
    drain(guest)
    guest.release_drc(0x20000001)
    events = watcher.wait_for(3)
    assert kinds(events) == ["unplug_requested", "device_deleted", "device_deleted"]
    assert [e.device_deleted.device_id for e in events[1:]] == ["nic-on-phb1", "phb1"]
    assert {c.index for c in connectors(client, platform, type=S.DRC_TYPE_PCI)} == before
    devices = client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=platform)).devices
    assert [d.id for d in devices] == ["core0", "phb0"]
    watcher.close()


def test_phb_fragment_holds_its_functions(client: Client, platform: str, guest: Guest) -> None:
    """QEMU's spapr_dt_phb: the PHB node and, as children, the functions on its bus (as in the boot tree)."""
    plug(client, platform, "phb2", device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=2)))
    for device_id, slot, model in (
        ("nic3", 3, device_pb2.PCI_MODEL_VIRTIO_NET),
        ("nic2", 2, device_pb2.PCI_MODEL_E1000),
    ):
        spec = device_pb2.PciFunctionSpec(phb_index=2, slot=slot, model=model)
        plug(client, platform, device_id, device_pb2.DeviceSpec(pci_function=spec))
    guest.acquire_drc(0x20000002)
    items = guest.configure_items(0x20000002)
    assert [(i.status, i.name) for i in items if i.status != 3] == [
        (2, "pci@800000020000002"), (2, "ethernet@2"), (4, ""), (2, "ethernet@3"), (4, ""), (0, ""),
    ]  # fmt: skip
    node = guest.configure_connector(0x20000002)  # a replay: the same nodes
    assert [c.properties["ibm,my-drc-index"].hex() for c in node.children] == ["40020010", "40020018"]
    assert "ibm,req#msi-x" in node.children[1].properties  # virtio-net-pci's own node

    spec = device_pb2.PciFunctionSpec(phb_index=2, slot=4, model=device_pb2.PCI_MODEL_E1000)
    plug(client, platform, "nic4", device_pb2.DeviceSpec(pci_function=spec))
    # Built anew at each sequence (compat #16; QEMU replays its first copy): nic4 is in the next replay.
    names = [c.name for c in guest.configure_connector(0x20000002).children]
    assert names == ["ethernet@2", "ethernet@3", "ethernet@4"]
    # The function's own fragment is the node the PHB's holds.
    assert guest.set_indicator(ISOLATION, 0x40020010, 1) == 0  # physical: present at once, unisolate
    assert guest.configure_connector(0x40020010) == node.children[0]


def test_platform_counts(client: Client, platform: str) -> None:
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    counts = {c.type: c.count for c in info.connector_counts}
    assert counts == {
        S.DRC_TYPE_CPU: 4,
        S.DRC_TYPE_PHB: 31,
        S.DRC_TYPE_PCI: 256,
        S.DRC_TYPE_LMB: 12,
        S.DRC_TYPE_PMEM: 4,
    }
    assert info.connector_total == 307 and info.device_count == 2 and info.device_memory_base == 1 << 30
