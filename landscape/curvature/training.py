"""Hessian curvature along training: at every snapshot of a trajectory, or recorded while training.

* :func:`trajectory_curvature` streams the snapshots of a :class:`~landscape.trajectory.store.Trajectory` (one
  model in memory at a time) and computes the top-``k`` Hessian eigenvalues of the full-data loss at each,
  optionally the trace (Hutch++) and the top eigenvalue of each layer's diagonal block. Lanczos starts from
  the previous snapshot's eigenvectors (a warm start: consecutive snapshots have close Hessians), with the
  same residual stopping rule as a cold start, so only the number of Hessian-vector products changes.
* :class:`CurvatureRecorder` is a :class:`~landscape.train.loop.RecordTrajectory` that computes the same at every
  snapshot it records (every ``k`` steps), writing ``lambda_max`` and friends into the snapshot's metrics.
* :func:`gradient_descent_curvature` runs full-batch gradient descent with the recorder: the experiment of
  Cohen et al. 2021, *Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability* (ICLR),
  where the top eigenvalue rises ("progressive sharpening") until it reaches ``2 / lr`` and then hovers there.

All return a :class:`CurvatureTrace`; :func:`landscape.plot.curves.plot_sharpness` draws it with the ``2 / lr``
line. The Hessian is of the eval-mode function by default (BatchNorm running statistics, Dropout off), as
in :func:`landscape.hessian_spectrum`; models are never modified. The measurement at each point, with its
warm start, is :class:`~landscape.curvature.tracker.CurvatureTracker`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape._options import keyword_values, shows_keywords
from landscape.curvature.options import CURVATURE_DEFAULTS as _DEFAULTS
from landscape.curvature.options import CurvatureOptions
from landscape.curvature.tracker import CurvatureTracker
from landscape.problem import Problem
from landscape.results import Provenance, Result, register_result
from landscape.train.callbacks import RecordTrajectory
from landscape.train.loop import Trainer
from landscape.trajectory.store import Trajectory

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "CurvatureTrace",
    "trajectory_curvature",
    "CurvatureRecorder",
    "gradient_descent_curvature",
    "edge_of_stability_summary",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


@register_result
@dataclasses.dataclass(frozen=True, eq=False)
class CurvatureTrace(Result):
    """Hessian curvature at a sequence of points of one training run.

    Attributes:
        steps: Optimizer step of each point, shape ``(T,)``.
        epochs: Epoch of each point, shape ``(T,)``.
        indices: Snapshot index in the trajectory, shape ``(T,)`` (``-1`` where none was written).
        eigenvalues: Top-``k`` eigenvalues (largest first), shape ``(T, k)``.
        error_bounds: Their error bounds (see :class:`landscape.curvature.eigensolver.EigenPairs`), shape ``(T, k)``.
        residuals: Residual norms ``||H v - lambda v||``, shape ``(T, k)``.
        converged: Whether every residual met the tolerance (the top-k's, and with ``per_layer`` each layer's), shape
            ``(T,)``.
        hvps: Hessian-vector products spent at each point (eigenpairs, layers and trace), shape ``(T,)``.
        trace: Hutch++ trace estimate, shape ``(T,)`` (NaN when not computed).
        trace_stderr: Its standard error, shape ``(T,)``.
        layer_names: Layers whose diagonal Hessian block was analyzed (empty unless asked).
        layer_eigenvalues: Top eigenvalue of each layer's block, shape ``(T, L)``.
        lr: Learning rate at each point, shape ``(T,)`` (NaN when unknown); ``2 / lr`` is the stability
            threshold of gradient descent on a quadratic.
        k: Number of eigenvalues per point.
        tol: Relative residual tolerance of the Lanczos stopping rule.
        warm_start: Whether Lanczos started from the previous point's eigenvectors.
        bn_mode: BatchNorm mode of the Hessian.
        label: Run name (legend entry).
        provenance: Seed, data, options, and what was computed: ``extra["dtype"]`` of the products,
            ``extra["model_dtype"]``, ``extra["reduction"]``, ``extra["batchnorm"]``, ``extra["notes"]`` (see
            :meth:`~landscape.curvature.tracker.CurvatureTracker.provenance`).
    """

    _dims = {
        "steps": ("point",),
        "epochs": ("point",),
        "indices": ("point",),
        "eigenvalues": ("point", "rank"),
        "error_bounds": ("point", "rank"),
        "residuals": ("point", "rank"),
        "converged": ("point",),
        "hvps": ("point",),
        "trace": ("point",),
        "trace_stderr": ("point",),
        "layer_eigenvalues": ("point", "layer"),
        "lr": ("point",),
    }
    _coords = {"steps": "step", "epochs": "epoch", "indices": "index"}
    _labels = {"layer_names": "layer"}
    _table = ("point",)

    def _thumbnail_data(self) -> tuple[Any, ...] | None:
        if self.eigenvalues.size == 0:
            return None
        return ("lines", self.steps, list(self.eigenvalues.T), "step", "top eigenvalues")

    steps: np.ndarray
    epochs: np.ndarray
    indices: np.ndarray
    eigenvalues: np.ndarray
    error_bounds: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    hvps: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    layer_names: list[str]
    layer_eigenvalues: np.ndarray
    lr: np.ndarray
    k: int
    tol: float
    warm_start: bool
    bn_mode: str
    label: str = ""
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    @property
    def lambda_max(self) -> np.ndarray:
        """Top eigenvalue at each point, shape ``(T,)``."""
        return self.eigenvalues[:, 0]

    @property
    def threshold(self) -> np.ndarray:
        """``2 / lr`` at each point, shape ``(T,)`` (NaN where the learning rate is unknown)."""
        with np.errstate(divide="ignore"):
            return 2.0 / self.lr

    @property
    def total_hvps(self) -> int:
        """Hessian-vector products over the whole trace."""
        return int(self.hvps.sum())

    def __len__(self) -> int:
        return len(self.steps)


def _trace_of(
    tracker: CurvatureTracker,
    steps: Sequence[int] | np.ndarray,
    epochs: Sequence[float] | np.ndarray,
    indices: Sequence[int],
    lr: Sequence[float] | np.ndarray,
    label: str,
    provenance: Provenance,
) -> CurvatureTrace:
    """The tracker's rows so far as a :class:`CurvatureTrace` at the given points (one per row)."""
    rows = tracker.rows
    T = len(rows)
    layers = np.full((T, len(tracker.layer_names)), np.nan)
    for t, r in enumerate(rows):
        for j, name in enumerate(tracker.layer_names):
            layers[t, j] = r["layers"].get(name, np.nan)
    stack = lambda key: np.stack([r[key] for r in rows]) if rows else np.zeros((0, tracker.k))  # noqa: E731
    return CurvatureTrace(
        steps=np.asarray(steps, dtype=np.int64),
        epochs=np.asarray(epochs, dtype=np.float64),
        indices=np.asarray(indices, dtype=np.int64),
        eigenvalues=stack("values"),
        error_bounds=stack("bounds"),
        residuals=stack("residuals"),
        converged=np.array([r["converged"] for r in rows], dtype=bool),
        hvps=np.array([r["hvps"] for r in rows], dtype=np.int64),
        trace=np.array([r["trace"] for r in rows], dtype=np.float64),
        trace_stderr=np.array([r["trace_stderr"] for r in rows], dtype=np.float64),
        layer_names=list(tracker.layer_names),
        layer_eigenvalues=layers,
        lr=np.asarray(lr, dtype=np.float64),
        k=tracker.k,
        tol=tracker.tol,
        warm_start=tracker.warm_start,
        bn_mode=tracker.bn_mode.value,
        label=label,
        provenance=provenance,
    )


