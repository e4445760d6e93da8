"""Shared runs and drawing helpers of the Persistent Neurons figures (private to ``figures/persistent/``).

Source: "Persistent Neurons", in two versions: a citation names the preprint when it means it, otherwise the
extended version. The image-classification figures share persistent runs: Fig. 6 and Fig. 7-8 read the full
persistent LeNet-5 runs, Fig. 11 and Fig. 12 the partial persistent ResNet runs. A run is one
:class:`persistence.PersistentTrainer` with ``out_dir`` under the gallery, ``<gallery>/.cache/persistent/<key>/``,
where ``<key>`` hashes the run's settings and the source of ``_runs.py``; the trainer resumes an interrupted run
from its last finished iteration, and a per-run file lock makes concurrent figure processes (``make_all --jobs``)
wait for a run in progress instead of training it twice.

Readings where the paper is silent (each figure states them in its scaling):

- The championship is the iteration with the highest validation accuracy (Sec. 4: "championship validation
  accuracy"); ties go to the earliest iteration, so a persistent iteration must beat the plain model strictly.
- Every iteration uses the same seed, hence the same minibatch order: iterations differ by the penalty only.
- The full persistent LeNet-5 trains as long as the partial one (150 epochs; Sec. 4 gives no epoch count for it).
- The number of partial persistent iterations is not given: 20 at full scale, as in the full persistent runs.
- Quick scale: scikit-learn's 8x8 digits (1,079 / 359 / 359 train / validation / test images), narrower AlexNet
  and a small ResNet, fewer epochs, 6 iterations (1 plain + 5 persistent) instead of 20.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from figures.claims import ClaimBook
from figures.contract import Claim, FigureResult, Panel, Scale, figure_function, register_figure
from figures.persistent._runs import (
    CIFAR_HINT,
    MEDIUM_SEEDS,
    PARTIAL_MODELS,
    QUICK_BAD_STD,
    QUICK_LAMBDA,
    RunSetup,
    accuracies,
    accuracy_claim_values,
    best_persistent,
    curve,
    iteration_model,
    layers_used,
    lenet_full_setups,
    load_data,
    partial_setup,
    pct,
    repeat_seeds,
    run_persistent,
    source_hash,
)
from figures.verdict import (
    Effect,
    Premise,
    Verdict,
    at_least,
    at_most,
    paired_effect,
    paired_proportions,
    verdict_for,
)
from landscape import plot
from landscape.data import Splits
from persistence import PersistentTrainer

__all__ = [  # the shared setup of the Persistent Neurons figures: defined here or gathered from _runs
    "BLUE",
    "CIFAR_HINT",
    "CONVERGED_TOL",
    "GREEN",
    "GREY",
    "MEDIUM_SEEDS",
    "MOVED_MIN",
    "ORANGE",
    "PALETTE",
    "PARTIAL_MODELS",
    "QUICK_BAD_STD",
    "QUICK_LAMBDA",
    "RED",
    "SOURCE",
    "SOURCE_PREPRINT",
    "Line",
    "RunSetup",
    "Sub",
    "accuracies",
    "accuracy_claim",
    "accuracy_claim_values",
    "best_persistent",
    "championship_claim",
    "converged_premise",
    "curve",
    "error_sub",
    "history_subs",
    "iteration_model",
    "layers_used",
    "lenet_full_setups",
    "load_data",
    "mcnemar",
    "in_every_seed",
    "moved_premise",
    "partial_setup",
    "pct",
    "persistent_figure",
    "render",
    "repeat_seeds",
    "resolvable",
    "seed_values",
    "seeded_figure",
    "run_persistent",
    "source_hash",
    "test_correct",
    "test_predictions",
    "train_correct",
    "with_seeds",
]

SOURCE = "Persistent Neurons (extended version)"
SOURCE_PREPRINT = "Persistent Neurons (preprint version)"
BLUE, ORANGE, GREEN, RED, GREY = (plot.PALETTE[i] for i in (0, 1, 2, 3, 7))
PALETTE = tuple(plot.PALETTE[i] for i in (0, 3, 2, 1, 4, 5, 6, 9, 7, 8))  # the one palette, red second


# --------------------------------------------------------------------------- the figure functions' signature
def persistent_figure(
    settings: Callable[..., Any], *, seeds: bool = False
) -> Callable[[Callable[..., FigureResult]], Any]:
    """Give a figure on persistent runs the one signature of the gallery's figure functions.

    The decorated function is called as ``figure(scale="quick", data_dir=None, *, cache=None, progress=False,
    setup=None, **options)`` (:func:`figures.contract.figure_function`): the settings are ``setup`` if given (tests
    pass tiny ones), else ``settings(scale, data_dir)``; one :class:`RunSetup`, or a dict of them (the bad and the
    good initialization). The body is called as ``body(setup, runs, scale, progress, **options)``, ``runs`` the
    trained :class:`persistence.PersistentTrainer` of the setup (a dict of them for a dict), cached under ``cache``.

    With ``seeds=True`` the figure repeats its runs over training seeds: at the medium scale ``settings`` gives
    the run of seed 0 and :func:`repeat_seeds` adds the others (:data:`MEDIUM_SEEDS` in all; one seed at the
    quick and full scales), and the body gets a list per run, ``(seeds,)`` setups and trainers (a dict of lists for
    a dict). An explicit ``setup`` may be a list (of seeds) too; a single one is one seed.

    Args:
        settings: The settings at a gallery scale, ``settings(scale, data_dir)``.
        seeds: Repeat the runs over training seeds (see above).

    Returns:
        The decorator.
    """
    if not seeds:
        return figure_function(settings, _trained)

    def over_seeds(scale: Any, data_dir: Any) -> Any:
        n = MEDIUM_SEEDS if Scale(scale) is Scale.MEDIUM else 1
        return _per_run(settings(scale, data_dir), lambda s: repeat_seeds(s, n))

    return figure_function(over_seeds, _trained_seeds)


def seeded_figure(
    name: str, title: str, settings: Callable[..., Any]
) -> Callable[[Callable[..., FigureResult]], Callable[..., FigureResult]]:
    """Register a Persistent Neurons figure whose runs repeat over training seeds at the medium scale.

    The body gets its settings and runs as :func:`persistent_figure` with ``seeds=True`` gives them (lists over
    the seeds); the figure is registered under ``name`` with a medium setting
    (:func:`figures.contract.register_figure`).

    Args:
        name: The figure's name.
        title: Its title in the gallery.
        settings: The settings of seed 0 at a gallery scale, ``settings(scale, data_dir)``.

    Returns:
        The decorator; it returns the figure function.
    """

    def decorate(body: Callable[..., FigureResult]) -> Callable[..., FigureResult]:
        figure: Callable[..., FigureResult] = persistent_figure(settings, seeds=True)(body)
        return register_figure(name, paper="persistent", title=title, scales=("medium",))(figure)

    return decorate


def _per_run(setup: Any, fn: Callable[[RunSetup], Any]) -> Any:
    """``fn`` applied to one run's setup, or to each of a dict's."""
    return {k: fn(s) for k, s in setup.items()} if isinstance(setup, Mapping) else fn(setup)


def _trained(setup: Any, *, scale: Any, data_dir: Any, cache: Any, progress: bool) -> tuple[Any, Any, Any, bool]:
    """The start of a persistent figure: its settings, their trained runs, the scale and the progress flag."""
    return setup, _per_run(setup, lambda s: run_persistent(s, cache, progress)), scale, progress


def _trained_seeds(setup: Any, *, scale: Any, data_dir: Any, cache: Any, progress: bool) -> tuple[Any, Any, Any, bool]:
    """:func:`_trained` over seeds: each run's setup a list (a single one is one seed), the trainers in lists."""
    setup = _per_run(setup, lambda s: list(s) if isinstance(s, (list, tuple)) else [s])
    return setup, _per_run(setup, lambda ss: [run_persistent(s, cache, progress) for s in ss]), scale, progress


