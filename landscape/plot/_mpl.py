"""Matplotlib (static) renderers: the same functions as :mod:`landscape.plot.core`, drawing into axes.

Each function takes the same arguments as its :mod:`landscape.plot.core` twin minus ``backend`` and ``fig``,
draws into ``ax`` when one is given (else into a new ``matplotlib.figure.Figure``, made without
``pyplot`` so no global state is kept) and returns the figure. Masked (non-finite) values are passed
to matplotlib as masked arrays: lines break, cells and triangles are left blank, surfaces get holes.
Data preparation (coordinates, masking, ``log10``, levels) is shared with the plotly renderers.
"""

from __future__ import annotations

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
from landscape.plot.core import (
    COLORS,
    TRIANGLE,
    Grid,
    Style,
    XAxis,
    curve_vs_line_curves,
    finite_range,
    grid_of,
    labels_of,
    line_curves,
    masked,
    path_runs,
    plane_curve_xy,
    results_of,
    sharpness_curves,
    title_or,
    triangle_of,
)

__all__ = [
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
    "save_png",
]

CMAP = "viridis"
PATH_CMAP = "Reds"
_MAX_CELLS = 120  # per side of a 3-D surface; beyond, rows/columns are strided
_ANCHOR = "landscape-anchor"  # gid of the anchors' vertical lines, so overlays count only the curves


def _axes(ax: Any, figsize: tuple[float, float], projection: str | None = None) -> tuple[Any, Any]:
    """``(figure, axes)``: the given axes and their figure, or a new pyplot-free figure."""
    if ax is not None:
        if projection == "3d" and getattr(ax, "name", "") != "3d":
            raise ValueError("a surface needs 3-D axes: fig.add_subplot(projection='3d')")
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot(projection=projection)


