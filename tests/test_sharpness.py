"""Sharpness measures (issue 22) against closed forms on quadratic losses, brute force, and the rescaling invariance.

The quadratic cases are a linear model with the mean squared error: ``L(w) = mean((X w - y)^2)`` has the
constant Hessian ``H = 2 X^T X / N``, so ``L(w + d) - L(w) = g.d + d^T H d / 2`` exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import (
    SharpnessResult,
    average_sharpness,
    m_sharpness,
    perturbation_scale,
    worst_case_sharpness,
)
from landscape.results import load_result

F64 = torch.float64
MSE = nn.MSELoss()
CE = nn.CrossEntropyLoss()


def _quadratic(minimum: bool, d: int = 6, N: int = 40, seed: int = 0):
    """Linear model, MSE, with a designed Hessian spectrum (top eigenvalue well separated)."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.linspace(3.0, 0.2, d, dtype=F64)
    lam[1] = 1.8  # gap below the top
    U, _ = torch.linalg.qr(torch.randn(N, d, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    X = math.sqrt(N / 2) * U @ torch.diag(lam.sqrt()) @ V.T
    y = torch.randn(N, 1, generator=g, dtype=F64)
    m = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        if minimum:
            m.weight.copy_(torch.linalg.lstsq(X, y).solution.T)
        else:
            m.weight.normal_(generator=g)
    H = 2 * X.T @ X / N
    return m, X, y, H


def test_worst_case_l2_at_a_minimum_is_rho_squared_lambda_max_over_two():
    m, X, y, H = _quadratic(minimum=True)
    lam_max = float(torch.linalg.eigvalsh(H)[-1])
    for rho in (0.05, 0.5):
        r = worst_case_sharpness(m, MSE, (X, y), radius=rho, steps=30, restarts=2)
        want = rho**2 * lam_max / 2
        assert abs(r.value - want) <= 0.01 * want, (rho, r.value, want)
        assert r.value <= want * (1 + 1e-9)  # a lower bound of the maximum, never above it
        assert (r.steps, r.restarts, r.radius, r.norm) == (30, 2, rho, "l2")
        assert r.values.shape == (2,) and r.value == r.values.max()


def test_worst_case_linf_equals_the_best_corner():
    """A convex quadratic's maximum over a box is at a vertex: brute force over all 2^d corners."""
    m, X, y, H = _quadratic(minimum=True, d=5)
    rho = 0.1
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=5)), dtype=F64) * rho
    want = float((0.5 * (corners @ H * corners).sum(1)).max())
    r = worst_case_sharpness(m, MSE, (X, y), radius=rho, norm="linf", steps=30, restarts=4)
    assert r.value == pytest.approx(want, rel=1e-6)


def test_average_case_matches_the_closed_forms_within_three_standard_errors():
    m, X, y, H = _quadratic(minimum=False)  # the gradient term averages out: the closed form holds anywhere
    tr, n = float(torch.trace(H)), H.shape[0]
    sigma = 0.1
    g = average_sharpness(m, MSE, (X, y), radius=sigma, distribution="gaussian", n_samples=400, seed=1)
    assert abs(g.value - sigma**2 * tr / 2) <= 3 * g.stderr
    assert g.stderr > 0 and g.values.shape == (400,) and g.n_samples == 400
    s = average_sharpness(m, MSE, (X, y), radius=sigma, distribution="sphere", n_samples=400, seed=2)
    assert abs(s.value - sigma**2 * tr / (2 * n)) <= 3 * s.stderr
    # per sample, the increase is exactly g.d + d^T H d / 2 (brute force for the first sample)
    gen = torch.Generator().manual_seed(1)
    d = torch.randn(n, generator=gen, dtype=F64) * sigma
    w = m.weight.detach()[0]
    grad = 2 * X.T @ (X @ w - y[:, 0]) / len(y)
    assert g.values[0] == pytest.approx(float(grad @ d + 0.5 * d @ H @ d), rel=1e-8)


def _trust_region_max(g: torch.Tensor, H: torch.Tensor, rho: float) -> float:
    """``max_{||d|| = rho} g.d + d^T H d / 2`` (H positive semidefinite): d = (mu I - H)^-1 g, ||d|| = rho."""
    lam, V = torch.linalg.eigh(H)
    c = V.T @ g
    lo, hi = float(lam[-1]) + 1e-12, float(lam[-1]) + float(g.norm()) / rho + 1.0
    for _ in range(200):  # ||d(mu)|| decreases in mu
        mu = (lo + hi) / 2
        lo, hi = (mu, hi) if float((c / (mu - lam)).norm()) > rho else (lo, mu)
    d = V @ (c / (mu - lam))
    return float(g @ d + 0.5 * d @ H @ d)


