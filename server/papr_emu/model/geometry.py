"""Platform geometry, described the way QEMU's command line does.

``-m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4`` becomes::

    >>> g = Geometry.build(memory=1 << 30, max_memory=4 << 30, slots=4, cpus=1, max_cpus=4)
    >>> hex(g.device_memory_base), g.lmb_count, g.first_lmb_id, g.max_cores
    ('0x40000000', 12, 4, 4)

Unset values take QEMU's pseries defaults (512 MiB, maxmem = memory, no
slots, one vCPU, maxcpus = cpus, one thread per core).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from .errors import InvalidArgument
from .rtas import DEVICE_MEMORY_ALIGN, LMB_SIZE

DEFAULT_MEMORY: Final = 512 << 20  # QEMU pseries default RAM size
# papr-emu limit, PowerVM's largest partition: 262,144 LMB connectors. A DIMM over all of it
# lists its connectors in ~1.3 MB messages, well inside gRPC's default 4 MiB limit.
MAX_MEMORY_LIMIT: Final = 64 << 40
MAX_SLOTS: Final = 32  # SPAPR_MAX_RAM_SLOTS
MAX_CPUS: Final = 4096  # papr-emu limit
MAX_THREADS: Final = 8
MAX_PHBS: Final = 31  # SPAPR_MAX_PHBS: PHB connectors 0..30


class MemoryModel(enum.Enum):
    """How the platform hands out device memory.

    ``DIMM``: QEMU's pseries model, memory comes as DIMMs (and NVDIMMs) the management side
    plugs. ``LMB``: PowerVM's model, the management side asks for LMBs to be added or removed
    (by count, by index, or an indexed count) and each 256 MiB LMB is assigned on its own.
    """

    DIMM = "dimm"
    LMB = "lmb"


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


@dataclass(frozen=True, slots=True)
class Geometry:
    """A validated geometry with every default resolved."""

    memory: int
    max_memory: int
    slots: int
    cpus: int
    max_cpus: int
    threads: int
    memory_model: MemoryModel = MemoryModel.DIMM

    @classmethod
    def build(
        cls,
        memory: int | None = None,
        max_memory: int | None = None,
        slots: int | None = None,
        cpus: int | None = None,
        max_cpus: int | None = None,
        threads: int | None = None,
        memory_model: MemoryModel | None = None,
    ) -> Geometry:
        """Resolve defaults and validate; raises InvalidArgument naming the field."""
        memory = DEFAULT_MEMORY if memory is None else memory
        max_memory = memory if max_memory is None else max_memory
        slots = 0 if slots is None else slots
        threads = 1 if threads is None else threads
        cpus = 1 if cpus is None else cpus
        max_cpus = cpus if max_cpus is None else max_cpus
        memory_model = MemoryModel.DIMM if memory_model is None else memory_model

        if memory <= 0 or memory % LMB_SIZE:
            raise InvalidArgument("geometry.memory_bytes", memory, "must be a positive multiple of 256 MiB")
        if max_memory < memory:
            raise InvalidArgument("geometry.max_memory_bytes", max_memory, "must be at least memory_bytes")
        if (max_memory - memory) % LMB_SIZE:
            raise InvalidArgument(
                "geometry.max_memory_bytes", max_memory, "maxmem - memory must be a multiple of 256 MiB"
            )
        if max_memory > MAX_MEMORY_LIMIT:
            raise InvalidArgument("geometry.max_memory_bytes", max_memory, "must be at most 64 TiB")
        if slots > MAX_SLOTS:
            raise InvalidArgument("geometry.memory_slots", slots, f"must be at most {MAX_SLOTS}")
        if slots and max_memory == memory:
            raise InvalidArgument(
                "geometry.memory_slots", slots, "slots need device memory (max_memory_bytes > memory_bytes)"
            )
        if max_memory > memory and not slots and memory_model is MemoryModel.DIMM:
            raise InvalidArgument(
                "geometry.memory_slots", slots, "max_memory_bytes > memory_bytes needs at least one slot"
            )
        if threads < 1 or threads > MAX_THREADS or threads & (threads - 1):
            raise InvalidArgument(
                "geometry.threads_per_core", threads, f"must be a power of two, at most {MAX_THREADS}"
            )
        if cpus < 1 or cpus % threads:
            raise InvalidArgument("geometry.cpus", cpus, "must be a positive multiple of threads_per_core")
        if max_cpus < cpus or max_cpus % threads:
            raise InvalidArgument(
                "geometry.max_cpus", max_cpus, "must be at least cpus and a multiple of threads_per_core"
            )
        if max_cpus > MAX_CPUS:
            raise InvalidArgument("geometry.max_cpus", max_cpus, f"must be at most {MAX_CPUS}")
        return cls(memory, max_memory, slots, cpus, max_cpus, threads, memory_model)

    @property
    def device_memory_base(self) -> int:
        """Where hot-pluggable memory starts: ROUND_UP(memory, 1 GiB)."""
        return _round_up(self.memory, DEVICE_MEMORY_ALIGN)

    @property
    def device_memory_size(self) -> int:
        return self.max_memory - self.memory

    @property
    def device_memory_end(self) -> int:
        return self.device_memory_base + self.device_memory_size

    @property
    def lmb_count(self) -> int:
        """One LMB connector per 256 MiB of device memory."""
        return self.device_memory_size // LMB_SIZE

    @property
    def first_lmb_id(self) -> int:
        return self.device_memory_base // LMB_SIZE

    @property
    def max_cores(self) -> int:
        return self.max_cpus // self.threads

    @property
    def boot_cores(self) -> int:
        return self.cpus // self.threads

    def core_ids(self) -> range:
        """Possible core ids: multiples of threads below max_cpus (CPU connector ids)."""
        return range(0, self.max_cpus, self.threads)
