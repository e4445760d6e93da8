"""Landing in a flat area (damped Newton) and the escape baselines (perturbed GD, NEON) of the Tunnels paper.

"Escaping Flat Areas via Function-Preserving Structural Network Modifications" ("Tunnels"), Sec. 4.1,
4.3 and App. B.1: "For finding the initial flat area we use Newton's Method with the full empirical
Hessian inverse and a step size of 0.1 for 20 steps", then compares its method with perturbed
gradient descent (Jin et al. 2017) and NEON (Xu & Yang 2017), "both also after step 50".

* :func:`newton_flat` runs ``theta <- theta - eta (H + damping)^{-1} g`` with the dense Hessian of the
  full-batch loss (small networks only: ``P x P`` in float64). Newton's method is attracted by every
  critical point, saddles and plateaus included, which is why the paper uses it to land in one. The
  damped inverse is the Tikhonov-regularized ``V diag(l / (l^2 + damping^2)) V^T`` of the eigen
  decomposition ``H = V diag(l) V^T``: it keeps the sign of every curvature (so it still walks *to*
  saddles, unlike ``|H|`` or a positive shift) and stays bounded where ``H`` is singular, as it is on a
  plateau. ``damping=0`` and ``step_size=1`` is the exact Newton step (the minimizer of a quadratic).
* :func:`perturbed_gradient_descent` is Jin et al.'s PGD (Algorithm 2): gradient steps; when the gradient
  norm is at most ``grad_threshold`` and no perturbation happened in the last ``t_thres`` steps, add a
  point drawn uniformly from the ball of radius ``radius``. Their constants (``r``, ``g_thres``, ``t_thres``
  from ``L, rho, epsilon, delta``) are left to the caller. :class:`PerturbedGD` is the same rule as a
  :class:`landscape.train.Callback` (on minibatch gradients: the paper's "noisy SGD" of Table 3).
* :func:`neon_direction` is Xu & Yang's NEON, a first-order extraction of negative curvature: from a random
  ``u_0`` of norm ``radius``, ``u <- u - eta (grad f(x + u) - grad f(x))`` (power iteration on
  ``I - eta H`` through gradient differences). Documented approximation: ``u`` is renormalized to norm
  ``radius`` after each update (normalized power iteration, so ``u`` never leaves the region where the
  quadratic model holds), and negative curvature is reported when the curvature estimate
  ``2 (f(x+u) - f(x) - g.u) / |u|^2`` is below ``-curvature_threshold``. :func:`neon_descent` alternates gradient
  steps with a NEON escape step ``x <- x + alpha s v`` (``s`` the sign that does not increase the first
  -order term) when the gradient is small, and :class:`NEONEscape` does that inside the shared Trainer with
  full-batch gradient differences.

Every function takes the objective as ``f(x) -> scalar`` on a flat float vector (see
:func:`full_batch_objective` for a network) and never modifies the caller's model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.params import model_at, parameter_mask, parameters_to_vector
from landscape.problem import Problem, as_problem
from landscape.train import Callback, StepEvent, Trainer

__all__ = [
    "full_batch_objective",
    "dense_hessian",
    "damped_newton_step",
    "NewtonResult",
    "newton_flat",
    "PathResult",
    "uniform_ball",
    "perturbed_gradient_descent",
    "neon_direction",
    "neon_descent",
    "PerturbedGD",
    "NEONEscape",
]

Objective = Callable[[Tensor], Tensor]


# ============================================================================ objectives and Newton
def full_batch_objective(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    *,
    dtype: torch.dtype | None = None,
    bn_mode: str | None = None,
) -> Objective:
    """The mean loss over a whole dataset as a function of the flat parameter vector: the Problem's.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (never modified; evaluated in
            eval mode with its buffers) with ``data`` and ``loss_fn``.
        data: Shorthand only: a tensor pair ``(X (N, ...), y (N,))`` or an iterable of batches.
        loss_fn: Shorthand only: batch-mean loss ``loss_fn(output, target)`` (or a name).
        dtype: Shorthand only: compute in this dtype (inputs, buffers and frozen parameters are cast; the
            vector passed must then have it too).
        bn_mode: Shorthand only: ``"eval"`` (BatchNorm's running statistics, the default) or ``"train"`` (each
            batch's statistics: the loss a training step descends).

    Returns:
        ``f(theta (P,)) -> scalar``: the example-weighted mean loss, differentiable by ``torch.func``.
    """
    if isinstance(problem, Problem) and dtype is not None and dtype != problem.dtype:
        raise ValueError(f"the problem computes in {problem.dtype}; build it with dtype={dtype} instead")
    return as_problem(problem, data, loss_fn, dtype=dtype, bn_mode=bn_mode).objective()


def dense_hessian(f: Objective, x: Tensor, *, chunk_size: int = 128, progress: bool = False) -> Tensor:
    """The dense Hessian of ``f`` at ``x`` by reverse-over-reverse products with unit vectors, in chunks.

    Reverse over reverse (a vjp of the gradient, its graph built once) rather than forward over reverse:
    forward mode is missing for the backward of some losses (``F.mse_loss`` fails with "ZeroTensors are
    immutable" in torch 2.13, ``F.huber_loss`` is not implemented), while double backward covers them.

    Args:
        f: Scalar function of a flat vector.
        x: Point, shape ``(P,)``.
        chunk_size: Hessian columns computed at once (memory ~ ``chunk_size`` forward passes).
        progress: Show a progress bar over chunks.

    Returns:
        Shape ``(P, P)``, symmetrized.
    """
    x = x.detach()
    p = x.numel()
    vjp = torch.func.vjp(torch.func.grad(f), x)[1]

    def hvp(v: Tensor) -> Tensor:
        return vjp(v)[0]  # v^T H, the row of the symmetric H

    cols = []
    for i in tqdm(range(0, p, chunk_size), disable=not progress, desc="Hessian", leave=False):
        eye = torch.zeros(min(chunk_size, p - i), p, dtype=x.dtype)
        eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1
        cols.append(torch.func.vmap(hvp)(eye))
    h = torch.cat(cols)
    return 0.5 * (h + h.T)


def damped_newton_step(grad: Tensor, hessian: Tensor, *, step_size: float = 1.0, damping: float = 0.0) -> Tensor:
    """The update ``-step_size * V diag(l / (l^2 + damping^2)) V^T grad`` (Tikhonov-damped Newton).

    Args:
        grad: Gradient, shape ``(P,)``.
        hessian: Symmetric Hessian, shape ``(P, P)``.
        step_size: Newton step size (paper, App. B.1: 0.1).
        damping: Regularization of the inverse; 0 gives the pseudo-inverse (exact Newton for invertible H).

    Returns:
        The step, shape ``(P,)``, in ``grad``'s dtype.

    Example:
        >>> H, b = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        >>> x = damped_newton_step(-b, H)  # from 0 on f = x'Hx/2 - b'x, whose gradient at 0 is -b
        >>> bool(torch.allclose(H @ x, b))
        True
    """
    lam, vec = torch.linalg.eigh(hessian.double())
    if damping > 0:
        inv = lam / (lam**2 + damping**2)
    else:
        tol = lam.abs().max() * lam.numel() * torch.finfo(lam.dtype).eps
        inv = torch.where(lam.abs() > tol, 1.0 / lam, torch.zeros_like(lam))
    step = vec @ (inv * (vec.T @ grad.double()))
    return (-step_size * step).to(grad.dtype)


@dataclass
class NewtonResult:
    """What :func:`newton_flat` returns.

    Attributes:
        model: A new model at the final point (the given one is untouched).
        losses: Full-batch loss before each step and at the end, length ``steps + 1``.
        grad_norms: Full-batch gradient norm at the same points.
        min_eigenvalues: Smallest Hessian eigenvalue at each step's start, length ``steps``.
        max_eigenvalues: Largest Hessian eigenvalue at each step's start.
    """

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    min_eigenvalues: list[float] = field(default_factory=list)
    max_eigenvalues: list[float] = field(default_factory=list)


def newton_flat(
    model: Problem | nn.Module,
    data: Any = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    *,
    steps: int = 20,
    step_size: float = 0.1,
    damping: float = 1e-4,
    chunk_size: int = 128,
    max_params: int = 20_000,
    progress: bool = False,
) -> NewtonResult:
    """Damped Newton's method with the full empirical Hessian, to land in a flat area (paper, App. B.1).

    Computed in float64; the returned model has the given model's dtype.

    Args:
        model: A :class:`~landscape.problem.Problem` (its data and loss, computed in float64), or the network
            (not modified) with ``data`` and ``loss_fn``.
        data: Shorthand only: training data, tensor pair or iterable of batches (the whole set is the
            "empirical" Hessian).
        loss_fn: Shorthand only: batch-mean loss.
        steps: Newton steps (paper: 20).
        step_size: Step size (paper: 0.1).
        damping: Tikhonov damping of the inverse, see :func:`damped_newton_step`.
        chunk_size: Hessian columns per vectorized product.
        max_params: Refuse networks with more trainable parameters (the Hessian is ``P x P`` dense).
        progress: Show a progress bar over steps.

    Frozen parameters (``requires_grad=False``) keep their values, as in the package's trainers: the gradient,
    the Hessian and its eigenvalues are those of the trainable parameters.

    Returns:
        A :class:`NewtonResult`.

    Raises:
        ValueError: If the network has more than ``max_params`` parameters.
    """
    if isinstance(model, Problem):
        if data is not None or loss_fn is not None:
            raise TypeError("model is a Problem, which holds its data and loss; pass neither data nor loss_fn")
        prob = model if model.dtype == torch.float64 else _in_float64(model)
        model = prob.model
    else:
        prob = None
    theta0 = parameters_to_vector(model).detach()
    # Frozen parameters (requires_grad=False) stay where they are, as in every trainer of the package: Newton
    # runs on the trainable entries, the others held at their values inside the objective.
    idx = parameter_mask(model, "trainable").nonzero().squeeze(1)
    if idx.numel() > max_params:
        raise ValueError(
            f"the dense Hessian needs P x P memory and the model has P={idx.numel()} trainable parameters > "
            f"max_params={max_params}: use a smaller network or raise max_params"
        )
    full = (prob or as_problem(model, data, loss_fn, dtype=torch.float64)).objective()
    base = theta0.double()
    frozen = idx.numel() < base.numel()
    f = (lambda x: full(base.index_put((idx,), x))) if frozen else full
    theta = base[idx] if frozen else base
    res = NewtonResult(model=model)
    for _ in tqdm(range(steps), disable=not progress, desc="Newton", leave=False):
        loss, g = _value_and_grad(f, theta)
        h = dense_hessian(f, theta, chunk_size=chunk_size)
        lam = torch.linalg.eigvalsh(h)
        res.losses.append(loss)
        res.grad_norms.append(float(g.norm()))
        res.min_eigenvalues.append(float(lam[0]))
        res.max_eigenvalues.append(float(lam[-1]))
        theta = theta + damped_newton_step(g, h, step_size=step_size, damping=damping)
    loss, g = _value_and_grad(f, theta)
    res.losses.append(loss)
    res.grad_norms.append(float(g.norm()))
    res.model = model_at(model, (base.index_put((idx,), theta) if frozen else theta).to(theta0.dtype))
    return res


def _in_float64(p: Problem) -> Problem:
    # Every option that defines the loss: batch_size sets the batches a bn_mode="train" loss normalizes over,
    # loss_form whether a callable is a closure loss(model, batch); device is where it computes.
    kw: dict[str, Any] = {"loss_form": "batch" if p.closure else "outputs", "bn_mode": p.bn_mode, "device": p.device}
    return Problem(p.model, p.data, p.loss_spec, dtype=torch.float64, batch_size=p.batch_size, **kw)


def _value_and_grad(f: Objective, x: Tensor) -> tuple[float, Tensor]:
    g, v = torch.func.grad_and_value(f)(x.detach())
    return float(v), g.detach()


# ============================================================================ escape baselines on f(x)
@dataclass
class PathResult:
    """An optimization path of a baseline.

    Attributes:
        x: Final point, shape ``(P,)``.
        values: ``f`` at every iterate (length ``steps + 1``).
        grad_norms: Gradient norm at every iterate.
        escapes: Steps at which a perturbation / NEON step was applied.
    """

    x: Tensor
    values: list[float]
    grad_norms: list[float]
    escapes: list[int]


def uniform_ball(
    n: int, radius: float, *, dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None
) -> Tensor:
    """A point drawn uniformly from the ``n``-dimensional ball of the given radius, shape ``(n,)``."""
    d = torch.randn(n, dtype=dtype, generator=generator)
    r = torch.rand((), dtype=dtype, generator=generator) ** (1.0 / n)
    return radius * r * d / d.norm()


def perturbed_gradient_descent(
    f: Objective,
    x0: Tensor,
    *,
    lr: float,
    steps: int,
    radius: float,
    grad_threshold: float,
    t_thres: int = 10,
    generator: torch.Generator | None = None,
) -> PathResult:
    """Perturbed gradient descent (Jin et al. 2017, Algorithm 2) on a flat-vector objective.

    Args:
        f: Objective ``f(x (P,)) -> scalar``.
        x0: Start, shape ``(P,)``.
        lr: Step size (``eta = c / L``).
        steps: Gradient steps.
        radius: Perturbation radius ``r``.
        grad_threshold: Perturb when ``|grad| <= g_thres``.
        t_thres: Minimum steps between perturbations.
        generator: Random generator of the perturbations.

    Returns:
        The :class:`PathResult`.
    """

    def perturb(x: Tensor, g: Tensor) -> Tensor:
        return x + uniform_ball(x.numel(), radius, dtype=x.dtype, generator=generator)

    # Jin et al.: the gradient step follows the perturbation, from the perturbed point.
    return _descend_with_escapes(f, x0, lr, steps, grad_threshold, t_thres, perturb, step_after_escape=True)


def neon_direction(
    f: Objective,
    x: Tensor,
    *,
    radius: float = 1e-3,
    eta: float = 0.1,
    iterations: int = 50,
    curvature_threshold: float = 1e-6,
    generator: torch.Generator | None = None,
    grad: Tensor | None = None,
) -> tuple[Tensor | None, float]:
    """NEON (Xu & Yang 2017): a unit direction of negative curvature from gradient differences, or ``None``.

    Args:
        f: Objective of a flat vector.
        x: Point, shape ``(P,)``.
        radius: Norm ``r`` of the probe ``u``.
        eta: Step of the power iteration on ``I - eta H`` (below ``1 / L``).
        iterations: Updates ``T``.
        curvature_threshold: Report negative curvature when the estimate is below ``-curvature_threshold``.
        generator: Random generator of ``u_0``.
        grad: ``grad f(x)`` if already known.

    Returns:
        ``(v (P,) or None, curvature estimate)``, ``v`` of unit norm.
    """
    x = x.detach()
    fx, g0 = _value_and_grad(f, x) if grad is None else (float(f(x)), grad)
    u = torch.randn(x.numel(), dtype=x.dtype, generator=generator)
    u = radius * u / u.norm()
    gradf = torch.func.grad(f)
    for _ in range(iterations):
        u = u - eta * (gradf(x + u).detach() - g0)
        u = radius * u / u.norm().clamp_min(torch.finfo(x.dtype).tiny)
    curv = 2.0 * (float(f(x + u)) - fx - float(g0 @ u)) / radius**2
    return (u / radius if curv < -curvature_threshold else None), curv


def neon_descent(
    f: Objective,
    x0: Tensor,
    *,
    lr: float,
    steps: int,
    grad_threshold: float,
    escape_step: float,
    t_thres: int = 10,
    generator: torch.Generator | None = None,
    radius: float = 1e-3,
    eta: float = 0.1,
    iterations: int = 50,
    curvature_threshold: float = 1e-6,
) -> PathResult:
    """Gradient descent with NEON escape steps when the gradient is small (Xu & Yang's NEON + first-order method).

    Args:
        f: Objective of a flat vector.
        x0: Start, shape ``(P,)``.
        lr: Gradient step size.
        steps: Iterations.
        grad_threshold: Call NEON when ``|grad| <= grad_threshold``.
        escape_step: Length ``alpha`` of the step along the negative-curvature direction.
        t_thres: Minimum steps between NEON calls.
        generator: Random generator.
        radius: NEON's probe radius (see :func:`neon_direction`).
        eta: NEON's step size.
        iterations: NEON's power iterations.
        curvature_threshold: NEON's negative-curvature threshold.

    Returns:
        The :class:`PathResult`.
    """
    neon_kw = {"radius": radius, "eta": eta, "iterations": iterations, "curvature_threshold": curvature_threshold}

    def escape(x: Tensor, g: Tensor) -> Tensor | None:
        d, _ = neon_direction(f, x, generator=generator, grad=g, **neon_kw)
        return None if d is None else x + escape_step * _descent_sign(d, g, generator) * d

    # An escape step replaces that iteration's gradient step.
    return _descend_with_escapes(f, x0, lr, steps, grad_threshold, t_thres, escape, step_after_escape=False)


def _descend_with_escapes(
    f: Objective,
    x0: Tensor,
    lr: float,
    steps: int,
    grad_threshold: float,
    t_thres: int,
    escape: Callable[[Tensor, Tensor], Tensor | None],
    *,
    step_after_escape: bool,
) -> PathResult:
    """Gradient descent that calls ``escape(x, grad)`` when the gradient is small (at most every ``t_thres`` steps).

    ``escape`` returns the escaped point or ``None`` (no escape found). After an escape, either a gradient
    step from the escaped point follows (``step_after_escape``, perturbed GD) or the iteration ends (NEON).
    """
    x = x0.detach().clone()
    values, norms, escapes = [], [], []
    last = -t_thres - 1
    for k in range(steps):
        v, g = _value_and_grad(f, x)
        values.append(v)
        norms.append(float(g.norm()))
        if norms[-1] <= grad_threshold and k - last > t_thres:
            last = k
            moved = escape(x, g)
            if moved is not None:
                x = moved
                escapes.append(k)
                if not step_after_escape:
                    continue
                v, g = _value_and_grad(f, x)
        x = x - lr * g
    v, g = _value_and_grad(f, x)
    values.append(v)
    norms.append(float(g.norm()))
    return PathResult(x, values, norms, escapes)


def _descent_sign(d: Tensor, g: Tensor, generator: torch.Generator | None) -> float:
    dot = float(d @ g)
    if dot != 0.0:
        return -math.copysign(1.0, dot)
    return 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0


# ============================================================================ the same as Trainer callbacks
def _grad_norm(model: nn.Module) -> float:
    sq = sum(float(p.grad.detach().double().pow(2).sum()) for p in model.parameters() if p.grad is not None)
    return math.sqrt(sq)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the trainer's optimizer moves; the baselines perturb these only (frozen ones stay put)."""
    return [p for p in model.parameters() if p.requires_grad]


def _add_to_params(model: nn.Module, delta: Tensor) -> None:
    """Add ``delta`` (shape ``(n,)``, the trainable parameters concatenated in order) to the trainable parameters."""
    with torch.no_grad():
        i = 0
        for p in _trainable(model):
            n = p.numel()
            p.add_(delta[i : i + n].view_as(p).to(p.dtype))
            i += n


class PerturbedGD(Callback):
    """Jin et al.'s perturbation rule inside :class:`landscape.train.Trainer` (the paper's "noisy SGD" baseline).

    From step ``start`` on, after a step whose minibatch gradient norm is at most ``grad_threshold``
    (``None``: always) and at least ``t_thres`` steps after the last perturbation, the trainer's model
    (its own copy) gets a point of the ball of radius ``radius`` added to its trainable parameters (frozen
    ones, which the optimizer does not move, stay put); an event ``{"type": "perturbation"}`` is recorded.

    Args:
        start: First step that may perturb (paper: 50).
        radius: Perturbation radius.
        grad_threshold: Gradient-norm threshold (``None``: perturb every ``t_thres`` steps).
        t_thres: Minimum steps between perturbations.
        seed: Seed of the perturbations.

    Attributes:
        steps_: Steps at which a perturbation was applied.
    """

    def __init__(
        self, start: int, radius: float, grad_threshold: float | None = None, t_thres: int = 10, seed: int = 0
    ) -> None:
        self.start, self.radius, self.grad_threshold, self.t_thres, self.seed = (
            start,
            radius,
            grad_threshold,
            t_thres,
            seed,
        )
        self.steps_: list[int] = []

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self.steps_ = []
        self._gen = torch.Generator().manual_seed(self.seed)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        if event.step < self.start or (self.steps_ and event.step - self.steps_[-1] < self.t_thres):
            return
        if self.grad_threshold is not None and _grad_norm(trainer.model) > self.grad_threshold:
            return
        n = sum(p.numel() for p in _trainable(trainer.model))
        _add_to_params(trainer.model, uniform_ball(n, self.radius, generator=self._gen))
        self.steps_.append(event.step)
        trainer.add_event({"type": "perturbation", "radius": self.radius})


class NEONEscape(Callback):
    """NEON escape steps inside :class:`landscape.train.Trainer`, with full-batch gradient differences.

    From step ``start`` on, at most every ``t_thres`` steps and when the minibatch gradient norm is at
    most ``grad_threshold`` (``None``: always), :func:`neon_direction` runs on the mean loss over
    ``data`` at the current weights, as a function of the trainable parameters (frozen ones stay put); if
    it finds negative curvature, the weights move by ``escape_step`` along it (sign: not increasing the
    first-order term) and an event ``{"type": "neon"}`` is recorded.

    Args:
        start: First step (paper: 50).
        data: Data of the objective (tensor pair or batches), e.g. the training set or a subset.
        loss_fn: Batch-mean loss (default: the trainer's).
        escape_step: Step length along the direction.
        grad_threshold: Gradient-norm threshold (``None``: always try).
        t_thres: Minimum steps between NEON calls.
        seed: Seed of the probes.
        radius: NEON's probe radius (see :func:`neon_direction`).
        eta: NEON's step size.
        iterations: NEON's power iterations.
        curvature_threshold: NEON's negative-curvature threshold.
        bn_mode: How BatchNorm layers compute the objective: ``"eval"`` (running statistics) or ``"train"``
            (each batch's statistics, as the optimizer's steps see them; pass ``data`` as batches of the
            training minibatch size then).

    Attributes:
        steps_: Steps at which an escape step was taken.
        curvatures_: ``(step, curvature estimate)`` of every call.

    Raises:
        ValueError: On an unknown ``bn_mode``.
    """

    def __init__(
        self,
        start: int,
        data: Any,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        *,
        escape_step: float = 0.5,
        grad_threshold: float | None = None,
        t_thres: int = 10,
        seed: int = 0,
        radius: float = 1e-3,
        eta: float = 0.1,
        iterations: int = 50,
        curvature_threshold: float = 1e-6,
        bn_mode: str = "eval",
    ) -> None:
        self.start, self.data, self.loss_fn, self.escape_step = start, data, loss_fn, escape_step
        if bn_mode not in ("eval", "train"):
            raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
        self.bn_mode = bn_mode
        self.grad_threshold, self.t_thres, self.seed = grad_threshold, t_thres, seed
        self.neon_kw = {
            "radius": radius,
            "eta": eta,
            "iterations": iterations,
            "curvature_threshold": curvature_threshold,
        }
        self.steps_: list[int] = []
        self.curvatures_: list[tuple[int, float]] = []

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self.steps_, self.curvatures_ = [], []
        self._gen = torch.Generator().manual_seed(self.seed)
        self._last = -(10**9)

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        if event.step < self.start or event.step - self._last < self.t_thres:
            return
        if self.grad_threshold is not None and _grad_norm(trainer.model) > self.grad_threshold:
            return
        self._last = event.step
        model = trainer.model
        f = full_batch_objective(model, self.data, self.loss_fn or trainer.loss_fn, bn_mode=self.bn_mode)
        x = parameters_to_vector(model).detach()
        mask = parameter_mask(model, "trainable")
        if not bool(mask.all()):  # search over the trainable parameters only, the frozen ones held at their values
            full, idx = x, mask.nonzero().squeeze(1)
            f_all = f

            def f(xt: Tensor) -> Tensor:
                return f_all(full.index_put((idx,), xt))

            x = full[idx]
        _, g = _value_and_grad(f, x)
        d, curv = neon_direction(f, x, generator=self._gen, grad=g, **self.neon_kw)
        self.curvatures_.append((event.step, curv))
        if d is not None:
            _add_to_params(model, self.escape_step * _descent_sign(d, g, self._gen) * d)
            self.steps_.append(event.step)
            trainer.add_event({"type": "neon", "curvature": curv})
