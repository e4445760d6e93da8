"""The loss forms a :class:`~landscape.problem.Problem` accepts, and the accuracy count.

A loss is a name (:data:`LOSSES`), ``loss(outputs, targets)`` returning the batch mean, or a *closure*
``loss(model, batch)`` (:func:`is_closure` tells them apart) returning the batch mean or ``(sum, count)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from landscape._checks import InputTypeError, loss_kind
from landscape._options import check_choice

__all__ = [
    "LOSSES",
    "CLOSURE_NAMES",
    "is_closure",
    "loss_name",
    "class_targets",
    "check_scalar",
    "check_sum_count",
    "check_total",
    "default_loss_name",
    "correct_and_kept",
    "count_correct",
    "ignored_label",
    "weighted_mean",
    "weighted_terms",
    "weighted_count",
    "weighted_form",
    "sum_reduced",
]

LOSSES: dict[str, Callable[..., Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "nll": F.nll_loss,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "huber": F.huber_loss,
    "smooth_l1": F.smooth_l1_loss,
    "bce": F.binary_cross_entropy,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}
"""The loss names a :class:`~landscape.problem.Problem` accepts (batch means)."""

CLOSURE_NAMES = ("model", "fmodel", "net", "module", "network")
"""First-parameter names that make a callable loss a closure ``loss(model, batch)`` under ``loss_form="auto"``."""


def is_closure(fn: Any, form: str) -> bool:
    """Whether the loss ``fn`` is a closure ``loss(model, batch)`` under ``loss_form=form``; checks both.

    ``"batch"``: always; ``"outputs"``: never; ``"auto"``: when its first parameter is named as in
    :data:`CLOSURE_NAMES` or annotated ``nn.Module``.

    Raises:
        ValueError: On an unknown ``form`` or loss name.
        InputTypeError: On a loss that is neither a name nor callable, or a name under ``form="batch"``.
    """
    form = check_choice(form, ("auto", "outputs", "batch"), "loss_form")
    if isinstance(fn, str) and fn not in LOSSES:
        raise ValueError(f"unknown loss {fn!r}; valid: {sorted(LOSSES)}, a callable or a closure")
    if fn is not None and not isinstance(fn, str) and not callable(fn):
        raise InputTypeError(f"loss must be a name or a callable, got {type(fn).__name__}")
    if form == "batch":
        if not callable(fn):
            raise InputTypeError(
                f"loss_form='batch' needs a closure loss(model, batch); got {fn!r}: pass the callable, or a loss "
                "name with loss_form='auto'"
            )
        return True
    if form == "outputs" or isinstance(fn, str | nn.Module) or fn is None:
        return False
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and (params[0].name in CLOSURE_NAMES or params[0].annotation in (nn.Module, "nn.Module"))


def loss_name(fn: Any, closure: bool) -> str:
    """A loss's name for provenance: the name given, its ``__name__`` (``"closure:<name>"`` for a closure)."""
    if isinstance(fn, str):
        return fn
    if fn is None:
        return "auto (cross_entropy for integer targets, else mse)"
    name = getattr(fn, "__name__", type(fn).__name__)
    return f"closure:{name}" if closure else name


def class_targets(y: Tensor | None) -> bool:
    """Whether targets are class labels (integer or bool; not floating, not complex), as the default loss decides."""
    return y is not None and not (y.is_floating_point() or y.is_complex())


def default_loss_name(y: Tensor | None) -> str:
    """The package's one default loss for targets ``y``: ``"cross_entropy"`` for class labels, ``"mse"`` otherwise."""
    return "cross_entropy" if class_targets(y) else "mse"


def check_scalar(r: Any) -> Tensor:
    """``r`` if it is a 0-d tensor (what a loss must return).

    Raises:
        ValueError: Naming what the loss returned.
    """
    if not isinstance(r, Tensor) or r.dim() != 0:
        raise ValueError(
            f"the loss returned {type(r).__name__} of shape {tuple(getattr(r, 'shape', ()))}; it must return a "
            "scalar tensor (the batch mean), or a closure may return (sum, count)"
        )
    return r


def check_sum_count(r: Any) -> tuple[Tensor, float]:
    """A closure's ``(sum, count)`` if it is one: a scalar tensor and a number.

    Raises:
        ValueError: Naming what the closure returned.
    """
    if len(r) != 2:
        raise ValueError(
            f"the closure returned a {type(r).__name__} of {len(r)} item(s); it must return the batch mean (a scalar "
            "tensor) or a pair (sum, count)"
        )
    total, count = r
    if not isinstance(total, Tensor) or total.dim() != 0:
        raise ValueError(
            f"the closure's sum is a {type(total).__name__} of shape {tuple(getattr(total, 'shape', ()))}; it must be "
            "a scalar tensor (reduce the per-sample losses with .sum())"
        )
    return total, float(count)


def check_total(n: float) -> float:
    """``n``, the denominator of a mean over the data, if positive.

    Raises:
        ValueError: On a total count of zero or less (a closure's ``(sum, count)`` counted nothing).
    """
    if not n > 0:
        raise ValueError(
            f"the loss's counts sum to {n:g} over the data; a closure's (sum, count) must count at least one unit "
            "(sample, token) in all"
        )
    return n


def sum_reduced(fn: Any) -> bool:
    """Whether ``fn`` is a torch loss module reduced by sum (``reduction="sum"``): its batch value is a sum.

    The package's loss of such a module is its sum over the whole data (as the Hessian operator's, which detects
    a sum however it is written), not a mean: :class:`~landscape.problem.Problem` counts each batch as its share
    of the samples so that the counts add up to one.
    """
    return isinstance(fn, nn.modules.loss._Loss) and getattr(fn, "reduction", None) == "sum"


