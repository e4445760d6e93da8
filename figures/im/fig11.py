"""Im, Tao & Branson, Fig. 11 (A.5): NIN from exotic initializations, with and without batch normalization.

The NIN-style net of :mod:`figures.im._setup` trained with SGD (as the paper: "we trained ... with SGD"; lr 0.05, chosen
here: the paper gives no rate) from every convolution weight and bias drawn from N(-10, 0.01) or N(-1, 1) (Swirszcz et
al.'s initializations; BatchNorm's own scale and shift keep 1 and 0: the package's default reading of "initial
parameters"), with and without BatchNorm, plus He's initialization (He et al. 2015, the "very small parameter values"
nets are typically initialized with, A.5) of each as the reference.

Readings (fixed before measuring): "does not train" = final training accuracy below 20% (chance: 10%); "trains"
= at least 50%. "A plateau rather than a bad local minimum" = the training loss around the initialization is flat:
along the training path (init -> final) and along two random directions through the init (each of length 10% of
||theta_0||, 11 points from -1 to 1 times that), it varies by less than 1% of the loss at the init.

Statistics: every run is repeated from ``setup.repetitions_nin`` initialization seeds; per seed the claim's measure
(the better exotic run's training accuracy, the larger flatness, the worse BatchNorm run's accuracy, the best exotic
test accuracy minus He's) is tested against its threshold with a paired t over the seeds. Premises: the
He-initialized reference trains (>= 50% training accuracy) in the same setting, so "does not train" is the
initialization's doing; the plateau claim needs the exotic runs stuck (< 20%); the quality comparison needs the
exotic BatchNorm runs to have trained (>= 50%).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from figures.claims import ClaimBook
from figures.contract import FigureResult, register_figure
from figures.im._setup import GALLERY, Curve, ImRuns, Run, RunSpec, im_figure, multiples_panels
from figures.verdict import at_least, at_most, paired_effect
from landscape.analyze import line
from landscape.evaluate import evaluate_points
from landscape.plot import PALETTE, tint

__all__ = ["INITS", "fig11", "flatness"]

INITS = ((-10.0, 0.01), (-1.0, 1.0), None)  # Im et al. A.5; None = He's initialization (the reference)
_COLORS = {  # (BatchNorm, init) -> a palette colour, lighter without BatchNorm
    (bn, k): PALETTE[i] if bn else tint(PALETTE[i], 0.5) for bn in (True, False) for k, i in enumerate((0, 3, 2))
}


_STYLE = {
    (True, 0): "solid",
    (False, 0): "dash",
    (True, 1): "dot",
    (False, 1): "dashdot",
    (True, 2): "solid",
    (False, 2): "dash",
}
_WIDTH = {0: 4.0, 1: 1.6, 2: 1.6}


def _name(i: int) -> str:
    init = INITS[i]
    return "He init" if init is None else f"N({init[0]:g}, {init[1]:g})"


def flatness(runs: ImRuns, run: Run, seed: int = 0) -> float:
    """Largest relative change of the training loss around a run's initialization (see the module docstring).

    Returns:
        ``max |L(theta) - L(theta_0)| / L(theta_0)`` over the probe points (NaN if a loss is not finite).
    """
    template = run.factory()
    kw = runs.loss_kw(run.spec)
    data = runs.surface_data()
    theta0 = run.init.double()
    gen = torch.Generator().manual_seed(seed)
    ts = np.linspace(-1, 1, 11)
    pts = []
    for _ in range(2):
        d = torch.randn(theta0.shape, generator=gen, dtype=torch.float64)
        d *= 0.1 * theta0.norm() / d.norm()
        pts += [theta0 + t * d for t in ts]
    probe = evaluate_points(template, torch.stack(pts).to(run.init.dtype), data, **kw)["loss"]
    path = line(template, run.init, run.final, data, alphas=np.linspace(0, 1, 11), **kw).metrics["loss"]
    base = float(path[0])
    vals = np.r_[probe, path]
    if not np.isfinite(vals).all() or base <= 0:
        return math.nan
    return float(np.max(np.abs(vals - base)) / base)


@register_figure("im_fig11", title="Im et al. Fig. 11: NIN from exotic initializations, with/without BN", **GALLERY)
@im_figure
def fig11(runs: ImRuns) -> FigureResult:
    """Fig. 11 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup = runs.setup
    bns = (True, False)

    def spec(i: int, bn: bool, k: int = 0) -> RunSpec:
        init = INITS[i]
        if init is None:
            return RunSpec("sgd", init=k, arch="nin", batchnorm=bn, init_scheme="he")
        return RunSpec("sgd", init=k, arch="nin", batchnorm=bn, init_mean=init[0], init_std=init[1])

    reps = setup.repetitions_nin
    every = runs.table({(bn, i, k): spec(i, bn, k) for k in range(reps) for i in range(len(INITS)) for bn in bns})
    got = {(bn, i): every[bn, i, 0] for i in range(len(INITS)) for bn in bns}
    alphas = np.linspace(0, 1, 21)
    lines = runs.init_final_losses(got, alphas, "fig 11 lines")

    def lab(bn: bool, i: int) -> str:
        return f"{_name(i)}, {'with' if bn else 'no'} BN"

    curves = []
    for metric, what, sc in (
        ("trainset_loss", "training loss", 1.0),
        ("trainset_accuracy", "training accuracy (%)", 100.0),
    ):
        # N(-10, 0.01) and N(-1, 1) trace the same flat line when neither trains: the first is drawn wide and
        # underneath, the second narrow and dotted on top, so both stay visible
        curves.append(
            (
                what,
                [
                    Curve(
                        np.arange(len(r.history)),
                        sc * r.curve(metric),
                        lab(bn, i),
                        _COLORS[bn, i],
                        dash=_STYLE[bn, i],
                        width=_WIDTH[i],
                    )
                    for (bn, i), r in got.items()
                ],
            )
        )
    (ft,) = multiples_panels(
        [("training", curves, "epoch", "", "Fig. 11(a): NIN trained with SGD from exotic and He initializations")],
        cols=2,
        width=4.4,
        height=3.2,
        sharey=False,
    )
    by_init = [
        (_name(i), [Curve(alphas, lines[bn, i], lab(bn, i), _COLORS[bn, i], dash=_STYLE[bn, i]) for bn in bns])
        for i in range(len(INITS))
    ]
    (fl,) = multiples_panels(
        [
            (
                "init_final",
                by_init,
                "alpha (0: init, 1: final)",
                "training loss",
                "Fig. 11(b): loss from the initial to the final weights",
            )
        ],
        cols=3,
        logy=True,
    )

    exotic = range(len(INITS) - 1)
    ref = len(INITS) - 1
    acc = {key: r.last("trainset_accuracy") for key, r in every.items()}
    test = {key: r.last("test_accuracy") for key, r in every.items()}
    flat = {(i, k): flatness(runs, every[False, i, k]) for i in exotic for k in range(reps)}
    stopped = [f"{lab(bn, i)} seed {k}" for (bn, i, k), r in every.items() if not r.completed]
    note = f" Runs stopped early by a non-finite loss: {', '.join(stopped)}." if stopped else ""
    accs = "; ".join(
        f"{lab(bn, i)}: train "
        + "/".join(f"{100 * acc[bn, i, k]:.1f}" for k in range(reps))
        + "%, test "
        + "/".join(f"{100 * test[bn, i, k]:.1f}" for k in range(reps))
        + "%"
        for bn in bns
        for i in range(len(INITS))
    )
    ks = range(reps)
    no_bn = [max(acc[False, i, k] for i in exotic) for k in ks]
    fl_vals = [max(flat[i, k] for i in exotic) for k in ks]
    with_bn = [min(acc[True, i, k] for i in exotic) for k in ks]
    gap = [100 * (max(test[True, i, k] for i in exotic) - test[True, ref, k]) for k in ks]
    he_nobn = at_least(
        "the He-initialized NIN without BatchNorm trains",
        [acc[False, ref, k] for k in ks],
        0.5,
        detail="its final training accuracy per seed; at least 50%",
    )
    he_bn = at_least(
        "the He-initialized NIN with BatchNorm trains",
        [acc[True, ref, k] for k in ks],
        0.5,
        detail="its final training accuracy per seed; at least 50%",
    )
    stuck = at_most(
        "the exotic runs without BatchNorm are stuck",
        no_bn,
        0.2,
        detail="the better exotic run's final training accuracy per seed; below 20%",
    )
    trained = at_least(
        "the exotic runs with BatchNorm trained",
        with_bn,
        0.5,
        detail="the worse exotic BatchNorm run's final training accuracy per seed; at least 50%",
    )
    e1 = paired_effect(no_bn, 0.2)
    e2 = paired_effect(fl_vals, 0.01) if np.isfinite(fl_vals).all() else None
    e3 = paired_effect(with_bn, 0.5)
    e4 = paired_effect(gap, 0.0)
    book = ClaimBook("im_fig11", scale=setup.name)
    claims = [
        book("no-bn-does-not-train", no_bn, e1, premises=[he_nobn], reps=reps, accuracies=accs, stopped=note),
        book(
            "plateau-not-minimum",
            fl_vals,
            e2,
            premises=[stuck],
            reps=reps,
            per_run=", ".join(f"{_name(i)} seed {k} {flat[i, k]:.3g}" for i in exotic for k in ks),
        ),
        book("bn-trains", with_bn, e3, premises=[he_bn], reps=reps, accuracies=accs),
        book("exotic-minimum-worse", gap, e4, premises=[trained], reps=reps),
    ]
    return FigureResult(
        caption="Fig. 11: the NIN-style net trained with SGD from every convolution weight and bias drawn from "
        "N(-10, 0.01) (blue) or N(-1, 1) (red), and from He's initialization (green), with BatchNorm "
        "(solid) and without (dashed, light). (a) training loss and accuracy per epoch; (b) training loss from "
        "the initial to the final weights. " + setup.scale_note,
        panels=[ft, fl],
        claims=claims,
        scaling=setup.scaling(
            setup.repetitions_nin,
            arch="nin",
            optimizer="SGD lr 0.05",
            initializations="N(-10, 0.01), N(-1, 1) on conv weights and biases; He (reference)",
        ),
    )
