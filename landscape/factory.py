"""Model factory references: ``"package.module:qualname"`` plus JSON keyword arguments.

A trajectory stores parameter vectors, not code. To rebuild its model later (``landscape plane
--trajectory runs/a`` with nothing else), a recorder writes a reference to the function or class that
built the model, and the arguments it took, into the run metadata::

    meta["model_factory"] = {"target": "my_project.nets:make", "kwargs": {"width": 8}}

:func:`build_model` imports ``my_project.nets``, calls ``make(width=8)`` and checks that it returned an
``nn.Module``. Weights come from a safetensors file or a ``torch.load(weights_only=True)`` state dict
(:func:`load_state_dict`); plain pickle is never read.

Building a model runs the named code, as importing any module does. A reference read from a
trajectory's metadata (which may come from someone else) is therefore held to more: it must name a
``nn.Module`` subclass, or a plain Python function of your own code (outside the standard library and
installed packages) or of :mod:`landscape.models` (``trusted=False`` in :func:`resolve`); a reference you
type yourself may name any callable.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from itertools import zip_longest
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FACTORY_KEY",
    "FactoryError",
    "FactoryRef",
    "parse_target",
    "parse_kwargs",
    "as_factory_ref",
    "factory_from_meta",
    "resolve",
    "build_model",
    "check_factory",
    "load_state_dict",
    "load_weights",
]

FACTORY_KEY = "model_factory"
"""Key of the factory reference in a trajectory's run metadata (``{"target": ..., "kwargs": {...}}``)."""

