"""Each device type's behaviour, in-process: plug rules, ids, event logs, unplug rules, fragments.

The device classes are driven directly (an :class:`Inventory` built by hand, no platform);
a few checks at the end go through an in-process :class:`Platform` (no gRPC) for what
needs the orchestration: a PHB delete cascading to its functions, a refusal cancelling
the unplug of a whole DIMM, unplug timeouts, and the watcher mailbox. Expected values
are QEMU 7.2's (``shared/reference/qemu-7.2-observed.md``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from papr_emu.model import (
    DEVICE_CLASSES,
    TIMEOUT_KEYS,
    AlreadyExists,
    CpuCoreParams,
    DeviceDeleted,
    DeviceType,
    DimmRequest,
    DrcState,
    Event,
    FailedPrecondition,
    Geometry,
    InvalidArgument,
    NotFound,
    PciFunctionParams,
    PciModel,
    PhbParams,
    Platform,
    PlatformError,
    PlugRequest,
    RefusalSignal,
    SubscriptionClosed,
    UnplugRejected,
    UnplugTimedOut,
    UnplugTimeouts,
    plug_rules,
    rtas,
    timeout_key,
)
from papr_emu.model.devices import (
    CpuCore,
    Device,
    Dimm,
    Inventory,
    Nvdimm,
    NvdimmRequest,
    PciFunction,
    Phb,
    device_class_for,
    device_class_of,
)
from papr_emu.model.devicetree import cells, u64
from papr_emu.model.drc import CPU, LMB, PCI, PHB
from papr_emu.model.drc_table import DrcRange
from papr_emu.model.mailbox import Mailbox, MailboxOverflow
from papr_emu.model.rtas_log import (
    HP_ACTION_ADD,
    HP_ACTION_REMOVE,
    HP_ID_DRC_COUNT,
    HP_ID_DRC_COUNT_INDEXED,
    HP_ID_DRC_INDEX,
    HP_RESOURCE_CPU,
    HP_RESOURCE_MEMORY,
    HP_RESOURCE_PCI,
    HP_RESOURCE_PHB,
    HP_RESOURCE_PMEM,
    HotplugLog,
)
from papr_emu.model.view import FragmentView
from papr_emu_client.guest import build_node
from papr_emu_client.workarea import CcItem, DtNode, new_work_area, read_item

MiB: Final = 1 << 20
GiB: Final = 1 << 30
#: QEMU's -m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4: device memory 0x40000000..0xffffffff, LMBs 4..15.
G: Final = Geometry.build(memory=1 * GiB, max_memory=4 * GiB, slots=4, cpus=1, max_cpus=4)
BASE: Final = 0x40000000
E1000, VIRTIO = PciModel.E1000, PciModel.VIRTIO_NET
PHB0_BUS: Final = "/pci@800000020000000"
PHB1_BUS: Final = "/pci@800000020000001"


def inventory(*devices: Device) -> Inventory[Device]:
    result: Inventory[Device] = Inventory()
    for device in devices:
        result.add(device)
    return result


def attached(device: Device) -> Device:
    """The device with all its connectors attached (as the platform leaves a plugged device)."""
    device.attached.update(device.drc_indexes)
    return device


def pending(device: Device) -> Device:
    device.unplug_pending = True
    return device


def dimm(device_id: str, slot: int, address: int, size: int = 256 * MiB) -> Dimm:
    return Dimm(device_id, hotplugged=True, size=size, slot=slot, address=address)


UUID: Final = "01234567-89ab-cdef-0123-456789abcdef"


def nvdimm(device_id: str, slot: int, address: int, size: int = 256 * MiB) -> Nvdimm:
    return Nvdimm(device_id, hotplugged=True, size=size, slot=slot, address=address, label_size=128 << 10, uuid=UUID)


def core(core_id: int, device_id: str = "") -> CpuCore:
    return CpuCore(device_id or f"core{core_id}", hotplugged=core_id != 0, core_id=core_id)


def function(device_id: str, slot: int, fn: int, phb: int = 0, model: PciModel = E1000) -> PciFunction:
    return PciFunction(device_id, hotplugged=True, phb_index=phb, slot=slot, function=fn, model=model)


def phb(index: int, device_id: str = "") -> Phb:
    return Phb(device_id or f"phb{index}", hotplugged=index != 0, index=index)


def prepare(
    request: PlugRequest,
    *devices: Device,
    device_id: str = "",
    geometry: Geometry = G,
    hotplugged: bool = True,
) -> Device:
    return plug_rules.prepare(geometry, inventory(*devices), device_id, request, hotplugged)


# --- plug_rules.prepare: ids -----------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["a", "core1", "A.b-c_d9", "x" * 64])
def test_valid_ids(device_id: str) -> None:
    assert prepare(CpuCoreParams(1), device_id=device_id).id == device_id


@pytest.mark.parametrize("device_id", ["1core", "-x", "_x", ".x", "has space", "x/y", "é", "x" * 65])
def test_invalid_ids(device_id: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        prepare(CpuCoreParams(1), device_id=device_id)
    assert (error.value.field, error.value.value) == ("id", device_id)


def test_duplicate_id_is_refused_before_the_type_rules() -> None:
    taken = phb(1, device_id="x")
    with pytest.raises(AlreadyExists) as error:
        prepare(CpuCoreParams(1), taken, device_id="x")
    assert (error.value.field, error.value.value) == ("id", "x")
    with pytest.raises(AlreadyExists):  # even for a request its type would refuse
        prepare(CpuCoreParams(99), taken, device_id="x")


# --- plug_rules.prepare: QEMU's refusals per type ---------------------------------------------------

NO_MAXMEM: Final = Geometry.build(memory=1 * GiB)
SMT2: Final = Geometry.build(memory=1 * GiB, max_memory=4 * GiB, slots=4, cpus=2, max_cpus=8, threads=2)

# (request, devices present, geometry, hotplugged, error class, field, message)
Refusal = tuple[PlugRequest, Callable[[], list[Device]], Geometry, bool, type[PlatformError], str, str]
REFUSALS: Final[dict[str, Refusal]] = {
    "dimm size 0": (
        DimmRequest(0), list, G, True, InvalidArgument, "dimm.size_bytes",
        "dimm.size_bytes: 0: Hotplugged memory size must be a multiple of 256 MB",
    ),
    "dimm size negative": (
        DimmRequest(-256 * MiB), list, G, True, InvalidArgument, "dimm.size_bytes",
        "Hotplugged memory size must be a multiple of 256 MB",
    ),
    "dimm size unaligned": (
        DimmRequest(100 * MiB), list, G, True, InvalidArgument, "dimm.size_bytes",
        "dimm.size_bytes: 0x6400000: Hotplugged memory size must be a multiple of 256 MB",
    ),
    "dimm without maxmem": (
        DimmRequest(256 * MiB), list, NO_MAXMEM, True, FailedPrecondition, "",
        "memory devices (e.g. for memory hotplug) are not enabled, please specify the maxmem option",
    ),
    "dimm slot too large": (
        DimmRequest(256 * MiB, slot=4), list, G, True, InvalidArgument, "dimm.slot",
        "dimm.slot: 4: invalid slot# 4, should be less than 4",
    ),
    "dimm slot busy": (
        DimmRequest(256 * MiB, slot=2), lambda: [dimm("d", 2, BASE)], G, True, FailedPrecondition, "dimm.slot",
        "dimm.slot: 2: slot 2 is busy",
    ),
    "dimm no free slot": (
        DimmRequest(256 * MiB), lambda: [dimm(f"d{s}", s, BASE + s * 256 * MiB) for s in range(4)], G, True,
        FailedPrecondition, "", "no free slots available",
    ),
    "dimm not enough space": (
        DimmRequest(2 * GiB), lambda: [dimm("d", 0, BASE, size=2 * GiB)], G, True, FailedPrecondition, "",
        "not enough space, currently 0x80000000 in use of total space for memory devices 0xc0000000",
    ),
    "dimm fragmented": (
        DimmRequest(11 * 256 * MiB), lambda: [dimm("a", 0, BASE + 256 * MiB)], G, True, FailedPrecondition, "",
        "could not find position in guest address space for memory device - memory fragmented due to alignments",
    ),
    "dimm address unaligned": (
        DimmRequest(256 * MiB, address=BASE + MiB), list, G, True, InvalidArgument, "dimm.address",
        "dimm.address: 0x40100000: must be aligned to 256 MiB (one LMB)",
    ),
    "dimm address below device memory": (
        DimmRequest(256 * MiB, address=0x30000000), list, G, True, InvalidArgument, "dimm.address",
        "can't add memory device [0x30000000:0x3fffffff], usable range for memory devices [0x40000000:0xffffffff]",
    ),
    "dimm address past device memory": (
        DimmRequest(512 * MiB, address=0xF0000000), list, G, True, InvalidArgument, "dimm.address",
        "can't add memory device [0xf0000000:0x10fffffff], usable range for memory devices [0x40000000:0xffffffff]",
    ),
    "dimm address overlaps": (
        DimmRequest(256 * MiB, address=BASE + 256 * MiB), lambda: [dimm("dimm0", 0, BASE, size=512 * MiB)], G, True,
        FailedPrecondition, "dimm.address",
        "dimm.address: 0x50000000: address range conflicts with memory device id='dimm0'",
    ),
    "core id not a thread-0 id": (
        CpuCoreParams(1), list, SMT2, True, InvalidArgument, "cpu_core.core_id",
        "cpu_core.core_id: 1: invalid core id 1",
    ),
    "core id out of range": (
        CpuCoreParams(4), list, G, True, InvalidArgument, "cpu_core.core_id",
        "cpu_core.core_id: 4: core id 4 out of range",
    ),
    "core populated": (
        CpuCoreParams(1), lambda: [core(1, "other")], G, True, FailedPrecondition, "cpu_core.core_id",
        "cpu_core.core_id: 1: core 1 already populated",
    ),
    "pci slot too large": (
        PciFunctionParams(0, 32, 0, E1000), lambda: [phb(0)], G, True, InvalidArgument, "pci_function.slot",
        "pci_function.slot: 0x20: must be below 32",
    ),
    "pci function too large": (
        PciFunctionParams(0, 1, 8, E1000), lambda: [phb(0)], G, True, InvalidArgument, "pci_function.function",
        "pci_function.function: 8: must be below 8",
    ),
    "pci no such phb": (
        PciFunctionParams(1, 1, 0, E1000), lambda: [phb(0)], G, True, NotFound, "pci_function.phb_index",
        "pci_function.phb_index: 1: no such PHB (bus 'pci.1')",
    ),
    "pci function in use": (
        PciFunctionParams(0, 1, 0, VIRTIO), lambda: [phb(0), function("nic", 1, 0)], G, True, FailedPrecondition, "",
        'PCI: slot 1 function 0 not available for virtio-net-pci, in use by e1000,id "nic"',
    ),
    "pci function after function 0": (
        PciFunctionParams(0, 1, 3, VIRTIO), lambda: [phb(0), function("nic", 1, 0)], G, True, FailedPrecondition, "",
        "PCI: slot 1 function 0 already occupied by e1000, additional functions can no longer be exposed to guest.",
    ),
    "phb index too large": (
        PhbParams(31), list, G, True, InvalidArgument, "phb.index",
        'phb.index: 0x1f: "index" for PAPR PHB is too large (max 30)',
    ),
    "phb attached": (
        PhbParams(0), lambda: [phb(0)], G, True, FailedPrecondition, "phb.index",
        "phb.index: 0: PHB 0 already attached",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_prepare_refusals(case: str) -> None:
    request, devices, geometry, hotplugged, error_class, field, message = REFUSALS[case]
    present = inventory(*devices())
    ids_before = [d.id for d in present]
    with pytest.raises(error_class) as error:
        plug_rules.prepare(geometry, present, "", request, hotplugged)
    assert type(error.value) is error_class
    assert error.value.field == field
    assert message in error.value.message
    assert [d.id for d in present] == ids_before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (CpuCoreParams(-1), "cpu_core.core_id"),
        (PhbParams(-1), "phb.index"),
        (DimmRequest(256 * MiB, slot=-1), "dimm.slot"),
        (PciFunctionParams(0, -1, 0, E1000), "pci_function.slot"),
        (PciFunctionParams(0, 1, -1, E1000), "pci_function.function"),
    ],
    ids=["cpu", "phb", "dimm-slot", "pci-slot", "pci-function"],
)
def test_prepare_refuses_negative_ids(request_: PlugRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        prepare(request_, phb(0))
    assert error.value.field == field


def test_pci_function_after_function_0_is_fine_at_coldplug() -> None:
    device = prepare(PciFunctionParams(0, 1, 3, VIRTIO), phb(0), function("nic", 1, 0), hotplugged=False)
    assert isinstance(device, PciFunction)
    assert (device.devfn, device.hotplugged, hex(device.drc_indexes[0])) == (11, False, "0x4000000b")


def test_pci_functions_before_function_0_are_fine() -> None:
    device = prepare(PciFunctionParams(0, 1, 0, E1000), phb(0), function("f3", 1, 3), function("f1", 1, 1))
    assert device.id == "pci0.1.0"


@pytest.mark.parametrize(
    ("request_", "drc_indexes", "params"),
    [
        (CpuCoreParams(3), [0x10000003], CpuCoreParams(3)),
        (PhbParams(30), [0x2000001E], PhbParams(30)),
        (PciFunctionParams(0, 31, 7, VIRTIO), [0x400000FF], PciFunctionParams(0, 31, 7, VIRTIO)),
    ],
    ids=["cpu", "phb", "pci"],
)
def test_prepare_accepts(request_: PlugRequest, drc_indexes: list[int], params: object) -> None:
    device = prepare(request_, phb(0))
    assert list(device.drc_indexes) == drc_indexes
    assert device.params == params
    assert (device.hotplugged, device.unplug_pending, device.attached) == (True, False, set())


def test_core_ids_follow_threads() -> None:
    device = prepare(CpuCoreParams(6), geometry=SMT2)
    assert isinstance(device, CpuCore)
    assert (device.threads, list(device.drc_indexes)) == (2, [0x10000006])


# --- DIMM placement ----------------------------------------------------------------------------------

PLACEMENTS: Final = {
    # request, DIMMs present (id, slot, address, size) -> (slot, address) chosen
    "first": (DimmRequest(512 * MiB), [], (0, BASE)),
    "after another": (DimmRequest(256 * MiB), [("a", 0, BASE, 512 * MiB)], (1, BASE + 512 * MiB)),
    "first free slot, not address order": (DimmRequest(256 * MiB), [("a", 1, BASE, 256 * MiB)], (0, BASE + 256 * MiB)),
    "into a gap that fits": (
        DimmRequest(512 * MiB), [("a", 0, BASE, 256 * MiB), ("b", 2, BASE + 768 * MiB, 256 * MiB)],
        (1, BASE + 256 * MiB),
    ),
    "past a gap too small": (
        DimmRequest(768 * MiB), [("a", 0, BASE, 256 * MiB), ("b", 2, BASE + 768 * MiB, 256 * MiB)],
        (1, BASE + GiB),
    ),
    "gap at the start": (DimmRequest(256 * MiB), [("a", 0, BASE + 256 * MiB, 256 * MiB)], (1, BASE)),
    "explicit slot": (DimmRequest(256 * MiB, slot=3), [], (3, BASE)),
    "explicit address": (DimmRequest(256 * MiB, address=BASE + GiB), [("a", 0, BASE, 256 * MiB)], (1, BASE + GiB)),
    "explicit both, last LMB": (DimmRequest(256 * MiB, slot=2, address=0xF0000000), [], (2, 0xF0000000)),
    "adjacent below another": (
        DimmRequest(256 * MiB, address=BASE), [("a", 0, BASE + 256 * MiB, 256 * MiB)], (1, BASE),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PLACEMENTS))
def test_dimm_placement(case: str) -> None:
    request, present, (slot, address) = PLACEMENTS[case]
    device = prepare(request, *(dimm(i, s, a, size) for i, s, a, size in present))
    assert isinstance(device, Dimm)
    assert (device.slot, device.address, device.size) == (slot, address, request.size)
    first_lmb = address // (256 * MiB)
    assert device.drc_indexes == range(LMB.index(first_lmb), LMB.index(first_lmb) + request.size // (256 * MiB))


@pytest.mark.parametrize(
    ("request_", "present", "slot_and_address"),
    [
        (DimmRequest(256 * MiB), [nvdimm("n", 0, BASE)], (1, BASE + 256 * MiB)),
        (NvdimmRequest(256 * MiB, 128 << 10, UUID), [dimm("d", 0, BASE)], (1, BASE + 256 * MiB)),
        (NvdimmRequest(512 * MiB, 128 << 10, UUID), [dimm("d", 1, BASE + 256 * MiB)], (0, BASE + 512 * MiB)),
        (NvdimmRequest(256 * MiB, 128 << 10, UUID, slot=3, address=BASE + GiB), [], (3, BASE + GiB)),
    ],
    ids=["dimm-after-nvdimm", "nvdimm-after-dimm", "nvdimm-past-a-dimm", "nvdimm-explicit"],
)
def test_memory_devices_share_slots_and_address_space(
    request_: PlugRequest, present: list[Device], slot_and_address: tuple[int, int]
) -> None:
    device = prepare(request_, *present)
    assert (device.slot, device.address) == slot_and_address  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("request_", "present", "error", "message"),
    [
        (NvdimmRequest(256 * MiB, 128 << 10, UUID, slot=0), [dimm("d", 0, BASE)], FailedPrecondition, "slot 0 is busy"),
        (DimmRequest(256 * MiB, slot=2), [nvdimm("n", 2, BASE)], FailedPrecondition, "slot 2 is busy"),
        (DimmRequest(256 * MiB, address=BASE), [nvdimm("n", 0, BASE)], FailedPrecondition, "memory device id='n'"),
        (NvdimmRequest(3 * GiB, 128 << 10, UUID), [dimm("d", 0, BASE)], FailedPrecondition, "not enough space"),
        (NvdimmRequest(256 * MiB, None, UUID), [], InvalidArgument, "to have label-size set"),
        (NvdimmRequest(256 * MiB, 64 << 10, UUID), [], InvalidArgument, "(0x10000) is required at least 0x20000"),
        (NvdimmRequest(3 * 128 * MiB, 128 << 10, UUID), [], InvalidArgument, "a multiple of 256MB"),
        (NvdimmRequest(256 * MiB, 128 << 10, ""), [], InvalidArgument, "requires the uuid to be set"),
        (NvdimmRequest(256 * MiB, 128 << 10, "{" + UUID + "}"), [], InvalidArgument, "must be a UUID"),
    ],
)
def test_nvdimm_refusals(
    request_: PlugRequest, present: list[Device], error: type[PlatformError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        prepare(request_, *present)


def test_nvdimm_identity_logs_and_fragment() -> None:
    device = attached(prepare(NvdimmRequest(512 * MiB, 256 << 10, UUID.upper(), slot=2)))
    assert isinstance(device, Nvdimm) and device.uuid == UUID  # stored as QEMU prints it
    assert (list(device.drc_indexes), device.memory_blocks, device.parent_path) == (
        [0x90000002], 0, "/ibm,persistent-memory")  # fmt: skip
    present = inventory(device)
    for count_indexed in (False, True):
        assert device.plug_logs(present, count_indexed) == [
            HotplugLog(HP_RESOURCE_PMEM, HP_ACTION_ADD, HP_ID_DRC_INDEX, 0x90000002)
        ]
    assert device.unplug_logs(present) == [HotplugLog(HP_RESOURCE_PMEM, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, 0x90000002)]
    node = device.fragment(0x90000002, fragment_view())
    assert node.name == "ibm,pmemory@90000002" and not node.children
    values = properties(node)
    assert values["ibm,number-of-blocks"] == u64(2) and values["ibm,metadata-size"] == cells(256 << 10)
    assert values["reg"] == values["ibm,my-drc-index"] == cells(0x90000002)


def test_an_nvdimm_unplugs_on_its_pmem_connector() -> None:
    platform = Platform("p", G)
    platform.plug("nv", NvdimmRequest(256 * MiB, 128 << 10, UUID))
    assert platform.set_indicator(rtas.ALLOCATION_STATE, 0x90000000, 1) == 0
    assert platform.set_indicator(rtas.ISOLATION_STATE, 0x90000000, 1) == 0
    area, status = new_work_area(0x90000000), 1
    while status != 0:
        status, area = platform.configure_connector(area)
        assert status in (0, 2, 3)
    platform.unplug("nv")
    assert platform.set_indicator(rtas.ISOLATION_STATE, 0x90000000, 0) == 0
    assert platform.set_indicator(rtas.ALLOCATION_STATE, 0x90000000, 0) == 0
    assert platform.get_sensor_state(rtas.DR_ENTITY_SENSE, 0x90000000) == (0, 2)
    assert [d.id for d in platform.devices()] == ["core0", "phb0"]


def test_dimm_fills_device_memory_exactly() -> None:
    device = prepare(DimmRequest(3 * GiB))
    assert (device.drc_indexes.start, len(device.drc_indexes)) == (0x80000004, 12)


# --- default ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "taken", "expected"),
    [
        (DimmRequest(256 * MiB), [], "dimm0"),
        (DimmRequest(256 * MiB), ["dimm0", "dimm1"], "dimm2"),
        (DimmRequest(256 * MiB), ["dimm1"], "dimm0"),
        (CpuCoreParams(2), [], "core2"),
        (CpuCoreParams(2), ["core2"], "core2-1"),
        (CpuCoreParams(2), ["core2", "core2-1"], "core2-2"),
        (PciFunctionParams(0, 3, 1, E1000), [], "pci0.3.1"),
        (PciFunctionParams(0, 3, 1, E1000), ["pci0.3.1"], "pci0.3.1-1"),
        (PhbParams(1), [], "phb1"),
        (PhbParams(1), ["phb1"], "phb1-1"),
    ],
)
def test_default_id(request_: PlugRequest, taken: list[str], expected: str) -> None:
    # Ids taken by devices of another type (PHBs 10, 11, ...): only the id matters.
    present = [phb(10 + n, device_id=device_id) for n, device_id in enumerate(taken)]
    cls = device_class_for(request_)
    assert cls.default_id(request_, inventory(*present)) == expected
    if isinstance(request_, PciFunctionParams):
        present.append(phb(0))
    assert prepare(request_, *present).id == expected


def test_device_classes_are_registered_once() -> None:
    assert {cls.type for cls in DEVICE_CLASSES} == set(DeviceType)
    assert len({cls.request_type for cls in DEVICE_CLASSES}) == len(DEVICE_CLASSES)
    for cls in DEVICE_CLASSES:
        assert device_class_of(cls.type) is cls


# --- hotplug event logs --------------------------------------------------------------------------------


@pytest.mark.parametrize("count_indexed", [False, True], ids=["count", "count-indexed"])
def test_dimm_logs(count_indexed: bool) -> None:
    device = attached(dimm("dimm0", 0, BASE + 256 * MiB, size=768 * MiB))
    present = inventory(device)
    if count_indexed:  # the guest negotiated the hot-plug event source at CAS
        add = HotplugLog(HP_RESOURCE_MEMORY, HP_ACTION_ADD, HP_ID_DRC_COUNT_INDEXED, 0x80000005, 3)
    else:  # pre-CAS: a count of any free LMBs
        add = HotplugLog(HP_RESOURCE_MEMORY, HP_ACTION_ADD, HP_ID_DRC_COUNT, 0, 3)
    assert device.plug_logs(present, count_indexed) == [add]
    remove = HotplugLog(HP_RESOURCE_MEMORY, HP_ACTION_REMOVE, HP_ID_DRC_COUNT_INDEXED, 0x80000005, 3)
    assert device.unplug_logs(present) == [remove]


@pytest.mark.parametrize(
    ("make", "resource", "index"),
    [(lambda: core(2), HP_RESOURCE_CPU, 0x10000002), (lambda: phb(3), HP_RESOURCE_PHB, 0x20000003)],
    ids=["cpu", "phb"],
)
def test_one_indexed_log(make: Callable[[], Device], resource: int, index: int) -> None:
    device = attached(make())
    present = inventory(device)
    for count_indexed in (False, True):
        assert device.plug_logs(present, count_indexed) == [HotplugLog(resource, HP_ACTION_ADD, HP_ID_DRC_INDEX, index)]
    assert device.unplug_logs(present) == [HotplugLog(resource, HP_ACTION_REMOVE, HP_ID_DRC_INDEX, index)]


def pci_slot_1() -> dict[str, PciFunction]:
    """Functions 0, 2 and 5 in PHB 0's slot 1, and neighbours that are not in it."""
    return {
        "f0": function("f0", 1, 0),
        "f2": function("f2", 1, 2),
        "f5": function("f5", 1, 5),
        "other-slot": function("other-slot", 2, 3),
        "other-phb": function("other-phb", 1, 1, phb=1),
    }