def weighted_mean(fn: Any, targets: Iterable[Tensor | None]) -> bool:
    """Whether the batch-mean loss ``fn`` weights the samples of these targets unequally.

    torch's cross-entropy and NLL loss (``reduction="mean"``) divide by the summed class weights of the targets
    they do not ignore, not by the batch size: so with class weights, or when their ``ignore_index`` (-100 by
    default) occurs. Such a batch's mean times its size is not a sum over its samples, and the mean over the
    data depends on how it is cut into batches.
    """
    return weighted_form(fn) is not None and any(weighted_count(fn, y) is not None for y in targets)


def weighted_form(fn: Any) -> tuple[Callable[..., Tensor], Tensor | None, int, dict[str, Any]] | None:
    # (torch function, class weights, ignore_index, further keywords) of a mean-reduced cross-entropy / NLL loss
    if isinstance(fn, nn.CrossEntropyLoss):
        if fn.reduction != "mean":
            return None
        return F.cross_entropy, fn.weight, fn.ignore_index, {"label_smoothing": fn.label_smoothing}
    if isinstance(fn, nn.NLLLoss):
        return (F.nll_loss, fn.weight, fn.ignore_index, {}) if fn.reduction == "mean" else None
    if fn is F.cross_entropy or fn is F.nll_loss:
        return fn, None, -100, {}
    return None


def weighted_terms(fn: Any, out: Tensor, y: Tensor | None) -> tuple[Tensor, float] | None:
    """``(sum, count)`` of a batch whose mean :func:`weighted_mean` flags; ``None`` when mean times size is exact.

    Summed over any cut of the data into batches, ``sum / count`` is the loss of the whole data in one call.
    torch's mean divides the weighted sum of the per-target losses by ``sum_i w[y_i]`` over the targets not
    ignored (``w`` the class weights, 1 without); both are returned, so a mean over batches needs no batch size.

    Args:
        fn: The batch-mean loss; ``nn.CrossEntropyLoss`` / ``nn.NLLLoss`` (``reduction="mean"``) and
            ``F.cross_entropy`` / ``F.nll_loss`` are the losses weighted this way.
        out: Outputs ``(N, C)`` or ``(N, C, d1, ...)``.
        y: Class-index targets ``(N,)`` or ``(N, d1, ...)``.

    Returns:
        The weighted sum of the batch's losses (a 0-d tensor, differentiable) and the summed weights; ``None``
        for other losses and for a batch without class weights or ignored targets.
    """
    count = weighted_count(fn, y)
    if count is None:
        return None
    form = weighted_form(fn)
    assert form is not None  # weighted_count returned a count
    f, weight, ignore, extra = form
    return f(out, y, weight=weight, ignore_index=ignore, reduction="sum", **extra), count


def weighted_count(fn: Any, y: Tensor | None) -> float | None:
    """The count :func:`weighted_terms` returns for these targets (no outputs needed), or ``None`` likewise."""
    form = weighted_form(fn)
    if form is None or y is None or not class_targets(y):
        return None
    _, weight, ignore, _ = form
    dropped = y == ignore
    if weight is None and not bool(dropped.any()):
        return None
    kept = y[~dropped]
    return float(kept.numel()) if weight is None else float(weight.to(kept.device)[kept].double().sum())


def ignored_label(fn: Any) -> int | None:
    """The class label the loss ``fn`` skips (its ``ignore_index``), or ``None`` for a loss that skips none.

    torch's cross-entropy and NLL losses (modules and functions) skip it; samples with that label count in
    neither the loss nor the accuracy. The engine's loss names (``"cross_entropy"``) skip none.
    """
    return loss_kind(fn)[1]


def correct_and_kept(out: Tensor, y: Tensor, ignore: int | None = None) -> tuple[float, float]:
    """``(correct, kept)``: :func:`count_correct` over the targets not equal to ``ignore``, and their number.

    For K-dimensional outputs ``(N, C, d1, ...)`` both are counted in samples (positions divided by the
    positions per sample), so ``correct / kept`` is the accuracy over the kept positions; without ignored
    targets ``kept`` is ``N`` and ``correct`` is :func:`count_correct`.
    """
    if ignore is None:
        return count_correct(out, y), float(y.shape[0])
    hit, keep = _hits(out, y), y != ignore
    per = max(1, y[0].numel()) if y.dim() > 1 else 1  # positions per sample
    return float((hit & keep).sum()) / per, float(keep.sum()) / per


def count_correct(out: Tensor, y: Tensor) -> float:
    """Correctly classified samples of a batch: ``argmax`` over the class axis equal to the target.

    For outputs ``(N, C, d1, ...)`` with targets ``(N, d1, ...)`` (the K-dimensional form of ``cross_entropy``,
    e.g. a language model's words), each sample counts its fraction of correct positions.
    """
    hit = _hits(out, y)
    if _k_dimensional(out, y):
        return float(hit.flatten(1).float().mean(1).sum())
    return int(hit.sum())


def _k_dimensional(out: Tensor, y: Tensor) -> bool:
    # outputs (N, C, d1, ...) with targets (N, d1, ...): the classes are on axis 1
    return out.dim() > 2 and y.dim() == out.dim() - 1


def _hits(out: Tensor, y: Tensor) -> Tensor:
    """Whether each target is its output's ``argmax`` over the class axis (shaped as ``y``).

    One output on the class axis is a binary classifier's logit ``z`` (``bce_with_logits``), whose class is ``z > 0``,
    as :mod:`landscape.analyze.distance` reads it: the argmax of one entry is class 0 for every sample.
    """
    axis = 1 if _k_dimensional(out, y) else -1
    if out.shape[axis] == 1 and out.dim() == y.dim() + 1:
        return (out.select(axis, 0) > 0).long() == y
    return out.argmax(dim=axis) == y
