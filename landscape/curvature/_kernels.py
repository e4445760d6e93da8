"""Custom autograd kernels behind :class:`~landscape.curvature.hessian.HessianOperator`'s fast products.

The operator builds one gradient graph per micro-batch and differentiates it again for every
Hessian-vector product (double backward). During graph construction :class:`CurvatureOps` routes
convolutions and eval-mode BatchNorm through versions whose double backward calls the dedicated
convolution kernels (PyTorch's generic convolution double backward computes the weight term as a
convolution with an image-sized kernel): eval-mode BatchNorm is folded into the convolution before it,
one-input-channel convolutions take their weight gradient from the unfolded input, 2-D convolutions with
enough channels run channels-last, and a max-pooled convolution of the input (LeNet-5's first layer)
becomes a per-channel linear map of the unfolded input gathered at the pooling's arg-max positions (ReLU
moved after the pooling; both are exact a.e., pooling and ReLU commute); and the log-softmax of a narrow class
axis (cross-entropy over fewer than 16 classes) is ``z - logsumexp(z)``. The function is the same; only
the kernels its derivatives run change (``tests/test_hessian*.py`` compare the Hessians with
``torch.func.hessian`` and finite differences).
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

__all__ = ["CurvatureOps"]

# ``meta`` of a convolution: (stride, padding, dilation, groups, channels_last).
_MaybeTensor = TypeVar("_MaybeTensor", Tensor, None)


def _fmt(t: _MaybeTensor, channels_last: bool) -> _MaybeTensor:
    """Force channels-last on 4-D tensors when asked (no copy if already)."""
    if t is None or not channels_last or t.dim() != 4:
        return t
    return t.contiguous(memory_format=torch.channels_last)


def _cols(x: Tensor, W: Tensor, meta: tuple) -> Tensor | None:
    """``unfold(x)``, shape ``(N, k*k, L)``, for one-input-channel 2-D convolutions, else ``None``.

    oneDNN's weight gradient of such a convolution ran at 2 GFLOP/s here (100 ms for LeNet-5's first layer
    on 1,000 images); from the unfolded input, which is constant across Hessian-vector products, it is a
    batched matrix product (27 ms).
    """
    stride, padding, dilation, groups, _ = meta
    if x.dim() != 4 or x.shape[1] != 1 or groups != 1:
        return None
    return nn.functional.unfold(x, W.shape[2:], dilation=dilation, padding=padding, stride=stride)


def _weight_grad_from_cols(gO: Tensor, cols: Tensor, W: Tensor) -> Tensor:
    """``dL/dW`` of a one-input-channel convolution: ``gO`` ``(N, Co, *out)``, ``cols`` ``(N, k*k, L)``."""
    N, Co = gO.shape[:2]
    if gO.is_contiguous():
        return torch.bmm(gO.reshape(N, Co, -1), cols.transpose(1, 2)).sum(0).view(W.shape)
    # channels-last gO: (N, L, Co) is a free view
    return torch.bmm(cols, gO.permute(0, 2, 3, 1).reshape(N, -1, Co)).sum(0).t().reshape(W.shape)


def conv_from_cols(cols: Tensor, W: Tensor, shape: torch.Size, channels_last: bool) -> Tensor:
    """The convolution ``x * W`` from ``cols = unfold(x)`` ``(N, k*k, L)``: output shape ``shape`` ``(N, Co, *out)``.

    For a one-channel input oneDNN answers NCHW, and the copy to channels-last then cost more than the
    convolution; ``(N, L, k*k) @ (k*k, Co)`` is channels-last as it comes.
    """
    N, Co = shape[:2]
    if channels_last and len(shape) == 4:
        out = torch.matmul(cols.transpose(1, 2), W.reshape(Co, -1).t())  # (N, L, Co)
        return out.view(N, *shape[2:], Co).permute(0, 3, 1, 2)
    return torch.matmul(W.reshape(Co, -1), cols).view(shape)


def _strided_pointwise_input_grad(gO: Tensor, x: Tensor, W: Tensor, meta: tuple) -> Tensor | None:
    """``dL/dx`` of a channels-last 1x1 convolution, stride > 1, no padding (a projection shortcut), else ``None``.

    It is ``gO @ W`` scattered onto every ``stride``-th position, zeros elsewhere: 1.8 ms against oneDNN's 12-16 ms
    for ResNet-8's 16 -> 32 shortcut on 1,797 8x8 images (one thread), the same values.
    """
    stride, padding, _, groups, cl = meta
    if not cl or x.dim() != 4 or groups != 1 or W.shape[2:] != (1, 1) or any(padding) or stride == (1, 1):
        return None
    gx = torch.zeros_like(x, memory_format=torch.channels_last)
    gx.movedim(1, -1)[:, :: stride[0], :: stride[1]] = gO.movedim(1, -1) @ W.reshape(W.shape[:2])
    return gx


def _input_grad(gO: Tensor, x: Tensor, W: Tensor, meta: tuple) -> Tensor:
    """``dL/dx`` of the convolution ``x * W`` for the output gradient ``gO``."""
    gx = _strided_pointwise_input_grad(gO, x, W, meta)
    if gx is not None:
        return gx
    stride, padding, dilation, groups, _ = meta
    zeros = [0] * len(stride)
    return torch.ops.aten.convolution_backward(
        gO, x, W, None, stride, padding, dilation, False, zeros, groups, [True, False, False]
    )[0]


class _ConvGrad(torch.autograd.Function):
    """``(gO, x, W) -> (dL/dx, dL/dW)`` of a convolution, with a hand-written (first-order) backward."""

    @staticmethod
    def forward(
        ctx: Any, gO: Tensor, x: Tensor, W: Tensor, meta: tuple, need_x: bool, need_w: bool, cols: Tensor | None
    ) -> Any:
        stride, padding, dilation, groups, cl = meta
        zeros = [0] * len(stride)
        use_cols = need_w and cols is not None
        gW = None
        gx: Any = _strided_pointwise_input_grad(gO, x, W, meta) if need_x else None
        mask = [need_x and gx is None, need_w and not use_cols, False]
        if any(mask):  # with an all-False mask it still copied gO (23 ms per product on a small ResNet)
            gx_, gW, _ = torch.ops.aten.convolution_backward(
                gO, x, W, None, stride, padding, dilation, False, zeros, groups, mask
            )
            gx = gx if gx_ is None else gx_
        if use_cols and cols is not None:
            gW = _weight_grad_from_cols(gO, cols, W)
        ctx.save_for_backward(gO, x, W)
        ctx.meta, ctx.cols = meta, cols
        ctx.set_materialize_grads(False)
        empty = gO.new_empty(0)
        return (_fmt(gx, cl) if need_x else empty), (gW if need_w else empty)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: Tensor | None, ggW: Tensor | None) -> Any:
        gO, x, W = ctx.saved_tensors
        stride, padding, dilation, groups, cl = ctx.meta
        zeros = [0] * len(stride)
        ggx = None if ggx is None or ggx.numel() == 0 else _fmt(ggx, cl)
        ggW = None if ggW is None or ggW.numel() == 0 else ggW
        g_gO = g_W = None
        g_x: Any = None
        conv = torch.ops.aten.convolution
        if ctx.needs_input_grad[0]:  # both outputs are linear in gO: the adjoints are forward convolutions
            if ggx is not None:
                g_gO = conv(ggx, W, None, stride, padding, dilation, False, zeros, groups)
            if ggW is not None:
                t = (
                    conv(x, ggW, None, stride, padding, dilation, False, zeros, groups)
                    if ctx.cols is None
                    else conv_from_cols(ctx.cols, ggW, gO.shape, cl)
                )
                g_gO = t if g_gO is None else g_gO.add_(t)  # in place: a fresh activation-sized buffer
        bwd = torch.ops.aten.convolution_backward
        if ctx.needs_input_grad[1] and ggW is not None:  # dW/dx term: an input gradient with weight ggW
            g_x = _input_grad(gO, x, ggW, ctx.meta)
        if ctx.needs_input_grad[2] and ggx is not None:  # dx/dW term: a weight gradient with input ggx
            g_W = bwd(gO, ggx, W, None, stride, padding, dilation, False, zeros, groups, [False, True, False])[1]
        return _fmt(g_gO, cl), _fmt(g_x, cl), g_W, None, None, None, None


class _Conv(torch.autograd.Function):
    """A convolution whose backward is :class:`_ConvGrad` (so its double backward uses fast kernels)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, W: Tensor, b: Tensor | None, meta: tuple) -> Tensor:
        stride, padding, dilation, groups, cl = meta
        x = _fmt(x, cl)
        ctx.save_for_backward(x, W)
        ctx.meta = meta
        ctx.cols = _cols(x, W, meta) if ctx.needs_input_grad[1] else None
        out = torch.ops.aten.convolution(x, W, b, stride, padding, dilation, False, [0] * len(stride), groups)
        # A one-channel input is NCHW and channels-last at once, and oneDNN then answers NCHW: force the
        # format, since mixing formats downstream made elementwise kernels up to 10x slower here.
        return _fmt(out, cl)

    @staticmethod
    def backward(ctx: Any, gO: Tensor) -> Any:
        x, W = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad[:3]
        gx = gW = gb = None
        if nx or nw:
            a, c = _ConvGrad.apply(_fmt(gO, ctx.meta[4]), x, W, ctx.meta, nx, nw, ctx.cols)
            gx, gW = (a if nx else None), (c if nw else None)
        if nb:
            gb = gO.sum([0, *range(2, gO.dim())])
        return gx, gW, gb, None


