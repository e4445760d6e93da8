"""Checkpoint a :class:`~landscape.train.loop.Trainer` at an epoch end and resume it, bit for bit.

Training ``N`` epochs, checkpointing and resuming for ``M`` more gives, on CPU, the same weights, optimizer state,
history and recorded snapshots as training ``N + M`` epochs in one go. A checkpoint holds everything that decides
the continuation:

* the model's parameters and buffers (BatchNorm running statistics) and the optimizer's state (a
  :class:`~landscape.train.optim.SwitchSchedule`'s phase, step count and current optimizer; an RK2's inner one);
* the global torch generator (dropout, random draws) and the trainer's shuffling generator;
* the step and epoch counters, the per-epoch ``history_``, ``last_metrics`` and events not yet recorded;
* the state of the loss function and of every callback that has one (``state_dict()`` / ``load_state_dict()``:
  :class:`~landscape.train.callbacks.RecordTrajectory`'s last recorded step and pending events, a loss that counts
  its calls). A callback without state has its ``on_train_begin`` called again when the run resumes (a learning-rate
  rule re-applies itself at the resumed step); one with state has ``load_state_dict`` called instead.

Only epoch ends can be checkpointed: mid-epoch the shuffled order and the epoch's running sums are the loop's own
locals. Take the checkpoint after a step that ends an epoch (``for event in trainer: if event.epoch_end: ...``) or
from a finished trainer whose last step ended an epoch. The resumed trainer is built with the arguments of the run it
continues (the same model architecture, data, loss, optimizer, batching, callbacks and trajectory store);
``epochs=``/``steps=`` count from the start of the run, so ``epochs=N + M`` trains ``M`` more. A recording run resumes
into the store it was recording into (the snapshots continue there).

Files hold tensors, numbers, strings, lists and dicts only and are read with ``torch.load(weights_only=True)``:
loading one never runs code. The global NumPy and Python generators are not part of a checkpoint (the trainer never
draws from them).

Example:
    >>> import torch
    >>> from torch import nn
    >>> X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> net = nn.Linear(4, 3)
    >>> a = Trainer(net, (X, y), epochs=2, batch_size=8, optimizer_kwargs={"lr": 0.1}).fit()
    >>> b = resume(Trainer(net, (X, y), epochs=3, batch_size=8, optimizer_kwargs={"lr": 0.1}), trainer_state(a)).fit()
    >>> c = Trainer(net, (X, y), epochs=3, batch_size=8, optimizer_kwargs={"lr": 0.1}).fit()
    >>> torch.equal(b.model.weight, c.model.weight), b.history_ == c.history_
    (True, True)
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from landscape.train.loop import Trainer
from landscape.validation import is_tensor_pair

__all__ = ["CheckpointError", "load_checkpoint", "resume", "save_checkpoint", "trainer_state"]

FORMAT = "landscape.trainer_checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be taken, read or resumed here (the message names the problem and the fix)."""


def _state_of(obj: Any) -> Any:
    """``obj.state_dict()`` copied (no tensor shared with the live run), or ``None`` when it keeps no state."""
    get = getattr(obj, "state_dict", None)
    return copy.deepcopy(get()) if callable(get) else None


