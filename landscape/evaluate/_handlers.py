"""Handlers of the stacked executor (private): one per operation, all points of a chunk at once.

Every handler is ``handler(ctx, ins, args, kwargs) -> value``; ``args`` are resolved (:class:`Val` or plain
values). Operations without a vectorized handler run point by point on the per-point values
(:func:`h_generic`, :func:`h_module`: exact, slower), so every traceable model runs. Handlers that matter
for speed:

- ``Linear``: one ``bmm`` per chunk; ``Conv``: one convolution per point (oneDNN runs LeNet-sized
  convolutions near the single-thread ``torch.mm`` rate) or, with frozen weights, one for all;
- exact 2x2 max pooling as ``torch.maximum`` of strided views, with the activations moved after it and a
  fused convolution writing each point's pooled output straight into the chunk's tensor;
- large per-chunk tensors go to reused buffers (``ctx.workspace``: fresh multi-megabyte tensors page-fault
  on every touch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.evaluate._kernels import is_pool2, maxpool2
from landscape.evaluate._optable import FAST_OUT, OWN_INPLACE, REDUCE, identity
from landscape.evaluate._program import (
    FM,
    PP,
    SM,
    Instr,
    Unsupported,
    Val,
    has_pp,
    has_val,
    point,
    point_axis,
    pshape,
    resolve,
    sm,
    stack_points,
)

if TYPE_CHECKING:
    from landscape.evaluate._stacked import Ctx


def h_generic(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Any operation: directly when no argument depends on the point, else point by point (exact)."""
    fn = ins.fn
    if isinstance(fn, str):
        if not has_val((a, k)):
            return getattr(a[0], fn)(*a[1:], **k)
        return stack_points([getattr(point(a[0], p), fn)(*point(a[1:], p), **point(k, p)) for p in range(ctx.P)])
    if not has_val((a, k)):
        return fn(*a, **k)
    return stack_points([fn(*point(a, p), **point(k, p)) for p in range(ctx.P)])


