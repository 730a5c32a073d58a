"""Crash test of the state directory: kill -9 a server under load, restart it, check nothing acknowledged is lost.

Each round starts ``papr-emu serve --state-dir DIR`` (the same DIR every round), creates a
platform of its own and puts it under concurrent load: a manager thread hot-plugs CPU cores
(and at once unplugs the even ones, which the guest never touches, so they go at once), a
guest thread acquires and configures the odd ones, and a watcher follows the events. At a
random moment the server is killed with SIGKILL; some rounds also tear the journal's last
record as a write cut short would. The server is restarted on DIR and every call a client
saw answered must be there: each acknowledged plug (and deletion), each connector's
acknowledged state (a call in flight at the kill may or may not be), an event sequence at
least as far as the watcher got, and every earlier round's platform exactly as it was.
Recovery itself checks the model's invariants (devices and connectors agree).

    python tests/crash_state.py --rounds 50 [--seed N] [--dir DIR]

``tests/test_crash_state.py`` runs a short version in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import connector_pb2, device_pb2, hotplug_pb2, platform_pb2
from papr_emu_client import Client, Guest, RtasError

PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]
CORES = 500  # cores plugged per round at most (max_cpus 512)
CONFIGURED, UNISOLATE = "DRC_STATE_LOGICAL_CONFIGURED", "DRC_STATE_LOGICAL_UNISOLATE"


@dataclass
class Acknowledged:
    """What the clients of one round were told."""

    plugged: set[int] = field(default_factory=set)  # core ids whose plug answered
    deleted: set[int] = field(default_factory=set)  # core ids whose unplug answered "deleted"
    unisolated: set[int] = field(default_factory=set)  # core ids acquired (allocation usable + unisolate)
    configured: set[int] = field(default_factory=set)  # core ids whose configure-connector walk completed
    last_event: int = 0  # the newest event sequence the watcher received


def start(state: Path, socket: str) -> tuple[subprocess.Popen[bytes], Client]:
    process = subprocess.Popen(
        [*PAPR_EMU, "serve", "--listen", socket, "--state-dir", str(state), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    channel = grpc.insecure_channel(socket)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if (
                health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                == health_pb2.HealthCheckResponse.SERVING
            ):
                return process, Client.over(channel)
        except grpc.RpcError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def load(client: Client, name: str, seen: Acknowledged, stop: threading.Event) -> list[threading.Thread]:
    """The round's three clients, started; they end when the server goes (or ``stop``)."""

    def manager() -> None:
        for core in range(1, CORES + 1):
            if stop.is_set():
                return
            spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=core))
            client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=name, id=f"c{core}", spec=spec))
            seen.plugged.add(core)
            if core % 2 == 0:
                reply = client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=name, id=f"c{core}"))
                if reply.deleted:
                    seen.deleted.add(core)

    def guest() -> None:
        rtas = Guest(client.rtas, name, "unary")
        done: set[int] = set()
        while not stop.is_set():
            todo = sorted(c for c in seen.plugged if c % 2 and c not in done)
            if not todo:
                time.sleep(0.002)
                continue
            core = todo[0]
            index = 0x1000_0000 | core
            rtas.acquire_drc(index)
            seen.unisolated.add(core)
            rtas.configure_connector(index)
            seen.configured.add(core)
            done.add(core)

    def watcher() -> None:
        stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=name, after_sequence=0))
        for response in stream:
            seen.last_event = max(seen.last_event, response.event.sequence)
            if stop.is_set():
                stream.cancel()

    threads = [threading.Thread(target=quietly(work), daemon=True) for work in (manager, guest, watcher)]
    for thread in threads:
        thread.start()
    return threads


def quietly(work: object) -> object:
    def run() -> None:
        try:
            work()  # type: ignore[operator]
        except (grpc.RpcError, RtasError):
            pass  # the server was killed under it

    return run


