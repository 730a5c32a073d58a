"""The step executor both sides share: a side implements primitives, this module turns steps into records.

Keeping the sequences (configure-connector loops, log draining, the survey, macros) here
means QEMU and papr-emu are driven by exactly the same calls in the same order; the
sides differ only in how one RTAS call, one device_add or one event poll is made.
"""

from __future__ import annotations

import struct
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from papr_emu_client.fdt import nodes_by_path, read_dtb
from papr_emu_client.guest import DR_ENTITY_SENSE
from papr_emu_client.workarea import WORK_AREA_SIZE, read_item

from .scenario import (
    DEFAULT_NRET,
    DR_CALLS,
    CheckException,
    Configure,
    NumberedStep,
    Plug,
    Rtas,
    Scenario,
    Survey,
    Unplug,
    drc_type,
)
from .trace import (
    DR_CALL_NAMES,
    Record,
    Trace,
    cc_call,
    decode_log,
    drc_table,
    hex_index,
    log_info,
    node_from_calls,
    work_area_digest,
)

# Guest real addresses of the buffers (QEMU: scratch guest RAM; papr-emu: GuestBuffer addresses).
WA_ADDR = 0x0101_0000
BUF_ADDR = 0x0102_0000
CC_MAX_CALLS = 1000
DRAIN_MAX_CALLS = 64
SCENARIO_TIMEOUT = 120.0  # seconds for one side of one scenario

# Events of the management side, as QMP names them (papr-emu's are mapped to these).
QMP_EVENTS = ("DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR", "MEM_UNPLUG_ERROR")


