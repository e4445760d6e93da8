"""Weight matching, activation matching, REPAIR and barriers against brute force and hand loops."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from landscape.analyze import (
    AlignmentResult,
    BarrierResult,
    activation_correlations,
    activation_matching,
    apply_permutation,
    barrier_of,
    barrier_values,
    interpolate_models,
    invert_permutation,
    loss_barrier,
    matching_objective,
    permutation_spec,
    random_permutation,
    repair,
    weight_matching,
)
from landscape.models import build_model
from landscape.params import ParamLayout, parameters_to_vector
from landscape.results import load_result


def _net(widths: list[int], seed: int, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (m, n) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(m, n))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


# --------------------------------------------------------------------------- weight matching
@pytest.mark.parametrize("width", range(1, 8))
def test_weight_matching_one_hidden_layer_equals_brute_force(width):
    a, b = _net([4, width, 3], 0), _net([4, width, 3], 1)
    spec = permutation_spec(a)
    (g,) = spec.groups
    best = max(matching_objective(spec, a, b, {g: torch.tensor(p)}) for p in itertools.permutations(range(width)))
    res = weight_matching(a, b)
    assert res.objective[-1] == pytest.approx(best, rel=1e-12, abs=1e-12)
    assert matching_objective(spec, a, b, res.perm) == pytest.approx(res.objective[-1], rel=1e-12, abs=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    seeds=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)),
    order_seed=st.integers(0, 100),
    start=st.integers(0, 100),
)
def test_weight_matching_sweeps_never_decrease(widths, seeds, order_seed, start):
    a, b = _net([3, *widths, 2], seeds[0]), _net([3, *widths, 2], seeds[1])
    spec = permutation_spec(a)
    init = random_permutation(spec, seed=start)
    res = weight_matching(a, b, seed=order_seed, init=init, max_sweeps=20)
    obj = res.objective
    assert obj[0] == pytest.approx(matching_objective(spec, a, b, init), rel=1e-12, abs=1e-12)
    assert np.all(np.diff(obj) >= -1e-12 * np.abs(obj[:-1]).clip(1)), obj
    assert matching_objective(spec, a, b, res.perm) == pytest.approx(obj[-1], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ["small_resnet", "vgg", "lenet5", "lstm"])
def test_weight_matching_recovers_a_hidden_permutation(name):
    """``b`` is ``a`` relabelled: matching undoes the relabelling exactly (all parameters bitwise)."""
    if name == "lstm":
        torch.manual_seed(0)
        a = nn.Sequential(nn.Linear(3, 5), nn.LSTM(5, 7, num_layers=2)).double()
    else:
        kw = {"small_resnet": {"width": 4}, "vgg": {"cfg": (4, "M", 6), "hidden": 8}, "lenet5": {}}[name]
        a = build_model(name, (1, 8, 8), 10, seed=0, dtype=torch.float64, **kw)
    spec = permutation_spec(a)
    b = apply_permutation(spec, random_permutation(spec, seed=5), a)
    res = weight_matching(a, b)
    assert isinstance(res, AlignmentResult) and res.method == "weight"
    aligned = res.apply(b)
    for (k, p), q in zip(a.state_dict().items(), aligned.state_dict().values()):
        assert torch.equal(p, q), k


def test_alignment_result_saves_without_pickle(tmp_path):
    a, b = _net([4, 5, 3], 0), _net([4, 5, 3], 1)
    res = weight_matching(a, b)
    again = load_result(res.save(tmp_path / "align"))
    assert again.perm.keys() == res.perm.keys()
    assert all(torch.equal(again.perm[g], res.perm[g]) for g in res.perm)
    assert torch.equal(parameters_to_vector(again.apply(b)), parameters_to_vector(res.apply(b)))


# --------------------------------------------------------------------------- activation matching
def test_activation_correlations_equal_dense_float64():
    a, b = _net([4, 6, 5, 3], 0), _net([4, 6, 5, 3], 1)
    X = torch.randn(37, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    corr = activation_correlations(a, b, (X, torch.zeros(37, dtype=torch.long)), batch_size=8)
    with torch.no_grad():
        ha1, hb1 = torch.relu(a[0](X)), torch.relu(b[0](X))
        ha2, hb2 = torch.relu(a[2](ha1)), torch.relu(b[2](hb1))
    for (g, c), (ha, hb) in zip(corr.items(), [(ha1, hb1), (ha2, hb2)]):
        n = ha.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.corrcoef(ha.numpy().T, hb.numpy().T)[:n, n:]
        ok = np.isfinite(ref)
        assert np.array_equal(np.isfinite(c), ok), g  # a dead ReLU unit has no correlation
        np.testing.assert_allclose(c[ok], ref[ok], atol=1e-8, rtol=0)


def test_activation_correlations_of_a_cnn_stream_dense():
    """Convolution sites: every (sample, position) is an observation; a residual stream stacks its sites."""
    a = build_model("small_resnet", (1, 8, 8), 10, width=4, blocks=(1,), seed=0, dtype=torch.float64).eval()
    b = build_model("small_resnet", (1, 8, 8), 10, width=4, blocks=(1,), seed=1, dtype=torch.float64).eval()
    spec = permutation_spec(a)
    X = torch.randn(9, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    corr = activation_correlations(a, b, X, spec=spec, batch_size=4)

    def acts(m: nn.Module) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            h = m.relu1(m.bn1(m.conv1(X)))
            out["relu1"] = h
            blk = m.layers[0][0]
            inner = blk.relu1(blk.bn1(blk.conv1(h)))
            out["inner"] = inner
            out["stream2"] = blk.relu2(blk.bn2(blk.conv2(inner)) + blk.shortcut(h))
        return {k: v.movedim(1, -1).reshape(-1, v.shape[1]) for k, v in out.items()}

    A, B = acts(a), acts(b)
    stream_a, stream_b = torch.cat([A["relu1"], A["stream2"]]), torch.cat([B["relu1"], B["stream2"]])
    for g, (ha, hb) in {"P_conv1": (stream_a, stream_b), "P_layers.0.0.conv1": (A["inner"], B["inner"])}.items():
        ref = np.corrcoef(ha.numpy().T, hb.numpy().T)[:4, 4:]
        np.testing.assert_allclose(corr[g], ref, atol=1e-8, rtol=0)


def test_activation_matching_recovers_a_hidden_permutation():
    a = _net([4, 7, 6, 3], 0, nn.Tanh)
    spec = permutation_spec(a)
    perm = random_permutation(spec, seed=2)
    b = apply_permutation(spec, perm, a)
    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = activation_matching(a, b, (X, torch.zeros(64, dtype=torch.long)))
    assert res.method == "activation"
    assert all(v == pytest.approx(1.0) for v in res.per_group.values())
    aligned = res.apply(b)
    for p, q in zip(a.parameters(), aligned.parameters()):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- REPAIR
def _site_stats(m: nn.Module, name: str, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    store = {}
    mod = dict(m.named_modules())[name]
    h = mod.register_forward_hook(lambda _m, _i, o: store.setdefault("o", o.detach()))
    with torch.no_grad():
        m.eval()(X)
    h.remove()
    o = store["o"]
    o = o.movedim(1, -1).reshape(-1, o.shape[1]) if o.dim() > 2 else o
    return o.mean(0), o.std(0, unbiased=False)


@pytest.mark.parametrize("name", ["mlp", "vgg"])
def test_repair_sets_every_site_to_the_interpolated_statistics(name):
    kw = {"mlp": {"hidden": [8, 6]}, "vgg": {"cfg": (4, "M", 6), "hidden": 8, "dropout": 0.0}}[name]
    a = build_model(name, (1, 8, 8), 10, seed=0, dtype=torch.float64, **kw).eval()
    b = build_model(name, (1, 8, 8), 10, seed=1, dtype=torch.float64, **kw).eval()
    X = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = permutation_spec(a)
    alpha = 0.3
    fixed = repair(a, b, X, alpha=alpha, batch_size=16)
    assert spec.affine_sites
    for site, _ in spec.affine_sites:
        ma, sa = _site_stats(a, site, X)
        mb, sb = _site_stats(b, site, X)
        mf, sf = _site_stats(fixed, site, X)
        torch.testing.assert_close(mf, (1 - alpha) * ma + alpha * mb, atol=1e-8, rtol=0)
        torch.testing.assert_close(sf, (1 - alpha) * sa + alpha * sb, atol=1e-8, rtol=1e-8)


class _Upsampler(nn.Module):
    """A transposed convolution (weight ``(in, out, kh, kw)``, output ``(N, 3, 7, W + 2)``) feeding a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, 3)
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(self.up(x)))