# --------------------------------------------------------------------------- drawing (both backends)
@dataclasses.dataclass
class Line:
    """One line of a subplot.

    Attributes:
        x: ``(n,)`` abscissae.
        y: ``(n,)`` ordinates.
        name: Legend entry (empty: none, e.g. the second piece of one curve).
        color: Colour.
        dash: ``"solid"``, ``"dash"`` or ``"dot"``.
        markers: Draw markers too.
        width: Line width.
    """

    x: Sequence[float] | np.ndarray
    y: Sequence[float] | np.ndarray
    name: str
    color: str
    dash: str = "solid"
    markers: bool = False
    width: float = 2.0


@dataclasses.dataclass
class Sub:
    """One subplot: lines, horizontal reference lines and highlighted points.

    Attributes:
        title: Subplot title.
        xlabel: X-axis label.
        ylabel: Y-axis label.
        lines: The lines.
        hlines: ``(y, name, color, dash)`` horizontal lines across the subplot.
        marks: ``(x, y, name, color)`` highlighted points (drawn as stars).
        logy: Logarithmic y axis.
    """

    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = dataclasses.field(default_factory=list)
    hlines: list[tuple[float, str, str, str]] = dataclasses.field(default_factory=list)
    marks: list[tuple[float, float, str, str]] = dataclasses.field(default_factory=list)
    logy: bool = False


