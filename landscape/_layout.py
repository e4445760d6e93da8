"""The layout of a flat parameter vector: :class:`ParamLayout`, :class:`TensorSpec`, :func:`named_vector_parameters`.

Private: :mod:`landscape.params` re-exports all three (import them from there) and documents which parameters the
vector covers and why. This module holds the part that only describes the vector (names, shapes, slices, layers,
filter axes) and never evaluates a model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ParamLayout", "TensorSpec", "named_vector_parameters"]

_LAYOUT_CHOICES = ("all", "trainable")

# Which axis of a module's weight holds its output filters (Li et al. 2018, filter normalization).
# Anything with a weight of two or more dimensions not listed here uses axis 0.
_FILTER_AXIS: dict[type[nn.Module], int] = {
    nn.ConvTranspose1d: 1,
    nn.ConvTranspose2d: 1,
    nn.ConvTranspose3d: 1,
}
# Modules of other libraries, by (module, class name) so that the library is never imported: Hugging Face's
# Conv1D (GPT-2's attention and MLP projections) stores its weight as (in, out), a transposed Linear.
_FILTER_AXIS_BY_NAME: dict[tuple[str, str], int] = {("transformers.pytorch_utils", "Conv1D"): 1}


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _filter_axis(owner: nn.Module) -> int:
    """The filter (output-unit) axis of ``owner``'s weights of two or more dimensions.

    By class and its bases: a subclass of ``ConvTranspose2d`` (a user's, or the ``ParametrizedConvTranspose2d`` that
    ``torch.nn.utils.parametrize`` makes) keeps the transposed axis.
    """
    for kind in type(owner).__mro__:
        axis = _FILTER_AXIS.get(kind, _FILTER_AXIS_BY_NAME.get((kind.__module__, kind.__name__)))
        if axis is not None:
            return axis
    return 0


def _owner(modules: Mapping[str, nn.Module], name: str) -> tuple[str, nn.Module | None, bool]:
    """``(layer, module, parametrized)`` of the parameter ``name``: the module that holds it (``""``: the root).

    ``torch.nn.utils.parametrize`` (weight_norm, spectral_norm, orthogonal) keeps a module's weight in
    ``<module>.parametrizations.weight.original*``: those tensors belong to ``<module>``, beside its bias.
    """
    layer = name.rsplit(".", 1)[0] if "." in name else ""
    owner = modules.get(layer)
    parts = layer.split(".")
    if len(parts) >= 2 and parts[-2] == "parametrizations" and type(owner).__name__ == "ParametrizationList":
        layer = ".".join(parts[:-2])
        return layer, modules.get(layer), True
    return layer, owner, False


@dataclass(frozen=True)
class TensorSpec:
    """One tensor inside a flat parameter vector.

    Attributes:
        name: Name from ``named_parameters()``, e.g. ``"features.0.weight"``.
        shape: Shape of the tensor.
        start: First index of the tensor in the flat vector.
        stop: One past its last index.
        layer: Name of the module that owns it (weight and bias of one module share a layer).
        filter_axis: Axis of the filters (output units) for tensors with two or more dimensions,
            ``None`` for vectors (biases, normalization parameters).
        module_type: Class name of the owning module (``"Linear"``, ``"Conv2d"``, ...).
        groups: Groups of a transposed convolution's weight ``(in, out / groups, *kernel)``: output channel
            ``g * out_per_group + j`` is ``weight[g * in_per_group:(g + 1) * in_per_group, j]``, so its filter is
            not one slice along ``filter_axis`` (see :meth:`filters`). 1 for everything else (a grouped ``Conv``'s
            ``(out, in / groups, *kernel)`` weight is one slice per output channel along axis 0).
    """

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int
    layer: str
    filter_axis: int | None
    module_type: str
    groups: int = 1

    def filters(self, t: Tensor) -> Tensor:
        """``t`` (of this tensor's shape) as one row per filter (output unit), ``(n_filters, entries per filter)``.

        Rows are in output-channel order. A copy when the filters are not contiguous (transposed convolutions);
        :meth:`unfilter` maps rows (or one value per row, broadcast) back to the tensor's shape.

        Raises:
            ValueError: For a vector (no ``filter_axis``).
        """
        if self.filter_axis is None:
            raise ValueError(f"{self.name} is a vector: it has no filters")
        if self.groups == 1:
            return t.movedim(self.filter_axis, 0).reshape(t.shape[self.filter_axis], -1)
        g, rest = self.groups, t.shape[2:]  # (in, out / g, *k) -> (g, out / g, in / g, *k): rows g * opg + j
        return t.reshape(g, t.shape[0] // g, t.shape[1], *rest).transpose(1, 2).reshape(g * t.shape[1], -1)

    def unfilter(self, rows: Tensor) -> Tensor:
        """Inverse of :meth:`filters`: rows back to a tensor of this shape.

        Args:
            rows: ``(n_filters, m)``: ``m`` entries per filter, or ``m = 1`` to broadcast one value per filter.

        Raises:
            ValueError: For a vector (no ``filter_axis``).
        """
        if self.filter_axis is None:
            raise ValueError(f"{self.name} is a vector: it has no filters")
        shape, axis = self.shape, self.filter_axis
        if self.groups == 1:
            moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
            return rows.expand(rows.shape[0], _prod(moved[1:])).reshape(moved).movedim(0, axis)
        g, opg = self.groups, shape[1]
        inner = (shape[0] // g, *shape[2:])
        full = rows.expand(rows.shape[0], _prod(inner)).reshape(g, opg, *inner)
        return full.transpose(1, 2).reshape(shape)

    @property
    def numel(self) -> int:
        """Number of elements."""
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        """Slice of the flat vector holding this tensor."""
        return slice(self.start, self.stop)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "start": self.start,
            "stop": self.stop,
            "layer": self.layer,
            "filter_axis": self.filter_axis,
            "module_type": self.module_type,
            **({"groups": self.groups} if self.groups != 1 else {}),  # (files without groups stay as they were)
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(d["name"]),
            shape=tuple(int(s) for s in d["shape"]),
            start=int(d["start"]),
            stop=int(d["stop"]),
            layer=str(d["layer"]),
            filter_axis=None if d["filter_axis"] is None else int(d["filter_axis"]),
            module_type=str(d["module_type"]),
            groups=int(d.get("groups", 1)),  # absent from layouts written before 2026-12-08 and when 1
        )


class ParamLayout:
    """The layout of a flat parameter vector: names, shapes, slices, layers and filter axes.

    Args:
        specs: The tensors in vector order; slices must tile ``[0, numel)`` contiguously.

    Raises:
        ValueError: If the slices are not contiguous or do not match the shapes.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> layout = ParamLayout.from_model(net)
        >>> layout.numel, layout.names
        (26, ('0.weight', '0.bias', '2.weight', '2.bias'))
        >>> list(layout.layers)
        ['0', '2']
    """

    def __init__(self, specs: list[TensorSpec] | tuple[TensorSpec, ...]) -> None:
        self.specs: tuple[TensorSpec, ...] = tuple(specs)
        pos = 0
        for s in self.specs:
            n = 1
            for d in s.shape:
                n *= d
            if s.start != pos or s.stop - s.start != n:
                raise ValueError(
                    f"layout entry {s.name!r} covers [{s.start}, {s.stop}) but shape {s.shape} starting at "
                    f"{pos} needs [{pos}, {pos + n})"
                )
            pos = s.stop
        self.numel: int = pos
        self._by_name = {s.name: s for s in self.specs}

    @classmethod
    def from_model(cls, model: nn.Module, params: str = "all") -> ParamLayout:
        """Layout of ``model``'s parameter vector, in ``named_parameters()`` order.

        Args:
            model: Any module.
            params: ``"all"`` (default): every floating-point parameter, whatever its ``requires_grad``
                (see the module docstring for why); ``"trainable"``: only those with ``requires_grad=True``.

        Returns:
            The layout.

        Raises:
            ValueError: On an unknown ``params``.
        """
        modules = dict(model.named_modules())
        specs = []
        pos = 0
        for name, p in named_vector_parameters(model, params):
            layer, found, parametrized = _owner(modules, name)
            owner = model if found is None else found
            axis, groups = None, 1
            if p.dim() >= 2:
                axis = _filter_axis(owner)
                if parametrized and p.shape[axis] == 1:  # weight_norm's magnitudes of a transposed conv: (in, 1, k)
                    axis = 0
                if axis == 1 and isinstance(owner, nn.modules.conv._ConvTransposeNd):
                    groups = int(owner.groups)  # its output filters straddle the groups (TensorSpec.groups)
            kind = type(owner).__name__
            specs.append(TensorSpec(name, tuple(p.shape), pos, pos + p.numel(), layer, axis, kind, groups))
            pos += p.numel()
        return cls(specs)

    # ------------------------------------------------------------------ views
    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names in vector order."""
        return tuple(s.name for s in self.specs)

    @property
    def layers(self) -> dict[str, tuple[TensorSpec, ...]]:
        """Tensors grouped by owning module, in vector order (weight and bias of a layer together)."""
        out: dict[str, list[TensorSpec]] = {}
        for s in self.specs:
            out.setdefault(s.layer, []).append(s)
        return {k: tuple(v) for k, v in out.items()}

    def layer_index(self, layer: str) -> Tensor:
        """Indices into the flat vector of every tensor of one layer, shape ``(n_layer,)``.

        Raises:
            KeyError: If no tensor belongs to ``layer``; the message lists the layers.
        """
        groups = self.layers
        if layer not in groups:
            raise KeyError(f"no layer {layer!r} in this layout; layers are {list(groups)}")
        return torch.cat([torch.arange(s.start, s.stop) for s in groups[layer]])

    def __getitem__(self, name: str) -> TensorSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r} in this layout; names are {list(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TensorSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParamLayout):
            return NotImplemented
        return [(s.name, s.shape) for s in self.specs] == [(s.name, s.shape) for s in other.specs]

    def __hash__(self) -> int:
        return hash(tuple((s.name, s.shape) for s in self.specs))

    def __repr__(self) -> str:
        n, d = len(self.specs), self.numel
        return f"ParamLayout({n} tensor{'s' * (n != 1)}, {d} parameter{'s' * (d != 1)})"

    # -------------------------------------------------------------- conversion
    def check_vector(self, vec: Tensor) -> None:
        """Raise a clear error unless ``vec`` is a flat vector of this layout's length.

        Raises:
            ValueError: On a wrong dimension or length.
        """
        if vec.dim() != 1:
            raise ValueError(
                f"expected a flat parameter vector of shape ({self.numel},), got shape {tuple(vec.shape)}; "
                "use parameters_to_vector(model) or layout.flatten(dict)"
            )
        if vec.numel() != self.numel:
            if not self.specs:
                raise ValueError(
                    f"parameter vector has {vec.numel()} entries but this layout is empty: the model has no "
                    "floating-point parameters"
                )
            raise ValueError(
                f"parameter vector has {vec.numel()} entries but this architecture has {self.numel} "
                f"parameters ({len(self.specs)} tensors, first {self.specs[0].name!r}"
                f"{tuple(self.specs[0].shape)}, frozen ones included); was it taken from a different model, or "
                "from only the trainable parameters (params='trainable')?"
            )

    def check_shapes(self, other: ParamLayout, what: str) -> None:
        """Raise ``ValueError`` unless ``other`` (``what``'s layout) has these tensor shapes in order (any names).

        Raises:
            ValueError: Naming the first tensor whose shape differs (an equal parameter count is not one architecture).
        """
        mine, theirs = [s.shape for s in self.specs], [s.shape for s in other.specs]
        if mine != theirs:
            i = next((k for k, (p, q) in enumerate(zip(mine, theirs)) if p != q), min(len(mine), len(theirs)))
            got = f"{other.specs[i].name!r} of shape {theirs[i]}" if i < len(theirs) else "missing"
            want = f"{self.specs[i].name!r} of shape {mine[i]}" if i < len(mine) else "none"
            raise ValueError(
                f"{what} is another architecture ({other.numel} parameters, the model {self.numel}): its tensor {i} "
                f"is {got}, the model's {want}; pass a model (or vector) of the model's architecture"
            )

    def check_dict(self, params: Mapping[str, Tensor]) -> None:
        """Raise a clear error unless ``params`` has exactly this layout's names and shapes.

        Raises:
            ValueError: Naming the first missing, unexpected or mis-shaped tensor.
        """
        for s in self.specs:
            if s.name not in params:
                raise ValueError(
                    f"parameter dict has no tensor {s.name!r} (shape {s.shape}); it looks like it comes "
                    "from a different architecture"
                )
            got = tuple(params[s.name].shape)
            if got != s.shape:
                raise ValueError(
                    f"tensor {s.name!r} has shape {got} but the model expects {s.shape}; the dict comes "
                    "from a different architecture"
                )
        extra = [k for k in params if k not in self._by_name]
        if extra:
            raise ValueError(f"parameter dict has tensor {extra[0]!r} that the model does not have")

    def flatten(self, params: Mapping[str, Tensor]) -> Tensor:
        """Concatenate a name->tensor dict into a flat vector of shape ``(numel,)``.

        Raises:
            ValueError: If the dict does not match the layout.
        """
        self.check_dict(params)
        return torch.cat([params[s.name].reshape(-1) for s in self.specs])

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat vector of shape ``(numel,)`` into a name->tensor dict of views.

        Raises:
            ValueError: If ``vec`` has the wrong shape.
        """
        self.check_vector(vec)
        return {s.name: vec[s.start : s.stop].view(s.shape) for s in self.specs}

    def unflatten_batch(self, mat: Tensor) -> dict[str, Tensor]:
        """Split a matrix of points, shape ``(P, numel)``, into a dict of ``(P, *shape)`` views."""
        if mat.dim() != 2 or mat.shape[1] != self.numel:
            raise ValueError(f"expected a matrix of shape (P, {self.numel}), got {tuple(mat.shape)}")
        return {s.name: mat[:, s.start : s.stop].reshape(mat.shape[0], *s.shape) for s in self.specs}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form (used by the trajectory manifest)."""
        return {"numel": self.numel, "tensors": [s.to_dict() for s in self.specs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParamLayout:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: If the stored entries are inconsistent.
        """
        layout = cls([TensorSpec.from_dict(t) for t in d["tensors"]])
        if "numel" in d and int(d["numel"]) != layout.numel:
            raise ValueError(f"stored layout says {d['numel']} parameters but its tensors add to {layout.numel}")
        return layout


def named_vector_parameters(model: nn.Module, params: str = "all") -> Iterator[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs a parameter vector covers, in ``named_parameters()`` order.

    The one place that decides which parameters form the vector (:meth:`ParamLayout.from_model` and
    :func:`parameters_to_vector` both use it, so they always agree).

    Args:
        model: Any module.
        params: ``"all"``: every floating-point parameter, frozen ones included; ``"trainable"``: only
            those with ``requires_grad=True``.

    Raises:
        ValueError: On an unknown ``params``.
    """
    if params not in _LAYOUT_CHOICES:
        raise ValueError(f"params must be one of {list(_LAYOUT_CHOICES)}, got {params!r}")
    for name, p in model.named_parameters():
        if not (p.is_floating_point() or p.is_complex()):
            continue  # integer "parameters" cannot move continuously
        if params == "trainable" and not p.requires_grad:
            continue
        yield name, p
