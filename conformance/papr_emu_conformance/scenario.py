"""Conformance scenarios: data files (TOML) loaded into a list of primitive steps.

A scenario file holds a description, an optional geometry (QEMU's ``-m``/``-smp``
numbers; default: ``-m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4``), optional per-side
device ids, and the steps, one inline table each::

    description = "DIMM hot-add and unplug"
    geometry = { memory = "1G", maxmem = "4G", slots = 4, cpus = 1, maxcpus = 4 }
    ids = { boot-core = { qemu = "@core-id:0", papr = "core0" } }
    steps = [
      { plug = { id = "dimm1", dimm = { size = "512M" } } },
      { drain_logs = true },
      { acquire = 0x80000004 },
      { configure = 0x80000004 },
      { unplug = "dimm1" },
      { release = 0x80000004 },
    ]

Step kinds (each step may add ``note = "..."``):

* ``plug = {id, dimm = {size, slot?, addr?} | cpu_core = {core_id} | pci = {slot, function?, phb?,
  model?, multifunction?} | phb = {index}}``; ``expect_error = true`` marks a device_add that
  must fail: on QEMU it runs in a fresh QEMU (replaying the steps before it), because a failing
  device_add can stall QEMU 7.2.
* ``unplug = "id"`` (``expect_error = true`` if it must fail).
* ``rtas = "NAME", args = [...]``, optional ``nret``: one RTAS call; an argument ``"wa"`` is the
  work area's address, ``"buf"`` the event-log buffer's.
* shorthands: ``set_indicator = [type, index, value]``, ``sense = index``
  (get-sensor-state 9003), ``get_sensor = [type, index]``.
* ``configure = index``: an ibm,configure-connector loop over a fresh work area until the
  status is not 1..4; ``calls = N`` stops after N calls, ``fresh = false`` keeps the work area
  (the cursor lives in the connector), ``extent = N`` sets args[1].
* ``check_exception = {mask?, length?, nargs?}``: one call; ``drain_logs = true`` (or a table
  like check_exception's): calls until the status is not 0.
* ``survey = {dtb = true, probe = [indexes]}``: the ibm,drc-* arrays of the boot device tree
  (QEMU: ``dumpdtb``) as {index: name, type, power domain} per node, the DR calls' /rtas tokens,
  and every connector's entity sense (plus the probed indexes); ``dtb_order = true``: the order
  of the entries in those arrays.
* macros, expanded here into the calls Linux makes: ``acquire = index`` (sense, allocation
  usable for a logical connector, unisolate) and ``release = index`` (sense, isolate,
  allocation unusable for a logical connector).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from papr_emu_client import schema
from papr_emu_client.guest import ALLOCATION_STATE, DR_ENTITY_SENSE, ISOLATION_STATE
from papr_emu_client.pci import pci_model_name
from papr_emu_client.sizes import parse_size

# LoPAR's argument and return cell counts of the calls a scenario makes without saying nret.
DEFAULT_NRET = {
    "set-indicator": 1,
    "get-sensor-state": 2,
    "ibm,configure-connector": 1,
    "set-power-level": 2,
    "get-power-level": 2,
    "check-exception": 1,
    "event-scan": 1,
}
DR_CALLS = frozenset(DEFAULT_NRET)

Placeholder = Literal["wa", "buf"]
Arg = int | Placeholder

SCENARIO_DIR_VARIABLE = "PAPR_EMU_SCENARIOS"
# Package data (pyproject's package-data), so a checkout, an editable and a wheel install alike
# find them beside this module.
BUILTIN_SCENARIOS = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file is not well-formed; the message names the file and the step."""


@dataclass(frozen=True)
class Geometry:
    """QEMU's ``-m MEMORY,slots=SLOTS,maxmem=MAXMEM -smp CPUS,maxcpus=MAXCPUS``."""

    memory: int = 1 << 30
    max_memory: int = 4 << 30
    slots: int = 4
    cpus: int = 1
    max_cpus: int = 4

    def qemu_args(self) -> list[str]:
        return [
            "-m",
            f"{self.memory >> 20}M,slots={self.slots},maxmem={self.max_memory >> 20}M",
            "-smp",
            f"{self.cpus},maxcpus={self.max_cpus}",
        ]


# --- device specs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DimmSpec:
    size: int
    slot: int | None = None
    address: int | None = None


@dataclass(frozen=True)
class CpuCoreSpec:
    core_id: int


