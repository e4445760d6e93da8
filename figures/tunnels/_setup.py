"""Shared setup of the Tunnels figures (private to ``figures/tunnels/``).

Source: "Escaping Flat Areas via Function-Preserving Structural Network Modifications" (Tunnels), Sec. 4.1-4.3
and App. B.1: a single hidden conv layer (8 filters of 5x5, sigmoid) and a softmax layer on MNIST (pixel means
subtracted), Newton's method with the full empirical Hessian (step 0.1, 20 steps) to land in a flat area, then SGD
(learning rate 1.0, minibatch 256).

The starting point (:func:`saddle_point`): the paper's 20 Newton steps of size 0.1 only shrink the gradient by
0.9^20 = 0.12, and on the quick data they left a gradient norm of 0.225 from which SGD at learning rate 1.0 was not
stuck (loss 2.1 -> 0.64). This package builds a *verified* saddle instead: a 1-filter network is trained to a
critical point in float64 (L-BFGS, then full Newton steps with the empirical Hessian until the gradient norm is
below ``GRAD_TOL``), and its filter is duplicated into ``filters`` identical copies whose outbound weights split
the original's equally (function-preserving; Fukumizu & Amari 2000: such embeddings of a smaller network's
critical point are critical points of the larger one, in general saddles). The gradient there is the 1-filter
network's (below ``GRAD_TOL``); the dense Hessian's smallest eigenvalue is reported (negative: a strict saddle).
Identical filters with identical outbound weights receive identical gradients from every minibatch, so plain SGD
can never leave the symmetric subspace: the control run stays exactly stuck, and every escape (opening, random
opening, perturbed GD, NEON) must break the symmetry. Why label noise: on clean digits even a 1-filter network
separates the training set and its weights run off to infinity (no critical point at finite weights; tried 256 and
1,079 images, kernels 4-6, strides 1-4: weight norms 400-22,000 with the loss still falling); with 25% of the
labels redrawn the 1-filter network has a finite minimum (loss 1.14, weight norm 45).

Quick scale (two CPU cores): scikit-learn's 8x8 digits (all 1,079 training images, 25% of the labels redrawn at
random), 2 filters of 5x5 (382 parameters), SGD learning rate 0.6 (paper: 1.0; at 1.0 the control does not stay
stuck here, see :func:`make_setup`), minibatch 128, 5 repetitions (minibatch orders); one tunnel opened (paper: 2 of
8). The saddle is computed once and cached under
``<gallery>/.cache/tunnels/`` (safetensors, keyed by the settings and this file's source).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import Claim, FigureResult, Panel, Scale, figure_function, register_figure, require_data
from figures.tunnels._newton import lbfgs_then_newton
from figures.tunnels._premises import GRAD_TOL, STUCK_TOL, saddle_premises, stuck_premise  # noqa: F401 (figures import STUCK_TOL from here)
from figures.verdict import Effect, Premise, at_least, paired_effect
from landscape.data import load_digits_split, load_mnist_idx
from landscape.models import SigmoidConvNet
from landscape.params import model_at, parameters_to_vector
from landscape.plot import PALETTE
from landscape.problem import Problem, as_problem
from landscape.train import Callback, StepEvent, Trainer
from landscape.trajectory import build_once, cached_json
from tunnels import NEONEscape, PerturbedGD, TunnelSchedule
from tunnels.flat import dense_hessian, full_batch_objective

if TYPE_CHECKING:
    import matplotlib.figure
    import plotly.graph_objects as go

F = nn.functional

QUICK_LR = 0.6  # SGD learning rate of the quick and medium runs (paper: 1.0; see make_setup)
COLORS = {  # arm -> colour of the one palette
    "control": PALETTE[0],
    "proposed": PALETTE[2],
    "random": PALETTE[1],
    "constant": PALETTE[4],
    "half": PALETTE[7],
    "pgd": PALETTE[2],
    "neon": PALETTE[3],
}
LINE_COLORS = {**COLORS, "pgd": "#8c564b"}  # curves of the figures that draw perturbed GD beside the proposed method


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
    label_noise: float = 0.0
    tunnels: int = 2
    seed: int = 0

    def key(self) -> str:
        """Cache key: the settings and the source of this file and of the critical-point search it uses."""
        h = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        h.update(Path(__file__).read_bytes())
        h.update(Path(__file__).with_name("_newton.py").read_bytes())
        return h.hexdigest()[:16]

    def scaling(self, data_desc: str) -> dict[str, Any]:
        """The scaling record of a figure."""
        return {
            "model": f"SigmoidConvNet: 1 conv layer, {self.filters} filters {self.kernel}x{self.kernel}, sigmoid, "
            "softmax layer (paper: 8 filters 5x5)",
            "data": data_desc,
            "epochs": f"{self.total_steps} SGD steps (minibatch {self.batch_size})",
            "repetitions": self.repetitions,
            "start": f"verified saddle: 1-filter network at a critical point (L-BFGS + up to {self.newton_steps} "
            f"float64 Newton steps of size {self.newton_step_size}), filter duplicated {self.filters}x "
            "(paper: 20 Newton steps of 0.1)",
            "label_noise": self.label_noise,
            "tunnels_opened": f"{self.tunnels} (paper: 2)",
            "sgd_lr": self.lr,
            "open_close": f"open at step {self.open_at}, close at {self.close_at}",
            "t": self.t,
        }


def make_setup(scale: Scale | str) -> Setup:
    """Quick, medium or full settings.

    Medium is quick with runs of 2,000 SGD steps instead of 400 (the same saddle, opening, closing and baselines):
    at 400 steps the runs sit at a noise floor whose final-window changes have either sign (-0.8% to +2.1%), so Fig.
    4's "all methods end at the same loss" is not tested; 2,000 steps (windows of 200) met the convergence premise
    when tried (control -0.5% to +0.1%). Every figure whose runs these are (Figs. 1 left, 2 left and 4, Table 4)
    has the medium setting; Fig. 3 looks only at the steps around the opening and stays quick. Cost measured (one
    torch thread, load 5-9): the seven arms at 2,000 steps took 147 s of wall clock (NEON's arm most of it: 50
    gradient differences every 25 steps); with the deep CNN's medium runs, all six medium Tunnels figures used 315 s
    of CPU (user + system) in 9.4 minutes of wall clock (those numbers are from learning rate 1.0, below).

    Learning rate (quick and medium): 0.6, not the paper's 1.0, to meet the premise that the control stays stuck
    (:func:`stuck_premise`: its loss stays within 2% of the saddle's, either way; the bound is the gallery's, fixed
    before). At 1.0 the control, which cannot leave the saddle's symmetric subspace, does not stay at the saddle's
    loss: SGD lifts it 6-7% above it within the first quarter of the run (3-4% in the last quarter; minibatch 128,
    load 11-17, 2026-12-07), while full-batch gradient descent at 1.0 stays at the saddle exactly. The saddle's largest
    Hessian eigenvalue, 2.15, is above 2 / 1.0: the minibatch noise is amplified along it, not damped. Until that day
    the premise counted only a drop, so that rise passed, and "lower than the control by an escape" partly measured
    it. Tried, control arm only (largest change of a quarter's mean from the saddle's loss, over the 5 repetitions;
    nothing else was looked at to choose): lr 1.0: 5.8-7.1%; minibatch 256 (the paper's) at 1.0: 7.9-10.6%; lr 0.9:
    4.3-4.5%; 0.8: 2.5-3.1%; 0.7: 1.5-2.1% (one repetition above 2%); 0.6: 0.9-1.4%, met; 0.5: 0.6-0.9%. The rule,
    fixed before the claims were measured: the largest learning rate of that grid that meets the premise. The
    paper's 1.0 was its own network's grid-search choice (App. B); its control stays flat. The full scale keeps 1.0.
    """
    if Scale(scale) is Scale.FULL:  # App. B.1
        return Setup("full", 60000, 8, 5, 10, 1.0, 1.0, 256, 50, 300, 1000, 10, 1.0, 0.0, 2)
    quick = Setup("quick", 1079, 2, 5, 4, 1.0, QUICK_LR, 128, 50, 300, 400, 5, 1.0, 0.25, 1)
    if Scale(scale) is Scale.MEDIUM:
        return dataclasses.replace(quick, scale="medium", total_steps=2000)
    return quick


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
    desc += ", pixel mean subtracted"
    if setup.label_noise > 0:
        y = redraw_labels(y, setup.label_noise, setup.seed)
        desc += f", {setup.label_noise:.0%} of the labels redrawn at random (a finite critical point exists)"
    return (x - x.mean(), y), desc


def redraw_labels(y: Tensor, fraction: float, seed: int, classes: int = 10) -> Tensor:
    """A copy of the labels ``(N,)`` with each one, with probability ``fraction``, redrawn uniformly (seeded).

    Label noise gives a small network a finite minimum: on clean labels its weights run off to infinity.
    """
    g = torch.Generator().manual_seed(seed)
    y = y.clone()
    flip = torch.rand(len(y), generator=g) < fraction
    y[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    return y


def load_test(setup: Setup, data_dir: Path | None) -> tuple[tuple[Tensor, Tensor], str]:
    """The held-out test pair (clean labels), with the training pixel mean subtracted, and its description."""
    if setup.scale == "full":
        root = require_data(data_dir, "t10k-images-idx3-ubyte", what="full MNIST (the four IDX files)")
        sp = load_mnist_idx(root, val_size=0)
        desc = f"MNIST test set ({len(sp.test[1]):,} images)"
    else:
        sp = load_digits_split()
        desc = f"sklearn digits 8x8 test split ({len(sp.test[1])} images, clean labels)"
    mean = sp.train[0][: setup.n_train].mean()
    return (sp.test[0] - mean, sp.test[1]), desc


def initial_model(setup: Setup, input_shape: tuple[int, ...]) -> nn.Module:
    """The network at its seeded initialization."""
    torch.manual_seed(setup.seed)
    return SigmoidConvNet(input_shape, 10, filters=setup.filters, kernel_size=setup.kernel)


def duplicate_filters(one: nn.Module, k: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A ``SigmoidConvNet`` with ``k`` copies of ``one``'s single filter, outbound weights split equally.

    Function-preserving: the output equals ``one``'s for every input. Same dtype as ``one``.
    """
    conv, fc = one.conv1, one.fc1
    net = SigmoidConvNet(
        input_shape, fc.out_features, filters=k, kernel_size=conv.kernel_size[0], stride=conv.stride[0]
    ).to(conv.weight.dtype)
    with torch.no_grad():
        net.conv1.weight.copy_(conv.weight.repeat(k, 1, 1, 1))
        net.conv1.bias.copy_(conv.bias.repeat(k))
        net.fc1.weight.copy_(torch.cat([fc.weight / k] * k, 1))  # flatten keeps each filter's map contiguous
        net.fc1.bias.copy_(fc.bias)
    return net


def _critical_one_filter(setup: Setup, data: tuple[Tensor, Tensor]) -> tuple[nn.Module, dict[str, Any]]:
    """The 1-filter network at a critical point in float64: L-BFGS, then full Newton steps (dense Hessian)."""
    x, y = data[0].double(), data[1]
    torch.manual_seed(setup.seed)
    one = SigmoidConvNet(tuple(x.shape[1:]), 10, filters=1, kernel_size=setup.kernel).double()
    tol = GRAD_TOL / 100
    model, res = lbfgs_then_newton(
        one,
        (x, y),
        max_iter=300,
        tolerance_grad=tol,
        stop_below=tol,
        restarts=3,
        newton_steps=setup.newton_steps,
        step_size=setup.newton_step_size,
        damping=0.0,
    )
    return model, {"newton_losses": res.losses, "newton_grad_norms": res.grad_norms}


def saddle_point(
    setup: Setup, data: tuple[Tensor, Tensor], cache: Path | None, progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The verified saddle the single-layer experiments start from (cached); returns the model and its record.

    The record holds ``loss`` and ``grad_norm`` (float64, full batch) at the saddle, ``min_eig`` / ``max_eig`` /
    ``n_negative`` of the dense Hessian (eigenvalues below -1e-8; ``nan`` when the network has more than 5,000
    parameters), ``one_filter_loss`` and the Newton polish's history.
    """
    shape = tuple(data[0].shape[1:])
    ref = initial_model(setup, shape)

    def compute() -> tuple[Tensor, dict[str, Any]]:
        one, info = _critical_one_filter(setup, data)
        net = duplicate_filters(one, setup.filters, shape)
        f = full_batch_objective(net, (data[0].double(), data[1]), F.cross_entropy, dtype=torch.float64)
        theta = parameters_to_vector(net).double()
        g, v = torch.func.grad_and_value(f)(theta)
        info.update(loss=float(v), grad_norm=float(g.norm()), one_filter_loss=float(v), n_params=int(theta.numel()))
        if theta.numel() <= 5000:
            lam = torch.linalg.eigvalsh(dense_hessian(f, theta, progress=progress))
            info.update(min_eig=float(lam[0]), max_eig=float(lam[-1]), n_negative=int((lam < -1e-8).sum()))
        else:
            info.update(min_eig=float("nan"), max_eig=float("nan"), n_negative=-1)
        return theta.float().contiguous(), info

    if cache is None:
        theta, info = compute()
        return model_at(ref, theta), info
    path = Path(cache) / f"saddle_{setup.key()}"

    def build(tmp: Path) -> None:  # a directory: the weights and their record, renamed into place together
        theta, info = compute()
        tmp.mkdir()
        safetensors.torch.save_file({"theta": theta}, str(tmp / "theta.safetensors"))
        (tmp / "info.json").write_text(json.dumps(info))

    build_once(path, build)
    theta = safetensors.torch.load_file(str(path / "theta.safetensors"))["theta"]
    return model_at(ref, theta), json.loads((path / "info.json").read_text())


class FullLoss(Callback):
    """Records the full-batch training loss (eval mode) at step 0 and every ``every`` steps.

    The loss is :func:`~landscape.train.evaluate_dataset`'s (batches of 1024), computed by one
    :class:`~landscape.problem.Problem` per run moved to each model (``with_model``): the data are checked and cast
    once, not at every record (a fifth of the recorder's time), and the batches and their losses are the same.
    """

    def __init__(self, data: tuple[Tensor, Tensor], every: int = 5, extra: Callable[[nn.Module], float] | None = None):
        self.data, self.every, self.extra = data, every, extra
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.extras: list[float] = []
        self._problem: Problem | None = None

    def _loss(self, model: nn.Module) -> float:
        p, dtype = self._problem, next(model.parameters()).dtype
        if p is None or p.dtype != dtype:  # evaluate_dataset's problem: eval mode, batches of 1024, the model's dtype
            p = as_problem(model, self.data, nn.functional.cross_entropy, batch_size=1024)
        else:  # the weights as they are now (a fresh copy of their references, as a new problem takes)
            p = p.with_model(model)
        self._problem = p
        return float(p.loss())

    def _rec(self, trainer: Trainer) -> None:
        self.steps.append(trainer.step)
        self.losses.append(self._loss(trainer.model))
        if self.extra is not None:
            self.extras.append(self.extra(trainer.model))

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._rec(trainer)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        if event.step % self.every == 0:
            self._rec(trainer)


class CloneDistance(Callback):
    """Distance ``||K_u - K_u'||`` between the first opened filter and its clone, every ``every`` steps."""

    def __init__(self, sched: TunnelSchedule, every: int = 5) -> None:
        self.sched, self.every = sched, every
        self.steps: list[int] = []
        self.dist: list[float] = []

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        ev, close = self.sched.open_event_, self.sched.close_at
        if ev is None or (event.step - self.sched.open_at) % self.every or (close is not None and event.step >= close):
            return
        c = ev.changes[0]
        w = trainer.model.get_submodule(c.producer).weight.detach()
        self.steps.append(event.step)
        self.dist.append(float((w[c.unit] - w[c.clone]).norm()))


class _Moves:
    """Mixin: the norm of every weight change a baseline callback makes (``moves_``)."""

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        before = parameters_to_vector(trainer.model)
        n = len(self.steps_)  # type: ignore[attr-defined]
        super().on_step_end(trainer, event)  # type: ignore[misc]
        if len(self.steps_) > n:  # type: ignore[attr-defined]
            self.moves_.append(float((parameters_to_vector(trainer.model) - before).norm()))

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        super().on_train_begin(trainer)  # type: ignore[misc]
        self.moves_: list[float] = []


class MeasuredPGD(_Moves, PerturbedGD):
    """:class:`tunnels.PerturbedGD` that records the norm of each perturbation."""


class MeasuredNEON(_Moves, NEONEscape):
    """:class:`tunnels.NEONEscape` that records the norm of each escape step."""


# Baselines' constants (the paper gives none; chosen to meet the premise that they move the weights measurably,
# from the saddle's curvature: NEON's power iteration step eta below 1 / (largest Hessian eigenvalue 2.15)).
PGD_KW = {"radius": 0.5, "t_thres": 25}
NEON_KW = {"t_thres": 25, "escape_step": 0.5, "iterations": 50, "eta": 0.4, "radius": 1e-2}
NEON_IMAGES = 256  # NEON's gradient differences on the first 256 training images (full batch: 4x slower)
MOVE_MIN = 0.1  # premise: a baseline moves the weights by at least this much (Euclidean norm) per application
FLOAT64_ARMS = ("open_half",)  # run in float64: their claim is about exact arithmetic (see run_arm)
ARMS = (
    "control",
    "open_proposed",
    "open_random",
    "open_constant",
    "open_half",
    "reorg_proposed",
    "reorg_random",
    "pgd",
    "neon",
)


def _arm_callbacks(arm: str, s: Setup, data: tuple[Tensor, Tensor], rep: int) -> tuple[list[Callback], Any]:
    if arm == "control":
        return [], None
    kind, _, mode = arm.partition("_")
    if kind == "open":  # Fig. 1 left (proposed, random) and Fig. 3 (all four modes: the clone's distance)
        sch = TunnelSchedule(
            s.open_at, {"conv1": s.tunnels}, close_at=s.close_at, t=s.t, mode=mode, warmup_steps=0, seed=rep
        )
        return [sch, CloneDistance(sch)], None
    if kind == "reorg":
        sch = TunnelSchedule(
            s.open_at, {"conv1": max(1, s.tunnels)}, action="reorganize", t=s.t, mode=mode, warmup_steps=0, seed=rep
        )
        return [sch], None
    if arm == "pgd":
        cb = MeasuredPGD(s.open_at, seed=rep, **PGD_KW)
        return [cb], cb
    if arm == "neon":
        cb = MeasuredNEON(s.open_at, (data[0][:NEON_IMAGES], data[1][:NEON_IMAGES]), seed=rep, **NEON_KW)
        return [cb], cb
    raise ValueError(f"unknown arm {arm!r}; valid: {ARMS}")


def run_arm(
    arm: str, setup: Setup, data: tuple[Tensor, Tensor], start: nn.Module, cache: Path | None, progress: bool = False
) -> dict[str, Any]:
    """SGD from the saddle for every repetition with one arm's intervention (cached per arm, shared by figures).

    Returns:
        ``{"steps": [...], "losses": [[...] per rep], "moves": [[...] per rep], "dist_steps", "dist": [[...]],
        "theta": [[...] per rep]}``:
        the full-batch loss every 5 steps; for PGD / NEON the norm of each weight change; for ``clone_*`` arms the
        first clone's distance from its origin every 5 steps from the opening to the closing (``open_*`` arms);
        the final parameter vector of each repetition (``open_*`` arms are closed again by then: every arm ends with
        ``filters`` filters).

    The ``open_half`` arm runs in float64 (:data:`FLOAT64_ARMS`), the others in float32. Its claim (Fig. 3: the
    clone of a ``lambda = 1/2`` split never leaves its origin) is exact arithmetic: the two get identical
    gradients. In float32 the clone and its origin sit in different channels whose sums round differently, and
    the saddle's negative curvature amplifies that rounding to about 1e-6 within 250 steps, right at the claim's
    bound (9.2e-7 on one machine, above 1e-6 on another), so the verdict measured the machine's rounding.
    """

    def compute() -> dict[str, Any]:
        out: dict[str, Any] = {"steps": [], "losses": [], "moves": [], "dist_steps": [], "dist": [], "theta": []}
        model = copy.deepcopy(start).double() if arm in FLOAT64_ARMS else start  # the Trainer copies it again
        for rep in tqdm(range(setup.repetitions), disable=not progress, leave=False, desc=arm):
            cbs, mover = _arm_callbacks(arm, setup, data, rep)
            fl = FullLoss(data, every=5)
            tr = Trainer(
                model,
                data,
                F.cross_entropy,
                "sgd",
                optimizer_kwargs={"lr": setup.lr},
                steps=setup.total_steps,
                batch_size=setup.batch_size,
                seed=rep,
                callbacks=[*cbs, fl],
            )
            tr.fit()
            out["theta"].append(parameters_to_vector(tr.model).tolist())  # the final network (Table 4)
            out["steps"] = fl.steps
            out["losses"].append(fl.losses)
            out["moves"].append([] if mover is None else mover.moves_)
            dist = [c for c in cbs if isinstance(c, CloneDistance)]
            if dist:
                out["dist_steps"] = dist[0].steps
                out["dist"].append(dist[0].dist)
        return out

    return cached_json(None if cache is None else Path(cache) / f"arm_{setup.key()}_{arm}.json", compute)  # type: ignore[no-any-return]


def window_mean(res: dict[str, Any], lo: float, hi: float) -> np.ndarray:
    """Per repetition, the mean full-batch loss over the recorded steps in ``[lo, hi]``; shape ``(reps,)``."""
    steps = np.asarray(res["steps"])
    m = (steps >= lo) & (steps <= hi)
    if not m.any():  # a window between two recordings (tiny test runs): the recording nearest to it
        m = np.arange(len(steps)) == int(np.argmin(np.abs(steps - (lo + hi) / 2)))
    return np.asarray(res["losses"], dtype=float)[:, m].mean(1)


def moved_premise(res: dict[str, Any], name: str) -> Premise:
    """Premise: the baseline changed the weights, by at least ``MOVE_MIN`` per application, in every repetition."""
    per_rep = [float(np.mean(m)) if m else 0.0 for m in res["moves"]]
    counts = [len(m) for m in res["moves"]]
    return at_least(
        f"{name} moved the weights (mean norm of its weight changes per run)",
        per_rep,
        MOVE_MIN,
        detail=f"applications per run {counts}; 0 means it never fired",
    )


def paired(a: np.ndarray, b: np.ndarray) -> tuple[list[float], Effect]:
    """Differences ``a - b`` per repetition (a claim's measured values) and their paired effect; ``a``, ``b (R,)``."""
    return (a - b).tolist(), paired_effect(a, b)


def mean_std(rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over repetitions (rows)."""
    a = np.asarray(rows, dtype=float)
    return a.mean(0), a.std(0)


@dataclasses.dataclass(frozen=True)
class SaddleStart:
    """What every single-layer figure starts from: settings, data and the verified saddle (see :func:`saddle_figure`).

    Attributes:
        scale: The gallery scale.
        data_dir: The user's data directory (full scale).
        setup: The settings.
        data: The training images ``(N, 1, H, W)`` and labels ``(N,)``.
        desc: What the data are (for the scaling record).
        start: The saddle the runs start from.
        info: The saddle's record (:func:`saddle_point`).
        cache: The cache of the shared runs (``None``: in memory).
        progress: Show progress bars.
    """

    scale: Scale
    data_dir: Path | None
    setup: Setup
    data: tuple[Tensor, Tensor]
    desc: str
    start: nn.Module
    info: dict[str, Any]
    cache: Path | None
    progress: bool

    def arm(self, arm: str) -> dict[str, Any]:
        """The runs of one arm from the saddle (:func:`run_arm`, cached and shared by the figures)."""
        return run_arm(arm, self.setup, self.data, self.start, self.cache, self.progress)

    def arms(self, arms: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
        """The runs of several arms by label (``{label: arm}``), and the steps they are recorded at ``(T,)``."""
        res = {label: self.arm(a) for label, a in arms.items()}
        return res, np.asarray(next(iter(res.values()))["steps"])  # every arm records at the same steps

    def curves(
        self, arms: Mapping[str, str]
    ) -> tuple[dict[str, dict[str, Any]], np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """:meth:`arms`, and each arm's mean and standard deviation of the loss over the repetitions ``(T,)``."""
        res, steps = self.arms(arms)
        return res, steps, {label: mean_std(r["losses"]) for label, r in res.items()}

    def premises(self, control: dict[str, Any]) -> list[Premise]:
        """The premises of a comparison with the control: the start is a saddle and the control stays stuck."""
        return [*saddle_premises(self.info), stuck_premise(control["losses"], np.asarray(control["steps"]))]

    def result(
        self,
        caption: str,
        panel: str,
        fig: go.Figure,
        mfig: matplotlib.figure.Figure,
        claims: list[Claim],
        **scaling: Any,
    ) -> FigureResult:
        """A single-layer figure's result: one panel, its claims, and the setup's scaling record plus ``scaling``."""
        return FigureResult(
            caption=caption,
            panels=[Panel(panel, plotly=fig, mpl=mfig)],
            claims=claims,
            scaling={**self.setup.scaling(self.desc), **scaling},
        )


def saddle_figure(body: Callable[..., Any]) -> Callable[..., Any]:
    """Give a single-layer figure the one signature of the gallery's figure functions (use as ``@saddle_figure``).

    The decorated function is called as ``figure(scale="quick", data_dir=None, *, cache=None, progress=False,
    setup=None, **options)`` (``setup`` overrides the settings of ``scale``; tests pass a tiny one) and calls
    ``body(start, **options)`` with the :class:`SaddleStart` it builds: the data and the verified saddle (cached).
    """
    return figure_function(lambda scale, data_dir: make_setup(scale), _saddle_start)(body)  # type: ignore[no-any-return]


def single_layer_figure(name: str, title: str, *, medium: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """Register a figure of the single-layer runs: :func:`saddle_figure`, then ``register_figure`` (paper Tunnels).

    Args:
        name: The figure's name.
        title: Its title in the gallery.
        medium: Whether it has the medium setting: yes when it is drawn from the runs whose length the medium scale
            changes (see :func:`make_setup`).
    """

    def decorate(body: Callable[..., Any]) -> Any:
        figure = saddle_figure(body)
        return register_figure(name, paper="tunnels", title=title, scales=("medium",) if medium else ())(figure)

    return decorate


def _saddle_start(
    s: Setup, *, scale: Scale, data_dir: Path | None, cache: Path | None, progress: bool
) -> tuple[SaddleStart]:
    data, desc = load_data(s, data_dir)
    start, info = saddle_point(s, data, cache, progress)
    return (SaddleStart(scale, data_dir, s, data, desc, start, info, cache, progress),)
