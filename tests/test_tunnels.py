"""Tunnels: opening, closing, reorganization and the matrix A, on random float64 networks."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from landscape.params import ParamLayout, parameters_to_vector, preserved_mode
from tunnels import (
    SplitAccumulator,
    TunnelEvent,
    UnsupportedSiteError,
    augment_rows,
    close_tunnels,
    close_units,
    find_sites,
    make_lambdas,
    open_tunnels,
    open_units,
    principal_split,
    reorganize,
    reorganize_units,
    resolve_site,
    split_matrices,
    split_stats,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.func's first jvp scripts decomps

DT = torch.float64
FAST = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = pytest.mark.parametrize("kind", ["ll", "cc", "cl"])  # every supported pair, every time


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).sum(1).mean()


def leaky_inplace() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


ACTS = [nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU, nn.GELU, leaky_inplace]


# ============================================================================ random networks
@st.composite
def nets(draw: st.DrawFn, kind: str | None = None, min_units: int = 1, max_side: int = 7) -> tuple:
    """(model, producer index, consumer index, X, y) for a random supported pair."""
    kind = kind or draw(st.sampled_from(["ll", "cc", "cl"]))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    units = draw(st.integers(min_units, 4))
    act = draw(st.sampled_from(ACTS))
    bn = draw(st.booleans())
    affine = draw(st.booleans())
    bias = draw(st.booleans())
    n = draw(st.integers(3, 7))
    n_out = draw(st.integers(1, 3))
    if kind == "ll":
        d = draw(st.integers(1, 4))
        v = draw(st.integers(1, 3))
        pre = [nn.Linear(d, units, bias=bias)] + ([nn.BatchNorm1d(units, affine=affine)] if bn else []) + [act()]
        post = [nn.Linear(units, v)] + ([nn.Tanh(), nn.Linear(v, n_out)] if draw(st.booleans()) else [])
        n_out = post[-1].out_features
        x = torch.randn(n, d, dtype=DT)
    else:
        c = draw(st.integers(1, 2))
        s = draw(st.integers(max(3, max_side - 2), max_side))
        k1 = draw(st.integers(1, 3))
        pmode = draw(st.sampled_from(["zeros", "reflect", "circular"]))
        pre = [nn.Conv2d(c, units, k1, padding=draw(st.integers(0, 1)), bias=bias, padding_mode=pmode)]
        pre += ([nn.BatchNorm2d(units, affine=affine)] if bn else []) + [act()]
        x = torch.randn(n, c, s, s, dtype=DT)
        if min(pre[0].double()(x).shape[-2:]) >= 2:
            pool = draw(st.sampled_from([None, nn.MaxPool2d, nn.AvgPool2d]))
            pre += [pool(2)] if pool is not None else []
        hw = nn.Sequential(*pre).double()(x).shape[-2:]
        if kind == "cc":
            v = draw(st.integers(1, 3))
            k2 = draw(st.integers(1, min(3, hw[0])))
            cons = nn.Conv2d(
                units,
                v,
                k2,
                stride=draw(st.integers(1, 2)),
                padding=draw(st.integers(0, 1)),
                dilation=draw(st.integers(1, 2)) if hw[0] >= 2 * k2 else 1,
            )
            out_hw = cons.double()(torch.zeros(1, units, *hw, dtype=DT)).shape[-2:]
            post = [cons, nn.Tanh(), nn.Flatten(), nn.Linear(v * out_hw[0] * out_hw[1], n_out)]
        else:
            post = [nn.Flatten(), nn.Linear(units * hw[0] * hw[1], n_out)]
            if draw(st.booleans()):
                post += [nn.Tanh(), nn.Linear(n_out, n_out)]
    model = nn.Sequential(*pre, *post).double()
    for m in model.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
    consumer = next(i for i, m in enumerate(model) if i > 0 and isinstance(m, nn.Linear | nn.Conv2d))
    y = torch.randn(n, n_out, dtype=DT)
    return model, 0, consumer, x, y


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [len(m._forward_hooks) for m in model.modules()],
    }


def assert_untouched(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["state"].keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert torch.equal(now["state"][k], v), k
    assert now["grad"] == snap["grad"] and now["training"] == snap["training"] and now["hooks"] == snap["hooks"]


def run(model: nn.Module, x: torch.Tensor, train: bool = False) -> torch.Tensor:
    """Forward without touching the model (train mode: batch statistics, buffers copied)."""
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    with preserved_mode(model, train):
        return functional_call(model, {**dict(model.named_parameters()), **bufs}, (x,))


def inbound(model: nn.Module, site, u: int) -> torch.Tensor:
    """theta_u in the row order of A: weight row, bias, (weight, bias) of each affine BatchNorm."""
    prod = model.get_submodule(site.producer)
    parts = [prod.weight[u].reshape(-1)] + ([prod.bias[u : u + 1]] if prod.bias is not None else [])
    for name in site.norms:
        bn = model.get_submodule(name)
        if bn.affine:
            parts += [bn.weight[u : u + 1], bn.bias[u : u + 1]]
    return torch.cat(parts)


def inbound_grads(model: nn.Module, site, units: list[int], x, y, train: bool) -> list[torch.Tensor]:
    loss = mse(run(model, x, train), y)
    names = [n for n, _ in model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))
    out = []
    for u in units:
        parts = [grads[site.producer + ".weight"][u].reshape(-1)]
        if site.producer + ".bias" in grads:
            parts.append(grads[site.producer + ".bias"][u : u + 1])
        for name in site.norms:
            if name + ".weight" in grads:
                parts += [grads[name + ".weight"][u : u + 1], grads[name + ".bias"][u : u + 1]]
        out.append(torch.cat(parts))
    return out


def brute_force_A(model: nn.Sequential, pi: int, ci: int, u: int, x, y, train: bool) -> torch.Tensor:
    """A of unit u by autograd on L copies of theta_u, copy q feeding the consumer only through weight q.

    Independent of tunnels.split: y = R(z) + sum_q R_q(z_q - z) where R_q is the consumer restricted to
    outbound weight q of u (no bias) and z_q is the layer's output with unit u's parameters set to copy q.
    """
    mods = list(model)
    prod, cons, between = mods[pi], mods[ci], mods[pi + 1 : ci]
    site = resolve_site(model, str(pi))
    theta = inbound(model, site, u).detach()
    n_out = site.n_out
    copies = theta.repeat(n_out, 1).requires_grad_()

    def call(m: nn.Module, inp: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        base = {k: v.detach() for k, v in m.named_parameters()}
        bufs = {k: v.clone() for k, v in m.named_buffers()}
        with preserved_mode(m, train):
            return functional_call(m, {**base, **bufs, **params}, (inp,))

    def with_row(t: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:u], row.reshape(1, *t.shape[1:]), t[u + 1 :]])

    h_in = x
    for m in mods[:pi]:
        h_in = call(m, h_in)

    def layer(th: torch.Tensor) -> torch.Tensor:
        kw = prod.weight[0].numel()
        p = {"weight": with_row(prod.weight.detach(), th[:kw])}
        pos = kw
        if prod.bias is not None:
            p["bias"] = with_row(prod.bias.detach(), th[pos : pos + 1])
            pos += 1
        z = call(prod, h_in, **p)
        for m in between:
            if isinstance(m, nn.Flatten):
                continue
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine:
                bp = {
                    "weight": with_row(m.weight.detach(), th[pos : pos + 1]),
                    "bias": with_row(m.bias.detach(), th[pos + 1 : pos + 2]),
                }
                pos += 2
                z = call(m, z, **bp)
            else:
                z = call(m, z)
        return z

    flat = isinstance(cons, nn.Linear)
    z0 = layer(theta)
    w3 = cons.weight.detach().reshape(site.n_consumer, site.n_units, site.spatial)
    out = call(cons, z0.flatten(1) if flat else z0)
    for q in range(n_out):
        v, s = divmod(q, site.spatial)
        mask = torch.zeros_like(w3)
        mask[v, u, s] = w3[v, u, s]
        d = torch.zeros_like(z0)
        d[:, u] = layer(copies[q])[:, u] - z0[:, u]
        zb = {"bias": torch.zeros_like(cons.bias)} if cons.bias is not None else {}
        out = out + call(cons, d.flatten(1) if flat else d, weight=mask.reshape(cons.weight.shape), **zb)
    for m in mods[ci + 1 :]:
        out = call(m, out)
    (g,) = torch.autograd.grad(mse(out, y), copies)
    return g.T


# ============================================================================ opening and closing
@KINDS
@FAST
@given(t=st.floats(0.05, 1.0), mode=st.sampled_from(["proposed", "random", "constant", "half"]), data=st.data())
def test_open_preserves_function_and_close_restores_bitwise(kind, t, mode, data) -> None:
    model, _, _, x, y = data.draw(nets(kind))
    site = resolve_site(model, "0")
    units = data.draw(st.lists(st.integers(0, site.n_units - 1), min_size=1, max_size=site.n_units, unique=True))
    snap = snapshot(model)
    opened, ev = open_tunnels(model, {"0": units}, t=t, mode=mode, data=(x, y), loss_fn=mse, seed=3)
    assert_untouched(model, snap)
    assert opened.get_submodule("0").weight.shape[0] == site.n_units + len(units)
    for train in (False, True):
        ref = run(model, x, train)
        torch.testing.assert_close(run(opened, x, train), ref, rtol=1e-12, atol=1e-12)
    lam = torch.tensor([c.lambdas for c in ev.changes], dtype=DT)
    dist = (lam - 0.5).norm(dim=1)
    torch.testing.assert_close(dist, torch.full_like(dist, 0.0 if mode == "half" else t), rtol=1e-12, atol=1e-12)
    assert [c.clone for c in ev.changes] == list(range(site.n_units, site.n_units + len(units)))
    snap_open = snapshot(opened)
    closed, close_ev = close_tunnels(opened, json.loads(ev.to_json()))
    assert_untouched(opened, snap_open)
    assert close_ev.kind == "close"
    assert_untouched(closed, snap)  # bitwise the original parameters and buffers
    assert closed.get_submodule("0").weight.shape[0] == site.n_units


@KINDS
@FAST
@given(data=st.data())
def test_A_equals_brute_force_per_copy_autograd(kind, data) -> None:
    model, pi, ci, x, y = data.draw(nets(kind))
    train = data.draw(st.booleans())
    u = data.draw(st.integers(0, resolve_site(model, "0").n_units - 1))
    snap = snapshot(model)
    stats = split_stats(model, (x, y), mse, ["0"], train=train, max_elements=data.draw(st.sampled_from([1, 2**20])))
    assert_untouched(model, snap)
    ref = brute_force_A(model, pi, ci, u, x, y, train)
    torch.testing.assert_close(stats.A["0"][u], ref, rtol=1e-9, atol=1e-11)
    # A 1 is the gradient of the unopened network w.r.t. theta_u
    (g,) = inbound_grads(model, stats.sites[0], [u], x, y, train)
    torch.testing.assert_close(stats.A["0"][u].sum(1), g, rtol=1e-9, atol=1e-11)


@KINDS
@FAST
@given(t=st.floats(0.1, 2.0), data=st.data())
def test_gradient_after_opening_is_A_lambda_and_norm_identity(kind, t, data) -> None:
    """Clone gradients are A lambda and A (1 - lambda); the squared norm follows the eigen-analysis."""
    model, _, _, x, y = data.draw(nets(kind))
    train = data.draw(st.booleans())
    site = resolve_site(model, "0")
    units = data.draw(st.lists(st.integers(0, site.n_units - 1), min_size=1, max_size=site.n_units, unique=True))
    stats = split_stats(model, (x, y), mse, ["0"], train=train)
    opened, ev = open_tunnels(model, {"0": units}, t=t, stats=stats)
    new_site = resolve_site(opened, "0")
    clones = [c.clone for c in ev.changes]
    g_units = inbound_grads(opened, new_site, units, x, y, train)
    g_clones = inbound_grads(opened, new_site, clones, x, y, train)
    rho, star = principal_split(stats.A["0"][units])
    predicted = 0.0
    for i, u in enumerate(units):
        A = stats.A["0"][u]
        lam = torch.tensor(ev.changes[i].lambdas, dtype=DT)
        torch.testing.assert_close(lam, 0.5 + t * star[i], rtol=0, atol=1e-15)
        torch.testing.assert_close(g_units[i], A @ lam, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(g_clones[i], A @ (1 - lam), rtol=1e-9, atol=1e-11)
        assert math.isclose(ev.changes[i].rho, float(rho[i]), rel_tol=1e-12)
        predicted += -0.5 * float(A.sum(1).norm() ** 2) + 2 * t**2 * float(rho[i])
    # ||grad'||^2 = ||grad||^2 + sum_u (2 t^2 rho_u - ||A_u 1||^2 / 2 + ||dE/dW_R[:, u]||^2)
    loss = mse(run(model, x, train), y)
    old = torch.autograd.grad(loss, list(model.parameters()))
    w_grad = dict(zip([n for n, _ in model.named_parameters()], old))[site.consumer + ".weight"]
    w_grad = w_grad.reshape(site.n_consumer, site.n_units, -1)
    predicted += sum(float(g.pow(2).sum()) for g in old) + sum(float(w_grad[:, u].pow(2).sum()) for u in units)
    new = torch.autograd.grad(mse(run(opened, x, train), y), list(opened.parameters()))
    assert math.isclose(sum(float(g.pow(2).sum()) for g in new), predicted, rel_tol=1e-9, abs_tol=1e-12)


def critical_targets(model: nn.Module, x: torch.Tensor, train: bool) -> torch.Tensor:
    """Targets making the current parameters an exact critical point of the MSE with a nonzero residual.

    grad E = (2/N) J^T r with J = d outputs / d params and r = outputs - y: take r in the left null
    space of J (needs N * outputs > parameters).
    """
    layout = ParamLayout.from_model(model)
    bufs = {k: v.clone() for k, v in model.named_buffers()}

    def f(v: torch.Tensor, b: dict) -> torch.Tensor:
        with preserved_mode(model, train):
            return functional_call(model, {**layout.unflatten(v), **b}, (x,)).reshape(-1)

    vec = parameters_to_vector(model)
    out, jac = f(vec, bufs).detach(), torch.func.jacrev(f)(vec, bufs)
    u, sv, _ = torch.linalg.svd(jac)
    null = u[:, int((sv > sv[0] * 1e-12).sum()) :]
    r = null @ torch.randn(null.shape[1], dtype=DT)
    return (out - r).reshape(x.shape[0], -1)


@KINDS
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(t=st.floats(0.1, 3.0), data=st.data())
def test_gradient_norm_at_critical_point_is_2_t2_rho(kind, t, data) -> None:
    """At a critical point, ||grad||^2 after opening = 2 t^2 sum_u rho_u (0 when L = 1: Fukumizu & Amari)."""
    model, _, _, x, _ = data.draw(nets(kind, max_side=4))
    train = data.draw(st.booleans())
    n_params = sum(p.numel() for p in model.parameters())
    assume(n_params <= 150)  # keeps the dense Jacobian of the construction small
    n_out = run(model, x[:2]).shape[1]
    x = torch.randn(n_params // n_out + 8, *x.shape[1:], dtype=DT)
    y = critical_targets(model, x, train)
    grads = torch.autograd.grad(mse(run(model, x, train), y), list(model.parameters()))
    g_old = sum(float(g.pow(2).sum()) for g in grads)
    assert g_old < 1e-20
    site = resolve_site(model, "0")
    units = data.draw(st.lists(st.integers(0, site.n_units - 1), min_size=1, max_size=site.n_units, unique=True))
    stats = split_stats(model, (x, y), mse, ["0"], train=train, batch_size=None)
    opened, _ = open_tunnels(model, {"0": units}, t=t, stats=stats)
    loss = float(mse(run(model, x, train), y).detach())
    assert math.isclose(float(mse(run(opened, x, train), y).detach()), loss, rel_tol=1e-12)
    rho = float(stats.rho("0")[units].sum())
    new = torch.autograd.grad(mse(run(opened, x, train), y), list(opened.parameters()))
    got = sum(float(g.pow(2).sum()) for g in new)
    assert math.isclose(got, 2 * t**2 * rho, rel_tol=1e-8, abs_tol=100 * g_old + 1e-24)
    if site.n_out == 1:  # one outbound weight: A = A 1 = 0 at a critical point, no escape direction
        assert rho < 1e-18


@pytest.mark.parametrize("conv", [False, True])
def test_in_place_activation_after_producer(conv: bool) -> None:
    torch.manual_seed(4)
    act = nn.LeakyReLU(0.2, inplace=True)
    if conv:
        model = nn.Sequential(nn.Conv2d(1, 2, 2), act, nn.Conv2d(2, 2, 2), nn.Flatten(), nn.Linear(8, 2))
        x = torch.randn(6, 1, 4, 4, dtype=DT)
    else:
        model = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 2))
        x = torch.randn(6, 3, dtype=DT)
    model, y = model.double(), torch.randn(6, 2, dtype=DT)
    stats = split_stats(model, (x, y), mse, ["0"])
    torch.testing.assert_close(stats.A["0"][1], brute_force_A(model, 0, 2, 1, x, y, False), rtol=1e-9, atol=1e-12)


def test_chained_sites_open_exactly_and_close_bitwise() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 2),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Conv2d(3, 3, 2, padding=1),
        nn.Softplus(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 2),
    ).double()
    x, y = torch.randn(9, 1, 4, 4, dtype=DT), torch.randn(9, 2, dtype=DT)
    assert [s.producer for s in find_sites(model)] == ["0", "3"]
    stats = split_stats(model, (x, y), mse)
    opened, ev = open_tunnels(model, {"3": [2], "0": [1, 0]}, t=0.7, stats=stats)
    assert ev.layers == ("0", "3")
    torch.testing.assert_close(run(opened, x), run(model, x), rtol=1e-12, atol=1e-12)
    # the downstream unit's gradient is A' lambda with A' = A plus copies of the rows of the new inputs
    a_aug = augment_rows(stats.A["3"][[2]], 3 * 2 * 2, 3, [1, 0])
    half, _ = open_tunnels(model, {"0": [1, 0]}, t=0.7, stats=stats)
    torch.testing.assert_close(a_aug[0], split_stats(half, (x, y), mse, ["3"]).A["3"][2], rtol=1e-9, atol=1e-12)
    (g,) = inbound_grads(opened, resolve_site(opened, "3"), [2], x, y, False)
    torch.testing.assert_close(g, a_aug[0] @ torch.tensor(ev.changes[2].lambdas, dtype=DT), rtol=1e-9, atol=1e-12)
    closed, _ = close_tunnels(opened, ev)
    assert_untouched(closed, snapshot(model))


# ============================================================================ reorganization
@KINDS
@FAST
@given(t=st.floats(0.1, 1.0), data=st.data())
def test_reorganization_bookkeeping_and_function(kind, t, data) -> None:
    """Theory: the reopening half preserves the function; the merge half only for redundant u1, u2."""
    model, _, _, x, y = data.draw(nets(kind, min_units=3))
    site = resolve_site(model, "0")
    u1, u2, u = data.draw(st.permutations(range(site.n_units)))[:3]
    if data.draw(st.booleans()):
        u = u1
    snap = snapshot(model)
    reorg, ev = reorganize(model, "0", [(u1, u2)], [u], t=t, data=(x, y), loss_fn=mse)
    assert_untouched(model, snap)
    assert ev.kind == "reorganize" and ev.changes[0].merged_into == u1 and ev.changes[0].clone == u2
    merged, _ = close_units(model, "0", [(u1, u2)], remove=False)
    # the A used is that of the merged network
    lam_star = split_stats(merged, (x, y), mse, ["0"]).principal("0")[1][u]
    # the same formula through another path: equal to rounding (a stored example differs by 3.6e-15 on lambdas
    # of ~20, 2.4e-14 relative on small ones; any error of the formula is of order 1)
    lambdas = torch.tensor(ev.changes[0].lambdas, dtype=DT)
    torch.testing.assert_close(lambdas, 0.5 + t * lam_star, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(run(reorg, x), run(merged, x), rtol=1e-12, atol=1e-12)
    # inverse bookkeeping: close the clone back onto u -> the merged network, except slot u2's inbound copy of u
    back, _ = close_units(reorg, "0", [(u, u2)], remove=False)
    for (k, a), b in zip(back.state_dict().items(), merged.state_dict().values()):
        if a.dim() and a.shape[0] == site.n_units and not k.startswith(site.consumer):
            a, b = a[[i for i in range(site.n_units) if i != u2]], b[[i for i in range(site.n_units) if i != u2]]
        assert torch.equal(a, b), k
    torch.testing.assert_close(run(back, x), run(merged, x), rtol=1e-12, atol=1e-12)
    # redundant u1, u2 (u2 a copy of u1): the whole reorganization preserves the function
    red, _ = close_units(model, "0", [(u1, u2)], remove=False)
    red_w = red.get_submodule(site.consumer).weight.detach().reshape(site.n_consumer, site.n_units, -1)
    with torch.no_grad():
        red_w[:, u2] = model.get_submodule(site.consumer).weight.reshape(site.n_consumer, site.n_units, -1)[:, u2]
        red_w[:, u1] -= red_w[:, u2]
    reorg_red, _ = reorganize_units(red, "0", [(u1, u2)], [u], torch.tensor(ev.changes[0].lambdas))
    torch.testing.assert_close(run(reorg_red, x), run(red, x), rtol=1e-12, atol=1e-12)


def test_reorganize_chooses_closest_pair_and_top_rho_unit() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[0].weight[3] = model[0].weight[1] + 1e-3
        model[0].bias[3] = model[0].bias[1]
    x, y = torch.randn(20, 3, dtype=DT), torch.randn(20, 2, dtype=DT)
    out, ev = reorganize(model, "0", 1, t=0.5, data=(x, y), loss_fn=mse)
    assert (ev.changes[0].merged_into, ev.changes[0].clone) == (1, 3)
    merged, _ = close_units(model, "0", [(1, 3)], remove=False)
    rho = split_stats(merged, (x, y), mse).rho("0")
    rho[3] = -1
    assert ev.changes[0].unit == int(rho.argmax())
    assert out[0].weight.shape == model[0].weight.shape


def test_source_keywords_show_in_signatures_and_match_precomputed_stats() -> None:
    """``data``/``loss_fn`` with split_stats' options give the event that ``stats=split_stats(...)`` gives."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(24, 3, dtype=DT), torch.randn(24, 2, dtype=DT)
    for fn in (open_tunnels, reorganize):
        shown = inspect.signature(fn).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in shown.values())
        assert {"stats", "data", "loss_fn", "max_batches", "train", "batch_size", "max_elements", "progress"} <= set(
            shown
        )
        assert shown["batch_size"].default == inspect.signature(split_stats).parameters["batch_size"].default
    # a partial pass (the first 2 batches of 8): the options reach split_stats
    stats = split_stats(model, (x, y), mse, max_batches=2, batch_size=8)
    a = open_tunnels(model, 2, t=0.5, data=(x, y), loss_fn=mse, max_batches=2, batch_size=8)[1]
    b = open_tunnels(model, 2, t=0.5, stats=stats)[1]
    assert a.changes == b.changes and a.n_examples == b.n_examples == 16
    full = open_tunnels(model, 2, t=0.5, data=(x, y), loss_fn=mse)[1]
    assert full.n_examples == 24
    with pytest.raises(TypeError, match="open_tunnels.*'max_batch'"):
        open_tunnels(model, 1, data=(x, y), loss_fn=mse, max_batch=2)
    with pytest.raises(TypeError, match="reorganize.*'sats'"):
        reorganize(model, "0", 1, sats=stats)