@dataclass(frozen=True)
class PciSpec:
    slot: int
    function: int = 0
    phb: int = 0
    model: str = "e1000"
    # QEMU only: papr-emu treats every function as multifunction=on (docs/compat.md #7).
    multifunction: bool = True


@dataclass(frozen=True)
class PhbSpec:
    index: int


@dataclass(frozen=True)
class NvdimmSpec:
    """An NVDIMM: ``size`` excludes the label area (QEMU's backend holds both)."""

    size: int
    label_size: int = 128 << 10
    uuid: str = "00000000-0000-0000-0000-000000000000"  # the nil UUID: QEMU refuses it
    slot: int | None = None
    address: int | None = None


DeviceSpec = DimmSpec | CpuCoreSpec | PciSpec | PhbSpec | NvdimmSpec


def drc_type(index: int) -> str:
    """The connector type of a DRC index (its top nibble): cpu, phb, pci, lmb, pmem or unknown."""
    return {1: "cpu", 2: "phb", 4: "pci", 8: "lmb", 9: "pmem"}.get(index >> 28, "unknown")


def is_physical(index: int) -> bool:
    return drc_type(index) == "pci"


# --- steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plug:
    device_id: str
    spec: DeviceSpec
    expect_error: bool = False

    def label(self) -> str:
        spec = self.spec
        if isinstance(spec, DimmSpec):
            what = f"dimm {spec.size >> 20}M" + (f" slot {spec.slot}" if spec.slot is not None else "")
            what += f" addr {spec.address:#x}" if spec.address is not None else ""
        elif isinstance(spec, CpuCoreSpec):
            what = f"cpu core {spec.core_id}"
        elif isinstance(spec, PciSpec):
            what = f"{spec.model} {spec.phb}:{spec.slot}.{spec.function}"
            what += "" if spec.multifunction else " multifunction=off"
        elif isinstance(spec, NvdimmSpec):
            what = f"nvdimm {spec.size >> 20}M label {spec.label_size >> 10}K"
            what += f" slot {spec.slot}" if spec.slot is not None else ""
            what += f" addr {spec.address:#x}" if spec.address is not None else ""
        else:
            what = f"phb {spec.index}"
        return f"plug {self.device_id}: {what}" + (" (must fail)" if self.expect_error else "")


@dataclass(frozen=True)
class Unplug:
    device_id: str
    expect_error: bool = False

    def label(self) -> str:
        return f"unplug {self.device_id}" + (" (must fail)" if self.expect_error else "")


_INDICATOR_NAMES = {
    (ISOLATION_STATE, 0): "isolate",
    (ISOLATION_STATE, 1): "unisolate",
    (ALLOCATION_STATE, 0): "alloc-unusable",
    (ALLOCATION_STATE, 1): "alloc-usable",
}


def _cell_text(cell: Arg) -> str:
    return cell if isinstance(cell, str) else (f"{cell:#x}" if cell > 0xFFFF else str(cell))


@dataclass(frozen=True)
class Rtas:
    name: str
    args: tuple[Arg, ...]
    nret: int

    def label(self) -> str:
        a = self.args
        standard = DEFAULT_NRET.get(self.name) == self.nret
        if standard and self.name == "get-sensor-state" and len(a) == 2 and a[0] == DR_ENTITY_SENSE:
            return f"sense {_cell_text(a[1])}"
        if (
            standard
            and self.name == "set-indicator"
            and len(a) == 3
            and isinstance(a[0], int)
            and isinstance(a[2], int)
        ):
            indicator = _INDICATOR_NAMES.get((a[0], a[2]))
            if indicator:
                return f"{indicator} {_cell_text(a[1])}"
        shown = [_cell_text(cell) for cell in a]
        extra = "" if standard else f" nret={self.nret}"
        return f"{self.name}({', '.join(shown)}){extra}"


@dataclass(frozen=True)
class Configure:
    index: int
    calls: int | None = None
    fresh: bool = True
    extent: int = 0

    def label(self) -> str:
        parts = [f"configure {self.index:#x}"]
        if self.calls is not None:
            parts.append(f"{self.calls} call{'s' if self.calls != 1 else ''}")
        if not self.fresh:
            parts.append("same work area")
        if self.extent:
            parts.append(f"args[1]={self.extent}")
        return ", ".join(parts)


