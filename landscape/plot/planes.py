"""Slices over two coordinates: contours, heatmaps, surfaces, squares, triangles, curves and paths on a plane.

The bilinear square and the barycentric triangle are Im et al.'s layouts; a mode-connecting curve is drawn on
the plane through its endpoints and bend; a projected training path is drawn over the PCA plane.

Each function prepares a :class:`~landscape.plot._prepare.Grid`, :class:`~landscape.plot._prepare.Triangle`
or :class:`~landscape.plot._prepare.PathRun` list (plain data) and hands it to the backend. ``z[i, j]`` is drawn
at ``(xs[j], ys[i])``; non-finite values are masked (left blank), and ``log=True`` draws ``log10`` of the metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape._options import check_int, parse_option
from landscape.analyze.curves import CurveResult
from landscape.analyze.paths import ProjectedPath
from landscape.analyze.slice_results import BarycentricResult, BilinearResult, PlaneResult
from landscape.plot._prepare import Grid, Paths, grid_of, path_runs, plane_curve_xy, triangle_of
from landscape.plot.style import Backend, Canvas, Style, canvas_of, dispatch, shows_canvas

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "plot_contour",
    "plot_heatmap",
    "plot_surface",
    "plot_bilinear",
    "plot_barycentric",
    "plot_triangle_cell",
    "plot_plane_curve",
    "plot_trajectory",
]


def _levels(levels: Any) -> int:
    """The number of contour levels, checked (0 or -3 failed inside matplotlib and drew silently in plotly)."""
    return check_int(levels, "levels", note=" (contour levels)")


def _draw_grid(
    function: str, grid: Grid, style: Style, levels: int, canvas: Mapping[str, Any], title: str, square: bool = False
) -> Any:
    """Draw ``grid`` in ``style``; ``title`` is the plot's own title, a template of the grid's label ``{z}``."""
    draw, target, drawn_title = canvas_of(function, canvas, title.format(z=grid.zlabel))
    contours = style in (Style.CONTOUR, Style.FILLED)  # heatmaps and surfaces have no levels (0 is passed)
    return draw.grid(target, grid, style, _levels(levels) if contours else levels, title=drawn_title, square=square)


@shows_canvas
def plot_contour(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    filled: bool = False,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    anchors: bool = True,
    **canvas: Unpack[Canvas],
) -> Any:
    """Contour lines (or filled contours) of a metric over a plane, as in Li et al. Fig. 1 and 6.

    ``z[i, j]`` is drawn at ``(xs[j], ys[i])``; anchor points (the centre, the models of
    ``plane_through``, the bilinear corners) are marked with their labels.

    Args:
        result: A :class:`PlaneResult` or :class:`BilinearResult`.
        metric: Metric to draw.
        filled: Filled contours instead of lines.
        log: Draw ``log10`` of the metric (non-positive values masked).
        levels: Number of evenly spaced levels between the finite minimum and maximum.
        clip: Values above are drawn at ``clip`` (Li et al.'s ``vmax``).
        anchors: Mark the anchor points.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: On a result without a rectangular grid.
        KeyError: If the result lacks ``metric``.
    """
    style = Style.FILLED if filled else Style.CONTOUR
    g = grid_of(result, metric, log, clip)
    g = g if anchors else g.without_points()
    return _draw_grid("plot_contour", g, style, levels, canvas, "{z} on the plane")


@shows_canvas
def plot_heatmap(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    log: bool = False,
    clip: float | None = None,
    anchors: bool = True,
    **canvas: Unpack[Canvas],
) -> Any:
    """A heatmap of a metric over a plane (one cell per grid point, masked cells left blank).

    Args:
        result: A :class:`PlaneResult` or :class:`BilinearResult`.
        metric: Metric to draw.
        log: Draw ``log10`` of the metric.
        clip: Values above are drawn at ``clip``.
        anchors: Mark the anchor points.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    g = grid_of(result, metric, log, clip)
    g = g if anchors else g.without_points()
    return _draw_grid("plot_heatmap", g, Style.HEATMAP, 0, canvas, "{z} on the plane")


@shows_canvas
def plot_surface(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    log: bool = False,
    clip: float | None = None,
    **canvas: Unpack[Canvas],
) -> Any:
    """A 3-D surface of a metric over a plane (Li et al. Fig. 1); masked points leave holes.

    Args:
        result: A :class:`PlaneResult` or :class:`BilinearResult`.
        metric: Metric to draw (the height).
        log: Height ``log10`` of the metric.
        clip: Heights above are drawn at ``clip``.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib 3-D axes,
            ``projection="3d"``) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    return _draw_grid("plot_surface", grid_of(result, metric, log, clip), Style.SURFACE, 0, canvas, "{z} surface")


@shows_canvas
def plot_bilinear(
    result: BilinearResult,
    *,
    metric: str = "loss",
    style: Style | str = Style.FILLED,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    **canvas: Unpack[Canvas],
) -> Any:
    """The square layout of Im et al.'s bilinear slice (A.1): ``(alpha, beta)`` in the unit square, corners labelled.

    Args:
        result: A :class:`BilinearResult`.
        metric: Metric to draw.
        style: ``"filled"``, ``"contour"``, ``"heatmap"`` or ``"surface"``.
        log: Draw ``log10`` of the metric.
        levels: Number of contour levels.
        clip: Values above are drawn at ``clip``.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    st = parse_option(Style, style, "style")
    if not isinstance(result, BilinearResult):
        raise TypeError(f"plot_bilinear takes a BilinearResult, got {type(result).__name__}")
    g = grid_of(result, metric, log, clip)
    return _draw_grid("plot_bilinear", g, st, levels, canvas, "{z}: bilinear interpolation", square=True)


@shows_canvas
def plot_barycentric(
    result: BarycentricResult,
    *,
    metric: str = "loss",
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    **canvas: Unpack[Canvas],
) -> Any:
    """The triangle layout of Im et al.'s barycentric slice (A.1): vertex 0, 1, 2 at the corners.

    Grid point ``(alpha_j, beta_i)`` is drawn at :meth:`BarycentricResult.triangle_xy` ``[i, j]``
    (vertex 0 at ``(0, 0)``, 1 at ``(1, 0)``, 2 at ``(1/2, sqrt(3)/2)``). Plotly draws the grid points as
    markers (masked points as grey crosses) over filled contours of the values interpolated bilinearly in
    ``(alpha, beta)`` (:func:`triangle_raster`); matplotlib draws a Gouraud-shaded triangulation of the grid
    with contour lines. Either way a cell touching a masked point is left blank.

    Args:
        result: A :class:`BarycentricResult`.
        metric: Metric to draw.
        log: Draw ``log10`` of the metric.
        levels: Number of contour lines (matplotlib).
        clip: Values above are drawn at ``clip``.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    t = triangle_of(result, metric, log, clip)
    draw, target, title = canvas_of("plot_barycentric", canvas, f"{t.zlabel}: barycentric interpolation")
    return draw.triangle(target, t, _levels(levels), title=title)


def plot_triangle_cell(
    result: BarycentricResult,
    *,
    zrange: tuple[float, float],
    metric: str = "loss",
    log: bool = False,
    names: Sequence[str] | None = None,
    colorbar: bool = False,
    backend: Backend | str = Backend.PLOTLY,
    fig: Any = None,
    ax: Any = None,
    row: int | None = None,
    col: int | None = None,
) -> Any:
    """One cell of a grid of barycentric triangles (Im et al. Table 1): the shaded triangle and its outline.

    Plotly draws a heatmap of the values interpolated on a raster of the triangle (:func:`triangle_raster`),
    matplotlib :func:`plot_barycentric`'s Gouraud-shaded triangulation; nothing else is drawn (no markers,
    contour lines, vertex names or title), and the colours span ``zrange``, which the cells of one grid share.

    Args:
        result: A :class:`BarycentricResult`.
        zrange: ``(low, high)`` of the colour scale (of ``log10`` of the metric with ``log``).
        metric: Metric to draw.
        log: Draw ``log10`` of the metric.
        names: The three vertices' names, for the hover text (default: the result's anchor labels).
        colorbar: Show this cell's colour bar (one cell of the grid shows it).
        backend: ``"plotly"`` or ``"matplotlib"``.
        fig: The plotly figure to draw into (default: a new figure).
        ax: The matplotlib axes of the cell (default: a new figure).
        row: The cell's subplot row in ``fig``, from 1 (plotly; ``None``: a figure without subplots).
        col: The cell's subplot column in ``fig``, from 1.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        ValueError: If ``zrange`` is not two finite numbers, low first; ``names`` not three names; ``row``
            without ``col`` (or the other way round), or either with matplotlib (its cell is ``ax``).
    """
    t = triangle_of(result, metric, log, None)
    if names is not None:
        if isinstance(names, str) or len(names) != 3:
            raise ValueError(f"names= names the triangle's three vertices, got {names!r}")
        t = dataclasses.replace(t, names=[str(n) for n in names])
    lo_hi = _colour_range(zrange)
    draw, target = dispatch(backend, fig, ax)
    if (row is None) != (col is None):
        raise ValueError(f"row= and col= place the cell in a plotly subplot together, got row={row!r}, col={col!r}")
    if row is not None and parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        raise ValueError("row= and col= place the cell in a plotly figure's subplots; matplotlib draws into ax=")
    return draw.triangle_cell(target, t, lo_hi, colorbar=colorbar, row=row, col=col)


def _colour_range(zrange: Any) -> tuple[float, float]:
    """``zrange`` as ``(low, high)``: two finite numbers, ``low <= high``."""
    try:
        lo, hi = (float(v) for v in zrange)
    except (TypeError, ValueError):
        raise ValueError(f"zrange= is the colour scale's (low, high), two numbers; got {zrange!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"zrange= must be two finite numbers, low first; got {zrange!r}")
    return lo, hi


def overlay_mismatch(plane: PlaneResult, path: ProjectedPath) -> str | None:
    """Why ``path``'s coordinates do not apply to ``plane``, or ``None`` when they may.

    The path's ``(x, y)`` are coordinates along its PCA's two orthonormal directions, so the plane must be spanned
    by them: a plane recorded as along other directions (``random_plane``), a PCA plane of another fit (by the
    explained variance ratios, when the plane records them) and any plane whose two directions are not orthonormal
    cannot be the one. (An orthonormal plane of other directions cannot be told apart.)
    """
    extra = plane.provenance.extra
    kind = extra.get("directions")
    if kind is not None and kind != "pca":
        return f"it is a plane along {kind} directions, not the PCA's"
    evr, mine = extra.get("explained_variance_ratio"), np.asarray(path.explained_variance_ratio, np.float64)
    if evr is not None and (len(evr) < 2 or not np.allclose(evr[:2], mine[:2], rtol=1e-6, atol=1e-12)):
        return (
            f"the plane and the path come from different PCA fits (explained variance ratios "
            f"{[round(float(v), 5) for v in evr[:2]]} against {[round(float(v), 5) for v in mine[:2]]})"
        )
    d = np.asarray(plane.directions, np.float64).reshape(2, -1)
    if not np.allclose(d @ d.T, np.eye(2), atol=1e-3):  # PCA directions are orthonormal (stored in float32)
        return "the plane's two directions are not orthonormal, so it is not a PCA plane"
    return None


@shows_canvas
def plot_trajectory(
    plane: PlaneResult | None,
    path: ProjectedPath,
    *,
    labels: Sequence[str] | None = None,
    metric: str = "loss",
    style: Style | str = Style.FILLED,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    panel: bool = True,
    **canvas: Unpack[Canvas],
) -> Any:
    """A projected training path over the PCA plane's loss surface (Li et al. Fig. 9; Lipton Fig. 1).

    The path's coordinates are drawn as they are: the plane must be the PCA plane the path was
    projected on, i.e. computed with ``center, d1, d2 = pca.plane_directions()`` of the same fitted
    :class:`~landscape.analyze.pca.TrajectoryPCA` (then the path's ``(x, y)`` are the plane's ``(xs, ys)``
    coordinates). Markers are coloured by the share of each snapshot's displacement that lies off the
    plane; hover texts give step, epoch, off-plane distance, and the snapshot's true loss beside the
    loss at its projection. With ``panel`` (and losses in the path) a second panel draws those two
    losses along the path: where they differ, the plane misrepresents the path.

    Args:
        plane: The PCA-plane :class:`PlaneResult`, or ``None`` to draw the path alone.
        path: The :class:`~landscape.analyze.pca.ProjectedPath` (``TrajectoryPCA.project``). Several runs are
            one path: fit and project them together (``pca.project([traj_a, traj_b])``); its ``run`` tells
            them apart and ``labels`` names them.
        labels: Run names (default ``"run i"``).
        metric: Metric of the plane to draw.
        style: ``"filled"``, ``"contour"`` or ``"heatmap"``.
        log: ``log10`` colours for the plane and log axis for the loss panel.
        levels: Number of contour levels.
        clip: Plane values above are drawn at ``clip``.
        panel: Add the true-vs-plane loss panel (when ``fig``/``ax`` is not given and the path has losses).
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        ValueError: On a 3-D ``style``.
    """
    st = parse_option(Style, style, "style")
    if st is Style.SURFACE:
        raise ValueError("a trajectory is overlaid on a 2-D style: 'filled', 'contour' or 'heatmap'")
    why = None if plane is None else overlay_mismatch(plane, path)
    if why is not None:
        raise ValueError(
            f"plot_trajectory: the plane does not fit the path ({why}); the path's coordinates are in its own PCA "
            "plane and would be drawn at meaningless positions. Compute the plane of the same fit: center, d1, "
            "d2 = pca.plane_directions(), then plane(problem, center, d1, d2, ...) (or pass plane=None to draw the "
            "path alone)"
        )
    runs, tname = path_runs(path, labels)
    evr = np.asarray(path.explained_variance_ratio, np.float64)
    # about the mean the ratio is a share of the variance; about a snapshot or a vector (Li et al. centre on the last
    # point), of the squared distance of the snapshots from that centre (TrajectoryPCA.explained_variance_ratio_)
    share = "the variance" if path.center == "mean" else "the squared distance from the centre"
    xl, yl = (f"PC{k + 1} ({100 * evr[k]:.1f}% of {share})" if len(evr) > k else f"PC{k + 1}" for k in range(2))
    g = None if plane is None else grid_of(plane, metric, log, clip)
    draw, target, title = canvas_of("plot_trajectory", canvas, "training path on the PCA plane")
    paths = Paths(runs, g, xl, yl, tname, log)
    panel = panel and path.true_loss is not None
    return draw.path(target, paths, st, _levels(levels), panel=panel, title=title)


@shows_canvas
def plot_plane_curve(
    plane: PlaneResult,
    curve: CurveResult,
    *,
    metric: str = "loss",
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    **canvas: Unpack[Canvas],
) -> Any:
    """The plane through the endpoints and the bend, with the curve and the straight line on it (Garipov Fig. 1).

    ``plane`` is :func:`landscape.plane_through` of ``(w0, w1, theta)``; the curve's points are projected
    onto it (a quadratic Bezier curve lies in that plane exactly).

    Args:
        plane: The evaluated plane.
        curve: The evaluated curve.
        metric: Metric of the contours.
        log: Contours of ``log10`` of the metric.
        levels: Number of contour levels.
        clip: Values above are drawn at ``clip``.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    xy, ctrl = plane_curve_xy(plane, curve)
    g = grid_of(plane, metric, log, clip).without_points()
    draw, target, title = canvas_of("plot_plane_curve", canvas, f"{g.zlabel}: plane through the endpoints and the bend")
    return draw.plane_curve(target, g, _levels(levels), xy, ctrl, curve.label or curve.shape, title=title)
