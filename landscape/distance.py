"""Functional distance between networks (Im, Tao & Branson 2016, Sec. 4.1 and Table 1).

Reading of Im et al.'s definition (Sec. 4.1)::

    dist(theta_1, theta_2) = sqrt( (1/N) sum_i || F(x_i, theta_1) - F(x_i, theta_2) ||^2 )

``F(x, theta)`` is the network's output; ``||.||`` is the Euclidean norm over the output vector, the
mean is over the ``N`` samples only (not over outputs). The paper reports about 0.16 for
networks disagreeing on 8% of the labels, a scale that fits class probabilities (softmax outputs,
where a full disagreement contributes at most ``sqrt(2)``) and not logits, so ``output="softmax"``
is the default; ``output="logits"`` uses the raw outputs. The label disagreement rate is the fraction
of samples whose predicted classes (argmax, first maximum on ties) differ.

Along a path (Table 1, upper triangle): the distance of each interpolated network
``(1 - alpha) theta_1 + alpha theta_2`` from the first endpoint ``theta_1``.
Both go through :func:`landscape.evaluate.evaluate_points` with custom batch metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.evaluate import AffinePoints, describe_data, evaluate_points
from landscape.params import ParamLayout
from landscape.results import Provenance, Result, register_result
from landscape.surface import PointLike, _anchor
from landscape.validation import check_finite, check_vector, validate_batches

__all__ = ["OutputKind", "FunctionalDistance", "DistanceResult", "functional_distance", "distance_along_path"]


class OutputKind(str, Enum):
    """What ``F(x, theta)`` is in the distance: class probabilities or raw outputs."""

    SOFTMAX = "softmax"
    LOGITS = "logits"


@register_result
@dataclasses.dataclass(frozen=True)
class FunctionalDistance(Result):
    """RMS output distance and label disagreement between two networks.

    Attributes:
        rms: ``sqrt(mean_i ||F(x_i, a) - F(x_i, b)||^2)``.
        disagreement: Fraction of samples with different predicted labels.
        output: ``"softmax"`` or ``"logits"``.
        n_samples: Number of samples ``N``.
        provenance: Data, version, options.
    """

    rms: float
    disagreement: float
    output: str = "softmax"
    n_samples: int = 0
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


@register_result
@dataclasses.dataclass(frozen=True)
class DistanceResult(Result):
    """Functional distance from the first endpoint along a linear path.

    Attributes:
        alphas: ``(n,)`` path positions; ``(1 - alpha) a + alpha b``.
        rms: ``(n,)`` RMS output distance from ``a``.
        disagreement: ``(n,)`` label disagreement rate with ``a``.
        anchors: ``(2, D)`` the endpoints.
        output: ``"softmax"`` or ``"logits"``.
        n_samples: Number of samples ``N``.
        label: Curve name for overlays.
        layout: The parameter layout.
        provenance: Data, version, options.
    """

    alphas: np.ndarray
    rms: np.ndarray
    disagreement: np.ndarray
    anchors: np.ndarray
    output: str = "softmax"
    n_samples: int = 0
    label: str = ""
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


class _SquaredDistance:
    """Batch metric: per point, sum over samples of ``||F(x, theta) - F(x, a)||^2``."""

    name = "squared_distance"

    def __init__(self, ref: Tensor, softmax: bool) -> None:
        self.softmax = softmax
        self.ref = ref.softmax(-1) if softmax else ref

    def __call__(self, out: Tensor, y: Tensor, start: int) -> Tensor:
        q = out.softmax(-1) if self.softmax else out
        r = self.ref[start : start + out.shape[1]].to(q)
        return (q - r).square().flatten(1).sum(1, dtype=torch.float64)


class _Disagreement:
    """Batch metric: per point, number of samples whose argmax differs from the reference's."""

    name = "disagreement"

    def __init__(self, ref: Tensor) -> None:
        self.labels = ref.argmax(-1)

    def __call__(self, out: Tensor, y: Tensor, start: int) -> Tensor:
        lab = self.labels[start : start + out.shape[1]].to(out.device)
        return (out.argmax(-1) != lab).sum(1, dtype=torch.float64)


