"""Fault rules for the cross-language stubs' busy / extended-delay runs (test_cpp_stub, test_node_stub).

Busy or a short extended delay (1 or 10 ms, so that the tests stay fast) on the calls a stub
makes: one rule firing with a seeded probability, so that some land inside a batch and inside
a walk, then one firing once on each kind of call, so that every kind is hit whatever the draws.
"""

from __future__ import annotations

from collections.abc import Sequence

from papr.v1 import fault_pb2
from papr_emu_client import Client

F = fault_pb2
CALLS = [F.FAULT_CALL_GET_SENSOR_STATE, F.FAULT_CALL_SET_INDICATOR, F.FAULT_CALL_CONFIGURE_CONNECTOR]
FAULTS = {  # name: effect, status
    "busy": (F.FAULT_EFFECT_BUSY, -2),
    "delay-9900": (F.FAULT_EFFECT_EXTENDED_DELAY, 9900),
    "delay-9901": (F.FAULT_EFFECT_EXTENDED_DELAY, 9901),
}


def add_fault_rules(client: Client, platform: str, fault: str, probability: float) -> None:
    effect, status = FAULTS[fault]
    rules = [F.FaultRule(name=fault, effect=effect, status=status, probability=probability, seed=12)]
    rules += [
        F.FaultRule(name=f"{fault}-{n}", effect=effect, status=status, call=c, times=1) for n, c in enumerate(CALLS)
    ]
    for rule in rules:
        client.faults.AddFaultRule(F.AddFaultRuleRequest(platform=platform, rule=rule))


def check_faults(client: Client, platform: str, fault: str, fired: Sequence[fault_pb2.FaultFired]) -> None:
    """The events of the faults that fired, by the rules' counts: each kind of call hit."""
    effect, status = FAULTS[fault]
    listed = client.faults.ListFaultRules(F.ListFaultRulesRequest(platform=platform)).rules
    assert sum(rule.fired for rule in listed) == len(fired)
    assert 0 < listed[0].fired < listed[0].matched  # the one with a probability
    assert {(f.effect, f.status) for f in fired} == {(effect, status)}
    assert {f.call for f in fired} == set(CALLS)
