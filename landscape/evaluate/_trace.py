"""The torch.fx chain tracer of the evaluation engine (private): a model lowered to a :class:`Program`.

The model is traced once with :mod:`torch.fx` (standard ``torch.nn`` layers stay leaves, everything else
is traced through), and every node, a ``call_module`` of a known layer type or a ``call_function`` /
``call_method`` of a known operation, gets the handler of its operation
(:mod:`landscape.evaluate._handlers`); unusual arguments fall back to the exact per-point handler.
After lowering:

- nondecreasing activations before a 2x2 max pool move after it (``max`` commutes with them: 4x fewer
  activations), and a convolution feeding such a pool is fused into it (each point's output pooled
  straight into the chunk's tensor);
- every instruction is marked as depending on the points (``dyn``) or on buffers (``bufdep``), and
  ``Linear``/``Conv`` layers of a point-independent input (first layers) are recorded: for affine
  points they are computed once per basis vector and batch.
"""

from __future__ import annotations

import builtins
import inspect
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from landscape.evaluate._handlers import (
    h_batched,
    h_bn,
    h_cat,
    h_conv,
    h_conv_pool,
    h_dims,
    h_embedding,
    h_flatten,
    h_generic,
    h_getattr,
    h_getitem,
    h_inplace_method,
    h_layer_norm,
    h_linear,
    h_maxpool,
    h_module,
    h_nary,
    h_reshape,
    h_shape,
    h_unary,
)
from landscape.evaluate._kernels import is_pool2
from landscape.evaluate._optable import (
    BINARY_FN,
    BINARY_METHOD,
    CONV_FN,
    CONV_MOD,
    DROPOUT_FN,
    INPLACE_METHOD,
    MODULE_UNARY,
    MONOTONE,
    POOL_FN,
    POOL_MOD,
    REDUCE,
    SOFTMAX,
    UNARY_FN,
    UNARY_METHOD,
    identity,
)
from landscape.evaluate._program import Instr, Program, Ref, Unsupported, has_ref, slot_refs

__all__ = ["build_program", "untraceable"]

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


