"""The Linear/ReLU MLP as stacked tensors: its layout and a hand-derived batched loss and gradient.

The fast paths of Persistent Neurons (:mod:`persistence.fast`, the ``"batched"`` engine of
:class:`persistence.PersistentTrainer`) train ``nn.Sequential(Linear, ReLU, ..., Linear)`` models
(:class:`landscape.models.RegressionMLP`) on the mean squared error without autograd: the weights of S
networks are stacked as ``(S, out, in)`` and ``(S, out)`` and a hand-derived forward/backward of batched
matmuls gives the loss and gradient of all S at once, plus the persistent penalty of PN eq. (4) and its
gradient, eq. (6), ``lambda * c * sum_k sign(<Theta_k^l, theta^l>) Theta_k^l / ||Theta_k^l||^2``, with
the anchors of each layer stacked into one ``(K, n_l)`` matrix (two small matrix-vector products per layer).

The kernels (``forward``, ``mse_grads``, ``penalty_and_grad`` ...) are shared by the fast paths and kept
out of ``__all__``; :func:`mlp_loss_and_grad` is their checked public entry point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from landscape.params import ParamLayout, parameters_to_vector
from landscape.validation import InputError, LossKind, check_finite, normalize_inputs, normalize_targets
from persistence.penalty import penalized_layers

__all__ = [
    "mlp_widths",
    "vectors_to_stack",
    "stack_to_vectors",
    "he_init_vectors",
    "mlp_loss_and_grad",
]

threshold_backward = torch.ops.aten.threshold_backward  # relu's backward in one kernel: g where h > 0 else 0


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


def layer_sizes(widths: Sequence[int]) -> list[tuple[int, int]]:
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
    numel = sum(o * i + o for o, i in layer_sizes(widths))
    if mat.dim() != 2 or mat.shape[1] != numel:
        raise ValueError(f"expected vectors (S, {numel}) for widths {tuple(widths)}, got {tuple(vectors.shape)}")
    out, pos, s = [], 0, mat.shape[0]
    for o, i in layer_sizes(widths):
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
def forward(ps: Sequence[Tensor], x: Tensor) -> tuple[Tensor, list[Tensor]]:
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


def mse_grads(ps: Sequence[Tensor], x: Tensor, y: Tensor, value: bool = True) -> tuple[Tensor, list[Tensor]]:
    """Mean-squared-error loss (S,) and its gradient for every stacked tensor (hand-derived backprop).

    ``value=False``: the gradient alone (the loss returned is ``None``; the eager steps log it every 100th step).
    """
    out, hs = forward(ps, x)
    r = out - y
    loss = r.square().mean((1, 2)) if value else cast(Tensor, None)
    d = r * (2.0 / (r.shape[1] * r.shape[2]))  # d mean((out - y)^2) / d out
    n_layers = len(ps) // 2
    grads: list[Tensor] = [r] * (2 * n_layers)
    for li in reversed(range(n_layers)):
        grads[2 * li] = torch.matmul(d.transpose(1, 2), hs[li])  # (S, o, N) @ (S or 1, N, i)
        grads[2 * li + 1] = d.sum(1)
        if li > 0:
            d = threshold_backward(torch.bmm(d, ps[2 * li]), hs[li], 0)
    return loss, grads


def mse(ps: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of each of the S stacked networks, shape (S,)."""
    return (forward(ps, x)[0] - y).square().mean((1, 2))


def penalty_and_grad(
    ps: Sequence[Tensor], anchors: Sequence[Tensor], scales: Tensor, value: bool = True
) -> tuple[Tensor, list[Tensor]]:
    """Persistent penalty (PN eq. 4) (S,) and its eq. (6) gradient per layer (S, n_l).

    ``anchors[l]`` is ``(K, n_l)`` with rows ``Theta_k^l / ||Theta_k^l||^2``; ``scales[l]`` is ``lambda * c`` or 0.
    ``value=False``: the gradient alone (the penalty returned is ``None``).
    """
    s = ps[0].shape[0]
    pen = ps[0].new_zeros(s) if value else cast(Tensor, None)
    layer_grads = []
    for li, a in enumerate(anchors):
        theta = torch.cat([ps[2 * li].reshape(s, -1), ps[2 * li + 1]], dim=1)  # weight and bias concatenated
        dots = theta @ a.t()  # (S, K): one small matrix-vector product per layer and network
        if value:
            pen = pen + scales[li] * dots.abs().sum(1)
        layer_grads.append((dots.sign() * scales[li]) @ a)
    return pen, layer_grads


def add_penalty(
    ps: Sequence[Tensor], grads: list[Tensor], anchors: Sequence[Tensor], scales: Tensor, value: bool = True
) -> tuple[Tensor, list[Tensor]]:
    """The penalty (S,) and ``grads`` plus the penalty's gradient, split back into weight and bias.

    ``value=False``: the gradient alone (the penalty returned is ``None``).
    """
    pen, layer_grads = penalty_and_grad(ps, anchors, scales, value)
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
    x, y = check_xy(x, y, widths, dtype, "x, y")
    ps = vectors_to_stack(vectors, widths)
    loss, grads = mse_grads(ps, x, y)
    if anchors is not None and anchors.shape[0]:
        mats = anchor_matrices(layout, anchors.to(dtype), dtype)
        scale = lam * (1.0 if depth_factor is None else abs(float(depth_factor)))
        scales = layer_scales(layout, layers, scale, dtype)
        pen, grads = add_penalty(ps, grads, mats, scales)
        loss = loss + pen
    grad = stack_to_vectors(grads)
    return (loss, grad) if vectors.dim() == 2 else (loss[0], grad[0])


def anchor_matrices(
    layout: ParamLayout, anchors: Tensor, dtype: torch.dtype, capacity: int | None = None
) -> list[Tensor]:
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


def layer_scales(layout: ParamLayout, layers: Sequence[str] | None, scale: float, dtype: torch.dtype) -> Tensor:
    chosen = penalized_layers(layout, layers)
    return torch.tensor([scale if n in chosen else 0.0 for n in layout.layers], dtype=dtype)


def check_xy(x: Tensor, y: Tensor, widths: Sequence[int], dtype: torch.dtype, what: str) -> tuple[Tensor, Tensor]:
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


def dtype_of(model: nn.Module) -> torch.dtype:
    """The dtype of the model's (first) parameter, the dtype the fast paths compute in."""
    return next(model.parameters()).dtype
