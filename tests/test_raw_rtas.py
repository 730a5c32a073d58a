"""The raw RTAS ABI (RtasService.Call): tokens from /rtas, cells and buffers; identical to the typed RPCs."""

from __future__ import annotations

import struct

import grpc
import pytest

from conftest import new_platform
from helpers import plug, snapshot
from papr.v1 import device_pb2, hotplug_pb2, interrupt_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client, Guest, new_work_area
from papr_emu_client.fdt import read_dtb

WORK_AREA_ADDRESS = 0x1010000
LOG_ADDRESS = 0x1020000
EVENT_SCAN = 0x200F  # QEMU 7.2's token, as in /rtas
ALL_EVENTS, EPOW = 0xFFFFFFFF, 0x40000000
SCAN_BUFFER = bytes(range(256)) * 8  # 2048 bytes no call would write


class RawGuest:
    """A stub in the style of the kernel's rtas_call(): tokens looked up in /rtas."""

    def __init__(self, client: Client, platform: str) -> None:
        self.client, self.platform = client, platform
        rtas = read_dtb(client.device_tree(platform))
        self.tokens = {
            name: struct.unpack(">I", v)[0] for name, v in rtas.children["rtas"].properties.items() if len(v) == 4
        }

    def call(self, name: str, nret: int, *args: int, buffers: dict[int, bytes] | None = None) -> rtas_pb2.CallResponse:
        return self.client.rtas.Call(
            rtas_pb2.CallRequest(
                platform=self.platform,
                token=self.tokens[name],
                nargs=len(args),
                nret=nret,
                args=list(args),
                buffers=[rtas_pb2.GuestBuffer(address=a, data=d) for a, d in (buffers or {}).items()],
            )
        )


def scenario_typed(client: Client, platform: str) -> list[object]:
    guest = Guest(client.rtas, platform)
    out: list[object] = [guest.sense(0x80000004), guest.set_indicator(9003, 0x80000004, 1)]
    out.append(guest.set_indicator(9001, 0x80000004, 1))
    area = new_work_area(0x80000004)
    for _ in range(6):
        status, area = guest.configure_step(area)
        out.append((status, area))
    out.append(guest.set_indicator(9001, 0x80000004, 0))  # -1: not being unplugged
    power = client.rtas.GetPowerLevel(rtas_pb2.GetPowerLevelRequest(platform=platform, power_domain=-1))
    out.append((power.status, power.level))
    check = client.rtas.CheckException(
        rtas_pb2.CheckExceptionRequest(
            platform=platform, vector_offset=0x500, event_mask=0xFFFFFFFF, buffer_length=2048
        )
    )
    out.append((check.status, check.buffer[:0x20] + check.buffer[0x28:]))  # without the creation time
    out.append(client.rtas.EventScan(rtas_pb2.EventScanRequest(platform=platform, event_mask=0xFFFFFFFF)).status)
    return out


def scenario_raw(client: Client, platform: str) -> list[object]:
    raw = RawGuest(client, platform)
    sense = raw.call("get-sensor-state", 2, 9003, 0x80000004).rets
    out: list[object] = [tuple(sense), raw.call("set-indicator", 1, 9003, 0x80000004, 1).rets[0]]
    out.append(raw.call("set-indicator", 1, 9001, 0x80000004, 1).rets[0])
    area = new_work_area(0x80000004)
    for _ in range(6):
        reply = raw.call("ibm,configure-connector", 1, WORK_AREA_ADDRESS, 0, buffers={WORK_AREA_ADDRESS: area})
        [buffer] = reply.buffers
        assert buffer.address == WORK_AREA_ADDRESS
        area = buffer.data
        out.append((reply.rets[0], area))
    out.append(raw.call("set-indicator", 1, 9001, 0x80000004, 0).rets[0])
    out.append(tuple(raw.call("get-power-level", 2, 0xFFFFFFFF).rets))
    log = bytes(2048)
    reply = raw.call("check-exception", 1, 0x500, 0, 0xFFFFFFFF, 0, LOG_ADDRESS, 2048, buffers={LOG_ADDRESS: log})
    written = reply.buffers[0].data
    out.append((reply.rets[0], written[:0x20] + written[0x28:116]))
    assert written[116:] == bytes(2048 - 116)  # the rest of the guest's buffer is untouched
    out.append(raw.call("event-scan", 1, 0xFFFFFFFF, 0, LOG_ADDRESS, 2048).rets[0])
    return out


def test_raw_and_typed_give_identical_results(client: Client) -> None:
    results = []
    for scenario in (scenario_typed, scenario_raw):
        name = new_platform(client)
        spec = device_pb2.DeviceSpec(dimm=device_pb2.DimmSpec(size_bytes=256 << 20))
        client.hotplug.PlugDevice(hotplug_pb2.PlugDeviceRequest(platform=name, id="dimm", spec=spec))
        results.append(scenario(client, name))
        results.append(snapshot(client, name)[:-1])  # connector states (device listing aside)
    typed, typed_state, raw, raw_state = results
    assert typed == raw
    assert typed_state == raw_state
    assert next(r for r in typed if isinstance(r, tuple)) == (0, 2)


