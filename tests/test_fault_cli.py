"""``papr-emu fault add|list|clear`` and ``papr-emu conduct`` (issue 12) against a real server: rules
made from the command line fire on the reference guest's flows, the conduct table shows what a
sloppy call sequence did, ``--watch`` follows the stream until Ctrl-C, errors are one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import plug
from papr.v1 import device_pb2
from papr_emu import PaprServer
from papr_emu.cli import main
from papr_emu_client import Client, Guest
from papr_emu_client.workarea import new_work_area

PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]
ISO = 9001
CPU1 = 0x10000001
CORE1 = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=1))
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def run(capsys: pytest.CaptureFixture[str], server: PaprServer, *args: str) -> tuple[int, list[str], str]:
    code = main([*args, "--server", server.addresses[1]])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def columns(lines: list[str]) -> list[dict[str, str]]:
    """A table's rows as {header: cell}, cut where the header's columns start (cells may hold spaces)."""
    header = lines[0]
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    return [
        {name: line[start:end].strip() for name, start, end in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines[1:]
    ]


def drain(guest: Guest) -> None:
    """Fetch the queued hotplug logs with check-exception, as Linux's interrupt handler does."""
    while guest.check_exception(0xFFFFFFFF, 2048)[0] == 0:
        pass


def sloppy(client: Client, platform: str) -> None:
    """Two findings: unisolate without allocation (R1-13.5.3.4-5), configure-connector on a connector the
    guest has not unisolated (R1-13.5.4.2-2)."""
    plug(client, platform, "core1", CORE1)
    with Guest(client.rtas, platform) as guest:
        drain(guest)  # the plug's log: fetched, so that these two are the only findings
        assert guest.set_indicator(ISO, CPU1, 1) == -3
        assert guest.configure_step(new_work_area(CPU1))[0] == -9003


def test_add_list_and_clear(capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str) -> None:
    code, lines, _ = run(capsys, server, "fault", "add", "--platform", platform, "slow", "--effect", "extended-delay",
                         "--call", "configure-connector", "--drc-index", "0x80000004", "--drc-type", "lmb",
                         "--device-id", "dimm1", "--status", "9902", "--times", "3", "--probability", "0.5",
                         "--seed", "0x2a")  # fmt: skip
    assert code == 0 and lines == [
        "added slow: extended-delay (status 9902) on call=configure-connector drc_index=0x80000004 drc_type=lmb "
        "device_id=dimm1, 3 time(s) with probability 0.5 (seed 42)"
    ]
    code, lines, _ = run(capsys, server, "fault", "add", "refuse", "--effect", "refuse-hot-add", "--platform", platform)
    assert code == 0 and lines == ["added refuse: refuse-hot-add (status -9005) on any call, every time"]
    code, lines, _ = run(capsys, server, "fault", "list", "--platform", platform)
    assert code == 0 and lines[0].split() == [
        "NAME", "EFFECT", "CALL", "INDEX", "TYPE", "DEVICE", "STATUS", "TIMES", "PROBABILITY", "SEED", "MATCHED",
        "FIRED",
    ]  # fmt: skip
    assert [line.split() for line in lines[1:]] == [
        ["slow", "extended-delay", "configure-connector", "0x80000004", "lmb", "dimm1", "9902", "3", "0.5", "42", "0",
         "0"],
        ["refuse", "refuse-hot-add", "-", "-", "-", "-", "-9005", "-", "1", "0", "0", "0"],
    ]  # fmt: skip
    code, lines, _ = run(capsys, server, "-o", "json", "fault", "list", "--platform", platform)
    assert code == 0 and json.loads(lines[0]) == [
        {"name": "slow", "effect": "extended-delay", "call": "configure-connector", "drc_index": 0x80000004,
         "drc_type": "lmb", "device_id": "dimm1", "status": 9902, "times": 3, "probability": 0.5, "seed": 42,
         "matched": 0, "fired": 0},
        {"name": "refuse", "effect": "refuse-hot-add", "call": None, "drc_index": None, "drc_type": None,
         "device_id": None, "status": -9005, "times": 0, "probability": 1.0, "seed": 0, "matched": 0, "fired": 0},
    ]  # fmt: skip
    code, lines, _ = run(capsys, server, "fault", "clear", "slow", "--platform", platform)
    assert code == 0 and lines == ["removed 1 fault rule(s)"]
    code, lines, _ = run(capsys, server, "fault", "list", "--platform", platform)
    assert [line.split()[0] for line in lines[1:]] == ["refuse"]
    code, lines, _ = run(capsys, server, "-o", "json", "fault", "clear", "--platform", platform)
    assert code == 0 and json.loads(lines[0]) == {"removed": 1}
    code, lines, _ = run(capsys, server, "fault", "list", "--platform", platform)
    assert code == 0 and len(lines) == 1  # the header alone


