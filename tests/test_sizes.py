"""papr_emu_client.sizes.parse_size, the one size parser, and its three users (config, CLI, scenarios)."""

from __future__ import annotations

import argparse

import pytest

from papr_emu.config import ConfigError
from papr_emu.config import parse_size as config_size
from papr_emu_client.cli import size_argument
from papr_emu_client.sizes import MAX_SIZE, parse_size
from papr_emu_conformance.scenario import ScenarioError, parse_scenario


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),  # a plain int
        (4096, 4096),
        (MAX_SIZE, MAX_SIZE),
        ("4096", 4096),  # digits alone: bytes
        ("512B", 512),  # a bare B: bytes
        ("1K", 1 << 10),  # every suffix
        ("1M", 1 << 20),
        ("1G", 1 << 30),
        ("1T", 1 << 40),
        ("1P", 1 << 50),
        ("1E", 1 << 60),
        ("512m", 512 << 20),  # any case
        ("4gib", 4 << 30),
        ("512MB", 512 << 20),  # suffix then B
        ("512MiB", 512 << 20),  # suffix then iB
        ("1 G", 1 << 30),  # whitespace between number and suffix
        ("  2T ", 2 << 40),  # and around it all
        ("15E", 15 << 60),
        ("1.5G", 3 << 29),  # a fraction, when it is whole bytes (QEMU's -m 1.5G)
        ("0.25k", 256),
        ("1.50 GiB", 3 << 29),
        ("15.9375E", MAX_SIZE + 1 - (1 << 56)),
    ],
)
def test_accepted_forms(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "negative"),
        (True, "expected a number of bytes"),  # TOML's booleans are ints to Python
        (1.5, "is not a size: bytes"),
        (None, "is not a size: bytes"),
        ("", "is not a size: bytes"),
        ("G", "is not a size: bytes"),  # no number
        ("-1G", "is not a size: bytes"),
        ("1.3G", "not a whole number of bytes"),  # QEMU truncates; papr-emu refuses
        ("0.1K", "not a whole number of bytes"),
        ("1.5", "a fraction needs a suffix"),  # a fraction of bytes
        ("1.5B", "a fraction needs a suffix"),
        ("1.G", "is not a size: bytes"),
        (".5G", "is not a size: bytes"),
        ("15.99E", "not a whole number of bytes"),
        ("16.0E", "more than 2**64 - 1"),
        ("0x100", "is not a size: bytes"),
        ("1X", "is not a size: bytes"),  # unknown suffix
        ("1iB", "is not a size: bytes"),  # iB only after a suffix
        ("1GG", "is not a size: bytes"),
        ("1 G B", "is not a size: bytes"),
        ("\u0661G", "is not a size: bytes"),  # non-ASCII digits (ARABIC-INDIC DIGIT ONE)
        ("16E", "more than 2**64 - 1"),
        (MAX_SIZE + 1, "more than 2**64 - 1"),
    ],
)
def test_rejections_say_why(value: object, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_size(value)
    message = str(raised.value)
    assert message.startswith(repr(value)) and reason in message, message  # names the value, then why


def test_every_user_reads_the_same_sizes() -> None:
    # config.py: ConfigError naming the key; the CLI: argparse's error type; scenarios: the step.
    assert config_size("1 P", "platform[0].memory") == size_argument("1 P") == 1 << 50
    with pytest.raises(ConfigError, match=r"^platform\[0\]\.memory: '1\.3G' is not a size"):
        config_size("1.3G", "platform[0].memory")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'1\.3G' is not a size"):
        size_argument("1.3G")
    steps = [{"plug": {"id": "d", "dimm": {"size": "512 MiB"}}}]
    assert parse_scenario("s", {"steps": steps}).steps[0].step.spec.size == 512 << 20  # type: ignore[union-attr]
    with pytest.raises(ScenarioError, match=r"steps\[0\]\.plug\.dimm\.size: '1\.3G' is not a size"):
        parse_scenario("s", {"steps": [{"plug": {"id": "d", "dimm": {"size": "1.3G"}}}]})
