"""The gallery's machinery under failure: a worker that dies, broken modules, the cache key's sources."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from figures.contract import temporary_registry
from figures.make_all import main
from figures.schema import CLAIMS_SCHEMA

FIGS = """
import os, signal, time
import matplotlib.figure
import plotly.graph_objects as go
from figures.contract import FigureResult, Panel, register_figure


def tiny(tag):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    mfig = matplotlib.figure.Figure(figsize=(2, 2))
    mfig.add_subplot().plot([0, 1])
    scaling = {"model": "-", "data": "-", "epochs": 0, "repetitions": 1}
    return FigureResult(caption=tag, panels=[Panel("main", plotly=fig, mpl=mfig)], claims=[], scaling=scaling)


@register_figure("dies", paper="im", title="Killed")
def dies(scale, data_dir, out, progress):
    marker = out.parent / "died-once"
    if marker.exists():  # the rerun succeeds
        return tiny("dies")
    marker.write_text("")
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would


@register_figure("slow_a", paper="im", title="A")
def slow_a(scale, data_dir, out, progress):
    time.sleep(1.5)  # still running when the other worker dies
    return tiny("a")


@register_figure("slow_b", paper="im", title="B")
def slow_b(scale="quick", data_dir=None, *, cache=None, progress=False):  # a figure function: its spec does not pickle
    time.sleep(0.5)
    return tiny("b")
"""


def _doc(out: Path) -> dict:
    doc = json.loads((out / "claims.json").read_text())
    jsonschema.validate(doc, CLAIMS_SCHEMA, cls=jsonschema.Draft202012Validator)
    return doc


@pytest.fixture
def dying_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package of three figures, one of which kills its own process; importable by spawned workers."""
    pkg = tmp_path / "pkg" / "dying_figs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "figs.py").write_text(textwrap.dedent(FIGS))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))  # spawned workers get the parent's sys.path
    with temporary_registry():
        import dying_figs.figs  # noqa: F401 - registers the three figures in the scratch registry

        yield


def test_a_killed_worker_fails_only_its_figure(dying_figures, tmp_path: Path, capsys) -> None:
    out = tmp_path / "gallery"
    assert main(["--out", str(out), "--quiet", "--jobs", "2"]) == 1
    doc = _doc(out)
    status = {f["name"]: f["status"] for f in doc["figures"]}
    assert status == {"dies": "failed", "slow_a": "ok", "slow_b": "ok"}  # the others still ran
    assert doc["complete"] and doc["summary"]["figures_ok"] == 2
    dead = next(f for f in doc["figures"] if f["name"] == "dies")
    assert "SIGKILL" in dead["error"] and dead["runtime_s"] >= 0.3
    assert "SIGKILL" in (out / "index.html").read_text()
    assert "FAILED dies" in capsys.readouterr().err
    assert json.loads((out / "dies" / "record.json").read_text())["status"] == "failed"
    assert not list(out.glob(".stage-*"))  # the dead worker's half-written directory is gone
    assert (out / "slow_a" / "main.png").is_file() and (out / "slow_b" / "main.png").is_file()
    # Resumed: the two that rendered are reused, only the dead one runs again (and now renders).
    assert main(["--out", str(out), "--quiet", "--jobs", "2"]) == 0
    doc = _doc(out)
    assert {f["name"]: (f["status"], f["cached"]) for f in doc["figures"]} == {
        "dies": ("ok", False),
        "slow_a": ("ok", True),
        "slow_b": ("ok", True),
    }


