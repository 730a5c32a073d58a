"""The raw RTAS ABI (RtasService.Call): tokens from /rtas, cells and buffers; identical to the typed RPCs."""

from __future__ import annotations

import struct

import grpc
import pytest

from conftest import new_platform
from helpers import snapshot
from papr.v1 import device_pb2, hotplug_pb2, rtas_pb2
from papr_emu_client import Client, Guest, new_work_area
from papr_emu_client.fdt import read_dtb

WORK_AREA_ADDRESS = 0x1010000
LOG_ADDRESS = 0x1020000


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
