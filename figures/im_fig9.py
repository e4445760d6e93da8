"""Im, Tao & Branson, Fig. 9 (A.4): SGD and Adam augmented with second-order Runge-Kutta.

Training curves of SGD (lr 0.05), SGD with the doubled rate ("SGD x2", 0.1), SGD+RK2 with the Midpoint, Heun and
Ralston coefficients (lr 0.1: Sec. 3.4 doubles the rate of the RK2 versions), Adam (0.001) and Adam+RK2 (Heun,
0.002), each from ``setup.repetitions_fig9`` initializations (runs from :mod:`figures._im_common`), against the
number of gradient evaluations: an RK2 step costs two.

Reading of "outperform at equal gradient evaluations" (fixed before measuring): the mean training loss (whole
training set, eval mode) over the checkpoints both runs reach with the same number of gradient evaluations (every
second epoch of SGD = every epoch of an RK2 run, up to SGD's budget), averaged over initializations; a method beats
another when this mean is lower. Training accuracy at SGD's full budget is reported alongside.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from figures._im_common import SOURCE, Curve, ImRuns, ImSetup, Run, RunSpec, cache_dir, single_threaded, small_multiples
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure

__all__ = ["VARIANTS", "equal_evals", "fig9"]

# (key, label, spec factory of init k, colour): Im et al. A.4, Fig. 9
VARIANTS = (
    ("sgd", "SGD", lambda k: RunSpec("sgd", init=k), "#1f77b4"),
    ("sgd_x2", "SGD x2", lambda k: RunSpec("sgd", init=k, hyper=(("lr", 0.1),)), "#7f7f7f"),
    ("midpoint", "SGD+RK2 Midpoint", lambda k: RunSpec("sgd_rk2", init=k, hyper=(("method", "midpoint"),)), "#9467bd"),
    ("heun", "SGD+RK2 Heun", lambda k: RunSpec("sgd_rk2", init=k), "#2ca02c"),
    ("ralston", "SGD+RK2 Ralston", lambda k: RunSpec("sgd_rk2", init=k, hyper=(("method", "ralston"),)), "#bcbd22"),
    ("adam", "Adam", lambda k: RunSpec("adam", init=k), "#d62728"),
    ("adam_rk2", "Adam+RK2 Heun", lambda k: RunSpec("adam_rk2", init=k), "#ff7f0e"),
)


def equal_evals(a: Run, b: Run, metric: str = "trainset_loss") -> tuple[float, float, int]:
    """Mean of a history column of two runs over the checkpoints where both have spent equal gradient evaluations.

    Returns:
        ``(mean for a, mean for b, number of common checkpoints)`` (NaN means when there is none).
    """
    ga, gb = a.curve("grad_evals"), b.curve("grad_evals")
    common = np.intersect1d(ga[ga > 0], gb[gb > 0])
    if common.size == 0:
        return math.nan, math.nan, 0
    va = a.curve(metric)[np.searchsorted(ga, common)]
    vb = b.curve(metric)[np.searchsorted(gb, common)]
    return float(np.mean(va)), float(np.mean(vb)), int(common.size)


@single_threaded
def fig9(setup: ImSetup, *, cache_dir: Path | str | None = None, out: Path | None = None,
         progress: bool = False) -> FigureResult:
    """Compute and draw Fig. 9 (see the module docstring).

    Args:
        setup: Scale of the experiment.
        cache_dir: Cache of the shared runs (``None``: in memory).
        out: Unused (the figure writes no extra files).
        progress: Show progress bars.

    Returns:
        The figure with its claims.
    """
    runs = ImRuns(setup, cache_dir, progress)
    reps = setup.repetitions_fig9
    spe = setup.steps_per_epoch()
    got = {(key, k): runs.get(make(k)) for key, _, make, _ in VARIANTS for k in range(reps)}

    def mean_curve(key: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        rs = [got[key, k] for k in range(reps)]
        n = min(len(r.history) for r in rs)
        x = rs[0].curve("grad_evals")[:n] / spe
        return x, np.mean([r.curve(metric)[:n] for r in rs], axis=0)

    figs = []
    for metric, what, scale, log in (("trainset_accuracy", "training accuracy (%)", 100.0, False),
                                     ("trainset_loss", "training loss", 1.0, True)):  # fmt: skip
        panels = []
        for fam in (("sgd", "sgd_x2", "midpoint", "heun", "ralston"), ("adam", "adam_rk2")):
            cs = []
            for key, label, _, col in VARIANTS:
                if key in fam:
                    x, y = mean_curve(key, metric)
                    cs.append(Curve(x, scale * y, label, col, dash=key == "sgd_x2"))
            panels.append((f"{'SGD' if fam[0] == 'sgd' else 'Adam'} family", cs))
        figs.append(small_multiples(panels, cols=2, xlabel="gradient evaluations (epochs of SGD)", ylabel=what,
                                    logy=log, vlines=[setup.epochs], width=4.4, height=3.0,
                                    title=f"Fig. 9: {what}, mean of {reps} initialization(s); dotted: SGD's budget"))

    # ---- claims
    def versus(key: str, ref: str) -> tuple[float, float, float, int]:
        pairs = [equal_evals(got[key, k], got[ref, k]) for k in range(reps)]
        m, r = float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs]))
        return m, r, m / r if r > 0 else math.nan, pairs[0][2]

    def acc_at_budget(key: str) -> float:
        vals = []
        for k in range(reps):
            g, a = got[key, k].curve("grad_evals"), got[key, k].curve("trainset_accuracy")
            vals.append(np.interp(setup.epochs * spe, g, a))
        return float(np.mean(vals))

    def claim(key: str, ref: str, beats: bool, statement: str) -> Claim:
        m, r, ratio, n = versus(key, ref)
        label = dict((k, lab) for k, lab, _, _ in VARIANTS)
        fin = float(np.mean([got[key, k].last("trainset_loss") for k in range(reps)]))
        ini = float(np.mean([got[key, k].history[0]["trainset_loss"] for k in range(reps)]))
        early = sum(not got[key, k].completed for k in range(reps))
        note = f" {label[key]} diverged: its training loss ends at {fin:.3g} (start: {ini:.3g})." if fin > ini else ""
        note += f" {early} of its runs stopped early on a non-finite loss." if early else ""
        return Claim(
            statement=statement, paper_value=None, source=f"{SOURCE}, A.4, Fig. 9", measured=ratio,
            held=bool(ratio < 1) if beats else bool(ratio >= 1),
            detail=f"mean training loss over {n} checkpoints of equal gradient evaluations: {label[key]} {m:.4g} vs "
                   f"{label[ref]} {r:.4g} (mean of {reps} init(s)); measured = their ratio, held if "
                   f"{'< 1' if beats else '>= 1'}. Training accuracy at {label[ref]}'s full budget: "
                   f"{100 * acc_at_budget(key):.2f}% vs {100 * acc_at_budget(ref):.2f}%.{note}",
        )

    claims = [
        claim("heun", "sgd", True, "SGD+RK2 with Heun's coefficients outperforms SGD at equal gradient evaluations."),
        claim("ralston", "sgd", True, "SGD+RK2 with Ralston's coefficients outperforms SGD at equal gradient "
                                      "evaluations."),
        claim("midpoint", "sgd", False, "SGD+RK2 with the Midpoint coefficients does not outperform SGD (the "
                                        "exception among the RK2 variants)."),
        claim("adam_rk2", "adam", False, "Adam outperforms Adam+RK2: RK2 does not improve Adam."),
    ]
    return FigureResult(
        caption="Fig. 9: training accuracy (top) and loss (bottom) over the whole training set against gradient "
                "evaluations (an RK2 step counts two), mean over initializations. SGD lr 0.05, SGD x2 lr 0.1, the "
                "RK2 variants lr 0.1 (doubled, Sec. 3.4); Adam 0.001, Adam+RK2 0.002. Scaled down from the paper "
                "(see scaling).",
        panels=[Panel("accuracy", plotly=figs[0][0], mpl=figs[0][1]), Panel("loss", plotly=figs[1][0], mpl=figs[1][1])],
        claims=claims,
        scaling=setup.scaling(reps, initializations=f"{reps}", budget=f"{setup.epochs} epochs for every method "
                              "(RK2 runs spend twice the gradient evaluations; compared where equal)"),
    )


@register_figure("im_fig9", paper="im", title="Im et al. Fig. 9: SGD and Adam with Runge-Kutta (RK2) steps")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return fig9(ImSetup.for_scale(scale, data_dir), cache_dir=cache_dir(out), out=out, progress=progress)
