"""Record a trajectory from a Hugging Face ``transformers.Trainer`` run: a callback on a recorder.

The callback drives a :class:`~landscape.train.recorder.Recorder` from ``TrainerCallback`` hooks.

Example:
    >>> from landscape.integrations.huggingface import RecordTrajectory
    >>> cb = RecordTrajectory("runs/a", every_steps=50)  # doctest: +SKIP
    >>> transformers.Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()  # doctest: +SKIP
    >>> cb.trajectory  # doctest: +SKIP

The schedule is that of :class:`landscape.train.loop.RecordTrajectory`: the initial point (at
``on_train_begin``), every ``every_steps`` optimizer steps (``state.global_step``: gradient accumulation
counts optimizer steps), every ``every_epochs`` completed epochs, and the final point; the fractional
epoch is ``state.epoch``. ``Trainer`` logs after its step callbacks run, so step snapshots carry no loss;
epoch and final snapshots carry the numbers the trainer logged at their step (``loss``,
``learning_rate``, ``grad_norm``, ``train_loss``... as ``logging_steps`` and the strategy say). Only the
main process records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from landscape.integrations import RecorderCallback, require

_tf = require("transformers", "transformers", "landscape.integrations.huggingface")

__all__ = ["RecordTrajectory"]


class RecordTrajectory(RecorderCallback, _tf.TrainerCallback):  # type: ignore[name-defined]
    """A ``transformers`` callback writing snapshots of the model into a trajectory.

    Args:
        trajectory: A :class:`~landscape.trajectory.store.Trajectory`, a directory for a new on-disk store, or
            ``None`` for a new in-memory one (``callback.trajectory`` after the run).
        module: What to record: ``None`` for the trainer's model, a dotted attribute name
            (a backbone, ``"bert"``) or a function ``model -> nn.Module``.
        **options: ``every_steps``, ``every_epochs``, ``buffers`` (BatchNorm running statistics, position ids),
            ``factory``, ``factory_kwargs``, ``meta``, ``tags``, ``exist_ok``, ``durable``: see
            :class:`~landscape.integrations.RecorderCallback`.
    """

    def reset_run_state(self) -> None:  # noqa: D102
        self._logs: dict[str, float] = {}
        self._logs_step = -1

    def recorded_module(self, model: nn.Module | None) -> nn.Module:  # noqa: D102
        if model is None:
            raise RuntimeError("the transformers Trainer passed no model to the callback")
        return super().recorded_module(model)

    def _metrics(self, state: Any) -> dict[str, Any]:
        return dict(self._logs) if self._logs_step == state.global_step else {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        if state.is_world_process_zero:
            self.start_recording(model, step=state.global_step, epoch=float(state.epoch or 0.0))

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        rec = self.recorder
        if rec is None or state.global_step <= rec.step_count:
            return
        epoch = float(state.epoch or 0.0)
        # The last step of an epoch lands exactly on the next whole epoch (epoch + k/k).
        ends = epoch.is_integer() and int(epoch) == rec.epoch_count + 1
        rec.step(self.recorded_module(model), step=state.global_step, epoch=epoch, epoch_end=ends)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:  # noqa: D102
        if self._logs_step != state.global_step:
            self._logs, self._logs_step = {}, state.global_step
        self._logs.update({k: v for k, v in (logs or {}).items() if k != "epoch"})

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        rec = self.recorder
        epoch = float(state.epoch or 0.0)
        # Trainer also calls this hook after an epoch cut short by max_steps; that is no epoch end.
        if rec is None or not (epoch.is_integer() and int(epoch) == rec.epoch_count + 1):
            return
        rec.epoch_end(self.recorded_module(model), metrics=self._metrics(state))

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        if self.recorder is not None:
            m = self._metrics(state)
            self.recorder.close(self.recorded_module(model), metrics=m or None)
