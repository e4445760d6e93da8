"""Shared training runs of the Im, Tao & Branson figures (``figures/im/``), cached on disk.

Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces". Every figure of the paper looks at
minima found by the seven methods of :data:`landscape.train.METHODS` from shared initial weights and the same
minibatch order, so the figures share one pool of runs: a run is a :class:`RunSpec` (method, initialization,
BatchNorm or not, an optimizer switch, an exotic initialization), trained once by :class:`ImRuns` and kept as a
two-snapshot :class:`~landscape.trajectory.Trajectory` (initial and final weights with their BatchNorm buffers;
a switch adds the switch point) whose metadata holds the per-epoch history. On disk a run lives in
``<cache>/<setup key>/<run key>/``, the keys hashing the settings and the training code of this module, so a
change of either retrains; a file lock lets concurrent figure processes wait for a run in progress.

Settings (:class:`ImSetup`), readings where the paper is silent:

- Quick scale: scikit-learn's 8x8 digits (1,344 training / 449 test images), a small VGG-style net
  (conv 16-pool-conv 32-pool-conv 64-pool, fc 64, dropout 0.25, with or without BatchNorm) or a small NIN
  (width 16), 20 epochs of batch 32, three initializations (two without BatchNorm). Full scale: the paper's
  (Sec. 3.4): CIFAR-10, the cifar.torch VGG (and NIN, width 192), 200 epochs of batch 128.
- Hyperparameters are :func:`landscape.train.default_hyperparameters` (Sec. 3.4 grids, doubled for RK2; Heun).
- Learning-rate schedule: the paper names its code, szagoruyko/cifar.torch, which halves the learning rate every 25
  of its 200 epochs (8 stages, final rate 1/128 of the first). Every run here does the same over its own length
  (``lr_stages`` equal stages, halving between them; an optimizer switch keeps the schedule: the new method starts
  at its own rate times the current factor). Without it the runs of the quick scale never converge: at a constant
  rate the training loss of SGD was still moving by 20-500% per epoch after 20 epochs (0.0011 -> 0.0062), so
  every premise "the runs converged" failed. Convergence is checked, not assumed (:func:`converged_premise`).
- Every run of one setup uses the same shuffling seed and the same dropout stream; only the initialization
  seed (``init``) and the optimizer differ.
- Per-epoch history: the running training loss, loss and accuracy over the whole training and test sets in
  eval mode, the Euclidean distance of the weights from the initial ones, and the number of gradient
  evaluations (loss calls with autograd on: an RK2 step counts two).
- Loss surfaces of BatchNorm nets are evaluated with batch statistics (``bn_mode="train"``) on a fixed subset of
  the training images: the running statistics of an endpoint do not belong to the points between endpoints.
  Nets without BatchNorm have nothing to choose.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import matplotlib.figure
import numpy as np

from figures.im._measures import (
    RISE_NATS,
    RISE_RATIO,
    converged_premise,
    first_crossing,
    grad_norm,
    no_difference,
    rise,
    rise_score,
    rises,
)
from figures.im._runs import ImRuns, Run, StepDecay, im_figure
from figures.im._settings import METHOD_LABELS, ImSetup, RunSpec
from figures.im._text import WordLSTM, ptb_dir, text_splits

__all__ = [  # the shared setup of the Im figures: defined here or in the private modules it gathers
    "LINESTYLES",
    "METHOD_LABELS",
    "RISE_NATS",
    "RISE_RATIO",
    "SOURCE",
    "Curve",
    "ImRuns",
    "ImSetup",
    "Run",
    "RunSpec",
    "StepDecay",
    "WordLSTM",
    "color",
    "converged_premise",
    "first_crossing",
    "grad_norm",
    "im_figure",
    "mpl_grid",
    "no_difference",
    "ptb_dir",
    "rise",
    "rise_score",
    "rises",
    "small_multiples",
    "text_splits",
]

SOURCE = "Im, Tao & Branson, An Empirical Analysis of Deep Network Loss Surfaces"
_COLORS = {
    "sgd": "#1f77b4",
    "momentum": "#17becf",
    "rmsprop": "#9467bd",
    "adadelta": "#8c564b",
    "adam": "#d62728",
    "sgd_rk2": "#2ca02c",
    "adam_rk2": "#ff7f0e",
}


def color(method: str) -> str:
    """The colour of a method in every Im figure."""
    return _COLORS.get(method, "#7f7f7f")


# --------------------------------------------------------------------------- drawing
def mpl_grid(rows: int, cols: int, width: float = 3.2, height: float = 2.6, **kw: Any) -> tuple[Any, np.ndarray]:
    """A pyplot-free matplotlib figure with a ``(rows, cols)`` array of axes (constrained layout)."""
    fig = matplotlib.figure.Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


LINESTYLES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
"""Line styles of successive initializations (plotly names; :func:`small_multiples` maps them to matplotlib)."""
_MPL_DASH = {
    "solid": "-",
    "dash": (0, (3, 1.5)),
    "dot": (0, (1, 1.5)),
    "dashdot": (0, (5, 1.5, 1, 1.5)),
    "longdash": (0, (9, 5)),
    "longdashdot": (0, (9, 2, 1, 2, 1, 2)),
}


def _dash(d: bool | str) -> tuple[Any, Any]:
    """``(plotly dash, matplotlib linestyle)`` of a :class:`Curve`'s ``dash``."""
    if isinstance(d, str):
        return (None if d == "solid" else d), _MPL_DASH[d]
    return ("dash" if d else None), ("--" if d else "-")