# A convolution whose input has no more positions than its kernel has taps (ResNet-8's 64-channel 3x3 layer on
# 2x2 maps) is a dense linear map of the flattened input with at most the convolution's multiply-adds: as one
# matrix product it ran 2.4x faster than oneDNN's forward, input and weight gradients together (1,797 images,
# one thread; oneDNN computes every tap, most of which fall on the padding there). The map's matrix is capped.
_DENSE_MAX_ENTRIES = 2**22


@functools.lru_cache(maxsize=32)
def _taps(
    size: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...], stride: tuple, padding: tuple, dilation: tuple
) -> Tensor:
    """0/1 tensor ``(P, Q, K)``: input position ``p`` meets kernel tap ``k`` at output position ``q`` (row-major)."""
    T = torch.zeros(math.prod(size), math.prod(out), math.prod(kernel), dtype=torch.float64)
    for q, oq in enumerate(itertools.product(*map(range, out))):
        for k, ok in enumerate(itertools.product(*map(range, kernel))):
            at = [o * s - p + t * d for o, s, p, t, d in zip(oq, stride, padding, ok, dilation)]
            if all(0 <= a < n for a, n in zip(at, size)):
                T[int(np.ravel_multi_index(at, size)), q, k] = 1
    return T


def _dense_shape(x: Tensor, W: Tensor, meta: tuple) -> tuple[int, ...] | None:
    """The output positions of a convolution that runs as a dense map (see ``_DENSE_MAX_ENTRIES``), else ``None``."""
    stride, padding, dilation, groups, _ = meta
    size, kernel = tuple(x.shape[2:]), tuple(W.shape[2:])
    if groups != 1 or x.dim() != W.dim() or math.prod(size) > math.prod(kernel) or not x.is_floating_point():
        return None
    out = tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)
    )
    if min(out) < 1 or math.prod(size) * math.prod(out) * W.shape[0] * W.shape[1] > _DENSE_MAX_ENTRIES:
        return None
    return out


