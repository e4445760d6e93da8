"""Lipton 2016, "Stuck in What? Adventures in Weight Space", Fig. 1: trajectory PCA and the straight line.

2D PCA of one path and of five paths from different initializations, and the straight line between its ends.

The runs, settings and readings are shared by the three figures: see :mod:`figures.lipton._setup`.
"""

from __future__ import annotations

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel
from figures.lipton._setup import (
    LiptonRuns,
    LiptonSetup,
    draw_joint_paths,
    draw_line,
    draw_paths,
    equal_distances,
    lipton_figure,
    path_lengths,
    solution_premises,
)
from figures.verdict import at_least
from landscape.analyze import TrajectoryPCA

# Lipton 2016, Sec. 3: explained variance of the first 2 and first 10 components of one 200-epoch path.
PAPER_EV2 = 0.8139
PAPER_EV10 = 0.9563
EV_TOLERANCE = 0.10  # held: at least the paper's minus 10 percentage points
STRAIGHT_MAX = 2 / 3  # "far from straight": straight-line distance at most 2/3 of the path length
SNAPSHOTS_PER_COMPONENT = 5  # premise of the k-component claims: at least 5 k snapshot-to-snapshot steps


@lipton_figure("lipton_fig1", "Lipton Fig. 1: 2D PCA of training paths, and the straight line")
def figure1(s: LiptonSetup, runs: LiptonRuns) -> FigureResult:
    """Fig. 1: 2D PCA of one path and of five paths from different initializations, and the straight line.

    The signature is :func:`~figures.lipton._setup.lipton_figure`'s.

    Returns:
        Panels ``single``, ``two``, ``five`` and ``line`` (the paper's 1, 2 and 5 paths, and the straight line);
        claims on explained variance, distances and the straight line.
    """
    base = runs.base()
    T = len(base)
    pca1 = TrajectoryPCA(n_components=2).fit(base)
    ev2 = pca1.cumulative_explained_variance(2)
    k10 = min(10, T)
    ev10 = pca1.cumulative_explained_variance(k10)
    single = draw_paths(f"One path, a snapshot per epoch ({T} snapshots)", pca1.project(base), ["init 0"])

    inits = runs.inits()
    two = draw_joint_paths(  # the paper's middle panel: two paths in one PCA
        f"2 paths from different initializations (every {s.every} epochs)", inits[:2], "init", s.every
    )
    five = draw_joint_paths(
        f"{s.repetitions} paths from different initializations (every {s.every} epochs)", inits, "init", s.every
    )

    # Loss along the straight line init -> solution and at the snapshots of the path actually taken.
    t_line = np.linspace(0.0, 1.0, s.line_points)
    line_res = runs.line(base[0].vector, base[-1].vector, t_line)
    line_loss = line_res.metrics["loss"]
    path = runs.losses(snap.vector for snap in base)
    lengths = path_lengths(base)
    frac = lengths / lengths[-1]
    chord = float((base[-1].vector.double() - base[0].vector.double()).norm())
    straight = chord / lengths[-1]
    rises = np.diff(line_loss)
    max_rise = float(max(rises.max(), 0.0))
    monotone = max_rise <= 1e-3 * float(line_loss[0] - line_loss[-1])
    barrier = float(line_loss.max() - max(line_loss[0], line_loss[-1]))

    line_fig = draw_line(line_res, frac, path)
    enough = [
        at_least(
            f"the path has enough snapshots for {k} components to be a test (at least "
            f"{SNAPSHOTS_PER_COMPONENT} x {k} steps between snapshots)",
            T - 1,
            SNAPSHOTS_PER_COMPONENT * k,
            detail=f"{T} snapshots: {T - 1} steps; with few snapshots the top components span the path by construction",
        )
        for k in (2, 10)
    ]
    # "from initialization to solution": the path's end is a solution only if it meets the premises of the claims on
    # solutions (trained, flat, low); until 2026-12-08 only "trained" (final loss at most 10% of the initial) was asked
    solved = solution_premises(runs, [base], "the single path")
    ev = {
        "snapshots": T,
        "epochs": s.epochs,
        "tol": 100 * EV_TOLERANCE,
        "spacing": f" Snapshots every {s.base_every_steps} steps and at every epoch." if s.base_every_steps else "",
    }
    book = ClaimBook("lipton_fig1", scale=s.verdict_scale)
    claims = [
        book(
            "two-components-explain-most",
            round(100 * ev2, 2),
            held=ev2 >= PAPER_EV2 - EV_TOLERANCE,
            premises=[enough[0]],
            **ev,
        ),
        book(
            "ten-components-explain-95",
            round(100 * ev10, 2),
            held=ev10 >= PAPER_EV10 - EV_TOLERANCE,
            premises=[enough[1]],
            components=f"Only {T} snapshots: the top {k10} components explain everything by construction."
            if k10 < 10
            else f"With {T} snapshots there are at most {T - 1} components.",
            **ev,
        ),
        book(
            "final-distances-equal",
            **equal_distances(runs, inits, f"the {len(inits)} runs from different initializations"),
            repetitions=s.repetitions,
        ),
        book(
            "line-may-decrease-monotonically",
            round(max_rise, 6),
            held=monotone,
            premises=solved,
            points=s.line_points,
            decrease=line_loss[0] - line_loss[-1],
            line_max=line_loss.max(),
            path_max=path.max(),
            barrier=barrier,
        ),
        book(
            "path-far-from-straight",
            round(straight, 4),
            held=straight <= STRAIGHT_MAX,
            premises=solved,
            chord=chord,
            snapshots=T,
            length=lengths[-1],
            straight_max=STRAIGHT_MAX,
        ),
    ]
    return FigureResult(
        caption="Left: 2D PCA of one training path of Lipton's CNN (snapshots every epoch"
        + (f" and every {s.base_every_steps} steps" if s.base_every_steps else "")
        + "). Middle: one PCA of "
        f"2 and of {s.repetitions} paths from different random initializations (every {s.every} epochs). "
        "A square marks each start, a star each end; a marker's fill is the share of that snapshot's "
        "displacement that lies off the plane. Right: training loss (eval mode) along the straight line from "
        "initialization to solution and at the snapshots of the path taken, each against the fraction of "
        f"its own length. {s.scale_note}: {s.epochs} epochs, snapshot spacing {s.every}.",
        panels=[
            Panel(
                "single",
                plotly=single[0],
                mpl=single[1],
                caption=f"First two components: {100 * ev2:.1f}% of the variance.",
            ),
            Panel("two", plotly=two[0], mpl=two[1]),
            Panel("five", plotly=five[0], mpl=five[1]),
            Panel("line", plotly=line_fig[0], mpl=line_fig[1]),
        ],
        claims=claims,
        scaling=s.scaling(),
    )
