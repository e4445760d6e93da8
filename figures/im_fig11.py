"""Im, Tao & Branson, Fig. 11 (A.5): NIN from exotic initializations, with and without batch normalization.

The NIN-style net of :mod:`figures._im_common` trained with SGD (lr 0.05, as the paper: "we trained ... with
SGD") from every convolution weight and bias drawn from N(-10, 0.01) or N(-1, 1) (Swirszcz et al.'s
initializations; BatchNorm's own scale and shift keep 1 and 0: the package's default reading of "initial
parameters"), with and without BatchNorm, plus He's initialization (He et al. 2015, the "very small parameter
values" nets are typically initialized with, A.5) of each as the reference.

Readings (fixed before measuring): "does not train" = final training accuracy below 20% (chance: 10%); "trains"
= at least 50%. "A plateau rather than a bad local minimum" = the training loss around the initialization is flat:
along the training path (init -> final) and along two random directions through the init (each of length 10% of
||theta_0||, 11 points from -1 to 1 times that), it varies by less than 1% of the loss at the init.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from figures._im_common import SOURCE, Curve, ImRuns, ImSetup, Run, RunSpec, cache_dir, single_threaded, small_multiples
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure
from landscape.evaluate import evaluate_points
from landscape.surface import line

__all__ = ["INITS", "fig11", "flatness"]

INITS = ((-10.0, 0.01), (-1.0, 1.0), None)  # Im et al. A.5; None = He's initialization (the reference)
_COLORS = {(True, 0): "#1f77b4", (False, 0): "#9ecae1", (True, 1): "#d62728", (False, 1): "#fc9272",
           (True, 2): "#2ca02c", (False, 2): "#a1d99b"}  # fmt: skip


def _name(i: int) -> str:
    init = INITS[i]
    return "He init" if init is None else f"N({init[0]:g}, {init[1]:g})"


def flatness(runs: ImRuns, run: Run, seed: int = 0) -> float:
    """Largest relative change of the training loss around a run's initialization (see the module docstring).

    Returns:
        ``max |L(theta) - L(theta_0)| / L(theta_0)`` over the probe points (NaN if a loss is not finite).
    """
    template = run.factory()
    kw = {**runs.eval_kw(run.spec), "metrics": ("loss",)}
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


@single_threaded
def fig11(setup: ImSetup, *, cache_dir: Path | str | None = None, out: Path | None = None,
          progress: bool = False) -> FigureResult:
    """Compute and draw Fig. 11 (see the module docstring).

    Args:
        setup: Scale of the experiment.
        cache_dir: Cache of the shared runs (``None``: in memory).
        out: Unused (the figure writes no extra files).
        progress: Show progress bars.

    Returns:
        The figure with its claims.
    """
    runs = ImRuns(setup, cache_dir, progress)
    bns = (True, False)

    def spec(i: int, bn: bool) -> RunSpec:
        init = INITS[i]
        if init is None:
            return RunSpec("sgd", arch="nin", batchnorm=bn, init_scheme="he")
        return RunSpec("sgd", arch="nin", batchnorm=bn, init_mean=init[0], init_std=init[1])

    got = {(bn, i): runs.get(spec(i, bn)) for i in range(len(INITS)) for bn in bns}
    alphas = np.linspace(0, 1, 21)
    data = runs.surface_data()
    lines = {}
    for (bn, i), r in got.items():
        lines[bn, i] = line(r.factory(), r.init, r.final, data, alphas=alphas, metrics=("loss",),
                            **runs.eval_kw(r.spec)).metrics["loss"]  # fmt: skip

    def lab(bn: bool, i: int) -> str:
        return f"{_name(i)}, {'with' if bn else 'no'} BN"

    curves = []
    for metric, what, sc in (("trainset_loss", "training loss", 1.0), ("trainset_accuracy", "training accuracy (%)",
                                                                        100.0)):  # fmt: skip
        curves.append((what, [Curve(np.arange(len(r.history)), sc * r.curve(metric), lab(bn, i), _COLORS[bn, i],
                                    dash=not bn) for (bn, i), r in got.items()]))  # fmt: skip
    ft = small_multiples(curves, cols=2, xlabel="epoch", ylabel="", width=4.4, height=3.2, sharey=False,
                         title="Fig. 11(a): NIN trained with SGD from exotic and He initializations")
    fl = small_multiples([(_name(i), [Curve(alphas, lines[bn, i], lab(bn, i), _COLORS[bn, i], dash=not bn)
                                      for bn in bns]) for i in range(len(INITS))], cols=3,
                         xlabel="alpha (0: init, 1: final)", ylabel="training loss", logy=True,
                         title="Fig. 11(b): loss from the initial to the final weights")  # fmt: skip

    exotic = range(len(INITS) - 1)
    ref = len(INITS) - 1
    acc = {key: r.last("trainset_accuracy") for key, r in got.items()}
    test = {key: r.last("test_accuracy") for key, r in got.items()}
    flat = {i: flatness(runs, got[False, i]) for i in exotic}
    stopped = [lab(bn, i) for (bn, i), r in got.items() if not r.completed]
    note = f" Runs stopped early by a non-finite loss: {', '.join(stopped)}." if stopped else ""
    accs = "; ".join(f"{lab(bn, i)}: train {100 * acc[bn, i]:.1f}%, test {100 * test[bn, i]:.1f}%"
                     for (bn, i) in got)  # fmt: skip
    no_bn = [acc[False, i] for i in exotic]
    with_bn = [acc[True, i] for i in exotic]
    fl_vals = [flat[i] for i in exotic]
    best_exotic = max(test[True, i] for i in exotic)
    claims = [
        Claim(
            statement="Without batch normalization, NIN does not train at all from N(-10, 0.01) or N(-1, 1) "
                      "initializations.",
            paper_value=None, source=f"{SOURCE}, A.5, Fig. 11", measured=float(np.nanmax(no_bn)),
            held=bool(all(a < 0.2 for a in no_bn)),
            detail=f"measured = the higher final training accuracy of the two runs; held if both stay below 20% "
                   f"(chance 10%). The He-initialized NIN without BatchNorm reaches "
                   f"{100 * acc[False, ref]:.1f}%. {accs}.{note}",
        ),
        Claim(
            statement="Around these initializations the loss surface is a plateau rather than a bad local minimum.",
            paper_value=None, source=f"{SOURCE}, A.5, Fig. 11(b)",
            measured=float(np.nanmax(fl_vals)) if np.isfinite(fl_vals).any() else math.nan,
            held=bool(all(np.isfinite(v) and v < 0.01 for v in fl_vals)),
            detail="largest relative change of the training loss around the initialization (training path and two "
                   "random directions of 10% of ||theta_0||), nets without BatchNorm: "
                   + ", ".join(f"{_name(i)} {flat[i]:.3g}" for i in exotic) + "; held if every one is below 0.01.",
        ),
        Claim(
            statement="With batch normalization, NIN trains from these initializations (slowly) and finds a local "
                      "minimum.",
            paper_value=None, source=f"{SOURCE}, A.5, Fig. 11", measured=float(np.nanmin(with_bn)),
            held=bool(all(a >= 0.5 for a in with_bn)),
            detail="measured = the lower final training accuracy of the two BatchNorm runs; held if both reach at "
                   f"least 50%. {accs}.",
        ),
        Claim(
            statement="The minimum found from the exotic initializations (with batch normalization) is not as good as "
                      "the one found from small initial values.",
            paper_value=None, source=f"{SOURCE}, A.5", measured=float(100 * (best_exotic - test[True, ref])),
            held=bool(best_exotic < test[True, ref]),
            detail=f"measured = best exotic test accuracy minus the He-initialized one (percentage points; "
                   f"He {100 * test[True, ref]:.1f}%); held if negative.",
        ),
    ]
    return FigureResult(
        caption="Fig. 11: the NIN-style net trained with SGD from every convolution weight and bias drawn from "
                "N(-10, 0.01) (blue) or N(-1, 1) (red), and from He's initialization (green), with BatchNorm "
                "(solid) and without (dashed, light). (a) training loss and accuracy per epoch; (b) training loss from "
                "the initial to the final weights. Scaled down from the paper (see scaling).",
        panels=[Panel("training", plotly=ft[0], mpl=ft[1]), Panel("init_final", plotly=fl[0], mpl=fl[1])],
        claims=claims,
        scaling=setup.scaling(1, arch="nin", optimizer="SGD lr 0.05",
                              initializations="N(-10, 0.01), N(-1, 1) on conv weights and biases; He (reference)"),
    )


@register_figure("im_fig11", paper="im", title="Im et al. Fig. 11: NIN from exotic initializations, with/without BN")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return fig11(ImSetup.for_scale(scale, data_dir), cache_dir=cache_dir(out), out=out, progress=progress)
