"""THE one place that declares how papr-emu may differ from QEMU 7.2 in a conformance trace.

Every entry cites its row of docs/compat.md and says exactly which mismatches it allows;
the comparator (compare.py) accepts a mismatch only if one of these rules recognizes it.
Rows that no driverless scenario can observe are declared with ``allows=None`` and the
reason, so the list mirrors docs/compat.md completely.

Besides the rules, :data:`.trace.UNCOMPARED_LOG_BYTES` lists the event-log bytes the issue leaves
out of the comparison (they are masked in traces, shown but never compared).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from papr_emu_client.constants import DRC_ARRAYS, LMB_SIZE

from .scenario import Configure, NumberedStep, PciSpec, Plug, Rtas, Unplug, drc_type
from .trace import DR_CALL_NAMES, Record

MISSING: Any = "<absent>"


@dataclass(frozen=True)
class Mismatch:
    """One field whose value differs between the sides (MISSING where a side has no such field)."""

    path: str
    qemu: Any
    papr: Any


@dataclass
class Pair:
    """The two records of one step, their flattened data, and the pairs before them."""

    step: NumberedStep | None  # None for the end record
    qemu: Record
    papr: Record
    qemu_flat: dict[str, Any]
    papr_flat: dict[str, Any]
    history: list[Pair] = field(default_factory=list)
    allowed_by: dict[str, int] = field(default_factory=dict)  # path -> compat number, filled by compare


Rule = Callable[[Mismatch, Pair], bool]


@dataclass(frozen=True)
class AllowedDifference:
    """One row of docs/compat.md and the rule that recognizes it in a trace."""

    compat: int
    area: str
    qemu: str
    papr: str
    allows: Rule | None
    scope: str  # which records and fields the rule accepts, or why nothing can show the difference


# --- helpers --------------------------------------------------------------------------------------


def _index_of(pair: Pair) -> int | None:
    """The DRC a configure-connector record is about."""
    data = pair.qemu.data
    if "drc_index" in data:
        return int(data["drc_index"], 16)
    item = data.get("item") or pair.papr.data.get("item")
    if item and "cells" in item:
        return int(item["cells"][0])
    return None


def _drc_kind(index: int | None) -> str:
    return drc_type(index or 0)


def _rtas(pair: Pair) -> Rtas | None:
    step = pair.step.step if pair.step is not None else None
    return step if isinstance(step, Rtas) else None


def _cell(args: tuple[int | str, ...], n: int) -> int | None:
    """Argument cell n of a call, if it is a number."""
    if n < len(args):
        value = args[n]
        return value if isinstance(value, int) else None
    return None


def _call_name(pair: Pair, path: str) -> str | None:
    """For ``calls[3].value`` / ``item.value``: the property name of that call, if both sides agree on it."""
    base = path.rsplit(".", 1)[0]
    q, p = pair.qemu_flat.get(base + ".name"), pair.papr_flat.get(base + ".name")
    return q if q == p else None


def _is_configure(pair: Pair) -> bool:
    call = _rtas(pair)
    return pair.qemu.kind == "configure" or (call is not None and call.name == "ibm,configure-connector")


def _call_paths(pair: Pair) -> list[str]:
    """Every call of a configure record, as path prefixes ("calls[0]", ...; "item" for a single call)."""
    if pair.qemu.kind == "rtas":
        return ["item"]
    count = max(pair.qemu_flat.get("calls.length", 0), pair.papr_flat.get("calls.length", 0))
    return [f"calls[{n}]" for n in range(count)]


# --- #1: LMB fragment address ---------------------------------------------------------------------


def _lmb_addresses(index: int) -> tuple[int, int]:
    """(QEMU 7.2's address: DRC index x 256 MiB, truncated to 64 bits; the LMB's real address)."""
    return (index * LMB_SIZE) & (2**64 - 1), (index & 0x0FFF_FFFF) * LMB_SIZE


def _lmb_field(path: str, qemu: Any, papr: Any, index: int, name: str | None) -> bool:
    quirk, real = _lmb_addresses(index)
    if path.endswith(".name") or path == "node.name":
        return bool(qemu == f"memory@{quirk:x}" and papr == f"memory@{real:x}")
    if (path.endswith(".value") and name == "reg") or path == "node.properties.reg":
        expected = struct.pack(">QQ", quirk, LMB_SIZE).hex(), struct.pack(">QQ", real, LMB_SIZE).hex()
        return bool((qemu, papr) == expected)
    return False


def _lmb_address(m: Mismatch, pair: Pair) -> bool:
    index = _index_of(pair)
    if not _is_configure(pair) or _drc_kind(index) != "lmb" or index is None:
        return False
    if m.path == "work_area_sha256":  # the leftovers of a longer name; only if nothing else differs
        return _only_differences(pair, lambda path, q, p: _lmb_field(path, q, p, index, _call_name(pair, path)))
    return _lmb_field(m.path, m.qemu, m.papr, index, _call_name(pair, m.path))


def _only_differences(pair: Pair, explained: Callable[[str, Any, Any], bool]) -> bool:
    """True if every field of the record that differs (work area digest aside) is ``explained``."""
    paths = (set(pair.qemu_flat) | set(pair.papr_flat)) - {"work_area_sha256", "events"}
    differing = [p for p in paths if pair.qemu_flat.get(p, MISSING) != pair.papr_flat.get(p, MISSING)]
    return bool(differing) and all(
        explained(p, pair.qemu_flat.get(p, MISSING), pair.papr_flat.get(p, MISSING)) for p in differing
    )


# --- #3: refusal events ---------------------------------------------------------------------------


def _refusal_events(m: Mismatch, pair: Pair) -> bool:
    call = _rtas(pair)
    if m.path != "events" or call is None or call.name != "set-indicator" or len(call.args) != 3:
        return False
    if _cell(call.args, 0) != 9001 or _cell(call.args, 2) != 1 or _drc_kind(_cell(call.args, 1)) != "lmb":
        return False
    if not isinstance(m.qemu, list) or not isinstance(m.papr, list):
        return False
    extra = Counter(m.qemu) - Counter(m.papr)
    if sum(extra.values()) != 1 or Counter(m.papr) - Counter(m.qemu):
        return False
    (event,) = extra
    name, _, device = event.partition(":")
    # papr-emu reported the refusal of a DIMM (both events once); QEMU sent the guest error twice.
    return (
        name == "DEVICE_UNPLUG_GUEST_ERROR"
        and m.papr.count(f"MEM_UNPLUG_ERROR:{device}") == 1
        and m.papr.count(event) == 1
        and [e for e in m.qemu if e != event] == [e for e in m.papr if e != event]
    )


# --- #5: configure-connector args[1] --------------------------------------------------------------


def _memory_extent(m: Mismatch, pair: Pair) -> bool:
    step = pair.step.step if pair.step is not None else None
    if isinstance(step, Configure):
        return step.extent != 0
    call = _rtas(pair)
    return call is not None and call.name == "ibm,configure-connector" and len(call.args) == 2 and call.args[1] != 0


# --- #6: order of the ibm,drc-* entries of a PHB fragment -----------------------------------------


def _entries(array: str, value: str) -> list[Any] | None:
    """A drc array's entries (after the count cell), or None if it is not one."""
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        return None
    if len(raw) < 4:
        return None
    count = struct.unpack_from(">I", raw)[0]
    if array in ("ibm,drc-indexes", "ibm,drc-power-domains"):
        cells = list(struct.unpack(f">{(len(raw) - 4) // 4}I", raw[4:]))
        return cells if len(cells) == count else None
    strings = raw[4:].split(b"\0")[:count]
    return strings if len(strings) == count else None


