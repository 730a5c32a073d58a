"""Benchmark: RTAS calls against an empty unary call, on one server, in one run.

The server runs in its own process (as a real one would); this process is the
client. The baseline is the gRPC health service's Check (an empty unary call on
the same server and channel); the mix is SetIndicator, GetSensorState and
ConfigureConnector (4 KiB in and out) in equal parts, on a DIMM the guest
configures over and over; ConfigureConnector alone is measured too. Rounds
alternate the baseline and the two loads so drift hits all three.

    python bench/rtas_vs_empty.py [--seconds 3] [--rounds 5] [--target unix:/tmp/x.sock]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from baseline import server_process
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import device_pb2, hotplug_pb2, rtas_pb2
from papr_emu_client import connect, new_work_area

LMB = 0x80000004


def rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per second, one at a time."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            call()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tcp", action="store_true", help="loopback TCP instead of a unix socket")
    options = parser.parse_args()

    with server_process(50777 if options.tcp else None) as served:
        target = served.target
        client = connect(target, timeout=30)
        health = health_pb2_grpc.HealthStub(client.channel)
        spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform="default", id="bench", spec=spec))
        rtas = client.rtas
        rtas.SetIndicator(rtas_pb2.SetIndicatorRequest(platform="default", indicator_type=9003,
                                                       indicator_index=LMB, new_state=1))  # fmt: skip
        rtas.SetIndicator(rtas_pb2.SetIndicatorRequest(platform="default", indicator_type=9001,
                                                       indicator_index=LMB, new_state=1))  # fmt: skip

        empty = health_pb2.HealthCheckRequest(service="")
        set_indicator = rtas_pb2.SetIndicatorRequest(
            platform="default", indicator_type=9001, indicator_index=LMB, new_state=1
        )  # a no-op unisolate on an unisolated/configured LMB: state stays put
        sense = rtas_pb2.GetSensorStateRequest(platform="default", sensor_type=9003, sensor_index=LMB)
        area = [new_work_area(LMB)]

        def baseline() -> None:
            health.Check(empty)

        step = [0]

        def mix() -> None:
            kind = step[0] % 3
            step[0] += 1
            if kind == 0:
                rtas.SetIndicator(set_indicator)
            elif kind == 1:
                rtas.GetSensorState(sense)
            else:
                reply = rtas.ConfigureConnector(
                    rtas_pb2.ConfigureConnectorRequest(platform="default", work_area=area[0])
                )
                area[0] = reply.work_area if reply.status not in (0,) else new_work_area(LMB)

        def configure() -> None:
            step[0] = 2  # ConfigureConnector only: 4 KiB in and out every call
            mix()

        rate(baseline, 1.0)  # warm up every path
        rate(mix, 1.0)
        rate(configure, 1.0)
        ratios, cc_ratios, base_rates, mix_rates = [], [], [], []
        for _ in range(options.rounds):
            b = rate(baseline, options.seconds)
            m = rate(mix, options.seconds)
            c = rate(configure, options.seconds)
            base_rates.append(b)
            mix_rates.append(m)
            ratios.append(b / m)  # cost per RTAS call relative to an empty call
            cc_ratios.append(b / c)
        print(f"transport: {'tcp' if options.tcp else 'unix socket'}; rounds: {options.rounds} x {options.seconds}s")
        print(f"empty call (health Check): median {statistics.median(base_rates):8.0f} calls/s")
        print(f"RTAS mix (1/3 each):       median {statistics.median(mix_rates):8.0f} calls/s")
        print(
            f"cost ratio RTAS / empty:   median {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.15"
        )
        print(
            f"ConfigureConnector / empty: median {statistics.median(cc_ratios):.3f} "
            f"(min {min(cc_ratios):.3f}, max {max(cc_ratios):.3f}); target <= 1.15"
        )
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
