"""The model zoo of the five papers, and the weight initializations they name.

Every builder takes the input shape and the number of classes (outputs), so one name runs on
8x8 digits ``(1, 8, 8)``, 28x28 MNIST ``(1, 28, 28)`` and 32x32 CIFAR ``(3, 32, 32)``; widths are
arguments so the quick scales can shrink them. :func:`build_model` is the one entry point:

    >>> net = build_model("lenet5", (1, 8, 8), 10, init="he", seed=0)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])

Layout conventions, which the tunnels and persistence code rely on:

* Feed-forward nets are flat :class:`torch.nn.Sequential` bodies with named children
  (``conv1``, ``relu1``, ``pool1``, ..., ``flatten``, ``fc1``, ...), every activation its own
  module, so (Linear, act, Linear), (Conv2d, act, Conv2d) and (Conv2d, act, Flatten, Linear)
  runs can be found by walking the children.
* ``named_parameters()`` lists weight then bias of each module, module by module in forward order.

Readings of the papers where they leave the architecture open are stated in each class docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from landscape._options import parse_option
from landscape.models.blocks import (
    ShapeLike,
    shape_tuple,
)
from landscape.models.cnn import AlexNet, LeNet5, LiptonCNN, NINNet, SigmoidConvNet, TunnelsCNN, VGGNet
from landscape.models.init import InitScheme, init_weights, seeded
from landscape.models.mlp import MLP, RegressionMLP
from landscape.models.resnet import ResNet18, SmallResNet

__all__ = ["MODELS", "build_model"]


# --------------------------------------------------------------------------- registry
def _regression_mlp(input_shape: ShapeLike, num_classes: int, m: int = 32, depth: int = 3) -> nn.Module:
    shape = shape_tuple(input_shape)
    if len(shape) != 1:  # it has no Flatten: built for an image shape it failed on its first batch (a matmul error)
        raise ValueError(
            f"regression_mlp takes flat inputs, an input_shape (F,) such as (1,); got {shape}. For images use 'mlp', "
            "which flattens them"
        )
    return RegressionMLP(m=m, depth=depth, in_features=shape[0], out_features=num_classes)


def _mlp(
    input_shape: ShapeLike, num_classes: int, hidden: Sequence[int] = (128, 128), activation: str = "relu"
) -> nn.Module:
    if isinstance(hidden, int):  # MLP raised "'int' object is not iterable"
        raise TypeError(f"hidden is the list of hidden-layer widths: hidden=[{hidden}] for one layer of {hidden}")
    return MLP(input_shape, hidden, num_classes, activation)


def _mlp7_tanh(input_shape: ShapeLike, num_classes: int, width: int = 256, activation: str = "tanh") -> nn.Module:
    # Persistent Neurons §5: "a 7 layer NN with Tanh activation" = 6 hidden layers + output layer.
    return MLP(input_shape, [width] * 6, num_classes, activation)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "regression_mlp": _regression_mlp,
    "mlp": _mlp,
    "mlp7_tanh": _mlp7_tanh,
    "lenet5": LeNet5,
    "alexnet": AlexNet,
    "resnet18": ResNet18,
    "small_resnet": SmallResNet,
    "sigmoid_convnet": SigmoidConvNet,
    "tunnels_cnn": TunnelsCNN,
    "vgg": VGGNet,
    "nin": NINNet,
    "lipton_cnn": LiptonCNN,
}
"""Model name -> builder ``(input_shape, num_classes, **kwargs) -> nn.Module``.

``regression_mlp`` takes ``input_shape=(1,)`` and ``num_classes=1`` (its output size); every
other convolutional entry needs ``(C, H, W)``; the MLPs take either.
"""


def build_model(
    name: str,
    input_shape: ShapeLike,
    num_classes: int,
    *,
    init: InitScheme | str = InitScheme.DEFAULT,
    seed: int | None = None,
    init_mean: float = 0.0,
    init_std: float | None = None,
    include_norm: bool = False,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model of the zoo by name and initialize it.

    With a ``seed``, construction and initialization draw from a generator seeded with it, so two
    calls give bitwise-identical models and the global RNG is left as it was. Without one, they
    draw from torch's global generator.

    Args:
        name: A key of :data:`MODELS` (case-insensitive; ``-`` and ``_`` interchangeable).
        input_shape: ``(C, H, W)`` for image models, ``(d,)`` or ``d`` for vector inputs.
        num_classes: Number of outputs.
        init: Initialization scheme (see :class:`InitScheme`).
        seed: Seed for construction and initialization.
        init_mean: Mean for ``init="normal"``.
        init_std: Standard deviation for ``init="normal"``.
        include_norm: Under ``init="normal"``, draw normalization layers too.
        dtype: Convert the parameters to this dtype (e.g. ``torch.float64`` for reference checks).
        **kwargs: Architecture options of the builder (widths, ``batchnorm``, ...).

    Returns:
        A new model in train mode.

    Raises:
        KeyError: On an unknown name; the message lists the valid ones.
        ValueError: On an input shape the architecture cannot take, or a bad init option.

    Example:
        >>> a = build_model("mlp", (1, 8, 8), 10, hidden=[16], seed=3)
        >>> b = build_model("mlp", (1, 8, 8), 10, hidden=[16], seed=3)
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid names are {', '.join(sorted(MODELS))}")
    scheme = parse_option(InitScheme, init, "init scheme")
    with seeded(seed):
        model = MODELS[key](input_shape, num_classes, **kwargs)
        if scheme is not InitScheme.DEFAULT:
            init_weights(model, scheme, mean=init_mean, std=init_std, include_norm=include_norm)
    if dtype is not None:
        model = model.to(dtype)
    return model
