"""Im, Tao & Branson, Fig. 4: training and test accuracy of each method over several initializations.

Every method of :data:`landscape.train.METHODS` trained from ``setup.repetitions`` initializations with the same
minibatch order (runs from :mod:`figures.im._setup`); accuracy of the final weights over the whole training and test
sets, in eval mode. "Not significantly different" is a one-way ANOVA across methods (scipy's ``f_oneway``) at the 5%
level; the paper gives no test. The same test across initializations checks the paper's "We also did not see a
relationship between the weight initialization and the validation accuracy" (Sec. 4.2). A "no difference" claim is held
only when the ANOVA finds none *and* the paired interval of the largest difference (best minus worst group) lies within
+-1 percentage point (what the experiment can resolve: 449 test images, one image = 0.22 points); a significant
difference is "not held"; anything else is inconclusive. The ordering claim (SGD lowest, adaptive methods highest) is a
paired t over initializations of the adaptive methods' mean training accuracy minus SGD's; its premise is that the
methods are not all at the 100% ceiling (otherwise there is no ordering to see). Premise of every claim: the runs
converged.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy.stats import f_oneway

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, register_figure
from figures.im._setup import GALLERY, ImRuns, converged_premise, im_figure, mpl_grid, no_difference
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import at_most, paired_effect
from landscape.plot import PALETTE
from landscape.train import METHODS

__all__ = ["anova", "fig4"]

_INIT_COLORS = PALETTE[:6]


def anova(groups: list[np.ndarray]) -> tuple[float, float]:
    """One-way ANOVA ``(F, p)`` of groups of values; ``(nan, nan)`` when it is undefined (a group of one, no spread).

    Args:
        groups: One array of observations per group.
    """
    if len(groups) < 2 or any(len(g) < 2 for g in groups):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: F undefined
        res = f_oneway(*groups)
    return float(res.statistic), float(res.pvalue)


@register_figure("im_fig4", title="Im et al. Fig. 4: training and test accuracy per method and init", **GALLERY)
@im_figure
def fig4(runs: ImRuns) -> FigureResult:
    """Fig. 4 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup = runs.setup
    reps = setup.repetitions
    grid = runs.method_grid(reps)
    train = np.array([[grid[m, k].last("trainset_accuracy") for k in range(reps)] for m in METHODS])  # (7, R)
    test = np.array([[grid[m, k].last("test_accuracy") for k in range(reps)] for m in METHODS])

    names = [LABELS[m] for m in METHODS]
    pfig = make_subplots(1, 2, subplot_titles=["(a) training accuracy", "(b) test accuracy"])
    mfig, axes = mpl_grid(1, 2, 5.2, 3.8)
    offsets = (np.arange(reps) - (reps - 1) / 2) * 0.12
    for col, (acc, what) in enumerate(((train, "training"), (test, "test"))):
        ax = axes[0, col]
        for k in range(reps):
            c = _INIT_COLORS[k % len(_INIT_COLORS)]
            pfig.add_trace(
                go.Scatter(
                    x=np.arange(len(METHODS)) + offsets[k],
                    y=100 * acc[:, k],
                    mode="markers",
                    marker={"color": c, "size": 9},
                    name=f"init {k}",
                    legendgroup=f"init {k}",
                    showlegend=col == 0,
                    text=names,
                    hovertemplate="%{text}: %{y:.2f}%<extra>init " + str(k) + "</extra>",
                ),
                row=1,
                col=col + 1,
            )
            ax.scatter(
                np.arange(len(METHODS)) + offsets[k],
                100 * acc[:, k],
                color=c,
                s=22,
                label=f"init {k}" if col == 0 else None,
            )
        ax.set_xticks(range(len(METHODS)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(f"{what} accuracy (%)")
        ax.set_title(f"({'ab'[col]}) {what} accuracy", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    pfig.update_xaxes(tickvals=list(range(len(METHODS))), ticktext=names)
    pfig.update_yaxes(title_text="accuracy (%)")
    pfig.update_layout(template="plotly_white", height=430, title="Fig. 4: final accuracy per method and init")

    # ---- claims
    margin = 1.0  # percentage points, fixed before measuring
    premise = converged_premise(list(grid.values()), runs.surface_data())
    means_tr = train.mean(1)
    idx = {m: i for i, m in enumerate(METHODS)}
    three = [idx[m] for m in ("adam", "rmsprop", "adadelta")]
    sgd = idx["sgd"]
    eff_o = paired_effect(100 * train[three].mean(0), 100 * train[sgd])
    at_ceiling = float(np.mean(train >= 1.0 - 1e-9))
    ceiling = at_most(
        "the training accuracies are below the 100% ceiling (an ordering can show)",
        at_ceiling,
        0.5,
        detail="fraction of the runs at 100% training accuracy; at most half",
    )
    table_te = ", ".join(f"{n} {100 * v:.2f}" for n, v in zip(names, test.mean(1)))
    table_tr = ", ".join(f"{n} {100 * v:.2f}" for n, v in zip(names, means_tr))
    losses = ", ".join(
        f"{n} {np.mean([grid[m, k].last('trainset_loss') for k in range(reps)]):.2g}" for n, m in zip(names, METHODS)
    )

    def no_difference_between(groups: np.ndarray) -> tuple[dict[str, Any], int, int]:
        """A "no difference" claim across the rows of ``groups`` (test accuracy, paired over the columns).

        Returns:
            The claim's measures (mean per row in %; one-way ANOVA; best minus worst row in points), and the rows
            of the best and the worst mean.
        """
        f, p = anova(list(groups))
        means = groups.mean(1)
        hi, lo = int(np.argmax(means)), int(np.argmin(means))
        eff = paired_effect(100 * groups[hi], 100 * groups[lo])
        measures = {
            "measured": list(100 * means),
            "effect": eff,
            "verdict": no_difference(p, eff, margin),
            "f": f,
            "p": p,
        }
        return measures, hi, lo

    methods, best, worst = no_difference_between(test)  # paired over the inits
    inits, _, _ = no_difference_between(test.T)  # paired over the 7 methods
    book = ClaimBook("im_fig4", scale=setup.name)
    claims = [
        book(
            "test-accuracy-equal",
            premises=[premise],
            reps=reps,
            table=table_te,
            best=names[best],
            worst=names[worst],
            margin=margin,
            **methods,
        ),
        book(
            "sgd-lowest-training-accuracy",
            list(100 * means_tr),
            eff_o,
            premises=[premise, ceiling],
            table=table_tr,
            reps=reps,
            losses=losses,
        ),
        book("accuracy-independent-of-init", premises=[premise], reps=reps, margin=margin, **inits),
    ]
    return FigureResult(
        caption="Fig. 4: accuracy of the final weights of every method over the whole training set (a) and test set "
        "(b), eval mode; colours are initializations (shared by all methods, same minibatches). Scaled down "
        "from the paper (see scaling).",
        panels=[Panel("accuracy", plotly=pfig, mpl=mfig)],
        claims=claims,
        scaling=setup.scaling(reps, initializations=f"{reps} per method"),
    )
