"""Slices: exact anchors, regular planes, the papers' formulas in float64, save/load, untouched models."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.analyze import (
    BarycentricResult,
    PlaneResult,
    barycentric,
    bilinear,
    line,
    line_distance,
    plane,
    plane_through,
    random_plane,
)
from landscape.params import model_at, parameters_to_vector
from landscape.results import load_result
from tests.helpers import assert_untouched, loss_at, mlp_family, snapshot, vec


def test_line_hits_endpoints_bitwise_and_goes_beyond():
    m, (b,), data = mlp_family(2, torch.float32)
    assert next(m.parameters()).dtype == torch.float32
    snap, snap_b = snapshot(m), snapshot(b)
    r = line(m, m, b, data, alphas=[0.0, 1.0, 0.5, 2.0, -1.0], metrics=("loss", "outputs"), strategy="loop")
    X = data[0]
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(r.metrics["outputs"][0]), m(X))  # alpha 0 is a, bitwise
        assert torch.equal(torch.from_numpy(r.metrics["outputs"][1]), b(X))  # alpha 1 is b, bitwise
    assert np.array_equal(r.anchors[0], parameters_to_vector(m).numpy())
    assert_untouched(m, snap)
    assert_untouched(b, snap_b)
    m64, (b64,), data64 = mlp_family(2)
    r = line(m64, m64, b64, data64, alphas=[0.5, 2.0, -1.0])
    a_, b_ = vec(m64), vec(b64)
    for alpha, got in zip([0.5, 2.0, -1.0], r.metrics["loss"]):
        assert got == pytest.approx(loss_at(m64, (1 - alpha) * a_ + alpha * b_, data64), rel=1e-12)
    assert r.coord_name == "alpha" and r.n_nonfinite == 0


def test_line_distance_follows_im_eq1():
    m, (ref,), data = mlp_family(2)
    L = float((vec(ref) - vec(m)).norm())
    r = line_distance(m, m, ref, data, distances=[0.0, 0.3 * L, L, 1.7 * L])
    u = (vec(ref) - vec(m)) / L
    for d, got in zip(r.coords, r.metrics["loss"]):
        assert got == pytest.approx(loss_at(m, vec(m) + d * u, data), rel=1e-12)
    assert r.anchor_coords[1] == pytest.approx(L) and r.coord_name == "distance"
    m32, ref32 = copy.deepcopy(m).float(), copy.deepcopy(ref).float()
    r32 = line_distance(
        m32,
        m32,
        ref32,
        (data[0].float(), data[1]),
        distances=[0.0, r.anchor_coords[1]],
        metrics=("outputs",),
        strategy="loop",
    )
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(r32.metrics["outputs"][0]), m32(data[0].float()))
    default = line_distance(m, m, ref, data)
    assert L in default.coords and default.coords.max() == pytest.approx(1.5 * L)


def test_bilinear_and_barycentric_hit_their_anchors_and_match_formulas():
    m, others, data = mlp_family(4, torch.float32)
    c = [m, *others]
    X = data[0]
    r = bilinear(m, c, data, n=3, metrics=("outputs",), strategy="loop")
    with torch.no_grad():
        for k, (a, be) in enumerate(r.corner_coords):
            i, j = list(r.betas).index(be), list(r.alphas).index(a)
            assert torch.equal(torch.from_numpy(r.metrics["outputs"][i, j]), c[k](X)), k
    t = barycentric(m, c[0], c[1], c[2], data, n=3, metrics=("outputs",), strategy="loop")
    with torch.no_grad():
        assert all(torch.equal(torch.from_numpy(t.metrics["outputs"][i, 0]), c[0](X)) for i in range(3))
        assert torch.equal(torch.from_numpy(t.metrics["outputs"][2, 2]), c[1](X))  # alpha 1, beta 1
        assert torch.equal(torch.from_numpy(t.metrics["outputs"][0, 2]), c[2](X))  # alpha 1, beta 0
    m, others, data = mlp_family(4)
    v = [vec(m)] + [vec(o) for o in others]
    r = bilinear(m, [m, *others], data, alphas=[0.25, 0.6], betas=[0.1, 0.5, 0.9])
    assert r.metrics["loss"].shape == (3, 2)
    for i, be in enumerate(r.betas):
        for j, a in enumerate(r.alphas):
            want = be * (a * v[0] + (1 - a) * v[1]) + (1 - be) * (a * v[2] + (1 - a) * v[3])  # Im et al. eqs. 3-5
            assert r.metrics["loss"][i, j] == pytest.approx(loss_at(m, want, data), rel=1e-12)
    t = barycentric(m, m, others[0], others[1], data, alphas=[0.3, 1.0], betas=[0.2, 0.7])
    for i, be in enumerate(t.betas):
        for j, a in enumerate(t.alphas):
            want = v[0] + a * (be * (v[1] - v[0]) + (1 - be) * (v[2] - v[0]))  # A.1 eqs. 6-8
            assert t.metrics["loss"][i, j] == pytest.approx(loss_at(m, want, data), rel=1e-12)
    xy = barycentric(m, m, m, m, data, alphas=[0.0, 1.0], betas=[0.0, 1.0]).triangle_xy()
    assert np.allclose(xy[:, 0], 0.0) and xy.shape == (2, 2, 2)
    assert np.allclose(xy[1, 1], [1.0, 0.0]) and np.allclose(xy[0, 1], [0.5, np.sqrt(3) / 2])
    with pytest.raises(ValueError, match="four corners"):
        bilinear(m, [m, m, m], data)


@pytest.mark.parametrize("nx,ny", [(5, 5), (4, 4), (6, 3)])
def test_planes_are_regular(nx, ny):
    m, _, data = mlp_family(1)
    g = torch.Generator().manual_seed(nx * 10 + ny)
    d1, d2 = (torch.randn(vec(m).numel(), generator=g, dtype=torch.float64) * 0.3 for _ in range(2))
    xs, ys = np.linspace(-1, 1.5, nx), np.linspace(-0.7, 0.4, ny)
    snap = snapshot(m)
    r = plane(m, m, d1, d2, data, xs, ys)
    assert_untouched(m, snap)
    assert r.metrics["loss"].shape == (ny, nx) and r.metrics["accuracy"].shape == (ny, nx)
    for i in range(ny):
        for j in range(nx):
            want = loss_at(m, vec(m) + xs[j] * d1 + ys[i] * d2, data)
            assert r.metrics["loss"][i, j] == pytest.approx(want, rel=1e-12), (i, j)
    np.testing.assert_allclose(r.project(r.point(0.3, -0.2)), [[0.3, -0.2]], atol=1e-12)


def test_plane_through_three_models_both_frames(tmp_path):
    m, (m1, m2), data = mlp_family(3)
    X = data[0].float()
    f0, f1, f2 = (copy.deepcopy(x).float() for x in (m, m1, m2))
    r = plane_through(
        f0, f0, f1, f2, (X, data[1]), xs=[0.0, 1.0, 0.5], ys=[1.0, 0.0], metrics=("outputs",), strategy="loop"
    )
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(r.metrics["outputs"][1, 0]), f0(X))
        assert torch.equal(torch.from_numpy(r.metrics["outputs"][1, 1]), f1(X))
        assert torch.equal(torch.from_numpy(r.metrics["outputs"][0, 0]), f2(X))
    o = plane_through(m, m, m1, m2, data, xs=[-0.2, 0.6], ys=[0.1, 0.5, 1.2], frame="orthogonal")
    d1, d2 = (torch.from_numpy(d) for d in o.directions)
    assert abs(float(d1 @ d2)) < 1e-9 * float(d1.norm() * d2.norm())
    assert float(d2.norm()) == pytest.approx(float(d1.norm()), rel=1e-12)
    np.testing.assert_allclose(o.project(np.stack([vec(m1), vec(m2)])), o.anchor_coords[1:], atol=1e-10)
    for i, y in enumerate(o.ys):
        for j, x in enumerate(o.xs):
            assert o.metrics["loss"][i, j] == pytest.approx(loss_at(m, vec(m) + x * d1 + y * d2, data), rel=1e-10)
    o.save(tmp_path / "plane")
    back = load_result(tmp_path / "plane.npz")
    assert isinstance(back, PlaneResult) and back.anchor_labels == ["p0", "p1", "p2"]
    np.testing.assert_array_equal(back.metrics["loss"], o.metrics["loss"])
    np.testing.assert_array_equal(back.directions, o.directions)
    assert back.provenance.extra["frame"] == "orthogonal"
    with pytest.raises(ValueError, match="collinear"):
        plane_through(m, m, m1, m1, data)


def test_random_plane_is_seeded_and_recorded(tmp_path):
    m, _, data = mlp_family(1)
    a = random_plane(m, data, xs=np.linspace(-1, 1, 3), seed=3)
    b = random_plane(m, data, xs=np.linspace(-1, 1, 3), seed=3)
    np.testing.assert_array_equal(a.directions, b.directions)
    np.testing.assert_array_equal(a.metrics["loss"], b.metrics["loss"])
    assert a.provenance.seed == 3 and a.provenance.extra["normalization"] == "filter"
    assert a.metrics["loss"][1, 1] == pytest.approx(loss_at(m, vec(m), data), rel=1e-12)
    t = barycentric(m, m, m, m, data, n=2)
    t.save(tmp_path / "tri.npz")
    assert isinstance(load_result(tmp_path / "tri.npz"), BarycentricResult)


def test_interpolated_batchnorm_states_and_nan_counts():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    X, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    b = copy.deepcopy(m)
    with torch.no_grad():
        b.train()
        b(3 * X + 2)
    m.eval()
    b.eval()
    r = line(m, m, b, (X, y), alphas=[0.0, 0.5, 1.0], bn_mode="interpolate")
    buf = {k: 0.5 * (v + dict(b.named_buffers())[k]) if v.is_floating_point() else v for k, v in m.named_buffers()}
    with torch.no_grad():
        want = F.cross_entropy(model_at(m, 0.5 * (vec(m) + vec(b)), buf).eval()(X), y).item()
        assert r.metrics["loss"][2] == pytest.approx(F.cross_entropy(b(X), y).item(), rel=1e-12)
    assert r.metrics["loss"][1] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="interpolate"):
        line(m, vec(m), vec(b), (X, y), bn_mode="interpolate")
    bad = vec(m).clone()
    bad[0] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = line(m, m, bad, (X, y), alphas=[0.0, 0.5, 1.0])
    assert r.n_nonfinite == 2 and np.isnan(r.metrics["accuracy"][1:]).all() and np.isfinite(r.metrics["loss"][0])


def _bn_pair(seed=4):
    """A BatchNorm MLP (the problem's template, fresh statistics) and two trained-looking copies with their own."""
    torch.manual_seed(seed)
    t = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    X, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    nets = []
    for shift in (1.0, -2.0, 0.5):
        n = copy.deepcopy(t).train()
        with torch.no_grad():
            for p in n.parameters():
                p.add_(0.3 * torch.randn_like(p))
            n(2 * X + shift)  # moves the running statistics
        nets.append(n.eval())
    return t, nets, (X, y)


def _own_loss(m, data, params=None, bufs=None):
    """Brute force: the eval-mode loss of ``m``'s architecture at ``params`` (default its own) on ``bufs``."""
    with torch.no_grad():
        net = model_at(m, vec(m) if params is None else params, dict(m.named_buffers()) if bufs is None else bufs)
        return F.cross_entropy(net.eval()(data[0]), data[1]).item()


def test_slices_between_batchnorm_models_use_each_models_statistics_by_default():
    t, (a, b, c), data = _bn_pair()
    bufs = lambda m: dict(m.named_buffers())  # noqa: E731
    # A line between two models: each end is that model's own loss, and the middle has the mean statistics.
    r = line(t, a, b, data, alphas=[0.0, 0.5, 1.0])
    mid = {k: 0.5 * (v + bufs(b)[k]) if v.is_floating_point() else v for k, v in bufs(a).items()}
    assert r.provenance.extra["bn_mode"] == "interpolate"
    np.testing.assert_allclose(
        r.metrics["loss"],
        [_own_loss(a, data), _own_loss(t, data, 0.5 * (vec(a) + vec(b)), mid), _own_loss(b, data)],
        rtol=1e-12,
    )
    # bn_mode="eval" keeps the problem model's statistics at every point (the old default).
    r = line(t, a, b, data, alphas=[0.0, 1.0], bn_mode="eval")
    np.testing.assert_allclose(
        r.metrics["loss"], [_own_loss(t, data, vec(a), bufs(t)), _own_loss(t, data, vec(b), bufs(t))], rtol=1e-12
    )
    # Vectors carry no statistics: the problem model's, as before.
    r = line(t, vec(a), vec(b), data, alphas=[1.0])
    assert r.metrics["loss"][0] == pytest.approx(_own_loss(t, data, vec(b), bufs(t)), rel=1e-12)
    # Three models: each corner of the plane and of the triangle is that model's own loss.
    p = plane_through(t, a, b, c, data, xs=[0.0, 1.0], ys=[0.0, 1.0])
    got = p.metrics["loss"]
    np.testing.assert_allclose([got[0, 0], got[0, 1], got[1, 0]], [_own_loss(m, data) for m in (a, b, c)], rtol=1e-12)
    tri = barycentric(t, a, b, c, data, n=2).metrics["loss"]  # [beta, alpha]: alpha 0 is a, (1, 1) b, (1, 0) c
    np.testing.assert_allclose([tri[0, 0], tri[1, 1], tri[0, 1]], [_own_loss(m, data) for m in (a, b, c)], rtol=1e-12)
    # A plane around a model centre keeps the centre's statistics at every point (directions carry none).
    d = torch.randn(2, vec(t).numel(), dtype=torch.float64)
    pl = plane(t, c, d[0], d[1], data, [0.0, 0.5], [0.25])
    want = [_own_loss(t, data, vec(c) + x * d[0] + 0.25 * d[1], bufs(c)) for x in (0.0, 0.5)]
    np.testing.assert_allclose(pl.metrics["loss"][0], want, rtol=1e-12)
    rp = random_plane(t, data, xs=[0.0], ys=[0.0], center=c, seed=0)
    assert rp.metrics["loss"][0, 0] == pytest.approx(_own_loss(c, data), rel=1e-12)
    # A line from the problem's own model to a vector is unchanged: the statistics are the model's.
    r = line(a, a, vec(b), data, alphas=[0.0, 1.0])
    assert r.provenance.extra["bn_mode"] == "eval"
    assert r.metrics["loss"][1] == pytest.approx(_own_loss(a, data, vec(b)), rel=1e-12)


def test_no_public_function_touches_the_models():
    from landscape.analyze import distance_along_path, functional_distance

    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3)).double()
    m.train()  # training flags must survive, BatchNorm statistics must not move
    m[4].bias.requires_grad_(False)
    others = [copy.deepcopy(m) for _ in range(3)]
    for o in others:
        with torch.no_grad():
            for p in o.parameters():
                p.add_(torch.randn_like(p))
    data = (torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,)))
    snaps = [snapshot(x) for x in (m, *others)]
    d = torch.randn(2, vec(m).numel(), dtype=torch.float64)
    for bn in (None, "eval", "train", "interpolate"):
        kw = {} if bn is None else {"bn_mode": bn}
        line(m, m, others[0], data, alphas=[0, 0.5], **kw)
        line_distance(m, m, others[0], data, distances=[0.0, 1.0], **kw)
        bilinear(m, [m, *others], data, n=2, **kw)
        barycentric(m, m, others[0], others[1], data, n=2, **kw)
        plane_through(m, m, others[0], others[1], data, xs=[0, 1], **kw)
        distance_along_path(m, m, others[0], data, alphas=[0.5], **kw)
        functional_distance(m, m, others[1], data, **kw)
        plane(m, others[2], d[0], d[1], data, [0, 1], [0], **kw)
        random_plane(m, data, xs=[0, 1], **kw)
        random_plane(m, data, xs=[0, 1], center=others[2], **kw)
    for x, s in zip((m, *others), snaps):
        assert_untouched(x, s)