# ============================================================================ estimates of A
def test_full_partial_and_moving_average_estimates() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2)).double()
    x, y = torch.randn(11, 1, 5, 5, dtype=DT), torch.randn(11, 2, dtype=DT)
    batches = [(x[:4], y[:4]), (x[4:9], y[4:9]), (x[9:], y[9:])]
    whole = split_matrices(model, (x, y), mse)["0"]
    full = split_stats(model, batches, mse)
    assert (full.method, full.n_examples, full.n_batches) == ("full", 11, 3)
    torch.testing.assert_close(full.A["0"], whole, rtol=1e-12, atol=1e-14)  # batch-size weighting = one big batch
    torch.testing.assert_close(split_stats(model, (x, y), mse, batch_size=4).A["0"], whole, rtol=1e-12, atol=1e-14)
    part = split_stats(model, batches, mse, max_batches=2)
    assert part.method == "partial"
    torch.testing.assert_close(part.A["0"], split_matrices(model, (x[:9], y[:9]), mse)["0"], rtol=1e-12, atol=1e-14)
    acc = SplitAccumulator(mse, decay=0.6)
    snap = snapshot(model)
    for b in batches:
        acc.update(model, b)
    assert_untouched(model, snap)
    a = [split_matrices(model, b, mse)["0"] for b in batches]
    ema = (0.4 * 0.36 * a[0] + 0.4 * 0.6 * a[1] + 0.4 * a[2]) / (1 - 0.6**3)
    stats = acc.stats()
    assert stats.method == "ema" and stats.n_batches == 3
    torch.testing.assert_close(stats.A["0"], ema, rtol=1e-12, atol=1e-14)
    opened, _ = open_tunnels(model, 1, stats=stats)
    with pytest.raises(RuntimeError, match="reset"):
        acc.update(opened, batches[0])
    acc.reset()
    acc.update(opened, batches[0])
    with pytest.raises(ValueError, match="another architecture"):
        open_tunnels(opened, 1, stats=stats)


