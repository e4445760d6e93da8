"""The multi-step function of the fast paths: full-batch momentum SGD, compiled or eager.

``k`` steps of ``torch.optim.SGD(lr, momentum)`` arithmetic (``buf = mu * buf + g; p -= lr * buf``) on the
hand-derived MLP loss of :mod:`persistence.mlp` (optionally with the persistent penalty) run as one function
compiled with ``torch.compile`` (inductor, C++ wrapper), falling back to the same function uncompiled
(``backend="eager"``) where compilation is unavailable. The anchor matrices are padded with zero rows to a
run's final count, so the compiled function keeps one shape for a whole persistent chain: a zero row
contributes ``|0| = 0`` to the penalty and ``sign(0) * 0 = 0`` to its gradient.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.functional import torch_threads
from persistence.mlp import add_penalty, mse, mse_grads, penalty_and_grad, stack_to_vectors

__all__ = ["Backend", "Stepper", "log_steps", "torch_threads"]


class Backend(str, enum.Enum):
    """How the multi-step function runs: compiled (inductor), eager, or compiled with an eager fallback."""

    AUTO = "auto"
    COMPILED = "compiled"
    EAGER = "eager"


def make_steps(k: int, lr: float, mu: float, penalty: bool) -> Callable[..., Any]:
    """``k`` full-batch momentum-SGD steps as one function (what ``torch.compile`` unrolls and fuses)."""

    def steps(ps, bufs, x, y, anchors, scales):  # noqa: ANN001, ANN202
        ps, bufs = list(ps), list(bufs)
        losses, pens = [], []
        for _ in range(k):
            loss, grads = mse_grads(ps, x, y)
            if penalty:
                pen, grads = add_penalty(ps, grads, anchors, scales)
                pens.append(pen)
            losses.append(loss)
            # torch.optim.SGD(momentum=mu): buf = mu * buf + g (buf = g at step 1, the same as buf = 0), p -= lr * buf
            bufs = [torch.add(b * mu, g) for b, g in zip(bufs, grads)]
            ps = [torch.add(p, b, alpha=-lr) for p, b in zip(ps, bufs)]
        pen_t = torch.stack(pens) if penalty else torch.zeros_like(torch.stack(losses))
        return ps, bufs, torch.stack(losses), pen_t

    return steps


def make_eager_step(lr: float, mu: float, penalty: bool) -> Callable[..., Any]:
    """One step of ``make_steps(1, lr, mu, penalty)``, whose loss and penalty are computed only when ``log``.

    The run keeps them at its logged steps alone (every ``log_every``-th); the update needs neither, so the other
    steps skip their arithmetic (the loss's square and mean, the penalty's absolute values and sums: about a tenth
    of a persistent step's operations). Without ``log`` the losses and penalties returned are ``None``.
    """

    def step(ps, bufs, x, y, anchors, scales, log: bool = True):  # noqa: ANN001, ANN202
        loss, grads = mse_grads(ps, x, y, value=log)
        pen = None
        if penalty:
            pen, grads = add_penalty(ps, grads, anchors, scales, value=log)
        # torch.optim.SGD(momentum=mu), as make_steps
        bufs = [torch.add(b * mu, g) for b, g in zip(bufs, grads)]
        ps = [torch.add(p, b, alpha=-lr) for p, b in zip(ps, bufs)]
        if not log:
            return ps, bufs, None, None
        losses = torch.stack([loss])
        return ps, bufs, losses, torch.stack([pen]) if pen is not None else torch.zeros_like(losses)

    return step


_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}


class Stepper:
    """Runs ``steps`` momentum-SGD steps in calls of ``k`` (compiled) plus single eager steps for the rest."""

    def __init__(self, backend: Backend, k: int, lr: float, mu: float, penalty: bool) -> None:
        if k < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {k}")
        self.backend = backend
        self.eager = make_eager_step(lr, mu, penalty)
        # all-zero scales (a chain's plain iteration): the penalty adds exact zeros to the gradient, so the eager
        # path skips computing it (the same values; it was half of the iteration's per-step cost at S = 1)
        self.eager_plain = make_eager_step(lr, mu, False) if penalty else self.eager
        self.k = 1 if backend is Backend.EAGER else k
        self.multi = self.eager
        if backend is not Backend.EAGER:
            key = (self.k, lr, mu, penalty)
            if key not in _COMPILED:
                _COMPILED[key] = torch.compile(
                    make_steps(self.k, lr, mu, penalty), fullgraph=True, dynamic=False, options={"cpp_wrapper": True}
                )
            self.multi = _COMPILED[key]
        self.verified = backend is Backend.EAGER

    def _call_multi(self, *args: Any) -> Any:
        if self.verified:
            return self.multi(*args)
        try:
            # Every configuration compiles the same code object; allow more than dynamo's default 8 variants.
            with torch._dynamo.config.patch(recompile_limit=64):
                out = self.multi(*args)
        except Exception as e:  # noqa: BLE001 - any compiler failure: fall back or re-raise with advice
            if self.backend is Backend.COMPILED:
                raise RuntimeError(f"torch.compile failed ({type(e).__name__}: {e}); use backend='eager'") from e
            warnings.warn(f"torch.compile failed ({type(e).__name__}); running eagerly (slower)", stacklevel=3)
            self.multi, self.k = self.eager, 1
            out = self.multi(*args)
        self.verified = True
        return out

    def run(
        self,
        ps: list[Tensor],
        x: Tensor,
        y: Tensor,
        steps: int,
        log_steps: np.ndarray,
        anchors: Sequence[Tensor] = (),
        scales: Tensor | None = None,
        record_every: int | None = None,
        bar: Any = None,
    ) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
        """Train from ``ps`` with fresh zero momentum.

        Returns:
            Final stacked tensors, losses and penalties at ``log_steps`` (S, n_log) (the loss at a step is the
            one the step starts from; at ``steps``, the final point's), and the recorded points, each (S, numel).
        """
        scales = ps[0].new_zeros(len(anchors)) if scales is None else scales
        if self.multi is not self.eager:  # compiled: as it was traced (grad mode is part of its guards)
            return self._run(ps, x, y, steps, log_steps, anchors, scales, record_every, bar, self.eager)
        # Eager: inference mode skips autograd's bookkeeping of every op (version counters, view tracking),
        # about 1/5 of a step at S = 1; the kernels, hence the numbers, are the same. Its results are cloned out
        # of it: inference tensors cannot be written in place or saved for backward outside inference mode.
        eager = self.eager_plain if not bool(scales.any()) else self.eager
        with torch.inference_mode():
            out = self._run(ps, x, y, steps, log_steps, anchors, scales, record_every, bar, eager)
        ps_out, losses, pens, records = out
        return [p.clone() for p in ps_out], losses.clone(), pens.clone(), [r.clone() for r in records]

    def _run(
        self,
        ps: list[Tensor],
        x: Tensor,
        y: Tensor,
        steps: int,
        log_steps: np.ndarray,
        anchors: Sequence[Tensor],
        scales: Tensor,
        record_every: int | None,
        bar: Any,
        eager: Callable[..., Any],
    ) -> tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
        bufs = [torch.zeros_like(p) for p in ps]
        want = {int(s): j for j, s in enumerate(log_steps)}
        losses = ps[0].new_full((ps[0].shape[0], len(log_steps)), float("nan"))
        pens = torch.zeros_like(losses)
        records = [stack_to_vectors(ps)] if record_every else []
        step = 0
        while step < steps:
            room = steps - step if not record_every else min(steps - step, record_every - step % record_every)
            if self.multi is self.eager or room < self.k:  # one eager step: its loss only when logged
                single = eager if self.multi is self.eager else self.eager  # a compiled run's remainder: self.eager
                ps, bufs, ls, pn = single(ps, bufs, x, y, anchors, scales, log=step in want)
                n = 1
            else:
                ps, bufs, ls, pn = self._call_multi(ps, bufs, x, y, anchors, scales)
                n = ls.shape[0]  # the first compiled call may have fallen back to one eager step
            for i in range(n if ls is not None else 0):
                j = want.get(step + i)
                if j is not None:
                    losses[:, j] = ls[i]
                    pens[:, j] = pn[i]
            step += n
            if record_every and step % record_every == 0:
                records.append(stack_to_vectors(ps))
            if bar is not None:
                bar.update(n)
        if steps in want:
            losses[:, want[steps]] = mse(ps, x, y)
            if len(anchors):
                pens[:, want[steps]] = penalty_and_grad(ps, anchors, scales)[0]
        if record_every and steps % record_every:
            records.append(stack_to_vectors(ps))
        return ps, losses, pens, records


def log_steps(steps: int, log_every: int) -> np.ndarray:
    """The logged steps: every ``log_every`` steps from 0, and ``steps`` (the final point)."""
    if log_every < 1:
        raise ValueError(f"log_every must be a positive integer, got {log_every}")
    return np.unique(np.append(np.arange(0, steps, log_every), steps)).astype(np.int64)
