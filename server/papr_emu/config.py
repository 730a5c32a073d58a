"""The server's TOML configuration file: platforms and their boot devices.

Example file::

    [server]
    listen = ["127.0.0.1:50051", "unix:/tmp/papr.sock"]
    metrics_listen = "127.0.0.1:9100"  # optional: Prometheus metrics (GET /metrics); off by default
    access_log = true                  # optional: one log event per RPC; off by default
    record = "transcripts"             # optional: each platform's calls as JSON lines in this directory
    state_dir = "state"                # optional: platforms that survive a restart (docs/state.md)

    [security]           # optional; each also a flag (--tls-cert, ...); paths relative to this file
    tls_cert = "server.pem"
    tls_key = "server.key"
    tls_client_ca = "clients-ca.pem"   # mTLS
    admin_token_file = "admin.token"   # require bearer tokens
    insecure = false                   # allow non-loopback listeners without TLS and tokens
    reflection = true
    unix_socket_mode = "600"           # octal

    [security.certificate_roles]       # mTLS: a certificate subject without a token acts as a role
    "CN=ci-admin" = "admin"
    "CN=job-7" = "guest:job7"          # manager:PLATFORM or guest:PLATFORM

    [limits]             # optional; each also a --max-... flag (see papr-emu serve --help)
    platforms = 16
    queued_event_logs = 1024

    [[platform]]
    name = "default"
    memory = "1G"        # -m
    max_memory = "4G"    # maxmem
    slots = 4
    cpus = 1
    max_cpus = 4
    threads = 1
    memory_model = "dimm"  # or "lmb": PowerVM-style LMB requests, no DIMMs

    [platform.unplug_timeouts]  # optional, seconds; every type off unless set
    cpu_core = 30

    [[platform.device]]  # present at boot (coldplugged)
    type = "dimm"        # dimm | cpu-core | pci-function | phb | nvdimm
    id = "dimm0"
    size = "512M"

    [[platform.fault]]   # a fault rule, installed at start (docs/config.md; FaultService.AddFaultRule)
    name = "busy-twice"
    effect = "busy"      # busy | extended-delay | hardware-error | refuse-hot-add | log-drop | ...
    call = "set-indicator"
    drc_type = "lmb"     # optional matches: call, drc_index, drc_type, device_id
    times = 2            # or probability = 0.3 with seed = 7

Sizes are bytes, or a number with a binary suffix K, M, G, T, P or E, as QEMU reads them
(:func:`papr_emu_client.sizes.parse_size`, shared with the command line and the scenarios).
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from papr_emu_client import schema, sizes
from papr_emu_client.pci import PCI_MODEL_ALIASES

from .addresses import host_port, listen_address
from .model import (
    LIMITS,
    TIMEOUT_KEYS,
    CpuCoreParams,
    DimmRequest,
    Geometry,
    InvalidArgument,
    MemoryModel,
    NvdimmRequest,
    PciFunctionParams,
    PciModel,
    PhbParams,
    PlatformError,
    PlugRequest,
    UnplugTimeouts,
)
from .model.faults import DRC_TYPE_LABELS, Call, FaultRule, Faults

_PCI_MODELS = {m.qemu_name: m for m in PciModel}
_PCI_MODELS |= {alias: _PCI_MODELS[name] for alias, name in PCI_MODEL_ALIASES.items()}  # the client's aliases


class ConfigError(Exception):
    """The configuration file is malformed; the message, one line, says where."""


@dataclass(frozen=True)
class PlatformConfig:
    name: str
    geometry: Geometry
    coldplug: list[tuple[str, PlugRequest]] = field(default_factory=list)
    unplug_timeouts: UnplugTimeouts = field(default_factory=UnplugTimeouts)
    faults: list[FaultRule] = field(default_factory=list)  # [[platform.fault]], checked by the model

    def fault_rules(self) -> list[FaultRule]:
        """Fresh copies of the file's fault rules to install (a rule counts its calls: each platform its own)."""
        return [FaultRule.from_dict(rule.to_dict()) for rule in self.faults]