def render(
    key: str,
    subs: Sequence[Sub],
    title: str,
    *,
    cols: int | None = None,
    caption: str = "",
    size: tuple[float, float] = (5.2, 3.8),
) -> Panel:
    """Draw subplots as one plotly and one matplotlib figure (a gallery :class:`Panel`) by small_multiples.

    Args:
        key: Panel key.
        subs: The subplots, row-major.
        title: Figure title.
        cols: Subplots per row (default: all in one row).
        caption: Panel caption.
        size: Size of one matplotlib subplot in inches.

    Returns:
        The panel.
    """
    panels = [
        plot.Panel(
            s.title,
            [
                plot.Line(
                    np.asarray(ln.x),
                    np.asarray(ln.y),
                    ln.name,
                    ln.color,
                    dash=ln.dash,
                    markers=ln.markers,
                    width=ln.width,
                )
                for ln in s.lines
            ],
            xlabel=s.xlabel,
            ylabel=s.ylabel,
            logy=s.logy,
            hlines=s.hlines,
            stars=s.marks,
        )
        for s in subs
    ]
    kw = {"cols": len(subs) if cols is None else cols, "title": title, "size": size, "legend": "axes"}
    fig, mfig = plot.small_multiples(panels, **kw), plot.small_multiples(panels, backend="matplotlib", **kw)
    return Panel(key, plotly=fig, mpl=mfig, caption=caption)


def error_sub(pt: PersistentTrainer, title: str) -> Sub:
    """Validation and test error (%) per iteration, the plain model's as horizontal lines (Figs. 7, 9-11)."""
    val, test = accuracies(pt)
    it = np.arange(len(val))
    c = pt.champion_
    return Sub(
        title=title,
        xlabel="iteration (0 = plain)",
        ylabel="error (%)",
        lines=[
            Line(it, 100 * (1 - val), "validation error, persistent", RED, "dash", True),
            Line(it, 100 * (1 - test), "test error, persistent", BLUE, "dash", True),
        ],
        hlines=[
            (100 * (1 - val[0]), "validation error, plain", RED, "solid"),
            (100 * (1 - test[0]), "test error, plain", BLUE, "solid"),
        ],
        marks=[(c, 100 * (1 - val[c]), "championship", ORANGE)],
    )


def history_subs(pt: PersistentTrainer, label: str) -> list[Sub]:
    """Loss and error per epoch of the championship (solid) and the plain model (dotted) (Figs. 8-11, right)."""
    c = pt.champion_
    subs = []
    for what, metrics, ylabel in (
        ("loss", ("train_loss", "val_loss"), "loss"),
        ("error", ("train_accuracy", "val_accuracy"), "error (%)"),
    ):
        lines = []
        for it, dash, who in ((c, "solid", f"championship (iteration {c})"), (0, "dot", "plain")):
            for m, color in zip(metrics, (BLUE, RED)):
                e, v = curve(pt, it, m)
                v = 100 * (1 - v) if what == "error" else v
                lines.append(Line(e, v, f"{who}: {m.split('_')[0]}", color, dash))
        subs.append(Sub(f"{label}: {what} per epoch", "epoch", ylabel, lines, logy=what == "loss"))
    return subs


