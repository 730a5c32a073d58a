"""Benchmark: RTAS calls on a server with a state directory ÷ the same without, in one run.

Two ``papr-emu serve`` processes, one with ``--state-dir`` (a temporary directory) and one
without, each with a DIMM whose LMB the guest has configured. Rounds alternate between
them so drift hits both. Measured:

- unary: SetIndicator (a no-op unisolate: journaled all the same) and GetSensorState,
  alternately, one call per RPC: the rate without ÷ the rate with (target ≤ 1.3);
- session: batches of ``--batch`` such calls per Session message: the same ratio
  (target ≤ 1.5); a batch's records go out in one write (group commit).

And, in this process, what one record costs in each store the issue names: an append to
the journal file (``os.write``) against an insert into SQLite in WAL mode
(``synchronous=NORMAL``, one transaction per record, as a call must be durable before it
answers), each per record.

    python bench/state_dir.py [--seconds 2] [--rounds 5] [--batch 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from baseline import server_process
from sessions import SessionPipe

from papr.v1 import device_pb2, hotplug_pb2, rtas_pb2
from papr_emu_client import Client, connect

LMB = 0x80000004
PLATFORM = "default"


def rate(action: Callable[[], int], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        count += action()
    return count / (now - start)


def prepare(client: Client) -> None:
    spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))
    client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=PLATFORM, id="bench", spec=spec))
    for indicator in (9003, 9001):
        client.rtas.SetIndicator(rtas_pb2.SetIndicatorRequest(platform=PLATFORM, indicator_type=indicator,
                                                              indicator_index=LMB, new_state=1))  # fmt: skip


def unary(client: Client) -> Callable[[], int]:
    set_indicator = rtas_pb2.SetIndicatorRequest(
        platform=PLATFORM, indicator_type=9001, indicator_index=LMB, new_state=1
    )
    sense = rtas_pb2.GetSensorStateRequest(platform=PLATFORM, sensor_type=9003, sensor_index=LMB)

    def run() -> int:
        for _ in range(25):
            client.rtas.SetIndicator(set_indicator)
            client.rtas.GetSensorState(sense)
        return 50

    return run


def batched(pipe: SessionPipe, size: int) -> Callable[[], int]:
    calls = [
        rtas_pb2.RtasCall(
            set_indicator=rtas_pb2.SetIndicatorRequest(indicator_type=9001, indicator_index=LMB, new_state=1)
        )
        if n % 2
        else rtas_pb2.RtasCall(get_sensor_state=rtas_pb2.GetSensorStateRequest(sensor_type=9003, sensor_index=LMB))
        for n in range(size)
    ]

    def run() -> int:
        pipe.call(calls)
        return size

    return run


def record_costs(count: int = 20_000) -> tuple[float, float]:
    """Microseconds per record: journal append, and SQLite WAL insert with a commit each."""
    record = {"op": "set_indicator", "args": [9001, LMB, 1], "kwargs": {}, "clocks": [[1.8e9], [1000.5]]}
    with tempfile.TemporaryDirectory() as directory:
        fd = os.open(f"{directory}/journal.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        journal = (time.perf_counter() - start) / count * 1e6
        os.close(fd)
        db = sqlite3.connect(f"{directory}/state.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE journal (n INTEGER PRIMARY KEY, record TEXT)")
        start = time.perf_counter()
        for _ in range(count):
            db.execute("INSERT INTO journal (record) VALUES (?)", (json.dumps(record, separators=(",", ":")),))
        sqlite = (time.perf_counter() - start) / count * 1e6
        db.close()
    return journal, sqlite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000)
    options = parser.parse_args()
    journal, sqlite = record_costs()
    print(f"one record: journal append {journal:.1f} us, SQLite WAL insert+commit {sqlite:.1f} us")
    with (
        tempfile.TemporaryDirectory(prefix="papr-state-") as state,
        server_process() as plain,
        server_process(None, "--state-dir", state) as kept,
    ):
        clients = {"without": connect(plain.target, timeout=30), "with": connect(kept.target, timeout=30)}
        for client in clients.values():
            prepare(client)
        pipes = {name: SessionPipe(client) for name, client in clients.items()}
        unary_ratios, session_ratios = [], []
        for _ in range(options.rounds):
            rates = {name: rate(unary(client), options.seconds) for name, client in clients.items()}
            unary_ratios.append(rates["without"] / rates["with"])
            batches = {name: rate(batched(pipe, options.batch), options.seconds) for name, pipe in pipes.items()}
            session_ratios.append(batches["without"] / batches["with"])
            print(
                f"unary {rates['without']:.0f}/s without, {rates['with']:.0f}/s with: x{unary_ratios[-1]:.2f}; "
                f"session batches {batches['without']:.0f}/s, {batches['with']:.0f}/s: x{session_ratios[-1]:.2f}",
                flush=True,
            )
        for pipe in pipes.values():
            pipe.close()
    print(f"median: unary x{statistics.median(unary_ratios):.2f} (target <= 1.3), "
          f"session batches x{statistics.median(session_ratios):.2f} (target <= 1.5)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
