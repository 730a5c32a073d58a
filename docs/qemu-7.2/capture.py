#!/usr/bin/env python3
"""Capture ground-truth PAPR DRC / RTAS behaviour from a real QEMU 7.2 pseries machine.

No guest kernel runs: QEMU is started with ``-qtest`` (qtest accelerator) and the script
plays the guest by issuing RTAS calls through the qtest ``rtas`` line command, with
arguments/returns as big-endian cells in guest RAM. Hotplug is driven over QMP.

Needs papr-emu installed (``pip install -e .`` at the repository root; Python 3.11): the
QEMU plumbing (start-up, qtest, QMP, dumpdtb) is ``papr_emu_conformance.qemu_process``,
shared with the conformance suite. Usage::

    python capture.py [--qemu qemu-system-ppc64] [--out DIR] [--only PART ...]

PART is one of: fragments, dtb, smp, errors (default: all). Outputs in DIR
(default: the directory of this script):

* fragments.json        configure-connector sequences, work areas, event logs, QMP events
* default-pre-cas.dtb/.dts   ``dumpdtb`` of the default geometry (dts needs ``dtc``)
* smp-threads.json      ``-smp 2,maxcpus=8,threads=2`` CPU DRC topology (or the error)
* errors.json           QMP error texts of failing hotplug requests (fresh QEMU per case)

Every QEMU run is bounded: every socket read has a timeout and a hung QEMU is killed
(by its own pid) and reported as ``"hung": true``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papr_emu_conformance.qemu_process import (
    IO_TIMEOUT,
    QemuExited,
    QemuHung,
    QemuProcess,
    QemuStartError,
    QmpError,
    machine_argv,
    qemu_version,
    run_dumpdtb,
)

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

DEFAULT_GEOMETRY: list[str] = ["-m", "1G,slots=4,maxmem=4G", "-smp", "1,maxcpus=4"]

# Sensor / indicator tokens
DR_ENTITY_SENSE = 9003
ISOLATION_STATE = 9001
DR_INDICATOR = 9002
ALLOCATION_STATE = 9003

# Guest-physical scratch addresses (well clear of SLOF at 0 and FDT/RTAS near the RMA top);
# the RTAS argument/return cells are qemu_process's ARGS_ADDR 0x1000000 / RETS_ADDR 0x1000100.
WA_ADDR = 0x0101_0000  # 4 KiB aligned configure-connector work area
EVBUF_ADDR = 0x0102_0000  # check-exception buffer
WA_SIZE = 4096
EVBUF_SIZE = 2048

# This Debian build has no qtest accelerator ("-accel qtest: invalid accelerator"), so
# with -qtest the machine runs under TCG and SLOF executes on the boot vCPU. A vCPU
# spinning inside cpu_exec() holds an RCU read-side section, which (a) stalls any
# failing device_add (qmp_device_add -> drain_call_rcu) and (b) delays DEVICE_DELETED
# of PCI devices / PHB children (finalised from RCU callbacks). QemuProcess therefore
# pauses the VM with QMP "stop" right after the handshake; --running (False here)
# resumes it at once with QMP "cont".
STOP_CPUS_DEFAULT = True
CC_MAX_CALLS = 200  # guard against an endless configure-connector loop


# --------------------------------------------------------------------------------------
# QEMU process with qtest + QMP (qemu_process.QemuProcess, plus what capture needs)
# --------------------------------------------------------------------------------------


class Qemu(QemuProcess):
    """One QEMU process (default geometry unless given). Use as a context manager."""

    def __init__(self, binary: str, geometry: list[str] | None = None) -> None:
        super().__init__(binary, list(DEFAULT_GEOMETRY if geometry is None else geometry))

    def __enter__(self) -> Qemu:
        self.start()
        return self

    def start(self) -> None:
        """QemuProcess.start (which pauses the vCPU), then resume it for --running."""
        super().start()
        if STOP_CPUS_DEFAULT:
            return
        try:
            self.qmp("cont")
        except BaseException:
            self.close()
            raise
        self.events = [e for e in self.events if e.get("event") != "RESUME"]

    def take_events(self, settle: float = 0.0) -> list[dict[str, Any]]:
        """Return (and clear) the QMP events seen so far, timestamps dropped.

        Unlike QemuProcess.take_events, no QMP round trip with settle == 0. With settle > 0,
        keep the main loop busy for that long (query-status pings) so that late
        (bottom-half / RCU) events can arrive.
        """
        end = time.monotonic() + settle
        while time.monotonic() < end:
            self.qmp("query-status")
            time.sleep(0.05)
        evs = [{"event": e["event"], "data": e.get("data", {})} for e in self.events]
        self.events.clear()
        return evs


# --------------------------------------------------------------------------------------
# Guest-side helpers (the "guest" is this script)
# --------------------------------------------------------------------------------------


def get_sensor(q: Qemu, sensor: int, index: int) -> tuple[int, int]:
    st, val = q.rtas("get-sensor-state", [sensor, index], 2)
    return st, val


def set_indicator(q: Qemu, indicator: int, index: int, state: int) -> int:
    return q.rtas("set-indicator", [indicator, index, state], 1)[0]


def check_exception(q: Qemu, mask: int = 0xFFFF_FFFF) -> tuple[int, bytes | None]:
    q.memset(EVBUF_ADDR, EVBUF_SIZE, 0)
    rc = q.rtas("check-exception", [0x500, 0, mask, 0, EVBUF_ADDR, EVBUF_SIZE], 1)[0]
    if rc != 0:
        return rc, None
    hdr = q.read(EVBUF_ADDR, 8)
    ext_len = struct.unpack(">I", hdr[4:8])[0]
    return rc, q.read(EVBUF_ADDR, 8 + min(ext_len, EVBUF_SIZE - 8))


def drain_logs(q: Qemu) -> list[dict[str, Any]]:
    """Call check-exception until it returns non-zero; return the logs."""
    out: list[dict[str, Any]] = []
    for _ in range(64):
        rc, log = check_exception(q)
        if log is None:
            out.append({"rc": rc})
            break
        out.append({"rc": rc, "hex": log.hex(), "decoded": decode_log(log)})
    return out


def decode_log(log: bytes) -> dict[str, Any]:
    """Decode the fields of a QEMU hotplug event log that vary between events."""
    d: dict[str, Any] = {
        "summary": f"0x{struct.unpack('>I', log[0:4])[0]:08x}",
        "extended_length": struct.unpack(">I", log[4:8])[0],
        "total_length": len(log),
    }
    if len(log) >= 0x74 and log[0x60:0x62] == b"HP":
        d.update(
            {
                "ph_creation_date_bcd": log[0x20:0x24].hex(),
                "ph_creation_time_bcd": log[0x24:0x28].hex(),
                "ph_plid_raw": log[0x40:0x44].hex(),
                "hp_type": log[0x68],
                "hp_action": log[0x69],
                "hp_id_type": log[0x6A],
                "hp_reserved": log[0x6B],
                "hp_id_word0": f"0x{struct.unpack('>I', log[0x6C:0x70])[0]:08x}",
                "hp_id_word1": f"0x{struct.unpack('>I', log[0x70:0x74])[0]:08x}",
            }
        )
    return d


@dataclass
class CCStep:
    rc: int
    name: str | None
    value_hex: str | None

    def as_json(self) -> dict[str, Any]:
        return {"rc": self.rc, "name": self.name, "value_hex": self.value_hex}


def configure_connector(q: Qemu, index: int, reset_wa: bool = True) -> tuple[list[CCStep], bytes | None]:
    """Run the configure-connector loop like Linux does; return steps and the
    raw work area after the first rc=3 call."""
    if reset_wa:
        q.memset(WA_ADDR, WA_SIZE, 0)
        q.write(WA_ADDR, struct.pack(">II", index, 0))
    steps: list[CCStep] = []
    first_prop_wa: bytes | None = None
    for _ in range(CC_MAX_CALLS):
        rc = q.rtas("ibm,configure-connector", [WA_ADDR, 0], 1)[0]
        name = value = None
        if rc in (1, 2, 3):
            wa = q.read(WA_ADDR, WA_SIZE)
            name_off = struct.unpack(">I", wa[8:12])[0]
            end = wa.index(b"\0", name_off)
            name = wa[name_off:end].decode("ascii", errors="replace")
            if rc == 3:
                length, val_off = struct.unpack(">II", wa[12:20])
                value = wa[val_off : val_off + length].hex()
                if first_prop_wa is None:
                    first_prop_wa = wa
        steps.append(CCStep(rc, name, value))
        if rc not in (1, 2, 3, 4):
            break
    return steps, first_prop_wa


def steps_to_tree(steps: list[CCStep]) -> dict[str, Any]:
    """Rebuild the fragment as nested dicts (for convenience; the steps are canonical)."""
    root: dict[str, Any] = {"children": []}
    stack = [root]
    last: dict[str, Any] | None = None
    for s in steps:
        if s.rc == 2:
            node: dict[str, Any] = {"name": s.name, "properties": [], "children": []}
            stack[-1]["children"].append(node)
            stack.append(node)
            last = node
        elif s.rc == 3 and last is not None:
            stack[-1]["properties"].append([s.name, s.value_hex])
        elif s.rc in (0, 4):
            stack.pop()
    return root["children"][0] if root["children"] else {}


def be_cells(hexstr: str) -> list[int]:
    b = bytes.fromhex(hexstr)
    return list(struct.unpack(f">{len(b) // 4}I", b))


def drc_strings(hexstr: str) -> list[str]:
    """Decode an ibm,drc-names / drc-types value: cell count then NUL strings."""
    b = bytes.fromhex(hexstr)
    n = struct.unpack(">I", b[:4])[0]
    parts = b[4:].split(b"\0")
    return [p.decode() for p in parts[:n]]


# --------------------------------------------------------------------------------------
# Part 1: fragments
# --------------------------------------------------------------------------------------


@dataclass
class DeviceCase:
    key: str
    description: str
    objects: list[dict[str, Any]]
    device: dict[str, Any]
    logical: bool


FRAGMENT_CASES: list[DeviceCase] = [
    DeviceCase(
        "lmb_dimm256",
        "first LMB of a 256 MiB pc-dimm",
        [{"qom-type": "memory-backend-ram", "id": "mem1", "size": 256 << 20}],
        {"driver": "pc-dimm", "memdev": "mem1", "id": "dimm1"},
        True,
    ),
    DeviceCase(
        "cpu_core1",
        "power9_v2.0-spapr-cpu-core core-id=1",
        [],
        {"driver": "power9_v2.0-spapr-cpu-core", "core-id": 1, "id": "core1"},
        True,
    ),
    DeviceCase(
        "pci_e1000_addr3",
        "e1000 at addr=3 on PHB 0 (pci.0)",
        [],
        {"driver": "e1000", "id": "nic1", "bus": "pci.0", "addr": "3"},
        False,
    ),
    DeviceCase(
        "pci_virtio_net_addr4",
        "virtio-net-pci at addr=4 on PHB 0 (pci.0)",
        [],
        {"driver": "virtio-net-pci", "id": "nic2", "bus": "pci.0", "addr": "4"},
        False,
    ),
    DeviceCase(
        "phb1",
        "spapr-pci-host-bridge index=1",
        [],
        {"driver": "spapr-pci-host-bridge", "index": 1, "id": "phb1"},
        True,
    ),
]


def drc_index_for(q: Qemu, case: DeviceCase) -> int:
    """DRC index the guest would act on, derived from the device's placement
    (the ADD event log's identifier must agree; see logs_device_add)."""
    drv = case.device["driver"]
    if drv == "pc-dimm":
        addr = int(q.qmp("qom-get", path=f"/machine/peripheral/{case.device['id']}", property="addr"))
        return 0x8000_0000 | (addr >> 28)
    if drv.endswith("-spapr-cpu-core"):
        return 0x1000_0000 | int(case.device["core-id"])
    if drv == "spapr-pci-host-bridge":
        return 0x2000_0000 | int(case.device["index"])
    # PCI on PHB 0, bus 0: index = 0x40000000 | (phb<<16) | (bus<<8) | devfn
    slot, _, fn = str(case.device["addr"]).partition(".")
    return 0x4000_0000 | (int(slot, 16) << 3) | int(fn or "0", 16)


def capture_fragment(qemu_bin: str, case: DeviceCase) -> dict[str, Any]:
    res: dict[str, Any] = {
        "description": case.description,
        "qmp_objects": case.objects,
        "qmp_device_add": case.device,
    }
    with Qemu(qemu_bin) as q:
        res["logs_before"] = drain_logs(q)
        res["events_boot"] = q.take_events()
        for obj in case.objects:
            q.qmp("object-add", **obj)
        q.qmp("device_add", **case.device)
        res["events_device_add"] = q.take_events(settle=0.3)
        res["logs_device_add"] = drain_logs(q)
        idx = drc_index_for(q, case)
        res["drc_index"] = f"0x{idx:08x}"

        acq: list[dict[str, Any]] = []
        st, val = get_sensor(q, DR_ENTITY_SENSE, idx)
        acq.append({"call": "get-sensor-state", "args": [DR_ENTITY_SENSE, f"0x{idx:08x}"], "rets": [st, val]})
        if case.logical:
            rc = set_indicator(q, ALLOCATION_STATE, idx, 1)
            acq.append({"call": "set-indicator", "args": [ALLOCATION_STATE, f"0x{idx:08x}", 1], "rets": [rc]})
        rc = set_indicator(q, ISOLATION_STATE, idx, 1)
        acq.append({"call": "set-indicator", "args": [ISOLATION_STATE, f"0x{idx:08x}", 1], "rets": [rc]})
        st, val = get_sensor(q, DR_ENTITY_SENSE, idx)
        acq.append({"call": "get-sensor-state", "args": [DR_ENTITY_SENSE, f"0x{idx:08x}"], "rets": [st, val]})
        res["acquire"] = acq

        steps, wa = configure_connector(q, idx)
        res["cc_calls"] = len(steps)
        res["cc_steps"] = [s.as_json() for s in steps]
        res["work_area_after_first_rc3_hex"] = wa.hex() if wa is not None else None
        res["fragment_tree"] = steps_to_tree(steps)
        res["events_after_cc"] = q.take_events()

        # Second loop on the now CONFIGURED DRC: does it replay identically?
        steps2, _ = configure_connector(q, idx)
        res["cc_replay_identical"] = [s.as_json() for s in steps2] == res["cc_steps"]

        # Unplug: device_del, then play the guest's release sequence.
        q.qmp("device_del", id=case.device["id"])
        res["events_device_del"] = q.take_events(settle=0.3)
        res["logs_device_del"] = drain_logs(q)
        rel: list[dict[str, Any]] = []
        rc = set_indicator(q, ISOLATION_STATE, idx, 0)
        rel.append({"call": "set-indicator", "args": [ISOLATION_STATE, f"0x{idx:08x}", 0], "rets": [rc]})
        if case.logical:
            rc = set_indicator(q, ALLOCATION_STATE, idx, 0)
            rel.append({"call": "set-indicator", "args": [ALLOCATION_STATE, f"0x{idx:08x}", 0], "rets": [rc]})
        st, val = get_sensor(q, DR_ENTITY_SENSE, idx)
        rel.append({"call": "get-sensor-state", "args": [DR_ENTITY_SENSE, f"0x{idx:08x}"], "rets": [st, val]})
        res["release"] = rel
        res["events_after_release"] = q.take_events(settle=3.0)
        res["logs_after_release"] = drain_logs(q)
        res["qemu_stderr"] = q.stderr_text()
    return res


def part_fragments(qemu_bin: str, out: Path) -> None:
    data: dict[str, Any] = {
        "qemu_version": qemu_version(qemu_bin),
        "machine_line": " ".join(machine_argv(qemu_bin, "Q", "M", DEFAULT_GEOMETRY)),
        "notes": [
            "One fresh QEMU per device. Addresses: args 0x1000000, rets 0x1000100, "
            "work area 0x1010000 (zeroed, wa[0]=index, wa[1]=0 before the first call), "
            "check-exception buffer 0x1020000 len 2048, mask 0xffffffff.",
            "cc_steps: every ibm,configure-connector call in wire order; name is the string "
            "at wa[2] for rc 1/2/3, value_hex the wa[3] bytes at wa[4] for rc 3.",
            "Event log PH creation date/time are BCD from the guest RTC (wall clock) and "
            "differ per run; everything else is deterministic.",
            "The vCPU is paused with QMP 'stop' after the handshake (see STOP_CPUS_DEFAULT "
            "in capture.py); RTAS via qtest and hotplug work the same while paused.",
        ],
        "vcpu_paused_with_qmp_stop": STOP_CPUS_DEFAULT,
        "devices": {},
    }
    for case in FRAGMENT_CASES:
        print(f"[fragments] {case.key}", file=sys.stderr)
        data["devices"][case.key] = capture_fragment(qemu_bin, case)
    write_json(out / "fragments.json", data)


# --------------------------------------------------------------------------------------
# Part 2: dumpdtb
# --------------------------------------------------------------------------------------


def dump_dtb(qemu_bin: str, dtb: Path, geometry: list[str]) -> dict[str, Any]:
    """Run QEMU with dumpdtb=FILE (it exits after writing the tree)."""
    done = run_dumpdtb(qemu_bin, geometry, dtb)
    return {
        "returncode": done.returncode,
        "stderr": "\n".join(ln for ln in done.stderr.decode(errors="replace").splitlines() if not ln.startswith("[")),
    }


def dtb_to_dts(dtb: Path, dts: Path) -> bool:
    if shutil.which("dtc") is None:
        return False
    p = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", str(dts), str(dtb)], capture_output=True, timeout=30)
    return p.returncode == 0


def part_dtb(qemu_bin: str, out: Path) -> None:
    dtb = out / "default-pre-cas.dtb"
    info = dump_dtb(qemu_bin, dtb, DEFAULT_GEOMETRY)
    print(f"[dtb] {info['returncode']} {info['stderr']}", file=sys.stderr)
    dtb_to_dts(dtb, out / "default-pre-cas.dts")


# --------------------------------------------------------------------------------------
# Part 3: -smp 2,maxcpus=8,threads=2
# --------------------------------------------------------------------------------------

SMP_GEOMETRY = ["-m", "1G,slots=4,maxmem=4G", "-smp", "2,maxcpus=8,threads=2"]
# Fallback when threads>1 is refused: same CPU counts with one thread per core.
SMP_FALLBACK = ["-m", "1G,slots=4,maxmem=4G", "-smp", "2,maxcpus=8"]


def parse_dts_cpu_drcs(dts_text: str) -> dict[str, str]:
    """Pull the ibm,drc-* properties of the /cpus node out of dtc output."""
    out: dict[str, str] = {}
    depth = 0
    in_cpus = False
    for line in dts_text.splitlines():
        s = line.strip()
        if not in_cpus and s == "cpus {":
            in_cpus, depth = True, 0
        if in_cpus:
            if depth == 1 and s.startswith("ibm,drc-"):
                k, _, v = s.partition(" = ")
                out[k] = v.rstrip(";")
            depth += s.count("{") - s.count("}")
            if depth <= 0:
                in_cpus = False
    return out


def cpu_topology(qemu_bin: str, geometry: list[str]) -> dict[str, Any]:
    res: dict[str, Any] = {"geometry": geometry}
    try:
        with Qemu(qemu_bin, geometry) as q:
            res["started"] = True
            res["query_hotpluggable_cpus"] = q.qmp("query-hotpluggable-cpus")
            res["query_cpus_fast"] = [
                {k: c.get(k) for k in ("cpu-index", "qom-path", "props")} for c in q.qmp("query-cpus-fast")
            ]
            probes = {}
            for core in range(0, 9):
                st, val = get_sensor(q, DR_ENTITY_SENSE, 0x1000_0000 | core)
                probes[f"0x{0x10000000 | core:08x}"] = [st, val]
            res["entity_sense_probe"] = probes
            free = [c for c in res["query_hotpluggable_cpus"] if "qom-path" not in c]
            if free:
                cid = min(c["props"]["core-id"] for c in free)
                try:
                    q.qmp("device_add", driver=free[0]["type"], **{"core-id": cid}, id=f"core{cid}")
                    logs = drain_logs(q)
                    res["hotplug_core"] = {"core-id": cid, "logs": [entry.get("decoded") for entry in logs]}
                    idx = 0x1000_0000 | cid
                    set_indicator(q, ALLOCATION_STATE, idx, 1)
                    set_indicator(q, ISOLATION_STATE, idx, 1)
                    steps, _ = configure_connector(q, idx)
                    res["hotplug_core"]["cc_first_steps"] = [s.as_json() for s in steps[:1]]
                    res["hotplug_core"]["cc_my_drc_index"] = [
                        s.value_hex for s in steps if s.name == "ibm,my-drc-index"
                    ]
                    res["hotplug_core"]["cc_interrupt_servers"] = [
                        s.value_hex for s in steps if s.name == "ibm,ppc-interrupt-server#s"
                    ]
                except QmpError as e:
                    res["hotplug_core"] = {"core-id": cid, "error": e.desc}
    except QemuStartError as e:
        res["started"] = False
        res["error"] = str(e)
        return res
    with tempfile.TemporaryDirectory() as tmp:
        dtb = Path(tmp) / "cpu.dtb"
        info = dump_dtb(qemu_bin, dtb, geometry)
        res["dumpdtb"] = {"returncode": info["returncode"], "stderr": info["stderr"]}
        if dtb.exists() and shutil.which("dtc"):
            dts = subprocess.run(
                ["dtc", "-I", "dtb", "-O", "dts", str(dtb)], capture_output=True, text=True, timeout=30
            ).stdout
            res["cpus_node_drc_properties"] = parse_dts_cpu_drcs(dts)
            res["cpu_nodes"] = [ln.strip() for ln in dts.splitlines() if ln.strip().startswith("PowerPC,")]
    return res


def part_smp(qemu_bin: str, out: Path) -> None:
    res = {"requested": cpu_topology(qemu_bin, SMP_GEOMETRY)}
    if not res["requested"].get("started"):
        res["fallback_threads1"] = cpu_topology(qemu_bin, SMP_FALLBACK)
    write_json(out / "smp-threads.json", res)


# --------------------------------------------------------------------------------------
# Part 4: failing requests (fresh QEMU each)
# --------------------------------------------------------------------------------------

DIMM = "pc-dimm"
CORE = "power9_v2.0-spapr-cpu-core"


def add_dimm(q: Qemu, n: int, size: int) -> None:
    q.qmp("object-add", **{"qom-type": "memory-backend-ram", "id": f"mem{n}", "size": size})
    q.qmp("device_add", driver=DIMM, memdev=f"mem{n}", id=f"dimm{n}")


def acquire(q: Qemu, idx: int, logical: bool = True) -> list[int]:
    rcs = []
    if logical:
        rcs.append(set_indicator(q, ALLOCATION_STATE, idx, 1))
    rcs.append(set_indicator(q, ISOLATION_STATE, idx, 1))
    steps, _ = configure_connector(q, idx)
    rcs.append(steps[-1].rc)
    return rcs


ErrorStep = tuple[str, dict[str, Any]]


@dataclass
class ErrorCase:
    key: str
    description: str
    setup: list[ErrorStep]  # steps expected to succeed
    failing: ErrorStep  # the step whose error we record
    after: list[ErrorStep] = field(default_factory=list)  # observations afterwards


def run_step(q: Qemu, step: ErrorStep) -> Any:
    kind, args = step
    if kind == "qmp":
        cmd = args["execute"]
        return q.qmp(cmd, **args.get("arguments", {}))
    if kind == "acquire":
        return acquire(q, int(args["index"], 16), args.get("logical", True))
    if kind == "dimm":
        add_dimm(q, args["n"], args["size"])
        return None
    if kind == "drain":
        return drain_logs(q)
    if kind == "sensor":
        return list(get_sensor(q, DR_ENTITY_SENSE, int(args["index"], 16)))
    if kind == "indicator":
        return set_indicator(q, args["type"], int(args["index"], 16), args["state"])
    raise ValueError(kind)


def qmp_step(cmd: str, **arguments: Any) -> ErrorStep:
    return ("qmp", {"execute": cmd, "arguments": arguments})


BOOT_CORE_PATH = "<qom-path of core-id 0 from query-hotpluggable-cpus>"

ERROR_CASES: list[ErrorCase] = [
    ErrorCase(
        "dimm_second_device_del_pending",
        "second device_del of a DIMM whose LMB the guest configured (unplug pending)",
        [
            ("dimm", {"n": 1, "size": 256 << 20}),
            ("drain", {}),
            ("acquire", {"index": "0x80000004"}),
            qmp_step("device_del", id="dimm1"),
            ("drain", {}),
        ],
        qmp_step("device_del", id="dimm1"),
    ),
    ErrorCase(
        "dimm_second_device_del_unacquired",
        "second device_del of a DIMM the guest never acquired",
        [("dimm", {"n": 1, "size": 256 << 20}), qmp_step("device_del", id="dimm1")],
        qmp_step("device_del", id="dimm1"),
    ),
    ErrorCase(
        "dimm_300M",
        "device_add pc-dimm on a 300M memory-backend-ram",
        [qmp_step("object-add", **{"qom-type": "memory-backend-ram", "id": "mem1", "size": 300 << 20})],
        qmp_step("device_add", driver=DIMM, memdev="mem1", id="dimm1"),
    ),
    ErrorCase(
        "dimm_fifth_slot",
        "5th 256M DIMM with slots=4 (all slots used)",
        [("dimm", {"n": i, "size": 256 << 20}) for i in range(1, 5)]
        + [qmp_step("object-add", **{"qom-type": "memory-backend-ram", "id": "mem5", "size": 256 << 20})],
        qmp_step("device_add", driver=DIMM, memdev="mem5", id="dimm5"),
    ),
    ErrorCase(
        "dimm_no_space",
        "2G DIMM after a 2G DIMM (maxmem 4G, ram 1G)",
        [
            ("dimm", {"n": 1, "size": 2 << 30}),
            qmp_step("object-add", **{"qom-type": "memory-backend-ram", "id": "mem2", "size": 2 << 30}),
        ],
        qmp_step("device_add", driver=DIMM, memdev="mem2", id="dimm2"),
    ),
    ErrorCase(
        "dimm_too_big",
        "single 4G DIMM (maxmem 4G, ram 1G)",
        [qmp_step("object-add", **{"qom-type": "memory-backend-ram", "id": "mem1", "size": 4 << 30})],
        qmp_step("device_add", driver=DIMM, memdev="mem1", id="dimm1"),
    ),
    ErrorCase(
        "dimm_backend_in_use",
        "second pc-dimm on the same (busy) memory backend",
        [("dimm", {"n": 1, "size": 256 << 20})],
        qmp_step("device_add", driver=DIMM, memdev="mem1", id="dimm2"),
    ),
    ErrorCase(
        "core_dup_boot",
        "CPU core with core-id 0 (the boot core)",
        [],
        qmp_step("device_add", driver=CORE, **{"core-id": 0}, id="core0"),
    ),
    ErrorCase(
        "core_dup_hotplugged",
        "CPU core core-id 1 twice",
        [qmp_step("device_add", driver=CORE, **{"core-id": 1}, id="core1")],
        qmp_step("device_add", driver=CORE, **{"core-id": 1}, id="core1b"),
    ),
    ErrorCase(
        "core_id_5",
        "CPU core core-id 5 (maxcpus=4)",
        [],
        qmp_step("device_add", driver=CORE, **{"core-id": 5}, id="core5"),
    ),
    ErrorCase(
        "core_del_boot",
        "device_del of the boot core (core-id 0)",
        [],
        qmp_step("device_del", id=BOOT_CORE_PATH),
    ),
    ErrorCase(
        "core_second_device_del_pending",
        "second device_del of a CPU core the guest configured (unplug pending)",
        [
            qmp_step("device_add", driver=CORE, **{"core-id": 1}, id="core1"),
            ("drain", {}),
            ("acquire", {"index": "0x10000001"}),
            qmp_step("device_del", id="core1"),
            ("drain", {}),
        ],
        qmp_step("device_del", id="core1"),
    ),
    ErrorCase(
        "phb_dup_index0",
        "PHB index=0 (the boot PHB)",
        [],
        qmp_step("device_add", driver="spapr-pci-host-bridge", index=0, id="phb0b"),
    ),
    ErrorCase(
        "phb_dup_index1",
        "PHB index=1 twice",
        [qmp_step("device_add", driver="spapr-pci-host-bridge", index=1, id="phb1")],
        qmp_step("device_add", driver="spapr-pci-host-bridge", index=1, id="phb1b"),
    ),
    ErrorCase(
        "phb_index31",
        "PHB index=31",
        [],
        qmp_step("device_add", driver="spapr-pci-host-bridge", index=31, id="phb31"),
    ),
    ErrorCase(
        "phb_second_device_del_pending",
        "second device_del of a PHB the guest configured (unplug pending)",
        [
            qmp_step("device_add", driver="spapr-pci-host-bridge", index=1, id="phb1"),
            ("drain", {}),
            ("acquire", {"index": "0x20000001"}),
            qmp_step("device_del", id="phb1"),
            ("drain", {}),
        ],
        qmp_step("device_del", id="phb1"),
    ),
    ErrorCase(
        "pci_fn1_after_fn0",
        "e1000 addr=3.1 after e1000 addr=3",
        [qmp_step("device_add", driver="e1000", id="nic1", bus="pci.0", addr="3")],
        qmp_step("device_add", driver="e1000", id="nic1f1", bus="pci.0", addr="3.1"),
    ),
    ErrorCase(
        "pci_fn1_after_fn0_multifunction",
        "e1000 addr=3.1 multifunction=on after e1000 addr=3 multifunction=on",
        [qmp_step("device_add", driver="e1000", id="nic1", bus="pci.0", addr="3", multifunction=True)],
        qmp_step("device_add", driver="e1000", id="nic1f1", bus="pci.0", addr="3.1", multifunction=True),
    ),
    ErrorCase(
        "pci_fn0_after_fn1",
        "e1000 addr=6.1 then e1000 addr=6.0 (no multifunction)",
        [qmp_step("device_add", driver="e1000", id="f1", bus="pci.0", addr="6.1")],
        qmp_step("device_add", driver="e1000", id="f0", bus="pci.0", addr="6.0"),
    ),
    ErrorCase(
        "pci_del_fn0_with_fn1",
        "e1000 6.1 then 6.0 (multifunction=on), device_del of function 0 (guest never unisolated)",
        [
            qmp_step("device_add", driver="e1000", id="f1", bus="pci.0", addr="6.1", multifunction=True),
            qmp_step("device_add", driver="e1000", id="f0", bus="pci.0", addr="6.0", multifunction=True),
            ("drain", {}),
        ],
        qmp_step("device_del", id="f0"),
        [
            qmp_step("qom-list", path="/machine/peripheral"),
            ("sensor", {"index": "0x40000030"}),
            ("sensor", {"index": "0x40000031"}),
        ],
    ),
    ErrorCase(
        "pci_del_fn0_with_fn1_configured",
        "e1000 6.1 then 6.0 (multifunction=on), guest configures both, "
        "device_del of function 0, then guest isolates fn1 and fn0",
        [
            qmp_step("device_add", driver="e1000", id="f1", bus="pci.0", addr="6.1", multifunction=True),
            qmp_step("device_add", driver="e1000", id="f0", bus="pci.0", addr="6.0", multifunction=True),
            ("drain", {}),
            ("acquire", {"index": "0x40000030", "logical": False}),
            ("acquire", {"index": "0x40000031", "logical": False}),
        ],
        qmp_step("device_del", id="f0"),
        [
            qmp_step("qom-list", path="/machine/peripheral"),
            ("indicator", {"type": ISOLATION_STATE, "index": "0x40000031", "state": 0}),
            ("indicator", {"type": ISOLATION_STATE, "index": "0x40000030", "state": 0}),
            ("sensor", {"index": "0x40000030"}),
            ("sensor", {"index": "0x40000031"}),
            qmp_step("qom-list", path="/machine/peripheral"),
        ],
    ),
    ErrorCase(
        "pci_del_fn1_then_fn0_configured",
        "e1000 6.1 then 6.0 (multifunction=on), guest configures both, device_del of function 1 then of function 0",
        [
            qmp_step("device_add", driver="e1000", id="f1", bus="pci.0", addr="6.1", multifunction=True),
            qmp_step("device_add", driver="e1000", id="f0", bus="pci.0", addr="6.0", multifunction=True),
            ("drain", {}),
            ("acquire", {"index": "0x40000030", "logical": False}),
            ("acquire", {"index": "0x40000031", "logical": False}),
            qmp_step("device_del", id="f1"),
            ("drain", {}),
        ],
        qmp_step("device_del", id="f0"),
    ),
    ErrorCase(
        "pci_second_device_del_pending",
        "second device_del of an e1000 the guest configured (unplug pending)",
        [
            qmp_step("device_add", driver="e1000", id="nic1", bus="pci.0", addr="3"),
            ("drain", {}),
            ("acquire", {"index": "0x40000018", "logical": False}),
            qmp_step("device_del", id="nic1"),
            ("drain", {}),
        ],
        qmp_step("device_del", id="nic1"),
    ),
]


def run_error_case(qemu_bin: str, case: ErrorCase) -> dict[str, Any]:
    res: dict[str, Any] = {"description": case.description, "hung": False}
    setup_log: list[dict[str, Any]] = []
    try:
        with Qemu(qemu_bin) as q:
            failing = case.failing
            if BOOT_CORE_PATH in json.dumps(failing):
                cpus = q.qmp("query-hotpluggable-cpus")
                path = next(c["qom-path"] for c in cpus if c["props"].get("core-id") == 0 and "qom-path" in c)
                failing = qmp_step("device_del", id=path)
            for step in case.setup:
                try:
                    r = run_step(q, step)
                    setup_log.append({"step": step, "ok": True, "result": r})
                except QmpError as e:
                    setup_log.append({"step": step, "ok": False, "error": e.desc, "class": e.error_class})
            res["setup"] = setup_log
            res["events_setup"] = q.take_events()
            res["request"] = failing
            try:
                r = run_step(q, failing)
                res["result"] = {"ok": True, "return": r}
            except QmpError as e:
                res["result"] = {"ok": False, "class": e.error_class, "desc": e.desc}
            res["events_after"] = q.take_events(settle=0.3)
            res["logs_after"] = drain_logs(q)
            after_log: list[dict[str, Any]] = []
            for step in case.after:
                try:
                    after_log.append({"step": step, "ok": True, "result": run_step(q, step)})
                except QmpError as e:
                    after_log.append({"step": step, "ok": False, "error": e.desc})
            if after_log:
                res["after"] = after_log
                res["events_after_steps"] = q.take_events(settle=0.3)
            res["qemu_alive_after"] = q.qmp("query-status")["status"]
            res["qemu_stderr"] = q.stderr_text()
    except (QemuHung, QemuExited) as e:  # QEMU hung (killed) or died
        res["hung"] = True
        res["setup"] = setup_log
        res["hang_detail"] = str(e)
    return res


def part_errors(qemu_bin: str, out: Path, only: list[str] | None = None) -> None:
    data: dict[str, Any] = {
        "notes": [f"Fresh QEMU (default machine line) per case; {IO_TIMEOUT:.0f}s timeout on every reply."],
        "vcpu_paused_with_qmp_stop": STOP_CPUS_DEFAULT,
        "cases": {},
    }
    for case in ERROR_CASES:
        if only and case.key not in only:
            continue
        print(f"[errors] {case.key}", file=sys.stderr)
        data["cases"][case.key] = run_error_case(qemu_bin, case)
    write_json(out / "errors.json", data)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="qemu-system-ppc64")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--only", nargs="*", choices=["fragments", "dtb", "smp", "errors"])
    ap.add_argument("--error-case", nargs="*", help="restrict the errors part to these keys")
    ap.add_argument("--running", action="store_true", help="do not pause the vCPU (SLOF keeps running under TCG)")
    a = ap.parse_args(argv)
    global STOP_CPUS_DEFAULT
    STOP_CPUS_DEFAULT = not a.running
    a.out.mkdir(parents=True, exist_ok=True)
    parts = a.only or ["fragments", "dtb", "smp", "errors"]
    if "fragments" in parts:
        part_fragments(a.qemu, a.out)
    if "dtb" in parts:
        part_dtb(a.qemu, a.out)
    if "smp" in parts:
        part_smp(a.qemu, a.out)
    if "errors" in parts:
        part_errors(a.qemu, a.out, a.error_case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
