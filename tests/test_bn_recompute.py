"""``bn_mode="recompute"``: every point's BatchNorm statistics recomputed before it is evaluated.

The reference is torch's own :func:`torch.optim.swa_utils.update_bn` on a copy of the model loaded with the
point's weights, then an eval-mode forward, written out by hand in float64.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.optim.swa_utils import update_bn

from landscape import Problem
from landscape.analyze import evaluate_curve, line, loss_barrier, random_plane
from landscape.analyze.curves import ModeCurve
from landscape.evaluate import evaluate_points


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 8),
        nn.BatchNorm1d(8),
        nn.Tanh(),
        nn.Dropout(0.3),
        nn.Linear(8, 3),
    ).double()
    with torch.no_grad():  # running statistics far from any point's own
        for _ in range(3):
            m(torch.randn(50, 1, 6, 6, dtype=torch.float64) + seed)
    return m.eval()


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(37, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (37,), generator=g)
    Xs = torch.randn(29, 1, 6, 6, generator=g, dtype=torch.float64) * 2 + 0.5
    return _net(0), _net(1), (X, y), Xs


def _reference(model: nn.Module, theta: torch.Tensor, data, stat_batches) -> float:
    m = copy.deepcopy(model)
    vector_to_parameters(theta, m.parameters())
    update_bn([(x,) for x in stat_batches], m)
    m.eval()
    with torch.no_grad():
        return F.cross_entropy(m(data[0]), data[1]).item()


def _vec(m: nn.Module) -> torch.Tensor:
    return parameters_to_vector(m.parameters()).detach()


@pytest.mark.parametrize("strategy", ["auto", "loop", "functional", "stacked"])
@pytest.mark.parametrize("form", ["batches", "pair", "tensor", "default"])
def test_line_equals_update_bn_at_every_point(setup, strategy, form):
    a, b, data, Xs = setup
    chunks = [Xs[i : i + 6] for i in range(0, 29, 6)]  # uneven: 6, 6, 6, 6, 5
    bn_data, stat = {
        "batches": ([(x, torch.zeros(len(x))) for x in chunks], chunks),
        "pair": ((Xs, torch.zeros(29)), [Xs]),
        "tensor": (Xs, [Xs]),
        "default": (None, [data[0]]),  # the evaluated data, in the caller's (one) batch
    }[form]
    alphas = np.linspace(-0.25, 1.25, 7)
    r = line(a, a, b, data, alphas=alphas, bn_mode="recompute", bn_data=bn_data, strategy=strategy)
    want = [_reference(a, (1 - t) * _vec(a) + t * _vec(b), data, stat) for t in alphas]
    np.testing.assert_allclose(r.metrics["loss"], want, rtol=1e-12, atol=1e-13)
    assert r.provenance.extra["bn_mode"] == "recompute"


def test_recompute_differs_from_every_other_mode(setup):
    """The premise of the tests above: the statistics matter here, so agreeing with update_bn means something."""
    a, b, data, Xs = setup
    al = [0.5]
    rec = line(a, a, b, data, alphas=al, bn_mode="recompute", bn_data=Xs).metrics["loss"][0]
    for mode in ("eval", "interpolate", "train"):
        other = line(a, a, b, data, alphas=al, bn_mode=mode).metrics["loss"][0]
        assert abs(other - rec) > 1e-3, mode


def test_plane_problem_and_curve_paths(setup):
    a, b, data, Xs = setup
    prob = Problem(a, data, "cross_entropy")
    p = random_plane(prob, xs=[-0.5, 0.5], ys=[0.0, 1.0], seed=3, bn_mode="recompute", bn_data=Xs)
    center, dx, dy = (torch.as_tensor(np.asarray(v)) for v in (p.center, *p.directions))
    for i, yv in enumerate(p.ys):
        for j, xv in enumerate(p.xs):
            theta = center + float(xv) * dx + float(yv) * dy
            assert p.metrics["loss"][i, j] == pytest.approx(_reference(a, theta, data, [Xs]), rel=1e-12)
    bend = 0.5 * (_vec(a) + _vec(b)) + 0.1
    curve = ModeCurve(control=torch.stack([_vec(a), bend, _vec(b)]).numpy(), shape="bezier")
    ts = np.array([0.0, 0.3, 1.0])
    c = evaluate_curve(a, curve, data, ts=ts, bn_mode="recompute", bn_data=Xs)
    for t, got in zip(ts, c.metrics["loss"]):
        theta = (1 - t) ** 2 * _vec(a) + 2 * t * (1 - t) * bend + t**2 * _vec(b)
        assert got == pytest.approx(_reference(a, theta, data, [Xs]), rel=1e-12)


def test_barrier_and_the_callers_models_are_untouched(setup):
    a, b, data, Xs = setup
    before = [copy.deepcopy(m.state_dict()) for m in (a, b)]
    flags = [[s.training for s in m.modules()] for m in (a, b)]
    r = loss_barrier(a, b, data, alphas=np.linspace(0, 1, 5), bn_mode="recompute", bn_data=Xs)
    want = [_reference(a, (1 - t) * _vec(a) + t * _vec(b), data, [Xs]) for t in np.linspace(0, 1, 5)]
    np.testing.assert_allclose(r.metrics["loss"], want, rtol=1e-12)
    assert r.loss_barrier == pytest.approx(max(w - ((1 - t) * want[0] + t * want[-1]) for t, w in zip(r.alphas, want)))
    for m, sd, fl in zip((a, b), before, flags):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
        assert [s.training for s in m.modules()] == fl
        assert all(s.momentum == 0.1 for s in m.modules() if isinstance(s, nn.modules.batchnorm._BatchNorm))


def test_without_batchnorm_recompute_is_eval():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    d = (torch.randn(9, 3, dtype=torch.float64), torch.randint(0, 2, (9,)))
    pts = torch.randn(4, sum(p.numel() for p in m.parameters()), dtype=torch.float64)
    got = evaluate_points(m, pts, d, bn_mode="recompute")["loss"]
    np.testing.assert_array_equal(got, evaluate_points(m, pts, d, bn_mode="eval")["loss"])


def test_clear_errors(setup):
    a, b, data, Xs = setup
    with pytest.raises(ValueError, match="bn_data= is the data of bn_mode='recompute'"):
        line(a, a, b, data, alphas=[0.5], bn_mode="eval", bn_data=Xs)
    with pytest.raises(ValueError, match="pass one or the other"):
        loss_barrier(a, b, data, repair=True, bn_mode="recompute")
    with pytest.raises(ValueError, match="batches of at least 2 samples"):
        line(a, a, b, data, alphas=[0.5], bn_mode="recompute", bn_data=[Xs[:5], Xs[5:6]])
    with pytest.raises(TypeError, match="bn_data"):
        line(a, a, b, data, alphas=[0.5], bn_mode="recompute", bn_data=[{"x": Xs}])
    with pytest.raises(ValueError, match="empty"):
        line(a, a, b, data, alphas=[0.5], bn_mode="recompute", bn_data=Xs[:0])