def _lr_metric(traj: Trajectory, metric_prefix: str | None) -> str | None:
    """The recorded learning rate's name (see :func:`trajectory_curvature`'s ``metric_prefix``), or ``None``.

    Raises:
        ValueError: If ``metric_prefix`` is given and ``<metric_prefix>lr`` was not recorded, or several
            recorders' prefixes are and none was chosen.
    """
    names = traj.metric_names
    if metric_prefix is not None:
        if f"{metric_prefix}lr" not in names:
            raise ValueError(
                f"metric_prefix={metric_prefix!r}: the trajectory has no metric {metric_prefix + 'lr'!r}; "
                f"the metrics recorded are {names}"
            )
        return f"{metric_prefix}lr"
    if "lr" in names:
        return "lr"
    found = [
        n[: -len("lambda_max")] for n in names if n.endswith("lambda_max") and f"{n[: -len('lambda_max')]}lr" in names
    ]
    if len(found) > 1:
        raise ValueError(
            f"the trajectory has the learning rates of several curvature recorders ({[f + 'lr' for f in found]}): "
            f"pass metric_prefix= (one of {found}) or lr="
        )
    return f"{found[0]}lr" if found else None


def _lrs(
    lr: float | Sequence[float] | None, traj: Trajectory, idx: list[int], metric_prefix: str | None = None
) -> np.ndarray:
    if lr is None:
        name = _lr_metric(traj, metric_prefix)
        return np.full(len(idx), np.nan) if name is None else traj.metric(name)[idx]
    if isinstance(lr, int | float):
        return np.full(len(idx), float(lr))
    out = np.asarray(lr, dtype=np.float64)
    if out.shape != (len(idx),):
        raise ValueError(f"lr must be a number or one value per analyzed snapshot ({len(idx)}), got {out.shape}")
    return out