def pci_log(action: int, index: int) -> HotplugLog:
    return HotplugLog(HP_RESOURCE_PCI, action, HP_ID_DRC_INDEX, index)


def test_pci_function_0_announces_its_slot() -> None:
    functions = pci_slot_1()
    present = inventory(phb(0), phb(1), *(attached(f) for f in functions.values()))
    slot = [0x40000008, 0x4000000A, 0x4000000D]
    for count_indexed in (False, True):
        assert functions["f0"].plug_logs(present, count_indexed) == [pci_log(HP_ACTION_ADD, i) for i in slot]
    assert functions["f0"].unplug_logs(present) == [pci_log(HP_ACTION_REMOVE, i) for i in reversed(slot)]
    for name in ("f2", "f5", "other-slot", "other-phb"):
        assert functions[name].plug_logs(present, False) == []
        assert functions[name].unplug_logs(present) == []


def test_pci_released_functions_get_no_remove_log() -> None:
    functions = pci_slot_1()
    attached(functions["f0"])
    attached(functions["f5"])  # f2 was released already (never unisolated)
    present = inventory(phb(0), phb(1), *functions.values())
    assert functions["f0"].unplug_logs(present) == [pci_log(HP_ACTION_REMOVE, i) for i in (0x4000000D, 0x40000008)]


