"""The tensor-level checks behind :mod:`landscape.validation`: errors, loss kinds, weights, inputs, targets, labels.

Plain functions on one tensor or one model, each refusing bad input with an :class:`InputError` that names the
argument and the fix (the policy is in :mod:`landscape.validation`'s docstring). :mod:`landscape.validation`
re-exports every name here and adds the checks of whole data (batches, pairs, loaders); import them from there.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "InputError",
    "InputTypeError",
    "InputWarning",
    "LossKind",
    "loss_kind",
    "model_dtype",
    "floating_reference",
    "describe_nonfinite",
    "check_finite",
    "check_model",
    "check_vector",
    "check_labels",
    "normalize_inputs",
    "normalize_targets",
    "match_regression_shape",
    "check_operator",
]


class InputError(ValueError):
    """Bad input to a public function: the message names the argument, what was expected and given, and the fix."""


class InputTypeError(InputError, TypeError):
    """Input of a kind the package cannot use (e.g. complex data); also a :class:`TypeError`."""


class InputWarning(UserWarning):
    """A note that input was normalized (integer images cast to float, ``(N, 1)`` labels squeezed)."""


class LossKind(str, enum.Enum):
    """What a loss expects of its targets."""

    CLASSIFICATION = "classification"  # integer class labels (N,) or class probabilities (N, C)
    REGRESSION = "regression"  # floating targets shaped like the outputs
    CUSTOM = "custom"  # unknown: floating targets cast, integer ones kept


_CLASSIFICATION_FNS = {F.cross_entropy, F.nll_loss}
_REGRESSION_FNS = {
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.huber_loss,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
}
_REGRESSION_NAMES = ("mse", "l1", "huber", "smooth_l1", "bce", "bce_with_logits")  # the loss names of _REGRESSION_FNS
_CLASSIFICATION_MODULES = (nn.CrossEntropyLoss, nn.NLLLoss)
_REGRESSION_MODULES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss)


def loss_kind(loss_fn: Any) -> tuple[LossKind, int | None]:
    """What targets ``loss_fn`` expects, and the label it ignores.

    Args:
        loss_fn: A loss callable, module, or a loss name (``"cross_entropy"``, ``"nll"``, ``"mse"``, ``"l1"``, ...).

    Returns:
        ``(kind, ignore_index)``; ``ignore_index`` is the label a classification loss skips (``-100`` for
        torch's defaults), ``None`` otherwise.
    """
    if loss_fn in ("cross_entropy", "nll"):
        return LossKind.CLASSIFICATION, None  # the evaluation engine's own cross-entropy has no ignore_index
    if loss_fn in _REGRESSION_NAMES:
        return LossKind.REGRESSION, None
    if isinstance(loss_fn, _CLASSIFICATION_MODULES):
        return LossKind.CLASSIFICATION, int(loss_fn.ignore_index)
    if isinstance(loss_fn, _REGRESSION_MODULES):
        return LossKind.REGRESSION, None
    try:
        if loss_fn in _CLASSIFICATION_FNS:
            return LossKind.CLASSIFICATION, -100
        if loss_fn in _REGRESSION_FNS:
            return LossKind.REGRESSION, None
    except TypeError:  # unhashable callable
        pass
    return LossKind.CUSTOM, None


# --------------------------------------------------------------------------- model
def floating_reference(model: nn.Module) -> Tensor | None:
    """The model's first floating parameter, else its first floating buffer (``None``: neither)."""
    return next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The model's floating dtype: its first floating parameter's, else first floating buffer's, else float32."""
    ref = floating_reference(model)
    return ref.dtype if ref is not None else torch.float32


def describe_nonfinite(t: Tensor) -> str | None:
    """``"3 NaN and 1 inf of 40 elements (first at index (0, 2))"``, or ``None`` if ``t`` is all finite."""
    if not (t.is_floating_point() or t.is_complex()):
        return None
    if bool(torch.isfinite(t.detach().sum())):
        # A NaN or inf element makes the sum NaN or inf (a finite sum can also overflow: then the exact test below
        # decides), so a finite sum means every element is finite: one pass without a mask, ~20x faster than
        # isfinite(t).all() on a 2.4M-float dataset, which every Problem checks once.
        return None
    fin = torch.isfinite(t)
    if bool(fin.all()):
        return None
    nan = int(torch.isnan(t).sum())
    inf = int((~fin).sum()) - nan
    first = tuple(int(i) for i in (~fin).nonzero()[0].tolist())
    parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} inf"] * bool(inf)
    return f"{' and '.join(parts)} of {t.numel()} elements (first at index {first})"


