"""Fixtures: one real gRPC server (TCP and unix socket) and a fresh platform per test."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from papr.v1 import platform_pb2
from papr_emu import PaprServer
from papr_emu.model import Platforms, default_geometry
from papr_emu_client import Client, Guest, connect

_names = itertools.count()

# The suite starts its own servers and says how to reach them: connection settings of the shell that
# runs it (a CA, a token, another server) must not leak into its clients.
for _variable in ("PAPR_EMU_HOST", "PAPR_EMU_CA", "PAPR_EMU_CERT", "PAPR_EMU_KEY", "PAPR_EMU_TOKEN",
                  "PAPR_EMU_SERVER_NAME", "PAPR_EMU_MANAGER_TOKEN"):  # fmt: skip
    os.environ.pop(_variable, None)
# The dev extra installs OpenTelemetry, which the server then turns on (papr_emu.service.tracing):
# off for the suite, so that every server it starts does not import it; tests/test_tracing.py turns it on.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")


@pytest.fixture(scope="session")
def server() -> Iterator[PaprServer]:
    socket_dir = tempfile.mkdtemp(prefix="papr-test-")
    platforms = Platforms()
    platforms.create("default", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0", f"unix:{socket_dir}/papr.sock"])
    server.start()
    yield server
    server.stop(grace=0.5)
    os.rmdir(socket_dir) if not os.listdir(socket_dir) else None


@pytest.fixture(scope="session")
def client(server: PaprServer) -> Iterator[Client]:
    with connect(server.addresses[0]) as client:
        yield client


@pytest.fixture(scope="session")
def unix_client(server: PaprServer) -> Iterator[Client]:
    with connect(server.addresses[1]) as client:
        yield client


def new_platform(client: Client, geometry: platform_pb2.Geometry | None = None, **kwargs: object) -> str:
    """Create a platform with a unique name (default geometry: 1G, slots=4, maxmem=4G, smp 1,maxcpus=4)."""
    name = f"t{next(_names)}"
    if geometry is None:
        geometry = platform_pb2.Geometry(
            memory_bytes=1 << 30, max_memory_bytes=4 << 30, memory_slots=4, cpus=1, max_cpus=4
        )
    client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=name, geometry=geometry, **kwargs))
    return name


@pytest.fixture
def platform(client: Client) -> Iterator[str]:
    name = new_platform(client)
    yield name
    try:
        client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=name))
    except grpc.RpcError:
        pass  # the test deleted it


@pytest.fixture
def guest(client: Client, platform: str) -> Guest:
    return Guest(client.rtas, platform)


assert default_geometry().lmb_count == 12
