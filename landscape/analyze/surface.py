"""1-D and 2-D slices of the loss surface (Goodfellow et al. 2015; Im et al. 2016; Li et al. 2018).

The slices' results are in :mod:`landscape.analyze.slice_results`, the machinery they share (evaluation
keywords, problem, anchors, one evaluation) in :mod:`landscape.analyze.slicing`.

Every slice is an affine family of points evaluated by :func:`landscape.evaluate.points.evaluate_points`
through :class:`~landscape.evaluate.points.AffinePoints`, so no slice holds all its parameter vectors at
once. Points are computed in float64 as combinations of the *anchor* vectors and rounded once; a
point whose only nonzero coefficient is 1 is that anchor, bitwise (alpha 0 and 1 of a line, the four
bilinear corners, the three barycentric vertices, the three models of :func:`plane_through`).

Readings of the papers (see also ``shared/papers/README.md``):

- Linear interpolation (Im et al. eq. 2 writes ``alpha theta_1 + (1 - alpha) theta_2``): here
  ``theta(alpha) = (1 - alpha) a + alpha b``, so alpha 0 is ``a`` and 1 is ``b``; any alpha, e.g. up to
  2 as in Im et al. Fig. 10.
- Absolute distance (Im et al. eq. 1): ``theta(d) = theta_min + d (ref - theta_min) / ||ref - theta_min||``,
  computed as ``(1 - t) theta_min + t ref`` with ``t = d / ||ref - theta_min||`` (float64), so ``d = 0`` is
  the minimum and ``d = ||ref - theta_min||`` the reference, exactly.
- Bilinear (Im et al. A.1 eqs. 3-5, its theta_1..theta_4 are ``corners[0..3]``):
  ``theta(alpha, beta) = beta (alpha c0 + (1 - alpha) c1) + (1 - beta) (alpha c2 + (1 - alpha) c3)``.
- Barycentric (A.1 eqs. 6-8, reading 6 of the papers' README):
  ``theta(alpha, beta) = theta_0 + alpha (beta (theta_1 - theta_0) + (1 - beta) (theta_2 - theta_0))``,
  alpha, beta in [0, 1]; the row alpha = 0 is theta_0 for every beta.
- Plane (Li et al.): row ``i``, column ``j`` of every grid is ``center + xs[j] d1 + ys[i] d2``.

Every slice takes a :class:`~landscape.problem.Problem` first (or, as a shorthand, the model with ``data``
and ``loss_fn``). The evaluation options are the same keywords on every slice (see ``docs/arguments.md``):
``metrics``, ``loss_fn``, ``batch_size``, ``chunk_size``, ``memory_budget``, ``strategy``, ``bn_mode``,
``progress`` go to :func:`~landscape.evaluate.points.evaluate_points`; ``seed`` and ``data_description`` to the
provenance (``data_desc`` is its deprecated old name). They are declared once,
:class:`~landscape.analyze.slicing.SliceOptions`.

BatchNorm: anchors given as models keep their own running statistics unless ``bn_mode`` is given (a line
from ``a`` to ``b`` ends at ``b``'s own loss; a plane around a model keeps that model's statistics); vectors
and parameter dicts run on the problem model's (:func:`~landscape.analyze.slicing.slice_buffers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analyze.directions import random_directions
from landscape.analyze.slice_results import BarycentricResult, BilinearResult, LineResult, PlaneResult
from landscape.analyze.slicing import (
    PointLike,
    ProblemLike,
    SliceOptions,
    SliceSettings,
    as_anchor,
    begin_slice,
    coordinates,
    evaluate_slice,
    grid_metrics,
    shows_options,
    to_numpy,
)
from landscape.params import ParamSelection
from landscape.trajectory.records import Snapshot

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from landscape.problem import Problem

__all__ = ["line", "line_distance", "bilinear", "barycentric", "plane", "random_plane", "plane_through"]


def _line_slice(
    prob: Problem,
    settings: SliceSettings,
    anchors: Sequence[tuple[Tensor, Any]],
    *,
    t: np.ndarray,
    coords: np.ndarray,
    kind: str,
    anchor_coords: np.ndarray,
    anchor_labels: list[str],
    coord_name: str,
    label: str,
) -> LineResult:
    """Evaluate ``(1 - t) anchors[0] + t anchors[1]`` and return it as a line over ``coords`` (both ``(n,)``).

    ``kind`` names the slice in the provenance; the other keywords are the :class:`LineResult` fields that
    tell :func:`line` and :func:`line_distance` apart.
    """
    res, bad, prov = evaluate_slice(prob, anchors, np.stack([1 - t, t], 1), settings, {"kind": kind})
    return LineResult(
        coords=coords,
        metrics=res,
        anchors=to_numpy(torch.stack([v for v, _ in anchors])),
        anchor_coords=anchor_coords,
        anchor_labels=anchor_labels,
        coord_name=coord_name,
        label=label,
        n_nonfinite=bad,
        layout=prob.layout.to_dict(),
        provenance=prov,
    )


# =========================================================================== 1-D
@shows_options(SliceOptions)
def line(
    problem: ProblemLike,
    a: PointLike,
    b: PointLike,
    data: Any = None,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    label: str = "",
    seed: int | None = None,
    **options: Unpack[SliceOptions],
) -> LineResult:
    """Linear interpolation ``(1 - alpha) a + alpha b`` over any alphas (beyond the endpoints too).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        a: Start (model, trajectory snapshot, ``(D,)`` vector or parameter dict); alpha 0, exactly.
        b: End; alpha 1, exactly.
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        alphas: ``(n,)`` positions; default ``linspace(0, 1, 21)``.
        label: Curve name.
        seed: Recorded in the provenance.
        **options: The evaluation keywords of every slice (:class:`~landscape.analyze.slicing.SliceOptions`):
            ``loss_fn``, ``metrics``, ``batch_size``, ``chunk_size``, ``memory_budget``, ``strategy``,
            ``bn_mode``, ``progress``, ``data_description`` (``data_desc`` is its deprecated name).

    Returns:
        A :class:`LineResult` with ``coord_name="alpha"``.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> data = (torch.randn(8, 2), torch.randint(0, 3, (8,)))
        >>> r = line(net, net, torch.zeros(9), data, alphas=[0, 0.5, 1, 2])
        >>> r.metrics["loss"].shape
        (4,)
    """
    settings, prob = begin_slice("line", problem, data, options, seed)
    al = coordinates(np.linspace(0, 1, 21) if alphas is None else alphas, "alphas")
    anchors = [as_anchor(prob, a, prob.layout), as_anchor(prob, b, prob.layout)]
    return _line_slice(
        prob,
        settings,
        anchors,
        t=al,
        coords=al,
        kind="line",
        anchor_coords=np.array([0.0, 1.0]),
        anchor_labels=["a", "b"],
        coord_name="alpha",
        label=label,
    )


@shows_options(SliceOptions)
def line_distance(
    problem: ProblemLike,
    minimum: PointLike,
    reference: PointLike,
    data: Any = None,
    distances: Sequence[float] | np.ndarray | None = None,
    *,
    label: str = "",
    seed: int | None = None,
    **options: Unpack[SliceOptions],
) -> LineResult:
    """Loss against absolute parameter distance from a minimum toward a reference (Im et al. eq. 1).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        minimum: ``theta_min`` (distance 0, exactly).
        reference: The point the line heads to, e.g. the initialization (distance ``||ref - theta_min||``).
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        distances: ``(n,)`` Euclidean distances from the minimum; default 31 values over
            ``[0, 1.5 ||ref - theta_min||]``, plus the reference's own distance.
        label: Curve name.
        seed: Recorded in the provenance.
        **options: The evaluation keywords, as for :func:`line`.

    Returns:
        A :class:`LineResult` with ``coord_name="distance"``; ``anchor_coords`` is ``[0, ||ref - theta_min||]``.

    Raises:
        ValueError: If the two points coincide.
    """
    settings, prob = begin_slice("line_distance", problem, data, options, seed)
    anchors = [as_anchor(prob, minimum, prob.layout), as_anchor(prob, reference, prob.layout)]
    length = float((anchors[1][0].double() - anchors[0][0].double()).norm())
    if length == 0:
        raise ValueError("minimum and reference are the same point; the direction is undefined")
    if distances is None:
        grid = np.linspace(0, 1.5 * length, 31)
        distances = np.union1d(grid[~np.isclose(grid, length, rtol=1e-9, atol=0)], [length])
    ds = coordinates(distances, "distances")
    return _line_slice(
        prob,
        settings,
        anchors,
        t=ds / length,
        coords=ds,
        kind="line_distance",
        anchor_coords=np.array([0.0, length]),
        anchor_labels=["minimum", "reference"],
        coord_name="distance",
        label=label,
    )


# =========================================================================== 2-D
def _grid(
    xs: Any, ys: Any, names: tuple[str, str] = ("xs", "ys")
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The axes ``x``, ``y`` (``ys`` defaults to ``xs``) and the flat row-major grid ``X``, ``Y``.

    ``names`` are the arguments' names in error messages.

    Raises:
        ValueError: If an axis is a bare number: coordinates, not a resolution (``21`` was a 1 x 1 "plane" at 21).
    """
    for v, name in ((xs, names[0]), (ys, names[1])):
        if isinstance(v, int | float | np.number) and not isinstance(v, bool):
            raise ValueError(
                f"{name} are the grid's coordinates, not a resolution: got the number {v}; for {v} points pass "
                f"np.linspace(-1, 1, {v}) (or [{v}] for one coordinate)"
            )
    x, y = coordinates(xs, names[0]), coordinates(xs if ys is None else ys, names[1])
    X, Y = (g.reshape(-1) for g in np.meshgrid(x, y))  # (len(y), len(x)) grids: row i is y[i]
    return x, y, X, Y