def _dense_conv(x: Tensor, W: Tensor, b: Tensor | None, meta: tuple, out: tuple[int, ...]) -> Tensor:
    """The convolution ``(N, Ci, *size) -> (N, Co, *out)`` as ``flat(x) @ M(W)``, in plain differentiable ops.

    ``M(W)`` ``(P*Ci, Q*Co)`` holds each weight at the (input, output) position pairs its tap joins, and zeros
    elsewhere, so every product is exact; the flat order is channels-last (``(p, ci)``) when the operator runs
    channels-last, else ``(ci, p)``. The derivatives are matrix products and an ``einsum`` over ``W``'s size.
    """
    stride, padding, dilation, _, cl = meta
    N, (Co, Ci) = x.shape[0], W.shape[:2]
    T = _taps(tuple(x.shape[2:]), out, tuple(W.shape[2:]), stride, padding, dilation).to(W.device, W.dtype)
    P, Q, _ = T.shape
    Wk = W.reshape(Co, Ci, -1)
    if cl:
        xf = x.movedim(1, -1).reshape(N, -1)  # a view of a channels-last x
        M = torch.einsum("pqk,oik->piqo", T, Wk).reshape(P * Ci, Q * Co)
        bias = None if b is None else b.repeat(Q)
    else:
        xf = x.reshape(N, -1)
        M = torch.einsum("pqk,oik->ipoq", T, Wk).reshape(Ci * P, Co * Q)
        bias = None if b is None else b.repeat_interleave(Q)
    y = xf @ M if bias is None else torch.addmm(bias, xf, M)
    return y.view(N, *out, Co).movedim(-1, 1) if cl else y.view(N, Co, *out)


