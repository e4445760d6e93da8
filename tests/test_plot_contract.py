"""The renderer contract: two backends with the same functions, plain data in between, one palette, no pyplot."""

import inspect
import subprocess
import sys

import numpy as np
import pytest

from landscape import plot
from landscape.plot import _matplotlib, _plotly
from landscape.plot.style import LINESTYLES, PALETTE, mpl_linestyle, rgba, tint


def test_backends_implement_the_same_functions():
    assert _plotly.__all__ == _matplotlib.__all__
    for name in _plotly.__all__:
        a, b = inspect.signature(getattr(_plotly, name)), inspect.signature(getattr(_matplotlib, name))
        if name == "save":  # plotly's options (plotlyjs) differ from matplotlib's (dpi) after the figure and path
            assert list(a.parameters)[:2] == list(b.parameters)[:2]
        else:
            assert list(a.parameters) == list(b.parameters), name


def test_every_plot_function_takes_a_backend():
    names = [n for n in plot.__all__ if n.startswith("plot_") or n == "small_multiples"]
    assert len(names) >= 17
    for n in names:
        assert "backend" in inspect.signature(getattr(plot, n)).parameters, n
    with pytest.raises(ValueError, match="valid"):
        plot.plot_lines(plot.Line(np.arange(3.0), np.arange(3.0)), backend="bokeh")
    with pytest.raises(TypeError, match=r"plot_lines\(\) got an unexpected keyword argument 'colour'"):
        plot.plot_lines(plot.Line(np.arange(3.0), np.arange(3.0)), colour="red")  # **canvas is not a catch-all


