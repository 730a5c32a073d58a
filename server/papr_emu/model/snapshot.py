"""A platform's whole state as a versioned JSON document, and a platform made from one.

A snapshot holds what the platform would need to answer every following call as the
original would: geometry and policy, every device (with its thread states, pending
unplug and what is left of its timeout), every connector that is not in its initial
state (state, unplug flag, DR indicator, and a configure-connector sequence in progress
with the fragment it walks), the queued hotplug event logs byte for byte (with the next
platform log id), the CAS result, the pending memory request, and the event sequence with
the retained events. Watchers, streams and interrupt watchers are not state: they end
with the platform and resume on the restored one (events continue after the same
sequence number).

The format, and its compatibility rule, are in ``docs/snapshots.md``: ``version`` is
:data:`VERSION`; a reader accepts every version up to its own (an older document is
upgraded when read); a change that an older reader would misread raises the version.

Example::

    >>> from papr_emu.model import Platform, default_geometry
    >>> original = Platform("p", default_geometry())
    >>> document = original.snapshot()
    >>> document["format"], document["version"], [d["fields"]["id"] for d in document["devices"]]
    ('papr-emu/platform-snapshot', 1, ['core0', 'phb0'])
    >>> Platform.restore("q", document).snapshot()["devices"] == document["devices"]
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from .cas import CasOptions
from .devices import Device, DeviceType, device_class_of
from .devicetree import WalkItem
from .drc import Drc, DrcState
from .errors import InvalidArgument
from .events import Event
from .geometry import Geometry, MemoryModel
from .memory_requests import MemoryAction, MemoryRequest
from .rtas_events import QueuedLog
from .snapshot_codec import CodecError, decode, encode
from .unplug_timeouts import UnplugTimeouts, timeout_key

if TYPE_CHECKING:
    from .conduct import Conduct
    from .drc_table import DrcTable
    from .events import EventLog
    from .faults import Faults
    from .hotplug import Hotplug
    from .rtas_events import RtasEventQueue

FORMAT: Final = "papr-emu/platform-snapshot"
VERSION: Final = 1


class SnapshotError(InvalidArgument):
    """A document that is not a snapshot this version can restore; names where it is wrong."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"snapshot.{where}" if where else "snapshot", "", reason)
        self.args = (f"snapshot{'.' + where if where else ''}: {reason}",)


# --- dump ---------------------------------------------------------------------------------------


def dump(
    name: str,
    geometry: Geometry,
    drcs: DrcTable[Device],
    hotplug: Hotplug,
    events: EventLog,
    rtas_events: RtasEventQueue,
    now: float,
    conduct: Conduct | None = None,
    faults: Faults | None = None,
) -> dict[str, Any]:
    """The document; ``now`` is the monotonic time unplug deadlines are measured from."""
    timeouts = hotplug.unplug_timeouts
    return {
        "format": FORMAT,
        "version": VERSION,
        "platform": name,
        "geometry": {
            "memory": geometry.memory,
            "max_memory": geometry.max_memory,
            "slots": geometry.slots,
            "cpus": geometry.cpus,
            "max_cpus": geometry.max_cpus,
            "threads": geometry.threads,
            "memory_model": geometry.memory_model.value,
        },
        "unplug_timeouts": {timeout_key(t): s for t in DeviceType if (s := timeouts.for_type(t)) is not None},
        "devices": [_device(d, now) for d in hotplug.devices_in_plug_order()],
        "connectors": _connectors(drcs.materialised()),
        "cas": {"negotiated": hotplug.options.negotiated, "vector": hotplug.options.vector.hex()},
        "hpt_shift": hotplug.hpt_shift,
        "rtas_events": {
            "next_plid": rtas_events.next_plid,
            "queues": [[event_class, [_queued(q) for q in queue]] for event_class, queue in rtas_events.queues()],
            "drain": _drain(rtas_events.drain_state()),
        },
        "events": {
            "last_sequence": events.last_sequence,
            "retained": [[e.sequence, e.time, encode(e.body), e.incarnation] for e in events.retained()],
        },
        "conduct": None if conduct is None else _conduct(conduct),
        "faults": None if faults is None else dict(zip(("rules", "extent_owed"), faults.state(), strict=True)),
        "memory_requests": {
            "issued": hotplug.memory_requests_issued,
            "pending": encode(hotplug.memory_request),
            "completed_add": encode(hotplug.completed_add),
        },
    }


def _device(device: Device, now: float) -> dict[str, Any]:
    fields = {f.name: encode(getattr(device, f.name)) for f in dataclasses.fields(device) if f.init}
    remaining = None if device.unplug_deadline is None else max(device.unplug_deadline - now, 0.0)
    return {
        "type": device.type.value,
        "fields": fields,
        "attached": sorted(device.attached),
        "unplug_pending": device.unplug_pending,
        "unplug_timeout_left": remaining,
    }


