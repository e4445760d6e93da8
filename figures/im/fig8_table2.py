"""Im, Tao & Branson, Fig. 8 and Table 2: minima with and without batch normalization.

The VGG-style net with and without BatchNorm, every method from ``setup.repetitions_nobn`` initializations (the
same seeds, so the convolution weights start equal), runs from :mod:`figures.im._setup`. Top: the loss along
init -> final per method; bottom (Table 2 / Fig. 8 bottom): the loss between the finals of every pair of methods,
per initialization, with and without BatchNorm.

Readings (fixed before measuring): the dependence of the minimum's quality on the initialization is the spread
(max - min) of a method's test accuracy over the initializations, averaged over methods. A path between two
minima is unimodal when it has at most one interior local maximum of prominence >= 2% of the path's loss range
(``scipy.signal.find_peaks``); its barrier width is the fraction of the path whose loss lies above halfway between
the larger endpoint loss and the peak.

Learning rates without BatchNorm: the methods' default rates (:func:`landscape.train.default_hyperparameters`) suit the
BatchNorm net, and the BatchNorm runs keep them (every Im figure shares those runs). Without BatchNorm SGD and SGD+RK2
never left chance at them (medium scale: test accuracy 9.7% in every initialization), so the runs did not reach the
minima the claims compare. The paper chose its rates from a grid (Sec. 3.4: SGD [0.2, 0.1, 0.05, 0.01], adaptive methods
[0.002, 0.001, 0.0005, 0.0001], doubled for RK2; Adadelta has no rate and keeps its own; it does not say how, nor
whether per setting), so the runs without BatchNorm choose from it too, by a rule fixed before looking at the claims
(:func:`pick_rate`): one pilot per grid rate from the first initialization's seed, ``PILOT_FRACTION`` of the run's
epochs (its own learning-rate schedule over that length), read on the training data only: the rate with the lowest final
loss over the whole training set, a diverged pilot (stopped on a non-finite loss, or ending above its initial loss)
excluded, a tie (or no pilot left) going to the method's default rate. Test accuracy and the claims' statistics play no
part. The chosen rates and every pilot's loss are in the claims' detail and the scaling record.

Statistics (fixed before measuring): the init-dependence claim pairs the 7 methods (spread over the same
``repetitions_nobn`` initialization seeds with and without BatchNorm; paired t of the spreads). The shape claims pair
the initializations (share of unimodal paths, mean barrier width, per init; paired t). Premises: the runs converged, and
the shape claims need barriers to have a shape: at least half of the final -> final paths rise sharply (rise score >= 1,
the gallery's test of its Table 1 figure) in both settings; without a barrier "wide" and "bumpy" describe noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.signal import find_peaks
from tqdm.auto import tqdm

from figures.claims import ClaimBook
from figures.contract import FigureResult, register_figure
from figures.im._measures import converged_premise, rise_score
from figures.im._setup import GALLERY, Curve, ImRuns, Run, RunSpec, color, im_figure, init_dash, multiples_panels
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import at_least, paired_effect
from landscape.train import METHODS, default_hyperparameters

__all__ = ["LR_GRIDS", "PILOT_FRACTION", "barrier_width", "fig8_table2", "n_bumps", "pick_rate", "pilot_loss"]

_SGD_GRID = (0.2, 0.1, 0.05, 0.01)  # Im et al. Sec. 3.4, SGD
_ADAPTIVE_GRID = (0.002, 0.001, 0.0005, 0.0001)  # Sec. 3.4, adaptive learning methods
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "sgd": _SGD_GRID,
    "momentum": _SGD_GRID,
    "rmsprop": _ADAPTIVE_GRID,
    "adam": _ADAPTIVE_GRID,
    "sgd_rk2": tuple(2 * x for x in _SGD_GRID),  # "We doubled the learning rates ... with Runge-Kutta"
    "adam_rk2": tuple(2 * x for x in _ADAPTIVE_GRID),
}
"""The paper's learning-rate grid per method (Sec. 3.4), searched without BatchNorm; Adadelta (no rate) is absent."""
PILOT_FRACTION = 0.5
"""Fraction of the run's epochs a learning-rate pilot trains (its schedule spans its own length)."""


def n_bumps(z: np.ndarray, rel_prominence: float = 0.02) -> int:
    """Interior local maxima of a path's loss with prominence >= ``rel_prominence`` of its range (NaN path: -1)."""
    z = np.asarray(z, np.float64)
    if not np.isfinite(z).all():
        return -1
    span = float(z.max() - z.min())
    if span == 0:
        return 0
    return len(find_peaks(z, prominence=rel_prominence * span)[0])