def _unit_grid(n: int, alphas: Any, betas: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Im et al.'s axes ``alphas``, ``betas`` (default ``linspace(0, 1, n)``) and their flat row-major grid.

    Returns:
        ``alphas (nx,)``, ``betas (ny,)`` and ``A``, ``B`` of shape ``(ny * nx,)``: point ``i * nx + j``
        is ``(alphas[j], betas[i])``.
    """
    unit = np.linspace(0, 1, n)
    return _grid(unit if alphas is None else alphas, unit if betas is None else betas, ("alphas", "betas"))


@shows_options(SliceOptions)
def bilinear(
    problem: ProblemLike,
    corners: Sequence[PointLike],
    data: Any = None,
    n: int = 11,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    seed: int | None = None,
    **options: Unpack[SliceOptions],
) -> BilinearResult:
    """Im et al.'s bilinear interpolation over four points (A.1 eqs. 3-5).

    ``theta(alpha, beta) = beta (alpha c0 + (1 - alpha) c1) + (1 - beta) (alpha c2 + (1 - alpha) c3)``.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        corners: Four points (models, vectors or dicts).
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        n: Grid resolution when ``alphas``/``betas`` are not given (``linspace(0, 1, n)``).
        alphas: ``(n,)`` alphas.
        betas: ``(m,)`` betas.
        seed: Recorded in the provenance.
        **options: The evaluation keywords, as for :func:`line`.

    Returns:
        A :class:`BilinearResult`; the corners are hit exactly.

    Raises:
        ValueError: Unless exactly four corners are given.
    """
    if len(corners) != 4:
        raise ValueError(f"bilinear interpolation needs four corners, got {len(corners)}")
    settings, prob = begin_slice("bilinear", problem, data, options, seed)
    layout = prob.layout
    anchors = [as_anchor(prob, c, layout) for c in corners]
    al, be, A, Bt = _unit_grid(n, alphas, betas)
    coefs = np.stack([Bt * A, Bt * (1 - A), (1 - Bt) * A, (1 - Bt) * (1 - A)], 1)
    res, bad, prov = evaluate_slice(prob, anchors, coefs, settings, {"kind": "bilinear"})
    return BilinearResult(
        alphas=al,
        betas=be,
        metrics=grid_metrics(res, len(be), len(al)),
        corners=to_numpy(torch.stack([v for v, _ in anchors])),
        corner_coords=np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]),
        anchor_labels=["c0", "c1", "c2", "c3"],
        n_nonfinite=bad,
        layout=layout.to_dict(),
        provenance=prov,
    )


@shows_options(SliceOptions)
def barycentric(
    problem: ProblemLike,
    p0: PointLike,
    p1: PointLike,
    p2: PointLike,
    data: Any = None,
    n: int = 11,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    seed: int | None = None,
    **options: Unpack[SliceOptions],
) -> BarycentricResult:
    """Im et al.'s barycentric interpolation over three points (A.1 eqs. 6-8).

    ``theta(alpha, beta) = (1 - alpha) p0 + alpha beta p1 + alpha (1 - beta) p2``.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        p0: Vertex at ``alpha = 0``.
        p1: Vertex at ``(alpha, beta) = (1, 1)``.
        p2: Vertex at ``(1, 0)``.
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        n: Grid resolution when ``alphas``/``betas`` are not given (``linspace(0, 1, n)``).
        alphas: ``(n,)`` alphas.
        betas: ``(m,)`` betas.
        seed: Recorded in the provenance.
        **options: The evaluation keywords, as for :func:`line`.

    Returns:
        A :class:`BarycentricResult`; the vertices are hit exactly.
    """
    settings, prob = begin_slice("barycentric", problem, data, options, seed)
    layout = prob.layout
    anchors = [as_anchor(prob, p, layout) for p in (p0, p1, p2)]
    al, be, A, Bt = _unit_grid(n, alphas, betas)
    coefs = np.stack([1 - A, A * Bt, A * (1 - Bt)], 1)
    res, bad, prov = evaluate_slice(prob, anchors, coefs, settings, {"kind": "barycentric"})
    return BarycentricResult(
        alphas=al,
        betas=be,
        metrics=grid_metrics(res, len(be), len(al)),
        vertices=to_numpy(torch.stack([v for v, _ in anchors])),
        anchor_labels=["p0", "p1", "p2"],
        n_nonfinite=bad,
        layout=layout.to_dict(),
        provenance=prov,
    )


# =========================================================================== planes (Li et al.)


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
        xs: ``(nx,)`` coordinates along ``d1`` (default 21 values over [-1, 1]); a number is one coordinate,
            not a resolution.
        ys: ``(ny,)`` coordinates along ``d2`` (default: ``xs``).
        extra: More provenance entries.
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
    res, bad, prov = evaluate_slice(prob, anchors, coefs, settings, {"kind": "plane", **(extra or {})}, directions=2)
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
        xs: ``(nx,)`` coordinates (default 21 values over [-1, 1]), e.g. ``np.linspace(-1, 1, 41)``; a number
            is one coordinate, not a resolution.
        ys: ``(ny,)`` coordinates (default: ``xs``).
        center: Origin (default: the model's parameters): a model or trajectory snapshot (its own running
            statistics), a ``(D,)`` vector or a parameter dict; directions are normalized to it.
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
        # a model's or a snapshot's own statistics (the vector c alone would take the problem model's)
        model if center is None else center if isinstance(center, nn.Module | Snapshot) else c,
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
