"""An LMB assigned on its own: PowerVM's memory model (a platform with ``MemoryModel.LMB``).

On such a platform no DIMM holds device memory: the management side asks for LMBs to be
added or removed (:mod:`~papr_emu.model.memory_requests`), and each LMB the guest acquires
under such a request becomes one ``Lmb`` device on its connector, until the guest gives it
back. They are not plugged through PlugDevice, announce no device events of their own (the
request reports its outcome) and are not listed as devices: a platform may hold 262,144.

Example::

    >>> lmb = Lmb("lmb5", hotplugged=True, lmb_id=5)
    >>> [hex(i) for i in lmb.drc_indexes], lmb.assigned_memory, lmb.fragment(lmb.drc_indexes[0], None).name
    (['0x80000005'], (1342177280, 268435456), 'memory@50000000')
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

from ..devicetree import Node
from ..drc import LMB, DrcType
from ..errors import FailedPrecondition
from ..fragments import lmb_node
from ..rtas import LMB_SIZE
from .base import Device, DeviceType, FragmentContext, PlugContext


@dataclass(frozen=True, slots=True)
class LmbParams:
    """The LMB's connector id: its guest address over 256 MiB."""

    lmb_id: int


@dataclass(eq=False)
class Lmb(Device):
    type: ClassVar[DeviceType] = DeviceType.LMB
    drc_type: ClassVar[DrcType] = LMB
    request_type: ClassVar[builtins.type] = LmbParams
    announced: ClassVar[bool] = False
    listed: ClassVar[bool] = False
    released_when_unusable: ClassVar[bool] = True
    unplug_timeout: ClassVar[bool] = False

    lmb_id: int = 0

    @property
    def drc_ids(self) -> range:
        return range(self.lmb_id, self.lmb_id + 1)

    @property
    def params(self) -> LmbParams:
        return LmbParams(self.lmb_id)

    @property
    def slot_key(self) -> Hashable:
        return self.lmb_id

    @property
    def memory_blocks(self) -> int:
        return 1

    @property
    def assigned_memory(self) -> tuple[int, int] | None:
        return self.lmb_id * LMB_SIZE, LMB_SIZE

    def check_unplug(self) -> None:
        raise FailedPrecondition(f"{self.id} is removed with a memory request (RequestMemory), not unplugged")

    @classmethod
    def id_base(cls, request: LmbParams) -> str:
        return f"lmb{request.lmb_id}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: LmbParams) -> Lmb:
        """LMBs come and go through memory requests, never through PlugDevice."""
        raise FailedPrecondition("an LMB is added with a memory request (RequestMemory), not plugged")

    def fragment(self, drc_index: int, context: FragmentContext | None, hotplugged: bool = True) -> Node:
        return lmb_node(self.lmb_id * LMB_SIZE)
