"""Functional distance (Im et al. 4.1) against an explicit per-sample loop in float64."""

import numpy as np
import pytest
import torch

from landscape.analyze import DistanceResult, FunctionalDistance, distance_along_path, functional_distance
from landscape.params import model_at
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
