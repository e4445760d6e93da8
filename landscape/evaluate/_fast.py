"""Operation-level fast paths of the evaluation engine (private; :mod:`landscape.evaluate.points` drives them).

The stacked executor evaluates a chunk of ``P`` parameter points at once. The model is traced once
with :mod:`torch.fx` (standard ``torch.nn`` layers stay leaves, everything else is traced through),
and every node of the graph, a ``call_module`` of a known layer type or a ``call_function`` /
``call_method`` of a known operation, gets a handler that works on all points together. How a
model is written therefore does not matter: ``nn.MaxPool2d(2)`` and ``F.max_pool2d(x, 2)``,
``nn.Linear`` and ``F.linear(x, self.w)``, ``nn.ReLU()`` and ``x.relu()`` take the same path.

Values flowing through the graph are either point-independent (plain Python objects and tensors: the
data, frozen parameters, buffers, shapes) or a :class:`Val` holding every point's value:

- ``SM`` ("sample-major"): one tensor ``(P, *per_point_shape)``;
- ``FM`` ("feature-major"): a per-point ``(B, F)`` stored as ``(P, F, B)``: chains of ``Linear``
  layers are batched matrix products on it, and class-major logits make the cross-entropy's
  ``log_softmax`` run over contiguous samples;
- ``PP``: a list of ``P`` per-point values (what the per-point fallback returns when the values are
  not tensors of one shape).

Operations without a vectorized handler run point by point on the per-point values (exact, slower),
so every traceable model runs. Nodes that depend on no point are computed once per batch and
cached. Handlers that matter for speed:

- ``Linear``: one ``bmm`` per chunk; ``Conv``: one convolution per point (oneDNN runs LeNet-sized
  convolutions near the single-thread ``torch.mm`` rate) or, with frozen weights, one for all;
- affine points (``sum_k c_k basis_k``): a ``Linear``/``Conv`` whose input depends on no parameter
  (the first layer) is computed once per basis vector and batch, and each point's output is one
  small matrix product ``C (P, K) @ Z (K, ...)``;
- exact 2x2 max pooling as ``torch.maximum`` of strided views (``F.max_pool2d`` is ~10x slower on
  this CPU); a nondecreasing activation before it is moved after it (``max`` commutes with it, 4x
  fewer activations); a pooled first layer keeps its maps split by pooling phase, so the pooling
  is one ``amax`` over the product's output, and a pooled convolution writes each point's pooled
  output straight into the chunk's tensor;
- ``tanh`` through NumPy's SIMD kernel (:func:`tanh_`, 7x ``torch.tanh`` on this CPU, within 2 ulp);
- large per-chunk tensors go to reused buffers (fresh multi-megabyte tensors page-fault on every
  touch).

Untraceable models (data-dependent control flow) run through :class:`FastOpsMode` instead, a
``TorchFunctionMode`` that routes 2x2 ``F.max_pool2d`` calls to the strided-view kernel.
"""

from __future__ import annotations

import builtins
import inspect
import math
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

SM, FM, PP = 2, 3, 4


class Unsupported(Exception):
    """An operation the stacked executor cannot evaluate (the caller falls back to another strategy)."""


class Val:
    """Every point's value of one graph node (``kind`` SM, FM or PP); ``owned``: a buffer no one else reads."""

    __slots__ = ("kind", "data", "owned")

    def __init__(self, kind: int, data: Any, owned: bool = False) -> None:
        self.kind, self.data, self.owned = kind, data, owned


# =========================================================================== kernels
def maxpool2(h: Tensor, out: tuple[Tensor, Tensor] | Tensor | None = None) -> Tensor:
    """2x2 stride-2 max pooling of ``(..., H, W)``: two ``torch.maximum`` of strided views (exact).

    ``out``: the final ``(..., H/2, W/2)`` result buffer, or a pair (intermediate ``(..., H/2, W)``,
    final). Odd sizes drop their last row/column (floor mode, like ``F.max_pool2d``).
    """
    H, W = h.shape[-2] // 2 * 2, h.shape[-1] // 2 * 2
    if (H, W) != tuple(h.shape[-2:]):
        h = h[..., :H, :W]
    mid, fin = (out if isinstance(out, tuple) else (None, out)) if out is not None else (None, None)
    a = (
        torch.maximum(h[..., 0::2, :], h[..., 1::2, :], out=mid)
        if mid is not None
        else torch.maximum(h[..., 0::2, :], h[..., 1::2, :])
    )
    return (
        torch.maximum(a[..., 0::2], a[..., 1::2], out=fin)
        if fin is not None
        else torch.maximum(a[..., 0::2], a[..., 1::2])
    )


def tanh_(t: Tensor) -> Tensor:
    """In-place ``tanh``; on contiguous CPU float tensors through NumPy's SIMD kernel.

    Measured here on float32: 0.36 ns per element against 2.6 for ``torch.tanh_`` (which the tanh
    MLP's planes spent half their time in), largest relative error to float64 ``tanh`` 1.1e-7
    against 6e-8 (2 units in the last place instead of 1).
    """
    if (
        t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and t.is_contiguous()
        and not t.requires_grad
    ):
        a = t.numpy()
        np.tanh(a, out=a)
        return t
    return torch.tanh_(t)


def _tanh(t: Tensor) -> Tensor:
    """Out-of-place :func:`tanh_`."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not t.requires_grad:
        return tanh_(t.contiguous().clone() if not t.is_contiguous() else t.clone())
    return torch.tanh(t)


def _two(v: Any) -> bool:
    return v in (2, (2, 2), [2, 2])


def is_pool2(
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> bool:
    """Are these ``max_pool2d`` arguments plain 2x2 stride-2 pooling (what :func:`maxpool2` computes)?"""
    return (
        _two(kernel_size)
        and (stride is None or _two(stride) or stride == [] or stride == ())
        and padding in (0, (0, 0), [0, 0])
        and dilation in (1, (1, 1), [1, 1])
        and not ceil_mode
        and not return_indices
    )


def _bind(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    b = inspect.signature(fn).bind(*args, **kwargs)
    b.apply_defaults()
    return dict(b.arguments)


def _sig_max_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,  # noqa: ANN001, ANN202
    return_indices=False,
): ...


_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}


def _pool_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """``max_pool2d``'s arguments by name (no ``inspect``: this runs on every call), or ``None``."""
    if len(args) > len(_POOL_ARGS) or set(kwargs) - set(_POOL_ARGS):
        return None
    b = {**_POOL_DEFAULTS, **dict(zip(_POOL_ARGS, args)), **kwargs}
    return b if "input" in b and "kernel_size" in b else None


