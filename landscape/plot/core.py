"""Renderers for slices: curves, contours, heatmaps, surfaces, trajectory overlays, triangles and squares.

Renderers only draw. They take result objects (:class:`~landscape.analyze.slice_results.LineResult`,
:class:`~landscape.analyze.slice_results.PlaneResult`, :class:`~landscape.analyze.slice_results.BilinearResult`,
:class:`~landscape.analyze.slice_results.BarycentricResult`, :class:`~landscape.analyze.distance.DistanceResult`,
:class:`~landscape.analyze.paths.ProjectedPath`), never models, and never evaluate a loss. Every function has a
``backend`` argument: ``"plotly"`` (default) returns a ``plotly.graph_objects.Figure`` and draws into
``fig`` when one is given; ``"matplotlib"`` returns a ``matplotlib.figure.Figure`` and draws into ``ax``
when one is given (the same functions live in :mod:`landscape.plot._mpl`).

Non-finite values (a diverged grid point's NaN or inf loss) are masked, never drawn as huge numbers:
plotly traces hold NaN there (a gap), matplotlib artists hold masked arrays. With ``log=True`` 1-D
plots use a log y axis and 2-D plots draw ``log10`` of the metric; values that are not positive are
masked too.

:func:`save_html` writes a self-contained page (plotly.js embedded, no network needed);
:func:`save_png` writes a matplotlib figure.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landscape._options import parse_option
from landscape.analyze.curves import CurveResult
from landscape.analyze.distance import DistanceResult
from landscape.analyze.paths import ProjectedPath
from landscape.analyze.slice_results import BarycentricResult, BilinearResult, LineResult, PlaneResult
from landscape.curvature.training import CurvatureTrace

__all__ = [
    "Backend",
    "XAxis",
    "Style",
    "plot_line",
    "plot_distance",
    "plot_contour",
    "plot_heatmap",
    "plot_surface",
    "plot_trajectory",
    "plot_bilinear",
    "plot_barycentric",
    "plot_sharpness",
    "plot_curve_vs_line",
    "plot_plane_curve",
    "save_html",
    "save_png",
]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
COLORSCALE = "Viridis"  # plotly; matplotlib uses "viridis"
PATH_SCALE = "Reds"  # marker colour of a projected path: the share of its displacement off the plane
TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # BarycentricResult.triangle_xy vertices


class Backend(str, enum.Enum):
    """Plotting library of a renderer."""

    PLOTLY = "plotly"
    MATPLOTLIB = "matplotlib"


class XAxis(str, enum.Enum):
    """Horizontal axis of a 1-D plot: the result's own coordinate, alpha, or Euclidean distance from ``a``."""

    AUTO = "auto"
    ALPHA = "alpha"
    DISTANCE = "distance"


class Style(str, enum.Enum):
    """How a 2-D grid is drawn."""

    CONTOUR = "contour"
    FILLED = "filled"
    HEATMAP = "heatmap"
    SURFACE = "surface"


# =========================================================================== data preparation (shared)
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


def _scalar_metric(metrics: dict[str, np.ndarray], metric: str, what: str) -> np.ndarray:
    if metric not in metrics:
        raise KeyError(f"{what} has no metric {metric!r}; it has {sorted(metrics)}")
    if metric == "outputs":
        raise ValueError("'outputs' are per-sample arrays, not a plottable scalar; plot 'loss' or 'accuracy'")
    return np.asarray(metrics[metric])


@dataclasses.dataclass(frozen=True)
class Curve:
    """One 1-D curve ready to draw (NaN = masked).

    Attributes:
        x: ``(n,)`` positions.
        y: ``(n,)`` metric values.
        acc: ``(n,)`` accuracy on the secondary axis, or ``None``.
        label: Legend entry.
        marks: Positions of the anchor points on the x axis.
        mark_labels: Their names.
    """

    x: np.ndarray
    y: np.ndarray
    acc: np.ndarray | None
    label: str
    marks: np.ndarray
    mark_labels: list[str]


def results_of(results: Any, cls: type | tuple[type, ...], what: str) -> list[Any]:
    """One result or a sequence of them as a list, all of type ``cls`` (else a ``TypeError`` naming ``what``)."""
    items = [results] if isinstance(results, cls) else list(results) if isinstance(results, Sequence) else None
    if not items or not all(isinstance(r, cls) for r in items):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{what} takes a {names} or a sequence of them, got {type(results).__name__}")
    return items


def labels_of(items: Sequence[Any], labels: Sequence[str] | None) -> list[str]:
    """Legend entries: ``labels``, else each result's ``label``, else ``"run i"``."""
    if labels is None:
        return [getattr(r, "label", "") or f"run {i}" for i, r in enumerate(items)]
    if len(labels) != len(items):
        raise ValueError(f"got {len(labels)} labels for {len(items)} results")
    return list(labels)


