"""Extremal eigenpairs of a symmetric operator by block Lanczos with full reorthogonalization.

:func:`top_eigenpairs` takes a ``matmat`` callable, ``(n, k) float64 -> (n, k) float64`` (see
:data:`landscape.curvature.lanczos.MatMat`), so it runs on the Hessian operator of
:mod:`landscape.curvature.hessian` or on any dense or implicit symmetric matrix. It stops when every wanted
Ritz pair's residual meets the tolerance, from a random start block or warm-started from given vectors
(e.g. the previous snapshot's eigenvectors along a trajectory), and returns the pairs with error bounds
as :class:`EigenPairs`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape._options import parse_option
from landscape.curvature.lanczos import MatMat, generator_or_default, orthogonalize

__all__ = ["Which", "EigenPairs", "top_eigenpairs"]


class Which(str, enum.Enum):
    """Which end of the spectrum :func:`top_eigenpairs` finds."""

    LA = "LA"  # largest algebraic
    LM = "LM"  # largest magnitude (what power iteration, hence PyHessian, finds)
    SA = "SA"  # smallest algebraic


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
            v = orthogonalize(v[:, None], basis[None])[:, 0]
            v -= q[:, :c] @ (q[:, :c].T @ v)
        q[:, c] = v / v.norm()
    return q, R


def _expand(matmat: MatMat, q: Tensor, basis: Tensor, m: int, bar: Any) -> tuple[int, Tensor]:
    """Store the block ``q`` ``(n, bw)`` as rows ``m : m + bw`` of ``basis``: its width and ``A q`` in float64."""
    bw = q.shape[1]
    basis[m : m + bw] = q.T
    w = matmat(q).to(torch.float64)
    bar.update(bw)
    return bw, w


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
    gen = generator_or_default(generator)
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
        bw, w = _expand(matmat, q, basis, m, bar)
        # The band of T: this block and the previous one (entries further out are rounding-size, and
        # removed by the full reorthogonalization without being recorded, as in single-vector Lanczos).
        coef = basis[lo : m + bw] @ w  # (m + bw - lo, bw)
        w = w - basis[lo : m + bw].T @ coef
        w = orthogonalize(w, basis[None, : m + bw].expand(bw, -1, -1))
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
        bw, w = _expand(matmat, q, basis, m, bar)
        coef = basis[: m + bw] @ w  # (m + bw, bw): the new columns of T, against the whole basis
        T[: m + bw, m : m + bw] = coef.numpy()
        T[m : m + bw, : m + bw] = coef.numpy().T
        w = w - basis[: m + bw].T @ coef
        w = orthogonalize(w, basis[None, : m + bw].expand(bw, -1, -1))  # (n, bw), orthogonal to Q
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
        cols = orthogonalize(cols, basis[None, :m].expand(nxt, -1, -1))  # which the basis must not inherit
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