def test_a_rule_fires_on_the_reference_guests_flow(
    capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str
) -> None:
    # busy on the first two configure-connector calls on LMBs: the guest calls again at once, as Linux does.
    assert run(capsys, server, "fault", "add", "busy", "--effect", "busy", "--call", "ibm,configure-connector",
               "--drc-type", "lmb", "--times", "2", "--platform", platform)[0] == 0  # fmt: skip
    assert run(capsys, server, "plug", "--platform", platform, "dimm", "--size", "512M", "--id", "mem")[0] == 0
    code, lines, _ = run(capsys, server, "guest", "--platform", platform, "--once")
    assert code == 0 and lines == ["resource 2 action 1: done 0x80000004..0x80000005 2 LMBs"]
    code, lines, _ = run(capsys, server, "-o", "json", "fault", "list", "--platform", platform)
    (rule,) = json.loads(lines[0])
    assert (rule["call"], rule["fired"]) == ("configure-connector", 2) and rule["matched"] > 2  # every step matched
    code, lines, _ = run(capsys, server, "-o", "json", "watch", "--platform", platform, "--after", "3", "--count", "2")
    fired = [json.loads(line) for line in lines]  # after the boot devices and the DIMM
    assert [(e["rule"], e["effect"], e["status"]) for e in fired] == [("busy", "FAULT_EFFECT_BUSY", -2)] * 2
    # A refused hot-add: the guest reports it, and the device stays plugged.
    assert run(capsys, server, "fault", "add", "no-cpus", "--effect", "refuse-hot-add", "--drc-type", "cpu",
               "--platform", platform)[0] == 0  # fmt: skip
    assert run(capsys, server, "plug", "--platform", platform, "cpu", "--core-id", "1", "--id", "c1")[0] == 0
    code, lines, _ = run(capsys, server, "guest", "--platform", platform, "--once")
    assert code == 0 and len(lines) == 1 and lines[0].startswith("resource 1 action 1: rejected 0x10000001"), lines
    assert "c1" in [line.split()[0] for line in run(capsys, server, "devices", "--platform", platform)[1][1:]]
    code, lines, _ = run(capsys, server, "conduct", "--platform", platform)
    assert code == 0 and lines[1:] == []  # the reference guest's flows make no findings, refused or not


def test_conduct_table_shows_a_sloppy_guests_findings(
    capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client, platform: str
) -> None:
    code, lines, _ = run(capsys, server, "conduct", "--platform", platform)
    assert code == 0 and lines == ["TIME  REQUIREMENT  KIND  CALL  INDEX  DETAIL  EXPLANATION"]
    sloppy(client, platform)
    code, lines, _ = run(capsys, server, "conduct", "--platform", platform)
    assert code == 0 and len(lines) == 3
    rows = columns(lines)
    assert all(TIME.fullmatch(row["TIME"]) for row in rows), rows
    assert [(r["REQUIREMENT"], r["KIND"], r["CALL"], r["INDEX"], r["DETAIL"]) for r in rows] == [
        ("R1-13.5.3.4-5", "UNISOLATE_UNALLOCATED", "set-indicator(9001, 0x10000001, 1)", "0x10000001",
         rows[0]["DETAIL"]),
        ("R1-13.5.4.2-2", "CONFIGURE_NOT_UNISOLATED", "ibm,configure-connector", "0x10000001",
         "connector LOGICAL_UNUSABLE"),
    ]  # fmt: skip
    assert rows[0]["EXPLANATION"].startswith("unisolated a logical connector without first setting its allocation")
    assert "set-indicator unisolate, then ibm,configure-connector" in rows[1]["EXPLANATION"]
    code, lines, _ = run(capsys, server, "-o", "json", "conduct", "--platform", platform)
    report = json.loads(lines[0])
    assert report["total"] == 2 and [f["kind"] for f in report["findings"]] == [
        "UNISOLATE_UNALLOCATED", "CONFIGURE_NOT_UNISOLATED",
    ]  # fmt: skip
    assert report["findings"][1] == {
        "time": report["findings"][1]["time"], "requirement": "R1-13.5.4.2-2", "kind": "CONFIGURE_NOT_UNISOLATED",
        "call": "ibm,configure-connector", "drc_index": CPU1, "detail": "connector LOGICAL_UNUSABLE",
        "explanation": rows[1]["EXPLANATION"],
    }  # fmt: skip
    assert TIME.fullmatch(report["findings"][1]["time"])


