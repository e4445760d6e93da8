"""Functional distance between networks (Im, Tao & Branson 2016, Sec. 4.1 and Table 1).

Reading of Im et al.'s definition (Sec. 4.1)::

    dist(theta_1, theta_2) = sqrt( (1/N) sum_i || F(x_i, theta_1) - F(x_i, theta_2) ||^2 )

``F(x, theta)`` is the network's output; ``||.||`` is the Euclidean norm over the output vector, the
mean is over the ``N`` samples only (not over outputs). The paper reports about 0.16 for
networks disagreeing on 8% of the labels, a scale that fits class probabilities (softmax outputs,
where a full disagreement contributes at most ``sqrt(2)``) and not logits, so ``output="softmax"``
is the default; ``output="logits"`` uses the raw outputs. The label disagreement rate is the fraction
of samples whose predicted classes (argmax, first maximum on ties) differ.

A single output per sample (``(B, 1)``, a binary classifier trained with ``bce_with_logits``) is read as the
logit ``z`` of two classes: probabilities ``(1 - sigmoid(z), sigmoid(z))`` and predicted class ``z > 0`` (a
softmax over one entry is 1 for every network, which made any two such networks coincide).

Outputs with more axes than ``(B, C)`` (a language model's ``(B, T, V)`` logits) are compared per sample
over all their entries (softmax over the last axis), and the disagreement of a sample is the fraction of
its positions whose argmax differs.

Along a path (Table 1, upper triangle): the distance of each interpolated network
``(1 - alpha) theta_1 + alpha theta_2`` from the first endpoint ``theta_1``.
Both go through :func:`landscape.evaluate.points.evaluate_points` with custom batch metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.analyze.slicing import (
    EngineOptions,
    PointLike,
    SliceSettings,
    as_anchor,
    coordinates,
    shows_options,
    slice_buffers,
    to_numpy,
)
from landscape.evaluate.affine import AffinePoints
from landscape.evaluate.points import evaluate_points
from landscape.problem import Problem
from landscape.results import Provenance, Result, register_result
from landscape.validation import check_finite, check_vector

if TYPE_CHECKING:
    from typing_extensions import Unpack

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

    _dims = {"alphas": ("alpha",), "rms": ("alpha",), "disagreement": ("alpha",), "anchors": ("anchor", "param")}
    _coords = {"alphas": "alpha"}
    _table = ("alpha",)
    _thumb = ("rms", "line")

    alphas: np.ndarray
    rms: np.ndarray
    disagreement: np.ndarray
    anchors: np.ndarray
    output: str = "softmax"
    n_samples: int = 0
    label: str = ""
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


def _probabilities(out: Tensor) -> Tensor:
    """Class probabilities of outputs ``(..., C)``: the softmax; one output is a binary classifier's logit."""
    if out.shape[-1] == 1:  # softmax over one entry is 1 for every network: read it as bce_with_logits does
        p = out.sigmoid()
        return torch.cat([1 - p, p], -1)
    return out.softmax(-1)


def _labels(out: Tensor) -> Tensor:
    """Predicted classes of outputs ``(..., C)``: the argmax (first maximum), or ``logit > 0`` for one output."""
    return (out[..., 0] > 0).long() if out.shape[-1] == 1 else out.argmax(-1)


class _SquaredDistance:
    """Batch metric: per point, sum over samples of ``||F(x, theta) - F(x, a)||^2``."""

    name = "squared_distance"

    def __init__(self, ref: Tensor, softmax: bool) -> None:
        self.softmax = softmax
        self.ref = _probabilities(ref) if softmax else ref

    def __call__(self, out: Tensor, y: Tensor, start: int) -> Tensor:
        q = _probabilities(out) if self.softmax else out
        r = self.ref[start : start + out.shape[1]].to(q)
        return (q - r).square().flatten(1).sum(1, dtype=torch.float64)


class _Disagreement:
    """Batch metric: per point, number of samples whose predicted class differs (a fraction of positions per sample)."""

    name = "disagreement"

    def __init__(self, ref: Tensor) -> None:
        self.labels = _labels(ref)

    def __call__(self, out: Tensor, y: Tensor, start: int) -> Tensor:
        lab = self.labels[start : start + out.shape[1]].to(out.device)
        diff = (_labels(out) != lab).to(torch.float64)  # (P, B, *positions)
        return diff.flatten(2).mean(2).sum(1) if diff.dim() > 2 else diff.sum(1)


def _distance_problem(problem: Problem | nn.Module, data: Any, bn: str | None) -> Problem:
    if isinstance(problem, Problem):
        if data is not None:
            raise TypeError("the first argument is a Problem, which holds its data; do not pass data")
        return problem
    if data is None:
        raise TypeError("data is missing: pass a landscape.Problem, or the model with data")
    # Targets are not used: checked only as loosely as a custom loss would (no label-range check).
    return Problem(
        problem,
        data,
        lambda outputs, targets: outputs.sum(),
        loss_form="outputs",
        bn_mode=bn if bn in ("eval", "train") else "eval",
    )


