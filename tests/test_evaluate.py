"""The evaluation engine against brute-force float64 loops; BatchNorm policies; NaN; distributed (gloo)."""

import copy
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.evaluate import AffinePoints, evaluate_points, parse_bytes
from landscape.params import ParamLayout, model_at, parameters_to_vector
from tests.helpers import assert_untouched, batches, brute, make, plane_points, reparametrized_net, snapshot

STRATEGIES = ["loop", "functional", "vmap", "stacked", "auto"]


@pytest.mark.parametrize("kind", ["mlp", "cnn", "bn", "res", "tied"])
def test_strategies_equal_brute_force_float64(kind):
    m, X, y = make(kind)
    data = batches(X, y)
    pts = plane_points(m)
    vecs = pts.materialize(torch.arange(len(pts)))
    want_l, want_a = brute(m, vecs, data)
    snap = snapshot(m)
    for s in STRATEGIES:
        for points in (pts, vecs):  # affine (first-layer maps) and plain matrix
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # vmap must not need its fallback on these models
                got = evaluate_points(m, points, data, strategy=s, batch_size=4 if s != "loop" else None)
            np.testing.assert_allclose(got["loss"], want_l, rtol=1e-10, atol=1e-12, err_msg=s)
            np.testing.assert_array_equal(got["accuracy"], want_a, err_msg=s)
        assert_untouched(m, snap)


def test_a_module_hook_is_run_at_every_point_not_traced_away():
    # The traced program skips module hooks: the weight the pre-hook set at the model's own point was taken as a
    # constant, right there (where the executor was checked, alone) and wrong at every other point.
    m = reparametrized_net()
    X = torch.randn(12, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(2))
    pts = plane_points(m)
    vecs = pts.materialize(torch.arange(len(pts)))
    want_l, want_a = brute(m, vecs, [(X, y)])
    for s in ("auto", "functional", "loop"):
        for points in (pts, vecs):
            got = evaluate_points(m, points, (X, y), strategy=s)
            np.testing.assert_allclose(got["loss"], want_l, rtol=1e-10, atol=1e-12, err_msg=s)
            np.testing.assert_array_equal(got["accuracy"], want_a, err_msg=s)
    with pytest.raises(ValueError, match="weight_norm"):
        evaluate_points(m, vecs, (X, y), strategy="stacked")


def test_train_mode_batchnorm_uses_each_batch():
    m, X, y = make("bn")
    data = batches(X, y)
    pts = plane_points(m)
    vecs = pts.materialize(torch.arange(len(pts)))
    want_l, want_a = brute(m, vecs, data, train_bn=True)
    snap = snapshot(m)
    for s in ("loop", "functional", "vmap", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap falls back for in-place running-stat updates
            got = evaluate_points(m, pts, data, strategy=s, bn_mode="train")
        np.testing.assert_allclose(got["loss"], want_l, rtol=1e-10, err_msg=s)
        np.testing.assert_array_equal(got["accuracy"], want_a, err_msg=s)
    assert_untouched(m, snap)
    eval_l = evaluate_points(m, vecs, data)["loss"]
    assert not np.allclose(eval_l, want_l)  # the policy matters on this model


def _perturbed(m, scale):
    """A copy of ``m`` with Gaussian noise of ``scale`` added to every parameter."""
    other = copy.deepcopy(m)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn_like(p))
    return other


def _interpolated(m, other, alphas, X, y):
    """Points ``(1 - a) m + a other`` with the buffers interpolated alike, and the brute-force losses there."""
    ba, bb = dict(m.named_buffers()), dict(other.named_buffers())
    basis = torch.stack([parameters_to_vector(m), parameters_to_vector(other)])
    pts = AffinePoints(basis, np.stack([1 - alphas, alphas], 1), [ba, bb])
    bufs = [{k: ((1 - a) * ba[k] + a * bb[k]) if ba[k].is_floating_point() else ba[k] for k in ba} for a in alphas]
    want_l, _ = brute(m, pts.materialize(torch.arange(len(alphas))), [(X, y)], bufs=bufs)
    return pts, want_l


def test_interpolated_buffers():
    m, X, y = make("bn")
    other = _perturbed(m, 0.3)
    with torch.no_grad():  # other running statistics: a pass in train mode over shifted data
        other.train()
        other(X * 3 - 1)
        other.eval()
    pts, want_l = _interpolated(m, other, np.array([0.0, 0.25, 1.0, 1.5]), X, y)
    vecs = pts.materialize(torch.arange(4))
    for s in ("loop", "functional", "stacked"):
        got = evaluate_points(m, pts, (X, y), strategy=s, bn_mode="interpolate")
        np.testing.assert_allclose(got["loss"], want_l, rtol=1e-10, err_msg=s)
    with pytest.raises(ValueError, match="interpolate"):
        evaluate_points(m, vecs, (X, y), bn_mode="interpolate")


