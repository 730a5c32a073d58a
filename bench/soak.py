"""Soak: a million mixed requests against one server, counting status codes, server RSS and p99.

The server runs in its own process (``papr-emu serve --listen unix:... --log-level warning``);
this process is the client, with a few threads, each on its own channel. The mix:

* valid calls (expected OK): RTAS SetIndicator, GetSensorState, ConfigureConnector (a real
  4096-byte work area, walked over and over), CheckException (it also drains the hotplug logs
  the plugs queue), EventScan and a raw RtasService.Call; plug and unplug of CPU cores and
  small DIMMs on each thread's own platform, now and then a full guest cycle (plug, acquire,
  configure, unplug, release); ListConnectors, GetConnector, GetPlatform, ListPlatforms,
  ListDevices, GetDevice, CAS and GetDeviceTree; platform create/delete churn; and plugs on one
  platform all threads share (where another thread's plug may win: ALREADY_EXISTS,
  FAILED_PRECONDITION and NOT_FOUND are expected there too);
* invalid calls: an unknown platform, bad fields (a DIMM size not a multiple of 256 MiB, a
  4095-byte work area, a core out of range, ...), huge string values (thousands of characters),
  and rarely a request over the 4 MiB message limit (RESOURCE_EXHAUSTED);
* undecodable bytes on every papr.v1 method, in turn (a raw channel call, no serializer):
  INVALID_ARGUMENT;
* stream churn: WatchEvents and WatchInterrupts streams opened, read briefly and cancelled,
  some held for a while (many on the shared platform, so its per-platform limit is hit), some on
  platforms that then get deleted (they must end with NOT_FOUND). A stream counts once, with
  the code it ended with: CANCELLED when this client cancelled it, RESOURCE_EXHAUSTED when the
  server's stream limits refused it (expected).

Every call has the codes it may end with; any other is an "unexpected outcome", listed with
its first message. The run fails (exit status 1) on any UNKNOWN or INTERNAL status, on server
RSS growth of 20 MB or more between the end of the warm-up (the first 10% of requests) and the
end, or if the server dies; ``--strict`` also fails on unexpected outcomes. The random choices
are seeded (one generator per thread); the interleaving of the threads is not.

    python bench/soak.py [--requests 1000000] [--seed 1] [--threads 4] [--strict]
"""

from __future__ import annotations

import argparse
import array
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import device_pb2, guest_pb2, hotplug_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client, connect, new_work_area

DEFAULT_REQUESTS = 1_000_000
WARMUP_FRACTION = 0.1
MAX_RSS_GROWTH = 20_000_000  # bytes: 20 MB
GiB, MiB = 1 << 30, 1 << 20
MESSAGE_LIMIT = 4 << 20  # the server's default --max-message-bytes

# Each thread's own platform, and the one they share: -m 1G,slots=8,maxmem=9G -smp 1,maxcpus=8.
GEOMETRY = platform_pb2.Geometry(memory_bytes=GiB, max_memory_bytes=9 * GiB, memory_slots=8, cpus=1, max_cpus=8)
CPU, PHB, LMB, PMEM = 0x10000000, 0x20000000, 0x80000004, 0x90000000  # first DRC index of each type
SHARED = "soak-shared"
HELD_STREAMS = 8  # per thread: with 4 threads, more than the shared platform's 16

ISOLATION, DR_INDICATOR, ALLOCATION, SENSE = 9001, 9002, 9003, 9003
TOKEN_GET_SENSOR_STATE = 0x201D  # from the default /rtas node (ibm,get-sensor-state)
CC_ITEMS = (1, 2, 3, 4)  # configure-connector statuses of a walk going on (0: complete)
OV5 = bytes([22, *([0] * 23)])  # option vector 5, length byte 22 (24 bytes), no option asked for
OV5_HOTPLUG = bytes([22, 0, 0x20, 0, 0, 0, 0x04, *([0] * 17)])  # drconf memory, hot-plug events
DRC_TYPES: tuple[Any, ...] = (0, 1, 2, 4, 8, 9)  # DrcType: unspecified (all), CPU, PHB, PCI, LMB, PMEM

OK = frozenset({"OK"})
STREAM_ENDS = frozenset({"CANCELLED", "RESOURCE_EXHAUSTED"})  # cancelled by us, or refused by the limits
SHARED_PLUG = frozenset({"OK", "ALREADY_EXISTS", "FAILED_PRECONDITION", "NOT_FOUND"})


def core(core_id: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core_id))


def dimm(size: int) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=size))


