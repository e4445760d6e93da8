"""Randomized linear algebra on a symmetric operator given only through matrix products.

Everything here takes a ``matmat`` callable, ``(n, k) float64 -> (n, k) float64``, so it runs on the
Hessian operator of :mod:`landscape.curvature.hessian` or on any dense or implicit symmetric matrix:

* :func:`lanczos`: ``p`` independent Lanczos recurrences run in lockstep (one ``matmat`` of ``p``
  columns per step), float64 recurrence with full reorthogonalization (classical Gram-Schmidt, twice).
* :func:`slq`: Ritz nodes and weights for stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017;
  Ghorbani, Krishnan & Xiao 2019, which PyHessian follows).
* :func:`gaussian_density`: the SLQ spectral density with Gaussian broadening on a grid.
* :func:`hutchinson` and :func:`hutchpp`: trace estimators (Hutchinson 1989 with Rademacher probes;
  Meyer, Musco, Musco & Woodruff 2021, "Hutch++"); with a budget of at least ``n`` products both return the
  exact trace from the ``n`` unit vectors (:func:`exact_trace`) instead.

Extremal eigenpairs by block Lanczos (:func:`~landscape.curvature.eigensolver.top_eigenpairs`) are in
:mod:`landscape.curvature.eigensolver`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "MatMat",
    "LanczosRun",
    "TraceEstimate",
    "lanczos",
    "ritz",
    "slq",
    "slq_runs",
    "gaussian_density",
    "default_sigma",
    "rademacher",
    "hutchinson",
    "hutchpp",
    "exact_trace",
]

MatMat = Callable[[Tensor], Tensor]
"""A symmetric operator as a product: ``(n, k)`` float64 in, ``(n, k)`` float64 out."""

# Ghorbani et al. 2019 / PyHessian's density plots: Gaussian variance 1e-5 times max(1, spectral width).
_SIGMA_SQUARED = 1e-5


def generator_or_default(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or a new one seeded 0 (the random source of every function here when none is given)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def rademacher(n: int, k: int, generator: torch.Generator) -> Tensor:
    """Random signs, shape ``(n, k)``, float64."""
    return torch.randint(0, 2, (n, k), generator=generator, dtype=torch.int8).to(torch.float64).mul_(2).sub_(1)


def orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from each column ``w[:, j]`` (``(n, p)``) its part in ``basis[j]`` (``(p, i, n)``).

    Classical Gram-Schmidt, repeated once when a pass cancelled more than 30% of the norm ("twice is
    enough", Parlett 1998, §6.9): one pass leaves an ``O(eps * ||w|| / ||w'||)`` residue.
    """
    if basis.shape[1] == 0:
        return w
    return orthogonalize_rows(w.T.clone(), basis)[0].T


