"""Measures and premise checks shared by the Im, Tao & Branson figures: sharp rises, convergence, crossings."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from figures.im._memo import memoized, tensor_digest
from figures.im._runs import Run
from figures.verdict import Effect, Premise, Verdict, at_most, converged

# "Sharp rise" between two minima (Table 1, Figs. 2-3, 7): the peak of the loss on the straight segment is at
# least RISE_RATIO times the larger endpoint loss and at least RISE_NATS above it. Fixed before measuring.
RISE_RATIO = 2.0
RISE_NATS = 0.05


def rise(losses: np.ndarray) -> tuple[float, float]:
    """How far the loss on a path between two minima rises above its ends.

    Args:
        losses: ``(n,)`` losses along the path; ``losses[0]`` and ``losses[-1]`` are the minima.

    Returns:
        ``(peak / max(end losses), peak - max(end losses))``; NaN when a value is not finite.
    """
    z = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(z).all():
        return math.nan, math.nan
    end = max(z[0], z[-1])
    peak = float(z.max())
    return peak / end if end > 0 else math.inf, peak - end


def rises(ratio: float, height: float) -> bool:
    """Whether a :func:`rise` counts as a sharp rise (``RISE_RATIO`` and ``RISE_NATS``)."""
    return bool(ratio >= RISE_RATIO and height >= RISE_NATS)


def rise_score(losses: np.ndarray) -> float:
    """The sharp-rise test as one number: ``peak / max(RISE_RATIO * end, end + RISE_NATS)``.

    ``end`` is the larger endpoint loss and ``peak`` the highest loss on the path; the score is at least 1 exactly
    when :func:`rises` holds (peak >= 2x the end and >= 0.05 nats above it), so ``log(score)`` is the signed
    distance from the threshold that the statistics over initializations use. NaN when a value is not finite.
    """
    z = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(z).all():
        return math.nan
    end = max(z[0], z[-1])
    return float(z.max() / max(RISE_RATIO * end, end + RISE_NATS))


def no_difference(p_value: float, effect: Effect, margin: float) -> Verdict:
    """The verdict on a claim of *no* difference between groups (methods, initializations).

    ``not held`` when the groups differ significantly (``p_value < 0.05``); ``held`` when they do not and the
    largest difference's interval (``effect``, e.g. best minus worst group over paired seeds) lies within
    ``+-margin``, so a difference of that size would have been seen; otherwise ``inconclusive`` (too noisy to tell
    "no difference" from "not enough data").
    """
    if not math.isfinite(p_value) or not math.isfinite(effect.ci_low) or not math.isfinite(effect.ci_high):
        return Verdict.INCONCLUSIVE
    if p_value < 0.05:
        return Verdict.NOT_HELD
    if -margin < effect.ci_low and effect.ci_high < margin:
        return Verdict.HELD
    return Verdict.INCONCLUSIVE


def _grad_norm_uncached(model: nn.Module, data: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]) -> float:
    """The computation of :func:`grad_norm` on a fresh model (modified: BatchNorm put in train mode, grads set)."""
    m = model.eval()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.train()
    batches = [data] if isinstance(data, tuple) else list(data)
    n = sum(int(x.shape[0]) for x, _ in batches)
    m.zero_grad(set_to_none=True)
    for x, y in batches:
        (nn.functional.cross_entropy(m(x), y) * (x.shape[0] / n)).backward()
    sq = sum(float(p.grad.double().pow(2).sum()) for p in m.parameters() if p.grad is not None)
    return math.sqrt(sq)


# Which computation a memoized gradient norm came from: a changed grad_norm never reads an old value.
_GRAD_NORM_CODE = hashlib.sha256(inspect.getsource(_grad_norm_uncached).encode()).hexdigest()[:16]
_GRAD_NORMS: dict[str, float] = {}
"""This process's memo of :func:`grad_norm`, by its :func:`~figures.im._memo.tensor_digest`."""