@dataclass(frozen=True)
class ServerConfig:
    listen: list[str] = field(default_factory=list)
    platforms: list[PlatformConfig] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # [limits]: only the keys the file sets
    security: dict[str, Any] = field(default_factory=dict)  # [security]: Security.load's arguments it sets
    metrics_listen: str | None = None  # [server] metrics_listen: HOST:PORT for Prometheus metrics
    access_log: bool | None = None  # [server] access_log
    record: Path | None = None  # [server] record: the transcripts' directory, relative to the file's
    state_dir: Path | None = None  # [server] state_dir: platforms kept across runs, relative to the file's
    state_sync: bool | None = None  # [server] state_sync: fsync each journal record


# --- the schema: the file's shape, checked by msgspec -----------------------------------------
# msgspec rather than pydantic: measured here, importing msgspec after the server's own imports
# costs 8 ms, pydantic 100 ms, and every `serve --config` pays it. The schema checks types,
# ranges and unknown keys; the checks that need the model (geometry rules, timeouts, sizes)
# stay in the model and in parse_size, and run on the typed values below.

Size = int | str  # bytes, or "512M": parse_size reads it, naming the key
Count = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
FileName = Annotated[str, Meta(min_length=1)]
Seconds = Annotated[float, Meta(gt=0)]  # inf passes here; UnplugTimeouts refuses it
# What FaultService's messages hold (uint32, int32): a rule ListFaultRules could not send is refused.
UInt32 = Annotated[int, Meta(ge=0, le=0xFFFF_FFFF)]
Int32 = Annotated[int, Meta(ge=-(1 << 31), le=(1 << 31) - 1)]
UINT64_TOP = (1 << 64) - 1  # the seed's; msgspec bounds only int64


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A TOML table: a key it does not declare is an error."""


class _Server(_Table):
    listen: str | list[str] = []
    metrics_listen: str | None = None
    access_log: bool | None = None
    record: FileName | None = None
    state_dir: FileName | None = None
    state_sync: bool | None = None


class _Security(_Table):
    tls_cert: FileName | None = None
    tls_key: FileName | None = None
    tls_client_ca: FileName | None = None
    admin_token_file: FileName | None = None
    insecure: bool | None = None
    reflection: bool | None = None
    unix_socket_mode: str | Count | None = None  # octal: "660", or the digits as an integer
    certificate_roles: dict[str, str] | None = None


# One field per limit and per device type: the model's tables name them.
_Limits = msgspec.defstruct("_Limits", [(name, Positive | None, None) for name in LIMITS], bases=(_Table,))
_UnplugTimeouts = msgspec.defstruct(
    "_UnplugTimeouts", [(key, Seconds | None, None) for key in TIMEOUT_KEYS], bases=(_Table,)
)


class _Device(_Table, tag_field="type"):
    id: str = ""


class _Dimm(_Device, tag="dimm", kw_only=True):
    size: Size
    slot: Count | None = None
    address: Size | None = None


class _CpuCore(_Device, tag="cpu-core", kw_only=True):
    core_id: Count


class _Phb(_Device, tag="phb", kw_only=True):
    index: Count


class _Nvdimm(_Device, tag="nvdimm", kw_only=True):
    size: Size
    label_size: Size = 128 << 10
    uuid: str
    slot: Count | None = None
    address: Size | None = None


class _PciFunction(_Device, tag="pci-function", kw_only=True):
    slot: Count
    phb: Count = 0
    function: Count = 0
    model: str = "e1000"


_DEVICE_TYPES = ", ".join(str(kind.__struct_config__.tag) for kind in (_Dimm, _CpuCore, _PciFunction, _Phb, _Nvdimm))


class _Fault(_Table):
    """A ``[[platform.fault]]`` table: FaultRule's fields (the proto's names); the model checks the values."""

    name: str
    effect: str
    call: str = ""
    drc_index: UInt32 = 0
    drc_type: str = ""
    device_id: str = ""
    status: Int32 = 0
    times: UInt32 = 0
    probability: float = 1.0
    seed: Count = 0


class _Platform(_Table):
    name: str
    memory: Size | None = None
    max_memory: Size | None = None
    slots: Count | None = None
    cpus: Count | None = None
    max_cpus: Count | None = None
    threads: Count | None = None
    memory_model: Literal["dimm", "lmb"] = "dimm"
    device: list[_Dimm | _CpuCore | _Phb | _PciFunction | _Nvdimm] = []
    unplug_timeouts: _UnplugTimeouts | None = None  # type: ignore[valid-type]
    fault: list[_Fault] = []


class _Document(_Table):
    server: _Server = msgspec.field(default_factory=_Server)
    platform: list[_Platform] = []
    limits: _Limits = msgspec.field(default_factory=_Limits)  # type: ignore[valid-type]
    security: _Security = msgspec.field(default_factory=_Security)


_TABLES = (
    _Document, _Server, _Security, _Limits, _UnplugTimeouts, _Platform, _Dimm, _CpuCore, _Phb, _PciFunction, _Nvdimm,
    _Fault,
)  # fmt: skip


def schema_keys() -> set[str]:
    """Every key of every table the file may have (docs/config.md documents each; a test checks)."""
    return {"type"} | {key for table in _TABLES for key in table.__struct_fields__}


def _schema_error(error: msgspec.ValidationError, where: str, document: object) -> ConfigError:
    """One line: where in the file (``platform[0].slots``), the value if it is short, what was expected."""
    return ConfigError(schema.describe(error, document, where, {"type": f"one of {_DEVICE_TYPES}"}))


# --- typed values -> the model's objects ------------------------------------------------------


def parse_size(value: object, where: str) -> int:
    """``"1G"`` -> 1073741824; ints pass through; ConfigError naming ``where`` otherwise."""
    try:
        return sizes.parse_size(value)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _device(device: _Device, where: str) -> tuple[str, PlugRequest]:
    request: PlugRequest
    if isinstance(device, _Dimm):
        address = None if device.address is None else parse_size(device.address, f"{where}.address")
        request = DimmRequest(size=parse_size(device.size, f"{where}.size"), slot=device.slot, address=address)
    elif isinstance(device, _CpuCore):
        request = CpuCoreParams(device.core_id)
    elif isinstance(device, _Phb):
        request = PhbParams(device.index)
    elif isinstance(device, _Nvdimm):
        address = None if device.address is None else parse_size(device.address, f"{where}.address")
        request = NvdimmRequest(
            size=parse_size(device.size, f"{where}.size"),
            label_size=parse_size(device.label_size, f"{where}.label_size"),
            uuid=device.uuid, slot=device.slot, address=address,
        )  # fmt: skip
    else:
        assert isinstance(device, _PciFunction)
        model = _PCI_MODELS.get(device.model)
        if model is None:
            raise ConfigError(f"{where}.model: {device.model!r} is not one of {', '.join(_PCI_MODELS)}")
        request = PciFunctionParams(phb_index=device.phb, slot=device.slot, function=device.function, model=model)
    return device.id, request


#: A rule's call as the CLI and FaultCall spell it ("configure-connector"), or by its RTAS name.
_FAULT_CALLS = {call.name.lower().replace("_", "-"): call for call in Call} | {str(call): call for call in Call}


def _fault_rules(faults: list[_Fault], where: str) -> list[FaultRule]:
    """The ``[[platform.fault]]`` tables as rules, checked as AddFaultRule checks them (the model's checks:
    effect, call, status, probability, unique names, how many); ConfigError naming ``where.fault[N].key``."""
    installed = Faults(monotonic=time.monotonic)
    for n, fault in enumerate(faults):
        at = f"{where}.fault[{n}]"
        call = _FAULT_CALLS.get(fault.call) if fault.call else None
        if fault.call and call is None:
            raise ConfigError(f"{at}.call: {fault.call!r} is not one of {', '.join(_FAULT_CALLS)}")
        if fault.seed > UINT64_TOP:
            raise ConfigError(f"{at}.seed: {fault.seed} is not an integer <= {UINT64_TOP}")
        drc_type = fault.drc_type.upper() if fault.drc_type.upper() in DRC_TYPE_LABELS else fault.drc_type
        try:
            installed.add(
                FaultRule.from_dict({
                    "name": fault.name, "effect": fault.effect, "call": str(call) if call else "",
                    "drc_index": fault.drc_index, "drc_type": drc_type, "device_id": fault.device_id,
                    "status": fault.status, "times": fault.times, "probability": fault.probability, "seed": fault.seed,
                })
            )  # fmt: skip
        except InvalidArgument as error:  # the value as the file has it (the model's message writes ints in hex)
            value = getattr(fault, error.field, error.value)
            shown = value if isinstance(value, int) else repr(value)
            raise ConfigError(f"{at}.{error.field}: {shown}: {error.reason}") from None
        except PlatformError as error:  # AlreadyExists: "name: 'x': a fault rule of this name exists"
            raise ConfigError(f"{at}.{error}") from None
    return installed.rules


def _platform(platform: _Platform, where: str) -> PlatformConfig:
    def size(key: str) -> int | None:
        value = getattr(platform, key)
        return None if value is None else parse_size(value, f"{where}.{key}")

    try:
        geometry = Geometry.build(
            memory=size("memory"), max_memory=size("max_memory"), slots=platform.slots, cpus=platform.cpus,
            max_cpus=platform.max_cpus, threads=platform.threads, memory_model=MemoryModel(platform.memory_model),
        )  # fmt: skip
    except InvalidArgument as error:
        raise ConfigError(f"{where}: {error}") from None
    coldplug = [_device(device, f"{where}.device[{n}]") for n, device in enumerate(platform.device)]
    timeouts: dict[str, Any] = (
        msgspec.structs.asdict(platform.unplug_timeouts) if platform.unplug_timeouts is not None else {}
    )
    try:
        unplug_timeouts = UnplugTimeouts(**{key: value for key, value in timeouts.items() if value is not None})
    except InvalidArgument as error:
        raise ConfigError(f"{where}.unplug_timeouts.{error}") from None
    return PlatformConfig(platform.name, geometry, coldplug, unplug_timeouts, _fault_rules(platform.fault, where))


def platform_config(table: object, where: str) -> PlatformConfig:
    """One ``[[platform]]`` table, checked (ConfigError naming ``where``); the pytest plugin's factory uses it too.

    Keys set to None count as absent (TOML has no null; the plugin passes its defaults so).
    """
    if isinstance(table, dict):
        table = {key: value for key, value in table.items() if value is not None}
    try:
        platform = msgspec.convert(table, _Platform)
    except msgspec.ValidationError as error:
        raise _schema_error(error, where, table) from None
    return _platform(platform, where)


_SECURITY_PATHS = ("tls_cert", "tls_key", "tls_client_ca", "admin_token_file")
_OCTAL_MODE = re.compile(r"[0-7]{1,4}")


def _security(security: _Security, directory: Path) -> dict[str, Any]:
    """Security.load's arguments the file sets: file names relative to its directory, the mode as a number."""
    settings = {key: value for key, value in msgspec.structs.asdict(security).items() if value is not None}
    for key in _SECURITY_PATHS:
        if key in settings:
            settings[key] = directory / settings[key]
    if "unix_socket_mode" in settings:
        mode = str(settings["unix_socket_mode"])
        if not _OCTAL_MODE.fullmatch(mode):
            raise ConfigError(f'security.unix_socket_mode: {mode!r} is not an octal file mode (e.g. "660")')
        settings["unix_socket_mode"] = int(mode, 8)
    return settings


