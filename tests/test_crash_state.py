"""The crash test, short (tests/crash_state.py; 50 rounds by hand): kill -9 under load loses nothing acknowledged."""

from __future__ import annotations

from pathlib import Path

import crash_state
import pytest


@pytest.mark.timeout(300)
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crash_state.run(rounds=5, seed=20261202, directory=tmp_path) == 0, capsys.readouterr().out
    assert "5 of 5 rounds lost nothing acknowledged" in capsys.readouterr().out
