"""A CPU core: one connector, named by the vCPU id of its first thread.

Example::

    >>> core = CpuCore("core2", hotplugged=True, core_id=2)
    >>> core.check_unplug()  # any core but the boot core may go
    >>> CpuCore("core0", hotplugged=False, core_id=0).check_unplug()
    Traceback (most recent call last):
    ...
    papr_emu.model.errors.FailedPrecondition: Boot CPU core may not be unplugged
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

from ..devicetree import Node
from ..drc import CPU, DrcType
from ..errors import FailedPrecondition, InvalidArgument
from ..fragments import cpu_core_node
from .base import Device, DeviceType, FragmentContext, PlugContext


@dataclass(frozen=True, slots=True)
class CpuCoreParams:
    core_id: int


@dataclass(eq=False)
class CpuCore(Device):
    type: ClassVar[DeviceType] = DeviceType.CPU_CORE
    drc_type: ClassVar[DrcType] = CPU
    request_type: ClassVar[builtins.type] = CpuCoreParams
    # None: a second device_del is accepted and QEMU re-sends the remove event.
    unplug_in_progress: ClassVar[str | None] = None

    core_id: int = 0
    threads: int = 1

    @property
    def drc_ids(self) -> range:
        # vCPU id of thread 0 with vsmt == threads: the core id (QEMU 7.2, observed).
        return range(self.core_id, self.core_id + 1)

    @property
    def params(self) -> CpuCoreParams:
        return CpuCoreParams(self.core_id)

    @property
    def slot_key(self) -> Hashable:
        return self.core_id

    @property
    def parent_path(self) -> str:
        return "/cpus"

    @property
    def boot_order(self) -> int:
        return self.core_id

    @classmethod
    def id_base(cls, request: CpuCoreParams) -> str:
        return f"core{request.core_id}"

    @classmethod
    def prepare(cls, context: PlugContext, device_id: str, request: CpuCoreParams) -> CpuCore:
        g, core_id = context.geometry, request.core_id
        if core_id < 0:
            raise InvalidArgument("cpu_core.core_id", core_id, "must not be negative")
        if core_id % g.threads:
            raise InvalidArgument("cpu_core.core_id", core_id, f"invalid core id {core_id}")
        if core_id >= g.max_cpus:
            raise InvalidArgument("cpu_core.core_id", core_id, f"core id {core_id} out of range")
        if context.inventory.occupant(CpuCore, core_id) is not None:
            raise FailedPrecondition(f"core {core_id} already populated", "cpu_core.core_id", core_id)
        return CpuCore(device_id, context.hotplugged, core_id=core_id, threads=g.threads)

    def check_unplug(self) -> None:
        if not self.unplug_pending and self.core_id == 0:
            raise FailedPrecondition("Boot CPU core may not be unplugged")
        super().check_unplug()

    def fragment(self, drc_index: int, context: FragmentContext, hotplugged: bool = True) -> Node:
        return cpu_core_node(self.core_id, self.threads, drc_index, context.hpt_shift, hotplugged)
