"""Renderers for Hessian spectra: the SLQ eigenvalue density on a log axis (PyHessian / Ghorbani et al. 2019 style).

Renderers only draw: they take :class:`~landscape.curvature.hessian.HessianSpectrum` results (precomputed Ritz
nodes and weights) and never evaluate a model. Overlaying two spectra gives the Persistent Neurons
Fig. 12 comparison (plain vs championship).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape.curvature.spectrum import HessianSpectrum
from landscape.plot._prepare import Frame, Line, given_labels, results_of
from landscape.plot.style import Canvas, canvas_of, shows_canvas

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["plot_spectrum_density"]


def shared_grid(spectra: Sequence[HessianSpectrum], sigma: float | None, n_points: int | None) -> np.ndarray:
    """One eigenvalue grid covering every spectrum, as fine as the finest of their own grids."""
    grids = [s.grid(n_points, sigma) for s in spectra]
    lo, hi = min(g[0] for g in grids), max(g[-1] for g in grids)
    step = min(g[1] - g[0] for g in grids if len(g) > 1)
    count = n_points or int(max(1000, np.ceil((hi - lo) / step) + 1))
    if n_points is None and count > 200_000:  # too wide for one uniform grid: their own, fine near every node
        return np.unique(np.concatenate(grids))
    return np.linspace(lo, hi, count)


@shows_canvas
def plot_spectrum_density(
    spectra: HessianSpectrum | Sequence[HessianSpectrum],
    labels: Sequence[str] | None = None,
    *,
    log: bool = True,
    sigma: float | None = None,
    n_points: int | None = None,
    floor: float = 1e-10,
    **canvas: Unpack[Canvas],
) -> Any:
    """Plot one or several Hessian eigenvalue densities on a shared grid.

    Each spectrum's top eigenvalue is marked by a dotted vertical line.

    Args:
        spectra: One spectrum or several to overlay (e.g. plain and championship).
        labels: Legend entries, one per spectrum (default ``"spectrum i"``), followed by the BatchNorm mode
            (``"(eval BN)"``) for a model with BatchNorm.
        log: Log density axis, as in the PyHessian paper (densities below ``floor`` are clipped to it).
        sigma: Gaussian broadening; default the largest of the spectra's defaults, so both use one width.
        n_points: Grid size (default: spacing of at most sigma / 4).
        floor: Lower clip of the log axis.
        **canvas: The drawing keywords (:class:`~landscape.plot.style.Canvas`): ``backend`` (``"plotly"`` or
            ``"matplotlib"``), ``title`` (default ``"Hessian eigenvalue density"``), and ``fig`` (plotly) or
            ``ax`` (matplotlib) to draw into.

    Returns:
        A ``plotly.graph_objects.Figure`` or a ``matplotlib.figure.Figure``.

    Raises:
        TypeError: If ``spectra`` are not spectra, or ``labels`` is one string.
        ValueError: On an unknown backend, no spectra, or a label count that does not match.
    """
    draw, target, title = canvas_of("plot_spectrum_density", canvas, "Hessian eigenvalue density")
    items = results_of(spectra, HessianSpectrum, "plot_spectrum_density")
    labels = given_labels(labels, len(items), "spectrum", "spectra") or [f"spectrum {i + 1}" for i in range(len(items))]
    sigma = max(s.sigma for s in items) if sigma is None else float(sigma)
    grid = shared_grid(items, sigma, n_points)
    curves = []
    for i, (label, s) in enumerate(zip(labels, items)):
        c = s.density(grid, sigma=sigma)[1]
        # The BatchNorm mode is named only for a model with BatchNorm (unrecorded, in older results: named).
        name = f"{label} ({s.bn_mode} BN)" if s.provenance.extra.get("batchnorm", True) else label
        curves.append(Line(grid, np.maximum(c, floor) if log else c, name, slot=i))
    tops = [(float(s.top_eigenvalues[0]), "") for s in items if len(s.top_eigenvalues)]
    return draw.lines(
        target,
        curves,
        Frame(
            title=title,
            xlabel="eigenvalue",
            ylabel=f"density (sigma={sigma:.2g})",
            log=log,
            vlines=tops,
            size=(6.0, 4.0),
        ),
    )
