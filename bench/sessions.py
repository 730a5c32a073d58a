"""Benchmark: RTAS calls over a Session and in batches, against an empty session message, in one run.

The server runs in its own process; this process is the client. The baseline is
an empty bidirectional ping-pong on the same server and stream: a SessionRequest
with no calls, answered by an empty SessionResponse (it takes the whole path a
call takes, the interceptor and the session loop included, and runs nothing).
Measured, rounds alternating so drift hits all alike:

- one GetSensorState per session message, as a rate ÷ the empty ping-pong rate (target ≥ 0.9);
- batches of ``--batch`` calls (get-sensor-state and set-indicator on the LMBs of a
  DIMM, alternately) per session message and per ExecuteBatch: RTAS calls per
  second end to end (target ≥ 100,000).

    python bench/sessions.py [--seconds 2] [--rounds 5] [--batch 2000]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator

from baseline import server_process

from papr.v1 import device_pb2, hotplug_pb2, rtas_pb2
from papr_emu_client import Client, connect

PLATFORM = "default"
FIRST_LMB = 0x80000004
DIMM_LMBS = 8  # the default platform's 2 GiB DIMM slot room: LMBs 0x80000004..0x8000000b


class SessionPipe:
    """One open Session: send a request, wait for its response (one at a time, like a guest's calls)."""

    def __init__(self, client: Client) -> None:
        self._requests: queue.SimpleQueue[rtas_pb2.SessionRequest | None] = queue.SimpleQueue()
        self._responses = client.rtas.Session(self._feed())
        self._first = True

    def _feed(self) -> Iterator[rtas_pb2.SessionRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def call(self, calls: list[rtas_pb2.RtasCall]) -> rtas_pb2.SessionResponse:
        self._requests.put(rtas_pb2.SessionRequest(platform=PLATFORM if self._first else "", calls=calls))
        self._first = False
        return next(self._responses)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._requests.put(None)


def rate(action: Callable[[], int], seconds: float) -> float:
    """Units per second: ``action`` returns how many units it did."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            count += action()
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def batch_calls(size: int) -> list[rtas_pb2.RtasCall]:
    """``size`` calls on the DIMM's LMBs: get-sensor-state and set-indicator(allocation usable), alternately.

    After the first batch made them usable, every batch does the same work (the
    same statuses every time).
    """
    calls = []
    for n in range(size):
        index = FIRST_LMB + (n // 2) % DIMM_LMBS
        if n % 2:
            calls.append(
                rtas_pb2.RtasCall(
                    set_indicator=rtas_pb2.SetIndicatorRequest(indicator_type=9003, indicator_index=index, new_state=1)
                )
            )
        else:
            calls.append(
                rtas_pb2.RtasCall(get_sensor_state=rtas_pb2.GetSensorStateRequest(sensor_type=9003, sensor_index=index))
            )
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000, help="calls per batch")
    options = parser.parse_args()

    with server_process() as served:
        target = served.target
        client = connect(target, timeout=30)
        spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=DIMM_LMBS << 28))
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=PLATFORM, id="dimm0", spec=spec))
        pipe = SessionPipe(client)
        one = [rtas_pb2.RtasCall(get_sensor_state=rtas_pb2.GetSensorStateRequest(sensor_type=9003,
                                                                                  sensor_index=FIRST_LMB))]  # fmt: skip
        many = batch_calls(options.batch)
        assert pipe.call(one).results[0].get_sensor_state.status == 0
        assert all(r.WhichOneof("result") for r in pipe.call(many).results)

        def empty() -> int:
            pipe.call([])
            return 1

        def single() -> int:
            pipe.call(one)
            return 1

        def session_batch() -> int:
            return len(pipe.call(many).results)

        def unary_batch() -> int:
            reply = client.rtas.ExecuteBatch(rtas_pb2.ExecuteBatchRequest(platform=PLATFORM, calls=many))
            return len(reply.results)

        ratios, session_rates, unary_rates = [], [], []
        for _ in range(options.rounds):
            base = rate(empty, options.seconds)
            call = rate(single, options.seconds)
            session_rates.append(rate(session_batch, options.seconds))
            unary_rates.append(rate(unary_batch, options.seconds))
            ratios.append(call / base)
            print(
                f"  round: empty {base:8.0f}/s  one call {call:8.0f}/s  ratio {call / base:.3f}  batched "
                f"{session_rates[-1]:9.0f} calls/s (session)  {unary_rates[-1]:9.0f} (ExecuteBatch)"
            )
        pipe.close()
        client.close()
    print(
        f"one RTAS call per session message / empty ping-pong: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}); target >= 0.9"
    )
    print(
        f"batched RTAS calls, {options.batch} per message: median {statistics.median(session_rates):,.0f}/s "
        f"over a session, {statistics.median(unary_rates):,.0f}/s with ExecuteBatch; target >= 100,000/s"
    )
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda args: None  # the feeder thread ends with the server; nothing to report
    sys.exit(main())
