"""Trajectory recording from other libraries' trainers, built on :class:`landscape.train.recorder.Recorder`.

* :mod:`landscape.integrations.lightning`: a PyTorch Lightning callback.
* :mod:`landscape.integrations.huggingface`: a Hugging Face ``transformers`` ``TrainerCallback``.

Each module imports its library when it is imported (not before): ``import landscape`` never needs
them. Install them with ``pip install "landscape[integrations]"``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

__all__: list[str] = []


def recorder_options(**options: Any) -> dict[str, Any]:
    """A callback's :class:`~landscape.train.recorder.Recorder` options, checked now so bad ones fail at construction.

    The store itself is opened only when training starts (``Recorder(target, **options)``); the schedule,
    factory and metadata are validated here against a throwaway in-memory trajectory.

    Args:
        **options: ``every_steps``, ``every_epochs``, ``buffers``, ``factory``, ``factory_kwargs``, ``meta``,
            ``tags``, ``exist_ok``, ``durable`` (as :class:`~landscape.train.recorder.Recorder` takes them).

    Returns:
        The options, unchanged.
    """
    from landscape.train.recorder import Recorder
    from landscape.trajectory.store import Trajectory

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
            f'pip install {pip_name} (or pip install "landscape[integrations]")'
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
