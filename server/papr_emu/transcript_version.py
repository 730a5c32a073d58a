"""The installed distribution's version, for transcripts' headers (and ``--version``), without importing the CLI."""

from __future__ import annotations

DISTRIBUTION = "papr-emu"


def distribution_version() -> str:
    """The installed distribution's version; "unknown" from a checkout that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
