"""Drawing helpers of the Tunnels figures (private to ``figures/tunnels/``): mean curves with bands, titles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes

from landscape.plot import plot_bands


def band_traces(x: np.ndarray, mean: np.ndarray, std: np.ndarray, name: str, color: str) -> list[Any]:
    """Plotly traces of a mean line with a one-standard-deviation band (:func:`landscape.plot.plot_bands`)."""
    return list(plot_bands(x, mean, std, [name], colors=[color]).data)


def add_bands(
    fig: go.Figure,
    ax: Axes,
    x: np.ndarray,
    stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    colors: Mapping[str, str],
    *,
    alpha: float = 0.2,
    row: int | None = None,
    col: int | None = None,
    legend: bool = True,
) -> None:
    """Draw each arm's mean curve with a one-standard-deviation band, in plotly and in matplotlib.

    Args:
        fig: The plotly figure.
        ax: The matplotlib axes.
        x: The abscissae ``(T,)``.
        stats: ``{arm: (mean (T,), std (T,))}``, drawn in this order.
        colors: The colour of each arm.
        alpha: Opacity of the matplotlib bands.
        row: The plotly subplot's row (``None``: a figure without subplots).
        col: The plotly subplot's column.
        legend: Whether the plotly traces show in the legend.
    """
    for name, (mu, sd) in stats.items():
        for tr in band_traces(x, mu, sd, name, colors[name]):
            if not legend:
                tr.showlegend = False
            fig.add_trace(tr, row=row, col=col)
        ax.plot(x, mu, color=colors[name], label=name)
        ax.fill_between(x, mu - sd, mu + sd, color=colors[name], alpha=alpha)


def set_titles(
    fig: go.Figure,
    ax: Axes,
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    short_title: str | None = None,
    legend_fontsize: float | None = None,
) -> None:
    """The title and axis labels in plotly and matplotlib (whose title may be shorter), and matplotlib's legend."""
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=short_title or title)
    ax.legend(fontsize=legend_fontsize)


def band_figure(
    x: np.ndarray,
    stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    colors: Mapping[str, str],
    figsize: tuple[float, float],
    alpha: float = 0.2,
) -> tuple[go.Figure, matplotlib.figure.Figure, Axes]:
    """A plotly figure and a matplotlib figure of :func:`add_bands`, and the matplotlib axes (to add to)."""
    fig = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=figsize)
    ax = mfig.add_subplot()
    add_bands(fig, ax, x, stats, colors, alpha=alpha)
    return fig, mfig, ax