@pytest.mark.parametrize("width", [1, 4])  # output width 3 (= the channels) or 6
def test_repair_of_a_transposed_convolution_sets_its_channel_statistics(width):
    # A ConvTranspose's channels are axis 1 of its output, as a Conv's: REPAIR measured the last (width) axis
    # instead, which crashed when the width differed from the channel count and was silently wrong when equal.
    torch.manual_seed(0)
    a, b = _Upsampler().double().eval(), _Upsampler().double().eval()
    X = torch.randn(30, 2, 5, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert [s for s, _ in permutation_spec(a).affine_sites] == ["up"]
    alpha = 0.3
    fixed = repair(a, b, X, alpha=alpha)
    ma, sa = _site_stats(a, "up", X)
    mb, sb = _site_stats(b, "up", X)
    mf, sf = _site_stats(fixed, "up", X)
    torch.testing.assert_close(mf, (1 - alpha) * ma + alpha * mb, atol=1e-10, rtol=0)
    torch.testing.assert_close(sf, (1 - alpha) * sa + alpha * sb, atol=1e-10, rtol=1e-10)


def test_repair_at_an_endpoint_is_the_endpoint():
    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    X = torch.randn(40, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = repair(a, b, X, alpha=0.0)
    torch.testing.assert_close(parameters_to_vector(r), parameters_to_vector(a), atol=1e-10, rtol=1e-10)
    mid = interpolate_models(a, b, 0.5)
    torch.testing.assert_close(parameters_to_vector(mid), 0.5 * (parameters_to_vector(a) + parameters_to_vector(b)))
    assert torch.equal(parameters_to_vector(interpolate_models(a, b, 1.0)), parameters_to_vector(b))


# --------------------------------------------------------------------------- barriers
def test_barrier_values_equal_a_hand_loop():
    rng = np.random.default_rng(0)
    alphas = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, 15)), [1.0]])
    for _ in range(20):
        v = rng.normal(size=alphas.shape)
        got = barrier_values(alphas, v)
        best, at = -np.inf, None
        for a, x in zip(alphas, v):
            rise = x - ((1 - a) * v[0] + a * v[-1])
            if rise > best:
                best, at = rise, a
        assert got["barrier"] == pytest.approx(best, abs=1e-15) and got["peak_alpha"] == at
        assert got["barrier_mean"] == pytest.approx(max(v) - (v[0] + v[-1]) / 2, abs=1e-15)
        acc = barrier_values(alphas, v, higher_is_better=True)
        assert acc["barrier"] == pytest.approx(max((1 - a) * v[0] + a * v[-1] - x for a, x in zip(alphas, v)))
    with pytest.raises(ValueError, match="alpha=1"):
        barrier_values([0.0, 0.5], [1.0, 2.0])
    assert barrier_values([0, 0.5, 1], [0.0, np.nan, 0.0])["barrier"] == np.inf