def line_curves(
    results: LineResult | Sequence[LineResult],
    labels: Sequence[str] | None,
    metric: str,
    accuracy: bool,
    x: XAxis | str,
    log: bool,
) -> tuple[list[Curve], str]:
    """Curves of line results and the x-axis title (shared by both backends).

    ``x="distance"`` turns alphas into Euclidean distances from the first anchor (``alpha * ||b - a||``);
    ``x="alpha"`` turns distances of an absolute-distance line into fractions of ``||ref - theta_min||``.

    Raises:
        TypeError: If ``results`` are not line results.
        KeyError: If a result lacks the metric (or the accuracy).
    """
    items = results_of(results, LineResult, "plot_line")
    labs = labels_of(items, labels)
    xa = parse_option(XAxis, x, "x axis")
    names = {r.coord_name for r in items}
    if xa is XAxis.AUTO and len(names) > 1:
        raise ValueError("the results mix alpha and distance coordinates; pass x='alpha' or x='distance'")
    want = next(iter(names)) if xa is XAxis.AUTO else xa.value
    curves = []
    for r, lab in zip(items, labs):
        y = masked(_scalar_metric(r.metrics, metric, f"line {lab!r}"), log=log)
        acc = None
        if accuracy:
            if "accuracy" not in r.metrics:
                raise KeyError(f"line {lab!r} has no accuracy; compute it with metrics=('loss', 'accuracy')")
            acc = masked(r.metrics["accuracy"])
        coords, marks = np.asarray(r.coords, np.float64), np.asarray(r.anchor_coords, np.float64)
        if want != r.coord_name:
            a = np.asarray(r.anchors, np.float64)
            length = float(np.linalg.norm(a[1] - a[0])) if r.coord_name == "alpha" else float(marks[-1])
            if not length > 0:
                raise ValueError(f"line {lab!r} has coinciding anchors: alpha and distance are not interchangeable")
            scale = length if want == "distance" else 1.0 / length
            coords, marks = coords * scale, marks * scale
        curves.append(Curve(coords, y, acc, lab, marks, list(r.anchor_labels)))
    return curves, ("alpha" if want == "alpha" else "distance from the first point")


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
    z = masked(_scalar_metric(result.metrics, metric, type(result).__name__), clip=clip, log10=log)
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
    labs = list(labels) if labels is not None else [f"run {int(r)}" for r in ids]
    if len(labs) != len(ids):
        raise ValueError(f"got {len(labels or [])} labels for {len(ids)} runs")
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


