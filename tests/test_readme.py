"""The README's Python example runs as written against a real server, and its command-line block after it."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from conftest import new_platform
from papr_emu import PaprServer
from papr_emu.cli import main
from papr_emu_client import Client

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def run_python_example(platform: str) -> list[str]:
    """The "Hot-adding a DIMM from Python" example on ``platform`` (for "default"); what it printed."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = next(b for b in blocks if "Hot-adding" in README.split(b)[0].rsplit("## ", 1)[-1])
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(example.replace('"default"', repr(platform)), "README.md", "exec"), {})
    return output.getvalue().splitlines()


def test_readme_dimm_example(client: Client, server: PaprServer, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = new_platform(client)
    monkeypatch.setenv("PAPR_EMU_HOST", server.addresses[1])  # the unix socket
    assert run_python_example(platform) == [
        "['0x8000000e', '0x8000000f']",
        "2 1 2",
        "memory@e0000000 00000000e00000000000000010000000",
        "memory@f0000000 00000000f00000000000000010000000",
    ]


def test_readme_command_line_after_the_python_example(
    client: Client, server: PaprServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A reader who runs the Python example, then the "Command line" block, on a fresh server: the
    # block's plug, guest and unplug lines do what their comments say, undisturbed by the example's
    # DIMM or its event log (the example's guest fetched that).
    platform = new_platform(client)
    monkeypatch.setenv("PAPR_EMU_HOST", server.addresses[1])
    run_python_example(platform)
    capsys.readouterr()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "papr-emu plug dimm" in b)
    outputs = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["papr-emu"] and words[1] in ("platforms", "connectors", "plug", "guest", "unplug"):
            assert main(["--server", server.addresses[1], "--platform", platform, *words[1:]]) == 0, line
            outputs.append(capsys.readouterr().out.splitlines())
    plug, handled, unplug, refused = (o for o in outputs if o and o[0].startswith(("plugged", "resource", "dimm1")))
    assert plug == ["plugged dimm1 (dimm) on 4 connector(s) from 0x80000004"]
    assert handled == ["resource 2 action 1: done 0x80000004..0x80000007 4 LMBs"]
    assert unplug == ["dimm1: unplug requested, waiting for the guest"]
    assert refused == ["resource 2 action 2: refused 0x80000004 LMB 0x80000005 cannot be offlined"]
