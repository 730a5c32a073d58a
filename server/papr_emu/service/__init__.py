"""Thin gRPC adapters over the platform model (papr.v1 services)."""

from .guest import GuestServicer
from .hotplug import HotplugServicer
from .interrupt import InterruptServicer
from .platform import PlatformServicer
from .rtas import RtasServicer

__all__ = ["GuestServicer", "HotplugServicer", "InterruptServicer", "PlatformServicer", "RtasServicer"]
