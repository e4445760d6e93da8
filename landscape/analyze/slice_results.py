"""The results of the slices: a line, a plane, Im et al.'s bilinear square and barycentric triangle.

Each is a frozen :class:`~landscape.results.Result` that carries its coordinates, anchors, layout and
provenance, and saves without pickle. The functions that compute them are in :mod:`landscape.analyze.surface`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch import Tensor

from landscape.results import Labeling, Provenance, Result, register_result

__all__ = ["LineResult", "PlaneResult", "BilinearResult", "BarycentricResult"]


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


@dataclasses.dataclass(frozen=True)
class _AlphaBetaGrid(Result):
    """What Im et al.'s two grids share: ``(alpha, beta)`` axes, metrics ``[i, j]`` at ``(alpha_j, beta_i)``.

    Attributes:
        alphas: ``(n,)``.
        betas: ``(m,)``.
        metrics: Name -> ``(m, n)`` grid.
    """

    _coords = {"alphas": "alpha", "betas": "beta"}
    _table = ("beta", "alpha")
    _thumb = ("metrics.loss", "image")

    alphas: np.ndarray
    betas: np.ndarray
    metrics: dict[str, np.ndarray]


@register_result
@dataclasses.dataclass(frozen=True)
class BilinearResult(_AlphaBetaGrid):
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
    _labels = {"anchor_labels": "corner"}

    corners: np.ndarray
    corner_coords: np.ndarray
    anchor_labels: list[str] = dataclasses.field(default_factory=list)
    n_nonfinite: int = 0
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


@register_result
@dataclasses.dataclass(frozen=True)
class BarycentricResult(_AlphaBetaGrid):
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
    _labels = {"anchor_labels": "vertex"}

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