def test_pci_function_0_alone() -> None:
    f0 = attached(function("nic", 4, 0))
    present = inventory(phb(0), f0)
    assert f0.plug_logs(present, False) == [pci_log(HP_ACTION_ADD, 0x40000020)]
    assert f0.unplug_logs(present) == [pci_log(HP_ACTION_REMOVE, 0x40000020)]


# --- unplug rules --------------------------------------------------------------------------------------


def test_boot_core_may_not_be_unplugged() -> None:
    with pytest.raises(FailedPrecondition, match=r"^Boot CPU core may not be unplugged$"):
        core(0).check_unplug()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: dimm("dimm0", 0, BASE), "Memory unplug already in progress for device dimm0"),
        (lambda: phb(1), "PCI Host Bridge unplug already in progress for device phb1"),
        (lambda: function("nic", 1, 0), "PCI device unplug already in progress for device nic"),
        (lambda: core(1), None),  # a CPU core may be asked again: QEMU re-sends the remove event
    ],
    ids=["dimm", "phb", "pci", "cpu"],
)
def test_unplug_already_in_progress(make: Callable[[], Device], message: str | None) -> None:
    device = make()
    device.check_unplug()  # nothing pending: fine
    pending(device)
    if message is None:
        device.check_unplug()
    else:
        with pytest.raises(FailedPrecondition) as error:
            device.check_unplug()
        assert (error.value.message, error.value.field) == (message, "")


