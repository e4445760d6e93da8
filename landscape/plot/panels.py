"""Small multiples: a grid of small line panels sharing a legend, in either backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from landscape.plot._prepare import Panel, PanelGrid
from landscape.plot.style import Backend, dispatch

__all__ = ["small_multiples"]


def small_multiples(
    panels: Sequence[Panel],
    *,
    cols: int | None = None,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    sharey: bool = False,
    size: tuple[float, float] = (3.2, 2.5),
    legend: str = "figure",
    backend: Backend | str = Backend.PLOTLY,
) -> Any:
    """A grid of small line panels, row by row; curves sharing a label share one legend entry.

    Args:
        panels: The :class:`~landscape.plot.Panel` objects (each a title and its
            :class:`~landscape.plot.Line` curves, reference lines and stars).
        cols: Panels per row (default: all in one row).
        title: Figure title.
        xlabel: Title of the x axes of panels that set none.
        ylabel: Title of the y axes of first-column panels that set none.
        sharey: One y range for all panels.
        size: Size of one matplotlib panel (inches).
        legend: Where matplotlib puts the legend: ``"figure"`` (one, below), ``"axes"`` (in each panel) or
            ``"first"`` (in the first panel).
        backend: ``"plotly"`` or ``"matplotlib"``.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        ValueError: On no panels, ``cols < 1`` or an unknown ``legend``.
    """
    draw, _ = dispatch(backend)
    if not panels:
        raise ValueError("no panels to draw")
    cols = len(panels) if cols is None else int(cols)
    if cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    if legend not in ("figure", "axes", "first"):
        raise ValueError(f"unknown legend {legend!r}; valid: ['figure', 'axes', 'first']")
    items = [
        dataclasses.replace(
            p,
            xlabel=xlabel if p.xlabel is None else p.xlabel,
            ylabel=(ylabel if i % cols == 0 else None) if p.ylabel is None else p.ylabel,
        )
        for i, p in enumerate(panels)
    ]
    return draw.panels(PanelGrid(items, cols, title, sharey, size, legend))
