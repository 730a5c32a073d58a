"""What papr-emu's command lines share: one-line usage errors, and seconds as they take them.

:class:`OneLineParser` is the parser of ``papr-emu`` (and so of its commands) and of
``papr-emu conformance``: a mistake is one line and exit status 2.

Seconds (``serve --grace``, ``unplug --timeout``, ``health --timeout``): ``float()`` alone takes
``nan``, ``inf`` and negative numbers, which then wait forever or not at all without a word;
:func:`parse_seconds` refuses them.

Example::

    >>> parse_seconds("2.5"), parse_seconds("0")
    (2.5, 0.0)
    >>> parse_seconds("nan")
    Traceback (most recent call last):
    ...
    ValueError: 'nan' is not a number of seconds (0 or more)
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (``papr-emu serve: error: ...``), not after the usage.

    The usage of ``serve`` is a dozen lines; a script's log then shows the mistake, and a person
    finds the usage with ``--help``. Exit status 2, as argparse's.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_seconds(text: str) -> float:
    """A finite, non-negative number of seconds; ValueError saying why not."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{text!r} is not a number of seconds (0 or more)")
    return seconds


def seconds_argument(text: str) -> float:
    """:func:`parse_seconds` as an argparse type (its error is argparse's one-line usage error)."""
    try:
        return parse_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
