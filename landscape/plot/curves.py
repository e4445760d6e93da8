"""Curves over one coordinate: lines, functional distance, sharpness, mode-connecting curves, bands.

Each function prepares :class:`~landscape.plot._prepare.Line` objects (plain data) and hands them to the
backend's ``lines`` (:mod:`landscape.plot._plotly` or :mod:`landscape.plot._matplotlib`). Non-finite values
are masked (a gap); with ``log=True`` values that are not positive are masked too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape._options import parse_option
from landscape.analyze.barrier import BarrierResult
from landscape.analyze.curves import CurveResult
from landscape.analyze.distance import DistanceResult
from landscape.analyze.slice_results import LineResult
from landscape.curvature.training import CurvatureTrace
from landscape.plot._prepare import Frame, Line, labels_of, masked, results_of, scalar_metric
from landscape.plot.style import Canvas, XAxis, canvas_of, shows_canvas

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["plot_line", "plot_distance", "plot_sharpness", "plot_curve_vs_line", "plot_lines", "plot_bands"]


def line_curves(
    results: LineResult | BarrierResult | Sequence[LineResult | BarrierResult],
    labels: Sequence[str] | None,
    metric: str,
    accuracy: bool,
    x: XAxis | str,
    log: bool,
) -> tuple[list[Line], dict[float, str], str]:
    """Curves of line results (each with its dotted accuracy), the anchors' marks and the x-axis title.

    ``x="distance"`` turns alphas into Euclidean distances from the first anchor (``alpha * ||b - a||``);
    ``x="alpha"`` turns distances of an absolute-distance line into fractions of ``||ref - theta_min||``.
    A :class:`BarrierResult` is its path over alpha, with the endpoints marked at 0 and 1.

    Raises:
        TypeError: If ``results`` are not line (or barrier) results.
        KeyError: If a result lacks the metric (or the accuracy).
        ValueError: On ``x="distance"`` for a barrier (it keeps no endpoint weights to measure it).
    """
    items = [_line_of(r) for r in results_of(results, (LineResult, BarrierResult), "plot_line")]
    labs = labels_of(items, labels)
    xa = parse_option(XAxis, x, "x axis")
    names = {r.coord_name for r in items}
    if xa is XAxis.AUTO and len(names) > 1:
        raise ValueError("the results mix alpha and distance coordinates; pass x='alpha' or x='distance'")
    want = next(iter(names)) if xa is XAxis.AUTO else xa.value
    curves, marks = [], {}
    for i, (r, lab) in enumerate(zip(items, labs)):
        y = masked(scalar_metric(r.metrics, metric, f"line {lab!r}"), log=log)
        if accuracy and "accuracy" not in r.metrics:
            raise KeyError(f"line {lab!r} has no accuracy; compute it with metrics=('loss', 'accuracy')")
        coords, at = np.asarray(r.coords, np.float64), np.asarray(r.anchor_coords, np.float64)
        if want != r.coord_name:
            if r.anchors.size == 0:
                raise ValueError(
                    f"{lab!r} is a BarrierResult, which keeps no endpoint weights: it is drawn over alpha only; "
                    "for distances evaluate the path with landscape.line(a, a, b, data) and draw that"
                )
            a = np.asarray(r.anchors, np.float64)
            length = float(np.linalg.norm(a[1] - a[0])) if r.coord_name == "alpha" else float(at[-1])
            if not length > 0:
                raise ValueError(f"line {lab!r} has coinciding anchors: alpha and distance are not interchangeable")
            scale = length if want == "distance" else 1.0 / length
            coords, at = coords * scale, at * scale
        curves.append(Line(coords, y, lab, slot=i, markers=True, marker_size=4))
        if accuracy:
            acc = masked(r.metrics["accuracy"])
            curves.append(Line(coords, acc, f"{lab} accuracy", slot=i, dash="dot", secondary=True, companion=True))
        marks.update({float(m): name for m, name in zip(at, r.anchor_labels)})
    return curves, marks, ("alpha" if want == "alpha" else "distance from the first point")


def _line_of(r: LineResult | BarrierResult) -> LineResult:
    """``r`` as a line over alpha: a barrier's path with its endpoints as the anchors (alpha 0 and 1).

    An unnamed barrier is labelled by its path (``"line"``, ``"line+repair"``...).

    A barrier keeps no weights, so its ``anchors`` are empty (``(0, 0)``): only ``x="distance"`` needs them.
    """
    if isinstance(r, LineResult):
        return r
    ends = ["a", "b"] if r.path.startswith("line") else ["start", "end"]
    return LineResult(
        coords=np.asarray(r.alphas, np.float64),
        metrics=dict(r.metrics),
        anchors=np.zeros((0, 0)),
        anchor_coords=np.array([0.0, 1.0]),
        anchor_labels=ends,
        label=r.label or r.path,  # "line" vs "line+repair" tells overlaid barriers apart
        provenance=r.provenance,
    )


@shows_canvas
def plot_line(
    results: LineResult | BarrierResult | Sequence[LineResult | BarrierResult],
    labels: Sequence[str] | None = None,
    *,
    metric: str = "loss",
    accuracy: bool = False,
    x: XAxis | str = XAxis.AUTO,
    log: bool = False,
    anchors: bool = True,
    **canvas: Unpack[Canvas],
) -> Any:
    """A metric along one or several lines (interpolations or absolute-distance lines), overlaid.

    Args:
        results: One :class:`LineResult` or several (e.g. runs of different optimizers); a
            :class:`~landscape.analyze.barrier.BarrierResult` (:func:`~landscape.analyze.barrier.loss_barrier`)
            draws its path over alpha.
        labels: Legend entries (default: each result's ``label``, else ``"run i"``).
        metric: Metric to draw (``"loss"``, ``"accuracy"`` or a custom scalar metric).
        accuracy: Also draw the accuracy, dotted, on a secondary y axis.
        x: ``"auto"`` (the results' own coordinate), ``"alpha"`` or ``"distance"`` (Euclidean distance from
            the first anchor, ``alpha * ||b - a||``).
        log: Log y axis (values that are not positive are masked).
        anchors: Mark the anchors' positions (alpha 0 and 1, or the minimum and the reference).
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``results`` are not line (or barrier) results.
        KeyError: If a result lacks ``metric`` (or the accuracy).
        ValueError: On unknown options, mixed coordinates with ``x="auto"``, or ``x="distance"`` for a barrier.
    """
    curves, marks, xlabel = line_curves(results, labels, metric, accuracy, x, log)
    draw, target, title = canvas_of("plot_line", canvas, f"{metric} along the line")
    vlines = list(marks.items()) if anchors else []
    frame = Frame(title=title, xlabel=xlabel, ylabel=metric, log=log, secondary="accuracy", vlines=vlines)
    return draw.lines(target, curves, frame)


@shows_canvas
def plot_distance(
    results: DistanceResult | Sequence[DistanceResult],
    labels: Sequence[str] | None = None,
    *,
    disagreement: bool = True,
    log: bool = False,
    **canvas: Unpack[Canvas],
) -> Any:
    """Functional distance from the first endpoint along interpolation paths (Im et al. Table 1).

    Args:
        results: One :class:`DistanceResult` or several.
        labels: Legend entries (default: each result's ``label``, else ``"run i"``).
        disagreement: Also draw the label disagreement rate, dotted, on a secondary y axis.
        log: Log axis for the RMS distance (zeros, e.g. at alpha 0, are masked).
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    items = results_of(results, DistanceResult, "plot_distance")
    curves = []
    for i, (r, lab) in enumerate(zip(items, labels_of(items, labels))):
        name = f"{lab} RMS distance ({r.output})"
        curves.append(Line(r.alphas, masked(r.rms, log=log), name, slot=i, markers=True))
        if disagreement:
            rate = masked(r.disagreement)
            curves.append(
                Line(r.alphas, rate, f"{lab} label disagreement", slot=i, dash="dot", secondary=True, companion=True)
            )
    draw, target, title = canvas_of("plot_distance", canvas, "functional distance from the first network")
    frame = Frame(title=title, xlabel="alpha", ylabel="RMS output distance", log=log, secondary="label disagreement")
    return draw.lines(target, curves, frame)


def sharpness_curves(
    traces: CurvatureTrace | Sequence[CurvatureTrace],
    labels: Sequence[str] | None,
    eigenvalue: int,
    layer: str | None,
    log: bool,
    threshold: bool,
) -> tuple[list[Line], str]:
    """Curves of :func:`plot_sharpness` (each run's eigenvalue, then its ``2 / lr`` step line) and the y-axis label."""
    items = results_of(traces, CurvatureTrace, "plot_sharpness")
    curves = []
    for i, (tr, name) in enumerate(zip(items, labels_of(items, labels))):
        if layer is not None:
            if layer not in tr.layer_names:
                raise KeyError(f"{name}: no layer {layer!r}; the trace has {tr.layer_names} (per_layer=True?)")
            v = tr.layer_eigenvalues[:, tr.layer_names.index(layer)]
        else:
            if not 0 <= eigenvalue < tr.eigenvalues.shape[1]:
                raise ValueError(f"{name}: eigenvalue {eigenvalue} of a trace with k={tr.eigenvalues.shape[1]}")
            v = tr.eigenvalues[:, eigenvalue]
        steps = np.asarray(tr.steps, np.float64)
        curves.append(Line(steps, masked(v, log), name, slot=i, markers=True, marker_size=4))
        lim = masked(tr.threshold, log)
        if threshold and np.isfinite(lim).any():
            curves.append(Line(steps, lim, f"{name}: 2/lr", slot=i, dash="dash", step="post", companion=True))
    what = "top eigenvalue" if eigenvalue == 0 else f"eigenvalue {eigenvalue + 1}"
    return curves, f"{what} of the Hessian" + (f" (layer {layer})" if layer is not None else "")


@shows_canvas
def plot_sharpness(
    traces: CurvatureTrace | Sequence[CurvatureTrace],
    labels: Sequence[str] | None = None,
    *,
    eigenvalue: int = 0,
    layer: str | None = None,
    threshold: bool = True,
    log: bool = False,
    **canvas: Unpack[Canvas],
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
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``traces`` are not curvature traces.
        KeyError: On a layer the traces do not have.
        ValueError: On an eigenvalue index beyond ``k`` or unknown options.
    """
    curves, ylabel = sharpness_curves(traces, labels, eigenvalue, layer, log, threshold)
    draw, target, title = canvas_of("plot_sharpness", canvas, "sharpness during training")
    return draw.lines(target, curves, Frame(title=title, xlabel="step", ylabel=ylabel, log=log))


def curve_vs_line_curves(
    line: LineResult | None, curves: CurveResult | Sequence[CurveResult], metric: str, labels: Sequence[str] | None
) -> list[Line]:
    """The straight line (dashed) and mode-connecting curves over ``t`` in ``[0, 1]``.

    Raises:
        TypeError: If ``curves`` are not curve results or ``line`` is not a line result.
    """
    items = results_of(curves, CurveResult, "plot_curve_vs_line")
    labs = labels_of(items, labels)
    out = []
    if line is not None:
        if not isinstance(line, LineResult) or line.coord_name != "alpha":
            raise TypeError("line must be a LineResult over alpha (landscape.line between the two endpoints)")
        y = masked(scalar_metric(line.metrics, metric, "line"))
        out.append(Line(np.asarray(line.coords, np.float64), y, line.label or "line", dash="dash"))
    for r, lab in zip(items, labs):
        y = masked(scalar_metric(r.metrics, metric, f"curve {lab!r}"))
        out.append(Line(np.asarray(r.ts, np.float64), y, lab if labels or r.label else r.shape))
    return [dataclasses.replace(c, slot=i, markers=True, marker_size=4) for i, c in enumerate(out)]


@shows_canvas
def plot_curve_vs_line(
    line: LineResult | None,
    curves: CurveResult | Sequence[CurveResult],
    labels: Sequence[str] | None = None,
    *,
    metric: str = "loss",
    **canvas: Unpack[Canvas],
) -> Any:
    """A metric along the straight line and along mode-connecting curves, over ``t`` (alpha) in ``[0, 1]``.

    Args:
        line: A :class:`LineResult` between the curve's endpoints (or ``None``).
        curves: One :class:`~landscape.analyze.curves.CurveResult` or several.
        labels: Legend entries of the curves (default: each result's label, else its shape).
        metric: Metric to draw.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.
    """
    draw, target, title = canvas_of("plot_curve_vs_line", canvas, f"{metric}: straight line vs curve")
    frame = Frame(title=title, xlabel="t (alpha)", ylabel=metric)
    return draw.lines(target, curve_vs_line_curves(line, curves, metric, labels), frame)


@shows_canvas
def plot_lines(
    lines: Line | Sequence[Line],
    *,
    xlabel: str | None = None,
    ylabel: str | None = None,
    log: bool = False,
    **canvas: Unpack[Canvas],
) -> Any:
    """Overlay prepared curves (:class:`~landscape.plot.Line`, with their styles, bands and dots).

    The building block of the other 1-D plots, for curves that are not a result object (a figure's own
    measurements). Titles and labels that are ``None`` leave those of ``fig``/``ax`` as they are.

    Args:
        lines: One curve or several.
        xlabel: Title of the x axis.
        ylabel: Title of the y axis.
        log: Log y axis.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``lines`` are not :class:`~landscape.plot.Line` objects.
    """
    items = results_of(lines, Line, "plot_lines")
    draw, target, title = canvas_of("plot_lines", canvas)
    return draw.lines(target, items, Frame(title=title, xlabel=xlabel, ylabel=ylabel, log=log))


@shows_canvas
def plot_bands(
    x: np.ndarray,
    means: np.ndarray | Sequence[np.ndarray],
    spreads: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    colors: Sequence[str] | None = None,
    alpha: float = 0.2,
    xlabel: str | None = None,
    ylabel: str | None = None,
    log: bool = False,
    **canvas: Unpack[Canvas],
) -> Any:
    """Mean curves with a band of ``mean +- spread`` each (e.g. over seeds: the standard deviation).

    Args:
        x: ``(n,)`` positions (shared by all curves).
        means: ``(k, n)`` mean values, one row per curve (or ``(n,)`` for one curve).
        spreads: ``(k, n)`` half-widths of the bands, same shape as ``means``.
        labels: ``k`` legend entries.
        colors: ``k`` colours (default: the palette, counted after the curves already on ``fig``/``ax``).
        alpha: Opacity of the bands.
        xlabel: Title of the x axis (``None``: left as it is).
        ylabel: Title of the y axis (``None``: left as it is).
        log: Log y axis.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        ValueError: If the shapes, labels or colours do not match.
    """
    mu = np.atleast_2d(np.asarray(means, np.float64))
    sd = np.atleast_2d(np.asarray(spreads, np.float64))
    xs = np.asarray(x, np.float64)
    if mu.shape != sd.shape or mu.shape[1] != len(xs):
        raise ValueError(f"means {mu.shape} and spreads {sd.shape} must both be (curves, {len(xs)})")
    if len(labels) != len(mu) or (colors is not None and len(colors) != len(mu)):
        raise ValueError(f"need one label (and colour) per curve: {len(mu)} curves, {len(labels)} labels")
    curves = [
        Line(xs, masked(m, log=log), lab, None if colors is None else colors[i], slot=i, spread=s, band_alpha=alpha)
        for i, (m, s, lab) in enumerate(zip(mu, sd, labels))
    ]
    draw, target, title = canvas_of("plot_bands", canvas)
    return draw.lines(target, curves, Frame(title=title, xlabel=xlabel, ylabel=ylabel, log=log))
