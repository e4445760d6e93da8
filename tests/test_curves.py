"""Mode-connecting curves: closed forms, reduction to the line, training, recording, rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.analyze import (
    CurveResult,
    ModeCurve,
    barrier_of,
    curve_coefficients,
    evaluate_curve,
    fit_curve,
    line,
    plane_through,
)
from landscape.params import parameters_to_vector
from landscape.results import load_result
from landscape.trajectory import Trajectory


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 3)).double()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 2, generator=g, dtype=torch.float64)
    return X, ((X[:, 0] > 0).long() + (X[:, 1] > 0).long())


@pytest.fixture(scope="module")
def minima() -> tuple[nn.Module, nn.Module]:
    from landscape.train import fit

    data = _data()
    a = fit(_net(0), data, optimizer_kwargs={"lr": 0.5}, epochs=150).model
    b = fit(_net(1), data, optimizer_kwargs={"lr": 0.5}, epochs=150, seed=1).model
    return a, b


def test_bezier_and_chain_points_equal_the_closed_forms():
    rng = np.random.default_rng(0)
    w0, th, w1 = rng.normal(size=(3, 7))
    curve = ModeCurve(np.stack([w0, th, w1]), "bezier")
    ts = np.array([0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
    for t, p in zip(ts, curve.points(ts)):
        np.testing.assert_allclose(p, (1 - t) ** 2 * w0 + 2 * t * (1 - t) * th + t**2 * w1, atol=1e-14)
    chain = ModeCurve(np.stack([w0, th, w1]), "polychain")
    for t, p in zip(ts, chain.points(ts)):
        ref = 2 * (t * th + (0.5 - t) * w0) if t <= 0.5 else 2 * ((t - 0.5) * w1 + (1 - t) * th)
        np.testing.assert_allclose(p, ref, atol=1e-14)
    np.testing.assert_array_equal(curve_coefficients("bezier", [0, 1]), [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(curve_coefficients("polychain", ts).sum(1), 1.0)
    with pytest.raises(ValueError, match="valid"):
        curve_coefficients("spline", ts)


def test_midpoint_bend_is_the_straight_line(minima):
    """A Bezier curve bent at the midpoint is the line: zero training steps evaluate like ``landscape.line``."""
    a, b = minima
    data = _data()
    curve = fit_curve(a, b, data, steps=0)
    ts = np.linspace(0, 1, 9)
    on_curve = evaluate_curve(a, curve, data, ts=ts)
    straight = line(a, a, b, data, ts)
    np.testing.assert_allclose(on_curve.metrics["loss"], straight.metrics["loss"], rtol=1e-12, atol=1e-14)
    # endpoints exactly
    np.testing.assert_array_equal(curve.control[0], parameters_to_vector(a).numpy())
    np.testing.assert_array_equal(curve.control[2], parameters_to_vector(b).numpy())


@pytest.mark.parametrize("shape", ["bezier", "polychain"])
def test_training_the_bend_lowers_the_mean_loss_along_the_curve(minima, shape, tmp_path):
    a, b = minima
    data = _data()
    ts = np.linspace(0, 1, 21)
    before = evaluate_curve(a, fit_curve(a, b, data, kind=shape, steps=0), data, ts=ts)
    with Trajectory.create(tmp_path / "bend") as traj:
        curve = fit_curve(
            a,
            b,
            data,
            kind=shape,
            steps=120,
            optimizer_kwargs={"lr": 0.2},
            trajectory=traj,
            record_every_steps=40,
            record_every_epochs=None,
        )
    after = evaluate_curve(a, curve, data, ts=ts)
    assert after.metrics["loss"].mean() < 0.8 * before.metrics["loss"].mean()
    assert barrier_of(after).loss_barrier < barrier_of(before).loss_barrier
    # the endpoints never moved; the trajectory recorded the bend (first, every 40 steps, last)
    np.testing.assert_array_equal(curve.control[[0, 2]], before.control[[0, 2]])
    got = Trajectory.open(tmp_path / "bend")
    assert [s.step for s in got] == [0, 40, 80, 120]
    assert torch.equal(got[-1].vector, torch.as_tensor(curve.bend))


def test_curve_results_save_without_pickle_and_render(minima, tmp_path):
    a, b = minima
    data = _data()
    curve = fit_curve(a, b, data, steps=20, optimizer_kwargs={"lr": 0.2})
    res = evaluate_curve(a, curve, data, ts=np.linspace(0, 1, 7), label="bezier")
    for obj in (curve, res):
        again = load_result(obj.save(tmp_path / type(obj).__name__))
        assert type(again) is type(obj)
        np.testing.assert_array_equal(again.control, obj.control)
    assert isinstance(again, CurveResult) and again.shape == "bezier"
    # a quadratic Bezier curve lies in the plane through its control points
    plane = plane_through(a, a, b, torch.as_tensor(curve.bend), data, xs=np.linspace(-0.2, 1.2, 5), frame="orthogonal")
    xy = plane.project(res.points())
    back = plane.center + xy[:, :1] * plane.directions[0] + xy[:, 1:] * plane.directions[1]
    np.testing.assert_allclose(back, res.points(), atol=1e-10)
    from landscape import plot

    straight = line(a, a, b, data, np.linspace(0, 1, 7))
    for backend in ("plotly", "matplotlib"):
        assert plot.plot_curve_vs_line(straight, res, backend=backend) is not None
        assert plot.plot_plane_curve(plane, res, backend=backend) is not None
    fig = plot.plot_curve_vs_line(straight, res)
    assert [t.name for t in fig.data] == ["line", "bezier"]
    np.testing.assert_array_equal(fig.data[1].y, res.metrics["loss"])


def test_evaluate_curve_rejects_interpolated_buffers(minima):
    a, b = minima
    curve = fit_curve(a, b, _data(), steps=0)
    with pytest.raises(ValueError, match="interpolate"):
        evaluate_curve(a, curve, _data(), bn_mode="interpolate")


def test_fit_curve_uses_the_loss_given(minima):
    a, b = minima
    data = _data()
    curve = fit_curve(a, b, data, steps=3, loss_fn=lambda out, y: F.cross_entropy(out, y) * 0.0)
    np.testing.assert_array_equal(curve.bend, 0.5 * (curve.control[0] + curve.control[2]))


def test_fit_curve_default_loss_follows_the_targets():
    """Regression targets: the default loss is MSE (the package's one default, as evaluate_curve's), not
    cross-entropy, which over a single output is identically 0 and left the bend where it started."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = X[:, :1] ** 2 - X[:, 1:]
    a, b = (nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).double() for _ in range(2))
    kw = {"steps": 5, "optimizer_kwargs": {"lr": 0.1}}
    default = fit_curve(a, b, (X, y), **kw)
    mse = fit_curve(a, b, (X, y), loss_fn=F.mse_loss, **kw)
    np.testing.assert_array_equal(default.bend, mse.bend)
    assert np.abs(default.bend - 0.5 * (default.control[0] + default.control[2])).max() > 1e-3
    # the first step's loss is an MSE of a point on the (still straight) curve: between the line's extremes
    losses = line(a, a, b, (X, y), np.linspace(0, 1, 201), loss_fn="mse").metrics["loss"]
    assert losses.min() - 1e-9 <= default.history["train_loss"][0] <= losses.max() + 1e-9


