"""The pytest plugin's `papr_emu` fixture: a real, throwaway server per test."""

from __future__ import annotations

import pytest

from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu.pytest_plugin import PaprEmuFixture
from papr_emu_client import Guest

pytest_plugins = ["pytester"]


def test_fixture_serves_the_default_platform(papr_emu: PaprEmuFixture) -> None:
    assert papr_emu.address.startswith("127.0.0.1:") and not papr_emu.address.endswith(":0")
    listed = papr_emu.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    assert [p.name for p in listed] == [papr_emu.platform]
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))
    dimm = papr_emu.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=papr_emu.platform, id="d", spec=spec))
    Guest(papr_emu.rtas, papr_emu.platform).acquire_drc(dimm.device.drc_indexes[0])


def test_each_test_gets_a_fresh_server(pytester: pytest.Pytester) -> None:
    # Two tests of another session, through the installed plugin (the pytest11 entry point): each
    # finds only the boot devices and plugs the same DIMM id, which only works if neither sees the
    # other's server. Run here, in one test, so nothing depends on the order of this module's tests.
    inner = """
        from papr.v1 import device_pb2, hotplug_pb2

        def plug_on_a_fresh_server(papr_emu):
            devices = papr_emu.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=papr_emu.platform)).devices
            assert [d.id for d in devices] == ["core0", "phb0"]
            spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))
            papr_emu.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=papr_emu.platform, id="d", spec=spec))

        def test_one(papr_emu):
            plug_on_a_fresh_server(papr_emu)

        def test_two(papr_emu):
            plug_on_a_fresh_server(papr_emu)
    """
    pytester.makepyfile(test_inner=inner)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=2)
