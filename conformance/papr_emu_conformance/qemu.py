"""The QEMU 7.2 side: a real ``pseries`` machine, no guest, RTAS through qtest and hotplug through QMP.

One QEMU per scenario. A ``device_add`` the scenario expects to fail runs in a fresh QEMU
that first replays the steps before it (a failing device_add waits for an RCU grace period,
which a running vCPU can stall for minutes; see docs/qemu-7.2/README.md), so a hang cannot
take the rest of the scenario with it. Every read from QEMU is bounded by a timeout.

Deferred events: QEMU emits DEVICE_DELETED when the device object is finalized. For PCI
functions and PHBs the last references go away in RCU callbacks, so the event comes a few
tens of milliseconds after the RTAS call or device_del that released the device. After such
steps the driver drains the RCU callbacks the one way QMP offers: ``qmp_device_add`` calls
``drain_call_rcu()`` when a device_add fails, so a device_add of a driver that does not exist
returns only after every pending callback (and its DEVICE_DELETED) has run. With the vCPU
paused this cannot stall; it changes no state.
"""

from __future__ import annotations

import struct
from typing import Any

from papr_emu_client.constants import LMB_SIZE

from .qemu_process import (
    DEFAULT_BINARY,
    IO_TIMEOUT,
    QemuError,
    QemuExited,
    QemuHung,
    QemuProcess,
    QmpError,
    dump_dtb,
    find_qemu,
    qemu_version,
)
from .scenario import CpuCoreSpec, DimmSpec, NvdimmSpec, PciSpec, PhbSpec, Plug, Scenario, Survey, Unplug
from .side import BUF_ADDR, QMP_EVENTS, WA_ADDR, Outcome, Side, SideFailure, new_work_area

SENTINEL = 0xA5  # fills the event buffer and what follows it, to see how far QEMU writes
OVERRUN_WINDOW = 4096
FLUSH_DRIVER = "papr-conformance-rcu-flush"  # no such device model: device_add fails and drains RCU
FLUSH_ROUNDS = 4  # at most this many drains per step


class QemuMissing(RuntimeError):
    """No QEMU binary: the QEMU side cannot run."""


