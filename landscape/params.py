"""Parameter vectors: flatten a model's parameters and evaluate a model at any point.

Everything in the package that moves through weight space moves a flat tensor of the model's
parameters in ``named_parameters()`` order. A :class:`ParamLayout` knows, for every tensor, its
name, shape, slice of the flat vector, the "layer" it belongs to (weight and bias of one module
together, as the persistent penalty needs) and the axis that holds its filters (as filter
normalization needs).

Which parameters the vector covers: by default **every floating-point parameter, frozen ones
included** (``params="all"``). ``requires_grad`` is a training flag that other tools flip (loss-landscapes'
``random_plane`` leaves a whole net frozen, fine-tuning freezes layers), so it must not change the
vector's length or meaning: the same architecture always has the same layout, a frozen and an
unfrozen copy of a model give the same vector, and a vector recorded while every parameter was
trainable is unchanged. Trainers still only *train* parameters with ``requires_grad=True``; frozen
entries simply stay constant along a trajectory. ``params="trainable"`` gives the layout of only the
trainable tensors (the package's behaviour before), and the direction analyzers take ``params=`` to
keep directions at zero on frozen (or unselected) tensors. Non-floating parameters (rare, e.g.
integer bookkeeping stored as a frozen ``nn.Parameter``) cannot move continuously and are never part
of the vector; evaluation takes them from the model.

Evaluation at a point goes through :func:`torch.func.functional_call`, so the caller's model is
never written to: no parameter or buffer changes (train-mode BatchNorm updates running statistics
in private copies), no ``requires_grad`` flips, and any change of train/eval mode is undone before
returning.

:class:`ParamLayout`, :class:`TensorSpec` and :func:`named_vector_parameters` are defined in ``landscape._layout``
and re-exported here: import them from this module.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

# The layout describes the vector and never evaluates a model; it lives in its own module, re-exported here.
from landscape._layout import ParamLayout, TensorSpec, named_vector_parameters
from landscape.functional import hook_attributes

__all__ = [
    "TensorSpec",
    "ParamLayout",
    "ParamsLike",
    "ParamSelection",
    "parameters_to_vector",
    "named_vector_parameters",
    "parameter_mask",
    "vector_to_dict",
    "buffers_dict",
    "as_param_dict",
    "functional_forward",
    "model_at",
    "preserved_mode",
]

ParamsLike = Tensor | Mapping[str, Tensor]
ParamSelection = str | Sequence[str]  # "all", "trainable", or tensor / layer names


def parameters_to_vector(model: nn.Module, *, dtype: torch.dtype | None = None, params: str = "all") -> Tensor:
    """Copy a model's parameters into a new flat vector, shape ``(numel,)``.

    The vector covers every floating-point parameter, frozen ones (``requires_grad=False``) included,
    so it does not change when some tool freezes or unfreezes the model (see the module docstring).

    The result is detached and shares no memory with the model.

    Args:
        model: Any module (only read).
        dtype: Cast the vector to this dtype.
        params: ``"all"`` (default) or ``"trainable"`` (only ``requires_grad=True`` tensors, the layout
            of ``ParamLayout.from_model(model, "trainable")``).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> parameters_to_vector(net).shape
        torch.Size([8])
        >>> _ = net.requires_grad_(False)  # frozen: same vector
        >>> parameters_to_vector(net).shape
        torch.Size([8])
    """
    parts = [p.detach().reshape(-1) for _, p in named_vector_parameters(model, params)]
    vec = torch.cat(parts) if parts else torch.zeros(0)
    vec = vec.clone()
    return vec if dtype is None else vec.to(dtype)


def vector_to_dict(model_or_layout: nn.Module | ParamLayout, vec: Tensor) -> dict[str, Tensor]:
    """Split a flat vector into a name->tensor dict (views of ``vec``) for a model or layout."""
    layout = model_or_layout if isinstance(model_or_layout, ParamLayout) else ParamLayout.from_model(model_or_layout)
    return layout.unflatten(vec)


def buffers_dict(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of a model's buffers (e.g. BatchNorm running statistics)."""
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def parameter_mask(model: nn.Module, params: ParamSelection = "all", layout: ParamLayout | None = None) -> Tensor:
    """Which entries of the model's parameter vector a selection covers, a bool tensor of shape ``(numel,)``.

    Used by the direction analyzers to keep directions at zero outside the selection (the vector's
    layout itself never changes).

    Args:
        model: The architecture (only read).
        params: ``"all"``; ``"trainable"`` (tensors with ``requires_grad=True``: a fine-tuned model's
            frozen layers stay put); or tensor names and/or layer names (module paths, e.g. ``"0"`` for
            ``"0.weight"`` and ``"0.bias"``).
        layout: Precomputed ``ParamLayout.from_model(model)``.

    Returns:
        ``(numel,)`` bool mask.

    Raises:
        ValueError: On an empty selection or a name that is neither a tensor nor a layer.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = net[0].requires_grad_(False)
        >>> parameter_mask(net, "trainable").tolist()
        [False, False, False, False, False, False, True, True, True]
    """
    layout = layout or ParamLayout.from_model(model)
    mask = torch.zeros(layout.numel, dtype=torch.bool)
    if isinstance(params, str) and params == "all":
        mask[:] = True
        return mask
    if isinstance(params, str) and params == "trainable":
        named = dict(model.named_parameters())
        for s in layout:
            mask[s.slice] = named[s.name].requires_grad
        return mask
    names = [params] if isinstance(params, str) else list(params)
    if not names:
        raise ValueError("params is empty; pass 'all', 'trainable', or tensor / layer names")
    layers = layout.layers
    for name in names:
        if name in layout:
            mask[layout[name].slice] = True
        elif name in layers:
            for s in layers[name]:
                mask[s.slice] = True
        else:
            raise ValueError(
                f"params: {name!r} is neither 'all', 'trainable', a tensor nor a layer; tensors: "
                f"{list(layout.names)}, layers: {list(layers)}"
            )
    return mask