def check_finite(t: Tensor, name: str, fix: str = "") -> None:
    """Refuse NaN/inf in ``t``.

    Args:
        t: Any tensor (integer tensors pass).
        name: What ``t`` is, as the user knows it, e.g. ``"data: inputs of batch 3"``.
        fix: What to do about it (appended to the message).

    Raises:
        InputError: Naming ``name``, the NaN and inf counts and the first position.
    """
    what = describe_nonfinite(t)
    if what is not None:
        raise InputError(f"{name} holds {what}; expected finite values. {fix or 'Clean or drop those values.'}")


def check_model(model: nn.Module, argname: str = "model", *, buffers: bool = True, trainable: bool = True) -> None:
    """Refuse a model whose parameters (or buffers) hold NaN/inf, naming each bad tensor.

    Args:
        model: The network.
        argname: Its argument name in the calling function.
        buffers: Also check buffers (BatchNorm running statistics).
        trainable: Also check trainable parameters (``False``: only frozen ones, for analyzers that
            evaluate at other points and use the model's frozen values and buffers only).

    Raises:
        InputTypeError: If ``model`` is not a module (arguments given in another order, say).
        InputError: Listing every non-finite tensor by name with its counts.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"{argname} must be a torch.nn.Module, got {type(model).__name__}; were the arguments given in another "
            "order? (the model comes first, then the data)"
        )
    bad = []
    named = list(model.named_parameters())
    for k, p in named:
        if (trainable or not p.requires_grad) and (what := describe_nonfinite(p.detach())) is not None:
            bad.append(f"parameter {k!r}: {what}")
    if buffers:
        for k, b in model.named_buffers():
            if (what := describe_nonfinite(b)) is not None:
                bad.append(f"buffer {k!r}: {what}")
    if bad:
        raise InputError(
            f"{argname} has non-finite weights: {'; '.join(bad)}. Expected finite values: a diverged run? Load an "
            "earlier snapshot or re-initialize."
        )


def check_vector(vec: Tensor, argname: str, layout: Any = None) -> None:
    """Refuse a flat parameter vector holding NaN/inf, naming the parameters (via ``layout``) affected.

    Args:
        vec: ``(D,)`` vector (or ``(P, D)`` matrix of points).
        argname: Its argument name.
        layout: A :class:`~landscape.params.ParamLayout` to name the affected tensors.

    Raises:
        InputError: With counts per named parameter.
    """
    what = describe_nonfinite(vec)
    if what is None:
        return
    where = ""
    if layout is not None and vec.shape[-1] == layout.numel:
        bad = ~torch.isfinite(vec.reshape(-1, layout.numel)).all(0)
        counts = [(s, int(bad[s.slice].sum())) for s in layout.specs]
        names = [f"{s.name!r} ({c} of {s.numel})" for s, c in counts if c]
        where = f" in {', '.join(names)}"
    raise InputError(
        f"{argname} holds {what}{where}; expected finite weights. A diverged run? Use an earlier snapshot."
    )


# --------------------------------------------------------------------------- tensors
def normalize_inputs(
    x: Tensor,
    dtype: torch.dtype,
    *,
    argname: str = "data",
    keep_integer: bool = False,
    device: torch.device | None = None,
) -> Tensor:
    """Inputs cast to ``dtype`` (integers and bools too, with a one-time note), moved to ``device``.

    Args:
        x: Input batch.
        dtype: The model's floating dtype.
        argname: Where ``x`` came from, for messages.
        keep_integer: Keep integer inputs (token ids for an embedding).
        device: Target device (``None``: unchanged).

    Raises:
        InputTypeError: For complex inputs.
    """
    if x.is_complex():
        raise InputTypeError(f"{argname}: inputs are {x.dtype}; expected real numbers. Pass x.real or x.abs().")
    if not x.is_floating_point() and not keep_integer:
        hint = " (values are kept: scale 0-255 pixels yourself if the model expects [0, 1])" * (x.dtype == torch.uint8)
        warnings.warn(
            f"{argname}: inputs are {str(x.dtype)[6:]}; cast to the model's {str(dtype)[6:]}{hint}",
            InputWarning,
            stacklevel=4,
        )
        return x.to(device=device, dtype=dtype)
    if x.is_floating_point() and x.dtype != dtype:
        return x.to(device=device, dtype=dtype)
    return x if device is None else x.to(device)


def normalize_targets(
    y: Tensor, dtype: torch.dtype, kind: LossKind | None, *, argname: str = "data", device: torch.device | None = None
) -> Tensor:
    """Targets normalized for a loss of ``kind`` (see the module docstring); ``kind=None``: targets unused.

    Raises:
        InputTypeError: For complex targets.
        InputError: For floating ``(N,)`` targets given to a classification loss.
    """
    if kind is None:
        return y if device is None else y.to(device)
    if y.is_complex():
        raise InputTypeError(f"{argname}: targets are {y.dtype}; expected real numbers")
    if kind is LossKind.CLASSIFICATION:
        if not y.is_floating_point():
            if y.dim() == 2 and y.shape[1] == 1:
                warnings.warn(
                    f"{argname}: class labels of shape {tuple(y.shape)} squeezed to ({y.shape[0]},)",
                    InputWarning,
                    stacklevel=4,
                )
                y = y[:, 0]
            return y.to(device=device, dtype=torch.long)
        if y.dim() == 1:
            raise InputError(
                f"{argname}: a classification loss needs integer class labels of shape (N,) or class "
                f"probabilities of shape (N, C); got {str(y.dtype)[6:]} labels of shape {tuple(y.shape)}. Pass "
                "y.long() if these are class indices."
            )
        return y.to(device=device, dtype=dtype)
    if kind is LossKind.REGRESSION or y.is_floating_point():
        return y.to(device=device, dtype=dtype)
    return y if device is None else y.to(device)


def match_regression_shape(y: Tensor, out: tuple[int, ...], where: str, note: bool = True) -> Tensor:
    """Targets ``(N,)`` for outputs ``(N, 1)`` (or the reverse) reshaped like the outputs, with a note.

    Torch's regression losses would broadcast ``(N, 1) - (N,)`` to ``(N, N)``: a wrong loss with only a warning.
    """
    if tuple(y.shape[1:]) == out or y.shape[1:].numel() != torch.Size(out).numel():
        return y
    if note:
        warnings.warn(
            f"{where}: targets of shape {tuple(y.shape)} reshaped to {(y.shape[0], *out)} like the model's outputs "
            "(a regression loss would broadcast them to a wrong value)",
            InputWarning,
            stacklevel=5,
        )
    return y.reshape(y.shape[0], *out)


def check_labels(
    y: Tensor,
    n_classes: int,
    *,
    argname: str = "data",
    ignore_index: int | None = None,
    out_shape: Sequence[int] | None = None,
) -> None:
    """Refuse class labels outside ``[0, n_classes)`` (``ignore_index`` excepted).

    Args:
        y: Class labels ``(N, ...)``.
        n_classes: The width of the outputs' class axis (axis 1, torch's ``(N, C, d1, ...)``).
        argname: What the labels are, for the message.
        ignore_index: A label the loss skips.
        out_shape: One sample's output shape, when known: sequence outputs ``(T, V)`` whose last axis the labels
            fit get a hint that the classes are read on axis 1.

    Raises:
        InputError: Naming the offending smallest / largest label and the output width.
    """
    if y.numel() == 0 or y.is_floating_point():
        return
    v = y if ignore_index is None else y[y != ignore_index]
    if v.numel() == 0:
        return
    lo, hi = int(v.min()), int(v.max())
    if hi >= n_classes:
        hint = ""
        if out_shape is not None and len(out_shape) >= 2 and hi < out_shape[-1]:
            # (N, T, V) logits of a sequence model: torch's cross-entropy reads the classes on axis 1, not last
            hint = (
                f". The outputs are (N, {', '.join(map(str, out_shape))}) and the labels fit their last axis: "
                "cross-entropy reads classes on axis 1 (torch's (N, C, d1, ...)); for (N, T, V) logits pass a loss "
                "that flattens them, e.g. lambda out, y: F.cross_entropy(out.flatten(0, -2), y.flatten())"
            )
        raise InputError(
            f"{argname}: largest class label is {hi} but the model outputs {n_classes} classes (labels 0 to "
            f"{n_classes - 1}); widen the output layer to at least {hi + 1} classes or remap the labels{hint}"
        )
    if lo < 0:
        extra = "" if ignore_index is None else f" (other than ignore_index={ignore_index})"
        raise InputError(
            f"{argname}: smallest class label is {lo}; expected labels 0 to {n_classes - 1}{extra}. Remap the labels."
        )


def check_operator(op: Any, argname: str = "op") -> None:
    """Refuse something that is not a Hessian operator (e.g. a model passed where an operator is expected).

    Its callers (the spectral functions) take a :class:`~landscape.problem.Problem` too, before this check.
    """
    if not (hasattr(op, "matmat") and hasattr(op, "n")):
        raise InputTypeError(
            f"{argname} must be a HessianOperator or a landscape.Problem, got {type(op).__name__}; pass "
            "Problem(model, data, loss)"
        )