class QemuSide(Side):
    """A QEMU 7.2 process playing the platform."""

    name = "qemu"

    def __init__(self, scenario: Scenario, binary: str | None = None, io_timeout: float = IO_TIMEOUT) -> None:
        super().__init__(scenario)
        found = find_qemu(binary)
        if found is None:
            raise QemuMissing(f"{binary or DEFAULT_BINARY} not found (apt-get install qemu-system-ppc)")
        self.binary = found
        self.io_timeout = io_timeout
        self.proc: QemuProcess | None = None
        self._phb_ids: dict[int, str] = {}
        self._forked_events: list[str] = []
        self._other_events: list[str] = []
        self._stderr = ""
        self._dtb: bytes | None = None
        self._backends = 0

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        self.proc = self._new_process()
        return {"qemu": qemu_version(self.binary), "geometry": " ".join(self.scenario.geometry.qemu_args())}

    def _new_process(self) -> QemuProcess:
        proc = QemuProcess(self.binary, self.scenario.geometry.qemu_args(), self.io_timeout)
        try:
            proc.start()
        except QemuError as error:
            raise SideFailure("exited", f"QEMU did not start: {error}") from error
        return proc

    def stop(self) -> None:
        if self.proc is not None:
            self._stderr = self.proc.stderr_text()
            self.proc.close()
            self.proc = None

    def side_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if self.proc is not None:
            self._stderr = self.proc.stderr_text()
        if self._stderr:
            info["stderr"] = self._stderr
        if self._other_events:
            info["other_events"] = self._other_events
        return info

    def _q(self) -> QemuProcess:
        if self.proc is None:
            raise SideFailure("exited", "QEMU is not running")
        return self.proc

    def _guard(self, error: QemuError) -> SideFailure:
        kind = "hung" if isinstance(error, QemuHung) else "exited"
        return SideFailure(kind, str(error))

    # ---- hotplug ------------------------------------------------------------------------

    def plug(self, step: Plug) -> Outcome:
        if step.expect_error:
            return self._plug_in_fresh_qemu(step)
        try:
            return self._plug(step)
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error

    def _plug_in_fresh_qemu(self, step: Plug) -> Outcome:
        """Replay the steps so far in a new QEMU, make the failing device_add there, and throw it away."""
        fork = QemuSide(self.scenario, self.binary, self.io_timeout)
        fork.start()
        try:
            for done in self.done:
                if isinstance(done.step, Survey) or (isinstance(done.step, Plug) and done.step.expect_error):
                    continue
                fork.execute(done)
            fork.take_events(flush=False)
            try:
                outcome = fork._plug(step)
            except (QemuExited, QemuHung) as error:
                raise self._guard(error) from error
            self._forked_events = fork.take_events(flush=not outcome.ok)
            return outcome
        finally:
            fork.stop()

    def _plug(self, step: Plug) -> Outcome:
        q = self._q()
        device_id = self.scenario.device_id(step.device_id, self.name)
        spec = step.spec
        arguments: dict[str, Any] = {"id": device_id}
        backend = ""
        if isinstance(spec, DimmSpec | NvdimmSpec):
            self._backends += 1
            backend = f"papr-conf-mem{self._backends}"  # unique, so a duplicate device id fails on the device
            backend_size = spec.size + (spec.label_size if isinstance(spec, NvdimmSpec) else 0)
            try:
                q.qmp("object-add", **{"qom-type": "memory-backend-ram", "id": backend, "size": backend_size})
            except QmpError as error:
                return Outcome(False, "refused", f"object-add: {error.desc}")
            if isinstance(spec, NvdimmSpec):
                arguments.update(driver="nvdimm", memdev=backend, uuid=spec.uuid)
                arguments["label-size"] = spec.label_size
            else:
                arguments.update(driver="pc-dimm", memdev=backend)
            if spec.slot is not None:
                arguments["slot"] = spec.slot
            if spec.address is not None:
                arguments["addr"] = spec.address
        elif isinstance(spec, CpuCoreSpec):
            arguments.update(driver=self._core_type(), **{"core-id": spec.core_id})
        elif isinstance(spec, PciSpec):
            bus = "pci.0" if spec.phb == 0 else f"{self._phb_ids.get(spec.phb, f'phb{spec.phb}')}.0"
            arguments.update(driver=spec.model, bus=bus, addr=f"{spec.slot:x}.{spec.function:x}")
            if spec.multifunction:
                arguments["multifunction"] = True
        else:
            arguments.update(driver="spapr-pci-host-bridge", index=spec.index)
        try:
            q.qmp("device_add", **arguments)
        except QmpError as error:
            if backend:
                try:
                    q.qmp("object-del", id=backend)
                except QmpError:
                    pass
            return Outcome(False, _error_kind(error), error.desc)
        return Outcome(True, drc_indexes=self._drc_indexes(device_id, spec))

    def _core_type(self) -> str:
        cpus = self._q().qmp("query-hotpluggable-cpus")
        return str(cpus[0]["type"])

    def _drc_indexes(self, device_id: str, spec: Any) -> tuple[int, ...]:
        if isinstance(spec, DimmSpec):
            path = f"/machine/peripheral/{device_id}"
            address = int(self._q().qmp("qom-get", path=path, property="addr"))
            size = int(self._q().qmp("qom-get", path=path, property="size"))
            return tuple(0x8000_0000 | ((address + n) >> 28) for n in range(0, size, LMB_SIZE))
        if isinstance(spec, NvdimmSpec):
            slot = int(self._q().qmp("qom-get", path=f"/machine/peripheral/{device_id}", property="slot"))
            return (0x9000_0000 | slot,)
        if isinstance(spec, CpuCoreSpec):
            return (0x1000_0000 | spec.core_id,)
        if isinstance(spec, PciSpec):
            return (0x4000_0000 | spec.phb << 16 | spec.slot << 3 | spec.function,)
        assert isinstance(spec, PhbSpec)
        self._phb_ids[spec.index] = device_id
        return (0x2000_0000 | spec.index,)

    def unplug(self, step: Unplug) -> Outcome:
        q = self._q()
        device_id = self.scenario.device_id(step.device_id, self.name)
        try:
            if device_id.startswith("@core-id:"):  # a core without id (the boot core): by QOM path
                core_id = int(device_id.split(":", 1)[1])
                cpus = q.qmp("query-hotpluggable-cpus")
                device_id = next(c["qom-path"] for c in cpus if c["props"].get("core-id") == core_id)
            q.qmp("device_del", id=device_id)
        except QmpError as error:
            return Outcome(False, _error_kind(error), error.desc)
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error
        return Outcome(True)

    # ---- RTAS ---------------------------------------------------------------------------

    def call(self, name: str, args: list[int], nret: int) -> list[int]:
        try:
            return self._q().rtas(name, args, nret)
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error

    def reset_work_area(self, index: int) -> None:
        try:
            self._q().write(WA_ADDR, new_work_area(index))
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error

    def configure_call(self, extent: int) -> tuple[int, bytes]:
        q = self._q()
        try:
            (status,) = q.rtas("ibm,configure-connector", [WA_ADDR, extent], 1)
            return status, q.read(WA_ADDR, 4096)
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error

    def check_exception_call(self, args: list[int]) -> tuple[int, bytes, int]:
        q = self._q()
        length = args[5]
        window = length + OVERRUN_WINDOW
        try:
            q.memset(BUF_ADDR, window, SENTINEL)
            (status,) = q.rtas("check-exception", args, 1)
            memory = q.read(BUF_ADDR, window)
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error
        if status != 0:
            return status, b"", 0
        log_length = 8 + struct.unpack_from(">I", memory, 4)[0] if length >= 8 else length
        beyond = memory[length:]
        written_beyond = max((n + 1 for n, b in enumerate(beyond) if b != SENTINEL), default=0)
        return status, memory[: min(length, log_length)], written_beyond

    def device_tree(self) -> bytes:
        if self._dtb is None:
            try:
                self._dtb = dump_dtb(self.binary, self.scenario.geometry.qemu_args(), timeout=3 * self.io_timeout)
            except QemuError as error:
                raise self._guard(error) from error
        return self._dtb

    # ---- events -------------------------------------------------------------------------

    def _flush_rcu(self, q: QemuProcess) -> None:
        try:
            q.qmp("device_add", driver=FLUSH_DRIVER)
        except QmpError:
            pass  # expected: "not a valid device model name", after drain_call_rcu()

    def take_events(self, flush: bool) -> list[str]:
        q = self._q()
        try:
            raw = []
            if flush:
                # An RCU callback can queue another (a PHB's last references go in stages), which a
                # single drain does not wait for: drain until a round brings no new event.
                for round_ in range(FLUSH_ROUNDS):
                    self._flush_rcu(q)
                    batch = q.take_events()
                    raw.extend(batch)
                    if round_ and not batch:
                        break
            else:
                raw = q.take_events()
        except (QemuExited, QemuHung) as error:
            raise self._guard(error) from error
        events = self._forked_events
        self._forked_events = []
        for event in raw:
            name, data = event["event"], event.get("data", {})
            if name in QMP_EVENTS and data.get("device"):
                events.append(f"{name}:{self.alias_of(str(data['device']))}")
            elif not (name == "DEVICE_DELETED" and "device" not in data):  # QOM children have no id
                self._other_events.append(name)
        return events


def _error_kind(error: QmpError) -> str:
    return "not-found" if error.error_class == "DeviceNotFound" else "refused"
