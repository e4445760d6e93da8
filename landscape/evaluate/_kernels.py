"""Exact fast kernels of the evaluation engine (private), and the function mode for untraceable models.

- 2x2 stride-2 max pooling as two ``torch.maximum`` of strided views (:func:`maxpool2`; ``F.max_pool2d`` is
  ~10x slower on this CPU, the result is the same);
- ``tanh`` through NumPy's SIMD kernel (:func:`tanh_`, 7x ``torch.tanh`` on this CPU, within 2 ulp);
- :class:`FastOpsMode`, a ``TorchFunctionMode`` that routes plain 2x2 ``F.max_pool2d`` calls to
  :func:`maxpool2` for models :mod:`torch.fx` cannot trace (they run through the pointwise executor).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


def maxpool2(h: Tensor, out: tuple[Tensor, Tensor] | Tensor | None = None) -> Tensor:
    """2x2 stride-2 max pooling of ``(..., H, W)``: two ``torch.maximum`` of strided views (exact).

    ``out``: the final ``(..., H/2, W/2)`` result buffer, or a pair (intermediate ``(..., H/2, W)``,
    final). Odd sizes drop their last row/column (floor mode, like ``F.max_pool2d``).
    """
    H, W = h.shape[-2] // 2 * 2, h.shape[-1] // 2 * 2
    if (H, W) != tuple(h.shape[-2:]):
        h = h[..., :H, :W]
    mid, fin = (out if isinstance(out, tuple) else (None, out)) if out is not None else (None, None)
    a = (
        torch.maximum(h[..., 0::2, :], h[..., 1::2, :], out=mid)
        if mid is not None
        else torch.maximum(h[..., 0::2, :], h[..., 1::2, :])
    )
    return (
        torch.maximum(a[..., 0::2], a[..., 1::2], out=fin)
        if fin is not None
        else torch.maximum(a[..., 0::2], a[..., 1::2])
    )


def tanh_(t: Tensor) -> Tensor:
    """In-place ``tanh``; on contiguous CPU float tensors through NumPy's SIMD kernel.

    Measured here on float32: 0.36 ns per element against 2.6 for ``torch.tanh_`` (which the tanh
    MLP's planes spent half their time in), largest relative error to float64 ``tanh`` 1.1e-7
    against 6e-8 (2 units in the last place instead of 1).
    """
    if (
        t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and t.is_contiguous()
        and not t.requires_grad
    ):
        a = t.numpy()
        np.tanh(a, out=a)
        return t
    return torch.tanh_(t)


def tanh_copy(t: Tensor) -> Tensor:
    """Out-of-place :func:`tanh_`."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not t.requires_grad:
        return tanh_(t.contiguous().clone() if not t.is_contiguous() else t.clone())
    return torch.tanh(t)


def _two(v: Any) -> bool:
    return v in (2, (2, 2), [2, 2])


def is_pool2(
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> bool:
    """Are these ``max_pool2d`` arguments plain 2x2 stride-2 pooling (what :func:`maxpool2` computes)?"""
    return (
        _two(kernel_size)
        and (stride is None or _two(stride) or stride == [] or stride == ())
        and padding in (0, (0, 0), [0, 0])
        and dilation in (1, (1, 1), [1, 1])
        and not ceil_mode
        and not return_indices
    )


_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}


def _pool_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """``max_pool2d``'s arguments by name (no ``inspect``: this runs on every call), or ``None``."""
    if len(args) > len(_POOL_ARGS) or set(kwargs) - set(_POOL_ARGS):
        return None
    b = {**_POOL_DEFAULTS, **dict(zip(_POOL_ARGS, args)), **kwargs}
    return b if "input" in b and "kernel_size" in b else None


class FastOpsMode(TorchFunctionMode):
    """Routes plain 2x2 ``F.max_pool2d`` calls (also from ``nn.MaxPool2d``) to :func:`maxpool2` (exact)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204, D105
        kwargs = kwargs or {}
        if func is F.max_pool2d or func is torch.max_pool2d:
            b = _pool_args(args, kwargs)
            if (
                b is not None
                and isinstance(b["input"], Tensor)
                and b["input"].dim() in (3, 4)
                and is_pool2(
                    b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"], b["return_indices"]
                )
            ):
                return maxpool2(b["input"])
        return func(*args, **kwargs)


def uses_pool2(model: nn.Module, call: Callable[[], Any]) -> bool:
    """Whether ``call()`` (a forward of ``model``) uses plain 2x2 max pooling (then :class:`FastOpsMode` pays)."""
    seen = [False]

    class Probe(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if func is F.max_pool2d or func is torch.max_pool2d:
                b = _pool_args(args, kwargs or {})
                if b is not None:
                    seen[0] |= is_pool2(
                        b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"], b["return_indices"]
                    )
            return func(*args, **(kwargs or {}))

    try:
        with Probe():
            call()
    except Exception:  # noqa: BLE001 - the probe only decides whether to use the mode
        return False
    return seen[0]
