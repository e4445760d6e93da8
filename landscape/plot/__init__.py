"""Renderers: results in, figures out (plotly by default, matplotlib with ``backend='matplotlib'``).

One contract in two backends, in the manner of arviz-plots: the public functions prepare plain data
(:mod:`landscape.plot._prepare`: curves and their frame, grids, triangles, paths, panels) and hand it to
the backend module, :mod:`landscape.plot._plotly` or :mod:`landscape.plot._matplotlib`, which implement
the same drawing functions.
Colours and line styles come from one palette (:mod:`landscape.plot.style`), shared with the gallery. The
drawing keywords of every plot of one picture, ``backend=``, ``title=``, ``fig=`` and ``ax=``, are declared
once there too (:class:`~landscape.plot.style.Canvas`).
"""

from landscape.plot._prepare import Line, Panel, triangle_raster
from landscape.plot.curves import (
    plot_bands,
    plot_curve_vs_line,
    plot_distance,
    plot_line,
    plot_lines,
    plot_sharpness,
)
from landscape.plot.files import save_html, save_png
from landscape.plot.hessian import plot_spectrum_density
from landscape.plot.measures import plot_functional_distance, plot_sharpness_values
from landscape.plot.panels import small_multiples
from landscape.plot.planes import (
    plot_barycentric,
    plot_bilinear,
    plot_contour,
    plot_heatmap,
    plot_plane_curve,
    plot_surface,
    plot_trajectory,
    plot_triangle_cell,
)
from landscape.plot.saturation import plot_activation_histograms, plot_saturation_curves
from landscape.plot.style import LINESTYLES, PALETTE, Backend, Canvas, Style, XAxis, tint

__all__ = [
    "Backend",
    "Canvas",
    "LINESTYLES",
    "Line",
    "PALETTE",
    "Panel",
    "Style",
    "XAxis",
    "plot_activation_histograms",
    "plot_bands",
    "plot_barycentric",
    "plot_bilinear",
    "plot_contour",
    "plot_curve_vs_line",
    "plot_distance",
    "plot_functional_distance",
    "plot_heatmap",
    "plot_line",
    "plot_lines",
    "plot_plane_curve",
    "plot_saturation_curves",
    "plot_sharpness",
    "plot_sharpness_values",
    "plot_spectrum_density",
    "plot_surface",
    "plot_trajectory",
    "plot_triangle_cell",
    "save_html",
    "save_png",
    "small_multiples",
    "tint",
    "triangle_raster",
]