def _table(props: dict[str, str]) -> list[tuple[Any, ...]] | None:
    columns = [_entries(a, props.get(a, "")) for a in DRC_ARRAYS]
    if any(c is None for c in columns):
        return None
    return list(zip(*[c for c in columns if c is not None], strict=False))


def _phb_array(path: str, qemu: Any, papr: Any, name: str | None, pair: Pair) -> bool:
    array = path.rsplit(".", 1)[1] if path.startswith("node.properties.") else name
    if array not in DRC_ARRAYS or not (path.endswith(".value") or path.startswith("node.properties.")):
        return False
    theirs, ours = _entries(array, qemu), _entries(array, papr)
    if theirs is None or ours is None or sorted(theirs) != sorted(ours) or theirs == ours:
        return False
    # With all four arrays in the record: the same (index, name, type, domain) rows, papr-emu's ascending.
    q_node, p_node = pair.qemu.data.get("node", {}), pair.papr.data.get("node", {})
    q_table, p_table = _table(q_node.get("properties", {})), _table(p_node.get("properties", {}))
    if q_table is not None and p_table is not None:
        return sorted(q_table) == p_table
    return array != "ibm,drc-indexes" or ours == sorted(ours)


def _tree_array_order(m: Mismatch) -> bool:
    """The boot tree's arrays (a dtb_order record): the same indexes, papr-emu's ascending."""
    return (
        m.path.startswith("drc_array_order.")
        and isinstance(m.qemu, list)
        and isinstance(m.papr, list)
        and sorted(m.qemu, key=lambda i: int(i, 16)) == m.papr
    )


