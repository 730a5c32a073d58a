"""The papr-emu command: serve on a unix socket, health, reflection, config file, SIGTERM."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from papr.v1 import platform_pb2, platform_pb2_grpc

PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]


def wait_serving(target: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> grpc.Channel:
    channel = grpc.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return channel
        except grpc.RpcError:
            time.sleep(0.1)
    raise AssertionError("server did not become SERVING")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, list[str]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([*PAPR_EMU, "serve", *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE)
        processes.append(process)
        return process

    yield start, str(tmp_path), []  # type: ignore[misc]
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_serve_default_platform_on_unix_socket(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start, _, _ = serve
    target = f"unix:{tmp_path}/papr.sock"
    process = start("--listen", target, "--log-format", "json")
    channel = wait_serving(target, process)
    platforms = platform_pb2_grpc.PlatformServiceStub(channel)
    listed = platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    assert [p.name for p in listed] == ["default"]
    assert listed[0].geometry.max_memory_bytes == 4 << 30 and listed[0].connector_total == 307

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for r in responses for s in r.list_services_response.service}
    assert {
        "papr.v1.RtasService",
        "papr.v1.PlatformService",
        "papr.v1.HotplugService",
        "grpc.health.v1.Health",
    } <= services
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="papr.v1.RtasService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()

    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    lines = process.stderr.read().decode().splitlines() if process.stderr else []
    import json

    events = [json.loads(line) for line in lines]  # one JSON event per line
    assert {"platform.created", "server.serving", "server.stopped"} <= {e["event"] for e in events}
    assert all("timestamp" in e and "level" in e for e in events)
    assert any(e.get("platform") == "default" and e.get("drc_index") == "0x10000000" for e in events)


def test_serve_from_config_file(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start, _, _ = serve
    config = tmp_path / "platforms.toml"
    socket = f"unix:{tmp_path}/cfg.sock"
    config.write_text(
        textwrap.dedent(f"""
        [server]
        listen = ["{socket}"]

        [[platform]]
        name = "big"
        memory = "4G"
        max_memory = "8G"
        slots = 2
        cpus = 2
        max_cpus = 8

        [platform.unplug_timeouts]
        cpu_core = 12.5

        [[platform.device]]
        type = "dimm"
        id = "boot-dimm"
        size = "1G"

        [[platform.device]]
        type = "pci-function"
        model = "virtio-net-pci"
        slot = 2
    """)
    )
    process = start("--config", str(config))
    channel = wait_serving(socket, process)
    platforms = platform_pb2_grpc.PlatformServiceStub(channel)
    listed = platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    assert [p.name for p in listed] == ["big"]
    assert listed[0].device_count == 5  # two boot cores, PHB 0, the DIMM, the NIC
    assert listed[0].unplug_timeouts.cpu_core_seconds == 12.5
    assert not listed[0].unplug_timeouts.HasField("dimm_seconds")
    lmb = platforms.GetConnector(platform_pb2.GetConnectorRequest(platform="big", drc_index=0x80000010)).connector
    assert (lmb.device_id, lmb.state) == ("boot-dimm", 4)  # coldplugged: CONFIGURED
    nic = platforms.GetConnector(platform_pb2.GetConnectorRequest(platform="big", drc_index=0x40000010)).connector
    assert (nic.state, nic.dr_indicator) == (8, 1)
    channel.close()
    process.terminate()
    assert process.wait(15) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[platform]]\nname = 'x'\nmemory = '300M'\n", "geometry.memory_bytes"),
        ("[[platform]]\nname = 'x'\nbogus = 1\n", "unknown keys: bogus"),
        ("[[platform]]\nname = 'x'\n[[platform.device]]\ntype = 'gpu'\n", "'gpu' is not one of"),
        ("not toml [", "platforms.toml"),
        ("[[platform]]\nname = 'x'\n[platform.unplug_timeouts]\ncpu_core = -1\n", "unplug_timeouts.cpu_core"),
        ("[[platform]]\nname = 'x'\n[platform.unplug_timeouts]\nmemory = 5\n", "unknown keys: memory"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "platforms.toml"
    config.write_text(content)
    result = subprocess.run([*PAPR_EMU, "serve", "--config", str(config)], capture_output=True, timeout=30)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_listen_failure_is_reported(tmp_path: Path) -> None:
    result = subprocess.run(
        [*PAPR_EMU, "serve", "--listen", "256.1.1.1:1", "--insecure"],  # not loopback: --insecure to get that far
        capture_output=True,
        timeout=30,
        env={**os.environ},
    )
    stderr = result.stderr.decode()
    assert (
        result.returncode == 2
        and stderr.startswith("papr-emu: cannot listen on 256.1.1.1:1")
        and stderr.count("\n") == 1
    )


def test_version_and_entry_point_commands() -> None:
    def papr_emu(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PAPR_EMU, *args], capture_output=True, text=True, timeout=60)

    assert papr_emu("--version").stdout == f"papr-emu {importlib.metadata.version('papr-emu')}\n"
    # `conformance` is a papr_emu.commands entry point, handed every argument after its name.
    listed = papr_emu("conformance", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("configure-resume-replay ")
    assert "\ndimm-cycle " in listed.stdout
    assert papr_emu("conformance", "--help").stdout.startswith("usage: papr-emu conformance")
    assert "from papr_emu_conformance" in papr_emu("--help").stdout
    # ... and is loaded only to run it: papr_emu itself never imports the suite.
    check = (
        "import sys, papr_emu.cli as c; c.build_parser(c.plugin_commands()); "
        "print('papr_emu_conformance' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60).stdout == "False\n"


def test_busy_port_is_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run([*PAPR_EMU, "serve", "--listen", address], capture_output=True, text=True, timeout=30)
    # Checked before gRPC binds: none of its C-core log lines, nor the platforms' startup logs.
    assert result.returncode == 2
    assert result.stderr == f"papr-emu: cannot listen on {address}: address already in use\n"