# --------------------------------------------------------------------------- issue 17: frozen parameters
def _frozen_setup():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    other = copy.deepcopy(m)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))
    data = (torch.randn(24, 4, dtype=torch.float64), torch.randint(0, 3, (24,)))
    return m, other, data


@pytest.mark.parametrize("strategy", ["auto", "loop"])
def test_frozen_model_gives_the_same_plane_and_line_bitwise(strategy):
    """loss-landscapes' random_plane leaves the net frozen; that gave ZeroDivisionError / IndexError."""
    m, other, data = _frozen_setup()
    frozen = copy.deepcopy(m).requires_grad_(False)
    frozen_other = copy.deepcopy(other).requires_grad_(False)
    want = random_plane(m, data, xs=[-1, 0, 0.5], seed=7, strategy=strategy)
    got = random_plane(frozen, data, xs=[-1, 0, 0.5], seed=7, strategy=strategy)
    assert np.array_equal(got.directions, want.directions) and np.array_equal(got.center, want.center)
    for k in want.metrics:
        assert np.array_equal(got.metrics[k], want.metrics[k]), k
    want = line(m, m, other, data, alphas=[0, 0.3, 1, 1.5], strategy=strategy)
    for a, b in [(frozen, frozen_other), (frozen, other), (m, frozen_other)]:  # one end frozen: same points
        got = line(frozen, a, b, data, alphas=[0, 0.3, 1, 1.5], strategy=strategy)
        assert np.array_equal(got.anchors, want.anchors)
        for k in want.metrics:
            assert np.array_equal(got.metrics[k], want.metrics[k]), k
    for x in (m, other, frozen, frozen_other):
        assert all(not p.requires_grad for p in x.parameters()) == (x in (frozen, frozen_other))


