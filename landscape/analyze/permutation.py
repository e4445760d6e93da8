"""Permutations of hidden units as data: which tensor axes move together, and applying them.

Hidden units of a network can be relabelled without changing its function: permute the output
units of a layer and the matching input axis of every consumer. A
:class:`~landscape.analyze.permutation_spec.PermutationSpec` says which axes of which tensors (parameters
*and* buffers, e.g. BatchNorm running statistics) carry one permutation ("group"); a permutation is a plain
``dict[group, LongTensor]``. Convention: a permutation ``p`` of a group moves old unit ``p[i]`` to position
``i`` (``new[i] = old[p[i]]``), as ``scipy.optimize.linear_sum_assignment``'s column indices read.

The spec (:mod:`landscape.analyze.permutation_spec`) is derived by tracing the model
(:func:`~landscape.analyze.permutation_tracing.permutation_spec`); this module builds, composes, inverts and
applies permutations.

Example:
    >>> from landscape.analyze import permutation_spec
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    >>> spec = permutation_spec(net)
    >>> spec.sizes
    {'P_0': 5}
    >>> perm = random_permutation(spec, seed=0)
    >>> new = apply_permutation(spec, perm, net)
    >>> x = torch.randn(4, 3)
    >>> torch.allclose(new(x), net(x))
    True
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analyze.permutation_spec import AxisPerm, Permutation, PermutationSpec
from landscape.params import ParamLayout

__all__ = [
    "apply_permutation",
    "compose_permutations",
    "invert_permutation",
    "identity_permutation",
    "random_permutation",
]


def identity_permutation(spec: PermutationSpec) -> Permutation:
    """The identity permutation of every group."""
    return {g: torch.arange(n) for g, n in spec.sizes.items()}


def random_permutation(spec: PermutationSpec, *, seed: int = 0) -> Permutation:
    """A uniformly random permutation of every group (seeded, global RNG untouched)."""
    gen = torch.Generator().manual_seed(seed)
    return {g: torch.randperm(n, generator=gen) for g, n in spec.sizes.items()}


def check_permutation(spec: PermutationSpec, perm: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for g, n in spec.sizes.items():
        if g not in perm:
            raise ValueError(f"the permutation has no entry for group {g!r}; groups are {spec.groups}")
        p = torch.as_tensor(perm[g], dtype=torch.long).reshape(-1)
        if p.numel() != n or not torch.equal(torch.sort(p).values, torch.arange(n)):
            raise ValueError(f"permutation of group {g!r} is not a permutation of {n} units")
        out[g] = p
    extra = set(perm) - set(spec.sizes)
    if extra:
        raise ValueError(f"the permutation names groups the spec does not have: {sorted(extra)}")
    return out


def compose_permutations(first: Mapping[str, Tensor], second: Mapping[str, Tensor]) -> Permutation:
    """The permutation that applies ``first`` and then ``second``.

    ``apply(apply(x, first), second) == apply(x, compose_permutations(first, second))``.

    Raises:
        ValueError: If the two name different groups or sizes.
    """
    if set(first) != set(second):
        raise ValueError(f"the permutations have different groups: {sorted(first)} vs {sorted(second)}")
    out = {}
    for g in first:
        p, q = torch.as_tensor(first[g]).long(), torch.as_tensor(second[g]).long()
        if p.shape != q.shape:
            raise ValueError(f"group {g!r} has {p.numel()} units in one permutation and {q.numel()} in the other")
        out[g] = p[q]  # new[i] = mid[q[i]] = old[p[q[i]]]
    return out


def invert_permutation(perm: Mapping[str, Tensor]) -> Permutation:
    """The inverse permutation: applying it after ``perm`` restores the original, bitwise."""
    return {g: torch.argsort(torch.as_tensor(p).long()) for g, p in perm.items()}


def permute_tensor(t: Tensor, axes: list[AxisPerm], perm: Mapping[str, Tensor]) -> Tensor:
    for a in axes:
        p = perm[a.group].to(t.device)
        n = p.numel()
        if t.shape[a.axis] != a.repeat * n * a.block:
            raise ValueError(
                f"tensor {a.tensor!r} has {t.shape[a.axis]} entries on axis {a.axis}, but group {a.group!r} moves "
                f"{a.repeat} x {n} units of {a.block}; is the spec from another architecture?"
            )
        idx = p if a.block == 1 else (p[:, None] * a.block + torch.arange(a.block, device=t.device)).reshape(-1)
        if a.repeat > 1:  # the same permutation inside every gate
            idx = (torch.arange(a.repeat, device=t.device)[:, None] * (n * a.block) + idx).reshape(-1)
        t = t.index_select(a.axis, idx)
    return t


def _permute_dict(
    spec: PermutationSpec, perm: Mapping[str, Tensor], tensors: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    by_tensor: dict[str, list[AxisPerm]] = {}
    for a in spec.axes:
        by_tensor.setdefault(a.tensor, []).append(a)
    return {k: permute_tensor(v, by_tensor[k], perm) if k in by_tensor else v for k, v in tensors.items()}


def apply_permutation(
    spec: PermutationSpec,
    perm: Mapping[str, Tensor],
    target: nn.Module | Mapping[str, Tensor] | Tensor | np.ndarray,
    *,
    layout: ParamLayout | nn.Module | None = None,
) -> Any:
    """Permute a model, a parameter/state dict or a flat parameter vector, out of place.

    Args:
        spec: From :func:`permutation_spec`.
        perm: ``{group: LongTensor (n,)}``; ``new[i] = old[perm[i]]`` along every axis of the group.
        target: A model (a new model is returned, parameters and buffers permuted; the input is only
            read), a dict of tensors (a new dict; tensors the spec does not move are the same objects), or
            a flat vector ``(D,)`` (a tensor or a numpy array; needs ``layout``).
        layout: The layout of a flat vector (or the model it comes from).

    Returns:
        The permuted object, of the same kind as ``target``.

    Raises:
        ValueError: On a permutation that does not fit the spec, or a vector without a layout.
    """
    perm = check_permutation(spec, perm)
    if isinstance(target, np.ndarray):  # a result's vector (a slice's anchors, a plane's center): numpy back
        return apply_permutation(spec, perm, torch.from_numpy(target), layout=layout).numpy()
    if isinstance(target, nn.Module):
        new = copy.deepcopy(target)
        state = _permute_dict(spec, perm, {k: v.detach() for k, v in target.state_dict(keep_vars=True).items()})
        with torch.no_grad():
            for k, v in new.state_dict(keep_vars=True).items():
                v.copy_(state[k])
        return new
    if isinstance(target, Tensor):
        if layout is None:
            raise ValueError("permuting a flat vector needs layout= (a ParamLayout or the model it comes from)")
        lay = layout if isinstance(layout, ParamLayout) else ParamLayout.from_model(layout)
        return lay.flatten(_permute_dict(spec, perm, lay.unflatten(target)))
    return _permute_dict(spec, perm, target)
