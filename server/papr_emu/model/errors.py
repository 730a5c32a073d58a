"""Errors the platform model raises for requests it refuses.

Each carries what a gRPC layer needs to answer precisely (the offending field
and value), yet nothing here knows of gRPC. A refused request never changes
state: the model validates everything before it mutates anything.

Example::

    raise InvalidArgument("dimm.size_bytes", 0x1000, "must be a multiple of 256 MiB")
"""

from __future__ import annotations

from typing import Final


class PlatformError(Exception):
    """Base class: a request the platform refuses; ``str()`` is the message."""

    def __init__(self, message: str, field: str = "", value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value

    @property
    def message(self) -> str:
        return str(self.args[0])


#: Longest echo of an offending value in a message; longer ones are cut (their length is stated),
#: so an error never outgrows gRPC's metadata limit (8 KiB) and turns into RESOURCE_EXHAUSTED.
MAX_ECHO: Final = 64


def shorten(value: object, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` (hex for ints above 9), cut to ``limit`` characters with the full length stated.

    >>> shorten("x" * 5000)[-30:]
    'xxxxxxxxx... (5000 characters)'
    """
    shown = hex(value) if isinstance(value, int) and not isinstance(value, bool) and value > 9 else repr(value)
    if len(shown) <= limit:
        return shown
    length = len(value) if isinstance(value, str | bytes) else len(shown)
    unit = "bytes" if isinstance(value, bytes) else "characters"
    return f"{shown[:limit]}... ({length} {unit})"


def _describe(field: str, value: object, reason: str) -> str:
    return f"{field}: {shorten(value)}: {reason}" if field else reason


class InvalidArgument(PlatformError):
    """The request itself is malformed (a bad field value)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(_describe(field, value, reason), field, value)
        self.reason = reason  # what is wrong with the value, for a caller that renames the field


class NotFound(PlatformError):
    """A named platform, device or connector does not exist."""

    def __init__(self, field: str, value: object, what: str) -> None:
        super().__init__(_describe(field, value, f"no such {what}"), field, value)


class AlreadyExists(PlatformError):
    """A name or id is already taken."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(_describe(field, value, reason), field, value)


class FailedPrecondition(PlatformError):
    """Well-formed, but the platform's current state refuses it (QEMU's error text)."""

    def __init__(self, reason: str, field: str = "", value: object = None) -> None:
        super().__init__(_describe(field, value, reason) if field else reason, field, value)


class OutOfRange(PlatformError):
    """A position (e.g. an event sequence) outside what the platform still holds."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(_describe(field, value, reason), field, value)


class ResourceExhausted(PlatformError):
    """The request would take the server over one of its limits (named in ``field``)."""

    def __init__(self, limit: str, value: int, reason: str) -> None:
        # No field: the request is well-formed; the message names the limit instead.
        super().__init__(f"limit {limit} = {value} reached: {reason}")
        self.limit = limit
        self.limit_value = value
