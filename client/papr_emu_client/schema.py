"""msgspec's validation errors in the words of a TOML file: the key's path, its value, what was expected.

papr-emu checks its TOML files (the server's config, the conformance scenarios) with msgspec
schemas; this turns an error such as ``Expected `int` >= 0 - at `$.platform[0].slots```
into one line a user of the file reads without knowing msgspec.

Example::

    >>> import msgspec
    >>> class Platform(msgspec.Struct, forbid_unknown_fields=True):
    ...     slots: int = 0
    >>> document = {"slots": True}
    >>> try:
    ...     msgspec.convert(document, Platform)
    ... except msgspec.ValidationError as error:
    ...     print(describe(error, document, "platform[0]"))
    platform[0].slots: true is not an integer
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import msgspec

_KINDS: Final = {"object": "a table", "array": "an array", "str": "a string", "int": "an integer",
                 "float": "a number", "bool": "true or false"}  # fmt: skip
_STEP: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NOT_FOUND: Final = object()


def _kinds(expected: str) -> str:
    """msgspec's ``int | null`` -> ``an integer`` (TOML has no null)."""
    return " or ".join(_KINDS.get(kind, kind) for kind in expected.split(" | ") if kind != "null")


def _shown(value: object) -> str:
    """A value as the file wrote it, if short: ``true``, ``'x'``, ``[1]``."""
    if value is _NOT_FOUND:
        return "a value"
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def describe(error: msgspec.ValidationError, document: object, where: str = "", choices: Mapping[str, str] = {}) -> str:
    """One line: where in the file (``platform[0].slots``, after ``where``), the value, what was expected.

    ``choices``: for a key whose value must be one of a set (a tag such as a device's ``type``),
    what it may be (``"one of dimm, phb"``), said in place of msgspec's "Invalid value".
    """
    message, _, at = str(error).partition(" - at `$")
    at = at.removesuffix("`")
    value: object = document
    for key, index in _STEP.findall(at):
        try:
            value = value[key] if key else value[int(index)]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            value = _NOT_FOUND
            break
    if "[...]" in at:  # msgspec's place for a value in a table of free keys ([security.certificate_roles])
        at, value = at.partition("[...]")[0], _NOT_FOUND
    shown = _shown(value)
    last = re.sub(r"(\[\d+\])+$", "", at.rpartition(".")[2])  # the key, for an array's item too
    if match := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        what = f"unknown keys: {match[1]}"
    elif match := re.fullmatch(r"Object missing required field `(.*)`", message):
        at, what = f"{at}.{match[1]}", "missing"
    elif message.startswith("Invalid") and last in choices:
        what = f"{shown} is not {choices[last]}"
    elif match := re.fullmatch(r"Expected `(.*)`, got `.*`", message):
        what = f"{shown} is not {_kinds(match[1])}"
    elif message == "Expected `int` >= 1":
        what = f"{shown} is not a positive integer"
    elif match := re.fullmatch(r"Expected `(\w+)` (.*)", message):
        what = f"{shown} is not {_kinds(match[1])} {match[2]}"
    elif match := re.fullmatch(r"Expected `(array|str)` of length (.*)", message):
        what = f"{shown} is not {_kinds(match[1])} of length {match[2]}"
    elif message == "Number out of range":
        what = f"{shown} is out of range"
    else:
        what = message[:1].lower() + message[1:]
    location = f"{where}{at}".removeprefix(".")
    return f"{location}: {what}" if location else what
