"""Shared pieces of the zoo's builders: activations, input-shape checks, output-shape probing."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "ELEMENTWISE_ACTIVATIONS",
    "shape_tuple",
    "image_shape",
    "check_classes",
    "probe_shape",
    "pool_fits",
]


ShapeLike = int | Sequence[int]


class Activation(str, enum.Enum):
    """Pointwise nonlinearities of the configurable nets."""

    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"


ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
}

# torch's activation modules without parameters that map each element on its own (alphabetical): a
# permutation or a copy of channels commutes with them, which permutation tracing (Git Re-Basin) and
# tunnel opening rely on. PReLU is not here: its weight may be per channel.
ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.CELU,
    nn.ELU,
    nn.GELU,
    nn.Hardshrink,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.LogSigmoid,
    nn.Mish,
    nn.ReLU,
    nn.ReLU6,
    nn.SELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.Softplus,
    nn.Softshrink,
    nn.Softsign,
    nn.Tanh,
    nn.Tanhshrink,
)


# --------------------------------------------------------------------------- helpers
def shape_tuple(input_shape: ShapeLike) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (``8`` -> ``(8,)``); raises on an empty or non-positive shape."""
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes, e.g. (1, 28, 28) or (1,); got {input_shape!r}")
    return shape


def image_shape(input_shape: ShapeLike, model: str) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``; raises naming ``model`` when it is not an image shape."""
    shape = shape_tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{model} needs an image input shape (C, H, W), e.g. (1, 8, 8), (1, 28, 28) or (3, 32, 32); got {shape}"
        )
    return shape


def check_classes(num_classes: int) -> int:
    """``num_classes`` as an int, at least 1."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def probe_shape(body: nn.Module, shape: Sequence[int], model: str) -> tuple[int, ...]:
    """Output shape (without batch axis) of ``body`` on a zero input, run in eval mode.

    Eval mode keeps BatchNorm running statistics untouched and dropout off, so probing consumes no
    random numbers and leaves the freshly built module exactly as constructed.
    """
    saved = [(m, m.training) for m in body.modules()]
    body.eval()
    try:
        with torch.no_grad():
            out = body(torch.zeros(1, *shape))
    except RuntimeError as e:
        raise ValueError(f"{model}: input shape {tuple(shape)} is too small for this architecture ({e})") from e
    finally:
        for m, t in saved:
            m.training = t
    return tuple(out.shape[1:])


def pool_fits(spatial: tuple[int, int], kernel: int = 2) -> bool:
    """Whether a ``kernel`` x ``kernel`` pooling fits the spatial size ``(H, W)``."""
    return min(spatial) >= kernel
