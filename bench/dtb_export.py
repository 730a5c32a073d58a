"""Benchmark: device-tree (DTB) export for maxmem 1T, 8T and 64T.

For each size: the platform's tree before CAS (four ibm,drc-* arrays over every
LMB connector) and after CAS with drconf memory, v1 (one 24-byte entry per LMB)
and v2 (one entry per run), with a DIMM filling half of device memory. Times are
the median of several exports, in this process (the model, no network); the last
line times GetDeviceTree over gRPC against an empty call on the same server.

    python bench/dtb_export.py [--sizes 1,8,64] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from baseline import against_empty_call

from papr_emu.logs import configure_logging
from papr_emu.model import DimmRequest, Geometry, Platform

TiB = 1 << 40


def vector(*bits: tuple[int, int]) -> bytes:
    data = bytearray(24)
    data[0] = 22
    for byte, mask in bits:
        data[byte] |= mask
    return bytes(data)


MODES = {
    "pre-CAS arrays": None,
    "drconf v1": vector((6, 0x04), (2, 0x20)),
    "drconf v2": vector((6, 0x04), (2, 0x20), (22, 0x80)),
    "drc-info + v2": vector((6, 0x04), (2, 0x20), (22, 0xC0)),
}


def platform_for(max_tib: int, mode: bytes | None) -> Platform:
    g = Geometry.build(memory=4 << 30, max_memory=max_tib * TiB, slots=32, cpus=1, max_cpus=4)
    platform = Platform(f"m{max_tib}", g)
    platform.plug("half", DimmRequest(size=g.device_memory_size // 2 // (256 << 20) * (256 << 20)))
    if mode is not None:
        platform.client_architecture_support(mode)
    return platform


def median_export(platform: Platform, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = len(platform.device_tree_blob())
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def grpc_ratio(max_tib: int) -> tuple[float, float]:
    """Median GetDeviceTree latency through a real server, and the empty-call latency."""
    from papr_emu.model import Platforms

    platforms = Platforms()
    platforms.create("p", Geometry.build(memory=4 << 30, max_memory=max_tib * TiB, slots=32))
    return against_empty_call(platforms, lambda client, n: client.device_tree("p"), rounds=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,64")
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    configure_logging("console", "warning")
    sizes = [int(s) for s in options.sizes.split(",")]
    print(f"{'maxmem':>7} {'LMBs':>8} " + " ".join(f"{m:>26}" for m in MODES))
    per_lmb: dict[str, list[float]] = {m: [] for m in MODES}
    for size in sizes:
        cells = []
        lmbs = 0
        for mode, ov5 in MODES.items():
            platform = platform_for(size, ov5)
            lmbs = platform.geometry.lmb_count
            seconds, length = median_export(platform, options.repeat)
            per_lmb[mode].append(seconds / lmbs)
            cells.append(f"{seconds * 1e3:9.1f} ms {length / 1e6:8.2f} MB")
        print(f"{size:>5} T {lmbs:>8} " + " ".join(f"{c:>26}" for c in cells))
    if len(sizes) > 1:
        for mode, values in per_lmb.items():
            print(f"  {mode}: time per LMB {values[0] * 1e6:.2f} us at {sizes[0]}T, {values[-1] * 1e6:.2f} us at "
                  f"{sizes[-1]}T (x{values[-1] / values[0]:.2f}; 1.00 = linear)")  # fmt: skip
    export, empty = grpc_ratio(sizes[-1])
    ratio = export / empty
    print(f"GetDeviceTree over gRPC, maxmem {sizes[-1]}T pre-CAS: {export * 1e3:.1f} ms = {ratio:.0f}x an empty call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
