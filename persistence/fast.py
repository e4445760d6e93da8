"""Paper-scale speed path of the Persistent Neurons 1-D regression experiment (000 Sec. 3, Fig. 3-5).

The paper trains its ReLU MLP ``R -> 32 -> 32 -> R`` (000 eq. 3) with full-batch gradient descent,
momentum 0.9, lr 0.001 and the mean squared error for 50,000 steps, 100 times from fresh He
initializations (Fig. 4, the re-initialization baseline) and 100 times as one persistent chain
(Fig. 5, Algorithm 1). Through a plain ``nn.Module`` + ``torch.optim`` loop that is well over an hour
on two CPU cores; this module does the same arithmetic in minutes:

* :func:`train_seeds_batched` trains S independent networks as one batched computation: weights
  stacked as ``(S, out, in)`` and ``(S, out)``, a hand-derived forward/backward of batched matmuls.
* :func:`fast_persistent_run` runs Algorithm 1. Its iterations are sequential (each uses every earlier
  converged solution as an anchor), so the speed comes from a fast single-model step: the same
  hand-derived forward/backward plus the penalty gradient of 000 eq. (6),
  ``lambda * c * sum_k sign(<Theta_k^l, theta^l>) Theta_k^l / ||Theta_k^l||^2``, with the anchors of
  each layer stacked into one ``(K, n_l)`` matrix (two small matrix-vector products per layer).

Both run several steps per call of a function compiled with ``torch.compile`` (inductor, C++ wrapper),
falling back to the same function uncompiled (``backend="eager"``) where compilation is unavailable.
The anchor matrices are padded with zero rows to the run's final count, so the compiled function keeps
one shape for the whole chain: a zero row contributes ``|0| = 0`` to the penalty and
``sign(0) * 0 = 0`` to its gradient.

Scope: ``nn.Sequential`` models of ``Linear`` (with bias) and ``ReLU`` layers, ``Linear`` first and
last (:class:`landscape.models.RegressionMLP` of any depth and width), mean-reduced MSE, full-batch
SGD with momentum exactly as ``torch.optim.SGD`` (``buf = mu * buf + g; p -= lr * buf``; no
dampening, Nesterov or weight decay). Full and partial persistent training and the preprint's depth
factor ``|L(w_ini) - L(w_0)|`` (001 eq. 4-5) are supported. Anything else (other models, losses,
optimizers, minibatches): :class:`persistence.PersistentTrainer`.

The paper's two runs (about 2 and 4 CPU-minutes; see ``benchmarks/bench_persistent.py``)::

    x, y = regression_1d()
    net = build_model("regression_mlp", (1,), 1, m=32, init="he", seed=0)
    seeds = train_seeds_batched(net, x, y, range(100), steps=50_000)         # Fig. 4: seeds.final_loss
    chain = fast_persistent_run(net, x, y, iterations=100, steps=50_000, lam=0.01)  # Fig. 5: chain.champion
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.params import ParamLayout, model_at, parameters_to_vector
from landscape.results import Provenance, Result, register_result
from landscape.trajectory import Trajectory
from landscape.validation import InputError, LossKind, check_finite, check_model, normalize_inputs, normalize_targets
from persistence.trainer import PersistentMode, PersistentTrainer, select_champion

__all__ = [
    "Backend",
    "SeedsResult",
    "FastPersistentResult",
    "mlp_widths",
    "vectors_to_stack",
    "stack_to_vectors",
    "he_init_vectors",
    "mlp_loss_and_grad",
    "train_seeds_batched",
    "fast_persistent_run",
]

_threshold_backward = torch.ops.aten.threshold_backward  # relu's backward in one kernel: g where h > 0 else 0


class Backend(str, enum.Enum):
    """How the multi-step function runs: compiled (inductor), eager, or compiled with an eager fallback."""

    AUTO = "auto"
    COMPILED = "compiled"
    EAGER = "eager"


# ----------------------------------------------------------------------------------------- layout
def mlp_widths(model: nn.Module) -> tuple[int, ...]:
    """Widths ``(in, h_1, ..., out)`` of a ``Linear``-``ReLU``-...-``Linear`` ``nn.Sequential``.

    Args:
        model: E.g. ``RegressionMLP(m=32)`` (widths ``(1, 32, 32, 1)``).

    Returns:
        The layer widths; ``len(widths) - 1`` Linear layers.

    Raises:
        TypeError: If the model is not such a stack (names the offending child; use
            :class:`persistence.PersistentTrainer` for other models).
        ValueError: If a Linear has no bias or a parameter is frozen.
    """
    hint = "the fast path supports Sequential(Linear, ReLU, ..., Linear); use persistence.PersistentTrainer"
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential of Linear and ReLU layers, got {type(model).__name__}; {hint}")
    kids = list(model.named_children())
    for i, (name, mod) in enumerate(kids):
        want = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(mod) is not want:
            raise TypeError(f"child {name!r} is {type(mod).__name__} where {want.__name__} is expected; {hint}")
    if not kids or len(kids) % 2 == 0:
        raise TypeError(f"the stack must start and end with a Linear layer; {hint}")
    linears: list[nn.Linear] = [m for _, m in kids[::2]]  # type: ignore[misc]
    for (name, _), lin in zip(kids[::2], linears):
        if lin.bias is None:
            raise ValueError(f"layer {name!r} has no bias; the fast path expects Linear(..., bias=True)")
    if not all(p.requires_grad for p in model.parameters()):
        raise ValueError("every parameter must be trainable (requires_grad=True) for the fast path")
    for a, b in zip(linears[:-1], linears[1:]):
        if a.out_features != b.in_features:
            raise ValueError(f"layer widths do not chain: {a.out_features} -> {b.in_features}")
    return (linears[0].in_features, *(lin.out_features for lin in linears))


def _sizes(widths: Sequence[int]) -> list[tuple[int, int]]:
    return [(o, i) for i, o in zip(widths[:-1], widths[1:])]


def vectors_to_stack(vectors: Tensor, widths: Sequence[int]) -> list[Tensor]:
    """Split flat parameter vectors into stacked per-tensor weights (``ParamLayout`` order of the MLP).

    Args:
        vectors: ``(S, numel)`` (or ``(numel,)``, treated as ``S = 1``), in ``named_parameters()`` order:
            ``fc1.weight, fc1.bias, fc2.weight, ...``.
        widths: ``(in, h_1, ..., out)`` from :func:`mlp_widths`.

    Returns:
        ``[W_1 (S, h_1, in), b_1 (S, h_1), W_2 (S, h_2, h_1), ...]``, new contiguous tensors.

    Raises:
        ValueError: If the vector length does not match the widths.
    """
    mat = vectors[None] if vectors.dim() == 1 else vectors
    numel = sum(o * i + o for o, i in _sizes(widths))
    if mat.dim() != 2 or mat.shape[1] != numel:
        raise ValueError(f"expected vectors (S, {numel}) for widths {tuple(widths)}, got {tuple(vectors.shape)}")
    out, pos, s = [], 0, mat.shape[0]
    for o, i in _sizes(widths):
        out.append(mat[:, pos : pos + o * i].reshape(s, o, i).clone())
        out.append(mat[:, pos + o * i : pos + o * i + o].clone())
        pos += o * i + o
    return out


def stack_to_vectors(stack: Sequence[Tensor]) -> Tensor:
    """Inverse of :func:`vectors_to_stack`: ``[W_1 (S, o, i), b_1 (S, o), ...]`` -> ``(S, numel)``."""
    s = stack[0].shape[0]
    return torch.cat([t.reshape(s, -1) for t in stack], dim=1)


def he_init_vectors(
    seeds: Sequence[int],
    *,
    m: int = 32,
    depth: int = 3,
    in_features: int = 1,
    out_features: int = 1,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """He-initialized ``RegressionMLP`` parameter vectors, one per seed (weights N(0, 2/fan_in), biases 0).

    Row ``j`` equals ``parameters_to_vector(build_model("regression_mlp", (in_features,), out_features,
    m=m, depth=depth, init="he", seed=seeds[j], dtype=dtype))`` bitwise.

    Returns:
        ``(len(seeds), numel)``.
    """
    from landscape.models import build_model

    rows = [
        parameters_to_vector(
            build_model(
                "regression_mlp", (in_features,), out_features, m=m, depth=depth, init="he", seed=int(s), dtype=dtype
            )
        )
        for s in seeds
    ]
    return torch.stack(rows)


# ------------------------------------------------------------------- hand-derived forward/backward
def _forward(ps: Sequence[Tensor], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Batched forward: ``ps`` stacked over S, ``x (N, in)`` shared; returns output (S, N, out) and inputs per layer."""
    n_layers = len(ps) // 2
    hs: list[Tensor] = [x]
    h, z = x, x
    for li in range(n_layers):
        w, b = ps[2 * li], ps[2 * li + 1]
        if li == 0:
            # x is shared by all S networks; with one input feature the layer is an outer product.
            z = (
                torch.addcmul(b[:, None, :], x, w.transpose(1, 2))
                if w.shape[2] == 1
                else (torch.matmul(x, w.transpose(1, 2)) + b[:, None, :])
            )
        else:
            z = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        if li < n_layers - 1:
            h = torch.relu(z)
            hs.append(h)
    return z, hs