def _layout(trainer: Trainer) -> dict[str, Any]:
    """What must agree between the run that saved and the trainer that resumes (batching decides the batches)."""
    data = trainer.data
    n = int(data[0].shape[0]) if is_tensor_pair(data) else None  # type: ignore[index]
    return {
        "batch_size": trainer.batch_size,
        "samples": n,
        "shuffle": bool(trainer.shuffle),
        "batches_per_epoch": trainer.batches_per_epoch,
    }


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """A checkpoint of ``trainer`` at its current step, which must end an epoch (a copy: training may go on).

    Args:
        trainer: A trainer between steps (in the body of ``for event in trainer`` after an ``epoch_end`` step) or
            finished, whose last step ended an epoch.

    Returns:
        A dict of tensors, numbers, strings, lists and dicts (:func:`save_checkpoint` writes it, :func:`resume`
        continues from it).

    Raises:
        CheckpointError: If nothing was trained yet, the run was stopped (``stop()``, a non-finite loss) or its
            last step did not end an epoch.
    """
    if trainer.step == 0 or not trainer.history_:
        raise CheckpointError(
            f"this trainer has finished no epoch yet (step {trainer.step}); a checkpoint is taken at an epoch end: "
            "take it after a step whose event has epoch_end=True, or from a finished trainer"
        )
    if trainer._stop:
        raise CheckpointError(
            f"this run was stopped at step {trainer.step} (stop() or a non-finite loss): it has nothing to continue; "
            "checkpoint an earlier epoch end"
        )
    last = trainer.history_[-1]
    if last.get("step") != trainer.step:
        raise CheckpointError(
            f"step {trainer.step} is inside epoch {int(last['epoch']) + 1} (the last epoch ended at step "
            f"{last.get('step')}); checkpoints are taken at epoch ends only, where the shuffled order starts afresh: "
            "take it after a step whose event has epoch_end=True"
        )
    gen = trainer._generator
    if gen is None:  # a finished epoch means the loop ran, which made the generator
        raise CheckpointError("this trainer's shuffling generator is missing; was it run by Trainer.__iter__?")
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": int(trainer.step),
        "epochs_done": int(last["epoch"]),
        "layout": _layout(trainer),
        "model_class": type(trainer.model).__name__,
        "model": copy.deepcopy(trainer.model.state_dict()),
        "optimizer_class": type(trainer.optimizer).__name__,
        "optimizer": _state_of(trainer.optimizer),
        "loss": _state_of(trainer.loss_fn),
        "callbacks": [{"class": type(cb).__name__, "state": _state_of(cb)} for cb in trainer.callbacks],
        "history": copy.deepcopy(trainer.history_),
        "last_metrics": dict(trainer.last_metrics),
        "events": copy.deepcopy(trainer._events),
        # a finished run's own end state (code run since may have drawn), else the generator now
        "rng": {
            "torch": trainer._rng_end if trainer._rng_end is not None else torch.get_rng_state(),
            "shuffle": gen.get_state(),
        },
    }


