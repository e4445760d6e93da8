"""Result objects: plain arrays with coordinates and provenance that save and load without pickle.

Every analyzer returns a frozen dataclass that derives from :class:`Result`. Its fields are numpy
arrays, numbers, strings, lists, tuples and dicts of those (keys kept as they are), or nested
:class:`Provenance`. ``save`` writes one ``.npz`` (arrays, loaded back with ``allow_pickle=False``)
holding a JSON header for everything else, so loading a result never executes code from the file.

Every result also prints as a short summary (shapes, metric names and ranges, coordinate ranges and
provenance; never raw arrays), displays in a notebook as a small table with a thumbnail where one is
cheap, and exports to a labeled :class:`xarray.Dataset` (:meth:`Result.to_xarray`, inverted by
:meth:`Result.from_xarray`) and, where the arrays form one table, a :class:`pandas.DataFrame`
(:meth:`Result.to_dataframe`). A subclass names its dimensions in a few class attributes
(``_dims``, ``_coords``, ``_labels``, ``_table``, ``_thumb``); everything else is shared here.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import json
import os
import platform
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch

from landscape._result_display import (
    _clip,
    _dims_for,
    _draw_thumbnail,
    _lookup,
    _require_xarray,
    _short_name,
    _span,
    _value_brief,
)
from landscape.trajectory.files import write_atomic

__all__ = ["Provenance", "Result", "package_version", "load_result", "register_result"]

T = TypeVar("T", bound="Result")

_REGISTRY: dict[str, type[Result]] = {}
_FORMAT = 2  # 2: tuples and dicts with keys other than strings, which format-1 readers took for plain dicts
_XR_HEADER = "landscape_result"  # attribute of a Dataset from Result.to_xarray: the JSON header


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
        extra = {"torch": str(torch.__version__), "python": platform.python_version(), **extra}
        return cls(seed=seed, data=data, extra=extra)


def register_result(cls: type[T]) -> type[T]:
    """Class decorator: make a :class:`Result` subclass loadable by :func:`load_result`.

    Also installs the short summary :meth:`Result.__repr__` in place of the dataclass' field-by-field one
    (which prints every array in full).
    """
    _REGISTRY[cls.__name__] = cls
    cls.__repr__ = Result.__repr__  # type: ignore[method-assign]
    return cls


def _encode(value: Any, arrays: dict[str, np.ndarray], key: str) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"field {key!r} is an object array, which cannot be saved without pickle")
        while key in arrays:  # {"a.b": x, "a": {"b": y}} names both arrays "f.a.b": one would replace the other
            key += "'"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, Provenance):
        return {"__provenance__": _plain(value.to_dict())}
    if isinstance(value, Result):
        raise TypeError(f"field {key!r}: nested results are not supported; save them separately")
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {"__dict__": {str(k): _encode(v, arrays, f"{key}.{k}") for k, v in value.items()}}
    if isinstance(value, Mapping):  # JSON keys are strings: other keys (1, (0, 1)) go as [key, value] pairs
        return {"__items__": [[_encode(k, {}, key), _encode(v, arrays, f"{key}.{k}")] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        tag = "__tuple__" if isinstance(value, tuple) else "__list__"
        return {tag: [_encode(v, arrays, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"field {key!r} has type {type(value).__name__}, which a Result cannot save")


def _format_of(fields: Any) -> int:
    """1 (what older versions read) unless the encoded fields hold tuples or non-string keys."""
    text = json.dumps(fields)
    return 2 if '"__tuple__"' in text or '"__items__"' in text else 1


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, e.g. a seed drawn as ``np.int64`` (JSON cannot write them)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


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
        if "__tuple__" in value:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
        if "__items__" in value:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}
    return value


class Labeling(NamedTuple):
    """How a result's arrays are labeled in :meth:`Result.to_xarray` (see the ``_dims``... class attributes)."""

    dims: Mapping[str, tuple[str, ...]]
    coords: Mapping[str, str]
    labels: Mapping[str, str]
    table: tuple[str, ...] | None


def _brief(value: Any) -> str:
    """One short line describing a field's value (the values of an array only when it is 1-D and tiny)."""
    if isinstance(value, Provenance):
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(value.created)) if value.created else "?"
        seed = "" if value.seed is None else f"seed {value.seed}, "
        data = f"data {_clip(value.data, 50)!r}, " if value.data else ""
        return f"{seed}{data}landscape {value.version}, {when} UTC"
    return _value_brief(value)


