"""Renderers for saturation results (Persistent Neurons Fig. 14-15): they draw, never compute.

``plot_saturation_curves`` draws a percentile of each layer's activations over the epochs, one
colour per layer and one line style per run; the first run is drawn solid, as the paper's plain
model ("The solid line is the plain model's results"). ``plot_activation_histograms`` draws the
normalized activation histograms at chosen epochs, one panel per epoch (Fig. 15: epochs 15 and 30).
Both take :class:`~landscape.analyze.saturation_results.SaturationHistory` objects and return a plotly or matplotlib
figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from landscape._options import parse_option
from landscape.analyze.saturation_results import SaturationHistory
from landscape.plot.core import COLORS as _COLORS
from landscape.plot.core import Backend

__all__ = ["plot_saturation_curves", "plot_activation_histograms"]

_PLOTLY_DASH = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
_MPL_DASH = ["-", "--", ":", "-.", (0, (8, 2)), (0, (8, 2, 2, 2))]


def _histories(
    histories: SaturationHistory | Sequence[SaturationHistory], labels: Sequence[str] | None
) -> tuple[list[SaturationHistory], list[str]]:
    hs = [histories] if isinstance(histories, SaturationHistory) else list(histories)
    if not hs or not all(isinstance(h, SaturationHistory) for h in hs):
        raise TypeError("pass a SaturationHistory or a sequence of them (e.g. SaturationRecorder(...).history_)")
    if labels is None:
        labels = [h.label or f"run {i}" for i, h in enumerate(hs)]
    if len(labels) != len(hs):
        raise ValueError(f"got {len(labels)} labels for {len(hs)} histories")
    return hs, list(labels)


def _layers(h: SaturationHistory, layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return list(h.layers)
    missing = [x for x in layers if x not in h.layers]
    if missing:
        raise KeyError(f"layers {missing} are not in the history {h.label!r}; it has {h.layers}")
    return list(layers)


def plot_saturation_curves(
    histories: SaturationHistory | Sequence[SaturationHistory],
    labels: Sequence[str] | None = None,
    *,
    q: float = 98.0,
    layers: Sequence[str] | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """Percentile ``q`` of each layer's activations against the epoch, for one or several runs.

    Args:
        histories: One history or several (e.g. plain and persistent runs); the first is drawn solid.
        labels: Run names (default: each history's ``label``).
        q: Percentile level to draw (must have been recorded).
        layers: Layers to draw (default: all of each history).
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.
        fig: Existing plotly figure to draw into (plotly backend).
        ax: Existing matplotlib axes to draw into (matplotlib backend).

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        KeyError: If ``q`` or a layer was not recorded.
    """
    be = parse_option(Backend, backend, "backend")
    hs, labs = _histories(histories, labels)
    title = title or f"{q:g}th percentile of activation values" + (" (|a|)" if hs[0].value == "abs" else "")
    lines = []  # (x, y, layer index, run index, name)
    all_layers: list[str] = []
    for r, h in enumerate(hs):
        for name in _layers(h, layers):
            if name not in all_layers:
                all_layers.append(name)
            lines.append((h.epochs, h.curve(name, q), all_layers.index(name), r, f"{labs[r]} · {name}"))
    if be is Backend.PLOTLY:
        import plotly.graph_objects as go

        fig = fig if fig is not None else go.Figure()
        for x, y, li, r, name in lines:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=name,
                    line={"color": _COLORS[li % len(_COLORS)], "dash": _PLOTLY_DASH[r % len(_PLOTLY_DASH)]},
                )
            )
        fig.update_layout(
            title=title, xaxis_title="epoch", yaxis_title=f"p{q:g} of activation", template="plotly_white"
        )
        return fig
    import matplotlib.pyplot as plt

    if ax is None:
        figure, ax = plt.subplots(figsize=(6.4, 4.2))
    else:
        figure = ax.figure
    for x, y, li, r, name in lines:
        ax.plot(
            x,
            y,
            color=_COLORS[li % len(_COLORS)],
            linestyle=_MPL_DASH[r % len(_MPL_DASH)],
            marker="o",
            markersize=3,
            label=name,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"p{q:g} of activation")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return figure


def plot_activation_histograms(
    histories: SaturationHistory | Sequence[SaturationHistory],
    epochs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
) -> Any:
    """Normalized activation histograms (shares summing to one) at chosen epochs, one panel per epoch.

    Args:
        histories: One history or several (e.g. plain and championship, Fig. 15); the first is drawn solid.
        epochs: Epochs to show (default: the histogram epochs of the first history).
        labels: Run names (default: each history's ``label``).
        layers: Layers to draw (default: all).
        backend: ``"plotly"`` or ``"matplotlib"``.
        title: Figure title.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        KeyError: If a history kept no histogram at one of ``epochs``.
    """
    be = parse_option(Backend, backend, "backend")
    hs, labs = _histories(histories, labels)
    eps = [float(e) for e in (hs[0].histogram_epochs if epochs is None else epochs)]
    if not eps:
        raise ValueError("no epochs to draw: the first history kept no histogram; pass epochs=...")
    title = title or "Normalized histogram of activation values"
    panels = []  # per epoch: list of (centres, shares, layer index, run index, name)
    all_layers: list[str] = []
    for e in eps:
        entries = []
        for r, h in enumerate(hs):
            for name in _layers(h, layers):
                if name not in all_layers:
                    all_layers.append(name)
                shares, edges = h.normalized_histogram(e, name)
                entries.append(((edges[:-1] + edges[1:]) / 2, shares, all_layers.index(name), r, f"{labs[r]} · {name}"))
        panels.append(entries)
    xlabel = "|activation|" if hs[0].value == "abs" else "activation"
    if be is Backend.PLOTLY:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=len(eps), subplot_titles=[f"epoch {e:g}" for e in eps], shared_yaxes=True)
        for c, entries in enumerate(panels, start=1):
            for x, y, li, r, name in entries:
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="lines",
                        name=name,
                        legendgroup=name,
                        showlegend=c == 1,
                        line={
                            "shape": "hvh",
                            "color": _COLORS[li % len(_COLORS)],
                            "dash": _PLOTLY_DASH[r % len(_PLOTLY_DASH)],
                        },
                    ),
                    row=1,
                    col=c,
                )
            fig.update_xaxes(title_text=xlabel, row=1, col=c)
        fig.update_yaxes(title_text="share of values", row=1, col=1)
        fig.update_layout(title=title, template="plotly_white")
        return fig
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(eps), figsize=(4.8 * len(eps), 3.8), sharey=True, squeeze=False)
    for ax, e, entries in zip(axes[0], eps, panels):
        for x, y, li, r, name in entries:
            ax.step(
                x, y, where="mid", color=_COLORS[li % len(_COLORS)], linestyle=_MPL_DASH[r % len(_MPL_DASH)], label=name
            )
        ax.set_title(f"epoch {e:g}")
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("share of values")
    axes[0][0].legend(fontsize="small")
    figure.suptitle(title)
    return figure