def test_loss_barrier_equals_a_hand_loop(tmp_path):
    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    alphas = np.linspace(0, 1, 11)
    res = loss_barrier(a, b, (X, y), alphas=alphas)
    va, vb = parameters_to_vector(a), parameters_to_vector(b)
    losses, accs = [], []
    for al in alphas:
        m = copy.deepcopy(a)
        torch.nn.utils.vector_to_parameters((1 - al) * va + al * vb, m.parameters())
        with torch.no_grad():
            out = m(X)
        losses.append(float(F.cross_entropy(out, y)))
        accs.append(float((out.argmax(1) == y).double().mean()))
    np.testing.assert_allclose(res.metrics["loss"], losses, rtol=1e-10)
    lin = [lo - ((1 - al) * losses[0] + al * losses[-1]) for al, lo in zip(alphas, losses)]
    assert res.loss_barrier == pytest.approx(max(lin), abs=1e-10)
    assert res.peak_alpha == alphas[int(np.argmax(lin))]
    assert res.loss_barrier_mean == pytest.approx(max(losses) - (losses[0] + losses[-1]) / 2, abs=1e-10)
    assert res.accuracy_barrier == pytest.approx(
        max((1 - al) * accs[0] + al * accs[-1] - x for al, x in zip(alphas, accs)), abs=1e-12
    )
    again = load_result(res.save(tmp_path / "barrier"))
    assert isinstance(again, BarrierResult) and again.loss_barrier == res.loss_barrier
    # the same numbers from an evaluated line
    from landscape.analyze import line

    assert barrier_of(line(a, a, b, (X, y), alphas)).loss_barrier == pytest.approx(res.loss_barrier, abs=1e-12)