def test_broken_modules_of_the_same_file_name_are_each_reported(tmp_path: Path, monkeypatch) -> None:
    """figures/im/fig1.py and figures/lipton/fig1.py both failing to import: two failed entries, not one."""
    import figures.make_all
    from figures.contract import ImportFailure

    failures = [
        ImportFailure(f"figures.{p}.fig1", f"Traceback ...\nImportError: {p} needs xyz\n") for p in ("im", "lipton")
    ]
    with temporary_registry(include=["toy_demo"]):
        monkeypatch.setattr(figures.make_all, "discover", lambda: failures)
        assert main(["--out", str(tmp_path), "--quiet"]) == 1
    doc = _doc(tmp_path)
    broken = [f for f in doc["figures"] if f["status"] == "failed"]
    assert sorted(f["module"] for f in broken) == ["figures.im.fig1", "figures.lipton.fig1"]
    assert len({f["name"] for f in broken}) == 2 and doc["summary"]["figures_failed"] == 2
    index = (tmp_path / "index.html").read_text()
    assert "im needs xyz" in index and "lipton needs xyz" in index
    ids = re.findall(r'id="(fig-[^"]+)"', index)
    assert len(ids) == len(set(ids)) == 3  # every section has its own anchor


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))


def test_the_cache_key_follows_the_figure_code_a_figure_imports(tmp_path: Path, monkeypatch) -> None:
    """A figure's key changes with every figure module it imports, also another paper's or a public one, and
    only with those (beyond/sharpness.py uses im/_setup.py; im/lstm.py uses im/fig4.py's anova)."""
    _write(
        tmp_path,
        {
            "keyfigs/__init__.py": "",
            "keyfigs/machinery.py": "RULE = 1\n",  # the package's own top-level modules: not figure code
            "keyfigs/alpha/__init__.py": "",
            "keyfigs/alpha/_setup.py": "from keyfigs.alpha._runs import train\n",
            "keyfigs/alpha/_runs.py": "def train():\n    return 1\n",
            "keyfigs/alpha/fig4.py": "def anova():\n    return 2\n",
            "keyfigs/alpha/_unused.py": "X = 1\n",
            "keyfigs/beta/__init__.py": "NOTE = 'what the package adds'\n",
            "keyfigs/beta/_draw.py": "from . import _style\n",
            "keyfigs/beta/_style.py": "COLOR = 'red'\n",
            "keyfigs/beta/_unused.py": "Y = 1\n",
            "keyfigs/beta/fig.py": """
                from keyfigs import machinery
                from keyfigs.beta import NOTE
                from keyfigs.alpha.fig4 import anova
                from ._draw import _style
                from figures.contract import register_figure


                @register_figure("key_fig", paper="beyond", title="Key")
                def run(scale, data_dir, out, progress):
                    from keyfigs.alpha._setup import train  # imported where used, as beyond/sharpness.py does
                    raise NotImplementedError
                """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with temporary_registry() as reg:
        import keyfigs.beta.fig  # noqa: F401

        spec = reg["key_fig"]
        base = spec.source_hash()
        assert base is not None
        for rel in ("alpha/_runs.py", "alpha/_setup.py", "alpha/fig4.py", "beta/__init__.py", "beta/_style.py"):
            path = tmp_path / "keyfigs" / rel
            old = path.read_text()
            path.write_text(old + "# changed\n")
            assert spec.source_hash() != base, f"a change of {rel} left the key unchanged"
            path.write_text(old)
        for rel in ("alpha/_unused.py", "beta/_unused.py", "machinery.py"):
            (tmp_path / "keyfigs" / rel).write_text("Z = 2\n")
            assert spec.source_hash() == base, f"a change of {rel}, which the figure does not import, changed the key"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_cleared(tmp_path: Path) -> None:
    """A run killed outright (or its workers) leaves staging directories and temporary files; the next run clears
    them, but not those of a process still running (another gallery build writing here)."""
    out = tmp_path / "gallery"
    dead, alive = _dead_pid(), os.getpid()
    leftovers = [out / f".stage-toy_demo-{dead}", out / f".stage-im_fig1-{dead}"]
    for d in leftovers:
        d.mkdir(parents=True)
        (d / "surface.html").write_text("<html>half writ")
    (out / "toy_demo").mkdir()
    tmps = [out / f".index.html.{dead}.tmp", out / "toy_demo" / f".record.json.{dead}.tmp"]
    for t in tmps:
        t.write_text("{half")
    live = out / f".stage-im_fig2-{alive}"
    live.mkdir()
    with temporary_registry(include=["toy_demo"]):
        assert main(["--only", "toy_demo", "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    assert not any(p.exists() for p in leftovers + tmps)
    assert live.is_dir()
