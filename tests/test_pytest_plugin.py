"""The pytest plugin's `papr_emu` fixture: a real, throwaway server per test."""

from __future__ import annotations

from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu.pytest_plugin import PaprEmuFixture
from papr_emu_client import Guest

SEEN: list[str] = []


def test_fixture_serves_the_default_platform(papr_emu: PaprEmuFixture) -> None:
    assert papr_emu.address.startswith("127.0.0.1:") and not papr_emu.address.endswith(":0")
    listed = papr_emu.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    assert [p.name for p in listed] == [papr_emu.platform]
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))
    dimm = papr_emu.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=papr_emu.platform, id="d", spec=spec))
    Guest(papr_emu.rtas, papr_emu.platform).acquire_drc(dimm.device.drc_indexes[0])
    SEEN.append(papr_emu.address)


def test_each_test_gets_a_fresh_server(papr_emu: PaprEmuFixture) -> None:
    devices = papr_emu.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=papr_emu.platform)).devices
    assert [d.id for d in devices] == ["core0", "phb0"]  # the DIMM of the previous test is not here
    assert SEEN  # the first test ran, against another server