def test_data_layer_imports_no_plotting_library_and_drawing_needs_no_pyplot():
    code = """
import sys
import landscape.plot._prepare, landscape.plot.curves, landscape.plot.planes, landscape.plot.saturation
import landscape.plot.hessian, landscape.plot.panels, landscape.plot.style
assert not any(m.split('.')[0] in ('plotly', 'matplotlib') for m in sys.modules), 'data layer imported a plotter'
import numpy as np
from landscape import plot
p = [plot.Panel('a', [plot.Line(np.arange(4.0), np.ones(4), 'x')]), plot.Panel('b')]
plot.small_multiples(p, cols=2, backend='matplotlib')
plot.plot_bands(np.arange(4.0), np.ones(4), np.ones(4), ['m'], backend='matplotlib')
assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def _panels():
    x = np.linspace(0.0, 1.0, 5)
    bad = np.array([1.0, np.nan, 0.5, -1.0, 2.0])  # a NaN and a value that has no logarithm
    return (
        x,
        bad,
        [
            plot.Panel("first", [plot.Line(x, bad, "run", dash="dash"), plot.Line(x, x + 1, "other")], logy=True),
            plot.Panel("second", [plot.Line(x, x + 2, "run", dots=(0.5,))], vlines=(0.25,)),
            plot.Panel("third", [plot.Line(x, x + 3, "other")], hlines=[(2.0, "ref", "#000000", "dot")]),
        ],
    )


def test_small_multiples_plotly_draws_the_data_once_per_legend_entry():
    x, bad, panels = _panels()
    fig = plot.small_multiples(panels, cols=2, xlabel="t", ylabel="v", title="grid")
    curves = [t for t in fig.data if t.name in ("run", "other")]
    want = np.where(np.isfinite(bad) & (bad > 0), bad, np.nan)
    np.testing.assert_array_equal(np.isnan(np.asarray(curves[0].y, float)), np.isnan(want))
    np.testing.assert_array_equal(np.asarray(curves[0].y, float)[~np.isnan(want)], want[~np.isnan(want)])
    shown = [t.name for t in fig.data if t.showlegend is not False and t.name]
    assert sorted(shown) == ["other", "ref", "run"]  # each label once
    assert curves[0].line.color == curves[2].line.color == PALETTE[0]  # one palette slot per label position
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "t" and fig.layout.yaxis.title.text == "v"
    assert fig.layout.yaxis2.title.text is None  # the y label only in the first column
    assert [a.text for a in fig.layout.annotations][:3] == ["first", "second", "third"]


def test_small_multiples_matplotlib_masks_and_hides_unused_axes():
    x, bad, panels = _panels()
    fig = plot.small_multiples(panels, cols=2, xlabel="t", ylabel="v", backend="matplotlib")
    axes = fig.axes
    assert len(axes) == 4 and not axes[3].axison
    y = axes[0].lines[0].get_ydata()
    assert isinstance(y, np.ma.MaskedArray)
    np.testing.assert_array_equal(y.mask, ~(np.isfinite(bad) & (bad > 0)))
    assert axes[0].get_yscale() == "log" and axes[0].get_ylabel() == "v" and axes[1].get_ylabel() == ""
    assert axes[0].lines[0].get_linestyle() == "--"
    assert len(fig.legends) == 1 and sorted(t.get_text() for t in fig.legends[0].texts) == ["other", "ref", "run"]


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_small_multiples_list_a_reference_line_and_a_star_of_every_panel_once(backend):
    # "curves sharing a label share one legend entry": matplotlib's figure legend listed the reference line
    # and the star once per panel (plotly once).
    x = np.arange(4.0)
    panels = [
        plot.Panel(
            f"p{i}",
            [plot.Line(x, x + i, "run")],
            hlines=[(2.0, "2/lr", "#000000", "dash")],
            stars=[(1, 1, "best", "#d62728")],
        )
        for i in range(3)
    ]
    fig = plot.small_multiples(panels, backend=backend)
    if backend == "plotly":
        entries = [t.name for t in fig.data if t.showlegend is not False and t.name]
    else:
        entries = [t.get_text() for t in fig.legends[0].get_texts()]
    assert entries == ["run", "2/lr", "best"]


def test_bands_draw_mean_and_spread():
    x = np.arange(4.0)
    mu = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0, 1.5]])
    sd = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    fig = plot.plot_bands(x, mu, sd, ["a", "b"], colors=["#1f77b4", "#d62728"])
    band, mean = fig.data[0], fig.data[1]
    np.testing.assert_array_equal(band.y, np.r_[mu[0] + sd[0], (mu[0] - sd[0])[::-1]])
    np.testing.assert_array_equal(band.x, np.r_[x, x[::-1]])
    assert band.fillcolor == "rgba(31,119,180,0.2)" and band.showlegend is False
    np.testing.assert_array_equal(mean.y, mu[0])
    mfig = plot.plot_bands(x, mu, sd, ["a", "b"], backend="matplotlib")
    ax = mfig.axes[0]
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), mu[1])
    verts = ax.collections[1].get_paths()[0].vertices
    assert verts[:, 1].max() == pytest.approx((mu[1] + sd[1]).max())
    assert verts[:, 1].min() == pytest.approx((mu[1] - sd[1]).min())
    with pytest.raises(ValueError, match="curves"):
        plot.plot_bands(x, mu, sd[:, :3], ["a", "b"])
    with pytest.raises(ValueError, match="label"):
        plot.plot_bands(x, mu, sd, ["a"])


def test_plot_lines_adds_to_a_figure_and_keeps_its_titles():
    x = np.arange(3.0)
    fig = plot.plot_lines(plot.Line(x, x, "first"), title="kept", xlabel="x", ylabel="y")
    plot.plot_lines(plot.Line(x, 2 * x, "second"), fig=fig)
    assert fig.layout.title.text == "kept" and fig.layout.xaxis.title.text == "x"
    assert [t.line.color for t in fig.data] == [PALETTE[0], PALETTE[1]]  # colours continue after what is drawn
    mfig = plot.plot_lines(plot.Line(x, x, "first"), title="kept", backend="matplotlib")
    plot.plot_lines(plot.Line(x, 2 * x, "second"), backend="matplotlib", ax=mfig.axes[0])
    ax = mfig.axes[0]
    assert ax.get_title() == "kept" and [ln.get_color() for ln in ax.lines] == [PALETTE[0], PALETTE[1]]
    with pytest.raises(TypeError, match="Line"):
        plot.plot_lines([x])


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_the_next_curve_takes_the_next_colour_after_a_curve_with_band_dots_and_companion(backend):
    # Line.color: the palette is counted after the curves already drawn; a band, dots and a companion curve (an
    # accuracy, a threshold) go with their curve and are not counted. Plotly counted every trace (the second curve
    # took PALETTE[4] here), matplotlib the dots (PALETTE[2]).
    x = np.arange(4.0)
    first = [
        plot.Line(x, x, "first", spread=0.1 * np.ones(4), dots=(1.5,)),
        plot.Line(x, x / 4, "first accuracy", companion=True, secondary=True),
    ]
    kw: dict = {"backend": backend}
    fig = plot.plot_lines(first, **kw)
    kw.update({"fig": fig} if backend == "plotly" else {"ax": fig.axes[0]})
    plot.plot_lines(plot.Line(x, 2 * x, "second"), **kw)
    if backend == "plotly":
        colours = {t.name: t.line.color for t in fig.data if t.name}
    else:
        colours = {ln.get_label(): ln.get_color() for ax in fig.axes for ln in ax.lines if ln.get_label()[0] != "_"}
    assert colours == {"first": PALETTE[0], "first accuracy": PALETTE[0], "second": PALETTE[1]}


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_a_secondary_curve_of_plot_lines_gets_the_right_hand_axis_over_zero_one(backend):
    # Line.secondary: drawn on the secondary (right-hand) y axis in [0, 1]. Through plot_lines (no axis title)
    # plotly had no layout for y2, which plotly.js then drew over the left axis with its own autoscaled range.
    x = np.arange(4.0)
    fig = plot.plot_lines([plot.Line(x, 10 * x, "loss"), plot.Line(x, x / 4, "rate", secondary=True)], backend=backend)
    if backend == "plotly":
        assert fig.data[1].yaxis == "y2"
        y2 = fig.layout.yaxis2
        assert (y2.overlaying, y2.side, tuple(y2.range)) == ("y", "right", (0, 1.02))
    else:
        main, right = fig.axes
        assert right.get_ylim() == (0, 1.02) and right.lines[0].get_label() == "rate"
        assert right.yaxis.get_label_position() == "right" and main.lines[0].get_label() == "loss"


def test_a_line_refuses_x_and_y_of_different_lengths():
    """Plotly drew such a curve silently, matplotlib failed with its own message: both now refuse it at once."""
    x = np.arange(3.0)
    with pytest.raises(ValueError, match="Line 'a': x has 3 values but y has 4"):
        plot.Line(x, np.arange(4.0), "a")
    with pytest.raises(ValueError, match="Line 'a': spread has 2 values but y has 3"):
        plot.Line(x, x, "a", spread=np.ones(2))
    import torch

    assert len(plot.Line(x.tolist(), x).x) == 3 and len(plot.Line(torch.arange(3), torch.zeros(3)).x) == 3


def test_canvas_of_the_other_backend_is_refused_by_name():
    """ax= with plotly and fig= with matplotlib were ignored silently; a canvas of the wrong library failed with
    "'Figure' object has no attribute 'data'" (or 'figure')."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    line = plot.Line(np.arange(3.0), np.arange(3.0))
    mfig = Figure()
    ax = mfig.subplots()
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="ax= draws into matplotlib axes: pass backend='matplotlib'"):
        plot.plot_lines(line, ax=ax)
    with pytest.raises(ValueError, match="fig= draws into a plotly figure: pass backend='plotly'"):
        plot.plot_lines(line, backend="matplotlib", fig=go.Figure())
    with pytest.raises(TypeError, match="fig must be a plotly.graph_objects.Figure, got Figure"):
        plot.plot_lines(line, fig=mfig)
    with pytest.raises(TypeError, match=r"ax must be matplotlib Axes \(e.g. fig.add_subplot\(\)\), got Figure"):
        plot.plot_lines(line, backend="matplotlib", ax=mfig)
    assert plt.get_fignums() == before and not ax.lines  # nothing drawn anywhere


def test_palette_and_styles():
    assert len(set(PALETTE)) == len(PALETTE) == 10
    assert tint(PALETTE[0], 0.0) == PALETTE[0] and tint(PALETTE[0], 1.0) == "#ffffff"
    assert rgba("#ff0000", 0.5) == "rgba(255,0,0,0.5)"
    assert [mpl_linestyle(d) for d in LINESTYLES[:4]] == ["-", "--", ":", "-."]
    assert mpl_linestyle(True) == "--" and mpl_linestyle(False) == "-"
    with pytest.raises(ValueError, match="line style"):
        mpl_linestyle("wiggly")


def test_figure_palettes_come_from_the_one_palette():
    from figures.im._setup import color as im_color
    from figures.persistent._setup import PALETTE as persistent_palette
    from figures.tunnels._setup import COLORS as tunnels_colors
    from landscape.train import METHODS

    for colours in ([im_color(m) for m in METHODS], tunnels_colors.values(), persistent_palette):
        assert set(colours) <= set(PALETTE)
    assert sorted(persistent_palette) == sorted(PALETTE)
