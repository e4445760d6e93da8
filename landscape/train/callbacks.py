"""What the training loop tells its callbacks (step and epoch events) and the callback that records a trajectory."""

from __future__ import annotations

import copy
import enum
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from landscape._options import check_count

if TYPE_CHECKING:
    from landscape.train.loop import Trainer

__all__ = [
    "LATE_EVENTS_KEY",
    "Callback",
    "EpochEvent",
    "NonFiniteLossError",
    "OnNonFinite",
    "RecordTrajectory",
    "StepEvent",
    "error_event",
    "flush_store",
    "keep_late_events",
    "same_point",
]


class OnNonFinite(str, enum.Enum):
    """What the loop does when a training loss is NaN or infinite."""

    RAISE = "raise"
    STOP = "stop"
    IGNORE = "ignore"


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite (what was recorded before is kept)."""


@dataclass
class StepEvent:
    """What happened in one optimizer step.

    Attributes:
        step: Steps completed so far (1 after the first update).
        epoch: Zero-based epoch the step belongs to.
        batch: Zero-based index of the minibatch within the epoch.
        loss: Training loss (with regularizer) of the batch at the start of the step, as the loss function returns
            it (a sum-reduced loss: the batch's sum).
        epoch_end: Whether this step finished an epoch.
        events: Events raised during the step (optimizer switch, tunnel opening, ...).
    """

    step: int
    epoch: int
    batch: int
    loss: float
    epoch_end: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EpochEvent:
    """Per-epoch metrics.

    ``metrics`` holds ``train_loss`` (running mean over the epoch's batches, in train mode; for a sum-reduced loss
    module the sum of the batches' losses, i.e. the loss over the data as :class:`~landscape.problem.Problem` has it),
    ``train_accuracy`` for class targets, and ``<name>_loss`` / ``<name>_accuracy`` per evaluation set.
    """

    epoch: int
    step: int
    metrics: dict[str, float]


class Callback:
    """Hooks into :class:`Trainer`. Override any subset; every hook receives the trainer."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first step (the model is at its initial point)."""

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:
        """Called after every optimizer step."""

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:
        """Called after every epoch, with its metrics."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once after the last step (also after an early stop)."""

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this callback (:mod:`landscape.train.checkpoint`).

        Tensors, numbers, strings, lists and dicts only. ``None`` (the default): no state across steps, and a resumed
        run calls :meth:`on_train_begin` again.
        """
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, in a resumed run (in place of :meth:`on_train_begin`)."""
        raise NotImplementedError(f"{type(self).__name__} returns a state_dict but defines no load_state_dict")


#: Run-metadata key of events that came after the snapshot of their step, with the model unchanged since.
LATE_EVENTS_KEY = "late_events"


def same_point(trajectory: Any, model: Any) -> bool:
    """Whether ``model`` is, bitwise, the last snapshot of ``trajectory`` (parameters, layout, stored buffers).

    Only a :class:`~landscape.trajectory.store.Trajectory` can be read back; for anything else the answer is no.
    """
    from landscape.trajectory.capture import capture_model
    from landscape.trajectory.store import Trajectory

    if not isinstance(trajectory, Trajectory) or not len(trajectory) or not hasattr(model, "parameters"):
        return False
    last = trajectory[-1]
    layout, vec, buffers, _ = capture_model(model, None, None)
    if layout.specs != last.layout.specs or vec.dtype != last.vector.dtype or not torch.equal(vec, last.vector):
        return False
    if not last.buffers:  # recorded without buffers (Recorder(buffers=False)): the parameters are the point
        return True
    return set(buffers) == set(last.buffers) and all(torch.equal(buffers[k].cpu(), v) for k, v in last.buffers.items())


def error_event(step: int, error: BaseException) -> dict[str, Any]:
    """The event that says a run ended at ``step`` on ``error``: ``{"step", "event": "error", "error", "message"}``.

    The same for the package's Trainer, :class:`~landscape.train.recorder.Recorder` and the framework callbacks,
    so a reader finds why any run stopped under one key.
    """
    return {"step": step, "event": "error", "error": type(error).__name__, "message": str(error)}


def flush_store(trajectory: Any) -> None:
    """Sync a store at the end of a run unless it was opened with ``durable=False`` (synced only when asked).

    A ``durable="flush"`` store syncs at ``flush()`` and ``close()`` only, and the run that wrote it does not close
    a store it was given: without this its last snapshots stayed queued after the run returned.
    """
    flush = getattr(trajectory, "flush", None)
    if callable(flush) and getattr(trajectory, "durable", True):
        flush()


def keep_late_events(trajectory: Any, events: list[dict[str, Any]]) -> bool:
    """Append events to the run metadata's :data:`LATE_EVENTS_KEY` list; ``False`` when the store has no metadata."""
    if not events or not hasattr(trajectory, "update_meta"):
        return False
    held = getattr(trajectory, "meta", {}).get(LATE_EVENTS_KEY, [])
    trajectory.update_meta({LATE_EVENTS_KEY: [*held, *events]})
    return True


class RecordTrajectory(Callback):
    """Record snapshots into a trajectory on a schedule.

    Records the initial point, every ``every_steps`` steps, every ``every_epochs`` epochs, the step of
    every event (optimizer switch, tunnel), and the final point; never the same step twice.

    Events: every event raised during step ``s`` (by the optimizer, ``Trainer.add_event`` or
    ``Trainer.replace_model`` in a callback's ``on_step_end`` or ``on_epoch_end``) tags the snapshot of step
    ``s``, which it forces; this callback runs after the others when the trainer adds it (``trajectory=``).
    An event raised after that snapshot was written (by a callback later in the list, in the body of
    ``for event in trainer``, or in ``on_train_end``) does not repeat the step for the same weights: it
    tags the next snapshot, and at the end of training, when none follows, it is kept in the run metadata
    under ``"late_events"``. A second snapshot at one step is written only when the model changed after
    the first (a tunnel or perturbation applied later in the step).

    Snapshots go through the store's ``append_model``, which caches the model's layout between snapshots
    (rebuilt when the parameters change), so a snapshot costs a concatenation of the parameters and the
    store's own work.

    Args:
        trajectory: Any object with ``append_model(model, *, step, epoch, metrics, tags)``, normally a
            :class:`~landscape.trajectory.store.Trajectory`.
        every_steps: Record every k optimizer steps (``None``: not by steps).
        every_epochs: Record every k epochs (``None``: not by epochs).
        tags: Tags added to every snapshot (run name, optimizer, persistent iteration, ...).
        factory: How to rebuild the model, stored in the run metadata under ``"model_factory"`` so that
            ``landscape plane --trajectory DIR`` needs no ``--model``: ``"pkg.mod:name"``,
            ``("pkg.mod:name", {kwargs})``, a :class:`~landscape.factory.FactoryRef` or an importable
            function (see :func:`landscape.factory.as_factory_ref`).
    """

    def __init__(
        self,
        trajectory: Any,
        *,
        every_steps: int | None = None,
        every_epochs: int | None = 1,
        tags: Mapping[str, Any] | None = None,
        factory: Any = None,
    ) -> None:
        every_steps, every_epochs = check_count(every_steps, "every_steps"), check_count(every_epochs, "every_epochs")
        if not hasattr(trajectory, "append_model"):
            hint = (
                f"; for a directory pass Trajectory.create({str(trajectory)!r})"
                if isinstance(trajectory, str | os.PathLike)
                else ""
            )
            raise TypeError(
                f"trajectory must be a Trajectory (or have append_model), got {type(trajectory).__name__}{hint}"
            )
        if factory is not None:
            from landscape.factory import FACTORY_KEY, as_factory_ref

            if not hasattr(trajectory, "update_meta"):
                raise TypeError(f"factory= needs a trajectory with update_meta(), got {type(trajectory).__name__}")
            trajectory.update_meta({FACTORY_KEY: as_factory_ref(factory).to_meta()})
        self.trajectory = trajectory
        self.every_steps = every_steps
        self.every_epochs = every_epochs
        self.tags = dict(tags or {})
        self._last_step: int | None = None
        self._pending_events: list[dict[str, Any]] = []
        self._initial_events: list[dict[str, Any]] = []  # raised in on_train_begin before this one: on step 0
        # The last step's event and how many of its events were taken: callbacks after this one may extend the list.
        self._step_event: StepEvent | None = None
        self._taken = 0

    def _record(self, trainer: Trainer, epoch: float, metrics: Mapping[str, float]) -> None:
        tags = dict(self.tags)
        if self._pending_events:
            tags["events"] = self._pending_events
            self._pending_events = []
        self.trajectory.append_model(trainer.model, step=trainer.step, epoch=epoch, metrics=dict(metrics), tags=tags)
        self._last_step = trainer.step

    def _catch_up(self) -> None:
        """Take the events that joined the last step's event list after this callback saw it."""
        ev = self._step_event
        if ev is not None and len(ev.events) > self._taken:
            self._take(ev.events[self._taken :])
            self._taken = len(ev.events)

    def _due_again(self, trainer: Trainer) -> bool:
        """Whether a snapshot is due at a step already recorded: events are pending and the model changed since."""
        return bool(self._pending_events) and not same_point(self.trajectory, trainer.model)

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._last_step = None
        self._step_event, self._taken = None, 0
        held = len(self.trajectory) if hasattr(self.trajectory, "__len__") else 0
        if held and not self.tags and trainer.step == 0:
            # Re-running a notebook cell with Trajectory(path) appends a second run whose steps restart at 0, and
            # a PCA then mixes the two. Tags tell runs apart, so a tagged run is taken to mean it.
            warnings.warn(
                f"the trajectory already holds {held} snapshots; this run's snapshots follow them with steps from 0 "
                "again. For a new store use Trajectory.create(path); to keep several runs in one, give each tags=",
                UserWarning,
                stacklevel=4,
            )
        # Events raised in on_train_begin by the callbacks before this one happened at the initial point (step 0):
        # they tag its snapshot. They stay with the trainer (step 1's StepEvent, other recorders), and this recorder
        # skips them there; one raised by a callback after this one is late and tags the next snapshot.
        self._initial_events = list(getattr(trainer, "_events", ()))  # held: their ids stay unique
        self._pending_events.extend(self._initial_events)
        self._record(trainer, 0.0, trainer.last_metrics)

    def state_dict(self) -> dict[str, Any]:
        """The last recorded step and the events waiting for the next snapshot (those joined after this saw them)."""
        ev, pending = self._step_event, list(self._pending_events)
        if ev is not None and len(ev.events) > self._taken:
            skip = {id(e) for e in self._initial_events}
            pending += [e for e in ev.events[self._taken :] if id(e) not in skip]
        return {"last_step": self._last_step, "pending_events": copy.deepcopy(pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue recording after a checkpoint: nothing is recorded now, the store keeps its snapshots."""
        self._last_step = None if state["last_step"] is None else int(state["last_step"])
        self._pending_events = copy.deepcopy(list(state["pending_events"]))
        self._initial_events, self._step_event, self._taken = [], None, 0

    def _take(self, events: Iterable[dict[str, Any]]) -> None:
        """Queue events for the next snapshot, but those the initial snapshot carries already."""
        skip = {id(e) for e in self._initial_events}
        self._pending_events.extend(e for e in events if id(e) not in skip)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        prev = self._step_event
        if prev is not None and len(prev.events) > self._taken:
            self._catch_up()
        events = event.events
        self._step_event, self._taken = event, len(events)
        if events:
            self._take(events)
        by_steps = self.every_steps is not None and event.step % self.every_steps == 0
        # Epoch-scheduled snapshots are written in on_epoch_end, where the epoch metrics exist.
        by_epoch = event.epoch_end and self.every_epochs is not None and (event.epoch + 1) % self.every_epochs == 0
        if (by_steps or self._pending_events) and not by_epoch:
            self._record(trainer, trainer.epoch_progress, {"batch_loss": event.loss})

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:  # noqa: D102
        self._catch_up()
        if self.every_epochs is not None and (event.epoch + 1) % self.every_epochs == 0:
            if self._last_step == trainer.step and not self._due_again(trainer):
                return  # recorded at this step already (the events, if any, ride on the next snapshot)
            self._record(trainer, float(event.epoch + 1), event.metrics)

    def on_train_end(self, trainer: Trainer) -> None:  # noqa: D102
        # Events raised after the last step's snapshot (later callbacks, the loop's body, on_train_end) have no
        # later step to ride on.
        self._catch_up()
        self._take(trainer.drain_events())
        if self._last_step != trainer.step or self._due_again(trainer):
            self._record(trainer, trainer.epoch_progress, self._final_metrics(trainer))
        elif self._pending_events:  # the final point is recorded, unchanged: no second copy of it
            if keep_late_events(self.trajectory, self._pending_events):
                self._pending_events = []
            else:  # a store without metadata: the events must not be lost
                self._record(trainer, trainer.epoch_progress, self._final_metrics(trainer))
        flush_store(self.trajectory)

    def _final_metrics(self, trainer: Trainer) -> Mapping[str, float]:
        """The final point's metrics: the epoch's when the run ended at an epoch end, else the last step's loss.

        A run stopped mid-epoch (``steps=``, ``stop()``, a NaN) is not the point the last epoch's metrics measured.
        """
        history = getattr(trainer, "history_", None)
        if history is None or (history and history[-1].get("step") == trainer.step):
            return trainer.last_metrics  # (no history: a replay that sets the final point's metrics itself)
        ev = self._step_event
        return {"batch_loss": ev.loss} if ev is not None and ev.step == trainer.step else {}
