"""The examples in the docstrings run and print what they say: every ``>>>`` block of ``landscape``,
``persistence`` and ``tunnels``, run as ``python -m doctest`` would (the module's own names in scope)."""

import doctest
import importlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# modules with examples, found by their text so that collecting this file imports nothing
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for pkg in ("landscape", "persistence", "tunnels")
    for p in (ROOT / pkg).rglob("*.py")
    if ">>> " in p.read_text(encoding="utf-8")
)


def test_the_examples_are_found():
    assert len(MODULES) >= 30 and "landscape.params" in MODULES and "tunnels" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} holds '>>> ' but no docstring example"
    runner = doctest.DocTestRunner()
    report = io.StringIO()
    for t in tests:
        runner.run(t, out=report.write)
    assert runner.failures == 0, report.getvalue()
