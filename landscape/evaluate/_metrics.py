"""Metric sums of the evaluation engine (private): loss, accuracy, outputs and custom batch metrics.

Per batch and point, each metric adds its sum over the batch's samples; :meth:`MetricSums.finish` turns the
sums into means over the dataset. Cross-entropy and MSE losses and the accuracy run vectorized over the
chunk's points on class-major logits ``(P, C, B)``; other losses one point at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape._loss import ignored_label, weighted_terms

if TYPE_CHECKING:
    from landscape.evaluate.points import BatchMetric

__all__ = ["MetricSums", "engine_loss", "metric_keys"]


def metric_keys(metrics: Any) -> list[tuple[str, Any]]:
    """``[(key, fn)]`` of metric names (``fn`` ``None``) and ``BatchMetric`` callables (key: ``name`` or ``__name__``).

    Raises:
        ValueError: On an unknown name; ``TypeError`` on something neither a name nor callable.
    """
    if isinstance(metrics, str) or callable(metrics):
        metrics = (metrics,)
    keys: list[tuple[str, Any]] = []
    for m in metrics:
        if isinstance(m, str):
            if m not in ("loss", "accuracy", "outputs"):
                raise ValueError(f"unknown metric {m!r}; valid: 'loss', 'accuracy', 'outputs' or a callable")
            keys.append((m, None))
        elif callable(m):
            keys.append((str(getattr(m, "name", getattr(m, "__name__", "metric"))), m))
        else:
            raise TypeError(f"a metric must be a name or a callable, got {type(m).__name__}")
    return keys


def engine_loss(loss_fn: Any, integer: bool) -> tuple[str, Callable[[Tensor, Tensor], Tensor]]:
    """``(kind, fn)``: ``"ce"`` and ``"mse"`` the engine computes itself, else ``"custom"`` (the callable).

    Args:
        loss_fn: A name (``"cross_entropy"``, ``"mse"``), a callable or ``None`` (the default by target dtype).
        integer: Whether the targets are integers (the default's choice).

    Raises:
        ValueError: On an unknown name; ``TypeError`` on something not callable.
    """
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


def _predicted(sm: Tensor, y: Tensor) -> Tensor:
    """Predicted classes of ``sm`` ``(P, B, C)``, shaped ``(P, B)``.

    The argmax over ``C``, or for one output column (a binary classifier's logit ``z``, as
    :func:`landscape._loss._hits` reads it) ``z > 0``: the argmax of one entry is always class 0.
    """
    if sm.shape[-1] == 1 and sm.dim() == y.dim() + 2:
        return (sm[..., 0] > 0).long()
    return sm.argmax(-1)


def _scalar(v: Any) -> Tensor:
    """A loss value as a float64 0-d tensor; the batch mean is one number (``reduction="none"`` is refused).

    Raises:
        ValueError: If the loss returned anything but a one-element tensor.
    """
    if not isinstance(v, Tensor) or v.numel() != 1:
        got = f"Tensor of shape {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"the loss returned {got}; it must return a scalar tensor (the batch mean)")
    return v.double().reshape(())


class MetricSums:
    """Per-batch metric sums: loss, accuracy, outputs and custom ``BatchMetric`` callables."""

    def __init__(
        self, metrics: Sequence[str | BatchMetric], loss_fn: Any, y: Tensor, plain: bool, weighted: bool = False
    ) -> None:
        self.keys = metric_keys(metrics)
        if len({k for k, _ in self.keys}) != len(self.keys):
            raise ValueError(f"duplicate metric names in {[k for k, _ in self.keys]}")
        integer = not (y.is_floating_point() or y.is_complex())
        if any(k == "accuracy" for k, _ in self.keys) and (not integer or y.dim() != 1):
            raise ValueError(
                f"accuracy needs integer class targets of shape (B,), got {str(y.dtype)[6:]} {tuple(y.shape)}; "
                "pass metrics=('loss',) for regression"
            )
        self.kind, self.loss_fn = engine_loss(loss_fn, integer)
        if weighted:  # class weights or ignored targets: weighted sums and counts, the loss of the whole data
            self.kind, self.loss_fn = "weighted", loss_fn
        self.ignore = ignored_label(loss_fn)  # samples with this label count in neither loss nor accuracy
        self.plain = plain
        self.ws: dict[str, Tensor] = {}

    def add(self, acc: dict[str, Any], h: Tensor, lay: str, y: Tensor, start: int) -> None:
        """Add one batch's contribution; ``h`` is ``(P, B, *out)`` (``lay="sm"``) or ``(P, C, B)`` (``"fm"``)."""
        P, B = h.shape[0], y.shape[0]
        sm = h.transpose(1, 2) if lay == "fm" else h
        cm = h if lay == "fm" else (h.transpose(1, 2) if h.dim() == 3 else None)  # class-major (P, C, B)
        # (ignored targets, -100, are no index to gather: a weighted loss takes the per-point paths)
        fast = not self.plain and cm is not None and y.dim() == 1 and self.kind != "weighted"
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
            elif key == "loss" and self.kind == "weighted":
                # torch's mean divides by the summed weights of the kept targets: sums and counts add up over
                # any cut of the data (the engine's micro-batches, the caller's batches) to the whole data's loss
                sums, count = [], float(B)
                for p in range(P):
                    terms = weighted_terms(self.loss_fn, sm[p], y)
                    sums.append(_scalar(self.loss_fn(sm[p], y)) * B if terms is None else terms[0])
                    count = count if terms is None else terms[1]
                val = torch.stack([t.double().reshape(()) for t in sums])
                acc["_count"] = acc.get("_count", 0.0) + count
            elif key == "loss":
                val = torch.stack([_scalar(self.loss_fn(sm[p], y)) * B for p in range(P)])
            elif self.ignore is not None and bool((y == self.ignore).any()):  # accuracy over the kept samples
                keep = y != self.ignore
                val = ((_predicted(sm, y) == y) & keep).sum(1, dtype=torch.float64)
                acc["_kept"] = acc.get("_kept", 0.0) + (float(keep.sum()) - B)
            elif fast and cm is not None and cm.shape[1] > 1:  # accuracy, ties like argmax: no earlier class at the max
                m = cm.amax(1)
                tl = cm.gather(1, y.view(1, 1, B).expand(P, 1, B))[:, 0]
                earlier = torch.arange(cm.shape[1], device=y.device)[:, None] < y[None, :]
                before = torch.where(earlier, 0.0, -math.inf).to(cm.dtype)  # (C, B): -inf from the target on
                val = ((tl == m) & ((cm + before).amax(1) < m)).sum(1, dtype=torch.float64)
            else:
                val = (_predicted(sm, y) == y).sum(1, dtype=torch.float64)
            acc[key] = acc.get(key, 0) + val.detach().cpu()

    def finish(self, acc: dict[str, Any], n: int) -> dict[str, Tensor]:
        """Sums as means over ``n`` samples (a weighted loss: over its summed weights), outputs concatenated.

        The accuracy is a mean over the samples whose label is not the loss's ``ignore_index``.
        """
        count = acc.get("_count", n)  # a weighted loss's summed weights, else the number of samples
        kept = n + acc.get("_kept", 0.0)  # "_kept" adds (kept - batch size) of batches with ignored labels
        denom = {"loss": count, "accuracy": kept}
        return {k: torch.cat(acc[k], 1) if k == "outputs" else acc[k] / denom.get(k, n) for k, _ in self.keys}