def test_conduct_watch_replays_then_stops_after_count(
    capsys: pytest.CaptureFixture[str], server: PaprServer, client: Client, platform: str
) -> None:
    sloppy(client, platform)
    code, lines, _ = run(capsys, server, "conduct", "--watch", "--count", "2", "--platform", platform)
    assert code == 0 and len(lines) == 2
    sequences = [int(line.split()[0].removeprefix("#")) for line in lines]
    assert lines[0].split()[2:5] == ["R1-13.5.3.4-5", "UNISOLATE_UNALLOCATED", "set-indicator(9001,"]
    assert lines[1].split()[2:6] == ["R1-13.5.4.2-2", "CONFIGURE_NOT_UNISOLATED", "ibm,configure-connector",
                                     "0x10000001"]  # fmt: skip
    code, lines, _ = run(capsys, server, "-o", "json", "conduct", "--watch", "--after", str(sequences[0]),
                         "--count", "1", "--platform", platform)  # fmt: skip
    assert code == 0 and [(e["sequence"], e["kind"]) for e in map(json.loads, lines)] == [
        (sequences[1], "CONFIGURE_NOT_UNISOLATED")
    ]


def test_conduct_watch_follows_until_ctrl_c(server: PaprServer, client: Client, platform: str) -> None:
    watcher = subprocess.Popen(
        [*PAPR_EMU, "conduct", "--watch", "--server", server.addresses[1], "--platform", platform],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        plug(client, platform, "core1", CORE1)
        with Guest(client.rtas, platform) as guest:
            drain(guest)
            guest.set_indicator(ISO, CPU1, 1)  # replayed if the watch subscribes after it, streamed if before
            assert watcher.stdout is not None
            assert "UNISOLATE_UNALLOCATED" in watcher.stdout.readline()
            guest.configure_step(new_work_area(CPU1))  # made while the watch is running: streamed
            assert "CONFIGURE_NOT_UNISOLATED" in watcher.stdout.readline()
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(15) == 0
        assert watcher.stderr is not None and watcher.stderr.read() == ""
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fault", "add", "x", "--effect", "extended-delay", "--status", "9906"],
         "papr-emu: INVALID_ARGUMENT: --status: 9906: an extended delay is 9900 to 9905"),
        (["fault", "add", "x", "--effect", "busy", "--status", "-1"],
         "papr-emu: INVALID_ARGUMENT: --status: -1: busy is always -2"),
        (["fault", "add", "x", "--effect", "busy", "--call", "event-scan"],
         "papr-emu: INVALID_ARGUMENT: --call: 'event-scan': LoPAR allows busy only on get-power-level"),
        (["fault", "add", "x", "--effect", "busy", "--probability", "1.5"],
         "papr-emu: INVALID_ARGUMENT: --probability: 1.5: must be more than 0 and at most 1"),
        (["fault", "add", "x y", "--effect", "busy"], "papr-emu: INVALID_ARGUMENT: NAME: 'x y': 1 to 64 letters"),
        (["fault", "add", "dup", "--effect", "busy"], "papr-emu: ALREADY_EXISTS: name: 'dup': a fault rule of this "
         "name exists"),
        (["fault", "clear", "dup", "nope"], "papr-emu: NOT_FOUND: names: 'nope': no such fault rule"),
        (["conduct", "--count", "1"], "papr-emu: --after and --count are for --watch"),
    ],
)  # fmt: skip
def test_refused_requests_are_one_line(
    capsys: pytest.CaptureFixture[str], server: PaprServer, platform: str, args: list[str], message: str
) -> None:
    assert run(capsys, server, "fault", "add", "dup", "--effect", "busy", "--platform", platform)[0] == 0
    code, lines, err = run(capsys, server, *args, "--platform", platform)
    assert (code, lines) == (1, []) and err.startswith(message) and err.count("\n") == 1, err
    # ... and changed nothing.
    code, lines, _ = run(capsys, server, "fault", "list", "--platform", platform)
    assert [line.split()[0] for line in lines[1:]] == ["dup"]


