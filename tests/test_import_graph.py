"""The import graph: no cycles inside a package, and packages depend one way only.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions:
a cycle that only type checkers see is still two modules that cannot be read apart.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Each package, and the packages it may import (the layering, bottom up).
LAYERS: dict[str, set[str]] = {
    "papr_emu_client": {"papr"},
    "papr_emu": {"papr", "papr_emu_client"},
    "papr_emu_conformance": {"papr", "papr_emu_client", "papr_emu"},
    "papr_emu_sandbox": {"papr", "papr_emu_client", "papr_emu"},
}


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, package
    return Path(next(iter(spec.submodule_search_locations)))


def modules(package: str) -> dict[str, Path]:
    root = package_dir(package)
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Modules ``name`` imports, resolved to the most specific known module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                yield target
                break


def graph() -> dict[str, set[str]]:
    known: dict[str, Path] = {}
    for package in LAYERS:
        known |= modules(package)
    names = set(known)
    return {name: set(imports_of(name, path, names)) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle, as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_cycle_inside_a_package(package: str) -> None:
    edges = graph()
    inside = {m: {t for t in ts if t.split(".")[0] == package} for m, ts in edges.items() if m.split(".")[0] == package}
    assert find_cycle(inside) is None, " -> ".join(find_cycle(inside) or [])


def test_packages_import_down_the_layers_only() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if (top := target.split(".")[0]) != module.split(".")[0] and top not in LAYERS[module.split(".")[0]]
    )
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