def _provenance_attrs(p: Provenance, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}_data": p.data, f"{prefix}_version": p.version, f"{prefix}_created": p.created}
    if p.seed is not None:
        out[f"{prefix}_seed"] = p.seed
    return out


@dataclasses.dataclass(frozen=True)
class Result:
    """Base class of every analyzer's result: save/load without pickle.

    Subclasses are frozen dataclasses decorated with :func:`register_result`.
    """

    kind: ClassVar[str] = "Result"
    # How the arrays are labeled (see to_xarray). Keys are array fields, "field.key" for entries of dict
    # fields, or "field.*" for every entry; "{key}" in a dimension name stands for the entry's key.
    _dims: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Array fields that are coordinates: field -> coordinate name (an index when it names its own dimension).
    _coords: ClassVar[Mapping[str, str]] = {}
    # List-of-string fields that label a dimension: field -> dimension.
    _labels: ClassVar[Mapping[str, str]] = {}
    # Dict fields whose entries become variables named by their key alone (``ds["loss"]``).
    _flat: ClassVar[tuple[str, ...]] = ("metrics",)
    # Dimensions of the one table to_dataframe returns (None: no table fits).
    _table: ClassVar[tuple[str, ...] | None] = None
    # The notebook thumbnail: (array key, "line" or "image"), or () for none.
    _thumb: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        """A short summary: shapes, ranges, coordinate ranges, provenance; tiny 1-D arrays (<= 6) by value."""
        rows = "\n".join(f"  {name}: {text}" for name, text in self._summary_rows())
        return f"{type(self).__name__}\n{rows}"

    def _summary_rows(self) -> list[tuple[str, str]]:
        spec = self._spec()
        rows = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in spec.coords and isinstance(value, np.ndarray) and value.ndim == 1:
                text = f"{spec.coords[f.name]} {_span(value)}"
            else:
                text = _brief(value)
            rows.append((f.name, _clip(text, max(40, 116 - len(f.name)))))
        return rows

    def _repr_html_(self) -> str:
        """Notebook display: the summary as a table and, where cheap, a small PNG thumbnail (well-formed XHTML)."""
        body = "".join(
            f'<tr><th style="text-align:left;padding-right:1em">{html.escape(n)}</th>'
            f'<td style="text-align:left;font-family:monospace">{html.escape(t)}</td></tr>'
            for n, t in self._summary_rows()
        )
        table = (
            f'<table class="landscape-result"><caption style="text-align:left;font-weight:bold">'
            f"{html.escape(type(self).__name__)}</caption><tbody>{body}</tbody></table>"
        )
        try:
            png = self._thumbnail_png()
        except Exception:  # noqa: BLE001 - a display hook must never raise; the table alone still shows
            png = None
        img = ""
        if png is not None:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            img = f'<img src="{src}" alt="{html.escape(type(self).__name__)} thumbnail" />'
        return f'<div style="display:flex;gap:1em;align-items:flex-start">{table}{img}</div>'

    def _thumbnail_data(self) -> tuple[Any, ...] | None:
        """What the thumbnail draws, or None.

        One of ``("lines", x, [y, ...], xlabel, title)``, ``("image", x, y, z, title)`` (``z`` of shape
        ``(len(y), len(x))``) or ``("path", [(T_i, 2), ...])``.

        The default draws the array named by ``_thumb`` against the coordinates of its dimensions.
        """
        if not self._thumb:
            return None
        key, mode = self._thumb
        arr = _lookup(self, key)
        if not isinstance(arr, np.ndarray) or arr.size == 0:
            return None
        spec = self._spec()
        dims = _dims_for(key, arr.ndim, spec.dims)
        axes = [self._coordinate(d, n) for d, n in zip(dims, arr.shape)]
        name = key.rpartition(".")[2]
        if mode == "image" and arr.ndim == 2:
            return ("image", axes[1], axes[0], arr, name)
        if arr.ndim == 1:
            return ("lines", axes[0], [arr], dims[0], name)
        if arr.ndim == 2:
            return ("lines", axes[1], list(arr), dims[1], name)
        return None

    def _coordinate(self, dim: str, n: int) -> np.ndarray:
        """Values of the coordinate of ``dim`` (an index coordinate field), else ``arange(n)``."""
        spec = self._spec()
        for key, name in spec.coords.items():
            a = _lookup(self, key)
            if name == dim and isinstance(a, np.ndarray) and a.shape == (n,) and a.dtype.kind in "iuf":
                return a
        return np.arange(n)

    def _thumbnail_png(self) -> bytes | None:
        data = self._thumbnail_data()
        return None if data is None else _draw_thumbnail(data)

    # ------------------------------------------------------------------ labeled export
    def _spec(self) -> Labeling:
        """The labeling of this result's arrays (subclasses override when it depends on field values)."""
        return Labeling(dims=self._dims, coords=self._coords, labels=self._labels, table=self._table)

    def to_xarray(self) -> Any:
        """The result as an :class:`xarray.Dataset` with named dimensions and coordinates.

        Array fields become variables (entries of ``metrics`` are named by their key alone, e.g.
        ``ds["loss"]``; other dict entries ``"field.key"``), coordinate fields become coordinates
        (``ds.x``, ``ds.alpha``...), name lists label their dimension (``ds.anchor``), and scalar fields and
        the provenance become attributes. The attribute ``"landscape_result"`` holds everything else as
        JSON, so :meth:`from_xarray` rebuilds the result exactly.

        Returns:
            The dataset.

        Raises:
            ImportError: If xarray is not installed (an optional dependency: ``pip install xarray``).
        """
        xr = _require_xarray()
        arrays: dict[str, np.ndarray] = {}
        fields = {f.name: _encode(getattr(self, f.name), arrays, f.name) for f in dataclasses.fields(self)}
        spec = self._spec()
        sizes: dict[str, int] = {}
        dims: dict[str, tuple[str, ...]] = {}
        for key in sorted(arrays, key=lambda k: k not in spec.coords):  # coordinates first: they fix sizes
            a = arrays[key]
            d = _dims_for(key, a.ndim, spec.dims)
            if any(sizes.get(n, s) != s for n, s in zip(d, a.shape)) or len(set(d)) < len(d):
                d = _dims_for(key, a.ndim, {})  # inconsistent with another variable: unlabeled dimensions
            sizes.update(zip(d, a.shape))
            dims[key] = d
        names: dict[str, str] = {}
        coords: dict[str, Any] = {}
        data_vars: dict[str, Any] = {}
        for key in sorted(arrays, key=lambda k: k not in spec.coords):
            name = spec.coords.get(key) or _short_name(key, self._flat)
            if name in names.values() or (name in sizes and dims[key] != (name,)):
                name = key
            while name in names.values() or (name in sizes and dims[key] != (name,)):
                name += "_"
            names[key] = name
            (coords if key in spec.coords else data_vars)[name] = (dims[key], arrays[key])
        for field, dim in spec.labels.items():
            value = getattr(self, field, None)
            if (
                isinstance(value, list)
                and all(isinstance(v, str) for v in value)
                and sizes.get(dim) == len(value)
                and dim not in coords
                and dim not in data_vars
            ):
                coords[dim] = ((dim,), np.array(value, dtype=str))
        # and the dtypes: a netCDF3 file (scipy's writer, xarray's fallback without netCDF4) stores int64 as int32
        dtypes = {k: a.dtype.str for k, a in arrays.items()}
        header = {
            "__format__": _format_of(fields),
            "__class__": type(self).__name__,
            "fields": fields,
            "variables": names,
            "dtypes": dtypes,
        }
        attrs: dict[str, Any] = {_XR_HEADER: json.dumps(header)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                attrs[f.name] = int(value)  # netCDF attributes have no booleans
            elif isinstance(value, int | float | str | np.generic):
                attrs[f.name] = value.item() if isinstance(value, np.generic) else value
            elif isinstance(value, Provenance):
                attrs.update(_provenance_attrs(value, f.name))
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    @classmethod
    def from_xarray(cls: type[T], ds: Any) -> T:
        """Rebuild a result from :meth:`to_xarray`'s dataset (also after a netCDF round trip).

        Raises:
            ValueError: If the dataset was not made by :meth:`to_xarray`, or holds another result type.
        """
        try:
            header = json.loads(ds.attrs[_XR_HEADER])
            names = dict(header["variables"])
            name = header["__class__"]
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ValueError(
                f"this dataset was not made by Result.to_xarray (no valid {_XR_HEADER!r} attribute)"
            ) from None
        if header.get("__format__", 0) > _FORMAT:
            raise ValueError(f"the dataset was written by a newer version (format {header['__format__']}); upgrade")
        if name not in _REGISTRY:
            raise ValueError(f"the dataset holds an unknown result type {name!r}; known: {sorted(_REGISTRY)}")
        missing = [v for v in names.values() if v not in ds.variables]
        if missing:
            raise ValueError(f"the dataset lacks the variables {missing} of its {name}")
        arrays = {k: np.array(ds[v].values, copy=True) for k, v in names.items()}
        for k, dtype in dict(header.get("dtypes", {})).items():  # absent from datasets of older versions
            if k in arrays and arrays[k].dtype.kind in "iub" and np.dtype(dtype).kind in "iub":
                arrays[k] = arrays[k].astype(dtype)
        obj = _REGISTRY[name](**{k: _decode(v, arrays) for k, v in header["fields"].items()})
        if not isinstance(obj, cls):
            raise ValueError(f"the dataset holds a {name}, not a {cls.__name__}")
        return obj

    def to_dataframe(self) -> Any:
        """The variables that share the result's main dimensions as one :class:`pandas.DataFrame`.

        Indexed by those dimensions (e.g. ``(y, x)`` for a plane, ``alpha`` for a line); coordinates along them
        become columns.

        Raises:
            NotImplementedError: If this result type has no single table (use :meth:`to_xarray`).
            ImportError: If xarray is not installed.
        """
        table = self._spec().table
        if table is None:
            raise NotImplementedError(
                f"a {type(self).__name__} has no single table; use to_xarray() and pick variables"
            )
        ds = self.to_xarray()
        keep = [v for v in ds.data_vars if ds[v].dims == table]
        return ds[keep].to_dataframe()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result to ``path`` (a ``.npz`` file; the suffix is added if missing).

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays: dict[str, np.ndarray] = {}
        fields = {f.name: _encode(getattr(self, f.name), arrays, f.name) for f in dataclasses.fields(self)}
        header = {"__format__": _format_of(fields), "__class__": type(self).__name__, "fields": fields}
        arrays = {f"a{i}": a for i, a in enumerate(arrays.values())} | {"__keys__": np.array(list(arrays))}
        payload = json.dumps(header)
        buf = io.BytesIO()
        # ignore: numpy's stub matches **arrays against the bool allow_pickle; the keys here are a0, a1, __keys__
        np.savez(buf, __header__=np.array(payload), **arrays)  # type: ignore[arg-type]
        write_atomic(path, buf.getvalue())  # readers see the old file or the new one, never a partial one
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
        FileNotFoundError: If there is no such file.
        ValueError: If the file is not a saved result, is damaged or truncated, or names an unknown class.
    """
    try:
        with open(path, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (a result saved by Result.save is an .npz)") from None
    except OSError as e:
        raise ValueError(f"{path} is not a saved landscape result ({e})") from e
    if not zipped:  # else numpy takes it for a pickle and advises loading it unsafely
        raise ValueError(f"{path} is not a saved landscape result: not an .npz archive (what Result.save writes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["__header__"]))
            keys = [str(k) for k in z["__keys__"]]
            arrays = {k: z[f"a{i}"] for i, k in enumerate(keys)}
    # A cut-off copy, a flipped byte (zip's CRC check), or a flipped flag: "compression method not supported",
    # "file is encrypted" (NotImplementedError and RuntimeError from zipfile).
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise ValueError(f"{path} is a damaged or truncated result file ({e}); save the result again") from e
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a saved landscape result ({e})") from e
    if not isinstance(header, dict) or not isinstance(header.get("fields"), dict):
        raise ValueError(f"{path} is not a saved landscape result (its header holds no fields)")
    fmt = header.get("__format__", 0)
    if not isinstance(fmt, int):
        raise ValueError(f"{path} is not a saved landscape result (format {fmt!r})")
    if fmt > _FORMAT:
        raise ValueError(f"{path} was written by a newer version (format {fmt}); upgrade")
    name = header.get("__class__")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"{path} holds an unknown result type {name!r}; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[name]
    try:
        return cls(**{k: _decode(v, arrays) for k, v in header["fields"].items()})
    except (KeyError, TypeError) as e:  # an array the header names is missing, or a field the class lacks
        raise ValueError(f"{path} is a damaged {name} file ({type(e).__name__}: {e}); save the result again") from e
