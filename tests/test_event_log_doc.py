"""docs/event-logs.md cannot rot: its worked examples and layout tables are the model's bytes.

The hex dumps under ``<!-- hexdump: NAME -->`` are parsed (offset, bytes) and compared with
what check-exception returns for the requests the page describes, on a platform whose clock
reads the page's date; the rows of the byte-by-byte tables must tile the 116-byte log, and
their fixed values (a leading `0x...` in the "papr-emu writes" column) must be its bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from papr_emu.model import Platform, default_geometry
from papr_emu.model.devices import CpuCoreParams, DimmRequest
from papr_emu.model.rtas_events import Interrupt
from papr_emu.model.rtas_log import EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG, IRQ_EPOW, IRQ_HOTPLUG, LOG_SIZE
from papr_emu_client import parse_hotplug_event

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "event-logs.md").read_text()
QEMU_CAPTURE = json.loads((ROOT / "docs" / "qemu-7.2" / "fragments.json").read_text())
WHEN = datetime(2026, 11, 25, 13, 55, 18, tzinfo=UTC).timestamp()  # the examples' clock
ALL = 0xFFFFFFFF
OV5_HOTPLUG_EVENTS = "06 00 00 00 00 00 04 00"  # the page's CAS vector: byte 6, bit 0x04
DUMP_LINE = re.compile(r"0x([0-9a-f]{4})  ((?:[0-9a-f]{2} )*[0-9a-f]{2})(?: {2,}\S.*)?")


@dataclass(frozen=True)
class Logs:
    cpu: bytes  # CPU core 1 hot-add before CAS
    dimm_after_cas: bytes  # 512 MiB DIMM hot-add after a CAS with the hot-plug event source
    dimm_before_cas: bytes  # the same DIMM hot-add on a platform that did not call CAS


@pytest.fixture(scope="module")
def logs() -> Logs:
    """The requests of the page's worked example, through the model."""
    platform = Platform("default", default_geometry(), clock=lambda: WHEN)
    interrupts = platform.watch_interrupts()
    try:
        platform.plug("", CpuCoreParams(1))
        assert interrupts.next(timeout=0) == Interrupt(IRQ_EPOW, EVENT_CLASS_EPOW)  # before CAS: the EPOW source
        assert platform.check_exception(EVENT_CLASS_HOTPLUG, 2048) == (1, b"")
        status, cpu = platform.check_exception(ALL, 2048)
        assert status == 0
        platform.client_architecture_support(bytes.fromhex(OV5_HOTPLUG_EVENTS))
        platform.plug("", DimmRequest(512 << 20))
        assert interrupts.next(timeout=0) == Interrupt(IRQ_HOTPLUG, EVENT_CLASS_HOTPLUG)
        assert platform.check_exception(EVENT_CLASS_EPOW, 2048) == (1, b"")
        status, dimm_after_cas = platform.check_exception(EVENT_CLASS_HOTPLUG, 2048)
        assert status == 0
    finally:
        platform.unwatch_interrupts(interrupts)
    before = Platform("before-cas", default_geometry(), clock=lambda: WHEN)
    before.plug("", DimmRequest(512 << 20))
    status, dimm_before_cas = before.check_exception(EVENT_CLASS_EPOW, 2048)
    assert status == 0
    return Logs(cpu, dimm_after_cas, dimm_before_cas)


def hexdump(name: str) -> list[tuple[int, bytes]]:
    """The (offset, bytes) lines of the page's hex dump ``name``; every line must parse."""
    found = re.search(rf"<!-- hexdump: {re.escape(name)} -->\n```text\n(.*?)```", DOC, re.S)
    assert found, f"no hex dump {name!r} in docs/event-logs.md"
    header, *lines = found.group(1).splitlines()
    assert header.split() == ["offset", "bytes", "field"]
    parsed = []
    for line in lines:
        match = DUMP_LINE.fullmatch(line)
        assert match, f"hex dump {name!r}: cannot parse {line!r}"
        parsed.append((int(match.group(1), 16), bytes.fromhex(match.group(2))))
    return parsed


