"""A CPU core: one connector, named by the vCPU id of its first thread, and its threads' states.

Each thread is named by its vCPU id, which is also its interrupt server number (the
core's ``ibm,ppc-interrupt-server#s``, what Linux calls the hard CPU id): with QEMU's
default ``vsmt == threads``, the threads of core ``c`` are ``c .. c + threads - 1``.
A thread is stopped or running (RTAS query-cpu-stopped-state, start-cpu, stop-self).

Example::

    >>> core = CpuCore("core2", hotplugged=True, core_id=2, threads=2)
    >>> core.check_unplug()  # any core but the boot core may go
    >>> list(core.cpu_ids), core.is_running(3)
    ([2, 3], False)
    >>> core.start(3); core.running_cpus()
    [3]
    >>> CpuCore("core0", hotplugged=False, core_id=0).check_unplug()
    Traceback (most recent call last):
    ...
    papr_emu.model.errors.FailedPrecondition: Boot CPU core may not be unplugged
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from dataclasses import dataclass, field
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
    # vCPU ids of the threads that run; the others are stopped (the RTAS "stopped state").
    _running: set[int] = field(default_factory=set, repr=False)

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
        core = CpuCore(device_id, context.hotplugged, core_id=core_id, threads=g.threads)
        if core_id == 0 and not context.hotplugged:
            # QEMU 7.2's machine reset halts every thread and starts only the first vCPU; the guest
            # starts the others with start-cpu (Linux at boot, as for a hot-added core).
            core.start(0)
        return core

    # --- thread states (RTAS query-cpu-stopped-state, start-cpu, stop-self) -----------------------

    @property
    def cpu_ids(self) -> range:
        """The threads' vCPU ids (= interrupt server numbers, ``ibm,ppc-interrupt-server#s``)."""
        return range(self.core_id, self.core_id + self.threads)

    def is_running(self, cpu_id: int) -> bool:
        return cpu_id in self._running

    def running_cpus(self) -> list[int]:
        return sorted(self._running)

    def start(self, cpu_id: int) -> None:
        """Thread ``cpu_id`` (one of :attr:`cpu_ids`) leaves the stopped state."""
        assert cpu_id in self.cpu_ids
        self._running.add(cpu_id)

    def stop(self, cpu_id: int) -> None:
        """Thread ``cpu_id`` enters the stopped state (stop-self); stopping a stopped thread changes nothing."""
        self._running.discard(cpu_id)

    def check_unplug(self) -> None:
        if not self.unplug_pending and self.core_id == 0:
            raise FailedPrecondition("Boot CPU core may not be unplugged")
        super().check_unplug()

    def fragment(self, drc_index: int, context: FragmentContext, hotplugged: bool = True) -> Node:
        return cpu_core_node(self.core_id, self.threads, drc_index, context.hpt_shift, hotplugged)
