"""The pytest plugin's `papr_emu` fixture: a real, throwaway server per test."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from papr.v1 import device_pb2, hotplug_pb2, platform_pb2
from papr_emu import config
from papr_emu.model import LIMITS, TIMEOUT_KEYS
from papr_emu.pytest_plugin import PaprEmuFixture, PaprEmuSecureFixture, PlatformFactory
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


def test_fixtures_export_papr_emu_host_while_they_live(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A test run with variables of its own: the fixture's test sees its server (and no TLS or token
    # variable), so connect() with no arguments reaches it; the next test sees the run's own again.
    monkeypatch.setenv("PAPR_EMU_HOST", "elsewhere:1")
    monkeypatch.setenv("PAPR_EMU_TOKEN", "not-for-this-server")
    monkeypatch.delenv("PAPR_EMU_CA", raising=False)
    inner = """
        import os

        from papr.v1 import platform_pb2
        from papr_emu_client import connect

        def test_inside(papr_emu):
            assert os.environ["PAPR_EMU_HOST"] == papr_emu.address
            assert "PAPR_EMU_TOKEN" not in os.environ
            with connect() as client:
                listed = client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
            assert [p.name for p in listed] == ["default"]

        def test_inside_secure(papr_emu_secure):
            assert os.environ["PAPR_EMU_HOST"] == papr_emu_secure.address
            assert os.environ["PAPR_EMU_CA"] == str(papr_emu_secure.ca_path)
            assert os.environ["PAPR_EMU_TOKEN"] == papr_emu_secure.admin_token
            with connect() as client:  # TLS with the CA, and the admin token
                listed = client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
            assert [p.name for p in listed] == ["default"]

        def test_after():
            assert os.environ["PAPR_EMU_HOST"] == "elsewhere:1"
            assert os.environ["PAPR_EMU_TOKEN"] == "not-for-this-server"
            assert "PAPR_EMU_CA" not in os.environ
    """
    pytester.makepyfile(test_inner=inner)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=3)


def test_session_scope_and_the_platform_factory(pytester: pytest.Pytester) -> None:
    # papr_emu_scope = session: every test gets the same server; the platforms papr_emu_platform
    # made (by geometry, with coldplugged devices, or from a config file) are gone after their test.
    pytester.makeini("[pytest]\npapr_emu_scope = session\n")
    pytester.makefile(
        ".toml",
        platforms="""
            [[platform]]
            name = "from-config"
            memory = "2G"
            max_memory = "4G"
            slots = 2

            [[platform.device]]
            type = "pci-function"
            slot = 3
            model = "virtio-net-pci"
        """,
    )
    inner = """
        import os

        import pytest
        from papr.v1 import hotplug_pb2, platform_pb2

        ADDRESSES = []

        def names(client):
            return [p.name for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms]

        def devices(client, platform):
            request = hotplug_pb2.ListDevicesRequest(platform=platform)
            return [(d.id, d.hotplugged) for d in client.hotplug.ListDevices(request).devices]

        def test_factory(papr_emu, papr_emu_platform):
            ADDRESSES.append(papr_emu.address)
            first = papr_emu_platform()  # the default platform's geometry under a new name
            assert first.startswith("pytest-") and devices(papr_emu, first) == [("core0", False), ("phb0", False)]
            name = papr_emu_platform(
                name="big",
                memory="2G",
                max_memory=8 << 30,
                slots=2,
                cpus=2,
                max_cpus=8,
                coldplug=[{"type": "dimm", "id": "dimm0", "size": "512M"}, {"type": "cpu-core", "core_id": 4}],
                unplug_timeouts={"cpu_core": 5},
            )
            platform = papr_emu.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name)).platform
            assert (platform.geometry.memory_bytes, platform.geometry.max_memory_bytes) == (2 << 30, 8 << 30)
            assert (platform.geometry.memory_slots, platform.geometry.cpus, platform.geometry.max_cpus) == (2, 2, 8)
            assert platform.unplug_timeouts.cpu_core_seconds == 5
            assert ("dimm0", False) in devices(papr_emu, name) and ("core4", False) in devices(papr_emu, name)
            assert papr_emu_platform.from_config("platforms.toml") == ["from-config"]
            assert ("pci0.3.0", False) in devices(papr_emu, "from-config")
            papr_emu.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=first))  # also fine
            assert sorted(names(papr_emu)) == ["big", "default", "from-config"]
            with pytest.raises(ValueError, match="papr_emu_platform.device.0.: unknown keys: colour"):
                papr_emu_platform(coldplug=[{"type": "dimm", "size": "1G", "colour": "red"}])

        def test_same_server_without_them(papr_emu):
            assert ADDRESSES == [papr_emu.address] and os.environ["PAPR_EMU_HOST"] == papr_emu.address
            assert names(papr_emu) == ["default"]

        def test_the_session_fixture_is_it(papr_emu_session):
            assert ADDRESSES == [papr_emu_session.address]
    """
    pytester.makepyfile(test_inner=inner)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=3)


def test_an_unknown_scope_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\npapr_emu_scope = module\n")
    pytester.makepyfile(test_inner="def test_one(papr_emu):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.stdout.fnmatch_lines(["*papr_emu_scope = 'module': must be 'function' or 'session'*"])
    assert result.ret != 0


def test_docs_config_example_and_keys(
    papr_emu: PaprEmuFixture, papr_emu_platform: PlatformFactory, tmp_path: Path
) -> None:
    # docs/config.md's example is a valid file (its platform built through papr_emu_platform), and
    # the page names every key config.py reads.
    page = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text()
    (tmp_path / "example.toml").write_text(re.findall(r"```toml\n(.*?)```", page, re.S)[0])
    assert papr_emu_platform.from_config(tmp_path / "example.toml") == ["job7"]
    devices = papr_emu.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform="job7")).devices
    assert sorted(d.id for d in devices) == ["core0", "core2", "dimm0", "net0", "phb0", "phb1"]
    keys = config.schema_keys()
    assert {*LIMITS, *TIMEOUT_KEYS, "listen", "certificate_roles", "core_id", "model"} <= keys
    assert {k for k in keys if not re.search(rf"[`.\[]{k}[`\].]", page)} == set()  # a key, or a table