# --------------------------------------------------------------------------- premises and statistics
CONVERGED_TOL = 0.01  # training accuracy may change by at most 1 point over the last 10% of the epochs
MOVED_MIN = 0.01  # a persistent iteration must disagree with the plain model on >= 1% of the test images


@torch.no_grad()
def _predict(pt: PersistentTrainer, iteration: int, x: torch.Tensor) -> torch.Tensor:
    """One iteration's model (eval mode) labels of the images ``x``, ``(n,)``, in batches of 512."""
    model = iteration_model(pt, iteration).eval()
    return torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])


def test_correct(pt: PersistentTrainer, iteration: int, splits: Splits) -> np.ndarray:
    """Whether one iteration's model classifies each test image correctly, boolean ``(n_test,)``."""
    x, y = splits.test
    return (_predict(pt, iteration, x) == y).numpy()


def train_correct(pt: PersistentTrainer, iteration: int, splits: Splits) -> np.ndarray:
    """Whether one iteration's model (eval mode) classifies each training image correctly, ``(n_train,)``."""
    x, y = splits.train
    return (_predict(pt, iteration, x) == y).numpy()


def test_predictions(pt: PersistentTrainer, iteration: int, splits: Splits) -> np.ndarray:
    """One iteration's predicted test labels, ``(n_test,)``."""
    return _predict(pt, iteration, splits.test[0]).numpy()


def _seeds(pts: PersistentTrainer | Sequence[PersistentTrainer]) -> list[PersistentTrainer]:
    """One run or the runs of several training seeds, as a list."""
    return [pts] if isinstance(pts, PersistentTrainer) else list(pts)


def converged_premise(
    pts: PersistentTrainer | Sequence[PersistentTrainer], what: str = "every iteration converged"
) -> Premise:
    """Premise: each iteration's training accuracy stopped moving over its last 10% of epochs (of every seed).

    The measure is the absolute change of the training accuracy (a running average over an epoch's minibatches)
    between the first and the last epoch of the final 10%. The bound is 1 point or three standard deviations of
    the difference of two such averages when nothing changes, ``3 sqrt(2 a (1 - a) / n)`` (``a`` the lowest final
    accuracy, ``n`` the training images), whichever is larger: a 1-point bound alone failed on changes of
    1.0-1.8 points on 1,079 digits images, inside that noise (0.7 points at 97%). Needs per-epoch snapshots
    (``record_every_epochs=1``). The training loss is not used: it carries the persistent penalty, and near zero
    its relative change is noise.

    Args:
        pts: One run, or the runs of several training seeds (``measured`` then lists every seed's iterations).
        what: The premise's statement.
    """
    runs = _seeds(pts)
    changes, finals = [], []
    for pt in runs:
        for it in range(len(pt.results_)):
            _, acc = curve(pt, it, "train_accuracy")
            if len(acc) < 2:
                return Premise(what, math.nan, CONVERGED_TOL, False, "fewer than 2 per-epoch snapshots")
            start = min(len(acc) - 2, int(math.floor(0.9 * len(acc))))
            changes.append(abs(float(acc[-1] - acc[start])))
            finals.append(float(acc[-1]))
    n = _n_train(runs[0])
    a = min(max(min(finals), 1.0 / n), 1 - 1.0 / n)
    tol = max(CONVERGED_TOL, 3 * math.sqrt(2 * a * (1 - a) / n))
    per = "per iteration" if len(runs) == 1 else f"per iteration of each of the {len(runs)} seeds"
    return at_most(
        what,
        changes,
        tol,
        detail=f"absolute change of training accuracy over the last 10% of epochs, {per}; bound "
        f"max(1 point, 3 sd of the minibatch-average noise on {n} images)",
    )


def _n_train(pt: PersistentTrainer) -> int:
    data = pt.data
    try:
        return int(len(data[1]))  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return 1000


