"""Gallery self-test demo (not a reproduction): the two-minima toy surface of Persistent Neurons (Sec. 2, eq. 1).

The smallest real figure: an analytic surface, one gradient-descent path, three exact checks. It runs in about
a second, so the gallery's own tests use it (``--only toy_demo``); that is its only purpose. It duplicates the
plain half of the paper's Fig. 2, which ``persistent_fig1_2`` reproduces in full (with the persistent half): read
that figure, not this one, as the reproduction. (The gallery files it under Persistent Neurons because the figure
contract knows only the four papers; a "demo" category would need ``figures/contract.py``.)

The printed eq. (1) is ambiguous; the gallery reads it as
``f(x, y) = -exp(-((x-2)^2 + (y+2)^2) / 5) - 3/2 exp(-((x+2)^2 + (y+1)^2))``.
The analytic surface needs no data, so both scales are the paper's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
from scipy.optimize import minimize
from tqdm.auto import tqdm

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, register_figure
from figures.verdict import at_most

# Persistent Neurons, Sec. 2 (both versions): the stated minima, the start, the step size and the step count.
MINIMUM_A = (2.0, -2.0)  # (x_a, y_a), where plain GD ends ("sub-optimal")
MINIMUM_B = (-2.0, -1.0)  # (x_b, y_b)
W_INI = (-0.335, -1.4)
LR = 1e-3
STEPS = 50_000
_TOL = 0.05  # distance within which a located point counts as the paper's point


def loss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The two-minima surface f of eq. (1), elementwise over arrays of any (equal) shape."""
    return -np.exp(-((x - 2) ** 2 + (y + 2) ** 2) / 5) - 1.5 * np.exp(-((x + 2) ** 2 + (y + 1) ** 2))


def grad(x: float, y: float) -> tuple[float, float]:
    """Gradient (df/dx, df/dy) of :func:`loss` at one point."""
    e1 = np.exp(-((x - 2) ** 2 + (y + 2) ** 2) / 5)
    e2 = np.exp(-((x + 2) ** 2 + (y + 1) ** 2))
    return 0.4 * (x - 2) * e1 + 3 * (x + 2) * e2, 0.4 * (y + 2) * e1 + 3 * (y + 1) * e2


def gradient_descent(
    start: tuple[float, float], lr: float, steps: int, every: int = 250, progress: bool = False
) -> np.ndarray:
    """Plain GD on :func:`loss`; returns the path, shape (steps // every + 1, 2), first row the start."""
    x, y = start
    path = [(x, y)]
    bar = tqdm(total=steps, desc="toy GD", unit="step", disable=not progress, leave=False)
    for t in range(1, steps + 1):
        gx, gy = grad(x, y)
        x, y = x - lr * gx, y - lr * gy
        if t % every == 0:
            path.append((x, y))
            bar.update(every)
    bar.close()
    return np.asarray(path, dtype=np.float64)


