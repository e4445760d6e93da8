"""Writing figures: plotly figures as self-contained HTML pages, matplotlib figures as PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from landscape.plot.style import dispatch

__all__ = ["save_html", "save_png"]


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
    return dispatch("plotly")[0].save(fig, path, plotlyjs=plotlyjs)


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
    return dispatch("matplotlib")[0].save(fig, path, dpi=dpi)
