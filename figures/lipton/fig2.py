"""Lipton 2016, "Stuck in What? Adventures in Weight Space", Fig. 2: one initialization, new data shuffles.

Paths from one initialization, each with its own shuffle of the data.

The runs, settings and readings are shared by the three figures: see :mod:`figures.lipton._setup`.
"""

from __future__ import annotations

from pathlib import Path

from figures.contract import (
    FigureResult,
    Panel,
    Scale,
    cache_dir,
    figure_function,
    register_figure,
)
from figures.lipton._setup import (
    LiptonRuns,
    LiptonSetup,
    converged_premise,
    cv_claim,
    diverge_claim,
    divergence_ratio,
    draw_paths,
    joint_pca,
    subsampled,
    trained_premise,
)


@figure_function(LiptonSetup.for_scale)
def figure2(setup: LiptonSetup, *, cache: Path | str | None, progress: bool) -> FigureResult:
    """Fig. 2: paths from one initialization, each with its own shuffle of the data.

    The signature is :func:`figures.contract.figure_function`'s.

    Returns:
        Panel ``paths``; claims that the paths diverge and that their final pairwise distances are equal.
    """
    s = setup
    runs = LiptonRuns(s, cache, progress)
    trajs = runs.shuffles()
    idx = [subsampled(t, s.every) for t in trajs]
    _, paths = joint_pca(trajs, idx)
    fig = draw_paths(
        f"{s.repetitions} paths from one initialization, different data shuffles",
        paths,
        [f"shuffle {k}" for k in range(len(trajs))],
    )
    ratio, pair, _ = divergence_ratio(trajs)
    src = "Lipton 2016, Sec. 3, Fig. 2"
    scale = s.name if s.name in ("quick", "full") else None
    conv = converged_premise(runs, trajs, f"the {len(trajs)} shuffled runs")[:2]
    return FigureResult(
        caption=f"One PCA of {s.repetitions} paths that start from the same random initialization and differ only "
        f"in the order the data are fed (every {s.every} epochs; a square marks the shared start, a star "
        f"each end). Scaled down from the paper: {s.epochs} epochs.",
        panels=[Panel("paths", plotly=fig[0], mpl=fig[1])],
        claims=[
            diverge_claim(
                "Paths from the same initialization, fed the data in different shuffled orders,",
                trajs,
                src,
                premises=[trained_premise(runs, trajs, f"the {len(trajs)} shuffled runs")],
                scale=scale,
            ),
            cv_claim(f"{s.repetitions} runs from one initialization with different shuffles", pair, src, conv, scale),
        ],
        scaling=s.scaling(),
    )


@register_figure("lipton_fig2", paper="lipton", title="Lipton Fig. 2: paths from one initialization, new shuffles")
def run_fig2(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return figure2(scale, data_dir, cache=cache_dir(out, "lipton"), progress=progress)
