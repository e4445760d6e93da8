"""How results label and show themselves: the xarray labeling helpers, one-line field briefs and thumbnails.

Private: the helpers behind :class:`landscape.results.Result`'s ``__repr__``, ``_repr_html_`` and ``to_xarray``.
Nothing here knows the result classes; the brief of a :class:`~landscape.results.Provenance` stays beside its class.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def _require_xarray() -> Any:
    try:
        import xarray
    except ImportError:
        raise ImportError(
            "to_xarray needs xarray, an optional dependency: pip install xarray (or pip install 'landscape[xarray]')"
        ) from None
    return xarray


def _dims_for(key: str, ndim: int, spec: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Dimension names of array ``key``: declared ones, then ``<key>_dim_<i>`` for the rest."""
    head, _, last = key.rpartition(".")
    declared = spec.get(key, spec.get(f"{head}.*", ())) if head else spec.get(key, ())
    declared = tuple(d.replace("{key}", last) for d in declared)
    if len(declared) > ndim:
        declared = ()
    return declared + tuple(f"{key}_dim_{i}" for i in range(len(declared), ndim))


def _short_name(key: str, flat: Sequence[str]) -> str:
    head, _, last = key.partition(".")
    return last if head in flat and last and "." not in last else key


def _lookup(obj: Any, key: str) -> Any:
    """``obj.metrics["loss"]`` for ``"metrics.loss"``; None if absent."""
    head, _, rest = key.partition(".")
    value = getattr(obj, head, None)
    while rest and isinstance(value, Mapping):
        part, _, rest = rest.partition(".")
        value = value.get(part)
    return None if rest else value


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


_SHOWN = 6  # 1-D arrays up to this size are shown by value, larger ones by their range


def _span(a: np.ndarray) -> str:
    """``"lo .. hi (n)"`` of a 1-D coordinate."""
    if a.size == 0:
        return "(empty)"
    if a.dtype.kind not in "iuf":
        return f"({a.size})"
    fin = a[np.isfinite(a)]
    if not fin.size:
        return f"no finite value ({a.size})"
    if a.size <= _SHOWN:  # "98 (1)" rather than "98 .. 98 (1)"
        return f"{', '.join(_num(v.item()) for v in a)} ({a.size})"
    return f"{_num(fin.min())} .. {_num(fin.max())} ({a.size})"


def _array_brief(a: np.ndarray) -> str:
    shape = "(" + ", ".join(str(n) for n in a.shape) + ("," if a.ndim == 1 else "") + ")"
    text = f"{a.dtype} {shape}"
    if a.dtype.kind not in "iufb" or a.size == 0 or a.size > 1_000_000:
        return text
    if a.ndim == 1 and a.size <= _SHOWN:  # a few numbers (top eigenvalues, explained variance): their values, in order
        return f"{text} = [{', '.join(_num(v.item()) for v in a)}]"
    fin = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    text += f" [{_num(fin.min())}, {_num(fin.max())}]" if fin.size else " [no finite value]"
    if fin.size < a.size:
        text += f" {a.size - fin.size} non-finite"
    return text


def _value_brief(value: Any) -> str:
    """One short line describing a field's value (the values of an array only when it is 1-D and tiny).

    Any value but a :class:`~landscape.results.Provenance`, which ``landscape.results._brief`` describes.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _array_brief(value)
    if isinstance(value, Mapping):
        if value and all(isinstance(v, np.ndarray | torch.Tensor) for v in value.values()):
            parts = [f"{k} {_value_brief(v)}" for k, v in list(value.items())[:4]]
            more = f"; +{len(value) - 4} more" if len(value) > 4 else ""
            return "; ".join(parts) + more
        if "numel" in value and "tensors" in value:  # a ParamLayout.to_dict()
            n, d = len(value["tensors"]), value["numel"]
            return f"{n} tensor{'s' * (n != 1)}, {d} parameter{'s' * (d != 1)}"
        if value and len(value) <= 5 and all(isinstance(v, int | float | str | bool | None) for v in value.values()):
            return ", ".join(f"{k}={_clip(_num(v), 24)}" for k, v in value.items())
        keys = ", ".join(str(k) for k in list(value)[:6])
        return f"{len(value)} keys" + (f": {keys}" + (", ..." if len(value) > 6 else "") if value else "")
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) for v in value):
            return ", ".join(value) + (f" ({len(value)})" if len(value) > 3 else "")
        if value and len(value) <= 6 and all(isinstance(v, int | float) for v in value):
            return "[" + ", ".join(_num(v) for v in value) + "]"
        return f"{len(value)} items"
    if isinstance(value, str):
        return repr(_clip(value, 60))
    return _num(value)


def _draw_thumbnail(data: tuple[Any, ...]) -> bytes:
    """A small PNG of what :meth:`~landscape.results.Result._thumbnail_data` returned (lines, image or paths)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no global figure state

    fig = Figure(figsize=(2.6, 1.9), dpi=72)
    ax = fig.add_subplot()
    if data[0] == "image":
        _, x, y, z, label = data
        z = np.where(np.isfinite(z), z, np.nan).astype(np.float64)
        if x.size > 1 and y.size > 1 and np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0):
            ax.pcolormesh(x, y, z, shading="auto", cmap="viridis")
        else:
            ax.imshow(z, origin="lower", aspect="auto", cmap="viridis")
        ax.set_title(label, fontsize=7)
    elif data[0] == "path":
        for xy in data[1][:20]:
            ax.plot(xy[:, 0], xy[:, 1], lw=1, marker=".", ms=2)
        ax.plot([0], [0], "k+", ms=5)
        ax.set_title("path on the plane", fontsize=7)
    else:
        _, x, ys, xlabel, ylabel = data
        for y in ys[:20]:
            ax.plot(x, np.where(np.isfinite(y), y, np.nan), lw=1)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_title(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
