"""Timing an RPC against the empty-call baseline, on one in-process server, in the same run.

Example::

    action, empty = against_empty_call(platforms, lambda client, n: client.device_tree("p"), rounds=10)
    print(f"{action / empty:.1f}x an empty call")
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable

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