def h_inplace_method(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """An in-place tensor method without a handler of its own (``h.copy_(v)``, ``h.masked_fill_(m, 0)``).

    Without point-dependent arguments it runs in place, as written. With them, each point mutates its own copy
    of the tensor and the result takes the tensor's place for later readers (``user_inplace``): mutating the
    tensor itself, once per point, would leave a point-independent tensor (``x.new_zeros(...)``, cached per
    batch) holding the last point's values for every point.
    """
    fn = ins.fn
    if not has_val((a, k)):
        return getattr(a[0], fn)(*a[1:], **k)
    outs = []
    for p in range(ctx.P):
        t = point(a[0], p)
        t = t.clone() if isinstance(t, Tensor) else t
        outs.append(getattr(t, fn)(*point(a[1:], p), **point(k, p)))
    return stack_points(outs)


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
    return stack_points(outs)


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


def _alias(ins: Instr, x: Val) -> Val:
    """``x`` under another node's name: owned (overwritable in place) only if the alias is its only reader.

    A Dropout or a no-op flatten returns its input; had the alias kept ``owned``, an in-place activation after
    it (``relu(dropout(h)) + h``) would overwrite ``h`` for its other readers too.
    """
    return x if ins.inplace_ok or not x.owned else Val(x.kind, x.data, False)


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
    if fn is identity:
        return _alias(ins, x)
    own = OWN_INPLACE.get(fn)
    if own is not None and x.owned and ins.inplace_ok and not a[1:] and not k:
        return Val(x.kind, own(x.data), True)
    if fn in FAST_OUT and not a[1:] and not k:
        return Val(x.kind, FAST_OUT[fn](x.data), True)
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
    s, e = point_axis(start, nd), point_axis(end, nd)
    if s == e:
        return _alias(ins, x)  # flattening one axis: nothing to do
    return Val(SM, sm(x, ctx.P).flatten(s, e))


def h_reshape(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    x = a[0]
    shape = a[1:] if len(a) > 2 or (len(a) == 2 and isinstance(a[1], int)) else (a[1] if len(a) > 1 else k["shape"])
    if not isinstance(x, Val):
        return getattr(x, ins.fn)(*a[1:], **k)
    if x.kind == PP or has_val(shape) or not all(isinstance(s, int) for s in shape):
        return h_generic(ctx, ins, a, k)
    t = sm(x, ctx.P)
    if x.kind == FM and len(shape) == 2 and shape[0] in (-1, t.shape[1]) and shape[1] in (-1, t.shape[2]):
        return _alias(ins, x)  # (B, F) -> (B, F) or (B, -1)/(-1, F): unchanged
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
        return Val(SM, t.transpose(point_axis(d0, nd), point_axis(d1, nd)))
    if name == "permute":
        dims: Any = rest[0] if len(rest) == 1 and isinstance(rest[0], tuple | list) else (rest or kw.pop("dims"))
        return Val(SM, t.permute(0, *[point_axis(d, nd) for d in dims]))
    if name == "unsqueeze":
        d = rest[0] if rest else kw.pop("dim")
        return Val(SM, t.unsqueeze(point_axis(d, nd + 1)))
    if name == "squeeze":
        d = rest[0] if rest else kw.pop("dim", None)
        s = pshape(x)
        dims = (
            [i for i, n in enumerate(s) if n == 1] if d is None else (list(d) if isinstance(d, tuple | list) else [d])
        )
        dims = [point_axis(i, nd) for i in dims if s[i] == 1]
        return Val(SM, t.squeeze(tuple(dims)) if dims else t)
    if name in ("softmax", "log_softmax"):
        d = rest.pop(0) if rest else kw.pop("dim", None)
        if d is None:
            return h_generic(ctx, ins, a, k)
        kw.pop("_stacklevel", None)
        return Val(SM, getattr(t, name)(point_axis(d, nd), *[r for r in rest if not isinstance(r, int)], **kw), True)
    if name in REDUCE:
        d = rest.pop(0) if rest else kw.pop("dim", None)
        if name == "norm":
            return h_generic(ctx, ins, a, k)
        if d is None:
            dims = tuple(range(1, nd + 1))
            if name in ("amax", "amin", "logsumexp"):
                return h_generic(ctx, ins, a, k)
        elif isinstance(d, tuple | list):
            dims = tuple(point_axis(i, nd) for i in d)
        else:
            dims = point_axis(d, nd)
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
    dd = point_axis(d, nd + 1) if ins.fn is torch.stack else point_axis(d, nd)
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
        return apply_post(out, post)
    if not has_val(a):
        return apply_post(F.max_pool2d(*a), post)
    ins2 = Instr(ins.out, h_batched, F.max_pool2d, ins.args, {}, {"nd": 2})
    return apply_post(h_batched(ctx, ins2, a, k), post)


def apply_post(v: Any, post: Sequence[tuple[Any, tuple[Any, ...], dict[str, Any]]]) -> Any:
    """Activations moved after a pool: in place on the pool's own output."""
    for fn, rest, kw in post:
        t = v.data if isinstance(v, Val) else v
        own = OWN_INPLACE.get(fn)
        if own is not None and not rest and not kw and isinstance(v, Val):
            t = own(t)
        elif fn in FAST_OUT and not rest and not kw:
            t = FAST_OUT[fn](t)
        elif fn is not identity:
            t = getattr(t, fn)(*rest, **kw) if isinstance(fn, str) else fn(t, *rest, **kw)
        v = Val(v.kind, t, True) if isinstance(v, Val) else t
    return v


def h_conv_pool(ctx: Ctx, ins: Instr, a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    """Convolution -> (nondecreasing activations) -> 2x2 max pool, per point into the chunk's pooled tensor."""
    conv: Instr = ins.meta["conv"]
    ca = resolve(conv.args, ctx.env)
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
    return apply_post(Val(SM, fin, True), ins.meta.get("post", ()))
