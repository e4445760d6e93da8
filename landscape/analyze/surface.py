"""1-D and 2-D slices of the loss surface (Goodfellow et al. 2015; Im et al. 2016; Li et al. 2018).

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
provenance (``data_desc`` is its deprecated old name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analyze.directions import random_directions
from landscape.evaluate.points import AffinePoints, BatchMetric, BNMode, Strategy, evaluate_points
from landscape.params import ParamLayout, ParamSelection, as_param_dict, buffers_dict, parameters_to_vector
from landscape.problem import Problem, as_problem, renamed
from landscape.results import Labeling, Provenance, Result, register_result

__all__ = [
    "LineResult",
    "PlaneResult",
    "BilinearResult",
    "BarycentricResult",
    "line",
    "line_distance",
    "bilinear",
    "barycentric",
    "plane",
    "random_plane",
    "plane_through",
]

PointLike = nn.Module | Tensor | Mapping[str, Tensor]
ProblemLike = Problem | nn.Module
Metrics = Sequence[str | BatchMetric] | None


# =========================================================================== results
@register_result
@dataclasses.dataclass(frozen=True)
class LineResult(Result):
    """Metrics along a line.

    Attributes:
        coords: ``(n,)`` positions: alphas (``coord_name="alpha"``) or distances (``"distance"``).
        metrics: Name -> ``(n,)`` values (``"outputs"``: ``(n, N, *out)``); NaN/inf kept.
        anchors: ``(k, D)`` anchor vectors (the endpoints, or the minimum and the reference).
        anchor_coords: ``(k,)`` positions of the anchors on the coordinate axis.
        anchor_labels: Names of the anchors.
        coord_name: ``"alpha"`` or ``"distance"``.
        label: Name of the curve, for overlays.
        n_nonfinite: Number of points with a NaN or inf loss.
        layout: The parameter layout (``ParamLayout.to_dict()``).
        provenance: Seed, data, version and options.
    """

    _labels = {"anchor_labels": "anchor"}
    _thumb = ("metrics.loss", "line")

    def _spec(self) -> Labeling:
        c = self.coord_name or "alpha"  # the axis is named after what it holds: alpha or distance
        dims = {"coords": (c,), "metrics.*": (c,), "anchors": ("anchor", "param"), "anchor_coords": ("anchor",)}
        return Labeling(dims, {"coords": c}, self._labels, (c,))

    coords: np.ndarray
    metrics: dict[str, np.ndarray]
    anchors: np.ndarray
    anchor_coords: np.ndarray
    anchor_labels: list[str] = dataclasses.field(default_factory=list)
    coord_name: str = "alpha"
    label: str = ""
    n_nonfinite: int = 0
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    @property
    def alphas(self) -> np.ndarray:
        """The coordinates (alphas or distances), shape ``(n,)``."""
        return self.coords


@register_result
@dataclasses.dataclass(frozen=True)
class PlaneResult(Result):
    """Metrics on a regular grid of a plane: ``grid[i, j]`` is at ``center + xs[j] d1 + ys[i] d2``.

    Attributes:
        xs: ``(nx,)`` coordinates along ``directions[0]``.
        ys: ``(ny,)`` coordinates along ``directions[1]``.
        metrics: Name -> ``(ny, nx)`` grid (``"outputs"``: ``(ny, nx, N, *out)``); NaN/inf kept.
        center: ``(D,)`` origin of the plane.
        directions: ``(2, D)`` the two directions.
        anchor_coords: ``(k, 2)`` plane coordinates of notable points (e.g. the three models).
        anchor_labels: Their names.
        n_nonfinite: Number of grid points with a NaN or inf loss.
        layout: The parameter layout (``ParamLayout.to_dict()``).
        provenance: Seed, data, version and options (direction normalization, ...).
    """

    _dims = {
        "xs": ("x",),
        "ys": ("y",),
        "metrics.*": ("y", "x"),
        "center": ("param",),
        "directions": ("direction", "param"),
        "anchor_coords": ("anchor", "xy"),
    }
    _coords = {"xs": "x", "ys": "y"}
    _labels = {"anchor_labels": "anchor"}
    _table = ("y", "x")
    _thumb = ("metrics.loss", "image")

    xs: np.ndarray
    ys: np.ndarray
    metrics: dict[str, np.ndarray]
    center: np.ndarray
    directions: np.ndarray
    anchor_coords: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    anchor_labels: list[str] = dataclasses.field(default_factory=list)
    n_nonfinite: int = 0
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    def project(self, points: Tensor | np.ndarray) -> np.ndarray:
        """Plane coordinates of points (least squares in float64), e.g. a trajectory to overlay.

        Args:
            points: ``(T, D)`` or ``(D,)`` parameter vectors.

        Returns:
            ``(T, 2)`` coordinates ``(x, y)`` minimizing ``||p - center - x d1 - y d2||``.
        """
        p = np.atleast_2d(np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, np.float64))
        d = self.directions.astype(np.float64)
        rhs = (p - self.center.astype(np.float64)) @ d.T
        return np.linalg.solve(d @ d.T, rhs.T).T

    def point(self, x: float, y: float) -> np.ndarray:
        """The parameter vector at plane coordinates ``(x, y)``, shape ``(D,)`` (float64)."""
        d = self.directions.astype(np.float64)
        return self.center.astype(np.float64) + x * d[0] + y * d[1]


@register_result
@dataclasses.dataclass(frozen=True)
class BilinearResult(Result):
    """Metrics of Im et al.'s bilinear interpolation between four points.

    Attributes:
        alphas: ``(n,)``.
        betas: ``(m,)``.
        metrics: Name -> ``(m, n)`` grid, ``[i, j]`` at ``(alpha_j, beta_i)``.
        corners: ``(4, D)`` the four points (Im et al.'s theta_1..theta_4).
        corner_coords: ``(4, 2)`` their ``(alpha, beta)``: ``(1, 1), (0, 1), (1, 0), (0, 0)``.
        anchor_labels: Names of the corners.
        n_nonfinite: Number of grid points with a NaN or inf loss.
        layout: The parameter layout.
        provenance: Data, version, options.
    """

    _dims = {
        "alphas": ("alpha",),
        "betas": ("beta",),
        "metrics.*": ("beta", "alpha"),
        "corners": ("corner", "param"),
        "corner_coords": ("corner", "ab"),
    }
    _coords = {"alphas": "alpha", "betas": "beta"}
    _labels = {"anchor_labels": "corner"}
    _table = ("beta", "alpha")
    _thumb = ("metrics.loss", "image")

    alphas: np.ndarray
    betas: np.ndarray
    metrics: dict[str, np.ndarray]
    corners: np.ndarray
    corner_coords: np.ndarray
    anchor_labels: list[str] = dataclasses.field(default_factory=list)
    n_nonfinite: int = 0
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


@register_result
@dataclasses.dataclass(frozen=True)
class BarycentricResult(Result):
    """Metrics of Im et al.'s barycentric interpolation over a triangle of three points.

    Attributes:
        alphas: ``(n,)`` in [0, 1] (0 is vertex 0).
        betas: ``(m,)`` in [0, 1] (1 is the edge toward vertex 1, 0 toward vertex 2).
        metrics: Name -> ``(m, n)`` grid, ``[i, j]`` at ``(alpha_j, beta_i)``.
        vertices: ``(3, D)``.
        anchor_labels: Names of the vertices.
        n_nonfinite: Number of grid points with a NaN or inf loss.
        layout: The parameter layout.
        provenance: Data, version, options.
    """

    _dims = {"alphas": ("alpha",), "betas": ("beta",), "metrics.*": ("beta", "alpha"), "vertices": ("vertex", "param")}
    _coords = {"alphas": "alpha", "betas": "beta"}
    _labels = {"anchor_labels": "vertex"}
    _table = ("beta", "alpha")
    _thumb = ("metrics.loss", "image")

    alphas: np.ndarray
    betas: np.ndarray
    metrics: dict[str, np.ndarray]
    vertices: np.ndarray
    anchor_labels: list[str] = dataclasses.field(default_factory=list)
    n_nonfinite: int = 0
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    def triangle_xy(self) -> np.ndarray:
        """Positions of the grid in an equilateral triangle, shape ``(m, n, 2)``.

        Vertex 0 at ``(0, 0)``, vertex 1 at ``(1, 0)``, vertex 2 at ``(1/2, sqrt(3)/2)``.
        """
        a = self.alphas[None, :, None]
        b = self.betas[:, None, None]
        v1, v2 = np.array([1.0, 0.0]), np.array([0.5, np.sqrt(3) / 2])
        return a * b * v1 + a * (1 - b) * v2


# =========================================================================== helpers
@dataclasses.dataclass
class _Opts:
    """The evaluation keywords shared by every slice."""

    metrics: Any = None
    batch_size: int | None = None
    chunk_size: int | None = None
    memory_budget: int | str | None = None
    strategy: Strategy | str = "auto"
    bn_mode: BNMode | str | None = None
    progress: bool = False
    seed: int | None = None
    data_description: str | None = None

    def engine(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("metrics", "batch_size", "chunk_size", "memory_budget", "strategy", "bn_mode", "progress")
        }


def _problem(problem: ProblemLike, data: Any, loss_fn: Any, opts: _Opts, data_desc: str | None) -> Problem:
    """The problem (built from the shorthand once), and ``data_description`` resolved from its old name."""
    opts.data_description = renamed(opts.data_description, data_desc, "data_desc", "data_description")
    bn = str(getattr(opts.bn_mode, "value", opts.bn_mode)) if opts.bn_mode is not None else None
    if isinstance(problem, Problem) and data is not None:
        raise TypeError(
            "the first argument is a Problem, which holds its data; do not pass data (pass coordinates such as "
            "alphas= or xs= by keyword)"
        )
    # The shorthand's data are held as before (the budget bounds point chunks and activations, not the data).
    return as_problem(problem, data, loss_fn, bn_mode=bn if bn in ("eval", "train") else None)


def _anchor(prob: ProblemLike, p: PointLike, layout: ParamLayout) -> tuple[Tensor, dict[str, Tensor] | None]:
    """(vector, buffers or None) of a model, a flat vector or a parameter dict, in the problem's dtype."""
    model = prob.model if isinstance(prob, Problem) else prob
    dtype = prob.dtype if isinstance(prob, Problem) else next(iter(model.parameters())).dtype
    if isinstance(p, nn.Module):
        vec, bufs = parameters_to_vector(p), buffers_dict(p)
    elif isinstance(p, Tensor):
        vec, bufs = p.detach(), None
    elif isinstance(p, Mapping):
        vec, bufs = layout.flatten(as_param_dict(model, p, layout)), None  # may leave frozen tensors out
    else:
        raise TypeError(f"an anchor must be a model, a flat vector or a parameter dict, got {type(p).__name__}")
    layout.check_vector(vec)
    return vec.to(dtype), bufs


def _evaluate(
    prob: Problem,
    anchors: Sequence[tuple[Tensor, dict[str, Tensor] | None]],
    coefs: np.ndarray,
    opts: _Opts,
    extra: dict[str, Any],
) -> tuple[dict[str, np.ndarray], int, Provenance]:
    basis = torch.stack([a for a, _ in anchors])
    bufs = None
    bn = BNMode(getattr(opts.bn_mode, "value", opts.bn_mode) or prob.bn_mode)
    if bn is BNMode.INTERPOLATE:
        if any(b is None for _, b in anchors):
            raise ValueError("bn_mode='interpolate' needs every anchor given as a model (its buffers are interpolated)")
        bufs = [
            {k: (v.to(prob.dtype) if v.is_floating_point() else v) for k, v in b.items()}  # type: ignore[union-attr]
            for _, b in anchors
        ]
    res = evaluate_points(prob, AffinePoints(basis, coefs, bufs), **opts.engine())
    bad = int((~np.isfinite(res["loss"])).sum()) if "loss" in res else 0
    prov = Provenance.here(
        seed=opts.seed,
        data=opts.data_description or prob.description,
        model=type(prob.model).__name__,
        strategy=str(getattr(opts.strategy, "value", opts.strategy)),
        bn_mode=bn.value,
        loss=prob.loss_name,
        **extra,
    )
    return res, bad, prov


def _grid(res: dict[str, np.ndarray], ny: int, nx: int) -> dict[str, np.ndarray]:
    return {k: v.reshape(ny, nx, *v.shape[1:]) for k, v in res.items()}


def _coords(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers")
    return arr


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# =========================================================================== 1-D
def line(
    problem: ProblemLike,
    a: PointLike,
    b: PointLike,
    data: Any = None,
    alphas: Sequence[float] | np.ndarray | None = None,
    *,
    label: str = "",
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_description: str | None = None,
    data_desc: str | None = None,
) -> LineResult:
    """Linear interpolation ``(1 - alpha) a + alpha b`` over any alphas (beyond the endpoints too).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified) with ``data``.
        a: Start (model, ``(D,)`` vector or parameter dict); alpha 0, exactly.
        b: End; alpha 1, exactly.
        data: Shorthand only: tensor pair, Dataset, DataLoader or iterable of batches.
        alphas: ``(n,)`` positions; default ``linspace(0, 1, 21)``.
        label: Curve name.
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Recorded in the provenance.
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`LineResult` with ``coord_name="alpha"``.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> data = (torch.randn(8, 2), torch.randint(0, 3, (8,)))
        >>> r = line(net, net, torch.zeros(9), data, alphas=[0, 0.5, 1, 2])
        >>> r.metrics["loss"].shape
        (4,)
    """
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    al = _coords(np.linspace(0, 1, 21) if alphas is None else alphas, "alphas")
    anchors = [_anchor(prob, a, layout), _anchor(prob, b, layout)]
    coefs = np.stack([1 - al, al], 1)
    res, bad, prov = _evaluate(prob, anchors, coefs, opts, {"kind": "line"})
    return LineResult(
        al,
        res,
        _np(torch.stack([v for v, _ in anchors])),
        np.array([0.0, 1.0]),
        ["a", "b"],
        "alpha",
        label,
        bad,
        layout.to_dict(),
        prov,
    )


def line_distance(
    problem: ProblemLike,
    minimum: PointLike,
    reference: PointLike,
    data: Any = None,
    distances: Sequence[float] | np.ndarray | None = None,
    *,
    label: str = "",
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_description: str | None = None,
    data_desc: str | None = None,
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
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Recorded in the provenance.
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`LineResult` with ``coord_name="distance"``; ``anchor_coords`` is ``[0, ||ref - theta_min||]``.

    Raises:
        ValueError: If the two points coincide.
    """
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    anchors = [_anchor(prob, minimum, layout), _anchor(prob, reference, layout)]
    length = float((anchors[1][0].double() - anchors[0][0].double()).norm())
    if length == 0:
        raise ValueError("minimum and reference are the same point; the direction is undefined")
    if distances is None:
        grid = np.linspace(0, 1.5 * length, 31)
        distances = np.union1d(grid[~np.isclose(grid, length, rtol=1e-9, atol=0)], [length])
    ds = _coords(distances, "distances")
    t = ds / length
    coefs = np.stack([1 - t, t], 1)
    res, bad, prov = _evaluate(prob, anchors, coefs, opts, {"kind": "line_distance"})
    return LineResult(
        ds,
        res,
        _np(torch.stack([v for v, _ in anchors])),
        np.array([0.0, length]),
        ["minimum", "reference"],
        "distance",
        label,
        bad,
        layout.to_dict(),
        prov,
    )


# =========================================================================== 2-D
def bilinear(
    problem: ProblemLike,
    corners: Sequence[PointLike],
    data: Any = None,
    n: int = 11,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    betas: Sequence[float] | np.ndarray | None = None,
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_description: str | None = None,
    data_desc: str | None = None,
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
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Recorded in the provenance.
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`BilinearResult`; the corners are hit exactly.

    Raises:
        ValueError: Unless exactly four corners are given.
    """
    if len(corners) != 4:
        raise ValueError(f"bilinear interpolation needs four corners, got {len(corners)}")
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    anchors = [_anchor(prob, c, layout) for c in corners]
    al = _coords(np.linspace(0, 1, n) if alphas is None else alphas, "alphas")
    be = _coords(np.linspace(0, 1, n) if betas is None else betas, "betas")
    A, Bt = np.meshgrid(al, be)  # (m, n): row i is beta_i
    A, Bt = A.reshape(-1), Bt.reshape(-1)
    coefs = np.stack([Bt * A, Bt * (1 - A), (1 - Bt) * A, (1 - Bt) * (1 - A)], 1)
    res, bad, prov = _evaluate(prob, anchors, coefs, opts, {"kind": "bilinear"})
    cc = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    return BilinearResult(
        al,
        be,
        _grid(res, len(be), len(al)),
        _np(torch.stack([v for v, _ in anchors])),
        cc,
        ["c0", "c1", "c2", "c3"],
        bad,
        layout.to_dict(),
        prov,
    )


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
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_description: str | None = None,
    data_desc: str | None = None,
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
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Recorded in the provenance.
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`BarycentricResult`; the vertices are hit exactly.
    """
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    anchors = [_anchor(prob, p, layout) for p in (p0, p1, p2)]
    al = _coords(np.linspace(0, 1, n) if alphas is None else alphas, "alphas")
    be = _coords(np.linspace(0, 1, n) if betas is None else betas, "betas")
    A, Bt = (g.reshape(-1) for g in np.meshgrid(al, be))
    coefs = np.stack([1 - A, A * Bt, A * (1 - Bt)], 1)
    res, bad, prov = _evaluate(prob, anchors, coefs, opts, {"kind": "barycentric"})
    return BarycentricResult(
        al,
        be,
        _grid(res, len(be), len(al)),
        _np(torch.stack([v for v, _ in anchors])),
        ["p0", "p1", "p2"],
        bad,
        layout.to_dict(),
        prov,
    )


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
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_description: str | None = None,
    data_desc: str | None = None,
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
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Recorded in the provenance.
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`PlaneResult` with ``(ny, nx)`` grids.
    """
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    c = _anchor(prob, center, layout)
    dirs = [_anchor(prob, d, layout)[0] for d in (d1, d2)]
    xs = np.linspace(-1, 1, 21) if xs is None else xs
    x, y = _coords(xs, "xs"), _coords(xs if ys is None else ys, "ys")
    X, Y = (g.reshape(-1) for g in np.meshgrid(x, y))
    coefs = np.stack([np.ones_like(X), X, Y], 1)
    res, bad, prov = _evaluate(
        prob, [c, (dirs[0], None), (dirs[1], None)], coefs, opts, {"kind": "plane", **(extra or {})}
    )
    return PlaneResult(
        x,
        y,
        _grid(res, len(y), len(x)),
        _np(c[0]),
        _np(torch.stack(dirs)),
        np.zeros((1, 2)),
        ["center"],
        bad,
        layout.to_dict(),
        prov,
    )


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
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int = 0,
    data_description: str | None = None,
    data_desc: str | None = None,
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
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Seed of the directions (recorded in the provenance).
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`PlaneResult` whose provenance records seed and direction options.

    Raises:
        ValueError: If ``params`` selects no parameter.
    """
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    model = prob.model
    c = _anchor(prob, model if center is None else center, layout)[0]
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
        **opts.engine(),
        seed=seed,
        data_description=opts.data_description,
    )


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
    loss_fn: Any = None,
    metrics: Metrics = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = "auto",
    bn_mode: BNMode | str | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_description: str | None = None,
    data_desc: str | None = None,
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
        loss_fn: Shorthand only: the loss (name, ``(outputs, targets)`` or a closure); default cross-entropy
            for integer targets, MSE otherwise.
        metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or callables; default loss and, for class
            targets, accuracy.
        batch_size: Micro-batch size of the evaluation (default: chosen by the engine).
        chunk_size: Points evaluated together (default: chosen by the memory budget).
        memory_budget: Bytes (or ``"512MB"``) for point chunks and activations; default 1 GiB (a
            :class:`~landscape.problem.Problem` has its own budget for the data it keeps).
        strategy: ``"auto"``, ``"loop"``, ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"``; default the problem's (``"eval"``).
        progress: Show a progress bar.
        seed: Recorded in the provenance.
        data_description: The data's description in the provenance (default: the problem's).
        data_desc: Deprecated name of ``data_description``.

    Returns:
        A :class:`PlaneResult`; ``anchor_coords`` holds the three models' coordinates.

    Raises:
        ValueError: On an unknown frame or collinear models.
    """
    if frame not in ("anchors", "orthogonal"):
        raise ValueError(f"unknown frame {frame!r}; valid: ['anchors', 'orthogonal']")
    opts = _Opts(metrics, batch_size, chunk_size, memory_budget, strategy, bn_mode, progress, seed, data_description)
    prob = _problem(problem, data, loss_fn, opts, data_desc)
    layout = prob.layout
    anchors = [_anchor(prob, p, layout) for p in (p0, p1, p2)]
    v0, v1, v2 = (v.double() for v, _ in anchors)
    e1, e2 = v1 - v0, v2 - v0
    a = float(e2 @ e1 / (e1 @ e1)) if float(e1.norm()) > 0 else 0.0
    b = float((e2 - a * e1).norm() / e1.norm()) if float(e1.norm()) > 0 else 0.0
    if not b > 1e-12:
        raise ValueError("the three models are collinear (or coincide); they do not span a plane")
    if frame == "anchors":
        a, b = 0.0, 1.0  # d2 = p2 - p0
    xs = np.linspace(-0.5, 1.5, 21) if xs is None else xs
    x, y = _coords(xs, "xs"), _coords(xs if ys is None else ys, "ys")
    X, Y = (g.reshape(-1) for g in np.meshgrid(x, y))
    # center + X d1 + Y d2 with d1 = p1 - p0, d2 = (p2 - p0 - a d1) / b, written over the three models
    # (exact 0/1 coefficients at the anchors of the "anchors" frame).
    coefs = np.stack([1 - X - (1 - a) * Y / b, X - a * Y / b, Y / b], 1)
    res, bad, prov = _evaluate(prob, anchors, coefs, opts, {"kind": "plane_through", "frame": frame})
    dtype = anchors[0][0].dtype
    dirs = torch.stack([e1, (e2 - a * e1) / b]).to(dtype)
    where = np.array([[0.0, 0.0], [1.0, 0.0], [a, b]])
    return PlaneResult(
        x,
        y,
        _grid(res, len(y), len(x)),
        _np(anchors[0][0]),
        _np(dirs),
        where,
        ["p0", "p1", "p2"],
        bad,
        layout.to_dict(),
        prov,
    )
