"""Critical points of the single-layer Tunnels networks: full-batch L-BFGS, then Newton steps keeping the best iterate.

Shared by the verified saddle (:func:`figures.tunnels._setup.saddle_point`: the 1-filter network) and Fig. 1 right's
converged network. Its source is part of the single-layer cache key (:meth:`figures.tunnels._setup.Setup.key`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tunnels.flat import NewtonResult, newton_flat

F = nn.functional


def lbfgs_then_newton(
    net: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    max_iter: int,
    tolerance_grad: float,
    stop_below: float,
    restarts: int,
    newton_steps: int,
    step_size: float,
    damping: float,
) -> tuple[nn.Module, NewtonResult]:
    """Full-batch L-BFGS on ``net`` (trained in place), then Newton steps with the dense Hessian: the best iterate.

    L-BFGS (strong Wolfe line search, ``max_iter`` iterations a run) stops early on a failed line search: it is
    restarted, ``restarts`` runs at most, until the full-batch gradient norm is below ``stop_below``. Newton from a
    near-critical point can overshoot, so of its iterates (L-BFGS's end point included) the one with the smallest
    gradient norm is returned, reached by rerunning to it (deterministic), with the record of all ``newton_steps``.
    """
    x, y = data
    opt = torch.optim.LBFGS(
        net.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=50,
        tolerance_grad=tolerance_grad,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    for _ in range(restarts):
        opt.step(closure)
        if float(torch.cat([p.grad.reshape(-1) for p in net.parameters()]).norm()) < stop_below:
            break
    res = newton_flat(net, data, F.cross_entropy, steps=newton_steps, step_size=step_size, damping=damping)
    best = int(np.argmin(res.grad_norms))
    if best == newton_steps:
        return res.model, res
    return newton_flat(net, data, F.cross_entropy, steps=best, step_size=step_size, damping=damping).model, res
