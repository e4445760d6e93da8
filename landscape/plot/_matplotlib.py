"""The matplotlib backend: draws the plain data of :mod:`landscape.plot._prepare` into ``matplotlib.figure.Figure``.

It implements the same functions as :mod:`landscape.plot._plotly` (``lines``, ``grid``, ``triangle``,
``triangle_cell``, ``path``, ``plane_curve``, ``panels``, ``save``); each takes the axes to draw into (``None``: a
new figure, built without ``pyplot`` so no global state is kept) and returns the figure. NaN values become masked
arrays: lines break, cells and triangles are left blank, surfaces get holes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.tri as mtri
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.plot._prepare import TRIANGLE, Frame, Grid, Line, PanelGrid, Paths, Triangle, finite_range
from landscape.plot.style import CMAP, PATH_CMAP, Style, color, mpl_linestyle

__all__ = ["lines", "grid", "triangle", "triangle_cell", "path", "plane_curve", "panels", "save"]

_MAX_CELLS = 120  # per side of a 3-D surface; beyond, rows/columns are strided
_ANCHOR = "landscape-anchor"  # gid of reference lines, so that overlays count only the curves
_SECONDARY = "landscape-secondary"  # label of the right-hand axes of rates (twinx), found again by the next drawing
_COMPANION = "landscape-companion"  # gid of what accompanies a curve in its colour: a threshold, its dots


def _axes(ax: Any, figsize: tuple[float, float], projection: str | None = None) -> tuple[Any, Any]:
    """``(figure, axes)``: the given axes and their figure, or a new pyplot-free figure."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be matplotlib Axes (e.g. fig.add_subplot()), got {type(ax).__name__}")
        if projection == "3d" and getattr(ax, "name", "") != "3d":
            raise ValueError("a surface needs 3-D axes: fig.add_subplot(projection='3d')")
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot(projection=projection)


