"""Normalized trace records: what one side did at each step, in a form both sides share.

A :class:`Record` holds ``data`` (compared between the sides) and ``info`` (shown, never
compared: error texts, PLIDs, creation times). Values are JSON-able; DRC indexes are hex
strings, byte strings hex. Event logs are decoded field by field; the bytes the issue
excludes from comparison (creation time, PLID) are masked, as :data:`UNCOMPARED_LOG_BYTES`
declares.

Example::

    >>> record = Record(3, "sense 0x80000004", "rtas", {"rets": [0, 2]})
    >>> record.summary()
    'rets [0, 2]'
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from papr_emu_client.errorlog import MalformedLog, parse_hotplug_event, sections
from papr_emu_client.workarea import CcItem

# Event-log bytes never compared (offsets into the 116-byte hotplug log, end exclusive). Declared
# here, where traces are made, so the records are masked before anything compares them;
# differences.py (the allowed differences) builds on this module, not the other way round.
#: The RTAS calls of dynamic reconfiguration, in the order the guest's /rtas tokens are read.
DR_CALL_NAMES: Final = (
    "set-indicator",
    "get-sensor-state",
    "ibm,configure-connector",
    "set-power-level",
    "get-power-level",
    "check-exception",
    "event-scan",
)


UNCOMPARED_LOG_BYTES: dict[tuple[int, int], str] = {
    (0x20, 0x28): "PH creation date and time: the BCD wall clock of each side",
    (0x40, 0x44): "PH platform log id (PLID): a per-process/per-platform counter; QEMU also stores it "
    "little-endian (docs/compat.md #8)",
}


@dataclass
class Record:
    """One step as one side saw it."""

    step: int
    label: str
    kind: str  # plug, unplug, rtas, configure, check_exception, survey, end
    data: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self, width: int = 60) -> str:
        """A one-line digest of ``data`` for the side-by-side view."""
        d = self.data
        if "not_run" in d:
            text = f"not run ({d['not_run']})"
        elif "crashed" in d:
            text = f"QEMU {d['crashed']}"
        elif self.kind in ("plug", "unplug"):
            text = "ok" if d.get("ok") else f"error ({d.get('error')})"
            if d.get("drc_indexes"):
                indexes = d["drc_indexes"]
                text += f" {indexes[0]}" + (f"..{indexes[-1]}" if len(indexes) > 1 else "")
        elif self.kind == "configure":
            calls = d.get("calls", [])
            first = next((c.get("name") for c in calls if c.get("name")), "")
            text = f"{len(calls)} calls, rcs {_rcs(calls)}" + (f" {first}" if first else "")
        elif self.kind == "check_exception":
            logs = d.get("calls", [])
            text = ", ".join(_log_digest(c) for c in logs)
        elif self.kind == "survey" and "drc_array_order" in d:
            text = "; ".join(f"{path}: {', '.join(order[:2])}…" for path, order in d["drc_array_order"].items())
        elif self.kind == "survey":
            nodes = d.get("drc_nodes", {})
            text = f"{sum(len(n['entries']) for n in nodes.values())} DRCs in {len(nodes)} nodes, "
            text += f"{len(d.get('sense', {}))} senses"
        elif self.kind == "end":
            text = "end of scenario"
        else:
            text = f"rets {d.get('rets')}"
            if "item" in d:
                text += f" {d['item'].get('name', '')}"
        if d.get("events"):
            text += " | " + ", ".join(d["events"])
        return text if len(text) <= width else text[: width - 1] + "…"


def _rcs(calls: list[dict[str, Any]]) -> str:
    rcs = [c["rc"] for c in calls]
    if len(rcs) > 6:
        return ",".join(map(str, rcs[:3])) + ",…," + ",".join(map(str, rcs[-2:]))
    return ",".join(map(str, rcs))


RESOURCES = {1: "cpu", 2: "mem", 3: "slot", 4: "phb", 5: "pci", 6: "pmem"}
ACTIONS = {1: "ADD", 2: "REMOVE"}


def _log_digest(call: dict[str, Any]) -> str:
    log = call.get("log")
    if not log:
        return f"rc {call['rc']}"
    hp = log.get("hp")
    if not hp:
        return f"rc {call['rc']} ({log.get('length')} bytes)"
    what = [ACTIONS.get(hp["action"], str(hp["action"])), RESOURCES.get(hp["resource"], str(hp["resource"]))]
    if "id" in hp:
        what.append(str(hp["id"]))
    if "count" in hp:
        what.append(f"x{hp['count']}")
    return " ".join(what)


@dataclass
class Trace:
    """Everything one side did for one scenario."""

    side: str  # "qemu" or "papr"
    scenario: str
    records: list[Record]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "scenario": self.scenario,
            "meta": self.meta,
            "records": [asdict(r) for r in self.records],
        }

    def render(self, verbose: bool = False) -> str:
        """The trace as text: one line per step (``verbose``: every compared field too)."""
        lines = [f"{self.side} trace of {self.scenario}" + "".join(f"  {k}={v}" for k, v in self.meta.items())]
        for record in self.records:
            lines.append(f"{record.step:4d}  {record.label:<58.58}  {record.summary(200)}")
            if verbose:
                lines.extend(f"        {path} = {_show(value)}" for path, value in flatten(record.data).items())
                lines.extend(f"        ({key}: {_show(value)})" for key, value in record.info.items())
        return "\n".join(lines)


def _show(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# --- flattening (what the comparator compares) --------------------------------------------------


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists of dicts -> {path: leaf}; lists of scalars stay whole leaves."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        if not data and prefix:
            out[prefix] = {}
    elif isinstance(data, list) and any(isinstance(v, dict | list) for v in data):
        for n, value in enumerate(data):
            out.update(flatten(value, f"{prefix}[{n}]"))
        out[f"{prefix}.length"] = len(data)
    else:
        out[prefix] = data
    return out


# --- normalizers ----------------------------------------------------------------------------------


def hex_index(index: int) -> str:
    return f"{index:#010x}"


def cc_call(status: int, area: bytes, item: CcItem | None) -> dict[str, Any]:
    """One ibm,configure-connector call: status, and for 1..3 the header cells, name and value."""
    call: dict[str, Any] = {"rc": status}
    if item is not None and status in (1, 2, 3):
        call["cells"] = list(struct.unpack_from(">5I", area, 0))
        call["name"] = item.name
        if status == 3:
            call["value"] = item.value.hex()
    return call


def work_area_digest(area: bytes) -> str:
    """The whole 4 KiB work area, hashed (it carries leftovers of earlier calls, as QEMU leaves them)."""
    return hashlib.sha256(area).hexdigest()[:16]


def node_from_calls(calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The device-tree node(s) a configure-connector sequence describes (like dlpar_configure_connector)."""
    root: dict[str, Any] | None = None
    stack: list[dict[str, Any]] = []
    for call in calls:
        rc = call["rc"]
        if rc in (1, 2) and "name" in call:
            node: dict[str, Any] = {"name": call["name"], "properties": {}, "children": []}
            if rc == 1 and stack:
                stack.pop()
            if stack:
                stack[-1]["children"].append(node)
            elif root is None:
                root = node
            stack.append(node)
        elif rc == 3 and stack and "name" in call:
            stack[-1]["properties"][call["name"]] = call.get("value", "")
        elif rc == 4 and stack:
            stack.pop()
    if root is not None and not root["children"]:
        del root["children"]
    return root


