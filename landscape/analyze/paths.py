"""What is measured along training paths: their projection on the PCA plane, distances, the loss at points.

:class:`ProjectedPath` is the result of :meth:`~landscape.analyze.pca.TrajectoryPCA.project`; the distances
are Lipton 2016's Fig. 2-3 ("Stuck in a what? Adventures in weight space"); :func:`make_loss_at` is the
default loss evaluator a projection calls at the snapshots and at their projections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.analyze.snapshots import SnapshotStack, refuse_nonfinite, stream_distances
from landscape.problem import Problem
from landscape.results import Provenance, Result, register_result

__all__ = ["ProjectedPath", "distance_from_origin", "distance_from_init", "pairwise_end_distances", "make_loss_at"]

LossAt = Callable[[Tensor], Tensor]


@register_result
@dataclasses.dataclass(frozen=True)
class ProjectedPath(Result):
    """Trajectories projected on the PCA plane, with what the plane cannot show.

    Attributes:
        coordinates: ``(T, 2)`` coordinates ``(x, y)``: the projection is ``center + x d1 + y d2``.
        displacement: ``(T,)`` distance of each snapshot from the centre.
        off_plane: ``(T,)`` norm of the part of the displacement orthogonal to the plane.
        off_plane_ratio: ``(T,)`` ``off_plane / displacement`` (0 at the centre itself).
        run: ``(T,)`` index of the trajectory each snapshot belongs to.
        steps: ``(T,)`` optimizer steps (row numbers for plain matrices).
        epochs: ``(T,)`` epochs (NaN for plain matrices).
        explained_variance_ratio: ``(2,)`` variance shares of the two axes.
        true_loss: ``(T,)`` loss at each snapshot, or ``None``.
        plane_loss: ``(T,)`` loss at each snapshot's projection on the plane, or ``None``.
        center: How the PCA was centred (``"mean"``, ``"last"``, ``"index 3"``, ``"vector"``).
        provenance: Where the result came from.
    """

    _dims = {
        "coordinates": ("snapshot", "xy"),
        "displacement": ("snapshot",),
        "off_plane": ("snapshot",),
        "off_plane_ratio": ("snapshot",),
        "run": ("snapshot",),
        "steps": ("snapshot",),
        "epochs": ("snapshot",),
        "explained_variance_ratio": ("xy",),
        "true_loss": ("snapshot",),
        "plane_loss": ("snapshot",),
    }
    _coords = {"run": "run", "steps": "step", "epochs": "epoch"}
    _table = ("snapshot",)

    def _thumbnail_data(self) -> tuple[Any, ...] | None:
        if len(self.coordinates) == 0:
            return None
        return ("path", self.split("coordinates"))

    coordinates: np.ndarray
    displacement: np.ndarray
    off_plane: np.ndarray
    off_plane_ratio: np.ndarray
    run: np.ndarray
    steps: np.ndarray
    epochs: np.ndarray
    explained_variance_ratio: np.ndarray
    true_loss: np.ndarray | None = None
    plane_loss: np.ndarray | None = None
    center: str = "mean"
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    @property
    def median_off_plane_ratio(self) -> float:
        """Median share of a snapshot's displacement that lies off the plane."""
        return float(np.median(self.off_plane_ratio))

    def split(self, field: str = "coordinates") -> list[np.ndarray]:
        """One array per trajectory of a per-snapshot field (e.g. ``"coordinates"`` -> list of ``(T_i, 2)``)."""
        values = getattr(self, field)
        if values is None:
            raise ValueError(f"{field} was not computed")
        return [values[self.run == r] for r in np.unique(self.run)]


def distance_from_origin(X: Any, *, segment: int | None = None, block_size: int = 16) -> np.ndarray:
    """Euclidean norm of every snapshot, ``||x_t||`` (Lipton Fig. 3a).

    Args:
        X: One or several trajectories, as for :meth:`TrajectoryPCA.fit` (several are stacked).
        segment: Segment to read from multi-segment trajectories.
        block_size: Snapshots in memory at a time.

    Returns:
        Numpy float64 ``(T,)``.

    Raises:
        InputError: If a snapshot holds NaN/inf (naming it, its step and its tensors).
    """
    src = SnapshotStack(X, segment)
    zero = torch.zeros(src.dim, dtype=torch.float64)
    return _finite(stream_distances(src, block_size, lambda t: zero, False), src)


