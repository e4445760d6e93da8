"""Renderers for Hessian spectra: the SLQ eigenvalue density on a log axis (PyHessian / Ghorbani et al. 2019 style).

Renderers only draw: they take :class:`~landscape.curvature.spectrum.HessianSpectrum` results (precomputed Ritz
nodes and weights) and never evaluate a model. Overlaying two spectra gives the Persistent Neurons
Fig. 12 comparison (plain vs championship).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import numpy as np

from landscape.curvature.spectrum import HessianSpectrum

__all__ = ["Backend", "plot_spectrum_density"]


class Backend(str, enum.Enum):
    """Plotting library."""

    PLOTLY = "plotly"
    MATPLOTLIB = "matplotlib"


def _shared_grid(spectra: Sequence[HessianSpectrum], sigma: float | None, n_points: int | None) -> np.ndarray:
    grids = [s.grid(n_points, sigma) for s in spectra]
    lo, hi = min(g[0] for g in grids), max(g[-1] for g in grids)
    step = min(g[1] - g[0] for g in grids if len(g) > 1)
    count = n_points or int(min(200_000, max(1000, np.ceil((hi - lo) / step) + 1)))
    return np.linspace(lo, hi, count)


def plot_spectrum_density(
    spectra: HessianSpectrum | Sequence[HessianSpectrum],
    labels: Sequence[str] | None = None,
    *,
    log: bool = True,
    backend: Backend | str = Backend.PLOTLY,
    sigma: float | None = None,
    n_points: int | None = None,
    floor: float = 1e-10,
    title: str = "Hessian eigenvalue density",
    fig: Any = None,
    ax: Any = None,
) -> Any:
    """Plot one or several Hessian eigenvalue densities on a shared grid.

    Args:
        spectra: One spectrum or several to overlay (e.g. plain and championship).
        labels: Legend entries, one per spectrum (default ``"spectrum i"``).
        log: Log density axis, as in the PyHessian paper (densities below ``floor`` are clipped to it).
        backend: ``"plotly"`` (returns ``plotly.graph_objects.Figure``) or ``"matplotlib"`` (returns
            ``matplotlib.figure.Figure``).
        sigma: Gaussian broadening; default the largest of the spectra's defaults, so both use one width.
        n_points: Grid size (default: spacing of at most sigma / 4).
        floor: Lower clip of the log axis.
        title: Figure title.
        fig: Existing plotly figure to add traces to (plotly backend).
        ax: Existing matplotlib axes to draw on (matplotlib backend).

    Returns:
        The figure.

    Raises:
        ValueError: On an unknown backend, no spectra, or a label count that does not match.
    """
    try:
        backend = Backend(backend)
    except ValueError:
        raise ValueError(f"unknown backend {backend!r}; valid: {[b.value for b in Backend]}") from None
    items = [spectra] if isinstance(spectra, HessianSpectrum) else list(spectra)
    if not items:
        raise ValueError("no spectrum to plot")
    labels = list(labels) if labels is not None else [f"spectrum {i + 1}" for i in range(len(items))]
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} labels for {len(items)} spectra")
    sigma = max(s.sigma for s in items) if sigma is None else float(sigma)
    grid = _shared_grid(items, sigma, n_points)
    curves = [s.density(grid, sigma=sigma)[1] for s in items]
    if log:
        curves = [np.maximum(c, floor) for c in curves]
    tops = [s.top_eigenvalues for s in items]

    if backend is Backend.PLOTLY:
        import plotly.graph_objects as go

        fig = fig if fig is not None else go.Figure()
        for label, c, s in zip(labels, curves, items):
            fig.add_trace(go.Scatter(x=grid, y=c, mode="lines", name=f"{label} ({s.bn_mode} BN)"))
        fig.update_layout(title=title, xaxis_title="eigenvalue", yaxis_title=f"density (sigma={sigma:.2g})")
        if log:
            fig.update_yaxes(type="log")
        for top in tops:
            for v in top[:1]:
                fig.add_vline(x=float(v), line_dash="dot", line_width=1)
        return fig

    import matplotlib.pyplot as plt

    if ax is None:
        figure, ax = plt.subplots(figsize=(6, 4))
    else:
        figure = ax.figure
    for label, c, s in zip(labels, curves, items):
        ax.plot(grid, c, label=f"{label} ({s.bn_mode} BN)", linewidth=1)
    for top in tops:
        for v in top[:1]:
            ax.axvline(float(v), linestyle=":", linewidth=0.8, color="gray")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel(f"density (sigma={sigma:.2g})")
    ax.set_title(title)
    ax.legend()
    return figure
