"""Renderers for saturation results (Persistent Neurons Fig. 14-15): they draw, never compute.

``plot_saturation_curves`` draws a percentile of each layer's activations over the epochs, one
colour per layer and one line style per run; the first run is drawn solid, as the paper's plain
model ("The solid line is the plain model's results"). ``plot_activation_histograms`` draws the
normalized activation histograms at chosen epochs, one panel per epoch (Fig. 15: epochs 15 and 30).
Both take :class:`~landscape.analyze.saturation.SaturationHistory` objects (or one measurement of
:func:`~landscape.analyze.saturation.measure_saturation`, a one-epoch history at epoch 0) and return a plotly or
matplotlib figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.analyze.saturation_results import SaturationHistory, SaturationStats
from landscape.plot._prepare import Frame, Line, Panel, PanelGrid, labels_of, results_of
from landscape.plot.style import LINESTYLES, Backend, Canvas, canvas_of, color, dispatch, shows_canvas

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["plot_saturation_curves", "plot_activation_histograms"]


Histories = (
    SaturationHistory | Mapping[str, SaturationStats] | Sequence[SaturationHistory | Mapping[str, SaturationStats]]
)


def _as_history(x: Any) -> Any:
    """One measurement (``{layer: SaturationStats}``) as a one-epoch history at epoch 0.

    Anything else is returned as it is (``results_of`` then names what it is not).
    """
    if isinstance(x, Mapping) and x and all(isinstance(v, SaturationStats) for v in x.values()):
        return SaturationHistory.from_stats([x], [0])
    return x


def _histories(
    histories: Histories, labels: Sequence[str] | None, what: str
) -> tuple[list[SaturationHistory], list[str]]:
    # A dict is no Sequence: convert it (or each in a list) before results_of checks the types.
    given = [_as_history(h) for h in histories] if isinstance(histories, Sequence) else _as_history(histories)
    hs = results_of(given, SaturationHistory, what)
    return hs, labels_of(hs, labels)


def _layers(h: SaturationHistory, layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return list(h.layers)
    if isinstance(layers, str):  # else taken letter by letter
        raise TypeError(f"layers must be a list of layer names; got the string {layers!r} (for one, pass [{layers!r}])")
    missing = [x for x in layers if x not in h.layers]
    if missing:
        raise KeyError(f"layers {missing} are not in the history {h.label!r}; it has {h.layers}")
    return list(layers)


def _curves(
    hs: Sequence[SaturationHistory], layers: Sequence[str] | None
) -> Iterator[tuple[int, SaturationHistory, str, str, str]]:
    """``(run, history, layer, colour, dash)`` of each curve to draw, run by run.

    One colour per layer (in the order the layers first appear), one line style per run (the first run solid).
    """
    seen: list[str] = []
    for r, h in enumerate(hs):
        for name in _layers(h, layers):
            if name not in seen:
                seen.append(name)
            yield r, h, name, color(seen.index(name)), LINESTYLES[r % len(LINESTYLES)]


@shows_canvas
def plot_saturation_curves(
    histories: Histories,
    labels: Sequence[str] | None = None,
    *,
    q: float = 98.0,
    layers: Sequence[str] | None = None,
    **canvas: Unpack[Canvas],
) -> Any:
    """Percentile ``q`` of each layer's activations against the epoch, for one or several runs.

    Args:
        histories: One history or several (e.g. plain and persistent runs); the first is drawn solid. A
            measurement of :func:`~landscape.analyze.saturation.measure_saturation` (``{layer: SaturationStats}``)
            counts as a history of one epoch, 0.
        labels: Run names (default: each history's ``label``).
        q: Percentile level to draw (must have been recorded).
        layers: Layers to draw (default: all of each history).
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        KeyError: If ``q`` or a layer was not recorded.
    """
    hs, labs = _histories(histories, labels, "plot_saturation_curves")
    default = f"{q:g}th percentile of activation values" + (" (|a|)" if hs[0].value == "abs" else "")
    draw, target, title = canvas_of("plot_saturation_curves", canvas, default)  # title="": none, as every plot
    curves = [
        Line(h.epochs, np.asarray(h.curve(name, q), np.float64), f"{labs[r]} · {name}", markers=True, color=c, dash=d)
        for r, h, name, c, d in _curves(hs, layers)
    ]
    return draw.lines(target, curves, Frame(title=title, xlabel="epoch", ylabel=f"p{q:g} of activation"))


def plot_activation_histograms(
    histories: Histories,
    epochs: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
    backend: Backend | str = Backend.PLOTLY,
    title: str | None = None,
) -> Any:
    """Normalized activation histograms (shares summing to one) at chosen epochs, one panel per epoch.

    Args:
        histories: One history or several (e.g. plain and championship, Fig. 15); the first is drawn solid. A
            measurement of :func:`~landscape.analyze.saturation.measure_saturation` (``{layer: SaturationStats}``)
            counts as a history of one epoch, 0 (the panel ``"epoch 0"``).
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
    draw, _ = dispatch(backend)
    hs, labs = _histories(histories, labels, "plot_activation_histograms")
    if epochs is not None and (isinstance(epochs, str) or not isinstance(epochs, Sequence | np.ndarray)):
        raise TypeError(f"epochs must be a sequence of epochs (e.g. [15, 30]), got {epochs!r}")
    eps = [float(e) for e in (hs[0].histogram_epochs if epochs is None else epochs)]
    if not eps:
        raise ValueError("no epochs to draw: the first history kept no histogram; pass epochs=...")
    xlabel = "|activation|" if hs[0].value == "abs" else "activation"
    panels = []
    for k, e in enumerate(eps):
        entries = []
        for r, h, name, c, dash in _curves(hs, layers):
            shares, edges = h.normalized_histogram(e, name)
            centres = (edges[:-1] + edges[1:]) / 2
            entries.append(
                Line(centres, np.asarray(shares, np.float64), f"{labs[r]} · {name}", step="mid", color=c, dash=dash)
            )
        panels.append(Panel(f"epoch {e:g}", entries, xlabel=xlabel, ylabel="share of values" if k == 0 else None))
    title = title or "Normalized histogram of activation values"
    return draw.panels(PanelGrid(panels, len(eps), title, sharey=True, size=(4.8, 3.8), legend="first"))
