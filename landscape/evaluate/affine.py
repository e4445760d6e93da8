"""Points of the evaluation engine: lazy affine points and the chunks the executors take.

A slice of weight space is an affine family: :class:`AffinePoints` holds its basis and coefficients and
materializes a chunk of points at a time (a 201x201 plane never holds 40,401 vectors at once).
:func:`iter_chunks` cuts any points (a ``(P, D)`` matrix, an iterable of ``(D,)`` vectors or affine points)
into this rank's :class:`Chunk` s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["AffinePoints", "Chunk", "iter_chunks", "take_block"]


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


class Chunk:
    """One chunk of points: global indices, the ``(p, D)`` matrix, affine coefs and per-point buffers."""

    def __init__(self, index: Tensor, mat: Tensor, coefs: Tensor | None, buffers: list[dict[str, Tensor]] | None):
        self.index, self.mat, self.coefs, self.buffers = index, mat, coefs, buffers

    def __len__(self) -> int:
        return int(self.mat.shape[0])


def iter_chunks(
    points: Any,
    numel: int,
    dtype: torch.dtype,
    device: torch.device,
    size: int,
    rank: int,
    world: int,
    want_buffers: bool,
    counter: list[int],
) -> Iterator[Chunk]:
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
                yield Chunk(idx, mat[s : s + size], points.coefs[idx], bufs)
        return
    if want_buffers:
        raise ValueError("bn_mode='interpolate' needs AffinePoints with buffers (a slice between models)")
    if isinstance(points, Tensor):
        mat = points if points.dim() == 2 else points.unsqueeze(0)
        counter[0] = int(mat.shape[0])
        mine = torch.arange(rank, counter[0], world)
        for s in range(0, len(mine), size):
            idx = mine[s : s + size]
            yield Chunk(idx, check(mat[idx]), None, None)
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
                yield Chunk(torch.tensor(ids), check(torch.stack(rows)), None, None)
                ids, rows = [], []
    counter[0] = n
    if rows:
        yield Chunk(torch.tensor(ids), check(torch.stack(rows)), None, None)


def take_block(chunks: Iterator[Chunk], n_points: int) -> list[Chunk]:
    """Next chunks from ``chunks`` holding up to ``n_points`` points (at least one chunk unless exhausted)."""
    block: list[Chunk] = []
    count = 0
    for chunk in chunks:
        block.append(chunk)
        count += len(chunk)
        if count >= n_points:
            break
    return block
