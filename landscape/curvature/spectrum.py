"""The Hessian's spectrum: top eigenpairs, eigenvector directions, stochastic traces and the SLQ density.

Entry points on a :class:`~landscape.curvature.hessian.HessianOperator` (or a
:class:`~landscape.problem.Problem`, whose operator is built): :func:`hessian_eigenpairs` (Lanczos top-k),
:func:`hessian_directions` (eigenvectors as parameter-space directions for plane slices),
:func:`hessian_trace` (Hutchinson / Hutch++) and :func:`spectrum_of` / :func:`hessian_spectrum` (the
stochastic Lanczos quadrature density of the Persistent Neurons paper's Fig. 12, as PyHessian computes it),
returned as a :class:`HessianSpectrum` result. Given a problem, each takes ``params=``, the parameters whose
Hessian block it analyses (as :class:`~landscape.curvature.hessian.HessianOperator` and
:func:`hessian_spectrum` do). The algorithms are in :mod:`landscape.curvature.lanczos`
and :mod:`landscape.curvature.eigensolver`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import validation
from landscape._options import check_int, keyword_values, parse_option, renamed, shows_keywords, typed_keywords
from landscape.curvature.eigensolver import EigenPairs, Which, top_eigenpairs
from landscape.curvature.hessian import _BATCH_NORM, HessianOperator, LossFn, _select
from landscape.curvature.lanczos import TraceEstimate, default_sigma, gaussian_density, hutchinson, hutchpp, slq_runs
from landscape.curvature.options import SPECTRUM_DEFAULTS, HessianSpectrumOptions, OperatorOptions, SpectrumOptions
from landscape.problem import Problem
from landscape.results import Provenance, Result, register_result

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "TraceMethod",
    "HessianSpectrum",
    "hessian_eigenpairs",
    "hessian_directions",
    "hessian_trace",
    "hessian_spectrum",
    "spectrum_of",
]


# The largest uniform density grid; wider spectra get points near the nodes only (HessianSpectrum.grid).
_GRID_POINTS = 200_000


def _as_operator(op: Any, params: str | Sequence[str] | None = None) -> HessianOperator:
    """The operator itself, or the operator of a :class:`~landscape.problem.Problem` over ``params``.

    Raises:
        ValueError: If ``params`` selects other tensors than a given operator covers (its selection is made
            when it is built).
    """
    if isinstance(op, Problem):
        return HessianOperator(op, params=params)
    validation.check_operator(op)
    if params is not None and isinstance(op, HessianOperator):
        chosen = [s.name for s in _select(op.model, op.layout, params)]
        if chosen != op.param_names:
            raise ValueError(
                f"params={params!r} selects {chosen}, but this operator covers {op.param_names}: pass the Problem "
                "with params=, or build HessianOperator(problem, params=...)"
            )
    return op


def _breakdown(op: HessianOperator) -> float:
    # Products carry the compute dtype's rounding: below ~100 eps of ||H|| a residual is noise.
    return 100 * torch.finfo(op.dtype).eps


# =========================================================================== analyses
def hessian_eigenpairs(
    op: HessianOperator | Problem,
    k: int = 5,
    *,
    which: Which | str = Which.LA,
    tol: float = 1e-6,
    max_steps: int | None = None,
    seed: int = 0,
    block: int | None = None,
    v0: Tensor | None = None,
    certify: bool = True,
    progress: bool = False,
    params: str | Sequence[str] | None = None,
) -> EigenPairs:
    """Top-k eigenvalues and eigenvectors by block Lanczos with full reorthogonalization.

    Converged means every returned pair has a residual ``||H v - lambda v|| <= max(tol, 100 eps) * ||H||``
    (``eps`` of the compute dtype, ``||H||`` estimated by the largest Ritz value magnitude); the bound is
    in ``tolerance``. Error bounds add ``sqrt(n) eps ||H||`` for the rounding of the products (see
    :func:`landscape.curvature.eigensolver.top_eigenpairs`).

    Args:
        op: The Hessian, or a :class:`~landscape.problem.Problem` (its Hessian is built).
        k: Number of eigenpairs.
        which: ``"LA"`` (largest), ``"LM"`` (largest magnitude, as power iteration) or ``"SA"``.
        tol: Relative residual tolerance of the stopping rule.
        max_steps: Product limit (default ``max(20 k, 100)``).
        seed: Seed of the start block.
        block: Lanczos block size (default ``min(k, 2)``): eigenvalues repeated up to ``block`` times show
            every copy in the iteration itself, further copies are the completeness check's to find; with
            ``block >= k`` a cold start needs no check. With ``v0``, the width of each expansion after the
            start block.
        v0: Warm start: start vectors ``(n, j)`` or ``(n,)`` in subset coordinates, e.g. the ``vectors`` of
            the eigenpairs at a nearby point (the previous snapshot of a trajectory). Same stopping rule, so
            the same accuracy in fewer products when the start is good.
        certify: Check, after convergence, that no eigenvalue was missed (a copy of an eigenvalue repeated
            more often than ``block``, or one a warm start lacks), and find it if so, for ``max(4, 0.15 m)``
            more products after ``m`` (at least 6 from a warm start); ``False`` skips the check (see
            :func:`landscape.curvature.eigensolver.top_eigenpairs`).
        progress: Show a progress bar.
        params: With a :class:`~landscape.problem.Problem`, the parameters whose Hessian block is taken:
            ``None`` or ``"all"``, ``"trainable"``, or tensor and/or layer names (as
            :class:`~landscape.curvature.hessian.HessianOperator`'s ``params``). With an operator, its own
            selection (built in); another one is refused.

    Returns:
        Eigenvalues ``(k,)``, unit eigenvectors ``(n, k)`` in subset coordinates, residuals, error bounds,
        product count.
    """
    op = _as_operator(op, params)
    gen = torch.Generator().manual_seed(seed)
    return top_eigenpairs(
        op.matmat,
        op.n,
        k,
        which=which,
        tol=tol,
        max_steps=max_steps,
        generator=gen,
        breakdown=_breakdown(op),
        block=block,
        eps=float(torch.finfo(op.dtype).eps),
        v0=v0,
        certify=certify,
        progress=progress,
    )


def hessian_directions(
    op: HessianOperator | Problem,
    k: int = 2,
    *,
    which: Which | str = Which.LA,
    tol: float = 1e-6,
    seed: int = 0,
    params: str | Sequence[str] | None = None,
) -> Tensor:
    """Top Hessian eigenvectors as full-length parameter-space directions (e.g. for a plane slice).

    Args:
        op: The Hessian (possibly of a parameter subset), or a :class:`~landscape.problem.Problem`.
        k: Number of directions.
        which: Spectrum end, as in :func:`hessian_eigenpairs`.
        tol: Eigenvalue tolerance.
        seed: Seed of the start vector.
        params: With a :class:`~landscape.problem.Problem`, the parameters whose Hessian block is taken:
            ``None`` or ``"all"``, ``"trainable"``, or tensor and/or layer names (as
            :class:`~landscape.curvature.hessian.HessianOperator`'s ``params``). With an operator, its own
            selection (built in); another one is refused.

    Returns:
        Shape ``(k, numel)`` in the operator's dtype: unit vectors in the model's flat parameter layout,
        zero on parameters outside the subset, ordered by eigenvalue (largest first for ``"LA"``).
    """
    op = _as_operator(op, params)
    pairs = hessian_eigenpairs(op, k, which=which, tol=tol, seed=seed)
    return op.to_full(pairs.vectors).T.to(op.dtype).contiguous()


class TraceMethod(str, enum.Enum):
    """Stochastic trace estimator."""

    HUTCHINSON = "hutchinson"
    HUTCHPP = "hutchpp"


def hessian_trace(
    op: HessianOperator | Problem,
    n_products: int = 99,
    *,
    method: TraceMethod | str = TraceMethod.HUTCHPP,
    seed: int = 0,
    params: str | Sequence[str] | None = None,
) -> TraceEstimate:
    """Stochastic trace of the Hessian.

    Args:
        op: The Hessian, or a :class:`~landscape.problem.Problem`.
        n_products: Hessian-vector product budget.
        method: ``"hutchpp"`` (Meyer et al. 2021) or ``"hutchinson"`` (Rademacher probes).
        seed: Seed of the probes.
        params: With a :class:`~landscape.problem.Problem`, the parameters whose Hessian block is taken:
            ``None`` or ``"all"``, ``"trainable"``, or tensor and/or layer names (as
            :class:`~landscape.curvature.hessian.HessianOperator`'s ``params``). With an operator, its own
            selection (built in); another one is refused.

    Returns:
        Estimate, standard error and products used; with ``n_products >= op.n`` the exact trace from ``op.n``
        unit-vector products (``exact=True``, standard error 0): cheaper than either estimator there, and
        Hutch++'s sketch spans the space only from ``3 n`` products.
    """
    op = _as_operator(op, params)
    method = parse_option(TraceMethod, method, "trace method")
    gen = torch.Generator().manual_seed(seed)
    if method is TraceMethod.HUTCHPP:
        return hutchpp(op.matmat, op.n, n_products, generator=gen)
    return hutchinson(op.matmat, op.n, n_products, generator=gen)


@register_result
@dataclasses.dataclass(frozen=True, eq=False)
class HessianSpectrum(Result):
    """Hessian eigenvalue density (SLQ) with top eigenvalues and traces.

    Attributes:
        nodes: Ritz values per probe, shape ``(p, m)``.
        weights: Quadrature weights per probe, shape ``(p, m)``; each row sums to 1.
        top_eigenvalues: Largest eigenvalues, shape ``(k,)`` (empty if not computed).
        top_error_bounds: Their error bounds (Lanczos plus rounding), shape ``(k,)``.
        trace: Estimates by method: ``"slq"`` (free, from the probes) and, if computed,
            ``"hutchinson"`` and ``"hutchpp"``. Exact (listed in ``provenance.extra["trace_exact"]``, standard
            error 0) when the budget allows: ``"slq"`` when a probe's recurrence ran ``n`` steps (``steps >= n``
            and no breakdown: the sum of its Ritz values), the others when ``trace_products >= n``
            (``n`` unit-vector products instead of the estimator).
        trace_stderr: Standard errors of the same estimates.
        hvp_count: Hessian-vector products spent on everything in this result.
        bn_mode: ``"eval"`` or ``"train"``: which BatchNorm statistics the Hessian is of.
        n_params: Dimension of the Hessian.
        param_names: Tensors the Hessian covers.
        n_samples: Data points in the loss.
        provenance: Seed, data and settings; ``extra["notes"]`` lists what the operator did beyond the plain
            definition (e.g. a half-precision model computed in float32), ``extra["model_dtype"]`` and
            ``extra["reduction"]`` the model's dtype and the loss reduction, ``extra["batchnorm"]`` whether the
            model has BatchNorm (without, ``bn_mode`` changes nothing); ``extra["top_k"]`` and ``extra["steps"]``
            are the counts computed (capped at ``n_params``), ``extra["top_k_requested"]`` the one asked for.
        top_residuals: Residual norms ``||H v - lambda v||`` of the top eigenpairs, shape ``(k,)``.
    """

    _dims = {
        "nodes": ("probe", "node"),
        "weights": ("probe", "node"),
        "top_eigenvalues": ("rank",),
        "top_error_bounds": ("rank",),
        "top_residuals": ("rank",),
    }
    _table = ("rank",)

    def _thumbnail_data(self) -> tuple[Any, ...] | None:
        if not (self.weights > 0).any():
            return None
        x, y = self.density(n_points=400)
        return ("lines", x, [np.log10(np.maximum(y, 1e-8 * y.max()))], "eigenvalue", "log10 density")

    nodes: np.ndarray
    weights: np.ndarray
    top_eigenvalues: np.ndarray
    top_error_bounds: np.ndarray
    trace: dict[str, float]
    trace_stderr: dict[str, float]
    hvp_count: int
    bn_mode: str
    n_params: int
    param_names: list[str]
    n_samples: int
    provenance: Provenance = dataclasses.field(default_factory=Provenance)
    top_residuals: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def sigma(self) -> float:
        """Default Gaussian width: ``sqrt(1e-5 * max(1, width))`` as in PyHessian's density plots."""
        return default_sigma(self.nodes[self.weights > 0])

    def grid(self, n_points: int | None = None, sigma: float | None = None) -> np.ndarray:
        """A grid covering the nodes plus at least 6 sigma on each side, spacing at most sigma / 4 near every node.

        Uniform with at least 1,000 points while that takes at most 200,000; for a wider spectrum (in units of
        sigma: e.g. a sum-reduction loss, whose eigenvalues grow with the data size) the points at spacing
        sigma / 4 within 8 sigma of a node, plus 1,000 uniform points (a uniform grid capped at 200,000 points
        had spacings of 16 sigma at a width of 1e8 with the default sigma: peaks fell between the points and
        the density integrated to 2e-4).

        Args:
            n_points: A uniform grid of this many points instead.
            sigma: The Gaussian width the spacing serves; default :attr:`sigma`.

        Returns:
            Shape ``(g,)``, increasing.
        """
        sigma = self.sigma if sigma is None else sigma
        used = self.nodes[self.weights > 0]
        lo, hi = float(used.min()) - 6 * sigma, float(used.max()) + 6 * sigma
        if n_points is not None:
            return np.linspace(lo, hi, n_points)
        uniform = math.ceil(4 * (hi - lo) / sigma) + 1
        if uniform <= _GRID_POINTS:
            return np.linspace(lo, hi, max(1000, uniform))
        # lattice points k * h (h = sigma / 4) within 8 sigma of a node, 65 per node at most: beyond, the
        # density (< 1e-14 of a peak) times the coarse spacing (width / 1,000) adds nothing to the integral
        h = sigma / 4
        centres = np.unique(np.round(used / h))
        near = (centres[:, None] + np.arange(-32, 33)[None, :]).ravel()
        return np.unique(np.concatenate([np.unique(near) * h, np.linspace(lo, hi, 1000)]))

    def density(
        self, grid: np.ndarray | None = None, *, sigma: float | None = None, n_points: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalue density with Gaussian broadening.

        Args:
            grid: Points to evaluate at, shape ``(g,)``; default :meth:`grid`.
            sigma: Gaussian standard deviation; default :attr:`sigma`.
            n_points: Size of the default grid.

        Returns:
            ``(grid, density)``, each shape ``(g,)``; on the default grid it integrates to 1 (trapezoid rule).
        """
        sigma = self.sigma if sigma is None else float(sigma)
        x = self.grid(n_points, sigma) if grid is None else np.asarray(grid, dtype=np.float64)
        return x, gaussian_density(self.nodes, self.weights, x, sigma)

    def spectral_measure(self) -> tuple[np.ndarray, np.ndarray]:
        """The SLQ estimate as a discrete measure: nodes and masses (summing to 1), shapes ``(p * m,)``."""
        return self.nodes.ravel(), self.weights.ravel() / self.nodes.shape[0]


@shows_keywords(SpectrumOptions, SPECTRUM_DEFAULTS)
def spectrum_of(
    op: HessianOperator | Problem,
    *,
    data: str | None = None,
    params: str | Sequence[str] | None = None,
    **options: Unpack[SpectrumOptions],
) -> HessianSpectrum:
    """SLQ density, top eigenvalues and traces of a :class:`HessianOperator`.

    Args:
        op: The Hessian, or a :class:`~landscape.problem.Problem`.
        data: Deprecated name of ``data_description``.
        params: With a :class:`~landscape.problem.Problem`, the parameters whose Hessian block is taken:
            ``None`` or ``"all"``, ``"trainable"``, or tensor and/or layer names (as
            :class:`~landscape.curvature.hessian.HessianOperator`'s ``params``). With an operator, its own
            selection (built in); another one is refused.
        **options: The spectrum keywords (:class:`SpectrumOptions`): ``n_probes``, ``steps``, ``top_k``,
            ``trace_products``, ``tol``, ``seed``, ``data_description``, ``progress``.

    Returns:
        The spectrum.

    Raises:
        ValueError: On ``n_probes < 1``, a negative ``top_k`` or ``trace_products``, or ``trace_products`` of 1 or 2
            below the dimension (Hutch++ needs 3), before any product.
    """
    o = keyword_values("spectrum_of", options, SpectrumOptions, SPECTRUM_DEFAULTS)
    n_probes, steps, top_k, trace_products = o["n_probes"], o["steps"], o["top_k"], o["trace_products"]
    tol, seed, progress = o["tol"], o["seed"], o["progress"]
    n_probes = check_int(n_probes, "n_probes")
    top_k, trace_products = (check_int(o[k], k, least=0, note=" (0 skips it)") for k in ("top_k", "trace_products"))
    data_description = renamed(o["data_description"] or None, data, "data", "data_description") or ""
    op = _as_operator(op, params)
    if 0 < trace_products < min(3, op.n):  # refused before the density's and top-k's products, not after
        raise ValueError(
            f"trace_products={trace_products}: Hutch++ needs at least 3 Hessian-vector products (or the dimension, "
            f"{op.n}, for the exact trace); give 0 (SLQ's trace only) or 3 or more"
        )
    data_description = data_description or op.data_description
    start = op.hvp_count
    gen = torch.Generator().manual_seed(seed)
    steps = min(steps, op.n)
    requested, top_k = top_k, min(top_k, op.n)  # an n-dimensional Hessian has n eigenvalues
    if requested > top_k:
        warnings.warn(
            f"top_k={requested} exceeds the Hessian's dimension {op.n}: all {op.n} eigenvalues are computed",
            UserWarning,
            stacklevel=2,
        )
    basis_bytes = n_probes * steps * op.n * 8
    # Probes in lockstep share each graph pass; fall back to one at a time (and float32 vectors) if large.
    block = n_probes if basis_bytes <= op.memory_budget // 2 else 1
    basis_dtype = torch.float64 if basis_bytes // n_probes * block <= op.memory_budget // 2 else torch.float32
    nodes, weights, lengths = slq_runs(
        op.matmat,
        op.n,
        n_probes,
        steps,
        generator=gen,
        block=block,
        basis_dtype=basis_dtype,
        breakdown=_breakdown(op),
        progress=progress,
    )
    per_probe = op.n * (weights * nodes).sum(1)  # each probe's estimate z^T H z of the trace, (p,)
    trace = {"slq": float(per_probe.mean())}
    # the standard error of a mean of p samples, from their sample std (ddof=1), as Hutchinson's
    stderr = {"slq": float(per_probe.std(ddof=1) / math.sqrt(n_probes)) if n_probes > 1 else math.nan}
    exact = []
    full = lengths == op.n  # a recurrence of n steps spans the space: its n Ritz values are H's eigenvalues
    if full.any():
        trace["slq"], stderr["slq"] = float(nodes[full].sum(1).mean()), 0.0
        exact.append("slq")
    top = bounds = residuals = np.zeros(0)
    if top_k > 0:
        pairs = hessian_eigenpairs(op, top_k, tol=tol, seed=seed + 1, progress=progress)
        top, bounds, residuals = pairs.values.numpy(), pairs.error_bounds.numpy(), pairs.residuals.numpy()
    if trace_products > 0:
        for method in TraceMethod:
            est = hessian_trace(op, trace_products, method=method, seed=seed + 2)
            trace[method.value], stderr[method.value] = est.estimate, est.stderr
            if est.exact:
                exact.append(method.value)
    prov = Provenance.here(
        seed=seed,
        data=data_description or f"{op.n_samples} samples",
        model=type(op.model).__name__,
        batchnorm=any(isinstance(m, _BATCH_NORM) for m in op.model.modules()),  # else bn_mode changes nothing
        n_probes=n_probes,
        steps=steps,
        top_k=top_k,  # computed: the request capped at the dimension (see top_k_requested)
        top_k_requested=requested,
        trace_products=trace_products,
        trace_exact=exact,  # the traces that are exact (stderr 0), not estimates
        tol=tol,
        # the budget decides the probes run in lockstep and the basis' dtype (float32 when short), so the nodes
        memory_budget=op.memory_budget,
        basis_dtype=str(basis_dtype),
        micro_batch_size=op.micro_batch_size,
        dtype=str(op.dtype),
        model_dtype=str(op.model_dtype),
        reduction=op.reduction,
        notes=list(op.notes),
        kernels=op.kernels,
        threads=torch.get_num_threads(),
    )
    return HessianSpectrum(
        nodes=nodes,
        weights=weights,
        top_eigenvalues=top,
        top_error_bounds=bounds,
        trace=trace,
        trace_stderr=stderr,
        hvp_count=op.hvp_count - start,
        bn_mode=op.bn_mode.value,
        n_params=op.n,
        param_names=op.param_names,
        n_samples=op.n_samples,
        provenance=prov,
        top_residuals=residuals,
    )


@shows_keywords(HessianSpectrumOptions, SPECTRUM_DEFAULTS)
def hessian_spectrum(
    problem: Problem | nn.Module,
    loss_fn: LossFn | str | None = None,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
    *,
    params: str | Sequence[str] | None = None,
    **options: Unpack[HessianSpectrumOptions],
) -> HessianSpectrum:
    """Hessian eigenvalue density of a model's full-dataset loss (the Persistent Neurons Fig. 12 analysis).

    Builds a :class:`HessianOperator` and runs :func:`spectrum_of`.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the network (never modified) with ``loss_fn``
            and ``data``.
        loss_fn: Shorthand only: batch-mean (or batch-sum) loss ``loss_fn(outputs, targets) -> scalar`` or a
            loss name.
        data: Shorthand only: a pair ``(X, y)`` or an iterable of ``(X, y)`` batches.
        params: Parameter subset: ``"trainable"``, or tensor or layer names; ``None`` or ``"all"`` for all.
        **options: The spectrum keywords (:class:`SpectrumOptions`: ``n_probes``, ``steps``, ``top_k``,
            ``trace_products``, ``tol``, ``seed``, ``data_description``, ``progress``) and the operator keywords
            (:class:`~landscape.curvature.hessian.OperatorOptions`: ``bn_mode``, the problem's if ``None``,
            with a warning for a train-mode model given as the shorthand; ``micro_batch_size``,
            ``memory_budget``, ``cache``, ``dtype``, ``fast_ops``, ``channels_last``).

    Returns:
        The spectrum.
    """
    o = keyword_values("hessian_spectrum", options, HessianSpectrumOptions, SPECTRUM_DEFAULTS)
    operator = {k: o[k] for k in typed_keywords(OperatorOptions)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op = HessianOperator(problem, loss_fn, data, params, **operator)
    for w in caught:  # re-issued at the caller of hessian_spectrum
        warnings.warn(w.message, w.category, stacklevel=2)
    return spectrum_of(op, **{k: o[k] for k in typed_keywords(SpectrumOptions)})