def untraceable(model: nn.Module) -> str:
    """Why :func:`build_program` returns ``None`` for ``model`` (for the refusal of ``strategy="stacked"``)."""
    try:
        graph = torch.fx.Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - the message is the point
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return (
            f"torch.fx cannot trace it ({type(e).__name__}: {first}; e.g. control flow that depends on the data, "
            "or a tensor created from a shape)"
        )
    if sum(n.op == "placeholder" for n in graph.nodes) != 1:
        return "its forward takes more than one input"
    return "it does not return one tensor"


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
        return _plain(torch.fx.node.map_arg(a, lambda n: Ref(slot_of[n])))  # type: ignore[arg-type, return-value]

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
        if ins.handler in (h_dims, h_cat) and "axis" in ins.kwargs:  # NumPy's spelling, which torch accepts too
            ins.kwargs = {("dim" if k == "axis" else k): v for k, v in ins.kwargs.items()}
        prog.instrs.append(ins)
    if prog.input < 0 or prog.output < 0:
        return None
    for ins in prog.instrs:
        for i in slot_refs((ins.args, ins.kwargs)):
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
        if tm in CONV_MOD and m.padding_mode == "zeros":
            fn: Callable[..., Any] = CONV_MOD[tm]
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
        if tm in POOL_MOD:
            return Instr(s, h_batched, m, (x,), {}, {"nd": POOL_MOD[tm]}, t)
        if tm is nn.Flatten:
            return Instr(s, h_flatten, torch.flatten, (x, m.start_dim, m.end_dim), {}, name=t)
        if tm in MODULE_UNARY:
            fn, kw, mono = MODULE_UNARY[tm](m)
            ins = Instr(s, h_unary, fn, (x,), kw, {"monotone": mono}, t)
            if getattr(m, "inplace", False) and fn is not identity:
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
        if name in INPLACE_METHOD:
            meta["user_inplace"] = True
            name = meta["method"] = INPLACE_METHOD[name]
        if name in ("size", "dim", "numel", "ndimension", "nelement"):
            return Instr(s, h_shape, name, args, kwargs, meta)
        if name in ("view", "reshape"):
            return Instr(s, h_reshape, name, args, kwargs, meta)
        if name == "flatten":
            b = _bind(_sig_flatten, args, kwargs)
            return Instr(s, h_flatten, torch.flatten, (b["input"], b["start_dim"], b["end_dim"]), {}, meta)
        if name in ("relu", "tanh", "sigmoid"):
            meta["monotone"] = True
        if name in UNARY_METHOD:
            return Instr(s, h_unary, name, args, kwargs, meta)
        if name in BINARY_METHOD:
            if name.endswith("_"):
                meta["user_inplace"] = True
                name = meta["method"] = name[:-1]
            return Instr(s, h_nary, name, args, kwargs, meta)
        if name in REDUCE or name in ("softmax", "log_softmax", "transpose", "permute", "unsqueeze", "squeeze"):
            return Instr(s, h_dims, name, args, kwargs, meta)
        if name.endswith("_") and not name.startswith("_"):  # another in-place method (copy_, masked_fill_, ...)
            meta["user_inplace"] = True
            return Instr(s, h_inplace_method, name, args, kwargs, meta)
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
    if f in CONV_FN:
        return Instr(
            s,
            h_conv,
            f,
            *_norm(f, args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups")),
            {"nd": CONV_FN[f]},
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
    if f in POOL_FN:
        return Instr(s, h_batched, f, args, kwargs, {"nd": POOL_FN[f]})
    if f in DROPOUT_FN:
        training = _bind(f, args, kwargs).get("training", True)
        if training is False:
            return Instr(s, h_unary, identity, (args[0],), {}, {"monotone": True})
        return Instr(s, h_generic, f, args, kwargs)
    if f in UNARY_FN:
        meta = {"monotone": f in MONOTONE}
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
    if f in BINARY_FN:
        meta = {"user_inplace": f in (operator.iadd, operator.isub, operator.imul, operator.itruediv)}
        return Instr(s, h_nary, f, args, kwargs, meta)
    if f is torch.flatten:
        b = _bind(_sig_flatten, args, kwargs)
        return Instr(s, h_flatten, f, (b["input"], b["start_dim"], b["end_dim"]), {})
    if f is torch.reshape:
        return Instr(s, h_reshape, "reshape", args, kwargs)
    if f in (torch.cat, torch.concat, torch.stack):
        return Instr(s, h_cat, f, args, kwargs)
    if f in SOFTMAX:  # F.softmax's _stacklevel (a warning's frame) is no argument of the tensor method it becomes
        kwargs = {k: v for k, v in kwargs.items() if k != "_stacklevel"}
        return Instr(s, h_dims, SOFTMAX[f], args, kwargs, {"method": SOFTMAX[f]})
    for name in ("mean", "sum", "amax", "amin", "transpose", "permute", "unsqueeze", "squeeze", "logsumexp"):
        if f is getattr(torch, name):
            return Instr(s, h_dims, name, args, kwargs, {"method": name})
    return Instr(s, h_generic, f, args, kwargs)


def _plain(a: Any) -> Any:
    """Plain ``list``/``dict`` for fx's ``immutable_list``/``immutable_dict`` (and slices' bounds), all the way down.

    :func:`~landscape.evaluate._program.resolve` looks inside exact lists, tuples, dicts and slices only (it runs
    for every instruction and chunk); a ``Ref`` left in fx's subclasses (``torch.cat([a, b])``, a tensor passed by
    keyword as ``F.group_norm`` passes its weight) would reach the operation unresolved.
    """
    if isinstance(a, Ref):
        return a
    if isinstance(a, list):
        return [_plain(x) for x in a]
    if isinstance(a, dict):
        return {k: _plain(v) for k, v in a.items()}
    if type(a) is tuple:
        return tuple(_plain(x) for x in a)
    if isinstance(a, slice):
        return slice(_plain(a.start), _plain(a.stop), _plain(a.step))
    return a


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


def _sig_flatten(input, start_dim=0, end_dim=-1): ...  # noqa: ANN001, ANN202


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


def _mark(prog: Program) -> None:
    """Which instructions depend on points (``dyn``) or on buffers (``bufdep``); live-ness of fused ones."""
    dyn = set(prog.params)
    bufdep = set(prog.buffers)
    for ins in prog.instrs:
        refs = slot_refs((ins.args, ins.kwargs))
        conv = ins.meta.get("conv")
        if conv is not None:
            refs += slot_refs((conv.args, conv.kwargs))
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
        xr = slot_refs(x)
        if any(r in dyn or r in bufdep for r in xr):
            continue
        prog.affine[pos] = {"conv": c, "pooled": ins.handler is h_conv_pool}


def _module_state(ins: Instr) -> tuple[bool, bool]:
    """Does a leaf module evaluated by :func:`h_module` own parameters, buffers?"""
    return any(True for _ in ins.fn.parameters()), any(True for _ in ins.fn.buffers())
