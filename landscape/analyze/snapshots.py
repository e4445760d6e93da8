"""Snapshots read as one stacked ``(T, D)`` matrix, block by block, never all at once.

A trajectory (:class:`~landscape.trajectory.store.Trajectory`), a ``(T, D)`` tensor or array, a list of
``(D,)`` vectors or snapshots, or a list of several of those, is read through :class:`SnapshotStack`;
:class:`Workspace` holds the float64 column panels the streamed passes of :mod:`landscape.analyze.pca` and
:mod:`landscape.analyze.paths` compute in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from landscape.trajectory.records import segment_index
from landscape.validation import InputError, describe_nonfinite

__all__ = ["SnapshotStack", "Workspace", "row_sqnorms", "stream_distances", "refuse_nonfinite"]

WORKSPACE_ELEMENTS = 1 << 22  # float64 elements of the reused panel workspace (32 MiB)


class _Rows:
    """Random access to the rows of one trajectory-like input, in blocks."""

    n: int
    dim: int
    dtype: torch.dtype
    steps: np.ndarray
    epochs: np.ndarray

    def read(self, start: int, stop: int, out: Tensor) -> None:
        """Copy rows ``[start, stop)`` into ``out`` of shape ``(stop - start, D)``."""
        raise NotImplementedError

    def buffers(self, start: int, stop: int) -> list[dict[str, Tensor]] | None:
        """The buffers stored with rows ``[start, stop)`` (BatchNorm statistics), or ``None`` when a row has none."""
        return None


class _MatrixRows(_Rows):
    def __init__(self, mat: Tensor) -> None:
        self.mat = mat
        self.n, self.dim = mat.shape
        self.dtype = mat.dtype
        self.steps = np.arange(self.n, dtype=np.int64)
        self.epochs = np.full(self.n, np.nan)

    def read(self, start: int, stop: int, out: Tensor) -> None:
        out.copy_(self.mat[start:stop])


class _ListRows(_Rows):
    def __init__(
        self, vecs: Sequence[Tensor], steps: np.ndarray, epochs: np.ndarray, bufs: Sequence[Any] | None = None
    ) -> None:
        dims = {v.shape[0] for v in vecs}
        if len(dims) > 1:
            raise ValueError(f"the snapshots have different dimensions {sorted(dims)}; PCA needs one parameter space")
        self.vecs = list(vecs)
        self.n, self.dim = len(vecs), dims.pop()
        self.dtype = vecs[0].dtype
        for v in vecs[1:]:
            self.dtype = torch.promote_types(self.dtype, v.dtype)
        self.steps, self.epochs = steps, epochs
        self.stored: list[dict[str, Tensor] | None] = list(bufs) if bufs is not None else [None] * self.n

    def read(self, start: int, stop: int, out: Tensor) -> None:
        for r, i in enumerate(range(start, stop)):
            out[r].copy_(self.vecs[i])

    def buffers(self, start: int, stop: int) -> list[dict[str, Tensor]] | None:
        rows = self.stored[start:stop]
        return [r for r in rows if r] if all(rows) else None


class _TrajectoryRows(_Rows):
    """Rows of a :class:`~landscape.trajectory.store.Trajectory` (or anything with ``vectors``, ``segments``)."""

    def __init__(self, traj: Any, segment: int | None) -> None:
        segs, segment = list(traj.segments), segment_index(segment)
        if not segs:
            raise ValueError(f"{traj!r} is empty")
        if segment is not None:
            if not -len(segs) <= segment < len(segs):
                raise ValueError(f"segment {segment} does not exist; {traj!r} has {len(segs)} segments")
            segs = [segs[segment]]
        dims = {s.layout.numel for s in segs}
        if len(dims) > 1:
            ranges = ", ".join(f"{s.index}: [{s.start}, {s.stop}) D={s.layout.numel}" for s in segs)
            raise ValueError(
                f"{traj!r} has segments with different parameter counts ({ranges}); PCA needs one parameter "
                "space: pass segment=k"
            )
        self.traj = traj
        self.index = np.concatenate([np.arange(s.start, s.stop) for s in segs]).astype(np.int64)
        self.n, self.dim = len(self.index), dims.pop()
        self._first = traj.vectors([int(self.index[0])])[0]  # cached: the fit reads it again as its reference
        self.dtype = self._first.dtype
        self.steps = np.asarray(traj.steps)[self.index]
        self.epochs = np.asarray(traj.epochs, dtype=np.float64)[self.index]

    def read(self, start: int, stop: int, out: Tensor) -> None:
        for r, k in enumerate(range(start, stop)):
            # one snapshot at a time, without the stacked copy vectors() would make
            out[r].copy_(self._first if k == 0 else self.traj[int(self.index[k])].vector)

    def buffers(self, start: int, stop: int) -> list[dict[str, Tensor]] | None:
        rows = [self.traj[int(self.index[k])].buffers for k in range(start, stop)]
        return rows if all(rows) else None


def _is_trajectory(x: Any) -> bool:
    return hasattr(x, "vectors") and hasattr(x, "segments") and hasattr(x, "__len__")


def _as_rows(x: Any, segment: int | None) -> _Rows:
    if _is_trajectory(x):
        return _TrajectoryRows(x, segment)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, Tensor):
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2:
            raise ValueError(f"a snapshot matrix must have shape (T, D), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"snapshot vectors must be floating point, got {x.dtype}")
        return _MatrixRows(x.detach())
    if hasattr(x, "vector"):  # a single Snapshot
        x = [x]
    if isinstance(x, Sequence) and x and all(hasattr(s, "vector") or isinstance(s, Tensor | np.ndarray) for s in x):
        # numpy (D,) vectors too (a result's center, say): the message below listed them and refused them
        vecs = [s.vector if hasattr(s, "vector") else torch.as_tensor(s) for s in x]
        if any(not v.is_floating_point() for v in vecs):
            raise TypeError(f"snapshot vectors must be floating point, got {sorted({str(v.dtype) for v in vecs})}")
        if any(v.dim() != 1 for v in vecs):
            raise ValueError("a list of snapshots must hold flat (D,) vectors")
        steps = np.array([getattr(s, "step", i) for i, s in enumerate(x)], dtype=np.int64)
        epochs = np.array([getattr(s, "epoch", np.nan) for s in x], dtype=np.float64)
        return _ListRows([v.detach() for v in vecs], steps, epochs, [getattr(s, "buffers", None) for s in x])
    raise TypeError(
        f"cannot read snapshots from a {type(x).__name__}; pass a Trajectory, a (T, D) tensor or array, "
        "a list of (D,) vectors or Snapshots, or a list of those for several trajectories"
    )


def _is_collection(x: Any) -> bool:
    """True for a list of several trajectory-likes (as opposed to one list of snapshots)."""
    if not isinstance(x, list | tuple) or not x:
        return False
    return all(_is_trajectory(e) or (isinstance(e, Tensor | np.ndarray) and e.ndim == 2) for e in x)


class SnapshotStack:
    """Several row sources read as one stacked ``(T, D)`` matrix."""

    def __init__(self, x: Any, segment: int | None) -> None:
        parts = [_as_rows(e, segment) for e in (x if _is_collection(x) else [x])]
        dims = {p.dim for p in parts}
        if len(dims) > 1:
            raise ValueError(f"the trajectories have different dimensions {sorted(dims)}; PCA needs one weight space")
        self.parts = parts
        self.dim = dims.pop()
        self.lengths = [p.n for p in parts]
        self.n = sum(self.lengths)
        self.offsets = np.cumsum([0, *self.lengths])
        dt = parts[0].dtype
        for p in parts[1:]:
            dt = torch.promote_types(dt, p.dtype)
        self.dtype = torch.promote_types(dt, torch.float32)  # bf16/fp16 blocks would lose precision

    def read(self, start: int, stop: int, out: Tensor | None = None) -> Tensor:
        """Rows ``[start, stop)`` of the stack, shape ``(stop - start, D)``, in ``self.dtype``."""
        if out is None:
            out = torch.empty(stop - start, self.dim, dtype=self.dtype)
        out = out[: stop - start]
        for k, p in enumerate(self.parts):
            a, b = max(start, int(self.offsets[k])), min(stop, int(self.offsets[k + 1]))
            if a < b:
                p.read(a - int(self.offsets[k]), b - int(self.offsets[k]), out[a - start : b - start])
        return out

    def buffers(self, start: int, stop: int) -> list[dict[str, Tensor]] | None:
        """The buffers stored with rows ``[start, stop)`` (snapshots'), or ``None`` when a row has none."""
        out: list[dict[str, Tensor]] = []
        for k, p in enumerate(self.parts):
            a, b = max(start, int(self.offsets[k])), min(stop, int(self.offsets[k + 1]))
            if a < b:
                rows = p.buffers(a - int(self.offsets[k]), b - int(self.offsets[k]))
                if rows is None:
                    return None
                out += rows
        return out

    def blocks(self, size: int, progress: bool = False, desc: str = "") -> Iterator[tuple[int, int, Tensor]]:
        """``(start, stop, rows)`` of consecutive blocks of ``size`` rows (one reused buffer: copy to keep)."""
        buf = torch.empty(min(size, self.n), self.dim, dtype=self.dtype)
        for a in tqdm(range(0, self.n, size), disable=not progress, desc=desc, leave=False):
            b = min(a + size, self.n)
            yield a, b, self.read(a, b, buf)

    def meta(self, name: str) -> np.ndarray:
        """A per-snapshot field (``"steps"``, ``"epochs"``) of every part, stacked: ``(T,)``."""
        return np.concatenate([getattr(p, name) for p in self.parts])

    @property
    def run(self) -> np.ndarray:
        """``(T,)`` index of the part (trajectory) each row belongs to."""
        return np.repeat(np.arange(len(self.parts)), self.lengths)


class Workspace:
    """Reused float64 buffers holding column panels of blocks minus a reference point.

    Blocks stay in their stored dtype; each product works on float64 panels converted into these
    preallocated buffers, which keeps the arithmetic in float64 without fresh large temporaries
    (their allocation and page faults otherwise dominate the streamed passes).
    """

    def __init__(self, dim: int, rows: Sequence[int]) -> None:
        self.dim = dim
        self.width = int(min(dim, max(1024, WORKSPACE_ELEMENTS // max(1, sum(rows)))))
        self.bufs = [torch.empty(r, self.width, dtype=torch.float64) for r in rows]

    def panels(self) -> Iterator[slice]:
        """Column slices of at most ``width`` columns covering ``[0, D)``."""
        for a in range(0, self.dim, self.width):
            yield slice(a, min(a + self.width, self.dim))

    def shifted(self, slot: int, block: Tensor, ref: Tensor, cols: slice) -> Tensor:
        """``block[:, cols] - ref[cols]`` in float64, shape ``(rows, len(cols))``, in buffer ``slot``."""
        out = self.bufs[slot][: block.shape[0], : cols.stop - cols.start]
        return torch.sub(block[:, cols], ref[cols], out=out)


def row_sqnorms(y: Tensor) -> Tensor:
    """Squared norms of the rows of ``y`` (no temporary of ``y``'s size)."""
    return torch.linalg.vector_norm(y, dim=1).square()


def stream_distances(
    src: SnapshotStack, block_size: int, ref_of: Callable[[int], Tensor], progress: bool
) -> np.ndarray:
    """``||x_t - ref_of(t)||`` for every stacked row ``t``, streamed; ``ref_of(t)`` is a float64 ``(D,)``."""
    out = np.zeros(src.n)
    ws = Workspace(src.dim, [1])
    for a, b, blk in src.blocks(block_size, progress, "norms"):
        for i in range(b - a):
            ref = ref_of(a + i)
            sq = sum(float(row_sqnorms(ws.shifted(0, blk[i : i + 1], ref, c))) for c in ws.panels())
            out[a + i] = math.sqrt(sq)
    return out


def refuse_nonfinite(src: SnapshotStack, rows: Sequence[int] | None = None, argname: str = "X") -> None:
    """Name the snapshots holding NaN/inf (and their parameters, for trajectories); only on the error path.

    Args:
        src: The snapshots.
        rows: The stacked rows to look at (default all).
        argname: The argument the snapshots came from, as the caller's user knows it.

    Raises:
        InputError: Always: naming the first five non-finite snapshots (index, step, counts, tensors), or saying
            the snapshots are finite but their squared distances overflow.
    """
    bad = []
    row = torch.empty(1, src.dim, dtype=src.dtype)
    for i in range(src.n) if rows is None else rows:
        what = describe_nonfinite(src.read(i, i + 1, row)[0])
        if what is None:
            continue
        k = int(np.searchsorted(src.offsets, i, side="right")) - 1
        part, local = src.parts[k], i - int(src.offsets[k])
        names = ""
        if isinstance(part, _TrajectoryRows):
            pos = int(part.index[local])
            seg = next(sg for sg in part.traj.segments if sg.start <= pos < sg.stop)
            fin = torch.isfinite(row[0])
            names = " in " + ", ".join(repr(sp.name) for sp in seg.layout.specs if not bool(fin[sp.slice].all()))
        run = f"trajectory {k}, " if len(src.parts) > 1 else ""
        bad.append(f"snapshot {i} ({run}step {int(src.meta('steps')[i])}): {what}{names}")
        if len(bad) == 5:
            bad.append("...")
            break
    if not bad:
        raise InputError(
            f"{argname}: the snapshots are finite but their squared distances overflow; rescale them (float64?)"
        )
    raise InputError(
        f"{argname} holds non-finite snapshots: {'; '.join(bad)}. Expected finite weights: drop those snapshots (a "
        "diverged run?) or use the ones before."
    )
