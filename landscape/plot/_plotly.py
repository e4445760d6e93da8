"""The plotly backend: draws the plain data of :mod:`landscape.plot._prepare` into ``plotly.graph_objects.Figure``.

It implements the same functions as :mod:`landscape.plot._matplotlib` (``lines``, ``grid``, ``triangle``,
``triangle_cell``, ``path``, ``plane_curve``, ``panels``, ``save``); each takes the figure to draw into
(``None``: a new one) and returns the figure. NaN values are gaps (``connectgaps=False``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from landscape.plot._prepare import TRIANGLE, Frame, Grid, Line, PanelGrid, Paths, Triangle, finite_range
from landscape.plot.style import COLORSCALE, PATH_SCALE, Style, color, rgba

__all__ = ["lines", "grid", "triangle", "triangle_cell", "path", "plane_curve", "panels", "save"]

_STEP = {"post": "hv", "mid": "hvh"}
# ``meta`` of the traces that accompany a curve (its band, its dots, a companion curve sharing its colour), so that
# a later drawing counts only the curves when it picks colours (matplotlib marks them with a gid)
_COMPANION = "landscape-companion"


def _new_fig(fig: Any) -> Any:
    if fig is not None and not isinstance(fig, go.Figure):
        raise TypeError(
            f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}; "
            "a matplotlib drawing takes backend='matplotlib' and ax="
        )
    return fig if fig is not None else go.Figure(layout={"template": "plotly_white"})


def _line_traces(ln: Line, base: int, **kw: Any) -> list[Any]:
    """The traces of one curve: its band (if any), the curve, its dots (if any)."""
    c = ln.color or color(base + ln.slot)
    style: dict[str, Any] = {"color": c, "dash": ln.dash}
    if ln.width is not None:
        style["width"] = ln.width
    if ln.step is not None:
        style["shape"] = _STEP[ln.step]
    y = np.asarray(ln.y, np.float64)
    out = []
    if ln.spread is not None:
        x = np.asarray(ln.x, np.float64)
        s = np.asarray(ln.spread, np.float64)
        out.append(
            go.Scatter(
                x=np.r_[x, x[::-1]],
                y=np.r_[y + s, (y - s)[::-1]],
                fill="toself",
                fillcolor=rgba(c, ln.band_alpha),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                meta=_COMPANION,
            )
        )
    extra: dict[str, Any] = {}
    if ln.markers and ln.marker_size is not None:
        extra["marker"] = {"size": ln.marker_size}
    if ln.secondary:
        extra["yaxis"] = "y2"
    if ln.hover is not None:
        extra.update(hovertext=list(ln.hover), hoverinfo="text")
    if not ln.label:
        extra["showlegend"] = False
    if ln.companion:
        extra["meta"] = _COMPANION
    extra.update(kw)
    out.append(
        go.Scatter(
            x=ln.x,
            y=y,
            mode=("lines+markers" if ln.markers else "lines") if ln.connect else "markers",
            name=ln.label,
            line=style,
            connectgaps=False,
            **extra,
        )
    )
    if ln.dots:
        fill = np.nanmax(y) if np.isfinite(y).any() else 0.0
        dy = np.interp(ln.dots, ln.x, np.nan_to_num(y, nan=fill))
        out.append(
            go.Scatter(
                x=list(ln.dots),
                y=dy,
                mode="markers",
                showlegend=False,
                marker={"color": c, "size": 6},
                hoverinfo="skip",
                meta=_COMPANION,
            )
        )
    return out


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


def lines(target: Any, curves: Sequence[Line], frame: Frame) -> Any:
    """Overlaid curves in a :class:`Frame` (titles, log axis, secondary axis, vertical reference lines).

    ``frame.size`` (matplotlib inches) is ignored here.
    """
    fig = _new_fig(target)
    base = sum(t.meta != _COMPANION for t in fig.data)  # the curves drawn already (not their bands, dots, companions)
    for ln in curves:
        fig.add_traces(_line_traces(ln, base))
    for x, lab in frame.vlines:
        fig.add_vline(
            x=x, line_dash="dot", line_width=1, line_color="gray", **({"annotation_text": lab} if lab else {})
        )
    texts = {"title": frame.title, "xaxis_title": frame.xlabel, "yaxis_title": frame.ylabel}
    fig.update_layout(**{k: v for k, v in texts.items() if v is not None})
    if frame.log:
        fig.update_layout(yaxis_type="log")
    if frame.xticks:
        ticks, names = zip(*frame.xticks)
        fig.update_xaxes(
            tickmode="array", tickvals=list(ticks), ticktext=list(names), range=[min(ticks) - 0.5, max(ticks) + 0.5]
        )
    if any(ln.secondary for ln in curves):  # without its layout, plotly.js draws y2 over the left axis, unscaled
        _secondary_axis(fig, frame.secondary or "")
    return fig


def _grid_traces(g: Grid, style: Style, levels: int, colorbar: dict[str, Any] | None = None) -> list[Any]:
    """Plotly traces of a grid (NaN gaps stay gaps)."""
    if style in (Style.CONTOUR, Style.FILLED) and min(g.z.shape) < 2:
        raise ValueError(f"contours need a grid of at least 2 x 2 points, got {g.z.shape}; use a heatmap")
    lo, hi = g.zrange()
    cb = {"title": {"text": g.zlabel}, **(colorbar or {})}
    common = {"x": g.x, "y": g.y, "z": g.z, "colorscale": COLORSCALE, "colorbar": cb, "name": g.zlabel}
    if style is Style.HEATMAP:
        return [go.Heatmap(zmin=lo, zmax=hi, hoverongaps=False, **common)]
    if style is Style.SURFACE:
        return [go.Surface(cmin=lo, cmax=hi, **common)]
    contours = {
        "start": lo,
        "end": hi,
        "size": (hi - lo) / max(1, int(levels)),
        "coloring": "fill" if style is Style.FILLED else "lines",
        "showlabels": style is Style.CONTOUR,
    }
    return [go.Contour(zmin=lo, zmax=hi, contours=contours, connectgaps=False, line={"width": 1}, **common)]


def _points(xy: np.ndarray, labels: Sequence[str], name: str | None = "anchors") -> list[Any]:
    """Black crosses with their labels above (none for no points)."""
    if not len(xy):
        return []
    return [
        go.Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers+text",
            text=list(labels),
            textposition="top center",
            marker={"symbol": "x", "size": 9, "color": "black"},
            showlegend=False,
            **({"name": name} if name else {}),
        )
    ]


def grid(target: Any, g: Grid, style: Style, levels: int, *, title: str, square: bool = False) -> Any:
    """A grid as contours, filled contours, a heatmap or a 3-D surface, with its anchor points (``g.points``)."""
    fig = _new_fig(target)
    pts = [] if style is Style.SURFACE else _points(g.points, g.point_labels)
    fig.add_traces(_grid_traces(g, style, levels) + pts)
    if style is Style.SURFACE:
        fig.update_layout(
            title=title, scene={"xaxis_title": g.xlabel, "yaxis_title": g.ylabel, "zaxis_title": g.zlabel}
        )
    else:
        fig.update_layout(title=title, xaxis_title=g.xlabel, yaxis_title=g.ylabel)
        if square:
            fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def _outline() -> Any:
    """The triangle's outline, a closed black line."""
    outline = np.vstack([TRIANGLE, TRIANGLE[:1]])
    return go.Scatter(
        x=outline[:, 0],
        y=outline[:, 1],
        mode="lines",
        line={"color": "black", "width": 1},
        showlegend=False,
        hoverinfo="skip",
    )


