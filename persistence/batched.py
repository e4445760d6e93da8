"""The ``"batched"`` engine of :class:`persistence.PersistentTrainer`: one persistent iteration of an MLP, fast.

The ``"loop"`` engine trains each iteration through :class:`landscape.train.Trainer` (any model, loss,
optimizer and minibatching). This engine trains the same iteration with the hand-derived loss and gradient of
:mod:`persistence.mlp` and the multi-step function of :mod:`persistence.stepper` (compiled, or eager), which on
two CPU cores turns the paper's 1-D regression chain (PN Sec. 3, Algorithm 1: 100 iterations of 50,000 steps)
from hours into minutes. Its arithmetic is the loop engine's, up to float rounding.

What both engines share, so that a run does not depend on the engine beyond rounding: the trainer's iteration
loop, the layer draw (:func:`persistence.penalty.draw_layer`), the snapshot schedule and tags (this engine
replays its recorded points through the same :class:`landscape.train.RecordTrajectory` callback, with the
steps and epochs a full-batch ``Trainer`` reports: one epoch per step), and the checkpoint/resume through
each iteration's trajectory plus the trainer's ``state.json``.

Scope: ``nn.Sequential`` of ``Linear`` (with bias) and ``ReLU`` layers, ``Linear`` first and last; the mean
squared error; full-batch ``torch.optim.SGD`` with momentum (no dampening, Nesterov, weight decay); tensor-pair
data. Anything else: ``engine="loop"``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.params import ParamLayout, parameters_to_vector
from landscape.train import RecordTrajectory, StepEvent, make_optimizer
from persistence.mlp import (
    anchor_matrices,
    check_xy,
    dtype_of,
    layer_scales,
    mlp_widths,
    mse,
    stack_to_vectors,
    vectors_to_stack,
)
from persistence.stepper import Backend, Stepper, log_steps, torch_threads

__all__ = [
    "BATCHED_OPTIONS",
    "BATCHED_DEFAULTS",
    "sgd_hyperparameters",
]  # BatchedEngine is the trainer's; build it through PersistentTrainer

# The Trainer keywords this engine reads, and its own; anything else is an error naming engine="loop".
BATCHED_OPTIONS = {
    "steps": "optimizer steps per iteration (required)",
    "batch_size": "None only (full batch)",
    "optimizer_kwargs": "hyperparameters of a named optimizer",
    "record_every_steps": "snapshot every k steps (plus the first and last point)",
    "record_every_epochs": "None only (one epoch is one step; use record_every_steps)",
    "log_every": "log the loss and penalty every k steps (default 100)",
    "backend": "'auto', 'compiled' or 'eager'",
    "steps_per_call": "steps unrolled into one compiled call (default 8)",
    "threads": "torch intra-op threads during the run (default 1; None: unchanged)",
}

# Defaults of the engine's own keywords (not the Trainer's), shown in PersistentTrainer's signature.
BATCHED_DEFAULTS: dict[str, Any] = {"log_every": 100, "backend": "auto", "steps_per_call": 8, "threads": 1}


def _is_mse(loss_fn: Any) -> bool:
    if loss_fn is nn.functional.mse_loss or loss_fn == "mse":
        return True
    return isinstance(loss_fn, nn.MSELoss) and loss_fn.reduction == "mean"


def sgd_hyperparameters(optimizer: Any, optimizer_kwargs: Mapping[str, Any] | None) -> tuple[float, float]:
    """``(lr, momentum)`` of an optimizer spec that builds plain ``torch.optim.SGD`` (the batched engine's scope).

    Raises:
        ValueError: If the spec builds another optimizer, or SGD with dampening, Nesterov, weight decay,
            ``maximize`` or several parameter groups.
    """
    probe = [nn.Parameter(torch.zeros(1))]
    opt = make_optimizer(optimizer, probe, **dict(optimizer_kwargs or {})) if isinstance(optimizer, str) else None
    if opt is None:
        if not callable(optimizer):
            raise TypeError(f"optimizer must be a method name or a factory params -> Optimizer, got {optimizer!r}")
        opt = optimizer(probe)
    hint = "the batched engine runs plain full-batch SGD with momentum; use engine='loop'"
    if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
        raise ValueError(f"the optimizer is {type(opt).__name__}; {hint}")
    g = opt.param_groups[0]
    extras = {k: g.get(k) for k in ("dampening", "nesterov", "weight_decay", "maximize") if g.get(k)}
    if extras:
        raise ValueError(f"SGD with {extras}; {hint}")
    return float(g["lr"]), float(g.get("momentum", 0.0))


@dataclass
class _RunState:
    """What :class:`~landscape.train.RecordTrajectory` reads of a trainer, for replaying recorded points."""

    model: nn.Module
    step: int = 0
    epoch_progress: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)

    def drain_events(self) -> list[dict[str, Any]]:
        return []

    def move_to(self, vector: Tensor, step: int) -> None:
        torch.nn.utils.vector_to_parameters(vector, self.model.parameters())
        self.step, self.epoch_progress = step, float(step)


class BatchedEngine:
    """Trains one persistent iteration of a Linear/ReLU MLP with the fast hand-derived step.

    Args:
        model: The initial model (architecture, dtype, weights); never modified.
        data: Training pair ``(X (N, in), y (N, out))``, validated.
        eval_data: Named evaluation pairs.
        loss_fn: Must be the mean squared error.
        optimizer: A spec building plain ``torch.optim.SGD`` (see :func:`sgd_hyperparameters`).
        capacity: Anchor rows of the compiled function (the chain's iterations minus one).
        options: Keywords of :data:`BATCHED_OPTIONS` (``steps`` required).

    Raises:
        TypeError: If the model is not a Linear/ReLU stack.
        ValueError: On another loss or optimizer, minibatches, or keywords this engine does not take.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        eval_data: Mapping[str, Any],
        loss_fn: Any,
        optimizer: Any,
        capacity: int,
        options: Mapping[str, Any],
    ) -> None:
        unknown = sorted(set(options) - set(BATCHED_OPTIONS))
        if unknown:
            raise ValueError(
                f"the batched engine does not take {unknown} (it takes {sorted(BATCHED_OPTIONS)}); use engine='loop'"
            )
        if "steps" not in options or options["steps"] is None or int(options["steps"]) < 0:
            raise ValueError("the batched engine needs steps=... (>= 0): it trains by full-batch steps")
        if options.get("batch_size") is not None:
            raise ValueError(
                "the batched engine trains full batch (batch_size=None); use engine='loop' for minibatches"
            )
        if options.get("record_every_epochs") is not None:
            raise ValueError("the batched engine records by steps (one epoch is one step): pass record_every_steps")
        if not _is_mse(loss_fn):
            raise ValueError(
                f"the batched engine computes the mean squared error, got loss {loss_fn!r}; use engine='loop'"
            )
        for name, d in {"data": data, **{f"eval_data[{k!r}]": d for k, d in eval_data.items()}}.items():
            if not (isinstance(d, tuple | list) and len(d) == 2 and all(isinstance(t, Tensor) for t in d)):
                raise ValueError(f"the batched engine needs {name} as a tensor pair (X, y); use engine='loop'")
        self.widths = mlp_widths(model)
        self.dtype = dtype_of(model)
        self.layout = ParamLayout.from_model(model)
        self.initial = parameters_to_vector(model).detach()
        self.template = model
        self.x, self.y = check_xy(data[0], data[1], self.widths, self.dtype, "training data")
        self.evals = {
            k: check_xy(d[0], d[1], self.widths, self.dtype, f"eval_data[{k!r}]") for k, d in eval_data.items()
        }
        self.lr, self.momentum = sgd_hyperparameters(optimizer, options.get("optimizer_kwargs"))
        self.steps = int(options["steps"])
        self.log_every = int(options.get("log_every", BATCHED_DEFAULTS["log_every"]))
        self.log_steps = log_steps(self.steps, self.log_every)
        self.record_every = options.get("record_every_steps")
        if self.record_every is not None and int(self.record_every) < 1:
            raise ValueError(f"record_every_steps must be a positive integer or None, got {self.record_every}")
        self.threads = options.get("threads", BATCHED_DEFAULTS["threads"])
        self.capacity = max(capacity, 1)  # anchor rows, padded with zeros: one compiled shape for the whole chain
        backend = parse_option(Backend, options.get("backend", BATCHED_DEFAULTS["backend"]), "backend")
        self.stepper = Stepper(
            backend,
            int(options.get("steps_per_call", BATCHED_DEFAULTS["steps_per_call"])),
            self.lr,
            self.momentum,
            penalty=True,
        )

    def settings(self) -> dict[str, Any]:
        """What the run's result depends on beyond the trainer's own settings (part of the resume fingerprint)."""
        import hashlib

        h = hashlib.sha256(self.x.numpy().tobytes() + self.y.numpy().tobytes())
        for name, (ex, ey) in sorted(self.evals.items()):
            h.update(name.encode() + ex.numpy().tobytes() + ey.numpy().tobytes())
        return {
            "engine": "batched",
            "steps": self.steps,
            "lr": self.lr,
            "momentum": self.momentum,
            "log_every": self.log_every,
            "record_every_steps": self.record_every,
            "dtype": str(self.dtype).removeprefix("torch."),
            "data_sha256": h.hexdigest(),
        }

    @property
    def backend_used(self) -> str:
        """``"compiled"`` or ``"eager"`` (after a compiler failure under ``"auto"``, eager)."""
        return "eager" if self.stepper.multi is self.stepper.eager else "compiled"

    def run(
        self,
        iteration: int,
        anchors: Tensor,
        layer: str | None,
        scale: float,
        trajectory: Any,
        tags: Mapping[str, Any],
    ) -> tuple[Tensor, dict[str, float], dict[str, Any]]:
        """Train one iteration from the initial weights; record it into ``trajectory``.

        Args:
            iteration: The iteration (0: plain, no penalty).
            anchors: Previous converged solutions ``(K, numel)``.
            layer: The penalized layer (``None``: all).
            scale: ``lambda`` times the depth factor.
            trajectory: The iteration's trajectory.
            tags: Tags of every snapshot.

        Returns:
            ``(final (numel,), metrics, history)``: metrics ``train_loss`` (MSE at the final point),
            ``train_penalty`` and ``<name>_loss``; history ``steps``, ``loss``, ``penalty`` at the logged steps
            and the iteration's ``time`` in seconds.
        """
        t0 = time.perf_counter()
        mats = anchor_matrices(self.layout, anchors.to(self.dtype), self.dtype, self.capacity)
        scales = layer_scales(self.layout, None if layer is None else [layer], scale, self.dtype)
        if iteration == 0:
            scales.zero_()
        k = self.record_every
        rec_steps = [] if k is None else list(range(k, self.steps + 1, k))
        want = np.union1d(self.log_steps, np.array(rec_steps, dtype=np.int64) - 1).astype(np.int64)
        with torch_threads(self.threads), torch.no_grad():
            start = vectors_to_stack(self.initial.clone(), self.widths)
            ps, ls, pn, recs = self.stepper.run(start, self.x, self.y, self.steps, want, mats, scales, k)
            final = stack_to_vectors(ps)[0]
            metrics = {"train_loss": float(ls[0, -1]), "train_penalty": float(pn[0, -1])}
            for name, (ex, ey) in self.evals.items():
                metrics[f"{name}_loss"] = float(mse(ps, ex, ey)[0])
        col = {int(s): j for j, s in enumerate(want)}
        # Replay the recorded points through the loop engine's recording callback.
        state = _RunState(copy.deepcopy(self.template))
        rec = RecordTrajectory(trajectory, every_steps=k, every_epochs=None, tags=tags)
        rec.on_train_begin(state)  # type: ignore[arg-type]
        for s, vec in zip(rec_steps, recs[1:]):
            state.move_to(vec[0], s)
            loss = float(ls[0, col[s - 1]] + pn[0, col[s - 1]])  # the step's loss, at its start, with the penalty
            rec.on_step_end(state, StepEvent(s, s - 1, 0, loss, True))  # type: ignore[arg-type]
        state.move_to(final, self.steps)
        state.last_metrics = dict(metrics)
        rec.on_train_end(state)  # type: ignore[arg-type]
        logged = [col[int(s)] for s in self.log_steps]
        history = {
            "steps": [int(s) for s in self.log_steps],
            "loss": ls[0, logged].tolist(),
            "penalty": pn[0, logged].tolist(),
            "time": time.perf_counter() - t0,
        }
        return final, metrics, history

    def depth_factor(self, final_plain: Tensor, history_plain: Mapping[str, Any]) -> float:
        """The preprint's ``|L(w_ini) - L(w_0)|`` (PN preprint eq. 4) from the plain iteration's final loss."""
        l_ini = float(mse(vectors_to_stack(self.initial, self.widths), self.x, self.y)[0])
        return abs(l_ini - float(history_plain["loss"][-1]))