@dataclass(frozen=True)
class CheckException:
    mask: int = 0xFFFF_FFFF
    length: int = 2048
    nargs: int = 6
    drain: bool = False

    def label(self) -> str:
        what = "drain logs" if self.drain else "check-exception"
        options = []
        if self.mask != 0xFFFF_FFFF:
            options.append(f"mask {self.mask:#x}")
        if self.length != 2048:
            options.append(f"length {self.length}")
        if self.nargs != 6:
            options.append(f"nargs {self.nargs}")
        return what + (f" ({', '.join(options)})" if options else "")


@dataclass(frozen=True)
class Survey:
    dtb: bool = True
    probe: tuple[int, ...] = ()
    order: bool = False  # the order of the ibm,drc-* array entries instead of their contents

    def label(self) -> str:
        if self.order:
            return "order of the ibm,drc-* entries in the boot device tree"
        return "survey: ibm,drc-* arrays of the boot tree, every connector's entity sense"


Step = Plug | Unplug | Rtas | Configure | CheckException | Survey


@dataclass(frozen=True)
class NumberedStep:
    """A primitive step with its number (1-based, after macro expansion) and where it came from."""

    number: int
    step: Step
    source: int  # index of the step in the file (0-based)
    macro: str = ""  # "acquire 0x80000004" for steps a macro expanded into
    note: str = ""

    def label(self) -> str:
        return (f"{self.macro.split()[0]}: " if self.macro else "") + self.step.label()


@dataclass
class Scenario:
    name: str
    description: str
    geometry: Geometry
    steps: list[NumberedStep]
    ids: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None

    def device_id(self, alias: str, side: str) -> str:
        """The id of a device on one side (``ids`` table; by default the same on both sides)."""
        return self.ids.get(alias, {}).get(side, alias)


# --- loading --------------------------------------------------------------------------------------
# The file's shape is a msgspec schema (types, unknown keys, one line naming the step and key,
# papr_emu_client.schema); what a schema cannot say (one step kind per step, its modifiers,
# a survey of the boot tree before any plug) is checked after, on the typed values.