def grad_norm(run: Run, i: int, data: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]) -> float:
    """Full-batch gradient norm of the training loss at snapshot ``i`` of a run, as the surfaces evaluate the loss.

    BatchNorm with batch statistics, dropout off, over ``data`` (the surface images; a list of batches is weighted
    by size). The model is rebuilt from the snapshot: nothing stored changes.

    Memoized, because most Im figures ask it of the same runs (their convergence premise over the pool of 35
    runs) and the runs of one initialization index share their initial weights: by a digest of the network
    (architecture, parameters and buffers), the data, the thread count and the code of :func:`_grad_norm_uncached`
    (:func:`~figures.im._memo.tensor_digest`), in this process and, for a run stored on disk, in ``_grad_norms/``
    beside it in the pool's cache (:func:`~figures.im._memo.memoized`: a damaged file is computed again), so
    every figure of a gallery (either worker) reuses it. A memoized value is the float the computation returned (a
    float's JSON round-trips), so the premises read the same numbers as without the memo.
    """
    m = run.model(i)
    key = tensor_digest(_GRAD_NORM_CODE, m, data)
    where = getattr(run.traj, "path", None)
    file = None if where is None else Path(where).parent / "_grad_norms" / f"{key}.json"
    return float(
        memoized(
            _GRAD_NORMS,
            key,
            lambda: _grad_norm_uncached(m, data),
            file,
            lambda value, tmp: tmp.write_text(json.dumps(value)),
            lambda f: float(json.loads(f.read_text())),
            # the computation changed m (train-mode BatchNorm, gradients) before the write failed: a fresh model
            again=lambda: _grad_norm_uncached(run.model(i), data),
        )
    )


def converged_premise(
    runs: Sequence[Run],
    data: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]],
    what: str = "the runs reached critical points",
    rel_tol: float = 0.01,
) -> Premise:
    """Premise: every run ended at a critical point, the paper's definition of its local minima.

    Im et al. Sec. 3.3: "the critical points found using these variants of SGD, for which the gradient is approximately
    0"; the paper gives no number, the bound ``rel_tol`` is the gallery's. Measured per run: the full-batch gradient
    norm of the training loss at the final weights over that at the initial weights (:func:`grad_norm` on ``data``), at
    most ``rel_tol``; a run stopped early by a non-finite loss fails. The relative change of the training loss over the
    last 10% of epochs (the issue's example criterion, :func:`figures.verdict.converged`) is reported in the detail:
    cross-entropy on data the net fits keeps falling slowly without a minimum, so at losses near 0.01 it stays at a few
    percent per epoch even where the gradient has all but vanished.

    Args:
        runs: The runs the claim rests on.
        data: The surface images.
        what: The premise's statement.
        rel_tol: Largest gradient-norm ratio accepted.
    """
    ratios = []
    for r in runs:
        if not r.completed:
            ratios.append(math.inf)
            continue
        g0, g1 = grad_norm(r, 0, data), grad_norm(r, -1, data)
        ratios.append(g1 / g0 if g0 > 0 else math.inf)
    n = max(len(r.history) for r in runs)
    curves = np.full((len(runs), n), np.nan)
    for i, r in enumerate(runs):
        c = r.curve("surface_loss")
        curves[i, : len(c)] = c
    change = converged(curves, last=0.1, rel_tol=0.01).measured
    change = change if isinstance(change, list) else [change]
    return at_most(
        what,
        ratios,
        rel_tol,
        detail=f"{len(runs)} runs: gradient norm of the training loss (surface images, BatchNorm with batch "
        f"statistics) at the final weights / at the initial weights, at most {rel_tol:g} (the gallery's "
        f"bound for Sec. 3.3's 'the gradient is approximately 0', which gives no number); largest "
        f"{max(ratios):.3g}. Relative change of the training loss over the last 10% of epochs: median "
        f"{np.nanmedian(change):.3g}, largest "
        f"{np.nanmax(change):.3g}",
    )


def first_crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First ``x`` at which ``y`` reaches ``level``, linearly interpolated; NaN if it never does.

    Args:
        x: ``(n,)`` increasing positions.
        y: ``(n,)`` values (``y[0] < level`` expected).
        level: The level.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    hit = np.flatnonzero(~(y < level))  # NaN counts as reached: the loss left every finite level
    if hit.size == 0:
        return math.nan
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    y0, y1 = y[i - 1], y[i]
    t = (level - y0) / (y1 - y0) if np.isfinite(y1) and y1 != y0 else 1.0
    return float(x[i - 1] + t * (x[i] - x[i - 1]))
