import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analyze import (
    SaturationHistory,
    SaturationRecorder,
    SaturationStats,
    StreamingHistogram,
    measure_saturation,
)
from landscape.params import parameters_to_vector
from landscape.plot import plot_activation_histograms, plot_saturation_curves
from landscape.results import load_result
from landscape.train import RecordTrajectory, Trainer
from landscape.trajectory import Trajectory

QS = (0, 1, 2, 25, 50, 75, 97.5, 98, 99.9, 100)
# Tanh outputs lie in [-1, 1]; 8 float32 ulps at 1.0 still tell neighbouring order statistics apart.
F32_TOL = 8 * float(np.finfo(np.float32).eps)


def _net(seed=0, scale=3.0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        net[0].weight.mul_(scale)  # drive the first layer into saturation
    return net


def _data(n=200, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _captured(net, x, names):
    """Brute force: every activation of the named modules, in float64."""
    out = {n: [] for n in names}
    mods = dict(net.named_modules())
    hs = [
        mods[n].register_forward_hook(lambda m, i, o, n=n: out[n].append(o.detach().double().reshape(-1)))
        for n in names
    ]
    with torch.no_grad():
        was = net.training
        net.eval()
        net(x)
        net.train(was)
    for h in hs:
        h.remove()
    return {n: torch.cat(v).numpy() for n, v in out.items()}


@pytest.mark.parametrize("value", ["raw", "abs"])
@pytest.mark.parametrize("bins", [7, 100])
def test_percentiles_within_stated_bound_of_numpy(value, bins):
    net, (x, y) = _net(), _data()
    stats = measure_saturation(net, (x, y), percentiles=QS, value=value, bins=bins, exact_limit=0, batch_size=37)
    acts = _captured(net, x, ["1", "4"])
    assert list(stats) == ["1", "4"]
    for name, s in stats.items():
        a = np.abs(acts[name]) if value == "abs" else acts[name]
        exact = np.percentile(a, QS)
        assert not s.exact and s.count == a.size
        width = s.bin_width
        assert width == pytest.approx((1.0 if value == "abs" else 2.0) / bins)
        assert np.all(s.lower <= exact + 1e-12) and np.all(exact <= s.upper + 1e-12)
        assert np.all(s.upper - s.lower <= width + 1e-12)
        assert np.all(np.abs(s.values - exact) <= width + 1e-12)
        assert s.normalized.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_array_equal(s.counts, np.histogram(a, bins=s.edges)[0])
        assert s.mean == pytest.approx(a.mean(), abs=1e-12) and s.std == pytest.approx(a.std(), abs=1e-12)


def test_exact_mode_equals_numpy_and_switches_off_past_the_limit():
    net, (x, _) = _net(), _data()
    acts = _captured(net, x, ["1", "4"])
    stats = measure_saturation(net, x, percentiles=QS, exact_limit=10**6)
    for name, s in stats.items():
        assert s.exact
        # float32 activations from batched forwards: equal to a few ulps, not bitwise, across machines
        np.testing.assert_allclose(s.values, np.percentile(acts[name], QS), rtol=0, atol=F32_TOL)
        np.testing.assert_array_equal(s.lower, s.upper)
    assert not measure_saturation(net, x, exact_limit=200 * 16 - 1)["1"].exact


def test_out_of_range_values_keep_a_valid_bracket():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5000, generator=g, dtype=torch.float64) * 2
    h = StreamingHistogram(-1, 1, bins=20, exact_limit=0)
    for chunk in v.split(777):
        h.update(chunk)
    h.update(torch.tensor([float("nan")]))
    assert h.nan_count == 1 and h.count == 5000
    assert h.underflow == int((v < -1).sum()) and h.overflow == int((v > 1).sum())
    assert h.underflow + h.overflow + int(h.counts.sum()) == h.count
    for q in (0, 3, 10, 40, 50, 60, 95, 99.5, 100):
        est, lo, hi = h.percentile(q)
        exact = float(np.percentile(v.numpy(), q))
        assert lo - 1e-12 <= exact <= hi + 1e-12 and lo <= est <= hi
        inside = -1 < lo and hi < 1
        if inside:
            assert hi - lo <= 0.1 + 1e-12
    assert h.percentile(0)[0] == pytest.approx(float(v.min())) and h.percentile(100)[0] == pytest.approx(float(v.max()))


def test_model_untouched_hooks_removed_modes_restored_also_on_error():
    net, (x, _) = _net(), _data()
    net.train()
    net[4].eval()  # a mixed-mode model must come back exactly as it was
    modes = [m.training for m in net.modules()]
    before = copy.deepcopy(net.state_dict())
    s1 = measure_saturation(net, x, exact_limit=10**6)
    s2 = measure_saturation(net, x, exact_limit=10**6)
    assert s1["1"].values.tolist() == s2["1"].values.tolist()  # eval mode: the dropout did not act
    with pytest.raises(ValueError, match="cannot take inputs of shape"):  # an InputError naming the layer
        measure_saturation(net, torch.zeros(4, 5))  # wrong input width fails mid-forward
    assert [m.training for m in net.modules()] == modes
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_module_called_twice_gives_one_layer_per_call_and_selection_by_name():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act = nn.Linear(4, 8), nn.Linear(8, 8), nn.Tanh()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    torch.manual_seed(0)
    net, x = Shared(), torch.randn(50, 4) * 2
    stats = measure_saturation(net, x, percentiles=(50, 98), exact_limit=10**6, batch_size=7)
    assert list(stats) == ["act#0", "act#1"]
    with torch.no_grad():
        h1 = torch.tanh(net.a(x))
        h2 = torch.tanh(net.b(h1))
    # batches of 7 vs one batch of 50: float32 matmuls may round differently (2.2e-8 seen on AVX-512)
    np.testing.assert_allclose(stats["act#0"].values, np.percentile(h1.double().numpy(), (50, 98)), atol=F32_TOL)
    np.testing.assert_allclose(stats["act#1"].values, np.percentile(h2.double().numpy(), (50, 98)), atol=F32_TOL)
    relu_net = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    with pytest.raises(ValueError, match="range=\\(lo, hi\\)"):
        measure_saturation(relu_net, x, nn.ReLU)
    assert measure_saturation(relu_net, x, "1", range=(0, 10))["1"].count == 250
    with pytest.raises(KeyError, match="no module 'nope'"):
        measure_saturation(net, x, "nope")
    with pytest.raises(ValueError, match="valid"):
        measure_saturation(net, x, value="median")


def _train(callbacks, traj, epochs=3, **kw):
    x, y = _data()
    return Trainer(
        _net(),
        (x, y),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.2),
        epochs=epochs,
        batch_size=50,
        callbacks=callbacks,
        trajectory=traj,
        seed=0,
        **kw,
    ).fit()