@dataclasses.dataclass
class Curve:
    """One curve of :func:`small_multiples`.

    Attributes:
        x: ``(n,)`` positions.
        y: ``(n,)`` values (non-finite values leave gaps).
        name: Legend entry (curves sharing a name share one legend entry).
        color: Line colour.
        dash: ``False``/``True`` (solid / dashed) or a :data:`LINESTYLES` name (one per initialization).
        width: Line width (points).
        marks: Positions along ``x`` to mark with a dot on the curve (e.g. the initial weights).
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    color: str = "#1f77b4"
    dash: bool | str = False
    width: float = 1.5
    marks: tuple[float, ...] = ()


def small_multiples(
    panels: Sequence[tuple[str, Sequence[Curve]]],
    *,
    cols: int,
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = False,
    vlines: Sequence[float] = (),
    width: float = 3.2,
    height: float = 2.5,
    sharey: bool = True,
) -> tuple[Any, Any]:
    """A grid of line plots, in plotly and matplotlib.

    Args:
        panels: ``(subplot title, curves)`` per subplot, row by row.
        cols: Subplots per row.
        xlabel: Title of every x axis.
        ylabel: Title of every y axis.
        title: Figure title.
        logy: Log y axes (values that are not positive are masked).
        vlines: x positions of dotted vertical reference lines in every subplot.
        width: Width of one matplotlib subplot (inches).
        height: Height of one matplotlib subplot (inches).
        sharey: One y range for all matplotlib subplots.

    Returns:
        ``(plotly.graph_objects.Figure, matplotlib.figure.Figure)``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = math.ceil(len(panels) / cols)
    pfig = make_subplots(
        rows,
        cols,
        subplot_titles=[t for t, _ in panels],
        horizontal_spacing=0.06,
        vertical_spacing=0.12 if rows > 1 else 0.1,
    )
    mfig, axes = mpl_grid(rows, cols, width, height, sharey=sharey)
    seen: set[str] = set()
    for i, (sub, curves) in enumerate(panels):
        r, c = divmod(i, cols)
        ax = axes[r, c]
        for cv in curves:
            y = np.asarray(cv.y, np.float64)
            y = np.where(np.isfinite(y) & ((y > 0) | (not logy)), y, np.nan)
            pfig.add_trace(
                go.Scatter(
                    x=cv.x,
                    y=y,
                    mode="lines",
                    name=cv.name,
                    legendgroup=cv.name,
                    showlegend=cv.name not in seen,
                    connectgaps=False,
                    line={"color": cv.color, "width": cv.width, "dash": _dash(cv.dash)[0]},
                ),
                row=r + 1,
                col=c + 1,
            )
            ax.plot(
                cv.x,
                np.ma.masked_invalid(y),
                color=cv.color,
                lw=cv.width * 0.8,
                ls=_dash(cv.dash)[1],
                label=cv.name if cv.name not in seen else None,
            )
            if cv.marks:
                my = np.interp(cv.marks, cv.x, np.nan_to_num(y, nan=np.nanmax(y) if np.isfinite(y).any() else 0.0))
                pfig.add_trace(
                    go.Scatter(
                        x=list(cv.marks),
                        y=my,
                        mode="markers",
                        showlegend=False,
                        marker={"color": cv.color, "size": 6},
                        hoverinfo="skip",
                    ),
                    row=r + 1,
                    col=c + 1,
                )
                ax.plot(cv.marks, my, "o", color=cv.color, ms=3)
            seen.add(cv.name)
        for v in vlines:
            ax.axvline(v, color="gray", lw=0.8, ls=":")
            pfig.add_vline(x=v, line_dash="dot", line_color="gray", line_width=1, row=r + 1, col=c + 1)
        ax.set_title(sub, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if logy and any(np.any(np.asarray(cv.y) > 0) for cv in curves):
            ax.set_yscale("log")
        if r == rows - 1 or i + cols >= len(panels):
            ax.set_xlabel(xlabel, fontsize=8)
        if c == 0:
            ax.set_ylabel(ylabel, fontsize=8)
    for j in range(len(panels), rows * cols):
        axes.flat[j].set_axis_off()
    handles, labels = [], []
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        mfig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=7)
    mfig.suptitle(title, fontsize=10)
    pfig.update_layout(template="plotly_white", title=title, height=280 * rows + 80)
    pfig.update_xaxes(title_text=xlabel, title_font={"size": 11})
    if logy:
        pfig.update_yaxes(type="log")
    pfig.update_yaxes(title_text=ylabel, col=1, title_font={"size": 11})
    return pfig, mfig