def _convolve(x: Tensor, W: Tensor, b: Tensor | None, meta: tuple) -> Tensor:
    """``x * W + b`` through :class:`_Conv`, or as a dense map when its input is no larger than its kernel."""
    out = _dense_shape(x, W, meta)
    return _Conv.apply(x, W, b, meta) if out is None else _dense_conv(x, W, b, meta, out)


class _ReluGrad(torch.autograd.Function):
    """``(gO, slope) -> dL/dx = gO * slope`` of a ReLU, ``slope = (out > 0)`` as 0/1 floats; linear in ``gO``.

    PyTorch's generic double backward returns the zero in the ReLU's input as a dense tensor (``zeros_like``),
    which the engine then adds into the input's gradient: on the small ResNet of the benchmarks that zero fill
    alone took ~60 ms of a 1.4 s Hessian-vector product (one-off profiling). Here it is ``None``. The slope is
    fixed once per graph: ``threshold_backward(g, out, 0)``, which every product ran twice per ReLU, took
    1.9-4.6 ms on a (1797, 16, 8, 8) channels-last tensor against 1.1-3.1 ms for ``g * slope`` (same values but
    for the sign of zeros and a non-finite ``g`` where the ReLU is off).
    """

    @staticmethod
    def forward(ctx: Any, gO: Tensor, slope: Tensor) -> Tensor:
        ctx.save_for_backward(slope)
        return gO * slope

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg: Tensor) -> Any:
        (slope,) = ctx.saved_tensors
        return gg * slope, None


class _Relu(torch.autograd.Function):
    """``relu(x)`` whose backward is :class:`_ReluGrad` (same values and subgradient 0 at 0 as PyTorch)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = torch.relu(x)
        ctx.save_for_backward((out > 0).to(out.dtype))
        return out

    @staticmethod
    def backward(ctx: Any, gO: Tensor) -> Any:
        (slope,) = ctx.saved_tensors
        return _ReluGrad.apply(gO, slope)


def _pooled_conv(W: Tensor, cols: Tensor, shape: torch.Size) -> Tensor:
    """``W`` ``(C, ...)`` applied per channel to ``cols`` ``(C, K, N*P)``: shape ``shape`` ``(N, C, *pooled)``."""
    C, K, _ = cols.shape
    return torch.bmm(W.reshape(C, 1, K), cols).view(C, shape[0], -1).transpose(0, 1).reshape(shape)


class _PooledConvT(torch.autograd.Function):
    """``dL/dW`` of :class:`PooledConv`: ``(g (N, C, *pooled), cols (C, K, N*P)) -> (C, ...)``."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, cols: Tensor, wshape: torch.Size) -> Tensor:
        C = cols.shape[0]
        gc = g.transpose(0, 1).reshape(C, -1)
        # One matrix-vector product per channel: batched as bmm it ran 5x slower here (10 vs 52 ms).
        gW = torch.stack([torch.mv(cols[c], gc[c]) for c in range(C)])
        ctx.cols, ctx.shape = cols, g.shape  # an attribute: PooledConv already saves (and counts) cols
        return gW.view(wshape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggW: Tensor) -> Any:
        return _pooled_conv(ggW, ctx.cols, ctx.shape), None, None