def test_stats_hold_sites_in_module_order_and_rank_ties_by_it() -> None:
    # SplitStats.sites is documented in module order, and ranking() breaks ties by module order, whatever
    # order the caller lists the sites in: dead ReLU layers (every rho 0) tie throughout.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].bias.fill_(-100.0)
        net[2].bias.fill_(-100.0)
    x, y = torch.randn(8, 3, dtype=DT), torch.randn(8, 2, dtype=DT)
    for stats in (
        split_stats(net, (x, y), mse, ["2", "0"]),
        SplitAccumulator(mse, ["2", "0"]).update(net, (x, y)).stats(),
    ):
        assert [s.producer for s in stats.sites] == ["0", "2"]
        assert [(p, u) for p, u, _ in stats.ranking()] == [("0", u) for u in range(4)] + [("2", u) for u in range(4)]
    _, ev = open_tunnels(net, 1, stats=split_stats(net, (x, y), mse, ["2", "0"]), mode="half")
    assert (ev.changes[0].producer, ev.changes[0].unit) == ("0", 0)


def test_lambda_modes_and_seeds() -> None:
    star = torch.nn.functional.normalize(torch.randn(7, dtype=DT), dim=0)
    for mode in ("proposed", "random", "constant"):
        lam = make_lambdas(mode, 0.3, 7, star, torch.Generator().manual_seed(0))
        assert math.isclose(float((lam - 0.5).norm()), 0.3, rel_tol=1e-12)
    assert torch.equal(make_lambdas("half", 0.3, 7), torch.full((7,), 0.5, dtype=DT))
    with pytest.raises(ValueError, match="valid"):
        make_lambdas("sideways", 0.3, 7)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4)).double()
    a = open_tunnels(model, {"0": [0, 2]}, mode="random", seed=5)[1]
    b = open_tunnels(model, {"0": [0, 2]}, mode="random", seed=5)[1]
    assert a == b and a.seed == 5 and a.changes[0].lambdas != a.changes[1].lambdas
    with pytest.raises(ValueError, match="needs the matrices A"):
        open_tunnels(model, {"0": [0]})
    ev = open_units(model, "0", [1], [0.25, 0.5, 0.75, 1.0])[1]
    assert TunnelEvent.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev


