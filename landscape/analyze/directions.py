"""Directions in weight space: random, normalized (Li et al. 2018), from models, orthogonalized.

A direction is a flat tensor of shape ``(D,)`` in the model's parameter-vector layout; several
directions are a ``(K, D)`` tensor. Everything is seeded through a private ``torch.Generator``, so the
global random state is never touched.

Normalization (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", Sec. 4 and their
``net_plotter.normalize_direction``), applied to every tensor with two or more dimensions:

- ``"filter"``: each filter ``j`` (a slice along :attr:`TensorSpec.filter_axis`, axis 0 for Linear and
  Conv weights, axis 1 for transposed convolutions; a grouped transposed convolution's filter ``g * out_per_group
  + j`` is ``weight[g * in_per_group:(g + 1) * in_per_group, j]``, :meth:`TensorSpec.filters`) is rescaled,
  ``d_j <- d_j * ||theta_j|| / (||d_j|| + 1e-10)``; the ``1e-10`` is Li et al.'s, kept so the numbers
  match their code.
- ``"layer"``: the same over each whole tensor (Li et al.'s ``'layer'`` is per parameter tensor).
- ``"model"``: one factor for the whole vector, ``||d|| = ||theta||`` over the entries kept.

A part of the direction that is zero (a tensor two models share, under ``"layer"``; the whole direction,
under ``"model"``) stays zero, as a zero filter does under ``"filter"``.
- ``"none"``: raw Gaussian.

One-dimensional tensors (biases, BatchNorm weights and biases) follow ``bias_bn``:

- ``"zero"`` (default; Li et al.'s ``ignore='biasbn'``): the direction is 0 there, those parameters
  stay fixed along the slice.
- ``"copy"``: Li et al.'s code without ``ignore='biasbn'`` copies the parameters themselves,
  ``d = theta`` (moving along ``d`` scales each bias by ``1 + alpha``).
- ``"keep"``: keep the random entries and treat the whole 1-D tensor as one filter
  (``d <- d * ||theta|| / (||d|| + 1e-10)``) under ``"filter"`` and ``"layer"``; kept as drawn
  under ``"none"``; included in the global factor under ``"model"``.

Which parameters a direction moves (``params=``): directions live in the model's full parameter
vector (every floating-point parameter, frozen ones included, see :mod:`landscape.params`), so a frozen
and an unfrozen copy of a model get the same directions from the same seed. ``params="all"`` (default)
moves every parameter; ``params="trainable"`` keeps the direction at exactly zero on tensors with
``requires_grad=False`` (a fine-tuned model's frozen layers stay put); tensor or layer names select
those tensors. The Gaussian draw is always over the whole vector, so a restricted direction equals the
unrestricted one (same seed) on the selected entries wherever the normalization is per filter or per
tensor; under ``"model"`` the global factor is taken over the selected entries only.

Orthogonalization (optional) is Gram-Schmidt in float64 after normalization; it only projects
(``d_k <- d_k - sum_{j<k} <d_k, d_j>/<d_j, d_j> d_j``), it does not rescale.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.params import ParamLayout, ParamSelection, parameter_mask, parameters_to_vector

__all__ = [
    "Normalization",
    "BiasBN",
    "normalize_direction",
    "random_direction",
    "random_directions",
    "orthogonalize",
    "directions_from_models",
]

_EPS = 1e-10  # Li et al., net_plotter.normalize_direction


class Normalization(str, Enum):
    """How a random direction is scaled to the model (see the module docstring)."""

    FILTER = "filter"
    LAYER = "layer"
    MODEL = "model"
    NONE = "none"


class BiasBN(str, Enum):
    """What a direction does on 1-D tensors (biases, BatchNorm parameters)."""

    ZERO = "zero"
    KEEP = "keep"
    COPY = "copy"


def _vector(model_or_vec: nn.Module | Tensor) -> Tensor:
    return parameters_to_vector(model_or_vec) if isinstance(model_or_vec, nn.Module) else model_or_vec.detach()


def _layout(model: nn.Module | ParamLayout) -> ParamLayout:
    return model if isinstance(model, ParamLayout) else ParamLayout.from_model(model)


def normalize_direction(
    direction: Tensor,
    reference: Tensor,
    layout: ParamLayout | nn.Module,
    normalization: Normalization | str = Normalization.FILTER,
    bias_bn: BiasBN | str = BiasBN.ZERO,
    mask: Tensor | None = None,
) -> Tensor:
    """Scale a direction to a reference point, per filter, per tensor or globally.

    Args:
        direction: ``(D,)`` direction (not modified).
        reference: ``(D,)`` parameters it is scaled to (usually the center of the plot).
        layout: Layout of the vectors, or the model.
        normalization: ``"filter"``, ``"layer"``, ``"model"`` or ``"none"``.
        bias_bn: ``"zero"``, ``"keep"`` or ``"copy"`` for 1-D tensors.
        mask: ``(D,)`` bool; the direction is exactly zero where it is False (e.g.
            :func:`landscape.params.parameter_mask` for frozen tensors). ``None``: everywhere.

    Returns:
        A new ``(D,)`` tensor.

    Raises:
        ValueError: On unknown options or vectors that do not fit the layout.
    """
    norm = parse_option(Normalization, normalization, "normalization")
    bb = parse_option(BiasBN, bias_bn, "bias_bn")
    layout = _layout(layout)
    layout.check_vector(direction)
    layout.check_vector(reference)
    d = direction.detach().clone()
    theta = reference.detach().to(d.dtype)
    kept = torch.ones_like(d, dtype=torch.bool)
    if mask is not None:
        if mask.shape != d.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(d.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        d[~mask] = 0
        kept &= mask  # unselected entries take no part in the "model" factor
    for s in layout:
        dv, tv = d[s.slice].view(s.shape), theta[s.slice].view(s.shape)
        if s.filter_axis is None:  # 1-D: biases, BatchNorm weight and bias
            if bb is BiasBN.ZERO:
                dv.zero_()
                kept[s.slice] = False
            elif bb is BiasBN.COPY:
                dv.copy_(tv)
                kept[s.slice] = False  # exact copy: never rescaled
            elif norm in (Normalization.FILTER, Normalization.LAYER):
                dv.mul_(tv.norm() / (dv.norm() + _EPS))
        elif norm is Normalization.FILTER:  # (a grouped transposed conv's filters straddle its groups: s.filters)
            scale = s.filters(tv).norm(dim=1) / (s.filters(dv).norm(dim=1) + _EPS)
            dv.mul_(s.unfilter(scale[:, None]))
        elif norm is Normalization.LAYER and bool(dv.any()):  # a zero tensor stays zero (0/0 was NaN)
            dv.mul_(tv.norm() / dv.norm())  # Li et al.: no epsilon here
    if norm is Normalization.MODEL and bool(d[kept].any()):
        d[kept] *= theta[kept].norm() / d[kept].norm()
    if mask is not None:
        d[~mask] = 0  # bias_bn="copy" wrote theta there
    return d


def _mask(model: nn.Module, params: ParamSelection, layout: ParamLayout) -> Tensor | None:
    if isinstance(params, str) and params == "all":
        return None
    mask = parameter_mask(model, params, layout)
    if not bool(mask.any()):
        raise ValueError(
            f"params={params!r} selects no parameter of this model (every parameter is frozen, "
            "requires_grad=False?); use params='all' to move frozen parameters too"
        )
    return mask


def _model_layout(model: Any, layout: ParamLayout | None) -> tuple[nn.Module, ParamLayout]:
    """The model (of a :class:`~landscape.problem.Problem` too) and its layout, built only if not given."""
    from landscape.problem import Problem

    if isinstance(model, Problem):
        return model.model, layout or model.layout
    return model, layout or ParamLayout.from_model(model)


def random_direction(
    model: nn.Module,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    normalization: Normalization | str = Normalization.FILTER,
    bias_bn: BiasBN | str = BiasBN.ZERO,
    reference: Tensor | None = None,
    params: ParamSelection = "all",
    layout: ParamLayout | None = None,
) -> Tensor:
    """One Gaussian direction, normalized to ``reference`` (default: the model's parameters).

    Args:
        model: The architecture (and default reference point), or a :class:`~landscape.problem.Problem`;
            not modified.
        seed: Seed of a private generator (ignored if ``generator`` is given).
        generator: Generator to draw from (advanced by ``D`` normals).
        normalization: See :func:`normalize_direction`.
        bias_bn: See :func:`normalize_direction`.
        reference: ``(D,)`` point to normalize to.
        params: Which parameters the direction moves: ``"all"`` (default, frozen ones too),
            ``"trainable"`` (zero on ``requires_grad=False`` tensors), or tensor / layer names.
        layout: The model's layout when the caller holds it (default: built from the model).

    Returns:
        ``(D,)`` direction in the dtype of the model's parameters.

    Raises:
        ValueError: If ``params`` selects nothing (e.g. ``"trainable"`` on a frozen model).
    """
    model, layout = _model_layout(model, layout)
    if layout.numel == 0:
        raise ValueError(f"{type(model).__name__} has no floating-point parameters: no direction to draw")
    mask = _mask(model, params, layout)
    ref = parameters_to_vector(model) if reference is None else reference.detach()
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    raw = torch.randn(layout.numel, generator=generator, dtype=torch.float32).to(ref.dtype)
    return normalize_direction(raw, ref, layout, normalization, bias_bn, mask)


def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    seed: int | None = 0,
    normalization: Normalization | str = Normalization.FILTER,
    bias_bn: BiasBN | str = BiasBN.ZERO,
    orthogonal: bool = False,
    reference: Tensor | None = None,
    params: ParamSelection = "all",
    layout: ParamLayout | None = None,
) -> Tensor:
    """``n`` seeded Gaussian directions, normalized (then optionally orthogonalized).

    Direction ``k`` is the ``k``-th draw of ``D`` float32 normals from ``torch.Generator().manual_seed(seed)``.

    Args:
        model: The architecture (and default reference point); not modified.
        n: Number of directions.
        seed: Seed (``None`` means 0: directions are always reproducible).
        normalization: See :func:`normalize_direction`.
        bias_bn: See :func:`normalize_direction`.
        orthogonal: Gram-Schmidt after normalization (:func:`orthogonalize`).
        reference: ``(D,)`` point to normalize to (default: the model's parameters).
        params: ``"all"``, ``"trainable"`` or tensor / layer names, see :func:`random_direction`.
        layout: The model's layout when the caller holds it (built once here otherwise).

    Returns:
        ``(n, D)`` directions; the same for a frozen and an unfrozen copy of a model.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> random_directions(net, 2, seed=1).shape
        torch.Size([2, 26])
    """
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    model, layout = _model_layout(model, layout)
    dirs = torch.stack(
        [
            random_direction(
                model,
                generator=g,
                normalization=normalization,
                bias_bn=bias_bn,
                reference=reference,
                params=params,
                layout=layout,
            )
            for _ in range(int(n))
        ]
    )
    return orthogonalize(dirs) if orthogonal else dirs


def orthogonalize(directions: Tensor) -> Tensor:
    """Gram-Schmidt in float64 (projection only, no rescaling).

    Args:
        directions: ``(K, D)``.

    Returns:
        ``(K, D)`` in the input dtype; row ``k`` is orthogonal to rows ``< k`` (up to rounding).

    Raises:
        ValueError: If a direction is zero or linearly dependent on the previous ones.
        TypeError: If ``directions`` is not a tensor (a numpy array, a list).
    """
    if not isinstance(directions, Tensor):
        raise TypeError(
            f"orthogonalize takes one (K, D) tensor of directions, got {type(directions).__name__}; pass "
            "torch.as_tensor(array) (numpy) or torch.stack(list_of_directions)"
        )
    if directions.dim() != 2:
        raise ValueError(f"expected directions of shape (K, D), got {tuple(directions.shape)}")
    out = directions.detach().double().clone()
    for k in range(out.shape[0]):
        norm0 = out[k].norm()
        for j in range(k):
            out[k] -= (out[k] @ out[j]) / (out[j] @ out[j]) * out[j]
        if norm0 == 0 or out[k].norm() <= 1e-12 * norm0:
            raise ValueError(f"direction {k} is zero or linearly dependent on the previous ones")
    return out.to(directions.dtype)


def directions_from_models(
    origin: nn.Module | Tensor, *others: nn.Module | Tensor, params: ParamSelection = "all"
) -> Tensor:
    """Directions from one model to one or more others: ``theta_k - theta_0``.

    Args:
        origin: Model or ``(D,)`` vector ``theta_0``.
        *others: One or more models or vectors of the same architecture.
        params: ``"all"`` (default); ``"trainable"`` or tensor / layer names zero the directions
            elsewhere (needs ``origin`` to be a model, whose flags and layout decide).

    Returns:
        ``(len(others), D)`` directions, computed in float64 and rounded to the origin's dtype.

    Raises:
        ValueError: If no other model is given, the vectors differ in length, two models differ in their tensors'
            shapes, or ``params`` is restricted with a vector as origin.
        TypeError: If an argument is neither a model nor a tensor (a list of models: unpack it).
    """
    if not others:
        raise ValueError("give at least one model besides the origin, e.g. directions_from_models(m0, m1, m2)")
    for i, o in enumerate((origin, *others)):
        if not isinstance(o, nn.Module | Tensor):
            unpack = " (the others are separate arguments: directions_from_models(m0, *models))"
            raise TypeError(
                f"directions_from_models takes models or (D,) tensors, got {type(o).__name__} as argument {i + 1}"
                + (unpack if isinstance(o, list | tuple) else "; convert it with torch.as_tensor")
            )
    t0 = _vector(origin)
    rows: Sequence[Tensor] = [_vector(o) for o in others]
    for i, r in enumerate(rows):
        if r.shape != t0.shape:
            raise ValueError(
                f"model {i + 1} has {r.numel()} parameters but the origin has {t0.numel()}; same architecture needed"
            )
    if isinstance(origin, nn.Module):  # an equal count is not enough: the tensors' shapes must match too
        layout = ParamLayout.from_model(origin)
        for i, o in enumerate(others):
            if isinstance(o, nn.Module):
                layout.check_shapes(ParamLayout.from_model(o), f"model {i + 1}")
    out = torch.stack([(r.double() - t0.double()).to(t0.dtype) for r in rows])
    if not (isinstance(params, str) and params == "all"):
        if not isinstance(origin, nn.Module):
            raise ValueError("params other than 'all' needs the origin given as a model (its flags select)")
        mask = _mask(origin, params, ParamLayout.from_model(origin))
        if mask is not None:
            out[:, ~mask] = 0
    return out
