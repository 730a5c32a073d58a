"""Benchmark: time and memory to build platforms with maxmem 1T, 8T and 64T.

For each size it measures, in this process (the platform model, no network):
  * build: Platform creation (connector table, boot devices);
  * fill: hot-plugging one DIMM over all of device memory (every LMB attached);
  * touch: the guest acquiring every LMB (set-indicator allocation usable on each).
Memory is what tracemalloc sees allocated and still held after each step, per LMB
connector. A CreatePlatform through a real server is timed too, against an
empty gRPC call in the same run.

    python bench/build_platforms.py [--sizes 1,8,64]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

from baseline import against_empty_call

from papr_emu.logs import configure_logging
from papr_emu.model import DimmRequest, Geometry, Platform
from papr_emu.model.rtas import ALLOCATION_STATE, ALLOCATION_USABLE
from papr_emu_client import Client

TiB = 1 << 40


def geometry(max_tib: int) -> Geometry:
    return Geometry.build(memory=1 << 30, max_memory=max_tib * TiB, slots=32, cpus=1, max_cpus=4)


def run(max_tib: int, memory: bool) -> tuple[list[float], Platform]:
    """Build, fill, acquire; the time (or, with ``memory``, the bytes held) after each step."""
    g = geometry(max_tib)
    gc.collect()
    if memory:
        tracemalloc.start()

    def mark() -> float:
        return float(tracemalloc.get_traced_memory()[0]) if memory else time.perf_counter()

    marks = [mark()]
    platform = Platform(f"m{max_tib}", g)
    marks.append(mark())
    dimm = platform.plug("all", DimmRequest(size=g.device_memory_size))
    marks.append(mark())
    for index in dimm.drc_indexes:
        platform.set_indicator(ALLOCATION_STATE, index, ALLOCATION_USABLE)
    marks.append(mark())
    if memory:
        tracemalloc.stop()
    return marks, platform


def measure(max_tib: int) -> dict[str, float]:
    times, _ = run(max_tib, memory=False)  # timed without tracemalloc, which slows allocation
    sizes, platform = run(max_tib, memory=True)
    build_s, fill_s, touch_s = (times[n + 1] - times[n] for n in range(3))
    build_bytes, fill_bytes, total_bytes = sizes[1] - sizes[0], sizes[2] - sizes[1], sizes[3] - sizes[0]
    lmbs = platform.geometry.lmb_count
    return {
        "lmbs": lmbs,
        "connectors": sum(n for _, n in platform.info().connector_counts),
        "build_s": build_s,
        "build_b_per_drc": build_bytes / lmbs,
        "fill_s": fill_s,
        "fill_b_per_lmb": fill_bytes / lmbs,
        "touch_s": touch_s,
        "total_b_per_lmb": total_bytes / lmbs,
    }


def grpc_create(max_tib: int) -> tuple[float, float]:
    """Median CreatePlatform latency through a real server, and the empty-call latency."""
    from papr.v1 import platform_pb2
    from papr_emu.model import Platforms

    g = platform_pb2.Geometry(memory_bytes=1 << 30, max_memory_bytes=max_tib * TiB, memory_slots=32)

    def create(client: Client, n: int) -> None:
        client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=f"p{n}", geometry=g))

    return against_empty_call(Platforms(), create, rounds=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,64", help="maxmem values in TiB")
    options = parser.parse_args()
    configure_logging("console", "warning")
    sizes = [int(s) for s in options.sizes.split(",")]
    print(f"{'maxmem':>7} {'LMBs':>8} {'build':>9} {'B/idle DRC':>10} {'fill DIMM':>10} {'B/attached':>10}"
          f" {'acquire all':>11} {'B/LMB total':>11}")  # fmt: skip
    rows = []
    for size in sizes:
        r = measure(size)
        rows.append(r)
        print(
            f"{size:>5} T {int(r['lmbs']):>8} {r['build_s'] * 1e3:>7.2f}ms {r['build_b_per_drc']:>10.2f}"
            f" {r['fill_s']:>9.3f}s {r['fill_b_per_lmb']:>10.1f} {r['touch_s']:>10.3f}s {r['total_b_per_lmb']:>11.1f}"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        scale = last["lmbs"] / first["lmbs"]
        print(
            f"scaling {sizes[0]}T -> {sizes[-1]}T ({scale:.0f}x LMBs): fill x{last['fill_s'] / first['fill_s']:.1f}, "
            f"acquire x{last['touch_s'] / first['touch_s']:.1f} (linear = x{scale:.0f}); build does not grow"
        )
    for size in sizes:
        create, empty = grpc_create(size)
        print(f"CreatePlatform maxmem {size}T over gRPC: {create * 1e3:.2f} ms = {create / empty:.2f}x an empty call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
