"""The README's Python example runs as written against a real server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from conftest import new_platform
from papr_emu_client import Client

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_dimm_example(client: Client, server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = next(b for b in blocks if "Hot-adding" in README.split(b)[0].rsplit("## ", 1)[-1])
    platform = new_platform(client)
    code = example.replace('"default"', repr(platform))
    monkeypatch.setenv("PAPR_EMU_HOST", server.addresses[1])  # the unix socket
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "README.md", "exec"), {})
    lines = output.getvalue().splitlines()
    assert lines == [
        "['0x80000004', '0x80000005']",
        "memory@40000000 00000000400000000000000010000000",
        "memory@50000000 00000000500000000000000010000000",
    ]
