"""Shared training runs of the Im, Tao & Branson figures (``figures/im/``), cached on disk.

Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces". Every figure of the paper looks at
minima found by the seven methods of :data:`landscape.train.METHODS` from shared initial weights and the same
minibatch order, so the figures share one pool of runs: a run is a :class:`RunSpec` (method, initialization,
BatchNorm or not, an optimizer switch, an exotic initialization), trained once by :class:`ImRuns` and kept as a
two-snapshot :class:`~landscape.trajectory.Trajectory` (initial and final weights with their BatchNorm buffers;
a switch adds the switch point) whose metadata holds the per-epoch history. On disk a run lives in
``<cache>/<setup key>/<run key>/``, the keys hashing the settings and the training code
(:mod:`figures.im._training`), so a change of either retrains; a file lock lets concurrent figure processes wait for
a run in progress. A switched run continues from its plain run's trainer state at the switch, kept in
``<cache>/<setup key>/_states/`` by whichever figure trained the plain run (:mod:`figures.im._states`).

Settings (:class:`ImSetup`), readings where the paper is silent:

- Quick scale: scikit-learn's 8x8 digits (1,344 training / 449 test images), a small VGG-style net
  (conv 16-pool-conv 32-pool-conv 64-pool, fc 64, dropout 0.25, with or without BatchNorm) or a small NIN
  (width 16), 20 epochs of batch 32, three initializations (two without BatchNorm). Full scale: the paper's
  (Sec. 3.1, 3.4): CIFAR-10, the cifar.torch VGG and NIN (width 192, as cifar.torch's ``models/nin.lua``), 200 epochs
  of batch 128.
- Hyperparameters are :func:`landscape.train.default_hyperparameters` (rates from the Sec. 3.4 grids, doubled for
  RK2; the RK2 methods use Heun's coefficients, chosen here: the paper does not say which its Sec. 4 runs use).
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
from collections.abc import Sequence
from typing import Any

import matplotlib.figure
import numpy as np

from figures.contract import Panel as GalleryPanel
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
from landscape.plot import LINESTYLES, PALETTE, Line, Panel
from landscape.plot import small_multiples as plot_small_multiples

__all__ = [  # the shared setup of the Im figures: defined here or in the private modules it gathers
    "LINESTYLES",
    "METHOD_LABELS",
    "RISE_NATS",
    "RISE_RATIO",
    "GALLERY",
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
    "history_curve",
    "im_figure",
    "init_dash",
    "mpl_grid",
    "multiples_panels",
    "no_difference",
    "ptb_dir",
    "rise",
    "rise_score",
    "rises",
    "small_multiples",
    "switching_panels",
    "text_splits",
]

GALLERY: dict[str, Any] = {"paper": "im", "scales": ("medium",)}
"""How every Im figure registers with the gallery (``register_figure(name, title=..., **GALLERY)``): paper ``im``,
with a medium setting."""
_COLORS = {  # method -> colour of the one palette
    "sgd": PALETTE[0],
    "momentum": PALETTE[9],
    "rmsprop": PALETTE[4],
    "adadelta": PALETTE[5],
    "adam": PALETTE[3],
    "sgd_rk2": PALETTE[2],
    "adam_rk2": PALETTE[1],
}


def color(method: str) -> str:
    """The colour of a method in every Im figure."""
    return _COLORS.get(method, "#7f7f7f")


def init_dash(k: int) -> str:
    """The line style of initialization ``k`` in every Im figure (:data:`LINESTYLES` in turn, one per init)."""
    return LINESTYLES[k % len(LINESTYLES)]


# --------------------------------------------------------------------------- drawing
def mpl_grid(rows: int, cols: int, width: float = 3.2, height: float = 2.6, **kw: Any) -> tuple[Any, np.ndarray]:
    """A pyplot-free matplotlib figure with a ``(rows, cols)`` array of axes (constrained layout)."""
    fig = matplotlib.figure.Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


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
    """A grid of line plots, in plotly and matplotlib (:func:`landscape.plot.small_multiples`).

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
    items = [Panel(sub, [_line(cv) for cv in curves], logy=logy, vlines=tuple(vlines)) for sub, curves in panels]
    kw: dict[str, Any] = {
        "cols": cols,
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "sharey": sharey,
        "size": (width, height),
    }
    return plot_small_multiples(items, **kw), plot_small_multiples(items, backend="matplotlib", **kw)


def _line(cv: Curve) -> Line:
    """The package's :class:`~landscape.plot.Line` of a :class:`Curve`."""
    dash = cv.dash if isinstance(cv.dash, str) else ("dash" if cv.dash else "solid")
    return Line(np.asarray(cv.x), np.asarray(cv.y), cv.name, cv.color, dash=dash, width=cv.width, dots=tuple(cv.marks))


def history_curve(run: Run, metric: str, name: str, color: str, *, scale: float = 1.0, **style: Any) -> Curve:
    """A column of a run's per-epoch history as a :class:`Curve`: x the epochs ``0..E``, y ``scale`` times it.

    Args:
        run: The run.
        metric: The history column (``"surface_loss"``, ``"test_accuracy"``, ``"dist_init"``...).
        name: Legend entry.
        color: Line colour.
        scale: Factor on the values (100: fractions as percent).
        **style: ``dash``, ``width`` or ``marks`` of the :class:`Curve`.
    """
    return Curve(np.arange(len(run.history)), scale * run.curve(metric), name, color, **style)


def multiples_panels(
    rows: Sequence[tuple[str, Sequence[tuple[str, Sequence[Curve]]], str, str, str]], **options: Any
) -> list[GalleryPanel]:
    """Gallery panels of :func:`small_multiples`, one per row ``(key, subplots, xlabel, ylabel, title)``.

    Args:
        rows: Per panel: its key, its ``(subplot title, curves)`` pairs, axis titles and figure title.
        **options: The other arguments of :func:`small_multiples`, the same for every panel (``cols`` at least).
    """
    out = []
    for key, subplots, xlabel, ylabel, title in rows:
        pfig, mfig = small_multiples(subplots, xlabel=xlabel, ylabel=ylabel, title=title, **options)
        out.append(GalleryPanel(key, plotly=pfig, mpl=mfig))
    return out


def switching_panels(
    at: Sequence[int],
    accuracy: Sequence[tuple[str, Sequence[Curve]]],
    distance: Sequence[tuple[str, Sequence[Curve]]],
    interpolation: Sequence[tuple[str, Sequence[Curve]]],
    titles: tuple[str, str, str],
    accuracy_label: str,
) -> list[GalleryPanel]:
    """The three panels of an optimizer-switching figure (Figs. 7 and 12-15), two subplots a row.

    Args:
        at: The switch epochs (dotted in the per-epoch panels).
        accuracy: Subplots of accuracy per epoch.
        distance: Subplots of the distance from the initial weights per epoch.
        interpolation: Subplots of the training loss on lines between minima (log axis).
        titles: Titles of the three panels.
        accuracy_label: The accuracy panel's y-axis title.
    """
    per_epoch = [
        ("accuracy", accuracy, "epoch", accuracy_label, titles[0]),
        ("distance", distance, "epoch", "||theta_t - theta_0||", titles[1]),
    ]
    lines = [("interpolation", interpolation, "alpha", "training loss", titles[2])]
    return multiples_panels(per_epoch, cols=2, vlines=at) + multiples_panels(lines, cols=2, logy=True)