# =========================================================================== along a trajectory
@shows_keywords(CurvatureOptions, _DEFAULTS)
def trajectory_curvature(
    trajectory: Trajectory,
    model: Problem | nn.Module | Callable[[], nn.Module],
    loss_fn: LossFn | None = None,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
    *,
    indices: Sequence[int] | None = None,
    lr: float | Sequence[float] | None = None,
    metric_prefix: str | None = None,
    label: str = "",
    data_description: str = "",
    progress: bool = False,
    **options: Unpack[CurvatureOptions],
) -> CurvatureTrace:
    """Top Hessian eigenvalues (and optionally trace and per-layer top eigenvalues) at every snapshot.

    Snapshots are read one at a time (:meth:`Trajectory.model_at`), so memory holds one model and one
    Hessian operator. Each Lanczos run is warm-started from the previous snapshot's eigenvectors
    (``warm_start=True``) and stops on the same residual rule as a cold start
    (``||H v - lambda v|| <= tol ||H||``), so eigenvalues agree with cold starts within the error bounds.

    Args:
        trajectory: The snapshots.
        model: A :class:`~landscape.problem.Problem` whose model is the template (its data and loss are
            used; read once for all snapshots), or a template of the snapshots' architecture (deep-copied,
            never modified) or a zero-argument factory; frozen parameters (and buffers when the snapshots
            stored none) come from it.
        loss_fn: With a template: batch-mean (or batch-sum) loss ``loss_fn(outputs, targets) -> scalar``;
            ``None``: cross-entropy for integer targets, MSE otherwise.
        data: With a template: a pair ``(X, y)`` or an iterable of ``(X, y)`` batches: the loss whose Hessian
            is taken.
        indices: Snapshots to analyze (default all, in order; negative indices allowed).
        lr: Learning rate (one number, or one per analyzed snapshot) for the ``2 / lr`` line; default the
            trajectory's ``"<metric_prefix>lr"`` metric if recorded, else unknown.
        metric_prefix: The prefix of the recorded learning rate's name (a :class:`CurvatureRecorder`'s
            ``metric_prefix``); default ``"lr"`` if recorded, else the ``<p>lr`` a recorder wrote beside its
            ``<p>lambda_max`` (an error when several recorders' are).
        label: Run name for legends.
        data_description: Text for the provenance.
        progress: Show a progress bar over snapshots (default quiet, as every analyzer).
        **options: What is measured at each snapshot (:class:`CurvatureOptions`): ``k``, ``tol``,
            ``warm_start``, ``extrapolate``, ``per_layer``, ``trace_products``, ``max_steps``, ``block``, ``certify``,
            ``bn_mode``, ``dtype``, ``seed``.

    Returns:
        The curvature at each analyzed snapshot.

    Raises:
        ValueError: On ``k < 1``, a non-positive ``tol``, a template that does not fit a snapshot, or a
            ``metric_prefix`` whose learning rate was not recorded.
        InputError: On invalid data or weights (see :mod:`landscape.validation`).
    """
    T = len(trajectory)
    idx = list(range(T)) if indices is None else [int(i) % T if -T <= int(i) < T else int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < T]
    if bad:
        raise IndexError(f"snapshot indices {bad} out of range for a trajectory of {T} snapshots")
    tracker_data: Any = data  # the data, or the Problem itself
    if isinstance(model, Problem):
        if loss_fn is not None or data is not None:
            raise TypeError("model is a Problem, which holds its data and loss; pass neither loss_fn nor data")
        model, tracker_data = model.model, model
    elif data is None:
        raise TypeError("trajectory_curvature needs a Problem, or a model template with data (and loss_fn)")
    tracker = CurvatureTracker(
        loss_fn, tracker_data, **keyword_values("trajectory_curvature", options, CurvatureOptions, _DEFAULTS)
    )
    lrs = _lrs(lr, trajectory, idx, metric_prefix)  # before the work: a wrong prefix fails now
    steps, epochs = trajectory.steps, trajectory.epochs
    for i in tqdm(idx, desc="curvature", disable=not progress, leave=False):
        snapshot_model = trajectory.model_at(model, i)  # a private copy: the template is never written
        with torch.random.fork_rng(devices=[]):
            tracker(snapshot_model, float(steps[i]))
        del snapshot_model
    prov = tracker.provenance(data_description, model=type(model).__name__, trajectory=repr(trajectory))
    return _trace_of(tracker, steps[idx], epochs[idx], idx, lrs, label, prov)


