"""Trajectory recording from other libraries' trainers, built on :class:`landscape.train.recorder.Recorder`.

* :mod:`landscape.integrations.lightning`: a PyTorch Lightning callback.
* :mod:`landscape.integrations.huggingface`: a Hugging Face ``transformers`` ``TrainerCallback``.

Each module imports its library when it is imported (not before): ``import landscape`` never needs
them. Install them with ``pip install -e ".[integrations]"`` in the clone (the name ``landscape`` on PyPI is
another project).
"""

from __future__ import annotations

import importlib
import os
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from landscape.train.recorder import Recorder
from landscape.trajectory.store import Trajectory

__all__: list[str] = []


#: The :class:`~landscape.train.recorder.Recorder` options a framework callback takes.
RECORDER_OPTIONS = (
    "every_steps",
    "every_epochs",
    "buffers",
    "factory",
    "factory_kwargs",
    "meta",
    "tags",
    "exist_ok",
    "durable",
)


def recorder_options(**options: Any) -> dict[str, Any]:
    """A callback's :class:`~landscape.train.recorder.Recorder` options, checked now so bad ones fail at construction.

    The store itself is opened only when training starts (``Recorder(target, **options)``); the schedule,
    factory and metadata are validated here against a throwaway in-memory trajectory.

    Args:
        **options: Any of :data:`RECORDER_OPTIONS` (as :class:`~landscape.train.recorder.Recorder` takes them).

    Returns:
        The options, unchanged.

    Raises:
        TypeError: On an option that is not one of :data:`RECORDER_OPTIONS`.
        ValueError: On a bad schedule or factory reference.
    """
    unknown = sorted(set(options) - set(RECORDER_OPTIONS))
    if unknown:
        raise TypeError(f"unknown recorder options {unknown}; valid: {list(RECORDER_OPTIONS)}")
    store_only = ("buffers", "exist_ok", "durable")  # meaningful only with the real store
    Recorder(Trajectory(), **{k: v for k, v in options.items() if k not in store_only})
    return options


def require(module: str, pip_name: str, what: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says how to install it.

    Args:
        module: Module to import (``"lightning.pytorch"``).
        pip_name: Its PyPI distribution (``"lightning"``).
        what: What needs it, for the message.

    Returns:
        The imported module.

    Raises:
        ImportError: If the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the package {pip_name!r}, which is not installed ({e}); install it with "
            f'pip install {pip_name} (or pip install -e ".[integrations]" in the clone of landscape)'
        ) from e


def resolve_module(model: nn.Module, module: str | Callable[[Any], nn.Module] | None) -> nn.Module:
    """The network to record inside a framework's model: itself, a dotted attribute, or ``module(model)``.

    Raises:
        AttributeError: If the dotted attribute does not exist (the message lists the model's children).
        TypeError: If the result is not an ``nn.Module``.
    """
    if module is None:
        out: Any = model
    elif callable(module):
        out = module(model)
    else:
        out = model
        for part in module.split("."):
            if not hasattr(out, part):
                children = [n for n, _ in model.named_children()]
                raise AttributeError(
                    f"{type(model).__name__} has no submodule {module!r} to record (stuck at {part!r}); "
                    f"its children are {children}"
                )
            out = getattr(out, part)
    if not isinstance(out, nn.Module):
        raise TypeError(f"the module to record must be a torch.nn.Module, got {type(out).__name__}")
    return out


def _release(recorder: Recorder) -> None:
    """Close the store of a run that never ended (no final snapshot: the model may be anything by now)."""
    try:
        recorder.abort()
    except Exception:  # noqa: BLE001, S110 - at garbage collection or exit there is no one to tell
        pass


class RecorderCallback:
    """What the framework callbacks share: options checked at construction, a Recorder started with training.

    A framework callback derives from this class and the framework's callback class, calls :meth:`start_recording`
    when training begins and drives :attr:`recorder` from its hooks.

    As a context manager (``with RecordTrajectory(...) as cb: trainer.train()``) an exception in the block ends
    the run as :meth:`fail` does, for frameworks that call no callback on an exception. A run that never ended
    otherwise has its store closed (no final snapshot) when the callback starts another run, when it is
    garbage-collected, or at interpreter exit.

    Args:
        trajectory: A :class:`~landscape.trajectory.store.Trajectory`, a directory for a new on-disk store, or
            ``None`` for a new in-memory one (``callback.trajectory`` after the run).
        module: What to record: ``None`` for the framework's model itself, a dotted attribute name (the
            network it wraps, whose layout a factory rebuilds) or a function ``model -> nn.Module``.
        **options: The :class:`~landscape.train.recorder.Recorder` options :data:`RECORDER_OPTIONS`:
            ``every_steps`` (record every k optimizer steps; default ``None``: not by steps), ``every_epochs``
            (every k epochs; default 1), ``buffers`` (store buffers with every snapshot; default true),
            ``factory`` and ``factory_kwargs`` (the model factory for the run metadata), ``meta`` (run-level
            JSON metadata), ``tags`` (added to every snapshot), ``exist_ok`` (append to a trajectory already
            at the directory: a resumed run), ``durable`` (when an on-disk store fsyncs; see
            :class:`~landscape.trajectory.store.Trajectory`).

    Raises:
        TypeError: On an unknown option.
        ValueError: On a bad schedule or factory reference.
    """

    def __init__(
        self,
        trajectory: Trajectory | str | os.PathLike[str] | None = None,
        *,
        module: str | Callable[[Any], nn.Module] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._target = trajectory
        self._options = recorder_options(**options)
        self.module = module
        self.recorder: Recorder | None = None
        self.trajectory: Any = trajectory if hasattr(trajectory, "append_model") else None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.reset_run_state()

    def reset_run_state(self) -> None:
        """Forget what the callback kept of a previous run (called at construction and by :meth:`start_recording`)."""

    def recorded_module(self, model: nn.Module | None) -> nn.Module:
        """The network to record inside the framework's ``model`` (see ``module``)."""
        assert model is not None
        return resolve_module(model, self.module)

    def start_recording(self, model: nn.Module | None, step: int, epoch: float) -> None:
        """Open the recorder (and its store) and record the initial point."""
        if self._finalizer is not None:
            self._finalizer()  # a previous run that never ended (its exception reached no hook): release its store
        self.recorder = Recorder(self._target, **self._options)
        self._finalizer = weakref.finalize(self, _release, self.recorder)
        self.trajectory = self.recorder.trajectory
        self.reset_run_state()
        self.recorder.begin(self.recorded_module(model), step=step, epoch=epoch)

    def fail(self, error: BaseException, model: nn.Module | None = None) -> None:
        """End a run that failed on ``error`` as the package's Trainer does, never raising.

        The point the model stopped at is recorded, tagged with the error event (see
        :meth:`~landscape.train.recorder.Recorder.close`), and a store the callback opened is closed. Nothing
        happens when no run is being recorded.

        Args:
            error: The exception that ended the run.
            model: The framework's model as it stopped (default: the network last recorded).
        """
        rec = self.recorder
        if rec is None:
            return
        try:
            net = None if model is None else self.recorded_module(model)
        except Exception:  # noqa: BLE001 - the network last seen is the same object in every framework run
            net = None
        rec.fail(error, net)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        elif self.recorder is not None:
            self.recorder.close()  # a run its framework did not end (a no-op after an ended one)
