"""Record a trajectory from any training loop: a hand-written one, PyTorch Lightning, Hugging Face.

:class:`Recorder` is the package's :class:`~landscape.train.loop.RecordTrajectory` schedule for loops the
package does not own: the loop calls :meth:`Recorder.begin` before the first optimizer step,
:meth:`Recorder.step` after every optimizer step, :meth:`Recorder.epoch_end` after every epoch and
:meth:`Recorder.close` at the end. It writes the same store the same way (``Trajectory.append_model``:
the trainable and frozen parameters and the buffers) and records, on the same options, the same
snapshots: the initial point, every ``every_steps`` steps, every ``every_epochs`` epochs, every step
that carries an event, and the final point; never the same step twice for the same weights (an event
noted after its step was recorded tags the next snapshot; at :meth:`Recorder.close`, with the model
unchanged, it is kept in the run metadata under ``"late_events"``). A snapshot that is due both by
steps and at the end of an epoch is written once, at :meth:`Recorder.epoch_end`, with the epoch's
metrics, as ``RecordTrajectory`` does.

The run metadata can name the model factory that rebuilds the network (``"model_factory"``:
``{"target": "pkg.mod:qualname", "kwargs": {...}}``), so an analysis needs the trajectory alone.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(3, 2)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 2)
    >>> rec = Recorder(None, every_steps=2, steps_per_epoch=4)   # None: an in-memory trajectory
    >>> rec.begin(net)
    >>> for epoch in range(2):
    ...     for b in range(4):
    ...         opt.zero_grad()
    ...         loss = nn.functional.mse_loss(net(x[2 * b:2 * b + 2]), y[2 * b:2 * b + 2])
    ...         loss.backward()
    ...         opt.step()
    ...         _ = rec.step(net, loss=loss)
    ...     _ = rec.epoch_end(net, metrics={"train_loss": 0.5})
    >>> traj = rec.close(net)
    >>> traj.steps.tolist()
    [0, 2, 4, 6, 8]

The integrations :mod:`landscape.integrations.lightning` and :mod:`landscape.integrations.huggingface`
drive a :class:`Recorder` from those libraries' callbacks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from landscape._options import check_count
from landscape.factory import FACTORY_KEY, as_factory_ref
from landscape.params import ParamLayout, parameters_to_vector
from landscape.train.callbacks import error_event, flush_store, keep_late_events, same_point
from landscape.trajectory.records import step_number
from landscape.trajectory.store import Trajectory

__all__ = ["Recorder", "factory_reference", "FACTORY_KEY"]


def factory_reference(factory: Any, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON reference ``{"target": "pkg.mod:qualname", "kwargs": {...}}`` of a model factory.

    The same normalization as the package's own trainer (:func:`landscape.factory.as_factory_ref`); nothing is
    imported or called here: the reference only names the factory.

    Args:
        factory: ``"pkg.mod:qualname"``, ``(target, kwargs)``, a dict ``{"target": ..., "kwargs": ...}`` (as
            stored), a :class:`~landscape.factory.FactoryRef`, or an importable function or class.
        kwargs: Keyword arguments of the factory (JSON-compatible); merged over the reference's own.

    Returns:
        ``{"target": str, "kwargs": dict}``.

    Raises:
        FactoryError: If the reference is malformed or names something a later process cannot import (a
            lambda, a nested function, a function in ``__main__``).
    """
    return as_factory_ref(factory, kwargs, check=False).to_meta()


def _number(v: Any) -> float | None:
    if isinstance(v, Tensor):
        return float(v.detach()) if v.numel() == 1 else None
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    try:  # numpy scalars
        return float(v) if getattr(v, "ndim", None) == 0 else None
    except (TypeError, ValueError):
        return None


