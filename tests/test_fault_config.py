"""Fault rules in the configuration file (``[[platform.fault]]``, issue 12 item 1): a server started
with ``serve --config`` has them from its first RTAS call and lists them; a bad rule stops the start
with one line naming its key; the pytest plugin's ``from_config`` installs them as ``serve`` does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import events_since
from papr.v1 import connector_pb2, fault_pb2
from papr_emu.config import ConfigError, load_config
from papr_emu.model import Platforms
from papr_emu.pytest_plugin import PaprEmuFixture, PlatformFactory
from papr_emu.service.faults import rule_to_pb
from papr_emu_client import Client, Credentials, Guest, connect
from papr_emu_client.cli import check_health

PAPR_EMU = [sys.executable, "-m", "papr_emu.cli"]
ISO = 9001  # set-indicator: isolation-state
CPU1 = 0x10000001
LMB = 0x80000004

RULES = """
[[platform.fault]]
name = "busy-twice"
effect = "busy"
call = "get-sensor-state"
drc_index = 0x10000001
times = 2

[[platform.fault]]
name = "slow-lmbs"
effect = "extended-delay"
call = "configure-connector"
drc_type = "lmb"
device_id = "dimm0"
status = 9903
probability = 0.25
seed = 42

[[platform.fault]]
name = "refuse"
effect = "refuse-hot-add"
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Client, subprocess.Popen[bytes]]]:
    """A ``papr-emu serve --config`` process with two platforms holding RULES, and a client of it."""
    socket = f"unix:{tmp_path}/papr.sock"
    config = tmp_path / "papr.toml"
    config.write_text(
        f'[server]\nlisten = ["{socket}"]\n'
        + "".join(
            f'\n[[platform]]\nname = "{name}"\nslots = 2\nmax_memory = "2G"\nmax_cpus = 2\n{RULES}'
            for name in ("faulty", "twin")
        )
    )
    process = subprocess.Popen([*PAPR_EMU, "serve", "--config", str(config)], stderr=subprocess.PIPE)
    try:
        wait_serving(socket, process)
        with connect(socket) as client:
            yield client, process
    finally:
        process.terminate()
        process.wait(15)