def test_repaired_barrier_hits_the_endpoints_and_repaired_midpoint():
    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    res = loss_barrier(a, b, (X, y), alphas=[0, 0.5, 1], repair=True)
    plain = loss_barrier(a, b, (X, y), alphas=[0, 0.5, 1])
    assert res.path == "line+repair"
    np.testing.assert_allclose(res.metrics["loss"][[0, 2]], plain.metrics["loss"][[0, 2]], rtol=1e-12)
    with torch.no_grad():
        mid = float(F.cross_entropy(repair(a, b, (X, y), alpha=0.5)(X), y))
    assert res.metrics["loss"][1] == pytest.approx(mid, rel=1e-10)


def test_weight_matching_takes_dicts_and_regression_barriers_skip_accuracy():
    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    spec = permutation_spec(a)
    on_models = weight_matching(a, b)
    on_dicts = weight_matching(dict(a.named_parameters()), dict(b.named_parameters()), spec=spec)
    assert all(np.array_equal(on_models.permutation[g], on_dicts.permutation[g]) for g in spec.groups)
    with pytest.raises(ValueError, match="spec="):
        weight_matching(dict(a.named_parameters()), dict(b.named_parameters()))
    X = torch.randn(20, 4, dtype=torch.float64)
    res = loss_barrier(a, b, (X, torch.randn(20, 3, dtype=torch.float64)), alphas=[0, 0.5, 1])
    assert set(res.metrics) == {"loss"} and np.isnan(res.accuracy_barrier)


