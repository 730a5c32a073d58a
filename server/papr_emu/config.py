"""The server's TOML configuration file: platforms and their boot devices.

Example file::

    [server]
    listen = ["127.0.0.1:50051", "unix:/tmp/papr.sock"]
    metrics_listen = "127.0.0.1:9100"  # optional: Prometheus metrics (GET /metrics); off by default
    access_log = true                  # optional: one log event per RPC; off by default

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

    [platform.unplug_timeouts]  # optional, seconds; every type off unless set
    cpu_core = 30

    [[platform.device]]  # present at boot (coldplugged)
    type = "dimm"        # dimm | cpu-core | pci-function | phb
    id = "dimm0"
    size = "512M"

Sizes are bytes, or a number with a binary suffix K, M, G, T, P or E, as QEMU reads them
(:func:`papr_emu_client.sizes.parse_size`, shared with the command line and the scenarios).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from papr_emu_client import sizes
from papr_emu_client.pci import PCI_MODEL_ALIASES

from .model import (
    LIMITS,
    TIMEOUT_KEYS,
    CpuCoreParams,
    DimmRequest,
    Geometry,
    InvalidArgument,
    PciFunctionParams,
    PciModel,
    PhbParams,
    PlugRequest,
    UnplugTimeouts,
)
from .model.limits import check_limit

_PLATFORM_KEYS = {"name", "memory", "max_memory", "slots", "cpus", "max_cpus", "threads", "device", "unplug_timeouts"}
_PCI_MODELS = {m.qemu_name: m for m in PciModel}
_PCI_MODELS |= {alias: _PCI_MODELS[name] for alias, name in PCI_MODEL_ALIASES.items()}  # the client's aliases


class ConfigError(Exception):
    """The configuration file is malformed; the message says where."""


@dataclass(frozen=True)
class PlatformConfig:
    name: str
    geometry: Geometry
    coldplug: list[tuple[str, PlugRequest]] = field(default_factory=list)
    unplug_timeouts: UnplugTimeouts = field(default_factory=UnplugTimeouts)


@dataclass(frozen=True)
class ServerConfig:
    listen: list[str] = field(default_factory=list)
    platforms: list[PlatformConfig] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # [limits]: only the keys the file sets
    security: dict[str, Any] = field(default_factory=dict)  # [security]: Security.load's arguments it sets
    metrics_listen: str | None = None  # [server] metrics_listen: HOST:PORT for Prometheus metrics
    access_log: bool | None = None  # [server] access_log


def parse_size(value: object, where: str) -> int:
    """``"1G"`` -> 1073741824; ints pass through; ConfigError naming ``where`` otherwise."""
    try:
        return sizes.parse_size(value)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _int(table: dict[str, Any], key: str, where: str, default: int | None = None) -> int | None:
    value = table.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}.{key}: {value!r} is not a non-negative integer")
    return value


def _required_int(table: dict[str, Any], key: str, where: str) -> int:
    value = _int(table, key, where)
    if value is None:
        raise ConfigError(f"{where}.{key}: missing")
    return value


def _device(table: dict[str, Any], where: str) -> tuple[str, PlugRequest]:
    kind = table.get("type")
    allowed = {"dimm": {"size", "slot", "address"}, "cpu-core": {"core_id"}, "phb": {"index"},
               "pci-function": {"phb", "slot", "function", "model"}}  # fmt: skip
    if kind not in allowed:
        raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(allowed)}")
    unknown = set(table) - allowed[kind] - {"type", "id"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys for {kind}: {', '.join(sorted(unknown))}")
    device_id = table.get("id", "")
    if not isinstance(device_id, str):
        raise ConfigError(f"{where}.id: {device_id!r} is not a string")
    request: PlugRequest
    if kind == "dimm":
        if "size" not in table:
            raise ConfigError(f"{where}.size: missing")
        address = table.get("address")
        request = DimmRequest(
            size=parse_size(table["size"], f"{where}.size"),
            slot=_int(table, "slot", where),
            address=None if address is None else parse_size(address, f"{where}.address"),
        )
    elif kind == "cpu-core":
        request = CpuCoreParams(_required_int(table, "core_id", where))
    elif kind == "phb":
        request = PhbParams(_required_int(table, "index", where))
    else:
        model = _PCI_MODELS.get(str(table.get("model", "e1000")))
        if model is None:
            raise ConfigError(f"{where}.model: {table.get('model')!r} is not one of {', '.join(_PCI_MODELS)}")
        request = PciFunctionParams(
            phb_index=_int(table, "phb", where, 0) or 0,
            slot=_required_int(table, "slot", where),
            function=_int(table, "function", where, 0) or 0,
            model=model,
        )
    return device_id, request


def platform_config(table: dict[str, Any], where: str) -> PlatformConfig:
    """One ``[[platform]]`` table, checked (ConfigError naming ``where``); the pytest plugin's factory uses it too."""
    unknown = set(table) - _PLATFORM_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
    name = table.get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: missing or not a string")

    def size(key: str) -> int | None:
        return parse_size(table[key], f"{where}.{key}") if key in table else None

    try:
        geometry = Geometry.build(
            memory=size("memory"),
            max_memory=size("max_memory"),
            slots=_int(table, "slots", where),
            cpus=_int(table, "cpus", where),
            max_cpus=_int(table, "max_cpus", where),
            threads=_int(table, "threads", where),
        )
    except InvalidArgument as error:
        raise ConfigError(f"{where}: {error}") from None
    devices = table.get("device", [])
    if not isinstance(devices, list):
        raise ConfigError(f"{where}.device: must be an array of tables ([[platform.device]])")
    coldplug = [_device(d, f"{where}.device[{n}]") for n, d in enumerate(devices)]
    return PlatformConfig(name, geometry, coldplug, _timeouts(table.get("unplug_timeouts", {}), where))