def moved_premise(
    pts: PersistentTrainer | Sequence[PersistentTrainer], splits: Splits
) -> tuple[Premise, list[list[float]]]:
    """Premise: the penalty changed the solution: some persistent iteration disagrees with the plain model.

    Args:
        pts: One run, or the runs of several training seeds (the premise must then hold for every seed).
        splits: The data (its test images are compared).

    Returns:
        The premise (on the largest disagreement over the persistent iterations, per seed) and, per seed, the
        share of test images each persistent iteration labels differently from the plain model.
    """
    dis = []
    for pt in _seeds(pts):
        p0 = test_predictions(pt, 0, splits)
        dis.append([float(np.mean(test_predictions(pt, i, splits) != p0)) for i in range(1, len(pt.results_))])
    need = f"at least {MOVED_MIN:g} is needed for an accuracy change of the paper's size to be possible"
    largest = [max(d, default=0.0) for d in dis]
    per = f" (per iteration: {', '.join(f'{d:.4f}' for d in dis[0])})" if len(dis) == 1 else ""
    return in_every_seed(
        "the persistent iterations differ from the plain model",
        largest,
        MOVED_MIN,
        detail=f"largest share of test images a persistent iteration labels differently from the plain model{per}; "
        + need,
    ), dis


def in_every_seed(statement: str, values: Sequence[float], limit: float, *, detail: str) -> Premise:
    """Premise ``value >= limit`` of one seed, or of every seed of several (on the smallest, with all in the detail).

    With several seeds ``measured`` is the smallest value, so that a failed premise shows the value that failed it;
    the statement gains " (in every seed)" and the detail the value of each seed.

    Args:
        statement: What must be true.
        values: One value per seed, ``(seeds,)``.
        limit: The bound.
        detail: How the value is measured.
    """
    if len(values) == 1:
        return at_least(statement, values[0], limit, detail=detail)
    per = ", ".join(f"{v:.4g}" for v in values)
    return at_least(
        f"{statement} (in every seed)",
        min(values),
        limit,
        detail=f"{detail}; the smallest over the {len(values)} training seeds, per seed: {per}",
    )


def mcnemar(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    direction: int = 1,
    paper_effect: float | None = None,
    *,
    same_network: bool = False,
) -> tuple[Effect, Verdict]:
    """Paired accuracy difference A - B on the same test images (McNemar) and its verdict (``same_network``: A is B)."""
    eff = paired_proportions(correct_a, correct_b, same_network=same_network)
    return eff, verdict_for(eff, direction=direction, paper_effect=paper_effect)


def accuracy_claim(
    book: ClaimBook,
    key: str,
    correct_a: Sequence[np.ndarray],
    correct_b: Sequence[np.ndarray],
    *,
    premises: Sequence[Premise],
    images: str = "test",
    same_network: Sequence[bool] = (),
    **values: Any,
) -> Claim:
    """The claim ``key`` that model A classifies the same images better than model B, over one or more seeds.

    With one training seed the test is McNemar's on the images (:func:`figures.verdict.paired_proportions`): it
    covers the noise of the image sample, not of training, and measured is the accuracy difference A - B in
    points. With several seeds it is a paired t interval over the seeds (:func:`figures.verdict.paired_effect`)
    of each seed's accuracy difference, which covers both, and measured is the list of those differences in
    points. The verdict comes from the effect in the claim's direction (and the paper's effect, when its
    ``claims.toml`` gives one).

    The claim's templates may name ``test`` (how it is tested: the test and the images), ``seeds`` and
    ``seeds_sentence`` (what the seeds cover, as a clause and as a sentence); they are filled here.

    Args:
        book: The figure's claims.
        key: The claim's key.
        correct_a: Per seed, whether model A classifies each image correctly, boolean ``(n,)`` each.
        correct_b: The same for model B on the same images.
        premises: The claim's premises.
        images: ``"test"`` or ``"training"``: which images (for the text).
        same_network: Per seed, whether A and B are one network (a plain championship): its difference is exactly
            0, a point, not noise (:func:`figures.verdict.paired_proportions`); default none is.
        **values: The other fields of the claim's templates (accuracies are seed means at several seeds).
    """
    k, n = len(correct_a), len(correct_a[0])
    where = resolvable(n) if images == "test" else f"same {images} images"
    if k == 1:
        eff = paired_proportions(correct_a[0], correct_b[0], same_network=bool(same_network and same_network[0]))
        measured: Any = round(100 * eff.mean, 3)
        texts = {
            "test": f"McNemar on the {where}",
            "seeds": "one training seed (training-seed variance is not covered)",
            "seeds_sentence": "One training seed: training-seed variance is not covered.",
        }
    else:
        diffs = [float(np.mean(a) - np.mean(b)) for a, b in zip(correct_a, correct_b)]
        eff = paired_effect([float(np.mean(a)) for a in correct_a], [float(np.mean(b)) for b in correct_b])
        measured = [round(100 * d, 3) for d in diffs]
        texts = {
            "test": f"a paired t over {k} training seeds on the {where} (accuracies given are seed means; per "
            f"seed: {', '.join(f'{100 * d:+.2f}' for d in diffs)} points)",
            "seeds": f"{k} training seeds (initial weights, minibatch order and penalized layers), whose variance "
            "the interval covers",
            "seeds_sentence": f"{k} training seeds: the interval covers training-seed variance.",
        }
    fields = book[key].fields
    return book(key, measured, eff, premises=premises, **{f: t for f, t in texts.items() if f in fields}, **values)