def _numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Scalar entries of ``metrics`` as floats (tensors of one element included); others are dropped."""
    out = {}
    for k, v in (metrics or {}).items():
        x = _number(v)
        if x is not None:
            out[str(k)] = x
    return out


class Recorder:
    """Record snapshots of a model into a trajectory from a training loop you write.

    Call :meth:`begin` before the first optimizer step, :meth:`step` after each one, :meth:`epoch_end`
    after each epoch (optional when recording by steps only) and :meth:`close` at the end. The schedule
    is that of :class:`~landscape.train.loop.RecordTrajectory`: the initial point, every ``every_steps``
    steps, every ``every_epochs`` epochs, every step with events, and the final point, never one step
    twice. As a context manager, leaving the block calls ``close()`` on the last model seen; on an exception
    :meth:`fail` ends the run as the package's Trainer does (the final point, tagged with why; the store closed
    or flushed) and the exception propagates.

    Args:
        trajectory: A :class:`~landscape.trajectory.store.Trajectory` (or any object with ``append_model``
            and ``update_meta``), a directory for a new on-disk store, or ``None`` for a new in-memory one.
        every_steps: Record every k optimizer steps (``None``: not by steps).
        every_epochs: Record every k epochs (``None``: not by epochs).
        steps_per_epoch: Optimizer steps in an epoch, when known: gives the fractional epoch of a
            snapshot and tells :meth:`step` which step ends an epoch (its snapshot is then written by
            :meth:`epoch_end`, with the epoch metrics). ``None``: epochs are counted by
            :meth:`epoch_end` calls alone.
        buffers: Store the model's buffers (BatchNorm running statistics) with every snapshot.
        factory: The model factory, stored in the run metadata under ``"model_factory"``:
            ``"pkg.mod:name"``, ``{"target": ..., "kwargs": ...}`` or an importable function or class.
        factory_kwargs: Keyword arguments of the factory (JSON-compatible).
        meta: Run-level JSON metadata merged into the trajectory's.
        tags: Tags added to every snapshot.
        exist_ok: With a directory: append to a trajectory already there instead of failing.
        durable: With a directory: when snapshots are fsynced (see :class:`~landscape.trajectory.store.Trajectory`).
        model: If given, :meth:`begin` is called with it: the initial point is recorded at once.

    Attributes:
        trajectory: The store written to.
        step_count: Optimizer steps recorded so far (the step of the last :meth:`step` call).
        epoch_count: Epochs completed (:meth:`epoch_end` calls).

    Raises:
        ValueError: On a schedule that is not a positive integer or ``None``, or a bad factory reference.
        FileExistsError: If the directory already holds a trajectory and ``exist_ok`` is false.
    """

    def __init__(
        self,
        trajectory: Trajectory | str | os.PathLike[str] | None = None,
        *,
        every_steps: int | None = None,
        every_epochs: int | None = 1,
        steps_per_epoch: int | None = None,
        buffers: bool = True,
        factory: Any = None,
        factory_kwargs: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
        durable: bool | str = True,
        model: nn.Module | None = None,
    ) -> None:
        every_steps, every_epochs = check_count(every_steps, "every_steps"), check_count(every_epochs, "every_epochs")
        steps_per_epoch = check_count(steps_per_epoch, "steps_per_epoch")
        if factory_kwargs is not None and factory is None:
            raise ValueError("factory_kwargs given without factory=; name the factory they belong to")
        run_meta = dict(meta or {})
        if factory is not None:
            run_meta[FACTORY_KEY] = factory_reference(factory, factory_kwargs)
        self.owns_trajectory = not hasattr(trajectory, "append_model")
        if trajectory is None:
            trajectory = Trajectory(meta=run_meta)
        elif isinstance(trajectory, str | os.PathLike):
            trajectory = Trajectory.create(trajectory, meta=run_meta, exist_ok=exist_ok, durable=durable)
        elif not hasattr(trajectory, "append_model"):
            raise TypeError(
                f"trajectory must be a Trajectory, a directory path or None, got {type(trajectory).__name__}"
            )
        elif run_meta:
            trajectory.update_meta(run_meta)
        self.trajectory: Any = trajectory
        self.every_steps = every_steps
        self.every_epochs = every_epochs
        self.steps_per_epoch = steps_per_epoch
        self.buffers = buffers
        self.tags = dict(tags or {})
        self.step_count = 0
        self.epoch_count = 0
        self.epoch_progress = 0.0
        self.last_metrics: dict[str, float] = {}
        self._epoch_start_step = 0
        self._last_step: int | None = None
        self._pending: list[dict[str, Any]] = []
        self._step_values: tuple[Any, Mapping[str, Any] | None] = (None, None)  # the last step's (loss, metrics)
        self._model: nn.Module | None = None
        self._begun = False
        self._closed = False
        if model is not None:
            self.begin(model)

    # ------------------------------------------------------------------ writing
    def _record(self, model: nn.Module, epoch: float, metrics: Mapping[str, float]) -> None:
        tags = dict(self.tags)
        if self._pending:
            tags["events"] = self._pending
            self._pending = []
        kw = {"step": self.step_count, "epoch": epoch, "metrics": dict(metrics), "tags": tags}
        if self.buffers:
            self.trajectory.append_model(model, **kw)
        else:  # the same vector and layout as append_model, without the buffers
            self.trajectory.append(parameters_to_vector(model), layout=ParamLayout.from_model(model), **kw)
        self._last_step = self.step_count

    def _due_again(self, model: nn.Module) -> bool:
        """Whether a snapshot is due at a step already recorded: events are pending and the model changed since."""
        return bool(self._pending) and not same_point(self.trajectory, model)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"Recorder.{what}() after close(); build a new Recorder for another run")
        if not self._begun:
            raise RuntimeError(
                f"Recorder.{what}() before begin(model): call recorder.begin(model) before the first optimizer "
                "step (it records the initial point)"
            )

    def begin(
        self, model: nn.Module, *, step: int = 0, epoch: float = 0.0, metrics: Mapping[str, Any] | None = None
    ) -> None:
        """Record the initial point (call before the first optimizer step).

        A resumed run (``step`` > 0, appending to its trajectory) whose initial point is the trajectory's last
        snapshot (the same step, tags and weights: the interrupted run's final point) does not write it again.

        Args:
            model: The model at its initial point (only read).
            step: Steps already taken (a resumed run).
            epoch: Epochs already completed (a resumed run); fractional for a run resumed mid-epoch, which with
                ``steps_per_epoch`` places the step in its epoch (1.5: half of the second epoch is done).
            metrics: Metrics of the initial point.
        """
        if self._closed:
            raise RuntimeError("Recorder.begin() after close(); build a new Recorder for another run")
        if self._begun:
            raise RuntimeError("Recorder.begin() called twice; it records the initial point once")
        self._begun = True
        self._model = model
        self.step_count = step_number(step)
        self.epoch_count = int(epoch)
        # A run resumed mid-epoch (epoch 1.5) is that many steps into its epoch, so the epoch still ends where the
        # uninterrupted run's does.
        into = round((float(epoch) - self.epoch_count) * self.steps_per_epoch) if self.steps_per_epoch else 0
        self._epoch_start_step = self.step_count - into
        self.epoch_progress = float(epoch)
        self.last_metrics = _numbers(metrics)
        if self._continues(model):  # a resumed run: its initial point is the stored run's last snapshot
            self._last_step = self.step_count
            return
        self._record(model, self.epoch_progress, self.last_metrics)

    def _continues(self, model: nn.Module) -> bool:
        """Whether the trajectory's last snapshot is this run's initial point: same step, tags and point (bitwise).

        Warns when the last snapshot is past the initial step (a run resumed from an older checkpoint): the
        interrupted run's later snapshots stay in the trajectory, before the replayed steps.
        """
        traj = self.trajectory
        if not isinstance(traj, Trajectory) or not len(traj):
            return False
        last = int(traj.steps[-1])
        if last > self.step_count:
            warnings.warn(
                f"the trajectory's last snapshot is at step {last}, past this run's initial step {self.step_count} "
                "(resumed from an earlier checkpoint?): the interrupted run's snapshots after it stay in the "
                "trajectory, before this run's; filter by step or tags when analysing",
                UserWarning,
                stacklevel=3,
            )
            return False
        tags = traj.tags(-1)
        tags.pop("events", None)
        return last == self.step_count and tags == self.tags and same_point(traj, model)

    def step(
        self,
        model: nn.Module,
        loss: Any = None,
        metrics: Mapping[str, Any] | None = None,
        *,
        step: int | None = None,
        epoch: float | None = None,
        epoch_end: bool | None = None,
        events: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        """Note one optimizer step (call after ``optimizer.step()``); records when the schedule says so.

        Args:
            model: The model after the step (only read).
            loss: The step's training loss (a number or a one-element tensor), stored as ``batch_loss``.
            metrics: More numbers for a snapshot written at this step.
            step: The step count after this step (default: one more than the last); a loop whose
                framework counts steps passes its own count.
            epoch: Fractional epoch after this step (default: from ``steps_per_epoch``, else the number
                of completed epochs).
            epoch_end: Whether this step ends an epoch (default: from ``steps_per_epoch``, else no);
                then a snapshot due at the epoch end is left to :meth:`epoch_end`.
            events: JSON-compatible event dicts (optimizer switch, tunnel, ...): they force a snapshot
                and become its ``events`` tag (``"step"`` is filled in when missing).

        Returns:
            Whether a snapshot was written.
        """
        self._check_open("step")
        self._model = model
        new = self.step_count + 1 if step is None else step_number(step)
        if new <= self.step_count:
            raise ValueError(f"step {new} does not advance past the last step {self.step_count}; steps must increase")
        self.step_count = new
        in_epoch = new - self._epoch_start_step
        if epoch is None:
            spe = self.steps_per_epoch
            epoch = self.epoch_count + (min(in_epoch, spe) / spe if spe else 0.0)
        self.epoch_progress = float(epoch)
        if epoch_end is None:
            epoch_end = self.steps_per_epoch is not None and in_epoch >= self.steps_per_epoch
        for ev in events:
            self._pending.append({"step": new, **dict(ev)})
        by_steps = self.every_steps is not None and new % self.every_steps == 0
        # Epoch-scheduled snapshots are written in epoch_end, where the epoch metrics exist.
        by_epoch = bool(epoch_end) and self.every_epochs is not None and (self.epoch_count + 1) % self.every_epochs == 0
        self._step_values = (loss, metrics)  # the final point's metrics when the run ends here (converted then)
        if (by_steps or self._pending) and not by_epoch:
            self._record(model, self.epoch_progress, self._step_metrics())
            return True
        return False

    def _step_metrics(self, strict: bool = True) -> dict[str, float]:
        """The last step's metrics: ``batch_loss`` (its loss) and the numbers passed with it.

        Raises:
            TypeError: If the loss is not a number (``strict``; otherwise it is left out).
        """
        loss, metrics = self._step_values
        m = _numbers(metrics)
        if loss is not None:
            x = _number(loss)
            if x is None and strict:
                raise TypeError(f"loss must be a number or a one-element tensor, got {type(loss).__name__}")
            m = m if x is None else {"batch_loss": x, **m}
        return m

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Note a JSON-compatible event between steps (a tunnel your code opened, an optimizer switch).

        The event forces a snapshot at the next :meth:`step` (or at :meth:`close`) and becomes that
        snapshot's ``events`` tag, with ``"step"`` (steps completed when it happened) filled in when missing.
        """
        self._check_open("add_event")
        self._pending.append({"step": self.step_count, **dict(event)})

    def epoch_end(self, model: nn.Module, metrics: Mapping[str, Any] | None = None) -> bool:
        """Note the end of an epoch; records when the schedule says so.

        Args:
            model: The model at the end of the epoch (only read).
            metrics: The epoch's metrics (``train_loss``, ``val_loss``, ...); numbers and one-element
                tensors are kept, anything else is dropped.

        Returns:
            Whether a snapshot was written.
        """
        self._check_open("epoch_end")
        self._model = model
        done = self.epoch_count
        self.epoch_count += 1
        self._epoch_start_step = self.step_count
        self.epoch_progress = float(self.epoch_count)
        self.last_metrics = _numbers(metrics)
        if self.every_epochs is not None and (done + 1) % self.every_epochs == 0:
            if self._last_step == self.step_count and not self._due_again(model):
                return False  # recorded at this step already (the events, if any, ride on the next snapshot)
            self._record(model, float(done + 1), self.last_metrics)
            return True
        return False

    def close(
        self,
        model: nn.Module | None = None,
        metrics: Mapping[str, Any] | None = None,
        *,
        error: BaseException | None = None,
    ) -> Any:
        """Record the final point (unless it was just recorded) and close a store the recorder opened.

        Args:
            model: The trained model (default: the last model seen).
            metrics: Metrics of the final point (default: the last epoch's when :meth:`epoch_end` came after the
                last step, else the last step's: ``batch_loss`` and the metrics given to :meth:`step`).
            error: The exception that ended the run, if one did: the event ``{"event": "error", "error":
                "<type>", "message": ..., "step": <steps completed>}`` tags the final snapshot (or, when that point
                was recorded already and the model is unchanged, joins the run metadata's ``"late_events"``), as
                the package's Trainer records a failed run.

        Returns:
            The trajectory (closed if the recorder opened it from a directory; it stays readable; a store given to
            the recorder stays open and is flushed unless it was opened with ``durable=False``).
        """
        if self._closed:
            return self.trajectory
        if model is not None:
            self._model = model
        if error is not None and self._begun:
            self._pending.append(error_event(self.step_count, error))
        if self._begun and self._model is not None:
            # A run that ended mid-epoch is not the point the last epoch's metrics measured: its last step's are.
            at_epoch_end = self._epoch_start_step == self.step_count
            final = (
                _numbers(metrics)
                if metrics is not None
                else self.last_metrics
                if at_epoch_end
                else self._step_metrics(strict=False)
            )
            if self._last_step != self.step_count or self._due_again(self._model):
                self._record(self._model, self.epoch_progress, final)
            elif self._pending:  # the final point is recorded, unchanged: no second copy of it
                if keep_late_events(self.trajectory, self._pending):
                    self._pending = []
                else:  # a store without metadata: the events must not be lost
                    self._record(self._model, self.epoch_progress, final)
        self._finish()
        return self.trajectory

    def fail(self, error: BaseException, model: nn.Module | None = None) -> None:
        """End a run that failed on ``error``: :meth:`close` with ``error=``, never raising.

        For an exception handler whose own exception must propagate: when recording the final point fails too (the
        store's disk is full), that is a warning, and the store is closed (its lock released) all the same.

        Args:
            error: The exception that ended the run.
            model: The model as it stopped (default: the last model seen).
        """
        try:
            self.close(model, error=error)
        except Exception as e:  # noqa: BLE001 - the run's error is the one to see
            warnings.warn(f"the Recorder could not record the end of the run after {error!r}: {e!r}", stacklevel=2)
            try:
                self.abort()
            except Exception:  # noqa: BLE001, S110 - the store reported its failure above; it is released regardless
                pass

    def abort(self) -> None:
        """Close without a final snapshot: a store it opened is closed, a given one flushed."""
        if not self._closed:
            self._finish()

    def _finish(self) -> None:
        self._closed = True
        self._model = None
        if self.owns_trajectory and getattr(self.trajectory, "path", None) is not None:
            self.trajectory.close()
        elif not self.owns_trajectory:  # the caller's store stays open, synced as a closed one would be
            flush_store(self.trajectory)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self.fail(exc)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"step {self.step_count}, epoch {self.epoch_count}"
        return (
            f"Recorder(every_steps={self.every_steps}, every_epochs={self.every_epochs}, {state}, "
            f"{len(self.trajectory)} snapshot{'s' * (len(self.trajectory) != 1)})"
        )