def _finite(out: np.ndarray, src: SnapshotStack) -> np.ndarray:
    """``out``, after refusing the snapshots behind a non-finite distance (a NaN snapshot gave a silent NaN)."""
    if not np.isfinite(out).all():
        refuse_nonfinite(src)
    return out


def distance_from_init(X: Any, *, segment: int | None = None, block_size: int = 16) -> np.ndarray:
    """Distance of every snapshot from the first snapshot of its own trajectory, ``||x_t - x_0||``.

    Args:
        X: One or several trajectories (each measured from its own first snapshot; results stacked).
        segment: Segment to read from multi-segment trajectories.
        block_size: Snapshots in memory at a time.

    Returns:
        Numpy float64 ``(T,)``.

    Raises:
        InputError: If a snapshot holds NaN/inf (naming it, its step and its tensors).
    """
    src = SnapshotStack(X, segment)
    inits = [src.read(int(o), int(o) + 1)[0].to(torch.float64) for o in src.offsets[:-1]]
    run = src.run
    return _finite(stream_distances(src, block_size, lambda t: inits[int(run[t])], False), src)


def pairwise_end_distances(trajectories: Sequence[Any], *, segment: int | None = None) -> np.ndarray:
    """Euclidean distances between the final snapshots of several trajectories (Lipton Fig. 2-3).

    Args:
        trajectories: ``n`` trajectories (or ``(T_i, D)`` matrices, or final ``(D,)`` vectors).
        segment: Segment to read from multi-segment trajectories (default: the last snapshot, whatever its segment).

    Returns:
        Numpy float64 ``(n, n)``, symmetric with a zero diagonal.

    Raises:
        ValueError: If the trajectories live in different parameter spaces.
        InputError: If a final snapshot holds NaN/inf (naming the trajectory, the snapshot and its tensors).
    """
    ends = []
    for k, t in enumerate(trajectories):
        # a trajectory's final snapshot is its last segment's: the earlier ones may have other dimensions (a grown
        # network), which a stack of every segment refuses
        last = -1 if segment is None and hasattr(t, "segments") and hasattr(t, "vectors") else segment
        src = SnapshotStack(t, last)
        ends.append(src.read(src.n - 1, src.n)[0].to(torch.float64))
        if not bool(torch.isfinite(ends[-1]).all()):  # a silent NaN row and column of the distances otherwise
            refuse_nonfinite(src, [src.n - 1], f"trajectories[{k}]")
    dims = {e.shape[0] for e in ends}
    if len(dims) > 1:
        raise ValueError(f"the final snapshots have different dimensions {sorted(dims)}")
    n = len(ends)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = float((ends[i] - ends[j]).norm())
    return out


def make_loss_at(
    problem: Problem | nn.Module,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    *,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: str = "auto",
    bn_mode: str | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    progress: bool = False,
) -> LossAt:
    """A ``loss_at(vectors (n, D)) -> (n,)`` giving the mean loss over the data at each point.

    Goes through the evaluation engine, :func:`landscape.evaluate.points.evaluate_points` (default: eval
    mode with the model's own buffers, i.e. BatchNorm running statistics); the model is never modified.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the architecture (its parameters are replaced by
            each point) with ``data`` and ``loss_fn``.
        data: Shorthand only: a tensor pair ``(X (N, ...), y (N,))`` or an iterable of such batches (read
            once here).
        loss_fn: Shorthand only: batch-mean loss, ``"cross_entropy"`` / ``"mse"``, or ``None`` for the
            default (cross-entropy for integer targets, MSE otherwise).
        batch_size: Micro-batch size of the evaluation.
        chunk_size: Points evaluated together.
        memory_budget: Bytes (or ``"512MB"``) for the evaluation.
        strategy: Evaluation strategy.
        bn_mode: ``"eval"``, ``"train"``; default the problem's.
        buffers: Buffers to use instead of the model's own.
        progress: Show a progress bar per call.

    Returns:
        The callable, returning a float64 tensor ``(n,)``.
    """
    from landscape.evaluate.points import evaluate_points
    from landscape.problem import as_problem

    prob = as_problem(problem, data, loss_fn)

    def loss_at(points: Tensor) -> Tensor:
        out = evaluate_points(
            prob,
            points,
            metrics=("loss",),
            batch_size=batch_size,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            strategy=strategy,
            bn_mode=bn_mode,
            buffers=buffers,
            progress=progress,
        )
        return torch.from_numpy(np.asarray(out["loss"], dtype=np.float64))

    return loss_at