def seed_values(pts: PersistentTrainer | Sequence[PersistentTrainer]) -> dict[str, Any]:
    """:func:`accuracy_claim_values` of one run; of several seeds, the accuracies' means and the champions as text."""
    vs = [accuracy_claim_values(pt) for pt in _seeds(pts)]
    if len(vs) == 1:
        return vs[0]
    out: dict[str, Any] = {k: float(np.mean([v[k] for v in vs])) for k in vs[0] if k != "champion"}
    out["champion"] = " / ".join(str(v["champion"]) for v in vs) + " over the seeds"
    return out


def championship_claim(
    book: ClaimBook,
    key: str,
    pts: PersistentTrainer | Sequence[PersistentTrainer],
    splits: Splits,
    *,
    premises: Sequence[Premise],
    **values: Any,
) -> Claim:
    """The claim ``key`` that a run's championship classifies the test images better than its plain model.

    On the test images (:func:`accuracy_claim`: McNemar for one run, a paired t over the seeds for several), which
    played no part in choosing the championship. The templates get the runs' accuracies (:func:`seed_values`:
    ``champion``, ``plain_val``, ``plain_test``, ``champ_val``, ``champ_test``) and ``values``. A championship that is
    the plain model is an outcome, not a failed premise: its difference is exactly 0 (at one seed the interval [0, 0],
    not held by :func:`figures.verdict.verdict_for`; over seeds a 0 in the t interval, or, when every seed's difference
    is equal, a degenerate sample decided by the sign test, :func:`figures.verdict.degenerate_effect`).
    """
    runs = _seeds(pts)
    champ = [test_correct(pt, pt.champion_, splits) for pt in runs]
    plain = [test_correct(pt, 0, splits) for pt in runs]
    same = [pt.champion_ == 0 for pt in runs]
    return accuracy_claim(book, key, champ, plain, premises=premises, same_network=same, **seed_values(runs), **values)


def with_seeds(result: FigureResult, runs: Sequence[PersistentTrainer]) -> FigureResult:
    """``result`` noting its training seeds in the caption and the scaling (one seed, the quick run: unchanged)."""
    if len(runs) == 1:
        return result
    champs = ", ".join(str(pt.champion_) for pt in runs)
    seeds = (
        f"{len(runs)} training seeds 0-{len(runs) - 1} (initial weights, minibatch order and penalized layers; the "
        f"same data split), otherwise the quick settings; championships per seed: {champs}; the plots, the layers "
        "and the exact checks show seed 0 (the quick run)"
    )
    return dataclasses.replace(
        result,
        caption=f"{result.caption} Drawn: training seed 0 of {len(runs)}; the claims are paired over the seeds.",
        scaling={**result.scaling, "seeds": seeds},
    )


def resolvable(n: int) -> str:
    """The smallest accuracy difference a split of ``n`` images can resolve (about 3 discordant images)."""
    return f"{n} test images: one image is {100 / n:.2f} points"
