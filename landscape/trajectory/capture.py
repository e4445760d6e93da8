"""Capturing a model's parameter vector, layout and buffers for a snapshot, fast when the model is unchanged.

Recording every step made the walk over the model's modules the largest part of ``append_model``. The
layout is rebuilt only when the parameters themselves change (new tensors or shapes, as a tunnel event
does): comparing identities is far cheaper than a rebuild. ``requires_grad`` is not part of the layout
(see :mod:`landscape.params`), so freezing a tensor keeps the segment.
"""

from __future__ import annotations

import operator
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from landscape.params import ParamLayout, parameters_to_vector

__all__: list[str] = []

#: What :func:`capture_model` keeps between calls: ``(model, structure, layout, flat views, buffers)``.
Capture = tuple[Any, ...]


def named_tensors(model: nn.Module) -> tuple[list[tuple[str, Tensor]], dict[str, Tensor]]:
    """``(list(model.named_parameters()), dict(model.named_buffers()))`` in one walk over the modules.

    Same names, order and de-duplication as torch's two generators, at about a third of their cost: for a
    snapshot every step the module walk was the largest part of recording.
    """
    params: list[tuple[str, Tensor]] = []
    buffers: dict[str, Tensor] = {}
    seen_mod: set[int] = set()
    seen_p: set[int] = set()
    seen_b: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    mods: list[tuple[str, nn.Module]] = []
    while stack:  # pre-order, children in registration order: the order of named_modules()
        prefix, m = stack.pop()
        if id(m) in seen_mod:
            continue
        seen_mod.add(id(m))
        mods.append((prefix, m))
        children = [(f"{prefix}.{k}" if prefix else k, c) for k, c in m._modules.items() if c is not None]
        stack.extend(reversed(children))
    for prefix, m in mods:  # named_parameters() lists every module's parameters in module order
        dot = prefix + "." if prefix else ""
        for k, p in m._parameters.items():
            if p is not None and id(p) not in seen_p:
                seen_p.add(id(p))
                params.append((dot + k, p))
    for prefix, m in mods:
        dot = prefix + "." if prefix else ""
        for k, b in m._buffers.items():
            if b is not None and id(b) not in seen_b:
                seen_b.add(id(b))
                buffers[dot + k] = b
    return params, buffers


_DICTS = operator.attrgetter("_modules", "_parameters", "_buffers")


def _module_sig(mods: list[nn.Module]) -> list[Any]:
    # Every module's child, parameter and buffer dicts, then their names, then their values (C-speed list
    # building; compared by identity, see same_structure).
    dicts = [d for m in mods for d in _DICTS(m)]
    return [*dicts, *chain.from_iterable(dicts), *chain.from_iterable(map(dict.values, dicts))]


def _tensor_sig(tensors: list[Tensor]) -> list[tuple[Any, ...]]:
    return [(t.data_ptr(), t.shape, t.stride(), t.dtype) for t in tensors]


def _structure(model: nn.Module, tensors: list[Tensor]) -> tuple[Any, ...]:
    """What :func:`same_structure` compares.

    Every module's children, parameters and buffers (their dicts, names and objects) and the layout
    tensors' memory, shape, stride and dtype. The objects are held, so that no identity can be reused.
    """
    mods = list(model.modules())
    return mods, _module_sig(mods), tensors, _tensor_sig(tensors)


def same_structure(structure: tuple[Any, ...]) -> bool:
    # By identity: an equal but new name or object counts as a change (a rebuild, never a wrong reuse).
    mods, sig, tensors, tsig = structure
    now = _module_sig(mods)
    return len(now) == len(sig) and all(map(operator.is_, now, sig)) and _tensor_sig(tensors) == tsig


class Rows:
    """Fresh rows of preallocated blocks: where the store's fast ``append_model`` copies a snapshot's vector.

    One ``torch.cat(views, out=row)`` into a row of a ``(BLOCK, numel)`` block replaces an allocation per
    snapshot; a new block is allocated when one is used up (rows are never reused: a memory store keeps
    them, the disk writer holds them until written).
    """

    BLOCK = 64

    def __init__(self, numel: int, dtype: torch.dtype) -> None:
        self.numel, self.dtype = numel, dtype
        self.free: list[tuple[Tensor, memoryview | None]] = []

    def take(self) -> tuple[Tensor, memoryview | None]:
        """A new row, shape ``(numel,)``, contents undefined, and its bytes (``None`` where numpy lacks the dtype)."""
        if not self.free:
            block = torch.empty(self.BLOCK, self.numel, dtype=self.dtype)
            rows = block.unbind(0)
            try:  # the block's bytes once (raw_bytes of each row would cost a numpy array per snapshot)
                data = memoryview(block.numpy().data).cast("B")
            except TypeError:  # bfloat16
                self.free = [(r, None) for r in reversed(rows)]
            else:
                n = data.nbytes // self.BLOCK
                self.free = [(r, data[k * n : (k + 1) * n]) for k, r in reversed(list(enumerate(rows)))]
        return self.free.pop()


def capture_model(
    model: nn.Module, current: ParamLayout | None, cached: Capture | None
) -> tuple[ParamLayout, Tensor, dict[str, Tensor], Capture | None]:
    """The model's parameter vector (frozen parameters included), its layout and its buffers (uncopied).

    Args:
        model: The network (only read).
        current: The layout of the trajectory's current segment, returned (the same object) when the
            model's layout equals it, so that the snapshot stays in the segment.
        cached: What the previous call returned last, or ``None``.

    Returns:
        ``(layout, vector, buffers, capture)``: ``vector`` has shape ``(layout.numel,)`` and is a new
        tensor; pass ``capture`` to the next call (``None``: nothing to reuse). A capture holds flat
        detached views of the parameters: they share the parameters' memory, so they see in-place updates
        (optimizer steps). It is used while no module, parameter or buffer of the model was added,
        removed or replaced (identities, module by module), no parameter's ``.data``, shape or stride
        changed, and its layout is still ``current``.
    """
    c = cached
    if c is not None and c[0] is model and current is not None and current is c[2] and same_structure(c[1]):
        return c[2], torch.cat(c[3]) if c[3] else parameters_to_vector(model), c[4], c
    named, buffers = named_tensors(model)
    layout = ParamLayout.from_model(model)
    if current is not None and layout.specs == current.specs:
        layout = current
    vec = parameters_to_vector(model)
    own = dict(named)
    tensors = [own[s.name] for s in layout.specs] if all(s.name in own for s in layout.specs) else None
    c = None
    if tensors is not None and all(p.is_contiguous() for p in tensors):
        views = [p.detach().view(-1) for p in tensors]  # must give exactly what parameters_to_vector gives
        fast = torch.cat(views) if views else None
        if fast is not None and fast.dtype == vec.dtype and torch.equal(fast, vec):
            c = (model, _structure(model, tensors), layout, views, buffers)
    return layout, vec, buffers, c