class PooledConv(torch.autograd.Function):
    """Max-pooling of a convolution of a constant input, as a per-channel linear map of ``(W, b)``.

    Pooling keeps one position per output, fixed near the current weights (a.e.), so the pooled
    convolution reads only the unfolded input at those positions: ``cols`` ``(C, K, N*P)`` for ``C``
    output channels, ``K`` weights per channel and ``P`` pooled positions. Its products are matrix-vector
    products over ``cols``; the full-resolution convolution, ReLU and pooling it replaces cost LeNet-5's
    first layer 109 ms per Hessian-vector product here (on 1,000 MNIST images), these two products
    ~20 ms (one-off profiling).
    """

    @staticmethod
    def forward(ctx: Any, W: Tensor, b: Tensor | None, cols: Tensor, shape: torch.Size) -> Tensor:
        out = _pooled_conv(W, cols, shape)
        if b is not None:
            out = out.add_(b.view(1, -1, *[1] * (out.dim() - 2)))
        ctx.save_for_backward(cols)
        ctx.wshape = W.shape
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:
        (cols,) = ctx.saved_tensors
        gW = _PooledConvT.apply(g, cols, ctx.wshape) if ctx.needs_input_grad[0] else None
        gb = g.sum([0, *range(2, g.dim())]) if ctx.needs_input_grad[1] else None
        return gW, gb, None, None


def _gather_cols(x: Tensor, W: Tensor, meta: tuple, idx: Tensor) -> Tensor:
    """The unfolded ``x`` at pooled arg-max positions ``idx`` ``(N, C, *pooled)``: shape ``(C, K, N*P)``."""
    stride, padding, dilation, _, _ = meta
    cols = nn.functional.unfold(x, W.shape[2:], dilation=dilation, padding=padding, stride=stride)  # (N, K, L)
    N, K = cols.shape[:2]
    C, P = idx.shape[1], idx[0, 0].numel()
    g = cols.gather(2, idx.reshape(N, 1, C * P).expand(N, K, C * P))
    return g.view(N, K, C, P).permute(2, 1, 0, 3).reshape(C, K, N * P)


_CONV_DIMS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_RELUS = {torch.relu, nn.functional.relu, Tensor.relu}
_MAX_POOLS = {nn.functional.max_pool2d, torch.max_pool2d}
_LOG_SOFTMAXES = {nn.functional.log_softmax, torch.log_softmax, Tensor.log_softmax}
_CE_ARGS = ("input", "target", "weight", "size_average", "ignore_index", "reduce", "reduction", "label_smoothing")
_CE_DEFAULTS = (None, None, None, None, -100, None, "mean", 0.0)
# torch 2.13's CPU log-softmax runs a scalar loop when the class axis is narrower than one vector register
# (16 floats): 1,797 x 10 logits took 306 us forward and 154 us backward against 111 / 65 us for the same
# values as ``z - logsumexp(z)``, whose derivatives are plain elementwise ops. One gradient graph and four
# Hessian-vector products of a cross-entropy over 1,797 x 10 logits: 1.72 ms natively, 0.97 ms routed; at
# 16 or more classes, or under ~256 rows, the native kernel was as fast or faster (one-off measurements,
# 2026-12-07, AVX-512, one thread).
_NARROW_CLASSES, _NARROW_MIN_ROWS = 16, 256
# Gather a pooled convolution's input only while the gathered copy stays within this multiple of the
# unfolded input plus the convolution output it replaces (LeNet-5: 1.2x; a 64-channel stem: 10x).
_POOLED_CONV_MAX_GROWTH = 2


