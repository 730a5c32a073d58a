"""Fault injection: per-platform rules that make RTAS calls fail the way real firmware can.

QEMU never returns busy (-2), extended delay (9900-9905), configure-connector status 5,
-9001 or -9002, and never refuses a hot-add; PowerVM does. A :class:`FaultRule` names the
calls it matches (RTAS call, connector index or type, device) and an :class:`Effect`; it
fires on the first ``times`` matching calls (0: on every one), each with ``probability``,
drawn from a :class:`random.Random` seeded with ``seed``, so a rule gives the same sequence
on every run. The platform asks :meth:`Faults.check` on every RTAS call before the call
changes anything: a status back means the call answers it and does nothing else.

A rule is plain data (:meth:`FaultRule.to_dict` / :meth:`FaultRule.from_dict`): its random
state is its seed and how many matching calls it has drawn for, so a saved rule resumes the
same sequence.

Example::

    >>> faults = Faults(monotonic=lambda: 0.0)
    >>> faults.add(FaultRule("busy-once", Effect.BUSY, call=Call.SET_INDICATOR, times=1))
    >>> faults.check(Call.SET_INDICATOR, Target(0x80000004, "LMB", "dimm0")).status
    -2
    >>> faults.check(Call.SET_INDICATOR, Target(0x80000004, "LMB", "dimm0")) is None
    True
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from papr_emu_client.constants import HOT_ADD_REFUSED

from . import rtas
from .errors import AlreadyExists, InvalidArgument, NotFound
from .rtas_events import LogFault

BUSY: Final = -2
#: 9900 + n: "call again after about 10^n milliseconds" (LoPAR; n is 0..5).
EXTENDED_DELAY_FIRST: Final = 9900
EXTENDED_DELAY_LAST: Final = 9905
CC_NEED_MEMORY: Final = 5  # ibm,configure-connector: pass a memory extent page in args[1] next time
NOT_SUPPORTED_IN_SYSTEM: Final = -9001  # ibm,configure-connector
NOT_SUPPORTED_IN_CONNECTOR: Final = -9002  # ibm,configure-connector
#: Linux's rtas_busy_delay sleeps at most 1 s whatever the hint: a retry after that is never early.
LINUX_MAX_DELAY_SECONDS: Final = 1.0
MAX_RULES: Final = 64


class Call(enum.StrEnum):
    """The RTAS calls a rule can match, by their RTAS names."""

    SET_INDICATOR = "set-indicator"
    GET_SENSOR_STATE = "get-sensor-state"
    CONFIGURE_CONNECTOR = "ibm,configure-connector"
    SET_POWER_LEVEL = "set-power-level"
    GET_POWER_LEVEL = "get-power-level"
    CHECK_EXCEPTION = "check-exception"
    EVENT_SCAN = "event-scan"
    HOTPLUG_LOG = "hotplug-log"  # not a call: a hotplug event log being queued (the log effects)


class Effect(enum.StrEnum):
    """What a firing rule does to the call."""

    BUSY = "busy"  # -2: call again
    EXTENDED_DELAY = "extended-delay"  # 9900..9905: call again after 10^n ms
    HARDWARE_ERROR = "hardware-error"  # -1
    NOT_SUPPORTED_IN_SYSTEM = "not-supported-in-system"  # configure-connector -9001
    NOT_SUPPORTED_IN_CONNECTOR = "not-supported-in-connector"  # configure-connector -9002
    NEED_MEMORY = "need-memory"  # configure-connector 5: the next call must pass an extent page
    REFUSE_HOT_ADD = "refuse-hot-add"  # unisolate of an inserted entity refused (R1-13.5.3.4-4)
    LOG_DROP = "log-drop"  # the hotplug log is never queued
    LOG_DUPLICATE = "log-duplicate"  # queued twice
    LOG_REORDER = "log-reorder"  # queued ahead of the pending logs
    INTERRUPT_DELAY = "interrupt-delay"  # queued without its interrupt (found by event-scan)
    INTERRUPT_DUPLICATE = "interrupt-duplicate"  # its interrupt pulsed twice


#: The effects on hotplug event logs and their interrupts (rules on Call.HOTPLUG_LOG).
LOG_EFFECTS: Final = frozenset(
    {Effect.LOG_DROP, Effect.LOG_DUPLICATE, Effect.LOG_REORDER, Effect.INTERRUPT_DELAY, Effect.INTERRUPT_DUPLICATE}
)


_DR_CALLS: Final = frozenset({Call.SET_INDICATOR, Call.GET_SENSOR_STATE, Call.CONFIGURE_CONNECTOR})
_POWER_CALLS: Final = frozenset({Call.SET_POWER_LEVEL, Call.GET_POWER_LEVEL})

#: The calls LoPAR lets each effect happen on (a rule with no call matches all of them).
ALLOWED_CALLS: Final[Mapping[Effect, frozenset[Call]]] = {
    # R1-13.5.3.2-2, R1-13.5.3.4-3; Linux's rtas_get_sensor retries busy too.
    Effect.BUSY: _DR_CALLS | _POWER_CALLS,
    # set-indicator: isolation-state only (R1-13.5.3.4-3); configure-connector: R1-13.7.4.3-7;
    # get-sensor-state: R1-7.3.5.5-2.
    Effect.EXTENDED_DELAY: frozenset(
        {Call.SET_INDICATOR, Call.GET_SENSOR_STATE, Call.CONFIGURE_CONNECTOR, Call.SET_POWER_LEVEL}
    ),
    Effect.HARDWARE_ERROR: frozenset(Call) - {Call.HOTPLUG_LOG},
    Effect.NOT_SUPPORTED_IN_SYSTEM: frozenset({Call.CONFIGURE_CONNECTOR}),
    Effect.NOT_SUPPORTED_IN_CONNECTOR: frozenset({Call.CONFIGURE_CONNECTOR}),
    Effect.NEED_MEMORY: frozenset({Call.CONFIGURE_CONNECTOR}),
    Effect.REFUSE_HOT_ADD: frozenset({Call.SET_INDICATOR}),
    **{effect: frozenset({Call.HOTPLUG_LOG}) for effect in LOG_EFFECTS},
}

_FIXED_STATUS: Final[Mapping[Effect, int]] = {
    Effect.BUSY: BUSY,
    Effect.HARDWARE_ERROR: rtas.HARDWARE_ERROR,
    Effect.NOT_SUPPORTED_IN_SYSTEM: NOT_SUPPORTED_IN_SYSTEM,
    Effect.NOT_SUPPORTED_IN_CONNECTOR: NOT_SUPPORTED_IN_CONNECTOR,
    Effect.NEED_MEMORY: CC_NEED_MEMORY,
    Effect.REFUSE_HOT_ADD: HOT_ADD_REFUSED,
    **{effect: 0 for effect in LOG_EFFECTS},
}

#: What each log effect does to the log as the event queue takes it (rtas_events.LogFault).
LOG_FAULTS: Final[Mapping[Effect, LogFault]] = {
    Effect.LOG_DROP: "drop",
    Effect.LOG_DUPLICATE: "duplicate",
    Effect.LOG_REORDER: "reorder",
    Effect.INTERRUPT_DELAY: "withhold-interrupt",
    Effect.INTERRUPT_DUPLICATE: "spurious-interrupt",
}

DRC_TYPE_LABELS: Final = ("CPU", "PHB", "PCI", "LMB", "PMEM")


def extended_delay_seconds(status: int) -> float:
    """The delay a 990x status hints at: 10^(status - 9900) ms."""
    return 10.0 ** (status - EXTENDED_DELAY_FIRST) / 1000.0


def is_extended_delay(status: int) -> bool:
    return EXTENDED_DELAY_FIRST <= status <= EXTENDED_DELAY_LAST


@dataclass(frozen=True, slots=True)
class Target:
    """What a call is about: its connector (index, type label, device id), for rules to match.

    ``indicator`` and ``value`` are set-indicator's; ``fresh_unisolate`` says the unisolate
    would take the connector out of its empty or available state with a device on it (an
    inserted entity: what REFUSE_HOT_ADD refuses).
    """

    drc_index: int = 0
    drc_type: str = ""
    device_id: str = ""
    indicator: int = 0
    value: int = 0
    fresh_unisolate: bool = False


def _fraction(seed: int, n: int) -> float:
    """Draw ``n`` of a rule seeded ``seed``: a number in [0, 1), the same on every run and machine."""
    digest = hashlib.blake2b(n.to_bytes(8, "big"), digest_size=8, key=seed.to_bytes(8, "big")).digest()
    return int.from_bytes(digest, "big") / (1 << 64)


@dataclass
class FaultRule:
    """One fault rule. ``None`` / ``""`` / 0 in a match field: any.

    ``times``: fire on this many matching calls, then never again (0: no limit).
    ``probability``: each matching call fires with this probability: the n-th matching call
    (from 0) draws ``blake2b(seed, n)`` as a fraction of 2**64, so a rule's firings depend on
    its seed and the order of matching calls alone, and a saved rule goes on in O(1).
    ``status``: the extended-delay status (9900..9905, default 9901) or the refusal status of
    REFUSE_HOT_ADD (default -9005); the other effects' statuses are fixed.
    ``matched`` and ``fired`` count matching calls and firings.
    """

    name: str
    effect: Effect
    call: Call | None = None
    drc_index: int = 0
    drc_type: str = ""
    device_id: str = ""
    status: int = 0
    times: int = 0
    probability: float = 1.0
    seed: int = 0
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        self.effect = Effect(self.effect)
        self.call = Call(self.call) if self.call else None
        self._validate()
        if not self.status:
            self.status = self.default_status()

    def default_status(self) -> int:
        if self.effect is Effect.EXTENDED_DELAY:
            return EXTENDED_DELAY_FIRST + 1
        return _FIXED_STATUS[self.effect]

    def _validate(self) -> None:
        if not self.name or len(self.name) > 64 or not self.name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument("name", self.name, "1 to 64 letters, digits, '-' or '_'")
        if self.call is not None and self.call not in ALLOWED_CALLS[self.effect]:
            allowed = ", ".join(sorted(ALLOWED_CALLS[self.effect]))
            raise InvalidArgument("call", str(self.call), f"LoPAR allows {self.effect} only on {allowed}")
        if self.drc_type and self.drc_type not in DRC_TYPE_LABELS:
            raise InvalidArgument("drc_type", self.drc_type, f"must be one of {', '.join(DRC_TYPE_LABELS)}")
        if not 0.0 < self.probability <= 1.0 or math.isnan(self.probability):
            raise InvalidArgument("probability", self.probability, "must be more than 0 and at most 1")
        for name in ("drc_index", "seed", "times", "matched", "fired"):  # proto uint32 / uint64
            number, bits = getattr(self, name), 32 if name == "drc_index" else 64
            if not 0 <= number < 1 << bits:
                raise InvalidArgument(name, number, f"must be 0 to 2**{bits} - 1")
        if self.effect is Effect.EXTENDED_DELAY:
            if self.status and not is_extended_delay(self.status):
                raise InvalidArgument("status", self.status, "an extended delay is 9900 to 9905")
        elif self.effect is Effect.REFUSE_HOT_ADD:
            if self.status and self.status >= 0:
                raise InvalidArgument("status", self.status, "a refusal status must be negative")
        elif self.status and self.status != _FIXED_STATUS[self.effect]:
            raise InvalidArgument("status", self.status, f"{self.effect} is always {_FIXED_STATUS[self.effect]}")

    @property
    def exhausted(self) -> bool:
        return bool(self.times) and self.fired >= self.times

    def matches(self, call: Call, target: Target) -> bool:
        if call not in ALLOWED_CALLS[self.effect] or (self.call is not None and call is not self.call):
            return False
        if self.drc_index and target.drc_index != self.drc_index:
            return False
        if self.drc_type and target.drc_type != self.drc_type:
            return False
        if self.device_id and target.device_id != self.device_id:
            return False
        if call is Call.SET_INDICATOR:
            if self.effect is Effect.REFUSE_HOT_ADD:
                return target.fresh_unisolate
            if self.effect is Effect.EXTENDED_DELAY:
                return target.indicator == rtas.ISOLATION_STATE
        return True

    def draw(self) -> bool:
        """One matching call: does the rule fire on it? (Always draws, so the sequence depends on
        the matching calls alone.)"""
        fires = _fraction(self.seed, self.matched) < self.probability
        self.matched += 1
        if fires and not self.exhausted:
            self.fired += 1
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain data (JSON- and TOML-safe); ``FaultRule.from_dict`` makes it again."""
        return {
            "name": self.name, "effect": str(self.effect), "call": str(self.call) if self.call else "",
            "drc_index": self.drc_index, "drc_type": self.drc_type, "device_id": self.device_id,
            "status": self.status, "times": self.times, "probability": self.probability, "seed": self.seed,
            "matched": self.matched, "fired": self.fired,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        known = {k: v for k, v in data.items() if k in _RULE_KEYS}
        if "effect" in known:
            try:
                known["effect"] = Effect(known["effect"])
            except ValueError:
                raise InvalidArgument("effect", known["effect"], f"must be one of {', '.join(Effect)}") from None
        if known.get("call"):
            try:
                known["call"] = Call(known["call"])
            except ValueError:
                raise InvalidArgument("call", known["call"], f"must be one of {', '.join(Call)}") from None
        else:
            known["call"] = None
        return cls(**known)


_RULE_KEYS: Final = frozenset(
    {"name", "effect", "call", "drc_index", "drc_type", "device_id", "status", "times", "probability", "seed",
     "matched", "fired"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule fired on a call: the status the call answers with."""

    rule: str
    effect: Effect
    call: Call
    drc_index: int
    status: int


class Faults:
    """A platform's fault rules and the firmware state they leave (a hinted delay, a page owed).

    ``too_soon`` and ``owes_extent`` are asked by the conduct checks; :meth:`check` is the hook
    every RTAS call goes through.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self.rules: list[FaultRule] = []
        # A 990x answered: the same call (kind, connector, indicator) again not before this time.
        self._delay_until: dict[tuple[Call, int, int], float] = {}
        self._extent_owed: set[int] = set()  # connectors answered 5: the next call must pass a page

    def add(self, rule: FaultRule) -> None:
        if any(r.name == rule.name for r in self.rules):
            raise AlreadyExists("name", rule.name, "a fault rule of this name exists")
        if len(self.rules) >= MAX_RULES:
            raise InvalidArgument("name", rule.name, f"a platform holds at most {MAX_RULES} fault rules")
        self.rules.append(rule)

    def clear(self, names: frozenset[str] = frozenset()) -> int:
        """Remove the named rules (all when none is named); how many went. An unknown name: nothing goes."""
        unknown = sorted(names - {r.name for r in self.rules})
        if unknown:
            raise NotFound("names", unknown[0], "fault rule")
        before = len(self.rules)
        self.rules = [r for r in self.rules if names and r.name not in names]
        return before - len(self.rules)

    def too_soon(self, call: Call, target: Target) -> float | None:
        """Seconds early, if this call retries one answered with an extended delay before the delay passed.

        The delay counted is the hint clamped to Linux's 1 s (rtas_busy_delay), so Linux is never early.
        """
        until = self._delay_until.pop((call, target.drc_index, target.indicator), None)
        now = self._monotonic()
        if until is None or now >= until:
            return None
        return until - now

    def check(self, call: Call, target: Target, memory_extent: int = 0) -> Fired | None:
        """The hook on every RTAS call: the fault it answers with, or None (the call runs).

        A connector answered 5 keeps answering 5 until a call passes a memory extent page.
        """
        if call is Call.CONFIGURE_CONNECTOR and target.drc_index in self._extent_owed:
            if not memory_extent:
                return Fired("", Effect.NEED_MEMORY, call, target.drc_index, CC_NEED_MEMORY)
            self._extent_owed.discard(target.drc_index)
            return None
        for rule in self.rules:
            if rule.effect is Effect.NEED_MEMORY and memory_extent:
                continue  # a page was passed already: this call needs no more
            if rule.matches(call, target) and rule.draw():
                fired = Fired(rule.name, rule.effect, call, target.drc_index, rule.status)
                if rule.effect is Effect.EXTENDED_DELAY:
                    delay = min(extended_delay_seconds(rule.status), LINUX_MAX_DELAY_SECONDS)
                    self._delay_until[(call, target.drc_index, target.indicator)] = self._monotonic() + delay
                elif rule.effect is Effect.NEED_MEMORY:
                    self._extent_owed.add(target.drc_index)
                return fired
        return None

    def owes_extent(self, drc_index: int) -> bool:
        return drc_index in self._extent_owed

    def reset(self) -> None:
        """The connectors were reset (CAS): no page is owed, no delay hinted (the rules stay)."""
        self._extent_owed.clear()
        self._delay_until.clear()

    def state(self) -> tuple[list[dict[str, Any]], list[int]]:
        """What a snapshot keeps: the rules (with their counts) and the connectors owed an extent page.

        Hinted delays are not kept: they are measured on this process's monotonic clock.
        """
        return [rule.to_dict() for rule in self.rules], sorted(self._extent_owed)

    def restore(self, rules: list[dict[str, Any]], extent_owed: list[int]) -> None:
        """Put back :meth:`state`."""
        self.rules = [FaultRule.from_dict(rule) for rule in rules]
        self._extent_owed = set(extent_owed)


__all__ = [
    "ALLOWED_CALLS",
    "HOT_ADD_REFUSED",
    "LOG_EFFECTS",
    "LOG_FAULTS",
    "Call",
    "Effect",
    "FaultRule",
    "Faults",
    "Fired",
    "Target",
    "extended_delay_seconds",
    "is_extended_delay",
]
