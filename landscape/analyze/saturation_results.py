"""The results of a saturation measurement: one layer's statistics, and their history over training.

:class:`SaturationStats` (one layer, one measurement; :meth:`~landscape.analyze.histogram.StreamingHistogram.stats`
freezes one) and :class:`SaturationHistory` (the percentile curves of Persistent Neurons Fig. 14 and the
histograms of Fig. 15). See :mod:`landscape.analyze.saturation` for what is measured.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from landscape.results import Provenance, Result, register_result

__all__ = ["ActivationValue", "SaturationStats", "SaturationHistory"]


class ActivationValue(str, enum.Enum):
    """Which statistic of the activations is histogrammed."""

    RAW = "raw"  # the activation itself (Glorot & Bengio 2010 Fig. 3; Persistent Neurons Fig. 14)
    ABS = "abs"  # its magnitude: saturation at either asymptote


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
        ref = first[0]
        for e, s in zip(epochs, stats):  # one set of levels and bins: else values would be stacked under wrong labels
            for name, f in zip(layers, first):
                x = s[name]
                if not np.array_equal(x.percentiles, ref.percentiles) or x.value != ref.value:
                    raise ValueError(
                        f"layer {name!r} at epoch {e} has percentiles {x.percentiles.tolist()} of {x.value!r} values, "
                        f"the first measurement {ref.percentiles.tolist()} of {ref.value!r} values; one set is needed"
                    )
                if not np.array_equal(x.edges, f.edges):
                    raise ValueError(
                        f"layer {name!r} at epoch {e} has {len(x.counts)} bins over [{x.edges[0]:g}, {x.edges[-1]:g}], "
                        f"at the first epoch {len(f.counts)} over [{f.edges[0]:g}, {f.edges[-1]:g}]; its bins must stay"
                    )
        if len({len(f.counts) for f in first}) > 1:
            raise ValueError(f"the layers have {sorted({len(f.counts) for f in first})} bins; one number is needed")
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
