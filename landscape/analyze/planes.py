"""Planes of the loss surface (Li et al. 2018): around a center, along random directions, through three models.

Row ``i``, column ``j`` of every grid is ``center + xs[j] d1 + ys[i] d2``. A plane is an affine family of
points like every slice (see :mod:`landscape.analyze.surface` for the conventions and
:mod:`landscape.analyze.slicing` for the evaluation keywords they share); the center, and the three models
of :func:`plane_through`, are hit exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from landscape.analyze.directions import random_directions
from landscape.analyze.slice_results import PlaneResult
from landscape.analyze.slicing import (
    PointLike,
    ProblemLike,
    SliceOptions,
    as_anchor,
    begin_slice,
    coordinates,
    evaluate_slice,
    grid_metrics,
    shows_options,
    to_numpy,
)
from landscape.params import ParamSelection

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["plane", "random_plane", "plane_through"]


def _grid(xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The axes ``x``, ``y`` (``ys`` defaults to ``xs``) and the flat row-major grid ``X``, ``Y``."""
    x, y = coordinates(xs, "xs"), coordinates(xs if ys is None else ys, "ys")
    X, Y = (g.reshape(-1) for g in np.meshgrid(x, y))
    return x, y, X, Y


@shows_options(SliceOptions)
def plane(
    problem: ProblemLike,
    center: PointLike,
    d1: Tensor,
    d2: Tensor,
    data: Any = None,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
    seed: int | None = None,
    **options: Unpack[SliceOptions],
) -> PlaneResult:
    """Metrics on the grid ``center + xs[j] d1 + ys[i] d2`` (any ranges and resolutions, square or not).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        center: Origin (model, vector or dict); ``(0, 0)`` is hit exactly.
        d1: ``(D,)`` first direction (columns).
        d2: ``(D,)`` second direction (rows).
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        xs: ``(nx,)`` coordinates along ``d1`` (default 21 values over [-1, 1]).
        ys: ``(ny,)`` coordinates along ``d2`` (default: ``xs``).
        extra: More provenance entries (``bn_mode="interpolate"`` is not available: directions carry no
            buffers).
        seed: Recorded in the provenance.
        **options: The evaluation keywords of every slice (:class:`~landscape.analyze.slicing.SliceOptions`):
            ``loss_fn``, ``metrics``, ``batch_size``, ``chunk_size``, ``memory_budget``, ``strategy``,
            ``bn_mode``, ``progress``, ``data_description`` (``data_desc`` is its deprecated name).

    Returns:
        A :class:`~landscape.analyze.slice_results.PlaneResult` with ``(ny, nx)`` grids.
    """
    settings, prob = begin_slice("plane", problem, data, options, seed)
    layout = prob.layout
    c = as_anchor(prob, center, layout)
    dirs = [as_anchor(prob, d, layout)[0] for d in (d1, d2)]
    x, y, X, Y = _grid(np.linspace(-1, 1, 21) if xs is None else xs, ys)
    coefs = np.stack([np.ones_like(X), X, Y], 1)
    anchors = [c, (dirs[0], None), (dirs[1], None)]
    res, bad, prov = evaluate_slice(prob, anchors, coefs, settings, {"kind": "plane", **(extra or {})})
    return PlaneResult(
        xs=x,
        ys=y,
        metrics=grid_metrics(res, len(y), len(x)),
        center=to_numpy(c[0]),
        directions=to_numpy(torch.stack(dirs)),
        anchor_coords=np.zeros((1, 2)),
        anchor_labels=["center"],
        n_nonfinite=bad,
        layout=layout.to_dict(),
        provenance=prov,
    )


@shows_options(SliceOptions)
def random_plane(
    problem: ProblemLike,
    data: Any = None,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    *,
    center: PointLike | None = None,
    normalization: str = "filter",
    bias_bn: str = "zero",
    orthogonal: bool = False,
    params: ParamSelection = "all",
    seed: int = 0,
    **options: Unpack[SliceOptions],
) -> PlaneResult:
    """Li et al.'s plane: two seeded random directions, filter-normalized by default, around a center.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture and default center (never
            modified) with ``data``.
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        xs: ``(nx,)`` coordinates (default 21 values over [-1, 1]).
        ys: ``(ny,)`` coordinates (default: ``xs``).
        center: Origin (default: the model's parameters); directions are normalized to it.
        normalization: See :func:`landscape.analyze.directions.normalize_direction`.
        bias_bn: See :func:`landscape.analyze.directions.normalize_direction`.
        orthogonal: Gram-Schmidt the two directions after normalization.
        params: Which parameters the directions move: ``"all"`` (default; frozen parameters too, so a
            frozen and an unfrozen copy of a model give the same plane), ``"trainable"`` (directions
            zero on ``requires_grad=False`` tensors, e.g. a fine-tuned model's frozen layers), or
            tensor / layer names. See :mod:`landscape.analyze.directions`.
        seed: Seed of the directions (recorded in the provenance).
        **options: The evaluation keywords, as for :func:`plane`.

    Returns:
        A :class:`~landscape.analyze.slice_results.PlaneResult` whose provenance records seed and direction
        options.

    Raises:
        ValueError: If ``params`` selects no parameter.
    """
    settings, prob = begin_slice("random_plane", problem, data, options, seed)
    layout = prob.layout
    model = prob.model
    c = as_anchor(prob, model if center is None else center, layout)[0]
    d = random_directions(
        model,
        2,
        seed=seed,
        normalization=normalization,
        bias_bn=bias_bn,
        orthogonal=orthogonal,
        reference=c,
        params=params,
        layout=layout,
    )
    extra = {
        "directions": "random",
        "normalization": str(normalization),
        "bias_bn": str(bias_bn),
        "orthogonal": orthogonal,
        "params": params if isinstance(params, str) else list(params),
    }
    xs = np.linspace(-1, 1, 21) if xs is None else xs
    return plane(
        prob,
        c,
        d[0],
        d[1],
        xs=xs,
        ys=xs if ys is None else ys,
        extra=extra,
        **settings.engine(),
        seed=seed,
        data_description=settings.data_description,
    )