def barrier_width(z: np.ndarray) -> float:
    """Fraction of a path whose loss lies above halfway between the larger endpoint loss and the peak (0: no rise)."""
    z = np.asarray(z, np.float64)
    end, peak = max(z[0], z[-1]), z.max()
    if not np.isfinite(z).all() or peak <= end:
        return 0.0
    return float(np.mean(z > end + 0.5 * (peak - end)))


def pilot_loss(run: Run) -> float:
    """Final loss of a pilot over the whole training set (eval mode); ``inf`` if it diverged.

    Diverged: training stopped on a non-finite loss, or the final loss is not finite or above the initial one.
    """
    c = run.curve("trainset_loss")
    if not run.completed or not np.isfinite(c[-1]) or not c[-1] <= c[0]:
        return math.inf
    return float(c[-1])


def pick_rate(losses: Mapping[float, float], default: float) -> float:
    """The learning rate whose pilot ended at the lowest training loss (the selection rule of the module docstring).

    Args:
        losses: ``{rate: final training loss of its pilot}``; a diverged pilot is ``inf`` (or NaN) and never chosen.
        default: The method's default rate: chosen on a tie, and when every pilot diverged.
    """
    finite = {lr: v for lr, v in losses.items() if math.isfinite(v)}
    if not finite:
        return default
    best = min(finite.values())
    tied = [lr for lr, v in finite.items() if v == best]
    return default if any(math.isclose(lr, default) for lr in tied) else tied[0]


def _rate_spec(method: str, lr: float, **kw: Any) -> RunSpec:
    """A run of ``method`` at rate ``lr``; the default rate is left out, so the run keeps its cache key."""
    same = math.isclose(lr, default_hyperparameters(method)["lr"])
    return RunSpec(method, hyper={} if same else {"lr": lr}, **kw)


def _nobn_rates(runs: ImRuns) -> tuple[dict[str, float], str]:
    """Each method's rate without BatchNorm, by pilots on the paper's grid (module docstring).

    Returns:
        ``{method: chosen rate}`` (methods without a grid keep their default) and the choice in words: the rates,
        the pilots' length and every pilot's final training loss.
    """
    epochs = max(1, round(runs.setup.epochs * PILOT_FRACTION))
    pilots = runs.table(
        {
            (m, lr): _rate_spec(m, lr, init=0, batchnorm=False, epochs=epochs)
            for m, grid in LR_GRIDS.items()
            for lr in grid
        }
    )
    losses = {m: {lr: pilot_loss(pilots[m, lr]) for lr in grid} for m, grid in LR_GRIDS.items()}
    rates = {m: default_hyperparameters(m)["lr"] for m in METHODS}
    rates.update({m: pick_rate(losses[m], rates[m]) for m in LR_GRIDS})
    tried = "; ".join(
        f"{LABELS[m]} " + ", ".join(f"{lr:g} -> {v:.3g}" for lr, v in ls.items()) for m, ls in losses.items()
    )
    words = (
        ", ".join(f"{LABELS[m]} {rates[m]:g}" for m in METHODS)
        + f" (pilots from init 0, {epochs} of {runs.setup.epochs} epochs; final training loss per rate: {tried}; "
        "inf = diverged)"
    )
    return rates, words


