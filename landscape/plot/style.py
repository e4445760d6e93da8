"""The renderers' shared vocabulary: the backend enum, drawing options, the one palette and line-style cycle.

The drawing keywords that every plot of one picture takes, ``backend=``, ``title=``, ``fig=`` and ``ax=``, are
declared once, :class:`Canvas`, shown in each function's signature (:func:`shows_canvas`) and resolved into
the backend module and what to draw into by :func:`canvas_of`.

Both backends (:mod:`landscape.plot._plotly`, :mod:`landscape.plot._matplotlib`) and the gallery's figures take
their colours and line styles from here, so a run has the same colour in every picture. Nothing here imports a
plotting library; :func:`backend_module` imports the chosen backend when a plot asks for it.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, TypedDict, TypeVar

from landscape._options import check_keywords, parse_option, shows_keywords

__all__ = [
    "Backend",
    "XAxis",
    "Style",
    "PALETTE",
    "LINESTYLES",
    "COLORSCALE",
    "CMAP",
    "PATH_SCALE",
    "PATH_CMAP",
    "color",
    "rgba",
    "tint",
    "mpl_linestyle",
    "backend_module",
    "dispatch",
    "Canvas",
    "shows_canvas",
    "canvas_of",
]

F = TypeVar("F", bound=Callable[..., Any])

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
"""The one palette (matplotlib's ``tab10``): the i-th run, layer or method gets ``PALETTE[i % 10]``."""

LINESTYLES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
"""The one line-style cycle (plotly names; :func:`mpl_linestyle` gives matplotlib's): the i-th run or seed."""

_MPL_LINESTYLES: dict[str, Any] = {
    "solid": "-",
    "dash": "--",
    "dot": ":",
    "dashdot": "-.",
    "longdash": (0, (8, 2)),
    "longdashdot": (0, (8, 2, 2, 2)),
}

COLORSCALE = "Viridis"  # plotly colour scale of 2-D values
CMAP = "viridis"  # the same in matplotlib
PATH_SCALE = "Reds"  # marker colour of a projected path: the share of its displacement off the plane
PATH_CMAP = "Reds"


class Backend(str, enum.Enum):
    """Plotting library of a renderer."""

    PLOTLY = "plotly"
    MATPLOTLIB = "matplotlib"


class XAxis(str, enum.Enum):
    """Horizontal axis of a 1-D plot: the result's own coordinate, alpha, or Euclidean distance from ``a``."""

    AUTO = "auto"
    ALPHA = "alpha"
    DISTANCE = "distance"


class Style(str, enum.Enum):
    """How a 2-D grid is drawn."""

    CONTOUR = "contour"
    FILLED = "filled"
    HEATMAP = "heatmap"
    SURFACE = "surface"


def color(i: int) -> str:
    """The ``i``-th colour of :data:`PALETTE` (cycling)."""
    return PALETTE[int(i) % len(PALETTE)]


def rgba(hex_color: str, alpha: float) -> str:
    """``"#rrggbb"`` as a CSS ``rgba(r,g,b,alpha)`` string (plotly fills)."""
    h = hex_color.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"expected a colour '#rrggbb', got {hex_color!r}")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha:g})"


def tint(hex_color: str, share: float) -> str:
    """``hex_color`` mixed with white (``share`` of white: 0 keeps it, 1 is white), e.g. a lighter twin of a run."""
    h = hex_color.lstrip("#")
    rgb = [int(h[k : k + 2], 16) for k in (0, 2, 4)]
    return "#" + "".join(f"{round(v + (255 - v) * float(share)):02x}" for v in rgb)


def mpl_linestyle(dash: str | bool | None) -> Any:
    """Matplotlib's line style of a plotly dash name (``True`` = dashed, ``False``/``None`` = solid)."""
    if dash is None or dash is False:
        return "-"
    if dash is True:
        return "--"
    if dash not in _MPL_LINESTYLES:
        raise ValueError(f"unknown line style {dash!r}; valid: {list(_MPL_LINESTYLES)}")
    return _MPL_LINESTYLES[dash]


def backend_module(backend: Backend | str) -> ModuleType:
    """The drawing module of ``backend`` (:mod:`landscape.plot._plotly` or :mod:`landscape.plot._matplotlib`).

    Both implement the same functions over the plain data of :mod:`landscape.plot._prepare`.

    Raises:
        ValueError: On an unknown backend.
    """
    be = parse_option(Backend, backend, "backend")
    return importlib.import_module(f"landscape.plot._{be.value}")


def dispatch(backend: Backend | str, fig: Any = None, ax: Any = None) -> tuple[ModuleType, Any]:
    """``(drawing module, what to draw into)``: ``fig`` for plotly, ``ax`` for matplotlib (``None``: new).

    Raises:
        ValueError: On an unknown backend, or ``ax`` with plotly / ``fig`` with matplotlib (never ignored).
    """
    be = parse_option(Backend, backend, "backend")
    if be is Backend.PLOTLY and ax is not None:
        raise ValueError("ax= draws into matplotlib axes: pass backend='matplotlib' (plotly draws into fig=)")
    if be is Backend.MATPLOTLIB and fig is not None:
        raise ValueError("fig= draws into a plotly figure: pass backend='plotly' (matplotlib draws into ax=)")
    return importlib.import_module(f"landscape.plot._{be.value}"), (fig if be is Backend.PLOTLY else ax)


class Canvas(TypedDict, total=False):
    """The drawing keywords of every plot of one picture (all optional; ``**canvas`` in the signatures).

    Attributes:
        backend: ``"plotly"`` (default: returns a ``plotly.graph_objects.Figure``) or ``"matplotlib"`` (returns
            a ``matplotlib.figure.Figure``, built without pyplot).
        title: Figure title; ``None`` (default): the plot's own title (for a plot that has none, the title of
            ``fig``/``ax`` is left as it is); ``""``: no title.
        fig: Existing plotly figure to draw into (plotly backend; default: a new figure).
        ax: Existing matplotlib axes to draw into (matplotlib backend; default: a new figure).
    """

    backend: Backend | str
    title: str | None
    fig: Any
    ax: Any


def shows_canvas(fn: F) -> F:
    """Decorator: the function's ``**canvas`` shows as the keyword-only parameters of :class:`Canvas`.

    ``inspect.signature`` and ``help`` then list ``backend``, ``title``, ``fig`` and ``ax`` with their defaults.
    """
    return shows_keywords(Canvas, {"backend": Backend.PLOTLY})(fn)


def canvas_of(function: str, canvas: Mapping[str, Any], title: str | None = None) -> tuple[ModuleType, Any, str | None]:
    """``(drawing module, what to draw into, title)`` of a call's :class:`Canvas` keywords.

    Args:
        function: The plot function's name (for the error on an unknown keyword).
        canvas: The keywords given.
        title: The plot's own title, drawn when ``canvas`` gives ``title=None`` or none.

    Raises:
        TypeError: On a keyword that is not a :class:`Canvas` keyword.
        ValueError: On an unknown backend, or ``ax`` with plotly / ``fig`` with matplotlib.
    """
    check_keywords(function, canvas, Canvas)
    draw, target = dispatch(canvas.get("backend", Backend.PLOTLY), canvas.get("fig"), canvas.get("ax"))
    given = canvas.get("title")
    return draw, target, title if given is None else given