def test_half_frozen_model_trainable_plane_moves_only_trainable_tensors():
    m, other, data = _frozen_setup()
    m[0].requires_grad_(False)  # fine-tuning: the first layer is frozen
    n0 = sum(p.numel() for p in m[0].parameters())
    full = random_plane(m, data, xs=[0, 1], seed=2, bias_bn="keep")
    r = random_plane(m, data, xs=[0, 1], seed=2, bias_bn="keep", params="trainable")
    assert (r.directions[:, :n0] == 0).all() and (full.directions[:, :n0] != 0).any()
    assert np.array_equal(r.directions[:, n0:], full.directions[:, n0:])
    assert r.provenance.extra["params"] == "trainable"
    # the plane's points keep the frozen layer exactly where the model has it
    pt = torch.as_tensor(r.point(1.0, 1.0))
    assert torch.equal(pt[:n0], parameters_to_vector(m)[:n0])
    with pytest.raises(ValueError, match="selects no parameter"):
        random_plane(copy.deepcopy(m).requires_grad_(False), data, xs=[0, 1], params="trainable")
    # a parameter dict without the frozen tensors (as written when vectors held only trainable ones)
    d = {k: v for k, v in other.named_parameters() if not k.startswith("0.")}
    got = line(m, m, d, data, alphas=[1.0])
    want_vec = torch.cat([parameters_to_vector(m)[:n0], parameters_to_vector(other)[n0:]])
    assert torch.equal(torch.as_tensor(got.anchors[1]), want_vec)