def rss(pid: int, key: str = "VmRSS") -> int:
    """A size from /proc/PID/status (VmRSS: resident now; VmHWM: the peak), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    except OSError:
        pass
    return 0


def papr_methods() -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every papr.v1 RPC."""
    found = []
    for module in (platform_pb2, hotplug_pb2, rtas_pb2, interrupt_pb2, guest_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append((f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming))
    return found


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


@dataclass
class SoakReport:
    """What a soak run saw. ``failures()`` is empty when it passed."""

    requests: int
    seed: int
    threads: int
    seconds: float
    codes: Counter[str]
    unexpected: Counter[str]  # "operation: CODE" -> count, for codes the operation does not expect
    samples: dict[str, str]  # "operation: CODE" -> the first such status message
    rss_warm: int  # server RSS in bytes, after the warm-up
    rss_end: int  # ... at the end
    rss_peak: int  # ... its peak (VmHWM)
    rss_samples: list[int]  # ... at each tenth of the requests
    warmup_requests: int
    valid_unary: int
    p50_ms: float
    p99_ms: float
    rtas_p99_ms: float
    server_exit: int | None  # the server's exit status if it died during the run
    server_log: list[str] = field(default_factory=list)  # its stderr (warnings and errors)

    @property
    def rss_growth(self) -> int:
        return self.rss_end - self.rss_warm

    def failures(self, strict: bool = False) -> list[str]:
        found = []
        for code in ("UNKNOWN", "INTERNAL"):
            if self.codes[code]:
                which = "; ".join(
                    f"{key} x{count} ({self.samples.get(key, '')[:120]!r})"
                    for key, count in self.unexpected.items()
                    if key.endswith(": " + code)
                )
                found.append(f"{self.codes[code]} {code} statuses (expected 0): {which}")
        if self.rss_growth >= MAX_RSS_GROWTH:
            found.append(
                f"server RSS grew by {self.rss_growth / 1e6:.1f} MB after the warm-up "
                f"({self.rss_warm / 1e6:.1f} -> {self.rss_end / 1e6:.1f} MB; limit {MAX_RSS_GROWTH / 1e6:.0f} MB)"
            )
        if self.server_exit is not None:
            found.append(f"the server exited during the run with status {self.server_exit}")
        if strict and self.unexpected:
            found.append(f"{sum(self.unexpected.values())} unexpected outcomes (--strict)")
        return found

    def table(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        lines = [
            f"soak: {self.requests:,} requests, seed {self.seed}, {self.threads} threads, "
            f"{self.seconds:.1f} s ({rate:,.0f} requests/s)",
            "",
            f"{'code':<22}{'count':>12}{'share':>9}",
        ]
        for code, count in sorted(self.codes.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"{code:<22}{count:>12,}{count / max(self.requests, 1):>9.2%}")
        lines += [
            "",
            f"valid unary calls: {self.valid_unary:,}; latency p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms "
            f"(RTAS calls only: p99 {self.rtas_p99_ms:.2f} ms)",
            f"server RSS: {self.rss_warm / 1e6:.1f} MB after the warm-up ({self.warmup_requests:,} requests), "
            f"{self.rss_end / 1e6:.1f} MB at the end: growth {self.rss_growth / 1e6:+.1f} MB "
            f"(limit {MAX_RSS_GROWTH / 1e6:.0f} MB); peak {self.rss_peak / 1e6:.1f} MB",
            "server RSS at each tenth of the requests (MB): " + " ".join(f"{b / 1e6:.1f}" for b in self.rss_samples),
        ]
        if self.unexpected:
            lines.append(f"unexpected outcomes ({sum(self.unexpected.values()):,}):")
            for key, count in sorted(self.unexpected.items(), key=lambda item: -item[1]):
                lines.append(f"  {key} x{count}: {self.samples.get(key, '')[:160]}")
        else:
            lines.append("unexpected outcomes: none (every call ended with a code it may end with)")
        if self.server_log:
            lines.append(f"server stderr ({len(self.server_log)} lines), first lines:")
            lines += [f"  {line[:200]}" for line in self.server_log[:10]]
        return "\n".join(lines)


class Run:
    """What the threads share: the request counter, the warm-up RSS, the server's pid."""

    def __init__(self, requests: int, pid: int) -> None:
        self.requests = requests
        self.pid = pid
        self.warmup = max(1, int(requests * WARMUP_FRACTION))
        self.counter = itertools.count(1)
        self.rss_samples: list[int] = []  # at every tenth of the requests: the first is the warm-up's

    def count(self) -> None:
        if next(self.counter) % self.warmup == 0:  # itertools.count is atomic under the GIL
            self.rss_samples.append(rss(self.pid))


class Worker:
    """One client thread: its own channel, platform, random generator and tallies."""

    def __init__(self, run: Run, target: str, index: int, seed: int, budget: int) -> None:
        self.run = run
        self.index = index
        self.budget = budget
        self.rng = random.Random(seed * 1_000_003 + index)
        self.client: Client = connect(target, timeout=30)
        self.channel = self.client.channel
        self.platform = f"soak-{index}"
        self.done = 0
        self.codes: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.latencies = array.array("d")  # valid unary calls, seconds
        self.rtas_latencies = array.array("d")
        self.cores: set[int] = set()  # toggled cores (1..4) plugged on the own platform
        self.dimms: set[str] = set()  # toggled DIMMs plugged on the own platform
        self.area = b""  # the configure-connector walk over the LMB this thread acquired
        self.lmb = 0
        self.churn: list[str] = []  # platforms this thread created and will delete
        self.churn_names = itertools.count()
        self.held: list[tuple[grpc.Call, int]] = []  # open streams and the request count to cancel them at
        self.garbage_turn = index * 7

    # -- recording -------------------------------------------------------------------------------

    def record(self, operation: str, code: str, expect: frozenset[str], details: str | None) -> None:
        self.codes[code] += 1
        self.done += 1
        self.run.count()
        if code not in expect:
            key = f"{operation}: {code}"
            self.unexpected[key] += 1
            self.samples.setdefault(key, details or "")

    def unary(
        self,
        operation: str,
        method: Callable[..., Any],
        request: Any,
        expect: frozenset[str] = OK,
        valid: bool = False,
        timeout: float = 30.0,
    ) -> Any:
        """One unary call, recorded; its reply, or None if it failed."""
        start = time.perf_counter()
        reply, details = None, None
        try:
            reply = method(request, timeout=timeout)
            code = "OK"
        except grpc.RpcError as error:
            code, details = error.code().name, error.details()
        if valid:
            elapsed = time.perf_counter() - start
            self.latencies.append(elapsed)
            if operation.startswith("rtas."):
                self.rtas_latencies.append(elapsed)
        self.record(operation, code, expect, details)
        return reply

    def stream_end(self, operation: str, call: grpc.Call, expect: frozenset[str] = STREAM_ENDS) -> str:
        """Cancel an open stream (a no-op if it has ended) and record the code it ended with."""
        call.cancel()
        code = str(call.code().name)
        self.record(operation, code, expect, call.details())
        return code

    def call(
        self, label: str, service: str, method: str, request: Any, expect: frozenset[str] = OK, valid: bool = False
    ) -> Any:
        """``client.<service>.<method>(request)``, recorded under ``label``; its reply, or None."""
        return self.unary(label, getattr(getattr(self.client, service), method), request, expect, valid)

    def rtas(self, method: str, request: Any, label: str = "") -> Any:
        """A valid RTAS call (its status is in-band: gRPC OK whatever the RTAS status)."""
        return self.call(label or f"rtas.{method}", "rtas", method, request, valid=True)

    # -- the platform of this thread -------------------------------------------------------------

    def setup(self) -> None:
        """Create the own platform, plug a DIMM and acquire its LMB for the configure-connector walk."""
        request = platform_pb2.CreatePlatformRequest(name=self.platform, geometry=GEOMETRY)
        self.call("setup.CreatePlatform", "platforms", "CreatePlatform", request, valid=True)
        reply = self.plug("setup.PlugDevice", self.platform, "walk", dimm(256 * MiB))
        self.lmb = reply.device.drc_indexes[0] if reply else LMB
        self.acquire(self.platform, self.lmb)
        self.area = new_work_area(self.lmb)

    def sense(self, platform: str, index: int, sensor: int = SENSE) -> Any:
        request = rtas_pb2.GetSensorStateRequest(platform=platform, sensor_type=sensor, sensor_index=index)
        return self.rtas("GetSensorState", request)

    def set_indicator(self, platform: str, indicator: int, index: int, state: int) -> Any:
        request = rtas_pb2.SetIndicatorRequest(
            platform=platform, indicator_type=indicator, indicator_index=index, new_state=state
        )
        return self.rtas("SetIndicator", request)

    def configure(self, platform: str, area: bytes) -> tuple[int | None, bytes]:
        reply = self.rtas("ConfigureConnector", rtas_pb2.ConfigureConnectorRequest(platform=platform, work_area=area))
        return (None, b"") if reply is None else (reply.status, reply.work_area)

    def acquire(self, platform: str, index: int) -> bool:
        """dlpar_acquire_drc: sense 2 (present, unusable), allocation usable, unisolate."""
        reply = self.sense(platform, index)
        if reply is None or (reply.status, reply.state) != (0, 2):
            return False
        return all(self.set_indicator(platform, kind, index, 1) is not None for kind in (ALLOCATION, ISOLATION))

    def release(self, platform: str, index: int) -> None:
        """dlpar_release_drc: isolate, allocation unusable."""
        for indicator in (ISOLATION, ALLOCATION):
            self.set_indicator(platform, indicator, index, 0)

    def random_drc(self) -> int:
        base, count = self.rng.choice(((CPU, 8), (LMB, 32), (PHB, 31), (PMEM, 8), (0x40000000, 8), (0xDEAD0000, 4)))
        return base + self.rng.randrange(count)

    def plug(
        self, label: str, platform: str, device_id: str, spec: device_pb2.DeviceSpec, expect: frozenset[str] = OK
    ) -> Any:
        request = hotplug_pb2.PlugDeviceRequest(platform=platform, id=device_id, spec=spec)
        return self.call(label, "hotplug", "PlugDevice", request, expect, valid=True)

    def unplug(self, label: str, platform: str, device_id: str, expect: frozenset[str] = OK) -> Any:
        request = hotplug_pb2.UnplugDeviceRequest(platform=platform, id=device_id)
        return self.call(label, "hotplug", "UnplugDevice", request, expect, valid=True)

    def check_exception(self, platform: str | None = None) -> None:
        request = rtas_pb2.CheckExceptionRequest(
            platform=platform or self.platform, event_mask=0xFFFFFFFF, buffer_length=2048
        )
        self.rtas("CheckException", request)

    # -- valid calls -----------------------------------------------------------------------------

    def rtas_indicator(self) -> None:
        if self.rng.random() < 0.5:  # unisolate the walked LMB again: a no-op, status 0
            self.set_indicator(self.platform, ISOLATION, self.lmb, 1)
        else:  # the DR indicator (a light: no state change), or an unknown indicator (status -3)
            kind = self.rng.choice((DR_INDICATOR, 9999))
            self.set_indicator(self.platform, kind, self.random_drc(), self.rng.randrange(3))

    def rtas_sensor(self) -> None:
        index = self.lmb if self.rng.random() < 0.3 else self.random_drc()
        self.sense(self.platform, index, self.rng.choice((SENSE, SENSE, 9999)))

    def rtas_configure(self) -> None:
        """One step of the configure-connector walk over the acquired LMB, a real 4 KiB work area."""
        status, area = self.configure(self.platform, self.area)
        self.area = area if status in CC_ITEMS else new_work_area(self.lmb)  # complete, or an error: again

    def rtas_check_exception(self) -> None:
        self.check_exception()

    def rtas_event_scan_or_raw_call(self) -> None:
        if self.rng.random() < 0.5:
            self.rtas("EventScan", rtas_pb2.EventScanRequest(platform=self.platform, event_mask=0xFFFFFFFF))
        else:
            args = [SENSE, self.random_drc()]
            request = rtas_pb2.CallRequest(
                platform=self.platform, token=TOKEN_GET_SENSOR_STATE, nargs=2, nret=2, args=args
            )
            self.rtas("Call", request)

    def toggle_core(self) -> None:
        core_id = self.rng.randrange(1, 5)
        if core_id in self.cores:
            if self.unplug("hotplug.UnplugDevice(core)", self.platform, f"core{core_id}") is not None:
                self.cores.discard(core_id)
        elif self.plug("hotplug.PlugDevice(core)", self.platform, f"core{core_id}", core(core_id)) is not None:
            self.cores.add(core_id)

    def toggle_dimm(self) -> None:
        device_id = f"dimm-{self.rng.randrange(4)}"
        if device_id in self.dimms:
            if self.unplug("hotplug.UnplugDevice(dimm)", self.platform, device_id) is not None:
                self.dimms.discard(device_id)
        else:
            spec = dimm(self.rng.choice((256, 512)) * MiB)
            if self.plug("hotplug.PlugDevice(dimm)", self.platform, device_id, spec) is not None:
                self.dimms.add(device_id)

    def guest_cycle(self) -> None:
        """The whole life of a device with a guest: plug, acquire, configure, unplug, release."""
        device_id, spec = ("cycle-core", core(6)) if self.rng.random() < 0.5 else ("cycle-dimm", dimm(512 * MiB))
        reply = self.plug("cycle.PlugDevice", self.platform, device_id, spec)
        if reply is None:
            return
        indexes = list(reply.device.drc_indexes)
        for index in indexes:
            if self.acquire(self.platform, index):
                area = new_work_area(index)
                for _ in range(64):
                    status, area = self.configure(self.platform, area)
                    if status not in CC_ITEMS:
                        break
        outcome = self.unplug("cycle.UnplugDevice", self.platform, device_id)
        if outcome is not None and not outcome.deleted:
            for index in indexes:
                self.release(self.platform, index)
        for _ in indexes:
            self.check_exception()  # two logs per device (plug, unplug): read them

    def inspect(self) -> None:
        p, rng = self.platform, self.rng
        request: Any
        choice = rng.randrange(6)
        if choice == 0:
            request = platform_pb2.ListConnectorsRequest(
                platform=p,
                page_size=rng.choice((0, 8, 64, 512)),
                type=rng.choice(DRC_TYPES),
                attached_only=rng.random() < 0.3,
            )
            self.call("platform.ListConnectors", "platforms", "ListConnectors", request, valid=True)
        elif choice == 1:
            request = platform_pb2.GetPlatformRequest(platform=p)
            self.call("platform.GetPlatform", "platforms", "GetPlatform", request, valid=True)
        elif choice == 2:
            request = platform_pb2.ListPlatformsRequest()
            self.call("platform.ListPlatforms", "platforms", "ListPlatforms", request, valid=True)
        elif choice == 3:
            index = rng.choice((CPU + rng.randrange(8), LMB + rng.randrange(32), PHB + rng.randrange(31)))
            request = platform_pb2.GetConnectorRequest(platform=p, drc_index=index)
            self.call("platform.GetConnector", "platforms", "GetConnector", request, valid=True)
        elif choice == 4:
            request = hotplug_pb2.ListDevicesRequest(platform=p)
            self.call("hotplug.ListDevices", "hotplug", "ListDevices", request, valid=True)
        else:
            request = hotplug_pb2.GetDeviceRequest(platform=p, id=rng.choice(("walk", "core0", "phb0")))
            self.call("hotplug.GetDevice", "hotplug", "GetDevice", request, valid=True)

    def churn_platforms(self) -> None:
        """Create a platform (up to two per thread), use it, delete it."""
        rng = self.rng
        request: Any
        if len(self.churn) < 2 and (not self.churn or rng.random() < 0.5):
            name = f"churn-{self.index}-{next(self.churn_names)}"
            coldplug = [platform_pb2.ColdplugDevice(id="d0", spec=dimm(256 * MiB))] if rng.random() < 0.5 else []
            request = platform_pb2.CreatePlatformRequest(name=name, geometry=GEOMETRY, coldplug=coldplug)
            if self.call("platform.CreatePlatform", "platforms", "CreatePlatform", request, valid=True) is not None:
                self.churn.append(name)
            return
        name = self.churn[0]
        use = rng.randrange(4)
        if use == 0:
            request = platform_pb2.DeletePlatformRequest(platform=name)
            self.call("platform.DeletePlatform", "platforms", "DeletePlatform", request, valid=True)
            self.churn.pop(0)
        elif use == 1:
            ov5 = rng.choice((OV5, OV5_HOTPLUG))
            request = guest_pb2.ClientArchitectureSupportRequest(platform=name, option_vector_5=ov5)
            self.call("guest.ClientArchitectureSupport", "guest", "ClientArchitectureSupport", request, valid=True)
        elif use == 2:
            details = None
            try:
                chunks = self.client.platforms.GetDeviceTree(
                    platform_pb2.GetDeviceTreeRequest(platform=name), timeout=30
                )
                code = "OK" if sum(len(r.chunk) for r in chunks) else "EMPTY_DTB"
            except grpc.RpcError as error:
                code, details = error.code().name, error.details()
            self.record("platform.GetDeviceTree", code, OK, details)
        else:  # core 1..7, named by the server: the core may be there already
            self.plug("churn.PlugDevice", name, "", core(rng.randrange(1, 8)), frozenset({"OK", "FAILED_PRECONDITION"}))

    def shared_plugs(self) -> None:
        """Plug and unplug on the platform all threads share: races between threads are expected."""
        core_id = self.rng.randrange(1, 8)
        if self.rng.random() < 0.5:
            self.plug("shared.PlugDevice", SHARED, f"s{core_id}", core(core_id), SHARED_PLUG)
        else:
            self.unplug("shared.UnplugDevice", SHARED, f"s{core_id}", SHARED_PLUG)
        self.check_exception(SHARED)

    # -- invalid calls ---------------------------------------------------------------------------

    def unknown_platform(self) -> None:
        missing = self.rng.choice(("no-such-platform", "churn-999-0", "soak-99"))
        calls: list[tuple[str, str, Any]] = [
            ("rtas", "SetIndicator", rtas_pb2.SetIndicatorRequest(platform=missing)),
            ("rtas", "GetSensorState", rtas_pb2.GetSensorStateRequest(platform=missing)),
            ("rtas", "ConfigureConnector", rtas_pb2.ConfigureConnectorRequest(platform=missing, work_area=bytes(4096))),
            ("rtas", "CheckException", rtas_pb2.CheckExceptionRequest(platform=missing)),
            ("platforms", "GetPlatform", platform_pb2.GetPlatformRequest(platform=missing)),
            ("platforms", "DeletePlatform", platform_pb2.DeletePlatformRequest(platform=missing)),
            ("platforms", "ListConnectors", platform_pb2.ListConnectorsRequest(platform=missing)),
            ("hotplug", "PlugDevice", hotplug_pb2.PlugDeviceRequest(platform=missing, spec=core(1))),
            ("hotplug", "UnplugDevice", hotplug_pb2.UnplugDeviceRequest(platform=missing, id="x")),
            ("guest", "ClientArchitectureSupport", guest_pb2.ClientArchitectureSupportRequest(platform=missing)),
        ]
        service, method, request = self.rng.choice(calls)
        self.call(f"unknown platform: {method}", service, method, request, frozenset({"NOT_FOUND"}))

    def bad_field(self) -> None:
        p, rng = self.platform, self.rng
        bad, not_found, busy = (
            frozenset({"INVALID_ARGUMENT"}),
            frozenset({"NOT_FOUND"}),
            frozenset({"FAILED_PRECONDITION"}),
        )
        short_area = new_work_area(self.lmb)[: rng.choice((4095, 0, 17))]
        bad_geometry = platform_pb2.Geometry(memory_bytes=GiB, max_memory_bytes=GiB + 100, memory_slots=1)
        raw = rtas_pb2.CallRequest(platform=p, token=TOKEN_GET_SENSOR_STATE, nargs=3, nret=2, args=[SENSE, LMB])
        calls: list[tuple[str, str, str, Any, frozenset[str]]] = [
            ("DIMM size not a multiple of 256 MiB", "hotplug", "PlugDevice",
             hotplug_pb2.PlugDeviceRequest(platform=p, spec=dimm(rng.choice((300, 100, 257)) * MiB)), bad),
            ("work area under 4096 bytes", "rtas", "ConfigureConnector",
             rtas_pb2.ConfigureConnectorRequest(platform=p, work_area=short_area), bad),
            ("work area of 4097 bytes", "rtas", "ConfigureConnector",
             rtas_pb2.ConfigureConnectorRequest(platform=p, work_area=new_work_area(self.lmb) + b"\0"), bad),
            ("core out of range", "hotplug", "PlugDevice",
             hotplug_pb2.PlugDeviceRequest(platform=p, spec=core(8)), bad),
            ("no device kind", "hotplug", "PlugDevice",
             hotplug_pb2.PlugDeviceRequest(platform=p, spec=device_pb2.DeviceSpec()), bad),
            ("boot core in use", "hotplug", "PlugDevice",
             hotplug_pb2.PlugDeviceRequest(platform=p, spec=core(0)), busy),
            ("unplug the boot core", "hotplug", "UnplugDevice",
             hotplug_pb2.UnplugDeviceRequest(platform=p, id="core0"), busy),
            ("unplug a ghost", "hotplug", "UnplugDevice",
             hotplug_pb2.UnplugDeviceRequest(platform=p, id="ghost"), not_found),
            ("page_size 5000", "platforms", "ListConnectors",
             platform_pb2.ListConnectorsRequest(platform=p, page_size=5000), bad),
            ("page_token", "platforms", "ListConnectors",
             platform_pb2.ListConnectorsRequest(platform=p, page_token="drc:zz"), bad),
            ("connector type 3", "platforms", "ListConnectors",
             platform_pb2.ListConnectorsRequest(platform=p, type=cast(Any, 3)), bad),
            ("no such connector", "platforms", "GetConnector",
             platform_pb2.GetConnectorRequest(platform=p, drc_index=LMB + 32), not_found),
            ("geometry", "platforms", "CreatePlatform",
             platform_pb2.CreatePlatformRequest(name="bad-geometry", geometry=bad_geometry), bad),
            ("platform name", "platforms", "CreatePlatform",
             platform_pb2.CreatePlatformRequest(name=rng.choice(("Upper", "9lives", "with space", ""))), bad),
            ("platform exists", "platforms", "CreatePlatform",
             platform_pb2.CreatePlatformRequest(name=p), frozenset({"ALREADY_EXISTS"})),
            ("raw call nargs", "rtas", "Call", raw, bad),
        ]  # fmt: skip
        label, service, method, request, expect = rng.choice(calls)
        self.call(f"bad field: {label}", service, method, request, expect)

    def huge_string(self) -> None:
        p, rng = self.platform, self.rng
        text = rng.choice(("p", "x-", "é", "0")) * rng.choice((2_000, 5_000, 20_000, 100_000))
        not_found, bad = frozenset({"NOT_FOUND"}), frozenset({"INVALID_ARGUMENT"})
        coldplug = [platform_pb2.ColdplugDevice(id=text, spec=core(1))]
        calls: list[tuple[str, str, str, Any, frozenset[str]]] = [
            ("platform", "platforms", "GetPlatform", platform_pb2.GetPlatformRequest(platform=text), not_found),
            ("platform", "platforms", "DeletePlatform", platform_pb2.DeletePlatformRequest(platform=text), not_found),
            ("platform", "rtas", "SetIndicator", rtas_pb2.SetIndicatorRequest(platform=text), not_found),
            ("name", "platforms", "CreatePlatform", platform_pb2.CreatePlatformRequest(name=text), bad),
            ("coldplug id", "platforms", "CreatePlatform",
             platform_pb2.CreatePlatformRequest(name="huge-coldplug", coldplug=coldplug), bad),
            ("id", "hotplug", "PlugDevice", hotplug_pb2.PlugDeviceRequest(platform=p, id=text, spec=core(3)), bad),
            ("id", "hotplug", "GetDevice", hotplug_pb2.GetDeviceRequest(platform=p, id=text), not_found),
            ("id", "hotplug", "UnplugDevice", hotplug_pb2.UnplugDeviceRequest(platform=p, id=text), not_found),
            ("page_token", "platforms", "ListConnectors",
             platform_pb2.ListConnectorsRequest(platform=p, page_token=text), bad),
        ]  # fmt: skip
        field_name, service, method, request, expect = rng.choice(calls)
        self.call(f"huge string: {method} {field_name}", service, method, request, expect)

    def oversized(self) -> None:
        """A request over the server's 4 MiB message limit: gRPC's own RESOURCE_EXHAUSTED."""
        request = platform_pb2.GetPlatformRequest(platform="p" * (MESSAGE_LIMIT + 1024))
        self.call("over 4 MiB: GetPlatform", "platforms", "GetPlatform", request, frozenset({"RESOURCE_EXHAUSTED"}))

    # -- undecodable bytes -----------------------------------------------------------------------

    def garbage(self) -> None:
        """Bytes that never parse as any message, on each papr.v1 method in turn."""
        path, client_streaming, server_streaming = METHODS[self.garbage_turn % len(METHODS)]
        self.garbage_turn += 1
        tail = self.rng.randbytes(self.rng.choice((0, 0, 7, 100, 1000, 4096, 65536)))
        # Each is invalid from its first bytes, whatever follows. (Not field number 0: upb accepts
        # b"\x00\x01" as a message with no fields, e.g. ListPlatformsRequest.)
        form = self.rng.randrange(3)
        if form == 0:
            data = b"\xff\xff\xff\xff\x0f" + tail  # a tag with wire type 7: no such wire type
        elif form == 1:
            data = b"\x0a" + _varint(len(tail) + 1 + self.rng.randrange(1000)) + tail  # runs past the end
        else:
            data = b"\x0f" + tail  # field 1, wire type 7
        details = None
        try:
            if client_streaming and server_streaming:
                list(self.channel.stream_stream(path)(iter([data]), timeout=30))
            elif client_streaming:
                self.channel.stream_unary(path)(iter([data]), timeout=30)
            elif server_streaming:
                list(self.channel.unary_stream(path)(data, timeout=30))
            else:
                self.channel.unary_unary(path)(data, timeout=30)
            code = "OK"
        except grpc.RpcError as error:
            code, details = error.code().name, error.details()
        self.record(f"undecodable {path}", code, frozenset({"INVALID_ARGUMENT"}), details)

    # -- streams ---------------------------------------------------------------------------------

    def open_stream(self, platform: str, kind: str, timeout: float = 60.0, wait: bool = True) -> grpc.Call:
        if kind == "events":
            call = self.client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=platform), timeout=timeout)
        else:
            call = self.client.interrupts.WatchInterrupts(
                interrupt_pb2.WatchInterruptsRequest(platform=platform), timeout=timeout
            )
        if wait:
            call.initial_metadata()  # the server sends it once it holds a slot; or the call ended
        return call

    def stream_read(self) -> None:
        """Open a stream on the own platform, make something happen, read it, cancel."""
        kind = self.rng.choice(("events", "interrupts"))
        call = self.open_stream(self.platform, kind, timeout=30)
        if not call.done():
            before = len(self.cores)
            self.toggle_core()
            if len(self.cores) != before:  # a plug or unplug went through: an event, an interrupt
                try:
                    next(call)
                except grpc.RpcError:
                    pass  # recorded below, with the code it ended with
        self.stream_end(f"stream.Watch{kind.title()} read", call)

    def stream_hold(self) -> None:
        """Open a stream, on the shared platform or the own one, and leave it open for a while."""
        if len(self.held) >= HELD_STREAMS:
            return
        platform = SHARED if self.rng.random() < 0.75 else self.platform
        call = self.open_stream(platform, self.rng.choice(("events", "interrupts")), timeout=600)
        if call.done():
            self.stream_end("stream.hold", call)
        else:
            self.held.append((call, self.done + self.rng.randrange(20, 500)))

    def release_held(self, everything: bool = False) -> None:
        for item in [h for h in self.held if everything or h[1] <= self.done]:
            self.held.remove(item)
            self.stream_end("stream.hold", item[0])

    def stream_on_deleted_platform(self) -> None:
        """Streams on a platform that gets deleted under them: they must end, with NOT_FOUND."""
        name = f"gone-{self.index}-{next(self.churn_names)}"
        request: Any = platform_pb2.CreatePlatformRequest(name=name, geometry=GEOMETRY)
        if self.call("platform.CreatePlatform", "platforms", "CreatePlatform", request, valid=True) is None:
            return
        wait = self.rng.random() < 0.7  # else the delete races the subscription
        kinds = [self.rng.choice(("events", "interrupts")) for _ in range(self.rng.randrange(1, 4))]
        calls = [self.open_stream(name, kind, timeout=30, wait=wait) for kind in kinds]
        if self.rng.random() < 0.5:
            self.plug("churn.PlugDevice", name, "c1", core(1))
        request = platform_pb2.DeletePlatformRequest(platform=name)
        self.call("platform.DeletePlatform", "platforms", "DeletePlatform", request, valid=True)
        deleted = time.monotonic()
        for call in calls:
            code, details = "OK", None
            try:
                for _ in range(8):  # an event plugged before the delete may come first
                    next(call)
            except grpc.RpcError as error:
                code, details = error.code().name, error.details()
            except StopIteration:
                pass
            call.cancel()  # code "OK": the stream did not end (an unexpected outcome)
            late = time.monotonic() - deleted
            self.record("stream on a deleted platform", code, frozenset({"NOT_FOUND", "RESOURCE_EXHAUSTED"}), details)
            if late > 2.0 and code == "NOT_FOUND":
                key = "stream on a deleted platform: ended late"
                self.unexpected[key] += 1
                self.samples.setdefault(key, f"NOT_FOUND {late:.1f} s after the delete")

    # -- the loop --------------------------------------------------------------------------------

    def work(self) -> None:
        operations, weights = zip(*MIX, strict=True)
        while self.done < self.budget:
            if self.held:
                self.release_held()
            self.rng.choices(operations, weights)[0](self)
        self.release_held(everything=True)
        for name in self.churn:
            request = platform_pb2.DeletePlatformRequest(platform=name)
            self.call("platform.DeletePlatform", "platforms", "DeletePlatform", request, valid=True)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


