"""Hessian of the full-dataset loss as a linear operator, and its spectrum.

The Persistent Neurons paper (§5, Fig. 12) compares Hessian eigenvalue densities of a plain and a
championship ResNet-18, computed with PyHessian (Yao et al. 2020) by stochastic Lanczos quadrature
(Ghorbani, Krishnan & Xiao 2019). This module computes the same quantities without PyHessian:

* :class:`HessianOperator`: ``v -> H v`` for the Hessian of the *full-dataset* loss
  ``L = (1/N) sum_i loss_i`` (each batch's mean weighted by its size, exact), restricted optionally to a
  subset of parameters. One gradient graph per micro-batch is built once and reused by double backward
  (the fastest HVP measured on CPU), cached when it fits a memory budget and rebuilt otherwise.
* :func:`hessian_eigenpairs`, :func:`hessian_directions`, :func:`hessian_trace`, :func:`hessian_spectrum`:
  Lanczos top-k, eigenvector directions for plane slices, Hutchinson / Hutch++ traces and the SLQ density
  (:mod:`landscape.curvature.lanczos` holds the algorithms), returned as a :class:`HessianSpectrum` result.

BatchNorm: the Hessian is of the loss with BatchNorm in eval mode (running statistics, the default, as
the issue and PyHessian use) or in train mode (batch statistics of each given batch, so the function
depends on the batching). The result records which. The caller's model is never modified: evaluation goes
through :func:`landscape.params.functional_forward` on detached copies of the weights.

Speed (measured, see ``benchmarks/README.md``): the data is re-split into micro-batches of about 256 MB
of saved activations (the best size depends on the machine: on a 32 MB-L3 Xeon 32 MB micro-batches ran
twice as fast as one full batch, on the 8 MB-L3 EPYC of the latest measurements 4-8x larger ones were
1.2-1.4x faster than those). During graph construction convolutions and eval-mode BatchNorm are routed
through versions whose double backward calls the dedicated convolution kernels (PyTorch's generic
convolution double backward computes the weight term as a convolution with an image-sized kernel),
eval-mode BatchNorm is folded into the convolution before it, one-input-channel convolutions take their
weight gradient from the unfolded input, 2-D convolutions with enough channels run channels-last, and a
max-pooled convolution of the input (LeNet-5's first layer) becomes a per-channel linear map of the
unfolded input gathered at the pooling's arg-max positions (ReLU moved after the pooling; both are exact
a.e., pooling and ReLU commute).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from landscape import distributed, validation
from landscape._options import parse_option
from landscape.curvature.lanczos import (
    EigenPairs,
    TraceEstimate,
    Which,
    default_sigma,
    gaussian_density,
    hutchinson,
    hutchpp,
    slq,
    top_eigenpairs,
)
from landscape.evaluate.points import parse_bytes
from landscape.params import ParamLayout, TensorSpec, functional_forward, preserved_mode
from landscape.problem import KERNEL_NOTE, LOSSES, FunctionalModel, Problem, differentiable_kernels, renamed
from landscape.results import Provenance, Result, register_result

__all__ = [
    "BNMode",
    "TraceMethod",
    "HessianOperator",
    "HessianSpectrum",
    "hessian_eigenpairs",
    "hessian_directions",
    "hessian_trace",
    "hessian_spectrum",
    "spectrum_of",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

# Saved activations per micro-batch. 32 MB was fastest on a 32 MB-L3 Xeon (LeNet-5 2x faster at ~200
# images than at 1,000); on an 8 MB-L3 EPYC that size ran 1.2-1.4x slower than 256 MB (ResNet 28 vs 224
# images) while 256 MB and one full batch of 1,000 tied.
_MICRO_BATCH_BYTES = 256 * 2**20
_MIN_MICRO_BATCH = 16
# Half precision is computed in float32: Lanczos' noise and breakdown level, 100 eps, is 0.78 in bfloat16
# (a density stopped after 1-2 steps and a converged top-5 of [0.78, 0.008, ...] for [1.60, 0.98, ...]).
_HALF = (torch.float16, torch.bfloat16)
# Modules that draw random numbers in train mode (no deterministic Hessian) and BatchNorm, whose train-mode
# (or untracked) statistics make the function depend on the batching.
_RANDOM_MODULES = (nn.modules.dropout._DropoutNd, nn.RReLU)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm
_MODE_DEPENDENT = (_BATCH_NORM, *_RANDOM_MODULES)


class BNMode(str, enum.Enum):
    """Which BatchNorm statistics the differentiated loss uses."""

    EVAL = "eval"  # running statistics: the loss is a mean of per-sample terms
    TRAIN = "train"  # batch statistics of each given batch


class TraceMethod(str, enum.Enum):
    """Stochastic trace estimator."""

    HUTCHINSON = "hutchinson"
    HUTCHPP = "hutchpp"


def _names(items: Sequence[Any], model: nn.Module | None = None, most: int = 6) -> str:
    """Text naming modules: ``'a', 'b'`` from paths, or ``'a' (Dropout)`` from modules of ``model``."""
    if model is not None:
        paths = {id(m): n for n, m in model.named_modules()}
        shown = [f"{paths.get(id(m), '?')!r} ({type(m).__name__})" for m in items[:most]]
    else:
        shown = [repr(str(i)) for i in items[:most]]
    return ", ".join(shown) + (f" and {len(items) - most} more" if len(items) > most else "")


# =========================================================================== double-backward-friendly ops
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


def _conv_from_cols(cols: Tensor, W: Tensor, shape: torch.Size, channels_last: bool) -> Tensor:
    """The convolution ``x * W`` from ``cols = unfold(x)`` ``(N, k*k, L)``: output shape ``shape`` ``(N, Co, *out)``.

    For a one-channel input oneDNN answers NCHW, and the copy to channels-last then cost more than the
    convolution; ``(N, L, k*k) @ (k*k, Co)`` is channels-last as it comes.
    """
    N, Co = shape[:2]
    if channels_last and len(shape) == 4:
        out = torch.matmul(cols.transpose(1, 2), W.reshape(Co, -1).t())  # (N, L, Co)
        return out.view(N, *shape[2:], Co).permute(0, 3, 1, 2)
    return torch.matmul(W.reshape(Co, -1), cols).view(shape)


class _ConvGrad(torch.autograd.Function):
    """``(gO, x, W) -> (dL/dx, dL/dW)`` of a convolution, with a hand-written (first-order) backward."""

    @staticmethod
    def forward(
        ctx: Any, gO: Tensor, x: Tensor, W: Tensor, meta: tuple, need_x: bool, need_w: bool, cols: Tensor | None
    ) -> Any:
        stride, padding, dilation, groups, cl = meta
        zeros = [0] * len(stride)
        use_cols = need_w and cols is not None
        gx = gW = None
        mask = [need_x, need_w and not use_cols, False]
        if any(mask):  # with an all-False mask it still copied gO (23 ms per product on a small ResNet)
            gx, gW, _ = torch.ops.aten.convolution_backward(
                gO, x, W, None, stride, padding, dilation, False, zeros, groups, mask
            )
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
        g_gO = g_x = g_W = None
        conv = torch.ops.aten.convolution
        if ctx.needs_input_grad[0]:  # both outputs are linear in gO: the adjoints are forward convolutions
            if ggx is not None:
                g_gO = conv(ggx, W, None, stride, padding, dilation, False, zeros, groups)
            if ggW is not None:
                t = (
                    conv(x, ggW, None, stride, padding, dilation, False, zeros, groups)
                    if ctx.cols is None
                    else _conv_from_cols(ctx.cols, ggW, gO.shape, cl)
                )
                g_gO = t if g_gO is None else g_gO.add_(t)  # in place: a fresh activation-sized buffer
        bwd = torch.ops.aten.convolution_backward
        if ctx.needs_input_grad[1] and ggW is not None:  # dW/dx term: an input gradient with weight ggW
            g_x = bwd(gO, x, ggW, None, stride, padding, dilation, False, zeros, groups, [True, False, False])[0]
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


class _ReluGrad(torch.autograd.Function):
    """``(gO, relu output) -> dL/dx`` of a ReLU; its double backward is zero in the ReLU's input.

    PyTorch's generic double backward returns that zero as a dense tensor (``zeros_like``), which the
    engine then adds into the input's gradient: on the small ResNet of the benchmarks that zero fill
    alone took ~60 ms of a 1.4 s Hessian-vector product (one-off profiling). Here it is ``None``.
    """

    @staticmethod
    def forward(ctx: Any, gO: Tensor, out: Tensor) -> Tensor:
        ctx.save_for_backward(out)
        return torch.ops.aten.threshold_backward(gO, out, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gg: Tensor) -> Any:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(gg, out, 0), None


class _Relu(torch.autograd.Function):
    """``relu(x)`` whose backward is :class:`_ReluGrad` (same values and subgradient 0 at 0 as PyTorch)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, gO: Tensor) -> Any:
        (out,) = ctx.saved_tensors
        return _ReluGrad.apply(gO, out)