def test_fit_curve_keeps_frozen_parameters_at_their_start():
    """A frozen backbone shared by two fine-tuned heads: the bend's backbone entries stay at the endpoints' (the
    package's trainers train only requires_grad=True), the heads' entries move, even with momentum and weight decay.
    With nothing frozen the whole bend trains."""
    torch.manual_seed(5)
    backbone = nn.Sequential(nn.Linear(2, 8), nn.Tanh())
    a = nn.Sequential(backbone, nn.Linear(8, 3)).double()
    b = nn.Sequential(backbone, nn.Linear(8, 3)).double()  # the same backbone module: identical frozen entries
    backbone.requires_grad_(False)
    kw = {"steps": 10, "optimizer_kwargs": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, "seed": 0}
    traj = Trajectory()
    curve = fit_curve(a, b, _data(), trajectory=traj, record_every_steps=1, **kw)
    n_back = sum(p.numel() for p in backbone.parameters())
    w0 = parameters_to_vector(a).numpy()
    np.testing.assert_array_equal(curve.bend[:n_back], w0[:n_back])
    # every recorded bend is the one the curve used: frozen entries unmoved by the weight decay
    recorded = traj.vectors().numpy()
    assert len(recorded) == 11
    np.testing.assert_array_equal(recorded[:, :n_back], np.broadcast_to(w0[:n_back], (11, n_back)))
    np.testing.assert_array_equal(recorded[-1], curve.bend)
    mid = 0.5 * (curve.control[0] + curve.control[2])
    assert np.abs(curve.bend[n_back:] - mid[n_back:]).max() > 1e-3
    # nothing frozen: the whole bend trains (the backbone entries move too)
    backbone.requires_grad_(True)
    free = fit_curve(a, b, _data(), **kw)
    assert np.abs(free.bend[:n_back] - w0[:n_back]).max() > 1e-4


def test_evaluate_curve_default_metrics_follow_the_targets(minima):
    """Regression targets: the default metrics are the loss only (as every slice's), and the loss is the MSE at
    the curve's points (a hand loop); class targets keep loss and accuracy."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(24, 2, generator=g, dtype=torch.float64)
    y = X[:, :1] * X[:, 1:]
    a, b = (nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).double() for _ in range(2))
    curve = ModeCurve(np.stack([parameters_to_vector(m).numpy() for m in (a, b, a)]), "bezier")
    ts = [0.0, 0.3, 1.0]
    res = evaluate_curve(a, curve, (X, y), ts=ts)
    assert set(res.metrics) == {"loss"}
    ref = []
    for p in curve.points(ts):
        m = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)).double()
        torch.nn.utils.vector_to_parameters(torch.as_tensor(p), m.parameters())
        with torch.no_grad():
            ref.append(float(F.mse_loss(m(X), y)))
    np.testing.assert_allclose(res.metrics["loss"], ref, rtol=1e-12)
    a, b = minima
    assert set(evaluate_curve(a, fit_curve(a, b, _data(), steps=0), _data(), ts=ts).metrics) == {"loss", "accuracy"}
