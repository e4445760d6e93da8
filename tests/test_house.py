"""The layout's rules (issue 20): module sizes, no import cycles, and the layers importing only downward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("landscape", "tunnels", "persistence", "figures")

MAX_LINES = 620  # "about 600" (docs/architecture/index.md)
# One public class that is the centre of its part each (docs/architecture/index.md, "Module size").
LARGE = {"landscape/trajectory/store.py", "landscape/problem.py"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _module_level_imports(name: str, path: Path) -> set[str]:
    """The repository modules ``name`` imports at import time (not under TYPE_CHECKING, not in functions)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for a in node.names:
                    full = f"{base}.{a.name}"
                    out.add(full if full in MODULES else base)

    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m in MODULES and m != name}


def test_no_module_is_over_about_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in MODULES.values()}
    over = {k: n for k, n in sizes.items() if n > MAX_LINES and k not in LARGE}
    assert not over, f"modules over {MAX_LINES} lines (split them, or argue an exception in the docs): {over}"
    assert all(k in sizes for k in LARGE)


def test_no_import_cycle_between_modules():
    """Strongly connected components of the module-level import graph (a package's __init__ re-exporting its
    submodules is not a cycle of code, so components made of one module plus package inits are allowed)."""
    graph = {m: _module_level_imports(m, p) for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if sum(MODULES[m].name != "__init__.py" for m in comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles


@pytest.mark.parametrize(
    ("lower", "upper"),
    [("landscape", "tunnels"), ("landscape", "persistence"), ("landscape", "figures"), ("tunnels", "figures")],
)
def test_lower_layers_never_import_upper_ones(lower, upper):
    """ARCHITECTURE.md: the package never imports the paper modules or the gallery (not even inside functions)."""
    offenders = []
    for name, path in MODULES.items():
        if name.split(".")[0] != lower:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                mods = [node.module]
            offenders += [f"{name} -> {m}" for m in mods if m.split(".")[0] == upper]
    assert not offenders
