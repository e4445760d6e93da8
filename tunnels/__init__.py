"""Tunnels: function-preserving unit and filter cloning to escape flat areas.

Implements "Escaping Flat Areas via Function-Preserving Structural Network Modifications"
(anonymous ICLR 2019 submission). :mod:`tunnels.sites` finds the layer pairs units can be cloned
across and defines the event records; :mod:`tunnels.surgery` opens, closes and reorganizes units out of
place; :mod:`tunnels.split` computes the matrices A and the gradient-maximizing split lambda_star.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    >>> X, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    >>> stats = split_stats(net, (X, y), nn.functional.cross_entropy)
    >>> bigger, event = open_tunnels(net, {"0": 1}, t=0.5, stats=stats)
    >>> bigger[0].out_features, bool(torch.allclose(bigger(X), net(X)))
    (5, True)
    >>> restored, _ = close_tunnels(bigger, event)
    >>> all(torch.equal(a, b) for a, b in zip(restored.parameters(), net.parameters()))
    True
"""

from tunnels.flat import (
    NEONEscape,
    NewtonResult,
    PathResult,
    PerturbedGD,
    damped_newton_step,
    dense_hessian,
    full_batch_objective,
    neon_descent,
    neon_direction,
    newton_flat,
    perturbed_gradient_descent,
    uniform_ball,
)
from tunnels.sites import (
    EventKind,
    PairKind,
    TunnelEvent,
    TunnelSite,
    UnitChange,
    UnsupportedSiteError,
    find_sites,
    resolve_site,
)
from tunnels.split import (
    LambdaMode,
    SplitAccumulator,
    SplitStats,
    StatsMethod,
    augment_rows,
    make_lambdas,
    principal_split,
    split_matrices,
    split_stats,
)
from tunnels.surgery import (
    close_tunnels,
    close_units,
    open_tunnels,
    open_units,
    reorganize,
    reorganize_units,
)
from tunnels.training import ScheduleAction, TunnelSchedule

__all__ = [
    "EventKind",
    "LambdaMode",
    "NEONEscape",
    "NewtonResult",
    "PairKind",
    "PathResult",
    "PerturbedGD",
    "ScheduleAction",
    "SplitAccumulator",
    "SplitStats",
    "StatsMethod",
    "TunnelEvent",
    "TunnelSchedule",
    "TunnelSite",
    "UnitChange",
    "UnsupportedSiteError",
    "augment_rows",
    "close_tunnels",
    "close_units",
    "damped_newton_step",
    "dense_hessian",
    "full_batch_objective",
    "find_sites",
    "make_lambdas",
    "neon_descent",
    "neon_direction",
    "newton_flat",
    "open_tunnels",
    "open_units",
    "perturbed_gradient_descent",
    "principal_split",
    "reorganize",
    "reorganize_units",
    "resolve_site",
    "split_matrices",
    "split_stats",
    "uniform_ball",
]
