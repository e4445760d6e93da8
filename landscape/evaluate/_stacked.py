"""The stacked executor (private): a traced model evaluated for a chunk of points at once.

:func:`~landscape.evaluate._trace.build_program` lowers the model to a program once; :class:`StackedExec`
runs it per chunk of points and batch. Nodes that depend on no point are computed once per batch and
cached. For affine points (``sum_k c_k basis_k``) a first layer's output is computed once per basis
vector and batch, and each point's output is one small matrix product ``C (P, K) @ Z (K, ...)``; a pooled
first convolution keeps its maps split by pooling phase, so the pooling is one ``amax`` over that
product's output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from landscape.evaluate._handlers import apply_post, h_conv_pool, h_linear
from landscape.evaluate._program import FM, SM, Instr, Program, Ref, Unsupported, Val, resolve
from landscape.evaluate.affine import Chunk

if TYPE_CHECKING:
    from landscape.params import ParamLayout

__all__ = ["Ctx", "StackedExec", "agrees_with_functional_call"]


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
        self.refusal = ""  # why agrees_with_functional_call said no
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
        if buf is not None and buf.dtype == like.dtype and buf.device == like.device and buf.shape[1:] == shape[1:]:
            if buf.shape[0] >= shape[0]:
                return buf[: shape[0]]  # a smaller (last) chunk: a leading slice of the buffer, still contiguous
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
                env[ins.out] = ins.handler(ctx, ins, resolve(ins.args, env), resolve(ins.kwargs, env))
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
            u = resolve(c.args[0], env)
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
            stride, padding, dilation, groups = resolve(c.args[3:], env)
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
                        v = apply_post(Val(SM, torch.amax(v.data, 1, out=amax), True), ins.meta.get("post", ()))
                    env[ins.out] = v
                    continue
            v = ins.handler(ctx, ins, resolve(ins.args, env), resolve(ins.kwargs, env))
            if ins.meta.get("user_inplace") and isinstance(ins.args[0], Ref):
                # one value under two nodes: the readers of neither may overwrite it (each counts its own only)
                v = Val(v.kind, v.data, False) if isinstance(v, Val) else v
                env[ins.args[0].i] = v
            env[ins.out] = v
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


def agrees_with_functional_call(
    exe: StackedExec, copy_: nn.Module, layout: ParamLayout, bufs: Mapping[str, Tensor], x: Tensor, vec: Tensor
) -> bool:
    """Does the stacked executor reproduce ``functional_call`` on a few samples, at a point near the model's own?

    Both paths are checked: the plain one and, if the executor has first-layer maps, the affine one
    (the point as ``0.5 p + 0.5 p``, exact in floating point). The point is ``vec`` moved by a seeded tenth of
    its mean magnitude, not ``vec`` itself: a program that took a weight for a constant (one a module hook sets
    from the parameters, ``torch.nn.utils.weight_norm``, which the trace does not run) is right at the model's
    own point only, and a program right at a generic point is right at the model's own too (checking both cost
    a tenth of a short line's time).
    """
    g = torch.Generator().manual_seed(0)
    step = 0.1 * (float(vec.abs().mean()) if vec.numel() else 0.0) + 1e-3
    moved = vec + step * torch.randn(vec.shape, generator=g, dtype=torch.float64).to(vec.dtype)
    return _agrees_at(exe, copy_, layout, bufs, x, moved)


def _agrees_at(
    exe: StackedExec, copy_: nn.Module, layout: ParamLayout, bufs: Mapping[str, Tensor], x: Tensor, vec: Tensor
) -> bool:
    try:
        with torch.no_grad():
            want = torch.func.functional_call(copy_, {**layout.unflatten(vec), **bufs}, (x,), strict=False)
            idx = torch.zeros(1, dtype=torch.long)
            runs: list[tuple[Chunk, Any]] = [(Chunk(idx, vec[None], None, None), None)]  # (chunk, first-layer maps)
            if exe.first is not None:
                half = torch.full((1, 2), 0.5, dtype=torch.float64)
                runs.append((Chunk(idx, vec[None], half, None), exe.first_maps(x, torch.stack([vec, vec]))))
            gots = []
            for chunk, Z in runs:
                h, lay = exe.forward(chunk, x, Z)
                gots.append(h.transpose(1, 2)[0] if lay == "fm" else h[0])
    except (Unsupported, RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        exe.refusal = f"its traced program raised {type(e).__name__} ({first})"
        return False
    if not isinstance(want, Tensor):
        exe.refusal = f"it returns {type(want).__name__}, not one tensor"
        return False
    scale = float(want.abs().max()) if want.numel() else 0.0
    if all(
        got.shape == want.shape
        and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, scale), equal_nan=True))
        for got in gots
    ):
        return True
    exe.refusal = (
        "its traced program differs from torch.func.functional_call at a probe point (e.g. a hook that sets "
        "weights as torch.nn.utils.weight_norm's does, which the trace does not run)"
    )
    return False
