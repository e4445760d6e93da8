"""Functional distance (Im et al. 4.1) against an explicit per-sample loop in float64."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analyze import DistanceResult, FunctionalDistance, distance_along_path, functional_distance
from landscape.params import model_at, parameters_to_vector
from landscape.results import load_result
from tests.helpers import assert_untouched, batches, mlp_family, snapshot, vec


def per_sample(m, va, vb, X, softmax=True):
    """sqrt(1/N sum_i ||F(x_i, a) - F(x_i, b)||^2) and the label disagreement, one sample at a time."""
    fa, fb = model_at(m, va), model_at(m, vb)
    sq = dis = 0.0
    with torch.no_grad():
        for x in X:
            oa, ob = fa(x[None])[0], fb(x[None])[0]
            pa, pb = (oa.softmax(0), ob.softmax(0)) if softmax else (oa, ob)
            sq += float(((pa - pb) ** 2).sum())
            dis += float(int(oa.argmax()) != int(ob.argmax()))
    return np.sqrt(sq / len(X)), dis / len(X)


@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_functional_distance_equals_per_sample_loop(output):
    m, (b,), (X, y) = mlp_family(2)
    snap, snap_b = snapshot(m), snapshot(b)
    r = functional_distance(m, m, b, batches(X, y, (10, 10, 4)), output=output)
    assert_untouched(m, snap)
    assert_untouched(b, snap_b)
    rms, dis = per_sample(m, vec(m), vec(b), X, output == "softmax")
    assert isinstance(r, FunctionalDistance) and r.n_samples == 24 and r.output == output
    assert r.rms == pytest.approx(rms, rel=1e-12)
    assert r.disagreement == pytest.approx(dis, abs=1e-15) and 0 < r.disagreement < 1


def test_distance_along_path(tmp_path):
    m, (b,), (X, y) = mlp_family(2)
    alphas = [0.0, 0.3, 1.0, 1.5]
    r = distance_along_path(m, m, b, (X, y), alphas=alphas, label="a-b")
    assert r.rms[0] == 0 and r.disagreement[0] == 0
    for a, got_r, got_d in zip(alphas, r.rms, r.disagreement):
        want_r, want_d = per_sample(m, vec(m), (1 - a) * vec(m) + a * vec(b), X)
        assert got_r == pytest.approx(want_r, rel=1e-12, abs=1e-15)
        assert got_d == pytest.approx(want_d, abs=1e-15)
    assert r.rms[2] == pytest.approx(functional_distance(m, m, b, (X, y)).rms, rel=1e-14)
    r.save(tmp_path / "d")
    back = load_result(tmp_path / "d.npz")
    assert isinstance(back, DistanceResult) and back.label == "a-b"
    np.testing.assert_array_equal(back.rms, r.rms)
    with pytest.raises(ValueError, match="valid"):
        distance_along_path(m, m, b, (X, y), output="probabilities")


def test_interpolated_buffers_need_models():
    # Found by mypy: a vector endpoint has no buffers to interpolate (was a TypeError from dict(None)).
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).eval()
    data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
    vector = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    with pytest.raises(ValueError, match="given as models"):
        distance_along_path(net, vector, net, data, bn_mode="interpolate")
    assert distance_along_path(net, net, net, data, alphas=[0.0, 1.0], bn_mode="interpolate").rms.max() == 0.0


def test_batchnorm_networks_are_compared_on_their_own_running_statistics():
    """Two BatchNorm networks as functions: each in eval mode with its own buffers (a hand-written loop), unless
    bn_mode says otherwise; along a path the buffers are interpolated, as bn_mode="interpolate" does."""
    torch.manual_seed(0)

    def net() -> nn.Module:
        m = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()
        with torch.no_grad():  # distinct running statistics per network
            m[1].running_mean.normal_()
            m[1].running_var.uniform_(0.5, 2.0)
        return m.eval()

    a, b, other = net(), net(), net()
    x = torch.randn(40, 5, dtype=torch.float64)
    data = (x, torch.zeros(40, dtype=torch.long))
    with torch.no_grad():
        pa, pb = torch.softmax(a(x), 1), torch.softmax(b(x), 1)
    ref = float((pa - pb).pow(2).sum(1).mean().sqrt())
    for problem in (other, a, b):  # whose model the problem holds must not matter
        assert functional_distance(problem, a, b, data).rms == pytest.approx(ref, rel=1e-12)
    # bn_mode="eval" asks for the problem's model's statistics at every point: then it is that comparison
    with torch.no_grad():
        qa = torch.softmax(torch.func.functional_call(other, dict(a.named_parameters()), (x,)), 1)
        qb = torch.softmax(torch.func.functional_call(other, dict(b.named_parameters()), (x,)), 1)
    shared = float((qa - qb).pow(2).sum(1).mean().sqrt())
    assert abs(shared - ref) > 1e-3
    assert functional_distance(other, a, b, data, bn_mode="eval").rms == pytest.approx(shared, rel=1e-12)
    path = distance_along_path(other, a, b, data, alphas=[0.0, 0.5, 1.0])
    interp = distance_along_path(other, a, b, data, alphas=[0.0, 0.5, 1.0], bn_mode="interpolate")
    np.testing.assert_allclose(path.rms, interp.rms, rtol=1e-12, atol=0)
    assert path.rms[-1] == pytest.approx(ref, rel=1e-12)
    # vectors carry no buffers: the problem's model's, as before
    va, vb = parameters_to_vector(a), parameters_to_vector(b)
    assert functional_distance(other, va, vb, data).rms == pytest.approx(shared, rel=1e-12)


def test_single_logit_binary_classifiers_are_compared_as_two_classes():
    """One output per sample (a bce_with_logits classifier): softmax over one entry is 1 for every network, so any
    two such networks were at distance 0 with 0 disagreement. Reference: probabilities (1 - s, s), s the sigmoid,
    and predicted class logit > 0, by hand."""
    torch.manual_seed(0)
    a, b = nn.Linear(3, 1).double(), nn.Linear(3, 1).double()
    x = torch.randn(50, 3, dtype=torch.float64)
    data = (x, (x[:, :1] > 0).double())
    with torch.no_grad():
        za, zb = a(x), b(x)
    dis = float(((za > 0) != (zb > 0)).double().mean())
    assert dis > 0.2
    rms = float((2 * (za.sigmoid() - zb.sigmoid()).square().sum(1)).mean().sqrt())
    r = functional_distance(a, a, b, data)
    assert r.rms == pytest.approx(rms, rel=1e-12) and r.disagreement == pytest.approx(dis, rel=1e-12)
    r = functional_distance(a, a, b, data, output="logits")
    assert r.rms == pytest.approx(float((za - zb).square().mean().sqrt()), rel=1e-12)
    assert r.disagreement == pytest.approx(dis, rel=1e-12)
    path = distance_along_path(a, a, b, data, alphas=[0.0, 1.0])
    np.testing.assert_allclose(path.rms, [0.0, rms], rtol=1e-12, atol=0)
    np.testing.assert_allclose(path.disagreement, [0.0, dis], rtol=1e-12, atol=0)