def decode_log(blob: bytes) -> dict[str, Any]:
    """An RTAS event log as comparable fields (masked bytes excluded) and the masked hex."""
    masked = bytearray(blob)
    for start, end in UNCOMPARED_LOG_BYTES:
        masked[start:end] = bytes(max(0, min(end, len(blob)) - start))
    out: dict[str, Any] = {"length": len(blob)}
    if len(blob) >= 8:
        summary, extended_length = struct.unpack_from(">II", blob, 0)
        out["summary"] = f"{summary:#010x}"
        out["extended_length"] = extended_length
    try:
        out["sections"] = [f"{s.id}:{s.length}" for s in sections(blob)]
        event = parse_hotplug_event(blob)
        hp: dict[str, Any] = {"resource": event.resource, "action": event.action, "id_type": event.id_type}
        if event.id_type in (2, 4):
            hp["id"] = hex_index(event.index)
        if event.id_type in (3, 4):
            hp["count"] = event.count
        if event.id_type == 1:
            hp["id"] = event.name
        out["hp"] = hp
    except (MalformedLog, struct.error, IndexError, UnicodeDecodeError) as error:
        out["undecodable"] = str(error)
    out["hex"] = _masked_hex(bytes(masked), blob)
    return out


def _masked_hex(masked: bytes, blob: bytes) -> str:
    text = masked.hex()
    chars = list(text)
    for start, end in UNCOMPARED_LOG_BYTES:
        for n in range(2 * start, min(2 * end, len(chars))):
            chars[n] = "."
    return "".join(chars)


def log_info(blob: bytes) -> dict[str, str]:
    """The uncompared fields of a log, for display: creation date/time and PLID as written."""
    info: dict[str, str] = {}
    if len(blob) >= 0x28:
        info["created"] = blob[0x20:0x28].hex()
    if len(blob) >= 0x44:
        info["plid"] = blob[0x40:0x44].hex()
    return info


def drc_table(properties: dict[str, bytes]) -> tuple[dict[str, str], list[str]]:
    """A node's four ibm,drc-* arrays as {index: "name|type|power domain"} and the indexes in array order."""
    raw_indexes = properties["ibm,drc-indexes"]
    count, *indexes = struct.unpack(f">{len(raw_indexes) // 4}I", raw_indexes)
    names = properties.get("ibm,drc-names", b"\0\0\0\0")[4:].split(b"\0")
    types = properties.get("ibm,drc-types", b"\0\0\0\0")[4:].split(b"\0")
    domains_raw = properties.get("ibm,drc-power-domains", b"\0\0\0\0")[4:]
    domains = struct.unpack(f">{len(domains_raw) // 4}i", domains_raw)
    entries: dict[str, str] = {}
    order: list[str] = []
    for n, index in enumerate(indexes[:count]):
        name = names[n].decode("ascii", "replace") if n < len(names) else "?"
        drc_type = types[n].decode("ascii", "replace") if n < len(types) else "?"
        domain = str(domains[n]) if n < len(domains) else "?"
        entries[hex_index(index)] = f"{name}|{drc_type}|{domain}"
        order.append(hex_index(index))
    return dict(sorted(entries.items())), order