def _phb_array_order(m: Mismatch, pair: Pair) -> bool:
    if _tree_array_order(m):
        return True
    index = _index_of(pair)
    if not _is_configure(pair) or _drc_kind(index) != "phb":
        return False
    if m.path == "work_area_sha256":
        return _only_differences(pair, lambda path, q, p: _phb_array(path, q, p, _call_name(pair, path), pair))
    return _phb_array(m.path, m.qemu, m.papr, _call_name(pair, m.path), pair)


# --- #7: PCI multifunction ------------------------------------------------------------------------


def _multifunction(m: Mismatch, pair: Pair) -> bool:
    step = pair.step.step if pair.step is not None else None
    return (
        isinstance(step, Plug)
        and isinstance(step.spec, PciSpec)
        and not step.spec.multifunction
        and pair.qemu.data.get("ok") is False
        and pair.papr.data.get("ok") is True
        and "indicates single function" in str(pair.qemu.info.get("message", ""))
    )


# --- #9: check-exception buffer length ------------------------------------------------------------


def _buffer_length(m: Mismatch, pair: Pair) -> bool:
    return (
        m.path.endswith("written_beyond_buffer")
        and isinstance(m.qemu, int)
        and m.qemu > 0
        and m.papr == 0
        and pair.qemu.kind in ("check_exception", "rtas")
    )


# --- #12: RTAS calls outside dynamic reconfiguration ----------------------------------------------


#: Calls outside dynamic reconfiguration that papr-emu implements as QEMU does: not covered by #12.
_IMPLEMENTED_OTHER_CALLS = frozenset({"query-cpu-stopped-state", "start-cpu", "stop-self"})


def _other_rtas(m: Mismatch, pair: Pair) -> bool:
    call = _rtas(pair)
    if call is None or call.name in DR_CALL_NAMES or call.name in _IMPLEMENTED_OTHER_CALLS or m.path != "rets":
        return False
    return isinstance(m.papr, list) and bool(m.papr) and m.papr[0] == -3 and not any(m.papr[1:])


# --- #14: a bus that does not exist --------------------------------------------------------------


def _missing_bus(m: Mismatch, pair: Pair) -> bool:
    step = pair.step.step if pair.step is not None else None
    return (
        isinstance(step, Plug)
        and isinstance(step.spec, PciSpec)
        and m.path == "error"
        and (m.qemu, m.papr) == ("refused", "not-found")
        and "Bus '" in str(pair.qemu.info.get("message", ""))
        and "not found" in str(pair.qemu.info.get("message", ""))
        and "pci_function.phb_index" in str(pair.papr.info.get("message", ""))
    )


