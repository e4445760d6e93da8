"""Shared setup of the Tunnels figures (private to ``figures/tunnels_*.py``).

Source: "Escaping Flat Areas via Function-Preserving Structural Network Modifications" (``shared/papers/
002_*.txt``), Sec. 4.1-4.3 and App. B.1: a single hidden conv layer (8 filters of 5x5, sigmoid) and a softmax
layer on MNIST (pixel means subtracted), Newton's method with the full empirical Hessian (step 0.1, 20 steps)
to land in a flat area, then SGD (learning rate 1.0, minibatch 256).

Quick scale (two CPU cores, the dense Hessian must stay small): scikit-learn's 8x8 digits (first 256 training
images), 2 filters of 5x5 (382 parameters), Newton 20 steps of size 0.1 (as the paper), minibatch 128,
3 repetitions. The Newton
point is computed once and cached under ``<gallery>/_cache/tunnels/`` (safetensors, keyed by the settings and
this file's source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn

from figures.contract import Scale, require_data
from landscape.data import load_digits_split, load_mnist_idx
from landscape.models import SigmoidConvNet
from landscape.params import model_at, parameters_to_vector
from landscape.train import Callback, StepEvent, Trainer, evaluate_dataset
from tunnels.flat import newton_flat

SOURCE = "Tunnels (002), anonymous ICLR 2019 submission"
COLORS = {"control": "#1f77b4", "proposed": "#2ca02c", "random": "#ff7f0e", "constant": "#9467bd",
          "half": "#7f7f7f", "pgd": "#2ca02c", "neon": "#d62728"}


@dataclasses.dataclass(frozen=True)
class Setup:
    """Settings of the single-hidden-layer experiments (Sec. 4.1-4.3)."""

    scale: str
    n_train: int
    filters: int
    kernel: int
    newton_steps: int
    newton_step_size: float
    lr: float
    batch_size: int
    open_at: int
    close_at: int
    total_steps: int
    repetitions: int
    t: float
    seed: int = 0

    def key(self) -> str:
        """Cache key: the settings and this file's source."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()[:16]

    def scaling(self, data_desc: str) -> dict[str, Any]:
        """The scaling record of a figure."""
        return {"model": f"SigmoidConvNet: 1 conv layer, {self.filters} filters {self.kernel}x{self.kernel}, sigmoid, "
                         "softmax layer (paper: 8 filters 5x5)",
                "data": data_desc, "epochs": f"{self.total_steps} SGD steps (minibatch {self.batch_size})",
                "repetitions": self.repetitions,
                "newton": f"{self.newton_steps} steps of size {self.newton_step_size} (paper: 20 of 0.1)",
                "sgd_lr": self.lr, "open_close": f"open at step {self.open_at}, close at {self.close_at}",
                "t": self.t}


def make_setup(scale: Scale | str) -> Setup:
    """Quick or full settings."""
    if Scale(scale) is Scale.FULL:  # App. B.1
        return Setup("full", 60000, 8, 5, 20, 0.1, 1.0, 256, 50, 300, 1000, 10, 1.0)
    return Setup("quick", 256, 2, 5, 20, 0.1, 1.0, 128, 50, 300, 400, 3, 1.0)


def load_data(setup: Setup, data_dir: Path | None) -> tuple[tuple[Tensor, Tensor], str]:
    """Training pair with the pixel mean subtracted (App. B), and its description."""
    if setup.scale == "full":
        root = require_data(data_dir, "train-images-idx3-ubyte", what="full MNIST (the four IDX files)")
        sp = load_mnist_idx(root, val_size=0)
        desc = "MNIST (60,000 training images)"
    else:
        sp = load_digits_split()
        desc = f"sklearn digits 8x8, first {setup.n_train} training images"
    x, y = sp.train
    x, y = x[: setup.n_train], y[: setup.n_train]
    return (x - x.mean(), y), desc + ", pixel mean subtracted"


def initial_model(setup: Setup, input_shape: tuple[int, ...]) -> nn.Module:
    """The network at its seeded initialization."""
    torch.manual_seed(setup.seed)
    return SigmoidConvNet(input_shape, 10, filters=setup.filters, kernel_size=setup.kernel)


def cache_dir(out: Path | str) -> Path:
    """``<gallery>/_cache/tunnels``."""
    d = Path(out).resolve().parent / "_cache" / "tunnels"
    d.mkdir(parents=True, exist_ok=True)
    return d


def newton_point(setup: Setup, data: tuple[Tensor, Tensor], cache: Path | None, progress: bool = False
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """The flat-area starting point found by damped Newton (cached); returns the model and Newton's record."""
    net = initial_model(setup, tuple(data[0].shape[1:]))
    path = None if cache is None else cache / f"newton_{setup.key()}.safetensors"
    if path is not None and path.exists():
        t = safetensors.torch.load_file(str(path))
        info = json.loads(path.with_suffix(".json").read_text())
        return model_at(net, t["theta"]), info
    res = newton_flat(net, data, nn.functional.cross_entropy, steps=setup.newton_steps,
                      step_size=setup.newton_step_size, damping=1e-4, progress=progress)
    info = {"losses": res.losses, "grad_norms": res.grad_norms, "min_eig": res.min_eigenvalues,
            "max_eig": res.max_eigenvalues}
    if path is not None:
        safetensors.torch.save_file({"theta": parameters_to_vector(res.model).detach().contiguous()}, str(path))
        path.with_suffix(".json").write_text(json.dumps(info))
    return res.model, info


class FullLoss(Callback):
    """Records the full-batch training loss (eval mode) at step 0 and every ``every`` steps."""

    def __init__(self, data: tuple[Tensor, Tensor], every: int = 5, extra: Callable[[nn.Module], float] | None = None):
        self.data, self.every, self.extra = data, every, extra
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.extras: list[float] = []

    def _rec(self, trainer: Trainer) -> None:
        self.steps.append(trainer.step)
        self.losses.append(evaluate_dataset(trainer.model, self.data, nn.functional.cross_entropy,
                                            accuracy=False)["loss"])
        if self.extra is not None:
            self.extras.append(self.extra(trainer.model))

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._rec(trainer)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        if event.step % self.every == 0:
            self._rec(trainer)


def mean_std(rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over repetitions (rows)."""
    a = np.asarray(rows, dtype=float)
    return a.mean(0), a.std(0)


def band_traces(go: Any, x: np.ndarray, mean: np.ndarray, std: np.ndarray, name: str, color: str) -> list[Any]:
    """Plotly traces of a mean line with a one-standard-deviation band."""
    rgba = f"rgba({int(color[1:3], 16)},{int(color[3:5], 16)},{int(color[5:7], 16)},0.2)"
    return [
        go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[mean + std, (mean - std)[::-1]], fill="toself", fillcolor=rgba,
                   line={"width": 0}, hoverinfo="skip", showlegend=False),
        go.Scatter(x=x, y=mean, mode="lines", name=name, line={"color": color}),
    ]
