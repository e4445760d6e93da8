"""Each figure's record.json names the code that made it (git commit, python/torch/numpy/landscape versions); the
index shows each distinct provenance once; neither the cache nor the verdict table looks at it."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
from pathlib import Path

import jsonschema
import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from figures import _provenance
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure, temporary_registry
from figures.make_all import main
from figures.schema import CLAIMS_SCHEMA
from figures.verdict_table import verdict_table

ROOT = Path(__file__).resolve().parents[1]
CALLS: dict[str, int] = {}


def _git_reference(cwd: Path, *args: str) -> str | None:
    """What git itself says, run independently of figures._provenance (None when git is missing or fails)."""
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _expected() -> dict:
    head = _git_reference(ROOT, "rev-parse", "HEAD")
    top = _git_reference(ROOT, "rev-parse", "--show-toplevel")
    inside = head is not None and top is not None and Path(top).resolve() == ROOT
    status = _git_reference(ROOT, "status", "--porcelain", "--untracked-files=no") if inside else None
    try:
        version = importlib.metadata.version("landscape")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "commit": head if inside else "unknown",
        "dirty": None if status is None else status != "",
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "landscape": version,
    }


def _tiny(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    CALLS["tiny"] = CALLS.get("tiny", 0) + 1
    mfig = matplotlib.figure.Figure(figsize=(2, 2))
    mfig.add_subplot().plot([0, 1], [1, 0])
    return FigureResult(
        caption="tiny",
        panels=[Panel("main", plotly=go.Figure(go.Scatter(x=[0, 1], y=[1, 0])), mpl=mfig)],
        claims=[Claim(statement="The tiny claim holds.", paper_value=1.0, measured=1.0, held=True, detail="test")],
        scaling={"model": "none", "data": "none", "epochs": 0, "repetitions": 1},
    )


def _fails(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    raise RuntimeError("deliberate failure")


def _doc(out: Path) -> dict:
    doc = json.loads((out / "claims.json").read_text())
    jsonschema.validate(doc, CLAIMS_SCHEMA, cls=jsonschema.Draft202012Validator)
    return doc


def _record(out: Path, name: str) -> dict:
    return json.loads((out / name / "record.json").read_text())


def test_records_carry_the_provenance_and_the_index_shows_it_once(tmp_path: Path) -> None:
    expected = _expected()
    with temporary_registry():
        register_figure("tiny_a", paper="im", title="A")(_tiny)
        register_figure("tiny_b", paper="im", title="B")(_tiny)
        register_figure("tiny_fails", paper="im", title="F")(_fails)
        assert main(["--out", str(tmp_path), "--quiet", "--jobs", "1"]) == 1  # the failing one
    for name in ("tiny_a", "tiny_b", "tiny_fails"):  # a failure records the code that failed too
        assert _record(tmp_path, name)["provenance"] == expected, name
    doc = _doc(tmp_path)
    assert {f["name"]: f["provenance"] for f in doc["figures"]} == dict.fromkeys(
        ("tiny_a", "tiny_b", "tiny_fails"), expected
    )
    index = (tmp_path / "index.html").read_text()
    assert index.count('<footer class="provenance">') == 1
    assert index.count(f"torch {expected['torch']}") == 1 and index.count(f"numpy {expected['numpy']}") == 1
    if expected["commit"] != "unknown":
        assert index.count(expected["commit"]) == 1
    footer = index[index.index('<footer class="provenance">') :]
    assert footer.startswith(f'<footer class="provenance"><p>Made by commit <code>{expected["commit"]}</code>')


def test_provenance_leaves_the_cache_and_the_verdicts_alone(tmp_path: Path) -> None:
    """A record made by other code (another commit, or written before records had a provenance) is still reused:
    the cache key is the figure's code hash, as before; the index then names both provenances."""
    CALLS.clear()
    expected = _expected()
    with temporary_registry():
        register_figure("tiny_a", paper="im", title="A")(_tiny)
        register_figure("tiny_b", paper="im", title="B")(_tiny)
        args = ["--out", str(tmp_path), "--quiet", "--jobs", "1"]
        assert main(args) == 0 and CALLS["tiny"] == 2
        first = _doc(tmp_path)
        keys = {f["name"]: f["cache_key"] for f in first["figures"]}
        other = {**expected, "commit": "f" * 40, "dirty": True, "torch": "0.0.1"}
        rec = _record(tmp_path, "tiny_a")
        (tmp_path / "tiny_a" / "record.json").write_text(json.dumps({**rec, "provenance": other}))
        rec = _record(tmp_path, "tiny_b")
        del rec["provenance"]  # a record of the code before this change
        (tmp_path / "tiny_b" / "record.json").write_text(json.dumps(rec))
        assert main(args) == 0 and CALLS["tiny"] == 2  # both reused
    doc = _doc(tmp_path)
    a, b = (next(f for f in doc["figures"] if f["name"] == n) for n in ("tiny_a", "tiny_b"))
    assert a["cached"] and b["cached"] and keys == {"tiny_a": a["cache_key"], "tiny_b": b["cache_key"]}
    assert a["provenance"] == other and "provenance" not in b  # the record's own, never restamped
    stripped = {"figures": [{k: v for k, v in f.items() if k != "provenance"} for f in first["figures"]]}
    assert verdict_table(doc) == verdict_table(first) == verdict_table(stripped) and len(verdict_table(doc)) == 2
    index = (tmp_path / "index.html").read_text()
    footer = index[index.index('<footer class="provenance">') :]
    assert f"1 figure made by commit <code>{'f' * 40}</code> with uncommitted changes" in footer
    assert "torch 0.0.1" in footer and "1 figure without a provenance record" in footer


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_is_this_checkout_s_or_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    (repo / "tracked.txt").write_text("one\n")
    subprocess.run([*git, "-C", str(repo), "add", "tracked.txt"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "first"], check=True)
    head = _git_reference(repo, "rev-parse", "HEAD")
    assert head is not None and len(head) == 40

    monkeypatch.setattr(_provenance, "_CHECKOUT", repo.resolve())
    assert _provenance.git_commit() == (head, False)
    (repo / "untracked.txt").write_text("a gallery written into the checkout\n")
    assert _provenance.git_commit() == (head, False)  # untracked files do not count
    (repo / "tracked.txt").write_text("two\n")
    assert _provenance.git_commit() == (head, True)
    # the package inside someone else's repository (a virtualenv in a project): not this checkout's commit
    monkeypatch.setattr(_provenance, "_CHECKOUT", (repo / "pkg").resolve())
    assert _provenance.git_commit() == ("unknown", None)
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setattr(_provenance, "_CHECKOUT", outside.resolve())
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # even if tmp_path sits inside a repository
    assert _provenance.git_commit() == ("unknown", None)
    monkeypatch.setattr(_provenance, "_CHECKOUT", repo.resolve())
    monkeypatch.setenv("PATH", str(outside))  # no git at all
    assert _provenance.git_commit() == ("unknown", None)
