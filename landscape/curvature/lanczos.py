"""Randomized linear algebra on a symmetric operator given only through matrix products.

Everything here takes a ``matmat`` callable, ``(n, k) float64 -> (n, k) float64``, so it runs on the
Hessian operator of :mod:`landscape.curvature.hessian` or on any dense or implicit symmetric matrix:

* :func:`lanczos`: ``p`` independent Lanczos recurrences run in lockstep (one ``matmat`` of ``p``
  columns per step), float64 recurrence with full reorthogonalization (classical Gram-Schmidt, twice).
* :func:`top_eigenpairs`: extremal eigenpairs by block Lanczos, stopped when every residual meets the tolerance.
* :func:`slq`: Ritz nodes and weights for stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017;
  Ghorbani, Krishnan & Xiao 2019, which PyHessian follows).
* :func:`gaussian_density`: the SLQ spectral density with Gaussian broadening on a grid.
* :func:`hutchinson` and :func:`hutchpp`: trace estimators (Hutchinson 1989 with Rademacher probes;
  Meyer, Musco, Musco & Woodruff 2021, "Hutch++").
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor
from tqdm.auto import tqdm

from landscape._options import parse_option

__all__ = [
    "MatMat",
    "Which",
    "LanczosRun",
    "EigenPairs",
    "TraceEstimate",
    "lanczos",
    "ritz",
    "top_eigenpairs",
    "slq",
    "gaussian_density",
    "default_sigma",
    "rademacher",
    "hutchinson",
    "hutchpp",
]

MatMat = Callable[[Tensor], Tensor]
"""A symmetric operator as a product: ``(n, k)`` float64 in, ``(n, k)`` float64 out."""

# Ghorbani et al. 2019 / PyHessian's density plots: Gaussian variance 1e-5 times max(1, spectral width).
_SIGMA_SQUARED = 1e-5


class Which(str, enum.Enum):
    """Which end of the spectrum :func:`top_eigenpairs` finds."""

    LA = "LA"  # largest algebraic
    LM = "LM"  # largest magnitude (what power iteration, hence PyHessian, finds)
    SA = "SA"  # smallest algebraic


_E = TypeVar("_E", bound=enum.Enum)


def rademacher(n: int, k: int, generator: torch.Generator) -> Tensor:
    """Random signs, shape ``(n, k)``, float64."""
    return torch.randint(0, 2, (n, k), generator=generator, dtype=torch.int8).to(torch.float64).mul_(2).sub_(1)


def _orthogonalize(w: Tensor, basis: Tensor) -> Tensor:
    """Remove from each column ``w[:, j]`` (``(n, p)``) its part in ``basis[j]`` (``(p, i, n)``).

    Classical Gram-Schmidt, repeated once when a pass cancelled more than 30% of the norm ("twice is
    enough", Parlett 1998, §6.9): one pass leaves an ``O(eps * ||w|| / ||w'||)`` residue.
    """
    if basis.shape[1] == 0:
        return w
    # One matrix-vector pair per column: torch.bmm on these (p, i, n) x (p, n, 1) shapes ran ~4x
    # slower than torch.mv (memory-bound either way; measured in float64 at n = 61,706, i = 100).
    w = w.T.clone()  # (p, n), rows contiguous for the in-place updates
    for _ in range(2):
        before = w.norm(dim=1)
        for j in range(w.shape[0]):
            c = torch.mv(basis[j], w[j].to(basis.dtype))  # (i,)
            w[j] -= torch.mv(basis[j].T, c).to(w.dtype)
        if bool((w.norm(dim=1) >= 0.7 * before).all()):
            break
    return w.T


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
    q = v0.to(torch.float64)
    norms = q.norm(dim=0)
    if bool((norms == 0).any()):
        raise ValueError("a start vector is zero")
    q = q / norms
    basis = torch.zeros(p, steps, n, dtype=basis_dtype)
    alpha = torch.zeros(p, steps, dtype=torch.float64)
    beta = torch.zeros(p, max(steps - 1, 0), dtype=torch.float64)
    lengths = torch.full((p,), steps, dtype=torch.long)
    active = torch.ones(p, dtype=torch.bool)
    scale = 0.0
    for i in tqdm(range(steps), desc="Lanczos", disable=not progress, leave=False):
        basis[:, i] = q.T.to(basis_dtype)
        idx = active.nonzero().flatten()
        w = torch.zeros(n, p, dtype=torch.float64)
        w[:, idx] = matmat(q[:, idx]).to(torch.float64)
        a = (q * w).sum(0)
        w = w - q * a
        if i > 0:
            w = w - basis[:, i - 1].T.to(torch.float64) * beta[:, i - 1]
        w = _orthogonalize(w, basis[:, : i + 1])
        alpha[idx, i] = a[idx]
        b = w.norm(dim=0)
        scale = max(scale, float(a[idx].abs().max()), float(b[idx].max()))
        if i == steps - 1:
            break
        stop = active & (b <= breakdown * max(scale, 1e-300))
        lengths[stop] = i + 1
        active &= ~stop
        if not bool(active.any()):
            break
        beta[active, i] = b[active]
        q = torch.where(active, w / torch.where(active, b, torch.ones_like(b)), torch.zeros_like(w))
    return LanczosRun(alpha, beta, lengths, basis if keep_basis else None)


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


@dataclass(frozen=True)
class EigenPairs:
    """Extremal eigenpairs found by :func:`top_eigenpairs`.

    Attributes:
        values: Eigenvalues, shape ``(k,)``, ordered from the wanted end inward.
        vectors: Unit eigenvectors as columns, shape ``(n, k)``, float64.
        residuals: Residual norms ``||A y - theta y||`` of the operator as computed, shape ``(k,)`` (the
            block Lanczos estimate ``||R_last s_i||``, equal to the explicit residual up to float64 rounding).
        error_bounds: Bounds on the eigenvalue errors against the exact operator, shape ``(k,)``:
            ``min(r, r**2 / gap) + sqrt(n) * eps * ||A||`` (Lanczos term plus the products' rounding).
        products: Matrix-vector products used.
        converged: Whether every residual met ``tolerance``.
        tolerance: The absolute residual tolerance applied, ``max(tol, 100 eps) * ||A||`` with ``||A||``
            estimated by the largest Ritz value magnitude.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    error_bounds: Tensor
    products: int
    converged: bool
    tolerance: float = 0.0


def _wanted(theta: np.ndarray, k: int, which: Which) -> np.ndarray:
    if which is Which.LA:
        return np.argsort(-theta, kind="stable")[:k]
    if which is Which.SA:
        return np.argsort(theta, kind="stable")[:k]
    return np.argsort(-np.abs(theta), kind="stable")[:k]


def _new_block(w: Tensor, basis: Tensor, scale: float, breakdown: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Orthonormalize the columns of ``w`` ``(n, b)`` (already orthogonal to ``basis`` ``(m, n)``): ``w = Q R``.

    A column that falls below ``breakdown * scale`` after orthogonalization (an invariant subspace, or a
    block that lost rank) is replaced by a random unit vector orthogonal to everything before, with a zero
    row in ``R``: the Krylov space then restarts there, so eigenvalues the start block missed are still found.
    """
    n, b = w.shape
    q = torch.zeros(n, b, dtype=torch.float64)
    R = torch.zeros(b, b, dtype=torch.float64)
    for c in range(b):
        v = w[:, c].clone()
        if c:
            for _ in range(2):  # CGS2 against the block's earlier columns
                coef = q[:, :c].T @ v
                v -= q[:, :c] @ coef
                R[:c, c] += coef
        nv = float(v.norm())
        if nv > breakdown * max(scale, 1e-300):
            R[c, c] = nv
            q[:, c] = v / nv
            continue
        R[c, c] = 0.0
        v = torch.randn(n, generator=gen, dtype=torch.float64)
        for _ in range(2):
            v = _orthogonalize(v[:, None], basis[None])[:, 0]
            v -= q[:, :c] @ (q[:, :c].T @ v)
        q[:, c] = v / v.norm()
    return q, R


def _start_vectors(v0: Tensor, n: int) -> Tensor:
    """``v0`` as float64 columns ``(n, j)``, checked."""
    v = v0.detach().to(torch.float64)
    v = v[:, None] if v.dim() == 1 else v
    if v.dim() != 2 or v.shape[0] != n or v.shape[1] == 0:
        raise ValueError(f"v0 must have shape ({n},) or ({n}, j) with j >= 1, got {tuple(v0.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("v0 has non-finite entries")
    return v


def top_eigenpairs(
    matmat: MatMat,
    n: int,
    k: int = 5,
    *,
    which: Which | str = Which.LA,
    tol: float = 1e-6,
    max_steps: int | None = None,
    generator: torch.Generator | None = None,
    breakdown: float = 1e-5,
    block: int | None = None,
    eps: float = float(np.finfo(np.float64).eps),
    v0: Tensor | None = None,
    progress: bool = False,
) -> EigenPairs:
    """Extremal eigenpairs of a symmetric operator by block Lanczos with full reorthogonalization.

    Stops as soon as every wanted Ritz pair ``(theta_i, y_i)`` has a residual
    ``r_i = ||A y_i - theta_i y_i|| <= max(tol, 100 eps) * ||A||`` (``||A||`` estimated by the largest
    Ritz value magnitude, ``100 eps`` the noise level of the products), so vectors are as converged as
    values. Error bounds on the eigenvalues are ``min(r_i, r_i**2 / gap_i)`` (Parlett, *The Symmetric
    Eigenvalue Problem*, Thm. 11.7.1; ``gap_i`` the distance to the nearest other Ritz value less its
    residual, 0 when unknown) plus ``sqrt(n) eps ||A||`` for the products' rounding.

    A Krylov space holds one vector per start column of each eigenspace, so an eigenvalue of multiplicity
    ``m`` shows all its copies only with a block of at least ``min(m, k)`` columns. The default block,
    ``min(k, 2)``, finds double eigenvalues (single-vector Lanczos returned ``[5, 4]`` as the top two of
    ``diag(5, 5, 4, ...)``) at ~1.3x the products of ``block=1``; ``block=k`` finds every multiplicity
    (~2x the products at ``k = 5``). After a breakdown (invariant subspace) the block continues from random
    vectors orthogonal to the basis.

    Warm start: ``v0`` (e.g. the eigenvectors of a nearby operator, such as the previous snapshot's Hessian
    along a trajectory) is the first block, all its columns at once (random columns complete it to
    ``min(k, 2)``). The space then grows by the residuals ``A y_i - theta_i y_i`` of up to ``block``
    unconverged wanted Ritz pairs per step, with the Rayleigh-Ritz projection taken on the whole basis: for a
    single vector this is Lanczos itself, and for ``k > 1`` it keeps the blocks narrow once the start block
    has done its work (a block of ``k`` columns throughout cost as many products as a cold start). Same
    stopping rule, so a warm start changes only the number of products, not the accuracy.

    Args:
        matmat: The symmetric operator.
        n: Its dimension.
        k: Number of eigenpairs.
        which: ``"LA"`` largest algebraic, ``"LM"`` largest magnitude, ``"SA"`` smallest algebraic.
        tol: Relative residual tolerance (a backward error: ``r_i / ||A||``).
        max_steps: Product limit (default ``max(20 * k, 100)``, capped at ``n``).
        generator: Random source of the start block (default seed 0).
        breakdown: Relative threshold for an invariant subspace.
        block: Columns per Lanczos step (default ``min(k, 2)``); ``1`` is single-vector Lanczos.
        eps: Unit roundoff of the products (their dtype's machine epsilon); float64 by default.
        v0: Start vectors, shape ``(n, j)`` or ``(n,)`` (need not be orthonormal); default random.
        progress: Show a progress bar.

    Returns:
        The eigenpairs (``converged`` is ``False`` if the product limit came first).

    Raises:
        ValueError: If ``k`` is not in ``[1, n]``, ``block < 1`` or ``which`` is unknown, or ``v0`` has the
            wrong length or non-finite entries.
    """
    which = parse_option(Which, which, "which")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the dimension {n}, got {k}")
    start = None if v0 is None else _start_vectors(v0, n)
    b = min(k, 2) if block is None else int(block)
    if b < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    b = min(b, n)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if start is not None:
        limit = min(n, max(k, b, start.shape[1], max_steps or max(20 * k, 100)))
        return _warm_eigenpairs(matmat, n, k, which, tol, eps, limit, start, b, breakdown, gen, progress)
    limit = min(n, max(k, b, max_steps or max(20 * k, 100)))
    basis = torch.zeros(limit, n, dtype=torch.float64)
    T = np.zeros((limit, limit))
    q, _ = torch.linalg.qr(torch.randn(n, b, generator=gen, dtype=torch.float64))
    scale, m, lo = 0.0, 0, 0
    bar = tqdm(total=limit, desc="Lanczos (top-k)", disable=not progress, leave=False)
    while True:
        bw = q.shape[1]
        basis[m : m + bw] = q.T
        w = matmat(q).to(torch.float64)
        bar.update(bw)
        # The band of T: this block and the previous one (entries further out are rounding-size, and
        # removed by the full reorthogonalization without being recorded, as in single-vector Lanczos).
        coef = basis[lo : m + bw] @ w  # (m + bw - lo, bw)
        w = w - basis[lo : m + bw].T @ coef
        w = _orthogonalize(w, basis[None, : m + bw].expand(bw, -1, -1))
        T[lo : m + bw, m : m + bw] = coef.numpy()
        lo, m = m, m + bw
        scale = max(scale, float(np.abs(T[:m, :m]).max()))
        # Residual of Ritz pair i: A y_i - theta_i y_i = W s_i (s_i's rows of this block), ||W s_i|| = ||R s_i||.
        R_res = torch.linalg.qr(w, mode="r")[1].numpy()
        theta, S = np.linalg.eigh((T[:m, :m] + T[:m, :m].T) / 2)
        r_all = np.linalg.norm(R_res @ S[m - bw :], axis=0) if m < n else np.zeros(m)
        idx = _wanted(theta, min(k, m), which)
        norm = float(np.abs(theta).max())
        threshold = max(tol, 100 * eps) * norm
        done = m >= k and bool(np.all(r_all[idx] <= threshold))
        nxt = min(b, n - m, limit - m)
        if done or nxt == 0:
            bar.close()
            return _pairs(basis[:m], theta, S, idx, r_all, norm, n, eps, m, done, threshold)
        if nxt == bw:
            q, R = _new_block(w, basis[:m], scale, breakdown, gen)
        else:  # the space or the step limit ends: the coupling is the projection on what is left
            q = _new_block(w[:, :nxt], basis[:m], scale, breakdown, gen)[0]
            R = q.T @ w
        T[m : m + nxt, m - bw : m] = R.numpy()


def _warm_eigenpairs(
    matmat: MatMat,
    n: int,
    k: int,
    which: Which,
    tol: float,
    eps: float,
    limit: int,
    start: Tensor,
    b: int,
    breakdown: float,
    gen: torch.Generator,
    progress: bool,
) -> EigenPairs:
    """:func:`top_eigenpairs` from start vectors: a subspace grown by the residuals of unconverged Ritz pairs.

    Keeps the basis ``Q`` (rows of ``basis``), ``T = Q^T A Q`` in full (not only a band: the blocks vary in
    width) and the residual images ``P A Q`` with ``P = I - Q Q^T`` (rows of ``res``, re-projected as the
    basis grows), so the residual of a Ritz pair ``(theta, Q s)`` is ``(P A Q) s``: computed explicitly for
    the wanted pairs, and for the others (only their gaps use them) from the Gram matrix
    ``G = (P A Q)(P A Q)^T``, updated in ``O(n m b)`` per step like the reorthogonalization.
    """
    j = start.shape[1]
    fill = torch.randn(n, max(0, min(k, 2, n) - j), generator=gen, dtype=torch.float64)
    first = torch.cat([start, fill], dim=1)[:, :limit]
    basis = torch.zeros(limit, n, dtype=torch.float64)
    res = torch.zeros(limit, n, dtype=torch.float64)
    T = np.zeros((limit, limit))
    G = torch.zeros(limit, limit, dtype=torch.float64)
    # Rank-deficient start vectors (repeated, or zero) get random replacements orthogonal to the rest.
    q, _ = _new_block(first, basis[:0], float(first.norm(dim=0).max()), breakdown, gen)
    m = 0
    bar = tqdm(total=limit, desc="Lanczos (top-k, warm)", disable=not progress, leave=False)
    while True:
        bw = q.shape[1]
        basis[m : m + bw] = q.T
        w = matmat(q).to(torch.float64)
        bar.update(bw)
        coef = basis[: m + bw] @ w  # (m + bw, bw): the new columns of T, against the whole basis
        T[: m + bw, m : m + bw] = coef.numpy()
        T[m : m + bw, : m + bw] = coef.numpy().T
        w = w - basis[: m + bw].T @ coef
        w = _orthogonalize(w, basis[None, : m + bw].expand(bw, -1, -1))  # (n, bw), orthogonal to Q
        if m:  # the old residual images lose their part along the new block: G -= c c^T
            c = res[:m] @ q  # (m, bw)
            res[:m] -= c @ q.T
            G[:m, :m] -= c @ c.T
            cross = res[:m] @ w
            G[:m, m : m + bw], G[m : m + bw, :m] = cross, cross.T
        res[m : m + bw] = w.T
        G[m : m + bw, m : m + bw] = w.T @ w
        m += bw
        theta, S = np.linalg.eigh((T[:m, :m] + T[:m, :m].T) / 2)
        St = torch.from_numpy(S)
        r_all = torch.einsum("ji,jk,ki->i", St, G[:m, :m], St).clamp_min(0).sqrt().numpy() if m < n else np.zeros(m)
        idx = _wanted(theta, min(k, m), which)
        if m < n:  # the wanted residuals explicitly: s^T G s cancels down to ~sqrt(eps) ||G||^(1/2)
            r_all[idx] = (res[:m].T @ St[:, idx]).norm(dim=0).numpy()
        norm = float(np.abs(theta).max())
        threshold = max(tol, 100 * eps) * norm
        open_ = [int(i) for i in idx if r_all[i] > threshold]
        done = m >= k and not open_
        # Wanted pairs not yet in the space (m < k) expand by the largest residuals too.
        grow = open_ if open_ else [int(i) for i in idx]
        nxt = min(b, len(grow), n - m, limit - m) if not done else 0
        if done or nxt == 0:
            bar.close()
            return _pairs(basis[:m], theta, S, idx, r_all, norm, n, eps, m, done, threshold)
        cols = res[:m].T @ St[:, grow[:nxt]]  # (n, nxt): residual vectors, orthogonal to Q up to rounding
        cols = _orthogonalize(cols, basis[None, :m].expand(nxt, -1, -1))  # which the basis must not inherit
        # A converging residual is small by design: unit columns, so only true dependence counts as breakdown.
        cols = cols / cols.norm(dim=0).clamp_min(1e-300)
        q, _ = _new_block(cols, basis[:m], 1.0, breakdown, gen)


def _pairs(
    basis: Tensor,
    theta: np.ndarray,
    S: np.ndarray,
    idx: np.ndarray,
    r_all: np.ndarray,
    norm: float,
    n: int,
    eps: float,
    m: int,
    ok: bool,
    threshold: float,
) -> EigenPairs:
    r = r_all[idx]
    # Gap to the rest of A's spectrum: every other Ritz value has an eigenvalue of A within its residual.
    others = np.abs(theta[idx, None] - theta[None, :]) - r_all[None, :]
    others[np.arange(len(idx)), idx] = np.inf
    gap = np.maximum(others.min(axis=1), 0.0) if len(theta) > 1 else np.zeros(len(idx))
    with np.errstate(divide="ignore", invalid="ignore"):
        lanczos_bound = np.where(gap > 0, np.minimum(r, r**2 / np.where(gap > 0, gap, 1.0)), r)
    # Rounding: the products are A + E with each column of E e_j of size ~eps * ||A e_j|| <= eps * ||A||, so
    # ||E||_2 <= ||E||_F <= sqrt(n) eps ||A||, which moves every eigenvalue by at most that much (Weyl).
    rounding = math.sqrt(n) * eps * norm
    vecs = basis.T @ torch.from_numpy(np.ascontiguousarray(S[:, idx]))
    vecs = vecs / vecs.norm(dim=0)
    return EigenPairs(
        values=torch.from_numpy(theta[idx].copy()),
        vectors=vecs,
        residuals=torch.from_numpy(r.copy()),
        error_bounds=torch.from_numpy(lanczos_bound + rounding),
        products=m,
        converged=ok,
        tolerance=threshold,
    )


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
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    probes = rademacher(n, n_probes, gen)
    m = min(steps, n)
    nodes = np.zeros((n_probes, m))
    weights = np.zeros((n_probes, m))
    block = block or n_probes
    for start in range(0, n_probes, block):
        cols = slice(start, min(start + block, n_probes))
        run = lanczos(matmat, probes[:, cols], m, basis_dtype=basis_dtype, breakdown=breakdown, progress=progress)
        for j in range(run.alpha.shape[0]):
            length = int(run.lengths[j])
            theta, S = ritz(run.alpha[j], run.beta[j], length)
            nodes[start + j, :length] = theta
            nodes[start + j, length:] = theta[-1]
            weights[start + j, :length] = S[0] ** 2
    return nodes, weights


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
        method: ``"hutchinson"`` or ``"hutchpp"``.
    """

    estimate: float
    stderr: float
    products: int
    method: str


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
        The estimate.

    Raises:
        ValueError: If ``n_probes < 1``.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be at least 1, got {n_probes}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    samples = []
    for s in range(0, n_probes, block):
        Z = rademacher(n, min(block, n_probes - s), gen)
        samples.append((Z * matmat(Z).to(torch.float64)).sum(0))
    vals = torch.cat(samples)
    err = float(vals.std() / math.sqrt(n_probes)) if n_probes > 1 else float("nan")
    return TraceEstimate(float(vals.mean()), err, n_probes, "hutchinson")


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
    products (two of the three blocks in one ``matmat``).

    Args:
        matmat: The symmetric operator.
        n: Its dimension.
        n_products: Product budget (at least 3).
        generator: Random source (default seed 0).

    Returns:
        The estimate.

    Raises:
        ValueError: If ``n_products < 3``.
    """
    if n_products < 3:
        raise ValueError(f"Hutch++ needs at least 3 products, got {n_products}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    s = n_products // 3
    S = rademacher(n, s, gen)
    Q, _ = torch.linalg.qr(matmat(S).to(torch.float64))
    G = rademacher(n, s, gen)
    G = G - Q @ (Q.T @ G)
    Z = matmat(torch.cat([Q, G], dim=1)).to(torch.float64)
    head = float((Q * Z[:, : Q.shape[1]]).sum())
    tail = (G * Z[:, Q.shape[1] :]).sum(0)
    err = float(tail.std() / math.sqrt(s)) if s > 1 else float("nan")
    return TraceEstimate(head + float(tail.mean()), err, 3 * s, "hutchpp")
