"""The gallery's machinery under failure: a worker that dies, broken modules, the cache key's sources."""

from __future__ import annotations

import json
import re
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
def slow_b(scale, data_dir, out, progress):
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
