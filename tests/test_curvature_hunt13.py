"""Curvature edge cases against dense float64 references (session 13's hunt).

Error bounds of near-degenerate eigenvalue pairs against the exact spectra of rotated diagonal operators;
the density grid of wide spectra against the closed-form integral and peak heights of Gaussian mixtures;
``torch.func.hessian`` of ``Problem.objective()`` with batch-statistics BatchNorm against double backward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import HessianSpectrum, top_eigenpairs
from landscape.plot.hessian import shared_grid
from landscape.problem import Problem

F64 = torch.float64


def _rotated(d: np.ndarray, seed: int) -> torch.Tensor:
    """``Q diag(d) Q^T`` for a random orthogonal ``Q``, symmetrized; shape ``(n, n)``."""
    n = len(d)
    Q = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=F64))[0]
    A = Q @ torch.diag(torch.from_numpy(d)) @ Q.T
    return (A + A.T) / 2


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("delta", [1e-7, 1e-9])
def test_error_bounds_hold_for_a_near_degenerate_pair(k: int, delta: float) -> None:
    # The k-th and (k+1)-th eigenvalues delta apart, below the stopping rule's resolution (tol 1e-6): the Ritz
    # value is a mix of the two, off by up to delta, while r**2 / gap with the Ritz gap (~0.1) claimed
    # ~1e-13 (top-1: 9.9e-8 off, bound 8.3e-14). The bound must still contain an eigenvalue.
    for seed in range(3):
        d = np.linspace(0.0, 0.5, 200)
        d[-k:] = np.linspace(0.9, 1.0, k)
        d[-k - 1] = d[-k] - delta
        A = _rotated(d, seed)
        exact = np.linalg.eigvalsh(A.numpy())
        pairs = top_eigenpairs(lambda V, A=A: A @ V, 200, k, generator=torch.Generator().manual_seed(seed))
        assert pairs.converged
        nearest = np.abs(pairs.values.numpy()[:, None] - exact[None, :]).min(axis=1)
        assert np.all(nearest <= pairs.error_bounds.numpy()), (seed, nearest, pairs.error_bounds)
        # the bound is the residual plus rounding, and the quadratic estimate never exceeds it
        assert np.all(pairs.error_bounds.numpy() >= pairs.residuals.numpy())
        assert np.all(pairs.error_estimates.numpy() <= pairs.error_bounds.numpy())


def test_error_estimates_are_quadratic_for_well_separated_eigenvalues() -> None:
    d = np.linspace(0.0, 0.5, 100)
    d[-2:] = [0.8, 1.0]
    A = _rotated(d, 0)
    exact = np.sort(np.linalg.eigvalsh(A.numpy()))[::-1]
    pairs = top_eigenpairs(lambda V: A @ V, 100, 2)
    err = np.abs(pairs.values.numpy() - exact[:2])
    assert np.all(err <= pairs.error_estimates.numpy())
    assert float(pairs.error_estimates.max()) < 1e-10 < float(pairs.residuals.max())


def _spectrum(nodes: list[list[float]], weights: list[list[float]]) -> HessianSpectrum:
    return HessianSpectrum(
        nodes=np.array(nodes),
        weights=np.array(weights),
        top_eigenvalues=np.zeros(0),
        top_error_bounds=np.zeros(0),
        trace={},
        trace_stderr={},
        hvp_count=0,
        bn_mode="eval",
        n_params=3,
        param_names=[],
        n_samples=1,
    )


@pytest.mark.parametrize("width", [1e3, 1e6, 1e8, 1e12])
def test_default_density_grid_resolves_every_peak_of_a_wide_spectrum(width: float) -> None:
    # Eigenvalues up to 1e6-1e12 (a sum-reduction loss over a large data set): the uniform grid capped at
    # 200,000 points spaced 1.6 sigma at 1e6 (peaks 5% low) and 16 sigma at 1e8 (integral 2e-4).
    s = _spectrum([[0.0, 0.37 * width, width], [1.0, 0.5 * width, width]], [[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])
    sigma = s.sigma
    for x in (s.grid(), shared_grid([s], None, None)):
        y = s.density(x)[1]
        assert np.all(np.diff(x) > 0) and x[0] <= -6 * sigma and x[-1] >= width + 6 * sigma
        assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-8)
        # the largest value is the peak of mass 0.3 at 1 (sigma >= 0.1: the 0.25 at 0 adds < 1e-21 there) up to
        # the grid's offset, at most sigma / 8
        peak = 0.3 / (sigma * math.sqrt(2 * math.pi))
        assert float(y.max()) >= peak * math.exp(-0.5 / 64) * 0.999
        # each node's mass, within 6 sigma of it, as given
        for node, mass in ((0.37 * width, 0.15), (0.5 * width, 0.05), (width, 0.25)):
            near = np.abs(x - node) <= 6 * sigma
            assert np.trapezoid(y[near], x[near]) == pytest.approx(mass, rel=1e-6)


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_torch_func_hessian_of_the_objective_with_batch_statistics(track: bool, bn_mode: str) -> None:
    # torch.func.hessian (jacfwd over jacrev) through a batch-statistics F.batch_norm was off by ~0.2 without
    # an error; double backward (autograd.functional.hessian, Problem.dense_hessian) is the reference
    torch.manual_seed(0)
    X, y = torch.randn(12, 2, 5, 5, dtype=F64), torch.randint(0, 3, (12,))
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=track), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)
    ).double()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
        if track:
            net[1].running_mean.uniform_(-0.5, 0.5)
            net[1].running_var.uniform_(0.5, 2.0)
    prob = Problem(net, [(X[:5], y[:5]), (X[5:], y[5:])], "cross_entropy", bn_mode=bn_mode)
    th = prob.theta0 + 0.1 * torch.randn(prob.theta0.shape, dtype=F64)
    f = prob.objective()
    reference = torch.autograd.functional.hessian(f, th)
    torch.testing.assert_close(prob.dense_hessian(th), reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f(th), prob.loss(th), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.func.grad(f)(th), prob.grad(th), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.func.hessian(f)(th), reference, rtol=1e-10, atol=1e-12)
    assert float(reference.abs().max()) > 0.1
