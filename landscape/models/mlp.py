"""Fully connected nets: the regression MLP of the kink experiment and the configurable classifier MLP."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from landscape._options import parse_option
from landscape.models.blocks import (
    ACTIVATIONS,
    Activation,
    ShapeLike,
    shape_tuple,
)

__all__ = ["RegressionMLP", "MLP"]


# --------------------------------------------------------------------------- MLPs
class RegressionMLP(nn.Sequential):
    """The ReLU regression MLP of Persistent Neurons §3, eq. (3): ``R -> R`` with m units per hidden layer.

    ``f(x) = theta_3^T relu(theta_2 relu(theta_1 x + b_1) + b_2) + b_3`` for ``depth=3``. Children are
    ``fc1, relu1, fc2, relu2, ..., fc{depth}``.

    Args:
        m: Hidden units per layer (paper: 32).
        depth: Number of Linear layers (paper: 3), at least 2.
        in_features: Input dimension (paper: 1).
        out_features: Output dimension (paper: 1).

    Shapes:
        Input ``(B, in_features)``, output ``(B, out_features)``.
    """

    def __init__(self, m: int = 32, depth: int = 3, in_features: int = 1, out_features: int = 1) -> None:
        if depth < 2:
            raise ValueError(f"depth counts Linear layers and must be at least 2, got {depth}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_features
        for i in range(1, depth):
            layers[f"fc{i}"] = nn.Linear(width, m)
            layers[f"relu{i}"] = nn.ReLU()
            width = m
        layers[f"fc{depth}"] = nn.Linear(width, out_features)
        super().__init__(layers)


class MLP(nn.Sequential):
    """A fully connected net; image inputs are flattened first.

    Children are ``[flatten,] fc1, act1, ..., fc{n}``. The 7-layer tanh MLP of Persistent Neurons
    §5 (Fig. 13-15) is ``MLP(in, [w] * 6, classes, "tanh")``; the paper does not give ``w``.

    Args:
        in_features: Input size, or an input shape such as ``(1, 28, 28)`` (then a Flatten comes first).
        hidden: Widths of the hidden layers.
        out_features: Output size (classes).
        activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"``.

    Shapes:
        Input ``(B, *in_shape)``, output ``(B, out_features)``.
    """

    def __init__(
        self,
        in_features: ShapeLike,
        hidden: Sequence[int],
        out_features: int,
        activation: Activation | str = Activation.RELU,
    ) -> None:
        act = ACTIVATIONS[parse_option(Activation, activation, "activation")]
        shape = shape_tuple(in_features)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if len(shape) > 1:
            layers["flatten"] = nn.Flatten()
        width = math.prod(shape)
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, int(h))
            layers[f"act{i}"] = act()
            width = int(h)
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, out_features)
        super().__init__(layers)
