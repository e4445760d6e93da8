"""How one Im, Tao & Branson run trains: the trainer of a :class:`RunSpec`, its history and its switch continuation.

The code hashed into :data:`TRAINING_CODE` (part of :meth:`ImSetup.key`): a change here retrains the cached runs.
The pool that trains and caches the runs is :class:`figures.im._runs.ImRuns`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import math
import time
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from figures.im._settings import ImSetup, RunSpec
from figures.im._text import WordLSTM, text_splits, tokenize
from landscape.data import Splits
from landscape.params import parameters_to_vector
from landscape.train import (
    Callback,
    EpochEvent,
    StepEvent,
    SwitchSchedule,
    Trainer,
    evaluate_dataset,
    resume,
    trainer_state,
)
from landscape.trajectory import Trajectory


class _GradCounter:
    """Cross-entropy that counts its calls under autograd: the gradient evaluations of training."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.n += 1
        return nn.functional.cross_entropy(out, y)

    def state_dict(self) -> dict[str, int]:
        """The count, for a checkpoint of the run (:mod:`landscape.train.checkpoint`)."""
        return {"n": self.n}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue counting from a checkpoint."""
        self.n = int(state["n"])


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

    def state_dict(self) -> dict[str, Any]:
        """The rows so far and the initial weights (a checkpoint's; the count is the loss function's)."""
        return {"rows": copy.deepcopy(self.rows), "theta0": self.theta0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint (in place of ``on_train_begin``, which would evaluate row 0 again)."""
        self.rows, self.theta0 = copy.deepcopy(list(state["rows"])), state["theta0"]


class StepDecay(Callback):
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


def _trainer(setup: ImSetup, spec: RunSpec, traj: Trajectory) -> Trainer:
    """The trainer of one run, recording into ``traj`` (initial and final snapshots, plus the switch point)."""
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
        callbacks.append(StepDecay(total, setup.lr_stages))
    if spec.then is None:
        optimizer: Any = spec.method
    else:
        second = (spec.then, dict(spec.then_hyper)) if spec.then_hyper else spec.then
        phases = [(0, (spec.method, hyper)), (float(spec.switch_at), second)]  # type: ignore[arg-type]

        def optimizer(params: Any) -> SwitchSchedule:
            return SwitchSchedule(params, phases, total_steps=total)

        hyper = {}
    return Trainer(
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
    )


Kept = dict[int, tuple[dict[str, Any], float]]
"""A run's states kept at switch steps: ``{step: (trainer_state, the step's training loss)}``."""


def _continue_switch(tr: Trainer, state: Mapping[str, Any], loss: float) -> None:
    """Bring a switched run's new trainer to where it stands after its switch, from the plain run's state there.

    Until the switch the switched run computes what the plain run of its first method computes (the same
    optimizer, hyperparameters, rate schedule, minibatches and dropout masks; the checkpoint tests and the gallery's
    histories show it bitwise), so at the switch step ``k`` (an epoch end) it is the plain run's checkpoint there but
    for what the switch changes: the schedule's second optimizer, built fresh as the switch builds it (its rate set
    by :class:`StepDecay` when the run resumes, as after the switching step), and the run's own snapshots, written
    by its recorder as training would write them (the initial point, and the switch point tagged with the event).
    """
    rec, sched = tr.callbacks[-1], tr.optimizer
    assert isinstance(sched, SwitchSchedule) and len(sched.switch_steps) == 2
    k = sched.switch_steps[1]
    rec.on_train_begin(tr)  # the initial snapshot (the trainer is at its initial point)
    first = sched.name
    resume(tr, state, optimizer=False)  # weights, buffers, generators, counters, history at step k
    params = [p for p in tr.model.parameters() if p.requires_grad]
    fresh = SwitchSchedule(params, [(0, sched.phases[1].optimizer)]).state_dict()["optimizer"]
    sched.load_state_dict({"phase": 1, "steps": k, "switch_steps": [0, k], "events": [], "optimizer": fresh})
    event = {"event": "switch", "from": first, "to": sched.name, "step": k, "phase": 1}
    spe = tr.batches_per_epoch or 1
    rec.on_step_end(tr, StepEvent(step=k, epoch=k // spe - 1, batch=spe - 1, loss=loss, epoch_end=True, events=[event]))


def _train(
    setup: ImSetup,
    spec: RunSpec,
    traj: Trajectory,
    *,
    keep: Collection[int] = (),
    stop: int | None = None,
    start: tuple[Mapping[str, Any], float] | None = None,
) -> Kept:
    """Train one run into ``traj`` and store its history (``spec``, ``history``, ``epochs``, ``fit_time_s``).

    Args:
        setup: The settings.
        spec: The run.
        traj: Its store.
        keep: Epoch-end steps to keep the trainer's state at (the switch steps of runs switched from this one).
        stop: End after this step (a run trained only for the states it keeps).
        start: A switched run's first method's state at the switch step and that step's loss (``keep`` of the
            plain run): the run trains only what follows (:func:`_continue_switch`), with the same result.

    Returns:
        The states kept, by step (a step that was not reached, or whose loss was not finite, is missing).
    """
    tr = _trainer(setup, spec, traj)
    if start is not None:
        _continue_switch(tr, *start)
    kept: Kept = {}
    t0 = time.perf_counter()
    for ev in tr:
        if ev.step in keep and ev.epoch_end and math.isfinite(ev.loss):
            kept[ev.step] = (trainer_state(tr), ev.loss)
        if stop is not None and ev.step >= stop:
            break
    fit_time = time.perf_counter() - t0  # a switched run continued from its plain run's state: the steps after
    log = tr.callbacks[0]
    assert isinstance(log, _EpochLog)
    resumed = None if start is None else int(start[0]["step"])
    traj.update_meta(
        {
            "spec": dataclasses.asdict(spec),
            "history": log.rows,
            "epochs": spec.epochs or setup.epochs,
            "fit_time_s": fit_time,
            "resumed_at_step": resumed,
        }
    )
    return kept


# The code whose change must retrain the cached runs (part of ImSetup.key()).
TRAINING_CODE = hashlib.sha256(
    "".join(
        inspect.getsource(o)
        for o in (
            ImSetup.splits,
            ImSetup.model,
            RunSpec,
            _GradCounter,
            _EpochLog,
            StepDecay,
            _trainer,
            _continue_switch,
            _train,
            WordLSTM,
            text_splits,
            tokenize,
        )
    ).encode()
).hexdigest()


def _first_method(spec: RunSpec) -> RunSpec:
    """The plain run of a switched run's first method: the same run up to the switch."""
    return dataclasses.replace(spec, then=None, switch_at=None, then_hyper=())
