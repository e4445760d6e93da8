"""The stacked executor's program (private): values of all points, instructions over environment slots.

Values flowing through a program are either point-independent (plain Python objects and tensors: the
data, frozen parameters, buffers, shapes) or a :class:`Val` holding every point's value:

- ``SM`` ("sample-major"): one tensor ``(P, *per_point_shape)``;
- ``FM`` ("feature-major"): a per-point ``(B, F)`` stored as ``(P, F, B)``: chains of ``Linear``
  layers are batched matrix products on it, and class-major logits make the cross-entropy's
  ``log_softmax`` run over contiguous samples;
- ``PP``: a list of ``P`` per-point values (what the per-point fallback returns when the values are
  not tensors of one shape).

A :class:`Program` is a list of :class:`Instr` (one per traced node) whose arguments reference earlier
slots through :class:`Ref`; :mod:`landscape.evaluate._trace` builds it, :mod:`landscape.evaluate._stacked` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

SM, FM, PP = 2, 3, 4


class Unsupported(Exception):
    """An operation the stacked executor cannot evaluate (the caller falls back to another strategy)."""


class Val:
    """Every point's value of one graph node (``kind`` SM, FM or PP); ``owned``: a buffer no one else reads."""

    __slots__ = ("kind", "data", "owned")

    def __init__(self, kind: int, data: Any, owned: bool = False) -> None:
        self.kind, self.data, self.owned = kind, data, owned


# --------------------------------------------------------------------------- values
def pshape(v: Any) -> tuple[int, ...]:
    """Per-point shape of a value."""
    if not isinstance(v, Val):
        return tuple(v.shape)
    if v.kind == SM:
        return tuple(v.data.shape[1:])
    if v.kind == FM:
        return (v.data.shape[2], v.data.shape[1])
    return tuple(v.data[0].shape)


def sm(v: Any, P: int) -> Tensor:
    """``(P, *per_point_shape)`` tensor of a tensor value (a view where possible)."""
    if not isinstance(v, Val):
        return v.expand(P, *v.shape)
    if v.kind == SM:
        return v.data
    if v.kind == FM:
        return v.data.transpose(1, 2)
    raise Unsupported("per-point values that are not tensors of one shape")


def point(v: Any, p: int) -> Any:
    """Point ``p``'s value of anything (nested lists, tuples and dicts too)."""
    if isinstance(v, Val):
        if v.kind == SM:
            return v.data[p]
        if v.kind == FM:
            return v.data[p].T
        return v.data[p]
    if isinstance(v, tuple | list):
        return type(v)(point(a, p) for a in v)
    if isinstance(v, dict):
        return {k: point(a, p) for k, a in v.items()}
    return v


def has_val(v: Any) -> bool:
    if isinstance(v, Val):
        return True
    if isinstance(v, tuple | list):
        return any(has_val(a) for a in v)
    if isinstance(v, dict):
        return any(has_val(a) for a in v.values())
    return False


def has_pp(v: Any) -> bool:
    if isinstance(v, Val):
        return v.kind == PP
    if isinstance(v, tuple | list):
        return any(has_pp(a) for a in v)
    if isinstance(v, dict):
        return any(has_pp(a) for a in v.values())
    return False


def point_axis(d: int, nd: int) -> int:
    """Per-point axis ``d`` (of ``nd`` axes) as an axis of the stacked ``(P, ...)`` tensor."""
    if not -nd <= d < nd:
        raise Unsupported(f"axis {d} out of range for {nd} axes")
    return d % nd + 1


def stack_points(outs: list[Any], owned: bool = True) -> Val:
    """Per-point results as one SM tensor when they are tensors of one shape, else a PP list."""
    if (
        all(isinstance(o, Tensor) for o in outs)
        and len({tuple(o.shape) for o in outs}) == 1
        and len({o.dtype for o in outs}) == 1
    ):
        return Val(SM, torch.stack(outs), owned)
    return Val(PP, outs)


# --------------------------------------------------------------------------- instructions
class Ref:
    """A reference to slot ``i`` of the environment (a node's value)."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        return f"%{self.i}"


class Instr:
    """One node: ``handler(ctx, self, args, kwargs)`` writes ``env[out]``."""

    __slots__ = ("out", "handler", "fn", "args", "kwargs", "meta", "inplace_ok", "dyn", "bufdep", "dead", "name")

    def __init__(
        self,
        out: int,
        handler: Callable[..., Any],
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        meta: dict[str, Any] | None = None,
        name: str = "",
    ) -> None:
        self.out, self.handler, self.fn, self.args, self.kwargs = out, handler, fn, args, kwargs
        self.meta = meta or {}
        self.inplace_ok = False  # the first input has no other reader: may be overwritten
        self.dyn = self.bufdep = self.dead = False
        self.name = name


def slot_refs(a: Any) -> list[int]:
    if isinstance(a, Ref):
        return [a.i]
    if isinstance(a, tuple | list):
        return [i for x in a for i in slot_refs(x)]
    if isinstance(a, dict):
        return [i for x in a.values() for i in slot_refs(x)]
    if isinstance(a, slice):
        return slot_refs((a.start, a.stop, a.step))
    return []


def resolve(a: Any, env: list[Any]) -> Any:
    t = type(a)
    if t is Ref:
        return env[a.i]
    if t is tuple or t is list:
        return t(resolve(x, env) for x in a)
    if t is dict:
        return {k: resolve(x, env) for k, x in a.items()}
    if t is slice:  # bounds read from shapes: x[:, : x.size(1) // 2]
        return slice(resolve(a.start, env), resolve(a.stop, env), resolve(a.step, env))
    return a


class Program:
    """A traced model as instructions over environment slots (built by :func:`build_program`)."""

    def __init__(self) -> None:
        self.instrs: list[Instr] = []
        self.n_slots = 0
        self.consts: dict[int, Any] = {}  # slot -> point-independent constant (non-vector attributes)
        self.params: dict[int, str] = {}  # slot -> parameter name (canonical)
        self.buffers: dict[int, str] = {}  # slot -> buffer name (canonical)
        self.input = -1
        self.output = -1
        self.affine: dict[int, dict[str, Any]] = {}  # instr position -> first-layer description

    def slot(self) -> int:
        self.n_slots += 1
        return self.n_slots - 1


def has_ref(a: Any) -> bool:
    """Does ``a`` (nested tuples, lists, dicts) reference any slot?"""
    return bool(slot_refs(a))
