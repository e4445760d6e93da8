"""Persistent Neurons, Figs. 9-11: partial persistent LeNet-5, AlexNet and ResNet-18.

Sec. 4 (eq. 5): each persistent iteration penalizes one randomly drawn layer (seeded, recorded in the
scaling), lambda = 0.001, Adam lr 0.001, PyTorch's default initialization; LeNet-5 (batch 256), AlexNet and
ResNet-18 (batch 128) for 150, 150 and 350 epochs on CIFAR-10 (test set split 5,000 / 5,000 into validation
and test). Left of each figure: validation and test error per iteration against the plain model's; right: the
championship's training and validation history. Paper (Sec. 4): championship vs plain validation / test
accuracy 73.60% / 73.22% vs 72.94% / 72.60% (LeNet-5), 80.74% / 79.44% vs 80.46% / 78.92% (AlexNet),
92.40% / 92.18% vs 92.20% / 91.94% (ResNet-18).

Quick scale (``figures/persistent/_setup.py``): 8x8 digits, 6 iterations; LeNet-5 30 epochs, an AlexNet with
32/32 filters and 128/64 hidden units 20 epochs, a small ResNet (8-16-32 channels, one block per stage) 15
epochs; batch 64; lambda 0.001 for LeNet-5 and AlexNet, 1.0 for the small ResNet, whose iterations at 0.001, 0.01
and 0.1 labelled at most 0.28% of the test images differently from the plain model (``QUICK_LAMBDA`` in
``figures/persistent/_setup.py``). The ResNet run is shared with Fig. 12. The championship is picked on
validation accuracy (ties go to the plain model), so the claim is decided on the test images, which played no
part in that choice:
McNemar's paired test of championship vs plain on the same images. Premises: every iteration converged
(training accuracy moved by at most max(1 point, 3 sd of its minibatch noise) over the last 10% of epochs; see
``figures.persistent._setup.converged_premise``) and the penalty changed the solution
(some persistent iteration labels at least 1% of the test images differently from the plain model). A championship
that is the plain model (Fig. 10 at quick scale) is an outcome, not a failed premise: persistent training returned the
plain network, the difference is exactly 0 (``paired_proportions(..., same_network=True)``: the zero-width interval
[0, 0], which :func:`figures.verdict.verdict_for` calls not held, as in Figs. 12, 13 and 15; over seeds a 0 in the
paired t, and equal differences in every seed a degenerate sample decided by the sign test,
:func:`figures.verdict.degenerate_effect`: unbounded at 5 seeds).

Medium scale (``--scale medium``): the quick settings over 5 training seeds (``MEDIUM_SEEDS``; seed ``s`` draws the
initial weights, the minibatch order and the penalized layers from ``s``, ``repeat_seeds``); seed 0 is the quick run,
shared through the cache. Each comparative claim is then decided by a paired t interval over the seeds of each
seed's accuracy difference (``figures.verdict.paired_effect``), which covers training-seed variance as well as the
test split's; measured lists the per-seed differences. One seed costs 8.1 s (LeNet-5), 19.1 s (AlexNet)
and 12.2 s (small ResNet) of one core (one torch thread, load average 2.7-3.1 on 2 cores): the 4 added seeds about
160 s for the three figures. The ResNet seeds are shared with Fig. 12. The premise "the iterations differ from the
plain model" must hold in every seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from figures.claims import ClaimBook
from figures.contract import FigureResult, Scale, register_figure
from figures.persistent._setup import (
    PARTIAL_MODELS,
    RunSetup,
    championship_claim,
    converged_premise,
    error_sub,
    history_subs,
    layers_used,
    moved_premise,
    partial_setup,
    persistent_figure,
    render,
    with_seeds,
)
from persistence import PersistentTrainer

# Persistent Neurons, Sec. 4 (the claims' paper values in claims.toml come from these):
PAPER = {  # (plain val, plain test, championship val, championship test)
    "lenet5": (0.7294, 0.7260, 0.7360, 0.7322),
    "alexnet": (0.8046, 0.7892, 0.8074, 0.7944),
    "resnet": (0.9220, 0.9194, 0.9240, 0.9218),
}
FIGNUM = {"lenet5": 9, "alexnet": 10, "resnet": 11}


def figure_partial(
    scale: Scale | str = Scale.QUICK, data_dir: Path | str | None = None, *, which: str, **kw: Any
) -> FigureResult:
    """Fig. 9 (``"lenet5"``), 10 (``"alexnet"``) or 11 (``"resnet"``) at a scale, or for an explicit setup.

    Signature: :func:`figures.persistent._setup.persistent_figure`'s with ``seeds=True`` (``cache``, ``progress``,
    ``setup``: a :class:`RunSetup` or a list of them, one per training seed), the default setup the partial run of
    ``which``.
    """
    settings = lambda scale, data_dir: partial_setup(which, scale, data_dir)  # noqa: E731
    figure = persistent_figure(settings, seeds=True)(_figure_partial)
    return figure(scale, data_dir, which=which, **kw)


for _which, _name in (("lenet5", "LeNet-5"), ("alexnet", "AlexNet"), ("resnet", "ResNet")):  # Figs. 9, 10, 11
    register_figure(
        f"persistent_fig{FIGNUM[_which]}",
        paper="persistent",
        title=f"Fig. {FIGNUM[_which]}: partial persistent {_name}",
        scales=("medium",),
        options={"which": _which},
    )(figure_partial)


def _figure_partial(
    setups: list[RunSetup], runs: list[PersistentTrainer], scale: Scale, progress: bool, *, which: str
) -> FigureResult:
    setup, pt = setups[0], runs[0]  # drawn: the first seed (the quick run)
    paper_name, n = PARTIAL_MODELS[which][0], FIGNUM[which]
    title = paper_name if setup.model == PARTIAL_MODELS[which][1] else f"{setup.model} (for {paper_name})"
    p_val, p_test, c_val, c_test = PAPER[which]
    errors = render(
        "errors",
        [error_sub(pt, f"Fig. {n} (left): {title}, partial persistent")],
        f"Fig. {n}: validation and test error per iteration ({title})",
        size=(6.4, 4.2),
    )
    history = render(
        "history",
        history_subs(pt, title),
        f"Fig. {n} (right): training and validation history",
        caption="Training loss includes the persistent penalty.",
    )
    splits = setup.splits()
    conv = converged_premise(runs)
    moved, _ = moved_premise(runs, splits)
    book = ClaimBook(f"persistent_fig{n}", scale=str(scale))
    claims = [
        championship_claim(
            book,
            "persistent-beats-plain",
            runs,
            splits,
            premises=[conv, moved],
            paper_champ_val=c_val,
            paper_plain_val=p_val,
        ),
    ]
    result = FigureResult(
        caption=f"Fig. {n}: left, validation (red) and test (blue) error of each partial persistent iteration (dashed) "
        f"against the plain {title}'s (solid), the star marks the championship; right, loss and error per "
        "epoch of the championship (solid) and the plain model (dotted).",
        panels=[errors, history],
        claims=claims,
        scaling={
            "model": setup.describe_model() + f" (paper: {paper_name})",
            **setup.scaling(),
            "layers": layers_used(pt),
        },
    )
    return with_seeds(result, runs)
