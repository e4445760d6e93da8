"""Lipton 2016, "Stuck in What? Adventures in Weight Space", Fig. 2: one initialization, new data shuffles.

Paths from one initialization, each with its own shuffle of the data.

The runs, settings and readings are shared by the three figures: see :mod:`figures.lipton._setup`.
"""

from __future__ import annotations

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel
from figures.lipton._setup import (
    LiptonRuns,
    LiptonSetup,
    diverging_paths,
    draw_joint_paths,
    equal_distances,
    lipton_figure,
)


@lipton_figure("lipton_fig2", "Lipton Fig. 2: paths from one initialization, new shuffles")
def figure2(s: LiptonSetup, runs: LiptonRuns) -> FigureResult:
    """Fig. 2: paths from one initialization, each with its own shuffle of the data.

    The signature is :func:`~figures.lipton._setup.lipton_figure`'s.

    Returns:
        Panel ``paths``; claims that the paths diverge and that their final pairwise distances are equal.
    """
    trajs = runs.shuffles()
    fig = draw_joint_paths(
        f"{s.repetitions} paths from one initialization, different data shuffles", trajs, "shuffle", s.every
    )
    what = f"the {len(trajs)} shuffled runs"
    book = ClaimBook("lipton_fig2", scale=s.verdict_scale)
    claims = [
        book("shuffled-paths-diverge", **diverging_paths(runs, trajs, what)),
        book("final-distances-equal", **equal_distances(runs, trajs, what), repetitions=s.repetitions),
    ]
    return FigureResult(
        caption=f"One PCA of {s.repetitions} paths that start from the same random initialization and differ only "
        f"in the order the data are fed (every {s.every} epochs; a square marks the shared start, a star "
        f"each end). {s.scale_note}: {s.epochs} epochs.",
        panels=[Panel("paths", plotly=fig[0], mpl=fig[1])],
        claims=claims,
        scaling=s.scaling(),
    )