def test_unknown_platform_is_one_line(capsys: pytest.CaptureFixture[str], server: PaprServer) -> None:
    for args in (["fault", "list"], ["fault", "add", "x", "--effect", "busy"], ["fault", "clear"], ["conduct"],
                 ["conduct", "--watch"]):  # fmt: skip
        code, lines, err = run(capsys, server, *args, "--platform", "no-such")
        assert (code, lines, err) == (1, [], "papr-emu: NOT_FOUND: platform: 'no-such': no such platform\n"), args


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["fault", "add", "x", "--effect", "nope"], "argument --effect: invalid choice: 'nope'"),
        (["fault", "add", "x"], "the following arguments are required: --effect"),
        (["fault", "add", "--effect", "busy"], "the following arguments are required: NAME"),
        (["fault", "add", "x", "--effect", "busy", "--drc-index", "-1"], "--drc-index: '-1' is not a number from 0"),
        (["fault", "add", "x", "--effect", "busy", "--seed", str(1 << 64)], "--seed: '18446744073709551616' is not"),
        (["fault", "add", "x", "--effect", "busy", "--times", "x"], "--times: 'x' is not a number"),
        (["fault", "add", "x", "--effect", "busy", "--status", str(1 << 31)], "--status: '2147483648' is not a num"),
        (["fault", "add", "x", "--effect", "busy", "--probability", "half"], "--probability: invalid float value"),
        (["fault", "add", "x", "--effect", "busy", "--call", "rtas"], "argument --call: invalid choice: 'rtas'"),
        (["fault"], "the following arguments are required: {add,list,clear}"),
        (["conduct", "--after", "-1"], "--after: '-1' is not a number from 0"),
    ],
)
def test_bad_arguments_are_one_usage_line(args: list[str], words: str) -> None:
    done = subprocess.run([*PAPR_EMU, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.count("\n") == 1 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_help_shows_every_rule_field() -> None:
    done = subprocess.run([*PAPR_EMU, "fault", "add", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("NAME", "--effect", "--call", "--drc-index", "--drc-type", "--device-id", "--status", "--times",
                 "--probability", "--seed", "extended-delay", "refuse-hot-add", "configure-connector"):  # fmt: skip
        assert flag in done.stdout, flag
    listed = subprocess.run([*PAPR_EMU, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"^\s+fault\s", listed, re.M) and re.search(r"^\s+conduct\s", listed, re.M)


def completions(line: str, tmp_path: Path) -> list[str]:
    """What ``papr-emu`` offers for the cursor at the end of ``line`` (as tests/test_completion.py asks)."""
    out = tmp_path / "completions"
    env = os.environ | {
        "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line, "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }  # fmt: skip
    done = subprocess.run(PAPR_EMU, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return sorted(word.strip() for word in out.read_text().split("\n") if word.strip())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("papr-emu fau", ["fault"]),
        ("papr-emu fault ", ["add", "clear", "list"]),
        ("papr-emu fault add x --effect ext", ["extended-delay"]),
        ("papr-emu fault add x --effect busy --call get-", ["get-power-level", "get-sensor-state"]),
        ("papr-emu fault add x --effect busy --drc-t", ["--drc-type"]),
        ("papr-emu conduct --w", ["--watch"]),
    ],
)
def test_completion(line: str, expected: list[str], tmp_path: Path) -> None:
    pytest.importorskip("argcomplete", reason="the completion extra is not installed")
    assert [word for word in completions(line, tmp_path) if word not in ("-h", "--help")] == expected