@shows_options(SliceOptions)
def plane_through(
    problem: ProblemLike,
    p0: PointLike,
    p1: PointLike,
    p2: PointLike,
    data: Any = None,
    xs: Sequence[float] | np.ndarray | None = None,
    ys: Sequence[float] | np.ndarray | None = None,
    *,
    frame: str = "anchors",
    seed: int | None = None,
    **options: Unpack[SliceOptions],
) -> PlaneResult:
    """The plane through three models, centered at ``p0``.

    ``frame="anchors"``: ``d1 = p1 - p0``, ``d2 = p2 - p0``, so the models sit at ``(0, 0)``, ``(1, 0)``
    and ``(0, 1)`` and are hit exactly. ``frame="orthogonal"``: ``d1 = p1 - p0`` and ``d2`` the part of
    ``p2 - p0`` orthogonal to it, scaled to ``||d1||`` (distances on the plot are true to scale); ``p2``
    then sits at ``(<p2 - p0, d1>/||d1||^2, ||d2_perp||/||d1||)``. Points are combinations of the three
    models either way, so ``bn_mode="interpolate"`` works.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        p0: Origin.
        p1: Second model.
        p2: Third model.
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        xs: ``(nx,)`` coordinates along ``d1`` (default 21 over [-0.5, 1.5]).
        ys: ``(ny,)`` coordinates along ``d2`` (default: ``xs``).
        frame: ``"anchors"`` or ``"orthogonal"``.
        seed: Recorded in the provenance.
        **options: The evaluation keywords, as for :func:`plane`.

    Returns:
        A :class:`~landscape.analyze.slice_results.PlaneResult`; ``anchor_coords`` holds the three models'
        coordinates.

    Raises:
        ValueError: On an unknown frame or collinear models.
    """
    if frame not in ("anchors", "orthogonal"):
        raise ValueError(f"unknown frame {frame!r}; valid: ['anchors', 'orthogonal']")
    settings, prob = begin_slice("plane_through", problem, data, options, seed)
    layout = prob.layout
    anchors = [as_anchor(prob, p, layout) for p in (p0, p1, p2)]
    v0, v1, v2 = (v.double() for v, _ in anchors)
    e1, e2 = v1 - v0, v2 - v0
    a = float(e2 @ e1 / (e1 @ e1)) if float(e1.norm()) > 0 else 0.0
    b = float((e2 - a * e1).norm() / e1.norm()) if float(e1.norm()) > 0 else 0.0
    if not b > 1e-12:
        raise ValueError("the three models are collinear (or coincide); they do not span a plane")
    if frame == "anchors":
        a, b = 0.0, 1.0  # d2 = p2 - p0
    x, y, X, Y = _grid(np.linspace(-0.5, 1.5, 21) if xs is None else xs, ys)
    # center + X d1 + Y d2 with d1 = p1 - p0, d2 = (p2 - p0 - a d1) / b, written over the three models
    # (exact 0/1 coefficients at the anchors of the "anchors" frame).
    coefs = np.stack([1 - X - (1 - a) * Y / b, X - a * Y / b, Y / b], 1)
    res, bad, prov = evaluate_slice(prob, anchors, coefs, settings, {"kind": "plane_through", "frame": frame})
    dirs = torch.stack([e1, (e2 - a * e1) / b]).to(anchors[0][0].dtype)
    return PlaneResult(
        xs=x,
        ys=y,
        metrics=grid_metrics(res, len(y), len(x)),
        center=to_numpy(anchors[0][0]),
        directions=to_numpy(dirs),
        anchor_coords=np.array([[0.0, 0.0], [1.0, 0.0], [a, b]]),
        anchor_labels=["p0", "p1", "p2"],
        n_nonfinite=bad,
        layout=layout.to_dict(),
        provenance=prov,
    )
