"""Renderers draw exactly the results' arrays, mask non-finite values, and write offline HTML / PNG."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from torch import nn

from landscape import plot
from landscape.analyze import (
    PlaneResult,
    TrajectoryPCA,
    barycentric,
    bilinear,
    distance_along_path,
    line,
    line_distance,
    make_loss_at,
    plane,
    random_plane,
)
from landscape.params import parameters_to_vector

BACKENDS = ["plotly", "matplotlib"]


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    a, b, c, d = (_net(s) for s in range(4))
    data = (X, y)
    return {
        "model": a,
        "data": data,
        "nets": (a, b, c, d),
        "line": line(a, a, b, data, alphas=np.linspace(-0.5, 1.5, 9), label="a-b"),
        "line2": line(a, a, c, data, alphas=np.linspace(0, 1, 5), label="a-c"),
        "dist": line_distance(a, a, b, data, distances=np.linspace(0, 2, 6)),
        "plane": random_plane(a, data, np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3), seed=1),
        "bilinear": bilinear(a, [a, b, c, d], data, alphas=np.linspace(0, 1, 4), betas=np.linspace(0, 1, 3)),
        "bary": barycentric(a, a, b, c, data, alphas=np.linspace(0, 1, 5), betas=np.linspace(0, 1, 4)),
        "fd": distance_along_path(a, a, b, data, alphas=np.linspace(0, 1, 5), label="a-b"),
    }


def _poison(result, positions, name="loss"):
    """A copy of ``result`` whose metric has NaN, +inf, -inf at ``positions`` (flat indices)."""
    v = np.array(result.metrics[name], dtype=np.float64)
    flat = v.reshape(-1)
    for pos, bad in zip(positions, (np.nan, np.inf, -np.inf)):
        flat[pos] = bad
    return dataclasses.replace(result, metrics={**result.metrics, name: v})


def _expected(values):
    out = np.array(values, dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def _same(got, want):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == np.shape(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], np.asarray(want)[~np.isnan(want)])


def _mpl_axes(fig):
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


# ----------------------------------------------------------------------------------------------- 1-D
def test_line_plotly_data_masked(setup):
    r = _poison(setup["line"], [2, 5, 7])
    fig = plot.plot_line([r, setup["line2"]], accuracy=True)
    loss_traces = [t for t in fig.data if t.yaxis in (None, "y")]
    acc_traces = [t for t in fig.data if t.yaxis == "y2"]
    assert len(loss_traces) == 2 and len(acc_traces) == 2
    np.testing.assert_array_equal(loss_traces[0].x, r.coords)
    _same(loss_traces[0].y, _expected(r.metrics["loss"]))
    _same(acc_traces[0].y, _expected(r.metrics["accuracy"]))
    np.testing.assert_array_equal(loss_traces[1].x, setup["line2"].coords)
    assert fig.layout.yaxis2.overlaying == "y"
    assert [s.x0 for s in fig.layout.shapes] == [0.0, 1.0]  # the anchors alpha 0 and 1


def test_overlaid_lines_keep_every_accuracy_on_one_right_hand_axis(setup):
    # Drawing a second run with its accuracy into matplotlib axes made a second twin axes, and the legend, built
    # from the new twin only, lost the first run's accuracy (plotly lists all four).
    first, second = setup["line"], setup["line2"]
    fig = plot.plot_line(first, accuracy=True, backend="matplotlib")
    ax = _mpl_axes(fig)[0]
    plot.plot_line(second, accuracy=True, backend="matplotlib", ax=ax)
    plot.plot_line(second, labels=["third"], backend="matplotlib", ax=ax, anchors=False)  # no accuracy this time
    axes = _mpl_axes(fig)
    assert len(axes) == 2  # the curves' axes and one right-hand axes for the rates
    assert [ln.get_label() for ln in axes[1].lines] == [f"{first.label} accuracy", f"{second.label} accuracy"]
    assert axes[1].get_ylim() == (0, 1.02) and axes[1].get_ylabel() == "accuracy"
    names = [first.label, second.label, "third", f"{first.label} accuracy", f"{second.label} accuracy"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    pfig = plot.plot_line(first, accuracy=True)
    plot.plot_line(second, accuracy=True, fig=pfig)
    assert sorted(t.name for t in pfig.data) == sorted(names[:2] + names[3:])


def test_line_matplotlib_masked_array(setup):
    r = _poison(setup["line"], [0, 4, 8])
    fig = plot.plot_line(r, accuracy=True, backend="matplotlib")
    ax, ax2 = _mpl_axes(fig)[:2]
    ln = ax.lines[0]
    np.testing.assert_array_equal(ln.get_xdata(), r.coords)
    yd = ln.get_ydata()
    assert isinstance(yd, np.ma.MaskedArray)
    np.testing.assert_array_equal(yd.mask, ~np.isfinite(r.metrics["loss"]))
    np.testing.assert_array_equal(yd.compressed(), r.metrics["loss"][np.isfinite(r.metrics["loss"])])
    np.testing.assert_array_equal(np.asarray(ax2.lines[0].get_ydata()), r.metrics["accuracy"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_line_distance_axis_and_log(setup, backend):
    r = setup["line"]
    length = float(np.linalg.norm(r.anchors[1].astype(np.float64) - r.anchors[0]))
    neg = dataclasses.replace(r, metrics={**r.metrics, "loss": r.metrics["loss"] - r.metrics["loss"][4]})
    fig = plot.plot_line(neg, x="distance", log=True, backend=backend)
    want_y = np.where(neg.metrics["loss"] > 0, neg.metrics["loss"], np.nan)  # log scale: non-positive masked
    if backend == "plotly":
        np.testing.assert_allclose(fig.data[0].x, r.coords * length, rtol=1e-15)
        _same(fig.data[0].y, want_y)
        assert fig.layout.yaxis.type == "log"
    else:
        ax = _mpl_axes(fig)[0]
        np.testing.assert_allclose(ax.lines[0].get_xdata(), r.coords * length, rtol=1e-15)
        _same(np.ma.filled(ax.lines[0].get_ydata(), np.nan), want_y)
        assert ax.get_yscale() == "log"
    d = setup["dist"]  # absolute-distance line drawn against alpha: distance / ||ref - min||
    fig = plot.plot_line(d, x="alpha", backend=backend)
    xs = fig.data[0].x if backend == "plotly" else _mpl_axes(fig)[0].lines[0].get_xdata()
    np.testing.assert_allclose(xs, d.coords / d.anchor_coords[1], rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plot_line_draws_a_barrier_path_over_alpha(setup, backend):
    # plot_line(loss_barrier(a, b, data)) raised "takes a LineResult ..., got BarrierResult": the barrier holds
    # the path's losses over alpha, which is what plot_line draws.
    from landscape.analyze import loss_barrier

    a, b = setup["nets"][:2]
    X, y = setup["data"]
    alphas = np.linspace(0, 1, 6)
    r = loss_barrier(a, b, setup["data"], alphas=alphas)
    with torch.no_grad():  # brute force at the endpoints: each network's own cross-entropy
        ends = [float(nn.functional.cross_entropy(m(X), y)) for m in (a, b)]
    fig = plot.plot_line(r, accuracy=True, backend=backend)
    if backend == "plotly":
        loss = [t for t in fig.data if t.yaxis in (None, "y")]
        acc = [t for t in fig.data if t.yaxis == "y2"]
        assert [t.name for t in loss] == ["line"] and len(acc) == 1  # an unnamed barrier is named by its path
        xs, ys, acc_y = loss[0].x, loss[0].y, acc[0].y
        assert [s.x0 for s in fig.layout.shapes] == [0.0, 1.0]  # the endpoints marked
    else:
        ax, ax2 = _mpl_axes(fig)[:2]
        xs, ys, acc_y = ax.lines[0].get_xdata(), np.ma.filled(ax.lines[0].get_ydata(), np.nan), ax2.lines[0].get_ydata()
    np.testing.assert_array_equal(xs, alphas)
    np.testing.assert_allclose([ys[0], ys[-1]], ends, rtol=1e-12)
    np.testing.assert_allclose(ys, line(a, a, b, setup["data"], alphas).metrics["loss"], rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(acc_y, np.float64), r.metrics["accuracy"])
    # The barrier keeps no weights, so it has no distance axis: the message says what draws one.
    with pytest.raises(ValueError, match=r"over alpha only.*landscape\.line\(a, a, b, data\)"):
        plot.plot_line(r, x="distance", backend=backend)
    fig = plot.plot_line([dataclasses.replace(r, label="barrier"), setup["line2"]], backend=backend)  # overlaid
    lines = fig.data if backend == "plotly" else _mpl_axes(fig)[0].get_legend().get_texts()
    assert [t.name if backend == "plotly" else t.get_text() for t in lines] == ["barrier", "a-c"]


def test_log_line_with_nothing_positive_still_renders(setup):
    """A diverged line on a log axis (every value masked) draws an empty log axis, with its anchors, and saves."""
    import io

    import matplotlib.pyplot as plt

    r = setup["line"]
    bad = dataclasses.replace(r, metrics={**r.metrics, "loss": np.where(np.arange(len(r.coords)) % 2, np.nan, np.inf)})
    before = plt.get_fignums()
    fig = plot.plot_line(bad, log=True, backend="matplotlib")
    fig.savefig(io.BytesIO(), format="png")  # matplotlib's "cannot be log-scaled" surfaced here
    ax = _mpl_axes(fig)[0]
    assert ax.get_yscale() == "log" and np.ma.getmaskarray(ax.lines[0].get_ydata()).all()
    assert plt.get_fignums() == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_distance_plot(setup, backend):
    r = setup["fd"]
    fig = plot.plot_distance(r, backend=backend)
    if backend == "plotly":
        np.testing.assert_array_equal(fig.data[0].x, r.alphas)
        np.testing.assert_array_equal(fig.data[0].y, r.rms)
        assert fig.data[1].yaxis == "y2"
        np.testing.assert_array_equal(fig.data[1].y, r.disagreement)
    else:
        ax, ax2 = _mpl_axes(fig)[:2]
        np.testing.assert_array_equal(np.asarray(ax.lines[0].get_ydata()), r.rms)
        np.testing.assert_array_equal(np.asarray(ax2.lines[0].get_ydata()), r.disagreement)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_distance_plot_in_the_figure_takes_the_next_colour(setup, backend):
    # The disagreement rate shares its run's colour (a companion, as a line's accuracy): the next run drawn into
    # the figure takes the next palette colour. Plotly counted the disagreement trace and skipped one.
    from landscape.plot import PALETTE

    r = setup["fd"]
    fig = plot.plot_distance(dataclasses.replace(r, label="a"), backend=backend)
    kw = {"fig": fig} if backend == "plotly" else {"ax": _mpl_axes(fig)[0]}
    plot.plot_distance(dataclasses.replace(r, label="b"), backend=backend, **kw)
    if backend == "plotly":
        drawn = [(t.name, t.line.color) for t in fig.data]
    else:
        drawn = [(ln.get_label(), ln.get_color()) for a in fig.axes for ln in a.lines]
    colours = {" ".join(name.split()[:2]): c for name, c in drawn}  # "a RMS distance (...)" -> "a RMS"
    assert colours == {"a RMS": PALETTE[0], "a label": PALETTE[0], "b RMS": PALETTE[1], "b label": PALETTE[1]}


# ----------------------------------------------------------------------------------------------- 2-D
@pytest.mark.parametrize("kind", ["contour", "filled", "heatmap", "surface"])
@pytest.mark.parametrize("log", [False, True])
def test_plane_plotly_grid(setup, kind, log):
    r = _poison(setup["plane"], [1, 7, 13])  # (3, 5) grid: non-square catches a transposition
    if kind == "surface":
        fig = plot.plot_surface(r, log=log)
    elif kind == "heatmap":
        fig = plot.plot_heatmap(r, log=log)
    else:
        fig = plot.plot_contour(r, filled=kind == "filled", log=log)
    tr = fig.data[0]
    np.testing.assert_array_equal(tr.x, r.xs)
    np.testing.assert_array_equal(tr.y, r.ys)
    want = _expected(r.metrics["loss"])
    _same(tr.z, np.log10(want) if log else want)
    if kind == "contour":
        assert tr.contours.coloring == "lines"
    if kind == "filled":
        assert tr.contours.coloring == "fill"
        marks = fig.data[1]
        np.testing.assert_array_equal(np.c_[marks.x, marks.y], r.anchor_coords)
        assert list(marks.text) == r.anchor_labels


def test_plane_matplotlib_grid(setup):
    r = _poison(setup["plane"], [0, 6, 14])
    loss = r.metrics["loss"]
    fin = loss[np.isfinite(loss)]
    fig = plot.plot_heatmap(r, backend="matplotlib")
    mesh = _mpl_axes(fig)[0].collections[0]
    arr = mesh.get_array()
    assert isinstance(arr, np.ma.MaskedArray) and arr.shape == loss.shape
    np.testing.assert_array_equal(arr.mask, ~np.isfinite(loss))
    np.testing.assert_array_equal(arr.compressed(), loss[np.isfinite(loss)])
    for filled in (False, True):  # contour levels over the finite range only: inf is not drawn as a huge value
        fig = plot.plot_contour(r, filled=filled, levels=8, backend="matplotlib")
        ax = _mpl_axes(fig)[0]
        cs = next(c for c in ax.collections if hasattr(c, "levels"))
        np.testing.assert_allclose(cs.levels, np.linspace(fin.min(), fin.max(), 9), rtol=1e-12)
        assert cs.zmin == fin.min() and cs.zmax == fin.max()
    fig = plot.plot_contour(r, log=True, levels=4, backend="matplotlib")
    cs = next(c for c in _mpl_axes(fig)[0].collections if hasattr(c, "levels"))
    pos = loss[np.isfinite(loss) & (loss > 0)]
    np.testing.assert_allclose([cs.zmin, cs.zmax], np.log10([pos.min(), pos.max()]), rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 4), (3, 1), (1, 1), (2, 3)])
def test_heatmap_cells_of_matplotlib_are_plotly_js_cells(shape):
    # plotly.js draws heatmap cells between the midpoints of neighbouring coordinates, the outer edges mirrored,
    # and gives a single coordinate v the cell [v - 0.5, v + 0.5]. matplotlib's shading="nearest" gave a single
    # coordinate a cell of width 0: a one-row or one-column grid drew nothing.
    def edges(c):
        if len(c) == 1:
            return np.array([c[0] - 0.5, c[0] + 0.5])
        return np.r_[1.5 * c[0] - 0.5 * c[1], (c[:-1] + c[1:]) / 2, 1.5 * c[-1] - 0.5 * c[-2]]

    ny, nx = shape
    xs, ys = np.array([0.25, 0.5, 1.0, 2.0])[:nx], np.array([-1.0, -0.5, 0.5])[:ny]
    z = np.arange(1.0, 1.0 + ny * nx).reshape(ny, nx)
    r = PlaneResult(xs=xs, ys=ys, metrics={"loss": z}, center=np.zeros(3), directions=np.eye(3)[:2])
    mesh = _mpl_axes(plot.plot_heatmap(r, backend="matplotlib"))[0].collections[0]
    corners = mesh.get_coordinates()  # (ny + 1, nx + 1, 2) cell corners
    np.testing.assert_array_equal(corners[0, :, 0], edges(xs))
    np.testing.assert_array_equal(corners[:, 0, 1], edges(ys))
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(ny, nx), z)
    fig = plot.plot_heatmap(r)
    np.testing.assert_array_equal(fig.data[0].x, xs)  # plotly.js draws its cells from the centres
    np.testing.assert_array_equal(fig.data[0].y, ys)


def test_surface_matplotlib_holes(setup):
    r = _poison(setup["plane"], [2, 8])
    z = _expected(r.metrics["loss"])
    fig = plot.plot_surface(r, backend="matplotlib")
    ax = fig.axes[0]
    assert ax.name == "3d"
    colors = np.asarray(ax.collections[0].get_array())
    # One polygon per grid cell, coloured by the mean of its finite corners (cells without any are dropped).
    want = []
    for i in range(z.shape[0] - 1):
        for j in range(z.shape[1] - 1):
            c = z[i : i + 2, j : j + 2].ravel()
            if np.isfinite(c).any():
                want.append(np.nanmean(c))
    np.testing.assert_allclose(colors, want, rtol=1e-12)
    with pytest.raises(ValueError, match="3-D axes"):
        plot.plot_surface(r, backend="matplotlib", ax=_mpl_axes(plot.plot_heatmap(r, backend="matplotlib"))[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bilinear_square(setup, backend):
    r = _poison(setup["bilinear"], [5])
    want = _expected(r.metrics["loss"])
    if backend == "plotly":
        fig = plot.plot_bilinear(r, style="heatmap")
        np.testing.assert_array_equal(fig.data[0].x, r.alphas)
        np.testing.assert_array_equal(fig.data[0].y, r.betas)
        _same(fig.data[0].z, want)
        np.testing.assert_array_equal(np.c_[fig.data[1].x, fig.data[1].y], r.corner_coords)
        assert list(fig.data[1].text) == ["c0", "c1", "c2", "c3"]
        assert fig.layout.yaxis.scaleanchor == "x"
    else:
        fig = plot.plot_bilinear(r, style="heatmap", backend="matplotlib")
        ax = _mpl_axes(fig)[0]
        _same(np.ma.filled(ax.collections[0].get_array(), np.nan), want)
        np.testing.assert_array_equal(ax.collections[1].get_offsets(), r.corner_coords)  # corner markers
        assert [t.get_text() for t in ax.texts] == ["c0", "c1", "c2", "c3"]


def test_barycentric_triangle_plotly(setup):
    r = _poison(setup["bary"], [7, 12])
    z = _expected(r.metrics["loss"])
    xy = r.triangle_xy()
    ok = np.isfinite(z)
    fig = plot.plot_barycentric(r)
    raster, pts, bad = fig.data[0], fig.data[1], fig.data[2]
    np.testing.assert_array_equal(np.c_[pts.x, pts.y], xy[ok])
    np.testing.assert_array_equal(pts.marker.color, z[ok])
    np.testing.assert_array_equal(np.c_[bad.x, bad.y], xy[~ok])
    # The raster is NaN outside the triangle and reproduces the values at grid nodes it hits exactly.
    X, Y = np.meshgrid(raster.x, raster.y)
    outside = Y > np.sqrt(3) * np.minimum(X, 1 - X) + 1e-9
    assert np.isnan(np.asarray(raster.z, dtype=np.float64)[outside]).all()
    zr = np.asarray(raster.z, dtype=np.float64)
    assert zr[0, 0] == z[0, 0]  # vertex 0 (alpha 0) at (0, 0)
    assert zr[0, -1] == z[-1, -1]  # vertex 1 (alpha 1, beta 1) at (1, 0)
    lo, hi = np.nanmin(z), np.nanmax(z)
    assert np.nanmin(zr) >= lo - 1e-12 and np.nanmax(zr) <= hi + 1e-12


@pytest.mark.parametrize("size", [61, 101, 161, 200])
def test_triangle_raster_is_the_bilinear_interpolation_on_the_whole_closed_triangle(size):
    # Raster point (i, j) is (x, y) = (i, j sqrt(3) / 2) / (size - 1); it lies in the closed triangle iff
    # j <= 2 i and j <= 2 (size - 1 - i) (exact integer test). Values bilinear in (alpha, beta) are reproduced
    # exactly by bilinear interpolation, so the raster equals f(alpha(x, y), beta(x, y)) there and is NaN elsewhere.
    # Rounding put points of the edge beta = 0 at beta = -6e-17, outside the grid, where they were NaN.
    alphas, betas = np.linspace(0, 1, 5), np.linspace(0, 1, 4)

    def f(a, b):
        return 1 + 2 * a + 3 * b + 4 * a * b

    x, y, z = plot.triangle_raster(alphas, betas, f(alphas[None, :], betas[:, None]), size=size)
    i, j = np.meshgrid(np.arange(size), np.arange(size))
    inside = (j <= 2 * i) & (j <= 2 * (size - 1 - i))
    X, Y = np.meshgrid(x, y)
    a = X + Y / np.sqrt(3)  # alpha beta = x - y / sqrt(3), alpha (1 - beta) = 2 y / sqrt(3)
    b = np.divide(X - Y / np.sqrt(3), a, out=np.zeros_like(a), where=a > 0)
    assert np.isfinite(z[inside]).all() and np.isnan(z[~inside]).all()
    np.testing.assert_allclose(z[inside], f(a, b)[inside], rtol=0, atol=1e-12)


def test_barycentric_triangle_matplotlib(setup):
    r = _poison(setup["bary"], [7])
    z = _expected(r.metrics["loss"])
    fig = plot.plot_barycentric(r, backend="matplotlib")
    ax = _mpl_axes(fig)[0]
    mesh = ax.collections[0]
    arr = mesh.get_array()
    assert isinstance(arr, np.ma.MaskedArray)
    _same(np.ma.filled(arr, np.nan), z.ravel())
    tri = mesh._triangulation
    np.testing.assert_array_equal(np.c_[tri.x, tri.y], r.triangle_xy().reshape(-1, 2))
    touching = np.isnan(z.ravel())[tri.triangles].any(1)
    np.testing.assert_array_equal(tri.mask, touching)  # every triangle touching the NaN point is masked
    assert touching.any() and not tri.mask.all()


def test_triangle_cell_draws_the_shading_into_the_given_cell_in_the_shared_range(setup):
    from plotly.subplots import make_subplots

    r = _poison(setup["bary"], [7])
    loss = _expected(r.metrics["loss"])
    z = np.log10(np.where(loss > 0, loss, np.nan))
    zrange = (np.nanmin(z) - 1.0, np.nanmax(z) + 2.0)  # wider than the cell's own values: a grid's range
    fig = make_subplots(2, 2)
    plot.plot_triangle_cell(r, zrange=zrange, log=True, names=["i", "x", "y"], colorbar=True, fig=fig, row=2, col=1)
    heat, outline = fig.data
    assert heat.xaxis == outline.xaxis == "x3"  # subplot (2, 1)
    assert (heat.zmin, heat.zmax) == zrange and heat.showscale
    assert heat.hovertemplate.startswith("i / x / y<br>log10 loss")
    np.testing.assert_array_equal(np.c_[outline.x, outline.y][[0, -1]], [[0.0, 0.0], [0.0, 0.0]])  # closed

    from matplotlib.figure import Figure

    mfig = Figure()
    cells = mfig.subplots(1, 2)
    assert plot.plot_triangle_cell(r, zrange=zrange, log=True, backend="matplotlib", ax=cells[1]) is mfig
    assert not cells[0].collections and len(cells[1].collections) == 1
    mesh = cells[1].collections[0]
    assert mesh.get_clim() == zrange
    _same(np.ma.filled(mesh.get_array(), np.nan), z.ravel())
    tri = mesh._triangulation
    np.testing.assert_array_equal(tri.mask, np.isnan(z.ravel())[tri.triangles].any(1))  # as plot_barycentric

    alone = plot.plot_triangle_cell(r, zrange=zrange)  # a figure of its own, without subplots
    assert [tr.type for tr in alone.data] == ["heatmap", "scatter"]
    alone = plot.plot_triangle_cell(r, zrange=zrange, backend="matplotlib")
    assert len(alone.axes[0].collections) == 1


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_triangle_cell_refuses_wrong_inputs_by_name(setup, backend):
    import matplotlib.pyplot as plt

    r, figs = setup["bary"], plt.get_fignums()
    wrong = {
        "zrange": [{"zrange": z} for z in [(1.0, 0.0), (np.nan, 1.0), (0.0, np.inf), (0, 1, 2), 1.0, None]],
        "names": [{"zrange": (0, 1), "names": n} for n in [["a", "b"], "abc", ["a", "b", "c", "d"]]],
        "row": [{"zrange": (0, 1), "row": 1}, {"zrange": (0, 1), "col": 1}],
    }
    for name, calls in wrong.items():
        for kw in calls:
            with pytest.raises(ValueError, match=f"{name}="):  # (a reversed range drew inverted or failed late)
                plot.plot_triangle_cell(r, backend=backend, **kw)
    if backend == "matplotlib":  # the axes are the cell: a plotly subplot position is not silently dropped
        with pytest.raises(ValueError, match="row= and col=.*ax="):
            plot.plot_triangle_cell(r, zrange=(0, 1), backend=backend, row=1, col=1)
    flat = plot.plot_triangle_cell(r, zrange=(2.0, 2.0), backend=backend)  # one value: a valid, flat range
    assert flat is not None and plt.get_fignums() == figs  # no pyplot figure left behind


# ----------------------------------------------------------------------------------------------- trajectory
@pytest.fixture(scope="module")
def pca_case(setup):
    model, data = setup["model"], setup["data"]
    g = torch.Generator().manual_seed(3)
    v0 = parameters_to_vector(model)
    steps = 0.05 * torch.randn(2, 7, v0.numel(), generator=g, dtype=torch.float64)
    runs = [v0 + steps[k].cumsum(0) for k in range(2)]
    pca = TrajectoryPCA(2, center="last").fit(runs)
    loss_at = make_loss_at(model, data)
    path = pca.project(runs, loss_at=loss_at)
    c, d1, d2 = pca.plane_directions()
    pl = plane(model, c, d1, d2, data, np.linspace(-1, 1, 6), np.linspace(-0.8, 0.8, 5))
    return runs, pca, path, pl


def test_pca_plane_and_path_share_coordinates(setup, pca_case):
    runs, _, path, pl = pca_case
    # The plane's own coordinate system places every snapshot where the path says it is ...
    np.testing.assert_allclose(pl.project(torch.cat(runs)), path.coordinates, rtol=0, atol=1e-12)
    # ... and its loss at a path point's coordinates is the path's "loss on the plane" there.
    k = 4
    x, y = path.coordinates[k]
    c, d = torch.from_numpy(pl.center), torch.from_numpy(pl.directions)
    one = plane(setup["model"], c, d[0], d[1], setup["data"], [x], [y])
    np.testing.assert_allclose(one.metrics["loss"][0, 0], path.plane_loss[k], rtol=1e-12)


@pytest.mark.parametrize("center", ["mean", "last"])
def test_trajectory_axes_name_what_the_percentages_are_shares_of(center):
    # The axis titles give each component's share: of the variance about the mean, of the squared distance from
    # the centre otherwise (Li et al. centre on the last point); "of the variance" was written for every centre.
    g = torch.Generator().manual_seed(5)
    X = torch.randn(9, 12, generator=g, dtype=torch.float64).cumsum(0)
    path = TrajectoryPCA(2, center=center).fit(X).project(X)
    Y = (X - (X.mean(0) if center == "mean" else X[-1])).numpy()
    s2 = np.linalg.svd(Y, compute_uv=False) ** 2  # brute force: squared singular values of the centred snapshots
    share = "the variance" if center == "mean" else "the squared distance from the centre"
    for backend in BACKENDS:
        fig = plot.plot_trajectory(None, path, backend=backend, panel=False)
        if backend == "plotly":
            titles = [fig.layout.xaxis.title.text, fig.layout.yaxis.title.text]
        else:
            titles = [_mpl_axes(fig)[0].get_xlabel(), _mpl_axes(fig)[0].get_ylabel()]
        assert titles == [f"PC{k + 1} ({100 * s2[k] / s2.sum():.1f}% of {share})" for k in range(2)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_trajectory_overlay(pca_case, backend):
    _, _, path, pl = pca_case
    runs = path.split("coordinates")
    fig = plot.plot_trajectory(pl, path, backend=backend)
    if backend == "plotly":
        np.testing.assert_array_equal(fig.data[0].x, pl.xs)
        paths = [t for t in fig.data if t.type == "scatter" and t.mode == "lines+markers" and t.xaxis in (None, "x")]
        assert len(paths) == 2
        for tr, xy, ratio, off in zip(paths, runs, path.split("off_plane_ratio"), path.split("off_plane")):
            np.testing.assert_array_equal(np.c_[tr.x, tr.y], xy)
            np.testing.assert_array_equal(tr.marker.color, ratio)
            assert f"off-plane distance {off[-1]:.4g}" in tr.hovertext[-1]
        panel = [t for t in fig.data if t.xaxis == "x2"]
        np.testing.assert_array_equal(panel[0].y, path.split("true_loss")[0])
        np.testing.assert_array_equal(panel[1].y, path.split("plane_loss")[0])
    else:
        ax, ax2 = _mpl_axes(fig)[:2]
        for ln, xy in zip(ax.lines[:2], runs):
            np.testing.assert_array_equal(np.c_[ln.get_xdata(), ln.get_ydata()], xy)
        scat = [c for c in ax.collections if len(c.get_offsets()) == len(runs[0]) and c.get_array() is not None]
        np.testing.assert_array_equal(scat[0].get_offsets(), runs[0])
        np.testing.assert_array_equal(scat[0].get_array(), path.split("off_plane_ratio")[0])
        np.testing.assert_array_equal(np.asarray(ax2.lines[0].get_ydata()), path.split("true_loss")[0])
        np.testing.assert_array_equal(np.asarray(ax2.lines[1].get_ydata()), path.split("plane_loss")[0])
    alone = plot.plot_trajectory(None, path, panel=False, backend=backend)  # the path alone, one panel
    if backend == "plotly":
        assert all(t.xaxis in (None, "x") for t in alone.data)
    else:
        assert len(_mpl_axes(alone)) == 1


# ----------------------------------------------------------------------------------------------- plumbing
def test_draws_into_given_figure_and_axes(setup):
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    fig = go.Figure()
    out = plot.plot_line(setup["line"], fig=fig)
    assert out is fig and len(fig.data) == 1
    plot.plot_line(setup["line2"], fig=fig)
    assert len(fig.data) == 2 and fig.data[0].line.color != fig.data[1].line.color
    mfig = Figure()
    ax1, ax2 = mfig.subplots(1, 2)
    assert plot.plot_heatmap(setup["plane"], backend="matplotlib", ax=ax2) is mfig
    assert len(ax2.collections) >= 1 and not ax1.collections
    assert plot.plot_line(setup["line"], backend="matplotlib", ax=ax1) is mfig
    plot.plot_line(setup["line2"], backend="matplotlib", ax=ax1, anchors=False)
    curves = [ln for ln in ax1.lines if ln.get_gid() is None]  # the two curves, besides the anchors' lines
    np.testing.assert_array_equal(curves[1].get_xdata(), setup["line2"].coords)
    assert len(curves) == 2 and curves[0].get_color() != curves[1].get_color()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_inputs_are_named_as_empty(backend):
    """An empty list is no wrong type: it said 'takes a LineResult or a sequence of them, got list'."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    calls = {
        "plot_line": lambda: plot.plot_line([], backend=backend),
        "plot_distance": lambda: plot.plot_distance([], backend=backend),
        "plot_sharpness": lambda: plot.plot_sharpness([], backend=backend),
        "plot_curve_vs_line": lambda: plot.plot_curve_vs_line(None, [], backend=backend),
        "plot_lines": lambda: plot.plot_lines([], backend=backend),
        "plot_saturation_curves": lambda: plot.plot_saturation_curves([], backend=backend),
        "plot_activation_histograms": lambda: plot.plot_activation_histograms([], backend=backend),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name} got an empty list: give at least one "):
            call()
    assert plt.get_fignums() == before


