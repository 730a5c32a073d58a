"""Connecting to a papr-emu server.

``PAPR_EMU_HOST`` (``host:port`` or ``unix:PATH``) names the server, as cloud
emulators do with their ``*_EMULATOR_HOST`` variables.

Example::

    from papr_emu_client import connect

    client = connect()                  # $PAPR_EMU_HOST, else 127.0.0.1:50051
    client.rtas.GetSensorState(...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc

from papr.v1 import guest_pb2_grpc, hotplug_pb2_grpc, interrupt_pb2_grpc, platform_pb2, platform_pb2_grpc, rtas_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
HOST_VARIABLE = "PAPR_EMU_HOST"


@dataclass
class Client:
    """A channel and the papr.v1 stubs on it."""

    channel: grpc.Channel
    rtas: rtas_pb2_grpc.RtasServiceStub
    platforms: platform_pb2_grpc.PlatformServiceStub
    hotplug: hotplug_pb2_grpc.HotplugServiceStub
    interrupts: interrupt_pb2_grpc.InterruptServiceStub
    guest: guest_pb2_grpc.GuestServiceStub

    def device_tree(self, platform: str) -> bytes:
        """The platform's device tree as a DTB (GetDeviceTree's chunks, joined)."""
        chunks = self.platforms.GetDeviceTree(platform_pb2.GetDeviceTreeRequest(platform=platform))
        return b"".join(response.chunk for response in chunks)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def target_from_env(target: str | None = None) -> str:
    """The explicit target, else $PAPR_EMU_HOST, else 127.0.0.1:50051."""
    return target or os.environ.get(HOST_VARIABLE) or DEFAULT_TARGET


def connect(target: str | None = None, timeout: float | None = 10.0) -> Client:
    """Open a channel (waiting up to ``timeout`` s for it to be ready) and make the stubs."""
    channel = grpc.insecure_channel(target_from_env(target))
    if timeout is not None:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    return Client(
        channel,
        rtas_pb2_grpc.RtasServiceStub(channel),
        platform_pb2_grpc.PlatformServiceStub(channel),
        hotplug_pb2_grpc.HotplugServiceStub(channel),
        interrupt_pb2_grpc.InterruptServiceStub(channel),
        guest_pb2_grpc.GuestServiceStub(channel),
    )
