"""The command line as a new user meets it (hunt lf17): options that failed late or were ignored without a word."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.analyze import LineResult, PlaneResult
from landscape.cli import main
from landscape.data import load_digits_split
from landscape.models import build_model
from landscape.train import Trainer
from landscape.trajectory import Trajectory

MODEL = ["--model", "mlp", "--model-kw", "hidden=[4]"]
DATA = ["--data", "digits", "--limit", "60"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny MLP trained 2 epochs on 60 digits, recorded on disk."""
    X, y = load_digits_split().train
    path = tmp_path_factory.mktemp("lf17") / "run"
    net = build_model("mlp", (1, 8, 8), 10, hidden=[4], seed=0)
    sgd = dict(optimizer="sgd", optimizer_kwargs={"lr": 0.5}, epochs=2, batch_size=30)
    Trainer(net, (X[:60], y[:60]), seed=0, trajectory=Trajectory.create(path), **sgd).fit()
    return path


def test_pca_with_a_grid_narrower_than_2_by_2_draws_a_heatmap(run, tmp_path, capsys):
    """pca evaluated the whole plane, then failed drawing it: "contours need a grid of at least 2 x 2 points ... use
    a heatmap", an option pca does not have. The plane command draws such a grid as a heatmap; so does pca now."""
    out = tmp_path / "out"
    rc = main(["pca", str(run), *MODEL, *DATA, "--resolution", "1x5", "--out", str(out), "--quiet", "--no-html"])
    assert rc == 0, capsys.readouterr().err
    plane = PlaneResult.load(out / "pca_plane.npz")
    assert plane.metrics["loss"].shape == (5, 1) and np.isfinite(plane.metrics["loss"]).all()
    assert (out / "pca.png").stat().st_size > 0


def test_plot_refuses_style_for_results_that_are_not_planes(tmp_path, capsys):
    """--style (a plane's contours or heatmap) was ignored without a word for a line."""
    a = np.linspace(0, 1, 3)
    line = LineResult(coords=a, metrics={"loss": a + 1}, anchors=np.zeros((2, 3)), anchor_coords=np.array([0.0, 1.0]))
    path = line.save(tmp_path / "line.npz")
    out = tmp_path / "out"
    assert main(["plot", str(path), "--style", "heatmap", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--style heatmap is for planes" in err and f"{path} holds a LineResult" in err
    assert not out.exists()
    assert main(["plot", str(path), "--out", str(out), "--quiet"]) == 0  # without it, drawn
    assert (out / "plot.png").stat().st_size > 0


def test_plot_with_neither_html_nor_png_says_nothing_would_be_written(tmp_path, capsys):
    """plot writes only figures: with --no-html --no-png it returned 0, printed nothing and wrote nothing."""
    a = np.linspace(0, 1, 3)
    line = LineResult(coords=a, metrics={"loss": a + 1}, anchors=np.zeros((2, 3)), anchor_coords=np.array([0.0, 1.0]))
    path = line.save(tmp_path / "line.npz")
    assert main(["plot", str(path), "--no-html", "--no-png", "--out", str(tmp_path / "out")]) == 2
    assert "nothing would be written" in capsys.readouterr().err