def test_labels_given_as_one_string_are_named(setup, pca_case):
    """labels="a-b" for one line said 'got 3 labels for 1 results' (the string taken letter by letter)."""
    with pytest.raises(TypeError, match=r"labels must be a list of strings, one per result; got the string 'a-b' "):
        plot.plot_line(setup["line"], labels="a-b")
    with pytest.raises(TypeError, match=r"one per run; got the string 'run' \(for one, pass \['run'\]\)"):
        plot.plot_trajectory(None, pca_case[2], labels="run")
    with pytest.raises(TypeError, match="plot_spectrum_density takes a HessianSpectrum or a sequence of them, got"):
        plot.plot_spectrum_density(setup["line"])  # was "'LineResult' object is not iterable"
    assert plot.plot_line(setup["line"], labels=["a-b"]).data[0].name == "a-b"


@pytest.mark.parametrize("backend", BACKENDS)
def test_contour_levels_must_be_a_positive_integer(setup, pca_case, backend):
    """levels=0 raised matplotlib's IndexError, -3 numpy's 'Number of samples, -2'; plotly drew either silently."""
    runs, pca, path, pl = pca_case
    for draw in (
        lambda lv: plot.plot_contour(setup["plane"], levels=lv, backend=backend),
        lambda lv: plot.plot_bilinear(setup["bilinear"], levels=lv, backend=backend),
        lambda lv: plot.plot_barycentric(setup["bary"], levels=lv, backend=backend),
        lambda lv: plot.plot_trajectory(pl, path, levels=lv, backend=backend),
    ):
        for bad in (0, -3, 2.5):
            with pytest.raises(ValueError, match=rf"levels must be a positive integer \(contour levels\), got {bad}"):
                draw(bad)
        assert draw(np.int64(4)) is not None