def _mask(z: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_invalid(z)


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
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """A metric along one or several lines (see :func:`landscape.plot.core.plot_line`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    curves, xlabel = line_curves(results, labels, metric, accuracy, x, log)
    fig, ax = _axes(ax, (6.4, 4.2))
    base = sum(ln.get_gid() != _ANCHOR for ln in ax.lines)
    ax2 = ax.twinx() if any(c.acc is not None for c in curves) else None
    marks: dict[float, str] = {}
    for i, c in enumerate(curves):
        color = COLORS[(base + i) % len(COLORS)]
        ax.plot(c.x, _mask(c.y), marker="o", markersize=3, color=color, label=c.label)
        if c.acc is not None and ax2 is not None:
            ax2.plot(c.x, _mask(c.acc), linestyle=":", color=color, label=f"{c.label} accuracy")
        marks.update({float(m): lab for m, lab in zip(c.marks, c.mark_labels)})
    if anchors:
        for m, lab in marks.items():
            ax.axvline(m, linestyle=":", linewidth=0.8, color="gray", gid=_ANCHOR)
            ax.text(m, 1.0, f" {lab}", transform=ax.get_xaxis_transform(), va="bottom", fontsize=8, color="gray")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    handles, labs = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1.02)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labs = handles + h2, labs + l2
    ax.legend(handles, labs, fontsize="small")
    ax.set_title(title_or(title, f"{metric} along the line"), pad=14 if anchors else 6)
    return fig


def plot_distance(
    results: DistanceResult | Sequence[DistanceResult],
    labels: Sequence[str] | None = None,
    *,
    disagreement: bool = True,
    log: bool = False,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """Functional distance along paths (see :func:`landscape.plot.core.plot_distance`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    items = results_of(results, DistanceResult, "plot_distance")
    labs = labels_of(items, labels)
    fig, ax = _axes(ax, (6.4, 4.2))
    base = len(ax.lines)
    ax2 = ax.twinx() if disagreement else None
    for i, (r, lab) in enumerate(zip(items, labs)):
        color = COLORS[(base + i) % len(COLORS)]
        ax.plot(
            r.alphas,
            _mask(masked(r.rms, log=log)),
            marker="o",
            markersize=3,
            color=color,
            label=f"{lab} RMS distance ({r.output})",
        )
        if ax2 is not None:
            ax2.plot(
                r.alphas, _mask(masked(r.disagreement)), linestyle=":", color=color, label=f"{lab} label disagreement"
            )
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("alpha")
    ax.set_ylabel("RMS output distance")
    handles, hl = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("label disagreement")
        ax2.set_ylim(0, 1.02)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, hl = handles + h2, hl + l2
    ax.legend(handles, hl, fontsize="small")
    ax.set_title(title_or(title, "functional distance from the first network"))
    return fig


# =========================================================================== 2-D
def _draw_grid(fig: Any, ax: Any, g: Grid, style: Style, levels: int, points: bool = True) -> Any:
    """Draw a grid into ``ax`` with a colour bar; returns the main artist."""
    lo, hi = g.zrange()
    z = _mask(g.z)
    if style is Style.HEATMAP:
        art = ax.pcolormesh(g.x, g.y, z, shading="nearest", cmap=CMAP, vmin=lo, vmax=hi)
    else:
        if min(g.z.shape) < 2:
            raise ValueError(f"contours need a grid of at least 2 x 2 points, got {g.z.shape}; use a heatmap")
        lv = g.levels(levels)
        if style is Style.FILLED:
            art = ax.contourf(g.x, g.y, z, levels=lv, cmap=CMAP)
            ax.contour(g.x, g.y, z, levels=lv, colors="k", linewidths=0.3, alpha=0.5)
        else:
            art = ax.contour(g.x, g.y, z, levels=lv, cmap=CMAP, linewidths=1)
            ax.clabel(art, fontsize=7, fmt="%.3g")
    fig.colorbar(art, ax=ax, label=g.zlabel)
    if points and len(g.points):
        ax.scatter(g.points[:, 0], g.points[:, 1], marker="x", color="k", zorder=4)
        for (px, py), lab in zip(g.points, g.point_labels):
            ax.annotate(lab, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(g.xlabel)
    ax.set_ylabel(g.ylabel)
    return art


def _grid_plot(
    result: PlaneResult | BilinearResult,
    style: Style,
    metric: str,
    log: bool,
    levels: int,
    clip: float | None,
    anchors: bool,
    title: str | None,
    ax: Any,
    default_title: str,
    square: bool = False,
) -> Any:
    g = grid_of(result, metric, log, clip)
    fig, ax = _axes(ax, (5.6, 4.6))
    _draw_grid(fig, ax, g, style, levels, anchors)
    if square:
        ax.set_aspect("equal")
    ax.set_title(title_or(title, default_title.format(z=g.zlabel)))
    return fig


def plot_contour(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    filled: bool = False,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    anchors: bool = True,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """Contour lines or filled contours over a plane (see :func:`landscape.plot.core.plot_contour`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    style = Style.FILLED if filled else Style.CONTOUR
    return _grid_plot(result, style, metric, log, levels, clip, anchors, title, ax, "{z} on the plane")


def plot_heatmap(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    log: bool = False,
    clip: float | None = None,
    anchors: bool = True,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """A heatmap over a plane (see :func:`landscape.plot.core.plot_heatmap`); masked cells are blank.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    return _grid_plot(result, Style.HEATMAP, metric, log, 0, clip, anchors, title, ax, "{z} on the plane")


def plot_surface(
    result: PlaneResult | BilinearResult,
    *,
    metric: str = "loss",
    log: bool = False,
    clip: float | None = None,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """A 3-D surface (see :func:`landscape.plot.core.plot_surface`); cells with masked corners lose them.

    One polygon per grid cell (every second, third... row/column past 120 cells per side, which
    matplotlib draws slowly), coloured by its mean finite height.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: If ``ax`` is not a 3-D axes.
    """
    g = grid_of(result, metric, log, clip)
    fig, ax = _axes(ax, (6.4, 5.2), projection="3d")
    lo, hi = g.zrange()
    X, Y = np.meshgrid(g.x, g.y)
    rs, cs = (max(1, -(-n // _MAX_CELLS)) for n in g.z.shape)  # stride only past _MAX_CELLS cells per side
    surf = ax.plot_surface(
        X, Y, _mask(g.z), cmap=CMAP, vmin=lo, vmax=hi, rstride=rs, cstride=cs, linewidth=0, antialiased=False
    )
    fig.colorbar(surf, ax=ax, label=g.zlabel, shrink=0.7)
    ax.set_xlabel(g.xlabel)
    ax.set_ylabel(g.ylabel)
    ax.set_zlabel(g.zlabel)
    ax.set_title(title_or(title, f"{g.zlabel} surface"))
    return fig


def plot_bilinear(
    result: BilinearResult,
    *,
    metric: str = "loss",
    style: Style | str = Style.FILLED,
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """The square layout of a bilinear slice (see :func:`landscape.plot.core.plot_bilinear`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    st = parse_option(Style, style, "style")
    if not isinstance(result, BilinearResult):
        raise TypeError(f"plot_bilinear takes a BilinearResult, got {type(result).__name__}")
    if st is Style.SURFACE:
        return plot_surface(result, metric=metric, log=log, clip=clip, title=title, ax=ax)
    return _grid_plot(result, st, metric, log, levels, clip, True, title, ax, "{z}: bilinear interpolation", True)


def plot_barycentric(
    result: BarycentricResult,
    *,
    metric: str = "loss",
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """The triangle layout of a barycentric slice (see :func:`landscape.plot.core.plot_barycentric`).

    The ``(m, n)`` grid is triangulated cell by cell (zero-area triangles, e.g. at ``alpha = 0``
    where a whole column is vertex 0, dropped; triangles touching a masked point masked) and drawn
    with Gouraud shading and ``levels`` contour lines.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    import matplotlib.tri as mtri

    xy, z = triangle_of(result, metric, log, clip)
    m, n = z.shape
    fig, ax = _axes(ax, (5.6, 5.0))
    idx = np.arange(m * n).reshape(m, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    px, py = xy[..., 0].ravel(), xy[..., 1].ravel()
    area = 0.5 * np.abs(
        (px[tris[:, 1]] - px[tris[:, 0]]) * (py[tris[:, 2]] - py[tris[:, 0]])
        - (px[tris[:, 2]] - px[tris[:, 0]]) * (py[tris[:, 1]] - py[tris[:, 0]])
    )
    tris = tris[area > 1e-12]
    zlabel = f"log10 {metric}" if log else metric
    lo, hi = finite_range(z)
    bad = ~np.isfinite(z.ravel())
    if len(tris):
        tri = mtri.Triangulation(px, py, tris)
        hidden = bad[tris].any(1)
        tri.set_mask(hidden)
        art = ax.tripcolor(tri, _mask(z.ravel()), shading="gouraud", cmap=CMAP, vmin=lo, vmax=hi)
        fig.colorbar(art, ax=ax, label=zlabel)
        if levels and not hidden.all():
            ax.tricontour(
                tri,
                np.where(bad, lo, z.ravel()),
                levels=np.linspace(lo, hi, int(levels) + 1),
                colors="k",
                linewidths=0.3,
                alpha=0.6,
            )
    if bad.any():
        ax.scatter(px[bad], py[bad], marker="x", color="gray", s=12, label="non-finite")
        ax.legend(fontsize="small", loc="upper right")
    outline = np.vstack([TRIANGLE, TRIANGLE[:1]])
    ax.plot(outline[:, 0], outline[:, 1], color="k", linewidth=0.8)
    names = list(result.anchor_labels)[:3] if len(result.anchor_labels) >= 3 else ["p0", "p1", "p2"]
    for (vx, vy), name, va in zip(TRIANGLE, names, ("top", "top", "bottom")):
        ax.text(vx, vy + (-0.03 if va == "top" else 0.03), name, ha="center", va=va, fontsize=9)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title_or(title, f"{zlabel}: barycentric interpolation"), pad=16)
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
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """A projected path over the PCA plane (see :func:`landscape.plot.core.plot_trajectory`).

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: On a 3-D ``style``.
    """
    st = parse_option(Style, style, "style")
    if st is Style.SURFACE:
        raise ValueError("a trajectory is overlaid on a 2-D style: 'filled', 'contour' or 'heatmap'")
    runs, tname = path_runs(path, labels)
    second = panel and ax is None and path.true_loss is not None
    ax2 = None
    if ax is None and second:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11.5, 4.8), layout="constrained")
        ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    else:
        fig, ax = _axes(ax, (6.4, 5.2))
    if plane is not None:
        _draw_grid(fig, ax, grid_of(plane, metric, log, clip), st, levels)
    sc = None
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        ax.plot(r.xy[:, 0], r.xy[:, 1], color=color, linewidth=1.5, label=r.label, zorder=3)
        sc = ax.scatter(
            r.xy[:, 0], r.xy[:, 1], c=r.ratio, cmap=PATH_CMAP, vmin=0.0, vmax=1.0, edgecolors=color, s=28, zorder=4
        )
        ax.scatter(r.xy[:1, 0], r.xy[:1, 1], marker="s", s=60, facecolors="none", edgecolors=color, zorder=5)
        ax.scatter(r.xy[-1:, 0], r.xy[-1:, 1], marker="*", s=120, color=color, zorder=5)
    if sc is not None:
        fig.colorbar(sc, ax=ax, orientation="horizontal", fraction=0.05, label="off-plane share of the displacement")
    evr = np.asarray(path.explained_variance_ratio, np.float64)
    for k, setter in enumerate((ax.set_xlabel, ax.set_ylabel)):
        setter(f"PC{k + 1} ({100 * evr[k]:.1f}% of the variance)" if len(evr) > k else f"PC{k + 1}")
    ax.legend(fontsize="small", loc="best")
    ax.set_title(title_or(title, "training path on the PCA plane"))
    if ax2 is not None:
        for i, r in enumerate(runs):
            color = COLORS[i % len(COLORS)]
            ax2.plot(r.t, _mask(r.true_loss), marker="o", markersize=3, color=color, label=f"{r.label}: loss")
            ax2.plot(r.t, _mask(r.plane_loss), linestyle="--", color=color, label=f"{r.label}: on the plane")
        if log:
            ax2.set_yscale("log")
        ax2.set_xlabel(tname)
        ax2.set_ylabel("loss")
        ax2.set_title("loss: snapshot vs its projection")
        ax2.legend(fontsize="small")
    return fig


# =========================================================================== curvature over training
def plot_sharpness(
    traces: CurvatureTrace | Sequence[CurvatureTrace],
    labels: Sequence[str] | None = None,
    *,
    eigenvalue: int = 0,
    layer: str | None = None,
    threshold: bool = True,
    log: bool = False,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """Sharpness against step with the ``2 / lr`` lines (see :func:`landscape.plot.core.plot_sharpness`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    curves, ylabel = sharpness_curves(traces, labels, eigenvalue, layer, log)
    fig, ax = _axes(ax, (6.4, 4.2))
    base = sum(ln.get_gid() != _ANCHOR for ln in ax.lines if not str(ln.get_label()).endswith("2/lr"))
    for i, c in enumerate(curves):
        color = COLORS[(base + i) % len(COLORS)]
        ax.plot(c.steps, _mask(c.values), marker="o", markersize=3, color=color, label=c.label)
        if threshold and np.isfinite(c.threshold).any():
            ax.step(c.steps, _mask(c.threshold), where="post", linestyle="--", color=color, label=f"{c.label}: 2/lr")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.set_title(title_or(title, "sharpness during training"))
    return fig


# =========================================================================== files
def plot_curve_vs_line(
    line: LineResult | None,
    curves: CurveResult | Sequence[CurveResult],
    labels: Sequence[str] | None = None,
    *,
    metric: str = "loss",
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """A metric along the straight line and along curves (see :func:`landscape.plot.core.plot_curve_vs_line`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    fig, ax = _axes(ax, (6.4, 4.2))
    base = len(ax.lines)
    for i, c in enumerate(curve_vs_line_curves(line, curves, metric, labels)):
        style = "--" if (line is not None and i == 0) else "-"
        ax.plot(c.x, _mask(c.y), style, marker="o", markersize=3, color=COLORS[(base + i) % len(COLORS)], label=c.label)
    ax.set_xlabel("t (alpha)")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    ax.set_title(title_or(title, f"{metric}: straight line vs curve"))
    return fig


def plot_plane_curve(
    plane: PlaneResult,
    curve: CurveResult,
    *,
    metric: str = "loss",
    log: bool = False,
    levels: int = 20,
    clip: float | None = None,
    title: str | None = None,
    ax: Any = None,
) -> Any:
    """The plane through the endpoints and the bend with the curve on it (see :func:`landscape.plot.plot_plane_curve`).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    xy, ctrl = plane_curve_xy(plane, curve)
    g = grid_of(plane, metric, log, clip)
    fig, ax = _axes(ax, (5.6, 4.6))
    _draw_grid(fig, ax, g, Style.FILLED, levels, points=False)
    ax.plot(ctrl[[0, 2], 0], ctrl[[0, 2], 1], "--", color="white", label="line")
    ax.plot(xy[:, 0], xy[:, 1], "-", color="#d62728", linewidth=2.5, label=curve.label or curve.shape)
    ax.scatter(ctrl[:, 0], ctrl[:, 1], marker="x", color="k", zorder=4)
    for (px, py), lab in zip(ctrl, ["w0", "bend", "w1"]):
        ax.annotate(lab, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_aspect("equal")
    ax.legend(fontsize="small")
    ax.set_title(title_or(title, f"{g.zlabel}: plane through the endpoints and the bend"))
    return fig


def save_png(fig: Any, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write a matplotlib figure as PNG.

    Args:
        fig: A ``matplotlib.figure.Figure``.
        path: Output file (parents are created).
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        TypeError: If ``fig`` is not a matplotlib figure (a plotly figure goes to ``save_html``).
    """
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(
            f"save_png takes a matplotlib figure, got {type(fig).__name__}; render with backend='matplotlib' "
            "or write a plotly figure with save_html"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
