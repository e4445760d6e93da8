"""Im, Tao & Branson, Fig. 9 (A.4): SGD and Adam augmented with second-order Runge-Kutta.

SGD, SGD+RK2 with the Midpoint, Heun and Ralston coefficients, Adam and Adam+RK2 (Heun), runs from
:mod:`figures.im._setup`, compared at equal gradient evaluations: an RK2 step costs two, so RK2 runs train for
half the epochs (the learning-rate schedule spans each run's own length).

Each variant gets a small learning-rate grid: the top three rates of the paper's (Sec. 3.4: SGD {0.2, 0.1, 0.05} of
[0.2, 0.1, 0.05, 0.01], adaptive {0.002, 0.001, 0.0005} of [0.002, 0.001, 0.0005, 0.0001]; RK2 doubled, as the paper
does), is trained at every rate from init 0, and is compared at its best rate (lowest final training loss at the
shared budget; a diverged run is never best) on the other ``setup.repetitions_fig9`` initializations, so the choice
of rate and the comparison use different runs. A first grid without SGD's 0.2 (SGD {0.1, 0.05, 0.01}) put every
variant's best rate at its top edge (SGD 0.1 -> final loss 0.0052, 0.05 -> 0.024, 0.01 -> 0.65; likewise for the
RK2 variants), i.e. not at its best rate in the paper's grid; the lowest rate was the worst everywhere and went
for time. A premise checks that the chosen rate is inside the grid or at the paper's own top rate.

Reading of A.4's "stochastic Runge-Kutta methods outperform SGD" and "the Runge-Kutta methods perform even better with
half the number of gradient computed by SGD" as "outperform at equal gradient evaluations" (the gallery's wording; fixed
before measuring): a lower final training loss (the loss on the surface images, BatchNorm with batch statistics) after
the same number of gradient evaluations; the claims test the log loss ratio per initialization with a paired t.
Premise: no run at the chosen rates diverged.

"Midpoint does not outperform SGD" (A.4: "with the exception of the Midpoint method, stochastic Runge-Kutta methods
outperform SGD") is a claim of absence, so it is a non-superiority test: the effect is the Midpoint's advantage, the
mean log(SGD's final loss / Midpoint's) over the initializations (paired t), and the claim is held if its 95% interval
lies below log(1.1) (Midpoint's loss is not lower than SGD's by 10% or more; the margin is the gallery's, the paper
gives none), not held if the interval lies above it, inconclusive otherwise. Until 2026-12-07 it was held only when SGD
was significantly better (a superiority test the other way), which a Midpoint equal to SGD would have failed (left
inconclusive) though it does not outperform SGD. The margin was set knowing the old runs' ratios (SGD's loss
6.4-11.4x lower at quick, 3.2-3.8x at medium), which lie far from it: any margin from 0 to a 3x advantage gives the
same verdicts there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, register_figure
from figures.im._setup import GALLERY, Curve, ImRuns, ImSetup, Run, RunSpec, im_figure, mpl_grid, small_multiples
from figures.verdict import at_most, non_superiority_verdict, paired_effect
from landscape.train import default_hyperparameters

__all__ = ["GRIDS", "VARIANTS", "equal_evals", "fig9"]

# (key, label, method, RK2 coefficients or None, colour): Im et al. A.4, Fig. 9
VARIANTS = (
    ("sgd", "SGD", "sgd", None, "#1f77b4"),
    ("midpoint", "SGD+RK2 Midpoint", "sgd_rk2", "midpoint", "#9467bd"),
    ("heun", "SGD+RK2 Heun", "sgd_rk2", "heun", "#2ca02c"),
    ("ralston", "SGD+RK2 Ralston", "sgd_rk2", "ralston", "#bcbd22"),
    ("adam", "Adam", "adam", None, "#d62728"),
    ("adam_rk2", "Adam+RK2 Heun", "adam_rk2", "heun", "#ff7f0e"),
)
NOT_BETTER_MARGIN = 1.1  # "Midpoint does not outperform SGD": SGD's final loss / Midpoint's below 1.1 (the gallery's)
_SGD_GRID = (0.2, 0.1, 0.05)
_ADAPTIVE_GRID = (0.002, 0.001, 0.0005)
GRIDS = {
    "sgd": _SGD_GRID,
    "sgd_rk2": tuple(2 * x for x in _SGD_GRID),
    "adam": _ADAPTIVE_GRID,
    "adam_rk2": tuple(2 * x for x in _ADAPTIVE_GRID),
}


def _spec(setup: ImSetup, method: str, coef: str | None, lr: float, init: int) -> RunSpec:
    """A Fig. 9 run; hyperparameters equal to the defaults are left out, so runs are shared with the pool."""
    hyper = {}
    d = default_hyperparameters(method)
    if not math.isclose(lr, d["lr"]):
        hyper["lr"] = lr
    if coef is not None and coef != d.get("method"):
        hyper["method"] = coef
    rk2 = method.endswith("_rk2")
    return RunSpec(method, init=init, hyper=hyper, epochs=max(1, setup.epochs // 2) if rk2 else None)


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


def _final(r: Run) -> float:
    """Final training loss of a run; ``inf`` if it diverged (stopped early or ended above its start)."""
    c = r.curve("surface_loss")
    if not r.completed or not np.isfinite(c[-1]) or c[-1] >= c[0]:
        return math.inf
    return float(c[-1])


@register_figure("im_fig9", title="Im et al. Fig. 9: SGD and Adam with Runge-Kutta (RK2) steps", **GALLERY)
@im_figure
def fig9(runs: ImRuns) -> FigureResult:
    """Fig. 9 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup = runs.setup
    reps = setup.repetitions_fig9
    spe = setup.steps_per_epoch()
    label = {key: lab for key, lab, *_ in VARIANTS}
    # ---- the grid on init 0
    grid_runs = runs.table(
        {(key, lr): _spec(setup, m, coef, lr, 0) for key, _, m, coef, _ in VARIANTS for lr in GRIDS[m]}
    )
    best = {}
    for key, _, m, _, _ in VARIANTS:
        losses = {lr: _final(grid_runs[key, lr]) for lr in GRIDS[m]}
        best[key] = min(losses, key=lambda lr: losses[lr])
    # ---- the comparison on inits 1..reps at each variant's best rate
    got = runs.table(
        {(key, k): _spec(setup, m, coef, best[key], k) for key, _, m, coef, _ in VARIANTS for k in range(1, reps + 1)}
    )
    fin = {key: [_final(got[key, k]) for k in range(1, reps + 1)] for key, *_ in VARIANTS}

    def mean_curve(key: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        rs = [got[key, k] for k in range(1, reps + 1)]
        n = min(len(r.history) for r in rs)
        x = rs[0].curve("grad_evals")[:n] / spe
        return x, np.mean([r.curve(metric)[:n] for r in rs], axis=0)

    figs = []
    for metric, what, scale, log in (
        ("trainset_accuracy", "training accuracy (%)", 100.0, False),
        ("surface_loss", "training loss", 1.0, True),
    ):
        panels = []
        for fam in (("sgd", "midpoint", "heun", "ralston"), ("adam", "adam_rk2")):
            cs = []
            for key, lab, _, _, col in VARIANTS:
                if key in fam:
                    x, y = mean_curve(key, metric)
                    cs.append(Curve(x, scale * y, f"{lab} lr {best[key]:g}", col))
            panels.append((f"{'SGD' if fam[0] == 'sgd' else 'Adam'} family", cs))
        figs.append(
            small_multiples(
                panels,
                cols=2,
                xlabel="gradient evaluations (epochs of SGD)",
                ylabel=what,
                logy=log,
                width=4.4,
                height=3.0,
                title=f"Fig. 9: {what} at each variant's best rate, mean of inits 1-{reps}",
            )
        )

    # learning-rate grid panel (init 0)
    import plotly.graph_objects as go

    gfig = go.Figure()
    mg, axes = mpl_grid(1, 1, 5.0, 3.4)
    ax = axes[0, 0]
    for key, lab, m, _, col in VARIANTS:
        lrs = np.array(GRIDS[m]) / (2 if m.endswith("_rk2") else 1)
        ys = [grid_runs[key, lr].curve("surface_loss")[-1] for lr in GRIDS[m]]
        gfig.add_trace(go.Scatter(x=lrs, y=ys, mode="lines+markers", name=lab, line={"color": col}))
        ax.plot(lrs, ys, "o-", color=col, label=lab, ms=3)
    gfig.update_xaxes(type="log", title="base learning rate (RK2 runs at twice this)")
    gfig.update_yaxes(type="log", title="final training loss")
    gfig.update_layout(template="plotly_white", title="Fig. 9: learning-rate grid, init 0 (picks each best rate)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("base learning rate (RK2 runs at twice this)", fontsize=8)
    ax.set_ylabel("final training loss", fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    mg.suptitle("Fig. 9: learning-rate grid on init 0 (each variant compared at its best rate)", fontsize=9)

    # ---- claims
    top = {"sgd": 0.2, "sgd_rk2": 0.4, "adam": 0.002, "adam_rk2": 0.004}  # the paper's highest rates (RK2 doubled)
    method_of = {key: m for key, _, m, _, _ in VARIANTS}

    def inside(keys: tuple[str, ...]) -> object:
        edge = [
            float(best[k] >= max(GRIDS[method_of[k]]) and not math.isclose(best[k], top[method_of[k]])) for k in keys
        ]
        return at_most(
            "each variant is compared at its best rate in the paper's grid",
            edge,
            0,
            detail="1 where the chosen rate is the top of the grid tried and below the paper's top rate "
            f"(a higher rate might do better): {', '.join(f'{label[k]} {best[k]:g}' for k in keys)}",
        )

    def diverged(keys: tuple[str, ...]) -> object:
        n = sum(not np.isfinite(v) for key in keys for v in fin[key])
        return at_most(
            "no run at the chosen rates diverged",
            n,
            0,
            detail=f"runs of {', '.join(label[k] for k in keys)} (inits 1-{reps}) that stopped on a "
            "non-finite loss or ended above their initial loss",
        )

    grid_txt = "; ".join(
        f"{label[key]}: " + ", ".join(f"{lr:g} -> {_final(grid_runs[key, lr]):.3g}" for lr in GRIDS[m])
        for key, _, m, _, _ in VARIANTS
    )

    def versus(key: str, ref: str) -> dict[str, Any]:
        """What a claim of variant ``key`` against ``ref`` at equal gradient evaluations is decided on."""
        a, b = np.array(fin[key]), np.array(fin[ref])
        ok = np.isfinite(a) & np.isfinite(b)
        d = np.log(b[ok]) - np.log(a[ok])  # > 0: `key` reaches the lower loss
        eff = paired_effect(d, 0.0) if d.size else None
        return {
            "measured": [float(x) for x in np.exp(-d)] if d.size else [math.nan],
            "effect": eff,
            "premises": [diverged((key, ref)), inside((key, ref))],
            "lr": best[key],
            "ref_lr": best[ref],
            "epochs": setup.epochs,
            "inits": int(ok.sum()),
            "grid": grid_txt,
        }

    # "with the exception of the Midpoint method, ... outperform SGD": a claim of absence, so a non-superiority test
    # (Midpoint is not better than SGD by more than the margin), not "SGD is significantly better"
    midpoint_vs_sgd = versus("midpoint", "sgd")
    midpoint_vs_sgd.update(
        verdict=non_superiority_verdict(midpoint_vs_sgd["effect"], math.log(NOT_BETTER_MARGIN))
        if midpoint_vs_sgd["effect"] is not None
        else "not tested",
        margin=NOT_BETTER_MARGIN - 1,
    )
    book = ClaimBook("im_fig9", scale=setup.name)
    claims = [
        book("heun-beats-sgd", **versus("heun", "sgd")),
        book("ralston-beats-sgd", **versus("ralston", "sgd")),
        book("midpoint-does-not-beat-sgd", **midpoint_vs_sgd),
        book("adam-beats-adam-rk2", **versus("adam_rk2", "adam")),
    ]
    return FigureResult(
        caption="Fig. 9: training accuracy (top) and loss (bottom) against gradient evaluations (an RK2 step counts "
        "two, so RK2 runs train half the epochs), each variant at its best rate of a 3-point grid chosen on "
        "init 0 (last panel), mean over the other initializations. " + setup.scale_note,
        panels=[
            Panel("accuracy", plotly=figs[0][0], mpl=figs[0][1]),
            Panel("loss", plotly=figs[1][0], mpl=figs[1][1]),
            Panel("lr_grid", plotly=gfig, mpl=mg),
        ],
        claims=claims,
        scaling=setup.scaling(
            reps,
            initializations=f"rate chosen on init 0; compared on inits 1-{reps}",
            budget=f"{setup.epochs} epochs of SGD's gradient evaluations for every variant (RK2: "
            f"{max(1, setup.epochs // 2)} epochs)",
            learning_rate_grid="; ".join(f"{m}: {list(g)}" for m, g in GRIDS.items()),
        ),
    )