@shows_options(EngineOptions)
def distance_along_path(
    problem: Problem | nn.Module,
    a: PointLike,
    b: PointLike,
    data: Any = None,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    output: OutputKind | str = OutputKind.SOFTMAX,
    label: str = "",
    **options: Unpack[EngineOptions],
) -> DistanceResult:
    """Functional distance and label disagreement of ``(1 - alpha) a + alpha b`` from ``a`` (Im et al. Table 1).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``;
            outputs are ``(B, C)`` class scores (or ``(B, ..., C)``, see the module docstring).
        a: First endpoint (model, ``(D,)`` vector or parameter dict): the reference network.
        b: Second endpoint.
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches (targets are not used).
        alphas: ``(n,)`` positions; default ``linspace(0, 1, 11)``.
        output: ``"softmax"`` (default, see the module docstring) or ``"logits"``.
        label: Curve name.
        **options: The evaluation keywords (:class:`~landscape.analyze.slicing.EngineOptions`): ``batch_size``,
            ``chunk_size``, ``memory_budget``, ``strategy``, ``bn_mode`` (``"interpolate"`` too),
            ``progress``, ``data_description`` (``data_desc`` is its deprecated name). BatchNorm: with
            ``bn_mode`` not given and ``a`` and ``b`` models with buffers, each network runs on its own
            running statistics (interpolated along the path, as ``"interpolate"``); ``"eval"`` uses the
            problem's model's at every point; otherwise (vectors, parameter dicts) the problem's model's.

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
    kind = parse_option(OutputKind, output, "output")
    settings = SliceSettings.of("distance_along_path", options, EngineOptions)
    bn = settings.bn_name()
    prob = _distance_problem(problem, data, bn)
    layout = prob.layout
    anchors = [as_anchor(prob, a, layout), as_anchor(prob, b, layout)]
    # Two networks compared as functions run on their own running statistics (the slices' default).
    mode, bufs = slice_buffers(prob, anchors, settings.bn_mode)
    # A NaN endpoint would give rms=nan beside a plausible disagreement (argmax of NaN is 0): refuse it.
    for name, (vec, bufs_k) in zip(("a", "b"), anchors):
        check_vector(vec, name, layout)
        for k, t in (bufs_k or {}).items() if bufs is not None else ():
            check_finite(t, f"{name}: buffer {k!r}")
    al = coordinates(np.linspace(0, 1, 11) if alphas is None else alphas, "alphas")
    basis = torch.stack([v for v, _ in anchors])
    ref_pts = AffinePoints(basis, np.array([[1.0, 0.0]]), bufs)
    engine = {**settings.engine(), "bn_mode": mode.value}
    ref = torch.from_numpy(evaluate_points(prob, ref_pts, **{**engine, "metrics": ("outputs",)})["outputs"][0])
    if ref.dim() < 2:
        raise ValueError(f"functional distance needs outputs of shape (B, C), got {tuple(ref.shape)} (N, ...)")
    metrics = (_SquaredDistance(ref, kind is OutputKind.SOFTMAX), _Disagreement(ref))
    pts = AffinePoints(basis, np.stack([1 - al, al], 1), bufs)
    res = evaluate_points(prob, pts, **{**engine, "metrics": metrics})
    prov = Provenance.here(
        data=settings.data_description or prob.description,
        kind="distance_along_path",
        output=kind.value,
        model=type(prob.model).__name__,
    )
    return DistanceResult(
        alphas=al,
        rms=np.sqrt(res["squared_distance"]),
        disagreement=res["disagreement"],
        anchors=to_numpy(basis),
        output=kind.value,
        n_samples=int(ref.shape[0]),
        label=label,
        layout=layout.to_dict(),
        provenance=prov,
    )


@shows_options(EngineOptions)
def functional_distance(
    problem: Problem | nn.Module,
    a: PointLike,
    b: PointLike,
    data: Any = None,
    *,
    output: OutputKind | str = OutputKind.SOFTMAX,
    **options: Unpack[EngineOptions],
) -> FunctionalDistance:
    """RMS output distance and label disagreement between networks ``a`` and ``b`` (Im et al. Sec. 4.1).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        a: First network (model, ``(D,)`` vector or parameter dict).
        b: Second network.
        data: Shorthand only: the data (targets are not used).
        output: ``"softmax"`` (default) or ``"logits"``.
        **options: The evaluation keywords, as for :func:`distance_along_path` (so BatchNorm models given as
            ``a`` and ``b`` each run on their own running statistics unless ``bn_mode`` says otherwise).

    Returns:
        A :class:`FunctionalDistance`.
    """
    settings = SliceSettings.of("functional_distance", options, EngineOptions)  # unknown keywords fail here
    engine = {k: v for k, v in options.items() if k != "data_desc"}  # the deprecated name warned once, above
    engine["data_description"] = settings.data_description
    r = distance_along_path(problem, a, b, data, alphas=[1.0], output=output, **engine)  # type: ignore[arg-type]
    prov = dataclasses.replace(r.provenance, extra={**r.provenance.extra, "kind": "functional_distance"})
    return FunctionalDistance(
        rms=float(r.rms[0]),
        disagreement=float(r.disagreement[0]),
        output=r.output,
        n_samples=r.n_samples,
        provenance=prov,
    )