@register_figure("im_fig8_table2", title="Im et al. Fig. 8 / Table 2: minima with and without BatchNorm", **GALLERY)
@im_figure
def fig8_table2(runs: ImRuns) -> FigureResult:
    """Fig. 8 and Table 2 from the runs of one setting (signature: :func:`~figures.im._runs.im_figure`)."""
    setup, progress = runs.setup, runs.progress
    reps = setup.repetitions_nobn
    bns = (True, False)
    rates, rates_txt = _nobn_rates(runs)
    grid = runs.table(
        {
            (bn, m, k): RunSpec(m, init=k, batchnorm=True) if bn else _rate_spec(m, rates[m], init=k, batchnorm=False)
            for bn in bns
            for k in range(reps)
            for m in METHODS
        }
    )
    alphas = np.linspace(0, 1, 21)
    templates = {bn: setup.model(RunSpec(batchnorm=bn)) for bn in bns}
    kws = {bn: runs.loss_kw(RunSpec(batchnorm=bn)) for bn in bns}

    init_final = runs.init_final_losses(grid, alphas, "fig 8 init-final")
    final_final = {}
    pairs = list(itertools.combinations(METHODS, 2))
    for bn, k in tqdm(
        list(itertools.product(bns, range(reps))), desc="fig 8 final-final", disable=not progress, leave=False
    ):
        for a, b in pairs:
            final_final[bn, k, a, b] = runs.line_losses(
                templates[bn], grid[bn, a, k].final, grid[bn, b, k].final, alphas, **kws[bn]
            )

    top = [
        (
            LABELS[m],
            [
                Curve(
                    alphas,
                    init_final[bn, m, k],
                    f"{'with' if bn else 'without'} BN, init {k}",
                    color(m) if bn else "#222",
                    init_dash(k),
                    1.5 if bn else 1.2,
                )
                for bn in bns
                for k in range(reps)
            ],
        )
        for m in METHODS
    ]
    (ft,) = multiples_panels(
        [
            (
                "init_final",
                top,
                "alpha (init 0 -> final 1)",
                "training loss",
                "Fig. 8 (top): loss from the initial to the final weights, with (colour) and without (black) BatchNorm",
            )
        ],
        cols=4,
        logy=True,
    )
    cmap = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    bottom = []
    for bn in bns:
        for k in range(reps):
            cs = [
                Curve(alphas, final_final[bn, k, a, b], f"{LABELS[a]}-{LABELS[b]}", cmap[i % len(cmap)], i >= 10, 1.0)
                for i, (a, b) in enumerate(pairs)
            ]
            bottom.append((f"{'with' if bn else 'without'} BatchNorm, init {k}", cs))
    (fb,) = multiples_panels(
        [
            (
                "final_final",
                bottom,
                "alpha (final of the first method -> of the second)",
                "training loss",
                "Table 2 / Fig. 8 (bottom): loss between the finals of every pair of methods",
            )
        ],
        cols=reps,
        logy=True,
        width=4.2,
        height=3.0,
    )

    # ---- claims
    test = {key: r.last("test_accuracy") for key, r in grid.items()}
    spread_m = {
        bn: [
            100 * (max(test[bn, m, k] for k in range(reps)) - min(test[bn, m, k] for k in range(reps))) for m in METHODS
        ]
        for bn in bns
    }
    spread = {bn: float(np.mean(spread_m[bn])) for bn in bns}
    eff1 = paired_effect(spread_m[False], spread_m[True])
    uni_k = {
        bn: [float(np.mean([0 <= n_bumps(final_final[bn, k, a, b]) <= 1 for a, b in pairs])) for k in range(reps)]
        for bn in bns
    }
    wid_k = {
        bn: [float(np.mean([barrier_width(final_final[bn, k, a, b]) for a, b in pairs])) for k in range(reps)]
        for bn in bns
    }
    rising = {bn: float(np.mean([rise_score(z) >= 1 for (b, *_), z in final_final.items() if b == bn])) for bn in bns}
    eff2 = paired_effect(uni_k[True], uni_k[False])
    eff3 = paired_effect(wid_k[False], wid_k[True])
    conv = converged_premise(list(grid.values()), runs.surface_data())
    barriers = at_least(
        "the paths between minima have barriers (in both settings)",
        [rising[False], rising[True]],
        0.5,
        detail="share of final -> final paths that rise sharply (rise score >= 1), without and "
        "with BatchNorm; at least half",
    )
    acc_tab = "; ".join(
        f"{'BN' if bn else 'no BN'}: "
        + ", ".join(f"{LABELS[m]} " + "/".join(f"{100 * test[bn, m, k]:.1f}" for k in range(reps)) for m in METHODS)
        for bn in bns
    )
    untestable = "needs at least 2 initializations. " if reps < 2 else ""
    book = ClaimBook("im_fig8_table2", scale=setup.name)
    claims = [
        book(
            "init-matters-without-bn",
            spread_m[False],
            eff1,
            premises=[conv],
            verdict="not tested" if reps < 2 else None,
            untestable=untestable,
            reps=reps,
            without=spread[False],
            with_bn=spread[True],
            accuracies=acc_tab,
            rates=rates_txt,
        ),
        book("unimodal-with-bn", uni_k[False], eff2, premises=[conv, barriers], with_bn=uni_k[True], reps=reps),
        book("wide-barriers-without-bn", wid_k[False], eff3, premises=[conv, barriers], with_bn=wid_k[True], reps=reps),
    ]
    return FigureResult(
        caption="Fig. 8 / Table 2: the VGG-style net trained by every method with BatchNorm (colours) and without "
        "(black), from the same initialization seeds (line styles). Top: training loss from the initial to "
        "the final weights. Bottom: training loss between the final weights of every pair of methods, one "
        "panel per initialization and BatchNorm setting. " + setup.scale_note,
        panels=[ft, fb],
        claims=claims,
        scaling=setup.scaling(
            reps,
            initializations=f"{reps} per method and BatchNorm setting",
            batchnorm="with and without (same seeds)",
            learning_rates_without_bn="chosen per method from the paper's grid (Sec. 3.4, doubled for RK2; Adadelta "
            f"keeps its own) by the lowest final training loss of a pilot per rate: {rates_txt}",
        ),
    )
