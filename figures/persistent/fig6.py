"""Persistent Neurons, Fig. 6: plain vs championship training trajectories of LeNet-5 on a 2-D PCA plane.

Sec. 4, Fig. 6 (caption: "Green: plain model training trajectory; Red: championship training trajectory"; text: "The two
trajectories start from the same location while converge to different solutions"), drawn over contours of the loss.
Here: the full persistent LeNet-5 runs of Figs. 7-8 from the bad initialization (shared cache,
``figures/persistent/_setup.py``), one snapshot per epoch; one :class:`landscape.analyze.TrajectoryPCA` (centred on the
mean) fitted on both paths; the training loss (cross-entropy, eval mode, without the penalty) on the PCA plane around
them, and each snapshot's true loss beside the loss at its projection.

Claim threshold fixed before measuring: the paths "converge to different solutions" when the distance between
their end points is at least a quarter of the mean distance each travelled from the shared start.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, register_figure
from figures.persistent._setup import RunSetup, best_persistent, lenet_full_setups, persistent_figure
from figures.verdict import at_least, at_most
from landscape.analyze import TrajectoryPCA, make_loss_at, plane
from landscape.plot import plot_trajectory
from persistence import PersistentTrainer

DIVERGE_MIN = 0.25


@register_figure(
    "persistent_fig6", paper="persistent", title="Fig. 6: plain vs championship LeNet-5 trajectories on a PCA plane"
)
@persistent_figure(lambda scale, data_dir: lenet_full_setups(scale, data_dir)["bad"])
def figure6(
    setup: RunSetup,
    pt: PersistentTrainer,
    scale: Scale,
    progress: bool,
    *,
    grid: int | None = None,
    loss_images: int | None = None,
) -> FigureResult:
    """The figure at a scale, or for the :class:`RunSetup` of the bad initialization (``setup``).

    Signature: :func:`figures.persistent._setup.persistent_figure`, with the options ``grid`` (points per side of
    the plane) and ``loss_images``.
    """
    full = scale is Scale.FULL
    grid = grid or (31 if full else 17)
    loss_images = loss_images or (5000 if full else 512)
    c = pt.champion_
    shown = c if c > 0 else best_persistent(pt)
    t_plain, t_other = pt.results_[0].trajectory, pt.results_[shown].trajectory
    label = f"championship (iteration {c})" if shown == c else f"best persistent iteration ({shown})"
    x, y = setup.splits().train
    data = (x[:loss_images], y[:loss_images])
    model = setup.build()
    pca = TrajectoryPCA(2).fit([t_plain, t_other])
    loss_at = make_loss_at(model, data, nn.functional.cross_entropy)
    path = pca.project([t_plain, t_other], loss_at=loss_at)
    lo, hi = path.coordinates.min(0), path.coordinates.max(0)
    pad = 0.25 * (hi - lo) + 1e-9
    center, d1, d2 = pca.plane_directions(torch.float32)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], grid)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], grid)
    surf = plane(model, center, d1, d2, data, xs, ys, metrics=("loss",), loss_fn=nn.functional.cross_entropy)
    labels = ["plain", label]
    title = "Fig. 6: plain vs championship trajectory on the PCA plane (training loss)"
    fig = plot_trajectory(surf, path, labels=labels, log=True, title=title)
    mfig = plot_trajectory(surf, path, labels=labels, log=True, title=title, backend="matplotlib")

    v0, v1 = t_plain.vectors(dtype=torch.float64), t_other.vectors(dtype=torch.float64)
    start_gap = float((v0[0] - v1[0]).norm())
    end_gap = float((v0[-1] - v1[-1]).norm())
    travel = 0.5 * float((v0[-1] - v0[0]).norm() + (v1[-1] - v1[0]).norm())
    ratio = end_gap / travel if travel > 0 else float("nan")
    evr = pca.explained_variance_ratio_
    champ_persistent = at_least(
        "the championship is a persistent iteration",
        c,
        1,
        detail=f"championship index (0 = the plain model); iteration {shown} drawn",
    )
    same_start = at_most(
        "both paths start from the same weights",
        start_gap,
        0.0,
        detail="distance between the two initial parameter vectors",
    )
    book = ClaimBook("persistent_fig6", scale=str(scale))
    claims = [
        book(
            "paths-diverge",
            round(ratio, 4),
            held=bool(ratio >= DIVERGE_MIN),
            premises=[champ_persistent, same_start],
            end_gap=end_gap,
            travel=travel,
            min_ratio=DIVERGE_MIN,
            explained=100 * evr.sum(),
            off_plane=path.median_off_plane_ratio,
        )
    ]
    return FigureResult(
        caption=f"Fig. 6: the training paths (one point per epoch, square = start, star = end) of the plain LeNet-5 "
        f"and the {label} from the bad initialization, projected on the plane of their first two "
        f"principal components, over the training loss on that plane (log colour scale, {loss_images} "
        f"training images). Right: each snapshot's loss vs the loss at its projection.",
        panels=[Panel("pca", plotly=fig, mpl=mfig)],
        claims=claims,
        scaling={
            "model": setup.describe_model(),
            **setup.scaling(),
            "plane": f"{grid} x {grid} grid, loss on {loss_images} training images",
        },
    )
