"""Record a trajectory from a PyTorch Lightning run: a callback on :class:`~landscape.train.recorder.Recorder`.

Example:
    >>> from landscape.integrations.lightning import RecordTrajectory
    >>> cb = RecordTrajectory("runs/a", every_steps=10, module="net")  # doctest: +SKIP
    >>> lightning.pytorch.Trainer(max_epochs=3, callbacks=[cb]).fit(lit_model, loader)  # doctest: +SKIP
    >>> cb.trajectory  # doctest: +SKIP

The schedule is that of :class:`landscape.train.loop.RecordTrajectory`: the initial point (at
``on_train_start``), every ``every_steps`` optimizer steps (``trainer.global_step``, so gradient
accumulation counts optimizer steps), every ``every_epochs`` completed epochs, and the final point. Step
snapshots carry the step's loss (``batch_loss``, from what ``training_step`` returned); epoch snapshots
carry the numbers in ``trainer.callback_metrics`` at the end of the epoch. Only the global-zero process
records.

A run that fails (an error in the model, the loss, a callback; Ctrl-C) ends as the package's
:class:`~landscape.train.loop.Trainer` ends one: Lightning's ``on_exception`` hook records the point the model
stopped at, tagged with the event ``{"event": "error", "error": "<type>", "message": ..., "step": ...}`` (in the run
metadata's ``"late_events"`` when that point was recorded already), closes a store the callback opened (its lock
released), and Lightning's error propagates.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from landscape.integrations import RecorderCallback, require


def _import_lightning() -> ModuleType:
    for name in ("lightning.pytorch", "pytorch_lightning"):  # the unified package, or the standalone one
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    return require("lightning.pytorch", "lightning", "landscape.integrations.lightning")  # raises, naming the fix


_pl = _import_lightning()

__all__ = ["RecordTrajectory"]


def _loss_of(outputs: Any) -> Tensor | float | None:
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, Tensor) and outputs.numel() == 1:
        return outputs.detach()
    if isinstance(outputs, int | float) and not isinstance(outputs, bool):
        return float(outputs)
    return None


class RecordTrajectory(RecorderCallback, _pl.Callback):  # type: ignore[name-defined]
    """A Lightning callback writing snapshots of the model into a trajectory.

    Args:
        trajectory: A :class:`~landscape.trajectory.store.Trajectory`, a directory for a new on-disk store, or
            ``None`` for a new in-memory one (``callback.trajectory`` after the run).
        module: What to record: ``None`` for the ``LightningModule`` itself, a dotted attribute name
            (``"net"``: the network the module wraps, whose layout a factory rebuilds) or a function
            ``pl_module -> nn.Module``.
        **options: ``every_steps``, ``every_epochs``, ``buffers``, ``factory``, ``factory_kwargs``, ``meta``,
            ``tags``, ``exist_ok``, ``durable``: see :class:`~landscape.integrations.RecorderCallback`.
    """

    def reset_run_state(self) -> None:  # noqa: D102
        self._epoch_complete: bool | None = False

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:  # noqa: D102
        if trainer.is_global_zero:
            self.start_recording(pl_module, step=trainer.global_step, epoch=float(trainer.current_epoch))

    def on_train_batch_end(  # noqa: D102
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        rec = self.recorder
        if rec is None:
            return
        n = trainer.num_training_batches
        known = isinstance(n, int) or (isinstance(n, float) and math.isfinite(n))
        # None: an iterable of unknown length, whose end only on_train_epoch_end tells
        self._epoch_complete = batch_idx + 1 >= n if known else None
        if trainer.global_step <= rec.step_count:  # gradient accumulation: no optimizer step yet
            return
        epoch = trainer.current_epoch + ((batch_idx + 1) / n if known else 0.0)
        rec.step(
            self.recorded_module(pl_module),
            loss=_loss_of(outputs),
            step=trainer.global_step,
            epoch=epoch,
            epoch_end=bool(self._epoch_complete),
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:  # noqa: D102
        rec = self.recorder
        # Lightning also calls this hook after an epoch cut short by max_steps; that is no epoch end.
        if rec is None or self._epoch_complete is False:
            return
        limit = trainer.max_steps
        if self._epoch_complete is None and limit not in (None, -1) and trainer.global_step >= limit:
            return
        self._epoch_complete = False
        rec.epoch_end(self.recorded_module(pl_module), metrics=dict(trainer.callback_metrics))

    def on_train_end(self, trainer: Any, pl_module: nn.Module) -> None:  # noqa: D102
        if self.recorder is not None:
            self.recorder.close(self.recorded_module(pl_module))

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:  # noqa: D102
        # Never raises: an error here would replace the run's in Lightning's handler.
        self.fail(exception, pl_module)