def test_function_0_takes_its_slot_along() -> None:
    functions = pci_slot_1()
    f1 = function("f1", 1, 1)
    f7 = pending(function("f7", 1, 7))  # already going: not asked again
    present = inventory(phb(0), phb(1), f1, f7, *functions.values())
    assert functions["f0"].unplug_companions(present) == [f1, functions["f2"], functions["f5"]]
    for other in (f1, functions["f2"], functions["other-slot"]):
        assert other.unplug_companions(present) == []


@pytest.mark.parametrize(
    "make", [lambda: dimm("d", 0, BASE), lambda: core(1), lambda: phb(1)], ids=["dimm", "cpu", "phb"]
)
def test_no_companions_for_other_types(make: Callable[[], Device]) -> None:
    device = make()
    assert device.unplug_companions(inventory(device, core(2), phb(2))) == []


def test_phb_dependents_and_connector_ranges() -> None:
    bridge = phb(1)
    on_bus = [function("c", 2, 1, phb=1), function("a", 0, 0, phb=1), function("b", 2, 0, phb=1)]
    elsewhere = [function("x", 0, 0, phb=0), core(1), dimm("d", 0, BASE)]
    present = inventory(phb(0), bridge, *on_bus, *elsewhere)
    assert [d.id for d in bridge.dependents(present)] == ["a", "b", "c"]  # devfn order
    assert bridge.children_path() == PHB1_BUS
    ranges = bridge.connector_ranges()
    assert ranges == [DrcRange(PCI, 0x10000, 256, 1, PHB1_BUS)]
    assert (hex(ranges[0].first_index), hex(ranges[0].last_index)) == ("0x40010000", "0x400100ff")
    for device in (on_bus[0], *elsewhere):
        assert device.dependents(present) == []
        assert device.connector_ranges() == []
        assert device.children_path() is None