def _shading(kind: Any, t: Triangle, lo: float, hi: float, size: int, **options: Any) -> list[Any]:
    """A ``kind`` trace (``go.Contour``, ``go.Heatmap``) of :meth:`Triangle.raster` (``size`` points a side).

    The colours span ``[lo, hi]``; ``options`` are the trace's own. ``[]`` for a grid with fewer than 2 x 2 points.
    """
    shade = t.raster(size)
    if shade is None:
        return []
    gx, gy, gz = shade
    colorbar = {"title": {"text": t.zlabel}}
    return [
        kind(x=gx, y=gy, z=gz, zmin=lo, zmax=hi, colorscale=COLORSCALE, colorbar=colorbar, name=t.zlabel, **options)
    ]


def triangle(target: Any, t: Triangle, levels: int, *, title: str) -> Any:
    """Grid points as markers (masked ones as grey crosses) over filled contours of :meth:`Triangle.raster`."""
    fig = _new_fig(target)
    ok = np.isfinite(t.z)
    A, B = np.meshgrid(t.alphas, t.betas)
    lo, hi = finite_range(t.z)
    contours = {"start": lo, "end": hi, "size": (hi - lo) / max(1, int(levels)), "coloring": "fill"}
    shade = _shading(
        go.Contour, t, lo, hi, 161, connectgaps=False, contours=contours, line={"width": 0.5}, hoverinfo="skip"
    )
    fig.add_traces(shade)
    fig.add_trace(
        go.Scatter(
            x=t.xy[..., 0][ok],
            y=t.xy[..., 1][ok],
            mode="markers",
            name="grid points",
            marker={
                "color": t.z[ok],
                "colorscale": COLORSCALE,
                "cmin": lo,
                "cmax": hi,
                "size": 4,
                "line": {"color": "white", "width": 0.5},
                "showscale": not shade,
                "colorbar": {"title": {"text": t.zlabel}},
            },
            customdata=np.stack([A[ok], B[ok]], 1),
            hovertemplate="alpha %{customdata[0]:.3g}, beta %{customdata[1]:.3g}<br>"
            + t.zlabel
            + " %{marker.color:.5g}"
            "<extra></extra>",
        )
    )
    if (~ok).any():
        fig.add_trace(
            go.Scatter(
                x=t.xy[..., 0][~ok],
                y=t.xy[..., 1][~ok],
                mode="markers",
                name="non-finite",
                marker={"symbol": "x", "color": "gray", "size": 6},
            )
        )
    fig.add_trace(_outline())
    fig.add_trace(
        go.Scatter(
            x=TRIANGLE[:, 0],
            y=TRIANGLE[:, 1] + np.array([-0.04, -0.04, 0.04]),
            mode="text",
            text=t.names,
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    fig.update_layout(title=title, legend={"orientation": "h", "y": 0.0, "yanchor": "top"})
    return fig


def triangle_cell(
    target: Any, t: Triangle, zrange: tuple[float, float], *, colorbar: bool, row: int | None, col: int | None
) -> Any:
    """The shaded triangle, a heatmap of :meth:`Triangle.raster`, and its outline in subplot ``(row, col)``.

    ``row`` and ``col`` are ``None`` for a figure without subplots. Nothing else is drawn (no markers, vertex
    names or title), so that a grid of triangles stays light; the colours span ``zrange``, shared by the grid,
    and ``colorbar`` shows the colour bar of this cell.
    """
    fig = _new_fig(target)
    lo, hi = zrange
    hover = f"{' / '.join(t.names)}<br>{t.zlabel} %{{z:.3f}}<extra></extra>"
    # 61 points a side: a cell is small, and a grid of them one page
    shade = _shading(go.Heatmap, t, lo, hi, 61, showscale=colorbar, hoverongaps=False, hovertemplate=hover)
    fig.add_traces(shade, rows=row, cols=col)
    fig.add_trace(_outline(), row=row, col=col)
    return fig


def path(target: Any, paths: Paths, style: Style, levels: int, *, panel: bool, title: str) -> Any:
    """Projected runs (``paths``) over their grid, markers coloured by the off-plane share.

    With ``panel`` (and no ``target``) a second panel draws each snapshot's loss and the loss at its projection.
    """
    runs, g = paths.runs, paths.grid
    second = panel and target is None
    fig = target
    if second:
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
    if g is not None:
        cb = {"x": 0.515, "xanchor": "left", "len": 0.85, "thickness": 14} if second else None
        for tr in _grid_traces(g, style, levels, cb) + _points(g.points, g.point_labels):
            fig.add_trace(tr, **rc)
    for i, r in enumerate(runs):
        c = color(i)
        symbols = ["circle"] * len(r.xy)
        symbols[0], symbols[-1] = "square", "star"
        marker = {
            "color": r.ratio,
            "colorscale": PATH_SCALE,
            "cmin": 0.0,
            "cmax": 1.0,
            "size": 8,
            "symbol": symbols,
            "line": {"color": c, "width": 1.5},
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
            line={"color": c, "width": 2},
            hovertext=r.hover,
            hoverinfo="text",
        )
        fig.add_trace(trace, **rc)
    fig.update_xaxes(title_text=paths.xlabel, **rc)
    fig.update_yaxes(title_text=paths.ylabel, **rc)
    if second:
        for i, r in enumerate(runs):
            true = Line(r.t, r.true_loss, f"{r.label}: loss", color(i), markers=True, hover=r.hover)
            plane = Line(r.t, r.plane_loss, f"{r.label}: loss on the plane", color(i), dash="dash")
            for tr in _line_traces(true, 0) + _line_traces(plane, 0):
                fig.add_trace(tr, row=1, col=2)
        fig.update_xaxes(title_text=paths.tname, row=1, col=2)
        fig.update_yaxes(title_text="loss", type="log" if paths.log else "linear", row=1, col=2)
    fig.update_layout(title=title, margin={"b": 120})
    if fig.layout.height is None:
        fig.update_layout(height=560)
    return fig


def plane_curve(target: Any, g: Grid, levels: int, xy: np.ndarray, ctrl: np.ndarray, name: str, *, title: str) -> Any:
    """Filled contours of a plane (square axes) with a curve, the straight line and the control points."""
    fig = grid(target, g, Style.FILLED, levels, title=title, square=True)
    fig.add_trace(
        go.Scatter(
            x=ctrl[[0, 2], 0], y=ctrl[[0, 2], 1], mode="lines", name="line", line={"color": "white", "dash": "dash"}
        )
    )
    fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines", name=name, line={"color": "#d62728", "width": 3}))
    fig.add_traces(_points(ctrl, ["w0", "bend", "w1"], name=None))
    return fig


def panels(grid: PanelGrid) -> Any:
    """A grid of line panels, row by row; curves sharing a label share one legend entry.

    ``grid.size`` (matplotlib inches per panel) and ``grid.legend`` (where matplotlib puts it) are ignored here.
    """
    items, cols, title, sharey = grid.panels, grid.cols, grid.title, grid.sharey
    rows = math.ceil(len(items) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[p.title for p in items],
        shared_yaxes=sharey,
        horizontal_spacing=0.06 if not sharey else 0.03,
        vertical_spacing=0.14 if rows > 1 else 0.1,
    )
    seen: set[str] = set()
    for i, p in enumerate(items):
        rc = {"row": i // cols + 1, "col": i % cols + 1}
        xs = [v for ln in p.lines for v in np.asarray(ln.x, np.float64).tolist()] or [0.0, 1.0]
        hl = [
            Line(np.array([min(xs), max(xs)]), np.array([y, y]), lab, c, dash=d, width=1.5) for y, lab, c, d in p.hlines
        ]
        for ln in [*p.lines, *hl]:
            y = np.asarray(ln.y, np.float64)
            if p.logy:
                y = np.where(y > 0, y, np.nan)
            shown = bool(ln.label) and ln.label not in seen
            for tr in _line_traces(dataclasses.replace(ln, y=y), 0, legendgroup=ln.label, showlegend=shown):
                fig.add_trace(tr, **rc)
            seen.add(ln.label)
        for sx, sy, lab, c in p.stars:
            star = {"symbol": "star", "size": 14, "color": c, "line": {"color": "black", "width": 1}}
            fig.add_trace(
                go.Scatter(
                    x=[sx], y=[sy], mode="markers", name=lab, legendgroup=lab, showlegend=lab not in seen, marker=star
                ),
                **rc,
            )
            seen.add(lab)
        for v in p.vlines:
            fig.add_vline(x=v, line_dash="dot", line_color="gray", line_width=1, **rc)
        if p.xlabel:
            fig.update_xaxes(title_text=p.xlabel, title_font={"size": 11}, **rc)
        if p.ylabel:
            fig.update_yaxes(title_text=p.ylabel, title_font={"size": 11}, **rc)
        if p.logy:
            fig.update_yaxes(type="log", **rc)
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=max(380, 300 * rows + 90),
        legend={"orientation": "h", "y": -0.18 if rows == 1 else -0.08, "yanchor": "top"},
    )
    return fig


def save(fig: Any, path: str | os.PathLike[str], *, plotlyjs: bool | str = True) -> Path:
    """Write a plotly figure as an HTML page (see :func:`landscape.plot.save_html`).

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