def save_checkpoint(trainer: Trainer | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint of ``trainer`` (or one :func:`trainer_state` returned) to ``path``, whole or not at all.

    Args:
        trainer: The trainer (see :func:`trainer_state` for when it can be checkpointed) or its state.
        path: The file (its directory must exist); written to a temporary file and renamed over it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    state = trainer_state(trainer) if isinstance(trainer, Trainer) else trainer
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(state), fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``: no code runs).

    Raises:
        FileNotFoundError: If there is no such file.
        CheckpointError: If the file is damaged, is not a trainer checkpoint, or has another format version.
    """
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable trainer checkpoint ({type(e).__name__}: {e}); the file is damaged or is not one "
            "save_checkpoint wrote: checkpoint the run again"
        ) from e
    _check_format(state, str(path))
    return state


def _check_format(state: Any, where: str) -> None:
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{where}: not a trainer checkpoint (no format {FORMAT!r}); pass what trainer_state or load_checkpoint "
            "returned"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{where}: a trainer checkpoint of format version {state.get('version')!r}, this code reads version "
            f"{VERSION}; resume it with the version of the package that wrote it, or train again"
        )


def _mismatch(what: str, saved: Any, here: Any) -> CheckpointError:
    return CheckpointError(
        f"the checkpoint was saved from a run with {what} {saved!r}, this trainer has {here!r}; build the trainer "
        "with the arguments of the run it continues"
    )


def resume(trainer: Trainer, state: Mapping[str, Any], *, optimizer: bool = True) -> Trainer:
    """Make a new ``trainer`` continue the run ``state`` was taken from; iterate or ``fit()`` it as usual.

    The weights, optimizer state, counters, history and callback states are loaded now; the generators are restored
    when the run starts, after the callbacks without state have run their ``on_train_begin``.

    Args:
        trainer: A trainer that has not run, built as the saved run was (``epochs=``/``steps=`` from its start).
        state: What :func:`trainer_state` or :func:`load_checkpoint` returned (not modified).
        optimizer: Load the optimizer's state (its hyperparameters too: the saved ones replace the built ones, as
            ``torch.optim.Optimizer.load_state_dict`` does). ``False`` keeps ``trainer``'s own optimizer as built (a
            run that continues under another optimizer; the caller sets its state).

    Returns:
        ``trainer``.

    Raises:
        CheckpointError: If the checkpoint is not one, or does not fit ``trainer``: another batching or data size,
            another model layout, optimizer or list of callbacks, or fewer epochs/steps than it already trained.
        RuntimeError: If ``trainer`` has run already.
    """
    if trainer._started:
        raise RuntimeError("this Trainer has already run; resume a new one, built as the saved run was")
    _check_format(state, "resume")
    for k, v in _layout(trainer).items():
        if state["layout"].get(k) != v:
            raise _mismatch(k, state["layout"].get(k), v)
    done, step = int(state["epochs_done"]), int(state["step"])
    if trainer.epochs is not None and trainer.epochs < done:
        raise CheckpointError(
            f"the checkpoint has trained {done} epochs and this trainer's epochs={trainer.epochs}; epochs= counts "
            f"from the start of the run: pass epochs={done} + the epochs to add"
        )
    if trainer.steps is not None and trainer.steps < step:
        raise CheckpointError(
            f"the checkpoint has trained {step} steps and this trainer's steps={trainer.steps}; steps= counts from "
            f"the start of the run: pass steps={step} + the steps to add"
        )
    saved_cbs = [c["class"] for c in state["callbacks"]]
    here_cbs = [type(cb).__name__ for cb in trainer.callbacks]
    if saved_cbs != here_cbs:
        raise _mismatch("callbacks", saved_cbs, here_cbs)
    if optimizer and state["optimizer_class"] != type(trainer.optimizer).__name__:
        raise _mismatch("optimizer", state["optimizer_class"], type(trainer.optimizer).__name__)
    try:
        trainer.model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"the checkpoint's weights do not fit this trainer's model ({state['model_class']} saved, "
            f"{type(trainer.model).__name__} here): {e}; build the trainer with the architecture the run trained"
        ) from e
    if optimizer and state["optimizer"] is not None:
        try:
            trainer.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit this trainer's {type(trainer.optimizer).__name__} "
                f"({type(e).__name__}: {e}); build it with the optimizer and hyperparameters of the saved run"
            ) from e
    _load(trainer.loss_fn, state["loss"], "the loss function")
    loaded = []
    for cb, saved in zip(trainer.callbacks, state["callbacks"]):
        _load(cb, saved["state"], f"callback {type(cb).__name__}")
        loaded.append(saved["state"] is not None)
    trainer.step, trainer.epoch, trainer.epoch_progress = step, done, float(done)
    trainer.history_ = copy.deepcopy(list(state["history"]))
    trainer.last_metrics = dict(state["last_metrics"])
    trainer._events = copy.deepcopy(list(state["events"]))
    rng = state["rng"]

    def begin(callbacks: list[Any], gen: torch.Generator) -> None:
        for cb, has_state in zip(callbacks, loaded):
            if not has_state:  # stateless: it sets itself up at the resumed step as at the first
                cb.on_train_begin(trainer)
        # after those hooks (they may draw): the generators as they stood after the saved step
        torch.set_rng_state(rng["torch"])
        gen.set_state(rng["shuffle"])

    trainer._resume = begin
    return trainer


def _load(obj: Any, saved: Any, what: str) -> None:
    load: Callable[[Any], None] | None = getattr(obj, "load_state_dict", None)
    if saved is None:
        return
    if not callable(load):
        raise CheckpointError(
            f"the checkpoint holds a state of {what} and this trainer's {type(obj).__name__} cannot load one; build "
            "the trainer with the objects of the saved run"
        )
    load(copy.deepcopy(saved))
