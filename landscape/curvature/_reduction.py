"""Whether a loss over micro-batches is the loss of the whole data: the check behind the operator's re-split.

:class:`~landscape.curvature.hessian.HessianOperator` re-splits ``(X, y)`` data into micro-batches and weights
each by its size, which is exact only for a per-sample mean (or sum). Its first check reads a few samples;
:func:`splits_exactly` reads all of them, once, at construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["splits_exactly"]


def splits_exactly(
    forward: Callable[[Tensor], Any],
    loss_fn: Callable[..., Any],
    chunks: list[tuple[Tensor, Tensor]],
    mean: bool,
) -> bool:
    """Whether the loss of every two consecutive chunks together is the size-weighted mean (or the sum) of theirs.

    The operator's first check looks at the first few samples only, so a weighted mean whose weights vary later
    passed it (ignored targets past them, class weights on data sorted by class; micro-batches then changed
    the Hessian by 10-50%). For a mean weighting its samples by ``w_i``, chunks ``A`` and ``B`` pass iff their
    losses are equal or their mean weights are (the joint loss is ``(W_A L_A + W_B L_B) / (W_A + W_B)``), so
    all consecutive pairs passing means every chunk has the same mean weight, and the size-weighted mean of
    the chunks' losses is the loss of the whole data.

    Args:
        forward: The model at the operator's weights: inputs ``(B, ...)`` to outputs (buffers left unchanged).
        loss_fn: The batch loss ``loss_fn(outputs, targets) -> scalar``.
        chunks: The micro-batches ``(X, y)``, in order.
        mean: ``True`` for a batch-mean loss, ``False`` for a batch sum.

    Returns:
        ``False`` if some pair disproves it (a NaN loss too: a chunk whose targets are all ignored is 0 / 0);
        ``True`` otherwise, and for outputs that are not one row per sample (the documented contract). One
        forward pass over the data without a graph; two chunks' outputs in memory at a time.
    """
    last: tuple[Tensor, Tensor, float] | None = None
    with torch.no_grad():
        for X, y in chunks:
            out = forward(X)
            if not isinstance(out, Tensor) or out.dim() == 0 or len(out) != len(y):
                return True
            value = float(loss_fn(out, y))
            if last is not None:
                out0, y0, value0 = last
                try:
                    joint = float(loss_fn(torch.cat([out0, out]), torch.cat([y0, y])))
                except (RuntimeError, ValueError, IndexError, TypeError):
                    joint = None  # chunks of different sample shapes: this pair is not compared
                n0, n1 = len(y0), len(y)
                combined = (n0 * value0 + n1 * value) / (n0 + n1) if mean else value0 + value
                if joint is not None and not abs(joint - combined) <= 1e-4 * max(abs(joint), abs(combined), 1e-30):
                    return False
            last = (out, y, value)
    return True