METHODS = papr_methods()

# (operation, weight); some operations make several requests. Of the requests, about 64% are valid,
# 23% invalid, 10% undecodable bytes and 3% stream opens (measured: a 20,000-request run, seed 1).
MIX: list[tuple[Callable[[Worker], None], float]] = [
    (Worker.rtas_indicator, 8),
    (Worker.rtas_sensor, 10),
    (Worker.rtas_configure, 10),
    (Worker.rtas_check_exception, 7),
    (Worker.rtas_event_scan_or_raw_call, 2),
    (Worker.toggle_core, 3),
    (Worker.toggle_dimm, 3),
    (Worker.guest_cycle, 0.1),
    (Worker.inspect, 8),
    (Worker.churn_platforms, 2),
    (Worker.shared_plugs, 1),
    (Worker.unknown_platform, 6),
    (Worker.bad_field, 10),
    (Worker.huge_string, 5),
    (Worker.oversized, 0.002),
    (Worker.garbage, 10),
    (Worker.stream_read, 1),
    (Worker.stream_hold, 1),
    (Worker.stream_on_deleted_platform, 0.3),
]


@contextmanager
def server_process(extra_args: Sequence[str] = ()) -> Iterator[tuple[str, subprocess.Popen[bytes], list[str]]]:
    """``papr-emu serve`` on a fresh unix socket, in its own process.

    Yields (target, process, log): ``log`` gets the server's stderr lines once it has stopped.
    """
    scratch = tempfile.mkdtemp(prefix="papr-soak-")
    target, log_path = f"unix:{scratch}/papr.sock", os.path.join(scratch, "server.log")
    command = [sys.executable, "-m", "papr_emu.cli", "serve", "--listen", target, "--log-level", "warning", *extra_args]
    lines: list[str] = []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield target, process, lines
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with open(log_path, errors="replace") as log_text:
            lines += [line.rstrip("\n") for line in log_text]
        shutil.rmtree(scratch, ignore_errors=True)