def distance_along_path(
    model: nn.Module,
    a: PointLike,
    b: PointLike,
    data: Any,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    output: OutputKind | str = OutputKind.SOFTMAX,
    label: str = "",
    **kw: Any,
) -> DistanceResult:
    """Functional distance and label disagreement of ``(1 - alpha) a + alpha b`` from ``a`` (Im et al. Table 1).

    Args:
        model: The architecture (never modified); outputs must be ``(B, C)`` class scores.
        a: First endpoint (model, ``(D,)`` vector or parameter dict): the reference network.
        b: Second endpoint.
        data: Tensor pair or iterable of ``(X, y)`` batches (targets are not used).
        alphas: ``(n,)`` positions; default ``linspace(0, 1, 11)``.
        output: ``"softmax"`` (default, see the module docstring) or ``"logits"``.
        label: Curve name.
        **kw: ``data_desc`` for provenance; ``bn_mode``, ``strategy``, ``batch_size``,
            ``memory_budget``, ``progress`` go to :func:`evaluate_points`.

    Returns:
        A :class:`DistanceResult`.

    Raises:
        ValueError: On an unknown ``output``, or ``bn_mode="interpolate"`` with ``a`` or ``b`` not a model.
        InputError: If ``a`` or ``b`` holds NaN/inf (naming the parameters), or on empty or non-finite data.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> data = (torch.randn(16, 4), torch.zeros(16, dtype=torch.long))
        >>> r = distance_along_path(net, net, torch.zeros(15), data, alphas=[0.0, 1.0])
        >>> float(r.rms[0]), float(r.disagreement[0])
        (0.0, 0.0)
    """
    try:
        kind = OutputKind(output)
    except ValueError:
        raise ValueError(f"unknown output {output!r}; valid: {[e.value for e in OutputKind]}") from None
    kw = dict(kw)
    desc = kw.pop("data_desc", None)
    for bad in ("metrics", "loss_fn"):
        if bad in kw:
            raise TypeError(f"distance_along_path does not take {bad!r}")
    layout = ParamLayout.from_model(model)
    anchors = [_anchor(model, a, layout), _anchor(model, b, layout)]
    # A NaN endpoint would give rms=nan beside a plausible disagreement (argmax of NaN is 0): refuse it.
    for name, (vec, bufs_k) in zip(("a", "b"), anchors):
        check_vector(vec, name, layout)
        for k, t in (bufs_k or {}).items() if kw.get("bn_mode") == "interpolate" else ():
            check_finite(t, f"{name}: buffer {k!r}")
    desc = desc or describe_data(data)
    data = validate_batches(data, model, targets=False)  # read and checked once for both evaluations below
    al = np.asarray(np.linspace(0, 1, 11) if alphas is None else alphas, dtype=np.float64).reshape(-1)
    bufs = None
    if kw.get("bn_mode") == "interpolate":
        bufs = [x for _, x in anchors if x is not None]
        if len(bufs) != len(anchors):
            raise ValueError("bn_mode='interpolate' needs a and b given as models (their buffers are interpolated)")
    basis = torch.stack([v for v, _ in anchors])
    ref_pts = AffinePoints(basis, np.array([[1.0, 0.0]]), bufs)
    ref = torch.from_numpy(evaluate_points(model, ref_pts, data, metrics=("outputs",), **kw)["outputs"][0])
    if ref.dim() != 2:
        raise ValueError(f"functional distance needs outputs of shape (B, C), got {tuple(ref.shape)} (N, ...)")
    metrics = (_SquaredDistance(ref, kind is OutputKind.SOFTMAX), _Disagreement(ref))
    pts = AffinePoints(basis, np.stack([1 - al, al], 1), bufs)
    res = evaluate_points(model, pts, data, metrics=metrics, **kw)
    prov = Provenance.here(data=desc, kind="distance_along_path", output=kind.value,
                           model=type(model).__name__)  # fmt: skip
    ends = basis.detach().cpu().numpy()
    return DistanceResult(al, np.sqrt(res["squared_distance"]), res["disagreement"], ends, kind.value,
                          int(ref.shape[0]), label, layout.to_dict(), prov)  # fmt: skip


def functional_distance(
    model: nn.Module,
    a: PointLike,
    b: PointLike,
    data: Any,
    *,
    output: OutputKind | str = OutputKind.SOFTMAX,
    **kw: Any,
) -> FunctionalDistance:
    """RMS output distance and label disagreement between networks ``a`` and ``b`` (Im et al. Sec. 4.1).

    Args:
        model: The architecture (never modified); outputs must be ``(B, C)`` class scores.
        a: First network (model, ``(D,)`` vector or parameter dict).
        b: Second network.
        data: Tensor pair or iterable of ``(X, y)`` batches (targets are not used).
        output: ``"softmax"`` (default) or ``"logits"``.
        **kw: As for :func:`distance_along_path`.

    Returns:
        A :class:`FunctionalDistance`.
    """
    r = distance_along_path(model, a, b, data, alphas=[1.0], output=output, **kw)
    prov = dataclasses.replace(r.provenance, extra={**r.provenance.extra, "kind": "functional_distance"})
    return FunctionalDistance(float(r.rms[0]), float(r.disagreement[0]), r.output, r.n_samples, prov)
