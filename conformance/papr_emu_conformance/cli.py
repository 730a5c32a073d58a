"""``papr-emu conformance`` / ``python -m papr_emu_conformance``: run scenarios on QEMU and papr-emu.

Commands::

    list                                   the scenarios and the declared differences
    run SCENARIO [--side qemu|papr|both]   run one scenario and print the trace(s);
                 [--json] [--verbose]      with both sides, the side-by-side comparison

SCENARIO is a name from ``list`` or a path to a .toml file. The papr-emu side uses the
server at ``--target`` or $PAPR_EMU_HOST; without either it starts one in-process. The
QEMU side needs ``qemu-system-ppc64`` (``--qemu`` or $PAPR_EMU_QEMU to use another).

Exit status: 0 the run succeeded (both: the traces agree, up to declared differences),
1 the traces differ, 2 bad usage or scenario, 3 QEMU is missing (nothing was compared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from papr_emu_client.arguments import OneLineParser
from papr_emu_client.connect import HOST_VARIABLE, Client, connect

from .compare import compare, declarations_text
from .papr import PaprSide
from .qemu import QemuMissing, QemuSide
from .qemu_process import find_qemu
from .scenario import Scenario, ScenarioError, find_scenario, load_scenario, scenario_dir, scenario_paths
from .trace import Trace

EXIT_OK, EXIT_DIFFER, EXIT_USAGE, EXIT_NO_QEMU = 0, 1, 2, 3


def run_qemu(scenario: Scenario, binary: str | None = None) -> Trace:
    """The scenario on a fresh QEMU 7.2 (raises QemuMissing without one)."""
    return QemuSide(scenario, binary).run()


def run_papr(scenario: Scenario, client: Client) -> Trace:
    """The scenario on a fresh platform of the server ``client`` talks to."""
    return PaprSide(scenario, client).run()


@contextlib.contextmanager
def papr_client(target: str | None) -> Iterator[Client]:
    """A client for ``target`` / $PAPR_EMU_HOST, or for a server started here (in-process)."""
    target = target or os.environ.get(HOST_VARIABLE)
    if target:
        with connect(target) as client:
            yield client
        return
    from papr_emu import PaprServer  # the server package; only needed without a target
    from papr_emu.logs import configure_logging
    from papr_emu.model import Platforms

    configure_logging("console", "critical")
    with tempfile.TemporaryDirectory(prefix="papr-conf-") as tmp:
        server = PaprServer(Platforms(), [f"unix:{tmp}/papr.sock"])
        server.start()
        try:
            with connect(server.addresses[0]) as client:
                yield client
        finally:
            server.stop(grace=0.5)


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = OneLineParser(
        prog="papr-emu conformance", description="Differential conformance scenarios: QEMU 7.2 vs papr-emu."
    )
    parser.add_argument("--scenarios", type=Path, help=f"scenario directory (default: {scenario_dir()})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the scenarios and the declared differences")
    run = commands.add_parser("run", help="run one scenario and print the trace(s)")
    run.add_argument("scenario", help="a scenario name (see list) or a .toml file")
    run.add_argument("--side", choices=("qemu", "papr", "both"), default="both")
    run.add_argument("--json", action="store_true", help="print JSON instead of text")
    run.add_argument("--verbose", "-v", action="store_true", help="every compared field (and allowed differences)")
    run.add_argument("--qemu", help="the QEMU binary (default: $PAPR_EMU_QEMU or qemu-system-ppc64)")
    run.add_argument("--target", help=f"papr-emu server (default: ${HOST_VARIABLE}, else one started here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list(args.scenarios)
    try:
        scenario = load_scenario(find_scenario(args.scenario, args.scenarios))
    except (ScenarioError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    qemu_trace = papr_trace = None
    if args.side in ("qemu", "both"):
        if find_qemu(args.qemu) is None:
            wanted = args.qemu or os.environ.get("PAPR_EMU_QEMU") or "qemu-system-ppc64"
            print(
                f"QEMU side skipped: {wanted} not found (apt-get install qemu-system-ppc); nothing compared",
                file=sys.stderr,
            )
            return EXIT_NO_QEMU
        try:
            qemu_trace = run_qemu(scenario, args.qemu)
        except QemuMissing as error:
            print(f"QEMU side skipped: {error}", file=sys.stderr)
            return EXIT_NO_QEMU
    if args.side in ("papr", "both"):
        with papr_client(args.target) as client:
            papr_trace = run_papr(scenario, client)
    if qemu_trace is not None and papr_trace is not None:
        comparison = compare(qemu_trace, papr_trace, scenario)
        if args.json:
            print(
                json.dumps(
                    {"comparison": comparison.to_json(), "qemu": qemu_trace.to_json(), "papr": papr_trace.to_json()},
                    indent=1,
                )
            )
        else:
            print(f"{scenario.name}: {scenario.description}")
            print(comparison.render(all_fields=args.verbose))
        return EXIT_OK if comparison.ok else EXIT_DIFFER
    trace = qemu_trace or papr_trace
    assert trace is not None
    if args.json:
        print(json.dumps(trace.to_json(), indent=1))
    else:
        print(f"{scenario.name}: {scenario.description}")
        print(trace.render(verbose=args.verbose))
    return EXIT_OK


def _list(directory: Path | None) -> int:
    paths = scenario_paths(directory)
    for path in paths:
        try:
            scenario = load_scenario(path)
            print(f"{scenario.name:<32} {len(scenario.steps):>4} steps  {scenario.description}")
        except ScenarioError as error:
            print(f"{path.stem:<32} INVALID: {error}")
    if not paths:
        print(f"no scenarios in {directory or scenario_dir()}")
    print("\nDeclared differences (docs/compat.md; papr_emu_conformance/differences.py):")
    print(declarations_text())
    return EXIT_OK
