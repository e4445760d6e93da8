"""The evaluation engine: metrics of one architecture at many parameter points over a dataset.

Every slice, interpolation and distance in the package calls :func:`evaluate_points`; none has a loop
of its own. Points come as a ``(P, D)`` matrix, a lazy iterable of ``(D,)`` vectors, or a lazy
:class:`AffinePoints` (``coefs @ basis``: a 201x201 plane never holds 40,401 vectors at once).

Strategies (all give the same numbers up to float rounding; ``tests/test_evaluate.py`` checks each
against ``"loop"`` in float64):

- ``"loop"``: the reference. One point and one of the caller's batches at a time through
  :func:`torch.func.functional_call`, the loss computed by ``loss_fn``.
- ``"functional"``: any model. A private copy evaluated one point at a time, data re-cut into
  cache-sized micro-batches (fresh large activations are slow to page in), 2x2 max pooling routed
  through two ``torch.maximum`` of strided views by a ``TorchFunctionMode`` (~10x faster than
  ``F.max_pool2d`` on this CPU, exact), and, when the first parametrized op is a ``Linear``/``Conv2d``
  on the input and the points are affine, its output ``sum_k c_k (W_k x + b_k)`` combined from K
  precomputed maps instead of one layer evaluation per point.
- ``"vmap"``: ``"functional"`` vmapped over chunks of points; chunks vmap cannot handle fall back
  to one point at a time. Measured here it is not faster on CPU, so ``"auto"`` never picks it.
- ``"stacked"``: any model :mod:`torch.fx` traces (no control flow on the data) that returns one
  tensor, evaluated for a chunk of points at once at the level of operations
  (:mod:`landscape.evaluate._fast`): ``nn.Linear`` and ``F.linear``, ``nn.MaxPool2d`` and ``F.max_pool2d``,
  ``nn.ReLU`` and ``x.relu()`` take the same vectorized handler; operations without one run point
  by point. Many points share one ``bmm`` per linear layer; logits stay class-major ``(P, C, B)``
  so the cross-entropy's ``log_softmax`` runs over contiguous samples; first layers of affine
  points are one ``(P, K) @ (K, n)`` product (pooled by phase when a 2x2 max pool follows); the
  large per-step tensors go into reused buffers.
- ``"auto"``: ``"stacked"`` when the model passes a probe against ``functional_call`` (plain and
  affine paths), else
  ``"functional"`` (``"loop"`` order for ``bn_mode="train"``, whose statistics depend on the batches).

BatchNorm policy (``bn_mode``): ``"eval"`` (default) uses the running statistics of the given model (or
``buffers``); ``"train"`` uses each of the caller's batches' statistics (running buffers are never
written, dropout stays off); ``"interpolate"`` uses per-point buffers ``sum_k c_k B_k`` of an
:class:`AffinePoints` whose ``buffers`` are given (Li et al.'s "states").

Loss: ``loss_fn`` returns the mean over a batch (like ``nn.CrossEntropyLoss()``); the engine weights
batches by size, so the result is the mean over the dataset. A point whose loss is NaN or inf is
returned as such (its accuracy as NaN), counted and reported with a warning, never raised.

Under ``torch.distributed`` (initialized, world size > 1) point ``i`` is evaluated by rank
``i % world_size`` and every rank returns all results (all-gather); data must be the same on all ranks.
"""

from __future__ import annotations

import contextvars
import copy
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape._options import parse_option
from landscape.evaluate._fast import FastOpsMode, StackedExec, Unsupported, build_program, uses_pool2
from landscape.params import ParamLayout, parameters_to_vector
from landscape.validation import check_model, validate_batches

if TYPE_CHECKING:
    from landscape.problem import Problem

__all__ = [
    "Strategy",
    "BNMode",
    "AffinePoints",
    "BatchMetric",
    "evaluate_points",
    "describe_data",
    "parse_bytes",
]

BatchMetric = Callable[[Tensor, Tensor, int], Tensor]
"""A custom metric: ``(outputs (P, B, *out), targets (B, ...), start) -> (P,)`` sums over the batch.

``start`` is the index of the batch's first sample in the dataset. The engine divides the summed
values by the number of samples. Its key in the result is its ``name`` attribute (or ``__name__``).
"""

# Sizes measured best on this 2-core CPU (LeNet-5 and MLP 64-32-10; L2 is 2 MB per core): a micro-batch
# whose largest activation is ~1 MB for one point, and chunks of points whose largest activation is ~8 MB
# (LeNet-5 planes, CPU time, alternating in one process: 30 points/s against 27 with 2 MB / 4 MB; the MLP
# within noise).
_BATCH_BYTES = 1 << 20
_CHUNK_BYTES = 8 << 20
_MAX_CHUNK = 256


class Strategy(str, Enum):
    """How :func:`evaluate_points` computes (see the module docstring)."""

    AUTO = "auto"
    LOOP = "loop"
    FUNCTIONAL = "functional"
    VMAP = "vmap"
    STACKED = "stacked"


class BNMode(str, Enum):
    """BatchNorm policy: running statistics, batch statistics, or interpolated buffers."""

    EVAL = "eval"
    TRAIN = "train"
    INTERPOLATE = "interpolate"