def test_nonfinite_points_are_returned_counted_and_masked():
    m, X, y = make("mlp")
    c = parameters_to_vector(m)
    bad = c.clone()
    bad[3] = float("nan")
    huge = c * 1e308  # overflows to inf logits
    pts = torch.stack([c, bad, huge, c])
    for s in ("loop", "stacked", "functional"):
        with pytest.warns(RuntimeWarning, match="2 of 4 points"):
            got = evaluate_points(m, pts, (X, y), strategy=s)
        assert np.isnan(got["loss"][1]) and not np.isfinite(got["loss"][2])
        assert np.isnan(got["accuracy"][1:3]).all()
        assert np.isfinite(got["loss"][[0, 3]]).all() and got["loss"][0] == got["loss"][3]


def test_lazy_iterables_outputs_and_custom_metrics():
    m, X, y = make("cnn")
    pts = plane_points(m, 2, 2)
    vecs = pts.materialize(torch.arange(4))

    def margin(out, yb, start):  # (P, B, C) -> (P,) sums
        assert out.shape[1] == len(yb) and 0 <= start < 20
        return out.gather(2, yb.view(1, -1, 1).expand(out.shape[0], -1, 1))[..., 0].sum(1)

    gen = (v for v in vecs)
    got = evaluate_points(m, gen, iter(batches(X, y)), metrics=("loss", "outputs", margin), chunk_size=3)
    want_out = torch.stack([model_at(m, v)(X) for v in vecs]).detach().numpy()
    np.testing.assert_allclose(got["outputs"], want_out, rtol=1e-12, atol=1e-12)
    want_margin = want_out[np.arange(4)[:, None], np.arange(20)[None], y.numpy()[None]].mean(1)
    np.testing.assert_allclose(got["margin"], want_margin, rtol=1e-12)
    np.testing.assert_allclose(got["loss"], brute(m, vecs, [(X, y)])[0], rtol=1e-10)


def test_frozen_parameters_and_mse_and_errors():
    torch.manual_seed(5)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    m[0].bias.requires_grad_(False)
    X, y = torch.randn(12, 3).double(), torch.randn(12, 1).double()
    layout = ParamLayout.from_model(m)
    assert layout.numel == 12 + 4 + 5  # the frozen bias is part of the vector (it stays where the point puts it)
    vecs = torch.stack([parameters_to_vector(m), parameters_to_vector(m) * 0.5])
    want = [F.mse_loss(torch.func.functional_call(m, layout.unflatten(v), (X,)), y).item() for v in vecs]
    snap = snapshot(m)
    for s in ("loop", "stacked", "functional"):
        got = evaluate_points(m, vecs, (X, y), metrics=("loss",), strategy=s)
        np.testing.assert_allclose(got["loss"], want, rtol=1e-12)
    assert_untouched(m, snap)
    with pytest.raises(ValueError, match="accuracy needs integer"):
        evaluate_points(m, vecs, (X, y), metrics=("loss", "accuracy"))
    with pytest.raises(ValueError, match="valid"):
        evaluate_points(m, vecs, (X, y), metrics=("loss",), strategy="fastest")
    with pytest.raises(ValueError, match="21 entries"):
        evaluate_points(m, vecs[:, :5], (X, y), metrics=("loss",))
    assert parse_bytes("512MB") == 512 << 20 and parse_bytes(None) == 1 << 30


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
def test_a_negative_memory_budget_is_refused(bad):
    """A budget of -5 bytes was taken as the smallest chunks, silently."""
    m = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="memory size must be a finite number of bytes >= 0"):
        evaluate_points(m, torch.zeros(2, 8), (torch.randn(4, 3), torch.randint(0, 2, (4,))), memory_budget=bad)
    assert parse_bytes(0) == 0  # the smallest work units, a valid choice


@pytest.mark.parametrize("bad", ["1.2.3MB", ".", "MB", "", "1e9", float("inf"), True])
def test_unreadable_memory_sizes_name_the_accepted_forms(bad):
    """'1.2.3MB' and '.' gave float()'s "could not convert string", inf an OverflowError, True one byte."""
    with pytest.raises((ValueError, TypeError), match="memory size"):
        parse_bytes(bad)


@pytest.mark.parametrize(("text", "n"), [("2 GiB", 2 << 30), ("1.5kb", 1536), (".5M", 512 << 10), ("7", 7), ("3.", 3)])
def test_memory_size_strings(text, n):
    assert parse_bytes(text) == n