def test_errors_are_named(setup):
    with pytest.raises(ValueError, match="unknown backend 'bokeh'; valid values are 'plotly', 'matplotlib'"):
        plot.plot_line(setup["line"], backend="bokeh")
    with pytest.raises(KeyError, match="no metric 'f1'"):
        plot.plot_contour(setup["plane"], metric="f1")
    with pytest.raises(TypeError, match="use plot_barycentric"):
        plot.plot_heatmap(setup["bary"])
    with pytest.raises(TypeError, match="LineResult"):
        plot.plot_line(setup["plane"])
    with pytest.raises(ValueError, match="unknown style"):
        plot.plot_bilinear(setup["bilinear"], style="wireframe")
    with pytest.raises(ValueError, match="mix alpha and distance"):
        plot.plot_line([setup["line"], setup["dist"]])
    with pytest.raises(ValueError, match="2 x 2"):
        plot.plot_contour(
            dataclasses.replace(
                setup["plane"], ys=setup["plane"].ys[:1], metrics={"loss": setup["plane"].metrics["loss"][:1]}
            )
        )


def test_save_html_offline_and_png(setup, tmp_path):
    fig = plot.plot_contour(setup["plane"], filled=True)
    p = plot.save_html(fig, tmp_path / "sub" / "plane.html")
    text = p.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", text, re.I)  # nothing from a CDN
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js itself is embedded
    mfig = plot.plot_contour(setup["plane"], backend="matplotlib")
    q = plot.save_png(mfig, tmp_path / "plane.png")
    assert q.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match="save_png"):
        plot.save_html(mfig, tmp_path / "x.html")
    with pytest.raises(TypeError, match="save_html"):
        plot.save_png(fig, tmp_path / "x.png")


