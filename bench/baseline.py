"""What the benchmarks share: the empty-call baseline, and a server in a process of its own.

Example::

    action, empty = against_empty_call(platforms, lambda client, n: client.device_tree("p"), rounds=10)
    print(f"{action / empty:.1f}x an empty call")

    with server_process() as served:      # papr-emu serve on a fresh unix socket
        client = connect(served.target, timeout=30)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr_emu import PaprServer
from papr_emu.model import Platforms
from papr_emu_client import Client, connect


def against_empty_call(
    platforms: Platforms, action: Callable[[Client, int], object], rounds: int
) -> tuple[float, float]:
    """Median seconds of ``action(client, round)`` and of a health Check, alternating, over a unix socket."""
    socket = f"unix:{tempfile.mkdtemp(prefix='papr-bench-')}/s.sock"
    server = PaprServer(platforms, [socket])
    server.start()
    client = connect(socket)
    health = health_pb2_grpc.HealthStub(client.channel)
    actions, empties = [], []
    try:
        for n in range(rounds):
            start = time.perf_counter()
            action(client, n)
            actions.append(time.perf_counter() - start)
            start = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest())
            empties.append(time.perf_counter() - start)
    finally:
        client.close()
        server.stop(0)
    return statistics.median(actions), statistics.median(empties)


class Served(NamedTuple):
    """A server process: the address to connect to, and its process id."""

    target: str
    pid: int


@contextmanager
def server_process(tcp_port: int | None = None, *options: str) -> Iterator[Served]:
    """``papr-emu serve`` in a process of its own (as a real server runs), on a fresh unix socket or a
    loopback ``tcp_port``, logging warnings only; stopped after."""
    target = f"127.0.0.1:{tcp_port}" if tcp_port else f"unix:{tempfile.mkdtemp(prefix='papr-bench-')}/papr.sock"
    command = [sys.executable, "-m", "papr_emu.cli", "serve", "--listen", target, "--log-level", "warning"]
    server = subprocess.Popen([*command, *options])
    try:
        yield Served(target, server.pid)
    finally:
        server.terminate()
        server.wait(10)
