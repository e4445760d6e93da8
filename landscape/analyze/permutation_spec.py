"""Which tensor axes move together when hidden units are relabelled: the permutation spec, as data.

A :class:`PermutationSpec` says which axes of which tensors (parameters *and* buffers, e.g. BatchNorm running
statistics) carry one permutation ("group"); a permutation is a plain ``dict[group, LongTensor]``
(:data:`Permutation`). Ainsworth, Hayase and Srinivasa, *Git Re-Basin* (ICLR 2023), §2-3 define the spec;
:func:`landscape.analyze.permutation_tracing.permutation_spec` derives it from a model, and
:mod:`landscape.analyze.permutation` applies permutations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["Permutation", "PermutationSpecError", "AxisPerm", "PermutationSpec"]


Permutation = dict[str, Tensor]
"""A permutation per group: ``{group: LongTensor (n,)}``, ``new[i] = old[p[i]]``."""


class PermutationSpecError(ValueError):
    """The permutation spec of a model cannot be derived (an unsupported module or operation)."""


@dataclasses.dataclass(frozen=True)
class AxisPerm:
    """One permuted axis of one tensor.

    Attributes:
        tensor: Name in the model's ``state_dict`` (parameter or buffer), e.g. ``"fc1.weight"``.
        axis: The axis (0 for a layer's outputs, 1 for its inputs).
        group: The permutation group acting on it.
        block: Consecutive entries per unit: 1, or ``H * W`` for a Linear fed by a flattened ``(C, H, W)`` map.
        repeat: Copies of the unit axis along the tensor axis: 1, or 4 for the stacked gates of an LSTM
            (the axis is read as ``(repeat, n, block)`` and the ``n`` axis is permuted in every copy).
    """

    tensor: str
    axis: int
    group: str
    block: int = 1
    repeat: int = 1


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """Which axes of which tensors each permutation group moves.

    Attributes:
        sizes: Group name -> number of units, in the order of the layers that created them.
        axes: Every permuted axis (several per tensor when its input and output axes both move).
        sites: Group -> ``(module name, channel axis)`` of the modules whose outputs carry the group
            after a nonlinearity (or, without one, the layers producing it); activation matching
            correlates these. A module called several times per forward (one activation module reused by
            every layer) is named per call, ``"act#0"``, ``"act#1"``, ...
        affine_sites: ``(module name, group)`` of the last affine module (Linear, Conv or BatchNorm)
            before each nonlinearity of a permuted layer; REPAIR rescales their outputs.
    """

    sizes: dict[str, int]
    axes: tuple[AxisPerm, ...]
    sites: dict[str, tuple[tuple[str, int], ...]] = dataclasses.field(default_factory=dict)
    affine_sites: tuple[tuple[str, str], ...] = ()

    @property
    def groups(self) -> list[str]:
        """Group names in creation order."""
        return list(self.sizes)

    def axes_of(self, group: str) -> list[AxisPerm]:
        """Every axis a group moves.

        Raises:
            KeyError: On an unknown group; the message lists the groups.
        """
        if group not in self.sizes:
            raise KeyError(f"no group {group!r}; groups are {self.groups}")
        return [a for a in self.axes if a.group == group]

    def tensor_axes(self, tensor: str) -> list[AxisPerm]:
        """The permuted axes of one tensor (empty if it does not move)."""
        return [a for a in self.axes if a.tensor == tensor]

    @property
    def tensors(self) -> list[str]:
        """Names of the tensors that move, in first-mention order."""
        return list(dict.fromkeys(a.tensor for a in self.axes))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form."""
        return {
            "sizes": dict(self.sizes),
            "axes": [dataclasses.asdict(a) for a in self.axes],
            "sites": {g: [list(s) for s in v] for g, v in self.sites.items()},
            "affine_sites": [list(s) for s in self.affine_sites],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PermutationSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            sizes={str(k): int(v) for k, v in d["sizes"].items()},
            axes=tuple(
                AxisPerm(
                    tensor=str(a["tensor"]),
                    axis=int(a["axis"]),
                    group=str(a["group"]),
                    block=int(a["block"]),
                    repeat=int(a.get("repeat", 1)),
                )
                for a in d["axes"]
            ),
            sites={str(g): tuple((str(m), int(ax)) for m, ax in v) for g, v in d.get("sites", {}).items()},
            affine_sites=tuple((str(m), str(g)) for m, g in d.get("affine_sites", [])),
        )

    def __repr__(self) -> str:
        return f"PermutationSpec({len(self.sizes)} groups {self.sizes}, {len(self.tensors)} tensors)"