# --- identity and fragments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "parent_path", "boot_order", "slot_key"),
    [
        (lambda: dimm("d", 2, BASE), None, 0, 2),
        (lambda: core(3), "/cpus", 3, 3),
        (lambda: function("n", 3, 2), PHB0_BUS, 26, (0, 26)),
        (lambda: function("n", 3, 2, phb=1), PHB1_BUS, 26, (1, 26)),
        (lambda: phb(5), "/", 5, 5),
    ],
    ids=["dimm", "cpu", "pci", "pci-phb1", "phb"],
)
def test_placement_in_the_tree(
    make: Callable[[], Device], parent_path: str | None, boot_order: int, slot_key: object
) -> None:
    device = make()
    assert (device.parent_path, device.boot_order, device.slot_key) == (parent_path, boot_order, slot_key)


def fragment_view(*extra: DrcRange) -> FragmentView:
    return FragmentView(hpt_shift=24, drc_info=False, drc_ranges=(DrcRange(CPU, 0, 4, 1, "/cpus"), *extra))


def properties(node: Any) -> dict[str, bytes]:
    return dict(node.properties)


def test_dimm_fragment_per_lmb() -> None:
    device = dimm("d", 0, BASE + 256 * MiB, size=512 * MiB)
    for index, address in ((0x80000005, 0x50000000), (0x80000006, 0x60000000)):
        node = device.fragment(index, fragment_view())
        assert node.name == f"memory@{address:x}"  # the real address (QEMU 7.2 uses index x 256 MiB)
        assert [name for name, _ in node.properties] == ["ibm,associativity", "reg", "device_type"]
        assert properties(node)["reg"] == u64(address, 256 * MiB)


def test_cpu_fragment() -> None:
    for hotplugged, count in ((True, 30), (False, 29)):  # the hot-plugged node also has "name"
        node = core(2).fragment(0x10000002, fragment_view(), hotplugged)
        assert node.name == "PowerPC,POWER9@2"
        assert len(node.properties) == count
        assert ("name" in properties(node)) is hotplugged
        assert properties(node)["ibm,my-drc-index"] == cells(0x10000002)


@pytest.mark.parametrize(
    ("slot", "fn", "model", "name", "count"),
    [(3, 0, E1000, "ethernet@3", 14), (3, 2, E1000, "ethernet@3,2", 14), (0x1F, 0, VIRTIO, "ethernet@1f", 15)],
)
def test_pci_fragment(slot: int, fn: int, model: PciModel, name: str, count: int) -> None:
    device = function("n", slot, fn, model=model)
    index = device.drc_indexes[0]
    node = device.fragment(index, fragment_view())
    assert (node.name, len(node.properties)) == (name, count)
    assert properties(node)["ibm,my-drc-index"] == cells(index)
    assert properties(node)["vendor-id"] == cells(0x8086 if model is E1000 else 0x1AF4)


def test_phb_fragment_lists_its_bus_connectors() -> None:
    bridge = phb(1)
    view = fragment_view(*bridge.connector_ranges())
    for hotplugged, count in ((True, 25), (False, 24)):
        node = bridge.fragment(0x20000001, view, hotplugged)
        assert node.name == "pci@800000020000001"
        assert len(node.properties) == count
        assert ("name" in properties(node)) is hotplugged
        props = properties(node)
        assert props["ibm,my-drc-index"] == cells(0x20000001)
        assert props["ibm,drc-indexes"] == cells(256, *range(0x40010000, 0x40010100))


