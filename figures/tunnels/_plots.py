"""Drawing helpers of the Tunnels figures (private to ``figures/tunnels/``): mean curves with bands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes

from landscape.plot import plot_bands


def _bands(
    x: np.ndarray, stats: Mapping[str, tuple[np.ndarray, np.ndarray]], colors: Mapping[str, str], **draw: Any
) -> Any:
    """:func:`landscape.plot.plot_bands` of each arm's ``(mean, std)`` in ``stats``, in this order."""
    arms = list(stats)
    means, stds = [stats[a][0] for a in arms], [stats[a][1] for a in arms]
    return plot_bands(x, means, stds, arms, colors=[colors[a] for a in arms], **draw)


def add_bands(
    fig: go.Figure,
    ax: Axes,
    x: np.ndarray,
    stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    colors: Mapping[str, str],
    *,
    row: int,
    col: int,
    legend: bool = True,
) -> None:
    """Draw each arm's mean curve with a one-standard-deviation band into subplot ``(row, col)`` and ``ax``.

    Args:
        fig: The plotly figure with subplots.
        ax: The matplotlib axes.
        x: The abscissae ``(T,)``.
        stats: ``{arm: (mean (T,), std (T,))}``, drawn in this order.
        colors: The colour of each arm.
        row: The plotly subplot's row.
        col: The plotly subplot's column.
        legend: Whether the plotly traces show in the legend.
    """
    for tr in _bands(x, stats, colors).data:  # drawn apart, then moved: plot_bands draws into a whole figure
        if not legend:
            tr.showlegend = False
        fig.add_trace(tr, row=row, col=col)
    _bands(x, stats, colors, backend="matplotlib", ax=ax)


def band_figure(
    x: np.ndarray,
    stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    colors: Mapping[str, str],
    figsize: tuple[float, float],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    short_title: str | None = None,
    alpha: float = 0.2,
) -> tuple[go.Figure, matplotlib.figure.Figure, Axes]:
    """A plotly figure and a matplotlib figure of each arm's mean curve with a one-standard-deviation band.

    Args:
        x: The abscissae ``(T,)``.
        stats: ``{arm: (mean (T,), std (T,))}``, drawn in this order.
        colors: The colour of each arm.
        figsize: The matplotlib figure's size (inches).
        title: The title (plotly's; matplotlib's is ``short_title`` if given).
        xlabel: Title of the x axis.
        ylabel: Title of the y axis.
        short_title: A shorter title for the static figure.
        alpha: Opacity of the bands.

    Returns:
        The two figures and the matplotlib axes (to add to).
    """
    labels = {"xlabel": xlabel, "ylabel": ylabel, "alpha": alpha}
    fig = _bands(x, stats, colors, title=title, fig=go.Figure(), **labels)  # plotly's own template
    mfig = matplotlib.figure.Figure(figsize=figsize)
    ax = mfig.add_subplot()
    _bands(x, stats, colors, title=short_title or title, backend="matplotlib", ax=ax, **labels)
    return fig, mfig, ax