def section(title: str) -> str:
    """The text of the page's ``## title`` section, up to the next ``## `` heading."""
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def test_cpu_example_is_the_models_log(logs: Logs) -> None:
    lines = hexdump("cpu-hot-add")
    offset = 0
    for at, data in lines:
        assert at == offset, f"hex dump line at {at:#06x}: the bytes before it end at {offset:#06x}"
        offset += len(data)
    assert offset == LOG_SIZE
    assert b"".join(data for _, data in lines) == logs.cpu


def test_cpu_example_is_what_qemu_wrote(logs: Logs) -> None:
    [captured, none_left] = QEMU_CAPTURE["devices"]["cpu_core1"]["logs_device_add"]
    assert none_left == {"rc": 1}
    assert logs.cpu.hex() == captured["hex"]  # same time, and PLID 0 reads the same either way round


def test_dimm_example_is_the_models_log(logs: Logs) -> None:
    changed = bytearray(logs.cpu)
    for at, data in hexdump("dimm-hot-add-after-cas"):
        assert logs.dimm_after_cas[at : at + len(data)] == data, f"hex dump line at {at:#06x}"
        changed[at : at + len(data)] = data
    assert bytes(changed) == logs.dimm_after_cas  # "differs from the one above only in these bytes"


def test_dimm_before_cas_sentence(logs: Logs) -> None:
    assert "identifier 3 (count) with\n`00 00 00 02 00 00 00 00` at 0x6C" in DOC
    assert logs.dimm_before_cas[0x68:0x6C] == bytes([2, 1, 3, 0])
    assert logs.dimm_before_cas[0x6C:0x74] == bytes.fromhex("00 00 00 02 00 00 00 00")
    assert f"option vector 5\n`{OV5_HOTPLUG_EVENTS}`" in DOC


def test_examples_decode(logs: Logs) -> None:
    cpu, dimm = parse_hotplug_event(logs.cpu), parse_hotplug_event(logs.dimm_after_cas)
    assert (cpu.resource, cpu.action, cpu.id_type, cpu.index) == (1, 1, 2, 0x10000001)
    assert (dimm.resource, dimm.action, dimm.id_type, hex(dimm.index), dimm.count) == (2, 1, 4, "0x80000004", 2)
    assert "# (2, 1, 4, '0x80000004', 2)" in DOC


def test_layout_tables_tile_the_log_and_say_its_bytes(logs: Logs) -> None:
    rows = []
    for line in section("The log, byte by byte").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        offset = re.match(r"0x([0-9A-F]{2})(?: \(\+0x[0-9A-F]{2}\))?$", cells[0])
        if offset is None or not cells[1].isdigit():
            continue
        at, size = int(offset.group(1), 16), int(cells[1])
        rows.append((at, size))
        fixed = re.match(r"`0x([0-9A-F]+)`", cells[3])
        if fixed:
            assert int(fixed.group(1), 16) == int.from_bytes(logs.cpu[at : at + size]), f"row at {at:#04x}"
    rows.sort()
    end = 0
    for at, size in rows:
        assert at == end, f"layout row at {at:#04x}: the rows before it end at {end:#04x}"
        end += size
    assert end == LOG_SIZE
    assert len(rows) > 40  # every field has its row


def test_section_offsets_are_relative_to_their_section() -> None:
    starts = {"PH": 0x18, "UH": 0x48, "HP": 0x60}
    checked = 0
    for heading, body in re.findall(r'\n### [^\n]*"(PH|UH|HP)"[^\n]*\n(.*?)(?=\n### |\n## )', DOC, re.S):
        for at, relative in re.findall(r"^\| 0x([0-9A-F]{2}) \(\+0x([0-9A-F]{2})\)", body, re.M):
            assert int(at, 16) - starts[heading] == int(relative, 16), f"{heading} row at 0x{at}"
            checked += 1
    assert checked == 15 + 13 + 11
