"""What the training loop tells its callbacks (step and epoch events) and the callback that records a trajectory."""

from __future__ import annotations

import enum
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from landscape._options import check_count

if TYPE_CHECKING:
    from landscape.train.loop import Trainer

__all__ = ["Callback", "EpochEvent", "NonFiniteLossError", "OnNonFinite", "RecordTrajectory", "StepEvent"]


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
        loss: Training loss (with regularizer) of the batch at the start of the step.
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

    ``metrics`` holds ``train_loss`` (running mean over the epoch's batches, in train mode),
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


class RecordTrajectory(Callback):
    """Record snapshots into a trajectory on a schedule.

    Records the initial point, every ``every_steps`` steps, every ``every_epochs`` epochs, the step of
    every event (optimizer switch, tunnel), and the final point; never the same step twice.

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

    def _record(self, trainer: Trainer, epoch: float, metrics: Mapping[str, float]) -> None:
        tags = dict(self.tags)
        if self._pending_events:
            tags["events"] = self._pending_events
            self._pending_events = []
        self.trajectory.append_model(trainer.model, step=trainer.step, epoch=epoch, metrics=dict(metrics), tags=tags)
        self._last_step = trainer.step

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._last_step = None
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
        self._record(trainer, 0.0, trainer.last_metrics)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        if event.events:
            self._pending_events.extend(event.events)
        by_steps = self.every_steps is not None and event.step % self.every_steps == 0
        # Epoch-scheduled snapshots are written in on_epoch_end, where the epoch metrics exist.
        by_epoch = event.epoch_end and self.every_epochs is not None and (event.epoch + 1) % self.every_epochs == 0
        if (by_steps or event.events) and not by_epoch:
            self._record(trainer, trainer.epoch_progress, {"batch_loss": event.loss})

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:  # noqa: D102
        if self.every_epochs is not None and (event.epoch + 1) % self.every_epochs == 0:
            if self._last_step == trainer.step and not self._pending_events:
                return
            self._record(trainer, float(event.epoch + 1), event.metrics)

    def on_train_end(self, trainer: Trainer) -> None:  # noqa: D102
        # Events raised by callbacks during the very last step have no later step to ride on.
        self._pending_events.extend(trainer.drain_events())
        if self._last_step != trainer.step or self._pending_events:
            self._record(trainer, trainer.epoch_progress, trainer.last_metrics)
