"""The soak of bench/soak.py, short (20,000 requests): valid, invalid and undecodable requests
with stream churn, against a server in its own process. No UNKNOWN or INTERNAL status, and the
server's RSS grows by under 20 MB after the warm-up (the first 10% of the requests)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REQUESTS = 20_000


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"papr_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


soak = load_bench("soak")


@pytest.fixture(scope="module")
def report() -> Any:
    report = soak.soak(requests=REQUESTS, seed=1, threads=4)
    if report.unexpected:  # not a failure (only UNKNOWN, INTERNAL and RSS are), but worth seeing
        warnings.warn(f"soak: unexpected outcomes:\n{report.table()}", stacklevel=1)
    return report


def test_no_unknown_or_internal_status(report: Any) -> None:
    assert report.codes["UNKNOWN"] == 0, report.table()
    assert report.codes["INTERNAL"] == 0, report.table()


def test_server_rss_growth_after_warm_up_is_under_20_mb(report: Any) -> None:
    assert report.rss_warm > 0 and report.rss_end > 0, report.table()
    assert report.rss_growth < soak.MAX_RSS_GROWTH, report.table()


def test_the_mix_ran_and_the_server_survived(report: Any) -> None:
    assert report.failures() == [], report.table()
    assert report.requests >= REQUESTS
    # valid calls, bad fields and undecodable bytes, unknown platforms, cancelled streams
    for code in ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED"):
        assert report.codes[code] > 0, (code, report.table())
    assert report.valid_unary > REQUESTS // 2 and report.p99_ms > 0
