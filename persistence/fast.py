"""Paper-scale speed path of the Persistent Neurons 1-D regression experiment (PN Sec. 3, Fig. 3-5).

The paper trains its ReLU MLP ``R -> 32 -> 32 -> R`` (PN eq. 3) with full-batch gradient descent,
momentum 0.9, lr 0.001 and the mean squared error for 50,000 steps, 100 times from fresh He
initializations (Fig. 4, the re-initialization baseline) and 100 times as one persistent chain
(Fig. 5, Algorithm 1). Through a plain ``nn.Module`` + ``torch.optim`` loop that is well over an hour
on two CPU cores; this module does the same arithmetic in minutes:

* :func:`train_seeds_batched` trains S independent networks as one batched computation: weights
  stacked as ``(S, out, in)`` and ``(S, out)``, a hand-derived forward/backward of batched matmuls.
* :func:`fast_persistent_run` runs Algorithm 1. Its iterations are sequential (each uses every earlier
  converged solution as an anchor), so the speed comes from a fast single-model step: the same
  hand-derived forward/backward plus the penalty gradient of PN eq. (6),
  ``lambda * c * sum_k sign(<Theta_k^l, theta^l>) Theta_k^l / ||Theta_k^l||^2``, with the anchors of
  each layer stacked into one ``(K, n_l)`` matrix (two small matrix-vector products per layer).

Both run several steps per call of a function compiled with ``torch.compile`` (:mod:`persistence.stepper`)
on the hand-derived kernels of :mod:`persistence.mlp`. :func:`fast_persistent_run` is
``PersistentTrainer(..., engine="batched")`` (:mod:`persistence.batched`) with the paper's settings as
arguments and its result gathered into one :class:`FastPersistentResult`.

Scope: ``nn.Sequential`` models of ``Linear`` (with bias) and ``ReLU`` layers, ``Linear`` first and
last (:class:`landscape.models.RegressionMLP` of any depth and width), mean-reduced MSE, full-batch
SGD with momentum exactly as ``torch.optim.SGD`` (``buf = mu * buf + g; p -= lr * buf``; no
dampening, Nesterov or weight decay). Full and partial persistent training and the preprint's depth
factor ``|L(w_ini) - L(w_0)|`` (PN preprint eq. 4-5) are supported. Anything else (other models, losses,
optimizers, minibatches): :class:`persistence.PersistentTrainer`.

The paper's two runs (about 2 and 4 CPU-minutes; see ``benchmarks/bench_persistent.py``)::

    x, y = regression_1d()
    net = build_model("regression_mlp", (1,), 1, m=32, init="he", seed=0)
    seeds = train_seeds_batched(net, x, y, range(100), steps=50_000)         # Fig. 4: seeds.final_loss
    chain = fast_persistent_run(net, x, y, iterations=100, steps=50_000, lam=0.01)  # Fig. 5: chain.champion
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.params import ParamLayout, model_at
from landscape.results import Provenance, Result, register_result
from landscape.trajectory import Trajectory
from persistence.mlp import (
    check_xy,
    dtype_of,
    he_init_vectors,
    mlp_loss_and_grad,
    mlp_widths,
    stack_to_vectors,
    vectors_to_stack,
)
from persistence.penalty import PersistentMode
from persistence.stepper import Backend, Stepper, log_steps, torch_threads
from persistence.trainer import PersistentTrainer, select_champion

__all__ = [
    "Backend",
    "SeedsResult",
    "FastPersistentResult",
    "mlp_widths",
    "vectors_to_stack",
    "stack_to_vectors",
    "he_init_vectors",
    "mlp_loss_and_grad",
    "train_seeds_batched",
    "fast_persistent_run",
]


def _nan_argmin(values: np.ndarray) -> int:
    return int(np.argmin(np.where(np.isnan(values), np.inf, values)))


@register_result
@dataclass(frozen=True, eq=False)
class SeedsResult(Result):
    """The re-initialization baseline: S networks trained independently (PN Fig. 4).

    Attributes:
        widths: Layer widths ``(in, h_1, ..., out)``.
        seeds: The He-initialization seeds, or ``None`` when initial vectors were given.
        initial: Initial parameter vectors ``(S, numel)`` (``named_parameters()`` order of the model).
        final: Trained parameter vectors ``(S, numel)``.
        loss_steps: Steps at which the loss was logged ``(n_log,)``; the last one is ``steps``.
        losses: Training MSE ``(S, n_log)``: at a step, the loss that step starts from; at ``steps``, the
            final point's.
        settings: ``steps``, ``lr``, ``momentum``, ``dtype``, ``backend`` (the one that ran), ``steps_per_call``
            and ``fit_time`` (seconds).
        provenance: Data description and versions.
    """

    _dims = {
        "initial": ("network", "param"),
        "final": ("network", "param"),
        "loss_steps": ("step",),
        "losses": ("network", "step"),
    }
    _coords = {"loss_steps": "step"}
    _thumb = ("losses", "line")

    widths: list[int]
    seeds: list[int] | None
    initial: np.ndarray
    final: np.ndarray
    loss_steps: np.ndarray
    losses: np.ndarray
    settings: dict[str, Any]
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def final_loss(self) -> np.ndarray:
        """Training MSE of every network at its final point, ``(S,)``."""
        return self.losses[:, -1]

    @property
    def best(self) -> int:
        """Index of the network with the lowest final loss (the re-initialization "championship")."""
        return _nan_argmin(self.final_loss)

    def model(self, index: int, template: nn.Module) -> nn.Module:
        """A new model (architecture of ``template``, never modified) at network ``index``'s final weights."""
        return model_at(template, torch.from_numpy(self.final[index]).to(dtype_of(template)))


