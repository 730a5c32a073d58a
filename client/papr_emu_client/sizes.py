"""Sizes as QEMU reads them (``-m 1G``, ``size=512M``): one parser for every place papr-emu takes one.

The server's TOML config, the ``papr-emu`` command line and the conformance scenarios all
call :func:`parse_size`, so a size written for one is good for the others. Accepted: a
non-negative int, or digits, optional whitespace, and an optional case-insensitive
binary suffix K, M, G, T, P or E, itself optionally followed by ``B`` or ``iB``
(``512M``, ``1 G``, ``4GiB``, ``2tb``); a bare ``B`` means bytes. As in QEMU, the digits
may have a decimal fraction when a suffix K to E follows (``1.5G``); unlike QEMU, which
truncates, a fraction that is not a whole number of bytes is refused (``1.3G``), as is a
fraction of bytes alone (``1.5``). At most 2**64 - 1, as QEMU's sizes are 64-bit.

Example::

    >>> parse_size("1G"), parse_size("512 MiB"), parse_size(4096), parse_size("1p"), parse_size("1.5G")
    (1073741824, 536870912, 4096, 1125899906842624, 1610612736)
    >>> parse_size("1.3G")
    Traceback (most recent call last):
    ...
    ValueError: '1.3G' is not a size: not a whole number of bytes
"""

from __future__ import annotations

import re
from typing import Final

MAX_SIZE: Final = (1 << 64) - 1
_SHIFTS: Final = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
# [0-9], not \d: int() would take other scripts' digits too.
_SIZE: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?\s*(?:([KMGTPE])(?:i?B)?|B)?", re.IGNORECASE)


def parse_size(value: object) -> int:
    """A size in bytes from an int or a string like ``"512M"``; ValueError saying why not."""
    if isinstance(value, bool):  # TOML's true is an int to Python, never a size
        raise ValueError(f"{value!r} is not a size: expected a number of bytes or a string like '512M'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        whole, fraction, suffix = match.group(1), match.group(2) or "", (match.group(3) or "").upper()
        if fraction and not suffix:
            raise ValueError(f"{value!r} is not a size: a fraction needs a suffix K, M, G, T, P or E")
        size, remainder = divmod(int(whole + fraction) << _SHIFTS[suffix], 10 ** len(fraction))
        if remainder:
            raise ValueError(f"{value!r} is not a size: not a whole number of bytes")
    else:
        raise ValueError(
            f"{value!r} is not a size: bytes, or a number with K, M, G, T, P or E (optionally then B or iB)"
        )
    if size < 0:
        raise ValueError(f"{value!r} is not a size: negative")
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is not a size: more than 2**64 - 1 bytes")
    return size