def _mse_grads(ps: Sequence[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Mean-squared-error loss (S,) and its gradient for every stacked tensor (hand-derived backprop)."""
    out, hs = _forward(ps, x)
    r = out - y
    loss = r.square().mean((1, 2))
    d = r * (2.0 / (r.shape[1] * r.shape[2]))  # d mean((out - y)^2) / d out
    n_layers = len(ps) // 2
    grads: list[Tensor] = [r] * (2 * n_layers)
    for li in reversed(range(n_layers)):
        grads[2 * li] = torch.matmul(d.transpose(1, 2), hs[li])  # (S, o, N) @ (S or 1, N, i)
        grads[2 * li + 1] = d.sum(1)
        if li > 0:
            d = _threshold_backward(torch.bmm(d, ps[2 * li]), hs[li], 0)
    return loss, grads


def _mse(ps: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of each of the S stacked networks, shape (S,)."""
    return (_forward(ps, x)[0] - y).square().mean((1, 2))


def _penalty(ps: Sequence[Tensor], anchors: Sequence[Tensor], scales: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Persistent penalty (000 eq. 4) (S,) and its eq. (6) gradient per layer (S, n_l).

    ``anchors[l]`` is ``(K, n_l)`` with rows ``Theta_k^l / ||Theta_k^l||^2``; ``scales[l]`` is ``lambda * c`` or 0.
    """
    s = ps[0].shape[0]
    pen = ps[0].new_zeros(s)
    layer_grads = []
    for li, a in enumerate(anchors):
        theta = torch.cat([ps[2 * li].reshape(s, -1), ps[2 * li + 1]], dim=1)  # weight and bias concatenated
        dots = theta @ a.t()  # (S, K): one small matrix-vector product per layer and network
        pen = pen + scales[li] * dots.abs().sum(1)
        layer_grads.append((dots.sign() * scales[li]) @ a)
    return pen, layer_grads


def _add_penalty(
    ps: Sequence[Tensor], grads: list[Tensor], anchors: Sequence[Tensor], scales: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """The penalty (S,) and ``grads`` plus the penalty's gradient, split back into weight and bias."""
    pen, layer_grads = _penalty(ps, anchors, scales)
    grads = list(grads)
    for li, g in enumerate(layer_grads):
        w = ps[2 * li]
        nw = w[0].numel()
        grads[2 * li] = grads[2 * li] + g[:, :nw].reshape(w.shape)
        grads[2 * li + 1] = grads[2 * li + 1] + g[:, nw:]
    return pen, grads


def mlp_loss_and_grad(
    model: nn.Module,
    vectors: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    anchors: Tensor | None = None,
    lam: float = 0.0,
    layers: Sequence[str] | None = None,
    depth_factor: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The hand-derived loss and gradient the fast paths train with, at S points at once.

    ``loss = mean((f(x) - y)^2) + lam * c * sum_k sum_l |<Theta_k^l, theta^l>| / ||Theta_k^l||^2``
    (the penalty as :class:`persistence.PersistentPenalty` with the same arguments). The data term is a
    batched kernel of the package's one mean loss, ``landscape.Problem(model, (x, y), "mse")``: its
    ``loss_and_grad`` at each point is the reference ``tests/test_problem.py`` checks this against.

    Args:
        model: The architecture (:func:`mlp_widths`); never modified.
        vectors: Parameter points ``(S, numel)`` or ``(numel,)``.
        x: Inputs ``(N, in)``.
        y: Targets ``(N, out)``.
        anchors: Previous solutions ``(K, numel)``, or ``None`` for no penalty.
        lam: Penalty strength.
        layers: Layer names to penalize (``None``: all).
        depth_factor: The preprint's ``|L(w_ini) - L(w_0)|``, or ``None``.

    Returns:
        ``(loss (S,), grad (S, numel))`` (no leading S axis when ``vectors`` is 1-D).
    """
    widths = mlp_widths(model)
    layout = ParamLayout.from_model(model)
    dtype = vectors.dtype
    x, y = _check_xy(x, y, widths, dtype, "x, y")
    ps = vectors_to_stack(vectors, widths)
    loss, grads = _mse_grads(ps, x, y)
    if anchors is not None and anchors.shape[0]:
        mats = _anchor_mats(layout, anchors.to(dtype), dtype)
        scale = lam * (1.0 if depth_factor is None else abs(float(depth_factor)))
        scales = _layer_scales(layout, layers, scale, dtype)
        pen, grads = _add_penalty(ps, grads, mats, scales)
        loss = loss + pen
    grad = stack_to_vectors(grads)
    return (loss, grad) if vectors.dim() == 2 else (loss[0], grad[0])


def _anchor_mats(layout: ParamLayout, anchors: Tensor, dtype: torch.dtype, capacity: int | None = None) -> list[Tensor]:
    """Per-layer anchor matrices ``(capacity, n_l)``, rows divided by their squared norm (zero rows padded)."""
    k = anchors.shape[0]
    cap = k if capacity is None else capacity
    mats = []
    for name, specs in layout.layers.items():
        lo, hi = specs[0].start, specs[-1].stop
        block = anchors[:, lo:hi].double()
        sq = (block**2).sum(1)
        if k and bool((sq == 0).any()):
            raise ValueError(f"anchor {int((sq == 0).nonzero()[0])} has all-zero parameters in layer {name!r}")
        mat = torch.zeros(cap, hi - lo, dtype=dtype)
        mat[:k] = (block / sq[:, None]).to(dtype)
        mats.append(mat)
    return mats


def _layer_scales(layout: ParamLayout, layers: Sequence[str] | None, scale: float, dtype: torch.dtype) -> Tensor:
    names = list(layout.layers)
    chosen = names if layers is None else list(layers)
    for n in chosen:
        if n not in names:
            raise ValueError(f"unknown layer {n!r}; the model's layers are {names}")
    return torch.tensor([scale if n in chosen else 0.0 for n in names], dtype=dtype)


def _check_xy(x: Tensor, y: Tensor, widths: Sequence[int], dtype: torch.dtype, what: str) -> tuple[Tensor, Tensor]:
    if x.dim() == 1:
        x = x[:, None]
    if y.dim() == 1:
        y = y[:, None]
    if x.dim() != 2 or x.shape[1] != widths[0] or y.dim() != 2 or y.shape[1] != widths[-1]:
        raise InputError(
            f"{what}: expected inputs (N, {widths[0]}) and targets (N, {widths[-1]}), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} targets (need the same, non-zero number)")
    x, y = normalize_inputs(x, dtype, argname=what), normalize_targets(y, dtype, LossKind.REGRESSION, argname=what)
    check_finite(x, f"{what}: inputs", "Drop or impute those samples.")
    check_finite(y, f"{what}: targets", "Drop or impute those samples.")
    return x.contiguous(), y.contiguous()


# ---------------------------------------------------------------------------- multi-step function
def _make_steps(k: int, lr: float, mu: float, penalty: bool) -> Callable[..., Any]:
    """``k`` full-batch momentum-SGD steps as one function (what ``torch.compile`` unrolls and fuses)."""

    def steps(ps, bufs, x, y, anchors, scales):  # noqa: ANN001, ANN202
        ps, bufs = list(ps), list(bufs)
        losses, pens = [], []
        for _ in range(k):
            loss, grads = _mse_grads(ps, x, y)
            if penalty:
                pen, grads = _add_penalty(ps, grads, anchors, scales)
                pens.append(pen)
            losses.append(loss)
            # torch.optim.SGD(momentum=mu): buf = mu * buf + g (buf = g at step 1, the same as buf = 0), p -= lr * buf
            bufs = [torch.add(b * mu, g) for b, g in zip(bufs, grads)]
            ps = [torch.add(p, b, alpha=-lr) for p, b in zip(ps, bufs)]
        pen_t = torch.stack(pens) if penalty else torch.zeros_like(torch.stack(losses))
        return ps, bufs, torch.stack(losses), pen_t

    return steps


_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}


class _Stepper:
    """Runs ``steps`` momentum-SGD steps in calls of ``k`` (compiled) plus single eager steps for the rest."""

    def __init__(self, backend: Backend, k: int, lr: float, mu: float, penalty: bool) -> None:
        if k < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {k}")
        self.backend = backend
        self.eager = _make_steps(1, lr, mu, penalty)
        self.k = 1 if backend is Backend.EAGER else k
        self.multi = self.eager
        if backend is not Backend.EAGER:
            key = (self.k, lr, mu, penalty)
            if key not in _COMPILED:
                _COMPILED[key] = torch.compile(
                    _make_steps(self.k, lr, mu, penalty), fullgraph=True, dynamic=False, options={"cpp_wrapper": True}
                )
            self.multi = _COMPILED[key]
        self.verified = backend is Backend.EAGER

    def _call_multi(self, *args: Any) -> Any:
        if self.verified:
            return self.multi(*args)
        try:
            # Every configuration compiles the same code object; allow more than dynamo's default 8 variants.
            with torch._dynamo.config.patch(recompile_limit=64):
                out = self.multi(*args)
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back or re-raise with advice
            if self.backend is Backend.COMPILED:
                raise RuntimeError(f"torch.compile failed ({type(e).__name__}: {e}); use backend='eager'") from e
            warnings.warn(f"torch.compile failed ({type(e).__name__}); running eagerly (slower)", stacklevel=3)
            self.multi, self.k = self.eager, 1
            out = self.multi(*args)
        self.verified = True
        return out

    def run(
        self,
        ps: list[Tensor],
        x: Tensor,
        y: Tensor,
        steps: int,
        log_steps: np.ndarray,
        anchors: Sequence[Tensor] = (),
        scales: Tensor | None = None,
        record_every: int | None = None,
        bar: Any = None,
    ) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
        """Train from ``ps`` with fresh zero momentum.

        Returns:
            Final stacked tensors, losses and penalties at ``log_steps`` (S, n_log) (the loss at a step is the
            one the step starts from; at ``steps``, the final point's), and the recorded points, each (S, numel).
        """
        bufs = [torch.zeros_like(p) for p in ps]
        scales = ps[0].new_zeros(len(anchors)) if scales is None else scales
        want = {int(s): j for j, s in enumerate(log_steps)}
        losses = ps[0].new_full((ps[0].shape[0], len(log_steps)), float("nan"))
        pens = torch.zeros_like(losses)
        records = [stack_to_vectors(ps)] if record_every else []
        step = 0
        while step < steps:
            room = steps - step if not record_every else min(steps - step, record_every - step % record_every)
            fn = self._call_multi if room >= self.k else self.eager
            ps, bufs, ls, pn = fn(ps, bufs, x, y, anchors, scales)
            for i in range(ls.shape[0]):  # the first compiled call may have fallen back to one eager step
                j = want.get(step + i)
                if j is not None:
                    losses[:, j] = ls[i]
                    pens[:, j] = pn[i]
            step += ls.shape[0]
            if record_every and step % record_every == 0:
                records.append(stack_to_vectors(ps))
            if bar is not None:
                bar.update(ls.shape[0])
        if steps in want:
            losses[:, want[steps]] = _mse(ps, x, y)
            if len(anchors):
                pens[:, want[steps]] = _penalty(ps, anchors, scales)[0]
        if record_every and steps % record_every:
            records.append(stack_to_vectors(ps))
        return ps, losses, pens, records


# ------------------------------------------------------------------------------------------ results
def _log_steps(steps: int, log_every: int) -> np.ndarray:
    if log_every < 1:
        raise ValueError(f"log_every must be a positive integer, got {log_every}")
    return np.unique(np.append(np.arange(0, steps, log_every), steps)).astype(np.int64)


def _nan_argmin(values: np.ndarray) -> int:
    return int(np.argmin(np.where(np.isnan(values), np.inf, values)))


@register_result
@dataclass(frozen=True, eq=False)
class SeedsResult(Result):
    """The re-initialization baseline: S networks trained independently (000 Fig. 4).

    Attributes:
        widths: Layer widths ``(in, h_1, ..., out)``.
        seeds: The He-initialization seeds, or ``None`` when initial vectors were given.
        initial: Initial parameter vectors ``(S, numel)`` (``named_parameters()`` order of the model).
        final: Trained parameter vectors ``(S, numel)``.
        loss_steps: Steps at which the loss was logged ``(n_log,)``; the last one is ``steps``.
        losses: Training MSE ``(S, n_log)``: at a step, the loss that step starts from; at ``steps``, the
            final point's.
        settings: ``steps``, ``lr``, ``momentum``, ``dtype``, ``backend`` (the one that ran), ``steps_per_call``
            and ``fit_time`` (seconds).
        provenance: Data description and versions.
    """

    _dims = {
        "initial": ("network", "param"),
        "final": ("network", "param"),
        "loss_steps": ("step",),
        "losses": ("network", "step"),
    }
    _coords = {"loss_steps": "step"}
    _thumb = ("losses", "line")

    widths: list[int]
    seeds: list[int] | None
    initial: np.ndarray
    final: np.ndarray
    loss_steps: np.ndarray
    losses: np.ndarray
    settings: dict[str, Any]
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def final_loss(self) -> np.ndarray:
        """Training MSE of every network at its final point, ``(S,)``."""
        return self.losses[:, -1]

    @property
    def best(self) -> int:
        """Index of the network with the lowest final loss (the re-initialization "championship")."""
        return _nan_argmin(self.final_loss)

    def model(self, index: int, template: nn.Module) -> nn.Module:
        """A new model (architecture of ``template``, never modified) at network ``index``'s final weights."""
        return model_at(template, torch.from_numpy(self.final[index]).to(_dtype_of(template)))


@register_result
@dataclass(frozen=True, eq=False)
class FastPersistentResult(Result):
    """A persistent chain (000 Algorithm 1, Fig. 5): iteration 0 is the plain model.

    Attributes:
        widths: Layer widths ``(in, h_1, ..., out)``.
        layer_names: The model's layer names (``ParamLayout.layers``), e.g. ``["fc1", "fc2", "fc3"]``.
        initial: The initial vector ``(numel,)`` every iteration starts from.
        finals: Converged vectors ``(I, numel)``; row ``i`` is an anchor of every later iteration.
        loss_steps: Logged steps ``(n_log,)`` (the last is ``steps``).
        losses: Training MSE without the penalty ``(I, n_log)`` (as :attr:`SeedsResult.losses`).
        penalties: The penalty term ``(I, n_log)`` (0 for iteration 0).
        metrics: Per iteration: ``train_loss`` (MSE at the converged point), ``train_penalty`` and
            ``<name>_loss`` per evaluation set.
        layers: Penalized layer per iteration in partial mode (``None`` in full mode and for iteration 0).
        depth_factor: The preprint's ``|L(w_ini) - L(w_0)|`` when used, else ``None``.
        select_by: The championship metric.
        snapshot_steps: Steps of the recorded points ``(n_rec,)`` (empty without ``record_every``).
        snapshots: Recorded points ``(I, n_rec, numel)`` (``(I, 0, numel)`` without ``record_every``).
        settings: Run settings (``iterations``, ``steps``, ``lam``, ``mode``, ``lr``, ``momentum``, ``seed``,
            ``dtype``, ``backend``, ``steps_per_call``, ``fit_time``, per-iteration ``iteration_times``).
        provenance: Data description and versions.
    """

    _dims = {
        "initial": ("param",),
        "finals": ("iteration", "param"),
        "loss_steps": ("step",),
        "losses": ("iteration", "step"),
        "penalties": ("iteration", "step"),
        "snapshot_steps": ("snapshot_step",),
        "snapshots": ("iteration", "snapshot_step", "param"),
    }
    _coords = {"loss_steps": "step", "snapshot_steps": "snapshot_step"}
    _table = ("iteration", "step")
    _thumb = ("losses", "line")

    widths: list[int]
    layer_names: list[str]
    initial: np.ndarray
    finals: np.ndarray
    loss_steps: np.ndarray
    losses: np.ndarray
    penalties: np.ndarray
    metrics: list[dict[str, float]]
    layers: list[str | None]
    depth_factor: float | None
    select_by: str
    snapshot_steps: np.ndarray
    snapshots: np.ndarray
    settings: dict[str, Any]
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def champion(self) -> int:
        """Index of the championship iteration (best ``select_by``; ties: the first)."""
        return select_champion(self.metrics, self.select_by)

    def model(self, iteration: int, template: nn.Module) -> nn.Module:
        """A new model (architecture of ``template``, never modified) at an iteration's converged weights."""
        return model_at(template, torch.from_numpy(self.finals[iteration]).to(_dtype_of(template)))

    def champion_model(self, template: nn.Module) -> nn.Module:
        """A new model at the championship's converged weights."""
        return self.model(self.champion, template)

    def trajectory(self, iteration: int, template: nn.Module) -> Trajectory:
        """An in-memory :class:`~landscape.trajectory.Trajectory` of one iteration (tagged with it).

        Holds the recorded snapshots, or the initial and final points when none were recorded.
        """
        layout = ParamLayout.from_model(template)
        traj = Trajectory(layout=layout, meta={"persistent_iteration": iteration, "source": "persistence.fast"})
        tags: dict[str, Any] = {
            "persistent_iteration": iteration,
            "lambda": self.settings["lam"],
            "persistent_mode": self.settings["mode"],
        }
        if self.layers[iteration] is not None:
            tags["persistent_layer"] = self.layers[iteration]
        if self.snapshots.shape[1]:
            points, steps = self.snapshots[iteration], self.snapshot_steps
        else:
            points, steps = np.stack([self.initial, self.finals[iteration]]), np.array([0, self.settings["steps"]])
        for j, (vec, st) in enumerate(zip(points, steps)):
            metrics = self.metrics[iteration] if j == len(steps) - 1 else None
            traj.append(torch.from_numpy(vec.copy()), step=int(st), metrics=metrics, tags=tags)
        return traj


def _dtype_of(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None``: leave it)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------- re-initialization
def train_seeds_batched(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    initial: Tensor | Sequence[int],
    *,
    steps: int,
    lr: float = 1e-3,
    momentum: float = 0.9,
    log_every: int = 100,
    backend: Backend | str = Backend.AUTO,
    steps_per_call: int = 4,
    threads: int | None = 1,
    progress: bool = False,
) -> SeedsResult:
    """Train S copies of an MLP from S starting points at once: full-batch MSE, momentum SGD (000 Fig. 4).

    Network ``j`` follows exactly the arithmetic of ``torch.optim.SGD(lr=lr, momentum=momentum)`` on
    ``mse_loss(model(x), y)`` from its own start (up to float rounding); all S run as one batched
    computation. Defaults are the paper's (000 Sec. 3: lr 0.001, momentum 0.9; 50,000 steps).

    Args:
        model: The architecture (:func:`mlp_widths`) and dtype; never modified.
        x: Inputs ``(N, in)`` (or ``(N,)`` for one feature).
        y: Targets ``(N, out)`` (or ``(N,)``).
        initial: Starting vectors ``(S, numel)``, or seeds of a He initialization (:func:`he_init_vectors`;
            needs equal hidden widths, as ``RegressionMLP``).
        steps: Optimizer steps per network.
        lr: Learning rate.
        momentum: Momentum ``mu``.
        log_every: Log every network's loss every this many steps (and at the end).
        backend: ``"auto"`` (compiled, eager if compilation fails), ``"compiled"`` or ``"eager"``.
        steps_per_call: Steps unrolled into one compiled call (compile time grows with it).
        threads: Torch intra-op threads during the run (``None``: unchanged). 1 by default: on two shared cores,
            two threads made these small matrix products up to 5-100x slower whenever other processes ran.
        progress: Show a progress bar over steps.

    Returns:
        The :class:`SeedsResult`.

    Raises:
        TypeError: If ``model`` is not a Linear/ReLU stack.
        ValueError: On mismatched shapes or settings.

    Memory: about ``8 * S * N * max(widths)`` floats of activations.
    """
    from tqdm.auto import tqdm

    backend = parse_option(Backend, backend, "backend")
    widths = mlp_widths(model)
    dtype = _dtype_of(model)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    seeds = None
    if isinstance(initial, Tensor):
        init = initial.detach().to(dtype)
    else:
        seeds = [int(s) for s in initial]
        hidden = set(widths[1:-1])
        if len(hidden) != 1:
            raise ValueError(f"seeds need a RegressionMLP (equal hidden widths), got widths {widths}; pass vectors")
        init = he_init_vectors(
            seeds, m=widths[1], depth=len(widths) - 1, in_features=widths[0], out_features=widths[-1], dtype=dtype
        )
    init = init[None] if init.dim() == 1 else init
    if init.shape[0] == 0:
        raise ValueError("no starting points given")
    x, y = _check_xy(x, y, widths, dtype, "train_seeds_batched")
    log_steps = _log_steps(steps, log_every)
    start = time.perf_counter()
    with _threads(threads), torch.no_grad(), tqdm(total=steps, disable=not progress, desc="seeds", unit="step") as bar:
        stepper = _Stepper(backend, steps_per_call, float(lr), float(momentum), penalty=False)
        ps, losses, _, _ = stepper.run(vectors_to_stack(init, widths), x, y, steps, log_steps, bar=bar)
    settings = {
        "steps": steps,
        "lr": lr,
        "momentum": momentum,
        "dtype": str(dtype).removeprefix("torch."),
        "backend": "eager" if stepper.multi is stepper.eager else "compiled",
        "steps_per_call": stepper.k,
        "fit_time": time.perf_counter() - start,
    }
    return SeedsResult(
        list(widths),
        seeds,
        init.numpy().copy(),
        stack_to_vectors(ps).numpy(),
        log_steps,
        losses.numpy(),
        settings,
        Provenance.here(data=f"x {tuple(x.shape)}, y {tuple(y.shape)}"),
    )


# ------------------------------------------------------------------------------------- persistent
def fast_persistent_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    iterations: int,
    steps: int,
    lam: float,
    lr: float = 1e-3,
    momentum: float = 0.9,
    mode: PersistentMode | str = PersistentMode.FULL,
    layer: str | None = None,
    depth_factor: bool = False,
    seed: int = 0,
    eval_data: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    select_by: str = "train_loss",
    log_every: int = 100,
    record_every: int | None = None,
    backend: Backend | str = Backend.AUTO,
    steps_per_call: int = 8,
    threads: int | None = 1,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> FastPersistentResult:
    """Persistent training (000 Algorithm 1) of an MLP: the fast path of :class:`persistence.PersistentTrainer`.

    Iteration 0 trains the plain model; iteration ``i`` trains from bitwise the same initial weights
    with ``lam * c * sum_{k<i} sum_l |<Theta_k^l, theta^l>| / ||Theta_k^l||^2`` added to the MSE. Same
    arithmetic as ``PersistentTrainer(model, (x, y), mse_loss, SGD(lr, momentum), steps=steps, ...)``
    with full-batch data (up to float rounding), including the partial-mode layer draws of its ``seed``.
    Paper settings (000 Sec. 3, Algorithm 1): ``iterations=100, steps=50_000, lam=0.01``.

    Args:
        model: The initial model (architecture, dtype and the initial weights); never modified.
        x: Inputs ``(N, in)`` (or ``(N,)``).
        y: Targets ``(N, out)`` (or ``(N,)``).
        iterations: Total iterations including the plain one.
        steps: Optimizer steps per iteration.
        lam: Penalty strength lambda.
        lr: Learning rate.
        momentum: Momentum.
        mode: ``"full"`` (all layers, 000 eq. 4) or ``"partial"`` (one layer per iteration, 000 eq. 5).
        layer: Partial mode: a fixed layer name instead of the seeded draw.
        depth_factor: Multiply the penalty by ``|L(w_ini) - L(w_0)|`` (001 eq. 4-5).
        seed: Seed of the partial-mode layer draws (as ``PersistentTrainer``).
        eval_data: Named ``(X, y)`` sets evaluated at each converged point (``<name>_loss``).
        select_by: Championship metric (lowest wins), e.g. ``"train_loss"`` (the paper) or ``"val_loss"``.
        log_every: Log the loss every this many steps (and at the end).
        record_every: Record the parameters every this many steps (best a multiple of ``steps_per_call``).
        backend: ``"auto"``, ``"compiled"`` or ``"eager"`` (see :class:`Backend`).
        steps_per_call: Steps unrolled into one compiled call.
        threads: Torch intra-op threads during the run (``None``: unchanged); see :func:`train_seeds_batched`.
        checkpoint: A ``.npz`` path: the result so far is saved after every iteration, and a rerun with the
            same settings continues after the last finished iteration.
        progress: Show a progress bar over iterations.

    Returns:
        The :class:`FastPersistentResult`.

    Raises:
        TypeError: If ``model`` is not a Linear/ReLU stack (use :class:`persistence.PersistentTrainer`).
        ValueError: On bad settings, or a checkpoint written with other settings.
    """
    from tqdm.auto import tqdm

    backend = parse_option(Backend, backend, "backend")
    mode = parse_option(PersistentMode, mode, "mode")
    widths = mlp_widths(model)
    dtype = _dtype_of(model)
    check_model(model)
    layout = ParamLayout.from_model(model)
    if steps < 0 or iterations < 1:
        raise ValueError(f"need steps >= 0 and iterations >= 1, got steps={steps}, iterations={iterations}")
    x, y = _check_xy(x, y, widths, dtype, "training data")
    evals = {
        name: _check_xy(ex, ey, widths, dtype, f"eval_data[{name!r}]") for name, (ex, ey) in (eval_data or {}).items()
    }
    valid = sorted(f"{name}_loss" for name in {"train", *evals})
    if select_by not in valid:
        raise ValueError(f"select_by must be one of {valid} (name evaluation sets in eval_data), got {select_by!r}")
    # The partial-mode draws are PersistentTrainer's own, so both paths penalize the same layers.
    drawer = PersistentTrainer(
        model,
        (x, y),
        nn.functional.mse_loss,
        "sgd",
        iterations=iterations,
        lam=lam,
        mode=mode,
        layer=layer,
        seed=seed,
        eval_data={"train": (x, y)},
        select_by="train_loss",
        steps=1,
    )
    layers = [drawer.layer_for(i) for i in range(iterations)]
    initial = parameters_to_vector(model)
    log_steps = _log_steps(steps, log_every)
    if record_every is not None and record_every < 1:
        raise ValueError(f"record_every must be a positive integer or None, got {record_every}")
    settings: dict[str, Any] = {
        "iterations": iterations,
        "steps": steps,
        "lam": lam,
        "lr": lr,
        "momentum": momentum,
        "mode": mode.value,
        "layer": layer,
        "depth_factor_used": depth_factor,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
        "record_every": record_every,
        "log_every": log_every,
        "select_by": select_by,
    }
    data_hash = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    fingerprint = {**settings, "iterations": None, "data_sha256": data_hash}
    prov = Provenance.here(seed=seed, data=f"x {tuple(x.shape)}, y {tuple(y.shape)}, {str(dtype)}")
    finals: list[Tensor] = []
    rows: dict[str, list[Any]] = {"losses": [], "penalties": [], "metrics": [], "snapshots": [], "times": []}
    depth = None
    ckpt = None if checkpoint is None else Path(checkpoint).with_suffix(".npz")
    if ckpt is not None and ckpt.exists():
        depth = _resume(ckpt, fingerprint, initial, finals, rows)
    cap = max(iterations - 1, 1)  # anchor rows, padded with zeros: one compiled shape for the whole chain
    stepper = _Stepper(backend, steps_per_call, float(lr), float(momentum), penalty=True)
    start = time.perf_counter()
    with _threads(threads), torch.no_grad():
        for it in tqdm(range(iterations), disable=not progress, desc="persistent", unit="iter"):
            if it < len(finals):
                continue
            t0 = time.perf_counter()
            anchors = _anchor_mats(
                layout, torch.stack(finals) if finals else initial.new_zeros(0, layout.numel), dtype, cap
            )
            c = 1.0 if (depth is None or not depth_factor) else depth
            scales = _layer_scales(layout, None if layers[it] is None else [layers[it]], lam * c, dtype)
            if it == 0:
                scales.zero_()
            ps, ls, pn, recs = stepper.run(
                vectors_to_stack(initial.clone(), widths), x, y, steps, log_steps, anchors, scales, record_every
            )
            final = stack_to_vectors(ps)[0]
            if it == 0 and depth_factor:  # 001 eq. 4: depth from the start to the plain model's final loss
                depth = abs(float(_mse(vectors_to_stack(initial, widths), x, y)[0]) - float(ls[0, -1]))
            metrics = {"train_loss": float(ls[0, -1]), "train_penalty": float(pn[0, -1])}
            for name, (ex, ey) in evals.items():
                metrics[f"{name}_loss"] = float(_mse(ps, ex, ey)[0])
            finals.append(final)
            rows["losses"].append(ls[0].numpy())
            rows["penalties"].append(pn[0].numpy())
            rows["metrics"].append(metrics)
            rows["snapshots"].append(
                torch.stack([r[0] for r in recs]).numpy()
                if recs
                else np.zeros((0, layout.numel), dtype=initial.numpy().dtype)
            )
            rows["times"].append(time.perf_counter() - t0)
            if ckpt is not None:
                _result(
                    widths,
                    layout,
                    initial,
                    finals,
                    rows,
                    layers,
                    depth,
                    select_by,
                    log_steps,
                    record_every,
                    {**settings, "fingerprint": fingerprint},
                    prov,
                ).save(ckpt)
    settings.update(
        backend="eager" if stepper.multi is stepper.eager else "compiled",
        steps_per_call=stepper.k,
        fit_time=time.perf_counter() - start,
    )
    return _result(
        widths, layout, initial, finals, rows, layers, depth, select_by, log_steps, record_every, settings, prov
    )


def _result(
    widths: Sequence[int],
    layout: ParamLayout,
    initial: Tensor,
    finals: list[Tensor],
    rows: Mapping[str, list[Any]],
    layers: list[str | None],
    depth: float | None,
    select_by: str,
    log_steps: np.ndarray,
    record_every: int | None,
    settings: dict[str, Any],
    provenance: Provenance,
) -> FastPersistentResult:
    steps = settings["steps"]
    snap_steps = (
        np.unique(np.append(np.arange(0, steps + 1, record_every), steps))
        if record_every
        else np.zeros(0, dtype=np.int64)
    )
    return FastPersistentResult(
        widths=list(widths),
        layer_names=list(layout.layers),
        initial=initial.numpy().copy(),
        finals=torch.stack(finals).numpy(),
        loss_steps=log_steps,
        losses=np.stack(rows["losses"]),
        penalties=np.stack(rows["penalties"]),
        metrics=list(rows["metrics"]),
        layers=layers[: len(finals)],
        depth_factor=depth,
        select_by=select_by,
        snapshot_steps=snap_steps.astype(np.int64),
        snapshots=np.stack(rows["snapshots"]),
        settings={**settings, "iteration_times": list(rows["times"])},
        provenance=provenance,
    )


def _resume(
    ckpt: Path, fingerprint: Mapping[str, Any], initial: Tensor, finals: list[Tensor], rows: dict[str, list[Any]]
) -> float | None:
    """Load the finished iterations of an interrupted run into ``finals``/``rows``; returns its depth factor."""
    old = FastPersistentResult.load(ckpt)
    if old.settings.get("fingerprint") != dict(fingerprint) or not np.array_equal(old.initial, initial.numpy()):
        raise ValueError(f"{ckpt} holds a persistent run with other settings or data; use another path or delete it")
    finals.extend(torch.from_numpy(f.copy()) for f in old.finals)
    rows["losses"].extend(old.losses)
    rows["penalties"].extend(old.penalties)
    rows["metrics"].extend(old.metrics)
    rows["snapshots"].extend(old.snapshots)
    rows["times"].extend(old.settings.get("iteration_times", []))
    return old.depth_factor
