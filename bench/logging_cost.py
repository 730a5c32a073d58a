"""Benchmark: what logging at the default level (info) costs on the hot path of a big unplug.

In this process (the platform model, no network), a 1 TiB DIMM (4,096 LMBs) goes
through the guest's whole cycle: plug, acquire each LMB (allocation usable,
unisolate, the configure-connector walk), unplug, and release each LMB (isolate,
allocation unusable). The same cycle is timed with logging at info (the server's
default, JSON lines written to a file) and at error (nothing written), in
alternating rounds, and at debug for comparison; the ratio is the cost of the
default level. Per-connector lines are debug, so at info only a few summary lines
per device are written.

    python bench/logging_cost.py [--rounds 5] [--tib 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from papr_emu.logs import configure_logging
from papr_emu.model import DimmRequest, Geometry, Platform
from papr_emu.model.rtas import (
    ALLOCATION_STATE,
    ALLOCATION_UNUSABLE,
    ALLOCATION_USABLE,
    CC_COMPLETE,
    ISOLATE,
    ISOLATION_STATE,
    UNISOLATE,
)

TiB = 1 << 40


def cycle(tib: int) -> float:
    """Seconds for one plug, acquire, unplug, release cycle of a ``tib`` TiB DIMM."""
    platform = Platform("log", Geometry.build(memory=1 << 30, max_memory=(tib + 1) * TiB, slots=4, cpus=1))
    start = time.perf_counter()
    dimm = platform.plug("big", DimmRequest(size=tib * TiB))
    for index in dimm.drc_indexes:
        platform.set_indicator(ALLOCATION_STATE, index, ALLOCATION_USABLE)
        platform.set_indicator(ISOLATION_STATE, index, UNISOLATE)
        area = index.to_bytes(4, "big") + bytes(4092)
        while (reply := platform.configure_connector(area))[0] != CC_COMPLETE:
            area = reply[1]
    platform.unplug("big")
    for index in dimm.drc_indexes:
        platform.set_indicator(ISOLATION_STATE, index, ISOLATE)
        platform.set_indicator(ALLOCATION_STATE, index, ALLOCATION_UNUSABLE)
    elapsed = time.perf_counter() - start
    assert not platform.devices() or all(d.id != "big" for d in platform.devices())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tib", type=int, default=1)
    options = parser.parse_args()
    times: dict[str, list[float]] = {"info": [], "error": [], "debug": []}
    with tempfile.TemporaryFile("w") as sink:
        for _ in range(options.rounds):
            for level in times:
                configure_logging("json", level, stream=sink)
                times[level].append(cycle(options.tib))
        lines = sink.tell()
    info, error = statistics.median(times["info"]), statistics.median(times["error"])
    lmbs = options.tib * TiB // (256 << 20)
    print(f"{options.tib} TiB DIMM ({lmbs} LMBs): plug, acquire, unplug, release; {options.rounds} rounds per level")
    print(f"  logging at error (nothing written): median {error:.3f} s ({error / lmbs * 1e6:.1f} us per LMB)")
    print(f"  logging at info (the default):      median {info:.3f} s ({info / lmbs * 1e6:.1f} us per LMB)")
    debug = statistics.median(times["debug"])
    print(f"  logging at debug (every call):      median {debug:.3f} s ({debug / lmbs * 1e6:.1f} us per LMB)")
    print(f"  cost of the default level: x{info / error:.3f} (of debug: x{debug / error:.2f}); {lines} bytes written")


if __name__ == "__main__":
    main()
