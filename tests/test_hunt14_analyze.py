"""Bug hunt 14 in the analyzers (curves, directions, distance, slices, histogram, saturation): one case each got wrong.

Every expectation is the right answer (a brute-force loop, Li et al.'s normalization written out, numpy's histogram,
a documented error), never the code's own output.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape.analyze import (
    ModeCurve,
    directions_from_models,
    evaluate_curve,
    fit_curve,
    functional_distance,
    line,
    measure_saturation,
    normalize_direction,
    plane,
)
from landscape.analyze.histogram import StreamingHistogram
from landscape.analyze.paths import pairwise_end_distances
from landscape.params import ParamLayout, parameters_to_vector
from landscape.trajectory import Trajectory
from landscape.validation import InputError


def _mlp(n_in: int = 2, hidden: int = 4, n_out: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out)).double()


def _data(n: int = 20, n_in: int = 2, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, n_in, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


# --------------------------------------------------------------------------- curves
def test_evaluate_curve_takes_positions_not_a_count():
    """``ts=11`` evaluated the one position t = 11 (a loss of 10^4 far off the curve); ``[]`` gave an empty result and
    ``[nan]`` a NaN loss, where every slice refuses all three (``coordinates``)."""
    a, b = _mlp(seed=0), _mlp(seed=1)
    X, y = _data()
    w0, w1 = parameters_to_vector(a), parameters_to_vector(b)
    theta = 0.5 * (w0 + w1) + 0.3 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(1), dtype=w0.dtype)
    curve = ModeCurve(torch.stack([w0, theta, w1]).numpy(), "bezier")
    for bad, says in ((11, "not a count"), ([], "got nothing"), ([0.5, float("nan")], "NaN"), ([[0, 1]], "1-D")):
        with pytest.raises(ValueError, match=says):
            evaluate_curve(a, curve, (X, y), ts=bad)
    # the positions that are given are evaluated as Garipov et al.'s eq. 3, by hand
    ts = [0.0, 0.3, 1.0]
    got = evaluate_curve(a, curve, (X, y), ts=ts).metrics["loss"]
    layout = ParamLayout.from_model(a)
    for t, loss in zip(ts, got):
        w = (1 - t) ** 2 * w0 + 2 * t * (1 - t) * theta + t**2 * w1
        assert loss == pytest.approx(float(F.cross_entropy(functional_call(a, layout.unflatten(w), (X,)), y)), 1e-12)


def test_fit_curve_names_the_endpoint_that_holds_nan():
    """A NaN in ``b`` was reported as ``parameter 'bend'`` (the trainer's only parameter, the midpoint), a name the
    caller never used."""
    a, b = _mlp(seed=0), _mlp(seed=1)
    with torch.no_grad():
        b[2].weight[1, 0] = float("nan")
    with pytest.raises(InputError, match=r"^b holds 1 NaN .* in '2\.weight' \(1 of 12\)"):
        fit_curve(a, b, _data(), steps=1)
    with pytest.raises(InputError, match=r"^init_bend holds 1 inf"):
        bend = parameters_to_vector(a).clone()
        bend[0] = float("inf")
        fit_curve(a, _mlp(seed=1), _data(), steps=1, init_bend=bend)


def test_curve_options_are_read_as_every_option_is():
    """evaluate_curve's bn_mode went through BNMode(...) and the kind through CurveKind(...): "Train" or "Polychain"
    raised where every other analyzer takes an option case-insensitively, and a bad bn_mode ("'eval ' is not a valid
    BNMode") did not list the valid ones."""
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).double()
    other = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).double()
    data = _data()
    curve = fit_curve(net, other, data, steps=2, kind="Polychain")
    want = fit_curve(net, other, data, steps=2, kind="polychain")
    assert curve.shape == "polychain" and np.array_equal(curve.control, want.control)
    ts = [0.0, 0.25, 1.0]
    got = evaluate_curve(net, curve, data, ts=ts, bn_mode="Train").metrics["loss"]
    np.testing.assert_array_equal(got, evaluate_curve(net, curve, data, ts=ts, bn_mode="train").metrics["loss"])
    with pytest.raises(ValueError, match=r"unknown bn_mode 'eval '; valid values are 'eval', 'train'"):
        evaluate_curve(net, curve, data, ts=ts, bn_mode="eval ")


