"""Result objects: plain arrays with coordinates and provenance that save and load without pickle.

Every analyzer returns a frozen dataclass that derives from :class:`Result`. Its fields are numpy
arrays, numbers, strings, lists and dicts of those, or nested :class:`Provenance`. ``save`` writes
one ``.npz`` (arrays, loaded back with ``allow_pickle=False``) holding a JSON header for everything
else, so loading a result never executes code from the file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

__all__ = ["Provenance", "Result", "package_version", "load_result", "register_result"]

T = TypeVar("T", bound="Result")

_REGISTRY: dict[str, type[Result]] = {}
_FORMAT = 1


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """Version string of the installed ``landscape`` package (``"unknown"`` when not installed).

    Cached: reading the installed metadata took ~10 ms, paid by every slice call otherwise.
    """
    try:
        from importlib.metadata import version

        return version("landscape")
    except Exception:  # noqa: BLE001 - running from a source tree without installation
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a result came from.

    Attributes:
        seed: Random seed used (directions, probes, training), or ``None``.
        data: Human-readable description of the data (name, size, split).
        version: Package version that computed the result.
        created: Unix time of creation.
        extra: Free-form JSON-compatible details (model name, options).
    """

    seed: int | None = None
    data: str = ""
    version: str = dataclasses.field(default_factory=package_version)
    created: float = dataclasses.field(default_factory=time.time)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(d))

    @classmethod
    def here(cls, seed: int | None = None, data: str = "", **extra: Any) -> Provenance:
        """Provenance stamped with this machine's torch and python versions."""
        extra = {"torch": torch.__version__, "python": platform.python_version(), **extra}
        return cls(seed=seed, data=data, extra=extra)


def register_result(cls: type[T]) -> type[T]:
    """Class decorator: make a :class:`Result` subclass loadable by :func:`load_result`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _encode(value: Any, arrays: dict[str, np.ndarray], key: str) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"field {key!r} is an object array, which cannot be saved without pickle")
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, Provenance):
        return {"__provenance__": value.to_dict()}
    if isinstance(value, Result):
        raise TypeError(f"field {key!r}: nested results are not supported; save them separately")
    if isinstance(value, Mapping):
        return {"__dict__": {str(k): _encode(v, arrays, f"{key}.{k}") for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"__list__": [_encode(v, arrays, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"field {key!r} has type {type(value).__name__}, which a Result cannot save")


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__provenance__" in value:
            return Provenance.from_dict(value["__provenance__"])
        if "__dict__" in value:
            return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
        if "__list__" in value:
            return [_decode(v, arrays) for v in value["__list__"]]
    return value


@dataclasses.dataclass(frozen=True)
class Result:
    """Base class of every analyzer's result: save/load without pickle.

    Subclasses are frozen dataclasses decorated with :func:`register_result`.
    """

    kind: ClassVar[str] = "Result"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result to ``path`` (a ``.npz`` file; the suffix is added if missing).

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays: dict[str, np.ndarray] = {}
        header = {
            "__format__": _FORMAT,
            "__class__": type(self).__name__,
            "fields": {f.name: _encode(getattr(self, f.name), arrays, f.name) for f in dataclasses.fields(self)},
        }
        arrays = {f"a{i}": a for i, a in enumerate(arrays.values())} | {"__keys__": np.array(list(arrays))}
        payload = json.dumps(header)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, __header__=np.array(payload), **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls: type[T], path: str | os.PathLike[str]) -> T:
        """Read a result written by :meth:`save` (never unpickles).

        Raises:
            ValueError: If the file is not a saved result of this class.
        """
        obj = load_result(path)
        if not isinstance(obj, cls):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj


def load_result(path: str | os.PathLike[str]) -> Result:
    """Load any registered result from a ``.npz`` written by :meth:`Result.save`.

    Raises:
        ValueError: If the file is not a saved result or names an unknown class.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["__header__"]))
            keys = [str(k) for k in z["__keys__"]]
            arrays = {k: z[f"a{i}"] for i, k in enumerate(keys)}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a saved landscape result ({e})") from e
    if header.get("__format__", 0) > _FORMAT:
        raise ValueError(f"{path} was written by a newer version (format {header['__format__']}); upgrade")
    name = header.get("__class__")
    if name not in _REGISTRY:
        raise ValueError(f"{path} holds an unknown result type {name!r}; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[name]
    fields = {k: _decode(v, arrays) for k, v in header["fields"].items()}
    return cls(**fields)
