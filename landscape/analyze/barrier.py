"""Loss and accuracy barriers along a path between two networks.

Two definitions are in common use, and both are returned:

* **linear** (Frankle et al., ICML 2020, §2; Entezari et al., ICLR 2022, Def. 1): the largest rise of
  the metric above the straight interpolation of the endpoint values,
  ``max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))]``;
* **mean**: the peak above the mean of the endpoint values, ``max_alpha L(alpha) - (L(0) + L(1)) / 2``
  (used e.g. by Garipov et al. 2018 and Git Re-Basin's figures, which plot the loss relative to the endpoints).

For accuracy the barrier is the drop in accuracy (the rise of the error), so that a positive barrier
is bad for both metrics. The path is any 1-D family of points whose first and last points are the two
networks: a line (:func:`landscape.analyze.surface.line`), a curve (:func:`landscape.analyze.curves.evaluate_curve`), or
a repaired path (:func:`loss_barrier` with ``repair=True``). The grid used and where the barrier peaks
are kept with the numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from landscape._batch import describe_data
from landscape._options import parse_option
from landscape.evaluate.points import evaluate_points
from landscape.functional import BNMode
from landscape.params import parameters_to_vector
from landscape.problem import Problem
from landscape.results import Provenance, Result, register_result

__all__ = ["BarrierResult", "barrier_values", "barrier_of", "loss_barrier"]


@register_result
@dataclasses.dataclass(frozen=True)
class BarrierResult(Result):
    """Barriers of a metric along a path, with the path's values.

    Attributes:
        alphas: ``(n,)`` positions along the path (0 and 1 are the endpoints).
        metrics: Name -> ``(n,)`` values along the path (``"loss"``, ``"accuracy"`` when computed).
        loss_barrier: Linear definition, ``max_a L(a) - ((1 - a) L(0) + a L(1))``.
        loss_barrier_mean: Mean definition, ``max_a L(a) - (L(0) + L(1)) / 2``.
        peak_alpha: Where the linear-definition loss barrier peaks.
        peak_alpha_mean: Where the loss peaks (mean definition).
        accuracy_barrier: Linear definition on accuracy, ``max_a ((1 - a) A(0) + a A(1)) - A(a)`` (NaN without
            accuracy).
        accuracy_barrier_mean: ``(A(0) + A(1)) / 2 - min_a A(a)`` (NaN without accuracy).
        path: What the path is (``"line"``, ``"line+repair"``, ``"bezier"``, ``"polychain"``...).
        label: Name for overlays.
        provenance: Data, version and options.
    """

    _dims = {"alphas": ("alpha",), "metrics.*": ("alpha",)}
    _coords = {"alphas": "alpha"}
    _table = ("alpha",)
    _thumb = ("metrics.loss", "line")

    alphas: np.ndarray
    metrics: dict[str, np.ndarray]
    loss_barrier: float
    loss_barrier_mean: float
    peak_alpha: float
    peak_alpha_mean: float
    accuracy_barrier: float = float("nan")
    accuracy_barrier_mean: float = float("nan")
    path: str = "line"
    label: str = ""
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


def barrier_values(
    alphas: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, *, higher_is_better: bool = False
) -> dict[str, float]:
    """Both barrier definitions of one metric sampled along a path.

    Only the points with ``0 <= alpha <= 1`` count: the barrier is a property of the path *between* the two
    networks, and a grid that also extends beyond them (Goodfellow et al.'s ``[-0.5, 1.5]``) reports the same
    barrier as its part inside ``[0, 1]``.

    Args:
        alphas: ``(n,)`` positions; must contain 0 and 1 (the endpoints).
        values: ``(n,)`` metric values at those positions.
        higher_is_better: ``True`` for accuracy: the barrier is then the drop below the endpoints.

    Returns:
        ``{"barrier", "barrier_mean", "peak_alpha", "peak_alpha_mean"}``.

    Raises:
        ValueError: If the grid lacks an endpoint, or shapes differ.

    Example:
        >>> barrier_values([0, 0.5, 1], [1.0, 3.0, 2.0])["barrier"]
        1.5
    """
    a = np.asarray(alphas, np.float64).reshape(-1)
    v = np.asarray(values, np.float64).reshape(-1)
    if a.shape != v.shape:
        raise ValueError(f"alphas {a.shape} and values {v.shape} differ in length")
    ends = []
    for e in (0.0, 1.0):
        hit = np.flatnonzero(a == e)
        if not len(hit):
            raise ValueError(f"the grid has no point at alpha={e:g}; barriers need both endpoints on it")
        ends.append(float(v[hit[0]]))
    # Points beyond the endpoints are not on the path between the two networks: the linear definition's
    # straight interpolation there is an extrapolation, and a loss rising off either end is no barrier.
    inside = (a >= 0) & (a <= 1)
    a, v = a[inside], v[inside]
    sign = -1.0 if higher_is_better else 1.0
    rise = sign * (v - ((1 - a) * ends[0] + a * ends[1]))
    above = sign * (v - (ends[0] + ends[1]) / 2)
    # NaN points (a diverged network) are the worst possible: they count as an infinite barrier.
    rise = np.where(np.isfinite(rise), rise, np.inf)
    above = np.where(np.isfinite(above), above, np.inf)
    i, j = int(np.argmax(rise)), int(np.argmax(above))
    # + 0.0: an endpoint's own rise is -0.0 for accuracy (sign * 0.0); report it as 0
    return {
        "barrier": float(rise[i]) + 0.0,
        "barrier_mean": float(above[j]) + 0.0,
        "peak_alpha": float(a[i]),
        "peak_alpha_mean": float(a[j]),
    }


def barrier_of(result: Any, *, label: str | None = None) -> BarrierResult:
    """Barriers along an evaluated path: a :class:`~landscape.analyze.surface.LineResult` or a curve result.

    A line of :func:`~landscape.analyze.surface.line_distance` (coordinates are distances) is read as the path from
    its minimum (alpha 0) to its reference (alpha 1), and the result's ``alphas`` are those fractions.

    Args:
        result: Any result with ``coords`` (or ``ts``) holding 0 and 1, and ``metrics`` with ``"loss"`` (and
            optionally ``"accuracy"``); points outside ``[0, 1]`` are kept in the result but do not count.
        label: Name (default: the result's label).

    Returns:
        A :class:`BarrierResult`.

    Raises:
        ValueError: If the result has no loss or lacks an endpoint.
    """
    coords = np.asarray(result.ts if hasattr(result, "ts") else result.coords, np.float64)
    ends = np.asarray(getattr(result, "anchor_coords", [0.0, 1.0]), np.float64).reshape(-1)
    if getattr(result, "coord_name", "alpha") == "distance" and len(ends) == 2 and ends[1] != ends[0]:
        # line_distance: the coordinates are distances from the minimum, the anchors at 0 and ||ref - min||; as
        # positions along the path from the one to the other they are alphas (the reference's is exactly 1).
        coords = (coords - ends[0]) / (ends[1] - ends[0])
    metrics = {k: np.asarray(v) for k, v in result.metrics.items() if k in ("loss", "accuracy")}
    if "loss" not in metrics:
        raise ValueError(f"the result has no loss; it has {sorted(result.metrics)}")
    path = getattr(result, "shape", None) or "line"
    return _make(coords, metrics, path, result.label if label is None else label, result.provenance)


def _make(alphas: np.ndarray, metrics: dict[str, np.ndarray], path: str, label: str, prov: Provenance) -> BarrierResult:
    lb = barrier_values(alphas, metrics["loss"])
    ab = (
        barrier_values(alphas, metrics["accuracy"], higher_is_better=True)
        if "accuracy" in metrics
        else {"barrier": float("nan"), "barrier_mean": float("nan")}
    )
    return BarrierResult(
        alphas=alphas,
        metrics=metrics,
        loss_barrier=lb["barrier"],
        loss_barrier_mean=lb["barrier_mean"],
        peak_alpha=lb["peak_alpha"],
        peak_alpha_mean=lb["peak_alpha_mean"],
        accuracy_barrier=ab["barrier"],
        accuracy_barrier_mean=ab["barrier_mean"],
        path=path,
        label=label,
        provenance=prov,
    )


def loss_barrier(
    a: nn.Module,
    b: nn.Module,
    data: Any,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    metrics: Sequence[str] | None = None,
    repair: bool = False,
    repair_data: Any = None,
    bn_mode: BNMode | str | None = None,
    bn_data: Any = None,
    batch_size: int | None = None,
    label: str = "",
    progress: bool = False,
) -> BarrierResult:
    """Loss (and accuracy) barrier on the straight line from ``a`` to ``b``, evaluated by the engine.

    Align first (``b = weight_matching(a, b).apply(b)``) for the barrier "modulo permutations". Unlike
    :func:`~landscape.analyze.surface.line`, it takes the two networks alone (no separate template). To draw the
    path, pass the result to :func:`~landscape.plot.curves.plot_line` (over alpha; for distances evaluate
    ``line(a, a, b, data, alphas)`` and draw that); :func:`barrier_of` reads the same barriers off such a line.

    Args:
        a: First network (alpha 0; only read).
        b: Second network, same architecture (alpha 1; only read).
        data: The data the metrics are measured on: a tensor pair, ``Dataset``, ``DataLoader`` or iterable of tuple
            or mapping batches.
        alphas: ``(n,)`` grid in ``[0, 1]`` holding 0 and 1 (default: ``linspace(0, 1, 25)``).
        loss_fn: Loss (default: cross-entropy for class targets, MSE otherwise).
        metrics: Metrics to evaluate (``"loss"`` is required); default ``("loss", "accuracy")`` for class
            targets, else only the loss (whatever the data's form: pair, ``DataLoader``, list of batches).
        repair: Evaluate each interpolated network after :func:`landscape.analyze.align.repair` (REPAIR).
        repair_data: Data for REPAIR's statistics (default: ``data``; inputs only are used).
        bn_mode: ``"eval"`` (``a``'s running statistics at every point), ``"train"``, ``"interpolate"`` or
            ``"recompute"`` (BatchNorm policy). Default: each network on its own running statistics, interpolated
            along the line (``"interpolate"``) when the networks have buffers, so the endpoints' values are
            ``a``'s and ``b``'s losses, as the distances compare two models; with ``repair`` the repaired
            networks' own statistics are used (``"train"``: each batch's). ``"recompute"`` resets every
            point's statistics over ``bn_data`` first (Jordan et al. 2023's "RESET"; not with ``repair``).
        bn_data: The statistics data of ``bn_mode="recompute"`` (default: ``data``), e.g. the training set.
        batch_size: Micro-batch size of the engine.
        label: Name for overlays.
        progress: Show progress bars.

    Returns:
        A :class:`BarrierResult` with ``path="line"`` (or ``"line+repair"``).

    Raises:
        ValueError: On a grid without both endpoints.
    """
    from landscape.analyze.surface import line

    al = np.linspace(0, 1, 25) if alphas is None else np.asarray(alphas, np.float64)
    if not (np.any(al == 0) and np.any(al == 1)):
        raise ValueError("alphas must contain 0 and 1 (the endpoints)")
    if metrics is not None and "loss" not in metrics:
        raise ValueError(f"metrics must include 'loss', got {list(metrics)}")
    bn = None if bn_mode is None else parse_option(BNMode, bn_mode, "bn_mode")
    if repair and (bn is BNMode.RECOMPUTE or bn_data is not None):
        raise ValueError(
            "repair=True sets each interpolated network's statistics itself; bn_mode='recompute' (bn_data=) would "
            "reset them: pass one or the other"
        )
    if not repair:
        # bn_mode not given: each network on its own running statistics (the slices' default), so alpha 1 gives
        # b's loss, as the repaired path has.
        r = line(
            a,
            a,
            b,
            data,
            al,
            metrics=metrics,
            loss_fn=loss_fn,
            bn_mode=None if bn is None else bn.value,
            bn_data=bn_data,
            batch_size=batch_size,
            progress=progress,
            label=label,
        )
        return _make(al, dict(r.metrics), "line", label, r.provenance)
    from tqdm.auto import tqdm

    from landscape.analyze.align import repair as repair_fn

    # every alpha reads the data again (REPAIR's statistics, then the metrics): keep a one-shot iterator's batches
    data = list(data) if isinstance(data, Iterator) else data
    repair_data = list(repair_data) if isinstance(repair_data, Iterator) else repair_data
    vals: dict[str, list[float]] = {}
    for alpha in tqdm(al, desc="repaired path", unit="pt", disable=not progress, leave=False):
        m = (
            a
            if alpha == 0
            else b
            if alpha == 1
            else repair_fn(a, b, data if repair_data is None else repair_data, alpha=float(alpha))
        )
        # through a Problem, which reads any data the line above takes (a Dataset, mapping batches, numpy arrays)
        prob = Problem(m, data, loss_fn, bn_mode="train" if bn is BNMode.TRAIN else "eval")
        out = evaluate_points(prob, parameters_to_vector(m)[None], metrics=metrics, batch_size=batch_size)
        for k, v in out.items():  # the metrics asked for, or the default for these targets
            vals.setdefault(k, []).append(float(v[0]))
    prov = Provenance.here(data=describe_data(data), model=type(a).__name__, repair=True)
    return _make(al, {k: np.asarray(v) for k, v in vals.items()}, "line+repair", label, prov)
