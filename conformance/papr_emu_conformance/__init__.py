"""Differential conformance: the same scenario on QEMU 7.2's pseries machine and on papr-emu, compared step by step.

* :mod:`.scenario` loads scenario files (TOML, one per scenario) into primitive steps;
* :mod:`.qemu` plays them on a real QEMU (qtest + QMP, no guest), :mod:`.papr` on a papr-emu
  platform through the gRPC API; both share the executor in :mod:`.side`;
* :mod:`.trace` holds the normalized records, :mod:`.compare` compares two traces;
* :mod:`.differences` is the one place that declares the allowed differences (docs/compat.md).

Development tooling, not part of the client library: it builds on ``papr_emu_client`` and,
to start a server in-process, on ``papr_emu``; neither imports it (``papr-emu conformance``
finds it through the ``papr_emu.commands`` entry point). The scenarios are package data.

Example::

    from papr_emu_client import connect
    from papr_emu_conformance import compare, load_scenario, find_scenario, run_papr, run_qemu

    scenario = load_scenario(find_scenario("dimm-cycle"))
    result = compare(run_qemu(scenario), run_papr(scenario, connect()), scenario)
    print(result.render())
"""

from .cli import main, run_papr, run_qemu
from .compare import Comparison, compare
from .differences import ALLOWED, AllowedDifference
from .qemu import QemuMissing
from .qemu_process import find_qemu
from .scenario import Scenario, ScenarioError, find_scenario, load_scenario, scenario_paths
from .trace import Record, Trace

__all__ = [
    "ALLOWED",
    "AllowedDifference",
    "Comparison",
    "QemuMissing",
    "Record",
    "Scenario",
    "ScenarioError",
    "Trace",
    "compare",
    "find_qemu",
    "find_scenario",
    "load_scenario",
    "main",
    "run_papr",
    "run_qemu",
    "scenario_paths",
]