# ============================================================================ sites and errors
class _Split(nn.Module):
    def __init__(self, permute: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(3 * 16, 2))
        self.permute = permute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.classifier((z.flip(1) if self.permute else z).flatten(1))


def test_explicit_consumer_across_containers_is_checked_on_data() -> None:
    torch.manual_seed(3)
    net = _Split().double()
    x, y = torch.randn(5, 1, 9, 9, dtype=DT), torch.randn(5, 2, dtype=DT)
    with pytest.raises(UnsupportedSiteError, match="consumer="):
        resolve_site(net, "features.0")
    opened, _ = open_tunnels(net, {("features.0", "classifier.0"): 1}, data=(x, y), loss_fn=mse)
    torch.testing.assert_close(run(opened, x), run(net, x), rtol=1e-12, atol=1e-12)
    bad = _Split(permute=True).double()
    with pytest.raises(ValueError, match="act on each channel"):
        split_stats(bad, (x, y), mse, [("features.0", "classifier.0")])


def test_unsupported_patterns_raise_naming_types() -> None:
    lin_conv = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Unflatten(1, (1, 2, 2)), nn.Conv2d(1, 2, 1))
    with pytest.raises(UnsupportedSiteError, match="Unflatten"):
        resolve_site(lin_conv, "0")
    with pytest.raises(UnsupportedSiteError, match="Linear '0' -> Conv2d '3'.*supported pairs"):
        resolve_site(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Identity(), nn.Conv2d(4, 2, 1)), "0")
    with pytest.raises(UnsupportedSiteError, match="Softmax"):
        resolve_site(nn.Sequential(nn.Linear(4, 4), nn.Softmax(1), nn.Linear(4, 2)), "0")
    with pytest.raises(UnsupportedSiteError, match="groups"):
        resolve_site(nn.Sequential(nn.Conv2d(2, 4, 1, groups=2), nn.ReLU(), nn.Conv2d(4, 2, 1)), "0")
    with pytest.raises(UnsupportedSiteError, match="needs an nn.Flatten"):
        resolve_site(nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Linear(4, 2)), "0")
    with pytest.raises(UnsupportedSiteError, match="last layer"):
        resolve_site(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "0")
    # a module between that is not per unit is named as such, not as a consumer without a tunnel rule
    for between in (nn.LayerNorm(4), nn.PReLU(4), nn.Dropout1d()):
        name = type(between).__name__
        with pytest.raises(UnsupportedSiteError, match=f"'1' \\({name}\\) after Linear '0'.*acting on each unit"):
            resolve_site(nn.Sequential(nn.Linear(4, 4), between, nn.Linear(4, 2)), "0")
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))
    with pytest.raises(ValueError, match="valid"):
        open_tunnels(model, {"0": [0]}, mode="sideways")
    # a negative count is refused: it sliced [:n] and opened all units but |n|
    x, y = torch.randn(5, 2), torch.randn(5, 4)
    stats = split_stats(model, (x, y), mse)
    for spec in (-1, {"0": -1}):
        with pytest.raises(ValueError, match="must be >= 0"):
            open_tunnels(model, spec, stats=stats)
    with pytest.raises(ValueError, match="merges=-1.*must be >= 0"):
        reorganize(model, "0", -1, stats=stats)
    with pytest.raises(IndexError):
        open_units(model, "0", [3], [0.5] * 4)
    with pytest.raises(ValueError, match="shape"):
        open_units(model, "0", [1], [0.5] * 3)