_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_STATE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class FactoryError(ValueError):
    """A factory reference, its arguments or its weights are unusable; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class FactoryRef:
    """A reference to the callable that builds a model, with its keyword arguments.

    Attributes:
        target: ``"package.module:qualname"`` (``qualname`` may be dotted, e.g. ``"Nets.small"``).
        kwargs: JSON-compatible keyword arguments.
    """

    target: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_target(self.target)
        if not isinstance(self.kwargs, Mapping):
            raise FactoryError(f"factory kwargs must be a mapping, got {type(self.kwargs).__name__}")
        try:
            kwargs = json.loads(json.dumps(dict(self.kwargs), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise FactoryError(
                f"factory kwargs of {self.target!r} must be JSON-compatible (numbers, strings, lists, dicts): {e}"
            ) from None
        object.__setattr__(self, "kwargs", kwargs)

    def to_meta(self) -> dict[str, Any]:
        """The metadata form ``{"target": ..., "kwargs": {...}}``."""
        return {"target": self.target, "kwargs": copy.deepcopy(self.kwargs)}

    def build(self, *, trusted: bool = True, dtype: torch.dtype | None = None) -> nn.Module:
        """Import the target, call it with the kwargs and return the model (see :func:`build_model`)."""
        return build_model(self, trusted=trusted, dtype=dtype)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.target}({args})"


def parse_target(spec: str) -> tuple[str, str]:
    """Split ``"package.module:qualname"`` into ``(module, qualname)``.

    Raises:
        FactoryError: If ``spec`` does not have that form.
    """
    if not isinstance(spec, str) or not _TARGET.fullmatch(spec.strip()):
        raise FactoryError(
            f"model factory {spec!r}: use package.module:function (e.g. my_project.nets:make), a module path "
            "and the name of a function or class in it, separated by a colon"
        )
    module, _, qualname = spec.strip().partition(":")
    return module, qualname


def parse_kwargs(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments from a JSON object (``'{"width": 8}'``), a mapping, or ``None`` (no arguments).

    Raises:
        FactoryError: If the text is not a JSON object.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    if not isinstance(text, str | bytes):
        raise FactoryError(f"model kwargs must be a dict or a JSON object, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise FactoryError(f"model kwargs {text!r} are not valid JSON ({e}); e.g. '{{\"width\": 8}}'") from None
    if not isinstance(value, dict):
        raise FactoryError(f"model kwargs {text!r} must be a JSON object like '{{\"width\": 8}}'")
    return value


def _target_of(fn: Callable[..., Any]) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise FactoryError(
            f"{fn!r} has no importable name (a lambda or a function defined inside another); "
            "define the factory at the top level of a module"
        )
    _refuse_main(module, qualname)
    return f"{module}:{qualname}"


def _refuse_main(module: str, qualname: str) -> None:
    """Refuse a factory of the running script: ``__main__`` is another module in every later process."""
    if module in ("__main__", "__mp_main__"):
        raise FactoryError(
            f"{qualname} is defined in __main__ (a script or notebook), which a later process cannot import; "
            "move it into an importable module, or pass factory='package.module:name'"
        )


def as_factory_ref(factory: Any, kwargs: Mapping[str, Any] | None = None, *, check: bool = True) -> FactoryRef:
    """Normalize a factory given in any accepted form.

    Args:
        factory: A :class:`FactoryRef`; ``"pkg.mod:name"``; ``(target, kwargs)``; a mapping
            ``{"target": ..., "kwargs": ...}`` (the metadata form); or an importable function or class
            (a ``functools.partial`` of one contributes its keyword arguments).
        kwargs: Keyword arguments (merged over those of ``factory``).
        check: Import the target now, so a reference that cannot be resolved later fails at once.

    Returns:
        The reference.

    Raises:
        FactoryError: On a malformed, unimportable or non-callable reference, or arguments that are not JSON.
    """
    base: dict[str, Any] = {}
    if isinstance(factory, FactoryRef):
        target, base = factory.target, dict(factory.kwargs)
    elif isinstance(factory, str):
        target = factory
    elif isinstance(factory, tuple) and len(factory) == 2:  # (target, kwargs); the target in any form above
        inner = as_factory_ref(factory[0], check=False)
        target, base = inner.target, {**inner.kwargs, **parse_kwargs(factory[1])}
    elif isinstance(factory, Mapping):
        if "target" not in factory:
            raise FactoryError(f"a factory mapping needs a 'target' (and optional 'kwargs'), got keys {list(factory)}")
        target, base = factory["target"], parse_kwargs(factory.get("kwargs"))
    elif isinstance(factory, functools.partial):
        if factory.args:
            raise FactoryError("a partial factory may bind keyword arguments only (they are stored as JSON)")
        target, base = _target_of(factory.func), dict(factory.keywords)
    elif callable(factory):
        target = _target_of(factory)
    else:
        raise FactoryError(
            f"cannot use {type(factory).__name__} as a model factory; give 'package.module:name', "
            "(target, kwargs), a FactoryRef or an importable function"
        )
    ref = FactoryRef(target=target, kwargs={**base, **parse_kwargs(kwargs)})
    _refuse_main(*parse_target(ref.target))  # "__main__:make" named the recording script, never importable later
    if check:
        resolve(ref.target)
    return ref


def factory_from_meta(meta: Mapping[str, Any]) -> FactoryRef | None:
    """The factory reference recorded in a trajectory's run metadata, or ``None`` if there is none.

    Raises:
        FactoryError: If the entry is malformed.
    """
    entry = meta.get(FACTORY_KEY)
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or "target" not in entry:
        raise FactoryError(f"metadata {FACTORY_KEY!r} must be {{'target': ..., 'kwargs': {{...}}}}, got {entry!r}")
    # as recorded, even a reference that cannot be resolved (resolve() says why, if it is ever built)
    return FactoryRef(target=entry["target"], kwargs=parse_kwargs(entry.get("kwargs")))


def _stdlib(module: str) -> bool:
    top = module.partition(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def resolve(target: str, *, trusted: bool = True) -> Callable[..., Any]:
    """Import ``"package.module:qualname"`` and return the callable it names.

    Args:
        target: The reference.
        trusted: ``False`` for a reference read from a file: it must then name an ``nn.Module`` subclass or a
            plain Python function of your own code or of :mod:`landscape.models` (never e.g. ``os:system``,
            ``torch:load``, or ``landscape.factory:build_model``, which would build any reference).

    Raises:
        FactoryError: If the module or attribute is missing, the object is not callable, or (untrusted) not an
            allowed kind of callable.
    """
    module_name, qualname = parse_target(target)
    _refuse_main(module_name, qualname)  # it would import this process's script (or the CLI), not the recorder's
    if not trusted and _stdlib(module_name):
        raise FactoryError(
            f"recorded model factory {target!r} names the standard library; a model factory recorded in a file "
            "must be a model class or function of your own; pass --model to choose one"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        hint = " (is its parent directory on PYTHONPATH?)" if e.name == module_name.partition(".")[0] else ""
        raise FactoryError(f"model factory {target!r}: cannot import module {module_name!r}: {e}{hint}") from None
    for i, part in enumerate(qualname.split(".")):
        if not hasattr(obj, part):
            where = module_name if i == 0 else f"{module_name}:{'.'.join(qualname.split('.')[:i])}"
            names = [n for n in dir(obj) if not n.startswith("_")]
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise FactoryError(f"model factory {target!r}: {where} has no attribute {part!r}; it has: {shown}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryError(f"model factory {target!r} is a {type(obj).__name__}, not a function or class")
    if not trusted:
        is_module_class = inspect.isclass(obj) and issubclass(obj, nn.Module)
        is_function = inspect.isfunction(obj) and _own_function(obj)
        if not (is_module_class or is_function):
            raise FactoryError(
                f"recorded model factory {target!r} is neither an nn.Module class nor a Python function of your "
                "own (functions of installed packages and of landscape outside landscape.models are refused); "
                "pass --model to choose one"
            )
    return obj


_SIBLINGS = ("persistence", "tunnels", "figures")  # the distribution's other packages (setup.cfg)


def _this_distribution(module: str) -> bool:
    """Whether ``module`` is part of this distribution: ``landscape``, or a sibling package installed beside it.

    Installed normally the siblings sit in ``site-packages`` (refused as an installed package); installed editable,
    they looked like one's own code, so e.g. ``figures.make_all:_run_one`` (a figure run writing where its ``out``
    says) was callable from a file. A user's own package of the same name lives elsewhere and stays one's own.
    """
    top = module.partition(".")[0]
    if top == "landscape":
        return True
    file = getattr(sys.modules.get(top), "__file__", None) if top in _SIBLINGS else None
    return file is not None and Path(file).resolve().parent.parent == Path(__file__).resolve().parent.parent


def _own_function(fn: Callable[..., Any]) -> bool:
    """Whether a function read from a file's reference may be called: one of your own code, or the model zoo's.

    The standard library is refused (``os:system``), and so are installed packages (``torch:load`` and
    ``numpy:load`` unpickle what their keyword arguments name) and this distribution's own functions outside
    :mod:`landscape.models` (:func:`build_model` builds any reference it is given, trusted; ``persistence``,
    ``tunnels`` and ``figures`` run training and write files), however it is installed. Your own code is a
    module outside ``site-packages`` / ``dist-packages``: a project on the path, or installed editable. The
    function's own module is judged, not the one the reference names (which may import it).
    """
    name = getattr(fn, "__module__", None) or ""
    if _stdlib(name):
        return False
    if _this_distribution(name):
        return name == "landscape.models" or name.startswith("landscape.models.")
    file = getattr(sys.modules.get(name), "__file__", None)
    return file is not None and not {"site-packages", "dist-packages"} & set(Path(file).resolve().parts)


def build_model(
    factory: FactoryRef | str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    trusted: bool = True,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build a model from a factory reference.

    Args:
        factory: The reference (or ``"pkg.mod:name"`` with ``kwargs``).
        kwargs: Extra keyword arguments (over the reference's).
        trusted: See :func:`resolve`.
        dtype: Cast the model's floating-point parameters and buffers to this dtype.

    Returns:
        A new model.

    Raises:
        FactoryError: If the reference cannot be resolved, the call fails, or it returns no ``nn.Module``.
    """
    ref = as_factory_ref(factory, kwargs, check=False)
    fn = resolve(ref.target, trusted=trusted)
    try:
        model = fn(**ref.kwargs)
    except TypeError as e:
        raise FactoryError(f"cannot build {ref}: {e}; check the model kwargs") from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{ref} returned a {type(model).__name__}, not a torch.nn.Module")
    return model.to(dtype) if dtype is not None else model


