"""Malformed requests: a clear gRPC error naming the field and value, and nothing changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from helpers import snapshot
from papr.v1 import device_pb2, hotplug_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu_client import Client

Code = grpc.StatusCode
GiB, MiB = 1 << 30, 1 << 20


def dimm(size: int, **kw: Any) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=size, **kw))


def core(core_id: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core_id))


def pci(**kw: Any) -> device_pb2.DeviceSpec:
    kw.setdefault("model", device_pb2.PCI_MODEL_E1000)
    return device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(**kw))


def phb(index: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=index))


def expect_error(call: Callable[[], object], code: grpc.StatusCode, *words: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details(), (word, error.details())
    return error


def field_violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def test_unknown_platform_on_every_rpc(client: Client) -> None:
    missing = "no-such-platform"
    calls: list[Callable[[], object]] = [
        lambda: client.rtas.SetIndicator(rtas_pb2.SetIndicatorRequest(platform=missing)),
        lambda: client.rtas.GetSensorState(rtas_pb2.GetSensorStateRequest(platform=missing)),
        lambda: client.rtas.ConfigureConnector(
            rtas_pb2.ConfigureConnectorRequest(platform=missing, work_area=bytes(4096))
        ),
        lambda: client.rtas.SetPowerLevel(rtas_pb2.SetPowerLevelRequest(platform=missing)),
        lambda: client.rtas.GetPowerLevel(rtas_pb2.GetPowerLevelRequest(platform=missing)),
        lambda: client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=missing)),
        lambda: client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=missing)),
        lambda: client.platforms.ListConnectors(platform_pb2.ListConnectorsRequest(platform=missing)),
        lambda: client.platforms.GetConnector(platform_pb2.GetConnectorRequest(platform=missing)),
        lambda: client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=missing, spec=core(1))),
        lambda: client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=missing, id="x")),
        lambda: client.hotplug.GetDevice(hotplug_pb2.GetDeviceRequest(platform=missing, id="x")),
        lambda: client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=missing)),
        lambda: list(client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=missing))),
        lambda: client.rtas.CheckException(rtas_pb2.CheckExceptionRequest(platform=missing)),
        lambda: client.rtas.EventScan(rtas_pb2.EventScanRequest(platform=missing)),
        lambda: client.rtas.QueryCpuStoppedState(rtas_pb2.QueryCpuStoppedStateRequest(platform=missing)),
        lambda: client.rtas.StartCpu(rtas_pb2.StartCpuRequest(platform=missing)),
        lambda: client.rtas.StopSelf(rtas_pb2.StopSelfRequest(platform=missing)),
        lambda: list(client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=missing))),
    ]
    for call in calls:
        error = expect_error(call, Code.NOT_FOUND, "platform", repr(missing))
        assert field_violations(error) == ["platform"]


@pytest.mark.parametrize("size", [0, 4095, 4097, 8192])
def test_work_area_must_be_4096_bytes(client: Client, platform: str, size: int) -> None:
    before = snapshot(client, platform)
    error = expect_error(
        lambda: client.rtas.ConfigureConnector(
            rtas_pb2.ConfigureConnectorRequest(platform=platform, work_area=b"\x10" + bytes(size - 1) if size else b"")
        ),
        Code.INVALID_ARGUMENT,
        "work_area",
        "4096",
    )
    assert field_violations(error) == ["work_area"]
    assert snapshot(client, platform) == before


PLUG_ERRORS: list[tuple[str, device_pb2.DeviceSpec, grpc.StatusCode, tuple[str, ...]]] = [
    ("no kind", device_pb2.DeviceSpec(), Code.INVALID_ARGUMENT, ("spec", "must set one of")),
    ("zero size", dimm(0), Code.INVALID_ARGUMENT, ("dimm.size_bytes", "multiple of 256 MB")),
    ("misaligned size", dimm(300 * MiB), Code.INVALID_ARGUMENT, ("dimm.size_bytes", "0x12c00000")),
    ("too big", dimm(4 * GiB), Code.FAILED_PRECONDITION, ("not enough space",)),
    ("bad slot", dimm(256 * MiB, slot=4), Code.INVALID_ARGUMENT, ("dimm.slot", "less than 4")),
    ("misaligned address", dimm(256 * MiB, address=GiB + MiB), Code.INVALID_ARGUMENT, ("dimm.address",)),
    ("address outside", dimm(256 * MiB, address=0), Code.INVALID_ARGUMENT, ("dimm.address", "usable range")),
    ("core out of range", core(4), Code.INVALID_ARGUMENT, ("cpu_core.core_id", "out of range")),
    ("core in use", core(0), Code.FAILED_PRECONDITION, ("core 0 already populated",)),
    ("phb too large", phb(31), Code.INVALID_ARGUMENT, ("phb.index", "too large (max 30)")),
    ("phb in use", phb(0), Code.FAILED_PRECONDITION, ("PHB 0 already attached",)),
    (
        "pci no model",
        device_pb2.DeviceSpec(pci_function=device_pb2.PciFunctionSpec(slot=1)),
        Code.INVALID_ARGUMENT,
        ("pci_function.model",),
    ),
    ("pci slot", pci(slot=32), Code.INVALID_ARGUMENT, ("pci_function.slot",)),
    ("pci function", pci(slot=1, function=8), Code.INVALID_ARGUMENT, ("pci_function.function",)),
    ("pci phb", pci(phb_index=3, slot=1), Code.NOT_FOUND, ("pci_function.phb_index",)),
]


@pytest.mark.parametrize(("label", "spec", "code", "words"), PLUG_ERRORS, ids=[e[0] for e in PLUG_ERRORS])
def test_plug_refusals_change_nothing(
    client: Client,
    platform: str,
    label: str,
    spec: device_pb2.DeviceSpec,
    code: grpc.StatusCode,
    words: tuple[str, ...],
) -> None:
    before = snapshot(client, platform)
    sequence = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    expect_error(
        lambda: client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, spec=spec)),
        code,
        *words,
    )
    assert snapshot(client, platform) == before
    after = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform
    assert after.last_event_sequence == sequence.last_event_sequence  # no event either


def test_plug_refusals_that_depend_on_state(client: Client, platform: str) -> None:
    def plug(spec: device_pb2.DeviceSpec, device_id: str = "") -> device_pb2.Device:
        return client.hotplug.PlugDevice(
            hotplug_pb2.PlugDeviceRequest(platform=platform, id=device_id, spec=spec)
        ).device

    plug(dimm(GiB, slot=1), "big")
    before = snapshot(client, platform)
    expect_error(lambda: plug(dimm(256 * MiB), "big"), Code.ALREADY_EXISTS, "id", "'big'")
    expect_error(lambda: plug(dimm(256 * MiB, slot=1)), Code.FAILED_PRECONDITION, "slot 1 is busy")
    expect_error(lambda: plug(dimm(256 * MiB, address=GiB)), Code.FAILED_PRECONDITION, "conflicts", "id='big'")
    expect_error(lambda: plug(core(1), "1bad"), Code.INVALID_ARGUMENT, "id", "'1bad'")
    assert snapshot(client, platform) == before
    for _ in range(3):
        plug(dimm(256 * MiB))
    expect_error(lambda: plug(dimm(256 * MiB)), Code.FAILED_PRECONDITION, "no free slots available")
    plug(pci(slot=2))
    expect_error(lambda: plug(pci(slot=2)), Code.FAILED_PRECONDITION, "slot 2 function 0 not available")
    expect_error(lambda: plug(pci(slot=2, function=1)), Code.FAILED_PRECONDITION, "function 0 already occupied")


def test_unplug_refusals(client: Client, platform: str, guest: Any) -> None:
    def unplug(device_id: str) -> hotplug_pb2.UnplugDeviceResponse:
        return client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=platform, id=device_id))

    expect_error(lambda: unplug("ghost"), Code.NOT_FOUND, "id", "'ghost'")
    expect_error(lambda: unplug("core0"), Code.FAILED_PRECONDITION, "Boot CPU core may not be unplugged")
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="dimm1", spec=dimm(256 * MiB)))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=platform, id="phb1", spec=phb(1)))
    for index in (0x80000004, 0x20000001):
        guest.acquire_drc(index)
    unplug("dimm1")
    unplug("phb1")
    before = snapshot(client, platform)
    expect_error(
        lambda: unplug("dimm1"),
        Code.FAILED_PRECONDITION,
        "Memory unplug already in progress for device dimm1",
    )
    expect_error(lambda: unplug("phb1"), Code.FAILED_PRECONDITION, "PCI Host Bridge unplug already in progress")
    assert snapshot(client, platform) == before


def test_management_lookups(client: Client, platform: str) -> None:
    expect_error(
        lambda: client.platforms.GetConnector(
            platform_pb2.GetConnectorRequest(platform=platform, drc_index=0x80000010)
        ),
        Code.NOT_FOUND,
        "drc_index",
        "0x80000010",
    )
    expect_error(
        lambda: client.platforms.ListConnectors(platform_pb2.ListConnectorsRequest(platform=platform, page_token="x")),
        Code.INVALID_ARGUMENT,
        "page_token",
    )
    expect_error(
        lambda: client.platforms.ListConnectors(platform_pb2.ListConnectorsRequest(platform=platform, page_size=5000)),
        Code.INVALID_ARGUMENT,
        "page_size",
    )
    expect_error(
        lambda: client.platforms.ListConnectors(platform_pb2.ListConnectorsRequest(platform=platform, type=3)),
        Code.INVALID_ARGUMENT,
        "type",
    )
    expect_error(
        lambda: client.hotplug.GetDevice(hotplug_pb2.GetDeviceRequest(platform=platform, id="nope")),
        Code.NOT_FOUND,
        "'nope'",
    )


GEOMETRY_ERRORS = [
    (dict(memory_bytes=300 * MiB), "geometry.memory_bytes"),
    (dict(memory_bytes=GiB, max_memory_bytes=GiB // 2), "geometry.max_memory_bytes"),
    (dict(memory_bytes=GiB, max_memory_bytes=GiB + 100, memory_slots=1), "geometry.max_memory_bytes"),
    (dict(memory_bytes=GiB, max_memory_bytes=2 * GiB), "geometry.memory_slots"),
    (dict(memory_bytes=GiB, max_memory_bytes=2 * GiB, memory_slots=33), "geometry.memory_slots"),
    (dict(memory_bytes=GiB, max_memory_bytes=300 << 40, memory_slots=1), "geometry.max_memory_bytes"),
    (dict(threads_per_core=3), "geometry.threads_per_core"),
    (dict(cpus=3, threads_per_core=2), "geometry.cpus"),
    (dict(cpus=4, max_cpus=2), "geometry.max_cpus"),
    (dict(cpus=0), "geometry.cpus"),
]


@pytest.mark.parametrize(("fields", "field"), GEOMETRY_ERRORS)
def test_bad_geometry(client: Client, fields: dict[str, int], field: str) -> None:
    before = client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())
    error = expect_error(
        lambda: client.platforms.CreatePlatform(
            platform_pb2.CreatePlatformRequest(name="bad-geometry", geometry=platform_pb2.Geometry(**fields))
        ),
        Code.INVALID_ARGUMENT,
        field,
    )
    assert field_violations(error) == [field]
    assert client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()) == before


def test_platform_names(client: Client, platform: str) -> None:
    for name in ("", "Upper", "9lives", "with space", "x" * 64):
        expect_error(
            lambda: client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name)),  # noqa: B023
            Code.INVALID_ARGUMENT,
            "name",
        )
    expect_error(
        lambda: client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=platform)),
        Code.ALREADY_EXISTS,
        repr(platform),
    )
    bad_coldplug = platform_pb2.CreatePlatformRequest(
        name="with-bad-coldplug", coldplug=[platform_pb2.ColdplugDevice(spec=core(9))]
    )
    expect_error(lambda: client.platforms.CreatePlatform(bad_coldplug), Code.INVALID_ARGUMENT, "core_id")
    names = [p.name for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms]
    assert "with-bad-coldplug" not in names


@pytest.mark.parametrize("length", [5_000, 100_000])
def test_a_huge_value_is_echoed_shortened_with_its_length(client: Client, length: int) -> None:
    """The offending value is cut in the message and the details, so the status stays NOT_FOUND
    (an 8 KiB+ echo would overflow gRPC's metadata limit and arrive as RESOURCE_EXHAUSTED)."""
    name = "p" * length
    error = expect_error(
        lambda: client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name)),
        Code.NOT_FOUND,
        f"({length} characters)",
        "no such platform",
    )
    assert len(error.details() or "") < 200
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        violations = error_details_pb2.BadRequest()
        detail.Unpack(violations)
        assert all(len(v.description) < 200 for v in violations.field_violations)


def _methods() -> list[tuple[str, str, bool]]:
    """(path, request type, server streaming) of every papr.v1 RPC."""
    from papr.v1 import guest_pb2

    found = []
    for module in (platform_pb2, hotplug_pb2, rtas_pb2, interrupt_pb2, guest_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(
                    (f"/{service.full_name}/{method.name}", method.input_type.full_name, method.server_streaming)
                )
    return found


@pytest.mark.parametrize(("path", "request_type", "streaming"), _methods(), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_undecodable_bytes_are_invalid_argument_naming_the_message(
    server: PaprServer, path: str, request_type: str, streaming: bool
) -> None:
    """Not INTERNAL ("Exception deserializing request!"): the request is malformed, and says of what."""
    with grpc.insecure_channel(server.addresses[0]) as channel:
        garbage = b"\xff\xff\xff\xff\x0f"  # a field with number 0 and a truncated varint: never valid

        def call() -> object:
            if streaming:
                return list(channel.unary_stream(path)(garbage, timeout=10))
            return channel.unary_unary(path)(garbage, timeout=10)

        expect_error(call, Code.INVALID_ARGUMENT, f"not a valid {request_type} message", "(5 bytes)")