def test_unknown_tokens_and_wrong_cell_counts_give_minus_3(client: Client, platform: str) -> None:
    raw = RawGuest(client, platform)
    before = snapshot(client, platform)

    def call(token: int, nargs: int, nret: int) -> list[int]:
        return list(
            client.rtas.Call(
                rtas_pb2.CallRequest(platform=platform, token=token, nargs=nargs, nret=nret, args=[0x10000000] * nargs)
            ).rets
        )

    assert call(0x2100, 1, 1) == [-3]  # no such token
    assert call(raw.tokens["display-character"], 1, 1) == [-3]  # a QEMU call papr-emu does not implement
    assert call(raw.tokens["set-indicator"], 2, 1) == [-3]
    assert call(raw.tokens["set-indicator"], 3, 2) == [-3, 0]
    assert call(raw.tokens["get-sensor-state"], 2, 1) == [-3]
    assert call(raw.tokens["check-exception"], 5, 1) == [-3]
    assert call(raw.tokens["event-scan"], 3, 1) == [-3]
    assert call(raw.tokens["set-indicator"], 3, 0) == []
    assert snapshot(client, platform) == before
    # check-exception also takes 7 arguments (extended information).
    log = bytes(64)
    reply = raw.call("check-exception", 1, 0x500, 0, 0xFFFFFFFF, 0, LOG_ADDRESS, 64, 0, buffers={LOG_ADDRESS: log})
    assert reply.rets == [1] and reply.buffers[0].data == log


@pytest.mark.parametrize(
    ("label", "args", "buffers", "field"),
    [
        ("work area missing", (WORK_AREA_ADDRESS, 0), {}, "buffers"),
        ("work area short", (WORK_AREA_ADDRESS, 0), {WORK_AREA_ADDRESS: new_work_area(0x10000000)[:4095]}, "4096"),
        ("wrong address", (WORK_AREA_ADDRESS, 0), {0x2000: new_work_area(0x10000000)}, "buffers"),
        (
            "extra buffer",
            (WORK_AREA_ADDRESS, 0),
            {WORK_AREA_ADDRESS: new_work_area(0x10000000), 0x5000: b"x"},
            "does not use",
        ),
    ],
)
def test_buffers_must_match_the_call(
    client: Client, platform: str, label: str, args: tuple[int, ...], buffers: dict[int, bytes], field: str
) -> None:
    raw = RawGuest(client, platform)
    before = snapshot(client, platform)
    with pytest.raises(grpc.RpcError) as refused:
        raw.call("ibm,configure-connector", 1, *args, buffers=buffers)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()
    assert snapshot(client, platform) == before


def test_malformed_calls(client: Client, platform: str) -> None:
    for request, field in (
        (rtas_pb2.CallRequest(platform=platform, token=0x201A, nargs=3, nret=1, args=[1, 2]), "nargs is 3"),
        (rtas_pb2.CallRequest(platform=platform, token=0x201A, nargs=3, nret=300, args=[1, 2, 3]), "nret"),
        (
            rtas_pb2.CallRequest(
                platform=platform,
                token=0x200E,
                nargs=6,
                nret=1,
                args=[0, 0, 0, 0, 0x10, 8],
                buffers=[rtas_pb2.GuestBuffer(address=0x10, data=bytes(4))],
            ),
            "exactly 8 bytes",
        ),
        (
            rtas_pb2.CallRequest(
                platform=platform,
                token=0x201E,
                nargs=2,
                nret=1,
                args=[0, 0],
                buffers=[rtas_pb2.GuestBuffer(address=0, data=bytes(4096))] * 2,
            ),
            "given twice",
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            client.rtas.Call(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in refused.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        client.rtas.Call(rtas_pb2.CallRequest(platform="nope", token=0x201A, nargs=0, nret=1))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# event-scan's buffer: its args are event mask, critical, buffer address (args[2]), buffer length (args[3]).


def raw_event_scan(buffer: bytes | None = None, length: int = len(SCAN_BUFFER)) -> rtas_pb2.CallRequest:
    """event-scan as the kernel's rtas_call() makes it, with or without its buffer."""
    given = [] if buffer is None else [rtas_pb2.GuestBuffer(address=LOG_ADDRESS, data=buffer)]
    return rtas_pb2.CallRequest(
        token=EVENT_SCAN, nargs=4, nret=1, args=[ALL_EVENTS, 0, LOG_ADDRESS, length], buffers=given
    )


def pending(client: Client, platform: str) -> int:
    return client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform)).platform.pending_rtas_events


def with_a_log_queued(client: Client, platform: str) -> None:
    plug(client, platform, "core", device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1)))
    assert pending(client, platform) == 1