def _checked(what: str, address: str, check: Any) -> str:
    try:
        check(address)
    except ValueError as error:
        raise ConfigError(f"{what}: {error}") from None
    return address


def _server_config(document: object, directory: Path) -> ServerConfig:
    try:
        parsed = msgspec.convert(document, _Document)
    except msgspec.ValidationError as error:
        raise _schema_error(error, "", document) from None
    server = parsed.server
    listen = [server.listen] if isinstance(server.listen, str) else list(server.listen)
    metrics_listen = server.metrics_listen
    return ServerConfig(
        listen=[_checked("server.listen", address, listen_address) for address in listen],
        metrics_listen=None if metrics_listen is None else _checked("server.metrics_listen", metrics_listen, host_port),
        access_log=server.access_log,
        record=None if server.record is None else directory / server.record,
        state_dir=None if server.state_dir is None else directory / server.state_dir,
        state_sync=server.state_sync,
        platforms=[_platform(platform, f"platform[{n}]") for n, platform in enumerate(parsed.platform)],
        limits={key: value for key, value in msgspec.structs.asdict(parsed.limits).items() if value is not None},
        security=_security(parsed.security, directory),
    )


def load_config(path: Path) -> ServerConfig:
    """Read and validate a configuration file; raises ConfigError, a line starting with the file's name."""
    try:
        document = tomllib.loads(path.read_bytes().decode())
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    try:
        return _server_config(document, path.parent)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