# =========================================================================== during training
class _Discard:
    """A trajectory stand-in that stores nothing (the recorder then keeps only its trace)."""

    def append_model(self, model: nn.Module, **kwargs: Any) -> int:
        return -1


class CurvatureRecorder(RecordTrajectory):
    """Record snapshots with their Hessian curvature every ``every_steps`` steps during training.

    A :class:`~landscape.train.loop.RecordTrajectory` (initial point, schedule, events, final point) whose every
    snapshot also carries, in its metrics: ``lambda_max`` (top eigenvalue), ``lambda_2`` ... ``lambda_k``,
    ``lr`` (the first parameter group's learning rate), ``hessian_hvps``, and if asked ``hessian_trace``
    and ``lambda_max/<layer>`` (names prefixed by ``metric_prefix``). The same values accumulate in
    :attr:`trace_`. Use it *instead of* the trainer's own recorder (do not also pass ``trajectory=`` to the
    :class:`~landscape.train.loop.Trainer`). Curvature is computed on a copy of the trained model's weights
    under a forked RNG, so training is bitwise the same with or without the recorder.

    Args:
        trajectory: Where snapshots go (a :class:`~landscape.trajectory.store.Trajectory`); ``None`` keeps only
            :attr:`trace_`.
        data: Data of the loss whose Hessian is taken, or a :class:`~landscape.problem.Problem` (its data, loss,
            ``bn_mode`` and dtype); default the :class:`~landscape.problem.Problem` the
            :class:`~landscape.train.loop.Trainer` was built from (its ``bn_mode``, loss and data), else the
            trainer's training data.
        loss_fn: Its batch-mean loss; default the trainer's (or its problem's).
        every_steps: Record every this many optimizer steps.
        every_epochs: Also record every this many epochs (default not: full-batch steps are epochs).
        metric_prefix: Prefix of the metric names.
        tags: Tags of every snapshot.
        label: Run name of :attr:`trace_`.
        **options: What is measured at each snapshot (:class:`CurvatureOptions`), as for
            :func:`trajectory_curvature`.

    Example:
        >>> X, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
        >>> rec = CurvatureRecorder(every_steps=5)
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> opt = lambda p: torch.optim.SGD(p, lr=0.1)
        >>> _ = Trainer(net, (X, y), nn.functional.cross_entropy, opt, steps=10, callbacks=[rec]).fit()
        >>> rec.trace_.steps.tolist()
        [0, 5, 10]
    """

    @shows_keywords(CurvatureOptions, _DEFAULTS)
    def __init__(
        self,
        trajectory: Any = None,
        data: Any = None,
        loss_fn: LossFn | None = None,
        *,
        every_steps: int = 10,
        every_epochs: int | None = None,
        metric_prefix: str = "",
        tags: Mapping[str, Any] | None = None,
        label: str = "",
        **options: Unpack[CurvatureOptions],
    ) -> None:
        super().__init__(
            _Discard() if trajectory is None else trajectory,
            every_steps=every_steps,
            every_epochs=every_epochs,
            tags=tags,
        )
        self.store = trajectory
        self.data, self.loss_fn = data, loss_fn
        self.options: dict[str, Any] = keyword_values("CurvatureRecorder", options, CurvatureOptions, _DEFAULTS)
        CurvatureTracker(nn.functional.mse_loss, None, **self.options)  # checks the options now, not at the first step
        self.metric_prefix = metric_prefix
        self.label = label
        self._tracker: CurvatureTracker | None = None
        self._steps: list[int] = []
        self._epochs: list[float] = []
        self._indices: list[int] = []
        self._lrs: list[float] = []

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        # A trainer built from a Problem keeps it: its Hessian (bn_mode, loss, dtype) is the one measured, as
        # trajectory_curvature(traj, problem) measures; without it the trainer's data and loss gave eval mode.
        problem = getattr(trainer, "problem", None)
        options = dict(self.options)
        if self.data is None and self.loss_fn is None and problem is not None:
            data, loss_fn = problem, None
        else:
            data = self.data if self.data is not None else trainer.data
            loss_fn = self.loss_fn if self.loss_fn is not None else trainer.loss_fn
            if problem is not None and options["bn_mode"] is None and self.data is None:
                options["bn_mode"] = problem.bn_mode  # another loss on the problem's data: still its bn_mode
        frozen = [n for n, t in trainer.model.named_parameters() if t.is_floating_point() and not t.requires_grad]
        if frozen and options["params"] in (None, "all"):
            warnings.warn(
                f"CurvatureRecorder: the Hessian covers {len(frozen)} frozen parameter tensors ({frozen[:3]}...), "
                "which training does not move; pass params='trainable' for the block that governs the dynamics "
                "(the one to compare with 2 / lr), or params='all' to keep them",
                UserWarning,
                stacklevel=2,
            )
        self._tracker = CurvatureTracker(loss_fn, data, **options)
        self._steps, self._epochs, self._indices, self._lrs = [], [], [], []
        super().on_train_begin(trainer)

    def _record(self, trainer: Trainer, epoch: float, metrics: Mapping[str, float]) -> None:
        assert self._tracker is not None
        with torch.random.fork_rng(devices=[]):
            row = self._tracker(trainer.model, float(trainer.step))
        groups = trainer.optimizer.param_groups
        lr = float(groups[0]["lr"]) if groups and "lr" in groups[0] else math.nan
        p = self.metric_prefix
        extra = {f"{p}lambda_max": float(row["values"][0]), f"{p}lr": lr, f"{p}hessian_hvps": float(row["hvps"])}
        extra.update({f"{p}lambda_{j + 1}": float(v) for j, v in enumerate(row["values"][1:], start=1)})
        if self._tracker.trace_products:
            extra[f"{p}hessian_trace"] = float(row["trace"])
        extra.update({f"{p}lambda_max/{name}": v for name, v in row["layers"].items()})
        before = len(self.store) if self.store is not None and hasattr(self.store, "__len__") else -1
        super()._record(trainer, epoch, {**dict(metrics), **extra})
        self._steps.append(trainer.step)
        self._epochs.append(float(epoch))
        self._indices.append(before)
        self._lrs.append(lr)

    @property
    def trace_(self) -> CurvatureTrace:
        """The curvature recorded so far.

        Raises:
            RuntimeError: Before training began.
        """
        if self._tracker is None:
            raise RuntimeError("nothing recorded yet: the recorder measures when training begins")
        prov = self._tracker.provenance("", recorder=True, every_steps=self.every_steps)
        return _trace_of(self._tracker, self._steps, self._epochs, self._indices, self._lrs, self.label, prov)


