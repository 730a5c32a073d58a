"""The pytest plugin's `papr_emu` fixture: a real, throwaway server per test."""

from __future__ import annotations

import grpc
import pytest

from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu.pytest_plugin import PaprEmuFixture, PaprEmuSecureFixture
from papr_emu_client import Credentials, Guest, connect_with

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


def test_secure_fixture_speaks_tls_with_the_admin_token(papr_emu_secure: PaprEmuSecureFixture) -> None:
    assert papr_emu_secure.address.startswith("127.0.0.1:") and papr_emu_secure.ca_path.read_bytes().startswith(
        b"-----"
    )
    geometry = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=2 << 30, memory_slots=2, cpus=1, max_cpus=2)
    created = papr_emu_secure.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name="p", geometry=geometry))
    assert created.guest_token.token and created.manager_token.token
    with papr_emu_secure.connect_as(created.guest_token.token) as guest:
        assert guest.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="p")).platform.name == "p"
        with pytest.raises(grpc.RpcError) as refused:
            guest.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with papr_emu_secure.connect_as(None) as anonymous, pytest.raises(grpc.RpcError) as refused:
        anonymous.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="p"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Plain text does not reach it.
    with pytest.raises(grpc.FutureTimeoutError):
        connect_with(Credentials(token=papr_emu_secure.admin_token), papr_emu_secure.address, timeout=1)
