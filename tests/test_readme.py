"""The README's Python runs as written, and its "first look" picture is the one that code draws today."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _first_look():
    spec = importlib.util.spec_from_file_location("first_look", ROOT / "examples" / "first_look.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fl = _first_look()


def test_readme_first_look_runs_and_its_picture_is_current(tmp_path):
    ns = fl.run_snippet(tmp_path)
    assert len(ns["traj"]) == 21 and ns["trainer"].step == 340  # initial point + 20 epochs
    assert ns["trainer"].history_[-1]["val_accuracy"] > 0.9  # it did learn: the picture shows a trained net
    drawn = tmp_path / "first_look.png"
    assert drawn.stat().st_size > 10_000  # the snippet ends by writing its picture

    got = json.loads(json.dumps(fl.values_of(ns)))
    committed = json.loads(fl.VALUES.read_text())
    assert got.keys() == committed.keys()
    hint = "the README's first look changed: run `python examples/first_look.py` and commit examples/first_look.*"
    for k, v in committed.items():
        if isinstance(v, dict):
            assert got[k].keys() == v.keys(), hint
            v, g = [v[n] for n in sorted(v)], [got[k][n] for n in sorted(v)]
        else:
            g = got[k]
        np.testing.assert_allclose(np.asarray(g), np.asarray(v), rtol=1e-6, atol=1e-6, err_msg=f"{k}: {hint}")

    # The committed picture was written (by the script) from exactly the committed numbers. Its pixels
    # depend on the matplotlib version, so the bytes are not compared; its size is that of today's drawing.
    Image = pytest.importorskip("PIL.Image")
    with Image.open(fl.PICTURE) as png, Image.open(drawn) as today:
        assert png.text.get(fl.DIGEST_KEY) == fl.digest(committed), hint
        assert png.size == today.size


def test_other_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert fl.snippet() in blocks, "README lost its first look"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(fl.snippet().split("\npca = ")[0], str(README), "exec"), ns)  # later blocks use its data and imports
    for code in blocks:
        if code != fl.snippet():
            exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README
    # the own-loop example: 3 epochs of 17 batches, every 10 steps, epoch ends, first and last points
    assert ns["traj"].steps.tolist() == [0, 10, 17, 20, 30, 34, 40, 50, 51]
    assert ns["traj"].meta["model_factory"] == {"target": "mypkg.nets:make_linear", "kwargs": {"classes": 10}}


def test_the_flat_namespace_holds_what_the_readme_says():
    """The README says the flat `landscape` namespace re-exports the problem, the trainers, the trajectory store,
    the results and the analyzers: every analyzer function (of `landscape.analyze`) is there, the renderers are not."""
    import inspect

    import landscape
    from landscape import analyze, plot

    text = " ".join(README.read_text().split())
    assert "The flat `landscape` namespace re-exports the problem, the trainers, the trajectory store" in text
    functions = [n for n in analyze.__all__ if inspect.isfunction(getattr(analyze, n))]
    assert [n for n in functions if n not in landscape.__all__] == []
    for name in ("Problem", "Trainer", "Recorder", "Trajectory", "Result", "load_result", "TrajectoryPCA"):
        assert name in landscape.__all__
    assert not set(plot.__all__) & set(landscape.__all__)