# =========================================================================== the edge-of-stability run
def gradient_descent_curvature(
    model: Problem | nn.Module,
    loss_fn: LossFn | None = None,
    data: tuple[Tensor, Tensor] | None = None,
    *,
    lr: float,
    steps: int,
    every_steps: int = 10,
    k: int = 1,
    tol: float = 1e-4,
    warm_start: bool = True,
    seed: int = 0,
    trajectory: Trajectory | None = None,
    label: str = "",
    progress: bool = False,
    params: str | Sequence[str] | None = None,
) -> tuple[CurvatureTrace, list[dict[str, float]]]:
    """Full-batch gradient descent with the top Hessian eigenvalue recorded every ``every_steps`` steps.

    The experiment of Cohen et al. 2021 (ICLR), Fig. 1: plain gradient descent (no momentum, no weight
    decay) on the whole training set, sharpness ``lambda_max`` of the training loss against step, with the
    stability threshold ``2 / lr`` of gradient descent on a quadratic. Their finding: ``lambda_max`` rises
    ("progressive sharpening") until it reaches ``2 / lr``, then hovers at or just above it while the loss
    keeps decreasing non-monotonically ("edge of stability").

    Args:
        model: Initial network (never modified; a copy is trained), or a :class:`~landscape.problem.Problem`
            with a tensor pair and an ``(outputs, targets)`` loss (the Hessian is then the problem's, with its
            ``bn_mode``).
        loss_fn: With a network: batch-mean loss (Cohen et al. use both MSE and cross-entropy); default
            cross-entropy for integer targets, MSE otherwise.
        data: With a network: training pair ``(X (N, ...), y (N, ...))``: one full batch per step.
        lr: Learning rate.
        steps: Gradient-descent steps.
        every_steps: Record the curvature every this many steps (plus the first and last point).
        k: Top eigenvalues per record.
        tol: Lanczos tolerance.
        warm_start: Warm-start Lanczos from the previous record.
        seed: Seed of the run.
        trajectory: Where to write the snapshots (default: nowhere, only the trace).
        label: Run name (default ``"lr=<lr>"``).
        progress: Show a progress bar over steps (default quiet, as every analyzer).
        params: The parameters whose Hessian block is measured (:class:`CurvatureOptions`'s ``params``):
            ``"trainable"`` leaves frozen parameters, which gradient descent does not move, out.

    Returns:
        ``(trace, history)``: the curvature trace, and the trainer's per-step history (``train_loss`` at
        the start of each step, ``train_accuracy``).

    Raises:
        ValueError: On a non-positive ``lr`` or ``steps``.
    """
    if not lr > 0 or steps < 1:
        raise ValueError(f"lr and steps must be positive, got lr={lr}, steps={steps}")
    rec = CurvatureRecorder(
        trajectory,
        # a Problem's Hessian (its bn_mode, dtype, loss), as trajectory_curvature takes it; the trainer keeps
        # only its model, data and loss, so the recorder measured the eval-mode loss of a bn_mode="train" problem
        model if isinstance(model, Problem) else None,
        every_steps=every_steps,
        k=k,
        tol=tol,
        warm_start=warm_start,
        seed=seed,
        label=label or f"lr={lr:g}",
        params=params,
    )
    trainer = Trainer(
        model,
        data,
        loss_fn,
        lambda p: torch.optim.SGD(p, lr=lr),
        steps=steps,
        batch_size=None,
        shuffle=False,
        seed=seed,
        callbacks=[rec],
        on_nonfinite="stop",
        progress=progress,
    )
    trainer.fit()
    return rec.trace_, trainer.history_