# --------------------------------------------------------------------------- another architecture, as many parameters
def _transposed_pair() -> tuple[nn.Module, nn.Module]:
    """Two architectures of 31 parameters each: Linear(3, 4) then (4, 3), and Linear(4, 3) then (3, 4)."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    other = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 4)).double()
    assert parameters_to_vector(a).numel() == parameters_to_vector(other).numel() == 31
    return a, other


def test_a_model_of_another_architecture_with_as_many_parameters_is_refused():
    """Only the parameter count was checked: a model whose tensors have other shapes gave a curve, a line, a distance
    and a direction through meaningless points (fit_curve's docstring promises a ValueError for it)."""
    a, other = _transposed_pair()
    X, y = _data(n_in=3)
    says = r"another architecture .* '0\.weight' of shape \(3, 4\), the model's '0\.weight' of shape \(4, 3\)"
    with pytest.raises(ValueError, match=says):
        fit_curve(a, other, (X, y), steps=1)
    with pytest.raises(ValueError, match=says):
        line(a, a, other, (X, y), [0.0, 1.0])
    with pytest.raises(ValueError, match=says):
        functional_distance(a, a, other, (X, y))
    with pytest.raises(ValueError, match=says):
        directions_from_models(a, other)
    curve = fit_curve(other, other, (torch.randn(8, 4, dtype=torch.float64), y[:8]), steps=0)
    with pytest.raises(ValueError, match=r"the curve is another architecture"):
        evaluate_curve(a, curve, (X, y), ts=[0.5])
    # the same architecture under other names (a wrapper's prefix) is one architecture: the points are the vectors'
    wrapped = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))).double()
    both = line(a, a, wrapped, (X, y), [0.0, 1.0]).metrics["loss"]
    with torch.no_grad():
        loss = [float(F.cross_entropy(m(X), y)) for m in (a, wrapped)]
    np.testing.assert_allclose(both, loss, rtol=1e-12)


# --------------------------------------------------------------------------- directions
def test_layer_and_model_normalization_keep_a_zero_part_of_a_direction_zero():
    """A direction zero on one tensor (two models that share a frozen layer) came out NaN there under "layer"
    (0 * ||theta|| / 0), and an all-zero direction NaN everywhere under "model"; "filter" gave zero (Li et al.'s
    epsilon). A NaN direction makes every point of a plane NaN."""
    net = _mlp(n_in=3, hidden=4, n_out=2)
    layout = ParamLayout.from_model(net)
    theta = parameters_to_vector(net)
    d = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2), dtype=theta.dtype)
    d[layout["0.weight"].slice] = 0
    out = normalize_direction(d, theta, layout, "layer", "keep")
    for s in layout:  # Li et al.'s 'layer', written out: each tensor scaled to the norm of theta's
        want = torch.zeros(s.numel, dtype=d.dtype) if s.name == "0.weight" else None
        if want is None:
            eps = 1e-10 if len(s.shape) == 1 else 0.0  # 1-D tensors under bias_bn="keep" take the filter epsilon
            want = d[s.slice] * theta[s.slice].norm() / (d[s.slice].norm() + eps)
        torch.testing.assert_close(out[s.slice], want, rtol=1e-12, atol=0)
    zero = normalize_direction(torch.zeros_like(theta), theta, layout, "model", "keep")
    assert torch.equal(zero, torch.zeros_like(theta))
    # a plane along such a direction: finite, and its d1 = 0 column is the centre's loss
    X, y = _data(n_in=3, classes=2)
    other = normalize_direction(torch.randn_like(theta), theta, layout, "layer")
    loss = plane(net, net, out, other, (X, y), [0.0, 0.5], [0.0]).metrics["loss"]
    with torch.no_grad():
        centre = float(F.cross_entropy(net(X), y))
    assert np.isfinite(loss).all() and loss[0, 0] == pytest.approx(centre, rel=1e-12)


