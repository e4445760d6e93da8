"""Beyond the papers: connecting minima (permutation alignment, REPAIR, mode-connecting curves).

Im et al. ask whether different runs find genuinely different minima; the later literature found that much
of the loss barrier between two independently trained networks is a relabelling of their hidden units
(Ainsworth, Hayase and Srinivasa, *Git Re-Basin*, ICLR 2023), that what remains is partly a collapse of the
interpolated network's activation statistics (Jordan et al., *REPAIR*, ICLR 2023), and that minima which a
straight line separates are joined by simple low-loss curves (Garipov et al., *Loss Surfaces, Mode
Connectivity, and Fast Ensembling*, NeurIPS 2018). These two figures check those claims with the package's
:mod:`landscape.analyze.align`, :mod:`landscape.analyze.barrier` and :mod:`landscape.analyze.curves`.

Setting (both scales, quick is the default): two-hidden-layer MLPs ``784-w-w-10`` trained from different
seeds with Adam (lr 1e-3, batch 128) on the 3,000 training images of the embedded 5,000-image MNIST subset;
barriers on the training loss along 25 points of the straight line (the linear definition of Frankle et al.
2020: the largest rise above the interpolation of the endpoint losses). Every comparison is paired over seed
pairs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch

from figures.beyond import PACKAGE_ADDS
from figures.beyond._minima import fit_premise, halving_claim, rise_premise
from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, cache_dir, register_figure
from figures.verdict import paired_effect
from landscape.trajectory import build_once

EPOCHS = 30
# Width 32 reached only 0.969 training accuracy after 30 epochs (premise below: 0.97), so it trains longer;
# the premise decides the training length, never the claim.
EPOCHS_BY_WIDTH = {32: 60}
ALPHAS = np.linspace(0, 1, 25)


def _settings(scale: Scale) -> dict[str, Any]:
    if scale is Scale.QUICK:
        return {"widths": [32, 128], "pairs": 3, "curve_epochs": 10}
    return {"widths": [32, 128, 512], "pairs": 5, "curve_epochs": 30}


def _data() -> Any:
    from landscape.data import load_mnist_subset

    return load_mnist_subset(val=0.2, test=0.2, seed=0)


def _train(width: int, seed: int, train: Any, cache: Path | None = None) -> tuple[torch.nn.Module, float]:
    """One MLP of the given width trained from ``seed``; returns it and its final training accuracy.

    With ``cache`` (the gallery's ``.cache/beyond``), a trained network is stored as safetensors and reused by
    the other figure of this module (both use the same width-128 pairs).
    """
    import safetensors.torch

    from landscape import fit
    from landscape.models import build_model
    from landscape.train import evaluate_dataset

    epochs = EPOCHS_BY_WIDTH.get(width, EPOCHS)
    model = build_model("mlp", (1, 28, 28), 10, hidden=[width, width], seed=seed)
    key = hashlib.sha256(f"{width}-{seed}-{epochs}-{source_hash()}".encode()).hexdigest()[:16]

    def trained() -> torch.nn.Module:
        return fit(
            model, train, optimizer="adam", optimizer_kwargs={"lr": 1e-3}, epochs=epochs, batch_size=128, seed=seed
        ).model

    if cache is None:
        model = trained()
    else:
        path = Path(cache) / f"mlp_w{width}_s{seed}_{key}.safetensors"

        def build(tmp: Path) -> None:
            state = trained().state_dict()
            safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))

        build_once(path, build)
        model.load_state_dict(safetensors.torch.load_file(path))
    acc = evaluate_dataset(model, train, torch.nn.functional.cross_entropy)["accuracy"]
    return model, float(acc)


def source_hash() -> str:
    """SHA-256 of this file: editing it retrains the cached networks."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _pair_seeds(n: int) -> list[tuple[int, int]]:
    return [(2 * i, 2 * i + 1) for i in range(n)]


def _trained_pair(
    width: int, seeds: tuple[int, int], train: Any, out: Path
) -> tuple[tuple[torch.nn.Module, float], tuple[torch.nn.Module, float]]:
    """The two networks of a seed pair with their training accuracies (cached under the gallery's ``out``)."""
    sa, sb = seeds
    return _train(width, sa, train, cache_dir(out, "beyond")), _train(width, sb, train, cache_dir(out, "beyond"))


@register_figure("beyond_rebasin", paper="beyond", title="Loss barriers before and after weight matching and REPAIR")
def run_rebasin(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    from tqdm.auto import tqdm

    from landscape import loss_barrier, weight_matching

    cfg = _settings(scale)
    train = _data().train
    rows: dict[int, dict[str, list[float]]] = {}
    accs: dict[int, list[float]] = {}
    curves: dict[tuple[int, str], np.ndarray] = {}
    jobs = [(w, s) for w in cfg["widths"] for s in _pair_seeds(cfg["pairs"])]
    for width, (sa, sb) in tqdm(jobs, desc="pairs", disable=not progress, leave=False):
        (a, acc_a), (b, acc_b) = _trained_pair(width, (sa, sb), train, out)
        accs.setdefault(width, []).extend([acc_a, acc_b])
        b_wm = weight_matching(a, b).apply(b)
        res = {
            "naive": loss_barrier(a, b, train, alphas=ALPHAS),
            "weight matching": loss_barrier(a, b_wm, train, alphas=ALPHAS),
            "weight matching + REPAIR": loss_barrier(a, b_wm, train, alphas=ALPHAS, repair=True),
        }
        r = rows.setdefault(width, {k: [] for k in res})
        for k, v in res.items():
            r[k].append(float(v.loss_barrier))
            if (sa, sb) == (0, 1):
                curves[(width, k)] = np.asarray(v.metrics["loss"])

    wide = max(cfg["widths"])
    every = [x for v in accs.values() for x in v]
    epochs = {w: EPOCHS_BY_WIDTH.get(w, EPOCHS) for w in cfg["widths"]}
    trained = fit_premise(
        every, f"lowest training accuracy of the {len(every)} networks (Adam, epochs by width {epochs})"
    )
    trained_wide = fit_premise(accs[wide], "lowest training accuracy of that width", f"the width-{wide} endpoints")
    naive_w = rows[wide]["naive"]
    barrier_exists = rise_premise(
        f"the raw width-{wide} networks",
        min(naive_w),
        "smallest naive training-loss barrier over the seed pairs (nats)",
    )
    ratio = np.asarray(rows[wide]["weight matching"]) / np.asarray(naive_w)
    small, big = min(cfg["widths"]), wide
    eff_width = paired_effect(rows[small]["weight matching"], rows[big]["weight matching"])
    all_wm = [x for w in cfg["widths"] for x in rows[w]["weight matching"]]
    all_rep = [x for w in cfg["widths"] for x in rows[w]["weight matching + REPAIR"]]
    eff_repair = paired_effect(all_wm, all_rep)
    n = cfg["pairs"]
    rebasin_book = ClaimBook("beyond_rebasin", scale=scale.value)
    claims = [
        halving_claim(
            rebasin_book, "weight-matching-halves-barrier", ratio, [trained_wide, barrier_exists], width=wide
        ),
        rebasin_book(
            "barrier-shrinks-with-width",
            [float(np.mean(rows[w]["weight matching"])) for w in cfg["widths"]],
            eff_width,
            premises=[trained],
            widths=cfg["widths"],
            small=small,
            big=big,
            n=n,
        ),
        rebasin_book("repair-lowers-barrier", all_rep, eff_repair, premises=[trained], n=len(all_wm)),
    ]

    colors = {"naive": "#c62828", "weight matching": "#1565c0", "weight matching + REPAIR": "#2e7d32"}
    dashes = {w: d for w, d in zip(cfg["widths"], ["dot", "solid", "dash"])}
    fig = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=(6.5, 4.2))
    ax = mfig.add_subplot()
    for (width, kind), ys in curves.items():
        name = f"{kind}, width {width}"
        fig.add_trace(
            go.Scatter(x=ALPHAS, y=ys, mode="lines", name=name, line=dict(color=colors[kind], dash=dashes[width]))
        )
        ax.plot(ALPHAS, ys, color=colors[kind], ls={"dot": ":", "solid": "-", "dash": "--"}[dashes[width]], label=name)
    fig.update_layout(
        title="Training loss along the line from a to b (seed pair 0/1)",
        xaxis_title="alpha",
        yaxis_title="training loss",
        height=430,
    )
    ax.set(xlabel="alpha", ylabel="training loss", title="Training loss from a to b (seed pair 0/1)")
    ax.legend(fontsize=7)
    bars = go.Figure()
    mbars = matplotlib.figure.Figure(figsize=(6.5, 4.2))
    bx = mbars.add_subplot()
    kinds = list(colors)
    for j, kind in enumerate(kinds):
        means = [float(np.mean(rows[w][kind])) for w in cfg["widths"]]
        bars.add_trace(
            go.Bar(
                x=[str(w) for w in cfg["widths"]],
                y=means,
                name=kind,
                marker_color=colors[kind],
                error_y=dict(array=[float(np.std(rows[w][kind])) for w in cfg["widths"]]),
            )
        )
        xs = np.arange(len(cfg["widths"])) + (j - 1) * 0.27
        bx.bar(xs, means, width=0.27, color=colors[kind], label=kind)
    bars.update_layout(
        barmode="group",
        title="Loss barrier by width (mean and spread over seed pairs)",
        xaxis_title="hidden width",
        yaxis_title="training-loss barrier",
        height=430,
    )
    bx.set_xticks(np.arange(len(cfg["widths"])), [str(w) for w in cfg["widths"]])
    bx.set(xlabel="hidden width", ylabel="training-loss barrier", title="Loss barrier by width")
    bx.legend(fontsize=7)
    return FigureResult(
        caption="Two MLPs trained from different seeds are joined by a straight line in weight space. Left: the "
        "training loss along it, raw, after weight matching and after weight matching + REPAIR. Right: "
        "the barrier (the largest rise above the interpolated endpoint losses) by width. " + PACKAGE_ADDS,
        panels=[Panel("line", plotly=fig, mpl=mfig), Panel("widths", plotly=bars, mpl=mbars)],
        claims=claims,
        scaling={
            "model": "MLP 784-w-w-10",
            "data": "MNIST subset (3,000 training images)",
            "epochs": epochs,
            "repetitions": f"{cfg['pairs']} seed pairs per width",
            "widths": cfg["widths"],
            "alphas": len(ALPHAS),
        },
    )


@register_figure("beyond_curves", paper="beyond", title="A trained Bezier curve between two minima")
def run_curves(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    from tqdm.auto import tqdm

    from landscape import evaluate_curve, fit_curve, line
    from landscape.analyze import barrier_values
    from landscape.plot import plot_curve_vs_line

    cfg = _settings(scale)
    width = 128
    train = _data().train
    accs, line_b, curve_b, line_max, curve_max, kept = [], [], [], [], [], None
    for sa, sb in tqdm(_pair_seeds(cfg["pairs"]), desc="curves", disable=not progress, leave=False):
        (a, acc_a), (b, acc_b) = _trained_pair(width, (sa, sb), train, out)
        accs += [acc_a, acc_b]
        curve = fit_curve(
            a,
            b,
            train,
            epochs=cfg["curve_epochs"],
            batch_size=128,
            optimizer="sgd",
            optimizer_kwargs={"lr": 0.05, "momentum": 0.9},
            seed=sa,
        )
        on_curve = evaluate_curve(a, curve, train, ts=ALPHAS, label="Bezier curve")
        straight = line(a, a, b, train, ALPHAS, label="straight line")
        line_b.append(barrier_values(ALPHAS, straight.metrics["loss"])["barrier"])
        curve_b.append(barrier_values(ALPHAS, on_curve.metrics["loss"])["barrier"])
        line_max.append(float(np.max(straight.metrics["loss"])))
        curve_max.append(float(np.max(on_curve.metrics["loss"])))
        if kept is None:
            kept = (straight, on_curve)
    ratio = np.asarray(curve_b) / np.asarray(line_b)
    eff = paired_effect(ratio, 0.1)
    trained = fit_premise(accs, f"lowest training accuracy of the {len(accs)} networks")
    rises = rise_premise(
        "the endpoints", min(line_b), "smallest straight-line training-loss barrier over the seed pairs (nats)"
    )
    curve_book = ClaimBook("beyond_curves", scale=scale.value)
    claims = [
        curve_book(
            "bezier-curve-joins-minima",
            ratio.tolist(),
            eff,
            premises=[trained, rises],
            n=len(ratio),
            curve_barriers=np.round(curve_b, 4).tolist(),
            line_barriers=np.round(line_b, 4).tolist(),
            curve_max=np.round(curve_max, 4).tolist(),
            line_max=np.round(line_max, 4).tolist(),
            curve_epochs=cfg["curve_epochs"],
        ),
    ]
    assert kept is not None
    straight, on_curve = kept
    fig = plot_curve_vs_line(straight, on_curve, title="Training loss: straight line vs trained Bezier curve")
    mfig = matplotlib.figure.Figure(figsize=(6.5, 4.2))
    plot_curve_vs_line(
        straight, on_curve, backend="matplotlib", ax=mfig.add_subplot(), title="Training loss: line vs Bezier curve"
    )
    return FigureResult(
        caption="Training loss along the straight line between two MLPs trained from different seeds, and along "
        "a quadratic Bezier curve whose bend was trained (Garipov et al.'s procedure) between the same "
        "endpoints (seed pair 0/1 shown). " + PACKAGE_ADDS,
        panels=[Panel("curve", plotly=fig, mpl=mfig)],
        claims=claims,
        scaling={
            "model": f"MLP 784-{width}-{width}-10",
            "data": "MNIST subset (3,000 training images)",
            "epochs": EPOCHS,
            "repetitions": f"{cfg['pairs']} seed pairs",
            "curve_epochs": cfg["curve_epochs"],
        },
    )