def _mask(z: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_invalid(np.asarray(z, np.float64))


def _plot_line(ax: Any, ln: Line, base: int, label: bool = True) -> None:
    """One curve (with its band and dots) into ``ax``."""
    c = ln.color or color(base + ln.slot)
    kw: dict[str, Any] = {"color": c, "linestyle": mpl_linestyle(ln.dash)}
    kw["label"] = ln.label if (ln.label and label) else "_nolegend_"
    if ln.companion:
        kw["gid"] = _COMPANION
    if ln.markers or not ln.connect:
        size = 0.75 * ln.marker_size if ln.marker_size is not None and not ln.connect else 3
        kw.update(marker="o", markersize=size)
    if not ln.connect:
        kw["linestyle"] = "none"
    if ln.width is not None:
        kw["linewidth"] = 0.75 * ln.width
    x, y = np.asarray(ln.x), _mask(ln.y)
    if ln.step is not None:
        ax.step(x, y, where=ln.step, **kw)
    else:
        ax.plot(x, y, **kw)
    if ln.spread is not None:
        s = np.asarray(ln.spread, np.float64)
        ax.fill_between(x, y - s, y + s, color=c, alpha=ln.band_alpha, linewidth=0)
    if ln.dots:
        yy = np.asarray(ln.y, np.float64)
        fill = np.nanmax(yy) if np.isfinite(yy).any() else 0.0
        ax.plot(ln.dots, np.interp(ln.dots, x, np.nan_to_num(yy, nan=fill)), "o", color=c, ms=3, gid=_COMPANION)


def _legend(ax: Any, *more: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    for other in more:
        h, lab = other.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    if handles:
        ax.legend(handles, labels, fontsize="small")


def _secondary_axes(ax: Any, create: bool) -> Any:
    """The right-hand axes an earlier drawing twinned with ``ax``, else a new one if ``create``, else ``None``.

    Found again, so that a second run's rates share the axes and the legend keeps the first run's.
    """
    for other in ax.figure.axes:
        if other is not ax and other.get_label() == _SECONDARY and ax.get_shared_x_axes().joined(ax, other):
            return other
    if not create:
        return None
    twin = ax.twinx()
    twin.set_label(_SECONDARY)
    return twin


def lines(target: Any, curves: Sequence[Line], frame: Frame) -> Any:
    """Overlaid curves in a :class:`Frame` (titles, log axis, secondary axis, vertical reference lines)."""
    fig, ax = _axes(target, frame.size)
    base = sum(ln.get_gid() is None for ln in ax.lines)
    ax2 = _secondary_axes(ax, create=any(ln.secondary for ln in curves))
    for ln in curves:
        _plot_line(ax2 if (ln.secondary and ax2 is not None) else ax, ln, base)
    if frame.log:  # before the vertical lines: their (0, 1) y extent on a log axis with no data breaks drawing
        ax.set_yscale("log")
    for m, lab in frame.vlines:
        ax.axvline(m, linestyle=":", linewidth=0.8, color="gray", gid=_ANCHOR)
        if lab:
            ax.text(m, 1.0, f" {lab}", transform=ax.get_xaxis_transform(), va="bottom", fontsize=8, color="gray")
    if frame.xticks:
        ticks, names = zip(*frame.xticks)
        ax.set_xticks(list(ticks), list(names))
        ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
    if frame.xlabel is not None:
        ax.set_xlabel(frame.xlabel)
    if frame.ylabel is not None:
        ax.set_ylabel(frame.ylabel)
    if ax2 is not None:
        if frame.secondary is not None or not ax2.get_ylabel():
            ax2.set_ylabel(frame.secondary or "")
        ax2.set_ylim(0, 1.02)
        _legend(ax, ax2)
    else:
        _legend(ax)
    if frame.title is not None:
        ax.set_title(frame.title, pad=14 if any(lab for _, lab in frame.vlines) else 6)
    return fig


def _draw_grid(fig: Any, ax: Any, g: Grid, style: Style, levels: int) -> Any:
    """Draw a grid (and its anchor points) into ``ax`` with a colour bar; returns the main artist."""
    lo, hi = g.zrange()
    z = _mask(g.z)
    if style is Style.HEATMAP:
        art = ax.pcolormesh(_cell_edges(g.x), _cell_edges(g.y), z, shading="flat", cmap=CMAP, vmin=lo, vmax=hi)
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
    _points(ax, g.points, g.point_labels)
    ax.set_xlabel(g.xlabel)
    ax.set_ylabel(g.ylabel)
    return art


def _cell_edges(c: np.ndarray) -> np.ndarray:
    """Edges ``(n + 1,)`` of heatmap cells centred on ``c`` ``(n,)``, as plotly.js draws them.

    Midpoints between neighbours, the outer edges mirrored; a single value gets a cell of width 1 (matplotlib's
    ``shading="nearest"`` gave it width 0, so a one-row or one-column grid drew nothing).
    """
    c = np.asarray(c, np.float64)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    return np.concatenate([[1.5 * c[0] - 0.5 * c[1]], (c[:-1] + c[1:]) / 2, [1.5 * c[-1] - 0.5 * c[-2]]])


def _points(ax: Any, xy: np.ndarray, labels: Sequence[str]) -> None:
    """Black crosses with their labels (none for no points)."""
    if not len(xy):
        return
    ax.scatter(xy[:, 0], xy[:, 1], marker="x", color="k", zorder=4)
    for (px, py), lab in zip(xy, labels):
        ax.annotate(lab, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)


def _surface(target: Any, g: Grid, title: str) -> Any:
    """One polygon per grid cell (strided past 120 cells per side, which matplotlib draws slowly)."""
    fig, ax = _axes(target, (6.4, 5.2), projection="3d")
    lo, hi = g.zrange()
    X, Y = np.meshgrid(g.x, g.y)
    rs, cs = (max(1, -(-n // _MAX_CELLS)) for n in g.z.shape)
    surf = ax.plot_surface(
        X, Y, _mask(g.z), cmap=CMAP, vmin=lo, vmax=hi, rstride=rs, cstride=cs, linewidth=0, antialiased=False
    )
    fig.colorbar(surf, ax=ax, label=g.zlabel, shrink=0.7)
    ax.set_xlabel(g.xlabel)
    ax.set_ylabel(g.ylabel)
    ax.set_zlabel(g.zlabel)
    ax.set_title(title)
    return fig


def grid(target: Any, g: Grid, style: Style, levels: int, *, title: str, square: bool = False) -> Any:
    """A grid as contours, filled contours, a heatmap or a 3-D surface, with its anchor points (``g.points``)."""
    if style is Style.SURFACE:
        return _surface(target, g, title)
    fig, ax = _axes(target, (5.6, 4.6))
    _draw_grid(fig, ax, g, style, levels)
    if square:
        ax.set_aspect("equal")
    ax.set_title(title)
    return fig


def _gouraud(ax: Any, t: Triangle, lo: float, hi: float) -> tuple[Any, np.ndarray, Any] | None:
    """A Gouraud-shaded triangulation of the grid (:meth:`Triangle.cells`) in the colour range ``[lo, hi]``.

    Triangles touching a masked point are masked. Returns ``(triangulation, masked triangles, artist)``, or
    ``None`` for a grid with no cells.
    """
    tris = t.cells()
    if not len(tris):
        return None
    tri = mtri.Triangulation(t.xy[..., 0].ravel(), t.xy[..., 1].ravel(), tris)
    hidden = ~np.isfinite(t.z.ravel())[tris].all(1)
    tri.set_mask(hidden)
    art = ax.tripcolor(tri, _mask(t.z.ravel()), shading="gouraud", cmap=CMAP, vmin=lo, vmax=hi)
    return tri, hidden, art


def _outline(ax: Any, linewidth: float) -> None:
    """The triangle's outline, a closed black line."""
    outline = np.vstack([TRIANGLE, TRIANGLE[:1]])
    ax.plot(outline[:, 0], outline[:, 1], color="k", linewidth=linewidth)


def triangle(target: Any, t: Triangle, levels: int, *, title: str) -> Any:
    """A Gouraud-shaded triangulation of the grid (:meth:`Triangle.cells`) with ``levels`` contour lines.

    Triangles touching a masked point are masked, and the point is marked.
    """
    fig, ax = _axes(target, (5.6, 5.0))
    px, py = t.xy[..., 0].ravel(), t.xy[..., 1].ravel()
    z = t.z.ravel()
    lo, hi = finite_range(t.z)
    bad = ~np.isfinite(z)
    shaded = _gouraud(ax, t, lo, hi)
    if shaded is not None:
        tri, hidden, art = shaded
        fig.colorbar(art, ax=ax, label=t.zlabel)
        if levels and not hidden.all():
            lv = np.linspace(lo, hi, int(levels) + 1)
            ax.tricontour(tri, np.where(bad, lo, z), levels=lv, colors="k", linewidths=0.3, alpha=0.6)
    if bad.any():
        ax.scatter(px[bad], py[bad], marker="x", color="gray", s=12, label="non-finite")
        ax.legend(fontsize="small", loc="upper right")
    _outline(ax, 0.8)
    for (vx, vy), name, va in zip(TRIANGLE, t.names, ("top", "top", "bottom")):
        ax.text(vx, vy + (-0.03 if va == "top" else 0.03), name, ha="center", va=va, fontsize=9)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, pad=16)
    return fig


def triangle_cell(
    target: Any, t: Triangle, zrange: tuple[float, float], *, colorbar: bool, row: int | None, col: int | None
) -> Any:
    """The shaded triangle (as in :func:`triangle`) and its outline, in the cell's axes ``target``.

    Nothing else is drawn (no contour lines, markers, vertex names or title), so that a grid of triangles stays
    light; the colours span ``zrange``, shared by the grid, and ``colorbar`` adds a colour bar beside this cell.
    ``row`` and ``col`` (plotly's subplot) are always ``None`` here: the axes are the cell.
    """
    fig, ax = _axes(target, (3.0, 2.6))
    shaded = _gouraud(ax, t, *zrange)
    if colorbar and shaded is not None:
        fig.colorbar(shaded[2], ax=ax, label=t.zlabel)
    _outline(ax, 0.6)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig


def path(target: Any, paths: Paths, style: Style, levels: int, *, panel: bool, title: str) -> Any:
    """Projected runs (``paths``) over their grid, markers coloured by the off-plane share.

    With ``panel`` (and no ``target``) a second panel draws each snapshot's loss and the loss at its projection.
    """
    runs, g = paths.runs, paths.grid
    ax2 = None
    if target is None and panel:
        fig = Figure(figsize=(11.5, 4.8), layout="constrained")
        ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    else:
        fig, ax = _axes(target, (6.4, 5.2))
    if g is not None:
        _draw_grid(fig, ax, g, style, levels)
    sc = None
    for i, r in enumerate(runs):
        c = color(i)
        ax.plot(r.xy[:, 0], r.xy[:, 1], color=c, linewidth=1.5, label=r.label, zorder=3)
        sc = ax.scatter(
            r.xy[:, 0], r.xy[:, 1], c=r.ratio, cmap=PATH_CMAP, vmin=0.0, vmax=1.0, edgecolors=c, s=28, zorder=4
        )
        ax.scatter(r.xy[:1, 0], r.xy[:1, 1], marker="s", s=60, facecolors="none", edgecolors=c, zorder=5)
        ax.scatter(r.xy[-1:, 0], r.xy[-1:, 1], marker="*", s=120, color=c, zorder=5)
    if sc is not None:
        fig.colorbar(sc, ax=ax, orientation="horizontal", fraction=0.05, label="off-plane share of the displacement")
    ax.set_xlabel(paths.xlabel)
    ax.set_ylabel(paths.ylabel)
    ax.legend(fontsize="small", loc="best")
    ax.set_title(title)
    if ax2 is not None:
        for i, r in enumerate(runs):
            _plot_line(ax2, Line(r.t, r.true_loss, f"{r.label}: loss", color(i), markers=True), 0)
            _plot_line(ax2, Line(r.t, r.plane_loss, f"{r.label}: on the plane", color(i), dash="dash"), 0)
        if paths.log:
            ax2.set_yscale("log")
        ax2.set_xlabel(paths.tname)
        ax2.set_ylabel("loss")
        ax2.set_title("loss: snapshot vs its projection")
        ax2.legend(fontsize="small")
    return fig


def plane_curve(target: Any, g: Grid, levels: int, xy: np.ndarray, ctrl: np.ndarray, name: str, *, title: str) -> Any:
    """Filled contours of a plane (square axes) with a curve, the straight line and the control points."""
    fig, ax = _axes(target, (5.6, 4.6))
    _draw_grid(fig, ax, g, Style.FILLED, levels)
    ax.plot(ctrl[[0, 2], 0], ctrl[[0, 2], 1], "--", color="white", label="line")
    ax.plot(xy[:, 0], xy[:, 1], "-", color="#d62728", linewidth=2.5, label=name)
    _points(ax, ctrl, ["w0", "bend", "w1"])
    ax.set_aspect("equal")
    ax.legend(fontsize="small")
    ax.set_title(title)
    return fig


def panels(grid: PanelGrid) -> Any:
    """A grid of line panels, row by row.

    ``grid.legend``: ``"figure"`` (one, below), ``"axes"`` (in each panel) or ``"first"`` (in the first panel).
    """
    items, cols, title, sharey, size, legend = grid.panels, grid.cols, grid.title, grid.sharey, grid.size, grid.legend
    rows = math.ceil(len(items) / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    seen: set[str] = set()
    for ax, p in zip(axes.flat, items):
        for ln in p.lines:
            y = np.asarray(ln.y, np.float64)
            if p.logy:
                y = np.where(y > 0, y, np.nan)
            fresh = legend != "figure" or ln.label not in seen
            _plot_line(ax, dataclasses.replace(ln, y=y), 0, label=fresh)
            seen.add(ln.label)
        for y0, lab, c, dash in p.hlines:
            ax.axhline(y0, color=c, linestyle=mpl_linestyle(dash), linewidth=1.2, label=lab, gid=_ANCHOR)
        for x, y0, lab, c in p.stars:
            ax.scatter([x], [y0], marker="*", s=160, color=c, edgecolors="black", zorder=5, label=lab)
        for v in p.vlines:
            ax.axvline(v, color="gray", lw=0.8, ls=":", gid=_ANCHOR)
        if p.logy and any(np.any(np.asarray(ln.y) > 0) for ln in p.lines):
            ax.set_yscale("log")
        ax.set_title(p.title, fontsize=9)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
        if p.xlabel:
            ax.set_xlabel(p.xlabel, fontsize=8)
        if p.ylabel:
            ax.set_ylabel(p.ylabel, fontsize=8)
        if legend == "axes" or (legend == "first" and ax is axes.flat[0]):
            h, lab = ax.get_legend_handles_labels()
            if h:
                ax.legend(fontsize="x-small")
    for ax in axes.flat[len(items) :]:
        ax.set_axis_off()
    if legend == "figure":
        handles, labels = [], []
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:  # one entry per label: a reference line or star in every panel too
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def save(fig: Any, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write a matplotlib figure as PNG (see :func:`landscape.plot.save_png`).

    Raises:
        TypeError: If ``fig`` is not a matplotlib figure (a plotly figure goes to ``save_html``).
    """
    if not isinstance(fig, Figure):
        raise TypeError(
            f"save_png takes a matplotlib figure, got {type(fig).__name__}; render with backend='matplotlib' "
            "or write a plotly figure with save_html"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