def test_recorder_history_matches_snapshots_and_is_stored_with_the_trajectory(tmp_path):
    val_x = _data(n=60, seed=5)[0]
    traj = Trajectory.create(tmp_path / "run", durable=False)
    rec = SaturationRecorder(
        val_x, percentiles=(50, 98), every_epochs=1, histogram_epochs=[0, 3], exact_limit=0, bins=40, label="plain"
    )
    tr = _train([rec], traj)
    hist = rec.history_
    np.testing.assert_array_equal(hist.epochs, [0, 1, 2, 3])
    assert hist.layers == ["1", "4"] and hist.values.shape == (4, 2, 2)
    np.testing.assert_array_equal(hist.histogram_epochs, [0, 3])
    # each measurement equals a fresh measurement of the recorded snapshot at that epoch
    for e, idx in zip(hist.epochs, range(len(traj))):
        model = traj.model_at(_net(), idx)
        fresh = measure_saturation(model, val_x, percentiles=(50, 98), exact_limit=0, bins=40)
        np.testing.assert_allclose(hist.values[int(e)], np.stack([fresh["1"].values, fresh["4"].values]), atol=1e-12)
    # per-snapshot metrics at epoch ends, and the whole history in the metadata (also after reopening)
    # the initial snapshot carries the pre-training measurement too (the recorder runs before it is written)
    np.testing.assert_allclose(traj.metric("sat/1/p98"), hist.curve("1", 98))
    back = SaturationHistory.from_trajectory(Trajectory.open(tmp_path / "run"))
    np.testing.assert_array_equal(back.values, hist.values)
    np.testing.assert_array_equal(back.histograms, hist.histograms)
    assert back.label == "plain"
    shares, edges = back.normalized_histogram(3, "4")
    assert shares.sum() == pytest.approx(1.0) and len(edges) == 41
    # saving as a result round-trips without pickle
    loaded = load_result(hist.save(tmp_path / "hist"))
    np.testing.assert_array_equal(loaded.values, hist.values)
    # the recorder does not perturb training: bitwise identical final weights without it
    plain = _train([], Trajectory())
    assert torch.equal(parameters_to_vector(plain.model), parameters_to_vector(tr.model))


