"""Plain data for the renderers: curves, grids, triangles, paths and panels, with no plotting library imported.

The public plot functions turn results into these objects; each backend (:mod:`landscape.plot._plotly`,
:mod:`landscape.plot._matplotlib`) draws them with the same small set of functions (``lines``, ``grid``,
``triangle``, ``path``, ``plane_curve``, ``panels``). Non-finite values are NaN here (masked); the backends
turn NaN into gaps (plotly) or masked arrays (matplotlib).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from landscape.analyze.curves import CurveResult
from landscape.analyze.paths import ProjectedPath
from landscape.analyze.slice_results import BarycentricResult, BilinearResult, PlaneResult

__all__ = [
    "Frame",
    "Line",
    "Panel",
    "PanelGrid",
    "Grid",
    "PathRun",
    "Paths",
    "Triangle",
    "TRIANGLE",
    "masked",
    "scalar_metric",
    "results_of",
    "given_labels",
    "labels_of",
    "finite_range",
    "grid_of",
    "path_runs",
    "triangle_of",
    "triangle_raster",
    "plane_curve_xy",
]

TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # BarycentricResult.triangle_xy vertices


@dataclasses.dataclass(frozen=True)
class Line:
    """One curve ready to draw, with its style (NaN in ``y`` = masked, a gap).

    Attributes:
        x: ``(n,)`` positions.
        y: ``(n,)`` values.
        label: Legend entry (``""``: none).
        color: Colour ``"#rrggbb"``; ``None`` takes the palette colour of ``slot``, counted after the curves
            already on the figure or axes drawn into.
        slot: Palette slot when ``color`` is ``None``.
        dash: A :data:`~landscape.plot.style.LINESTYLES` name.
        markers: Draw markers too.
        marker_size: Plotly marker size (``None``: plotly's default; matplotlib draws size 3, or 0.75 of this size
            for points, ``connect=False``).
        width: Line width in plotly pixels (matplotlib draws 0.75 of it); ``None``: the library's default.
        secondary: Draw on the secondary (right-hand) y axis, in ``[0, 1]``.
        companion: Shares the colour slot of another curve (an accuracy, a threshold): not counted when the
            next drawing picks colours.
        step: ``"post"`` or ``"mid"``: a step function (each value holds until the next / around its ``x``).
        spread: ``(n,)`` half-width of a band drawn around the curve (``y +- spread``), or ``None``.
        band_alpha: Opacity of the band.
        dots: Positions along ``x`` marked with a dot on the curve.
        hover: ``(n,)`` hover texts (plotly).
        connect: Join the points with a line; ``False`` draws markers only (points that are no curve: samples,
            separate measurements).
    """

    x: np.ndarray
    y: np.ndarray
    label: str = ""
    color: str | None = None
    slot: int = 0
    dash: str = "solid"
    markers: bool = False
    marker_size: float | None = None
    width: float | None = None
    secondary: bool = False
    companion: bool = False
    step: str | None = None
    spread: np.ndarray | None = None
    band_alpha: float = 0.2
    dots: tuple[float, ...] = ()
    hover: Sequence[str] | None = None
    connect: bool = True

    def __post_init__(self) -> None:
        n = np.asarray(self.y).size  # np.size of a torch tensor is its size method: go through an array
        for name in ("x", "spread"):
            v = getattr(self, name)
            m = None if v is None else np.asarray(v).size
            if m is not None and m != n:
                raise ValueError(f"Line {self.label!r}: {name} has {m} values but y has {n}; one per point")


@dataclasses.dataclass(frozen=True)
class Frame:
    """Titles, scale and reference lines of one plot of curves.

    Attributes:
        title: Figure title (``None``: leave the figure's as it is).
        xlabel: Title of the x axis (``None``: leave it).
        ylabel: Title of the y axis (``None``: leave it).
        log: Log y axis.
        secondary: Title of the secondary y axis in ``[0, 1]`` (the axis is drawn when a curve is ``secondary``;
            ``None``: no title).
        vlines: ``(x, label)`` dotted grey vertical reference lines (``""``: no label).
        size: Size of a new matplotlib figure (inches).
        xticks: ``(x, label)`` named ticks in place of the numbers (one measurement per position), the x axis
            spanning half a step beyond the first and last; ``()``: numbers.
    """

    title: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    log: bool = False
    secondary: str | None = None
    vlines: Sequence[tuple[float, str]] = ()
    size: tuple[float, float] = (6.4, 4.2)
    xticks: Sequence[tuple[float, str]] = ()


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel of :func:`landscape.plot.small_multiples`.

    Attributes:
        title: Panel title.
        lines: The curves.
        xlabel: Title of the x axis (``None``: the figure's ``xlabel``).
        ylabel: Title of the y axis (``None``: the figure's ``ylabel`` in the first column).
        logy: Log y axis (values that are not positive are masked).
        vlines: x positions of dotted grey vertical reference lines.
        hlines: ``(y, label, color, dash)`` horizontal reference lines across the panel.
        stars: ``(x, y, label, color)`` highlighted points, drawn as stars.
    """

    title: str
    lines: Sequence[Line] = ()
    xlabel: str | None = None
    ylabel: str | None = None
    logy: bool = False
    vlines: Sequence[float] = ()
    hlines: Sequence[tuple[float, str, str, str]] = ()
    stars: Sequence[tuple[float, float, str, str]] = ()


@dataclasses.dataclass(frozen=True)
class PanelGrid:
    """Panels laid out row by row (:func:`landscape.plot.small_multiples`).

    Attributes:
        panels: The panels.
        cols: Panels per row.
        title: Figure title.
        sharey: One y range for all panels.
        size: Size of one matplotlib panel (inches).
        legend: Where matplotlib puts the legend: ``"figure"`` (one, below), ``"axes"`` (in each panel) or
            ``"first"`` (in the first panel); plotly has one legend.
    """

    panels: Sequence[Panel]
    cols: int
    title: str = ""
    sharey: bool = False
    size: tuple[float, float] = (3.2, 2.5)
    legend: str = "figure"


def masked(values: np.ndarray, log: bool = False, clip: float | None = None, log10: bool = False) -> np.ndarray:
    """Float64 copy with NaN wherever a value cannot be drawn.

    Args:
        values: Any shape.
        log: Also mask values that are not positive (they have no logarithm).
        clip: Values above are set to ``clip`` (Li et al.'s ``vmax``), after masking.
        log10: Return ``log10`` of the values (2-D plots on a log scale).

    Returns:
        Array of the same shape; NaN marks masked entries.
    """
    v = np.array(values, dtype=np.float64)
    bad = ~np.isfinite(v)
    if log or log10:
        bad |= ~(v > 0)
    v[bad] = np.nan
    if clip is not None:
        v = np.where(v > clip, clip, v)
    if log10:
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.log10(v)
    return v


def scalar_metric(metrics: dict[str, np.ndarray], metric: str, what: str) -> np.ndarray:
    if metric not in metrics:
        raise KeyError(f"{what} has no metric {metric!r}; it has {sorted(metrics)}")
    if metric == "outputs":
        raise ValueError("'outputs' are per-sample arrays, not a plottable scalar; plot 'loss' or 'accuracy'")
    return np.asarray(metrics[metric])


def results_of(results: Any, cls: type | tuple[type, ...], what: str) -> list[Any]:
    """One result or a sequence of them as a list, all of type ``cls``.

    Raises:
        TypeError: Naming ``what``, if ``results`` is not a ``cls`` or a sequence of them.
        ValueError: Naming ``what``, if the sequence is empty.
    """
    items = [results] if isinstance(results, cls) else list(results) if isinstance(results, Sequence) else None
    names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
    if items == []:
        raise ValueError(f"{what} got an empty {type(results).__name__}: give at least one {names}")
    if items is None or not all(isinstance(r, cls) for r in items):
        raise TypeError(f"{what} takes a {names} or a sequence of them, got {type(results).__name__}")
    return items


def given_labels(labels: Sequence[str] | None, n: int, one: str, many: str) -> list[str] | None:
    """``labels`` as a list of ``n`` legend entries, one per ``one`` (``None`` stays ``None``: the caller's defaults).

    Raises:
        TypeError: If ``labels`` is one string (it would be taken letter by letter).
        ValueError: ``got <k> labels for <n> <many>``.
    """
    if labels is None:
        return None
    if isinstance(labels, str):
        raise TypeError(
            f"labels must be a list of strings, one per {one}; got the string {labels!r} (for one, pass [{labels!r}])"
        )
    labs = list(labels)
    if len(labs) != n:
        raise ValueError(f"got {len(labs)} labels for {n} {many}")
    return labs


def labels_of(items: Sequence[Any], labels: Sequence[str] | None) -> list[str]:
    """Legend entries: ``labels``, else each result's ``label``, else ``"run i"``."""
    labs = given_labels(labels, len(items), "result", "results")
    return labs if labs is not None else [getattr(r, "label", "") or f"run {i}" for i, r in enumerate(items)]


@dataclasses.dataclass(frozen=True)
class Grid:
    """A 2-D grid ready to draw: ``z[i, j]`` at ``(x[j], y[i])`` (NaN = masked).

    Attributes:
        x: ``(nx,)`` column coordinates.
        y: ``(ny,)`` row coordinates.
        z: ``(ny, nx)`` values (``log10`` of the metric when drawn on a log scale).
        xlabel: Title of the x axis.
        ylabel: Title of the y axis.
        zlabel: Title of the colour bar / z axis.
        points: ``(k, 2)`` anchor coordinates to mark.
        point_labels: Their names.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    xlabel: str
    ylabel: str
    zlabel: str
    points: np.ndarray
    point_labels: list[str]

    def zrange(self) -> tuple[float, float]:
        """Finite minimum and maximum of ``z`` (see :func:`finite_range`)."""
        return finite_range(self.z)

    def levels(self, n: int) -> np.ndarray:
        """``n + 1`` evenly spaced contour levels over the finite range (as both backends use)."""
        lo, hi = self.zrange()
        return np.linspace(lo, hi, int(n) + 1)

    def without_points(self) -> Grid:
        """The same grid with no anchor points to mark."""
        return dataclasses.replace(self, points=np.zeros((0, 2)), point_labels=[])


def finite_range(z: np.ndarray) -> tuple[float, float]:
    """Finite minimum and maximum of ``z``; widened by 1/2 when equal, ``(0, 1)`` when nothing is finite."""
    fin = z[np.isfinite(z)]
    if fin.size == 0:
        return 0.0, 1.0
    lo, hi = float(fin.min()), float(fin.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def grid_of(result: PlaneResult | BilinearResult, metric: str, log: bool, clip: float | None) -> Grid:
    """The drawable grid of a plane or bilinear result.

    Raises:
        TypeError: For other results (a barycentric grid is not rectangular: use ``plot_barycentric``).
    """
    if isinstance(result, PlaneResult):
        x, y, pts, labs = result.xs, result.ys, result.anchor_coords, result.anchor_labels
        extra = result.provenance.extra
        kind = str(extra.get("directions") or extra.get("kind", ""))
        if extra.get("normalization") not in (None, "none"):
            kind += f", {extra['normalization']}-normalized"
        xl, yl = (f"d1 ({kind})", f"d2 ({kind})") if kind else ("d1", "d2")
    elif isinstance(result, BilinearResult):
        x, y, pts, labs = result.alphas, result.betas, result.corner_coords, result.anchor_labels
        xl, yl = "alpha", "beta"
    elif isinstance(result, BarycentricResult):
        raise TypeError("a BarycentricResult is a triangle, not a rectangular grid: use plot_barycentric")
    else:
        raise TypeError(f"expected a PlaneResult or BilinearResult, got {type(result).__name__}")
    z = masked(scalar_metric(result.metrics, metric, type(result).__name__), clip=clip, log10=log)
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return Grid(
        np.asarray(x, np.float64),
        np.asarray(y, np.float64),
        z,
        xl,
        yl,
        f"log10 {metric}" if log else metric,
        pts,
        list(labs)[: len(pts)],
    )


@dataclasses.dataclass(frozen=True)
class PathRun:
    """One run of a projected path (NaN = not computed).

    Attributes:
        xy: ``(T, 2)`` plane coordinates.
        t: ``(T,)`` epochs when all are known, else snapshot numbers within the run.
        off: ``(T,)`` off-plane distance.
        ratio: ``(T,)`` off-plane share of the displacement.
        true_loss: ``(T,)`` loss at the snapshot.
        plane_loss: ``(T,)`` loss at its projection on the plane.
        steps: ``(T,)`` optimizer steps.
        label: Run name.
        hover: ``(T,)`` hover texts.
    """

    xy: np.ndarray
    t: np.ndarray
    off: np.ndarray
    ratio: np.ndarray
    true_loss: np.ndarray
    plane_loss: np.ndarray
    steps: np.ndarray
    label: str
    hover: list[str]


@dataclasses.dataclass(frozen=True)
class Paths:
    """Projected runs ready to draw, over the plane they were projected on (or alone).

    Attributes:
        runs: The runs.
        grid: The plane's grid, or ``None``.
        xlabel: Title of the x axis (the first principal component).
        ylabel: Title of the y axis.
        tname: Title of the time axis of the loss panel (``"epoch"`` or ``"snapshot"``).
        log: Log axis for the loss panel.
    """

    runs: list[PathRun]
    grid: Grid | None
    xlabel: str
    ylabel: str
    tname: str
    log: bool


def path_runs(path: ProjectedPath, labels: Sequence[str] | None) -> tuple[list[PathRun], str]:
    """Split a projected path into runs with hover texts; also the title of the time axis.

    Raises:
        TypeError: If ``path`` is not a :class:`ProjectedPath`.
    """
    if not isinstance(path, ProjectedPath):
        raise TypeError(f"expected a ProjectedPath (TrajectoryPCA.project), got {type(path).__name__}")
    T = len(path.coordinates)
    nan = np.full(T, np.nan)
    true = nan if path.true_loss is None else masked(path.true_loss)
    plane = nan if path.plane_loss is None else masked(path.plane_loss)
    ids = np.unique(path.run)
    labs = given_labels(labels, len(ids), "run", "runs") or [f"run {int(r)}" for r in ids]
    epochs = np.asarray(path.epochs, np.float64)
    use_epochs = bool(np.isfinite(epochs).all())
    runs = []
    for r, lab in zip(ids, labs):
        sel = path.run == r
        xy, off, ratio = path.coordinates[sel], path.off_plane[sel], path.off_plane_ratio[sel]
        steps = np.asarray(path.steps)[sel]
        t = epochs[sel] if use_epochs else np.arange(int(sel.sum()), dtype=np.float64)
        hover = []
        for k in range(len(xy)):
            h = (
                f"{lab}<br>step {int(steps[k])}"
                + (f", epoch {t[k]:.3g}" if use_epochs else "")
                + f"<br>(x, y) = ({xy[k, 0]:.4g}, {xy[k, 1]:.4g})"
                + f"<br>off-plane distance {off[k]:.4g} ({100 * ratio[k]:.1f}% of the displacement)"
            )
            if path.true_loss is not None:
                h += f"<br>loss {true[sel][k]:.5g}; on the plane {plane[sel][k]:.5g}"
            hover.append(h)
        runs.append(PathRun(xy, t, off, ratio, true[sel], plane[sel], steps, lab, hover))
    return runs, ("epoch" if use_epochs else "snapshot")


def triangle_of(result: BarycentricResult, metric: str, log: bool, clip: float | None) -> Triangle:
    """The drawable triangle of a barycentric result.

    Raises:
        TypeError: If ``result`` is not a :class:`BarycentricResult`.
    """
    if not isinstance(result, BarycentricResult):
        raise TypeError(f"expected a BarycentricResult, got {type(result).__name__}")
    z = masked(scalar_metric(result.metrics, metric, "BarycentricResult"), clip=clip, log10=log)
    names = list(result.anchor_labels)[:3] if len(result.anchor_labels) >= 3 else ["p0", "p1", "p2"]
    return Triangle(
        result.triangle_xy(),
        z,
        np.asarray(result.alphas, np.float64),
        np.asarray(result.betas, np.float64),
        f"log10 {metric}" if log else metric,
        names,
    )


def triangle_raster(
    alphas: np.ndarray, betas: np.ndarray, z: np.ndarray, size: int = 161
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Resample a barycentric grid onto a regular ``(x, y)`` raster of the triangle, for filled contours.

    The layout ``(x, y) = alpha (beta v1 + (1 - beta) v2)`` inverts in closed form,
    ``alpha beta = x - y / sqrt(3)``, ``alpha (1 - beta) = 2 y / sqrt(3)``; values are interpolated
    bilinearly in ``(alpha, beta)`` between the grid's own points, so a cell with a masked corner stays
    masked (NaN), and the raster is NaN outside the triangle and the grid's range.

    Args:
        alphas: ``(n,)`` grid alphas.
        betas: ``(m,)`` grid betas.
        z: ``(m, n)`` values (NaN = masked).
        size: Raster points per side.

    Returns:
        ``(x (size,), y (size,), z (size, size))``, or ``None`` for a grid with fewer than 2 x 2 points.
    """
    from scipy.interpolate import RegularGridInterpolator

    if len(alphas) < 2 or len(betas) < 2:
        return None
    ia, ib = np.argsort(alphas), np.argsort(betas)
    interp = RegularGridInterpolator(
        (np.asarray(betas)[ib], np.asarray(alphas)[ia]), z[np.ix_(ib, ia)], bounds_error=False, fill_value=np.nan
    )
    x = np.linspace(0.0, 1.0, size)
    y = np.linspace(0.0, np.sqrt(3) / 2, size)
    X, Y = np.meshgrid(x, y)
    u, w = X - Y / np.sqrt(3), 2 * Y / np.sqrt(3)
    a = u + w
    with np.errstate(invalid="ignore", divide="ignore"):
        b = np.where(a > 0, u / np.where(a > 0, a, 1.0), 0.0)
    inside = (u >= -1e-12) & (w >= -1e-12)
    # Rounding puts points of the edges just outside [0, 1] (beta -6e-17 on the edge from vertex 0 to 2, alpha 1 + 1e-16
    # on the edge from 1 to 2), where the interpolator gives NaN: snap them back to the closed triangle.
    b = np.clip(b, 0.0, 1.0)
    a = np.where(inside & (a > 1) & (a <= 1 + 1e-12), 1.0, a)
    out = np.where(inside, interp(np.stack([b, a], -1)), np.nan)
    return x, y, out


@dataclasses.dataclass(frozen=True)
class Triangle:
    """A barycentric grid ready to draw (NaN = masked).

    Attributes:
        xy: ``(m, n, 2)`` positions in the equilateral layout (:meth:`BarycentricResult.triangle_xy`).
        z: ``(m, n)`` values (``log10`` of the metric on a log scale).
        alphas: ``(n,)`` grid alphas.
        betas: ``(m,)`` grid betas.
        zlabel: Title of the colour bar.
        names: The three vertices' names.
    """

    xy: np.ndarray
    z: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    zlabel: str
    names: list[str]

    def raster(self, size: int = 161) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The values resampled on a regular raster of the triangle (see :func:`triangle_raster`)."""
        return triangle_raster(self.alphas, self.betas, self.z, size)

    def cells(self) -> np.ndarray:
        """``(k, 3)`` vertex indices into the flattened grid: two triangles per cell, zero-area ones dropped.

        Zero-area triangles occur where a whole column is one vertex (``alpha = 0``).
        """
        m, n = self.z.shape
        idx = np.arange(m * n).reshape(m, n)
        a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
        tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
        px, py = self.xy[..., 0].ravel(), self.xy[..., 1].ravel()
        area = 0.5 * np.abs(
            (px[tris[:, 1]] - px[tris[:, 0]]) * (py[tris[:, 2]] - py[tris[:, 0]])
            - (px[tris[:, 2]] - px[tris[:, 0]]) * (py[tris[:, 1]] - py[tris[:, 0]])
        )
        return tris[area > 1e-12]


def plane_curve_xy(plane: PlaneResult, curve: CurveResult) -> tuple[np.ndarray, np.ndarray]:
    """Plane coordinates of the curve's evaluated points ``(n, 2)`` and of its control points ``(3, 2)``."""
    if not isinstance(plane, PlaneResult) or not isinstance(curve, CurveResult):
        raise TypeError("plot_plane_curve takes a PlaneResult and a CurveResult")
    return plane.project(curve.points()), plane.project(np.asarray(curve.control, np.float64))
