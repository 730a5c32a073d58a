"""Benchmark: cold start of ``papr-emu serve`` to the health service's SERVING, in one run.

Each round starts the server process on a fresh unix socket and polls the health
Check until it answers SERVING; the figure is the time from spawning the process
to that answer (target ≤ 0.5 s). A bare ``python -c pass`` is timed in the same
run as the floor nothing can go below.

    python bench/cold_start.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def cold_start() -> float:
    socket = f"unix:{tempfile.mkdtemp(prefix='papr-bench-')}/papr.sock"
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "papr_emu.cli", "serve", "--listen", socket, "--log-level", "warning"]
    )
    try:
        # Reconnect at once: gRPC's default backoff (1 s) would be measured instead of the server.
        backoff = [(f"grpc.{k}_reconnect_backoff_ms", 5) for k in ("initial", "min", "max")]
        with grpc.insecure_channel(socket, options=backoff) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - start
                except grpc.RpcError:
                    time.sleep(0.005)
    finally:
        server.terminate()
        server.wait(10)


def bare_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    starts, floors = [], []
    for _ in range(options.rounds):
        starts.append(cold_start())
        floors.append(bare_python())
    print(f"cold start to SERVING: median {statistics.median(starts):.3f} s (min {min(starts):.3f}, max "
          f"{max(starts):.3f}); bare python: median {statistics.median(floors):.3f} s; target <= 0.5 s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
