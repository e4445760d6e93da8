"""Neuron saturation: streamed activation histograms and percentiles (Persistent Neurons §5, Fig. 14-15).

The Persistent Neurons paper (after Glorot & Bengio 2010, Fig. 3) follows "98 percentiles of the
distribution of the activation values" of each tanh layer over training (Fig. 14) and shows
normalized activation histograms at chosen epochs (Fig. 15). Reading taken here: the percentile is of
the *raw* activation values (``value="raw"``, the default), as in Glorot & Bengio, where a layer's
98th percentile climbing to 1 means its units sit on the upper asymptote; ``value="abs"`` measures
``|activation|`` instead, which also counts units saturated at -1.

Activations are captured with forward hooks and never all kept: each layer feeds a
:class:`StreamingHistogram` on a fixed range (tanh: [-1, 1]). Percentile bound: numpy's ``linear``
percentile interpolates two order statistics, each of which lies in a known histogram bin, so the
exact value is bracketed by ``[lower, upper]``, an interval at most one bin wide (wider only when it
falls among values outside the range); the estimate lies inside the bracket, so its error is at most
``upper - lower <= (hi - lo) / bins``. While at most ``exact_limit`` values have been seen they are
also kept and the percentiles are exact (``lower == upper``).

Capture never changes the model: hooks are removed and train/eval modes restored, also on error.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape._options import parse_option
from landscape.params import preserved_mode
from landscape.results import Provenance, Result, register_result
from landscape.train.loop import Callback, EpochEvent, RecordTrajectory, Trainer
from landscape.validation import BatchChecker, check_model

__all__ = [
    "ActivationValue",
    "StreamingHistogram",
    "SaturationStats",
    "SaturationHistory",
    "SaturationRecorder",
    "measure_saturation",
    "HISTOGRAM_RANGES",
]

LayerSpec = str | type[nn.Module]
RangeLike = tuple[float, float] | Mapping[str, tuple[float, float]] | None

# Natural histogram range of bounded activations, by module type (dispatch registry).
HISTOGRAM_RANGES: dict[type[nn.Module], Callable[[nn.Module], tuple[float, float]]] = {
    nn.Tanh: lambda m: (-1.0, 1.0),
    nn.Softsign: lambda m: (-1.0, 1.0),
    nn.Sigmoid: lambda m: (0.0, 1.0),
    nn.Hardsigmoid: lambda m: (0.0, 1.0),
    # also ReLU6; ignore: nn.Module.__getattr__ is typed Tensor | Module, Hardtanh's bounds are floats
    nn.Hardtanh: lambda m: (float(m.min_val), float(m.max_val)),  # type: ignore[arg-type]
}


class ActivationValue(str, enum.Enum):
    """Which statistic of the activations is histogrammed."""

    RAW = "raw"  # the activation itself (Glorot & Bengio 2010 Fig. 3; Persistent Neurons Fig. 14)
    ABS = "abs"  # its magnitude: saturation at either asymptote


# --------------------------------------------------------------------------- streaming histogram
class StreamingHistogram:
    """Histogram of a stream of values on a fixed range, with bounded percentile estimates.

    Values below ``lo`` / above ``hi`` are counted as underflow / overflow; non-finite values (NaN, +-inf)
    are counted apart (``nonfinite``, NaNs alone also in ``nan_count``) and left out of every statistic.
    Bins are ``[e_j, e_{j+1})``, the last one closed, ``e = linspace(lo, hi, bins + 1)``.

    Args:
        lo: Lower end of the range.
        hi: Upper end of the range.
        bins: Number of equal bins.
        exact_limit: Keep the values themselves while at most this many were seen, for exact percentiles.

    Example:
        >>> h = StreamingHistogram(-1, 1, bins=4)
        >>> h.update(torch.tensor([-0.9, -0.2, 0.1, 0.3, 1.0]))
        >>> h.counts.tolist(), h.count
        ([1, 1, 2, 1], 5)
    """

    def __init__(self, lo: float, hi: float, bins: int = 100, *, exact_limit: int = 65536) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"histogram range must be finite with lo < hi, got ({lo}, {hi})")
        if int(bins) < 1:
            raise ValueError(f"bins must be a positive integer, got {bins}")
        self.edges = torch.linspace(float(lo), float(hi), int(bins) + 1, dtype=torch.float64)
        self.counts = torch.zeros(int(bins), dtype=torch.int64)
        self.underflow = self.overflow = self.nan_count = self.nonfinite = self.count = 0
        self.minimum, self.maximum = math.inf, -math.inf
        self._sum = self._sumsq = 0.0
        self.exact_limit = int(exact_limit)
        self._kept: list[Tensor] | None = [] if exact_limit > 0 else None

    @property
    def lo(self) -> float:
        """Lower end of the range."""
        return float(self.edges[0])

    @property
    def hi(self) -> float:
        """Upper end of the range."""
        return float(self.edges[-1])

    def update(self, values: Tensor) -> None:
        """Add values of any shape."""
        v = values.detach().reshape(-1).to(torch.float64)
        fin = torch.isfinite(v)
        if not bool(fin.all()):  # counted apart: an inf would make the mean inf and the std NaN
            self.nan_count += int(torch.isnan(v).sum())
            self.nonfinite += int((~fin).sum())
            v = v[fin]
        if v.numel() == 0:
            return
        self.count += v.numel()
        self.minimum = min(self.minimum, float(v.min()))
        self.maximum = max(self.maximum, float(v.max()))
        self._sum += float(v.sum())
        self._sumsq += float(v.square().sum())
        below, above = v < self.edges[0], v > self.edges[-1]
        self.underflow += int(below.sum())
        self.overflow += int(above.sum())
        inside = v[~(below | above)]
        # bucketize on the inner edges: bin j holds [e_j, e_{j+1}); the top edge falls in the last bin
        idx = torch.bucketize(inside, self.edges[1:-1], right=True)
        self.counts += torch.bincount(idx, minlength=self.counts.numel())
        if self._kept is not None:
            if self.count <= self.exact_limit:
                self._kept.append(v.to(torch.float32) if values.dtype == torch.float32 else v)
            else:
                self._kept = None

    @property
    def exact(self) -> bool:
        """Whether every value is still kept (percentiles are then exact)."""
        return self._kept is not None and self.count > 0

    @property
    def mean(self) -> float:
        """Mean of the finite values."""
        return self._sum / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation of the finite values."""
        if not self.count:
            return math.nan
        return math.sqrt(max(self._sumsq / self.count - self.mean**2, 0.0))

    def _order_stat(self, k: int) -> tuple[float, float, float]:
        """Bracket ``[lower, upper]`` and in-bin estimate of the ``k``-th smallest value (0-based)."""
        if k == 0 or k == self.count - 1:  # the extremes are tracked exactly
            v = self.minimum if k == 0 else self.maximum
            return v, v, v
        if k < self.underflow:
            return self.minimum, self.lo, (self.minimum + self.lo) / 2
        cum = self.underflow + torch.cumsum(self.counts, 0)
        if k >= int(cum[-1]):
            return self.hi, self.maximum, (self.hi + self.maximum) / 2
        j = int(torch.searchsorted(cum, torch.tensor(k), right=True))
        before = int(cum[j - 1]) if j > 0 else self.underflow
        a, b = float(self.edges[j]), float(self.edges[j + 1])
        est = a + (k - before + 0.5) / int(self.counts[j]) * (b - a)  # ranks spread evenly over the bin
        lower, upper = max(a, self.minimum), min(b, self.maximum)
        return lower, upper, min(max(est, lower), upper)

    def percentile(self, q: float) -> tuple[float, float, float]:
        """The ``q``-th percentile (numpy's default ``linear`` method) with its guaranteed bracket.

        Args:
            q: Percentile in ``[0, 100]``.

        Returns:
            ``(estimate, lower, upper)``: the exact numpy percentile of all values seen lies in
            ``[lower, upper]`` and so does the estimate; ``upper - lower`` is at most one bin width unless
            the percentile falls among values outside the range. Exact mode returns ``(v, v, v)``.

        Raises:
            ValueError: If no value was seen or ``q`` is outside ``[0, 100]``.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must lie in [0, 100], got {q}")
        if self.count == 0:
            raise ValueError("no values were captured: is the layer used in the forward pass?")
        if self.exact:
            v = float(np.percentile(torch.cat(self._kept).to(torch.float64).numpy(), q))  # type: ignore[arg-type]
            return v, v, v
        h = (self.count - 1) * q / 100
        k0 = int(math.floor(h))
        k1 = min(k0 + 1, self.count - 1)
        f = h - k0
        l0, u0, e0 = self._order_stat(k0)
        l1, u1, e1 = self._order_stat(k1)
        mix = lambda x, y: (1 - f) * x + f * y  # noqa: E731 - numpy's linear interpolation of two ranks
        return mix(e0, e1), mix(l0, l1), mix(u0, u1)

    def stats(
        self, layer: str, percentiles: Sequence[float], value: ActivationValue | str = ActivationValue.RAW
    ) -> SaturationStats:
        """Freeze into a :class:`SaturationStats` with the given percentiles."""
        p = [self.percentile(q) for q in percentiles]
        return SaturationStats(
            layer=layer,
            value=parse_option(ActivationValue, value, "value").value,
            percentiles=np.asarray(percentiles, dtype=np.float64),
            values=np.array([x[0] for x in p]),
            lower=np.array([x[1] for x in p]),
            upper=np.array([x[2] for x in p]),
            exact=self.exact,
            counts=self.counts.numpy().copy(),
            edges=self.edges.numpy().copy(),
            underflow=self.underflow,
            overflow=self.overflow,
            count=self.count,
            minimum=self.minimum,
            maximum=self.maximum,
            mean=self.mean,
            std=self.std,
            nonfinite=self.nonfinite,
            provenance=Provenance.here(data=f"{self.count} activation values of layer {layer!r}"),
        )


# --------------------------------------------------------------------------- results
@register_result
@dataclasses.dataclass(frozen=True)
class SaturationStats(Result):
    """Activation statistics of one layer over a dataset.

    Attributes:
        layer: Layer name (``"name#i"`` for the i-th call of a module used several times per forward).
        value: ``"raw"`` or ``"abs"``: what was histogrammed.
        percentiles: ``(p,)`` percentile levels, e.g. ``[98.]``.
        values: ``(p,)`` percentile estimates.
        lower: ``(p,)`` guaranteed lower bounds of the exact percentiles.
        upper: ``(p,)`` guaranteed upper bounds (``upper - lower <= bin width`` inside the range).
        exact: Whether ``values`` are exact (every value was kept).
        counts: ``(bins,)`` in-range counts.
        edges: ``(bins + 1,)`` bin edges.
        underflow: Number of values below the range.
        overflow: Number of values above the range.
        count: Number of finite values (the statistics are over these).
        minimum: Smallest value.
        maximum: Largest value.
        mean: Mean value.
        std: Standard deviation (Glorot & Bengio plot it beside the percentiles).
        nonfinite: Number of NaN or infinite activations, left out of every statistic above.
        provenance: Where the result came from.
    """

    _dims = {
        "percentiles": ("percentile",),
        "values": ("percentile",),
        "lower": ("percentile",),
        "upper": ("percentile",),
        "counts": ("bin",),
        "edges": ("edge",),
    }
    _coords = {"percentiles": "percentile"}
    _table = ("percentile",)
    _thumb = ("counts", "line")

    layer: str
    value: str
    percentiles: np.ndarray
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    exact: bool
    counts: np.ndarray
    edges: np.ndarray
    underflow: int
    overflow: int
    count: int
    minimum: float
    maximum: float
    mean: float
    std: float
    nonfinite: int = 0  # default: results saved before the field existed still load
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    @property
    def normalized(self) -> np.ndarray:
        """``(bins,)`` share of the in-range values per bin; sums to one (Fig. 15's normalized histogram)."""
        total = self.counts.sum()
        return self.counts / total if total else np.zeros(len(self.counts))

    @property
    def centers(self) -> np.ndarray:
        """``(bins,)`` bin centres."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def bin_width(self) -> float:
        """Width of a bin (the percentile error bound inside the range)."""
        return float(self.edges[1] - self.edges[0])

    def percentile(self, q: float) -> float:
        """Estimate of one of the recorded percentile levels.

        Raises:
            KeyError: If ``q`` was not recorded; the message lists the recorded levels.
        """
        hit = np.flatnonzero(np.isclose(self.percentiles, q))
        if not len(hit):
            raise KeyError(f"percentile {q} was not recorded; recorded: {self.percentiles.tolist()}")
        return float(self.values[hit[0]])


@register_result
@dataclasses.dataclass(frozen=True)
class SaturationHistory(Result):
    """Percentile curves and histograms of several layers over training (Persistent Neurons Fig. 14-15).

    Attributes:
        epochs: ``(E,)`` epochs of the measurements (0 = before training).
        layers: ``L`` layer names.
        percentiles: ``(p,)`` percentile levels.
        values: ``(E, L, p)`` percentile estimates.
        lower: ``(E, L, p)`` guaranteed lower bounds.
        upper: ``(E, L, p)`` guaranteed upper bounds.
        mean: ``(E, L)`` mean activation value.
        std: ``(E, L)`` standard deviation of the activation values.
        histogram_epochs: ``(H,)`` epochs at which histograms were kept.
        histograms: ``(H, L, bins)`` in-range counts.
        edges: ``(L, bins + 1)`` bin edges of each layer.
        value: ``"raw"`` or ``"abs"``.
        label: Name of the run (e.g. ``"plain"``, ``"championship"``).
        provenance: Where the result came from.
    """

    _dims = {
        "epochs": ("epoch",),
        "percentiles": ("percentile",),
        "values": ("epoch", "layer", "percentile"),
        "lower": ("epoch", "layer", "percentile"),
        "upper": ("epoch", "layer", "percentile"),
        "mean": ("epoch", "layer"),
        "std": ("epoch", "layer"),
        "histogram_epochs": ("histogram_epoch",),
        "histograms": ("histogram_epoch", "layer", "bin"),
        "edges": ("layer", "edge"),
    }
    _coords = {"epochs": "epoch", "percentiles": "percentile", "histogram_epochs": "histogram_epoch"}
    _labels = {"layers": "layer"}
    _table = ("epoch", "layer")

    def _thumbnail_data(self) -> tuple[Any, ...] | None:
        if self.values.size == 0:
            return None
        q = float(self.percentiles[-1])
        return ("lines", self.epochs, list(self.values[:, :, -1].T), "epoch", f"percentile {q:g} per layer")

    epochs: np.ndarray
    layers: list[str]
    percentiles: np.ndarray
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    histogram_epochs: np.ndarray
    histograms: np.ndarray
    edges: np.ndarray
    value: str = ActivationValue.RAW.value
    label: str = ""
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    def _layer(self, layer: str | int) -> int:
        if isinstance(layer, int):
            return layer
        if layer not in self.layers:
            raise KeyError(f"no layer {layer!r}; layers are {self.layers}")
        return self.layers.index(layer)

    def curve(self, layer: str | int, q: float = 98.0) -> np.ndarray:
        """``(E,)`` percentile ``q`` of one layer over the epochs.

        Raises:
            KeyError: If the layer or the level was not recorded.
        """
        hit = np.flatnonzero(np.isclose(self.percentiles, q))
        if not len(hit):
            raise KeyError(f"percentile {q} was not recorded; recorded: {self.percentiles.tolist()}")
        return self.values[:, self._layer(layer), hit[0]]

    def normalized_histogram(self, epoch: float, layer: str | int) -> tuple[np.ndarray, np.ndarray]:
        """``(shares (bins,), edges (bins + 1,))`` of one layer at one kept epoch; shares sum to one.

        Raises:
            KeyError: If no histogram was kept at ``epoch``.
        """
        hit = np.flatnonzero(np.isclose(self.histogram_epochs, epoch))
        if not len(hit):
            raise KeyError(f"no histogram kept at epoch {epoch}; kept: {self.histogram_epochs.tolist()}")
        li = self._layer(layer)
        counts = self.histograms[hit[0], li].astype(np.float64)
        total = counts.sum()
        return (counts / total if total else counts), self.edges[li]

    @classmethod
    def from_stats(
        cls,
        stats: Sequence[Mapping[str, SaturationStats]],
        epochs: Sequence[float],
        *,
        histogram_epochs: Iterable[float] | None = None,
        label: str = "",
    ) -> SaturationHistory:
        """Stack per-epoch measurements (outputs of :func:`measure_saturation`) into a history.

        Args:
            stats: One ``{layer: SaturationStats}`` per epoch, all with the same layers and levels.
            epochs: The epoch of each.
            histogram_epochs: Epochs whose histograms to keep (default: all).
            label: Run name.

        Raises:
            ValueError: If the measurements do not share layers, levels and bins.
        """
        if len(stats) != len(epochs) or not stats:
            raise ValueError(f"need one epoch per measurement, got {len(stats)} measurements and {len(epochs)} epochs")
        layers = list(stats[0])
        for s in stats:
            if list(s) != layers:
                raise ValueError(f"measurements have different layers: {layers} vs {list(s)}")
        first = [stats[0][name] for name in layers]
        keep = set(epochs) if histogram_epochs is None else {float(e) for e in histogram_epochs}
        rows = [k for k, e in enumerate(epochs) if float(e) in keep]
        grab = lambda f: np.array([[getattr(s[name], f) for name in layers] for s in stats])  # noqa: E731
        return cls(
            epochs=np.asarray(epochs, dtype=np.float64),
            layers=layers,
            percentiles=first[0].percentiles.copy(),
            values=grab("values"),
            lower=grab("lower"),
            upper=grab("upper"),
            mean=grab("mean"),
            std=grab("std"),
            histogram_epochs=np.asarray([epochs[k] for k in rows], dtype=np.float64),
            histograms=np.array([[stats[k][name].counts for name in layers] for k in rows], dtype=np.int64).reshape(
                len(rows), len(layers), len(first[0].counts)
            ),
            edges=np.array([f.edges for f in first]),
            value=first[0].value,
            label=label,
            provenance=Provenance.here(data=f"{first[0].count} activation values per layer"),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible form (stored in a trajectory's metadata by :class:`SaturationRecorder`)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else (v.to_dict() if f.name == "provenance" else v)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SaturationHistory:
        """Inverse of :meth:`to_json`."""
        n_l = len(d["layers"])
        bins = len(d["edges"][0]) - 1 if n_l else 0
        arr = lambda k, dt=np.float64: np.asarray(d[k], dtype=dt)  # noqa: E731
        return cls(
            epochs=arr("epochs"),
            layers=list(d["layers"]),
            percentiles=arr("percentiles"),
            values=arr("values"),
            lower=arr("lower"),
            upper=arr("upper"),
            mean=arr("mean"),
            std=arr("std"),
            histogram_epochs=arr("histogram_epochs"),
            histograms=arr("histograms", np.int64).reshape(len(d["histogram_epochs"]), n_l, bins),
            edges=arr("edges"),
            value=str(d["value"]),
            label=str(d["label"]),
            provenance=Provenance.from_dict(d["provenance"]),
        )

    @classmethod
    def from_trajectory(cls, trajectory: Any, key: str = "saturation") -> SaturationHistory:
        """Read the history a :class:`SaturationRecorder` stored in a trajectory's metadata.

        Raises:
            KeyError: If the trajectory holds no history under ``key``.
        """
        meta = trajectory.meta
        if key not in meta:
            raise KeyError(f"{trajectory!r} has no saturation history under meta key {key!r}; keys: {list(meta)}")
        return cls.from_json(meta[key])


# --------------------------------------------------------------------------- capture
def _select_layers(model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]) -> list[tuple[str, nn.Module]]:
    specs = [layers] if isinstance(layers, str | type) else list(layers)
    named = dict(model.named_modules())
    chosen: dict[str, nn.Module] = {}
    for spec in specs:
        if isinstance(spec, str):
            if spec not in named:
                raise KeyError(f"model has no module {spec!r}; modules: {[k for k in named if k][:40]}")
            chosen[spec] = named[spec]
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            hits = {k: m for k, m in named.items() if isinstance(m, spec) and k}
            if not hits:
                types = sorted({type(m).__name__ for m in named.values()})
                raise ValueError(f"model has no {spec.__name__} module; its module types are {types}")
            chosen.update(hits)
        else:
            raise TypeError(f"layers must be module names or nn.Module types, got {spec!r}")
    order = list(named)
    return sorted(chosen.items(), key=lambda kv: order.index(kv[0]))


def _range_for(name: str, module: nn.Module, rng: RangeLike, value: ActivationValue) -> tuple[float, float]:
    if isinstance(rng, Mapping):
        r = rng.get(name)
    else:
        r = rng
    if r is None:
        for typ, fn in HISTOGRAM_RANGES.items():
            if isinstance(module, typ):
                r = fn(module)
                break
        else:
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}, whose output range is not known; pass range=(lo, hi) "
                f"(or a dict by layer name). Known ranges: {[t.__name__ for t in HISTOGRAM_RANGES]}"
            )
    lo, hi = float(r[0]), float(r[1])
    if value is ActivationValue.ABS:
        lo, hi = (lo, hi) if lo >= 0 else ((-hi, -lo) if hi <= 0 else (0.0, max(-lo, hi)))
    return lo, hi


def _iter_inputs(data: Any, batch_size: int | None) -> Iterator[Any]:
    if isinstance(data, Tensor):
        data = (data,)
    if isinstance(data, tuple | list) and data and all(isinstance(t, Tensor) for t in data):
        x = data[0]
        step = batch_size or x.shape[0]
        for i in range(0, x.shape[0], step):
            yield x[i : i + step]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, tuple | list) else batch


def measure_saturation(
    model: Any,
    data: Any = None,
    layers: LayerSpec | Sequence[LayerSpec] = nn.Tanh,
    *,
    percentiles: Sequence[float] = (98.0,),
    value: ActivationValue | str = ActivationValue.RAW,
    bins: int = 100,
    range: RangeLike = None,  # numpy's name for a histogram range
    exact_limit: int = 65536,
    batch_size: int | None = 1024,
    train: bool = False,
    progress: bool = False,
) -> dict[str, SaturationStats]:
    """Histogram and percentiles of chosen layers' activations over a dataset, streamed.

    Args:
        model: A :class:`~landscape.problem.Problem` (its model run on its batches, any form: several
            inputs, mapping batches), or the network (only run forward; hooks are removed and modes restored
            afterwards) with ``data``.
        data: With a network: inputs ``X (N, ...)``, a pair ``(X, y)``, or an iterable of batches ``(X, y)``
            or ``X``.
        layers: Module names and/or module types (default: every ``nn.Tanh``). A module called several
            times per forward gives one layer per call, named ``"name#0"``, ``"name#1"``, ...
        percentiles: Percentile levels (Persistent Neurons Fig. 14: 98).
        value: ``"raw"`` activations (default, Glorot & Bengio 2010) or ``"abs"`` magnitudes.
        bins: Histogram bins over the range.
        range: ``(lo, hi)`` for all layers or a dict by layer name; default by type from
            :data:`HISTOGRAM_RANGES` (tanh: ``(-1, 1)``; with ``value="abs"``, ``(0, 1)``).
        exact_limit: Per layer, keep up to this many values for exact percentiles (0: histogram only).
        batch_size: Batch size for tensor data (``None``: one batch).
        train: Run in train mode (batch statistics, dropout) instead of eval mode; running statistics are
            then updated in private copies, never in the model's buffers.
        progress: Show a tqdm bar over batches.

    Returns:
        ``{layer: SaturationStats}`` in forward order. Percentile error bound: ``|values - exact| <=
        upper - lower <= (hi - lo) / bins`` whenever the percentile falls inside the range.

    Raises:
        KeyError: For an unknown layer name.
        ValueError: If no module matches, a range is unknown, or a layer never ran.
        InputError: On empty data or NaN/inf in the inputs or weights (inputs are cast to the model's dtype,
            see :mod:`landscape.validation`).
    """
    from landscape.problem import Problem

    val = parse_option(ActivationValue, value, "value")
    prob = None
    if isinstance(model, Problem):
        if data is not None:
            raise TypeError("model is a Problem, which holds its data; do not pass data")
        prob, model = model, model.compute_model()
    elif data is None:
        raise TypeError("data is missing: pass a landscape.Problem, or the model with data")
    check_model(model)
    checker = BatchChecker(model, argname="data", targets=False)
    chosen = _select_layers(model, layers)
    ranges = {name: _range_for(name, m, range, val) for name, m in chosen}
    hists: dict[tuple[str, int], StreamingHistogram] = {}
    calls: dict[str, int] = {}

    def reset(*_: Any) -> None:
        calls.clear()

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if not isinstance(out, Tensor):
                raise TypeError(f"layer {name!r} returned a {type(out).__name__}; only tensor outputs can be captured")
            k = calls.get(name, 0)
            calls[name] = k + 1
            key = (name, k)
            if key not in hists:
                hists[key] = StreamingHistogram(*ranges[name], bins, exact_limit=exact_limit)
            hists[key].update(out.abs() if val is ActivationValue.ABS else out)

        return hook

    handles = [model.register_forward_pre_hook(reset)]
    try:
        handles += [m.register_forward_hook(hook_for(name)) for name, m in chosen]
        # Train mode updates BatchNorm running statistics in place: run on private copies of the
        # buffers (one copy per call, not per batch) so the caller's model is never written.
        bufs = {k: v.clone() for k, v in model.named_buffers()} if train else {}
        with torch.no_grad(), preserved_mode(model, train):
            if prob is not None:  # batches already checked and cast by the problem
                for b in tqdm(prob.batches(), disable=not progress, desc="activations", leave=False):
                    torch.func.functional_call(model, bufs, b.inputs, b.kwargs, strict=False)
                    checker.n_samples += b.size
            else:
                for i, x in enumerate(
                    tqdm(_iter_inputs(data, batch_size), disable=not progress, desc="activations", leave=False)
                ):
                    # cast to the model's dtype, NaN/inf inputs refused; buffers are the private copies
                    torch.func.functional_call(model, bufs, (checker(x, None, i)[0],), strict=False)
    finally:
        for h in handles:
            h.remove()
    checker.finish()
    missing = [name for name, _ in chosen if (name, 0) not in hists]
    if missing:
        raise ValueError(f"layers {missing} never ran in the forward pass (or the data set is empty)")
    per_module = {name: sum(1 for n, _ in hists if n == name) for name, _ in chosen}
    out: dict[str, SaturationStats] = {}
    for name, k in hists:  # insertion order = order of first call in the forward pass
        label = name if per_module[name] == 1 else f"{name}#{k}"
        out[label] = hists[(name, k)].stats(label, percentiles, val)
    bad = {k: s.nonfinite for k, s in out.items() if s.nonfinite}
    if bad:
        warnings.warn(
            f"non-finite activations (NaN or inf) in layers {bad} (counts), left out of the statistics; each "
            "layer's SaturationStats.nonfinite holds its count. The inputs and weights are finite: an overflow?",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


# --------------------------------------------------------------------------- training-loop hook
class _MeasureOptions(TypedDict):
    """The recorder's keyword options of :func:`measure_saturation`."""

    value: ActivationValue | str
    bins: int
    range: RangeLike
    exact_limit: int
    batch_size: int | None


class SaturationRecorder(Callback):
    """Training-loop callback: activation percentiles and histograms before training and every few epochs.

    The history (:attr:`history_`) is stored with the trajectory in two ways:

    * authoritative: the whole :class:`SaturationHistory` as JSON in the trajectory's run metadata under
      ``meta_key`` (rewritten after every measurement), read back with
      :meth:`SaturationHistory.from_trajectory`. This does not depend on callback order and includes the
      measurement before training, whose snapshot is written with no metrics.
    * convenient: at epoch ends the percentiles are put into the epoch's metrics dict (the same dict as
      ``trainer.last_metrics``) as ``"<metric_prefix>/<layer>/p98"``, so the snapshot that
      :class:`~landscape.train.loop.RecordTrajectory` writes at that step carries them (``traj.metric(...)``).
      This needs the recorder to run *before* ``RecordTrajectory``; ``Trainer(trajectory=...)`` appends its
      recorder after the given callbacks, so that holds by default, and a warning says when it does not.

    Measuring runs the trained model forward over ``data`` in eval mode under a forked RNG, so a run with
    the recorder trains bitwise identically to one without it.

    Args:
        data: Measurement data as for :func:`measure_saturation` (e.g. a fixed validation subset).
        layers: Module names and/or types (default every ``nn.Tanh``).
        percentiles: Percentile levels (Persistent Neurons Fig. 14: 98).
        every_epochs: Measure every k epochs (and always before training).
        histogram_epochs: Epochs whose histograms to keep (default: every measured epoch; 0 = before training).
        trajectory: Where to store; default ``trainer.trajectory``, else the first ``RecordTrajectory``'s.
        meta_key: Metadata key of the stored history.
        metric_prefix: Prefix of the per-snapshot metric names.
        label: Run name put on the history.
        value: As for :func:`measure_saturation`.
        bins: As for :func:`measure_saturation`.
        range: As for :func:`measure_saturation`.
        exact_limit: As for :func:`measure_saturation`.
        batch_size: As for :func:`measure_saturation`.
    """

    def __init__(
        self,
        data: Any,
        layers: LayerSpec | Sequence[LayerSpec] = nn.Tanh,
        percentiles: Sequence[float] = (98.0,),
        every_epochs: int = 1,
        *,
        histogram_epochs: Iterable[float] | None = None,
        trajectory: Any = None,
        meta_key: str = "saturation",
        metric_prefix: str = "sat",
        label: str = "",
        value: ActivationValue | str = ActivationValue.RAW,
        bins: int = 100,
        range: RangeLike = None,  # numpy's name for a histogram range
        exact_limit: int = 65536,
        batch_size: int | None = 1024,
    ) -> None:
        if int(every_epochs) < 1:
            raise ValueError(f"every_epochs must be a positive integer, got {every_epochs}")
        parse_option(ActivationValue, value, "value")
        measure_kwargs: _MeasureOptions = {
            "value": value,
            "bins": bins,
            "range": range,
            "exact_limit": exact_limit,
            "batch_size": batch_size,
        }
        self.data = data
        self.layers = layers
        self.percentiles = tuple(float(q) for q in percentiles)
        self.every_epochs = int(every_epochs)
        self.histogram_epochs = None if histogram_epochs is None else [float(e) for e in histogram_epochs]
        self.trajectory = trajectory
        self.meta_key = meta_key
        self.metric_prefix = metric_prefix
        self.label = label
        self.measure_kwargs = measure_kwargs
        self._stats: list[dict[str, SaturationStats]] = []
        self._epochs: list[float] = []
        self._store: Any = None

    @property
    def history_(self) -> SaturationHistory:
        """The measurements so far as a :class:`SaturationHistory`.

        Raises:
            RuntimeError: Before the first measurement.
        """
        if not self._stats:
            raise RuntimeError("no measurement yet: the recorder measures when training begins")
        return SaturationHistory.from_stats(
            self._stats, self._epochs, histogram_epochs=self.histogram_epochs, label=self.label
        )

    def metric_name(self, layer: str, q: float) -> str:
        """Snapshot metric name of one layer's percentile, e.g. ``"sat/act1/p98"``."""
        return f"{self.metric_prefix}/{layer}/p{q:g}"

    def _measure(self, trainer: Trainer, epoch: float) -> dict[str, SaturationStats]:
        with torch.random.fork_rng(devices=[]):  # a shuffling DataLoader must not perturb the training RNG
            stats = measure_saturation(
                trainer.model, self.data, self.layers, percentiles=self.percentiles, **self.measure_kwargs
            )
        self._stats.append(stats)
        self._epochs.append(epoch)
        if self._store is not None and hasattr(self._store, "update_meta"):
            self._store.update_meta({self.meta_key: self.history_.to_json()})
        return stats

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._stats, self._epochs = [], []
        recorders = [cb for cb in trainer.callbacks if isinstance(cb, RecordTrajectory)]
        self._store = self.trajectory if self.trajectory is not None else trainer.trajectory
        if self._store is None and recorders:
            self._store = recorders[0].trajectory
        me = trainer.callbacks.index(self) if self in trainer.callbacks else -1
        if any(trainer.callbacks.index(r) < me for r in recorders):
            warnings.warn(
                "SaturationRecorder runs after a RecordTrajectory callback, so epoch-end snapshots will not carry "
                "the saturation metrics (the history in the trajectory's metadata is complete); put the "
                "SaturationRecorder first",
                stacklevel=2,
            )
        stats = self._measure(trainer, 0.0)
        # The initial snapshot is written with fresh empty metrics today; should RecordTrajectory pass
        # trainer.last_metrics there, it will carry these too.
        trainer.last_metrics.update(self._metrics(stats))

    def _metrics(self, stats: Mapping[str, SaturationStats]) -> dict[str, float]:
        return {
            self.metric_name(layer, float(q)): float(v)
            for layer, s in stats.items()
            for q, v in zip(s.percentiles, s.values)
        }

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:  # noqa: D102
        if (event.epoch + 1) % self.every_epochs:
            return
        stats = self._measure(trainer, float(event.epoch + 1))
        event.metrics.update(self._metrics(stats))  # the same dict as trainer.last_metrics