@register_result
@dataclass(frozen=True, eq=False)
class FastPersistentResult(Result):
    """A persistent chain (PN Algorithm 1, Fig. 5): iteration 0 is the plain model.

    Attributes:
        widths: Layer widths ``(in, h_1, ..., out)``.
        layer_names: The model's layer names (``ParamLayout.layers``), e.g. ``["fc1", "fc2", "fc3"]``.
        initial: The initial vector ``(numel,)`` every iteration starts from.
        finals: Converged vectors ``(I, numel)``; row ``i`` is an anchor of every later iteration.
        loss_steps: Logged steps ``(n_log,)`` (the last is ``steps``).
        losses: Training MSE without the penalty ``(I, n_log)`` (as :attr:`SeedsResult.losses`).
        penalties: The penalty term ``(I, n_log)`` (0 for iteration 0).
        metrics: Per iteration: ``train_loss`` (MSE at the converged point), ``train_penalty`` and
            ``<name>_loss`` per evaluation set.
        layers: Penalized layer per iteration in partial mode (``None`` in full mode and for iteration 0).
        depth_factor: The preprint's ``|L(w_ini) - L(w_0)|`` when used, else ``None``.
        select_by: The championship metric.
        snapshot_steps: Steps of the recorded points ``(n_rec,)`` (empty without ``record_every``).
        snapshots: Recorded points ``(I, n_rec, numel)`` (``(I, 0, numel)`` without ``record_every``).
        settings: Run settings (``iterations``, ``steps``, ``lam``, ``mode``, ``lr``, ``momentum``, ``seed``,
            ``dtype``, ``backend``, ``steps_per_call``, ``fit_time``, per-iteration ``iteration_times``).
        provenance: Data description and versions.
    """

    _dims = {
        "initial": ("param",),
        "finals": ("iteration", "param"),
        "loss_steps": ("step",),
        "losses": ("iteration", "step"),
        "penalties": ("iteration", "step"),
        "snapshot_steps": ("snapshot_step",),
        "snapshots": ("iteration", "snapshot_step", "param"),
    }
    _coords = {"loss_steps": "step", "snapshot_steps": "snapshot_step"}
    _table = ("iteration", "step")
    _thumb = ("losses", "line")

    widths: list[int]
    layer_names: list[str]
    initial: np.ndarray
    finals: np.ndarray
    loss_steps: np.ndarray
    losses: np.ndarray
    penalties: np.ndarray
    metrics: list[dict[str, float]]
    layers: list[str | None]
    depth_factor: float | None
    select_by: str
    snapshot_steps: np.ndarray
    snapshots: np.ndarray
    settings: dict[str, Any]
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def champion(self) -> int:
        """Index of the championship iteration (best ``select_by``; ties: the first)."""
        return select_champion(self.metrics, self.select_by)

    def model(self, iteration: int, template: nn.Module) -> nn.Module:
        """A new model (architecture of ``template``, never modified) at an iteration's converged weights."""
        return model_at(template, torch.from_numpy(self.finals[iteration]).to(dtype_of(template)))

    def champion_model(self, template: nn.Module) -> nn.Module:
        """A new model at the championship's converged weights."""
        return self.model(self.champion, template)

    def trajectory(self, iteration: int, template: nn.Module) -> Trajectory:
        """An in-memory :class:`~landscape.trajectory.Trajectory` of one iteration (tagged with it).

        Holds the recorded snapshots, or the initial and final points when none were recorded.
        """
        layout = ParamLayout.from_model(template)
        traj = Trajectory(layout=layout, meta={"persistent_iteration": iteration, "source": "persistence.fast"})
        tags: dict[str, Any] = {
            "persistent_iteration": iteration,
            "lambda": self.settings["lam"],
            "persistent_mode": self.settings["mode"],
        }
        if self.layers[iteration] is not None:
            tags["persistent_layer"] = self.layers[iteration]
        if self.snapshots.shape[1]:
            points, steps = self.snapshots[iteration], self.snapshot_steps
        else:
            points, steps = np.stack([self.initial, self.finals[iteration]]), np.array([0, self.settings["steps"]])
        for j, (vec, st) in enumerate(zip(points, steps)):
            metrics = self.metrics[iteration] if j == len(steps) - 1 else None
            traj.append(torch.from_numpy(vec.copy()), step=int(st), metrics=metrics, tags=tags)
        return traj