# --- #16: a PHB fragment's functions at a replay --------------------------------------------------


def _whole_walk(record: Record) -> list[dict[str, Any]] | None:
    """The calls of a configure record that walked a fragment from its top to status 0, else None."""
    calls = record.data.get("calls")
    if not isinstance(calls, list) or len(calls) < 2 or calls[0].get("rc") != 2 or calls[-1].get("rc") != 0:
        return None
    return calls


def _bus_start(calls: list[dict[str, Any]]) -> int:
    """Position of the first call after the PHB node's own name and properties (a child, or the end)."""
    return next((n for n, call in enumerate(calls) if n and call.get("rc") != 3), len(calls))


def _phb_replay(m: Mismatch, pair: Pair) -> bool:
    index = _index_of(pair)
    if pair.qemu.kind != "configure" or _drc_kind(index) != "phb":
        return False
    theirs, ours = _whole_walk(pair.qemu), _whole_walk(pair.papr)
    if theirs is None or ours is None:
        return False
    # QEMU replays the walk it built at the first configure-connector: the last whole walk of this
    # connector, unchanged (were it rebuilt, the PHB node would be the same and this rule not needed).
    earlier = [
        p.qemu for p in pair.history
        if p.qemu.kind == "configure" and _index_of(p) == index and _whole_walk(p.qemu) is not None
    ]  # fmt: skip
    if not earlier or earlier[-1].data.get("node") != pair.qemu.data.get("node"):
        return False
    if m.path in ("work_area_sha256", "calls.length") or m.path.startswith("node.children"):
        return True
    # Only the calls from the first function on: the PHB node's own name and properties are compared.
    if m.path.startswith("calls["):
        position = int(m.path[len("calls[") : m.path.index("]")])
        return position >= min(_bus_start(theirs), _bus_start(ours))
    return False


# --- #17: NVDIMM unplug ---------------------------------------------------------------------------

NVDIMM_UNPLUG_REFUSAL = "nvdimm device hot unplug is not supported yet."


def _nvdimm_unplug(m: Mismatch, pair: Pair) -> bool:
    step = pair.step.step if pair.step is not None else None
    return (
        isinstance(step, Unplug)
        and pair.qemu.info.get("message") == NVDIMM_UNPLUG_REFUSAL
        and pair.papr.data.get("ok") is True
        and (m.path, m.qemu, m.papr) in (("ok", False, True), ("error", "refused", MISSING))
    )


# --- #2: refusal after a partial release ----------------------------------------------------------


def _lost_lmbs(history: list[Pair]) -> dict[str, set[int]]:
    """DIMMs whose unplug was refused after some of their LMBs had been released: {alias: those LMBs}.

    Walks the QEMU side (both sides agree up to the refusal, or the comparison fails there):
    a DIMM's LMBs come from its plug record; an LMB is released by a successful
    allocation-unusable while the DIMM's unplug is pending; a DEVICE_UNPLUG_GUEST_ERROR for
    the DIMM is the refusal; an unplug request restarts the bookkeeping.
    """
    lmbs: dict[str, set[int]] = {}
    pending: set[str] = set()
    released: dict[str, set[int]] = {}
    lost: dict[str, set[int]] = {}
    for pair in history:
        step = pair.step.step if pair.step is not None else None
        record = pair.qemu
        if isinstance(step, Plug) and record.data.get("ok"):
            if all(i.startswith("0x8") for i in record.data.get("drc_indexes", [])):
                lmbs[step.device_id] = {int(i, 16) for i in record.data["drc_indexes"]}
        elif isinstance(step, Unplug) and record.data.get("ok") and step.device_id in lmbs:
            pending.add(step.device_id)
            released[step.device_id] = set()
        elif isinstance(step, Rtas) and step.name == "set-indicator" and record.data.get("rets") == [0]:
            index = _cell(step.args, 1)
            if len(step.args) == 3 and _cell(step.args, 0) == 9003 and _cell(step.args, 2) == 0:
                for alias in pending:
                    if index in lmbs[alias]:
                        released[alias].add(index or 0)
        for event in record.data.get("events", []):
            name, _, alias = event.partition(":")
            if name == "DEVICE_UNPLUG_GUEST_ERROR" and alias in pending:
                pending.discard(alias)
                if released.get(alias):
                    lost[alias] = set(released[alias])
            elif name == "DEVICE_DELETED":
                pending.discard(alias)
                lost.pop(alias, None)
    return lost