def edge_of_stability_summary(trace: CurvatureTrace, *, tail: float = 0.25, within: float = 0.1) -> dict[str, float]:
    """Does ``lambda_max`` rise to ``2 / lr`` and hover there? Numbers of one run for Cohen et al.'s claim.

    The ratio ``r_t = lambda_max(t) / (2 / lr_t)`` is 1 at the stability threshold. Cohen et al. 2021 (§3)
    report progressive sharpening (``r`` rising) until ``r`` reaches about 1, then ``r`` hovering at or just
    above 1 for the rest of training.

    Args:
        trace: A run with a known learning rate (e.g. from :func:`gradient_descent_curvature`).
        tail: Fraction of the last records that form the "after" window.
        within: Relative band around the threshold (0.1: ``0.9 <= r <= 1.1``).

    Returns:
        ``initial_ratio`` (``r`` at the first record), ``reached_step`` (first step with
        ``r >= 1 - within``, ``-1`` if never), ``tail_median_ratio``, ``tail_min_ratio``, ``tail_max_ratio``,
        ``tail_share_within`` (share of the tail's records with ``|r - 1| <= within``), and ``settled``
        (1.0 if the tail's median ratio is within the band, else 0.0); NaN records are left out.

    Raises:
        ValueError: If the learning rate is unknown, or ``tail`` is not in ``(0, 1]``.
    """
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    ratio = trace.lambda_max / trace.threshold
    ok = np.isfinite(ratio)
    if not ok.any():
        raise ValueError("no record with both lambda_max and the learning rate: pass lr= or record it")
    r, steps = ratio[ok], trace.steps[ok]
    last = r[len(r) - max(1, int(round(tail * len(r)))) :]
    reached = np.nonzero(r >= 1 - within)[0]
    med = float(np.median(last))
    return {
        "initial_ratio": float(r[0]),
        "reached_step": float(steps[reached[0]]) if len(reached) else -1.0,
        "tail_median_ratio": med,
        "tail_min_ratio": float(last.min()),
        "tail_max_ratio": float(last.max()),
        "tail_share_within": float(np.mean(np.abs(last - 1) <= within)),
        "settled": float(abs(med - 1) <= within),
    }
