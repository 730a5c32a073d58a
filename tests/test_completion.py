"""Shell completion (argcomplete, the completion extra): papr-emu completes its commands, options
and choices through argcomplete's protocol, as the shell's completion function runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("argcomplete", reason="the completion extra is not installed")


def completions(line: str, tmp_path: Path) -> list[str]:
    """What ``papr-emu`` offers for the cursor at the end of ``line`` (argcomplete's environment protocol)."""
    out = tmp_path / "completions"
    env = os.environ | {
        "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line, "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "papr_emu.cli"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return sorted(word.strip() for word in out.read_text().split("\n") if word.strip())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("papr-emu con", ["conduct", "conformance", "connectors"]),  # client commands and an entry-point one
        ("papr-emu serve --max-w", ["--max-workers"]),
        ("papr-emu connectors --type ", ["cpu", "lmb", "pci", "phb", "pmem"]),
        ("papr-emu -o j", ["json"]),
    ],
)
def test_completes_commands_options_and_choices(line: str, expected: list[str], tmp_path: Path) -> None:
    assert completions(line, tmp_path) == expected


def test_completes_device_kinds_after_plug(tmp_path: Path) -> None:
    offered = completions("papr-emu plug ", tmp_path)
    assert [word for word in offered if not word.startswith("-")] == ["cpu", "dimm", "nvdimm", "pci", "phb"]
    assert "--platform" in offered


def test_marker_for_global_completion() -> None:
    # argcomplete's global completion runs only scripts whose module says so near its top.
    import papr_emu.cli

    assert "PYTHON_ARGCOMPLETE_OK" in Path(papr_emu.cli.__file__).read_text()[:1024]