Size = int | str  # bytes, or "512M": parse_size reads it (papr_emu_client.sizes, as QEMU reads sizes)
Cell = int | Literal["wa", "buf"]  # an argument cell, or a placeholder for the work area's or log buffer's address


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A TOML table: a key it does not declare is an error."""


class _Dimm(_Table):
    size: Size
    slot: int | None = None
    addr: int | None = None


class _Nvdimm(_Table):
    size: Size
    label_size: Size = NvdimmSpec.label_size
    uuid: str = NvdimmSpec.uuid
    slot: int | None = None
    addr: int | None = None


class _CpuCore(_Table):
    core_id: int


class _Pci(_Table):
    slot: int
    function: int = 0
    phb: int = 0
    model: str = "e1000"
    multifunction: bool = True


class _Phb(_Table):
    index: int


class _Plug(_Table):
    id: Annotated[str, msgspec.Meta(min_length=1)]
    dimm: _Dimm | None = None
    nvdimm: _Nvdimm | None = None
    cpu_core: _CpuCore | None = None
    pci: _Pci | None = None
    phb: _Phb | None = None


class _CheckException(_Table):
    mask: int = CheckException.mask
    length: int = CheckException.length
    nargs: int = CheckException.nargs


class _Survey(_Table):
    dtb: bool = True
    probe: list[int] = []


class _Step(_Table):
    """One step of the file: exactly one kind (checked after), its modifiers, a note."""

    plug: _Plug | None = None
    unplug: str | None = None
    rtas: str | None = None
    set_indicator: list[Cell] | None = None
    sense: int | None = None
    get_sensor: list[Cell] | None = None
    configure: int | None = None
    check_exception: bool | _CheckException | None = None
    drain_logs: bool | _CheckException | None = None
    survey: bool | _Survey | None = None
    dtb_order: bool | None = None
    acquire: int | None = None
    release: int | None = None
    note: str = ""
    expect_error: bool | None = None
    args: list[Cell] | None = None
    nret: int | None = None
    calls: int | None = None
    fresh: bool | None = None
    extent: int | None = None


class _Geometry(_Table):
    memory: Size = Geometry.memory
    maxmem: Size = Geometry.max_memory
    slots: int = Geometry.slots
    cpus: int = Geometry.cpus
    maxcpus: int = Geometry.max_cpus


class _Sides(_Table):
    qemu: str | None = None
    papr: str | None = None


class _Scenario(_Table, kw_only=True):
    description: str = ""
    geometry: _Geometry = msgspec.field(default_factory=_Geometry)
    ids: dict[str, _Sides] = {}
    steps: list[_Step]


#: The device kinds a plug step names (one per step).
DEVICE_KINDS: Final = ("dimm", "nvdimm", "cpu_core", "pci", "phb")
STEP_KINDS: Final = (
    "plug",
    "unplug",
    "rtas",
    "set_indicator",
    "sense",
    "get_sensor",
    "configure",
    "check_exception",
    "drain_logs",
    "survey",
    "dtb_order",
    "acquire",
    "release",
)
MODIFIERS: Final = {
    "plug": {"expect_error"},
    "unplug": {"expect_error"},
    "rtas": {"args", "nret"},
    "configure": {"calls", "fresh", "extent"},
}
_ALL_MODIFIERS: Final = {modifier for modifiers in MODIFIERS.values() for modifier in modifiers}
_CELL = "an integer, 'wa' or 'buf'"
_CHOICES: Final = {"args": _CELL, "set_indicator": _CELL, "get_sensor": _CELL}


def _size(value: Size, where: str) -> int:
    try:
        return parse_size(value)
    except ValueError as error:
        raise ScenarioError(f"{where}: {error}") from None


def _cells(cells: list[Cell], where: str) -> tuple[Arg, ...]:
    out: list[Arg] = []
    for n, cell in enumerate(cells):
        if isinstance(cell, int) and not -(1 << 31) <= cell <= 0xFFFF_FFFF:
            raise ScenarioError(f"{where}[{n}]: {cell} is not a 32-bit cell")
        out.append(cell & 0xFFFF_FFFF if isinstance(cell, int) else cell)
    return tuple(out)


def _device_spec(plug: _Plug, where: str) -> DeviceSpec:
    kinds = [kind for kind in DEVICE_KINDS if getattr(plug, kind) is not None]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: plug needs exactly one of {', '.join(DEVICE_KINDS)}")
    w = f"{where}.{kinds[0]}"
    spec = getattr(plug, kinds[0])
    if isinstance(spec, _Dimm):
        return DimmSpec(_size(spec.size, f"{w}.size"), spec.slot, spec.addr)
    if isinstance(spec, _Nvdimm):
        size, label_size = _size(spec.size, f"{w}.size"), _size(spec.label_size, f"{w}.label_size")
        return NvdimmSpec(size, label_size, spec.uuid, spec.slot, spec.addr)
    if isinstance(spec, _CpuCore):
        return CpuCoreSpec(spec.core_id)
    if isinstance(spec, _Pci):
        try:  # QEMU's own name, also for an alias: the QEMU side passes it to device_add
            model = pci_model_name(spec.model)
        except ValueError as error:
            raise ScenarioError(f"{w}.model: {error}") from None
        return PciSpec(spec.slot, spec.function, spec.phb, model, spec.multifunction)
    assert isinstance(spec, _Phb)
    return PhbSpec(spec.index)


def _check_exception(value: bool | _CheckException, where: str, drain: bool) -> CheckException:
    if value is False:
        raise ScenarioError(f"{where}: false is not true or a table")
    if value is True:
        return CheckException(drain=drain)
    assert isinstance(value, _CheckException)
    return CheckException(value.mask, value.length, value.nargs, drain)


def _steps(raw: _Step, given: set[str], where: str) -> list[tuple[Step, str]]:
    """One file step -> its primitive steps, each with the macro it came from ("" if none).

    ``given``: the keys the step's table has (a modifier left out is not a modifier given).
    """
    kinds = [kind for kind in STEP_KINDS if kind in given]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: a step needs exactly one of {', '.join(STEP_KINDS)}, got {sorted(given)}")
    kind = kinds[0]
    misplaced = sorted(given & _ALL_MODIFIERS - MODIFIERS.get(kind, set()))
    if misplaced:
        allowed = sorted({kind, "note", *MODIFIERS.get(kind, set())})
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(misplaced)} (allowed: {', '.join(allowed)})")
    w = f"{where}.{kind}"
    value = getattr(raw, kind)
    if kind == "plug":
        assert raw.plug is not None
        return [(Plug(raw.plug.id, _device_spec(raw.plug, w), bool(raw.expect_error)), "")]
    if kind == "unplug":
        return [(Unplug(value, bool(raw.expect_error)), "")]
    if kind == "rtas":
        nret = raw.nret if raw.nret is not None else DEFAULT_NRET.get(value, 1)
        return [(Rtas(value, _cells(raw.args or [], f"{where}.args"), nret), "")]
    if kind == "set_indicator":
        return [(Rtas("set-indicator", _cells(value, w), 1), "")]
    if kind == "sense":
        return [(Rtas("get-sensor-state", (DR_ENTITY_SENSE, value), 2), "")]
    if kind == "get_sensor":
        return [(Rtas("get-sensor-state", _cells(value, w), 2), "")]
    if kind == "configure":
        fresh = True if raw.fresh is None else raw.fresh
        return [(Configure(value, raw.calls, fresh, raw.extent or 0), "")]
    if kind in ("check_exception", "drain_logs"):
        return [(_check_exception(value, w, drain=kind == "drain_logs"), "")]
    if kind == "dtb_order":
        return [(Survey(dtb=True, order=True), "")]
    if kind == "survey":
        survey = _Survey() if value is True else value
        if not isinstance(survey, _Survey):
            raise ScenarioError(f"{w}: false is not true or a table")
        return [(Survey(survey.dtb, tuple(survey.probe)), "")]
    index = value
    macro = f"{kind} {index:#x}"
    logical = not is_physical(index)
    sense = Rtas("get-sensor-state", (DR_ENTITY_SENSE, index), 2)
    if kind == "acquire":  # Linux dlpar_acquire_drc
        steps: list[Step] = [sense]
        if logical:
            steps.append(Rtas("set-indicator", (ALLOCATION_STATE, index, 1), 1))
        steps.append(Rtas("set-indicator", (ISOLATION_STATE, index, 1), 1))
    else:  # release: Linux dlpar_release_drc
        steps = [sense, Rtas("set-indicator", (ISOLATION_STATE, index, 0), 1)]
        if logical:
            steps.append(Rtas("set-indicator", (ALLOCATION_STATE, index, 0), 1))
    return [(s, macro) for s in steps]


def _geometry(table: _Geometry, where: str) -> Geometry:
    memory = _size(table.memory, f"{where}.memory")
    return Geometry(memory, _size(table.maxmem, f"{where}.maxmem"), table.slots, table.cpus, table.maxcpus)


def parse_scenario(name: str, data: dict[str, Any], path: Path | None = None) -> Scenario:
    where = str(path) if path else name
    try:
        parsed = msgspec.convert(data, _Scenario)
    except msgspec.ValidationError as error:
        raise ScenarioError(f"{where}: {schema.describe(error, data, choices=_CHOICES)}") from None
    if not parsed.steps:
        raise ScenarioError(f"{where}: steps must be a non-empty list of inline tables")
    geometry = _geometry(parsed.geometry, f"{where}: geometry")
    ids = {alias: {side: getattr(sides, side) for side in ("qemu", "papr") if getattr(sides, side) is not None}
           for alias, sides in parsed.ids.items()}  # fmt: skip
    steps: list[NumberedStep] = []
    plugged = False
    for n, raw in enumerate(parsed.steps):
        step_where = f"{where}: steps[{n}]"
        given = {key for key in raw.__struct_fields__ if key in data["steps"][n]}
        for step, macro in _steps(raw, given, step_where):
            if isinstance(step, Survey) and step.dtb and plugged:
                raise ScenarioError(
                    f"{step_where}: a survey with dtb = true must come before any plug "
                    "(QEMU's dumpdtb shows the boot tree)"
                )
            plugged = plugged or isinstance(step, Plug)
            steps.append(NumberedStep(len(steps) + 1, step, n, macro, raw.note))
    return Scenario(name, parsed.description, geometry, steps, ids, path)


def load_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except OSError as error:
        raise ScenarioError(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: {error}") from error
    return parse_scenario(path.stem, data, path)


def scenario_dir() -> Path:
    """Where the scenario files are: $PAPR_EMU_SCENARIOS, else the package's own ``scenarios``."""
    env = os.environ.get(SCENARIO_DIR_VARIABLE)
    if env:
        return Path(env)
    return BUILTIN_SCENARIOS


def scenario_paths(directory: Path | None = None) -> list[Path]:
    return sorted((directory or scenario_dir()).glob("*.toml"))


def find_scenario(name_or_path: str, directory: Path | None = None) -> Path:
    """A scenario file by path, or by name (the file's stem) in the scenario directory."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = (directory or scenario_dir()) / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    known = ", ".join(p.stem for p in scenario_paths(directory)) or "none"
    raise ScenarioError(f"no scenario {name_or_path!r} (known: {known})")
