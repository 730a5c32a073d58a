"""Prometheus metrics (--metrics-listen) scraped over HTTP, and the per-RPC access log (--access-log)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import Watcher, plug, unplug
from papr.v1 import device_pb2, fault_pb2, platform_pb2, rtas_pb2
from papr_emu import PaprServer
from papr_emu.config import ConfigError, load_config
from papr_emu.model import Platforms, default_geometry
from papr_emu.security import Security, SecurityError
from papr_emu_client import Client, Guest, connect

PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]
DIMM = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=512 << 20))
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metered() -> Iterator[tuple[PaprServer, Client]]:
    platforms = Platforms()
    platforms.create("default", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"], metrics_listen="127.0.0.1:0")
    server.start()
    try:
        with connect(server.addresses[0]) as client:
            yield server, client
    finally:
        server.stop(grace=0.5)


def test_counters_and_gauges_move(metered: tuple[PaprServer, Client]) -> None:
    server, client = metered
    assert server.metrics_address is not None and server.metrics_address.startswith("127.0.0.1:")
    before = scrape(server.metrics_address)
    assert value(before, "papr_emu_platforms") == 1
    assert value(before, "papr_emu_attached_lmbs", platform="default") == 0
    assert value(before, "papr_emu_open_streams", platform="default") == 0

    sense = rtas_pb2.GetSensorStateRequest(platform="default", sensor_type=9003, sensor_index=0x80000004)
    for _ in range(3):
        client.rtas.GetSensorState(sense)
    with pytest.raises(grpc.RpcError) as refused:
        client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform="nope"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name="second"))
    dimm = plug(client, "default", "dimm1", DIMM)  # 2 LMBs, and a hotplug event log for the guest
    watcher = Watcher(client, "default")
    try:
        after = scrape(server.metrics_address)
    finally:
        watcher.close()

    method = "papr.v1.RtasService/GetSensorState"
    assert value(after, "papr_emu_rpcs_total", method=method, code="OK") == 3
    assert value(after, "papr_emu_rpc_duration_seconds_count", method=method, code="OK") == 3
    assert value(after, "papr_emu_rpc_duration_seconds_sum", method=method, code="OK") > 0
    assert value(after, "papr_emu_rpcs_total", method="papr.v1.PlatformService/GetPlatform", code="NOT_FOUND") == 1
    assert value(after, "papr_emu_rpcs_total", method="papr.v1.HotplugService/PlugDevice", code="OK") == 1
    assert value(after, "papr_emu_platforms") == 2
    assert value(after, "papr_emu_attached_lmbs", platform="default") == 2
    assert value(after, "papr_emu_attached_lmbs", platform="second") == 0
    assert value(after, "papr_emu_queued_event_logs", platform="default") == 1
    assert value(after, "papr_emu_pending_unplugs", platform="default") == 0
    assert value(after, "papr_emu_open_streams", platform="default") == 1

    guest = Guest(client.rtas, "default", transport="unary")  # no stream held
    for index in dimm.drc_indexes:
        guest.acquire_drc(index)
    unplug(client, "default", "dimm1")  # pending until the guest releases the LMBs
    deadline = time.monotonic() + 10
    while value(last := scrape(server.metrics_address), "papr_emu_open_streams", platform="default"):
        assert time.monotonic() < deadline, "the cancelled stream is still counted"
        time.sleep(0.05)
    assert value(last, "papr_emu_pending_unplugs", platform="default") == 1
    assert value(last, "papr_emu_open_streams", platform="default") == 0  # the watcher was closed
    # The stream ended, as the client cancelled it.
    assert value(last, "papr_emu_rpcs_total", method="papr.v1.HotplugService/WatchEvents", code="CANCELLED") == 1


def test_metrics_are_off_by_default(server: PaprServer) -> None:
    assert server.metrics_address is None


def test_metrics_off_loopback_need_insecure() -> None:
    with pytest.raises(SecurityError, match=r"refusing to serve metrics on 0\.0\.0\.0:9100"):
        PaprServer(Platforms(), ["127.0.0.1:0"], metrics_listen="0.0.0.0:9100")
    with pytest.raises(SecurityError, match="metrics"):
        Security().check_metrics_listener("10.0.0.1:9100")
    Security(insecure=True).check_metrics_listener("0.0.0.0:9100")
    Security().check_metrics_listener("[::1]:9100")
    with pytest.raises(ValueError, match="not HOST:PORT"):
        PaprServer(Platforms(), ["127.0.0.1:0"], metrics_listen="unix:/tmp/m.sock")


def test_cli_refuses_metrics_off_loopback_in_one_line() -> None:
    done = subprocess.run(
        [*PAPR_EMU, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("papr-emu: refusing to serve metrics on 0.0.0.0:0")


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server]\nmetrics_listen = "127.0.0.1:9100"\naccess_log = true\n')
    config = load_config(path)
    assert config.metrics_listen == "127.0.0.1:9100" and config.access_log is True
    path.write_text("[server]\n")
    assert load_config(path).metrics_listen is None and load_config(path).access_log is None
    path.write_text("[server]\naccess_log = 1\n")
    with pytest.raises(ConfigError, match=r"server\.access_log"):
        load_config(path)


def test_access_log_one_event_per_rpc(tmp_path: Path) -> None:
    target = f"unix:{tmp_path}/papr.sock"
    process = subprocess.Popen(
        [*PAPR_EMU, "serve", "--listen", target, "--log-format", "json", "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with connect(target, timeout=30) as client:
            client.rtas.GetSensorState(
                rtas_pb2.GetSensorStateRequest(platform="default", sensor_type=9003, sensor_index=0x80000004)
            )
            with pytest.raises(grpc.RpcError):
                client.rtas.GetSensorState(rtas_pb2.GetSensorStateRequest(platform="nope", sensor_type=9003))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    rpcs = [e for e in events if e.get("event") == "rpc" and e["method"].startswith("papr.v1.RtasService/")]
    assert [(e["method"], e["platform"], e["code"]) for e in rpcs] == [
        ("papr.v1.RtasService/GetSensorState", "default", "OK"),
        ("papr.v1.RtasService/GetSensorState", "nope", "NOT_FOUND"),
    ]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in rpcs)
    assert all(e["level"] == "info" for e in rpcs)


def test_no_access_log_by_default(tmp_path: Path) -> None:
    target = f"unix:{tmp_path}/papr.sock"
    process = subprocess.Popen(
        [*PAPR_EMU, "serve", "--listen", target, "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with connect(target, timeout=30) as client:
            client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest())
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert '"server.serving"' in stderr and '"rpc"' not in stderr


def test_faults_fired_and_findings_are_counted(metered: tuple[PaprServer, Client]) -> None:
    server, client = metered
    assert server.metrics_address is not None
    before = scrape(server.metrics_address)
    assert value(before, "papr_emu_faults_fired_total", platform="default") == 0
    assert value(before, "papr_emu_conduct_findings_total", platform="default") == 0
    rule = fault_pb2.FaultRule(name="busy", effect=fault_pb2.FAULT_EFFECT_BUSY, times=2,
                               call=fault_pb2.FAULT_CALL_GET_SENSOR_STATE)  # fmt: skip
    client.faults.AddFaultRule(fault_pb2.AddFaultRuleRequest(platform="default", rule=rule))
    sense = rtas_pb2.GetSensorStateRequest(platform="default", sensor_type=9003, sensor_index=0x10000001)
    assert [client.rtas.GetSensorState(sense).status for _ in range(3)] == [-2, -2, 0]
    configure = rtas_pb2.ConfigureConnectorRequest(
        platform="default", work_area=(0x10000001).to_bytes(4, "big") + bytes(4092)
    )
    client.rtas.ConfigureConnector(configure)  # not unisolated: a finding
    after = scrape(server.metrics_address)
    assert value(after, "papr_emu_faults_fired_total", platform="default") == 2
    assert value(after, "papr_emu_conduct_findings_total", platform="default") == 1
