"""Persistent Neurons, Figs. 1-2: the two-minima surface, plain GD vs persistent GD on its contour plot.

Sec. 2 (and the preprint): ``f`` of eq. (1) (read as in :mod:`figures.toy_demo`) has a shallow wide minimum near
(2, -2) and a deep narrow one near (-2, -1). Gradient descent (lr 0.001, 50,000 steps) from
``w_ini = (-0.335, -1.4)`` ends in (2, -2). Persistent training restarts from ``w_ini`` on
``f + lambda |w0 . w| / ||w0||^2`` (eq. 2, lambda = 0.1) with ``w0`` the plain run's converged point, and ends
in the other basin. The penalty's gradient is Persistent Neurons, eq. (6), ``lambda sign(w0 . w) w0 / ||w0||^2`` (tested
against :class:`persistence.PersistentPenalty`). The surface is analytic, so both scales are the paper's.

Reused from :mod:`figures.toy_demo` (the gallery's self-test demo, which draws the plain half only and is not
a reproduction): the surface and its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from tqdm.auto import tqdm

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, figure_function, register_figure
from figures.toy_demo import MINIMUM_A, MINIMUM_B, W_INI, analytic_scaling, draw_surface, grad, loss, surface_grid
from figures.verdict import at_most

LAM = 0.1  # Persistent Neurons, Sec. 2, eq. (2)
LR = 1e-3
STEPS = 50_000
CONV_TOL = 1e-3  # premise: the last 250 steps moved the iterate by at most this
TOL = 0.05  # distance within which an end point counts as the paper's point (as figures.toy_demo)


def persistent_gd(
    start: Sequence[float],
    lr: float,
    steps: int,
    anchors: Sequence[Sequence[float]] = (),
    lam: float = LAM,
    every: int = 250,
    progress: bool = False,
) -> np.ndarray:
    """Gradient descent on ``f + lam * sum_k |a_k . w| / ||a_k||^2`` (plain GD without anchors).

    Args:
        start: Initial point ``(x, y)``.
        lr: Learning rate.
        steps: Number of steps.
        anchors: Previous converged points ``a_k``, each ``(x, y)``.
        lam: Penalty strength.
        every: Record the path every this many steps.
        progress: Show a progress bar.

    Returns:
        The path, shape ``(steps // every + 1, 2)`` (plus the end point when ``every`` does not divide
        ``steps``); the first row is the start, the last the end point.
    """
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    scaled = a / (a * a).sum(1, keepdims=True) * lam if len(a) else a  # lam * a_k / ||a_k||^2
    x, y = float(start[0]), float(start[1])
    path = [(x, y)]
    for t in tqdm(range(1, steps + 1), desc="toy GD", disable=not progress, leave=False, mininterval=0.5):
        gx, gy = grad(x, y)
        for (ax_, ay_), (sx, sy) in zip(a, scaled):  # Persistent Neurons, eq. (6) in two dimensions
            s = np.sign(ax_ * x + ay_ * y)
            gx, gy = gx + s * sx, gy + s * sy
        x, y = x - lr * gx, y - lr * gy
        if t % every == 0 or t == steps:
            path.append((x, y))
    return np.asarray(path, dtype=np.float64)


def _fmt(p: np.ndarray | Sequence[float]) -> str:
    return f"({p[0]:.3f}, {p[1]:.3f})"


@figure_function(lambda scale, data_dir: None)
def figure1_2(
    setup: None, *, cache: Path | str | None, progress: bool, steps: int = STEPS, lr: float = LR, lam: float = LAM
) -> FigureResult:
    """The figure at given settings, the paper's by default (signature: :func:`figures.contract.figure_function`).

    The toy needs no data, cache or settings (``setup`` is unused): it has the paper's at every scale, and the
    options ``steps``, ``lr`` and ``lam`` change them.
    """
    xs, ys, X, Y, Z = surface_grid()
    plain = persistent_gd(W_INI, lr, steps, progress=progress)
    w0 = plain[-1]
    pers = persistent_gd(W_INI, lr, steps, anchors=[w0], lam=lam, progress=progress)
    end_p, end_q = plain[-1], pers[-1]
    d_plain = float(np.linalg.norm(end_p - MINIMUM_A))
    d_pers = float(np.linalg.norm(end_q - MINIMUM_B))
    f_p, f_q = float(loss(*end_p)), float(loss(*end_q))
    step_p = float(np.linalg.norm(plain[-1] - plain[-2]))
    step_q = float(np.linalg.norm(pers[-1] - pers[-2]))
    conv_p = at_most("plain GD converged", step_p, CONV_TOL, detail="distance moved over the last 250 steps")
    conv_q = at_most("persistent GD converged", step_q, CONV_TOL, detail="distance moved over the last 250 steps")

    surface, m_surface = draw_surface(xs, ys, Z, "Fig. 1: loss surface with two minima")

    titles = [f"plain GD: f, lr {lr:g}, {steps:,} steps", f"persistent: f + {lam:g} |w0.w| / ||w0||^2"]
    paths = [(plain, "plain GD", "red"), (pers, "persistent GD", "orange")]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.08)
    m_paths = matplotlib.figure.Figure(figsize=(11, 4.6), layout="constrained")
    maxes = m_paths.subplots(1, 2)
    for col, ((path, name, color), mx) in enumerate(zip(paths, maxes), start=1):
        fig.add_trace(
            go.Contour(
                x=xs,
                y=ys,
                z=Z,
                colorscale="Viridis",
                ncontours=30,
                showscale=col == 1,
                colorbar=dict(title="f", x=1.02),
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines", name=name, line=dict(color=color, width=3)),
            row=1,
            col=col,
        )
        pts = [W_INI, tuple(w0) if col == 2 else MINIMUM_A, MINIMUM_B]
        labels = ["w_ini", "anchor w0 = plain end" if col == 2 else "(2, -2)", "(-2, -1)"]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers+text",
                text=labels,
                textposition="top center",
                showlegend=False,
                marker=dict(color="white", size=9, line=dict(color="black", width=1)),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="x", row=1, col=col)
        fig.update_yaxes(title_text="y", row=1, col=col)
        cs = mx.contourf(X, Y, Z, levels=30, cmap="viridis")
        mx.plot(path[:, 0], path[:, 1], color=color, lw=2, label=name)
        mx.scatter([p[0] for p in pts], [p[1] for p in pts], c="white", edgecolors="black", zorder=3)
        for lab, p in zip(labels, pts):
            mx.annotate(lab, p, textcoords="offset points", xytext=(0, 7), ha="center", color="white", fontsize=8)
        mx.set(xlabel="x", ylabel="y", title=titles[col - 1])
        mx.legend(loc="upper left")
    m_paths.colorbar(cs, ax=maxes, label="f")
    fig.update_layout(
        title="Fig. 2: plain vs persistent gradient descent from w_ini",
        height=470,
        template="plotly_white",
        legend=dict(orientation="h", y=-0.15),
    )

    book = ClaimBook("persistent_fig1_2", scale="quick")
    ends = (  # key, distance of the end point from the paper's minimum, a further condition, premises, values
        ("plain-gd-ends-in-a", d_plain, True, [conv_p], {"end": _fmt(end_p), "f": f_p}),
        (
            "persistent-gd-ends-in-b",
            d_pers,
            f_q < f_p,
            [conv_p, conv_q],
            {"end": _fmt(end_q), "f": f_q, "f_plain": f_p},
        ),
    )
    claims = [
        book(key, round(d, 5), held=bool(d < TOL and lower), premises=premises, tol=TOL, **values)
        for key, d, lower, premises, values in ends
    ]
    return FigureResult(
        caption="Fig. 1: the two-minima loss surface of eq. (1). Fig. 2: gradient descent paths from w_ini on the "
        "contour plot, plain (left) and persistent with the plain solution as anchor (right). Paper "
        "settings at both scales; paths drawn every 250 steps.",
        panels=[Panel("surface", plotly=surface, mpl=m_surface), Panel("paths", plotly=fig, mpl=m_paths)],
        claims=claims,
        scaling={**analytic_scaling(steps, lr), "repetitions": "1 plain + 1 persistent", "lambda": lam},
    )


@register_figure("persistent_fig1_2", paper="persistent", title="Figs. 1-2: two-minima toy, plain vs persistent GD")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return figure1_2(scale, data_dir, progress=progress)
