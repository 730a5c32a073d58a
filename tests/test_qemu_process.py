"""The conformance suite's QEMU driver (QMP through qemu.qmp): answers, QMP errors and events,
and its bounds: a QEMU that stops answering is killed and reported as hung within the I/O
timeout, one that dies is reported as exited. Skipped without QEMU, like tests/test_conformance.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from papr_emu_conformance import find_qemu
from papr_emu_conformance.qemu_process import QemuExited, QemuHung, QemuProcess, QmpError

QEMU = find_qemu()
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-ppc64 not found (Debian: qemu-system-ppc)")
GEOMETRY = ["-m", "1G,slots=4,maxmem=4G", "-smp", "1,maxcpus=4"]


def test_commands_errors_and_events() -> None:
    assert QEMU is not None
    with QemuProcess(QEMU, GEOMETRY) as q:
        assert q.qmp("query-status")["status"] == "paused"  # start() stopped the vCPU
        assert q.rtas("get-sensor-state", [9003, 0x10000000], 2) == [0, 1]  # qtest still drives RTAS
        with pytest.raises(QmpError) as refused:
            q.qmp("device_del", id="nope")
        assert refused.value.error_class == "DeviceNotFound" and "nope" in refused.value.desc
        q.qmp("cont")
        q.qmp("stop")
        assert [e["event"] for e in q.take_events()] == ["RESUME", "STOP"]
        assert q.take_events() == []


def test_a_qemu_that_stops_answering_is_killed_as_hung() -> None:
    assert QEMU is not None
    with QemuProcess(QEMU, GEOMETRY, io_timeout=1.0) as q:
        pid = q._proc.pid if q._proc is not None else 0
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(QemuHung, match="within 1 s during QMP"):
            q.qmp("query-status")
        assert time.monotonic() - started < 5
        assert q._proc is not None and q._proc.poll() is not None  # killed, by its pid
        with pytest.raises(QemuExited, match="gone"):
            q.qmp("query-status")


def test_a_qemu_that_dies_is_reported_as_exited() -> None:
    assert QEMU is not None
    with QemuProcess(QEMU, GEOMETRY) as q:
        assert q._proc is not None
        q._proc.kill()
        q._proc.wait(5)
        with pytest.raises(QemuExited, match="QEMU exited"):
            q.qmp("query-status")
