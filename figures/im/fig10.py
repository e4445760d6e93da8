"""Im, Tao & Branson, Fig. 10: interpolation from the initial to the final weights, continued to alpha = 2.

``theta(alpha) = (1 - alpha) theta_0 + alpha theta_1`` (Eq. 2), alpha in [0, 2], for every method and
initialization of the BatchNorm runs of :mod:`figures.im._setup`. The paper's evidence that the critical points
are minima, not saddles along this line: past the final weights the loss rises again. Reading (fixed before
measuring): for every run, the loss everywhere on alpha in [1.25, 2] exceeds the loss at alpha = 1. Statistics:
per initialization, the log of the smallest ratio min_{alpha >= 1.25} L(alpha) / L(1) over the 7 methods; paired t
over the initializations against 0, held if above. Premise: the runs converged (a run still descending has its
minimum along this line beyond alpha = 1 for a trivial reason).

Evaluation (2026-12-07): alpha in [0, 1] is the 21-point init -> final line that Figs. 5-6 and 8 and Table 1 read too
(:meth:`~figures.im._runs.ImRuns.init_final_losses`, memoized: the same positions bitwise, so one evaluation per
gallery), and this figure evaluates only the 20 points on (1, 2]. Measured per run (one thread, load 14-16, two
alternating rounds): 0.26 / 0.27 s of CPU against 0.79 / 0.49 s for the whole 41-point line.
"""

from __future__ import annotations

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, register_figure
from figures.im._setup import GALLERY, Curve, ImRuns, color, converged_premise, im_figure, init_dash, multiples_panels
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import paired_effect
from landscape.train import METHODS

__all__ = ["fig10"]


@register_figure("im_fig10", title="Im et al. Fig. 10: init -> final interpolation continued to alpha 2", **GALLERY)
@im_figure
def fig10(runs: ImRuns) -> FigureResult:
    """Fig. 10 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup = runs.setup
    reps = setup.repetitions
    grid = runs.method_grid(reps)
    # linspace(0, 2, 41) in two memoized parts: [0, 1] is the 21-point init -> final line of Figs. 5-6 and 8 (the
    # same positions bitwise, so one evaluation per gallery serves the three figures), (1, 2] is this figure's own
    unit, beyond = np.linspace(0, 1, 21), np.linspace(0, 2, 41)[21:]
    alphas = np.r_[unit, beyond]
    inside = runs.init_final_losses(grid, unit, "fig 10 lines")
    outside = runs.init_final_losses(grid, beyond, "fig 10 lines beyond")
    loss = {key: np.r_[inside[key], outside[key]] for key in grid}

    i1 = int(np.argmin(np.abs(alphas - 1)))
    past = alphas >= 1.25
    ok = {key: bool(np.isfinite(z).all() and z[past].min() > z[i1]) for key, z in loss.items()}
    ratio = {key: z[-1] / z[i1] for key, z in loss.items()}
    argmin = {key: float(alphas[np.nanargmin(z)]) if np.isfinite(z).any() else np.nan for key, z in loss.items()}
    worst = min(ratio, key=lambda k: ratio[k] if np.isfinite(ratio[k]) else -np.inf)
    panels = [
        (LABELS[m], [Curve(alphas, loss[m, k], f"init {k}", color(m), init_dash(k)) for k in range(reps)])
        for m in METHODS
    ]
    (f,) = multiples_panels(
        [
            (
                "beyond_final",
                panels,
                "alpha (0: init, 1: final)",
                "training loss",
                "Fig. 10: interpolation from the initial to the final weights, to alpha 2",
            )
        ],
        cols=4,
        logy=True,
        vlines=[1.0],
    )
    past_min = {
        key: float(np.min(z[past]) / z[i1]) if np.isfinite(z).all() and z[i1] > 0 else np.nan for key, z in loss.items()
    }
    per_init = [float(np.nanmin([past_min[m, k] for m in METHODS])) for k in range(reps)]
    eff = paired_effect(np.log(per_init), 0.0)
    premise = converged_premise(list(grid.values()), runs.surface_data())
    book = ClaimBook("im_fig10", scale=setup.name)
    claims = [
        book(
            "loss-rises-beyond-final",
            per_init,
            eff,
            premises=[premise],
            reps=reps,
            above=f"{sum(ok.values())}/{len(ok)}",
            smallest=f"{ratio[worst]:.3g} ({LABELS[worst[0]]}, init {worst[1]})",
            median=np.nanmedian(list(ratio.values())),
            argmin=", ".join(sorted({f"{a:g}" for a in argmin.values()})),
        ),
    ]
    return FigureResult(
        caption="Fig. 10: training loss on the line from the initial (alpha 0) through the final weights (alpha 1, "
        "dotted) to alpha 2, per method (one line style per initialization). " + setup.scale_note,
        panels=[f],
        claims=claims,
        scaling=setup.scaling(reps, initializations=f"{reps} per method", line="41 points, alpha in [0, 2]"),
    )