def _bind(names: Sequence[str], defaults: Sequence[Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    out = dict(zip(names, defaults))
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def _narrow(z: Any, dim: Any) -> bool:
    """Whether ``z``'s softmax axis ``dim`` is one where the native CPU log-softmax is slow."""
    if not isinstance(z, Tensor) or not isinstance(dim, int) or not z.is_floating_point():
        return False
    if not -z.dim() <= dim < z.dim():  # (a 0-d tensor too): the native op raises its own error
        return False
    return z.device.type == "cpu" and z.shape[dim] < _NARROW_CLASSES and z.numel() >= _NARROW_MIN_ROWS * z.shape[dim]


def _narrow_log_softmax(z: Any, dim: Any) -> Tensor | None:
    """``log_softmax(z, dim)`` as ``z - logsumexp(z, dim)`` when the native kernel is slow there, else ``None``."""
    return z - torch.logsumexp(z, dim, keepdim=True) if _narrow(z, dim) else None


def _positional_dtype(args: tuple) -> bool:
    """Whether a log-softmax call passes its ``dtype`` by position (``torch.log_softmax(z, 1, torch.float64)``)."""
    return any(isinstance(a, torch.dtype) for a in args[2:])


def _narrow_cross_entropy(a: dict[str, Any]) -> Tensor | None:
    """``F.cross_entropy`` (bound arguments ``a``) over a narrow class axis from ``logsumexp``, else ``None``.

    Class-index targets without smoothing only. Without class weights or ignored entries the per-sample loss
    is ``logsumexp(z) - z[target]``, whose double backward is a gather (a third of ``nll_loss``'s).
    """
    z, target, reduction = a["input"], a["target"], a["reduction"]
    if a["label_smoothing"] != 0.0 or a["size_average"] is not None or a["reduce"] is not None:
        return None
    if not isinstance(target, Tensor) or target.is_floating_point() or reduction not in ("mean", "sum", "none"):
        return None
    if not isinstance(z, Tensor) or z.dim() < 2 or not _narrow(z, 1):
        return None
    lse = torch.logsumexp(z, 1)
    if a["weight"] is not None or bool((target == a["ignore_index"]).any()):
        return nn.functional.nll_loss(
            z - lse.unsqueeze(1), target, a["weight"], ignore_index=a["ignore_index"], reduction=reduction
        )
    per = lse - z.gather(1, target.unsqueeze(1)).squeeze(1)
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, tuple | list) else (int(v),) * n


class CurvatureOps(TorchFunctionMode):
    """Route convolutions and eval-mode BatchNorm through ops with cheap double backward (same function).

    An eval-mode BatchNorm applied directly to one of these convolutions' outputs is folded into it
    (weight ``W * s``, bias ``b * s + t``), so the Hessian-vector products run no activation-sized
    BatchNorm arithmetic; the unfolded convolution computed first is discarded (a one-off forward).
    """

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        # id(output) -> (weakref(output), its version, x, W, b, meta) of the convolutions made here
        self._convs: dict[int, tuple[weakref.ref, int, Tensor, Tensor, Tensor | None, tuple]] = {}
        self._relus: dict[int, tuple[weakref.ref, int, tuple]] = {}  # id(relu(conv)) -> (ref, version, conv)

    def _conv(self, out: Tensor, x: Tensor, W: Tensor, b: Tensor | None, meta: tuple) -> Tensor:
        self._convs[id(out)] = (weakref.ref(out), out._version, x, W, b, meta)
        return out

    @staticmethod
    def _live(table: dict, t: Tensor) -> tuple | None:
        """The record of ``t`` if it is the very tensor recorded, unmodified since (no in-place op)."""
        rec = table.get(id(t))
        return rec if rec is not None and rec[0]() is t and rec[1] == t._version else None

    def _max_pool(self, a: dict[str, Any]) -> Tensor | None:
        """``max_pool2d`` of a recorded convolution of a constant input (ReLU between allowed), or ``None``."""
        x = a["input"]
        relu = self._live(self._relus, x)
        conv = relu[2] if relu is not None else self._live(self._convs, x)
        if conv is None or a["return_indices"]:
            return None
        _, _, cx, W, b, meta = conv
        if cx.requires_grad or meta[3] != 1 or len(meta[0]) != 2 or x.dim() != 4:
            return None
        kernel = _tuple(a["kernel_size"], 2)
        stride = _tuple(a["stride"], 2) if a["stride"] not in (None, (), []) else kernel
        # Arg-max positions of the pooled tensor itself: after a ReLU, a window with no positive entry may
        # point anywhere, and its gathered pre-activation is then negative, so ReLU still gives 0 and slope 0.
        _, idx = torch.ops.aten.max_pool2d_with_indices(
            x.detach(), kernel, stride, _tuple(a["padding"], 2), _tuple(a["dilation"], 2), bool(a["ceil_mode"])
        )
        C, K, L, P = x.shape[1], W[0].numel(), x[0, 0].numel(), idx[0, 0].numel()
        if C * K * P > _POOLED_CONV_MAX_GROWTH * (K + C) * L:
            return None
        out = PooledConv.apply(W, b, _gather_cols(cx, W, meta, idx), idx.shape)
        # max-pool and ReLU commute (ReLU is monotone), so ReLU goes after the (smaller) pooled tensor
        return _fmt(_Relu.apply(out) if relu is not None else out, meta[4])

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _CONV_DIMS:
            a = _bind(_CONV_ARGS, (None, None, None, 1, 0, 1, 1), args, kwargs)
            d = _CONV_DIMS[func]
            # String padding ("same"/"valid") and unbatched inputs keep the native path.
            if not isinstance(a["padding"], str) and a["input"].dim() == d + 2:
                cl = self.channels_last and d == 2
                meta = (_tuple(a["stride"], d), _tuple(a["padding"], d), _tuple(a["dilation"], d), int(a["groups"]), cl)
                y = _convolve(a["input"], a["weight"], a["bias"], meta)
                return self._conv(y, a["input"], a["weight"], a["bias"], meta)
        elif func is nn.functional.batch_norm:
            a = _bind(_BN_ARGS, (None, None, None, None, None, False, 0.1, 1e-5), args, kwargs)
            if not a["training"] and a["running_mean"] is not None and a["running_var"] is not None:
                x = a["input"]
                shape = [1, -1] + [1] * (x.dim() - 2)
                scale = torch.rsqrt(a["running_var"] + a["eps"])
                if a["weight"] is not None:
                    scale = scale * a["weight"]
                shift = -a["running_mean"] * scale
                if a["bias"] is not None:
                    shift = shift + a["bias"]
                conv = self._live(self._convs, x)
                if conv is not None:
                    _, _, cx, W, b, meta = conv
                    Wf = W * scale.reshape([-1] + [1] * (W.dim() - 1))
                    bf = shift if b is None else b * scale + shift
                    return self._conv(_convolve(cx, Wf, bf, meta), cx, Wf, bf, meta)
                return x * scale.reshape(shape) + shift.reshape(shape)
        elif func in _RELUS and args and isinstance(args[0], Tensor):
            conv = self._live(self._convs, args[0])  # taken before an in-place ReLU bumps the version
            inplace = func is nn.functional.relu and bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
            out = func(*args, **kwargs) if inplace else _Relu.apply(args[0])
            if conv is not None:
                self._relus[id(out)] = (weakref.ref(out), out._version, conv)
            return out
        elif func in _MAX_POOLS:
            out = self._max_pool(_bind(_POOL_ARGS, (None, None, None, 0, 1, False, False), args, kwargs))
            if out is not None:
                return out
        elif func in _LOG_SOFTMAXES and args and not kwargs.get("dtype") and not _positional_dtype(args):
            out = _narrow_log_softmax(args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
            if out is not None:
                return out
        elif func is nn.functional.cross_entropy:
            out = _narrow_cross_entropy(_bind(_CE_ARGS, _CE_DEFAULTS, args, kwargs))
            if out is not None:
                return out
        return func(*args, **kwargs)