def orthogonalize_rows(w: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`orthogonalize` on rows, in place: ``w`` ``(p, n)`` contiguous; returns it and its row norms ``(p,)``."""
    norms = w.norm(dim=1)
    if basis.shape[1] == 0:
        return w, norms
    # One matrix-vector pair per row: torch.bmm on these (p, i, n) x (p, n, 1) shapes ran ~4x
    # slower than torch.mv (memory-bound either way; measured in float64 at n = 61,706, i = 100).
    for _ in range(2):
        before = norms
        for j in range(w.shape[0]):
            B = basis[j]
            if B.dtype == w.dtype:
                w[j].addmv_(B.T, torch.mv(B, w[j]), alpha=-1)
            else:
                w[j] -= torch.mv(B.T, torch.mv(B, w[j].to(B.dtype))).to(w.dtype)
        norms = w.norm(dim=1)
        if bool((norms >= 0.7 * before).all()):
            break
    return w, norms


@dataclass(frozen=True)
class LanczosRun:
    """Tridiagonal matrices of ``p`` Lanczos recurrences (and optionally their bases).

    Attributes:
        alpha: Diagonals, shape ``(p, m)``.
        beta: Off-diagonals, shape ``(p, m - 1)``; ``beta[j, i]`` couples steps ``i`` and ``i + 1``.
        lengths: Steps actually taken per recurrence, shape ``(p,)`` (fewer than ``m`` after a breakdown,
            i.e. an invariant Krylov subspace; entries past the length are zero).
        basis: Lanczos vectors, shape ``(p, m, n)``, if kept.
    """

    alpha: Tensor
    beta: Tensor
    lengths: Tensor
    basis: Tensor | None


def lanczos(
    matmat: MatMat,
    v0: Tensor,
    steps: int,
    *,
    keep_basis: bool = False,
    basis_dtype: torch.dtype = torch.float64,
    breakdown: float = 1e-5,
    progress: bool = False,
) -> LanczosRun:
    """Run ``p`` Lanczos recurrences from the columns of ``v0`` in lockstep, with full reorthogonalization.

    Each step costs one ``matmat`` of the still-active columns. A recurrence stops early when its new
    residual norm falls below ``breakdown`` times the largest recurrence coefficient seen (its Krylov
    subspace is invariant, so its quadrature is already exact).

    Args:
        matmat: The symmetric operator.
        v0: Start vectors, shape ``(n, p)`` (need not be normalized).
        steps: Maximal number of steps ``m`` (at most ``n`` are meaningful).
        keep_basis: Return the Lanczos vectors (always kept internally for reorthogonalization).
        basis_dtype: Storage dtype of the Lanczos vectors (float32 halves the memory of big models).
        breakdown: Relative threshold for an invariant subspace.
        progress: Show a progress bar.

    Returns:
        The tridiagonal coefficients (float64).

    Raises:
        ValueError: If ``v0`` is not a matrix with nonzero columns or ``steps < 1``.
    """
    if v0.dim() != 2:
        raise ValueError(f"v0 must have shape (n, p), got {tuple(v0.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n, p = v0.shape
    steps = min(steps, n)
    q = v0.to(torch.float64).T.contiguous()  # (p, n): the recurrences' vectors as contiguous rows
    norms = q.norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError("a start vector is zero")
    q = q / norms[:, None]  # (not in place: q may be v0's own storage, whose transpose is contiguous)
    basis = torch.zeros(p, steps, n, dtype=basis_dtype)
    alpha = torch.zeros(p, steps, dtype=torch.float64)
    beta = torch.zeros(p, max(steps - 1, 0), dtype=torch.float64)
    lengths = torch.full((p,), steps, dtype=torch.long)
    active = torch.ones(p, dtype=torch.bool)
    scale = 0.0
    for i in tqdm(range(steps), desc="Lanczos", disable=not progress, leave=False):
        basis[:, i] = q
        if bool(active.all()):  # no gather or scatter around the product
            w = matmat(q.T).T.to(torch.float64).contiguous()
        else:
            idx = active.nonzero().flatten()
            w = torch.zeros(p, n, dtype=torch.float64)
            w[idx] = matmat(q[idx].T).T.to(torch.float64)
        a = (q * w).sum(1)
        w -= q * a[:, None]
        if i > 0:
            w -= basis[:, i - 1].to(torch.float64) * beta[:, i - 1, None]
        w, b = orthogonalize_rows(w, basis[:, : i + 1])
        alpha[active, i] = a[active]
        scale = max(scale, float(a[active].abs().max()), float(b[active].max()))
        if i == steps - 1:
            break
        stop = active & (b <= breakdown * max(scale, 1e-300))
        if bool(stop.any()):
            lengths[stop] = i + 1
            active &= ~stop
            if not bool(active.any()):
                break
        beta[active, i] = b[active]
        q = torch.where(active[:, None], w / torch.where(active, b, torch.ones_like(b))[:, None], torch.zeros_like(w))
    return LanczosRun(alpha=alpha, beta=beta, lengths=lengths, basis=basis if keep_basis else None)


def ritz(alpha: Tensor, beta: Tensor, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of one tridiagonal Lanczos matrix.

    Args:
        alpha: Diagonal, shape ``(m,)``.
        beta: Off-diagonal, shape ``(m - 1,)``.
        length: Use only the leading ``length`` steps.

    Returns:
        Ritz values, shape ``(l,)`` ascending, and eigenvectors of ``T``, shape ``(l, l)`` (columns).
    """
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    m = len(a) if length is None else int(length)
    if m == 1:
        return a[:1].copy(), np.ones((1, 1))
    return eigh_tridiagonal(a[:m], b[: m - 1])


def slq(
    matmat: MatMat,
    n: int,
    n_probes: int = 4,
    steps: int = 100,
    *,
    generator: torch.Generator | None = None,
    block: int | None = None,
    basis_dtype: torch.dtype = torch.float64,
    breakdown: float = 1e-5,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: Ritz nodes and weights from Rademacher probes.

    For a probe ``v`` (normalized), ``v^T f(A) v ~= sum_j w_j f(theta_j)`` with ``theta_j`` the Ritz
    values of the ``m``-step Lanczos matrix ``T`` started at ``v`` and ``w_j`` the squared first
    components of ``T``'s eigenvectors; averaging over probes estimates ``tr f(A) / n``, i.e. the
    spectral density of ``A`` as a mixture of point masses.

    Args:
        matmat: The symmetric operator.
        n: Its dimension.
        n_probes: Number of probe vectors ``p``.
        steps: Lanczos steps ``m`` per probe.
        generator: Random source of the probes (default seed 0).
        block: Probes run in lockstep per group (default all); smaller groups use less memory.
        basis_dtype: Storage dtype of the Lanczos vectors.
        breakdown: Relative threshold for an invariant subspace.
        progress: Show a progress bar.

    Returns:
        ``(nodes, weights)``, each of shape ``(p, m)``; each row of weights sums to 1. Recurrences
        that ended early (invariant subspace) are padded with weight 0 at their last node.
    """
    nodes, weights, _ = slq_runs(
        matmat,
        n,
        n_probes,
        steps,
        generator=generator,
        block=block,
        basis_dtype=basis_dtype,
        breakdown=breakdown,
        progress=progress,
    )
    return nodes, weights


def slq_runs(
    matmat: MatMat,
    n: int,
    n_probes: int = 4,
    steps: int = 100,
    *,
    generator: torch.Generator | None = None,
    block: int | None = None,
    basis_dtype: torch.dtype = torch.float64,
    breakdown: float = 1e-5,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`slq` with the length of each probe's recurrence.

    A recurrence of length ``n`` (no breakdown) spans the whole space: its Ritz values are all the
    eigenvalues of the operator, and their sum is its exact trace.

    Returns:
        ``(nodes, weights, lengths)``: as :func:`slq`, and the steps each probe's recurrence took, shape
        ``(p,)`` int.
    """
    gen = generator_or_default(generator)
    probes = rademacher(n, n_probes, gen)
    m = min(steps, n)
    nodes = np.zeros((n_probes, m))
    weights = np.zeros((n_probes, m))
    lengths = np.zeros(n_probes, dtype=np.int64)
    block = block or n_probes
    for start in range(0, n_probes, block):
        cols = slice(start, min(start + block, n_probes))
        run = lanczos(matmat, probes[:, cols], m, basis_dtype=basis_dtype, breakdown=breakdown, progress=progress)
        for j in range(run.alpha.shape[0]):
            length = lengths[start + j] = int(run.lengths[j])
            theta, S = ritz(run.alpha[j], run.beta[j], length)
            nodes[start + j, :length] = theta
            nodes[start + j, length:] = theta[-1]
            weights[start + j, :length] = S[0] ** 2
    return nodes, weights, lengths


def default_sigma(nodes: np.ndarray) -> float:
    """Gaussian width of the PyHessian density plots: ``sqrt(1e-5 * max(1, spectral width))``."""
    width = float(np.max(nodes) - np.min(nodes)) if np.size(nodes) else 0.0
    return math.sqrt(_SIGMA_SQUARED * max(1.0, width))


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Spectral density with Gaussian broadening, averaged over probes.

    ``rho(x) = (1/p) sum_i sum_j w_ij N(x; theta_ij, sigma^2)``; it integrates to 1 over the real line.

    Args:
        nodes: Ritz nodes, shape ``(p, m)``.
        weights: Quadrature weights, shape ``(p, m)``.
        grid: Points, shape ``(g,)``.
        sigma: Standard deviation of the Gaussians (> 0).

    Returns:
        Density values, shape ``(g,)``.

    Raises:
        ValueError: If ``sigma`` is not positive or the shapes differ.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if nodes.shape != weights.shape:
        raise ValueError(f"nodes {nodes.shape} and weights {weights.shape} must have the same shape")
    x = np.asarray(grid, dtype=np.float64)
    th, w = nodes.ravel(), weights.ravel() / nodes.shape[0]
    keep = w > 0
    th, w = th[keep], w[keep]
    out = np.zeros_like(x)
    for s in range(0, len(th), 256):  # chunks bound the (g, 256) temporary
        z = (x[:, None] - th[None, s : s + 256]) / sigma
        out += np.exp(-0.5 * z * z) @ w[s : s + 256]
    return out / (sigma * math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate.

    Attributes:
        estimate: The trace estimate.
        stderr: Standard error of its stochastic part (0 when exact).
        products: Matrix-vector products used.
        method: ``"hutchinson"`` or ``"hutchpp"``: the estimator asked for.
        exact: Whether the estimate is the exact trace (a budget of at least ``n`` products buys the ``n``
            unit-vector products ``sum_i e_i^T A e_i``, exact up to rounding, and cheaper than the estimator).
    """

    estimate: float
    stderr: float
    products: int
    method: str
    exact: bool = False


def _stderr(samples: Tensor) -> float:
    """Standard error of the mean of ``samples`` ``(s,)``: ``std / sqrt(s)``, NaN for one sample."""
    return float(samples.std() / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")


def exact_trace(matmat: MatMat, n: int, *, method: str = "exact", block: int = 10) -> TraceEstimate:
    """The exact trace ``sum_i e_i^T A e_i`` from ``n`` products with unit vectors, ``block`` per ``matmat`` call.

    Args:
        matmat: The symmetric operator.
        n: Its dimension.
        method: The estimator this replaces, recorded in the result (``"hutchinson"`` or ``"hutchpp"``).
        block: Unit vectors per ``matmat`` call (bounds the ``(n, block)`` temporaries).

    Returns:
        The trace with ``stderr = 0``, ``products = n`` and ``exact = True``.
    """
    block = max(1, int(block))
    total = 0.0
    for s in range(0, n, block):
        cols = torch.arange(s, min(s + block, n))
        E = torch.zeros(n, len(cols), dtype=torch.float64)
        E[cols, torch.arange(len(cols))] = 1.0
        total += float(matmat(E).to(torch.float64)[cols, torch.arange(len(cols))].sum())
    return TraceEstimate(estimate=total, stderr=0.0, products=n, method=method, exact=True)


def hutchinson(
    matmat: MatMat,
    n: int,
    n_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    block: int = 10,
) -> TraceEstimate:
    """Hutchinson's trace estimator with Rademacher probes: ``mean_i z_i^T A z_i``.

    Args:
        matmat: The symmetric operator.
        n: Its dimension.
        n_probes: Number of probes (= products).
        generator: Random source (default seed 0).
        block: Probes per ``matmat`` call.

    Returns:
        The mean of the ``n_probes`` quadratic forms, with its standard error (NaN for one probe); the exact
        trace (:func:`exact_trace`, ``exact=True``, ``n`` products) when ``n_probes >= n``.

    Raises:
        ValueError: If ``n_probes < 1``.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be at least 1, got {n_probes}")
    if n_probes >= n:  # n unit vectors give the trace itself, for no more products than the budget
        return exact_trace(matmat, n, method="hutchinson", block=block)
    gen = generator_or_default(generator)
    samples = []
    for s in range(0, n_probes, block):
        Z = rademacher(n, min(block, n_probes - s), gen)
        samples.append((Z * matmat(Z).to(torch.float64)).sum(0))
    vals = torch.cat(samples)
    return TraceEstimate(estimate=float(vals.mean()), stderr=_stderr(vals), products=n_probes, method="hutchinson")


def hutchpp(
    matmat: MatMat,
    n: int,
    n_products: int = 99,
    *,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021, Algorithm 1): exact trace on a sketched top subspace plus Hutchinson on the rest.

    With ``s = n_products // 3``: ``Q = orth(A S)`` for Rademacher ``S`` (n, s); the estimate is
    ``tr(Q^T A Q) + (1/s) tr(G^T (I - QQ^T) A (I - QQ^T) G)`` for Rademacher ``G`` (n, s). Uses ``3 s``
    products (two of the three blocks in one ``matmat``). The sketch spans the whole space only from
    ``3 n`` products, so with ``n_products >= n`` the exact trace from ``n`` unit vectors is returned instead
    (:func:`exact_trace`): with 7 products on ``n = 3`` the sketch of 2 columns gave 8.08 for a trace of 5.65.

    Args:
        matmat: The symmetric operator.
        n: Its dimension.
        n_products: Product budget (at least 3).
        generator: Random source (default seed 0).

    Returns:
        The estimate; its standard error is the Hutchinson part's (NaN when ``s = 1``), the sketched part
        being exact. The exact trace (``exact=True``, ``n`` products) when ``n_products >= n``.

    Raises:
        ValueError: If ``n_products < 3`` (and ``< n``).
    """
    if n_products >= n:  # n unit vectors give the trace itself, for no more products than the budget
        return exact_trace(matmat, n, method="hutchpp", block=max(1, 2 * (n_products // 3)))
    if n_products < 3:
        raise ValueError(f"Hutch++ needs at least 3 products, got {n_products}")
    gen = generator_or_default(generator)
    s = n_products // 3
    S = rademacher(n, s, gen)
    Q, _ = torch.linalg.qr(matmat(S).to(torch.float64))
    G = rademacher(n, s, gen)
    G = G - Q @ (Q.T @ G)
    Z = matmat(torch.cat([Q, G], dim=1)).to(torch.float64)
    head = float((Q * Z[:, : Q.shape[1]]).sum())
    tail = (G * Z[:, Q.shape[1] :]).sum(0)
    return TraceEstimate(estimate=head + float(tail.mean()), stderr=_stderr(tail), products=3 * s, method="hutchpp")
