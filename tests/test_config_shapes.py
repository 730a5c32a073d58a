"""Malformed configuration files and flags: one line and exit status 2, never a traceback (issue 15, item 5).

A property test writes TOML documents of every shape (the known tables and keys holding values
of any TOML type, tables where values go, unknown keys) and loads them: each is a ServerConfig
or a ConfigError of one line. The server's command line is then run on the review's cases.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papr_emu.config import ConfigError, ServerConfig, load_config, platform_config
from papr_emu.model import LIMITS, TIMEOUT_KEYS, PlatformError, Platforms

PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]

# --- TOML documents of any shape --------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A value as inline TOML: strings as JSON writes them (TOML basic strings), tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int | str):
        return json.dumps(value).replace("\x7f", "\\u007f")  # TOML escapes DEL too, JSON does not
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(document: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in document.items())


TIMEOUT_KEY_NAMES = sorted(TIMEOUT_KEYS)
KEYS = {
    "server": ["listen", "metrics_listen", "access_log"],
    "security": [
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "admin_token_file",
        "insecure",
        "reflection",
        "unix_socket_mode",
        "certificate_roles",
    ],
    "limits": sorted(LIMITS),
    "platform": ["name", "memory", "max_memory", "slots", "cpus", "max_cpus", "threads", "device", "unplug_timeouts"],
    "device": ["type", "id", "size", "slot", "address", "core_id", "index", "phb", "function", "model"],
}
# Strings TOML can hold (no surrogates), some of them meaningful to the config.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["1G", "512M", "1.5G", "-1G", "x", "", "dimm", "cpu-core", "phb", "pci-function", "e1000", "127.0.0.1:0",
     "127.0.0.1:99999", "127.0.0.1", "unix:", "660", "9", "default", "a" * 70]
)  # fmt: skip
scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([0, 1, -1, 4, 256 << 20, 2**63 - 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(text | st.sampled_from(KEYS["device"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def table(keys: list[str], value: st.SearchStrategy[Any] = values) -> st.SearchStrategy[dict[str, Any]]:
    """A table of some of ``keys`` (and now and then one it does not know), each holding ``value``."""
    return st.dictionaries(st.sampled_from(keys) | st.just("bogus"), value, max_size=len(keys))


devices = table(KEYS["device"], st.sampled_from(["dimm", "cpu-core", "phb", "pci-function", 1, "gpu"]) | values)
platforms = st.builds(
    lambda fields, device, timeouts: {**fields, "device": device, "unplug_timeouts": timeouts},
    table(KEYS["platform"]),
    st.lists(devices, max_size=3) | values,
    table(TIMEOUT_KEY_NAMES, st.floats(allow_nan=True) | st.integers() | values) | values,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "server": table(KEYS["server"]) | values,
        "security": table(KEYS["security"]) | values,
        "limits": table(KEYS["limits"], st.integers(-2, 2**70) | values) | values,
        "platform": st.lists(platforms | values, max_size=3) | values,
        "bogus": values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_toml_shape_loads_or_is_one_line(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("shape") / "papr.toml"
    path.write_text(toml_document(document))
    try:
        config = load_config(path)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}: ") and "\n" not in message and "Traceback" not in message, message
    else:
        assert isinstance(config, ServerConfig)


# Well-typed [[platform]] tables with numbers and sizes at and past the model's limits: what
# passes the config's checks is created, or refused with a PlatformError or ValueError (which
# serve prints as one line), never another exception.
numbers = st.sampled_from([0, 1, 2, 3, 4, 8, 31, 32, 33, 4096, 2**31, 2**32, 2**63 - 1]) | st.integers(0, 64)
sizes = st.sampled_from(["256M", "512M", "768M", "1G", "1.5G", "4G", "64T", "16E", 0, 1, 2**64 - 1])
well_typed_devices = st.one_of(
    st.fixed_dictionaries({"type": st.just("dimm"), "size": sizes},
                          optional={"slot": numbers, "address": sizes, "id": st.sampled_from(["", "d", "core0"])}),
    st.fixed_dictionaries({"type": st.just("cpu-core"), "core_id": numbers}, optional={"id": st.just("dimm0")}),
    st.fixed_dictionaries({"type": st.just("phb"), "index": numbers}),
    st.fixed_dictionaries({"type": st.just("pci-function"), "slot": numbers},
                          optional={"phb": numbers, "function": numbers, "model": st.just("virtio-net")}),
    st.fixed_dictionaries({"type": st.just("nvdimm"), "size": sizes,
                           "uuid": st.sampled_from(["", "x", "6b1f5e1c-8e2c-4c2b-9b0c-0b8f6d3f6f11"])},
                          optional={"label_size": sizes, "slot": numbers, "address": sizes}),
)  # fmt: skip
well_typed_platforms = st.fixed_dictionaries(
    {"name": st.just("p")},
    optional={
        "memory": sizes, "max_memory": sizes, "slots": numbers, "cpus": numbers, "max_cpus": numbers,
        "threads": numbers, "device": st.lists(well_typed_devices, max_size=4),
        "memory_model": st.sampled_from(["dimm", "lmb"]),
        "unplug_timeouts": st.dictionaries(st.sampled_from(TIMEOUT_KEY_NAMES), st.floats(0.001, 1e300)),
    },
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(well_typed_platforms)
def test_a_platform_that_loads_is_created_or_refused(table: dict[str, Any]) -> None:
    try:
        platform = platform_config(table, "platform[0]")
    except ConfigError:
        return
    try:
        Platforms().create(platform.name, platform.geometry, platform.coldplug, platform.unplug_timeouts)
    except (PlatformError, ValueError):  # serve's one line
        pass


def test_a_near_valid_file_names_the_key() -> None:
    # Shapes the property test reaches only now and then, with the line each gives.
    cases = {
        'server = "x"': "server: 'x' is not a table",
        "platform = 5": "platform: 5 is not an array",
        "platform = [1]": "platform[0]: 1 is not a table",
        "[[platform]]\nname = 'p'\ndevice = [1]": "platform[0].device[0]: 1 is not a table",
        "[[platform]]\nname = 'p'\n[[platform.device]]\ntype = ['dimm']": "platform[0].device[0].type: ['dimm'] is",
        "[[platform]]\nname = 'p'\n[[platform.device]]\nsize = '1G'": "platform[0].device[0].type: missing",
        "[[platform]]\nslots = 1": "platform[0].name: missing",
        "[[platform]]\nname = 'p'\nslots = -1": "platform[0].slots: -1 is not an integer >= 0",
        "[[platform]]\nname = 'p'\n[platform.unplug_timeouts]\ndimm = inf": "platform[0].unplug_timeouts.dimm: inf",
        "[[platform]]\nname = 'p'\n[platform.unplug_timeouts]\ndimm = nan": "platform[0].unplug_timeouts.dimm: nan",
        "[limits]\nplatforms = 0": "limits.platforms: 0 is not a positive integer",
        "[server]\nlisten = '127.0.0.1:99999'": "server.listen: '127.0.0.1:99999' is not HOST:PORT",
        "[server]\nlisten = ['127.0.0.1']": "server.listen: '127.0.0.1' is not HOST:PORT or unix:PATH: no port",
        "[server]\nmetrics_listen = 'unix:/m'": "server.metrics_listen: 'unix:/m' is not HOST:PORT",
        "[security]\ncertificate_roles = {a = 1}": "security.certificate_roles: a value is not a string",
        "[security]\nunix_socket_mode = '9'": "security.unix_socket_mode: '9' is not an octal file mode",
    }
    for content, words in cases.items():
        with pytest.raises(ConfigError) as raised:
            load_config_text(content)
        assert words in str(raised.value), (content, str(raised.value))


def load_config_text(content: str) -> ServerConfig:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "papr.toml"
        path.write_text(content)
        return load_config(path)


# --- the command line -------------------------------------------------------------------------


def refused(*args: str) -> str:
    """Run ``papr-emu`` expecting exit status 2; its stderr, which must be one line."""
    done = subprocess.run([*PAPR_EMU, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (args, done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'server = "x"\n', "server: 'x' is not a table"),
        (b"platform = 5\n", "platform: 5 is not an array"),
        (b"platform = [1]\n", "platform[0]: 1 is not a table"),
        (b"[[platform]]\nname = 'p'\ndevice = [1]\n", "platform[0].device[0]: 1 is not a table"),
        (b"[server]\nlisten = '\xff'\n", "not UTF-8 text"),
        (b"[[platform]]\nname = 'p'\n[platform.unplug_timeouts]\ncpu_core = inf\n", "unplug_timeouts.cpu_core"),
    ],
    ids=["server-string", "platform-int", "platform-array-of-int", "device-array-of-int", "not-utf8", "timeout-inf"],
)
def test_bad_config_file_is_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    (tmp_path / "papr.toml").write_bytes(content)
    line = refused("serve", "--listen", "127.0.0.1:0", "--config", str(tmp_path / "papr.toml"))
    assert line.startswith(f"papr-emu: {tmp_path / 'papr.toml'}: ") and words in line, line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-workers", "0"], "--max-workers: '0' is not a positive integer"),
        (["--max-platforms", "-3"], "--max-platforms: '-3' is not a positive integer"),
        (["--listen", "127.0.0.1:99999"], "the port must be 0 to 65535"),
        (["--listen", "127.0.0.1"], "'127.0.0.1' is not HOST:PORT or unix:PATH: no port"),
        (["--listen", "::1:50051"], "an IPv6 host goes in brackets"),
        (["--metrics-listen", "127.0.0.1"], "--metrics-listen: '127.0.0.1' is not HOST:PORT"),
        (["--grace", "-1"], "--grace: '-1' is not a number of seconds"),
        (["--grace", "nan"], "--grace: 'nan' is not a number of seconds"),
        (["--grace", "inf"], "--grace: 'inf' is not a number of seconds"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_serve_flag_is_one_line(args: list[str], words: str) -> None:
    line = refused("serve", *args)
    assert line.startswith("papr-emu") and words in line, line


@pytest.mark.parametrize(
    "args",
    [
        ["unplug", "x", "--wait", "--timeout", "nan"],
        ["health", "--timeout", "-1"],
        ["connectors", "--platform"],
        ["plug", "dimm", "--size", "1.3G"],
        ["nonsense"],
        ["watch", "--count", "-1"],  # waited for ever
        ["watch", "--after", "-5"],  # these two: protobuf's ValueError, a traceback
        ["create", "y", "--slots", "99999999999999999999"],
        ["conformance", "run"],
        ["conformance", "run", "--side", "x", "dimm-cycle"],
    ],
)
def test_bad_client_flag_is_one_line(args: list[str]) -> None:
    assert refused(*args).startswith("papr-emu")
