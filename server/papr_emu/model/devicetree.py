"""A small device-tree model: nodes, properties, and value encoders.

A :class:`Node` is what a device contributes to the platform's device tree;
the same node is what ibm,configure-connector hands to the guest, one item
per call, in :meth:`Node.walk` order (node begin, its properties in order,
its children, node end: the order of a flattened device tree).

Example::

    >>> node = Node("memory@40000000", [("device_type", string("memory"))])
    >>> [item.kind for item in node.walk()]
    ['begin', 'property', 'end']
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

PropertyList = list[tuple[str, bytes]]


def cells(*values: int) -> bytes:
    """Big-endian 32-bit cells; negative values are two's complement (-1 -> ffffffff)."""
    return struct.pack(f">{len(values)}I", *(v & 0xFFFFFFFF for v in values))


def u64(*values: int) -> bytes:
    """Big-endian 64-bit values (two cells each)."""
    return struct.pack(f">{len(values)}Q", *values)


def string(text: str) -> bytes:
    """One NUL-terminated string."""
    return text.encode("ascii") + b"\0"


def strings(texts: Sequence[str]) -> bytes:
    """Concatenated NUL-terminated strings, no padding (as ibm,drc-names)."""
    return b"".join(string(t) for t in texts)


EMPTY = b""


@dataclass(frozen=True, slots=True)
class WalkItem:
    """One step of a depth-first walk: a node begins, a property, or a node ends."""

    kind: Literal["begin", "property", "end"]
    name: str = ""
    value: bytes = b""


@dataclass(slots=True)
class Node:
    """A device-tree node: a name ("memory@40000000"), properties in order, children."""

    name: str
    properties: PropertyList = field(default_factory=list)
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[WalkItem]:
        """Yield this subtree as begin / property... / children... / end items."""
        yield WalkItem("begin", self.name)
        for name, value in self.properties:
            yield WalkItem("property", name, value)
        for child in self.children:
            yield from child.walk()
        yield WalkItem("end")
