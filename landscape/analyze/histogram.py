"""A streaming histogram with bracketed percentiles, for activation values that are never all kept.

Percentile bound: numpy's ``linear`` percentile interpolates two order statistics, each of which lies in a
known histogram bin, so the exact value is bracketed by ``[lower, upper]``, an interval at most one bin wide
(wider only when it falls among values outside the range); the estimate lies inside the bracket, so its error
is at most ``upper - lower <= (hi - lo) / bins``. While at most ``exact_limit`` values have been seen they are
also kept and the percentiles are exact (``lower == upper``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from landscape._options import parse_option
from landscape.analyze.saturation_results import ActivationValue, SaturationStats
from landscape.results import Provenance

__all__ = ["StreamingHistogram"]

# The summary numbers a histogram hands on to its SaturationStats under the same names.
_SUMMARY = ("underflow", "overflow", "count", "minimum", "maximum", "mean", "std", "nonfinite")


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
        # numpy's edges (and so np.histogram's bins): torch.linspace rounds differently, e.g. its middle edge of
        # 6 bins over [-1, 1] is 5.6e-17, which counted the value 0 in the bin below 0
        self.edges = torch.from_numpy(np.linspace(float(lo), float(hi), int(bins) + 1))
        self.counts = torch.zeros(int(bins), dtype=torch.int64)
        self.underflow = self.overflow = self.nan_count = self.nonfinite = self.count = 0
        self.minimum, self.maximum = math.inf, -math.inf
        self._sum = self._m2 = 0.0  # sum, and squared deviations from the mean (Chan et al.'s pairwise update)
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
        n0, nb = self.count, v.numel()
        self.count += nb
        self.minimum = min(self.minimum, float(v.min()))
        self.maximum = max(self.maximum, float(v.max()))
        # Chan et al.'s merge of the batch's squared deviations: E[x^2] - E[x]^2 cancelled for values far from 0
        # (1000.1 +- 1e-6 gave a std 15x too large; constants a nonzero one)
        vb = float(v.sum())
        mb = vb / nb
        delta = mb - (self._sum / n0 if n0 else mb)
        self._m2 += float((v - mb).square().sum()) + delta * delta * n0 * nb / self.count
        self._sum += vb
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
        return math.sqrt(self._m2 / self.count)

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
            **{k: getattr(self, k) for k in _SUMMARY},
            provenance=Provenance.here(data=f"{self.count} activation values of layer {layer!r}"),
        )