def parse_bytes(size: int | str | None, default: int = 1 << 30) -> int:
    """Parse a memory size: an int of bytes or a string like ``"512MB"``, ``"2GiB"``; ``None`` -> ``default``.

    Raises:
        ValueError: On an unreadable size.
    """
    if size is None:
        return default
    if isinstance(size, int | float):
        return int(size)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b?)\s*", str(size).lower())
    if not m:
        raise ValueError(f"cannot read memory size {size!r}; use bytes (int) or a string like '512MB' or '2GB'")
    return int(float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_"))


# =========================================================================== points
class AffinePoints:
    """Lazy points ``coefs @ basis``: point ``p`` is ``sum_k coefs[p, k] * basis[k]``.

    Computed in float64 and rounded to the basis dtype, one chunk at a time. A row whose only
    nonzero coefficient is 1 is the basis vector itself, bitwise (anchors are hit exactly).

    Args:
        basis: ``(K, D)`` vectors, e.g. ``[center, d1, d2]`` or ``[a, b]``.
        coefs: ``(P, K)`` coefficients (any float array).
        buffers: Optional K buffer dicts (one per basis vector) for ``bn_mode="interpolate"``;
            floating buffers of point ``p`` are ``sum_k coefs[p, k] * buffers[k]``, integer ones come
            from ``buffers[0]``.

    Raises:
        ValueError: On inconsistent shapes.
    """

    def __init__(
        self,
        basis: Tensor,
        coefs: Tensor | np.ndarray | Sequence[Sequence[float]],
        buffers: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> None:
        basis = torch.as_tensor(basis)
        coefs = torch.as_tensor(np.asarray(coefs, dtype=np.float64))
        if basis.dim() != 2 or coefs.dim() != 2 or coefs.shape[1] != basis.shape[0]:
            raise ValueError(
                f"AffinePoints needs basis (K, D) and coefs (P, K); got {tuple(basis.shape)} and {tuple(coefs.shape)}"
            )
        if buffers is not None and len(buffers) != basis.shape[0]:
            raise ValueError(f"got {len(buffers)} buffer dicts for {basis.shape[0]} basis vectors")
        self.basis = basis
        self.coefs = coefs
        self.buffers = None if buffers is None else [dict(b) for b in buffers]
        self._wide: list[Tensor] | None = None

    def __len__(self) -> int:
        return int(self.coefs.shape[0])

    def __repr__(self) -> str:
        return f"AffinePoints({len(self)} points, K={self.basis.shape[0]}, D={self.basis.shape[1]})"

    @staticmethod
    def _combine(c: Tensor, vecs: Sequence[Tensor], dtype: torch.dtype, wide: Sequence[Tensor] | None = None) -> Tensor:
        c = c.to(device=vecs[0].device)
        wide = wide if wide is not None else [v.double() for v in vecs]
        out = torch.zeros(c.shape[0], *vecs[0].shape, dtype=torch.float64, device=vecs[0].device)
        shape = (-1,) + (1,) * vecs[0].dim()
        for k, v in enumerate(wide):
            ck = c[:, k].view(shape)
            if bool(v.sum().isfinite()):  # cheap test; an overflowing sum only takes the slow branch
                out.addcmul_(ck, v.unsqueeze(0))
            else:  # 0 * inf would be NaN: a zero coefficient must contribute exactly nothing
                out += torch.where(ck == 0, 0.0, ck * v)
        out = out.to(dtype)
        single = ((c != 0).sum(1) == 1) & (c == 1).any(1)
        if bool(single.any()):  # exact anchors (also -0.0 and non-finite entries)
            which = (c[single] == 1).int().argmax(1)
            out[single] = torch.stack(list(vecs))[which].to(dtype)
        return out

    def materialize(self, index: Tensor) -> Tensor:
        """Points ``index`` as a ``(len(index), D)`` tensor in the basis dtype."""
        if self._wide is None and self.basis.numel() * 8 <= 64 << 20:
            self._wide = list(self.basis.double())  # kept: chunks are materialized many times
        return self._combine(self.coefs[index], list(self.basis), self.basis.dtype, self._wide)

    def buffers_at(self, index: Tensor) -> list[dict[str, Tensor]]:
        """Per-point interpolated buffers of points ``index``.

        Raises:
            ValueError: If the points carry no buffers.
        """
        if self.buffers is None:
            raise ValueError("these AffinePoints carry no buffers; bn_mode='interpolate' needs model anchors")
        c = self.coefs[index]
        out: list[dict[str, Tensor]] = [{} for _ in range(c.shape[0])]
        for name, b0 in self.buffers[0].items():
            if b0.is_floating_point():
                vals = self._combine(c, [b[name] for b in self.buffers], b0.dtype)
            else:
                vals = b0.expand(c.shape[0], *b0.shape)
            for p in range(c.shape[0]):
                out[p][name] = vals[p]
        return out


class _Chunk:
    """One chunk of points: global indices, the ``(p, D)`` matrix, affine coefs and per-point buffers."""

    def __init__(self, index: Tensor, mat: Tensor, coefs: Tensor | None, buffers: list[dict[str, Tensor]] | None):
        self.index, self.mat, self.coefs, self.buffers = index, mat, coefs, buffers

    def __len__(self) -> int:
        return int(self.mat.shape[0])


def _chunks(
    points: Any,
    numel: int,
    dtype: torch.dtype,
    device: torch.device,
    size: int,
    rank: int,
    world: int,
    want_buffers: bool,
    counter: list[int],
) -> Iterator[_Chunk]:
    """Yield this rank's chunks (points ``i`` with ``i % world == rank``); ``counter[0]`` ends as P."""

    def check(mat: Tensor) -> Tensor:
        if mat.dim() != 2 or mat.shape[1] != numel:
            raise ValueError(
                f"points must have {numel} entries each (the model's parameters, frozen ones included), got shape "
                f"{tuple(mat.shape)}; was the vector taken from a different model?"
            )
        return mat.to(device=device, dtype=dtype)

    if isinstance(points, AffinePoints):
        if points.basis.shape[1] != numel:
            check(points.basis)
        counter[0] = len(points)
        mine = torch.arange(rank, len(points), world)
        group = max(1, (4 << 20) // (8 * numel * size)) * size  # materialized together: few ops, no huge temporaries
        for g in range(0, len(mine), group):
            gidx = mine[g : g + group]
            mat = check(points.materialize(gidx))
            for s in range(0, len(gidx), size):
                idx = gidx[s : s + size]
                bufs = points.buffers_at(idx) if want_buffers else None
                yield _Chunk(idx, mat[s : s + size], points.coefs[idx], bufs)
        return
    if want_buffers:
        raise ValueError("bn_mode='interpolate' needs AffinePoints with buffers (a slice between models)")
    if isinstance(points, Tensor):
        mat = points if points.dim() == 2 else points.unsqueeze(0)
        counter[0] = int(mat.shape[0])
        mine = torch.arange(rank, counter[0], world)
        for s in range(0, len(mine), size):
            idx = mine[s : s + size]
            yield _Chunk(idx, check(mat[idx]), None, None)
        return
    if not isinstance(points, Iterable):
        raise TypeError(
            f"points must be a (P, D) tensor, an iterable of (D,) tensors or AffinePoints, got {type(points).__name__}"
        )
    ids: list[int] = []
    rows: list[Tensor] = []
    n = 0
    for n, v in enumerate(points, start=1):
        if (n - 1) % world == rank:
            ids.append(n - 1)
            rows.append(torch.as_tensor(v).reshape(-1))
            if len(rows) == size:
                yield _Chunk(torch.tensor(ids), check(torch.stack(rows)), None, None)
                ids, rows = [], []
    counter[0] = n
    if rows:
        yield _Chunk(torch.tensor(ids), check(torch.stack(rows)), None, None)


# =========================================================================== data
def describe_data(data: Any) -> str:
    """A short provenance description of ``data`` (shapes and dtypes, or the number of batches)."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        return f"tensor pair X{tuple(x.shape)} {str(x.dtype)[6:]}, y{tuple(y.shape)} {str(y.dtype)[6:]}"
    n = len(data) if hasattr(data, "__len__") else "?"
    return f"{type(data).__name__} of {n} batches"


def _read_data(
    data: Any, model: nn.Module, metrics: Sequence[Any], loss_fn: Any, device: torch.device, dtype: torch.dtype
) -> list[tuple[Tensor, Tensor]]:
    """The data read once, checked and normalized by :mod:`landscape.validation` (dtype, labels, NaN, empty)."""
    names = {m for m in metrics if isinstance(m, str)}
    # Targets matter only to the loss and accuracy; custom metrics (e.g. the functional distance) get them as given.
    loss = loss_fn if "loss" in names else ("cross_entropy" if "accuracy" in names else None)
    if loss is not None and not isinstance(loss, str) and _Metrics._loss_kind(loss, True)[0] == "ce":
        loss = "cross_entropy"  # the engine's own cross-entropy gathers every label: no ignore_index
    return validate_batches(data, model, loss, targets=bool(names & {"loss", "accuracy"}), dtype=dtype, device=device)


def _recut(batches: list[tuple[Tensor, Tensor]], size: int) -> list[tuple[Tensor, Tensor]]:
    """Re-cut batches into micro-batches of ``size`` (order kept); unchanged if shapes differ."""
    if len({tuple(x.shape[1:]) for x, _ in batches}) != 1 or len({tuple(y.shape[1:]) for _, y in batches}) != 1:
        return batches
    x = batches[0][0] if len(batches) == 1 else torch.cat([b[0] for b in batches])
    y = batches[0][1] if len(batches) == 1 else torch.cat([b[1] for b in batches])
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


# =========================================================================== model preparation
def _private_copy(model: nn.Module, bn_mode: BNMode, fast: bool) -> nn.Module:
    """Deep copy in eval mode (BatchNorm in train mode for ``bn_mode="train"``)."""
    m = copy.deepcopy(model).eval()
    if bn_mode is BNMode.TRAIN:
        for sub in m.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.train()
    return m


class _FirstLayer:
    """A ``Linear``/``Conv2d`` that is the first parametrized op and sees only the input (checked by a probe)."""

    def __init__(self, name: str, module: nn.Module, layout: ParamLayout) -> None:
        self.name, self.module = name, module
        self.weight = layout[f"{name}.weight"].slice
        self.bias = layout[f"{name}.bias"].slice if f"{name}.bias" in layout else None
        self.shape_w = layout[f"{name}.weight"].shape

    def maps(self, u: Tensor, basis: Tensor, feature_major: bool = False) -> Tensor:
        """The layer at each basis vector, ``(K, B, *out)`` (``(K, O, B)`` if ``feature_major``), in one op."""
        K = basis.shape[0]
        w = basis[:, self.weight].reshape(K * self.shape_w[0], *self.shape_w[1:])
        b = None if self.bias is None else basis[:, self.bias].reshape(-1)
        if isinstance(self.module, nn.Linear):
            if feature_major:  # (K O, B) = W u^T + b
                out = w @ u.T if b is None else torch.addmm(b[:, None], w, u.T)
                return out.view(K, -1, u.shape[0])
            out = F.linear(u, w, b)  # (B, *mid, K O): a Linear on token inputs keeps its middle axes
            return out.view(*out.shape[:-1], K, -1).movedim(-2, 0).contiguous()
        m = self.module
        assert isinstance(m, nn.Conv2d)  # _find_first_layer admits Linear and Conv2d only
        if m.groups != 1:
            return torch.stack(
                [
                    F.conv2d(u, w_, b_, m.stride, m.padding, m.dilation, m.groups)
                    for w_, b_ in zip(w.chunk(K), [None] * K if b is None else b.chunk(K))
                ]
            )
        out = F.conv2d(u, w, b, m.stride, m.padding, m.dilation)
        return out.view(u.shape[0], K, -1, *out.shape[2:]).transpose(0, 1).contiguous()


class _Stop(Exception):
    pass


def _find_first_layer(
    copy_: nn.Module, layout: ParamLayout, x: Tensor, bufs: Mapping[str, Tensor]
) -> _FirstLayer | None:
    """Probe one forward: is the first parametrized module a Linear/Conv2d whose input depends on no parameter?"""
    names = {id(m): n for n, m in copy_.named_modules()}
    owned = [m for m in copy_.modules() if any(True for _ in m.parameters(recurse=False))]
    calls: list[tuple[nn.Module, Tensor | None]] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        calls.append((mod, args[0] if args and isinstance(args[0], Tensor) else None))

    handles = [m.register_forward_hook(hook) for m in owned]
    try:
        params = {k: v.detach().clone().requires_grad_(True) for k, v in copy_.named_parameters()}
        with torch.enable_grad():
            torch.func.functional_call(copy_, {**params, **bufs}, (x,), strict=False)
    except Exception:  # noqa: BLE001 - any failure just disables the optimization
        return None
    finally:
        for h in handles:
            h.remove()
    if not calls:
        return None
    mod, u = calls[0]
    name = names.get(id(mod))
    ok_conv = isinstance(mod, nn.Conv2d) and type(mod) is nn.Conv2d and mod.padding_mode == "zeros"
    if name is None or u is None or not (type(mod) is nn.Linear or ok_conv) or u.requires_grad:
        return None
    if sum(m is mod for m, _ in calls) != 1 or f"{name}.weight" not in layout:
        return None
    shared = {n for n, _ in copy_.named_parameters(remove_duplicate=False)} - set(dict(copy_.named_parameters()))
    if any(n.startswith(f"{name}.") for n in shared) or (mod.bias is not None and f"{name}.bias" not in layout):
        return None  # the first-layer maps read weight and bias from the points: both must be in the vector
    return _FirstLayer(name, mod, layout)


def _first_input(copy_: nn.Module, first: Any, x: Tensor, bufs: Mapping[str, Tensor]) -> Tensor:
    """The input the first layer sees for batch ``x`` (the forward stops right there).

    The stacked executor finds its first layers' inputs itself: it gets the batch.
    """
    if not isinstance(first, _FirstLayer):
        return x
    got: list[Tensor] = []

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
        got.append(args[0])
        raise _Stop

    h = first.module.register_forward_pre_hook(pre)
    try:
        torch.func.functional_call(copy_, dict(bufs), (x,), strict=False)
    except _Stop:
        pass
    finally:
        h.remove()
    return got[0]


def _combine_maps(Z: Tensor, c: Sequence[float], out: Tensor | None = None) -> Tensor:
    """``sum_k c[k] * Z[k]`` into a fresh tensor (or ``out``), skipping zero coefficients."""
    terms = [(k, float(ck)) for k, ck in enumerate(c) if ck != 0]
    if out is None:
        out = torch.empty_like(Z[0])
    if not terms:
        return out.zero_()
    k0, c0 = terms[0]
    if c0 == 1:
        out.copy_(Z[k0])
    else:
        torch.mul(Z[k0], c0, out=out)
    for k, ck in terms[1:]:
        out.add_(Z[k], alpha=ck)
    return out


def _probe_sizes(copy_: nn.Module, x: Tensor, bufs: Mapping[str, Tensor]) -> tuple[int, int, tuple[int, ...]]:
    """(largest, total) activation elements per sample over leaf modules, and the output shape per sample."""
    sizes: list[int] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            sizes.append(out.numel() // max(1, len(x)) if out.dim() else 1)

    leaves = [m for m in copy_.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        out = torch.func.functional_call(copy_, dict(bufs), (x,), strict=False)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor):
        raise TypeError(f"the model returns {type(out).__name__}; the engine needs a tensor of outputs (B, ...)")
    sizes.append(out.numel() // max(1, len(x)))
    return max(sizes), sum(sizes), tuple(out.shape[1:])


# =========================================================================== executors
class _Exec:
    """Common parts of the executors: parameters of a chunk, fixed parameters and buffers."""

    def __init__(self, copy_: nn.Module, layout: ParamLayout, bufs: Mapping[str, Tensor], bn_train: bool) -> None:
        self.copy, self.layout, self.bufs, self.bn_train = copy_, layout, dict(bufs), bn_train
        self.fixed = {k: v.detach() for k, v in copy_.named_parameters() if k not in layout}

    def point_bufs(self, chunk: _Chunk, p: int) -> dict[str, Tensor]:
        b = self.bufs if chunk.buffers is None else chunk.buffers[p]
        return {k: v.clone() for k, v in b.items()} if self.bn_train else b


class _FunctionalExec(_Exec):
    """One point at a time (or a vmapped chunk) through ``functional_call`` on the private copy."""

    def __init__(
        self,
        copy_: nn.Module,
        layout: ParamLayout,
        bufs: Mapping[str, Tensor],
        bn_train: bool,
        first: _FirstLayer | None,
        vmap: bool,
    ) -> None:
        super().__init__(copy_, layout, bufs, bn_train)
        self.first, self.vmap = first, vmap
        self.fast_ops: bool | None = None
        self.inject: list[Tensor | None] = [None]
        if first is not None:
            orig = first.module.forward

            def forward(*a: Any, **k: Any) -> Any:
                return orig(*a, **k) if self.inject[0] is None else self.inject[0]

            first.module.forward = forward  # private copy only: its output is injected

    def first_maps(self, u: Tensor, basis: Tensor) -> Tensor:
        assert self.first is not None
        return self.first.maps(u, basis)

    def _call(self, params: Mapping[str, Tensor], bufs: Mapping[str, Tensor], x: Tensor, z: Tensor | None) -> Tensor:
        if self.fast_ops is None:  # 2x2 max pooling through strided views (~10x faster than F.max_pool2d here)
            self.fast_ops = uses_pool2(
                self.copy, lambda: torch.func.functional_call(self.copy, {**params, **bufs}, (x,), strict=False)
            )
        self.inject[0] = z
        try:
            if self.fast_ops:
                with FastOpsMode():
                    return torch.func.functional_call(self.copy, {**params, **bufs}, (x,), strict=False)
            return torch.func.functional_call(self.copy, {**params, **bufs}, (x,), strict=False)
        finally:
            self.inject[0] = None

    def forward(self, chunk: _Chunk, x: Tensor, Z: Tensor | None) -> tuple[Tensor, str]:
        P = len(chunk)
        coefs = chunk.coefs
        zs = None if Z is None or coefs is None else [_combine_maps(Z, coefs[p].tolist()) for p in range(P)]
        if self.vmap and P > 1:
            try:
                params = self.layout.unflatten_batch(chunk.mat)
                bufs = (
                    self.bufs
                    if chunk.buffers is None
                    else {k: torch.stack([b[k] for b in chunk.buffers]) for k in chunk.buffers[0]}
                )
                zb = None if zs is None else torch.stack(zs)
                dims = (0, None if chunk.buffers is None else 0, None if zb is None else 0)
                out = torch.func.vmap(lambda p, b, z: self._call(p, b, x, z), in_dims=dims)(params, bufs, zb)
                return out, "sm"
            except Exception as e:  # noqa: BLE001 - vmap cannot handle every model: fall back, once
                warnings.warn(f"vmap failed ({type(e).__name__}: {e}); evaluating one point at a time", stacklevel=4)
                self.vmap = False
        outs = []
        for p in range(P):
            out = self._call(
                self.layout.unflatten(chunk.mat[p]), self.point_bufs(chunk, p), x, None if zs is None else zs[p]
            )
            if not isinstance(out, Tensor):
                raise TypeError(f"the model returns {type(out).__name__}; the engine needs a tensor of outputs")
            outs.append(out)
        return torch.stack(outs), "sm"


# =========================================================================== metrics
class _Metrics:
    """Per-batch metric sums: loss, accuracy, outputs and custom :data:`BatchMetric` callables."""

    def __init__(self, metrics: Sequence[str | BatchMetric], loss_fn: Any, y: Tensor, plain: bool) -> None:
        if isinstance(metrics, str) or callable(metrics):
            metrics = (metrics,)
        self.keys: list[tuple[str, Any]] = []
        for m in metrics:
            if isinstance(m, str):
                if m not in ("loss", "accuracy", "outputs"):
                    raise ValueError(f"unknown metric {m!r}; valid: 'loss', 'accuracy', 'outputs' or a callable")
                self.keys.append((m, None))
            elif callable(m):
                self.keys.append((str(getattr(m, "name", getattr(m, "__name__", "metric"))), m))
            else:
                raise TypeError(f"a metric must be a name or a callable, got {type(m).__name__}")
        if len({k for k, _ in self.keys}) != len(self.keys):
            raise ValueError(f"duplicate metric names in {[k for k, _ in self.keys]}")
        integer = not (y.is_floating_point() or y.is_complex())
        if any(k == "accuracy" for k, _ in self.keys) and (not integer or y.dim() != 1):
            raise ValueError(
                f"accuracy needs integer class targets of shape (B,), got {str(y.dtype)[6:]} {tuple(y.shape)}; "
                "pass metrics=('loss',) for regression"
            )
        self.kind, self.loss_fn = self._loss_kind(loss_fn, integer)
        self.plain = plain
        self.ws: dict[str, Tensor] = {}

    @staticmethod
    def _loss_kind(loss_fn: Any, integer: bool) -> tuple[str, Callable[[Tensor, Tensor], Tensor]]:
        if loss_fn is None:
            loss_fn = "cross_entropy" if integer else "mse"
        if loss_fn in ("cross_entropy", F.cross_entropy):
            return "ce", F.cross_entropy
        if loss_fn in ("mse", F.mse_loss):
            return "mse", F.mse_loss
        if isinstance(loss_fn, str):
            raise ValueError(f"unknown loss {loss_fn!r}; valid: 'cross_entropy', 'mse' or a callable")
        if (
            type(loss_fn) is nn.CrossEntropyLoss
            and loss_fn.weight is None
            and loss_fn.reduction == "mean"
            and loss_fn.label_smoothing == 0
            and loss_fn.ignore_index == -100
        ):
            return "ce", F.cross_entropy
        if type(loss_fn) is nn.MSELoss and loss_fn.reduction == "mean":
            return "mse", F.mse_loss
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        return "custom", loss_fn

    def add(self, acc: dict[str, Any], h: Tensor, lay: str, y: Tensor, start: int) -> None:
        """Add one batch's contribution; ``h`` is ``(P, B, *out)`` (``lay="sm"``) or ``(P, C, B)`` (``"fm"``)."""
        P, B = h.shape[0], y.shape[0]
        sm = h.transpose(1, 2) if lay == "fm" else h
        cm = h if lay == "fm" else (h.transpose(1, 2) if h.dim() == 3 else None)  # class-major (P, C, B)
        fast = not self.plain and cm is not None and y.dim() == 1
        for key, fn in self.keys:
            if key == "outputs":
                acc.setdefault(key, []).append(sm.detach().cpu().clone())
                continue
            if fn is not None:
                val = fn(sm, y, start).double()
            elif key == "loss" and fast and cm is not None and self.kind == "ce":
                ws = self.ws.get("ce")
                if ws is None or ws.shape != cm.shape or ws.dtype != cm.dtype:  # reused: fresh memory page-faults
                    ws = self.ws["ce"] = torch.empty(cm.shape, dtype=cm.dtype, device=cm.device)
                # log_softmax over the class axis of (P, C, B): one vectorized pass, ~2x the manual pipeline
                lp = torch.log_softmax(cm, 1, out=ws)
                val = -lp.gather(1, y.view(1, 1, B).expand(P, 1, B))[:, 0].sum(1, dtype=torch.float64)
            elif (
                key == "loss"
                and not self.plain
                and cm is not None
                and self.kind == "mse"
                and cm.shape[1] == 1
                and y.numel() == B
            ):  # targets (B,) or (B, 1) (validation matches them to the outputs)
                val = (cm[:, 0] - y.reshape(B)).square().sum(1, dtype=torch.float64)
            elif key == "loss":
                val = torch.stack([self.loss_fn(sm[p], y).double().reshape(()) * B for p in range(P)])
            elif fast and cm is not None:  # accuracy, ties like argmax: correct iff no earlier class reaches the max
                m = cm.amax(1)
                tl = cm.gather(1, y.view(1, 1, B).expand(P, 1, B))[:, 0]
                earlier = torch.arange(cm.shape[1], device=y.device)[:, None] < y[None, :]
                before = torch.where(earlier, 0.0, -math.inf).to(cm.dtype)  # (C, B): -inf from the target on
                val = ((tl == m) & ((cm + before).amax(1) < m)).sum(1, dtype=torch.float64)
            else:
                val = (sm.argmax(-1) == y).sum(1, dtype=torch.float64)
            acc[key] = acc.get(key, 0) + val.detach().cpu()

    def finish(self, acc: dict[str, Any], n: int) -> dict[str, Tensor]:
        """Turn sums into means over ``n`` samples and concatenate outputs."""
        return {k: torch.cat(acc[k], 1) if k == "outputs" else acc[k] / n for k, _ in self.keys}


# =========================================================================== distributed
def _dist() -> tuple[int, int]:
    d = torch.distributed
    if d.is_available() and d.is_initialized() and d.get_world_size() > 1:
        return d.get_rank(), d.get_world_size()
    return 0, 1


def _gather(local: Tensor, total: int, rank: int, world: int) -> Tensor:
    """All-gather rows held round-robin (row ``j`` of rank ``r`` is global row ``r + j * world``)."""
    d = torch.distributed
    dev = torch.device("cuda", torch.cuda.current_device()) if d.get_backend() == "nccl" else torch.device("cpu")
    per = -(-total // world)
    buf = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=dev)
    buf[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(buf) for _ in range(world)]
    d.all_gather(parts, buf)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r in range(world):
        cnt = len(range(r, total, world))
        out[r::world] = parts[r][:cnt].cpu()
    return out


_SHARD_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar("shard_local", default=False)
_START: contextvars.ContextVar[int] = contextvars.ContextVar("start", default=0)


def _evaluate_sharded(problem: Any, points: Any, metrics: Any, **kw: Any) -> dict[str, np.ndarray]:
    """A data-sharded problem (:mod:`landscape.distributed`): every point on this rank's share, then combined.

    Per-point means become sums (times the local count), all-reduced with the counts; outputs are gathered in
    rank (= data) order; custom metrics see global sample indices.
    """
    from landscape import distributed

    names = [m if isinstance(m, str) else "custom" for m in (metrics or ())]
    if not problem.shard_ordered and ("outputs" in names or "custom" in names):
        raise ValueError(
            "metric 'outputs' and custom metrics need the data order, which a strided shard of an iterable loses; "
            "shard a Dataset, a DataLoader over one, a list of batches or tensors instead"
        )
    n_local = problem.n_samples
    counts = distributed.all_gather_rows(torch.tensor([n_local], dtype=torch.int64))
    rank = distributed.rank_world()[0]
    t_local, t_start = _SHARD_LOCAL.set(True), _START.set(int(counts[:rank].sum()))
    try:
        local = evaluate_points(problem, points, metrics=metrics, **kw)
    finally:
        _SHARD_LOCAL.reset(t_local)
        _START.reset(t_start)
    keys = [k for k in local if k != "outputs"]
    sums = [torch.from_numpy(local[k]) * n_local for k in keys]
    *totals, n = distributed.all_reduce_sum([*sums, torch.tensor(float(n_local), dtype=torch.float64)])
    out = {k: (t / n).numpy() for k, t in zip(keys, totals)}
    if "outputs" in local:
        rows = distributed.all_gather_rows(torch.from_numpy(local["outputs"]).transpose(0, 1).contiguous())
        out["outputs"] = rows.transpose(0, 1).numpy()
    return {k: out[k] for k in local}


# =========================================================================== entry point
def evaluate_points(
    problem: Problem | nn.Module,
    points: Tensor | Iterable[Tensor] | AffinePoints,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
    *,
    metrics: Sequence[str | BatchMetric] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = Strategy.AUTO,
    bn_mode: BNMode | str | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Evaluate metrics of a model's architecture at many parameter points over a dataset.

    The caller's model is never modified (a private copy is evaluated through ``functional_call``).

    A :class:`~landscape.problem.Problem` whose data are ``(X, y)`` tensor batches held in memory and whose
    loss is ``(outputs, targets)`` runs through the executors below (in the problem's dtype); any other
    problem (closure losses, mapping or multi-input batches, streamed data) through
    :meth:`Problem.evaluate <landscape.problem.Problem.evaluate>`, one point at a time.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the model (the architecture; its buffers and
            frozen parameters are used) with ``data`` (and ``loss_fn``) as a shorthand.
        points: ``(P, D)`` matrix, an iterable of ``(D,)`` vectors (consumed lazily), or
            :class:`AffinePoints`; ``D`` is the number of parameters.
        data: Shorthand only: a tensor pair ``(X (N, ...), y (N, ...))`` or an iterable of such batches
            (read once and kept in memory).
        metrics: Names among ``"loss"``, ``"accuracy"``, ``"outputs"``, and/or :data:`BatchMetric`
            callables; default ``("loss", "accuracy")`` for integer class targets, else ``("loss",)``.
        loss_fn: Shorthand only: batch-mean loss ``(outputs, targets) -> scalar``, ``"cross_entropy"`` or
            ``"mse"``; default cross-entropy for integer targets, MSE otherwise.
        batch_size: Micro-batch size (default: the largest activation of one point stays ~2 MB); with
            ``bn_mode="train"`` or ``strategy="loop"`` the caller's batches are kept unless given.
        chunk_size: Points evaluated together (default: ~4 MB of largest activation, within ``memory_budget``).
        memory_budget: Bytes (or ``"512MB"``) for point chunks, activations and cached first-layer
            maps; default 1 GiB. Outputs and the data themselves are not counted.
        strategy: ``"auto"``, ``"loop"`` (reference), ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"`` or ``"interpolate"`` (see the module docstring); default the
            problem's (``"eval"`` for the shorthand).
        buffers: Buffers to use instead of the model's own (``bn_mode="eval"``/``"train"``).
        progress: Show a tqdm bar over points (rank 0 only).

    Returns:
        ``{"loss": (P,), "accuracy": (P,), "outputs": (P, N, *out), <custom>: (P,)}`` as numpy arrays
        (float64, outputs in the model dtype), in the order of ``points``, on every rank.

    Raises:
        ValueError: On mismatched points, unknown options, accuracy without class targets, or an
            unsupported model under ``strategy="stacked"``.
        InputError: On empty data, NaN/inf in the data, the buffers or frozen parameters, or class labels
            outside the output width (inputs are cast to the model's dtype; see :mod:`landscape.validation`).
            Points holding NaN/inf are evaluated: their loss is returned as such.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> pts = parameters_to_vector(net).expand(4, -1)
        >>> out = evaluate_points(net, pts, (torch.randn(10, 2), torch.randint(0, 3, (10,))))
        >>> out["loss"].shape
        (4,)
    """
    from landscape.problem import Problem

    if isinstance(problem, Problem):
        if data is not None or loss_fn is not None:
            raise ValueError("a Problem holds its data and loss; do not pass data or loss_fn with it")
        bn = parse_option(BNMode, problem.bn_mode if bn_mode is None else bn_mode, "bn_mode")
        pairs = problem.pairs()
        if pairs is None:  # the general path: closures, mapping / multi-input batches, streamed data
            if bn is BNMode.INTERPOLATE or buffers is not None:
                raise ValueError(
                    "bn_mode='interpolate' and buffers= need (X, y) tensor batches and an (outputs, targets) loss"
                )
            return problem.with_options(bn_mode=bn.value).evaluate(
                points, metrics, chunk_size=chunk_size or 16, progress=progress
            )
        if problem.sharded and not _SHARD_LOCAL.get():
            return _evaluate_sharded(
                problem,
                points,
                metrics,
                batch_size=batch_size,
                chunk_size=chunk_size,
                memory_budget=memory_budget,
                strategy=strategy,
                bn_mode=bn,
                buffers=buffers,
                progress=progress,
            )
        model, data, loss_fn = problem.compute_model(), pairs, problem.engine_loss()
    else:
        model = problem
        bn = parse_option(BNMode, BNMode.EVAL if bn_mode is None else bn_mode, "bn_mode")
        if data is None:
            raise ValueError("data is missing: pass a landscape.Problem, or the model with data")
    strategy = parse_option(Strategy, strategy, "strategy")
    layout = ParamLayout.from_model(model)
    ref = next(iter(model.parameters()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    budget = parse_bytes(memory_budget)
    itemsize = torch.empty((), dtype=dtype).element_size()
    check_model(model, trainable=False)  # frozen parameters and buffers are used at every point
    batches = _read_data(data, model, ("loss",) if metrics is None else metrics, loss_fn, device, dtype)
    if metrics is None:  # accuracy for class labels (validation made them (B,) int64), else the loss only
        y0 = batches[0][1]
        classes = not (y0.is_floating_point() or y0.is_complex()) and y0.dim() == 1
        metrics = ("loss", "accuracy") if classes else ("loss",)
    n_samples = sum(int(y.shape[0]) for _, y in batches)
    mset = _Metrics(metrics, loss_fn, batches[0][1], plain=strategy is Strategy.LOOP)
    if bn is BNMode.INTERPOLATE and buffers is not None:
        raise ValueError("bn_mode='interpolate' takes buffers from the points' anchors; do not pass buffers")
    # Private copies: train-mode BatchNorm writes running statistics in place, never into the caller's.
    bufs = {k: v.detach().clone() for k, v in (model.named_buffers() if buffers is None else buffers.items())}
    fast = strategy is not Strategy.LOOP
    copy_ = _private_copy(model, bn, fast)
    x1 = batches[0][0][:2]  # two samples: train-mode BatchNorm needs more than one value per channel
    max_act, total_act, out_shape = _probe_sizes(copy_, x1, bufs)

    affine = isinstance(points, AffinePoints)
    exe: StackedExec | _FunctionalExec | None = None
    if strategy in (Strategy.AUTO, Strategy.STACKED) and bn is not BNMode.TRAIN:
        prog = build_program(copy_, key=model)
        if prog is not None:
            exe = StackedExec(copy_, layout, bufs, prog)
            if not _probe_ok(exe, copy_, layout, bufs, x1, parameters_to_vector(model).to(dtype)):
                exe = None
    if exe is None and strategy is Strategy.STACKED:
        raise ValueError(
            "strategy='stacked' needs a model that torch.fx can trace (no control flow that depends on the data) "
            f"and that returns one tensor; {type(model).__name__} is not one: use strategy='auto'"
        )
    if exe is None:
        first = _find_first_layer(copy_, layout, x1, bufs) if fast and affine and bn is not BNMode.INTERPOLATE else None
        exe = _FunctionalExec(copy_, layout, bufs, bn is BNMode.TRAIN, first, strategy is Strategy.VMAP)

    keep_batches = not fast or bn is BNMode.TRAIN
    if batch_size is not None or not keep_batches:
        micro = batch_size or max(8, min(n_samples, _BATCH_BYTES // max(1, max_act * itemsize)))
        batches = _recut(batches, int(micro))
    B = max(int(y.shape[0]) for _, y in batches)
    per_point = layout.numel * itemsize * 3 + B * total_act * itemsize * 2
    if chunk_size is None:
        if isinstance(exe, StackedExec) or (isinstance(exe, _FunctionalExec) and exe.vmap):
            chunk_size = max(1, min(_MAX_CHUNK, _CHUNK_BYTES // max(1, B * max_act * itemsize)))
        else:
            chunk_size = 16
        chunk_size = max(1, min(chunk_size, budget // max(1, per_point)))

    run, first_layer = exe, exe.first  # as the closure below sees them
    basis = (
        points.basis.to(device=device, dtype=dtype)
        if isinstance(points, AffinePoints) and first_layer is not None
        else None
    )

    def first_maps(x: Tensor) -> Any:  # in the executor's own form: Tensor (functional), dict (stacked), or None
        if basis is None or first_layer is None:
            return None
        return run.first_maps(_first_input(copy_, first_layer, x, bufs), basis)

    rank, world = (0, 1) if _SHARD_LOCAL.get() else _dist()  # data-sharded: every rank takes every point
    counter = [0]
    parts: dict[str, list[Tensor]] = {}
    from tqdm.auto import tqdm

    total = len(points) if hasattr(points, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(
        total=None if total is None else len(range(rank, total, world)),
        desc="points",
        unit="pt",
        disable=not progress or rank != 0,
    )
    block_points = max(chunk_size, budget // 4 // max(1, layout.numel * 8))
    chunks = _chunks(points, layout.numel, dtype, device, chunk_size, rank, world, bn is BNMode.INTERPOLATE, counter)
    with torch.no_grad(), bar:
        # Blocks of chunks, data outer: the first-layer maps of a micro-batch are computed once per
        # block and stay in cache while every point of the block uses them.
        while block := _take(chunks, block_points):
            accs: list[dict[str, Any]] = [{} for _ in block]
            start, done, shown = _START.get(), 0.0, 0  # global index of this rank's first sample
            for x, y in batches:
                Z = first_maps(x) if block[0].coefs is not None else None
                for chunk, acc in zip(block, accs):
                    h, lay = exe.forward(chunk, x, Z)
                    mset.add(acc, h, lay, y, start)
                    done += len(chunk) * int(y.shape[0]) / n_samples  # progress in points
                    if int(done) > shown:
                        bar.update(int(done) - shown)
                        shown = int(done)
                start += int(y.shape[0])
            bar.update(sum(len(c) for c in block) - shown)
            for acc in accs:
                for k, v in mset.finish(acc, n_samples).items():
                    parts.setdefault(k, []).append(v)
    P = counter[0]
    out: dict[str, np.ndarray] = {}
    for k, _ in mset.keys:
        if parts.get(k):
            local = torch.cat(parts[k])
        else:  # a rank without points (fewer points than ranks)
            shape, dt = ((0, n_samples, *out_shape), dtype) if k == "outputs" else ((0,), torch.float64)
            local = torch.empty(shape, dtype=dt)
        res = _gather(local, P, rank, world) if world > 1 else local
        out[k] = res.numpy()
    if "loss" in out:
        bad = ~np.isfinite(out["loss"])
        if bad.any():
            if "accuracy" in out:
                out["accuracy"][bad] = np.nan
            if rank == 0:
                warnings.warn(
                    f"{int(bad.sum())} of {P} points gave a non-finite loss (NaN or inf); returned as such and "
                    "masked in plots",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return out


def _take(chunks: Iterator[_Chunk], n_points: int) -> list[_Chunk]:
    """Next chunks from ``chunks`` holding up to ``n_points`` points (at least one chunk unless exhausted)."""
    block: list[_Chunk] = []
    count = 0
    for chunk in chunks:
        block.append(chunk)
        count += len(chunk)
        if count >= n_points:
            break
    return block


def _probe_ok(
    exe: StackedExec, copy_: nn.Module, layout: ParamLayout, bufs: Mapping[str, Tensor], x: Tensor, vec: Tensor
) -> bool:
    """Does the stacked executor reproduce ``functional_call`` at the model's own point on a few samples?

    Both paths are checked: the plain one and, if the executor has first-layer maps, the affine one
    (the point as ``0.5 vec + 0.5 vec``, exact in floating point).
    """
    try:
        with torch.no_grad():
            want = torch.func.functional_call(copy_, {**layout.unflatten(vec), **bufs}, (x,), strict=False)
            idx = torch.zeros(1, dtype=torch.long)
            runs: list[tuple[_Chunk, Any]] = [(_Chunk(idx, vec[None], None, None), None)]  # (chunk, first-layer maps)
            if exe.first is not None:
                half = torch.full((1, 2), 0.5, dtype=torch.float64)
                runs.append((_Chunk(idx, vec[None], half, None), exe.first_maps(x, torch.stack([vec, vec]))))
            gots = []
            for chunk, Z in runs:
                h, lay = exe.forward(chunk, x, Z)
                gots.append(h.transpose(1, 2)[0] if lay == "fm" else h[0])
    except (Unsupported, RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError):
        return False
    if not isinstance(want, Tensor):
        return False
    scale = float(want.abs().max()) if want.numel() else 0.0
    return all(
        got.shape == want.shape
        and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, scale), equal_nan=True))
        for got in gots
    )