def surface_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The grid the surface is drawn on.

    Returns:
        ``xs`` ``(121,)`` over [-4.5, 4.5], ``ys`` ``(99,)`` over [-4.5, 2.5], and ``X``, ``Y`` and
        ``Z = f(X, Y)``, each ``(99, 121)``.
    """
    xs, ys = np.linspace(-4.5, 4.5, 121), np.linspace(-4.5, 2.5, 99)
    X, Y = np.meshgrid(xs, ys)
    return xs, ys, X, Y, loss(X, Y)


def analytic_scaling(steps: int, lr: float) -> dict[str, str]:
    """The scaling entries of a figure on the analytic surface: the model, no data, the gradient-descent budget."""
    return {"model": "analytic f(x, y), eq. (1)", "data": "none (analytic)", "epochs": f"{steps:,} GD steps, lr {lr:g}"}


def draw_surface(
    xs: np.ndarray, ys: np.ndarray, Z: np.ndarray, title: str
) -> tuple[go.Figure, matplotlib.figure.Figure]:
    """The loss surface ``Z`` (shape ``(len(ys), len(xs))``) in 3-D, as a plotly and a matplotlib figure."""
    surface = go.Figure(go.Surface(x=xs, y=ys, z=Z, colorscale="Viridis", showscale=False))
    surface.update_layout(
        title=title,
        height=450,
        margin=dict(l=0, r=0, t=40, b=0),
        scene=dict(xaxis_title="x", yaxis_title="y", zaxis_title="f"),
    )
    m_surface = matplotlib.figure.Figure(figsize=(5.5, 4.5))
    ax = m_surface.add_subplot(projection="3d")
    X, Y = np.meshgrid(xs, ys)
    ax.plot_surface(X, Y, Z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set(xlabel="x", ylabel="y", zlabel="f", title=title)
    return surface, m_surface


def _local_minimum(start: tuple[float, float]) -> np.ndarray:
    res = minimize(
        lambda w: float(loss(w[0], w[1])),
        np.asarray(start),
        jac=lambda w: np.asarray(grad(*w)),
        method="BFGS",
        options={"gtol": 1e-10},
    )
    return res.x


def _fmt(p: np.ndarray | tuple[float, float]) -> str:
    return f"({p[0]:.3f}, {p[1]:.3f})"


@register_figure(
    "toy_demo",
    paper="persistent",
    title="Gallery self-test demo (not a reproduction; see Figs. 1-2): two-minima surface, plain GD",
)
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    xs, ys, X, Y, Z = surface_grid()
    path = gradient_descent(W_INI, LR, STEPS, progress=progress)
    end = path[-1]
    found_a, found_b = _local_minimum(MINIMUM_A), _local_minimum(MINIMUM_B)
    f_a, f_b = float(loss(*found_a)), float(loss(*found_b))
    err = max(np.linalg.norm(found_a - MINIMUM_A), np.linalg.norm(found_b - MINIMUM_B))

    surface, m_surface = draw_surface(xs, ys, Z, "f(x, y): two minima")

    contour = go.Figure(go.Contour(x=xs, y=ys, z=Z, colorscale="Viridis", ncontours=30, colorbar=dict(title="f")))
    contour.add_trace(
        go.Scatter(
            x=path[:, 0],
            y=path[:, 1],
            mode="lines",
            line=dict(color="red", width=3),
            name=f"GD, lr {LR:g}, {STEPS:,} steps",
        )
    )
    contour.add_trace(
        go.Scatter(
            x=[W_INI[0], MINIMUM_A[0], MINIMUM_B[0]],
            y=[W_INI[1], MINIMUM_A[1], MINIMUM_B[1]],
            mode="markers+text",
            text=["w_ini", "(x_a, y_a)", "(x_b, y_b)"],
            textposition="top center",
            marker=dict(color="white", size=9, line=dict(color="black", width=1)),
            name="start and minima",
        )
    )
    contour.update_layout(
        title="Plain gradient descent from w_ini",
        height=450,
        xaxis_title="x",
        yaxis_title="y",
        legend=dict(x=0.01, y=0.99, bgcolor="rgba(255,255,255,0.7)"),
    )
    m_contour = matplotlib.figure.Figure(figsize=(5.5, 4.5))
    ax = m_contour.add_subplot()
    cs = ax.contourf(X, Y, Z, levels=30, cmap="viridis")
    m_contour.colorbar(cs, ax=ax, label="f")
    ax.plot(path[:, 0], path[:, 1], color="red", lw=2, label=f"GD, lr {LR:g}, {STEPS:,} steps")
    ax.scatter(*zip(W_INI, MINIMUM_A, MINIMUM_B), c="white", edgecolors="black", zorder=3)
    for label, p in (("w_ini", W_INI), ("(x_a, y_a)", MINIMUM_A), ("(x_b, y_b)", MINIMUM_B)):
        ax.annotate(label, p, textcoords="offset points", xytext=(0, 7), ha="center", color="white")
    ax.set(xlabel="x", ylabel="y", title="Plain gradient descent from w_ini")
    ax.legend(loc="upper left")

    # Premises: the located points are critical points, and GD has stopped moving.
    grad_norm = max(float(np.hypot(*grad(*found_a))), float(np.hypot(*grad(*found_b))))
    minima = at_most("BFGS found critical points", grad_norm, 1e-6, detail="larger gradient norm at the two points")
    moved = float(np.linalg.norm(path[-1] - path[-max(2, len(path) // 10)]))
    settled = at_most("GD has stopped moving", moved, 1e-3, detail="distance moved over the last 10% of the steps")
    # The demo is filed under Persistent Neurons (see the module docstring), so are its claims.
    book = ClaimBook("toy_demo", scale="quick", paper="persistent")
    near = (  # the checks "a point lies within _TOL of the paper's": key, distance, premise, template values
        ("two-minima", err, minima, {"found_a": _fmt(found_a), "found_b": _fmt(found_b)}),
        ("plain-gd-ends-in-a", np.linalg.norm(end - MINIMUM_A), settled, {"end": _fmt(end)}),
    )
    claims = [
        book(key, round(float(d), 5), held=bool(d < _TOL), premises=[premise], tol=_TOL, **values)
        for key, d, premise, values in near
    ]
    claims.append(book("a-is-sub-optimal", f_a - f_b, held=f_a > f_b, premises=[minima], f_a=f_a, f_b=f_b))
    return FigureResult(
        caption="A gallery self-test demo, not a reproduction (Persistent Neurons Figs. 1-2 are reproduced in "
        "persistent_fig1_2). The two-minima loss surface of Persistent Neurons eq. (1) (their Fig. 1) and "
        "the path of plain "
        "gradient descent from w_ini on its contour plot (the left half of their Fig. 2). Same settings as "
        "the paper at both scales; the path is drawn every 250 steps.",
        panels=[Panel("surface", plotly=surface, mpl=m_surface), Panel("path", plotly=contour, mpl=m_contour)],
        claims=claims,
        scaling={**analytic_scaling(STEPS, LR), "repetitions": 1, "grid": "121 x 99"},
    )