def wait_serving(target: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while check_health(Credentials.resolve(), target, "", 1.0) != "SERVING":
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the server did not become SERVING"
        time.sleep(0.1)


def listed(client: Client, platform: str) -> list[fault_pb2.FaultRule]:
    return list(client.faults.ListFaultRules(fault_pb2.ListFaultRulesRequest(platform=platform)).rules)


def test_config_rules_are_listed_with_every_field(served: tuple[Client, subprocess.Popen[bytes]]) -> None:
    client, _ = served
    F = fault_pb2
    expected = [
        F.FaultRule(name="busy-twice", effect=F.FAULT_EFFECT_BUSY, call=F.FAULT_CALL_GET_SENSOR_STATE,
                    drc_index=CPU1, status=-2, times=2, probability=1.0),
        F.FaultRule(name="slow-lmbs", effect=F.FAULT_EFFECT_EXTENDED_DELAY, call=F.FAULT_CALL_CONFIGURE_CONNECTOR,
                    drc_type=connector_pb2.DRC_TYPE_LMB, device_id="dimm0", status=9903, probability=0.25, seed=42),
        F.FaultRule(name="refuse", effect=F.FAULT_EFFECT_REFUSE_HOT_ADD, status=-9005, probability=1.0),
    ]  # fmt: skip
    assert listed(client, "faulty") == expected
    assert listed(client, "twin") == expected


def test_a_config_rule_fires_on_a_real_rtas_call(served: tuple[Client, subprocess.Popen[bytes]]) -> None:
    client, _ = served
    with Guest(client.rtas, "faulty", retry=None) as guest:  # retry=None: the guest sees each -2
        assert [guest.sense(CPU1)[0] for _ in range(3)] == [-2, -2, 0]  # times = 2, then the call runs
        assert guest.sense(0x10000000) == (0, 1)  # another connector: the rule does not match
    rule = listed(client, "faulty")[0]
    assert (rule.name, rule.matched, rule.fired) == ("busy-twice", 3, 2)
    fired = [e.fault_fired for e in events_since(client, "faulty", 0) if e.WhichOneof("kind") == "fault_fired"]
    assert [(f.rule, f.call, f.drc_index, f.status) for f in fired] == [
        ("busy-twice", fault_pb2.FAULT_CALL_GET_SENSOR_STATE, CPU1, -2)
    ] * 2
    # Each platform has its own copy of the file's rules: the twin's counters have not moved.
    assert [(r.matched, r.fired) for r in listed(client, "twin")] == [(0, 0)] * 3


def test_config_rules_can_be_cleared_like_any_other(served: tuple[Client, subprocess.Popen[bytes]]) -> None:
    client, _ = served
    cleared = client.faults.ClearFaultRules(fault_pb2.ClearFaultRulesRequest(platform="faulty", names=["refuse"]))
    assert cleared.removed == 1
    assert [r.name for r in listed(client, "faulty")] == ["busy-twice", "slow-lmbs"]
    with Guest(client.rtas, "faulty", retry=None) as guest:
        assert guest.sense(CPU1)[0] == -2


def refused(config: Path) -> str:
    """``serve --config`` expecting exit status 2; its stderr, which must be one line."""
    done = subprocess.run([*PAPR_EMU, "serve", "--listen", "127.0.0.1:0", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


GOOD = 'name = "ok"\neffect = "hardware-error"\n'


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('name = "x"\neffect = "bogus"', "platform[1].fault[1].effect: 'bogus': must be one of busy, extended-delay"),
        ('name = "x"\neffect = "busy"\ncall = "event-scan"', "platform[1].fault[1].call: 'event-scan': LoPAR allows "
         "busy only on"),
        ('name = "x"\neffect = "busy"\ncall = "nope"', "platform[1].fault[1].call: 'nope' is not one of set-indicator"),
        ('name = "x"\neffect = "extended-delay"\nstatus = 9906', "platform[1].fault[1].status: 9906: an extended "
         "delay is 9900 to 9905"),
        ('name = "x"\neffect = "busy"\nstatus = 5', "platform[1].fault[1].status: 5: busy is always -2"),
        ('name = "x"\neffect = "busy"\nprobability = 0', "platform[1].fault[1].probability: 0.0: must be more than 0"),
        ('name = "x"\neffect = "busy"\nprobability = nan', "platform[1].fault[1].probability: nan: must be more"),
        ('name = "x"\neffect = "busy"\ndrc_type = "gpu"', "platform[1].fault[1].drc_type: 'gpu': must be one of CPU"),
        ('name = "x y"\neffect = "busy"', "platform[1].fault[1].name: 'x y': 1 to 64 letters, digits"),
        ('name = "ok"\neffect = "busy"', "platform[1].fault[1].name: 'ok': a fault rule of this name exists"),
        ('effect = "busy"', "platform[1].fault[1].name: missing"),
        ('name = "x"', "platform[1].fault[1].effect: missing"),
        ('name = "x"\neffect = "busy"\ntimes = -1', "platform[1].fault[1].times: -1 is not an integer >= 0"),
        ('name = "x"\neffect = "busy"\nseed = 0x1_0000_0000_0000_0000', "platform[1].fault[1].seed: "
         "18446744073709551616 is not an integer <= 18446744073709551615"),
        ('name = "x"\neffect = "busy"\ndrc_index = 0x1_0000_0000', "platform[1].fault[1].drc_index: 4294967296 is "
         "not an integer <= 4294967295"),
        ('name = "x"\neffect = "busy"\nprobability = "half"', "platform[1].fault[1].probability: 'half' is not a "
         "number"),
        ('name = "x"\neffect = "busy"\nwhen = 1', "platform[1].fault[1]: unknown keys: when"),
    ],
)  # fmt: skip
def test_a_bad_rule_stops_the_start_naming_its_key(tmp_path: Path, rule: str, message: str) -> None:
    config = tmp_path / "papr.toml"
    config.write_text(f'[[platform]]\nname = "a"\n\n[[platform]]\nname = "b"\n\n'
                      f"[[platform.fault]]\n{GOOD}\n[[platform.fault]]\n{rule}\n")  # fmt: skip
    line = refused(config)
    assert line.startswith(f"papr-emu: {config}: {message}"), line


def test_more_rules_than_a_platform_holds_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "papr.toml"
    config.write_text('[[platform]]\nname = "a"\n' + "".join(
        f'[[platform.fault]]\nname = "r{n}"\neffect = "busy"\n' for n in range(65)))  # fmt: skip
    assert refused(config) == f"papr-emu: {config}: platform[0].fault[64].name: 'r64': a platform holds at most 64 " \
        "fault rules\n"  # fmt: skip


def test_the_pytest_plugin_installs_a_files_rules(
    papr_emu: PaprEmuFixture, papr_emu_platform: PlatformFactory, tmp_path: Path
) -> None:
    (tmp_path / "papr.toml").write_text(
        textwrap.dedent("""
        [[platform]]
        name = "plugin-faults"
        [[platform.fault]]
        name = "hw"
        effect = "hardware-error"
        call = "ibm,configure-connector"
    """)
    )  # the RTAS name of the call is accepted too
    assert papr_emu_platform.from_config(tmp_path / "papr.toml") == ["plugin-faults"]
    (rule,) = listed(papr_emu, "plugin-faults")
    assert (rule.name, rule.effect, rule.call) == (
        "hw", fault_pb2.FAULT_EFFECT_HARDWARE_ERROR, fault_pb2.FAULT_CALL_CONFIGURE_CONNECTOR,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"platform\[0\]\.fault\[0\]\.effect: missing"):
        (tmp_path / "bad.toml").write_text('[[platform]]\nname = "p"\n[[platform.fault]]\nname = "x"\n')
        papr_emu_platform.from_config(tmp_path / "bad.toml")


def test_the_pytest_plugin_takes_rules_as_arguments(
    papr_emu: PaprEmuFixture, papr_emu_platform: PlatformFactory
) -> None:
    name = papr_emu_platform(faults=[{"name": "b", "effect": "busy", "call": "get-sensor-state", "times": 1}])
    with Guest(papr_emu.rtas, name, retry=None) as guest:
        assert [guest.sense(0x10000000)[0] for _ in range(2)] == [-2, 0]
    with pytest.raises(ValueError, match=r"^papr_emu_platform\.fault\[0\]\.times: -1 is not an integer >= 0$"):
        papr_emu_platform(faults=[{"name": "b", "effect": "busy", "times": -1}])


def test_a_platform_without_rules_has_none(papr_emu: PaprEmuFixture, papr_emu_platform: PlatformFactory) -> None:
    assert listed(papr_emu, papr_emu_platform()) == []
    with pytest.raises(grpc.RpcError) as error:
        listed(papr_emu, "no-such-platform")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_state_directory_keeps_the_rules_and_their_counts(tmp_path: Path) -> None:
    # A platform the state directory brings back is not made again from the file: its rules, and
    # how often they fired, are as the last run left them (the file's rules are not added twice).
    socket = f"unix:{tmp_path}/papr.sock"
    config = tmp_path / "papr.toml"
    config.write_text(f'[server]\nlisten = ["{socket}"]\nstate_dir = "state"\n[[platform]]\nname = "kept"\n'
                      f"max_cpus = 2\n{RULES}")  # fmt: skip
    for run in range(2):
        process = subprocess.Popen([*PAPR_EMU, "serve", "--config", str(config)], stderr=subprocess.PIPE)
        try:
            wait_serving(socket, process)
            with connect(socket) as client:
                rules = listed(client, "kept")
                assert [(r.name, r.matched, r.fired) for r in rules] == [
                    ("busy-twice", run, run), ("slow-lmbs", 0, 0), ("refuse", 0, 0),
                ]  # fmt: skip
                with Guest(client.rtas, "kept", retry=None) as guest:
                    assert guest.sense(0x10000001)[0] == -2
        finally:
            process.terminate()
            assert process.wait(15) == 0


# --- any [[platform.fault]] table: a rule every interface can carry, or one line ------------------

KEYS = ["name", "effect", "call", "drc_index", "drc_type", "device_id", "status", "times", "probability", "seed"]
WORDS = [
    "busy",
    "extended-delay",
    "refuse-hot-add",
    "log-drop",
    "need-memory",
    "set-indicator",
    "event-scan",
    "configure-connector",
    "ibm,configure-connector",
    "hotplug-log",
    "lmb",
    "LMB",
    "Pci",
    "r1",
    "",
    "x y",
]
values = (
    st.sampled_from(WORDS)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, -2, 5, 9899, 9900, 9905, -9005, 2**31, 2**32 - 1, 2**64 - 1, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
)
# Tables of any keys and values, and tables with a good name and effect, so that many load.
good = st.fixed_dictionaries(
    {"name": st.sampled_from(["r1", "r2", "busy-2"]), "effect": st.sampled_from(WORDS[:5])},
    optional={
        "call": st.sampled_from([w for w in WORDS if "-" in w or "," in w]),
        "drc_index": st.integers(0, 2**32),
        "drc_type": st.sampled_from(["lmb", "LMB", "cpu", "Pci", "gpu", ""]),
        "device_id": st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
        "status": st.sampled_from([0, -2, -1, 1, 5, 9900, 9905, 9906, -9005]),
        "times": st.integers(0, 2**32),
        "probability": st.floats(0, 1) | st.just(float("nan")),
        "seed": st.integers(0, 2**64),
    },
)
faults = st.lists(good, max_size=3, unique_by=lambda table: table["name"]) | st.lists(
    good | st.dictionaries(st.sampled_from([*KEYS, "bogus"]), values, max_size=len(KEYS)), max_size=3
)


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan" if value != value else ("inf" if value > 0 else "-inf") if abs(value) == float("inf") else repr(value)
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML escapes DEL, JSON does not


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(faults)
def test_any_fault_table_is_a_rule_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, tables: list[dict[str, object]]
) -> None:
    path = tmp_path_factory.mktemp("faults") / "papr.toml"
    path.write_text('[[platform]]\nname = "p"\n' + "".join(
        "[[platform.fault]]\n" + "".join(f"{key} = {toml(value)}\n" for key, value in table.items()) for table in tables
    ))  # fmt: skip
    try:
        (platform,) = load_config(path).platforms
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}: platform[0].fault[") and "\n" not in message, message
        event("refused")
        return
    event(f"{len(platform.faults)} rule(s) loaded")
    # What loads installs on a platform and goes into a ListFaultRules answer (no value out of a field's range).
    created = Platforms().create("p", platform.geometry)
    for rule in platform.fault_rules():
        created.add_fault_rule(rule)
    assert [rule_to_pb(rule).name for rule in created.fault_rules()] == [t["name"] for t in tables]