def _timeouts(table: object, where: str) -> UnplugTimeouts:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}.unplug_timeouts: must be a table")
    unknown = set(table) - set(TIMEOUT_KEYS)
    if unknown:
        raise ConfigError(f"{where}.unplug_timeouts: unknown keys: {', '.join(sorted(unknown))}")
    try:
        return UnplugTimeouts(**table)
    except InvalidArgument as error:
        raise ConfigError(f"{where}.unplug_timeouts.{error}") from None


def load_config(path: Path) -> ServerConfig:
    """Read and validate a configuration file; raises ConfigError."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    unknown = set(document) - {"server", "platform", "limits", "security"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections: {', '.join(sorted(unknown))}")
    server = document.get("server", {})
    listen = server.get("listen", [])
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not all(isinstance(a, str) for a in listen):
        raise ConfigError(f"{path}: server.listen: must be an address or a list of addresses")
    metrics_listen = server.get("metrics_listen")
    if metrics_listen is not None and not isinstance(metrics_listen, str):
        raise ConfigError(f"{path}: server.metrics_listen: {metrics_listen!r} is not HOST:PORT")
    access_log = server.get("access_log")
    if access_log is not None and not isinstance(access_log, bool):
        raise ConfigError(f"{path}: server.access_log: {access_log!r} is not true or false")
    platforms = [platform_config(t, f"platform[{n}]") for n, t in enumerate(document.get("platform", []))]
    return ServerConfig(
        listen=listen,
        metrics_listen=metrics_listen,
        access_log=access_log,
        platforms=platforms,
        limits=_limits(document.get("limits", {}), path),
        security=_security(document.get("security", {}), path),
    )


_SECURITY_PATHS = ("tls_cert", "tls_key", "tls_client_ca", "admin_token_file")
_SECURITY_FLAGS = ("insecure", "reflection")


def _security(table: object, path: Path) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: security: must be a table")
    known = {*_SECURITY_PATHS, *_SECURITY_FLAGS, "unix_socket_mode", "certificate_roles"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{path}: security: unknown keys: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key in _SECURITY_PATHS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{path}: security.{key}: {value!r} is not a file name")
            settings[key] = path.parent / value
        elif key == "certificate_roles":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f'{path}: security.certificate_roles: must map subjects to roles ("guest:P")')
            settings[key] = dict(value)
        elif key in _SECURITY_FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: security.{key}: {value!r} is not true or false")
            settings[key] = value
        else:
            try:
                settings[key] = int(str(value), 8)
            except ValueError:
                raise ConfigError(f"{path}: security.{key}: {value!r} is not an octal file mode") from None
    return settings


def _limits(table: object, path: Path) -> dict[str, int]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: limits: must be a table")
    unknown = set(table) - set(LIMITS)
    if unknown:
        raise ConfigError(f"{path}: limits: unknown keys: {', '.join(sorted(unknown))} (known: {', '.join(LIMITS)})")
    for key, value in table.items():
        try:
            check_limit(key, value)
        except ValueError as error:
            raise ConfigError(f"{path}: {error}") from None
    return dict(table)