def test_phb_fragment_holds_the_functions_on_its_bus() -> None:
    bridge = phb(1)
    on_bus = [function("b", 3, 0, phb=1), function("a", 2, 1, phb=1), function("c", 2, 0, phb=1, model=VIRTIO)]
    elsewhere = function("phb0-nic", 2, 0)  # same devfn, on PHB 0's bus
    view = FragmentView(24, False, tuple(bridge.connector_ranges()), (*on_bus, elsewhere, core(0)))
    for hotplugged in (True, False):
        node = bridge.fragment(0x20000001, view, hotplugged)
        # In devfn order, as QEMU's spapr_dt_pci_bus; each child is the function's own fragment.
        assert [child.name for child in node.children] == ["ethernet@2", "ethernet@2,1", "ethernet@3"]
        expected = sorted(on_bus, key=lambda f: f.devfn)
        assert node.children == [f.fragment(f.drc_indexes[0], view, hotplugged) for f in expected]
        assert properties(node.children[0])["ibm,my-drc-index"] == cells(0x40010010)
    # Without devices to nest (a view for a core or an LMB), the PHB node stands alone.
    assert bridge.fragment(0x20000001, fragment_view(*bridge.connector_ranges())).children == []


# --- in-process platform: orchestration ------------------------------------------------------------------


def new_platform(**kwargs: Any) -> Platform:
    return Platform("unit", G, clock=lambda: 0.0, **kwargs)


def events(platform: Platform) -> Iterator[Event]:
    """Every retained event of the platform, from the first."""
    subscription, _ = platform.subscribe_events(after_sequence=0)
    try:
        while (event := subscription.next(timeout=0)) is not None:
            yield event
    finally:
        platform.unsubscribe_events(subscription)


def acquire_and_configure(platform: Platform, index: int) -> None:
    """What a guest does with a hot-added logical connector: allocate, unisolate, configure."""
    assert platform.set_indicator(rtas.ALLOCATION_STATE, index, rtas.ALLOCATION_USABLE) == 0
    assert platform.set_indicator(rtas.ISOLATION_STATE, index, rtas.UNISOLATE) == 0
    configure(platform, index)


def configure(platform: Platform, index: int) -> int:
    """Run ibm,configure-connector to completion; the first status."""
    area = index.to_bytes(4, "big") + bytes(4092)
    first, status = None, -1
    for _ in range(1000):
        status, area = platform.configure_connector(area)
        first = status if first is None else first
        if status <= 0:
            break
    assert status == rtas.CC_COMPLETE
    assert first is not None
    return first


@pytest.mark.parametrize("guest_acquired", [False, True], ids=["never-acquired", "released-by-guest"])
def test_phb_delete_cascades_to_its_functions(guest_acquired: bool) -> None:
    platform = new_platform()
    platform.plug("phb1", PhbParams(1))
    # Functions 3 and 1 of slot 2 before its function 0 (QEMU refuses them after it), out of devfn order.
    for device_id, slot, fn in (("f2.3", 2, 3), ("f2.1", 2, 1), ("f0.0", 0, 0), ("f2.0", 2, 0)):
        platform.plug(device_id, PciFunctionParams(1, slot, fn, E1000))
    platform.plug("stays", PciFunctionParams(0, 1, 0, E1000))
    phb_index = PHB.index(1)
    if guest_acquired:
        acquire_and_configure(platform, phb_index)

    outcome = platform.unplug("phb1")
    if guest_acquired:
        assert not outcome.deleted
        assert platform.set_indicator(rtas.ISOLATION_STATE, phb_index, rtas.ISOLATE) == 0
        assert platform.device("phb1").unplug_pending
        assert platform.set_indicator(rtas.ALLOCATION_STATE, phb_index, rtas.ALLOCATION_UNUSABLE) == 0
    else:
        assert outcome.deleted

    deleted = [e.body for e in events(platform) if isinstance(e.body, DeviceDeleted)]
    assert [d.device_id for d in deleted] == ["f0.0", "f2.0", "f2.1", "f2.3", "phb1"]
    assert {d.released_by_drc_index for d in deleted} == {phb_index if guest_acquired else 0}
    assert [d.device_type for d in deleted] == [DeviceType.PCI_FUNCTION] * 4 + [DeviceType.PHB]
    assert [d.id for d in platform.devices()] == ["core0", "phb0", "stays"]
    with pytest.raises(NotFound):
        platform.connector(0x40010000)  # the bus went with its PHB
    connector = platform.connector(phb_index)
    assert (connector.state, connector.device_id, connector.unplug_pending) == (DrcState.LOGICAL_UNUSABLE, "", False)
    assert platform.connector(0x40000008).device_id == "stays"


LMB4, LMB5 = 0x80000004, 0x80000005


def refuse(platform: Platform, signal: RefusalSignal, index: int) -> None:
    if signal is RefusalSignal.UNISOLATE:
        assert platform.set_indicator(rtas.ISOLATION_STATE, index, rtas.UNISOLATE) == 0
    else:
        assert configure(platform, index) == rtas.CC_NEXT_CHILD  # the walk goes on as usual


@pytest.mark.parametrize("signal", list(RefusalSignal), ids=lambda s: s.name)
@pytest.mark.parametrize("partly_released", [False, True], ids=["whole", "one-lmb-released"])
def test_refusal_cancels_the_unplug_on_every_lmb(signal: RefusalSignal, partly_released: bool) -> None:
    platform = new_platform()
    platform.plug("dimm0", DimmRequest(512 * MiB))
    for index in (LMB4, LMB5):
        acquire_and_configure(platform, index)
    assert not platform.unplug("dimm0").deleted
    assert all(platform.connector(i).unplug_pending for i in (LMB4, LMB5))
    if partly_released:  # the guest gave back LMB 4 before refusing on LMB 5
        assert platform.set_indicator(rtas.ISOLATION_STATE, LMB4, rtas.ISOLATE) == 0
        assert platform.set_indicator(rtas.ALLOCATION_STATE, LMB4, rtas.ALLOCATION_UNUSABLE) == 0
        assert platform.connector(LMB4).device_id == ""

    refuse(platform, signal, LMB5)

    for index in (LMB4, LMB5):
        connector = platform.connector(index)
        assert (connector.device_id, connector.unplug_pending) == ("dimm0", False)
    # Unlike QEMU 7.2 (which leaves a released LMB without its device), the DIMM is whole again.
    assert platform.connector(LMB4).state == (
        DrcState.LOGICAL_UNUSABLE if partly_released else DrcState.LOGICAL_CONFIGURED
    )
    assert not platform.device("dimm0").unplug_pending
    rejected = [e.body for e in events(platform) if isinstance(e.body, UnplugRejected)]
    assert rejected == [UnplugRejected("dimm0", DeviceType.DIMM, signal, LMB5)]
    # No unplug pending any more: the LMB isolate guard refuses to give LMB 5 back.
    assert platform.set_indicator(rtas.ISOLATION_STATE, LMB5, rtas.ISOLATE) == rtas.HARDWARE_ERROR
    # And the unplug can be asked again (QEMU 7.2 aborts here after a partial release).
    assert not platform.unplug("dimm0").deleted
    assert platform.connector(LMB5).unplug_pending


