"""The general path of the evaluation engine (private): any problem, one point at a time.

For problems the executors of :mod:`landscape.evaluate.points` do not take (closure losses, mapping or
multi-input batches, streamed data): each chunk of points reads every batch once (data outer), every point
runs through :meth:`Problem.functional <landscape.problem.Problem.functional>`, and the sums go through the
problem's one reduction (so a data-sharded problem gives the mean over all ranks' data).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from landscape import distributed, validation
from landscape._loss import check_total, correct_and_kept, ignored_label
from landscape.evaluate._metrics import metric_keys
from landscape.evaluate.affine import AffinePoints

if TYPE_CHECKING:
    from landscape.problem import Problem

__all__ = ["evaluate_problem"]


def evaluate_problem(
    problem: Problem, points: Any, metrics: Sequence[Any] | None = None, *, chunk_size: int = 16, progress: bool = False
) -> dict[str, np.ndarray]:
    """Metrics at many points of ``problem``: :meth:`Problem.evaluate <landscape.problem.Problem.evaluate>`."""
    from tqdm.auto import tqdm

    metrics = (
        problem.default_metrics()
        if metrics is None
        else tuple((metrics,) if isinstance(metrics, str) or callable(metrics) else metrics)
    )
    keys = metric_keys(metrics)
    if problem.closure and any(k == "accuracy" and fn is None for k, fn in keys):
        raise ValueError("accuracy needs (outputs, targets) class labels; a closure loss has no targets")
    if isinstance(points, AffinePoints):
        P = len(points)
        rows: Iterable[Tensor] = (
            points.materialize(torch.arange(s, min(s + chunk_size, P))) for s in range(0, P, chunk_size)
        )
    else:
        mat = points if isinstance(points, Tensor) else torch.stack([torch.as_tensor(p).reshape(-1) for p in points])
        mat = mat if mat.dim() == 2 else mat[None]
        P = int(mat.shape[0])
        rows = (mat[s : s + chunk_size] for s in range(0, P, chunk_size))
    if problem.sharded and not problem.shard_ordered and any(k == "outputs" or fn is not None for k, fn in keys):
        raise ValueError(
            "metric 'outputs' and custom metrics need the data order, which a strided shard of an iterable loses; "
            "shard a Dataset, a DataLoader over one, a list of batches or tensors instead"
        )
    if any(k == "outputs" for k, _ in keys) and problem.reshuffled:
        raise ValueError(
            "metric 'outputs' (and the functional distance, which compares them sample by sample) needs the same "
            "sample order on every pass, but the data is a shuffling DataLoader re-read on every pass (larger "
            "than memory_budget): pass a DataLoader with shuffle=False, or a memory_budget that holds the data"
        )
    first = 0  # this rank's first sample's index in the data: custom metrics see global indices
    if problem.sharded:
        problem.total_samples  # noqa: B018 - (collective, cached) raises on every rank when every share is empty
        if any(fn is not None for _, fn in keys):  # shares are contiguous in rank order (shard_ordered)
            counts = distributed.all_gather_rows(torch.tensor([problem.n_samples], dtype=torch.int64))
            first = int(counts[: distributed.rank_world()[0]].sum())
    out: dict[str, list[Any]] = {k: [] for k, _ in keys}
    with torch.no_grad(), tqdm(total=P, desc="points", unit="pt", disable=not progress) as bar:
        for chunk in rows:
            validation.check_vector(chunk[0], "points", problem.layout)
            fms = [problem.functional(th.to(device=problem.device, dtype=problem.dtype)) for th in chunk]
            sums = {k: torch.zeros(len(fms), dtype=torch.float64) for k, _ in keys if k != "outputs"}
            outs: list[list[Tensor]] = [[] for _ in fms]
            # Samples count the metrics; the loss has its own count: a closure's, or a weighted mean's weights.
            count, loss_count, start = 0.0, 0.0, first
            kept = 0.0  # samples the accuracy counts: not labelled with the loss's ignore_index
            for b in problem.batches():
                c = float(b.size)
                for p, fm in enumerate(fms):
                    if problem.closure and "loss" in sums:
                        t, c = problem.batch_terms(fm, b)
                        sums["loss"][p] += float(t)
                    if problem.closure and not any(k != "loss" for k, _ in keys):
                        continue
                    o = problem.outputs(fm, b)
                    for k, fn in keys:
                        if k == "loss":
                            if not problem.closure:
                                t, c = problem.loss_terms(o, problem.targets_of(b), b.size)
                                sums[k][p] += float(t)
                        elif k == "accuracy":
                            if b.targets is None:
                                raise ValueError("metric 'accuracy' needs class-label targets; this data has none")
                            ignore = None if problem.closure else ignored_label(problem.loss_fn_for(b.targets))
                            hit, kb = correct_and_kept(o, b.targets, ignore)
                            sums[k][p] += hit
                            kept += kb if p == 0 else 0.0
                        elif k == "outputs":
                            outs[p].append(o.detach().cpu())
                        else:
                            sums[k][p] += float(fn(o[None], b.targets, start).double().reshape(-1)[0])
                count += b.size
                loss_count += c
                start += b.size
            names = list(sums)
            *totals, n_both = problem.reduce_sums(
                [*(sums[k] for k in names), torch.tensor([count, loss_count, kept], dtype=torch.float64)]
            )
            sums, n, n_loss = dict(zip(names, totals)), check_total(float(n_both[0])), float(n_both[1])
            n_acc = float(n_both[2])
            for k, _ in keys:
                if k == "outputs":
                    # (p, n_local, *out); an empty share (sharded) has no rows, and takes the others' shape below
                    stacked = torch.stack([torch.cat(o) if o else torch.empty(0) for o in outs])
                    if problem.sharded:  # rows in rank order = data order for contiguous shares
                        stacked = distributed.all_gather_rows(stacked.transpose(0, 1)).transpose(0, 1)
                    out[k].append(stacked)
                else:
                    denom = check_total(n_loss) if k == "loss" else n_acc if k == "accuracy" else n
                    out[k].append(sums[k] / denom)
            bar.update(len(fms))
    res = {k: torch.cat(v).numpy() for k, v in out.items()}
    if "loss" in res and "accuracy" in res:
        res["accuracy"][~np.isfinite(res["loss"])] = np.nan
    return res
