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
``learning_rate``, ``grad_norm``, ``eval_loss``, ``train_loss``... as ``logging_steps`` and the strategies
say). ``Trainer`` logs and evaluates the end of an epoch after ``on_epoch_end``, so an epoch snapshot is
written at the next hook (``on_epoch_begin``, ``on_train_end``), where the model is the same and those numbers
are in; with ``load_best_model_at_end`` it is written at ``on_epoch_end`` (the best model is loaded before the
last epoch's next hook), without them. Only the main process records.

``load_best_model_at_end``: the trainer replaces the trained weights by the best checkpoint's after the last step.
The last trained point is then recorded at the last step itself (tagged with the event ``"last_step"``, without
that step's logs, which come after the hook), and the final point holds the best checkpoint's weights: it is
labelled with the last step (steps never go back) and tagged with the event ``{"event": "best_model_loaded",
"best_step": S, "checkpoint": ..., "metric": "eval_<name>", "value": ...}``, its metrics that best value (what
those weights scored at step ``S``). When the best checkpoint is the last point, the weights are unchanged and the
event joins the run metadata's ``"late_events"`` instead of a second snapshot.

A failed run: ``Trainer`` calls no callback on an exception, so a run that raises leaves the callback's store
open (and its writer lock held) until the callback is garbage-collected or the interpreter exits. Use the
callback as a context manager around ``train()`` to end a failed run as the package's
:class:`~landscape.train.loop.Trainer` ends one (the point the model stopped at, tagged with the error
event; the store closed, its lock released; the error propagating)::

    with RecordTrajectory("runs/a", every_steps=50) as cb:
        transformers.Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()
"""

from __future__ import annotations

import re
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
        self._epoch_due: nn.Module | None = None  # the network of an epoch end whose snapshot waits for its logs

    def _write_epoch_end(self, step: int) -> None:
        """Note the epoch end :meth:`on_epoch_end` deferred, with what was logged and evaluated at ``step`` since."""
        net, self._epoch_due = self._epoch_due, None
        if net is not None and self.recorder is not None:
            self.recorder.epoch_end(net, metrics=self._metrics_at(step))

    def fail(self, error: BaseException, model: nn.Module | None = None) -> None:  # noqa: D102
        if self.recorder is not None:
            try:  # an epoch that ended before the error: its snapshot first (the model has not changed since)
                self._write_epoch_end(self.recorder.step_count)
            except Exception:  # noqa: BLE001, S110 - Recorder.fail below warns about the store
                pass
        super().fail(error, model)

    def recorded_module(self, model: nn.Module | None) -> nn.Module:  # noqa: D102
        if model is None:
            raise RuntimeError("the transformers Trainer passed no model to the callback")
        return super().recorded_module(model)

    def _metrics(self, state: Any) -> dict[str, Any]:
        return self._metrics_at(state.global_step)

    def _metrics_at(self, step: int) -> dict[str, Any]:
        return dict(self._logs) if self._logs_step == step else {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        if state.is_world_process_zero:
            self.start_recording(model, step=state.global_step, epoch=float(state.epoch or 0.0))

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:  # noqa: D102
        self._write_epoch_end(state.global_step)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:  # noqa: D102
        self._write_epoch_end(state.global_step)  # (before the model changes, whatever hooks another Trainer calls)

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        rec = self.recorder
        if rec is None or state.global_step <= rec.step_count:
            return
        epoch = float(state.epoch or 0.0)
        # The last step of an epoch lands exactly on the next whole epoch (epoch + k/k).
        ends = epoch.is_integer() and int(epoch) == rec.epoch_count + 1
        # the best checkpoint replaces these weights after the last step, before any other hook: recorded now
        last = bool(args.load_best_model_at_end) and 0 < state.max_steps <= state.global_step
        events = [{"event": "last_step", "why": "load_best_model_at_end replaces these weights"}] if last else []
        rec.step(self.recorded_module(model), step=state.global_step, epoch=epoch, epoch_end=ends, events=events)

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
        self._epoch_due = self.recorded_module(model)
        if args.load_best_model_at_end:  # the model may be another before the next hook
            self._write_epoch_end(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:  # noqa: D102
        if self.recorder is not None:
            self._write_epoch_end(state.global_step)
            m = self._metrics(state)
            best = _best_loaded(args, state)
            if best is not None:  # the model holds the best checkpoint's weights, not the last step's
                self.recorder.add_event(best)
                m = {best["metric"]: best["value"]} if best["value"] is not None else {}
            self.recorder.close(self.recorded_module(model), metrics=m or None)


def _best_loaded(args: Any, state: Any) -> dict[str, Any] | None:
    """The event of a best checkpoint loaded at the end of training (``load_best_model_at_end``), or ``None``."""
    path = state.best_model_checkpoint
    if not args.load_best_model_at_end or path is None:
        return None
    step = getattr(state, "best_global_step", None)  # transformers >= 4.53; before, the checkpoint's name has it
    if not step:
        found = re.search(r"checkpoint-(\d+)$", str(path).rstrip("/\\"))
        step = int(found.group(1)) if found else None
    name = args.metric_for_best_model or "loss"
    name = name if name.startswith("eval_") else f"eval_{name}"  # the key the trainer compares
    value = None if state.best_metric is None else float(state.best_metric)
    return {"event": "best_model_loaded", "best_step": step, "checkpoint": str(path), "metric": name, "value": value}