def _partial_release(m: Mismatch, pair: Pair) -> bool:
    lost = _lost_lmbs(pair.history)
    if not lost:
        return False
    # Once QEMU aborted on the device_del below, nothing after it can be compared.
    for earlier in pair.history:
        if earlier.qemu.data.get("crashed") == "exited" and earlier.allowed_by.get("crashed") == 2:
            return True
    step = pair.step.step if pair.step is not None else None
    record = pair.qemu
    if isinstance(step, Unplug) and step.device_id in lost:
        # QEMU: spapr_drc_unplug_request: assertion failed: (drc->dev) -> abort.
        return record.data.get("crashed") == "exited" and "drc->dev" in str(record.info.get("error", ""))
    lost_lmbs = set().union(*lost.values())
    if isinstance(step, Rtas) and _cell(step.args, 1) in lost_lmbs:
        return True  # the LMB has no device in QEMU, is UNUSABLE with the DIMM in papr-emu
    return isinstance(step, Configure) and step.index in lost_lmbs


# --- the declarations -----------------------------------------------------------------------------

ALLOWED: tuple[AllowedDifference, ...] = (
    AllowedDifference(
        1,
        "LMB fragment address",
        "memory@<DRC index x 256 MiB> and reg = <index x 256 MiB, 256 MiB>",
        "memory@<LMB address>, reg = <address>",
        _lmb_address,
        "configure-connector records of an LMB connector: the node name and the reg value, exactly QEMU's quirk "
        "vs the real address; the work-area digest only when nothing else differs",
    ),
    AllowedDifference(
        2,
        "Refusal after a partial release",
        "LMBs released before the refusal stay without a device; the next device_del aborts QEMU",
        "the rollback re-attaches them (UNUSABLE, entity sense 2); a later unplug works",
        _partial_release,
        "after a refused DIMM unplug some of whose LMBs were released: RTAS records on those LMBs, QEMU's abort "
        "(assertion drc->dev) on the DIMM's next device_del, and every step after that abort",
    ),
    AllowedDifference(
        3,
        "Refusal events",
        "DEVICE_UNPLUG_GUEST_ERROR twice (plus MEM_UNPLUG_ERROR) for a DIMM refused by unisolate",
        "one unplug_rejected (mapped to MEM_UNPLUG_ERROR + DEVICE_UNPLUG_GUEST_ERROR)",
        _refusal_events,
        "events of set-indicator(9001, LMB, 1): QEMU's list is papr-emu's plus one DEVICE_UNPLUG_GUEST_ERROR for "
        "a DIMM papr-emu reports MEM_UNPLUG_ERROR for",
    ),
    AllowedDifference(
        4,
        "Oversized configure-connector items",
        "clipped to the 4 KiB work area",
        "status -1, nothing written",
        None,
        "not observable: no fragment either side builds comes near 4 KiB",
    ),
    AllowedDifference(
        5,
        "ibm,configure-connector args[1]",
        "the high 32 bits of the work-area address",
        "LoPAR's memory extent, unused",
        _memory_extent,
        "any field of a configure-connector call or loop made with args[1] != 0",
    ),
    AllowedDifference(
        6,
        "Order of ibm,drc-* entries (PHB fragment and the exported tree)",
        "QOM hash order",
        "ascending DRC index",
        _phb_array_order,
        "configure-connector records of a PHB connector: ibm,drc-* values that hold the same entries, "
        "papr-emu's ascending (and the same rows when all four arrays are there); the work-area digest only "
        "when nothing else differs; and the boot tree's array order (dtb_order records): the same indexes, "
        "papr-emu's ascending",
    ),
    AllowedDifference(
        7,
        "PCI multifunction",
        "function 0 without multifunction=on refuses other functions",
        "every function is multifunction=on",
        _multifunction,
        "a plug the scenario makes with multifunction = false, which QEMU refuses with 'indicates single "
        "function' and papr-emu accepts",
    ),
    AllowedDifference(
        8,
        "PLID in event logs",
        "a counter stored little-endian",
        "big-endian, per platform",
        None,
        "not compared at all (the issue excludes log ids): see trace.UNCOMPARED_LOG_BYTES",
    ),
    AllowedDifference(
        9,
        "check-exception buffer length",
        "the whole log is written even into a smaller buffer",
        "the log is truncated to the buffer",
        _buffer_length,
        "written_beyond_buffer of a check-exception: QEMU > 0, papr-emu 0 (what lies inside the buffer is "
        "still compared)",
    ),
    AllowedDifference(
        10,
        "Unplug timeouts",
        "none",
        "opt-in, off by default",
        None,
        "not observable: scenarios run with the default policy (off)",
    ),
    AllowedDifference(
        11,
        "ibm,drc-info",
        "not implemented",
        "offered at CAS",
        None,
        "not observable: without a guest QEMU never runs ibm,client-architecture-support",
    ),
    AllowedDifference(
        12,
        "RTAS calls outside dynamic reconfiguration",
        "implemented",
        "advertised in /rtas, return -3",
        _other_rtas,
        "rets of an RTAS call that is not a DR call (nor a CPU thread call): papr-emu's are [-3, 0...]",
    ),
    AllowedDifference(
        13,
        "The exported device tree",
        "the full machine tree",
        "the DR-relevant part",
        None,
        "not exercised: the survey compares only the ibm,drc-* arrays and the DR calls' /rtas tokens, "
        "which both trees have",
    ),
    AllowedDifference(
        14,
        "A PCI function on a PHB that does not exist",
        "GenericError \"Bus 'phbN.0' not found\"",
        "NOT_FOUND naming pci_function.phb_index",
        _missing_bus,
        "a failed PCI plug whose QEMU message is \"Bus '...' not found\": QEMU's kind refused, papr-emu's not-found",
    ),
    AllowedDifference(
        15,
        "Unread hotplug event logs",
        "queued without bound",
        "at most --max-queued-event-logs per platform; a plug or unplug that would overflow is refused",
        None,
        "not observable: no scenario queues anywhere near 4096 logs",
    ),
    AllowedDifference(
        16,
        "A PHB fragment's functions at a replay",
        "the fragment built at the first configure-connector, replayed until the PHB is released: functions "
        "plugged later are missing, deleted ones still there",
        "built at the start of each sequence: the functions on the bus now",
        _phb_replay,
        "whole configure-connector walks of a PHB connector whose QEMU walk repeats that connector's previous "
        "whole walk unchanged: the calls from the first function on, the node's children and the work-area "
        "digest (the PHB node's own name and properties are still compared)",
    ),
    AllowedDifference(
        17,
        "NVDIMM unplug",
        f'refused: "{NVDIMM_UNPLUG_REFUSAL}"',
        "requested: a REMOVE log by PMEM index; the guest releases the connector as for any logical one",
        _nvdimm_unplug,
        "an unplug step QEMU refuses with its NVDIMM message and papr-emu accepts: ok and error only",
    ),
)


def allowing(m: Mismatch, pair: Pair) -> int | None:
    """The compat number of the first declaration that allows the mismatch, or None."""
    for difference in ALLOWED:
        if difference.allows is not None and difference.allows(m, pair):
            return difference.compat
    return None
