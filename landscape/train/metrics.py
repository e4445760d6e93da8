"""What the loop measures: a dataset's mean loss and accuracy, the default loss, correct predictions per epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.validation import is_tensor_pair

if TYPE_CHECKING:
    from landscape.problem import Problem
    from landscape.train.loop import DataLike

__all__ = ["evaluate_dataset"]


def evaluate_dataset(
    problem: Problem | nn.Module,
    data: DataLike | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    *,
    batch_size: int | None = 1024,
    accuracy: bool = True,
) -> dict[str, float]:
    """Mean loss (and accuracy for class targets) over a dataset, in eval mode, no grad: the Problem's mean loss.

    The model is never modified (evaluated through :class:`~landscape.problem.Problem`). Batches are weighted
    by their size.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the model with ``data`` and ``loss_fn``.
        data: Shorthand only: a tensor pair ``(X (N, ...), y (N,) or (N, k))`` or an iterable of batches.
        loss_fn: Shorthand only: a mean-reduced loss ``loss_fn(outputs, targets)`` or a name (a torch loss module
            with ``reduction="sum"``: the loss is the sum over the data); default cross-entropy for integer
            targets, MSE otherwise (the package-wide default).
        batch_size: Batch size for a tensor pair (``None``: one batch).
        accuracy: Also compute accuracy (when the targets are class indices).

    Returns:
        ``{"loss": ..., "accuracy": ...}`` (accuracy only when requested and targets are integer).

    Raises:
        InputError: On empty data, NaN/inf in the data or weights, or class labels outside the output
            width (see :mod:`landscape.validation`; inputs are cast to the model's dtype).
    """
    from landscape.problem import Problem, as_problem

    prob = as_problem(problem, data, loss_fn, batch_size=None if isinstance(problem, Problem) else batch_size)
    metrics = prob.default_metrics() if accuracy else ("loss",)
    if "accuracy" not in metrics:
        return {"loss": float(prob.loss())}
    out = prob.evaluate(prob.theta0[None], metrics)
    return {k: float(v[0]) for k, v in out.items()}


def default_loss(data: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """The package-wide default loss: cross-entropy for integer targets, MSE for floating ones.

    Reads the targets of a tensor pair, or of the first batch of re-iterable data (a one-shot iterator is
    not read: cross-entropy).
    """
    y = None
    if is_tensor_pair(data):
        y = data[1]
    elif isinstance(data, Iterable) and iter(data) is not data:
        first = next(iter(data), None)
        if isinstance(first, tuple | list) and len(first) >= 2 and isinstance(first[-1], Tensor):
            y = first[-1]
    floating = y is not None and (y.is_floating_point() or y.is_complex())
    return nn.functional.mse_loss if floating else nn.functional.cross_entropy


def resolve_loss(loss_fn: Any, data: Any) -> Callable[[Tensor, Tensor], Tensor]:
    from landscape._loss import LOSSES

    if loss_fn is None:
        return default_loss(data)
    if isinstance(loss_fn, str):
        if loss_fn not in LOSSES:
            raise ValueError(f"unknown loss {loss_fn!r}; valid: {sorted(LOSSES)} or a callable")
        return LOSSES[loss_fn]
    return loss_fn


_NUMPY_ARGMAX = (torch.float32, torch.float64, torch.float16)  # what numpy holds as it is (no bfloat16)


def _numpy_count(o: Tensor, t: Tensor, ignore: int | None) -> tuple[float, float]:
    """:func:`~landscape._loss.correct_and_kept` of ``o (N, C)``, ``t (N,)`` through numpy's ``argmax``.

    The same count: numpy's ``argmax`` also returns the first of tied maxima and the first NaN. Under callgrind
    it takes 0.6 of torch's instructions for the 1,088 ten-wide rows of a digits epoch (torch's ``argmax`` reduces a
    short last axis one element at a time: about 180 instructions a row).
    """
    hit = o.numpy().argmax(1) == t.numpy()
    if ignore is None:
        return float(np.count_nonzero(hit)), float(t.shape[0])
    keep = t.numpy() != ignore
    return float(np.count_nonzero(hit & keep)), float(np.count_nonzero(keep))


class CorrectCounter:
    """Counts correct class predictions (``argmax == target``) over an epoch, many steps at a time.

    Samples labelled with the loss's ``ignore_index`` count neither as correct nor in the total.

    The loop appends each step's outputs and targets to ``outs`` / ``ys`` (a list append, where counting at
    once costs four tensor ops and a sync per step); :meth:`reduce` concatenates them and counts in one go,
    every ``limit`` steps (at most about ``max_elements`` output entries held) and at the end of the epoch.
    The outputs are held as the model returned them (``backward`` has already freed what their graph
    saved); counting runs without grad. The count is the same as counting step by step (fractional per sample
    for K-dimensional outputs: :func:`landscape.problem.count_correct`).
    """

    max_elements = 1 << 18  # about 1 MiB of float32 outputs held at most

    def __init__(self, ignore: int | None = None) -> None:
        self.ignore = ignore  # the loss's ignore_index: samples with this label are not counted
        self.count: float = 0  # fractional with K-dimensional outputs (count_correct: per-position means)
        self.kept: float = 0  # samples counted (in samples, as ``count``)
        self.outs: list[Tensor] = []
        self.ys: list[Tensor] = []
        self.limit = 0  # steps per reduction, from the first output (0: not known yet)
        self.seen = False  # whether any step had class targets (an accuracy of 0 is still one)

    def set_limit(self, out: Tensor) -> None:
        self.limit = max(1, self.max_elements // max(1, out.numel()))

    def reduce(self) -> float:
        outs, ys = self.outs, self.ys
        if outs:
            from landscape._loss import correct_and_kept

            self.seen = True
            with torch.no_grad():
                try:
                    o, t = torch.cat(outs), torch.cat(ys)
                    batched = o.dim() == 2 and t.dim() == 1 and o.shape[0] == t.shape[0]
                except RuntimeError:  # different widths, dims or devices: count step by step
                    batched = False
                if batched and o.device.type == "cpu" and o.dtype in _NUMPY_ARGMAX and not t.is_floating_point():
                    hit, kept = _numpy_count(o, t, self.ignore)
                elif batched:
                    hit, kept = correct_and_kept(o, t, self.ignore)
                else:
                    pairs = [correct_and_kept(o, t, self.ignore) for o, t in zip(outs, ys) if o.dim() >= 2]
                    hit, kept = sum(h for h, _ in pairs), sum(k for _, k in pairs)
                self.count += hit
                self.kept += kept
            outs.clear()
            ys.clear()
        return self.count

    def result(self) -> float | None:
        """The epoch's accuracy over the samples not ignored, or ``None`` when no step had class targets."""
        count = self.reduce()
        return (count / self.kept if self.kept else 0.0) if self.seen else None
