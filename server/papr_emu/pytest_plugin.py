"""A pytest plugin: a throwaway papr-emu server per test, and a client connected to it.

Installed with papr-emu (entry point ``pytest11``), so any project's tests can use it.
It lives in the server package because it starts a server; the client library never
imports the server.

Example::

    def test_dimm_hot_add(papr_emu):
        dimm = papr_emu.hotplug.PlugDevice(...)
        Guest(papr_emu.rtas, papr_emu.platform).acquire_drc(dimm.drc_indexes[0])

The server listens on a free loopback port and holds the built-in default platform
(``-m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4``) named ``papr_emu.platform``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from papr_emu_client import Client, connect

from .model import DEFAULT_PLATFORM, Platforms, default_geometry
from .server import PaprServer


@dataclass
class PaprEmuFixture(Client):
    """A connected client, plus the server's address and its default platform's name."""

    address: str = ""
    platform: str = "default"


@pytest.fixture
def papr_emu() -> Iterator[PaprEmuFixture]:
    """A fresh server on a free port, stopped after the test; yields a connected client."""
    platforms = Platforms()
    platforms.create(DEFAULT_PLATFORM, default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"])
    server.start()
    try:
        client = connect(server.addresses[0])
        fixture = PaprEmuFixture(
            client.channel,
            client.rtas,
            client.platforms,
            client.hotplug,
            client.interrupts,
            client.guest,
            address=server.addresses[0],
            platform=DEFAULT_PLATFORM,
        )
        try:
            yield fixture
        finally:
            fixture.close()
    finally:
        server.stop(grace=0.5)
