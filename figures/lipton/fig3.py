"""Lipton 2016, "Stuck in What? Adventures in Weight Space", Fig. 3: distance from the origin, and cloning.

Distance from the origin per epoch, and paths after cloning a partially trained model.

The runs, settings and readings are shared by the three figures: see :mod:`figures.lipton._setup`.
"""

from __future__ import annotations

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel
from figures.lipton._setup import (
    CloneOrigin,
    LiptonRuns,
    LiptonSetup,
    converged_premise,
    diverging_paths,
    draw_joint_paths,
    draw_origin,
    equal_distances,
    lipton_figure,
    path_lengths,
    roughly_equal,
    solution_premises,
    subsampled,
)
from landscape.analyze import distance_from_origin

# "Travel through flat regions": at least a quarter of the path length covered after the training loss has come
# within 5% of the initial loss of its final value.
FLAT_LOSS_FRACTION = 0.05
FLAT_TRAVEL_MIN = 0.25


@lipton_figure("lipton_fig3", "Lipton Fig. 3: distance from the origin, and cloned paths")
def figure3(s: LiptonSetup, runs: LiptonRuns) -> FigureResult:
    """Fig. 3: distance from the origin per epoch, and paths after cloning a partially trained model.

    The signature is :func:`~figures.lipton._setup.lipton_figure`'s.

    Returns:
        Panels ``origin`` and ``clones``; claims on distances from the origin, the flat region and the clones.
    """
    inits = runs.inits()
    clones = runs.clones()
    curves = []
    for k, t in enumerate(inits):
        i = subsampled(t, s.every)
        curves.append((f"init {k}", t.epochs[i], distance_from_origin(t.vectors(i)), False))
    for k, t in enumerate(clones):
        curves.append((f"clone {k}", t.epochs + s.pretrain_epochs, distance_from_origin(t), True))
    origin = draw_origin(curves)
    cl = draw_joint_paths(
        f"{s.repetitions} clones after {s.pretrain_epochs} epochs, different shuffles",
        clones,
        "clone",
        s.every,
        s.pretrain_epochs,
    )

    final_norms = np.array([c[2][-1] for c in curves[: len(inits)]])
    # Flat region: how much of its path the base run still travels once its loss has (nearly) converged.
    base = runs.base()
    loss = runs.losses(v.vector for v in base)
    lengths = path_lengths(base)
    near = np.abs(loss - loss[-1]) <= FLAT_LOSS_FRACTION * loss[0]
    conv = int(next(i for i in range(len(near)) if near[i:].all()))
    after = float((lengths[-1] - lengths[conv]) / lengths[-1])
    base_conv = converged_premise(runs, [base], "the single path")[:2]
    book = ClaimBook("lipton_fig3", scale=s.verdict_scale)
    claims = [
        book(
            "same-distance-from-origin",
            **roughly_equal(final_norms),
            # "all pairs of solutions ... roughly the same euclidean distance from the origin and from each other"
            # (Sec. 1.1): one sentence on solutions, so the premises of the pairwise-distance claim of the same runs
            # (Fig. 1), since 2026-12-08; before, only "trained"
            premises=solution_premises(runs, inits, f"the {len(inits)} runs from different initializations"),
            epochs=s.epochs,
            runs=len(inits),
        ),
        book(
            "travel-through-flat-regions",
            round(after, 4),
            held=after >= FLAT_TRAVEL_MIN,
            premises=list(base_conv),
            epoch=base.epochs[conv],
            fraction=100 * FLAT_LOSS_FRACTION,
            initial=loss[0],
            final=loss[-1],
            travel_min=FLAT_TRAVEL_MIN,
        ),
        book(
            "clones-diverge",
            **diverging_paths(
                runs, clones, f"the {len(clones)} clones", CloneOrigin(float(s.pretrain_epochs), base[0].vector)
            ),
            pretrain=s.pretrain_epochs,
        ),
        book(
            "final-distances-equal",
            **equal_distances(
                runs, clones, f"the {len(clones)} clones", CloneOrigin(float(s.pretrain_epochs), base[0].vector)
            ),
            repetitions=s.repetitions,
        ),
    ]
    return FigureResult(
        caption=f"Left: Euclidean distance of the weights from the origin every {s.every} epochs, for the "
        f"{len(inits)} runs from different initializations (solid) and for {len(clones)} clones of run 0 "
        f"taken after {s.pretrain_epochs} epochs and trained on with new data shuffles (dashed). Right: one "
        f"PCA of the clones' paths from the shared pretrained point (square) to their ends (stars). "
        f"{s.scale_note}: {s.epochs} epochs, cloning after {s.pretrain_epochs}.",
        panels=[Panel("origin", plotly=origin[0], mpl=origin[1]), Panel("clones", plotly=cl[0], mpl=cl[1])],
        claims=claims,
        scaling=s.scaling(),
    )
