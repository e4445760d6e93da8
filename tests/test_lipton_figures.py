"""Lipton weight-space figures (figures/lipton/) at a tiny scale: runs, measures, claims, panels."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from figures.contract import FigureResult, MissingDataError, Scale
from figures.lipton._setup import (
    CONVERGED_TOL,
    LOW_LOSS,
    LiptonRuns,
    LiptonSetup,
    converged_premise,
    divergence_ratio,
    pairwise_cv,
    path_lengths,
)
from figures.lipton.fig1 import figure1
from figures.lipton.fig2 import figure2
from figures.lipton.fig3 import figure3
from figures.verdict import Verdict
from landscape.analyze import TrajectoryPCA, pairwise_end_distances
from landscape.evaluate import AffinePoints
from landscape.params import functional_forward
from landscape.trajectory import Trajectory
from tests.helpers import check_figure_result

TINY = LiptonSetup(
    name="tiny",
    n_train=160,
    downsample=4,
    channels=(3, 6),
    hidden=16,
    epochs=5,
    every=2,
    pretrain_epochs=2,
    repetitions=3,
    line_points=5,
    batch_size=32,
    base_every_steps=None,
)


@pytest.fixture(scope="module")
def results(figure_cache: Path) -> dict[str, FigureResult]:
    return {f.__name__: f(setup=TINY, cache=figure_cache) for f in (figure1, figure2, figure3)}


def _check_result(res: FigureResult, keys: list[str], n_claims: int) -> None:
    for c in check_figure_result(res, "Lipton 2016", keys, n_claims):
        assert c.detail and isinstance(c.measured, float | int) and math.isfinite(c.measured)
        assert c.scale is None  # a custom scale: the verdict is not the gallery's
    assert res.scaling["epochs"] == TINY.epochs and res.scaling["repetitions"] == TINY.repetitions
    assert f"{TINY.n_params():,} parameters" in res.scaling["model"]


def test_figure1_claims_and_panels(results: dict[str, FigureResult], figure_cache: Path) -> None:
    res = results["figure1"]
    _check_result(res, ["single", "two", "five", "line"], 5)
    ev2, ev10 = res.claims[0], res.claims[1]
    assert (ev2.paper_value, ev10.paper_value) == (81.39, 95.63)
    assert 0 <= ev2.measured <= ev10.measured <= 100 + 1e-9
    # The measured numbers agree with an independent PCA of the recorded path.
    base = LiptonRuns(TINY, figure_cache).base()
    ratios = TrajectoryPCA(n_components=len(base) - 1).fit(base).explained_variance_ratio_
    assert np.all((ratios >= -1e-12) & (ratios <= 1 + 1e-12)) and np.all(np.diff(np.cumsum(ratios)) >= -1e-12)
    X = base.vectors().double().numpy()
    s = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2
    assert ev2.measured == pytest.approx(round(100 * s[:2].sum() / s.sum(), 2), abs=0.011)
    assert ev10.measured == pytest.approx(round(100 * s[:10].sum() / s.sum(), 2), abs=0.011)
    # The straight line and the path share their endpoints, so their losses must agree there.
    line, path = res.panels[3].plotly.data
    assert line.y[0] == pytest.approx(path.y[0], rel=1e-5) and line.y[-1] == pytest.approx(path.y[-1], rel=1e-5)
    assert (line.x[0], line.x[-1], path.x[0], path.x[-1]) == (0.0, 1.0, 0.0, 1.0)
    if res.claims[3].premise_met:
        assert res.claims[3].held == bool(np.diff(line.y).max() <= 1e-3 * (line.y[0] - line.y[-1]))
    else:  # the tiny run does not reach a solution: the claim is not tested, never held
        assert res.claims[3].verdict is Verdict.NOT_TESTED and res.claims[3].held is None
    # 6 snapshots cannot test "the top 10 components": that premise fails, so the claim is not tested.
    assert not ev10.premise_met and ev10.verdict is Verdict.NOT_TESTED
    # Straightness is chord / path length: in (0, 1] by the triangle inequality.
    assert 0 < res.claims[4].measured <= 1 + 1e-9


def test_figure2_and_3_claims(results: dict[str, FigureResult], figure_cache: Path) -> None:
    r2, r3 = results["figure2"], results["figure3"]
    _check_result(r2, ["paths"], 2)
    _check_result(r3, ["origin", "clones"], 4)
    runs = LiptonRuns(TINY, figure_cache)
    ratio, pair, _ = divergence_ratio(runs.shuffles())
    assert r2.claims[0].measured == pytest.approx(ratio, abs=1e-4) and ratio > 0
    assert r2.claims[1].measured == pytest.approx(pairwise_cv(pair), abs=1e-4)
    assert 0 <= r3.claims[1].measured <= 1  # share of the path length
    # "diverge, finding solutions far apart": the divergence claims stand on the premises of the claims on the same
    # solutions' distances (converged, low loss), measured on the same runs, besides the runs having trained
    for diverge, distances in ((r2.claims[0], r2.claims[1]), (r3.claims[2], r3.claims[3])):
        same = {p.statement: p.measured for p in distances.premises}
        assert {p.statement: p.measured for p in diverge.premises if p.statement in same} == same and len(same) == 2
        assert any(p.statement.endswith("trained") for p in diverge.premises)
        assert (diverge.verdict.value == "not tested") == (not all(p.met for p in diverge.premises))
    # Distance-from-origin curves: one per init run and per clone, epochs of the clones after the pretraining.
    curves = r3.panels[0].plotly.data
    assert len(curves) == 2 * TINY.repetitions
    assert curves[-1].x[0] == TINY.pretrain_epochs and curves[-1].x[-1] == TINY.epochs
    norms = [float(t[-1].vector.double().norm()) for t in runs.inits()]
    assert [c.y[-1] for c in curves[: TINY.repetitions]] == pytest.approx(norms, rel=1e-6)


def test_runs_share_starts_and_are_cached(
    results: dict[str, FigureResult], figure_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(LiptonRuns, "_train", no_training)
    runs = LiptonRuns(TINY, figure_cache)
    base, inits, shuffles, clones = runs.base(), runs.inits(), runs.shuffles(), runs.clones()
    assert base.epochs.tolist() == list(range(TINY.epochs + 1))
    assert inits[0] is base and shuffles[0] is base
    for t in shuffles[1:]:  # same initialization, different data order
        assert torch.equal(t[0].vector, base[0].vector) and not torch.equal(t[-1].vector, base[-1].vector)
    for t in inits[1:]:
        assert not torch.equal(t[0].vector, base[0].vector)
    pre = base[runs.pretrained_index()].vector
    assert base.epochs[runs.pretrained_index()] == TINY.pretrain_epochs
    for c in clones:
        assert torch.equal(c[0].vector, pre) and c.epochs[-1] == TINY.epochs - TINY.pretrain_epochs
    # Cached on disk: the fresh LiptonRuns above read every run back without training.
    root = figure_cache / TINY.key()
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == sorted(
        [f"init{k}" for k in range(3)] + [f"shuffle{k}" for k in (1, 2)] + [f"clone{k}" for k in range(3)]
    )
    again = Trajectory.open(root / "clone1")
    assert torch.equal(again.vectors(), clones[1].vectors())
    assert dataclasses.replace(TINY, epochs=6).key() != TINY.key()


def test_losses_match_a_float64_loop(figure_cache: Path) -> None:
    runs = LiptonRuns(TINY, figure_cache)
    base = runs.base()
    ends = torch.stack([base[0].vector, base[-1].vector])
    t = np.array([0.0, 0.3, 1.0])
    got = runs.line(ends[0], ends[1], t).metrics["loss"]
    assert runs.losses(AffinePoints(ends, np.stack([1 - t, t], 1))) == pytest.approx(got, rel=1e-6)
    model = TINY.model(0).double().eval()
    x, y = runs.eval_data
    want = [
        float(
            F.cross_entropy(functional_forward(model, (1 - a) * ends[0].double() + a * ends[1].double(), x.double()), y)
        )
        for a in t
    ]
    assert got == pytest.approx(want, rel=1e-4)
    assert x.shape == (TINY.n_train, 1, 7, 7) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_converged_premise_on_synthetic_runs(figure_cache: Path) -> None:
    runs = LiptonRuns(TINY, figure_cache)
    base = runs.base()
    flat, low, finals = converged_premise(runs, [base], "the tiny path")
    assert finals.shape == (1,) and flat.threshold == CONVERGED_TOL and low.threshold == LOW_LOSS
    assert low.met == bool(finals[0] <= LOW_LOSS)
    # A path that stands still from the start is converged; its loss is the initial one, so it is not low.
    still = Trajectory()
    for i in range(TINY.epochs + 1):
        still.append(base[0].vector, step=i, epoch=float(i))
    flat2, low2, f2 = converged_premise(runs, [still], "a standing path")
    assert flat2.met and flat2.measured == [0.0] and not low2.met and f2[0] > 1.0


def test_measures_against_closed_forms() -> None:
    d = np.array([[0, 3, 4], [3, 0, 5], [4, 5, 0]], dtype=float)
    assert pairwise_cv(d) == pytest.approx(np.std([3, 4, 5]) / 4)
    assert pairwise_cv(7 * d) == pytest.approx(pairwise_cv(d))
    assert pairwise_cv(np.ones((4, 4)) - np.eye(4)) == 0
    traj = Trajectory()
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
    for i, p in enumerate(pts):
        traj.append(p, step=i)
    assert path_lengths(traj).tolist() == [0.0, 5.0, 9.0]
    # Two paths from the origin to (3, 4) and (3, 0): pairwise 4, displacements 5 and 3 -> ratio 4 / 4.
    a, b = Trajectory(), Trajectory()
    for t, end in ((a, pts[1]), (b, pts[2])):
        t.append(pts[0], step=0)
        t.append(end, step=1)
    ratio, pair, disp = divergence_ratio([a, b])
    assert ratio == pytest.approx(1.0) and disp.tolist() == [5.0, 3.0]
    assert np.array_equal(pair, pairwise_end_distances([a, b]))


def test_setup_scales_and_validation(tmp_path: Path) -> None:
    assert LiptonSetup.for_scale("quick") == LiptonSetup()
    with pytest.raises(MissingDataError, match="--data-dir"):
        LiptonSetup.for_scale(Scale.FULL, None)
    full = LiptonSetup.for_scale("full", tmp_path)
    assert (full.epochs, full.every, full.pretrain_epochs, full.repetitions) == (200, 10, 10, 5)
    assert full.input_shape == (1, 28, 28)
    # medium: the paper's schedule (as full) on the quick data and network, stamped "medium" on the claims
    medium = LiptonSetup.for_scale("medium")
    assert (medium.epochs, medium.every, medium.pretrain_epochs, medium.lr) == (full.epochs, 10, 10, full.lr)
    assert (medium.n_train, medium.channels, medium.data_dir) == (LiptonSetup().n_train, LiptonSetup().channels, None)
    assert medium.verdict_scale == "medium" and medium.scale_note == "Scaled down from the paper"
    with pytest.raises(ValueError, match="valid values"):
        LiptonSetup.for_scale("huge")
    with pytest.raises(ValueError, match="pretrain_epochs"):
        LiptonSetup(epochs=4, pretrain_epochs=4)
    with pytest.raises(ValueError, match="downsample"):
        LiptonSetup(downsample=3)
    with pytest.raises(FileNotFoundError, match="IDX"):  # an empty data dir: the loader says what to put where
        _ = LiptonRuns(full).data


def test_medium_scale_is_wired_through_make_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make_all --scale medium`` runs the Lipton figures at LiptonSetup.medium() (here the tiny setting)."""
    import json

    from figures.make_all import make_gallery

    tiny_medium = dataclasses.replace(TINY, name="medium")
    monkeypatch.setattr(LiptonSetup, "medium", classmethod(lambda cls: tiny_medium))
    rep = make_gallery(["lipton_fig2"], scale="medium", out=tmp_path, jobs=1, progress=False, verbose=False)
    assert rep.exit_code == 0
    (entry,) = [e for e in json.loads((tmp_path / "claims.json").read_text())["figures"] if e["name"] == "lipton_fig2"]
    assert entry["scale"] == "medium" and entry["claims"] and all(c["scale"] == "medium" for c in entry["claims"])