def triangle_of(result: BarycentricResult, metric: str, log: bool, clip: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(m, n, 2)`` (equilateral layout, :meth:`BarycentricResult.triangle_xy`) and values ``(m, n)``.

    Raises:
        TypeError: If ``result`` is not a :class:`BarycentricResult`.
    """
    if not isinstance(result, BarycentricResult):
        raise TypeError(f"expected a BarycentricResult, got {type(result).__name__}")
    z = masked(_scalar_metric(result.metrics, metric, "BarycentricResult"), clip=clip, log10=log)
    return result.triangle_xy(), z


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
    out = np.where(inside, interp(np.stack([b, a], -1)), np.nan)
    return x, y, out


def title_or(title: str | None, default: str) -> str:
    """``title`` unless it is ``None`` (``""`` means no title)."""
    return default if title is None else title


# =========================================================================== plotly helpers
def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _new_fig(fig: Any) -> Any:
    return fig if fig is not None else _go().Figure(layout={"template": "plotly_white"})


def _grid_traces(g: Grid, style: Style, levels: int, colorbar: dict[str, Any] | None = None) -> list[Any]:
    """Plotly traces of a grid (NaN gaps stay gaps)."""
    go = _go()
    if style in (Style.CONTOUR, Style.FILLED) and min(g.z.shape) < 2:
        raise ValueError(f"contours need a grid of at least 2 x 2 points, got {g.z.shape}; use a heatmap")
    lo, hi = g.zrange()
    cb = {"title": {"text": g.zlabel}, **(colorbar or {})}
    if style is Style.HEATMAP:
        return [
            go.Heatmap(
                x=g.x,
                y=g.y,
                z=g.z,
                zmin=lo,
                zmax=hi,
                colorscale=COLORSCALE,
                colorbar=cb,
                hoverongaps=False,
                name=g.zlabel,
            )
        ]
    if style is Style.SURFACE:
        return [go.Surface(x=g.x, y=g.y, z=g.z, cmin=lo, cmax=hi, colorscale=COLORSCALE, colorbar=cb, name=g.zlabel)]
    size = (hi - lo) / max(1, int(levels))
    contours = {
        "start": lo,
        "end": hi,
        "size": size,
        "coloring": "fill" if style is Style.FILLED else "lines",
        "showlabels": style is Style.CONTOUR,
    }
    return [
        go.Contour(
            x=g.x,
            y=g.y,
            z=g.z,
            zmin=lo,
            zmax=hi,
            contours=contours,
            colorscale=COLORSCALE,
            colorbar=cb,
            connectgaps=False,
            line={"width": 1},
            name=g.zlabel,
        )
    ]


def _point_trace(g: Grid) -> list[Any]:
    """Markers and labels of the anchor points (none for an empty ``g.points``)."""
    if not len(g.points):
        return []
    go = _go()
    return [
        go.Scatter(
            x=g.points[:, 0],
            y=g.points[:, 1],
            mode="markers+text",
            text=g.point_labels,
            textposition="top center",
            marker={"symbol": "x", "size": 9, "color": "black"},
            name="anchors",
            showlegend=False,
        )
    ]


def _draw_grid(g: Grid, style: Style, levels: int, title: str, fig: Any, square: bool = False) -> Any:
    fig = _new_fig(fig)
    for tr in _grid_traces(g, style, levels) + ([] if style is Style.SURFACE else _point_trace(g)):
        fig.add_trace(tr)
    if style is Style.SURFACE:
        fig.update_layout(
            title=title, scene={"xaxis_title": g.xlabel, "yaxis_title": g.ylabel, "zaxis_title": g.zlabel}
        )
    else:
        fig.update_layout(title=title, xaxis_title=g.xlabel, yaxis_title=g.ylabel)
        if square:
            fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def _secondary_axis(fig: Any, title: str) -> None:
    """A right-hand y axis ``y2`` over [0, 1] for rates (accuracy, disagreement), with its own ticks."""
    fig.update_layout(
        yaxis2={
            "title": {"text": title},
            "overlaying": "y",
            "side": "right",
            "tickmode": "auto",
            "range": [0, 1.02],
            "showgrid": False,
        },
        legend={"x": 1.08},
    )


def _mpl(name: str, **kw: Any) -> Any:
    from landscape.plot import _mpl as plot_mpl

    return getattr(plot_mpl, name)(**kw)


# =========================================================================== 1-D
def plot_line(
    results: LineResult | Sequence[LineResult],
    labels: Sequence[str] | None = None,
    *,
    metric: str = "loss",
    accuracy: bool = False,
    x: XAxis | str = XAxis.AUTO,
    log: bool = False,
    anchors: bool = True,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """A metric along one or several lines (interpolations or absolute-distance lines), overlaid.

    Args:
        results: One :class:`LineResult` or several (e.g. runs of different optimizers).
        labels: Legend entries (default: each result's ``label``, else ``"run i"``).
        metric: Metric to draw (``"loss"``, ``"accuracy"`` or a custom scalar metric).
        accuracy: Also draw the accuracy, dotted, on a secondary y axis.
        x: ``"auto"`` (the results' own coordinate), ``"alpha"`` or ``"distance"`` (Euclidean distance from
            the first anchor, ``alpha * ||b - a||``).
        log: Log y axis (values that are not positive are masked).
        anchors: Mark the anchors' positions (alpha 0 and 1, or the minimum and the reference).
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``results`` are not line results.
        KeyError: If a result lacks ``metric`` (or the accuracy).
        ValueError: On unknown options or mixed coordinates with ``x="auto"``.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_line",
            results=results,
            labels=labels,
            metric=metric,
            accuracy=accuracy,
            x=x,
            log=log,
            anchors=anchors,
            title=title,
            ax=ax,
        )
    curves, xlabel = line_curves(results, labels, metric, accuracy, x, log)
    go = _go()
    fig = _new_fig(fig)
    base = len(fig.data)
    marks: dict[float, str] = {}
    for i, c in enumerate(curves):
        color = COLORS[(base + i) % len(COLORS)]
        fig.add_trace(
            go.Scatter(
                x=c.x,
                y=c.y,
                mode="lines+markers",
                name=c.label,
                line={"color": color},
                marker={"size": 4},
                connectgaps=False,
            )
        )
        if c.acc is not None:
            fig.add_trace(
                go.Scatter(
                    x=c.x,
                    y=c.acc,
                    mode="lines",
                    name=f"{c.label} accuracy",
                    yaxis="y2",
                    line={"color": color, "dash": "dot"},
                    connectgaps=False,
                )
            )
        marks.update({float(m): lab for m, lab in zip(c.marks, c.mark_labels)})
    if anchors:
        for m, lab in marks.items():
            fig.add_vline(x=m, line_dash="dot", line_width=1, line_color="gray", annotation_text=lab)
    fig.update_layout(title=title_or(title, f"{metric} along the line"), xaxis_title=xlabel, yaxis_title=metric)
    if log:
        fig.update_layout(yaxis_type="log")
    if any(c.acc is not None for c in curves):
        _secondary_axis(fig, "accuracy")
    return fig


def plot_distance(
    results: DistanceResult | Sequence[DistanceResult],
    labels: Sequence[str] | None = None,
    *,
    disagreement: bool = True,
    log: bool = False,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """Functional distance from the first endpoint along interpolation paths (Im et al. Table 1).

    Args:
        results: One :class:`DistanceResult` or several.
        labels: Legend entries (default: each result's ``label``, else ``"run i"``).
        disagreement: Also draw the label disagreement rate, dotted, on a secondary y axis.
        log: Log axis for the RMS distance (zeros, e.g. at alpha 0, are masked).
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_distance", results=results, labels=labels, disagreement=disagreement, log=log, title=title, ax=ax
        )
    items = results_of(results, DistanceResult, "plot_distance")
    labs = labels_of(items, labels)
    go = _go()
    fig = _new_fig(fig)
    base = len(fig.data)
    for i, (r, lab) in enumerate(zip(items, labs)):
        color = COLORS[(base + i) % len(COLORS)]
        fig.add_trace(
            go.Scatter(
                x=r.alphas,
                y=masked(r.rms, log=log),
                mode="lines+markers",
                name=f"{lab} RMS distance ({r.output})",
                line={"color": color},
            )
        )
        if disagreement:
            fig.add_trace(
                go.Scatter(
                    x=r.alphas,
                    y=masked(r.disagreement),
                    mode="lines",
                    yaxis="y2",
                    name=f"{lab} label disagreement",
                    line={"color": color, "dash": "dot"},
                )
            )
    fig.update_layout(
        title=title_or(title, "functional distance from the first network"),
        xaxis_title="alpha",
        yaxis_title="RMS output distance",
    )
    if log:
        fig.update_layout(yaxis_type="log")
    if disagreement:
        _secondary_axis(fig, "label disagreement")
    return fig


# =========================================================================== 2-D
def _plot_grid(
    name: str,
    result: PlaneResult | BilinearResult,
    style: Style,
    metric: str,
    log: bool,
    levels: int,
    clip: float | None,
    anchors: bool,
    backend: Backend | str,
    title: str | None,
    fig: Any,
    ax: Any,
) -> Any:
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        kw = {"metric": metric, "log": log, "clip": clip, "anchors": anchors, "title": title, "ax": ax}
        if style is not Style.HEATMAP:
            kw["levels"] = levels
        if name == "plot_contour":
            kw["filled"] = style is Style.FILLED
        return _mpl(name, result=result, **kw)
    g = grid_of(result, metric, log, clip)
    if not anchors:
        g = dataclasses.replace(g, points=np.zeros((0, 2)), point_labels=[])
    return _draw_grid(g, style, levels, title_or(title, f"{g.zlabel} on the plane"), fig)


def plot_contour(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    filled: bool = False,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    anchors: bool = True,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
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
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: On a result without a rectangular grid.
        KeyError: If the result lacks ``metric``.
    """
    style = Style.FILLED if filled else Style.CONTOUR
    return _plot_grid("plot_contour", result, style, metric, log, levels, clip, anchors, backend, title, fig, ax)


def plot_heatmap(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    log: bool = False,
    clip: float | None = None,
    anchors: bool = True,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """A heatmap of a metric over a plane (one cell per grid point, masked cells left blank).

    Args:
        result: A :class:`PlaneResult` or :class:`BilinearResult`.
        metric: Metric to draw.
        log: Draw ``log10`` of the metric.
        clip: Values above are drawn at ``clip``.
        anchors: Mark the anchor points.
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    return _plot_grid("plot_heatmap", result, Style.HEATMAP, metric, log, 0, clip, anchors, backend, title, fig, ax)


def plot_surface(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    log: bool = False,
    clip: float | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """A 3-D surface of a metric over a plane (Li et al. Fig. 1); masked points leave holes.

    Args:
        result: A :class:`PlaneResult` or :class:`BilinearResult`.
        metric: Metric to draw (the height).
        log: Height ``log10`` of the metric.
        clip: Heights above are drawn at ``clip``.
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib 3-D axes (``projection="3d"``) to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl("plot_surface", result=result, metric=metric, log=log, clip=clip, title=title, ax=ax)
    g = grid_of(result, metric, log, clip)
    return _draw_grid(g, Style.SURFACE, 0, title_or(title, f"{g.zlabel} surface"), fig)


def plot_bilinear(
    result: BilinearResult,
    *,
    metric: str = "loss",
    style: Style | str = Style.FILLED,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """The square layout of Im et al.'s bilinear slice (A.1): ``(alpha, beta)`` in the unit square, corners labelled.

    Args:
        result: A :class:`BilinearResult`.
        metric: Metric to draw.
        style: ``"filled"``, ``"contour"``, ``"heatmap"`` or ``"surface"``.
        log: Draw ``log10`` of the metric.
        levels: Number of contour levels.
        clip: Values above are drawn at ``clip``.
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    st = parse_option(Style, style, "style")
    if not isinstance(result, BilinearResult):
        raise TypeError(f"plot_bilinear takes a BilinearResult, got {type(result).__name__}")
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_bilinear",
            result=result,
            metric=metric,
            style=st,
            log=log,
            levels=levels,
            clip=clip,
            title=title,
            ax=ax,
        )
    g = grid_of(result, metric, log, clip)
    return _draw_grid(g, st, levels, title_or(title, f"{g.zlabel}: bilinear interpolation"), fig, square=True)


def plot_barycentric(
    result: BarycentricResult,
    *,
    metric: str = "loss",
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
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
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_barycentric", result=result, metric=metric, log=log, levels=levels, clip=clip, title=title, ax=ax
        )
    xy, z = triangle_of(result, metric, log, clip)
    go = _go()
    fig = _new_fig(fig)
    ok = np.isfinite(z)
    A, B = np.meshgrid(result.alphas, result.betas)
    zlabel = f"log10 {metric}" if log else metric
    lo, hi = finite_range(z)
    shade = triangle_raster(result.alphas, result.betas, z)
    if shade is not None:
        gx, gy, gz = shade
        fig.add_trace(
            go.Contour(
                x=gx,
                y=gy,
                z=gz,
                zmin=lo,
                zmax=hi,
                colorscale=COLORSCALE,
                connectgaps=False,
                contours={"start": lo, "end": hi, "size": (hi - lo) / max(1, int(levels)), "coloring": "fill"},
                line={"width": 0.5},
                colorbar={"title": {"text": zlabel}},
                hoverinfo="skip",
                name=zlabel,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=xy[..., 0][ok],
            y=xy[..., 1][ok],
            mode="markers",
            name="grid points",
            marker={
                "color": z[ok],
                "colorscale": COLORSCALE,
                "cmin": lo,
                "cmax": hi,
                "size": 4,
                "line": {"color": "white", "width": 0.5},
                "showscale": shade is None,
                "colorbar": {"title": {"text": zlabel}},
            },
            customdata=np.stack([A[ok], B[ok]], 1),
            hovertemplate="alpha %{customdata[0]:.3g}, beta %{customdata[1]:.3g}<br>" + zlabel + " %{marker.color:.5g}"
            "<extra></extra>",
        )
    )
    if (~ok).any():
        fig.add_trace(
            go.Scatter(
                x=xy[..., 0][~ok],
                y=xy[..., 1][~ok],
                mode="markers",
                name="non-finite",
                marker={"symbol": "x", "color": "gray", "size": 6},
            )
        )
    tri = np.vstack([TRIANGLE, TRIANGLE[:1]])
    names = list(result.anchor_labels)[:3] if len(result.anchor_labels) >= 3 else ["p0", "p1", "p2"]
    fig.add_trace(
        go.Scatter(
            x=tri[:, 0],
            y=tri[:, 1],
            mode="lines",
            line={"color": "black", "width": 1},
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=TRIANGLE[:, 0],
            y=TRIANGLE[:, 1] + np.array([-0.04, -0.04, 0.04]),
            mode="text",
            text=names,
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    fig.update_layout(
        title=title_or(title, f"{zlabel}: barycentric interpolation"),
        legend={"orientation": "h", "y": 0.0, "yanchor": "top"},
    )
    return fig


# =========================================================================== trajectory overlay
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
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
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
        path: The :class:`~landscape.analyze.paths.ProjectedPath` (``TrajectoryPCA.project``).
        labels: Run names (default ``"run i"``).
        metric: Metric of the plane to draw.
        style: ``"filled"``, ``"contour"`` or ``"heatmap"``.
        log: ``log10`` colours for the plane and log axis for the loss panel.
        levels: Number of contour levels.
        clip: Plane values above are drawn at ``clip``.
        panel: Add the true-vs-plane loss panel (when ``fig``/``ax`` is not given and the path has losses).
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend; no second panel).
        ax: Existing matplotlib axes to draw into (matplotlib backend; no second panel).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        ValueError: On a 3-D ``style``.
    """
    st = parse_option(Style, style, "style")
    if st is Style.SURFACE:
        raise ValueError("a trajectory is overlaid on a 2-D style: 'filled', 'contour' or 'heatmap'")
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_trajectory",
            plane=plane,
            path=path,
            labels=labels,
            metric=metric,
            style=st,
            log=log,
            levels=levels,
            clip=clip,
            panel=panel,
            title=title,
            ax=ax,
        )
    runs, tname = path_runs(path, labels)
    go = _go()
    second = panel and fig is None and path.true_loss is not None
    if second:
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.6, 0.4],
            horizontal_spacing=0.16,
            subplot_titles=["path on the PCA plane", "loss: snapshot vs its projection"],
        )
        fig.update_layout(template="plotly_white")
    fig = _new_fig(fig)
    rc = {"row": 1, "col": 1} if second else {}
    evr = np.asarray(path.explained_variance_ratio, np.float64)
    xl, yl = (f"PC{k + 1} ({100 * evr[k]:.1f}% of the variance)" if len(evr) > k else f"PC{k + 1}" for k in range(2))
    if plane is not None:
        g = grid_of(plane, metric, log, clip)
        cb = {"x": 0.515, "xanchor": "left", "len": 0.85, "thickness": 14} if second else None
        for tr in _grid_traces(g, st, levels, cb) + _point_trace(g):
            fig.add_trace(tr, **rc)
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        symbols = ["circle"] * len(r.xy)
        symbols[0], symbols[-1] = "square", "star"
        marker = {
            "color": r.ratio,
            "colorscale": PATH_SCALE,
            "cmin": 0.0,
            "cmax": 1.0,
            "size": 8,
            "symbol": symbols,
            "line": {"color": color, "width": 1.5},
            "showscale": i == 0,
        }
        if i == 0:
            marker["colorbar"] = {
                "title": {"text": "off-plane share", "side": "right"},
                "orientation": "h",
                "y": -0.2,
                "yanchor": "top",
                "len": 0.3,
                "x": 0.2,
                "thickness": 10,
            }
        trace = go.Scatter(
            x=r.xy[:, 0],
            y=r.xy[:, 1],
            mode="lines+markers",
            name=r.label,
            marker=marker,
            line={"color": color, "width": 2},
            hovertext=r.hover,
            hoverinfo="text",
        )
        fig.add_trace(trace, **rc)
    fig.update_xaxes(title_text=xl, **rc)
    fig.update_yaxes(title_text=yl, **rc)
    if second:
        for i, r in enumerate(runs):
            color = COLORS[i % len(COLORS)]
            true = go.Scatter(
                x=r.t,
                y=r.true_loss,
                mode="lines+markers",
                name=f"{r.label}: loss",
                line={"color": color},
                hovertext=r.hover,
                hoverinfo="text",
            )
            fig.add_trace(true, row=1, col=2)
            fig.add_trace(
                go.Scatter(
                    x=r.t,
                    y=r.plane_loss,
                    mode="lines",
                    name=f"{r.label}: loss on the plane",
                    line={"color": color, "dash": "dash"},
                ),
                row=1,
                col=2,
            )
        fig.update_xaxes(title_text=tname, row=1, col=2)
        fig.update_yaxes(title_text="loss", type="log" if log else "linear", row=1, col=2)
    fig.update_layout(title=title_or(title, "training path on the PCA plane"), margin={"b": 120})
    if fig.layout.height is None:
        fig.update_layout(height=560)
    return fig


# =========================================================================== curvature over training
@dataclasses.dataclass(frozen=True)
class SharpnessCurve:
    """One run's curvature against step, ready to draw (NaN = masked).

    Attributes:
        steps: ``(T,)`` optimizer steps.
        values: ``(T,)`` the drawn eigenvalue (or layer eigenvalue).
        threshold: ``(T,)`` ``2 / lr`` (all NaN when the learning rate is unknown).
        label: Legend entry.
    """

    steps: np.ndarray
    values: np.ndarray
    threshold: np.ndarray
    label: str


def sharpness_curves(
    traces: CurvatureTrace | Sequence[CurvatureTrace],
    labels: Sequence[str] | None,
    eigenvalue: int,
    layer: str | None,
    log: bool,
) -> tuple[list[SharpnessCurve], str]:
    """Curves of :func:`plot_sharpness` and the y-axis label (shared by both backends)."""
    items = results_of(traces, CurvatureTrace, "plot_sharpness")
    names = labels_of(items, labels)
    curves = []
    for tr, name in zip(items, names):
        if layer is not None:
            if layer not in tr.layer_names:
                raise KeyError(f"{name}: no layer {layer!r}; the trace has {tr.layer_names} (per_layer=True?)")
            v = tr.layer_eigenvalues[:, tr.layer_names.index(layer)]
        else:
            if not 0 <= eigenvalue < tr.eigenvalues.shape[1]:
                raise ValueError(f"{name}: eigenvalue {eigenvalue} of a trace with k={tr.eigenvalues.shape[1]}")
            v = tr.eigenvalues[:, eigenvalue]
        curves.append(SharpnessCurve(np.asarray(tr.steps, np.float64), masked(v, log), masked(tr.threshold, log), name))
    what = "top eigenvalue" if eigenvalue == 0 else f"eigenvalue {eigenvalue + 1}"
    return curves, f"{what} of the Hessian" + (f" (layer {layer})" if layer is not None else "")


def plot_sharpness(
    traces: CurvatureTrace | Sequence[CurvatureTrace],
    labels: Sequence[str] | None = None,
    *,
    eigenvalue: int = 0,
    layer: str | None = None,
    threshold: bool = True,
    log: bool = False,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """Sharpness (a Hessian eigenvalue) against training step, with the ``2 / lr`` line of each run.

    The edge-of-stability picture of Cohen et al. 2021 (Fig. 1): gradient descent on a quadratic diverges
    once the top eigenvalue exceeds ``2 / lr``; the dashed line of each run's colour marks it (a step
    function under a learning-rate schedule).

    Args:
        traces: One :class:`~landscape.curvature.training.CurvatureTrace` or several (e.g. one per learning rate).
        labels: Legend entries (default: each trace's ``label``, else ``"run i"``).
        eigenvalue: Which of the top-k to draw (0 = ``lambda_max``).
        layer: Draw this layer's top eigenvalue instead (a trace computed with ``per_layer=True``).
        threshold: Draw ``2 / lr`` where the learning rate is known.
        log: Log y axis.
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``traces`` are not curvature traces.
        KeyError: On a layer the traces do not have.
        ValueError: On an eigenvalue index beyond ``k`` or unknown options.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_sharpness",
            traces=traces,
            labels=labels,
            eigenvalue=eigenvalue,
            layer=layer,
            threshold=threshold,
            log=log,
            title=title,
            ax=ax,
        )
    curves, ylabel = sharpness_curves(traces, labels, eigenvalue, layer, log)
    go = _go()
    fig = _new_fig(fig)
    base = len(fig.data)
    for i, c in enumerate(curves):
        color = COLORS[(base + i) % len(COLORS)]
        fig.add_trace(
            go.Scatter(
                x=c.steps,
                y=c.values,
                mode="lines+markers",
                name=c.label,
                line={"color": color},
                marker={"size": 4},
                connectgaps=False,
            )
        )
        if threshold and np.isfinite(c.threshold).any():
            fig.add_trace(
                go.Scatter(
                    x=c.steps,
                    y=c.threshold,
                    mode="lines",
                    name=f"{c.label}: 2/lr",
                    line={"color": color, "dash": "dash", "shape": "hv"},
                )
            )
    fig.update_layout(title=title_or(title, "sharpness during training"), xaxis_title="step", yaxis_title=ylabel)
    if log:
        fig.update_layout(yaxis_type="log")
    return fig


# =========================================================================== files
# =========================================================================== mode-connecting curves
def curve_vs_line_curves(
    line: LineResult | None, curves: CurveResult | Sequence[CurveResult], metric: str, labels: Sequence[str] | None
) -> list[Curve]:
    """Curves of a straight line and mode-connecting curves over ``t`` in ``[0, 1]`` (shared by both backends).

    Raises:
        TypeError: If ``curves`` are not curve results or ``line`` is not a line result.
    """
    items = results_of(curves, CurveResult, "plot_curve_vs_line")
    labs = labels_of(items, labels)
    out = []
    if line is not None:
        if not isinstance(line, LineResult) or line.coord_name != "alpha":
            raise TypeError("line must be a LineResult over alpha (landscape.line between the two endpoints)")
        y = masked(_scalar_metric(line.metrics, metric, "line"))
        out.append(Curve(np.asarray(line.coords, np.float64), y, None, line.label or "line", np.zeros(0), []))
    for r, lab in zip(items, labs):
        y = masked(_scalar_metric(r.metrics, metric, f"curve {lab!r}"))
        out.append(Curve(np.asarray(r.ts, np.float64), y, None, lab if labels or r.label else r.shape, np.zeros(0), []))
    return out


def plane_curve_xy(plane: PlaneResult, curve: CurveResult) -> tuple[np.ndarray, np.ndarray]:
    """Plane coordinates of the curve's evaluated points ``(n, 2)`` and of its control points ``(3, 2)``."""
    if not isinstance(plane, PlaneResult) or not isinstance(curve, CurveResult):
        raise TypeError("plot_plane_curve takes a PlaneResult and a CurveResult")
    return plane.project(curve.points()), plane.project(np.asarray(curve.control, np.float64))


def plot_curve_vs_line(
    line: LineResult | None,
    curves: CurveResult | Sequence[CurveResult],
    labels: Sequence[str] | None = None,
    *,
    metric: str = "loss",
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """A metric along the straight line and along mode-connecting curves, over ``t`` (alpha) in ``[0, 1]``.

    Args:
        line: A :class:`LineResult` between the curve's endpoints (or ``None``).
        curves: One :class:`~landscape.analyze.curves.CurveResult` or several.
        labels: Legend entries of the curves (default: each result's label, else its shape).
        metric: Metric to draw.
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into.
        ax: Existing matplotlib axes to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl("plot_curve_vs_line", line=line, curves=curves, labels=labels, metric=metric, title=title, ax=ax)
    go = _go()
    fig = _new_fig(fig)
    base = len(fig.data)
    for i, c in enumerate(curve_vs_line_curves(line, curves, metric, labels)):
        dash = "dash" if (line is not None and i == 0) else "solid"
        fig.add_trace(
            go.Scatter(
                x=c.x,
                y=c.y,
                mode="lines+markers",
                name=c.label,
                marker={"size": 4},
                line={"color": COLORS[(base + i) % len(COLORS)], "dash": dash},
                connectgaps=False,
            )
        )
    fig.update_layout(
        title=title_or(title, f"{metric}: straight line vs curve"), xaxis_title="t (alpha)", yaxis_title=metric
    )
    return fig


def plot_plane_curve(
    plane: PlaneResult,
    curve: CurveResult,
    *,
    metric: str = "loss",
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
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
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into.
        ax: Existing matplotlib axes to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    if parse_option(Backend, backend, "backend") is Backend.MATPLOTLIB:
        return _mpl(
            "plot_plane_curve",
            plane=plane,
            curve=curve,
            metric=metric,
            log=log,
            levels=levels,
            clip=clip,
            title=title,
            ax=ax,
        )
    xy, ctrl = plane_curve_xy(plane, curve)
    g = grid_of(plane, metric, log, clip)
    g = dataclasses.replace(g, points=np.zeros((0, 2)), point_labels=[])
    fig = _draw_grid(
        g,
        Style.FILLED,
        levels,
        title_or(title, f"{g.zlabel}: plane through the endpoints and the bend"),
        fig,
        square=True,
    )
    go = _go()
    fig.add_trace(
        go.Scatter(
            x=ctrl[[0, 2], 0], y=ctrl[[0, 2], 1], mode="lines", name="line", line={"color": "white", "dash": "dash"}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xy[:, 0], y=xy[:, 1], mode="lines", name=curve.label or curve.shape, line={"color": "#d62728", "width": 3}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ctrl[:, 0],
            y=ctrl[:, 1],
            mode="markers+text",
            text=["w0", "bend", "w1"],
            textposition="top center",
            marker={"symbol": "x", "size": 9, "color": "black"},
            showlegend=False,
        )
    )
    return fig


def save_html(fig: Any, path: str | os.PathLike[str], *, plotlyjs: bool | str = True) -> Path:
    """Write a plotly figure as an HTML page.

    Args:
        fig: A ``plotly.graph_objects.Figure``.
        path: Output file (parents are created).
        plotlyjs: plotly's ``include_plotlyjs``: ``True`` embeds plotly.js (self-contained, offline, ~4.7 MB);
            ``"directory"`` writes one ``plotly.min.js`` beside the pages and shares it (offline);
            ``"cdn"`` loads it from the CDN (viewing needs a network).

    Returns:
        The path written.

    Raises:
        TypeError: If ``fig`` is not a plotly figure.
    """
    if not hasattr(fig, "write_html"):
        raise TypeError(f"save_html takes a plotly figure, got {type(fig).__name__}; use save_png for matplotlib")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(
        path, include_plotlyjs=plotlyjs, include_mathjax=False, full_html=True, config={"displaylogo": False}
    )
    return path


def save_png(fig: Any, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write a matplotlib figure as PNG (see :func:`landscape.plot._mpl.save_png`)."""
    from landscape.plot._mpl import save_png as _save

    return _save(fig, path, dpi=dpi)
