"""Sharpness of a point in weight space: worst-case, average-case, adaptive and m-sharpness.

All measures are loss *increases* under a perturbation ``delta`` of the parameters ``theta``, with the
perturbation written as ``delta = c * u`` (elementwise) for a scale vector ``c`` and ``u`` in a ball or
drawn at random:

* plain: ``c = 1``;
* adaptive, elementwise: ``c = |theta| + eta`` (Kwon et al. 2021, *ASAM*, ICML, eq. 5 with
  ``T_w = |w|``; Andriushchenko et al. 2023, *A Modern Look at the Relationship between Sharpness and
  Generalization*, ICML, §2);
* adaptive, filter-wise: ``c`` is the norm of the filter (output unit) each weight belongs to, ``|theta_i|``
  for vector tensors (biases, normalization parameters), plus ``eta`` (Kwon et al. 2021, filter-wise
  ``T_w``).

With ``eta = 0`` adaptive sharpness is invariant to the rescaling of a ReLU network that multiplies one
layer's weights and bias by ``a > 0`` and divides the next layer's weights by ``a`` (the function, the loss
and the perturbed losses are unchanged); plain sharpness is not (Dinh et al. 2017). ASAM trains with
``eta = 0.01``, which breaks the exact invariance.

The loss is the mean over the whole data (batches weighted by size; ``loss_fn`` must return the batch
mean), evaluated with BatchNorm in eval mode (running statistics) and Dropout off, at ``theta`` taken from
the model; the model is never modified (everything runs through ``functional_call`` on copies).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape._batch import Batch, split_batch
from landscape._options import keyword_values, parse_option, shows_keywords
from landscape.curvature.options import (
    SHARPNESS_DEFAULTS,
    Adaptive,
    AscentOptions,
    Distribution,
    Norm,
    PerturbationOptions,
)
from landscape.evaluate.points import evaluate_points
from landscape.params import ParamLayout, parameter_mask, parameters_to_vector
from landscape.problem import Problem, as_problem
from landscape.results import Provenance, Result, register_result

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "SharpnessResult",
    "perturbation_scale",
    "worst_case_sharpness",
    "average_sharpness",
    "m_sharpness",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
DataLike = Any  # a pair (X, y) or an iterable of (X, y) batches


@register_result
@dataclasses.dataclass(frozen=True, eq=False)
class SharpnessResult(Result):
    """A sharpness measurement.

    Attributes:
        measure: ``"worst_case"``, ``"average_case"`` or ``"m_sharpness"``.
        value: The sharpness: the achieved (worst case: the largest found, a lower bound of the maximum)
            or mean loss increase ``L(theta + delta) - L(theta)``.
        stderr: Standard error of ``value`` (over Monte Carlo samples, or over batches for m-sharpness;
            0 for worst case on the whole data).
        radius: ``rho``: ball radius of ``u``, or the Gaussian standard deviation per coordinate.
        norm: ``"l2"`` or ``"linf"`` (worst case), ``"gaussian"`` or ``"sphere"`` (average case).
        adaptive: ``"none"``, ``"elementwise"`` or ``"filter"``.
        eta: Offset added to the adaptive scale.
        steps: Gradient-ascent steps per restart (0 for average case).
        restarts: Random restarts (per batch for m-sharpness).
        n_samples: Monte Carlo samples (average case).
        m: Batch size of m-sharpness (0: the whole data).
        base_loss: ``L(theta)`` on the whole data.
        values: Loss increases per restart (worst case), per sample (average case) or per batch
            (m-sharpness), shape ``(r,)``.
        loss_evaluations: Loss evaluations over the whole data equivalent (with a gradient for ascent steps).
        n_params: Number of perturbed parameters.
        provenance: Seed, data and options.
    """

    _dims = {"values": ("sample",)}
    _table = ("sample",)

    measure: str
    value: float
    stderr: float
    radius: float
    norm: str
    adaptive: str
    eta: float
    steps: int
    restarts: int
    n_samples: int
    m: int
    base_loss: float
    values: np.ndarray
    loss_evaluations: float
    n_params: int
    provenance: Provenance = dataclasses.field(default_factory=Provenance)


# =========================================================================== the objective
class _Objective:
    """``u -> L(theta + c * u)`` (and its gradient) for the problem's ``theta``; never writes the model.

    The mean over the data (or over given batches) is the problem's: batch losses summed over samples, over
    the sample count.
    """

    def __init__(self, problem: Problem, params: str | Sequence[str], adaptive: Adaptive, eta: float) -> None:
        self.problem = problem
        self.batches = list(problem.batches())
        self.model = problem.model
        self.layout = problem.layout
        self.theta = problem.theta0
        self.index = parameter_mask(self.model, params, self.layout).nonzero().flatten()
        scale = perturbation_scale(self.model, adaptive, eta=eta, layout=self.layout)
        self.scale = scale[self.index].to(self.theta.dtype)
        self.n = int(self.index.numel())
        self.n_samples = problem.n_samples
        self.evaluations = 0.0  # in units of one pass over the whole data

    def full(self, u: Tensor) -> Tensor:
        """``theta + c * u`` as a full parameter vector ``(numel,)`` (differentiable in ``u``)."""
        return self.theta.index_add(0, self.index, self.scale * u)

    def __call__(self, u: Tensor, batches: list[Any] | None = None, grad: bool = False) -> tuple[float, Tensor | None]:
        """Mean loss over ``batches`` (default all data) at ``u``, and optionally its gradient in ``u``."""
        batches = self.batches if batches is None else batches
        u = u.detach().clone().requires_grad_(grad)
        value, count, g = 0.0, 0.0, torch.zeros_like(u) if grad else None
        with torch.enable_grad() if grad else torch.no_grad():
            fm = self.problem.functional(self.full(u))
            for b in batches:
                t, c = self.problem.batch_terms(fm, b)
                if g is not None:  # grad
                    (gb,) = torch.autograd.grad(t, u, retain_graph=True, allow_unused=True)
                    if gb is not None:
                        g += gb
                value += float(t.detach())
                count += c
        self.evaluations += sum(b.size for b in batches) / self.n_samples
        return value / count, (g / count if g is not None else None)


def _objective(
    problem: Problem | nn.Module, loss_fn: Any, data: Any, params: Any, adaptive: Adaptive, eta: float
) -> _Objective:
    return _Objective(as_problem(problem, data, loss_fn), params, adaptive, eta)


def perturbation_scale(
    model: nn.Module, adaptive: Adaptive | str = Adaptive.NONE, *, eta: float = 0.0, layout: ParamLayout | None = None
) -> Tensor:
    """The scale ``c`` of adaptive perturbations ``delta = c * u``, one entry per parameter.

    ``"none"``: ones; ``"elementwise"``: ``|theta| + eta`` (Kwon et al. 2021, ASAM); ``"filter"``: for a tensor
    with a filter axis (weights of linear and convolutional layers), the L2 norm of the filter (output unit)
    each entry belongs to, for vector tensors ``|theta|``; plus ``eta``.

    Args:
        model: The network (only read).
        adaptive: ``"none"``, ``"elementwise"`` or ``"filter"``.
        eta: Offset added to the adaptive scales (ASAM's ``eta``; 0 keeps the rescaling invariance).
        layout: Precomputed ``ParamLayout.from_model(model)``.

    Returns:
        Shape ``(numel,)`` in the parameters' dtype, in the layout of :func:`landscape.parameters_to_vector`.
    """
    adaptive = parse_option(Adaptive, adaptive, "adaptive option")
    layout = layout or ParamLayout.from_model(model)
    theta = parameters_to_vector(model).detach()
    if adaptive is Adaptive.NONE:
        return torch.ones_like(theta)
    if adaptive is Adaptive.ELEMENTWISE:
        return theta.abs() + eta
    parts = []
    for s in layout.specs:
        t = theta[s.slice].view(s.shape)
        if s.filter_axis is None:
            parts.append(t.abs().reshape(-1))
            continue
        if s.groups != 1:  # a grouped transposed convolution's filters are not slices along one axis
            parts.append(s.unfilter(torch.linalg.vector_norm(s.filters(t), dim=1, keepdim=True)).reshape(-1))
            continue
        dims = [d for d in range(t.dim()) if d != s.filter_axis]
        parts.append(torch.linalg.vector_norm(t, dim=dims, keepdim=True).expand_as(t).reshape(-1))
    return torch.cat(parts) + eta


def _provenance(obj: _Objective, seed: int, data_description: str, **extra: Any) -> Provenance:
    return Provenance.here(
        seed=seed,
        data=data_description or obj.problem.description,
        model=type(obj.model).__name__,
        dtype=str(obj.theta.dtype),
        bn_mode=obj.problem.bn_mode,
        loss=obj.problem.loss_name,
        **extra,
    )


# =========================================================================== worst case
def _project(u: Tensor, norm: Norm, radius: float) -> Tensor:
    if norm is Norm.LINF:
        return u.clamp(-radius, radius)
    r = float(u.norm())
    return u * (radius / r) if r > radius else u


def _random_start(n: int, norm: Norm, radius: float, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    if norm is Norm.LINF:
        return (torch.rand(n, generator=gen, dtype=dtype) * 2 - 1) * radius
    z = torch.randn(n, generator=gen, dtype=dtype)
    return z * (radius / z.norm())  # on the sphere: a maximum over the ball of a convex part lies there


@dataclasses.dataclass(frozen=True)
class _Ball:
    """Settings of projected gradient ascent in the ball ``||u||_p <= radius`` (parsed and checked)."""

    norm: Norm
    adaptive: Adaptive
    radius: float
    eta: float
    steps: int
    restarts: int
    step_size: float


def _ball(
    norm: Norm | str, adaptive: Adaptive | str, radius: float, eta: float, steps: int, restarts: int, step_size: float
) -> _Ball:
    norm, adaptive = parse_option(Norm, norm, "norm"), parse_option(Adaptive, adaptive, "adaptive option")
    _check(radius, steps, restarts)
    return _Ball(norm, adaptive, radius, eta, steps, restarts, step_size)


def _ascent(
    obj: _Objective, batches: list[Batch] | None, base: float, ball: _Ball, gen: torch.Generator, bar: Any
) -> np.ndarray:
    """Best loss increase found by each restart of projected gradient ascent, shape ``(restarts,)``."""
    norm, radius, steps, restarts, step_size = ball.norm, ball.radius, ball.steps, ball.restarts, ball.step_size
    best = np.full(restarts, -math.inf)
    for r in range(restarts):
        u = _random_start(obj.n, norm, radius, gen, obj.theta.dtype)
        value, g = obj(u, batches, grad=steps > 0)
        best[r] = value - base
        alpha = step_size
        for step in range(steps):
            assert g is not None
            gn = float(g.norm())
            if gn == 0 or not math.isfinite(gn):
                break
            # Normalized steps (L2) or sign steps (L-inf, the steepest ascent direction of that norm).
            move = g / gn if norm is Norm.L2 else g.sign()
            u_new = _project(u + alpha * radius * move, norm, radius)
            # the last point's gradient would take no step: its loss alone (one backward pass fewer per restart)
            new, g_new = obj(u_new, batches, grad=step < steps - 1)
            if new < value:  # overshot: halve the step (from the new point; the best is kept anyway)
                alpha /= 2
            u, value, g = u_new, new, g_new
            best[r] = max(best[r], value - base)
            bar.update(1)
    return best


@shows_keywords(AscentOptions, SHARPNESS_DEFAULTS)
def worst_case_sharpness(
    problem: Problem | nn.Module,
    loss_fn: LossFn | str | None = None,
    data: DataLike = None,
    *,
    radius: float,
    base_loss: float | None = None,
    **options: Unpack[AscentOptions],
) -> SharpnessResult:
    """Worst-case (epsilon-) sharpness by projected gradient ascent.

    ``S(rho) = max_{||u||_p <= rho} L(theta + c * u) - L(theta)`` with ``p`` 2 or infinity and ``c`` the
    adaptive scale (Keskar et al. 2017, *On Large-Batch Training for Deep Learning*, ICLR, eq. 4, for the
    L-infinity box; Foret et al. 2021, *Sharpness-Aware Minimization*, ICLR, eq. 1, for the L2 ball;
    Kwon et al. 2021, ASAM, for the adaptive ball; Andriushchenko et al. 2023, §2). At a minimum of a
    quadratic loss with Hessian ``H`` the L2 value is ``rho^2 lambda_max(H) / 2``.

    Each restart starts at a random point of the ball's boundary (L2) or of the box (L-infinity) and takes
    ``steps`` steps ``u <- proj(u + alpha rho g / ||g||)`` (L2) or ``proj(u + alpha rho sign(g))``
    (L-infinity), ``g`` the gradient in ``u``; ``alpha`` starts at ``step_size`` and halves whenever a step
    lowered the loss. The value is the largest increase seen by any restart: a lower bound of the maximum.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the network (never modified) with ``loss_fn`` and
            ``data``.
        loss_fn: Shorthand only: batch-mean loss ``loss_fn(outputs, targets) -> scalar`` (or a name, a closure).
        data: Shorthand only: a pair ``(X, y)`` or an iterable of batches.
        radius: ``rho`` (> 0).
        base_loss: ``L(theta)`` on the whole data when already known (another measure's ``base_loss`` at the same
            point, data and loss): used as given, the increases are measured from it, instead of one more pass.
        **options: The perturbation and ascent keywords (:class:`AscentOptions`): ``norm``, ``steps``,
            ``restarts``, ``step_size``, ``adaptive``, ``eta``, ``params``, ``seed`` (of the starting points),
            ``data_description``, ``progress`` (over ascent steps).

    Returns:
        The result; ``values`` holds the best increase of each restart, ``(restarts,)``.

    Raises:
        ValueError: On a non-positive radius, ``steps < 0``, ``restarts < 1`` or unknown options.
        InputError: On invalid data or weights (see :mod:`landscape.validation`).
    """
    o = keyword_values("worst_case_sharpness", options, AscentOptions, SHARPNESS_DEFAULTS)
    ball = _ball(o["norm"], o["adaptive"], radius, o["eta"], o["steps"], o["restarts"], o["step_size"])
    obj = _objective(problem, loss_fn, data, o["params"], ball.adaptive, o["eta"])
    gen = torch.Generator().manual_seed(o["seed"])
    return _ball_sharpness(
        obj, ball, gen, base=base_loss, seed=o["seed"], data_description=o["data_description"], progress=o["progress"]
    )


def _ball_sharpness(
    obj: _Objective,
    ball: _Ball,
    gen: torch.Generator,
    batches: Iterable[list[Batch]] | None = None,
    *,
    m: int = 0,
    count: int = 0,
    base: float | None = None,
    seed: int,
    data_description: str,
    progress: bool,
) -> SharpnessResult:
    """Worst-case sharpness on the whole data, or m-sharpness on ``count`` ``batches`` of ``m`` samples.

    On the whole data (``batches=None``) ``values`` holds each restart's best increase and the sharpness is
    their maximum; on batches, ``values`` holds each batch's increase over its own base loss (the maximum
    over restarts) and the sharpness is their mean, with its standard error. ``base``: ``L(theta)`` on the whole
    data if known (else computed).
    """
    if base is None:
        base, _ = obj(torch.zeros(obj.n, dtype=obj.theta.dtype))
    extra: dict[str, Any] = {"step_size": ball.step_size}
    if batches is None:
        with tqdm(
            total=ball.steps * ball.restarts, desc="worst-case sharpness", disable=not progress, leave=False
        ) as bar:
            values = _ascent(obj, None, base, ball, gen, bar)
        value, stderr = float(values.max()), 0.0
    else:
        zero = torch.zeros(obj.n, dtype=obj.theta.dtype)
        values = np.zeros(count)
        for i, batch in enumerate(tqdm(batches, total=count, desc="m-sharpness", disable=not progress, leave=False)):
            batch_base, _ = obj(zero, batch)
            values[i] = _ascent(obj, batch, batch_base, ball, gen, _NoBar()).max()
        value = float(values.mean())
        stderr = float(values.std(ddof=1) / math.sqrt(count)) if count > 1 else 0.0
        extra["n_batches"] = count
    return SharpnessResult(
        measure="m_sharpness" if batches is not None else "worst_case",
        value=value,
        stderr=stderr,
        radius=float(ball.radius),
        norm=ball.norm.value,
        adaptive=ball.adaptive.value,
        eta=float(ball.eta),
        steps=int(ball.steps),
        restarts=int(ball.restarts),
        n_samples=0,
        m=int(m),
        base_loss=base,
        values=values,
        loss_evaluations=obj.evaluations,
        n_params=obj.n,
        provenance=_provenance(obj, seed, data_description, **extra),
    )


def _check(radius: float, steps: int, restarts: int) -> None:
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")


# =========================================================================== average case
@shows_keywords(PerturbationOptions, SHARPNESS_DEFAULTS)
def average_sharpness(
    problem: Problem | nn.Module,
    loss_fn: LossFn | str | None = None,
    data: DataLike = None,
    *,
    radius: float,
    distribution: Distribution | str = Distribution.GAUSSIAN,
    n_samples: int = 100,
    **options: Unpack[PerturbationOptions],
) -> SharpnessResult:
    """Average-case sharpness by Monte Carlo, with its standard error.

    ``S_avg(rho) = E_u [L(theta + c * u)] - L(theta)`` with ``u ~ N(0, rho^2 I)`` (``"gaussian"``) or
    ``u`` uniform on the sphere ``||u||_2 = rho`` (``"sphere"``), ``c`` the adaptive scale (Andriushchenko
    et al. 2023, §2, average-case sharpness; Keskar et al. 2017 and Jiang et al. 2020 for its use as a
    generalization measure). For a quadratic loss with Hessian ``H`` (in ``u``) it is ``rho^2 tr(H) / 2``
    (Gaussian) or ``rho^2 tr(H) / (2 n)`` (sphere, ``n`` parameters), at any point.

    Losses at the perturbed points go through :func:`landscape.evaluate_points` (the batched engine).

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the network (never modified) with ``loss_fn`` and
            ``data``.
        loss_fn: Shorthand only: batch-mean loss.
        data: Shorthand only: a pair ``(X, y)`` or an iterable of batches.
        radius: Gaussian standard deviation per coordinate, or the sphere's radius (> 0).
        distribution: ``"gaussian"`` or ``"sphere"``.
        n_samples: Monte Carlo samples (at least 2, for the standard error).
        **options: The perturbation keywords (:class:`PerturbationOptions`): ``adaptive``, ``eta``,
            ``params``, ``seed`` (of the perturbations), ``data_description``, ``progress`` (over samples).

    Returns:
        The result; ``values`` holds the increase of every sample, ``(n_samples,)``, and ``stderr`` their
        standard deviation over ``sqrt(n_samples)``.

    Raises:
        ValueError: On a non-positive radius, fewer than 2 samples or unknown options.
        InputError: On invalid data or weights.
    """
    o = keyword_values("average_sharpness", options, PerturbationOptions, SHARPNESS_DEFAULTS)
    eta, seed = o["eta"], o["seed"]
    distribution = parse_option(Distribution, distribution, "distribution")
    adaptive = parse_option(Adaptive, o["adaptive"], "adaptive option")
    _check(radius, 0, 1)
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 (for a standard error), got {n_samples}")
    obj = _objective(problem, loss_fn, data, o["params"], adaptive, eta)
    gen = torch.Generator().manual_seed(seed)

    def points() -> Iterator[Tensor]:  # streamed: one vector at a time, base point first
        yield obj.theta
        for _ in range(n_samples):
            z = torch.randn(obj.n, generator=gen, dtype=obj.theta.dtype)
            u = z * radius if distribution is Distribution.GAUSSIAN else z * (radius / z.norm())
            yield obj.full(u)

    losses = evaluate_points(obj.problem, points(), metrics=("loss",), progress=o["progress"])["loss"]
    base, values = float(losses[0]), np.asarray(losses[1:], dtype=np.float64) - float(losses[0])
    return SharpnessResult(
        measure="average_case",
        value=float(values.mean()),
        stderr=float(values.std(ddof=1) / math.sqrt(n_samples)),
        radius=float(radius),
        norm=distribution.value,
        adaptive=adaptive.value,
        eta=float(eta),
        steps=0,
        restarts=0,
        n_samples=int(n_samples),
        m=0,
        base_loss=base,
        values=values,
        loss_evaluations=float(n_samples + 1),
        n_params=obj.n,
        provenance=_provenance(obj, seed, o["data_description"]),
    )


# =========================================================================== m-sharpness
@shows_keywords(AscentOptions, SHARPNESS_DEFAULTS)
def m_sharpness(
    problem: Problem | nn.Module,
    loss_fn: LossFn | str | None = None,
    data: DataLike = None,
    *,
    m: int,
    radius: float,
    n_batches: int | None = None,
    base_loss: float | None = None,
    **options: Unpack[AscentOptions],
) -> SharpnessResult:
    """m-sharpness: worst-case sharpness of batches of ``m`` samples, averaged over batches.

    ``S_m(rho) = mean_B [max_{||u||_p <= rho} L_B(theta + c * u) - L_B(theta)]`` over disjoint batches
    ``B`` of ``m`` samples drawn by a random permutation (Foret et al. 2021, SAM, §4.1 "m-sharpness";
    Andriushchenko et al. 2023, §2, who find its correlation with generalization strongest at small
    ``m``). Each batch's maximum is found as in :func:`worst_case_sharpness`; with ``m`` equal to the
    data size it is that function's value.

    Args:
        problem: A :class:`~landscape.problem.Problem` with ``(X, y)`` tensor batches, or the network (never
            modified) with ``loss_fn`` and ``data``.
        loss_fn: Shorthand only: batch-mean loss.
        data: Shorthand only: a pair ``(X, y)`` or an iterable of ``(X, y)`` batches (pooled, then re-split).
        m: Batch size (samples left over after the last full batch are not used).
        radius: ``rho`` (> 0).
        n_batches: Use only this many batches (default all ``N // m``).
        base_loss: ``L(theta)`` on the whole data when already known (another measure's ``base_loss`` at the same
            point, data and loss): reported as the result's ``base_loss`` instead of one more pass (each batch's own
            base loss is computed as before).
        **options: The perturbation and ascent keywords, as for :func:`worst_case_sharpness` (``steps`` and
            ``restarts`` per batch; ``seed`` of the permutation and the starting points; ``progress`` over
            batches).

    Returns:
        The result; ``values`` holds each batch's increase, ``(n_batches,)``, ``stderr`` their standard error.

    Raises:
        ValueError: If ``m`` is not in ``[1, N]``, on a non-positive radius, or unknown options.
        InputError: On invalid data or weights.
    """
    o = keyword_values("m_sharpness", options, AscentOptions, SHARPNESS_DEFAULTS)
    ball = _ball(o["norm"], o["adaptive"], radius, o["eta"], o["steps"], o["restarts"], o["step_size"])
    obj = _objective(problem, loss_fn, data, o["params"], ball.adaptive, o["eta"])
    if not 1 <= m <= obj.n_samples:
        raise ValueError(f"m must be between 1 and the number of samples {obj.n_samples}, got {m}")
    pairs = (
        [(b.inputs[0], b.targets) for b in obj.batches if b.targets is not None]
        if all(len(b.inputs) == 1 and not b.kwargs and b.targets is not None for b in obj.batches)
        else None
    )
    if pairs is None or obj.problem.closure:
        raise ValueError("m-sharpness re-splits the data: it needs (X, y) tensor batches and an (outputs, y) loss")
    if len({(X.shape[1:], y.shape[1:]) for X, y in pairs}) != 1:
        raise ValueError("m-sharpness re-splits the data: every batch must have the same sample shapes")
    X = torch.cat([b[0] for b in pairs])
    y = torch.cat([b[1] for b in pairs])
    gen = torch.Generator().manual_seed(o["seed"])
    perm = torch.randperm(len(y), generator=gen)
    count = len(y) // m if n_batches is None else min(int(n_batches), len(y) // m)
    if count < 1:
        raise ValueError(f"n_batches must be at least 1, got {n_batches}")
    # one batch at a time, made when the loop reaches it
    batches = ([split_batch((X[idx], y[idx]), i)] for i, idx in enumerate(perm[: count * m].split(m)))
    return _ball_sharpness(
        obj,
        ball,
        gen,
        batches,
        m=m,
        count=count,
        base=base_loss,
        seed=o["seed"],
        data_description=o["data_description"],
        progress=o["progress"],
    )


class _NoBar:
    def update(self, _: int) -> None:
        pass