# --------------------------------------------------------------------------- saturation and histograms
def test_measure_saturation_names_the_layer_inputs_of_the_wrong_shape_do_not_fit():
    """It raised torch's "mat1 and mat2 shapes cannot be multiplied (30x2 and 3x6)" where every analyzer names the
    layer and the shape it expects; the model's hooks were removed and its mode kept all the same."""
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
    net.train()
    X = torch.randn(30, 2)
    says = r"data: the model cannot take inputs of shape \(30, 2\): its layer '0' \(Linear\) expects .*\(N, 3\)"
    with pytest.raises(InputError, match=says):
        measure_saturation(net, X)
    with pytest.raises(InputError, match=says):
        measure_saturation(net, (X, torch.zeros(30, dtype=torch.long)), batch_size=None)
    from landscape import Problem

    with pytest.raises(InputError, match=says):
        measure_saturation(Problem(net, (X, torch.zeros(30, dtype=torch.long))))
    assert net.training and not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("bins", [3, 6, 10, 12, 100])
def test_histogram_counts_values_on_bin_edges_in_numpys_bins(bins):
    """torch.linspace rounds its edges otherwise than numpy: 6 bins over [-1, 1] had a middle edge of 5.6e-17, so a
    tanh activation of exactly 0 was counted in [-1/3, 0) (numpy, and the documented [e_j, e_(j+1)): [0, 1/3))."""
    values = np.concatenate([np.linspace(-1, 1, bins + 1), np.arange(-8, 9) / 8, [0.0, 0.0, 0.5, -0.5]])
    h = StreamingHistogram(-1, 1, bins, exact_limit=0)
    h.update(torch.from_numpy(values))
    np.testing.assert_array_equal(h.counts.numpy(), np.histogram(values, bins=bins, range=(-1, 1))[0])
    np.testing.assert_array_equal(h.edges.numpy(), np.histogram_bin_edges(values, bins=bins, range=(-1, 1)))
    for q in (10, 50, 90):  # the bracket still holds the exact percentile (to rounding of the interpolation)
        est, lo, hi = h.percentile(q)
        assert lo - 1e-12 <= np.percentile(values, q) <= hi + 1e-12 and lo <= est <= hi


# --------------------------------------------------------------------------- paths
def test_pairwise_end_distances_of_runs_whose_network_grew(tmp_path):
    """The default (segment=None, documented as the last snapshot over all segments) stacked every segment and
    refused a run whose network grew (a tunnel opened: 12 then 16 parameters) with a message about PCA."""
    small, grown = ParamLayout.from_model(nn.Linear(3, 3)), ParamLayout.from_model(nn.Linear(3, 4))
    g = torch.Generator().manual_seed(0)
    runs, ends = [], []
    for k in range(3):
        t = Trajectory.create(tmp_path / f"run{k}", small)
        for step in range(2):
            t.append(torch.randn(12, generator=g, dtype=torch.float64), step=step)
        end = torch.randn(16, generator=g, dtype=torch.float64)
        t.append(end, step=2, layout=grown)
        t.close()
        runs.append(Trajectory.open(tmp_path / f"run{k}"))
        ends.append(end)
    want = np.array([[float((e - f).norm()) for f in ends] for e in ends])
    np.testing.assert_allclose(pairwise_end_distances(runs), want, rtol=1e-15, atol=0)
    np.testing.assert_allclose(pairwise_end_distances(runs, segment=1), want, rtol=1e-15, atol=0)