@pytest.mark.parametrize("repaired", [False, True])
def test_barrier_of_batched_regression_data_skips_accuracy_as_of_a_pair(repaired):
    # The default metrics follow the targets whatever the data's form (the package's one default), not only
    # for a tensor pair: a DataLoader or a list of regression batches asked for accuracy and failed.
    from torch.utils.data import DataLoader, TensorDataset

    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    X = torch.randn(20, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Y = torch.randn(20, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pair = loss_barrier(a, b, (X, Y), alphas=[0, 0.5, 1], repair=repaired)
    for data in (DataLoader(TensorDataset(X, Y), batch_size=20), [(X[:8], Y[:8]), (X[8:], Y[8:])]):
        res = loss_barrier(a, b, data, alphas=[0, 0.5, 1], repair=repaired)
        assert set(res.metrics) == {"loss"} and np.isnan(res.accuracy_barrier)
        np.testing.assert_allclose(res.metrics["loss"], pair.metrics["loss"], rtol=1e-12)


def test_loss_barrier_of_batchnorm_networks_runs_each_on_its_own_statistics():
    """L(0) and L(1) are a's and b's own losses (eval mode, each its running statistics), the points between run
    on interpolated weights and statistics (a hand-built network), and the plain and repaired paths agree at the
    endpoints; bn_mode="eval" keeps a's statistics at every point, as asked."""
    g = torch.Generator().manual_seed(0)

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
        with torch.no_grad():  # distinct running statistics per network
            m[1].running_mean.normal_(generator=g)
            m[1].running_var.uniform_(0.5, 2.0, generator=g)
        return m.eval()

    a, b = net(0), net(1)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    mid = copy.deepcopy(a)
    with torch.no_grad():
        for (_, t), (_, u) in zip(mid.state_dict(keep_vars=True).items(), b.state_dict().items()):
            if t.is_floating_point():
                t.copy_(0.5 * t + 0.5 * u)
        ref = [float(F.cross_entropy(m(X), y)) for m in (a, mid, b)]
    res = loss_barrier(a, b, (X, y), alphas=[0, 0.5, 1])
    np.testing.assert_allclose(res.metrics["loss"], ref, rtol=1e-12)
    repaired = loss_barrier(a, b, (X, y), alphas=[0, 0.5, 1], repair=True)
    np.testing.assert_allclose(repaired.metrics["loss"][[0, 2]], ref[::2], rtol=1e-12)
    with torch.no_grad():  # b's weights on a's statistics
        shared = float(F.cross_entropy(torch.func.functional_call(a, dict(b.named_parameters()), (X,)), y))
    assert abs(shared - ref[2]) > 1e-3
    assert loss_barrier(a, b, (X, y), alphas=[0, 1], bn_mode="eval").metrics["loss"][1] == pytest.approx(shared)


def test_interpolate_models_writes_a_tied_tensor_once():
    """A Parameter shared by two layers comes under two names in the state dict: interpolating each name from the
    copy being written moved it twice (0.25 a + 0.75 b at alpha 0.5). The reference: the interpolated vector."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.fc1, self.fc2, self.out = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 2)
            self.fc2.weight = self.fc1.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.fc2(torch.tanh(self.fc1(torch.tanh(self.inp(x)))))))

    torch.manual_seed(0)
    a, b = Tied().double(), Tied().double()
    x = torch.randn(6, 3, dtype=torch.float64)
    for alpha in (0.3, 0.5, 2.0):
        vec = (1 - alpha) * parameters_to_vector(a) + alpha * parameters_to_vector(b)
        m = interpolate_models(a, b, alpha)
        torch.testing.assert_close(parameters_to_vector(m), vec, rtol=0, atol=1e-14)
        assert m.fc1.weight is m.fc2.weight
        with torch.no_grad():
            ref = torch.func.functional_call(a, ParamLayout.from_model(a).unflatten(vec), (x,))
            torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-12)


def test_activation_matching_with_one_activation_module_reused_by_every_layer():
    """``self.act`` called after each layer: each call is its own site (``act#0``, ``act#1``). The hook kept only
    the last call, so the first group was matched on the second layer's units (a permutation of the wrong size).
    References: the correlations of each layer's activations by hand, and the hidden permutation recovered."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f1, self.f2, self.out, self.act = nn.Linear(3, 6), nn.Linear(6, 5), nn.Linear(5, 2), nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.act(self.f2(self.act(self.f1(x)))))

    torch.manual_seed(0)
    a = Net().double()
    spec = permutation_spec(a)
    assert spec.sites == {"P_f1": (("act#0", -1),), "P_f2": (("act#1", -1),)}
    perm = random_permutation(spec, seed=1)
    b = apply_permutation(spec, perm, a)
    X = torch.randn(200, 3, dtype=torch.float64)
    corr = activation_correlations(a, b, X, batch_size=64)
    with torch.no_grad():
        h1a, h1b = torch.tanh(a.f1(X)), torch.tanh(b.f1(X))
        h2a, h2b = torch.tanh(a.f2(h1a)), torch.tanh(b.f2(h1b))
    for g, (u, v) in {"P_f1": (h1a, h1b), "P_f2": (h2a, h2b)}.items():
        ref = np.corrcoef(u.T.numpy(), v.T.numpy())[: u.shape[1], u.shape[1] :]
        np.testing.assert_allclose(corr[g], ref, rtol=1e-9, atol=1e-12)
    res = activation_matching(a, b, X)
    for g, p in invert_permutation(perm).items():
        assert torch.equal(res.perm[g], p)


def test_barrier_ignores_points_beyond_the_endpoints():
    """A grid reaching past the endpoints (Goodfellow et al.'s [-0.5, 1.5]) has the barrier of its part in [0, 1].

    Off the ends the linear definition's 'interpolation' is an extrapolation and the loss climbs away from both
    minima; counting those points reported that climb (9 here) as the barrier between the networks (1)."""
    alphas = [-0.5, 0.0, 0.5, 1.0, 1.5]
    loss = [10.0, 1.0, 2.0, 1.0, 10.0]
    got = barrier_values(alphas, loss)
    assert got["barrier"] == 1.0 and got["peak_alpha"] == 0.5
    assert got["barrier_mean"] == 1.0 and got["peak_alpha_mean"] == 0.5
    acc = barrier_values(alphas, [0.0, 0.9, 0.7, 0.9, 0.0], higher_is_better=True)
    assert acc["barrier"] == pytest.approx(0.2, abs=1e-15) and acc["peak_alpha"] == 0.5
    # the same through an evaluated line over a wider grid: the numbers of the loop over the points in [0, 1]
    from landscape.analyze import line

    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    wide = np.linspace(-1, 2, 31)
    r = line(a, a, b, (X, y), wide)
    L = r.metrics["loss"]
    i0, i1 = int(np.flatnonzero(wide == 0)[0]), int(np.flatnonzero(wide == 1)[0])
    inside = [(al, lo - ((1 - al) * L[i0] + al * L[i1])) for al, lo in zip(wide, L) if 0 <= al <= 1]
    best = max(inside, key=lambda p: p[1])
    res = barrier_of(r)
    assert res.loss_barrier == pytest.approx(best[1], abs=1e-12) and res.peak_alpha == best[0]
    assert res.loss_barrier_mean == pytest.approx(max(L[i0 : i1 + 1]) - (L[i0] + L[i1]) / 2, abs=1e-12)
    assert loss_barrier(a, b, (X, y), alphas=wide).loss_barrier == pytest.approx(best[1], abs=1e-12)


def test_barrier_of_a_distance_line_is_the_barrier_from_the_minimum_to_the_reference():
    """line_distance's coordinates are distances; the reference sits at ||ref - min||, not at 1. barrier_of read
    them as alphas: it refused the line (no point at 'alpha' 1) or, with a distance of exactly 1 on the grid,
    measured the barrier against the wrong endpoint."""
    from landscape.analyze import line, line_distance

    a, b = _net([4, 6, 3], 0), _net([4, 6, 3], 1)
    X = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    length = float((parameters_to_vector(b) - parameters_to_vector(a)).norm())
    dists = np.union1d(np.linspace(0, 1.2, 13), [1.0, length, 1.3 * length])  # a distance of exactly 1 too
    d = line_distance(a, a, b, (X, y), dists)
    t = dists / length
    ref = line(a, a, b, (X, y), t)
    L = ref.metrics["loss"]
    inside = [(al, lo - ((1 - al) * L[0] + al * L[t == 1][0])) for al, lo in zip(t, L) if 0 <= al <= 1]
    best = max(inside, key=lambda p: p[1])
    res = barrier_of(d)
    assert res.loss_barrier == pytest.approx(best[1], rel=1e-9, abs=1e-12) and res.peak_alpha == pytest.approx(best[0])
    np.testing.assert_allclose(res.alphas, t, rtol=1e-15)
