"""Structured logging: one event per line, JSON or console, via structlog.

Example::

    >>> configure_logging("json", "warning")
    >>> structlog.get_logger("papr_emu").bind(platform="default").info("hidden")  # below warning
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
LOG_LEVELS = ("debug", "info", "warning", "error")


HEX_KEYS = frozenset({"drc_index", "mask"})


def hex_fields(logger: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Show DRC indexes and masks in hex; callers pass ints, formatted only if the event is emitted."""
    for key in HEX_KEYS & event.keys():
        value = event[key]
        if isinstance(value, int) and not isinstance(value, bool):
            event[key] = f"{value:#x}"
    return event


def configure_logging(log_format: LogFormat = "console", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog process-wide; debug-level calls cost almost nothing above debug."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            hex_fields,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