@pytest.mark.parametrize("name", ["batch_size", "chunk_size"])
@pytest.mark.parametrize("bad", [-1, 0, 2.5, "4"])
def test_sizes_must_be_positive_integers(name, bad):
    """batch_size=-1 failed with 'max() arg is an empty sequence'; 2.5 was truncated, 0 taken as the default."""
    m = nn.Linear(3, 2)
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer or None, got {bad!r}"):
        evaluate_points(m, parameters_to_vector(m)[None], (X, y), **{name: bad})


def test_affine_points_hit_anchors_bitwise():
    a = torch.tensor([1.0, -0.0, float("inf"), 3e-39, 0.1])
    b = torch.tensor([2.0, 5.0, 1.0, -7.0, 0.2])
    pts = AffinePoints(torch.stack([a, b]), [[1, 0], [0, 1], [0.5, 0.5], [-1, 2]])
    mat = pts.materialize(torch.arange(4))
    assert torch.equal(mat[0], a) and torch.signbit(mat[0, 1]) and torch.equal(mat[1], b)
    np.testing.assert_allclose(mat[3, [0, 1, 3, 4]], (2 * b - torch.where(a.isinf(), 0, a))[[0, 1, 3, 4]], rtol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    from tests import _dist_worker

    mp.spawn(_dist_worker.run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _dist_worker.compute()
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as z:
            assert set(z.files) == set(single)
            for k, v in single.items():
                np.testing.assert_allclose(z[k], v, rtol=1e-12, atol=1e-14, err_msg=f"rank {rank} {k}")
    m, X, y = make("bn")
    pts = plane_points(m, 3, 3)
    want = brute(m, pts.materialize(torch.arange(9)), [(X, y)])
    np.testing.assert_allclose(single["bn_functional_loss"], want[0], rtol=1e-10)


def test_fast_maxpool_on_odd_maps_matches_loop_without_resize_warnings():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4)).double()
    x, y = torch.randn(20, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (20,))  # 7x7 maps before pooling
    v = parameters_to_vector(net)
    pts = torch.stack([v, 1.1 * v, 0.9 * v])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fast = evaluate_points(net, pts, (x, y), strategy="stacked")
    ref = evaluate_points(net, pts, (x, y), strategy="loop")
    np.testing.assert_allclose(fast["loss"], ref["loss"], rtol=1e-12)


# ----------------------------------------------------------------------------- functional-style models
class FunctionalNet(nn.Module):
    """Written as research code is: raw parameters and ``F.*`` calls, a residual add, a flatten by ``view``.

    ``tail`` picks an ending the stacked executor has no vectorized handler for (``cumsum``, a
    ``PReLU`` leaf module with its own parameter), which must run point by point, exactly.
    """

    def __init__(self, tail: str = "plain") -> None:
        super().__init__()
        self.w1 = nn.Parameter(0.4 * torch.randn(4, 1, 3, 3))
        self.b1 = nn.Parameter(0.1 * torch.randn(4))
        self.w2 = nn.Parameter(0.3 * torch.randn(5, 4, 3, 3))
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(20, 6)
        self.w3 = nn.Parameter(0.3 * torch.randn(6, 6))
        self.out = nn.Linear(6, 3)
        self.prelu = nn.PReLU(6, init=0.2)
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(F.conv2d(x, self.w1, self.b1, padding=1)), 2)  # 9x9 -> 4x4 (odd: floor)
        h = torch.tanh(F.conv2d(h, self.w2, None, padding=1))
        h = F.batch_norm(h, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, False, 0.1, 1e-5)
        h = F.max_pool2d(h, kernel_size=2, stride=2)
        h = h.view(h.size(0), -1)
        h = F.relu(self.fc(h))
        h = h + torch.tanh(F.linear(h, self.w3))  # residual
        if self.tail == "cumsum":
            h = torch.cumsum(h, dim=1) / 6
        elif self.tail == "prelu":
            h = self.prelu(h)
        elif self.tail == "inplace":  # the user's in-place op: later readers of h see its result
            g = h * 1.0
            F.leaky_relu(h, 0.1, True)
            h = h + g
        return self.out(h)


