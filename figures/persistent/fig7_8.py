"""Persistent Neurons, Figs. 7-8: full persistent LeNet-5 from a "bad" and a "good" initialization.

Sec. 4: LeNet-5 (ReLU) with every weight and bias drawn from N(0, 0.2) (initialization 1, "bad") or N(0, 0.05)
(initialization 2, "good"); Adam lr 0.001, batch 256, lambda = 0.01 on all layers, 20 iterations (1 plain + 19
persistent) on CIFAR-10 with its test set split 5,000 / 5,000 into validation and test. Fig. 7: validation and test
error per iteration against the plain model's (horizontal lines). Fig. 8: training curves of the championships. Paper
numbers (Sec. 4): plain val / test accuracy 70.74% / 69.94% (bad) and 71.58% / 71.48% (good); championship 71.64% /
71.78% (bad) and 72.76% / 73.22% (good). The text gives the last pair for "initialization 1" (the bad init), but in its
paragraph on persistent training "on well-born neurons"; read here as the good init's (the preprint, whose
initialization 1 is the good one, says the same of its w_ini1).

The runs are shared with Fig. 6 (``figures/persistent/_setup.py``: cache, readings, quick scale). At the quick
scale the bad init is N(0, 0.5): the paper's N(0, 0.2) was the better one on 8x8 digits (``QUICK_BAD_STD``).
Claims are decided on the test images, which played no part in choosing the championship (it is picked on
validation accuracy), by McNemar's paired test; premises: every iteration converged, the bad init is the worse
one by at least 1 validation point, and the persistent iterations differ from the plain model. The first claim,
"the bad init is the worse one", is not tested where the bad init is not the paper's N(0, 0.2): N(0, 0.5) was
chosen for being the worse one, so it would hold by construction (until 2026-12-07 it was reported held: +11.42
points [+7.79, +15.06] at quick).

Medium scale (``--scale medium``): the quick settings over 5 training seeds (``MEDIUM_SEEDS``; seed ``s`` draws the
initial weights, the minibatch order and the penalized layers from ``s``, ``repeat_seeds``); seed 0 is the quick run,
shared through the cache. Each comparative claim is then decided by a paired t interval over the seeds of each
seed's accuracy difference (``figures.verdict.paired_effect``), which covers training-seed variance as well as the
test split's; measured lists the per-seed differences. One seed of the two runs costs 18.6 s of one core
(10.0 s bad, 8.6 s good init; one torch thread, load average 2.7-3.1 on 2 cores, so an upper bound): the 4 added
seeds about 75 s. The premise "the bad init is the worse one" must hold in every seed.
"""

from __future__ import annotations

import math

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Scale
from figures.persistent._setup import (
    RunSetup,
    accuracy_claim,
    accuracy_claim_values,
    converged_premise,
    error_sub,
    history_subs,
    in_every_seed,
    layers_used,
    lenet_full_setups,
    moved_premise,
    pct,
    render,
    seed_values,
    seeded_figure,
    test_correct,
    with_seeds,
)
from figures.verdict import Premise
from persistence import PersistentTrainer

PAPER = {  # Persistent Neurons, Sec. 4, Fig. 7: validation / test accuracy (the claims' paper values come from these)
    "bad": {"plain_val": 0.7074, "plain_test": 0.6994, "champ_val": 0.7164, "champ_test": 0.7178},
    "good": {"plain_val": 0.7158, "plain_test": 0.7148, "champ_val": 0.7276, "champ_test": 0.7322},
}
BAD_GAP = 0.01  # premise: the good init's plain validation accuracy is at least 1 point above the bad one's
PAPER_BAD_STD = 0.2  # Sec. 4: initialization 1, the paper's "bad" one


def paper_bad_init_premise(bad_std: float) -> Premise:
    """Premise of "the bad init is the worse one": the bad init is the paper's N(0, 0.2), not one picked for it.

    At the quick and medium scales the bad init is N(0, 0.5), chosen because it is the worse one on 8x8 digits
    (``figures.persistent._runs.QUICK_BAD_STD``: the paper's N(0, 0.2) was the better one there), so the claim would
    hold by construction: that choice meets the other claims' premise, and does not test this claim.
    """
    return Premise(
        f"the bad initialization is the paper's N(0, {PAPER_BAD_STD:g}), not one chosen for being the worse",
        bad_std,
        PAPER_BAD_STD,
        math.isclose(bad_std, PAPER_BAD_STD),
        detail=f"the standard deviation of the bad init; at a scale where it is not {PAPER_BAD_STD:g} it was chosen "
        "because it is the worse one (figures/persistent/_runs.QUICK_BAD_STD: on 8x8 digits N(0, 0.2) gave plain "
        "validation 95.3% / 95.0% against N(0, 0.05)'s 90.0% / 90.3% over 2 seeds), so the comparison is decided by "
        "construction; it remains the premise of the other claims",
    )