# ------------------------------------------------------------------------------- re-initialization
def train_seeds_batched(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    initial: Tensor | Sequence[int],
    *,
    steps: int,
    lr: float = 1e-3,
    momentum: float = 0.9,
    log_every: int = 100,
    backend: Backend | str = Backend.AUTO,
    steps_per_call: int = 4,
    threads: int | None = 1,
    progress: bool = False,
) -> SeedsResult:
    """Train S copies of an MLP from S starting points at once: full-batch MSE, momentum SGD (PN Fig. 4).

    Network ``j`` follows exactly the arithmetic of ``torch.optim.SGD(lr=lr, momentum=momentum)`` on
    ``mse_loss(model(x), y)`` from its own start (up to float rounding); all S run as one batched
    computation. Defaults are the paper's (PN Sec. 3: lr 0.001, momentum 0.9; 50,000 steps).

    Args:
        model: The architecture (:func:`mlp_widths`) and dtype; never modified.
        x: Inputs ``(N, in)`` (or ``(N,)`` for one feature).
        y: Targets ``(N, out)`` (or ``(N,)``).
        initial: Starting vectors ``(S, numel)``, or seeds of a He initialization (:func:`he_init_vectors`;
            needs equal hidden widths, as ``RegressionMLP``).
        steps: Optimizer steps per network.
        lr: Learning rate.
        momentum: Momentum ``mu``.
        log_every: Log every network's loss every this many steps (and at the end).
        backend: ``"auto"`` (compiled, eager if compilation fails), ``"compiled"`` or ``"eager"``.
        steps_per_call: Steps unrolled into one compiled call (compile time grows with it).
        threads: Torch intra-op threads during the run (``None``: unchanged). 1 by default: on two shared cores,
            two threads made these small matrix products up to 5-100x slower whenever other processes ran.
        progress: Show a progress bar over steps.

    Returns:
        The :class:`SeedsResult`.

    Raises:
        TypeError: If ``model`` is not a Linear/ReLU stack.
        ValueError: On mismatched shapes or settings.

    Memory: about ``8 * S * N * max(widths)`` floats of activations.
    """
    from tqdm.auto import tqdm

    backend = parse_option(Backend, backend, "backend")
    widths = mlp_widths(model)
    dtype = dtype_of(model)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    seeds = None
    if isinstance(initial, Tensor):
        init = initial.detach().to(dtype)
    else:
        seeds = [int(s) for s in initial]
        hidden = set(widths[1:-1])
        if len(hidden) != 1:
            raise ValueError(f"seeds need a RegressionMLP (equal hidden widths), got widths {widths}; pass vectors")
        init = he_init_vectors(
            seeds, m=widths[1], depth=len(widths) - 1, in_features=widths[0], out_features=widths[-1], dtype=dtype
        )
    init = init[None] if init.dim() == 1 else init
    if init.shape[0] == 0:
        raise ValueError("no starting points given")
    x, y = check_xy(x, y, widths, dtype, "train_seeds_batched")
    logged = log_steps(steps, log_every)
    start = time.perf_counter()
    with (
        torch_threads(threads),
        torch.no_grad(),
        tqdm(total=steps, disable=not progress, desc="seeds", unit="step") as bar,
    ):
        stepper = Stepper(backend, steps_per_call, float(lr), float(momentum), penalty=False)
        ps, losses, _, _ = stepper.run(vectors_to_stack(init, widths), x, y, steps, logged, bar=bar)
    settings = {
        "steps": steps,
        "lr": lr,
        "momentum": momentum,
        "dtype": str(dtype).removeprefix("torch."),
        "backend": "eager" if stepper.multi is stepper.eager else "compiled",
        "steps_per_call": stepper.k,
        "fit_time": time.perf_counter() - start,
    }
    return SeedsResult(
        list(widths),
        seeds,
        init.numpy().copy(),
        stack_to_vectors(ps).numpy(),
        logged,
        losses.numpy(),
        settings,
        Provenance.here(data=f"x {tuple(x.shape)}, y {tuple(y.shape)}"),
    )