def check(client: Client, name: str, seen: Acknowledged) -> list[str]:
    """What the restarted server lost of what the round's clients were told; [] if nothing."""
    problems = []
    devices = {d.id for d in client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=name)).devices}
    for core in seen.plugged:
        gone = core in seen.deleted
        if gone and f"c{core}" in devices:
            problems.append(f"c{core}: deleted (acknowledged) but back")
        if not gone and core % 2 and f"c{core}" not in devices:
            problems.append(f"c{core}: plugged (acknowledged) but gone")
    connectors = client.platforms.ListConnectors(
        platform_pb2.ListConnectorsRequest(platform=name, type=connector_pb2.DRC_TYPE_CPU, attached_only=True)
    ).connectors
    states = {c.index & 0x0FFFFFFF: connector_pb2.DrcState.Name(c.state) for c in connectors}
    for core in seen.configured:
        if states.get(core) != CONFIGURED:
            problems.append(f"core {core}: configured (acknowledged) but {states.get(core)}")
    for core in seen.unisolated - seen.configured:
        if states.get(core) not in (UNISOLATE, CONFIGURED):
            problems.append(f"core {core}: unisolated (acknowledged) but {states.get(core)}")
    info = client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=name)).platform
    if info.last_event_sequence < seen.last_event:
        problems.append(f"events: the watcher saw {seen.last_event}, the server is back at {info.last_event_sequence}")
    return problems


def snapshot_of(client: Client, name: str) -> dict[str, object]:
    document = json.loads(
        client.platforms.SnapshotPlatform(platform_pb2.SnapshotPlatformRequest(platform=name)).snapshot
    )
    for device in document["devices"]:
        device.pop("unplug_timeout_left", None)
    return document  # type: ignore[no-any-return]


def tear(state: Path) -> bool:
    """Append half a record to one journal, as a write cut short by the kill would leave it."""
    journals = sorted(state.glob("platforms/*/journal.jsonl"))
    if not journals:
        return False
    with open(journals[-1], "ab") as file:
        file.write(b'{"op":"set_indicator","args":[9001,2684')
    return True


def run(rounds: int, seed: int, directory: Path) -> int:
    rng = random.Random(seed)
    state, socket = directory / "state", f"unix:{directory}/papr.sock"
    kept: dict[str, dict[str, object]] = {}  # earlier rounds' platforms, as they must come back
    failures = 0
    for round_ in range(1, rounds + 1):
        process, client = start(state, socket)
        for name, document in kept.items():
            if snapshot_of(client, name) != document:
                print(f"round {round_}: platform {name} did not come back as it was", flush=True)
                failures += 1
        name = f"r{round_}"
        client.platforms.CreatePlatform(
            platform_pb2.CreatePlatformRequest(name=name, geometry=platform_pb2.Geometry(cpus=1, max_cpus=512))
        )
        seen, stop = Acknowledged(), threading.Event()
        threads = load(client, name, seen, stop)
        time.sleep(rng.uniform(0.05, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        for thread in threads:
            thread.join(5)
        torn = rng.random() < 0.3 and tear(state)
        process, client = start(state, socket)
        problems = check(client, name, seen)
        kept[name] = snapshot_of(client, name)
        process.send_signal(signal.SIGKILL)  # the next round starts from what is on disk
        process.wait(10)
        status = "ok" if not problems else "LOST: " + "; ".join(problems)
        print(
            f"round {round_}: {len(seen.plugged)} plugs, {len(seen.configured)} configured, "
            f"event {seen.last_event}{', torn record' if torn else ''}: {status}",
            flush=True,
        )
        failures += bool(problems)
    print(f"{rounds - failures} of {rounds} rounds lost nothing acknowledged", flush=True)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--dir", type=Path, default=None, help="the state directory's parent (default: a temporary one)"
    )
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}", flush=True)
    if options.dir is not None:
        options.dir.mkdir(parents=True, exist_ok=True)
        return run(options.rounds, seed, options.dir)
    with tempfile.TemporaryDirectory(prefix="papr-crash-") as directory:
        return run(options.rounds, seed, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