def _connector_key(drc: Drc[Device]) -> tuple[int, str, bool, int]:
    return drc.state.value, drc.device.id if drc.device is not None else "", drc.unplug_requested, drc.dr_indicator


def _connectors(drcs: Iterable[Drc[Device]]) -> list[dict[str, Any]]:
    """Runs of consecutive connectors in the same state (a 1 TiB DIMM's 4,096 LMBs are one entry)."""
    runs: list[dict[str, Any]] = []
    for drc in sorted(drcs, key=lambda d: d.index):
        state, device, unplug, indicator = _connector_key(drc)
        if drc.walk is None and runs and "walk" not in runs[-1]:
            last = runs[-1]
            same = (last["state"], last["device"], last["unplug_requested"], last["dr_indicator"])
            if same == (state, device, unplug, indicator) and last["index"] + last["count"] == drc.index:
                last["count"] += 1
                continue
        run: dict[str, Any] = {
            "index": drc.index, "count": 1, "state": state, "device": device, "unplug_requested": unplug,
            "dr_indicator": indicator,
        }  # fmt: skip
        if drc.walk is not None:
            run["walk"] = [[item.kind, item.name, item.value.hex()] for item in drc.walk]
            run["cursor"] = drc.cursor
        runs.append(run)
    return runs


def _conduct(conduct: Conduct) -> dict[str, Any]:
    findings, total, configuring = conduct.state()
    return {"findings": [encode(f) for f in findings], "total": total, "configuring": configuring}


def _drain(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "fetched": [[encode(log), after] for log, after in state["fetched"]]}


def _drain_from(drain: dict[str, Any]) -> dict[str, Any]:
    fetched = [(decode(log, "rtas_events.drain.fetched"), int(after)) for log, after in drain["fetched"]]
    return {**drain, "fetched": fetched}


def _queued_log(q: dict[str, Any]) -> QueuedLog:
    log = decode(q["log"], "rtas_events.queues")
    return QueuedLog(log, int(q["event_class"]), int(q["plid"]), bytes.fromhex(q["blob"]))


def _queued(queued: QueuedLog) -> dict[str, Any]:
    return {
        "log": encode(queued.log),
        "event_class": queued.event_class,
        "plid": queued.plid,
        "blob": queued.blob.hex(),
    }


# --- load ---------------------------------------------------------------------------------------