def _pooled_conv(W: Tensor, cols: Tensor, shape: torch.Size) -> Tensor:
    """``W`` ``(C, ...)`` applied per channel to ``cols`` ``(C, K, N*P)``: shape ``shape`` ``(N, C, *pooled)``."""
    C, K, _ = cols.shape
    return torch.bmm(W.reshape(C, 1, K), cols).view(C, shape[0], -1).transpose(0, 1).reshape(shape)


class _PooledConvT(torch.autograd.Function):
    """``dL/dW`` of :class:`_PooledConv`: ``(g (N, C, *pooled), cols (C, K, N*P)) -> (C, ...)``."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, cols: Tensor, wshape: torch.Size) -> Tensor:
        C = cols.shape[0]
        gc = g.transpose(0, 1).reshape(C, -1)
        # One matrix-vector product per channel: batched as bmm it ran 5x slower here (10 vs 52 ms).
        gW = torch.stack([torch.mv(cols[c], gc[c]) for c in range(C)])
        ctx.cols, ctx.shape = cols, g.shape  # an attribute: _PooledConv already saves (and counts) cols
        return gW.view(wshape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggW: Tensor) -> Any:
        return _pooled_conv(ggW, ctx.cols, ctx.shape), None, None


class _PooledConv(torch.autograd.Function):
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
# Gather a pooled convolution's input only while the gathered copy stays within this multiple of the
# unfolded input plus the convolution output it replaces (LeNet-5: 1.2x; a 64-channel stem: 10x).
_POOLED_CONV_MAX_GROWTH = 2


def _bind(names: Sequence[str], defaults: Sequence[Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    out = dict(zip(names, defaults))
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, tuple | list) else (int(v),) * n


class _CurvatureOps(TorchFunctionMode):
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
        out = _PooledConv.apply(W, b, _gather_cols(cx, W, meta, idx), idx.shape)
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
                out = _Conv.apply(a["input"], a["weight"], a["bias"], meta)
                return self._conv(out, a["input"], a["weight"], a["bias"], meta)
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
                    return self._conv(_Conv.apply(cx, Wf, bf, meta), cx, Wf, bf, meta)
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
        return func(*args, **kwargs)


# =========================================================================== the operator
def _select(layout: ParamLayout, params: str | Sequence[str] | None) -> tuple[TensorSpec, ...]:
    if params is None:
        return layout.specs
    names = [params] if isinstance(params, str) else list(params)
    if not names:
        raise ValueError("params is empty; pass None for all parameters or tensor / layer names")
    layers = layout.layers
    chosen: set[str] = set()
    for name in names:
        if name in layout:
            chosen.add(name)
        elif name in layers:
            chosen.update(s.name for s in layers[name])
        else:
            raise ValueError(
                f"{name!r} is neither a trainable tensor nor a layer; tensors: {list(layout.names)}, "
                f"layers: {list(layers)}"
            )
    return tuple(s for s in layout.specs if s.name in chosen)


def _as_batches(data: Any) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        data = [tuple(data)]
    try:
        batches = [tuple(b) for b in data]
    except TypeError:
        raise TypeError("data must be a pair (X, y) of tensors or an iterable of (X, y) batches") from None
    if not batches:
        raise ValueError("data holds no batch")
    for b in batches:
        if len(b) != 2 or not all(isinstance(t, Tensor) for t in b) or len(b[0]) != len(b[1]) or len(b[0]) == 0:
            raise ValueError("every batch must be a pair (X, y) of tensors with the same nonzero first dimension")
    return batches


def _named_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)} or a callable")
    return LOSSES[name]


class HessianOperator:
    """The Hessian of the full-dataset loss as a symmetric linear operator on flat parameter vectors.

    ``L(theta) = sum_b (B_b / N) loss_fn(model(X_b; theta), y_b)`` over the given batches (``loss_fn``
    must return the batch *mean*), so ``H = d^2 L / d theta^2`` is exact for batches of any sizes. Vectors
    live in the coordinates of the selected parameters: a flat ``(n,)`` vector in ``named_parameters()``
    order restricted to the subset. Parameters that get no gradient (unused) or a constant one have zero
    rows and columns.

    In eval mode the data is re-split into micro-batches of about 256 MB of saved activations (see the
    module notes; exact because the loss is a mean of per-sample terms); in train mode the batches are kept as
    given, since BatchNorm batch statistics define the function. The same holds in eval mode for BatchNorm
    layers without running statistics (``track_running_stats=False``): their batches are kept as given, and
    an explicit ``micro_batch_size`` is refused naming them. Dropout (and ``RReLU``) is always off: under
    ``bn_mode="train"`` only BatchNorm runs in train mode, so the operator is deterministic and symmetric.

    ``loss_fn`` may also return the batch *sum* (e.g. ``reduction="sum"``): detected once at construction
    (the loss of a batch repeated twice doubles), the Hessian is then of ``sum_i loss_i`` over all ``N``
    samples, the same for every micro-batch size. A loss that is neither a mean nor a sum is refused when
    the data is split into more than one batch, and a weighted mean (``CrossEntropyLoss``/``NLLLoss`` with
    class weights or ignored targets, or a loss whose value on 8 samples is not the size-weighted mean of
    its values on their halves) is not split into micro-batches. These checks see only the first batch's
    first 8 samples (and the targets), so they catch common cases, not every loss.

    Half-precision models (float16, bfloat16) are computed in float32 on float32 copies of the weights,
    buffers and data (half precision's ``eps`` is too coarse for Lanczos); ``notes`` says so. A model in
    train mode with BatchNorm or Dropout gets the eval-mode Hessian with a warning unless ``bn_mode`` is
    given.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the network (never modified; its weights are
            copied at construction) with ``loss_fn`` and ``data`` as a shorthand.
        loss_fn: Shorthand only: ``loss_fn(outputs, targets) -> scalar`` batch mean, e.g.
            ``nn.CrossEntropyLoss()``, or batch sum, or a loss name.
        data: Shorthand only: a pair ``(X, y)`` or an iterable of ``(X, y)`` batches; read once and kept.
        params: ``None`` for all trainable parameters, or tensor names and/or layer names (module paths
            such as ``"fc1"``, meaning its weight and bias).
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics); ``None`` means
            ``"eval"`` and warns if the model is in train mode with BatchNorm or Dropout.
        micro_batch_size: ``"auto"``, a size, or ``None`` to use the batches as given.
        memory_budget: Bytes the cached gradient graphs may take; above it graphs are rebuilt per product.
        cache: Force (``True``) or forbid (``False``) graph caching; ``None`` decides by the budget.
        dtype: Compute dtype (e.g. ``torch.float64`` for references); default the model's, float32 for a
            half-precision model.
        fast_ops: Use the double-backward-friendly convolution and eval BatchNorm (same values).
        channels_last: Run 2-D convolutions channels-last (``True``/``False``), or ``"auto"``: when most
            ``nn.Conv2d`` layers have at least 8 input channels (oneDNN ran those 1.1-1.4x faster so here,
            and LeNet-5's 1- and 6-channel layers slower). Only with ``fast_ops``.

    Attributes:
        notes: What was done beyond the plain definition (half-precision upcast, sum reduction, batches
            kept for batch statistics, Dropout turned off, train-mode model evaluated in eval mode).
        reduction: ``"mean"`` or ``"sum"``, as detected from ``loss_fn``.

    Raises:
        ValueError: On unknown parameter names, bad data, a micro-batch size in train mode or with
            untracked BatchNorm statistics, a half-precision ``dtype``, a loss that is neither a batch mean
            nor a batch sum over several batches, a weighted-mean loss with micro-batches, or a model
            without trainable parameters.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> op = HessianOperator(net, nn.CrossEntropyLoss(), (torch.randn(10, 3), torch.randint(0, 2, (10,))))
        >>> op.matvec(torch.randn(op.n)).shape
        torch.Size([26])
    """

    def __init__(
        self,
        problem: Problem | nn.Module,
        loss_fn: LossFn | str | None = None,
        data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
        params: str | Sequence[str] | None = None,
        *,
        bn_mode: BNMode | str | None = None,
        micro_batch_size: int | str | None = "auto",
        memory_budget: int | str = 2 * 2**30,
        cache: bool | None = None,
        dtype: torch.dtype | None = None,
        fast_ops: bool = True,
        channels_last: bool | str = "auto",
    ) -> None:
        self.problem: Problem | None = None  # set for problems the (X, y) kernels below do not take
        # data split across ranks: products are all-reduced (every rank makes the same calls)
        self._shard: Problem | None = problem if isinstance(problem, Problem) and problem.sharded else None
        if isinstance(problem, Problem):
            if loss_fn is not None or data is not None:
                raise TypeError("the first argument is a Problem, which holds its data and loss; pass neither")
            if bn_mode is None:
                bn_mode = problem.bn_mode
            dtype = dtype or (problem.dtype if problem.dtype not in _HALF else None)
            pairs = problem.pairs()
            model = problem.model
            if pairs is None:
                self.problem = problem
                data = None
            else:
                loss_fn, data = problem._loss_fn_for(pairs[0][1]), pairs
        else:
            model = problem
            if loss_fn is None or data is None:
                raise TypeError(
                    "HessianOperator needs a landscape.Problem, or a model with loss_fn and data: "
                    "HessianOperator(Problem(model, data, loss)) or HessianOperator(model, loss_fn, data)"
                )
            if isinstance(loss_fn, str):
                loss_fn = _named_loss(loss_fn)
        if self.problem is None:
            data = validation.validate_problem(model, data, loss_fn, dtype=dtype)  # weights, data, labels; cast
        else:
            validation.check_model(model)
        self.model = model
        self.loss_fn = loss_fn
        self.notes: list[str] = []
        self.kernels = KERNEL_NOTE
        self._random_modules = [m for m in model.modules() if isinstance(m, _RANDOM_MODULES)]
        if bn_mode is None:
            bn_mode = BNMode.EVAL
            moded = [n for n, m in model.named_modules() if m.training and isinstance(m, _MODE_DEPENDENT)]
            if moded:
                note = (
                    f"the model is in train mode, but the Hessian is of its eval-mode function (BatchNorm running "
                    f"statistics, Dropout off) for {_names(moded)}; pass bn_mode='eval' to say so, or "
                    "bn_mode='train' for BatchNorm batch statistics"
                )
                self.notes.append(note)
                warnings.warn(note, UserWarning, stacklevel=2)
        self.bn_mode: BNMode = parse_option(BNMode, bn_mode, "bn_mode")
        self.layout = ParamLayout.from_model(model)
        if self.layout.numel == 0:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        self.specs = _select(self.layout, params)
        self.index = torch.cat([torch.arange(s.start, s.stop) for s in self.specs])
        self.n = int(self.index.numel())
        named = dict(model.named_parameters())
        first = named[self.layout.specs[0].name]
        if dtype in _HALF:
            raise ValueError(
                f"dtype={dtype} is too coarse for the Hessian's Lanczos methods (eps {torch.finfo(dtype).eps:.2g}); "
                "pass dtype=torch.float32 (or leave dtype unset: half-precision models are computed in float32)"
            )
        self.model_dtype: torch.dtype = first.dtype
        self.dtype: torch.dtype = dtype or first.dtype
        if self.dtype in _HALF:
            self.dtype = torch.float32
            self.notes.append(f"the model is {first.dtype}; the Hessian is computed in float32 on float32 copies")
        self.device = first.device
        self.memory_budget = parse_bytes(memory_budget)
        self.fast_ops = fast_ops
        if channels_last == "auto":
            convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
            channels_last = 2 * sum(m.in_channels >= 8 for m in convs) > len(convs)
        elif not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        self.channels_last: bool = channels_last
        self.hvp_count = 0

        def cast(t: Tensor) -> Tensor:
            t = t.detach().to(self.device)
            return t.to(self.dtype).clone() if t.is_floating_point() else t.clone()

        selected = {s.name for s in self.specs}
        self._leaves = [cast(named[s.name]).requires_grad_(True) for s in self.specs]
        self._params = {s.name: cast(named[s.name]) for s in self.layout.specs if s.name not in selected}
        self._params.update({s.name: leaf for s, leaf in zip(self.specs, self._leaves)})
        # Frozen parameters and buffers ride in functional_forward's `buffers` (it merges both into one dict).
        self._extra = {k: cast(v) for k, v in model.named_parameters() if not v.requires_grad}
        self._extra.update({k: cast(v) for k, v in model.named_buffers()})

        if self.problem is not None:
            self._init_problem(self.problem, micro_batch_size, cache)
            return
        batches = [(cast(X), cast(y)) for X, y in _as_batches(data)]
        self.n_samples = sum(len(y) for _, y in batches) if self._shard is None else self._shard.total_samples
        if self.bn_mode is BNMode.TRAIN and self._random_modules:
            self.notes.append(f"{_names(self._random_modules, model)} off (eval mode): random masks have no Hessian")
        untracked = [  # batch statistics even in eval mode
            n for n, m in model.named_modules() if isinstance(m, _BATCH_NORM) and m.running_mean is None
        ]
        resplit = micro_batch_size is not None and self.bn_mode is BNMode.EVAL and not untracked
        several = len(batches) > 1 or resplit  # may be split: "auto" decides the size only below
        self.reduction, per_sample = self._detect_reduction(*batches[0], several=several)
        if isinstance(loss_fn, nn.CrossEntropyLoss | nn.NLLLoss) and loss_fn.reduction == "mean":
            # class weights and ignored targets anywhere in the data make a weighted mean
            ignored = any(not y.is_floating_point() and bool((y == loss_fn.ignore_index).any()) for _, y in batches)
            per_sample = per_sample and loss_fn.weight is None and not ignored
        if self.bn_mode is BNMode.TRAIN or untracked:
            if micro_batch_size not in (None, "auto"):
                why = "in train mode" if self.bn_mode is BNMode.TRAIN else f"of {_names(untracked)} (no running stats)"
                raise ValueError(
                    f"micro_batch_size would change the BatchNorm batch statistics {why}; pass None "
                    "(or 'auto') and give the batches you want the statistics of"
                )
            if self.bn_mode is BNMode.EVAL:
                self.notes.append(f"batches kept as given: {_names(untracked)} use batch statistics")
            chunks = batches
        elif micro_batch_size is None:
            chunks = batches
        else:
            if len({(b[0].shape[1:], b[1].shape[1:]) for b in batches}) == 1:
                # Same sample shapes: pool the batches so micro-batches need not respect their borders.
                batches = [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))]
            if micro_batch_size == "auto":
                size = self._auto_micro_batch(*max(batches, key=lambda b: len(b[1])))
            elif isinstance(micro_batch_size, int) and micro_batch_size > 0:
                size = micro_batch_size
            else:
                raise ValueError(f"micro_batch_size must be 'auto', a positive int or None, got {micro_batch_size!r}")
            chunks = [c for X, y in batches for c in zip(X.split(size), y.split(size))]
            if len(chunks) > 1 and not per_sample:
                raise ValueError(
                    f"loss_fn is not a {self.reduction} of per-sample terms (a weighted mean, e.g. class weights or "
                    "ignore_index?): its value on a batch differs from its values on the two halves combined, so "
                    "micro-batches would change the Hessian; pass micro_batch_size=None with the batches to use"
                )
        if self.reduction == "sum":
            self.notes.append("loss_fn sums over the batch: the Hessian is of the sum over all samples")
        self.micro_batch_size = max(len(c[1]) for c in chunks)
        self._chunks = chunks
        self._graphs: list[list[Tensor | None]] | None = None
        self._cache = cache
        self.cached: bool | None = None  # decided at the first product

    def _init_problem(self, problem: Problem, micro_batch_size: int | str | None, cache: bool | None) -> None:
        """The general path: the problem's batches (any form, possibly streamed) and its loss, as given."""
        if micro_batch_size not in (None, "auto"):
            raise ValueError(
                "micro_batch_size needs (X, y) tensor batches and an (outputs, targets) loss; this problem's "
                "batches are used as given (set the batch size of its data instead)"
            )
        self.reduction = "mean"
        self.n_samples = problem.n_samples
        self._total = problem.total_count()  # the denominator of the mean (tokens for a (sum, count) closure)
        self.notes.append(f"batches used as given ({problem.description}); loss {problem.loss_name}")
        self.micro_batch_size = 0
        self._chunks = []
        self._graphs = None
        self._cache = False if problem.streamed else cache  # streamed data: graphs are rebuilt per product
        self.cached = None

    def _batches(self) -> Iterable[Any]:
        """The chunks a product iterates: micro-batches ``(X, y)``, or the problem's batches."""
        return self._chunks if self.problem is None else self.problem.batches()

    # ------------------------------------------------------------------ graphs
    def _graph(self, X: Any, y: Tensor | None = None, count: list[int] | None = None) -> list[Tensor | None]:
        """Gradient of ``(B / N) * loss`` on one chunk (or problem batch ``X``) with its graph; ``None`` if constant."""
        extra = self._extra
        if self.bn_mode is BNMode.TRAIN:  # running-stat updates go to a private copy per chunk
            extra = {k: v.clone() for k, v in extra.items()}
        hooks: Any = contextlib.nullcontext()
        if count is not None:

            def pack(t: Tensor) -> Tensor:
                count[0] += t.numel() * t.element_size()
                return t

            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        ops = _CurvatureOps(self.channels_last) if self.fast_ops else contextlib.nullcontext()
        with torch.enable_grad(), hooks, ops, differentiable_kernels():
            if self.problem is not None:  # the problem's batch: its loss summed over the batch, over the total
                fm = FunctionalModel(self.model, {**extra, **self._params}, self.bn_mode is BNMode.TRAIN)
                total, _ = self.problem._batch_terms(fm, X)
                weighted = total / self._total
            else:
                assert y is not None  # without a problem, the chunks are (X, y) pairs
                loss = self._loss(X, y, extra)
                # a sum-reduced loss is already the chunk's share of the total
                weighted = loss * (len(y) / self.n_samples) if self.reduction == "mean" else loss
            grads = torch.autograd.grad(weighted, self._leaves, create_graph=True, allow_unused=True)
        return [g if g is not None and g.requires_grad else None for g in grads]

    def _forward(self, X: Tensor, buffers: dict[str, Tensor]) -> Any:
        """The model at the operator's weights in its BatchNorm mode, Dropout always off."""
        train = self.bn_mode is BNMode.TRAIN
        with preserved_mode(self.model, train):
            for m in self._random_modules if train else ():
                m.training = False  # restored by preserved_mode
            return functional_forward(self.model, self._params, X, buffers=buffers, train=None, layout=self.layout)

    def _loss(self, X: Tensor, y: Tensor, buffers: dict[str, Tensor], out: Any = None) -> Tensor:
        """``loss_fn`` of one chunk (or of the outputs ``out``), checked to be a scalar."""
        assert self.loss_fn is not None  # the (X, y) path: loss_fn is unset only for a problem's batches
        loss = self.loss_fn(self._forward(X, buffers) if out is None else out, y)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(
                f"loss_fn returned shape {tuple(getattr(loss, 'shape', ()))}; it must return a scalar, the batch "
                "mean (e.g. nn.CrossEntropyLoss() with the default reduction='mean') or the batch sum"
            )
        return loss

    def _detect_reduction(self, X: Tensor, y: Tensor, several: bool) -> tuple[str, bool]:
        """``"mean"`` or ``"sum"``, and whether the loss is that reduction of per-sample terms.

        A batch mean is unchanged when the batch is repeated twice, a sum doubles; a per-sample mean (sum)
        of a batch is the size-weighted mean (the sum) of its halves' values, which a weighted mean (class
        weights, ``ignore_index``) is not. One forward pass of a few samples at construction, outside the
        products.
        """
        assert self.loss_fn is not None  # the (X, y) path: loss_fn is unset only for a problem's batches
        s = min(len(y), 8)
        buffers = {k: v.clone() for k, v in self._extra.items()}  # train-mode statistics updates stay private
        with torch.no_grad():
            out = self._forward(X[:s], buffers)
            one = self._loss(X[:s], y[:s], buffers, out)
            if not isinstance(out, Tensor) or out.dim() == 0 or len(out) != s:
                return "mean", True  # outputs not one row per sample: the documented contract (a mean)
            h = s // 2
            try:
                two = self.loss_fn(torch.cat([out, out]), torch.cat([y[:s], y[:s]]))
                halves = (float(self.loss_fn(out[:h], y[:h])), float(self.loss_fn(out[h:], y[h:s]))) if h else None
            except (RuntimeError, ValueError, IndexError, TypeError):
                return "mean", True  # a loss that takes only whole batches: the documented contract
        a, b = float(one), float(two)
        if not (math.isfinite(a) and math.isfinite(b)):
            return "mean", True  # non-finite values are input validation's to report
        reduction = ""
        if abs(b - a) <= 1e-4 * abs(a):
            reduction = "mean"
        elif abs(b - 2 * a) <= 1e-4 * abs(a):
            reduction = "sum"
        if reduction:
            if halves is None:
                return reduction, True
            combined = (h * halves[0] + (s - h) * halves[1]) / s if reduction == "mean" else sum(halves)
            return reduction, abs(combined - a) <= 1e-4 * max(abs(a), *map(abs, halves), 1e-30)
        if several:
            raise ValueError(
                f"loss_fn is neither a batch mean nor a batch sum (a batch gives {a:.6g}, the same batch twice "
                f"{b:.6g}), so the Hessian of the whole data cannot be assembled from batches; use a mean or sum "
                "reduction, or pass one batch with micro_batch_size=None"
            )
        return "mean", True

    def _auto_micro_batch(self, X: Tensor, y: Tensor) -> int:
        """Micro-batch size whose saved activations are about ``_MICRO_BATCH_BYTES``."""
        if len(y) < 4 * _MIN_MICRO_BATCH:
            return len(y)
        s = _MIN_MICRO_BATCH
        small, large = [0], [0]
        self._graph(X[:s], y[:s], small)
        self._graph(X[: 2 * s], y[: 2 * s], large)
        per_sample = max((large[0] - small[0]) / s, 1.0)  # the difference cancels the weights' share
        return int(min(len(y), max(_MIN_MICRO_BATCH, _MICRO_BATCH_BYTES // per_sample)))

    def _ensure_graphs(self) -> None:
        if self.cached is not None:
            return
        count = [0]
        if self.problem is not None:
            chunks = list(self._batches())
            first = self._graph(chunks[0], None, count)
            size = chunks[0].size
        else:
            chunks = self._chunks
            first = self._graph(*chunks[0], count)
            size = len(chunks[0][1])
        estimate = count[0] * self.n_samples / size
        self.cached = bool(self._cache) if self._cache is not None else estimate <= self.memory_budget
        if self.cached:
            self._graphs = [first] + [self._graph(*((c, None) if self.problem is not None else c)) for c in chunks[1:]]

    # ------------------------------------------------------------------ products
    def matmat(self, V: Tensor) -> Tensor:
        """Hessian times a block of vectors.

        Args:
            V: Shape ``(n, k)``, any floating dtype.

        Returns:
            ``H @ V``, shape ``(n, k)``, in ``V``'s dtype (accumulated in float64).

        Raises:
            ValueError: If ``V`` has the wrong shape.
        """
        if V.dim() != 2 or V.shape[0] != self.n:
            raise ValueError(f"expected a matrix of shape ({self.n}, k), got {tuple(V.shape)}")
        k = V.shape[1]
        out = torch.zeros(self.n, k, dtype=torch.float64, device=self.device)
        self.hvp_count += k
        if k == 0:
            return out.to(V.dtype)
        self._ensure_graphs()
        Vc = V.detach().to(self.device, self.dtype)
        splits = [s.numel for s in self.specs]
        cols = [[c.view(s.shape) for c, s in zip(Vc[:, j].split(splits), self.specs)] for j in range(k)]
        for i, chunk in enumerate(self._batches()):
            if self.cached and self._graphs is not None:
                grads = self._graphs[i]
            else:
                grads = self._graph(chunk, None) if self.problem is not None else self._graph(*chunk)
            live = [j for j, g in enumerate(grads) if g is not None]
            if not live:
                continue
            outputs = [g for g in grads if g is not None]  # grads[j] for j in live
            for j, parts in enumerate(cols):
                hv = torch.autograd.grad(
                    outputs,
                    self._leaves,
                    grad_outputs=[parts[t] for t in live],
                    retain_graph=bool(self.cached) or j < k - 1,
                    allow_unused=True,
                )
                pos = 0
                for h, size in zip(hv, splits):
                    if h is not None:
                        out[pos : pos + size, j] += h.reshape(-1).to(torch.float64)
                    pos += size
        if self._shard is not None:
            out = distributed.all_reduce_sum([out])[0]
        return out.to(V.dtype)

    def matvec(self, v: Tensor) -> Tensor:
        """Hessian-vector product: ``(n,) -> (n,)`` in ``v``'s dtype.

        Raises:
            ValueError: If ``v`` has the wrong shape.
        """
        if v.dim() != 1:
            raise ValueError(f"expected a vector of shape ({self.n},), got {tuple(v.shape)}")
        return self.matmat(v[:, None])[:, 0]

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.n, self.n)

    @property
    def param_names(self) -> list[str]:
        """Names of the selected tensors, in vector order."""
        return [s.name for s in self.specs]

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (float64, symmetric) over the same products."""
        from scipy.sparse.linalg import LinearOperator

        def mm(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            y = self.matmat(torch.from_numpy(x.reshape(self.n, -1).copy())).cpu().numpy()
            return y.reshape(x.shape)

        return LinearOperator((self.n, self.n), matvec=mm, rmatvec=mm, matmat=mm, rmatmat=mm, dtype=np.float64)

    def dense(self) -> Tensor:
        """The full matrix, shape ``(n, n)`` float64, by ``n`` products (small models only).

        Raises:
            ValueError: If ``n > 20000``.
        """
        if self.n > 20000:
            raise ValueError(f"a dense Hessian of {self.n} parameters is too large; use products or a subset")
        return self.matmat(torch.eye(self.n, dtype=torch.float64))

    def to_full(self, v: Tensor) -> Tensor:
        """Embed subset coordinates into full parameter vectors (zeros elsewhere).

        Args:
            v: Shape ``(n,)`` or ``(n, k)``.

        Returns:
            Shape ``(numel,)`` or ``(numel, k)`` in ``v``'s dtype, ``numel`` the model's trainable size.
        """
        out = v.new_zeros((self.layout.numel, *v.shape[1:]))
        out[self.index] = v
        return out

    def __repr__(self) -> str:
        return (
            f"HessianOperator(n={self.n}, samples={self.n_samples}, chunks={len(self._chunks) or 'as given'}, "
            f"bn_mode={self.bn_mode.value!r}, cached={self.cached}, hvps={self.hvp_count})"
        )


def _as_operator(op: Any) -> HessianOperator:
    """The operator itself, or the operator of a :class:`~landscape.problem.Problem`."""
    if isinstance(op, Problem):
        return HessianOperator(op)
    validation.check_operator(op)
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
    progress: bool = False,
) -> EigenPairs:
    """Top-k eigenvalues and eigenvectors by block Lanczos with full reorthogonalization.

    Converged means every returned pair has a residual ``||H v - lambda v|| <= max(tol, 100 eps) * ||H||``
    (``eps`` of the compute dtype, ``||H||`` estimated by the largest Ritz value magnitude); the bound is
    in ``tolerance``. Error bounds add ``sqrt(n) eps ||H||`` for the rounding of the products (see
    :func:`landscape.curvature.lanczos.top_eigenpairs`).

    Args:
        op: The Hessian, or a :class:`~landscape.problem.Problem` (its Hessian is built).
        k: Number of eigenpairs.
        which: ``"LA"`` (largest), ``"LM"`` (largest magnitude, as power iteration) or ``"SA"``.
        tol: Relative residual tolerance of the stopping rule.
        max_steps: Product limit (default ``max(20 k, 100)``).
        seed: Seed of the start block.
        block: Lanczos block size (default ``min(k, 2)``): eigenvalues repeated up to ``block`` times show
            every copy; pass ``k`` to find any multiplicity. With ``v0``, the width of each expansion after
            the start block.
        v0: Warm start: start vectors ``(n, j)`` or ``(n,)`` in subset coordinates, e.g. the ``vectors`` of
            the eigenpairs at a nearby point (the previous snapshot of a trajectory). Same stopping rule, so
            the same accuracy in fewer products when the start is good.
        progress: Show a progress bar.

    Returns:
        Eigenvalues ``(k,)``, unit eigenvectors ``(n, k)`` in subset coordinates, residuals, error bounds,
        product count.
    """
    op = _as_operator(op)
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
        progress=progress,
    )


def hessian_directions(
    op: HessianOperator | Problem, k: int = 2, *, which: Which | str = Which.LA, tol: float = 1e-6, seed: int = 0
) -> Tensor:
    """Top Hessian eigenvectors as full-length parameter-space directions (e.g. for a plane slice).

    Args:
        op: The Hessian (possibly of a parameter subset), or a :class:`~landscape.problem.Problem`.
        k: Number of directions.
        which: Spectrum end, as in :func:`hessian_eigenpairs`.
        tol: Eigenvalue tolerance.
        seed: Seed of the start vector.

    Returns:
        Shape ``(k, numel)`` in the operator's dtype: unit vectors in the model's flat parameter layout,
        zero on parameters outside the subset, ordered by eigenvalue (largest first for ``"LA"``).
    """
    op = _as_operator(op)
    pairs = hessian_eigenpairs(op, k, which=which, tol=tol, seed=seed)
    return op.to_full(pairs.vectors).T.to(op.dtype).contiguous()


def hessian_trace(
    op: HessianOperator | Problem,
    n_products: int = 99,
    *,
    method: TraceMethod | str = TraceMethod.HUTCHPP,
    seed: int = 0,
) -> TraceEstimate:
    """Stochastic trace of the Hessian.

    Args:
        op: The Hessian, or a :class:`~landscape.problem.Problem`.
        n_products: Hessian-vector product budget.
        method: ``"hutchpp"`` (Meyer et al. 2021) or ``"hutchinson"`` (Rademacher probes).
        seed: Seed of the probes.

    Returns:
        Estimate, standard error and products used.
    """
    op = _as_operator(op)
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
            ``"hutchinson"`` and ``"hutchpp"``.
        trace_stderr: Standard errors of the same estimates.
        hvp_count: Hessian-vector products spent on everything in this result.
        bn_mode: ``"eval"`` or ``"train"``: which BatchNorm statistics the Hessian is of.
        n_params: Dimension of the Hessian.
        param_names: Tensors the Hessian covers.
        n_samples: Data points in the loss.
        provenance: Seed, data and settings; ``extra["notes"]`` lists what the operator did beyond the plain
            definition (e.g. a half-precision model computed in float32), ``extra["model_dtype"]`` and
            ``extra["reduction"]`` the model's dtype and the loss reduction.
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
        """A grid covering the nodes plus 6 sigma on each side, spacing at most sigma / 4.

        Returns:
            Shape ``(g,)``.
        """
        sigma = self.sigma if sigma is None else sigma
        used = self.nodes[self.weights > 0]
        lo, hi = float(used.min()) - 6 * sigma, float(used.max()) + 6 * sigma
        if n_points is None:
            n_points = int(min(200_000, max(1000, math.ceil(4 * (hi - lo) / sigma) + 1)))
        return np.linspace(lo, hi, n_points)

    def density(
        self, grid: np.ndarray | None = None, *, sigma: float | None = None, n_points: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalue density with Gaussian broadening.

        Args:
            grid: Points to evaluate at, shape ``(g,)``; default :meth:`grid`.
            sigma: Gaussian standard deviation; default :attr:`sigma`.
            n_points: Size of the default grid.

        Returns:
            ``(grid, density)``, each shape ``(g,)``; on the default grid it integrates to 1.
        """
        sigma = self.sigma if sigma is None else float(sigma)
        x = self.grid(n_points, sigma) if grid is None else np.asarray(grid, dtype=np.float64)
        return x, gaussian_density(self.nodes, self.weights, x, sigma)

    def spectral_measure(self) -> tuple[np.ndarray, np.ndarray]:
        """The SLQ estimate as a discrete measure: nodes and masses (summing to 1), shapes ``(p * m,)``."""
        return self.nodes.ravel(), self.weights.ravel() / self.nodes.shape[0]


def spectrum_of(
    op: HessianOperator | Problem,
    *,
    n_probes: int = 4,
    steps: int = 100,
    top_k: int = 5,
    trace_products: int = 0,
    tol: float = 1e-6,
    seed: int = 0,
    data_description: str = "",
    progress: bool = False,
    data: str | None = None,
) -> HessianSpectrum:
    """SLQ density, top eigenvalues and traces of a :class:`HessianOperator`.

    Args:
        op: The Hessian, or a :class:`~landscape.problem.Problem`.
        n_probes: SLQ probe vectors (PyHessian's ``n_v``).
        steps: Lanczos steps per probe (PyHessian's ``iter``).
        top_k: Top eigenvalues to compute (0 skips).
        trace_products: Product budget of each of Hutchinson and Hutch++ (0 skips both).
        tol: Eigenvalue tolerance for the top-k.
        seed: Seed of every random vector.
        data_description: Description of the data for the provenance (default: the problem's).
        progress: Show progress bars.
        data: Deprecated name of ``data_description``.

    Returns:
        The spectrum.
    """
    data_description = renamed(data_description or None, data, "data", "data_description") or ""
    op = _as_operator(op)
    if not data_description and op.problem is not None:
        data_description = op.problem.description
    start = op.hvp_count
    gen = torch.Generator().manual_seed(seed)
    steps = min(steps, op.n)
    basis_bytes = n_probes * steps * op.n * 8
    # Probes in lockstep share each graph pass; fall back to one at a time (and float32 vectors) if large.
    block = n_probes if basis_bytes <= op.memory_budget // 2 else 1
    basis_dtype = torch.float64 if basis_bytes // n_probes * block <= op.memory_budget // 2 else torch.float32
    nodes, weights = slq(
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
    trace = {"slq": float(op.n * np.mean((weights * nodes).sum(1)))}
    stderr = {"slq": float(op.n * np.std((weights * nodes).sum(1)) / math.sqrt(n_probes)) if n_probes > 1 else math.nan}
    top = bounds = residuals = np.zeros(0)
    if top_k > 0:
        pairs = hessian_eigenpairs(op, min(top_k, op.n), tol=tol, seed=seed + 1, progress=progress)
        top, bounds, residuals = pairs.values.numpy(), pairs.error_bounds.numpy(), pairs.residuals.numpy()
    if trace_products > 0:
        for method in TraceMethod:
            est = hessian_trace(op, trace_products, method=method, seed=seed + 2)
            trace[method.value], stderr[method.value] = est.estimate, est.stderr
    prov = Provenance.here(
        seed=seed,
        data=data_description or f"{op.n_samples} samples",
        model=type(op.model).__name__,
        n_probes=n_probes,
        steps=steps,
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


def hessian_spectrum(
    problem: Problem | nn.Module,
    loss_fn: LossFn | str | None = None,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
    *,
    params: str | Sequence[str] | None = None,
    bn_mode: BNMode | str | None = None,
    n_probes: int = 4,
    steps: int = 100,
    top_k: int = 5,
    trace_products: int = 0,
    tol: float = 1e-6,
    seed: int = 0,
    data_description: str = "",
    progress: bool = False,
    micro_batch_size: int | str | None = "auto",
    memory_budget: int | str = 2 * 2**30,
    cache: bool | None = None,
    dtype: torch.dtype | None = None,
    fast_ops: bool = True,
    channels_last: bool | str = "auto",
) -> HessianSpectrum:
    """Hessian eigenvalue density of a model's full-dataset loss (the Persistent Neurons Fig. 12 analysis).

    Builds a :class:`HessianOperator` and runs :func:`spectrum_of`.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the network (never modified) with ``loss_fn``
            and ``data``.
        loss_fn: Shorthand only: batch-mean (or batch-sum) loss ``loss_fn(outputs, targets) -> scalar`` or a
            loss name.
        data: Shorthand only: a pair ``(X, y)`` or an iterable of ``(X, y)`` batches.
        params: Parameter subset (tensor or layer names); ``None`` for all.
        bn_mode: ``"eval"`` or ``"train"``; ``None``: the problem's (``"eval"``, with a warning for a
            train-mode model given as the shorthand).
        n_probes: SLQ probes.
        steps: Lanczos steps per probe.
        top_k: Top eigenvalues to compute (0 skips).
        trace_products: Product budget of each trace estimator (0 skips).
        tol: Eigenvalue tolerance.
        seed: Seed of the random vectors.
        data_description: Text for the provenance (default: the problem's description).
        progress: Show progress bars.
        micro_batch_size: See :class:`HessianOperator`.
        memory_budget: See :class:`HessianOperator`.
        cache: See :class:`HessianOperator`.
        dtype: See :class:`HessianOperator`.
        fast_ops: See :class:`HessianOperator`.
        channels_last: See :class:`HessianOperator`.

    Returns:
        The spectrum.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op = HessianOperator(
            problem,
            loss_fn,
            data,
            params,
            bn_mode=bn_mode,
            micro_batch_size=micro_batch_size,
            memory_budget=memory_budget,
            cache=cache,
            dtype=dtype,
            fast_ops=fast_ops,
            channels_last=channels_last,
        )
    for w in caught:  # re-issued at the caller of hessian_spectrum
        warnings.warn(w.message, w.category, stacklevel=2)
    return spectrum_of(
        op,
        n_probes=n_probes,
        steps=steps,
        top_k=top_k,
        trace_products=trace_products,
        tol=tol,
        seed=seed,
        data_description=data_description,
        progress=progress,
    )