def test_second_refusal_signal_is_no_event() -> None:
    platform = new_platform()
    platform.plug("core1", CpuCoreParams(1))
    acquire_and_configure(platform, CPU.index(1))
    platform.unplug("core1")
    for _ in range(2):
        assert platform.set_indicator(rtas.ISOLATION_STATE, CPU.index(1), rtas.UNISOLATE) == 0
    rejected = [e.body for e in events(platform) if isinstance(e.body, UnplugRejected)]
    assert rejected == [UnplugRejected("core1", DeviceType.CPU_CORE, RefusalSignal.UNISOLATE, CPU.index(1))]


def test_refused_then_given_back_core_goes_at_once_on_the_next_unplug() -> None:
    """A CPU refused, then isolated and made unusable by the guest: the next unplug releases it at once."""
    platform = new_platform()
    platform.plug("core1", CpuCoreParams(1))
    index = CPU.index(1)
    acquire_and_configure(platform, index)
    platform.unplug("core1")
    assert platform.set_indicator(rtas.ISOLATION_STATE, index, rtas.UNISOLATE) == 0  # refused
    assert platform.set_indicator(rtas.ISOLATION_STATE, index, rtas.ISOLATE) == 0
    assert platform.set_indicator(rtas.ALLOCATION_STATE, index, rtas.ALLOCATION_UNUSABLE) == 0
    connector = platform.connector(index)
    assert (connector.state, connector.device_id) == (DrcState.LOGICAL_UNUSABLE, "core1")  # no unplug pending
    assert platform.unplug("core1").deleted
    deleted = [e.body for e in events(platform) if isinstance(e.body, DeviceDeleted)]
    assert [(d.device_id, d.released_by_drc_index) for d in deleted] == [("core1", 0)]


# --- unplug timeouts -------------------------------------------------------------------------------------


def test_timeout_keys() -> None:
    assert TIMEOUT_KEYS == ("dimm", "cpu_core", "pci_function", "phb", "nvdimm")
    # Every type but the LMBs of a PowerVM-style platform, which memory requests add and remove.
    assert [timeout_key(t) for t in DeviceType if t is not DeviceType.LMB] == list(TIMEOUT_KEYS)


@pytest.mark.parametrize("key", TIMEOUT_KEYS)
@pytest.mark.parametrize("seconds", [1, 0.25, 1e9], ids=["int", "fraction", "large"])
def test_timeouts_accept_positive_finite_numbers(key: str, seconds: float) -> None:
    timeouts = UnplugTimeouts(**{key: seconds})
    for device_type in DeviceType:
        value = timeouts.for_type(device_type)
        assert value == (seconds if timeout_key(device_type) == key else None)
    value = timeouts.for_type(next(t for t in DeviceType if timeout_key(t) == key))
    assert type(value) is float


@pytest.mark.parametrize("key", TIMEOUT_KEYS)
@pytest.mark.parametrize(
    "seconds",
    [0, 0.0, -1, -0.5, math.inf, -math.inf, math.nan, True, False, "5", b"5", [5]],
    ids=repr,
)
def test_timeouts_refuse_other_values(key: str, seconds: object) -> None:
    with pytest.raises(InvalidArgument) as error:
        UnplugTimeouts(**{key: seconds})  # type: ignore[arg-type]
    assert error.value.field == key
    assert error.value.message.endswith("must be a positive number of seconds")


def test_timeouts_refuse_an_int_too_large_for_a_float() -> None:
    with pytest.raises(InvalidArgument) as error:
        UnplugTimeouts(dimm=10**400)
    assert error.value.field == "dimm"


def test_timeouts_none_means_no_timeout() -> None:
    timeouts = UnplugTimeouts(dimm=None, cpu_core=None)
    assert timeouts == UnplugTimeouts()
    assert all(timeouts.for_type(t) is None for t in DeviceType)