def check_factory(factory: Any, model: nn.Module) -> FactoryRef:
    """The factory's reference, once it is shown to rebuild ``model``'s architecture.

    Compares the names and shapes of the parameters and buffers of the model the factory builds with
    ``model``'s, so that a wrong reference fails before a run records it rather than when the command line
    rebuilds the network from the trajectory. The model is built on torch's ``meta`` device (shapes only, no
    memory or initialization cost) when the factory allows it, else for real; torch's global random state is
    restored after.

    Args:
        factory: Any form :func:`as_factory_ref` accepts.
        model: The network the factory should rebuild (only read).

    Returns:
        The reference.

    Raises:
        FactoryError: If the factory cannot be built or builds another architecture (naming the first difference).
    """
    ref = as_factory_ref(factory)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left where it was
        try:
            with torch.device("meta"):
                built = build_model(ref)
        except FactoryError:
            raise
        except Exception:  # noqa: BLE001 - e.g. an initialization that reads values: build it for real
            try:
                built = build_model(ref)
            except FactoryError:
                raise
            except Exception as e:
                raise FactoryError(f"cannot build {ref}: {type(e).__name__}: {e}") from e

    def shapes(m: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(k, tuple(t.shape)) for k, t in [*m.named_parameters(), *m.named_buffers()]]

    got, want = shapes(built), shapes(model)
    if got != want:
        k, (g, w) = next((i, pair) for i, pair in enumerate(zip_longest(got, want)) if pair[0] != pair[1])
        have, need = (f"{t[0]} {t[1]}" if t is not None else "nothing more" for t in (g, w))
        raise FactoryError(
            f"the model factory {ref} builds another network than the one given: at tensor {k} it has {have} "
            f"where the model has {need}; fix the factory's keyword arguments (or leave factory= out and name "
            "the model with --model on the command line)"
        )
    return ref


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save``-d one (read with ``weights_only=True``).

    A ``torch`` file may hold the state dict itself or a dict with a ``"state_dict"`` entry (a checkpoint).

    Raises:
        FileNotFoundError: If the file does not exist.
        FactoryError: If the file cannot be read safely or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            return dict(safetensors.torch.load_file(str(path)))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise FactoryError(f"{str(path)!r} is not a valid safetensors file ({e})") from None
    if path.suffix not in _STATE_SUFFIXES:
        raise FactoryError(
            f"weights {str(path)!r}: give a .safetensors file or a torch state dict ({', '.join(_STATE_SUFFIXES)})"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses anything but tensors and plain containers
        raise FactoryError(
            f"{str(path)!r} cannot be read with torch.load(weights_only=True) ({type(e).__name__}); only plain "
            "state dicts are read, never pickled objects: save model.state_dict(), or convert with "
            "safetensors.torch.save_model(model, 'model.safetensors')"
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        inner = [  # a training checkpoint: the state dict is one of its entries ({"model": ..., "epoch": 3})
            k
            for k, v in (obj.items() if isinstance(obj, Mapping) else ())
            if isinstance(v, Mapping) and v and all(isinstance(t, Tensor) for t in v.values())
        ]
        hint = (
            f" (keys {sorted(map(str, obj))[:8]}); its entry {inner[0]!r} is one: save it alone with "
            f"torch.save(torch.load({str(path)!r})[{inner[0]!r}], 'weights.pt')"
            if len(inner) == 1
            else ""
        )
        raise FactoryError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict of tensors{hint}")
    return {str(k): v for k, v in obj.items()}


def load_weights(model: nn.Module, weights: str | Path | Mapping[str, Tensor], *, what: str = "") -> nn.Module:
    """A copy of ``model`` holding ``weights`` (a file for :func:`load_state_dict`, or a state dict).

    Args:
        model: The architecture (never modified).
        weights: The weights.
        what: How to name the model in errors (e.g. the factory reference).

    Returns:
        The new model.

    Raises:
        FactoryError: If names or shapes do not match the model's; the message lists the differences.
    """
    state = load_state_dict(weights) if isinstance(weights, str | Path) else dict(weights)
    own = model.state_dict()
    # A tensor tied under two names (shared embeddings) is written once by safetensors' save_model (its save_file
    # refuses shared tensors): the names absent from the file take the value of the one present.
    tied: dict[int, list[str]] = {}
    for k, v in model.state_dict(keep_vars=True).items():
        tied.setdefault(id(v), []).append(k)
    for names in tied.values():
        present = [k for k in names if k in state]
        for k in names:
            if present and k not in state:
                state[k] = state[present[0]]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", shapes)):
            if items:
                parts.append(
                    f"{label}: {', '.join(items[:5])}" + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
                )
        src = f" from {str(weights)!r}" if isinstance(weights, str | Path) else ""
        raise FactoryError(
            f"the weights{src} do not fit the model{' ' + what if what else ''}: {'; '.join(parts)}; "
            "check the model kwargs (e.g. --model-kw)"
        )
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return out
