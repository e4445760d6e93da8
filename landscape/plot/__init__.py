"""Renderers: results in, figures out (plotly by default, matplotlib with ``backend='matplotlib'``)."""

from landscape.plot.core import (
    Backend,
    Style,
    XAxis,
    plot_barycentric,
    plot_bilinear,
    plot_contour,
    plot_curve_vs_line,
    plot_distance,
    plot_heatmap,
    plot_line,
    plot_plane_curve,
    plot_sharpness,
    plot_surface,
    plot_trajectory,
    save_html,
    save_png,
)
from landscape.plot.hessian import (
    plot_spectrum_density,
)
from landscape.plot.saturation import (
    plot_activation_histograms,
    plot_saturation_curves,
)

__all__ = [
    "Backend",
    "Style",
    "XAxis",
    "plot_activation_histograms",
    "plot_barycentric",
    "plot_bilinear",
    "plot_contour",
    "plot_curve_vs_line",
    "plot_distance",
    "plot_heatmap",
    "plot_line",
    "plot_plane_curve",
    "plot_saturation_curves",
    "plot_sharpness",
    "plot_spectrum_density",
    "plot_surface",
    "plot_trajectory",
    "save_html",
    "save_png",
]
