"""The pointwise executor of the evaluation engine (private): any model, one point at a time.

A private eval-mode copy is evaluated through :func:`torch.func.functional_call`, one point at a time (or a
vmapped chunk), 2x2 max pooling routed through two ``torch.maximum`` of strided views by
:class:`~landscape.evaluate._kernels.FastOpsMode` (~10x faster than ``F.max_pool2d`` on this CPU, exact).
When the first parametrized op is a ``Linear``/``Conv2d`` on the input and the points are affine
(:class:`FirstLayer`), its output ``sum_k c_k (W_k x + b_k)`` is combined from K precomputed maps instead
of one layer evaluation per point. Also the probes of a model that the engine runs once per call:
activation sizes (:func:`probe_sizes`) and the first layer's input (:func:`first_input`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.evaluate._kernels import FastOpsMode, uses_pool2
from landscape.evaluate.affine import Chunk
from landscape.params import ParamLayout

__all__ = ["FirstLayer", "PointwiseExec", "batch_dependent", "find_first_layer", "first_input", "probe_sizes"]


class FirstLayer:
    """A ``Linear``/``Conv2d`` that is the first parametrized op and sees only the input (checked by a probe)."""

    def __init__(self, name: str, module: nn.Module, layout: ParamLayout) -> None:
        self.name, self.module = name, module
        self.weight = layout[f"{name}.weight"].slice
        self.bias = layout[f"{name}.bias"].slice if f"{name}.bias" in layout else None
        self.shape_w = layout[f"{name}.weight"].shape

    def maps(self, u: Tensor, basis: Tensor, feature_major: bool = False) -> Tensor:
        """The layer at each basis vector, ``(K, B, *out)`` (``(K, O, B)`` if ``feature_major``), in one op."""
        K = basis.shape[0]
        w = basis[:, self.weight].reshape(K * self.shape_w[0], *self.shape_w[1:])
        b = None if self.bias is None else basis[:, self.bias].reshape(-1)
        if isinstance(self.module, nn.Linear):
            if feature_major:  # (K O, B) = W u^T + b
                out = w @ u.T if b is None else torch.addmm(b[:, None], w, u.T)
                return out.view(K, -1, u.shape[0])
            out = F.linear(u, w, b)  # (B, *mid, K O): a Linear on token inputs keeps its middle axes
            return out.view(*out.shape[:-1], K, -1).movedim(-2, 0).contiguous()
        m = self.module
        assert isinstance(m, nn.Conv2d)  # find_first_layer admits Linear and Conv2d only
        if m.groups != 1:
            return torch.stack(
                [
                    F.conv2d(u, w_, b_, m.stride, m.padding, m.dilation, m.groups)
                    for w_, b_ in zip(w.chunk(K), [None] * K if b is None else b.chunk(K))
                ]
            )
        out = F.conv2d(u, w, b, m.stride, m.padding, m.dilation)
        return out.view(u.shape[0], K, -1, *out.shape[2:]).transpose(0, 1).contiguous()


class _Stop(Exception):
    pass


def find_first_layer(copy_: nn.Module, layout: ParamLayout, x: Tensor, bufs: Mapping[str, Tensor]) -> FirstLayer | None:
    """Probe one forward: is the first parametrized module a Linear/Conv2d whose input depends on no parameter?"""
    names = {id(m): n for n, m in copy_.named_modules()}
    owned = [m for m in copy_.modules() if any(True for _ in m.parameters(recurse=False))]
    calls: list[tuple[nn.Module, Tensor | None]] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        calls.append((mod, args[0] if args and isinstance(args[0], Tensor) else None))

    handles = [m.register_forward_hook(hook) for m in owned]
    try:
        params = {k: v.detach().clone().requires_grad_(True) for k, v in copy_.named_parameters()}
        with torch.enable_grad():
            torch.func.functional_call(copy_, {**params, **bufs}, (x,), strict=False)
    except Exception:  # noqa: BLE001 - any failure just disables the optimization
        return None
    finally:
        for h in handles:
            h.remove()
    if not calls:
        return None
    mod, u = calls[0]
    name = names.get(id(mod))
    ok_conv = isinstance(mod, nn.Conv2d) and type(mod) is nn.Conv2d and mod.padding_mode == "zeros"
    if name is None or u is None or not (type(mod) is nn.Linear or ok_conv) or u.requires_grad:
        return None
    if sum(m is mod for m, _ in calls) != 1 or f"{name}.weight" not in layout:
        return None
    shared = {n for n, _ in copy_.named_parameters(remove_duplicate=False)} - set(dict(copy_.named_parameters()))
    if any(n.startswith(f"{name}.") for n in shared) or (mod.bias is not None and f"{name}.bias" not in layout):
        return None  # the first-layer maps read weight and bias from the points: both must be in the vector
    return FirstLayer(name, mod, layout)


def first_input(copy_: nn.Module, first: Any, x: Tensor, bufs: Mapping[str, Tensor]) -> Tensor:
    """The input the first layer sees for batch ``x`` (the forward stops right there).

    The stacked executor finds its first layers' inputs itself: it gets the batch.
    """
    if not isinstance(first, FirstLayer):
        return x
    got: list[Tensor] = []

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
        got.append(args[0])
        raise _Stop

    h = first.module.register_forward_pre_hook(pre)
    try:
        torch.func.functional_call(copy_, dict(bufs), (x,), strict=False)
    except _Stop:
        pass
    finally:
        h.remove()
    return got[0]


def _combine_maps(Z: Tensor, c: Sequence[float], out: Tensor | None = None) -> Tensor:
    """``sum_k c[k] * Z[k]`` into a fresh tensor (or ``out``), skipping zero coefficients."""
    terms = [(k, float(ck)) for k, ck in enumerate(c) if ck != 0]
    if out is None:
        out = torch.empty_like(Z[0])
    if not terms:
        return out.zero_()
    k0, c0 = terms[0]
    if c0 == 1:
        out.copy_(Z[k0])
    else:
        torch.mul(Z[k0], c0, out=out)
    for k, ck in terms[1:]:
        out.add_(Z[k], alpha=ck)
    return out


def batch_dependent(copy_: nn.Module, x: Tensor, bufs: Mapping[str, Tensor]) -> bool:
    """Does a sample's output depend on the other samples of its batch (then batches must stay as given)?

    BatchNorm without running statistics (``track_running_stats=False``) normalizes by the batch's statistics
    even in eval mode, as does ``F.batch_norm(..., training=True)`` written in a ``forward``; re-cutting the
    caller's batches into micro-batches would change every loss. Probed on ``x`` (up to 3 samples) against its
    leading rows alone; a forward that fails on fewer samples counts as dependent.
    """
    k = min(3, len(x))
    if k < 2:
        return False
    try:
        with torch.no_grad():
            own = {n: b.clone() for n, b in bufs.items()}  # an explicit training=True would update buffers in place
            whole = torch.func.functional_call(copy_, own, (x[:k],), strict=False)
            part = torch.func.functional_call(copy_, own, (x[: k - 1],), strict=False)
    except Exception:  # noqa: BLE001 - e.g. batch statistics of one sample
        return True
    if not isinstance(whole, Tensor) or not isinstance(part, Tensor) or whole.shape[1:] != part.shape[1:]:
        return False
    scale = float(whole.abs().max()) if whole.numel() else 0.0
    return not bool(torch.allclose(whole[: k - 1], part, rtol=1e-6, atol=1e-9 * max(1.0, scale), equal_nan=True))


def probe_sizes(copy_: nn.Module, x: Tensor, bufs: Mapping[str, Tensor]) -> tuple[int, int, tuple[int, ...]]:
    """(largest, total) activation elements per sample over leaf modules, and the output shape per sample."""
    sizes: list[int] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            sizes.append(out.numel() // max(1, len(x)) if out.dim() else 1)

    leaves = [m for m in copy_.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        out = torch.func.functional_call(copy_, dict(bufs), (x,), strict=False)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model returns {type(out).__name__}; evaluate_points(model, points, data) needs a tensor of outputs "
            "(B, ...): pass landscape.Problem(model, data, loss) instead, whose output rule takes a tuple's first "
            "element or a mapping's 'logits'"
        )
    sizes.append(out.numel() // max(1, len(x)))
    return max(sizes), sum(sizes), tuple(out.shape[1:])


class _ExecBase:
    """Common parts of the executors: parameters of a chunk, fixed parameters and buffers."""

    def __init__(self, copy_: nn.Module, layout: ParamLayout, bufs: Mapping[str, Tensor], bn_train: bool) -> None:
        self.copy, self.layout, self.bufs, self.bn_train = copy_, layout, dict(bufs), bn_train
        self.fixed = {k: v.detach() for k, v in copy_.named_parameters() if k not in layout}

    def point_bufs(self, chunk: Chunk, p: int) -> dict[str, Tensor]:
        b = self.bufs if chunk.buffers is None else chunk.buffers[p]
        return {k: v.clone() for k, v in b.items()} if self.bn_train else b


class PointwiseExec(_ExecBase):
    """One point at a time (or a vmapped chunk) through ``functional_call`` on the private copy."""

    def __init__(
        self,
        copy_: nn.Module,
        layout: ParamLayout,
        bufs: Mapping[str, Tensor],
        bn_train: bool,
        first: FirstLayer | None,
        vmap: bool,
    ) -> None:
        super().__init__(copy_, layout, bufs, bn_train)
        self.first, self.vmap = first, vmap
        self.fast_ops: bool | None = None
        self.inject: list[Tensor | None] = [None]
        if first is not None:
            orig = first.module.forward

            def forward(*a: Any, **k: Any) -> Any:
                return orig(*a, **k) if self.inject[0] is None else self.inject[0]

            first.module.forward = forward  # private copy only: its output is injected

    def first_maps(self, u: Tensor, basis: Tensor) -> Tensor:
        assert self.first is not None
        return self.first.maps(u, basis)

    def _call(self, params: Mapping[str, Tensor], bufs: Mapping[str, Tensor], x: Tensor, z: Tensor | None) -> Tensor:
        if self.fast_ops is None:  # 2x2 max pooling through strided views (~10x faster than F.max_pool2d here)
            self.fast_ops = uses_pool2(
                self.copy, lambda: torch.func.functional_call(self.copy, {**params, **bufs}, (x,), strict=False)
            )
        self.inject[0] = z
        try:
            if self.fast_ops:
                with FastOpsMode():
                    return torch.func.functional_call(self.copy, {**params, **bufs}, (x,), strict=False)
            return torch.func.functional_call(self.copy, {**params, **bufs}, (x,), strict=False)
        finally:
            self.inject[0] = None

    def forward(self, chunk: Chunk, x: Tensor, Z: Tensor | None) -> tuple[Tensor, str]:
        P = len(chunk)
        coefs = chunk.coefs
        zs = None if Z is None or coefs is None else [_combine_maps(Z, coefs[p].tolist()) for p in range(P)]
        if self.vmap and P > 1:
            try:
                params = self.layout.unflatten_batch(chunk.mat)
                bufs = (
                    self.bufs
                    if chunk.buffers is None
                    else {k: torch.stack([b[k] for b in chunk.buffers]) for k in chunk.buffers[0]}
                )
                zb = None if zs is None else torch.stack(zs)
                dims = (0, None if chunk.buffers is None else 0, None if zb is None else 0)
                out = torch.func.vmap(lambda p, b, z: self._call(p, b, x, z), in_dims=dims)(params, bufs, zb)
                return out, "sm"
            except Exception as e:  # noqa: BLE001 - vmap cannot handle every model: fall back, once
                warnings.warn(f"vmap failed ({type(e).__name__}: {e}); evaluating one point at a time", stacklevel=4)
                self.vmap = False
        outs = []
        for p in range(P):
            out = self._call(
                self.layout.unflatten(chunk.mat[p]), self.point_bufs(chunk, p), x, None if zs is None else zs[p]
            )
            if not isinstance(out, Tensor):
                raise TypeError(f"the model returns {type(out).__name__}; the engine needs a tensor of outputs")
            outs.append(out)
        return torch.stack(outs), "sm"