def test_recorder_after_record_trajectory_warns_but_still_stores_history():
    traj = Trajectory()
    rec = SaturationRecorder(_data(n=30)[0], every_epochs=2)
    with pytest.warns(UserWarning, match="put the SaturationRecorder first"):
        _train([RecordTrajectory(traj), rec], None, epochs=4)
    np.testing.assert_array_equal(rec.history_.epochs, [0, 2, 4])
    assert "sat/1/p98" not in traj.metric_names
    np.testing.assert_array_equal(SaturationHistory.from_trajectory(traj).values, rec.history_.values)


def test_stats_result_round_trip(tmp_path):
    s = measure_saturation(_net(), _data()[0], exact_limit=0)["1"]
    back = SaturationStats.load(s.save(tmp_path / "s"))
    np.testing.assert_array_equal(back.counts, s.counts)
    assert back.percentile(98) == s.percentile(98)
    with pytest.raises(KeyError, match="recorded"):
        s.percentile(50)


def _stats_of(percentiles, bins=4, lo=-1.0, hi=1.0, layer="l"):
    h = StreamingHistogram(lo, hi, bins)
    h.update(torch.linspace(-1, 1, 101, dtype=torch.float64))
    return h.stats(layer, percentiles)


@pytest.mark.parametrize(
    ("second", "match"),
    [
        ({"percentiles": [50.0]}, "percentiles"),  # was stacked under the first epoch's level 98
        ({"percentiles": [98.0], "lo": -2.0, "hi": 2.0}, "bins"),  # was drawn over the first epoch's edges
        ({"percentiles": [98.0], "bins": 8}, "bins"),  # was numpy's "inhomogeneous shape" error
    ],
)
def test_history_refuses_measurements_of_other_levels_or_bins(second, match):
    # SaturationHistory keeps one set of levels and one set of edges per layer, so measurements taken with
    # others cannot be stacked: from_stats says it raises ValueError then, and checked only the layer names.
    first = {"l": _stats_of([98.0])}
    with pytest.raises(ValueError, match=match):
        SaturationHistory.from_stats([first, {"l": _stats_of(**second)}], [0, 1])
    mixed = {"a": _stats_of([98.0], layer="a"), "b": _stats_of([98.0], bins=8, layer="b")}
    with pytest.raises(ValueError, match="bins"):
        SaturationHistory.from_stats([mixed], [0])
    h = SaturationHistory.from_stats([first, {"l": _stats_of([98.0])}], [0, 1])  # alike: stacked
    assert h.values.shape == (2, 1, 1) and h.curve("l", 98.0)[1] == first["l"].percentile(98.0)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_renderers_draw_every_layer_and_run(backend):
    x = _data(n=40)[0]
    runs = []
    for seed, label in ((0, "plain"), (1, "persistent")):
        stats = [measure_saturation(_net(seed, scale=s), x, exact_limit=0) for s in (1.0, 2.0, 3.0)]
        runs.append(SaturationHistory.from_stats(stats, [0, 15, 30], label=label))
    fig = plot_saturation_curves(runs, backend=backend)
    fig2 = plot_activation_histograms(runs, epochs=[15, 30], backend=backend)
    if backend == "plotly":
        assert len(fig.data) == 4 and fig.data[0].line.dash == "solid" and fig.data[2].line.dash == "dash"
        np.testing.assert_allclose(fig.data[0].y, runs[0].curve("1"))
        assert len(fig2.data) == 8
        assert sum(fig2.data[0].y) == pytest.approx(1.0)
        assert fig.layout.title.text.startswith("98th percentile")  # the default title
        assert not plot_saturation_curves(runs, title="").layout.title.text  # title="": none, as every plot
    else:
        import matplotlib.pyplot as plt

        assert len(fig.axes[0].lines) == 4
        assert len(fig2.axes) == 2 and all(len(ax.lines) == 4 for ax in fig2.axes)
        plt.close("all")
    with pytest.raises(ValueError, match="valid"):
        plot_saturation_curves(runs, backend="bokeh")
    with pytest.raises(KeyError, match="no histogram kept"):
        plot_activation_histograms(runs, epochs=[7])
    # one epoch or one layer name given bare: "'int' object is not iterable", or the name split letter by letter
    with pytest.raises(TypeError, match=r"epochs must be a sequence of epochs \(e.g. \[15, 30\]\), got 15"):
        plot_activation_histograms(runs, epochs=15, backend=backend)
    with pytest.raises(
        TypeError, match=r"layers must be a list of layer names; got the string '1' \(for one, pass \['1'\]\)"
    ):
        plot_saturation_curves(runs, layers="1", backend=backend)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_renderers_take_one_measurement_as_a_one_epoch_history(backend):
    # plot_activation_histograms(measure_saturation(net, x)) raised "takes a SaturationHistory ..., got dict":
    # the measurement ({layer: SaturationStats}) is one epoch's worth of a history, drawn as epoch 0.
    net, (x, _) = _net(), _data(n=60)
    m = measure_saturation(net, x, bins=10)
    acts = _captured(net, x, list(m))  # brute force: each layer's shares over its bins, in float64
    want = {n: np.histogram(a, bins=m[n].edges)[0] / len(a) for n, a in acts.items()}  # tanh: all in range
    fig = plot_activation_histograms(m, backend=backend)
    if backend == "plotly":
        assert [t.name for t in fig.data] == [f"run 0 · {n}" for n in m]
        got = {n: np.asarray(t.y, np.float64) for n, t in zip(m, fig.data)}
        assert fig.layout.annotations[0].text == "epoch 0"
    else:
        import matplotlib.pyplot as plt

        (ax,) = fig.axes
        got = {n: np.asarray(ln.get_ydata(), np.float64) for n, ln in zip(m, ax.lines)}
        assert ax.get_title() == "epoch 0"
        plt.close("all")
    for n in m:
        np.testing.assert_allclose(got[n], want[n], atol=1e-12)
    # A list of measurements (two networks) overlays them; the curves' percentile is a single point each.
    other = measure_saturation(_net(1), x, bins=10)
    fig = plot_saturation_curves([m, other], labels=["a", "b"], backend="plotly")
    assert [float(t.y[0]) for t in fig.data] == [s.percentile(98.0) for s in (*m.values(), *other.values())]
    with pytest.raises(TypeError, match="SaturationHistory"):  # any other mapping is still refused by name
        plot_activation_histograms({"1": 0.5}, backend=backend)