@pytest.mark.parametrize("key", ["memory", "cpu", "CPU_CORE", "pci-function", ""])
def test_timeouts_refuse_unknown_keys(key: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        UnplugTimeouts(**{key: 5})
    assert error.value.field == key
    assert f"is not a device type (one of {', '.join(TIMEOUT_KEYS)})" in error.value.message


def test_timeouts_compare_by_value() -> None:
    assert UnplugTimeouts(dimm=2) == UnplugTimeouts(dimm=2.0)
    assert hash(UnplugTimeouts(dimm=2, phb=1)) == hash(UnplugTimeouts(phb=1.0, dimm=2.0))
    assert UnplugTimeouts(dimm=2) != UnplugTimeouts(phb=2)
    assert UnplugTimeouts() != object()


def test_timeout_cancels_a_pending_unplug() -> None:
    now = [100.0]
    platform = new_platform(unplug_timeouts=UnplugTimeouts(cpu_core=30), monotonic=lambda: now[0])
    platform.plug("core1", CpuCoreParams(1))
    platform.plug("dimm0", DimmRequest(256 * MiB))
    acquire_and_configure(platform, CPU.index(1))
    acquire_and_configure(platform, LMB4)
    platform.unplug("core1")
    platform.unplug("dimm0")  # no timeout for memory
    assert platform.expire_unplugs(now=129.9) == []
    assert platform.expire_unplugs(now=130.0) == ["core1"]
    assert not platform.connector(CPU.index(1)).unplug_pending
    assert platform.device("dimm0").unplug_pending
    timed_out = [e.body for e in events(platform) if isinstance(e.body, UnplugTimedOut)]
    assert timed_out == [UnplugTimedOut("core1", DeviceType.CPU_CORE, 30.0)]
    assert platform.expire_unplugs(now=1e9) == []


# --- the watcher mailbox ------------------------------------------------------------------------------


def test_mailbox_bounded_overflow() -> None:
    box: Mailbox[int] = Mailbox(limit=2)
    assert [box.put(1), box.put(2), box.put(3)] == [True, True, False]
    assert [box.next(timeout=0), box.next(timeout=0)] == [1, 2]  # what it got before overflowing
    with pytest.raises(MailboxOverflow, match="more than 2 items"):
        box.next(timeout=0)


def test_mailbox_backlog_counts_toward_the_limit() -> None:
    box: Mailbox[int] = Mailbox([1, 2], limit=2)
    assert not box.put(3)
    assert [box.next(timeout=0), box.next(timeout=0)] == [1, 2]
    with pytest.raises(MailboxOverflow):
        box.next(timeout=0)


def test_mailbox_unbounded() -> None:
    box: Mailbox[int] = Mailbox()
    assert all(box.put(n) for n in range(5000))
    assert [box.next(timeout=0) for _ in range(5000)] == list(range(5000))
    assert box.next(timeout=0) is None


def test_mailbox_coalesces_items_already_waiting() -> None:
    box: Mailbox[str] = Mailbox(coalesce=True)
    assert [box.put("a"), box.put("a"), box.put("b"), box.put("a")] == [True] * 4
    assert [box.next(timeout=0), box.next(timeout=0), box.next(timeout=0)] == ["a", "b", None]
    assert box.put("a")  # no longer waiting: queued again
    assert box.next(timeout=0) == "a"


def test_mailbox_coalesced_put_is_no_overflow() -> None:
    box: Mailbox[int] = Mailbox(limit=1, coalesce=True)
    assert [box.put(1), box.put(1), box.put(2)] == [True, True, False]


def test_mailbox_close_after_drain() -> None:
    box: Mailbox[int] = Mailbox()
    box.put(1)
    box.put(2)
    box.close("deleted")
    assert [box.next(timeout=0), box.next(timeout=None)] == [1, 2]  # closing drops nothing
    for _ in range(2):
        with pytest.raises(SubscriptionClosed) as error:
            box.next(timeout=None)  # closed and drained: no wait
        assert error.value.reason == "deleted"


def test_mailbox_close_wakes_a_waiting_reader() -> None:
    box: Mailbox[int] = Mailbox()
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(box.next(timeout=30))
        except SubscriptionClosed as closed:
            outcome.append(closed.reason)

    reader = threading.Thread(target=read)
    reader.start()
    box.close("shutdown")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert outcome == ["shutdown"]


def test_mailbox_put_wakes_a_waiting_reader() -> None:
    box: Mailbox[int] = Mailbox()
    outcome: list[int | None] = []
    reader = threading.Thread(target=lambda: outcome.append(box.next(timeout=30)))
    reader.start()
    box.put(7)
    reader.join(timeout=10)
    assert outcome == [7]


# --- a PHB's fragment through ibm,configure-connector -----------------------------------------------------


def walk_items(platform: Platform, index: int, calls: int = 10_000, area: bytes | None = None) -> list[CcItem]:
    """Up to ``calls`` configure-connector calls (stopping after status 0 or an error), decoded."""
    area = new_work_area(index) if area is None else area
    items: list[CcItem] = []
    for _ in range(calls):
        status, area = platform.configure_connector(area)
        items.append(read_item(status, area))
        if status <= 0:
            break
    return items


def as_dt(node: Any) -> DtNode:
    """A model Node as the client's DtNode, to compare with what a walk built."""
    return DtNode(
        node.name,
        dict(node.properties),
        [name for name, _ in node.properties],
        [as_dt(child) for child in node.children],
    )


def boot_node(platform: Platform, name: str) -> Any:
    return next(child for child in platform.device_tree().children if child.name == name)


PHB1, PHB1_NODE = PHB.index(1), "pci@800000020000001"


def test_phb_configure_connector_walks_the_functions_on_its_bus() -> None:
    platform = new_platform()
    platform.plug("phb1", PhbParams(1))
    platform.plug("nic3", PciFunctionParams(1, 3, 0, PciModel.VIRTIO_NET))
    platform.plug("nic2", PciFunctionParams(1, 2, 0, E1000))
    platform.plug("phb0-nic", PciFunctionParams(0, 2, 0, E1000))
    assert platform.set_indicator(rtas.ALLOCATION_STATE, PHB1, rtas.ALLOCATION_USABLE) == 0
    assert platform.set_indicator(rtas.ISOLATION_STATE, PHB1, rtas.UNISOLATE) == 0

    items = walk_items(platform, PHB1)
    # QEMU 7.2's sequence: the PHB node, each function as a child closed by 4, then 0 (60 calls).
    assert len(items) == 27 + 16 + 17
    assert [(i.status, i.name) for i in items if i.status != 3] == [
        (2, PHB1_NODE), (2, "ethernet@2"), (4, ""), (2, "ethernet@3"), (4, ""), (0, ""),
    ]  # fmt: skip
    assert platform.connector(PHB1).state == DrcState.LOGICAL_CONFIGURED
    node = build_node(items)
    assert node.children[0].properties["ibm,my-drc-index"] == cells(0x40010010)
    # One source of truth: the boot tree's PHB node holds the same functions, property for property.
    booted = as_dt(boot_node(platform, PHB1_NODE))
    assert node.children == booted.children
    assert {k: v for k, v in node.properties.items() if k != "name"} == booted.properties  # "name": hot-plugged


def test_phb_fragment_is_built_per_sequence() -> None:
    """A sequence keeps the copy it started with; the next one (a replay) shows the bus of now (compat #16)."""
    platform = new_platform()
    platform.plug("phb1", PhbParams(1))
    platform.plug("nic2", PciFunctionParams(1, 2, 0, E1000))
    acquire_and_configure(platform, PHB1)

    def children(items: list[CcItem]) -> list[str]:
        return [i.name for i in items if i.status == 2][1:]

    first = walk_items(platform, PHB1, calls=30)  # stopped inside ethernet@2
    platform.plug("nic4", PciFunctionParams(1, 4, 0, E1000))
    rest = walk_items(platform, PHB1)
    assert children(first + rest) == ["ethernet@2"] and rest[-1].status == 0
    assert children(walk_items(platform, PHB1)) == ["ethernet@2", "ethernet@4"]  # QEMU: ["ethernet@2"]

    assert platform.unplug("nic4").deleted  # never unisolated: gone at once
    assert children(walk_items(platform, PHB1)) == ["ethernet@2"]  # QEMU: still ["ethernet@2", "ethernet@4"]

    # A function whose unplug is pending is still on the bus: in the fragment, not in the boot tree.
    nic2 = PCI.index(0x10010)
    assert platform.set_indicator(rtas.ISOLATION_STATE, nic2, rtas.UNISOLATE) == 0
    assert not platform.unplug("nic2").deleted
    assert children(walk_items(platform, PHB1)) == ["ethernet@2"]
    assert boot_node(platform, PHB1_NODE).children == []