def _bad_worse_premise(bad_std: float | None, runs: dict[str, list[PersistentTrainer]]) -> Premise:
    """Premise: the bad init's plain model is worse on validation by at least ``BAD_GAP`` (in every seed)."""
    val = {k: [accuracy_claim_values(pt)["plain_val"] for pt in r] for k, r in runs.items()}
    gaps = [float(g - b) for g, b in zip(val["good"], val["bad"])]
    paper = f"{100 * (PAPER['good']['plain_val'] - PAPER['bad']['plain_val']):.2f}"
    means = "" if len(gaps) == 1 else "means "
    return in_every_seed(
        f"the N(0, {bad_std:g}) initialization is the worse one",
        gaps,
        BAD_GAP,
        detail=f"plain validation accuracy, good minus bad init ({means}{pct(np.mean(val['good']))} - "
        f"{pct(np.mean(val['bad']))}); at least {100 * BAD_GAP:g} points (paper: {paper})",
    )


def _labels(setups: dict) -> dict[str, str]:
    return {k: f"initialization {i}, N(0, {setups[k].init_std:g}) ({k})" for i, k in ((1, "bad"), (2, "good"))}


@seeded_figure(
    "persistent_fig7_8", "Figs. 7-8: full persistent LeNet-5 from bad and good initializations", lenet_full_setups
)
def figure7_8(
    setups: dict[str, list[RunSetup]], runs: dict[str, list[PersistentTrainer]], scale: Scale, progress: bool
) -> FigureResult:
    """The figure at a scale, or for explicit ``setup={"bad": ..., "good": ...}`` (a RunSetup or a list per seed).

    Signature: :func:`figures.persistent._setup.persistent_figure` with ``seeds=True``.
    """
    LABELS = _labels({k: v[0] for k, v in setups.items()})  # noqa: N806
    first = {k: r[0] for k, r in runs.items()}  # drawn: the first seed (the quick run)
    v = {k: seed_values(r) for k, r in runs.items()}
    b, g = v["bad"], v["good"]
    errors = render(
        "errors",
        [error_sub(first[k], f"Fig. 7: {LABELS[k]}") for k in ("bad", "good")],
        "Fig. 7: validation and test error per persistent iteration (LeNet-5, full persistent)",
    )
    curves = render(
        "curves",
        history_subs(first["bad"], "init 1 (bad)") + history_subs(first["good"], "init 2 (good)"),
        "Fig. 8: training curves of the championships (dotted: plain)",
        cols=2,
        caption="Training loss includes the persistent penalty.",
    )

    splits = setups["bad"][0].splits()
    correct = {  # per run, per seed: the test images the plain model and the championship classify correctly
        k: ([test_correct(pt, 0, splits) for pt in r], [test_correct(pt, pt.champion_, splits) for pt in r])
        for k, r in runs.items()
    }
    bad_worse = _bad_worse_premise(setups["bad"][0].init_std, runs)
    conv = {k: converged_premise(runs[k], f"every iteration from the {k} init converged") for k in runs}
    moved = {k: moved_premise(runs[k], splits)[0] for k in runs}
    book = ClaimBook("persistent_fig7_8", scale=str(scale))
    claims = [
        accuracy_claim(
            book,
            "bad-init-is-worse",
            correct["good"][0],
            correct["bad"][0],
            premises=[paper_bad_init_premise(setups["bad"][0].init_std), conv["bad"], conv["good"]],
            bad_std=setups["bad"][0].init_std,
            good_test=g["plain_test"],
            bad_test=b["plain_test"],
            good_val=g["plain_val"],
            bad_val=b["plain_val"],
        ),
        accuracy_claim(
            book,
            "bad-persistent-reaches-good-plain",
            correct["bad"][1],
            correct["good"][0],
            premises=[bad_worse, conv["bad"], conv["good"], moved["bad"]],
            champion=b["champion"],
            champ_test=b["champ_test"],
            champ_val=b["champ_val"],
            plain_test=g["plain_test"],
            plain_val=g["plain_val"],
        ),
    ]
    for k, key in (("bad", "persistent-improves-bad"), ("good", "persistent-improves-good")):  # champion vs plain
        prem = [conv[k], moved[k]] + ([bad_worse] if k == "bad" else [])
        claims.append(accuracy_claim(book, key, correct[k][1], correct[k][0], premises=prem, **v[k]))
    s = setups["bad"][0]
    scaling = {
        "model": s.describe_model() + f" (and N(0, {setups['good'][0].init_std:g}))",
        **s.scaling(),
        "layers": layers_used(first["bad"]),
    }
    result = FigureResult(
        caption=(
            ""
            if s.init_std == 0.2
            else f"The bad init here is N(0, {s.init_std:g}), not the paper's N(0, 0.2), which was the "
            "better one on 8x8 digits (plain validation 95.3% / 95.0% vs 90.0% / 90.3% over 2 seeds; see "
            "figures/persistent/_runs.QUICK_BAD_STD). "
        )
        + "Fig. 7: validation (red) and test (blue) error of each persistent iteration (dashed) against the "
        "plain model's (solid lines), for the bad and the good initialization; the star marks the "
        "championship. Fig. 8: loss and error per epoch of the championship (solid) and the plain model "
        "(dotted).",
        panels=[errors, curves],
        claims=claims,
        scaling=scaling,
    )
    return with_seeds(result, runs["bad"])
