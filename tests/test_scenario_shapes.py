"""The conformance scenario files' reader (a msgspec schema, papr_emu_conformance.scenario): any
shape of file is a Scenario or one line of ScenarioError naming the step and key; values of the
wrong type are refused, not coerced (they were: expect_error = "no" meant true)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_shapes import text, values

from papr_emu_conformance.scenario import (
    DEVICE_KINDS,
    MODIFIERS,
    STEP_KINDS,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

DEVICE_KEYS = ["id", *DEVICE_KINDS, "size", "slot", "addr", "core_id", "index", "function", "phb", "model",
               "multifunction", "uuid", "label_size"]  # fmt: skip
STEP_KEYS = [*STEP_KINDS, "note", *sorted({m for modifiers in MODIFIERS.values() for m in modifiers})]
devices = st.dictionaries(st.sampled_from(DEVICE_KEYS), values | st.integers(0, 2**32), max_size=3)
plugs = st.dictionaries(st.sampled_from(DEVICE_KEYS), devices | values | st.just("d"), max_size=3)
steps = st.dictionaries(
    st.sampled_from(STEP_KEYS), plugs | values | st.integers(0, 2**32) | st.just(True), min_size=1, max_size=3
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "description": values,
        "geometry": st.dictionaries(st.sampled_from(["memory", "maxmem", "slots", "cpus", "maxcpus", "x"]), values)
        | values,
        "ids": st.dictionaries(text, st.dictionaries(st.sampled_from(["qemu", "papr", "x"]), values)) | values,
        "steps": st.lists(steps, max_size=4) | values,
        "bogus": values,
    },
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_shape_is_a_scenario_or_one_line(document: dict[str, Any]) -> None:
    try:
        assert isinstance(parse_scenario("s", document), Scenario)
    except ScenarioError as error:
        assert str(error).startswith("s") and "\n" not in str(error), str(error)


@pytest.mark.parametrize(
    ("step", "words"),
    [
        ({"unplug": "x", "expect_error": "no"}, "steps[0].expect_error: 'no' is not true or false"),
        ({"configure": 1, "fresh": "no"}, "steps[0].fresh: 'no' is not true or false"),
        ({"sense": 1, "note": 5}, "steps[0].note: 5 is not a string"),
        ({"survey": {"dtb": "x"}}, "steps[0].survey.dtb: 'x' is not true or false"),
        ({"check_exception": False}, "steps[0].check_exception: false is not true or a table"),
        ({"rtas": "x", "args": ["wa", "zz"]}, "steps[0].args[1]: 'zz' is not an integer, 'wa' or 'buf'"),
        ({"plug": {"id": "d", "dimm": {"size": "1G", "slot": True}}}, "steps[0].plug.dimm.slot: true is not"),
        ({"sense": 1, "nret": 2}, "steps[0]: unknown key(s) nret"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(step: dict[str, Any], words: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        parse_scenario("s", {"steps": [step]})
    assert words in str(refused.value), str(refused.value)


def test_ids_must_be_strings() -> None:
    with pytest.raises(ScenarioError, match="ids: a value is not a string"):
        parse_scenario("s", {"ids": {"a": {"qemu": [1]}}, "steps": [{"sense": 1}]})


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'description = "\xff"\nsteps = [{ sense = 1 }]\n')
    with pytest.raises(ScenarioError, match=r"bad\.toml: not UTF-8 text"):
        load_scenario(path)