# ------------------------------------------------------------------------------------- persistent
def fast_persistent_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    iterations: int,
    steps: int,
    lam: float,
    lr: float = 1e-3,
    momentum: float = 0.9,
    mode: PersistentMode | str = PersistentMode.FULL,
    layer: str | None = None,
    depth_factor: bool = False,
    seed: int = 0,
    eval_data: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    select_by: str = "train_loss",
    log_every: int = 100,
    record_every: int | None = None,
    backend: Backend | str = Backend.AUTO,
    steps_per_call: int = 8,
    threads: int | None = 1,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> FastPersistentResult:
    """Persistent training (PN Algorithm 1) of an MLP: the fast path of :class:`persistence.PersistentTrainer`.

    Iteration 0 trains the plain model; iteration ``i`` trains from bitwise the same initial weights
    with ``lam * c * sum_{k<i} sum_l |<Theta_k^l, theta^l>| / ||Theta_k^l||^2`` added to the MSE. Same
    arithmetic as ``PersistentTrainer(model, (x, y), mse_loss, SGD(lr, momentum), steps=steps, ...)``
    with full-batch data (up to float rounding), including the partial-mode layer draws of its ``seed``.
    Paper settings (PN Sec. 3, Algorithm 1): ``iterations=100, steps=50_000, lam=0.01``.

    Args:
        model: The initial model (architecture, dtype and the initial weights); never modified.
        x: Inputs ``(N, in)`` (or ``(N,)``).
        y: Targets ``(N, out)`` (or ``(N,)``).
        iterations: Total iterations including the plain one.
        steps: Optimizer steps per iteration.
        lam: Penalty strength lambda.
        lr: Learning rate.
        momentum: Momentum.
        mode: ``"full"`` (all layers, PN eq. 4) or ``"partial"`` (one layer per iteration, PN eq. 5).
        layer: Partial mode: a fixed layer name instead of the seeded draw.
        depth_factor: Multiply the penalty by ``|L(w_ini) - L(w_0)|`` (PN preprint eq. 4-5).
        seed: Seed of the partial-mode layer draws (as ``PersistentTrainer``).
        eval_data: Named ``(X, y)`` sets evaluated at each converged point (``<name>_loss``).
        select_by: Championship metric (lowest wins), e.g. ``"train_loss"`` (the paper) or ``"val_loss"``.
        log_every: Log the loss every this many steps (and at the end).
        record_every: Record the parameters every this many steps (best a multiple of ``steps_per_call``).
        backend: ``"auto"``, ``"compiled"`` or ``"eager"`` (see :class:`Backend`).
        steps_per_call: Steps unrolled into one compiled call.
        threads: Torch intra-op threads during the run (``None``: unchanged); see :func:`train_seeds_batched`.
        checkpoint: A directory (the trainer's ``out_dir``): every finished iteration's trajectory and the
            resume state are written there, and a rerun with the same settings continues after the last
            finished iteration.
        progress: Show a progress bar over iterations.

    Returns:
        The :class:`FastPersistentResult`.

    Raises:
        TypeError: If ``model`` is not a Linear/ReLU stack (use :class:`persistence.PersistentTrainer`).
        ValueError: On bad settings, or a checkpoint written with other settings.
    """
    mode = parse_option(PersistentMode, mode, "mode")
    widths = mlp_widths(model)
    dtype = dtype_of(model)
    if steps < 0 or iterations < 1:
        raise ValueError(f"need steps >= 0 and iterations >= 1, got steps={steps}, iterations={iterations}")
    x, y = check_xy(x, y, widths, dtype, "training data")
    evals = {
        name: check_xy(ex, ey, widths, dtype, f"eval_data[{name!r}]") for name, (ex, ey) in (eval_data or {}).items()
    }
    valid = sorted(f"{name}_loss" for name in {"train", *evals})
    if select_by not in valid:
        raise ValueError(f"select_by must be one of {valid} (name evaluation sets in eval_data), got {select_by!r}")
    if checkpoint is not None and Path(checkpoint).is_file():
        raise ValueError(f"checkpoint {checkpoint} is a file; give a directory (the persistent trainer's out_dir)")
    start = time.perf_counter()
    pt = PersistentTrainer(
        model,
        (x, y),
        nn.functional.mse_loss,
        "sgd",
        iterations=iterations,
        lam=lam,
        mode=mode,
        layer=layer,
        depth_factor=depth_factor,
        select_by=select_by,
        eval_data=evals,
        seed=seed,
        out_dir=checkpoint,
        progress=progress,
        engine="batched",
        optimizer_kwargs={"lr": lr, "momentum": momentum},
        steps=steps,
        log_every=log_every,
        record_every_steps=record_every,
        backend=backend,
        steps_per_call=steps_per_call,
        threads=threads,
    ).fit()
    engine = pt.batched_engine
    assert engine is not None
    res = pt.results_
    settings: dict[str, Any] = {
        "iterations": iterations,
        "steps": steps,
        "lam": lam,
        "lr": lr,
        "momentum": momentum,
        "mode": mode.value,
        "layer": layer,
        "depth_factor_used": depth_factor,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
        "record_every": record_every,
        "log_every": log_every,
        "select_by": select_by,
        "backend": engine.backend_used,
        "steps_per_call": engine.stepper.k,
        "fit_time": time.perf_counter() - start,
        "iteration_times": [r.history["time"] for r in res if r.history is not None],
    }
    numel = engine.layout.numel
    snapshots = (
        np.stack([r.trajectory.vectors().numpy() for r in res])
        if record_every
        else np.zeros((len(res), 0, numel), dtype=engine.initial.numpy().dtype)
    )
    snap_steps = res[0].trajectory.steps if record_every else np.zeros(0, dtype=np.int64)
    hist = [r.history or {} for r in res]
    return FastPersistentResult(
        widths=list(widths),
        layer_names=list(engine.layout.layers),
        initial=engine.initial.numpy().copy(),
        finals=torch.stack([r.final for r in res]).numpy(),
        loss_steps=engine.log_steps,
        losses=np.array([h["loss"] for h in hist], dtype=engine.initial.numpy().dtype),
        penalties=np.array([h["penalty"] for h in hist], dtype=engine.initial.numpy().dtype),
        metrics=[r.metrics for r in res],
        layers=[r.layer for r in res],
        depth_factor=pt.depth_factor_ if depth_factor else None,
        select_by=select_by,
        snapshot_steps=np.asarray(snap_steps, dtype=np.int64),
        snapshots=snapshots,
        settings=settings,
        provenance=Provenance.here(seed=seed, data=f"x {tuple(x.shape)}, y {tuple(y.shape)}, {str(dtype)}"),
    )