class SideFailure(Exception):
    """The side cannot go on (QEMU exited or hung, the scenario timed out)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "exited", "hung", "timeout"


@dataclass
class Outcome:
    """What a device_add / device_del (PlugDevice / UnplugDevice) did."""

    ok: bool
    error: str = ""  # "not-found" or "refused" when not ok
    message: str = ""
    drc_indexes: tuple[int, ...] = ()


class Side(ABC):
    """One implementation under test. Subclasses implement the primitives; ``run`` does the rest."""

    name: ClassVar[str]

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.done: list[NumberedStep] = []

    # ---- primitives -------------------------------------------------------------------

    @abstractmethod
    def start(self) -> dict[str, Any]:
        """Bring the platform up with the scenario's geometry; returns meta data for the trace."""

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def plug(self, step: Plug) -> Outcome: ...

    @abstractmethod
    def unplug(self, step: Unplug) -> Outcome: ...

    @abstractmethod
    def call(self, name: str, args: list[int], nret: int) -> list[int]:
        """An RTAS call that points at no buffer (or one made with a shape that uses none)."""

    @abstractmethod
    def reset_work_area(self, index: int) -> None:
        """A fresh work area: cell 0 = index, cell 1 = 0, the rest zero."""

    @abstractmethod
    def configure_call(self, extent: int) -> tuple[int, bytes]:
        """ibm,configure-connector(WA_ADDR, extent) on the current work area: status and the work area after."""

    @abstractmethod
    def check_exception_call(self, args: list[int]) -> tuple[int, bytes, int]:
        """check-exception with args[4] = BUF_ADDR: status, the log within the buffer, bytes written past it."""

    @abstractmethod
    def device_tree(self) -> bytes:
        """The boot device tree (DTB) of the scenario's geometry."""

    @abstractmethod
    def take_events(self, flush: bool) -> list[str]:
        """Management events since the last call, as "QMP_EVENT:alias" (``flush``: wait for deferred ones)."""

    def side_info(self) -> dict[str, Any]:
        """Extra (uncompared) information for the end record."""
        return {}

    # ---- helpers ------------------------------------------------------------------------

    def alias_of(self, device_id: str) -> str:
        for alias, sides in self.scenario.ids.items():
            if sides.get(self.name) == device_id:
                return alias
        return device_id

    # ---- running ------------------------------------------------------------------------

    def run(self, timeout: float = SCENARIO_TIMEOUT) -> Trace:
        """Run every step; a side that fails (exits, hangs, times out) leaves the rest "not run"."""
        started = time.monotonic()
        meta = self.start()
        records: list[Record] = []
        failed: str | None = None
        try:
            for nstep in self.scenario.steps:
                if failed is not None:
                    records.append(Record(nstep.number, nstep.label(), _kind(nstep), {"not_run": failed}))
                    continue
                try:
                    if time.monotonic() - started > timeout:
                        raise SideFailure("timeout", f"scenario exceeded {timeout:g} s")
                    records.append(self.execute(nstep))
                except SideFailure as failure:
                    failed = f"{self.name} {failure.kind} at step {nstep.number}"
                    records.append(
                        Record(
                            nstep.number,
                            nstep.label(),
                            _kind(nstep),
                            {"crashed": failure.kind},
                            {"error": str(failure)},
                        )
                    )
            end_number = len(self.scenario.steps) + 1
            if failed is None:
                try:
                    events = self.take_events(flush=True)
                    records.append(Record(end_number, "end: late events", "end", {"events": events}, self.side_info()))
                except SideFailure as failure:
                    failed = failure.kind
                    records.append(
                        Record(
                            end_number, "end: late events", "end", {"crashed": failure.kind}, {"error": str(failure)}
                        )
                    )
            else:
                records.append(Record(end_number, "end: late events", "end", {"not_run": failed}, self.side_info()))
        finally:
            self.stop()
        meta["seconds"] = round(time.monotonic() - started, 2)
        return Trace(self.name, self.scenario.name, records, meta)

    def execute(self, nstep: NumberedStep, record: bool = True) -> Record:
        """Run one step and normalize what it did."""
        step = nstep.step
        data: dict[str, Any]
        info: dict[str, Any] = {}
        flush = False
        if isinstance(step, Plug | Unplug):
            outcome = self.plug(step) if isinstance(step, Plug) else self.unplug(step)
            data = {"ok": outcome.ok}
            if outcome.ok and outcome.drc_indexes:
                data["drc_indexes"] = [hex_index(i) for i in outcome.drc_indexes]
            if not outcome.ok:
                data["error"] = outcome.error
                info["message"] = outcome.message
            if step.expect_error != (not outcome.ok):
                info["unexpected"] = (
                    "succeeded, but the scenario expects an error"
                    if outcome.ok
                    else ("failed, but the scenario expects success")
                )
            flush = isinstance(step, Unplug)
        elif isinstance(step, Rtas):
            data, info = self._rtas(step)
            flush = _may_release(step)
        elif isinstance(step, Configure):
            data = self._configure(step)
        elif isinstance(step, CheckException):
            data, info = self._check_exception(step)
        else:
            data = self._survey(step)
        data["events"] = self.take_events(flush=flush)
        self.done.append(nstep)
        return Record(nstep.number, nstep.label(), _kind(nstep), data, info)

    def _rtas(self, step: Rtas) -> tuple[dict[str, Any], dict[str, Any]]:
        args = [WA_ADDR if a == "wa" else BUF_ADDR if a == "buf" else a for a in step.args]
        data: dict[str, Any] = {"args": [_show_cell(a) for a in step.args]}
        info: dict[str, Any] = {}
        standard = step.name in DR_CALLS and step.nret == DEFAULT_NRET[step.name]
        if step.name == "ibm,configure-connector" and standard and len(args) == 2 and step.args[0] == "wa":
            status, area = self.configure_call(args[1])
            data["rets"] = [status]
            if status in (1, 2, 3):
                data["item"] = cc_call(status, area, read_item(status, area))
        elif step.name == "check-exception" and len(args) in (6, 7) and standard and step.args[4] == "buf":
            status, log, beyond = self.check_exception_call(args)
            data["rets"] = [status]
            if status == 0:
                data["log"] = decode_log(log)
                data["written_beyond_buffer"] = beyond
                info.update(log_info(log))
        else:
            data["rets"] = self.call(step.name, args, step.nret)
        return data, info

    def _configure(self, step: Configure) -> dict[str, Any]:
        if step.fresh:
            self.reset_work_area(step.index)
        calls: list[dict[str, Any]] = []
        area = b""
        limit = step.calls if step.calls is not None else CC_MAX_CALLS
        while len(calls) < limit:
            status, area = self.configure_call(step.extent)
            calls.append(cc_call(status, area, read_item(status, area) if status in (1, 2, 3) else None))
            if status not in (1, 2, 3, 4):
                break
        data: dict[str, Any] = {"drc_index": hex_index(step.index), "calls": calls}
        node = node_from_calls(calls)
        if node is not None:
            data["node"] = node
        if area:
            data["work_area_sha256"] = work_area_digest(area)
        return data

    def _check_exception(self, step: CheckException) -> tuple[dict[str, Any], dict[str, Any]]:
        args = [0x500, 0, step.mask, 0, BUF_ADDR, step.length, 0][: step.nargs]
        calls: list[dict[str, Any]] = []
        info: dict[str, Any] = {}
        for _ in range(DRAIN_MAX_CALLS if step.drain else 1):
            if len(args) in (6, 7):
                status, log, beyond = self.check_exception_call(args)
            else:
                status, log, beyond = self.call("check-exception", args, 1)[0], b"", 0
            call: dict[str, Any] = {"rc": status}
            if status == 0:
                call["log"] = decode_log(log)
                call["written_beyond_buffer"] = beyond
                info[f"log{len(calls)}"] = log_info(log)
            calls.append(call)
            if status != 0:
                break
        return {"calls": calls}, info

    def _survey(self, step: Survey) -> dict[str, Any]:
        data: dict[str, Any] = {}
        indexes: set[int] = set(step.probe)
        if step.dtb:
            nodes = nodes_by_path(read_dtb(self.device_tree()))
            tables: dict[str, Any] = {}
            orders: dict[str, Any] = {}
            for path, properties in sorted(nodes.items()):
                if "ibm,drc-indexes" in properties:
                    entries, order = drc_table(properties)
                    tables[path] = {"entries": entries}
                    orders[path] = order
                    indexes.update(int(i, 16) for i in entries)
            if step.order:
                return {"drc_array_order": orders}
            data["drc_nodes"] = tables
            rtas = nodes.get("/rtas", {})
            data["rtas_tokens"] = {
                name: f"{struct.unpack('>I', rtas[name])[0]:#x}" if len(rtas.get(name, b"")) == 4 else None
                for name in DR_CALL_NAMES
            }
        data["sense"] = {hex_index(i): self.call("get-sensor-state", [DR_ENTITY_SENSE, i], 2) for i in sorted(indexes)}
        return data


def _kind(nstep: NumberedStep) -> str:
    step = nstep.step
    return {
        Plug: "plug",
        Unplug: "unplug",
        Rtas: "rtas",
        Configure: "configure",
        CheckException: "check_exception",
        Survey: "survey",
    }[type(step)]


def _may_release(step: Rtas) -> bool:
    """A set-indicator that can release a device (whose DEVICE_DELETED QEMU may emit late)."""
    if step.name != "set-indicator" or len(step.args) != 3:
        return False
    indicator, index, value = (_cell(a) for a in step.args)
    physical = drc_type(index) == "pci"
    return value == 0 and ((indicator == 9003 and not physical) or (indicator == 9001 and physical))


def _cell(arg: int | str) -> int:
    return arg if isinstance(arg, int) else 0


def _show_cell(arg: int | str) -> int | str:
    return hex_index(arg) if isinstance(arg, int) and arg >= 0x1000_0000 else arg


def new_work_area(index: int) -> bytes:
    return struct.pack(">II", index, 0) + bytes(WORK_AREA_SIZE - 8)