class FastOpsMode(TorchFunctionMode):
    """Routes plain 2x2 ``F.max_pool2d`` calls (also from ``nn.MaxPool2d``) to :func:`maxpool2` (exact)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204, D105
        kwargs = kwargs or {}
        if func is F.max_pool2d or func is torch.max_pool2d:
            b = _pool_args(args, kwargs)
            if (
                b is not None
                and isinstance(b["input"], Tensor)
                and b["input"].dim() in (3, 4)
                and is_pool2(
                    b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"], b["return_indices"]
                )
            ):
                return maxpool2(b["input"])
        return func(*args, **kwargs)


def uses_pool2(model: nn.Module, call: Callable[[], Any]) -> bool:
    """Whether ``call()`` (a forward of ``model``) uses plain 2x2 max pooling (then :class:`FastOpsMode` pays)."""
    seen = [False]

    class Probe(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if func is F.max_pool2d or func is torch.max_pool2d:
                b = _pool_args(args, kwargs or {})
                if b is not None:
                    seen[0] |= is_pool2(
                        b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"], b["return_indices"]
                    )
            return func(*args, **(kwargs or {}))

    try:
        with Probe():
            call()
    except Exception:  # noqa: BLE001 - the probe only decides whether to use the mode
        return False
    return seen[0]


# =========================================================================== op tables
def _identity(x: Any, *a: Any, **k: Any) -> Any:
    return x


_UNARY_FN: set[Any] = {
    torch.relu,
    F.relu,
    torch.tanh,
    F.tanh,
    torch.sigmoid,
    F.sigmoid,
    F.gelu,
    F.silu,
    F.elu,
    F.leaky_relu,
    F.hardtanh,
    F.relu6,
    F.softplus,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.selu,
    F.celu,
    F.softsign,
    F.tanhshrink,
    F.logsigmoid,
    torch.exp,
    torch.neg,
    torch.abs,
    torch.square,
    torch.sqrt,
    torch.rsqrt,
    torch.log,
    torch.sin,
    torch.cos,
    torch.erf,
    torch.clamp,
    torch.clip,
    torch.pow,
    torch.reciprocal,
    torch.sign,
    operator.neg,
    operator.pos,
    operator.abs,
    torch.nan_to_num,
}
_DROPOUT_FN = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
_UNARY_METHOD = {
    "relu",
    "tanh",
    "sigmoid",
    "exp",
    "neg",
    "abs",
    "square",
    "sqrt",
    "rsqrt",
    "log",
    "sin",
    "cos",
    "erf",
    "clamp",
    "clip",
    "pow",
    "reciprocal",
    "sign",
    "float",
    "double",
    "half",
    "to",
    "contiguous",
    "clone",
    "detach",
    "type_as",
    "nan_to_num",
}
_INPLACE_METHOD = {
    "relu_": "relu",
    "tanh_": "tanh",
    "sigmoid_": "sigmoid",
    "clamp_": "clamp",
    "exp_": "exp",
    "neg_": "neg",
    "abs_": "abs",
    "pow_": "pow",
    "sqrt_": "sqrt",
}
_BINARY_FN = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.addcmul,
    torch.true_divide,
    torch.rsub,
}
_BINARY_METHOD = {
    "add",
    "sub",
    "mul",
    "div",
    "true_divide",
    "maximum",
    "minimum",
    "add_",
    "sub_",
    "mul_",
    "div_",
    "addcmul",
    "rsub",
}
_OWN_INPLACE: dict[Any, Callable[[Tensor], Tensor]] = {
    torch.relu: torch.relu_,
    F.relu: torch.relu_,
    torch.tanh: tanh_,
    F.tanh: tanh_,
    torch.sigmoid: torch.sigmoid_,
    F.sigmoid: torch.sigmoid_,
    "relu": torch.relu_,
    "tanh": tanh_,
    "sigmoid": torch.sigmoid_,
}
_FAST_OUT: dict[Any, Callable[[Tensor], Tensor]] = {torch.tanh: _tanh, F.tanh: _tanh, "tanh": _tanh}
# Nondecreasing functions commute with max pooling: pool(f(x)) == f(pool(x)) (4x fewer evaluations of f).
_MONOTONE: set[Any] = {
    torch.relu,
    F.relu,
    torch.tanh,
    F.tanh,
    torch.sigmoid,
    F.sigmoid,
    F.relu6,
    "relu",
    "tanh",
    "sigmoid",
}
# Values take an instance of their key (not expressible per entry in a dict type, hence Any).
_MODULE_UNARY: dict[type, Callable[[Any], tuple[Any, dict[str, Any], bool]]] = {
    nn.ReLU: lambda m: (F.relu, {}, True),
    nn.Tanh: lambda m: (torch.tanh, {}, True),
    nn.Sigmoid: lambda m: (torch.sigmoid, {}, True),
    nn.ReLU6: lambda m: (F.relu6, {}, True),
    nn.LeakyReLU: lambda m: (F.leaky_relu, {"negative_slope": m.negative_slope}, m.negative_slope >= 0),
    nn.ELU: lambda m: (F.elu, {"alpha": m.alpha}, m.alpha >= 0),
    nn.Hardtanh: lambda m: (F.hardtanh, {"min_val": m.min_val, "max_val": m.max_val}, m.min_val <= m.max_val),
    nn.GELU: lambda m: (F.gelu, {"approximate": m.approximate}, False),
    nn.SiLU: lambda m: (F.silu, {}, False),
    nn.Mish: lambda m: (F.mish, {}, False),
    nn.Softplus: lambda m: (F.softplus, {"beta": m.beta, "threshold": m.threshold}, m.beta > 0),
    nn.Hardswish: lambda m: (F.hardswish, {}, False),
    nn.Hardsigmoid: lambda m: (F.hardsigmoid, {}, True),
    nn.SELU: lambda m: (F.selu, {}, True),
    nn.CELU: lambda m: (F.celu, {"alpha": m.alpha}, m.alpha > 0),
    nn.Softsign: lambda m: (F.softsign, {}, True),
    nn.LogSigmoid: lambda m: (F.logsigmoid, {}, True),
    nn.Identity: lambda m: (_identity, {}, True),
    nn.Dropout: lambda m: (_identity, {}, True),
    nn.Dropout1d: lambda m: (_identity, {}, True),
    nn.Dropout2d: lambda m: (_identity, {}, True),
    nn.Dropout3d: lambda m: (_identity, {}, True),
    nn.AlphaDropout: lambda m: (_identity, {}, True),
}
_CONV_FN = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3, F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_CONV_MOD = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_POOL_FN = {
    F.avg_pool2d: 2,
    F.adaptive_avg_pool2d: 2,
    F.adaptive_max_pool2d: 2,
    F.max_pool1d: 1,
    F.avg_pool1d: 1,
    F.adaptive_avg_pool1d: 1,
    F.lp_pool2d: 2,
    F.max_pool3d: 3,
    F.avg_pool3d: 3,
    F.adaptive_avg_pool3d: 3,
    torch.max_pool2d: 2,
}
_POOL_MOD = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
    nn.MaxPool1d,
    nn.MaxPool3d,
    nn.LPPool2d,
)
_POOL_MOD_DIMS = {
    nn.AvgPool1d: 1,
    nn.MaxPool1d: 1,
    nn.AdaptiveAvgPool1d: 1,
    nn.AvgPool3d: 3,
    nn.MaxPool3d: 3,
    nn.AdaptiveAvgPool3d: 3,
}
_REDUCE = {"mean", "sum", "amax", "amin", "prod", "logsumexp", "std", "var", "norm"}
_SOFTMAX = {
    F.softmax: "softmax",
    F.log_softmax: "log_softmax",
    torch.softmax: "softmax",
    torch.log_softmax: "log_softmax",
}


# =========================================================================== helpers on values
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


def _dim(d: int, nd: int) -> int:
    """Per-point axis ``d`` (of ``nd`` axes) as an axis of the stacked ``(P, ...)`` tensor."""
    if not -nd <= d < nd:
        raise Unsupported(f"axis {d} out of range for {nd} axes")
    return d % nd + 1


def _stacked(outs: list[Any], owned: bool = True) -> Val:
    """Per-point results as one SM tensor when they are tensors of one shape, else a PP list."""
    if (
        all(isinstance(o, Tensor) for o in outs)
        and len({tuple(o.shape) for o in outs}) == 1
        and len({o.dtype for o in outs}) == 1
    ):
        return Val(SM, torch.stack(outs), owned)
    return Val(PP, outs)


# =========================================================================== program
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


def _refs(a: Any) -> list[int]:
    if isinstance(a, Ref):
        return [a.i]
    if isinstance(a, tuple | list):
        return [i for x in a for i in _refs(x)]
    if isinstance(a, dict):
        return [i for x in a.values() for i in _refs(x)]
    return []


def _resolve(a: Any, env: list[Any]) -> Any:
    t = type(a)
    if t is Ref:
        return env[a.i]
    if t is tuple or t is list:
        return t(_resolve(x, env) for x in a)
    if t is dict:
        return {k: _resolve(x, env) for k, x in a.items()}
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


_TRACES: weakref.WeakKeyDictionary[nn.Module, tuple[Any, torch.fx.Graph | None]] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """What a cached trace of ``model`` depends on that can change in place: structure, names, shapes, modes."""
    return (
        tuple((n, type(m), m.training) for n, m in model.named_modules()),
        tuple((n, tuple(p.shape), p.dtype) for n, p in model.named_parameters(remove_duplicate=False)),
        tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers(remove_duplicate=False)),
    )


def _trace(model: nn.Module, key: nn.Module | None) -> torch.fx.Graph | None:
    """The fx graph of ``model``, cached per ``key`` (the caller's model) while its fingerprint holds.

    Tracing costs ~3 ms even for an MLP, a large share of a short line's time. A cached graph is only
    reused for a model with the same modules, parameter and buffer names and shapes; a Python attribute
    changed in place (a stride, a flag read by ``forward``) is not seen by the fingerprint, but the
    executor is checked against ``functional_call`` before every use, so a stale graph falls back.
    """
    fp = None
    if key is not None:
        try:
            fp = (_fingerprint(key), type(model))
            hit = _TRACES.get(key)
        except TypeError:  # not weak-referenceable
            key, hit = None, None
        if hit is not None and hit[0] == fp:
            return hit[1]
    try:
        graph: torch.fx.Graph | None = torch.fx.Tracer().trace(model)
    except Exception:  # noqa: BLE001 - untraceable models use the functional path
        graph = None
    if key is not None:
        _TRACES[key] = (fp, graph)
    return graph


def build_program(model: nn.Module, key: nn.Module | None = None) -> Program | None:
    """Trace ``model`` (an eval-mode private copy) into a :class:`Program`, or ``None`` if fx cannot trace it.

    ``key``: the caller's model, whose trace is cached (see :func:`_trace`).
    """
    graph = _trace(model, key)
    if graph is None:
        return None
    alias_p: dict[str, str] = {}
    seen: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        alias_p[n] = seen.setdefault(id(p), n)
    alias_b: dict[str, str] = {}
    seen = {}
    for n, b in model.named_buffers(remove_duplicate=False):
        alias_b[n] = seen.setdefault(id(b), n)
    prog = Program()
    slot_of: dict[torch.fx.Node, int] = {}
    attr_slot: dict[str, int] = {}
    users: dict[int, int] = {}

    def attr(target: str) -> Ref:
        if target in attr_slot:
            return Ref(attr_slot[target])
        s = prog.slot()
        attr_slot[target] = s
        if target in alias_p:
            prog.params[s] = alias_p[target]
        elif target in alias_b:
            prog.buffers[s] = alias_b[target]
        else:
            obj: Any = model
            for part in target.split("."):
                obj = getattr(obj, part)
            prog.consts[s] = obj
        return Ref(s)

    def arg(a: Any) -> Any:
        # map_arg is typed for fx Arguments; Ref placeholders in their place are the point here.
        return torch.fx.node.map_arg(a, lambda n: Ref(slot_of[n]))  # type: ignore[arg-type, return-value]

    for node in graph.nodes:
        if node.op == "placeholder":
            if prog.input >= 0:
                return None  # one input tensor only
            prog.input = slot_of[node] = prog.slot()
            continue
        if node.op == "get_attr":
            slot_of[node] = attr(node.target).i
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                return None
            prog.output = slot_of[out]
            break
        args, kwargs = arg(node.args), arg(node.kwargs)
        s = slot_of[node] = prog.slot()
        try:
            ins = _lower(node, model, args, kwargs, s, attr)
        except (Unsupported, TypeError, ValueError):  # unusual arguments: the exact per-point path
            m = model.get_submodule(node.target) if node.op == "call_module" else None
            ins = (
                Instr(s, h_module, m, args, kwargs, {"module": node.target})
                if m is not None
                else Instr(
                    s, h_generic, node.target, args, kwargs, {"method": node.target} if node.op == "call_method" else {}
                )
            )
        prog.instrs.append(ins)
    if prog.input < 0 or prog.output < 0:
        return None
    for ins in prog.instrs:
        for i in _refs((ins.args, ins.kwargs)):
            users[i] = users.get(i, 0) + 1
    users[prog.output] = users.get(prog.output, 0) + 1
    for ins in prog.instrs:
        first = ins.args[0] if ins.args and isinstance(ins.args[0], Ref) else None
        ins.inplace_ok = first is not None and users.get(first.i, 0) == 1 and first.i != prog.input
    _rewrite_pools(prog, users)
    _mark(prog)
    return prog


def _lower(
    node: torch.fx.Node,
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    s: int,
    attr: Callable[[str], Ref],
) -> Instr:
    """The instruction of one fx node (a handler chosen by the operation, not by how the model spells it)."""
    t = node.target
    if node.op == "call_module":
        assert isinstance(t, str)  # fx: a call_module's target is the module's qualified name
        m = model.get_submodule(t)
        tm = type(m)
        if len(args) != 1 or kwargs:
            return Instr(s, h_module, m, args, kwargs, {"module": t}, t)
        x = args[0]

        def p(name: str) -> Ref | None:
            return attr(f"{t}.{name}") if getattr(m, name, None) is not None else None

        if tm is nn.Linear:
            return Instr(s, h_linear, F.linear, (x, p("weight"), p("bias")), {}, name=t)
        if tm in _CONV_MOD and m.padding_mode == "zeros":
            fn: Callable[..., Any] = _CONV_MOD[tm]
            return Instr(
                s,
                h_conv,
                fn,
                (x, p("weight"), p("bias"), m.stride, m.padding, m.dilation, m.groups),
                {},
                {"nd": int(tm.__name__[-2])},
                t,
            )
        if tm in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) and not m.training and m.running_mean is not None:
            return Instr(
                s,
                h_bn,
                F.batch_norm,
                (x, p("running_mean"), p("running_var"), p("weight"), p("bias"), m.eps),
                {},
                name=t,
            )
        if tm is nn.MaxPool2d:
            return Instr(
                s,
                h_maxpool,
                F.max_pool2d,
                (x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices),
                {},
                name=t,
            )
        if tm in _POOL_MOD:
            return Instr(s, h_batched, m, (x,), {}, {"nd": _POOL_MOD_DIMS.get(tm, 2)}, t)
        if tm is nn.Flatten:
            return Instr(s, h_flatten, torch.flatten, (x, m.start_dim, m.end_dim), {}, name=t)
        if tm in _MODULE_UNARY:
            fn, kw, mono = _MODULE_UNARY[tm](m)
            ins = Instr(s, h_unary, fn, (x,), kw, {"monotone": mono}, t)
            if getattr(m, "inplace", False) and fn is not _identity:
                ins.meta["user_inplace"] = True
            return ins
        if tm is nn.LayerNorm:
            assert isinstance(m, nn.LayerNorm)
            return Instr(
                s, h_layer_norm, F.layer_norm, (x, tuple(m.normalized_shape), p("weight"), p("bias"), m.eps), {}, name=t
            )
        if tm is nn.Embedding and m.max_norm is None:
            return Instr(s, h_embedding, F.embedding, (x, p("weight")), {}, name=t)
        if tm in (nn.Softmax, nn.LogSoftmax) and m.dim is not None:
            fn = F.softmax if tm is nn.Softmax else F.log_softmax
            return Instr(s, h_dims, fn, (x, m.dim), {}, {"dims": ("dim", 1)}, t)
        return Instr(s, h_module, m, args, kwargs, {"module": t}, t)
    if node.op == "call_method":
        name = str(t)
        meta: dict[str, Any] = {"method": name}
        if name in _INPLACE_METHOD:
            meta["user_inplace"] = True
            name = meta["method"] = _INPLACE_METHOD[name]
        if name in ("size", "dim", "numel", "ndimension", "nelement"):
            return Instr(s, h_shape, name, args, kwargs, meta)
        if name in ("view", "reshape"):
            return Instr(s, h_reshape, name, args, kwargs, meta)
        if name == "flatten":
            b = _bind(_sig_flatten, args, kwargs)
            return Instr(s, h_flatten, torch.flatten, (b["input"], b["start_dim"], b["end_dim"]), {}, meta)
        if name in ("relu", "tanh", "sigmoid"):
            meta["monotone"] = True
        if name in _UNARY_METHOD:
            return Instr(s, h_unary, name, args, kwargs, meta)
        if name in _BINARY_METHOD:
            if name.endswith("_"):
                meta["user_inplace"] = True
                name = meta["method"] = name[:-1]
            return Instr(s, h_nary, name, args, kwargs, meta)
        if name in _REDUCE or name in ("softmax", "log_softmax", "transpose", "permute", "unsqueeze", "squeeze"):
            return Instr(s, h_dims, name, args, kwargs, meta)
        return Instr(s, h_generic, name, args, kwargs, meta)
    # call_function
    f = t
    assert not isinstance(f, str)  # fx: a call_function's target is the callable itself
    if f is builtins.getattr:
        return Instr(s, h_getattr, f, args, kwargs)
    if f is operator.getitem:
        return Instr(s, h_getitem, f, args, kwargs)
    if f is F.linear:
        return Instr(s, h_linear, f, *_norm(f, args, kwargs, ("input", "weight", "bias")))
    if f in _CONV_FN:
        return Instr(
            s,
            h_conv,
            f,
            *_norm(f, args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups")),
            {"nd": _CONV_FN[f]},
        )
    if f is F.batch_norm:
        b = _bind(_sig_batch_norm, args, kwargs)
        if b["training"]:
            return Instr(s, h_generic, f, args, kwargs)
        bn_args = (b["input"], b["running_mean"], b["running_var"], b["weight"], b["bias"], b["eps"])
        return Instr(s, h_bn, f, bn_args, {})
    if f is F.layer_norm:
        b = _bind(_sig_layer_norm, args, kwargs)
        return Instr(s, h_layer_norm, f, (b["input"], b["normalized_shape"], b["weight"], b["bias"], b["eps"]), {})
    if f is F.embedding:
        b = _bind(_sig_embedding, args, kwargs)
        if b["max_norm"] is None:
            return Instr(s, h_embedding, f, (b["input"], b["weight"]), {})
        return Instr(s, h_generic, f, args, kwargs)
    if f is F.max_pool2d:
        b = _bind(_sig_max_pool2d, args, kwargs)
        return Instr(
            s,
            h_maxpool,
            f,
            tuple(
                b.get(k, d)
                for k, d in (
                    ("input", None),
                    ("kernel_size", None),
                    ("stride", None),
                    ("padding", 0),
                    ("dilation", 1),
                    ("ceil_mode", False),
                    ("return_indices", False),
                )
            ),
            {},
        )
    if f in _POOL_FN:
        return Instr(s, h_batched, f, args, kwargs, {"nd": _POOL_FN[f]})
    if f in _DROPOUT_FN:
        training = _bind(f, args, kwargs).get("training", True)
        if training is False:
            return Instr(s, h_unary, _identity, (args[0],), {}, {"monotone": True})
        return Instr(s, h_generic, f, args, kwargs)
    if f in _UNARY_FN:
        meta = {"monotone": f in _MONOTONE}
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(f).parameters
        except (TypeError, ValueError):  # builtins
            params = {}
        if "inplace" in params:  # handled by the executor: bind, drop it, keep the input positional
            b = _bind(f, args, kwargs)
            meta["user_inplace"] = bool(b.pop("inplace"))
            first = next(iter(params))
            args, kwargs = (b.pop(first),), b
        if f is F.leaky_relu:
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            meta["monotone"] = isinstance(slope, float | int) and slope >= 0
        return Instr(s, h_unary, f, args, kwargs, meta)
    if f in (torch.relu_, torch.tanh_, torch.sigmoid_):
        base = {torch.relu_: torch.relu, torch.tanh_: torch.tanh, torch.sigmoid_: torch.sigmoid}[f]
        return Instr(s, h_unary, base, args, kwargs, {"monotone": True, "user_inplace": True})
    if f in _BINARY_FN:
        meta = {"user_inplace": f in (operator.iadd, operator.isub, operator.imul, operator.itruediv)}
        return Instr(s, h_nary, f, args, kwargs, meta)
    if f is torch.flatten:
        b = _bind(_sig_flatten, args, kwargs)
        return Instr(s, h_flatten, f, (b["input"], b["start_dim"], b["end_dim"]), {})
    if f is torch.reshape:
        return Instr(s, h_reshape, "reshape", args, kwargs)
    if f in (torch.cat, torch.concat, torch.stack):
        return Instr(s, h_cat, f, args, kwargs)
    if f in _SOFTMAX:
        return Instr(s, h_dims, _SOFTMAX[f], args, kwargs, {"method": _SOFTMAX[f]})
    for name in ("mean", "sum", "amax", "amin", "transpose", "permute", "unsqueeze", "squeeze", "logsumexp"):
        if f is getattr(torch, name):
            return Instr(s, h_dims, name, args, kwargs, {"method": name})
    return Instr(s, h_generic, f, args, kwargs)


def _sig_batch_norm(
    input,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,  # noqa: ANN001, ANN202
    momentum=0.1,
    eps=1e-5,
): ...


def _sig_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5): ...  # noqa: ANN001, ANN202


def _sig_embedding(
    input,
    weight,
    padding_idx=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,  # noqa: ANN001, ANN202
    sparse=False,
): ...


def _norm(f: Any, args: tuple[Any, ...], kwargs: dict[str, Any], names: Sequence[str]) -> tuple[tuple[Any, ...], dict]:
    """Positional arguments ``names`` from ``args``/``kwargs`` (defaults of the op where missing)."""
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    out = list(args[: len(names)])
    for n in names[len(out) :]:
        out.append(kwargs.get(n, defaults.get(n)))
    extra = set(kwargs) - set(names)
    if extra or len(args) > len(names):
        raise Unsupported(f"unexpected arguments {extra}")
    return tuple(out), {}


def _rewrite_pools(prog: Program, users: dict[int, int]) -> None:
    """Move nondecreasing activations after 2x2 max pools, and fuse a convolution into the pool after it.

    ``pool(f(x)) == f(pool(x))`` for nondecreasing ``f`` (exactly: ``max`` picks the same element), so
    ``conv -> relu -> pool`` becomes one instruction that pools each point's convolution output into
    the chunk's tensor and applies ``relu`` to the 4x smaller result.
    """
    by_out = {ins.out: ins for ins in prog.instrs}
    for ins in prog.instrs:
        if ins.handler is not h_maxpool or not isinstance(ins.args[0], Ref) or not is_pool2(*ins.args[1:]):
            continue
        post: list[Instr] = []
        src = ins.args[0]
        while True:
            prev = by_out.get(src.i)
            if (
                prev is None
                or prev.handler is not h_unary
                or not prev.meta.get("monotone")
                or users.get(src.i) != 1
                or prev.meta.get("user_inplace")
                or not prev.args
                or not isinstance(prev.args[0], Ref)
                or has_ref(prev.args[1:])
                or has_ref(prev.kwargs)
            ):
                break
            post.insert(0, prev)
            prev.dead = True
            src = prev.args[0]
        ins.args = (src, *ins.args[1:])
        ins.meta["post"] = [(p.fn, p.args[1:], p.kwargs) for p in post]
        conv = by_out.get(src.i)
        if conv is not None and conv.handler is h_conv and conv.meta.get("nd") == 2 and users.get(src.i) == 1:
            conv.dead = True
            ins.meta["conv"] = conv
            ins.handler = h_conv_pool


def has_ref(a: Any) -> bool:
    return bool(_refs(a))


def _mark(prog: Program) -> None:
    """Which instructions depend on points (``dyn``) or on buffers (``bufdep``); live-ness of fused ones."""
    dyn = set(prog.params)
    bufdep = set(prog.buffers)
    for ins in prog.instrs:
        refs = _refs((ins.args, ins.kwargs))
        conv = ins.meta.get("conv")
        if conv is not None:
            refs += _refs((conv.args, conv.kwargs))
        own_p, own_b = _module_state(ins) if ins.handler is h_module else (False, False)
        ins.dyn = own_p or any(r in dyn for r in refs)
        ins.bufdep = own_b or any(r in bufdep for r in refs)
        inplace = ins.meta.get("user_inplace") and ins.args and isinstance(ins.args[0], Ref)
        for flag, group in ((ins.dyn, dyn), (ins.bufdep, bufdep)):
            if flag:
                group.add(ins.out)
                if inplace:  # later readers of the mutated node see this result
                    group.add(ins.args[0].i)
    # First layers: a Linear/Conv of a point-independent input whose weight (and bias) are vector entries.
    for pos, ins in enumerate(prog.instrs):
        c = ins.meta.get("conv") if ins.handler is h_conv_pool else ins if ins.handler in (h_linear, h_conv) else None
        if c is None or ins.dead:
            continue
        x, w, b = c.args[0], c.args[1], c.args[2]
        if (
            not isinstance(w, Ref)
            or w.i not in prog.params
            or (b is not None and (not isinstance(b, Ref) or b.i not in prog.params))
        ):
            continue
        xr = _refs(x)
        if any(r in dyn or r in bufdep for r in xr):
            continue
        prog.affine[pos] = {"conv": c, "pooled": ins.handler is h_conv_pool}


def _module_state(ins: Instr) -> tuple[bool, bool]:
    """Does a leaf module evaluated by :func:`h_module` own parameters, buffers?"""
    return any(True for _ in ins.fn.parameters()), any(True for _ in ins.fn.buffers())


# =========================================================================== handlers
# Every handler is ``handler(ctx, ins, args, kwargs) -> value``; args are resolved (Vals or plain values).
def h_generic(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Any operation: directly when no argument depends on the point, else point by point (exact)."""
    fn = ins.fn
    if isinstance(fn, str):
        if not has_val((a, k)):
            return getattr(a[0], fn)(*a[1:], **k)
        return _stacked([getattr(point(a[0], p), fn)(*point(a[1:], p), **point(k, p)) for p in range(ctx.P)])
    if not has_val((a, k)):
        return fn(*a, **k)
    return _stacked([fn(*point(a, p), **point(k, p)) for p in range(ctx.P)])


def h_module(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """A leaf module without a vectorized handler: ``functional_call`` at each point's parameters."""
    m: nn.Module = ins.fn
    names = ctx.exe.module_names(ins.meta["module"], m)
    if not has_val((a, k)) and (ctx.P == 0 or not any(ctx.varies(full) for _, full in names)):
        state = {local: ctx.tensor_at(full, 0) for local, full in names}
        return torch.func.functional_call(m, state, a, k, strict=False)
    outs = []
    for p in range(ctx.P):
        state = {local: ctx.tensor_at(full, p) for local, full in names}
        outs.append(torch.func.functional_call(m, state, point(a, p), point(k, p), strict=False))
    return _stacked(outs)


def h_getattr(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x, name = a[0], a[1]
    if not isinstance(x, Val):
        return getattr(x, name)
    if name == "shape":
        return torch.Size(pshape(x))
    if name == "ndim":
        return len(pshape(x))
    if name in ("dtype", "device", "is_cuda", "layout", "requires_grad", "is_sparse"):
        return getattr(x.data if x.kind != PP else x.data[0], name)
    return h_generic(ctx, ins, a, k)


def h_shape(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x = a[0]
    name = ins.meta["method"]
    if not isinstance(x, Val):
        return getattr(x, name)(*a[1:], **k)
    s = pshape(x)
    if name == "size":
        d = a[1] if len(a) > 1 else k.get("dim")
        return torch.Size(s) if d is None else s[d]
    if name in ("dim", "ndimension"):
        return len(s)
    return math.prod(s)


def h_getitem(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x, idx = a
    if not isinstance(x, Val):
        if isinstance(idx, Val) or has_val(idx):
            return h_generic(ctx, ins, a, k)
        return x[idx]
    if x.kind == PP or has_val(idx):
        return h_generic(ctx, ins, a, k)
    tup = idx if isinstance(idx, tuple) else (idx,)
    if not all(i is None or i is Ellipsis or isinstance(i, int | slice) for i in tup):
        return h_generic(ctx, ins, a, k)
    return Val(SM, sm(x, ctx.P)[(slice(None),) + tup])


def h_unary(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Elementwise functions of one tensor (extra scalar arguments allowed): any layout, as is."""
    x = a[0]
    fn = ins.fn
    if not isinstance(x, Val) or has_val((a[1:], k)):
        if has_val((a[1:], k)):
            return h_nary(ctx, ins, a, k)
        return getattr(x, fn)(*a[1:], **k) if isinstance(fn, str) else fn(x, *a[1:], **k)
    if x.kind == PP:
        return h_generic(ctx, ins, a, k)
    if fn is _identity:
        return x
    own = _OWN_INPLACE.get(fn)
    if own is not None and x.owned and ins.inplace_ok and not a[1:] and not k:
        return Val(x.kind, own(x.data), True)
    if fn in _FAST_OUT and not a[1:] and not k:
        return Val(x.kind, _FAST_OUT[fn](x.data), True)
    out = getattr(x.data, fn)(*a[1:], **k) if isinstance(fn, str) else fn(x.data, *a[1:], **k)
    return Val(x.kind, out, True)


def h_nary(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Elementwise functions of several tensors: per-point broadcasting (aligned from the right)."""
    fn = ins.fn
    if not has_val((a, k)):
        return getattr(a[0], fn)(*a[1:], **k) if isinstance(fn, str) else fn(*a, **k)
    if has_pp((a, k)):
        return h_generic(ctx, ins, a, k)
    vals = [v for v in (*a, *k.values()) if isinstance(v, Val)]
    if (
        all(v.kind == FM for v in vals)
        and len({pshape(v) for v in vals}) == 1
        and not any(isinstance(v, Tensor) and v.dim() > 0 for v in (*a, *k.values()))
    ):
        conv = [v.data if isinstance(v, Val) else v for v in a]
        kw = {n: v.data if isinstance(v, Val) else v for n, v in k.items()}
        return Val(FM, getattr(conv[0], fn)(*conv[1:], **kw) if isinstance(fn, str) else fn(*conv, **kw), True)
    nd = max(len(pshape(v)) if isinstance(v, Val | Tensor) else 0 for v in (*a, *k.values()))
    P = ctx.P

    def lift(v: Any) -> Any:
        if not isinstance(v, Val):
            return v
        t = sm(v, P)
        extra = nd - (t.dim() - 1)
        return t.reshape(P, *([1] * extra), *t.shape[1:]) if extra else t

    conv = [lift(v) for v in a]
    kw = {n: lift(v) for n, v in k.items()}
    if isinstance(fn, str):
        if not isinstance(conv[0], Tensor):
            raise Unsupported("method on a non-tensor")
        out = getattr(conv[0], fn)(*conv[1:], **kw)
        if not isinstance(a[0], Val) and out.dim() == conv[0].dim():  # a shared tensor's method: result per point?
            pass
    else:
        out = fn(*conv, **kw)
    if not isinstance(out, Tensor) or out.dim() < nd + 1:
        # broadcasting may have left the point axis out (e.g. all operands were lifted scalars)
        return h_generic(ctx, ins, a, k)
    return Val(SM, out, True)


def h_flatten(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x, start, end = a
    if not isinstance(x, Val):
        return torch.flatten(x, start, end)
    if x.kind == PP:
        return h_generic(ctx, ins, a, k)
    nd = len(pshape(x))
    if nd == 0:
        return Val(SM, sm(x, ctx.P).reshape(ctx.P, 1))
    s, e = _dim(start, nd), _dim(end, nd)
    if s == e:
        return x  # flattening one axis: nothing to do
    return Val(SM, sm(x, ctx.P).flatten(s, e))


def _sig_flatten(input, start_dim=0, end_dim=-1): ...  # noqa: ANN001, ANN202


def h_reshape(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x = a[0]
    shape = a[1:] if len(a) > 2 or (len(a) == 2 and isinstance(a[1], int)) else (a[1] if len(a) > 1 else k["shape"])
    if not isinstance(x, Val):
        return getattr(x, ins.fn)(*a[1:], **k)
    if x.kind == PP or has_val(shape) or not all(isinstance(s, int) for s in shape):
        return h_generic(ctx, ins, a, k)
    t = sm(x, ctx.P)
    if x.kind == FM and len(shape) == 2 and shape[0] in (-1, t.shape[1]) and shape[1] in (-1, t.shape[2]):
        return x  # (B, F) -> (B, F) or (B, -1)/(-1, F): unchanged
    return Val(SM, t.reshape(ctx.P, *shape))


def h_dims(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Operations with axis arguments (reductions, softmax, transpose, permute, (un)squeeze): axes shifted by one."""
    name = ins.meta.get("method") or ins.fn
    x = a[0]
    if not isinstance(x, Val) or has_val((a[1:], k)):
        if not has_val((a, k)):
            return getattr(x, name)(*a[1:], **k) if isinstance(name, str) else name(*a, **k)
        return h_generic(ctx, ins, a, k)
    if x.kind == PP:
        return h_generic(ctx, ins, a, k)
    nd = len(pshape(x))
    t = sm(x, ctx.P)
    rest, kw = list(a[1:]), dict(k)
    if name in ("transpose",):
        d0 = rest[0] if rest else kw.pop("dim0")
        d1 = rest[1] if len(rest) > 1 else kw.pop("dim1")
        return Val(SM, t.transpose(_dim(d0, nd), _dim(d1, nd)))
    if name == "permute":
        dims: Any = rest[0] if len(rest) == 1 and isinstance(rest[0], tuple | list) else (rest or kw.pop("dims"))
        return Val(SM, t.permute(0, *[_dim(d, nd) for d in dims]))
    if name == "unsqueeze":
        d = rest[0] if rest else kw.pop("dim")
        return Val(SM, t.unsqueeze(_dim(d, nd + 1)))
    if name == "squeeze":
        d = rest[0] if rest else kw.pop("dim", None)
        s = pshape(x)
        dims = (
            [i for i, n in enumerate(s) if n == 1] if d is None else (list(d) if isinstance(d, tuple | list) else [d])
        )
        dims = [_dim(i, nd) for i in dims if s[i] == 1]
        return Val(SM, t.squeeze(tuple(dims)) if dims else t)
    if name in ("softmax", "log_softmax"):
        d = rest.pop(0) if rest else kw.pop("dim", None)
        if d is None:
            return h_generic(ctx, ins, a, k)
        kw.pop("_stacklevel", None)
        return Val(SM, getattr(t, name)(_dim(d, nd), *[r for r in rest if not isinstance(r, int)], **kw), True)
    if name in _REDUCE:
        d = rest.pop(0) if rest else kw.pop("dim", None)
        if name == "norm":
            return h_generic(ctx, ins, a, k)
        if d is None:
            dims = tuple(range(1, nd + 1))
            if name in ("amax", "amin", "logsumexp"):
                return h_generic(ctx, ins, a, k)
        elif isinstance(d, tuple | list):
            dims = tuple(_dim(i, nd) for i in d)
        else:
            dims = _dim(d, nd)
        return Val(SM, getattr(t, name)(dims, *rest, **kw), True)
    return h_generic(ctx, ins, a, k)


def h_cat(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    seq = a[0] if a else k["tensors"]
    d = a[1] if len(a) > 1 else k.get("dim", 0)
    if not has_val(seq):
        return ins.fn(*a, **k)
    if has_pp(seq) or has_val(d) or not isinstance(d, int):
        return h_generic(ctx, ins, a, k)
    nd = len(pshape(next(v for v in seq if isinstance(v, Val))))
    dd = _dim(d, nd + 1) if ins.fn is torch.stack else _dim(d, nd)
    return Val(SM, ins.fn([sm(v, ctx.P) for v in seq], dd), True)


def h_linear(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x, w, b = a[0], a[1], a[2] if len(a) > 2 else None
    if not has_val((x, w, b)):
        return F.linear(x, w, b)
    if has_pp((x, w, b)) or (b is not None and not isinstance(b, Val | Tensor)):
        return h_generic(ctx, ins, (x, w, b), {})
    P = ctx.P
    s = pshape(x)
    if isinstance(w, Val) and w.kind == SM and len(s) == 2:  # (B, F) per point: feature-major (P, O, B) out
        W = w.data
        if not isinstance(x, Val):
            out = torch.matmul(W, x.T)
        else:
            xt = x.data if x.kind == FM else x.data.transpose(1, 2)
            o = ctx.workspace(ins, "", (P, W.shape[1], xt.shape[2]), xt)
            bb = None if b is None else (b.data[:, :, None] if isinstance(b, Val) else b[:, None])
            out = torch.bmm(W, xt, out=o) if bb is None else torch.baddbmm(bb, W, xt, out=o)
            return Val(FM, out, True)
        if b is not None:
            out += b.data[:, :, None] if isinstance(b, Val) else b[:, None]
        return Val(FM, out, True)
    if isinstance(w, Val):  # other shapes: (P, L, F) @ (P, F, O)
        t = sm(x, P) if isinstance(x, Val) else x.expand(P, *x.shape)
        lead = t.shape[1:-1]
        out = torch.bmm(t.reshape(P, -1, t.shape[-1]), w.data.transpose(1, 2))
        if b is not None:
            out += b.data[:, None, :] if isinstance(b, Val) else b
        return Val(SM, out.reshape(P, *lead, out.shape[-1]), True)
    # frozen weight, points in the input and/or bias
    if isinstance(x, Val) and x.kind == FM:
        out = torch.matmul(w, x.data)
        if b is not None:
            out += b.data[:, :, None] if isinstance(b, Val) else b[:, None]
        return Val(FM, out, True)
    t = sm(x, P) if isinstance(x, Val) else x
    out = F.linear(t, w)
    if not isinstance(x, Val):
        out = out.expand(P, *out.shape)
    if b is not None:
        bb = b.data.reshape(P, *([1] * (len(s) - 1)), -1) if isinstance(b, Val) else b
        out = out + bb
    return Val(SM, out, True)


def h_conv(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x, w, b, stride, padding, dilation, groups = a
    fn = ins.fn
    if not has_val((x, w, b)):
        return fn(x, w, b, stride, padding, dilation, groups)
    if has_pp((x, w, b)) or has_val((stride, padding, dilation, groups)):
        return h_generic(ctx, ins, a, k)
    P = ctx.P
    nd = ins.meta["nd"]
    if isinstance(w, Val):
        outs = [fn(point(x, p), w.data[p], point(b, p), stride, padding, dilation, groups) for p in range(P)]
        o = ctx.workspace(ins, "", (P, *outs[0].shape), outs[0])
        return Val(SM, torch.stack(outs, out=o), True)
    t = sm(x, P)
    batched = t.dim() == nd + 3
    inp = t.flatten(0, 1) if batched else t
    out = fn(inp, w, b if not isinstance(b, Val) else None, stride, padding, dilation, groups)
    out = out.unflatten(0, (P, -1)) if batched else out
    if isinstance(b, Val):
        out = out + b.data.reshape(P, *([1] * (out.dim() - 2 - nd)), -1, *([1] * nd))
    return Val(SM, out, True)


def h_bn(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Eval-mode batch norm as a per-point, per-channel affine map (channels on per-point axis 1)."""
    x, rm, rv, w, b, eps = a
    if not has_val(a):
        return F.batch_norm(x, rm, rv, w, b, False, 0.0, eps)
    if has_pp(a) or rm is None or rv is None:
        return h_generic(ctx, ins, (x, rm, rv), {"weight": w, "bias": b, "training": False, "eps": eps})
    P = ctx.P

    def st(v: Any) -> Tensor:
        return v.data if isinstance(v, Val) else v.expand(P, *v.shape)

    scale = (st(rv) + eps).rsqrt()
    scale = scale if w is None else scale * st(w)
    shift = -st(rm) * scale if b is None else st(b) - st(rm) * scale
    if isinstance(x, Val) and x.kind == FM:  # (B, C) per point, stored (P, C, B)
        return Val(FM, torch.addcmul(shift[:, :, None], x.data, scale[:, :, None]), True)
    nd = len(pshape(x))
    if nd < 2:
        return h_generic(ctx, ins, (x, rm, rv), {"weight": w, "bias": b, "training": False, "eps": eps})
    shape = (P, 1, -1, *([1] * (nd - 2)))
    return Val(SM, torch.addcmul(shift.reshape(shape), x.data if isinstance(x, Val) else x, scale.reshape(shape)), True)


def h_layer_norm(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x, shape, w, b, eps = a
    if not has_val(a):
        return F.layer_norm(x, shape, w, b, eps)
    if has_pp(a):
        return h_generic(ctx, ins, a, k)
    P = ctx.P
    t = sm(x, P) if isinstance(x, Val) else x
    out = F.layer_norm(t, shape, None, None, eps)
    if not isinstance(x, Val):
        out = out.expand(P, *out.shape)
    nd = len(pshape(x))

    def lift(v: Any) -> Any:
        if not isinstance(v, Val):
            return v
        return v.data.reshape(P, *([1] * (nd - len(shape))), *v.data.shape[1:])

    if w is not None:
        out = out * lift(w)
    if b is not None:
        out = out + lift(b)
    return Val(SM, out, True)


def h_embedding(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    idx, w = a
    if not has_val(a):
        return F.embedding(idx, w)
    if isinstance(idx, Val) or not isinstance(w, Val) or w.kind != SM:
        return h_generic(ctx, ins, a, k)
    return Val(SM, w.data[:, idx])


def h_batched(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Parameter-free batched ops on ``(N, C, *spatial)`` (pooling): all points as one batch."""
    x = a[0]
    fn = ins.fn
    if not has_val((a, k)):
        return fn(*a, **k)
    if has_val((a[1:], k)) or not isinstance(x, Val) or x.kind == PP:
        return h_generic(ctx, ins, a, k)
    t = sm(x, ctx.P)
    nd = ins.meta["nd"]
    if t.dim() == nd + 3:
        out = fn(t.flatten(0, 1), *a[1:], **k)
        if not isinstance(out, Tensor):
            return h_generic(ctx, ins, a, k)
        return Val(SM, out.unflatten(0, (ctx.P, -1)), True)
    if t.dim() == nd + 2:
        out = fn(t, *a[1:], **k)
        return Val(SM, out, True) if isinstance(out, Tensor) else h_generic(ctx, ins, a, k)
    return h_generic(ctx, ins, a, k)


def h_maxpool(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x = a[0]
    post = ins.meta.get("post", ())
    if is_pool2(*a[1:]) and not has_val(a[1:]) and (not isinstance(x, Val) or x.kind != PP):
        if not isinstance(x, Val):
            out: Any = maxpool2(x)
        else:
            t = sm(x, ctx.P)
            H, W = t.shape[-2] // 2, t.shape[-1] // 2
            mid = ctx.workspace(ins, "mid", (*t.shape[:-2], H, 2 * W), t)
            fin = ctx.workspace(ins, "", (*t.shape[:-2], H, W), t)
            out = Val(SM, maxpool2(t, (mid, fin)), True)
        return _post(out, post)
    if not has_val(a):
        return _post(F.max_pool2d(*a), post)
    ins2 = Instr(ins.out, h_batched, F.max_pool2d, ins.args, {}, {"nd": 2})
    return _post(h_batched(ctx, ins2, a, k), post)


def _post(v: Any, post: Sequence[tuple[Any, tuple[Any, ...], dict[str, Any]]]) -> Any:
    """Activations moved after a pool: in place on the pool's own output."""
    for fn, rest, kw in post:
        t = v.data if isinstance(v, Val) else v
        own = _OWN_INPLACE.get(fn)
        if own is not None and not rest and not kw and isinstance(v, Val):
            t = own(t)
        elif fn in _FAST_OUT and not rest and not kw:
            t = _FAST_OUT[fn](t)
        elif fn is not _identity:
            t = getattr(t, fn)(*rest, **kw) if isinstance(fn, str) else fn(t, *rest, **kw)
        v = Val(v.kind, t, True) if isinstance(v, Val) else t
    return v


def h_conv_pool(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Convolution -> (nondecreasing activations) -> 2x2 max pool, per point into the chunk's pooled tensor."""
    conv: Instr = ins.meta["conv"]
    ca = _resolve(conv.args, ctx.env)
    x, w, b, stride, padding, dilation, groups = ca
    if not isinstance(w, Val) or w.kind != SM or has_pp(ca) or has_val((stride, padding, dilation, groups)):
        y = h_conv(ctx, conv, ca, {})
        ctx.env[conv.out] = y
        return h_maxpool(ctx, ins, (y, *a[1:]), k)
    P = ctx.P
    fn = conv.fn
    o0 = fn(point(x, 0), w.data[0], point(b, 0), stride, padding, dilation, groups)
    H, W = o0.shape[-2] // 2, o0.shape[-1] // 2
    mid = ctx.workspace(ins, "mid", (*o0.shape[:-2], H, 2 * W), o0)
    fin = ctx.workspace(ins, "", (P, *o0.shape[:-2], H, W), o0)
    maxpool2(o0, (mid, fin[0]))
    for p in range(1, P):
        maxpool2(fn(point(x, p), w.data[p], point(b, p), stride, padding, dilation, groups), (mid, fin[p]))
    return _post(Val(SM, fin, True), ins.meta.get("post", ()))


# =========================================================================== executor
class Ctx:
    """What handlers see during one chunk: number of points, environment, workspaces."""

    __slots__ = ("P", "env", "exe", "pd", "chunk")

    def __init__(self, exe: StackedExec, P: int, env: list[Any], pd: dict[str, Tensor] | None, chunk: Any) -> None:
        self.exe, self.P, self.env, self.pd, self.chunk = exe, P, env, pd, chunk

    def workspace(self, ins: Instr, tag: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        return self.exe.workspace((ins.out, tag), shape, like)

    def varies(self, name: str) -> bool:
        """Does parameter or buffer ``name`` differ between the points?"""
        return (self.pd is not None and name in self.pd) or (
            self.chunk is not None and self.chunk.buffers is not None and name in self.chunk.buffers[0]
        )

    def tensor_at(self, name: str, p: int) -> Tensor:
        """Parameter or buffer ``name`` at point ``p``."""
        if self.pd is not None and name in self.pd:
            return self.pd[name][p]
        if name in self.exe.fixed:
            return self.exe.fixed[name]
        if self.chunk is not None and self.chunk.buffers is not None and name in self.chunk.buffers[p]:
            return self.chunk.buffers[p][name]
        return self.exe.bufs[name]


class _Affine:
    """Marker for :mod:`landscape.evaluate.points`: this executor computes first-layer maps of affine points."""


class StackedExec:
    """Evaluates a :class:`Program` for chunks of points (see the module docstring).

    Args:
        copy_: The private eval-mode copy the program was traced from.
        layout: Parameter layout of the points.
        bufs: Buffers (BatchNorm statistics) for every point, unless a chunk carries its own.
        prog: The traced program.
    """

    def __init__(self, copy_: nn.Module, layout: Any, bufs: Mapping[str, Tensor], prog: Program) -> None:
        self.copy, self.layout, self.bufs, self.prog = copy_, layout, dict(bufs), prog
        self.fixed = {k: v.detach() for k, v in copy_.named_parameters() if k not in layout}
        self.buffers: dict[Any, Tensor] = {}
        self.first: _Affine | None = _Affine() if prog.affine else None
        self._static_key: tuple[Any, ...] | None = None
        self._static_env: list[Any] = []
        self._module_names: dict[str, list[tuple[str, str]]] = {}
        live = [ins for ins in prog.instrs if not ins.dead]
        self.dyn_all = [ins for ins in live if ins.dyn or ins.bufdep]  # per-point buffers: buffer nodes vary too
        self.dyn_eval = [ins for ins in live if ins.dyn]
        self.pos = {id(ins): i for i, ins in enumerate(prog.instrs)}

    # ------------------------------------------------------------------ plumbing
    def workspace(self, key: Any, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A reused buffer: fresh large tensors page-fault on every chunk (measured: ~10x slower)."""
        buf = self.buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def module_names(self, prefix: str, m: nn.Module) -> list[tuple[str, str]]:
        got = self._module_names.get(prefix)
        if got is None:
            alias: dict[int, str] = {}
            for n, p in self.copy.named_parameters(remove_duplicate=False):
                alias.setdefault(id(p), n)
            for n, b in self.copy.named_buffers(remove_duplicate=False):
                alias.setdefault(id(b), n)
            got = [(n, alias[id(t)]) for n, t in (*m.named_parameters(), *m.named_buffers())]
            self._module_names[prefix] = got
        return got

    def _env(self, x: Tensor, per_point_buffers: bool) -> list[Any]:
        """The environment with every point-independent node of batch ``x`` computed (cached per batch)."""
        key = (x, per_point_buffers)
        if self._static_key is None or self._static_key[0] is not x or self._static_key[1] != per_point_buffers:
            prog = self.prog
            env: list[Any] = [None] * prog.n_slots
            env[prog.input] = x
            for s, c in prog.consts.items():
                env[s] = c
            if not per_point_buffers:
                for s, n in prog.buffers.items():
                    env[s] = self.bufs[n]
            ctx = Ctx(self, 0, env, None, None)
            for ins in prog.instrs:
                if ins.dead or ins.dyn or (per_point_buffers and ins.bufdep):
                    continue
                env[ins.out] = ins.handler(ctx, ins, _resolve(ins.args, env), _resolve(ins.kwargs, env))
                if ins.meta.get("user_inplace") and isinstance(ins.args[0], Ref):
                    env[ins.args[0].i] = env[ins.out]
            self._static_key, self._static_env = key, env
        return list(self._static_env)

    # ------------------------------------------------------------------ first layer
    def first_maps(self, x: Tensor, basis: Tensor) -> dict[int, tuple[Tensor, tuple[int, ...], int, list[bool]]]:
        """Each first layer at each basis vector for batch ``x``: ``pos -> (Z (K, n), shape, kind, finite)``.

        Pooled convolutions keep their maps split by pooling phase, ``(K, 4, B, C, H/2, W/2)``.
        """
        env = self._env(x, False)
        K = basis.shape[0]
        maps = {}
        for pos, info in self.prog.affine.items():
            c: Instr = info["conv"]
            u = _resolve(c.args[0], env)
            wname = self.prog.params[c.args[1].i]
            spec = self.layout[wname]
            w = basis[:, spec.slice].reshape(K * spec.shape[0], *spec.shape[1:])
            b = None
            if c.args[2] is not None:
                bspec = self.layout[self.prog.params[c.args[2].i]]
                b = basis[:, bspec.slice].reshape(-1)
            if c.handler is h_linear:
                if u.dim() != 2:
                    continue
                Z = (w @ u.T if b is None else torch.addmm(b[:, None], w, u.T)).view(K, -1, u.shape[0])  # (K, O, B)
                maps[pos] = (Z.reshape(K, -1), tuple(Z.shape[1:]), FM, [bool(z.sum().isfinite()) for z in Z])
                continue
            stride, padding, dilation, groups = _resolve(c.args[3:], env)
            if groups != 1 or u.dim() != c.meta["nd"] + 2:
                continue
            out = c.fn(u, w, b, stride, padding, dilation)  # (B, K*O, *spatial)
            B = out.shape[0]
            out = out.view(B, K, -1, *out.shape[2:])
            if info["pooled"]:
                H, W = out.shape[-2] // 2, out.shape[-1] // 2
                out = out[..., : 2 * H, : 2 * W].reshape(B, K, out.shape[2], H, 2, W, 2)
                Z = out.permute(1, 4, 6, 0, 2, 3, 5).reshape(K, 4, B, out.shape[2], H, W)  # phase-major
                shape = tuple(Z.shape[1:])
            else:
                Z = out.transpose(0, 1).contiguous()
                shape = tuple(Z.shape[1:])
            maps[pos] = (Z.reshape(K, -1), shape, SM, [bool(z.sum().isfinite()) for z in Z])
        return maps

    def _combine(self, ins: Instr, coefs: Tensor, entry: tuple[Tensor, tuple[int, ...], int, list[bool]]) -> Val:
        """``sum_k c_pk Z_k`` for the chunk: one ``(P, K) @ (K, n)`` product (exact zeros for non-finite maps)."""
        Z, shape, kind, finite = entry
        P = coefs.shape[0]
        c = coefs.to(device=Z.device, dtype=Z.dtype)
        out = self.workspace((ins.out, "comb"), (P, Z.shape[1]), Z)
        if all(finite):
            torch.mm(c, Z, out=out)
        else:  # 0 * inf would be NaN: a zero coefficient must contribute exactly nothing
            out.zero_()
            for kk in range(Z.shape[0]):
                ck = c[:, kk : kk + 1]
                out += torch.where(ck == 0, 0.0, ck * Z[kk]) if not finite[kk] else ck * Z[kk]
        return Val(kind, out.view(P, *shape), True)

    # ------------------------------------------------------------------ forward
    def forward(self, chunk: Any, x: Tensor, Z: Any) -> tuple[Tensor, str]:
        """Outputs of the chunk's points on batch ``x``: ``(P, B, *out)`` ("sm") or ``(P, C, B)`` ("fm")."""
        P = len(chunk)
        ppb = chunk.buffers is not None
        env = self._env(x, ppb)
        pd = self.layout.unflatten_batch(chunk.mat)
        for s, n in self.prog.params.items():
            env[s] = Val(SM, pd[n]) if n in pd else self.fixed[n]
        if ppb:
            for s, n in self.prog.buffers.items():
                env[s] = Val(SM, torch.stack([b[n] for b in chunk.buffers]))
        ctx = Ctx(self, P, env, pd, chunk)
        maps = Z if (Z is not None and chunk.coefs is not None) else None
        for ins in self.dyn_all if ppb else self.dyn_eval:
            if maps is not None:
                entry = maps.get(self.pos[id(ins)])
                if entry is not None:
                    v = self._combine(ins, chunk.coefs, entry)
                    if ins.handler is h_conv_pool:
                        amax = self.workspace((ins.out, ""), (P, *entry[1][1:]), v.data)
                        v = _post(Val(SM, torch.amax(v.data, 1, out=amax), True), ins.meta.get("post", ()))
                    env[ins.out] = v
                    continue
            v = ins.handler(ctx, ins, _resolve(ins.args, env), _resolve(ins.kwargs, env))
            env[ins.out] = v
            if ins.meta.get("user_inplace") and isinstance(ins.args[0], Ref):
                env[ins.args[0].i] = v
        out = env[self.prog.output]
        if not isinstance(out, Val):
            if not isinstance(out, Tensor):
                raise Unsupported(f"the model returns {type(out).__name__}")
            return out.expand(P, *out.shape), "sm"
        if out.kind == FM:
            return out.data, "fm"
        if out.kind == SM:
            return out.data, "sm"
        raise Unsupported("the model's per-point outputs are not tensors of one shape")
