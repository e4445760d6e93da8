"""Im, Tao & Branson, Fig. 1 (Sec. 2.2.1): a learning curve, its "transient" and "minimization" phases.

The paper's Fig. 1 is "an example of learning curve of neural network": a short transient phase in which the loss
falls fast, then a long minimization phase in which it falls slowly (Sutskever et al. 2013). Here: the training
loss per epoch of SGD and Adam from the shared pool of runs (:mod:`figures.im._setup`, BatchNorm VGG, every
initialization), on a log axis, with the switch epochs of Fig. 7 marked.

Reading (fixed before measuring): the transient phase is the first quarter of training (Fig. 7's earliest switch);
the claim is that it accounts for most of the loss decrease: per run, ``(L_0 - L_{E/4}) / (L_0 - L_E)`` is above
1/2. Measured on log loss too (the curve as the paper draws it has a log-like shape) in the detail. Statistics: paired
t over the initializations of the SGD runs' share against 1/2; Adam's alongside. Premise: the runs converged (a
curve still falling steeply at the end has no minimization phase yet).
"""

from __future__ import annotations

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, register_figure
from figures.im._setup import (
    GALLERY,
    ImRuns,
    color,
    converged_premise,
    history_curve,
    im_figure,
    init_dash,
    multiples_panels,
)
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import paired_effect

__all__ = ["fig1", "transient_share"]


def transient_share(curve: np.ndarray, frac: float = 0.25) -> float:
    """Share of a loss curve's total decrease reached after the first ``frac`` of its points.

    Args:
        curve: ``(E + 1,)`` losses at epochs ``0..E``.
        frac: Length of the transient phase, as a fraction of training.

    Returns:
        ``(L_0 - L_k) / (L_0 - L_E)`` with ``k = round(frac * E)``; NaN if the loss did not decrease.
    """
    c = np.asarray(curve, dtype=np.float64)
    k = int(round(frac * (len(c) - 1)))
    total = c[0] - c[-1]
    return float((c[0] - c[k]) / total) if np.isfinite(total) and total > 0 else float("nan")


@register_figure("im_fig1", title="Im et al. Fig. 1: learning curve, transient and minimization phases", **GALLERY)
@im_figure
def fig1(runs: ImRuns) -> FigureResult:
    """Fig. 1 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup = runs.setup
    reps = setup.repetitions
    methods = ("sgd", "adam")
    got = runs.method_grid(reps, methods)
    at = [round(setup.epochs * f) for f in setup.switch_fractions]
    panels = []
    for m in methods:
        panels.append(
            (
                LABELS[m],
                [
                    history_curve(got[m, k], "surface_loss", f"init {k}", color(m), dash=init_dash(k))
                    for k in range(reps)
                ],
            )
        )
    (f,) = multiples_panels(
        [
            (
                "learning_curve",
                panels,
                "epoch",
                "training loss",
                "Fig. 1: learning curves (dotted: Fig. 7's switch epochs)",
            )
        ],
        cols=2,
        logy=True,
        vlines=at,
        width=4.4,
        height=3.0,
    )
    share = {key: transient_share(r.curve("surface_loss")) for key, r in got.items()}
    log_share = {key: transient_share(np.log(r.curve("surface_loss"))) for key, r in got.items()}
    sgd = [share["sgd", k] for k in range(reps)]
    eff = paired_effect(sgd, 0.5)
    premise = converged_premise(list(got.values()), runs.surface_data())
    book = ClaimBook("im_fig1", scale=setup.name)
    claims = [
        book(
            "transient-then-minimization",
            sgd,
            eff,
            premises=[premise],
            switch=at[0],
            epochs=setup.epochs,
            reps=reps,
            adam=", ".join(f"{share['adam', k]:.3f}" for k in range(reps)),
            log_sgd=", ".join(f"{log_share['sgd', k]:.3f}" for k in range(reps)),
            log_adam=", ".join(f"{log_share['adam', k]:.3f}" for k in range(reps)),
        ),
    ]
    return FigureResult(
        caption="Fig. 1: training loss per epoch (on the surface images, BatchNorm with batch statistics) of SGD and "
        "Adam from every initialization of the shared pool, log axis; dotted lines at the epochs where Fig. 7 "
        "switches optimizer. The paper's Fig. 1 is a schematic learning curve; this one is measured. Scaled "
        "down from the paper (see scaling).",
        panels=[f],
        claims=claims,
        scaling=setup.scaling(reps, initializations=f"{reps} per method"),
    )