def test_event_scan_takes_its_buffer_and_leaves_it_unchanged(client: Client, platform: str) -> None:
    with_a_log_queued(client, platform)
    interrupts = client.interrupts.WatchInterrupts(interrupt_pb2.WatchInterruptsRequest(platform=platform), timeout=30)
    assert next(interrupts).event_class == EPOW  # the log's own pulse (pre-CAS: the EPOW source)
    before = snapshot(client, platform)
    typed = client.rtas.EventScan(rtas_pb2.EventScanRequest(platform=platform, event_mask=ALL_EVENTS))
    assert typed.status == 1
    assert next(interrupts).event_class == EPOW
    for request in (raw_event_scan(SCAN_BUFFER), raw_event_scan(), raw_event_scan(b"", length=0)):
        request.platform = platform
        reply = client.rtas.Call(request)
        assert list(reply.rets) == [1]  # no log, as in QEMU
        assert list(reply.buffers) == list(request.buffers)  # the buffer comes back unchanged (or none)
        assert next(interrupts).event_class == EPOW  # re-pulsed: a log of that class is still queued
    interrupts.cancel()
    assert snapshot(client, platform) == before and pending(client, platform) == 1  # the log is still there


@pytest.mark.parametrize(
    ("label", "buffers", "details"),
    [
        ("short", {LOG_ADDRESS: SCAN_BUFFER[:-1]}, f"buffers[{LOG_ADDRESS:#x}].data"),
        ("long", {LOG_ADDRESS: SCAN_BUFFER + b"x"}, "event-scan's buffer (args[2], length args[3])"),
        ("elsewhere", {0x5000: SCAN_BUFFER}, "event-scan does not use a buffer there"),
        ("one too many", {LOG_ADDRESS: SCAN_BUFFER, 0x5000: b"x"}, "0x5000"),
    ],
)
def test_event_scan_buffer_must_be_the_one_its_args_name(
    client: Client, platform: str, label: str, buffers: dict[int, bytes], details: str
) -> None:
    with_a_log_queued(client, platform)
    before = snapshot(client, platform)
    with pytest.raises(grpc.RpcError) as refused:
        RawGuest(client, platform).call("event-scan", 1, ALL_EVENTS, 0, LOG_ADDRESS, 2048, buffers=buffers)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details in refused.value.details()
    assert snapshot(client, platform) == before and pending(client, platform) == 1


def test_event_scan_buffer_in_batches(client: Client, platform: str) -> None:
    with_a_log_queued(client, platform)
    check = rtas_pb2.CallRequest(
        token=0x200E, nargs=6, nret=1, args=[0x500, 0, ALL_EVENTS, 0, WORK_AREA_ADDRESS, 128],
        buffers=[rtas_pb2.GuestBuffer(address=WORK_AREA_ADDRESS, data=bytes(128))],
    )  # fmt: skip
    calls = [
        rtas_pb2.RtasCall(raw=raw_event_scan(SCAN_BUFFER)),
        rtas_pb2.RtasCall(raw=raw_event_scan()),
        rtas_pb2.RtasCall(event_scan=rtas_pb2.EventScanRequest(event_mask=ALL_EVENTS, buffer_length=2048)),
        rtas_pb2.RtasCall(raw=check),
        rtas_pb2.RtasCall(raw=raw_event_scan(SCAN_BUFFER)),
    ]
    # A wrong-length buffer anywhere refuses the whole batch, naming the call, before anything runs.
    bad = rtas_pb2.RtasCall(raw=raw_event_scan(SCAN_BUFFER[:100]))
    with pytest.raises(grpc.RpcError) as refused:
        client.rtas.ExecuteBatch(rtas_pb2.ExecuteBatchRequest(platform=platform, calls=[*calls, bad]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"calls[5].raw.buffers[{LOG_ADDRESS:#x}].data" in refused.value.details()
    assert pending(client, platform) == 1  # the check-exception of calls[3] did not run

    results = client.rtas.ExecuteBatch(rtas_pb2.ExecuteBatchRequest(platform=platform, calls=calls)).results
    assert [r.WhichOneof("result") for r in results] == ["raw", "raw", "event_scan", "raw", "raw"]
    assert [list(r.raw.rets) for r in results if r.HasField("raw")] == [[1], [1], [0], [1]]
    assert results[2].event_scan.status == 1
    for n in (0, 4):
        assert list(results[n].raw.buffers) == [rtas_pb2.GuestBuffer(address=LOG_ADDRESS, data=SCAN_BUFFER)]
    assert list(results[1].raw.buffers) == []
    assert results[3].raw.buffers[0].data[:4] == b"\x06\x34\x60\xe5"  # the log went to check-exception
    assert pending(client, platform) == 0

    # The same call in a session.
    session = client.rtas.Session(iter([rtas_pb2.SessionRequest(platform=platform, calls=calls[:1])]), timeout=30)
    [response] = list(session)
    assert list(response.results[0].raw.rets) == [1]
    assert response.results[0].raw.buffers[0].data == SCAN_BUFFER
