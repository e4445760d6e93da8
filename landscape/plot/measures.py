"""Measurements at a point or between two points: sharpness (:class:`SharpnessResult`), functional distance.

A :class:`~landscape.curvature.sharpness.SharpnessResult` or a :class:`~landscape.analyze.distance.FunctionalDistance`
is a number (with its samples, or a second rate), not a curve: each result is drawn at its own position along
the x axis, named by its label, so several of them (minima, radii, pairs of networks) stand side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.analyze.distance import FunctionalDistance
from landscape.curvature.sharpness import SharpnessResult
from landscape.plot._prepare import Frame, Line, given_labels, masked, results_of
from landscape.plot.style import Canvas, canvas_of, shows_canvas

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["plot_sharpness_values", "plot_functional_distance", "sharpness_label"]

_SAMPLES = {"worst_case": "restarts", "average_case": "samples", "m_sharpness": "batches"}
_SIZE = 11  # the marker of a measurement (plotly pixels), larger than its samples'


def sharpness_label(r: SharpnessResult) -> str:
    """What was measured, e.g. ``"worst_case l2 rho=0.05"`` or ``"m_sharpness (m=32) l2 elementwise rho=0.5"``."""
    m = f" (m={r.m})" if r.measure == "m_sharpness" else ""
    adaptive = "" if r.adaptive == "none" else f" {r.adaptive}"
    return f"{r.measure}{m} {r.norm}{adaptive} rho={r.radius:g}"


def _spread(x: float, n: int) -> np.ndarray:
    """``n`` positions right of ``x``, spread over a fifth of the gap to the next result (so samples do not overlap)."""
    return x + 0.12 + (np.linspace(0.0, 0.16, n) if n > 1 else np.zeros(n))


@shows_canvas
def plot_sharpness_values(
    results: SharpnessResult | Sequence[SharpnessResult],
    labels: Sequence[str] | None = None,
    *,
    samples: bool = True,
    log: bool = False,
    **canvas: Unpack[Canvas],
) -> Any:
    """Sharpness measurements side by side: each value with its standard error and the samples it came from.

    Result ``i`` is drawn at ``x = i``: its ``value`` (a large marker; the vertical bar is ``value +- stderr`` when
    the standard error is positive) and, to its right, its ``values``, the loss increases of its restarts
    (worst case: ``value`` is their largest), Monte Carlo samples (average case: their mean) or batches
    (m-sharpness: their mean).

    Args:
        results: One :class:`~landscape.curvature.sharpness.SharpnessResult` or several (e.g. one per minimum or
            radius; the measures may differ).
        labels: Names of the results, under their positions (default: what was measured, :func:`sharpness_label`).
        samples: Also draw each result's samples.
        log: Log y axis (values that are not positive are masked).
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``results`` are not sharpness results.
        ValueError: On a number of labels other than the results'.
    """
    items = results_of(results, SharpnessResult, "plot_sharpness_values")
    labs = given_labels(labels, len(items), "result", "results") or [sharpness_label(r) for r in items]
    curves = []
    for i, (r, lab) in enumerate(zip(items, labs)):
        v, se = float(r.value), float(r.stderr)
        name = f"{lab}: {v:.4g}" + (f" +- {se:.2g}" if se > 0 else "")
        curves.append(
            Line(np.array([i], float), masked(np.array([v]), log), name, slot=i, connect=False, marker_size=_SIZE)
        )
        if np.isfinite(se) and se > 0:
            bar = masked(np.array([v - se, v + se]), log)
            curves.append(Line(np.array([i, i], float), bar, slot=i, companion=True))
        vals = np.asarray(r.values, np.float64).reshape(-1)
        if samples and vals.size:
            what = _SAMPLES.get(r.measure, "samples")
            xs = _spread(i, vals.size)
            curves.append(
                Line(xs, masked(vals, log), "", slot=i, connect=False, companion=True, hover=[what] * len(xs))
            )
    measures = sorted({r.measure for r in items})
    draw, target, title = canvas_of("plot_sharpness_values", canvas, f"sharpness: {', '.join(measures)}")
    ylabel = "loss increase L(theta + delta) - L(theta)"
    frame = Frame(title=title, ylabel=ylabel, log=log, xticks=[(float(i), lab) for i, lab in enumerate(labs)])
    return draw.lines(target, curves, frame)


@shows_canvas
def plot_functional_distance(
    results: FunctionalDistance | Sequence[FunctionalDistance],
    labels: Sequence[str] | None = None,
    *,
    disagreement: bool = True,
    log: bool = False,
    **canvas: Unpack[Canvas],
) -> Any:
    """Functional distances between pairs of networks side by side (Im et al. Table 1's two columns).

    Result ``i`` is drawn at ``x = i``: its RMS output distance (a large marker, left axis) and, just right of it,
    its label disagreement rate (a smaller one, right axis in ``[0, 1]``).

    Args:
        results: One :class:`~landscape.analyze.distance.FunctionalDistance` or several.
        labels: Names of the pairs, under their positions (default ``"pair i"``).
        disagreement: Also draw the label disagreement rate on a secondary y axis.
        log: Log axis for the RMS distance (zeros are masked).
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title``, and ``fig`` (plotly) or ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``results`` are not functional distances.
        ValueError: On a number of labels other than the results'.
    """
    items = results_of(results, FunctionalDistance, "plot_functional_distance")
    labs = given_labels(labels, len(items), "result", "results") or [f"pair {i}" for i in range(len(items))]
    curves = []
    for i, (r, lab) in enumerate(zip(items, labs)):
        x = np.array([i], float)
        rms = f"{lab}: RMS {r.output} distance {r.rms:.4g}"
        curves.append(Line(x, masked(np.array([r.rms]), log), rms, slot=i, connect=False, marker_size=_SIZE))
        if disagreement:
            rate = f"{lab}: label disagreement {r.disagreement:.4g}"
            dots = masked(np.array([r.disagreement]))
            curves.append(Line(x + 0.12, dots, rate, slot=i, connect=False, secondary=True, companion=True))
    outputs = sorted({r.output for r in items})
    draw, target, title = canvas_of("plot_functional_distance", canvas, "functional distance between networks")
    frame = Frame(
        title=title,
        ylabel=f"RMS output distance ({', '.join(outputs)})",
        log=log,
        secondary="label disagreement",
        xticks=[(float(i), lab) for i, lab in enumerate(labs)],
    )
    return draw.lines(target, curves, frame)