def make_functional(tail: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(7)
    m = FunctionalNet(tail)
    X = torch.randn(20, 1, 9, 9)
    with torch.no_grad():  # non-trivial running statistics
        m.bn.running_mean.copy_(0.2 * torch.randn(5))
        m.bn.running_var.copy_(0.5 + torch.rand(5))
    return m.double().eval(), X.double(), torch.randint(0, 3, (20,))


@pytest.mark.parametrize("tail", ["plain", "cumsum", "prelu", "inplace"])
def test_functional_style_models_equal_brute_force_float64(tail):
    m, X, y = make_functional(tail)
    data = batches(X, y)
    X0 = X.clone()
    pts = plane_points(m)
    vecs = pts.materialize(torch.arange(len(pts)))
    want_l, want_a = brute(m, vecs, data)
    snap = snapshot(m)
    for s in ("stacked", "functional", "auto"):  # "stacked" raises if the fast path cannot take the model
        for points in (pts, vecs):
            got = evaluate_points(m, points, data, strategy=s, batch_size=4)
            np.testing.assert_allclose(got["loss"], want_l, rtol=1e-10, atol=1e-12, err_msg=f"{s} {tail}")
            np.testing.assert_array_equal(got["accuracy"], want_a, err_msg=s)
    assert_untouched(m, snap)
    assert torch.equal(X, X0)


def test_operation_level_handlers_cover_module_and_functional_spellings():
    """The same network written with modules and with functions gives one program shape and one fast path."""
    from landscape.evaluate._handlers import h_conv_pool, h_generic, h_module
    from landscape.evaluate._trace import build_program

    torch.manual_seed(0)
    mods = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4)).double()

    class Fn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.l = nn.Conv2d(1, 3, 3), nn.Linear(27, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l(torch.flatten(F.max_pool2d(self.c(x).relu(), 2), 1))

    fn = Fn().double()
    fn.load_state_dict(
        {"c.weight": mods[0].weight, "c.bias": mods[0].bias, "l.weight": mods[4].weight, "l.bias": mods[4].bias}
    )
    for net in (mods, fn):
        prog = build_program(net.eval())
        live = [ins.handler for ins in prog.instrs if not ins.dead]
        assert h_conv_pool in live and h_generic not in live and h_module not in live
        assert list(prog.affine) == [next(i for i, ins in enumerate(prog.instrs) if ins.handler is h_conv_pool)]
    X, y = torch.randn(20, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (20,))
    pts = plane_points(mods)
    a = evaluate_points(mods, pts, (X, y), strategy="stacked")["loss"]
    b = evaluate_points(fn, pts, (X, y), strategy="stacked")["loss"]
    np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(a, brute(mods, pts.materialize(torch.arange(len(pts))), [(X, y)])[0], rtol=1e-10)


def test_functional_path_routes_2x2_max_pool_and_stays_exact():
    """An untraceable model (data-dependent branch) runs through the functional path with the fast pooling."""
    from landscape.evaluate._kernels import FastOpsMode, uses_pool2

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.l = nn.Conv2d(1, 2, 3), nn.Linear(18, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.max_pool2d(torch.relu(self.c(x)), 2)
            if bool(h.sum() > 0):  # data-dependent control flow: torch.fx cannot trace it
                h = h * 1.5
            return self.l(h.flatten(1))

    torch.manual_seed(1)
    m = Branchy().double().eval()
    X, y = torch.randn(12, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (12,))
    assert uses_pool2(m, lambda: m(X))
    with torch.no_grad(), FastOpsMode():
        fast = m(X)
    torch.testing.assert_close(fast, m(X).detach(), rtol=0, atol=0)  # bitwise: max picks the same element
    with pytest.raises(ValueError, match="stacked"):
        evaluate_points(m, plane_points(m), (X, y), strategy="stacked")
    pts = plane_points(m)
    got = evaluate_points(m, pts, (X, y))["loss"]
    np.testing.assert_allclose(got, brute(m, pts.materialize(torch.arange(len(pts))), [(X, y)])[0], rtol=1e-10)


def test_interpolated_buffers_on_a_functional_model():
    m, X, y = make_functional("plain")
    other = _perturbed(m, 0.2)
    with torch.no_grad():
        other.bn.running_mean.add_(0.3)
        other.bn.running_var.mul_(1.7)
    pts, want_l = _interpolated(m, other, np.array([0.0, 0.4, 1.0]), X, y)
    for s in ("stacked", "functional"):
        got = evaluate_points(m, pts, (X, y), strategy=s, bn_mode="interpolate")
        np.testing.assert_allclose(got["loss"], want_l, rtol=1e-10, err_msg=s)


def test_bfloat16_outputs_come_back_as_float32_equal_to_the_models_own():
    # numpy has no bfloat16: the engine's outputs of a bfloat16 model failed at the end ("Got unsupported
    # ScalarType BFloat16"), after every point was computed, and so did functional_distance.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(torch.bfloat16)
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    out = evaluate_points(net, theta[None], (X, y), metrics=("outputs",), strategy="loop")["outputs"]
    assert out.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_array_equal(out[0], net(X.to(torch.bfloat16)).float().numpy())