def test_m_sharpness_is_the_mean_of_each_batch_trust_region_maximum():
    m, X, y, _ = _quadratic(minimum=True, d=4, N=24)
    rho, mb, seed = 0.3, 6, 3
    r = m_sharpness(m, MSE, (X, y), m=mb, radius=rho, steps=40, restarts=2, seed=seed)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    w = m.weight.detach()[0]
    want = []
    for i in range(len(y) // mb):
        Xb, yb = X[perm[i * mb : (i + 1) * mb]], y[perm[i * mb : (i + 1) * mb], 0]
        Hb, gb = 2 * Xb.T @ Xb / mb, 2 * Xb.T @ (Xb @ w - yb) / mb
        want.append(_trust_region_max(gb, Hb, rho))
    np.testing.assert_allclose(r.values, want, rtol=1e-3)
    assert r.value == pytest.approx(np.mean(want), rel=1e-3)
    assert r.m == mb and r.values.shape == (4,) and r.stderr > 0
    # m = N is worst-case sharpness on the whole data
    full = m_sharpness(m, MSE, (X, y), m=len(y), radius=rho, steps=40, restarts=2)
    ref = worst_case_sharpness(m, MSE, (X, y), radius=rho, steps=40, restarts=2)
    assert full.value == pytest.approx(ref.value, rel=1e-3)


def _relu_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()


def _rescaled(net: nn.Sequential, a: torch.Tensor) -> nn.Sequential:
    """Hidden unit j of the ReLU layer times ``a_j > 0``, the next layer's input j divided by it: same function."""
    out = _relu_net()
    with torch.no_grad():
        out[0].weight.copy_(net[0].weight * a[:, None])
        out[0].bias.copy_(net[0].bias * a)
        out[2].weight.copy_(net[2].weight / a[None, :])
        out[2].bias.copy_(net[2].bias)
    return out


@pytest.mark.parametrize("adaptive", ["elementwise", "filter"])
def test_adaptive_sharpness_is_invariant_to_relu_rescaling_and_plain_is_not(adaptive):
    net = _relu_net()
    g = torch.Generator().manual_seed(5)
    X, y = torch.randn(32, 4, generator=g, dtype=F64), torch.randint(0, 3, (32,), generator=g)
    # elementwise is invariant to any positive per-unit scaling; filter-wise to one factor per layer
    per_unit = torch.tensor([3.0, 0.5, 2.0, 7.0, 0.2, 1.5], dtype=F64)
    a = per_unit if adaptive == "elementwise" else torch.full((6,), 4.0, dtype=F64)
    other = _rescaled(net, a)
    with torch.no_grad():
        assert torch.allclose(net(X), other(X), atol=1e-12)  # the same function
    for fn, extra in ((worst_case_sharpness, {"steps": 5}), (average_sharpness, {"n_samples": 20})):
        opts = {"radius": 0.05, "seed": 0, **extra}
        r1 = fn(net, CE, (X, y), adaptive=adaptive, **opts)
        r2 = fn(other, CE, (X, y), adaptive=adaptive, **opts)
        assert r1.value != 0
        assert abs(r1.value - r2.value) <= 1e-6 * abs(r1.value), (fn.__name__, r1.value, r2.value)
        p1 = fn(net, CE, (X, y), **opts)
        p2 = fn(other, CE, (X, y), **opts)
        assert abs(p1.value - p2.value) > 0.05 * abs(p1.value), (fn.__name__, p1.value, p2.value)


def test_perturbation_scales():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3, 2)).double()
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert torch.equal(perturbation_scale(net, "none"), torch.ones_like(theta))
    assert torch.equal(perturbation_scale(net, "elementwise", eta=0.01), theta.abs() + 0.01)
    c = perturbation_scale(net, "filter")
    w = net[0].weight.detach()
    want_conv = w.reshape(3, -1).norm(dim=1).repeat_interleave(w[0].numel())
    assert torch.allclose(c[: w.numel()], want_conv)
    assert torch.allclose(c[w.numel() : w.numel() + 3], net[0].bias.detach().abs())
    with pytest.raises(ValueError, match="valid"):
        perturbation_scale(net, "layer")


def test_result_round_trip_and_errors(tmp_path):
    m, X, y, _ = _quadratic(minimum=True)
    r = worst_case_sharpness(m, MSE, (X, y), radius=0.1, steps=2)
    back = load_result(r.save(tmp_path / "s"))
    assert isinstance(back, SharpnessResult) and back.value == r.value and np.array_equal(back.values, r.values)
    with pytest.raises(ValueError, match="radius"):
        worst_case_sharpness(m, MSE, (X, y), radius=0.0)
    with pytest.raises(ValueError, match="valid"):
        worst_case_sharpness(m, MSE, (X, y), radius=0.1, norm="l1")
    with pytest.raises(ValueError, match="m must be"):
        m_sharpness(m, MSE, (X, y), m=0, radius=0.1)


def test_sharpness_measures_are_quiet_by_default(capfd):
    """docs/arguments.md: progress bars are off by default in analyzers (``progress=True`` shows them); the three
    sharpness measures drew theirs unasked."""
    m, X, y, _ = _quadratic(minimum=True)
    capfd.readouterr()
    worst_case_sharpness(m, MSE, (X, y), radius=0.1, steps=2)
    average_sharpness(m, MSE, (X, y), radius=0.1, n_samples=2)
    m_sharpness(m, MSE, (X, y), m=20, radius=0.1, steps=2, n_batches=2)
    assert capfd.readouterr().err == ""
    worst_case_sharpness(m, MSE, (X, y), radius=0.1, steps=2, progress=True)
    assert "worst-case sharpness" in capfd.readouterr().err  # the option still works


def test_every_public_progress_option_is_off_by_default():
    """The same rule over every public callable of the packages that takes ``progress``."""
    import importlib
    import inspect
    import pkgutil

    loud = []
    for pkg in ("landscape", "persistence", "tunnels"):
        root = importlib.import_module(pkg)
        for name in [pkg] + [m.name for m in pkgutil.walk_packages(root.__path__, pkg + ".")]:
            if ".integrations." in name:
                continue  # optional dependencies; their callbacks take no progress option
            module = importlib.import_module(name)
            for attr in getattr(module, "__all__", []):
                obj = getattr(module, attr)
                try:
                    param = inspect.signature(obj).parameters.get("progress")
                except (TypeError, ValueError):
                    continue
                if param is not None and param.default not in (False, inspect.Parameter.empty):
                    loud.append(f"{name}.{attr}")
    assert loud == []
