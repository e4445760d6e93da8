"""Beyond the papers: sharpness measures of the gallery's minima beside their test accuracy.

Which "flatness" number to trust is an open question: Keskar et al. (*On Large-Batch Training for Deep
Learning*, ICLR 2017) tied sharp minima to worse generalization; Dinh et al. (2017) showed plain sharpness can
be changed by reparameterization without changing the function; Kwon et al. (*ASAM*, ICML 2021) made it
adaptive; Andriushchenko et al. (*A Modern Look at the Relationship between Sharpness and Generalization*,
ICML 2023) found that none of the measures correlates reliably with generalization across modern settings.
This figure measures four of them (:mod:`landscape.curvature.sharpness`) at the minima the Im et al. and Persistent
Neurons figures already train (their caches; nothing is retrained) and reports the rank correlation with the
test error that appears, whatever it is.

Minima (quick scale, 8x8 digits):

- Im et al.: the VGG-style CNN with BatchNorm trained by 7 optimizers from 5 initializations (35 minima of one
  architecture; the pool of Table 1);
- Persistent Neurons: LeNet-5's iterations (1 plain + 5 persistent each) of the full persistent runs from the
  "bad" and the "good" initialization (Figs. 7-8) and of the partial persistent run (Fig. 9): 18 minima of one
  architecture.

Measures, fixed before measuring (values from the papers that introduced them where they give one), all on the
first 512 training images with BatchNorm in eval mode (running statistics) and Dropout off:

- worst-case: ``max_{||delta||_2 <= 0.05} L(theta + delta) - L(theta)``, 10 steps of projected gradient ascent
  (rho 0.05 is SAM's default, Foret et al. 2021);
- average-case: ``E L(theta + delta) - L(theta)``, ``delta ~ N(0, 0.01^2 I)``, 20 samples (with a standard error);
- adaptive: worst case with ``delta = |theta| * u``, ``||u||_2 <= 0.5`` (ASAM's elementwise scaling and its
  CIFAR-10 radius, eta 0), 10 steps;
- m-sharpness: the worst case (L2, rho 0.05, 5 steps) of batches of m = 32 images, averaged over 8 batches.

Claims (one per measure and family, Keskar et al.'s "sharper minima generalize worse"): decided on the Spearman
rank correlation of sharpness and test error *within* each replicate, the replicates being the unit (Im et al.: the
7 optimizers' minima from one initialization; LeNet-5: the iterations of one run), a t interval over the replicates,
held if above 0 (:func:`replicate_correlation`). Until 2026-12-07 the claims were decided on the correlation pooled
over every minimum with a Fisher-z interval, which treats minima that share an initialization as independent (the
detail said the interval was optimistic); that number is still given.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.ticker import NullFormatter
from plotly.subplots import make_subplots
from torch import nn

from figures.beyond import PACKAGE_ADDS
from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, cache_dir, register_figure
from figures.result import Claim
from figures.verdict import Effect, at_least, at_most, correlation_effect, spearman_effect

N_IMAGES = 512
TRAIN_ACC = 0.99  # premise: the minima fit the training set equally well (compared at equal training fit)
MEASURES: dict[str, tuple[str, dict[str, Any]]] = {
    "worst-case": ("worst-case L2, rho 0.05", {"kind": "worst", "radius": 0.05, "steps": 10}),
    "average-case": ("average-case Gaussian, sigma 0.01", {"kind": "average", "radius": 0.01, "n_samples": 20}),
    "adaptive": (
        "adaptive worst-case (elementwise), L2, rho 0.5",
        {"kind": "worst", "radius": 0.5, "steps": 10, "adaptive": "elementwise"},
    ),
    "m-sharpness": (
        "m-sharpness, m 32, L2, rho 0.05",
        {"kind": "m", "radius": 0.05, "steps": 5, "m": 32, "n_batches": 8},
    ),
}


def measure(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """The four sharpness measures of :data:`MEASURES` at one minimum.

    Returns:
        ``{name: (value, standard error)}``, plus ``"loss"``: ``(L(theta), 0)``, the training loss on ``data``.
    """
    from landscape.curvature import average_sharpness, m_sharpness, worst_case_sharpness

    loss = nn.functional.cross_entropy
    out = {}
    base = None  # L(theta): the ball measures compute it by the same pass, so the first one's serves the others
    for name, (_, kw) in MEASURES.items():
        kw = dict(kw)
        kind = kw.pop("kind")
        fn = {"worst": worst_case_sharpness, "average": average_sharpness, "m": m_sharpness}[kind]
        if kind != "average":  # the average case's comes from the batched engine (its own rounding): kept apart
            kw["base_loss"] = base
        res = fn(model, loss, data, seed=0, progress=False, **kw)
        base = res.base_loss if kind != "average" else base
        out[name] = (float(res.value), float(res.stderr))
        out["loss"] = (float(res.base_loss), 0.0)
    return out


def _im_setup(scale: Scale, data_dir: Path | None) -> Any:
    from figures.im._setup import ImSetup

    return ImSetup.for_scale(scale, data_dir)


def _lenet_setups(scale: Scale, data_dir: Path | None) -> dict[str, Any]:
    from figures.persistent._setup import lenet_full_setups, partial_setup

    full = lenet_full_setups(scale, data_dir)
    return {
        "full, bad init": full["bad"],
        "full, good init": full["good"],
        "partial": partial_setup("lenet5", scale, data_dir),
    }


def _im_minima(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> list[dict[str, Any]]:
    """The Im et al. pool (7 methods x the setup's initializations): model, accuracies, training images."""
    from figures.im._setup import METHOD_LABELS, ImRuns, RunSpec
    from landscape.train import METHODS

    setup = _im_setup(scale, data_dir)
    runs = ImRuns(setup, cache_dir(out, "im"), progress)
    keys = [(m, k) for k in range(setup.repetitions) for m in METHODS]  # Table 1's pool, in its order
    x, y = setup.splits().train
    data = (x[:N_IMAGES], y[:N_IMAGES])
    return [
        {
            "family": "Im et al. VGG (BatchNorm)",
            "group": METHOD_LABELS[m],
            "replicate": f"init {k}",
            "name": f"{METHOD_LABELS[m]}, init {k}",
            "model": r.model().eval(),
            "train_acc": r.last("trainset_accuracy"),
            "test_acc": r.last("test_accuracy"),
            "data": data,
        }
        for (m, k), r in zip(keys, runs.many([RunSpec(m, init=k) for m, k in keys]))
    ]


def _lenet_minima(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> list[dict[str, Any]]:
    """LeNet-5's persistent iterations (plain = iteration 0) of the full bad / good and the partial runs."""
    from figures.persistent._setup import iteration_model, run_persistent
    from landscape.train import evaluate_dataset

    rows = []
    for label, setup in _lenet_setups(scale, data_dir).items():
        pt = run_persistent(setup, cache_dir(out, "persistent"), progress)
        x, y = setup.splits().train
        data = (x[:N_IMAGES], y[:N_IMAGES])
        for i, r in enumerate(pt.results_):
            model = iteration_model(pt, i).eval()
            acc = evaluate_dataset(model, setup.splits().train, nn.functional.cross_entropy)["accuracy"]
            rows.append(
                {
                    "family": "Persistent Neurons LeNet-5",
                    "group": label,
                    "replicate": label,
                    "name": f"{label}, {'plain' if i == 0 else f'iteration {i}'}",
                    "model": model,
                    "train_acc": float(acc),
                    "test_acc": float(r.metrics["test_accuracy"]),
                    "data": data,
                }
            )
    return rows


def replicate_correlation(values: Sequence[float], errors: Sequence[float], replicates: Sequence[str]) -> Effect:
    """Rank correlation of sharpness and test error with the replicates (independent runs) as the unit.

    The minima of one replicate share its initialization (Im et al.: the 7 optimizers of one init) or its run
    (LeNet-5: the iterations of one persistent run), so a correlation pooled over every minimum treats dependent
    points as independent and its interval is too narrow. Here: Spearman's rho within each replicate, then a t
    interval of those rhos over the replicates (:func:`figures.verdict.correlation_effect`: against 0, kept inside
    [-1, 1], where every correlation lies).

    Args:
        values: Sharpness of each minimum, ``(n,)``.
        errors: Test error of each minimum, ``(n,)``.
        replicates: The replicate each minimum belongs to, ``(n,)``.

    Returns:
        The mean within-replicate rho and its interval (``n`` = the replicates with a defined rho: at least 3
        minima and neither variable constant).
    """
    from scipy import stats

    v, e, g = np.asarray(values, dtype=float), np.asarray(errors, dtype=float), np.asarray(replicates)
    rhos = []
    for rep in dict.fromkeys(g.tolist()):
        sel = g == rep
        if sel.sum() >= 3 and np.ptp(v[sel]) > 0 and np.ptp(e[sel]) > 0:
            rhos.append(float(stats.spearmanr(v[sel], e[sel]).statistic))
    if not rhos:
        return Effect(math.nan, math.nan, 0, -math.inf, math.inf, 1.0, 0.95, "no replicate with a defined rho")
    eff = correlation_effect(rhos)
    return dataclasses.replace(eff, method=f"mean within-replicate Spearman rho, {eff.method} over replicates")


def _claims(family: str, rows: list[dict[str, Any]], scale: Scale) -> list[Claim]:
    """One claim per measure: sharpness rank-correlates positively with the test error within the family.

    Decided on :func:`replicate_correlation` (the replicates as the unit); the correlation pooled over every
    minimum (Fisher z, which treats the minima as independent) is given as information.
    """
    err = [1 - r["test_acc"] for r in rows]
    accs = [r["train_acc"] for r in rows]
    reps = [r["replicate"] for r in rows]
    loss_vals = [r["sharpness"]["loss"][0] for r in rows]
    base = replicate_correlation(loss_vals, err, reps)
    fit = at_least(
        f"the {family} minima fit the training set",
        min(accs),
        TRAIN_ACC,
        detail=f"lowest training accuracy of the {len(rows)} minima (sharpness is compared at equal "
        f"training fit; {sum(a >= TRAIN_ACC for a in accs)} of {len(rows)} reach {TRAIN_ACC:g})",
    )
    book = ClaimBook("beyond_sharpness", scale=scale.value)
    claims = []
    for name, (desc, _) in MEASURES.items():
        vals = np.array([r["sharpness"][name][0] for r in rows])
        ses = np.array([r["sharpness"][name][1] for r in rows])
        unresolved = int(np.sum(~((vals > 2 * ses) & (vals > 0))))
        resolved = at_most(
            f"the {name} measure of every {family} minimum is resolved",
            unresolved,
            0,
            detail="minima whose sharpness is not above 0 and 2 standard errors (Monte Carlo / over "
            "batches; worst case: above 0): a value inside its noise cannot be ranked",
        )
        eff = replicate_correlation(vals.tolist(), err, reps)
        pooled = spearman_effect(vals.tolist(), err)
        keep = [i for i, a in enumerate(accs) if a >= TRAIN_ACC]
        sub = spearman_effect([vals[i] for i in keep], [err[i] for i in keep]) if len(keep) > 3 else None
        fitting = (
            ""
            if sub is None or len(keep) == len(rows)
            else f"; pooled over the {len(keep)} minima that fit the training set: rho {sub.mean:+.2f} "
            f"[{sub.ci_low:+.2f}, {sub.ci_high:+.2f}]"
        )
        claims.append(
            book(
                "sharper-generalizes-worse",
                vals.tolist(),
                eff,
                premises=[fit, resolved],
                measure=desc,
                family=family,
                n=len(rows),
                replicates=len(dict.fromkeys(reps)),
                lowest=vals.min(),
                highest=vals.max(),
                err_low=min(err),
                err_high=max(err),
                pooled=pooled,
                loss=base,
                fitting=fitting,
            )
        )
    return claims


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per group (Im: method, mean over initializations; LeNet-5: each iteration): accuracies and the measures."""
    header = ["minima", "n", "train acc", "test acc", "train loss", *MEASURES]
    body = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["family"], r["group"] if r["family"].startswith("Im") else r["name"])
        groups.setdefault(key, []).append(r)
    for (family, group), rs in groups.items():
        short = "Im VGG" if family.startswith("Im") else "LeNet-5"
        body.append(
            [
                f"{short}: {group}",
                str(len(rs)),
                f"{np.mean([r['train_acc'] for r in rs]):.2%}",
                f"{np.mean([r['test_acc'] for r in rs]):.2%}",
                *[f"{np.mean([r['sharpness'][m][0] for r in rs]):.3g}" for m in ("loss", *MEASURES)],
            ]
        )
    return header, body


@register_figure(
    "beyond_sharpness", paper="beyond", title="Sharpness measures of the gallery's minima beside their test accuracy"
)
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    from tqdm.auto import tqdm

    families = {
        "Im et al. VGG": _im_minima(scale, data_dir, out, progress),
        "LeNet-5": _lenet_minima(scale, data_dir, out, progress),
    }
    every = [r for rs in families.values() for r in rs]
    for r in tqdm(every, desc="sharpness", disable=not progress, leave=False):
        r["sharpness"] = measure(r["model"], r["data"])
    claims = [c for fam, rs in families.items() for c in _claims(fam, rs, scale)]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "sharpness.json").write_text(
        json.dumps(
            [{k: r[k] for k in ("family", "name", "train_acc", "test_acc", "sharpness")} for r in every], indent=1
        )
    )

    # ---- scatter: sharpness against test error, one row per family, one column per measure
    names = list(MEASURES)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
    sc = make_subplots(
        len(families),
        len(names),
        subplot_titles=[f"{f}: {m}" for f in families for m in names],
        horizontal_spacing=0.05,
        vertical_spacing=0.14,
    )
    mfig = matplotlib.figure.Figure(figsize=(13, 6.2))
    axes = mfig.subplots(len(families), len(names))
    for i, rs in enumerate(families.values()):
        groups = list(dict.fromkeys(r["group"] for r in rs))
        for j, m in enumerate(names):
            ax = axes[i, j]
            for g, grp in enumerate(groups):
                sel = [r for r in rs if r["group"] == grp]
                xs = [r["sharpness"][m][0] for r in sel]
                ys = [100 * (1 - r["test_acc"]) for r in sel]
                sc.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="markers",
                        name=grp,
                        legendgroup=grp,
                        showlegend=j == 0,
                        marker={"color": colors[g % len(colors)], "size": 7},
                        text=[r["name"] for r in sel],
                        hovertemplate="%{text}<br>sharpness %{x:.3g}<br>test error %{y:.2f}%<extra></extra>",
                    ),
                    row=i + 1,
                    col=j + 1,
                )
                ax.scatter(xs, ys, s=10, color=colors[g % len(colors)], label=grp if j == 0 else None)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize=6)
            ax.set_title(f"{m}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{list(families)[i]}\ntest error (%)", fontsize=7)
                ax.legend(fontsize=5)
    sc.update_xaxes(type="log")
    sc.update_layout(height=720, title="Sharpness (x, log) against test error (y, %) of each minimum")
    header, body = _table(every)
    tab = go.Figure(go.Table(header={"values": header}, cells={"values": list(map(list, zip(*body)))}))
    tab.update_layout(
        height=120 + 24 * len(body), title="Sharpness measures beside test accuracy (Im: mean over initializations)"
    )
    tfig = matplotlib.figure.Figure(figsize=(11, 0.6 + 0.22 * len(body)))
    tax = tfig.add_subplot()
    tax.set_axis_off()
    t = tax.table(
        cellText=body,
        colLabels=header,
        loc="center",
        cellLoc="center",
        colWidths=[0.25, 0.04] + [0.71 / (len(header) - 2)] * (len(header) - 2),
    )
    t.auto_set_font_size(False)
    t.set_fontsize(6)
    return FigureResult(
        caption="Four sharpness measures at the minima the Im et al. figures (VGG-style CNN with BatchNorm, 7 "
        "optimizers x 5 initializations) and the Persistent Neurons figures (LeNet-5, plain and persistent "
        "iterations of three runs) train, beside their test accuracy; reused from those figures' caches. "
        + PACKAGE_ADDS
        + " Per-minimum numbers: sharpness.json.",
        panels=[Panel("scatter", plotly=sc, mpl=mfig), Panel("table", plotly=tab, mpl=tfig)],
        claims=claims,
        scaling={
            "model": "Im et al.'s VGG-style CNN (BatchNorm); LeNet-5 (Persistent Neurons)",
            "data": f"8x8 digits; sharpness on the first {N_IMAGES} training images, test error on each "
            "figure's test split",
            "epochs": "as the Im / Persistent Neurons figures (reused)",
            "repetitions": {f: len(rs) for f, rs in families.items()},
            "measures": {k: v[0] for k, v in MEASURES.items()},
        },
    )


__all__: Sequence[str] = ["MEASURES", "measure", "replicate_correlation", "run"]