def as_param_dict(model: nn.Module, params: ParamsLike, layout: ParamLayout | None = None) -> dict[str, Tensor]:
    """Turn a flat vector or a dict into a validated name->tensor dict for ``model``.

    Args:
        model: The architecture.
        params: Flat vector of shape ``(numel,)`` or a dict of tensors. A dict may leave out frozen
            (``requires_grad=False``) tensors, which then keep the model's values.
        layout: Precomputed layout of ``model`` (saves recomputing it in loops).

    Raises:
        ValueError: Naming the first mismatching tensor, or the wrong vector length.
    """
    layout = layout or ParamLayout.from_model(model)
    if isinstance(params, Tensor):
        return layout.unflatten(params)
    missing = [s.name for s in layout if s.name not in params]
    if missing:
        # Dicts written when the vector held only trainable tensors leave the frozen ones out.
        named = dict(model.named_parameters())
        frozen = {n: named[n].detach() for n in missing if n in named and not named[n].requires_grad}
        params = {**frozen, **params}
    layout.check_dict(params)
    return dict(params)


@contextlib.contextmanager
def preserved_mode(model: nn.Module, train: bool | None) -> Iterator[nn.Module]:
    """Temporarily put ``model`` (and every submodule) in train or eval mode, restoring each afterwards.

    Args:
        model: The module.
        train: ``True`` for train mode, ``False`` for eval mode, ``None`` to leave modes as they are.
    """
    if train is None:
        yield model
        return
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.train(train)
        yield model
    finally:
        for m, t in saved:
            m.training = t


def functional_forward(
    model: nn.Module,
    params: ParamsLike,
    *args: Any,
    buffers: Mapping[str, Tensor] | None = None,
    train: bool | None = False,
    layout: ParamLayout | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``model`` at the given parameters without touching the model.

    Parameters are taken from ``params`` (frozen ones included: they are part of the vector; a dict
    may leave them out), buffers from the model unless given. BatchNorm policy: by default the model
    runs in eval mode with its own running statistics (``train=False``); ``train=True``, or
    ``train=None`` on a model in train mode, uses batch statistics, and then running statistics are
    updated in private copies, never in the model's buffers (``buffers`` passed in are used as given).

    Args:
        model: The architecture (never modified).
        params: Flat vector of shape ``(numel,)`` or a dict of tensors.
        *args: Inputs to the model, e.g. a batch of shape ``(B, *input_shape)``.
        buffers: Buffers to use instead of the model's own.
        train: Mode to run in; ``None`` keeps the model's current modes.
        layout: Precomputed layout of ``model``.
        **kwargs: Keyword inputs to the model.

    Returns:
        Whatever ``model.forward`` returns.

    Raises:
        ValueError: If ``params`` does not fit the model's architecture.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> out = functional_forward(net, torch.zeros(8), torch.ones(5, 3))
        >>> bool((out == 0).all())
        True
    """
    tensors = as_param_dict(model, params, layout)
    bufs: dict[str, Tensor] = {} if buffers is None else dict(buffers)
    training = any(m.training for m in model.modules()) if train is None else train
    if training:
        # Train mode (asked for, or kept by train=None) updates running statistics in place: hand
        # functional_call private copies of the model's own buffers. Buffers the caller passed are
        # the caller's, used as given (the Hessian passes per-chunk copies already).
        bufs = {**{k: v.clone() for k, v in model.named_buffers() if k not in bufs}, **bufs}
    with preserved_mode(model, train), hook_attributes(model):  # a hook's attributes (weight_norm's) put back
        # The point's tensors win over same-named entries of `buffers` (callers may pass frozen
        # parameters there; now that the vector covers them, the point decides their value).
        return torch.func.functional_call(model, {**bufs, **tensors}, args, kwargs, strict=False)


def model_at(model: nn.Module, params: ParamsLike, buffers: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A new copy of ``model`` with its parameters (and optionally buffers) set to a point.

    Args:
        model: The architecture (not modified).
        params: Flat vector of shape ``(numel,)`` or a dict of tensors (frozen ones may be left out).
        buffers: Buffers to load into the copy; defaults to the model's own.

    Returns:
        A deep copy holding the given values.
    """
    tensors = as_param_dict(model, params)
    new = copy.deepcopy(model)
    with torch.no_grad():
        named = dict(new.named_parameters())
        for k, v in tensors.items():
            named[k].copy_(v)
        if buffers is not None:
            nb = dict(new.named_buffers())
            for k, v in buffers.items():
                if k not in nb:
                    raise ValueError(f"buffer {k!r} does not exist in the model")
                nb[k].copy_(v)
    return new