def test_plot_trajectory_refuses_a_plane_the_path_was_not_projected_on():
    # The path's (x, y) are coordinates along its own PCA directions; over a random plane or a plane of another
    # fit they were drawn at meaningless positions without a word (the command line already refused it).
    from landscape.analyze import TrajectoryPCA, plane, random_plane
    from landscape.plot import plot_trajectory

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    data = (torch.randn(12, 2, dtype=torch.float64), torch.randint(0, 2, (12,)))
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    walk = theta + torch.randn(6, theta.numel(), dtype=torch.float64).cumsum(0) * 0.1
    pca = TrajectoryPCA(2).fit(walk)
    path = pca.project(walk)
    own = plane(net, *pca.plane_directions(), data, xs=[-1.0, 0.0, 1.0], ys=[-1.0, 0.0, 1.0])
    plot_trajectory(own, path, backend="matplotlib")  # the plane of the same fit is drawn
    other = random_plane(net, data, [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], seed=0)
    with pytest.raises(ValueError, match="random directions.*pca.plane_directions"):
        plot_trajectory(other, path, backend="matplotlib")
    skew = plane(net, theta, walk[1] - theta, walk[2] - theta, data, xs=[0.0, 1.0], ys=[0.0, 1.0])
    with pytest.raises(ValueError, match="not orthonormal"):
        plot_trajectory(skew, path, backend="matplotlib")