def _get(table: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(table, dict) or key not in table:
        raise SnapshotError(where, f"missing {key!r}")
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise SnapshotError(f"{where}.{key}" if where else key, f"{value!r:.40} is not a {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def check_header(document: object) -> None:
    """The document is a snapshot of a version this reader knows."""
    if not isinstance(document, dict):
        raise SnapshotError("", "must be a JSON object")
    if document.get("format") != FORMAT:
        raise SnapshotError("format", f"must be {FORMAT!r}")
    version = _get(document, "version", int, "")
    if not 1 <= version <= VERSION:
        raise SnapshotError("version", f"{version} is not one this papr-emu reads (1..{VERSION})")


def geometry_of(document: dict[str, Any]) -> tuple[Geometry, UnplugTimeouts]:
    g = _get(document, "geometry", dict, "")
    try:
        geometry = Geometry.build(
            memory=_get(g, "memory", int, "geometry"), max_memory=_get(g, "max_memory", int, "geometry"),
            slots=_get(g, "slots", int, "geometry"), cpus=_get(g, "cpus", int, "geometry"),
            max_cpus=_get(g, "max_cpus", int, "geometry"), threads=_get(g, "threads", int, "geometry"),
            memory_model=MemoryModel(_get(g, "memory_model", str, "geometry")),
        )  # fmt: skip
        timeouts = UnplugTimeouts(**_get(document, "unplug_timeouts", dict, ""))
    except InvalidArgument as error:
        raise SnapshotError("geometry", error.message) from None
    except ValueError as error:
        raise SnapshotError("geometry.memory_model", str(error)) from None
    return geometry, timeouts


def load(
    document: dict[str, Any],
    drcs: DrcTable[Device],
    hotplug: Hotplug,
    events: EventLog,
    rtas_events: RtasEventQueue,
    now: float,
    rename: Callable[[Event], Event],
    conduct: Conduct | None = None,
    faults: Faults | None = None,
) -> None:
    """Fill an empty platform (no devices) from ``document``; SnapshotError, naming where, if it does not fit."""
    try:
        _load(document, drcs, hotplug, events, rtas_events, now, rename)
        kept = document.get("conduct")
        if conduct is not None and kept:
            findings = [decode(f, "conduct.findings") for f in kept["findings"]]
            conduct.restore(findings, int(kept["total"]), [int(i) for i in kept["configuring"]])
        rules = document.get("faults")
        if faults is not None and rules:
            faults.restore(list(rules["rules"]), [int(i) for i in rules["extent_owed"]])
    except CodecError as error:
        raise SnapshotError("", str(error)) from None
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise SnapshotError("", f"inconsistent: {error!r:.200}") from None


def _load(
    document: dict[str, Any],
    drcs: DrcTable[Device],
    hotplug: Hotplug,
    events: EventLog,
    rtas_events: RtasEventQueue,
    now: float,
    rename: Callable[[Event], Event],
) -> None:
    devices: dict[str, Device] = {}
    for n, entry in enumerate(_get(document, "devices", list, "")):
        where = f"devices[{n}]"
        device_type = DeviceType(_get(entry, "type", str, where))
        fields = {k: decode(v, f"{where}.fields.{k}") for k, v in _get(entry, "fields", dict, where).items()}
        fields = {k: set(v) if isinstance(v, set) else v for k, v in fields.items()}
        device = device_class_of(device_type)(**fields)
        if device.id in devices:
            raise SnapshotError(f"{where}.fields.id", f"{device.id!r} appears twice")
        device.unplug_pending = bool(_get(entry, "unplug_pending", bool, where))
        left = entry.get("unplug_timeout_left")
        device.unplug_deadline = None if left is None else now + float(left)
        attached = {int(i) for i in _get(entry, "attached", list, where)}
        if not attached <= set(device.drc_indexes):
            raise SnapshotError(f"{where}.attached", "names connectors the device does not own")
        hotplug.restore_device(device, attached)
        devices[device.id] = device
    for n, run in enumerate(_get(document, "connectors", list, "")):
        where = f"connectors[{n}]"
        first, count = _get(run, "index", int, where), _get(run, "count", int, where)
        if count < 1:
            raise SnapshotError(f"{where}.count", "must be at least 1")
        device_id = _get(run, "device", str, where)
        for index in range(first, first + count):
            drc = drcs.get(index)
            if drc is None:
                raise SnapshotError(f"{where}.index", f"{index:#x} is no connector of this platform")
            state = DrcState(_get(run, "state", int, where))
            if state not in drc.type.connector_class.transitions[next(iter(drc.type.connector_class.transitions))]:
                raise SnapshotError(f"{where}.state", f"{state.name} is not a state of a {drc.type.label} connector")
            if (drc.device.id if drc.device is not None else "") != device_id:
                raise SnapshotError(f"{where}.device", f"{device_id!r} is not attached to {index:#x}")
            drc.state = state
            drc.unplug_requested = bool(_get(run, "unplug_requested", bool, where))
            drc.dr_indicator = _get(run, "dr_indicator", int, where)
            if "walk" in run:
                walk = tuple(WalkItem(kind, name, bytes.fromhex(value)) for kind, name, value in run["walk"])
                cursor = _get(run, "cursor", int, where)
                if not 0 <= cursor < len(walk) or walk[-1].kind != "end":
                    raise SnapshotError(f"{where}.cursor", "is not a position in its walk")
                drc.walk, drc.cursor = walk, cursor
    cas = _get(document, "cas", dict, "")
    vector = bytes.fromhex(_get(cas, "vector", str, "cas"))
    hotplug.options = CasOptions.from_vector(vector) if _get(cas, "negotiated", bool, "cas") else CasOptions()
    hotplug.hpt_shift = _get(document, "hpt_shift", int, "")
    queue = _get(document, "rtas_events", dict, "")
    queues = [
        (int(event_class), [_queued_log(q) for q in logs])
        for event_class, logs in _get(queue, "queues", list, "rtas_events")
    ]
    rtas_events.restore(queues, _get(queue, "next_plid", int, "rtas_events"))
    drain = queue.get("drain")  # absent before the conduct report's LOG_NOT_DRAINED
    rtas_events.restore_drain_state(None if drain is None else _drain_from(drain))
    history = _get(document, "events", dict, "")
    retained = [  # an event's incarnation (4th) is absent in snapshots older than it
        rename(Event(int(sequence), "", float(time), decode(body, "events.retained"), str(rest[0]) if rest else ""))
        for sequence, time, body, *rest in _get(history, "retained", list, "events")
    ]
    events.restore(retained, _get(history, "last_sequence", int, "events"))
    requests = _get(document, "memory_requests", dict, "")
    hotplug.restore_memory_requests(
        _get(requests, "issued", int, "memory_requests"),
        _memory_request(requests.get("pending"), "memory_requests.pending"),
        _memory_request(requests.get("completed_add"), "memory_requests.completed_add"),
    )
    hotplug.check_invariants()


def _memory_request(data: object, where: str) -> MemoryRequest | None:
    if data is None:
        return None
    request = decode(data, where)
    if not isinstance(request, MemoryRequest) or not isinstance(request.action, MemoryAction):
        raise SnapshotError(where, "is not a memory request")
    scope = None if request.scope is None else frozenset(request.scope)
    return dataclasses.replace(
        request, scope=scope, held=set(request.held), configured=set(request.configured), marked=set(request.marked)
    )


__all__ = ["FORMAT", "VERSION", "SnapshotError", "check_header", "dump", "geometry_of", "load"]
