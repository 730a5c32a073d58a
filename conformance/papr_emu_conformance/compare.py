"""Step-by-step comparison of a QEMU trace and a papr-emu trace, and its side-by-side rendering.

Every compared field (``Record.data``, flattened) must be equal, or the mismatch must be
allowed by a declaration in ``differences.py``; anything else makes the comparison fail.

Example::

    >>> q = Trace("qemu", "demo", [Record(1, "sense 0x10000000", "rtas", {"rets": [0, 1]})])
    >>> p = Trace("papr", "demo", [Record(1, "sense 0x10000000", "rtas", {"rets": [0, 2]})])
    >>> result = compare(q, p)
    >>> result.ok, result.counts()
    (False, {'steps': 1, 'same': 0, 'allowed': 0, 'differ': 1})
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .differences import ALLOWED, MISSING, Mismatch, Pair, allowing
from .scenario import NumberedStep, Scenario
from .trace import Record, Trace, flatten

WIDTH = 44  # width of each side's column


@dataclass
class StepResult:
    number: int
    label: str
    qemu: Record
    papr: Record
    allowed: list[tuple[Mismatch, int]] = field(default_factory=list)
    differing: list[Mismatch] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.differing:
            return "DIFFERS"
        if self.allowed:
            return "allowed " + ",".join(f"#{c}" for c in sorted({c for _, c in self.allowed}))
        return "same"


@dataclass
class Comparison:
    scenario: str
    steps: list[StepResult]
    qemu_meta: dict[str, Any]
    papr_meta: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not any(s.differing for s in self.steps)

    def counts(self) -> dict[str, int]:
        return {
            "steps": len(self.steps),
            "same": sum(1 for s in self.steps if not s.differing and not s.allowed),
            "allowed": sum(1 for s in self.steps if not s.differing and s.allowed),
            "differ": sum(1 for s in self.steps if s.differing),
        }

    def declared_used(self) -> list[int]:
        return sorted({c for s in self.steps for _, c in s.allowed})

    def render(self, all_fields: bool = False) -> str:
        """The two traces side by side; under each differing step, every differing field."""
        lines = [
            f"scenario {self.scenario}: QEMU {self.qemu_meta.get('qemu', '?')} vs papr-emu "
            f"({self.papr_meta.get('platform', '?')})",
            f"{'step':>4}  {'action':<40}  {'QEMU 7.2':<{WIDTH}}  {'papr-emu':<{WIDTH}}  verdict",
            "-" * (4 + 2 + 40 + 2 + WIDTH + 2 + WIDTH + 2 + 8),
        ]
        for s in self.steps:
            mark = {"same": "=", "DIFFERS": "!!"}.get(s.verdict, "~")
            lines.append(
                f"{s.number:>4}  {s.label:<40.40}  {s.qemu.summary(WIDTH):<{WIDTH}}  {s.papr.summary(WIDTH):<{WIDTH}}"
                f"  {mark} {s.verdict if s.verdict != 'same' else ''}".rstrip()
            )
            shown = [(m, None) for m in s.differing] + ([(m, c) for m, c in s.allowed] if all_fields else [])
            for m, compat in shown:
                tag = f"allowed by docs/compat.md #{compat}" if compat else "NOT DECLARED"
                q, p = _show_pair(m.qemu, m.papr)
                lines.append(f"{'':>6}{m.path}  [{tag}]")
                lines.append(f"{'':>8}qemu: {q}")
                lines.append(f"{'':>8}papr: {p}")
            if s.differing or (all_fields and s.qemu.kind in ("plug", "unplug")):
                for side, record in (("qemu", s.qemu), ("papr", s.papr)):
                    for key, value in record.info.items():
                        if key in ("message", "error", "unexpected"):
                            lines.append(f"{'':>8}({side} {key}: {_clip(str(value), 140)})")
        c = self.counts()
        lines.append(
            f"{c['steps']} steps: {c['same']} same, {c['allowed']} with declared differences "
            f"({', '.join(f'#{n}' for n in self.declared_used()) or 'none'}), {c['differ']} differ"
            + ("" if self.ok else "  -> FAIL: differences not declared in differences.py")
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "counts": self.counts(),
            "declared_differences_used": self.declared_used(),
            "steps": [
                {
                    "step": s.number,
                    "label": s.label,
                    "verdict": s.verdict,
                    "allowed": [{"path": m.path, "qemu": m.qemu, "papr": m.papr, "compat": c} for m, c in s.allowed],
                    "differing": [{"path": m.path, "qemu": m.qemu, "papr": m.papr} for m in s.differing],
                }
                for s in self.steps
            ],
        }


def compare(qemu: Trace, papr: Trace, scenario: Scenario | None = None) -> Comparison:
    """Compare two traces of the same scenario record by record."""
    steps: dict[int, NumberedStep] = {s.number: s for s in scenario.steps} if scenario else {}
    by_number_q = {r.step: r for r in qemu.records}
    by_number_p = {r.step: r for r in papr.records}
    results: list[StepResult] = []
    history: list[Pair] = []
    for number in sorted(set(by_number_q) | set(by_number_p)):
        q = by_number_q.get(number) or Record(number, "?", "missing", {"missing": True})
        p = by_number_p.get(number) or Record(number, "?", "missing", {"missing": True})
        pair = Pair(steps.get(number), q, p, flatten(q.data), flatten(p.data), list(history))
        result = StepResult(number, q.label if q.label != "?" else p.label, q, p)
        for path in sorted(set(pair.qemu_flat) | set(pair.papr_flat), key=_path_order):
            theirs, ours = pair.qemu_flat.get(path, MISSING), pair.papr_flat.get(path, MISSING)
            if theirs == ours:
                continue
            mismatch = Mismatch(path, theirs, ours)
            compat = allowing(mismatch, pair)
            if compat is None:
                result.differing.append(mismatch)
            else:
                pair.allowed_by[path] = compat
                result.allowed.append((mismatch, compat))
        results.append(result)
        history.append(pair)
    return Comparison(qemu.scenario, results, qemu.meta, papr.meta)


def _path_order(path: str) -> tuple[int, str]:
    return (1 if path == "events" else 0, path)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _show_pair(qemu: Any, papr: Any, width: int = 110) -> tuple[str, str]:
    """Both values as text; long ones are cut to a window around their first difference."""
    q = qemu if isinstance(qemu, str) else json.dumps(qemu)
    p = papr if isinstance(papr, str) else json.dumps(papr)
    if len(q) <= width and len(p) <= width:
        return q, p
    first = next((n for n, (a, b) in enumerate(zip(q, p, strict=False)) if a != b), min(len(q), len(p)))
    start = max(0, first - width // 3)
    head = f"…[{start}:] " if start else ""

    def cut(text: str) -> str:
        window = text[start : start + width]
        return head + window + ("…" if start + width < len(text) else "") + f" ({len(text)} chars)"

    return cut(q), cut(p)


def declarations_text() -> str:
    """Every declared difference, for ``list`` and the report."""
    lines = []
    for d in ALLOWED:
        state = "rule" if d.allows is not None else "no rule"
        lines.append(f"#{d.compat:<2} {d.area} [{state}]: {d.scope}")
    return "\n".join(lines)