def wait_serving(target: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited at start with status {process.returncode}")
        try:
            with connect(target, timeout=1.0) as client:
                health = health_pb2_grpc.HealthStub(client.channel)
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
        except (grpc.RpcError, grpc.FutureTimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not report SERVING within {timeout:.0f} s")
        time.sleep(0.05)


def soak(
    requests: int = DEFAULT_REQUESTS,
    seed: int = 1,
    threads: int = 4,
    server_args: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> SoakReport:
    """Run the soak against a server of its own (``papr-emu serve`` plus ``server_args``)."""
    with server_process(server_args) as (target, process, server_log):
        wait_serving(target, process)
        run = Run(requests, process.pid)
        budgets = [requests // threads + (1 if n < requests % threads else 0) for n in range(threads)]
        workers = [Worker(run, target, n, seed, budget) for n, budget in enumerate(budgets)]
        with connect(target) as admin:
            admin.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=SHARED, geometry=GEOMETRY))
        for worker in workers:
            worker.setup()
        errors: list[BaseException] = []

        def body(worker: Worker) -> None:
            try:
                worker.work()
            except BaseException as error:  # a client-side bug: report it, do not hang the others
                errors.append(error)
                raise

        started = time.perf_counter()
        pool = [threading.Thread(target=body, args=(w,), name=f"soak-{w.index}") for w in workers]
        for thread in pool:
            thread.start()
        while any(thread.is_alive() for thread in pool):
            for thread in pool:
                thread.join(1.0)
            if progress is not None:
                progress(sum(w.done for w in workers))
        seconds = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"a soak thread failed: {errors[0]!r}") from errors[0]
        time.sleep(0.5)  # cancelled streams: the server notices within its 0.25 s poll
        server_exit = process.poll()
        rss_end, rss_peak = rss(process.pid), rss(process.pid, "VmHWM")
        for worker in workers:
            worker.client.close()
    latencies = sorted(itertools.chain.from_iterable(w.latencies for w in workers))
    rtas = sorted(itertools.chain.from_iterable(w.rtas_latencies for w in workers))
    codes: Counter[str] = sum((w.codes for w in workers), Counter())
    unexpected: Counter[str] = sum((w.unexpected for w in workers), Counter())
    samples: dict[str, str] = {}
    for worker in workers:
        for key, text in worker.samples.items():
            samples.setdefault(key, text)
    return SoakReport(
        requests=sum(codes.values()),
        seed=seed,
        threads=threads,
        seconds=seconds,
        codes=codes,
        unexpected=unexpected,
        samples=samples,
        rss_warm=run.rss_samples[0] if run.rss_samples else 0,
        rss_end=rss_end,
        rss_peak=rss_peak,
        rss_samples=run.rss_samples,
        warmup_requests=run.warmup,
        valid_unary=len(latencies),
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        rtas_p99_ms=percentile(rtas, 0.99) * 1000,
        server_exit=server_exit,
        server_log=server_log,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--strict", action="store_true", help="also fail on unexpected outcomes")
    options = parser.parse_args()
    step = max(options.requests // 10, 1)
    shown = [0]

    def progress(done: int) -> None:
        if done // step > shown[0]:
            shown[0] = done // step
            print(f"  {done:,} requests", file=sys.stderr, flush=True)

    report = soak(options.requests, options.seed, options.threads, progress=progress)
    print(report.table())
    failures = report.failures(strict=options.strict)
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print("PASS: 0 UNKNOWN, 0 INTERNAL, server RSS growth after the warm-up under 20 MB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
