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

import contextlib
import enum
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from landscape._options import parse_option

__all__ = [
    "Activation",
    "InitScheme",
    "RegressionMLP",
    "MLP",
    "LeNet5",
    "AlexNet",
    "BasicBlock",
    "ResNet",
    "ResNet18",
    "SmallResNet",
    "SigmoidConvNet",
    "TunnelsCNN",
    "VGGNet",
    "NINNet",
    "LiptonCNN",
    "MODELS",
    "build_model",
    "init_weights",
]

ShapeLike = int | Sequence[int]


class Activation(str, enum.Enum):
    """Pointwise nonlinearities of the configurable nets."""

    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"


class InitScheme(str, enum.Enum):
    """Weight initializations named in the papers.

    ``he``/``kaiming``: weights N(0, 2 / fan_in), biases 0 (He et al. 2015; Persistent Neurons §3).
    ``xavier``/``glorot``: weights U(-a, a), a = sqrt(6 / (fan_in + fan_out)), biases 0 (Glorot &
    Bengio 2010's "normalized initialization"; Persistent Neurons §5). ``xavier_normal``: weights
    N(0, 2 / (fan_in + fan_out)), biases 0. ``default``: PyTorch's own ``reset_parameters``.
    ``normal``: weights and biases N(mean, std) (Persistent Neurons §4: N(0, 0.2) "bad" and
    N(0, 0.05) "good" LeNet-5; Im et al. A.5: N(-10, 0.01), N(-1, 1)).
    """

    DEFAULT = "default"
    HE = "he"
    KAIMING = "kaiming"
    XAVIER = "xavier"
    GLOROT = "glorot"
    XAVIER_NORMAL = "xavier_normal"
    NORMAL = "normal"


_E = TypeVar("_E", bound=enum.Enum)


_ACT: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.TANH: nn.Tanh,
    Activation.SIGMOID: nn.Sigmoid,
}

# Modules whose ``weight`` is a (fan_out, fan_in, *kernel) matrix: the layers an init scheme draws.
_WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


# --------------------------------------------------------------------------- helpers
def _shape(input_shape: ShapeLike) -> tuple[int, ...]:
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes, e.g. (1, 28, 28) or (1,); got {input_shape!r}")
    return shape


def _image_shape(input_shape: ShapeLike, model: str) -> tuple[int, int, int]:
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{model} needs an image input shape (C, H, W), e.g. (1, 8, 8), (1, 28, 28) or (3, 32, 32); got {shape}"
        )
    return shape


def _check_classes(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def _probe(body: nn.Module, shape: Sequence[int], model: str) -> tuple[int, ...]:
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


def _pool_fits(spatial: tuple[int, int], kernel: int = 2) -> bool:
    return min(spatial) >= kernel


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
        act = _ACT[parse_option(Activation, activation, "activation")]
        shape = _shape(in_features)
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


# --------------------------------------------------------------------------- classic CNNs
class LeNet5(nn.Sequential):
    """LeNet-5 with ReLU and max pooling (Persistent Neurons §4, on CIFAR-10).

    conv 5x5 (6) - relu - pool 2 - conv 5x5 (16) - relu - pool 2 - fc 120 - relu - fc 84 - relu - fc.
    Padding follows the input size so one architecture runs everywhere: none at 32x32 (the classic
    CIFAR LeNet), 2 on the first conv below 32 (the classic 28x28 MNIST LeNet), 2 on both below 16
    (8x8 digits).

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        channels: Filters of the two conv layers.
        hidden: Widths of the two hidden fully connected layers.

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        input_shape: ShapeLike,
        num_classes: int,
        channels: tuple[int, int] = (6, 16),
        hidden: tuple[int, int] = (120, 84),
    ) -> None:
        c, h, w = _image_shape(input_shape, "LeNet5")
        num_classes = _check_classes(num_classes)
        side = min(h, w)
        pad1, pad2 = (0, 0) if side >= 32 else (2, 0) if side >= 16 else (2, 2)
        feats: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(c, channels[0], 5, padding=pad1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(channels[0], channels[1], 5, padding=pad2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
        )
        flat = math.prod(_probe(nn.Sequential(feats), (c, h, w), "LeNet5"))
        feats.update(
            fc1=nn.Linear(flat, hidden[0]),
            relu3=nn.ReLU(),
            fc2=nn.Linear(hidden[0], hidden[1]),
            relu4=nn.ReLU(),
            fc3=nn.Linear(hidden[1], num_classes),
        )
        super().__init__(feats)


class AlexNet(nn.Sequential):
    """The small CIFAR AlexNet of Zhang et al. 2017, as in the Persistent Neurons CIFAR runs.

    Two modules of (conv 5x5 - relu - max-pool 3/2 - local response norm), then fully connected
    384 - 192 - classes with ReLU (the TensorFlow CIFAR-10 tutorial model Zhang et al. call "small
    Alexnet"; LRN as in that model: window 9, alpha 0.001, beta 0.75, k 1).

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        channels: Filters of the two conv layers (paper: 64, 64).
        hidden: Widths of the two hidden fully connected layers (paper: 384, 192).
        lrn: Include the local response normalization layers.

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        input_shape: ShapeLike,
        num_classes: int,
        channels: tuple[int, int] = (64, 64),
        hidden: tuple[int, int] = (384, 192),
        lrn: bool = True,
    ) -> None:
        c, h, w = _image_shape(input_shape, "AlexNet")
        num_classes = _check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict()
        cin = c
        for i, cout in enumerate(channels, start=1):
            feats[f"conv{i}"] = nn.Conv2d(cin, cout, 5, padding=2)
            feats[f"relu{i}"] = nn.ReLU()
            feats[f"pool{i}"] = nn.MaxPool2d(3, stride=2, padding=1)
            if lrn:
                feats[f"lrn{i}"] = nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)
            cin = cout
        feats["flatten"] = nn.Flatten()
        flat = math.prod(_probe(nn.Sequential(feats), (c, h, w), "AlexNet"))
        feats.update(
            fc1=nn.Linear(flat, hidden[0]),
            relu3=nn.ReLU(),
            fc2=nn.Linear(hidden[0], hidden[1]),
            relu4=nn.ReLU(),
            fc3=nn.Linear(hidden[1], num_classes),
        )
        super().__init__(feats)


# --------------------------------------------------------------------------- ResNets
class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-bn-relu-conv3x3-bn, plus identity or 1x1-conv-bn shortcut, then relu.

    Shapes:
        Input ``(B, in_channels, H, W)``, output ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Residual forward pass."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016): a 3x3 stem without max pooling, stages of basic blocks.

    Stage ``i`` has ``blocks[i]`` blocks of ``width * 2**i`` channels; every stage after the first
    halves the resolution. Global average pooling and one Linear layer end the net.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        blocks: Blocks per stage.
        width: Channels of the first stage.

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self, input_shape: ShapeLike, num_classes: int, blocks: Sequence[int] = (2, 2, 2, 2), width: int = 64
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape(input_shape, type(self).__name__)
        num_classes = _check_classes(num_classes)
        self.conv1 = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        cin = width
        stages = []
        for i, n in enumerate(blocks):
            cout = width * 2**i
            stage = [BasicBlock(cin, cout, 1 if i == 0 else 2)]
            stage += [BasicBlock(cout, cout) for _ in range(int(n) - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Forward pass."""
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(self.layers(x))))


class ResNet18(ResNet):
    """ResNet-18, CIFAR variant (Persistent Neurons §4): 4 stages of 2 blocks, 64-512 channels, ~11.2M parameters.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        width: Channels of the first stage (64 in the paper; smaller for quick scales).
    """

    def __init__(self, input_shape: ShapeLike, num_classes: int, width: int = 64) -> None:
        super().__init__(input_shape, num_classes, blocks=(2, 2, 2, 2), width=width)


class SmallResNet(ResNet):
    """A small ResNet for quick scales: by default 3 stages of 1 block, 8-32 channels (~20k parameters).

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        width: Channels of the first stage.
        blocks: Blocks per stage.
    """

    def __init__(
        self, input_shape: ShapeLike, num_classes: int, width: int = 8, blocks: Sequence[int] = (1, 1, 1)
    ) -> None:
        super().__init__(input_shape, num_classes, blocks=blocks, width=width)


# --------------------------------------------------------------------------- Tunnels paper
class SigmoidConvNet(nn.Sequential):
    """Single hidden conv layer with sigmoid, then a linear softmax layer (Tunnels §4.1, Fig. 1).

    Children ``conv1, act1, flatten, fc1``: the (Conv2d, act, Flatten, Linear) pattern the tunnels
    code clones filters across. The paper gives 8 filters and no kernel size; 3x3, stride 1 and no
    padding are this package's reading (stride 2 keeps the full Hessian small on 28x28 inputs).

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        filters: Filters of the hidden conv layer (paper: 8).
        kernel_size: Kernel size.
        stride: Stride.

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self, input_shape: ShapeLike, num_classes: int, filters: int = 8, kernel_size: int = 3, stride: int = 1
    ) -> None:
        c, h, w = _image_shape(input_shape, "SigmoidConvNet")
        num_classes = _check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(c, filters, kernel_size, stride=stride),
            act1=nn.Sigmoid(),
            flatten=nn.Flatten(),
        )
        flat = math.prod(_probe(nn.Sequential(feats), (c, h, w), "SigmoidConvNet"))
        feats["fc1"] = nn.Linear(flat, num_classes)
        super().__init__(feats)


class TunnelsCNN(nn.Sequential):
    """The 5-conv-layer CNN with BatchNorm, max pooling and ReLU of Tunnels §4.4 (Fig. 2 right).

    The paper opens tunnels only in the last two conv layers "such that batch normalization and
    pooling ... are not interfering": so conv1-conv3 are conv-bn-relu-pool (pooling while the map
    is at least 2x2) and conv4, conv5 are plain conv-relu, followed by flatten and one Linear layer.
    That gives the (Conv2d, act, Conv2d) pair conv4-conv5 and the (Conv2d, act, Flatten, Linear)
    run conv5-fc1.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        width: Filters per conv layer (paper: 64).

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(self, input_shape: ShapeLike, num_classes: int, width: int = 64) -> None:
        c, h, w = _image_shape(input_shape, "TunnelsCNN")
        num_classes = _check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict()
        cin, spatial = c, (h, w)
        for i in range(1, 6):
            early = i <= 3
            feats[f"conv{i}"] = nn.Conv2d(cin, width, 3, padding=1, bias=not early)
            if early:
                feats[f"bn{i}"] = nn.BatchNorm2d(width)
            feats[f"relu{i}"] = nn.ReLU()
            if early and _pool_fits(spatial):
                feats[f"pool{i}"] = nn.MaxPool2d(2)
                spatial = (spatial[0] // 2, spatial[1] // 2)
            cin = width
        feats["flatten"] = nn.Flatten()
        feats["fc1"] = nn.Linear(width * spatial[0] * spatial[1], num_classes)
        super().__init__(feats)


# --------------------------------------------------------------------------- Im et al. optimizer studies
class VGGNet(nn.Sequential):
    """A small VGG-style CNN with optional BatchNorm (Im et al. §3.1, scaled down).

    ``cfg`` lists conv widths (3x3, padding 1) and ``"M"`` for 2x2 max pooling (skipped once the
    map is 1x1); each conv is followed by BatchNorm when ``batchnorm`` and by ReLU. The classifier
    is dropout - fc ``hidden`` - relu - dropout - fc, as in the cifar.torch VGG Im et al. used.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        cfg: Conv widths and ``"M"`` pooling markers.
        batchnorm: Insert BatchNorm after every conv.
        hidden: Width of the hidden fully connected layer.
        dropout: Dropout probability in the classifier (0 disables it).

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        input_shape: ShapeLike,
        num_classes: int,
        cfg: Sequence[int | str] = (32, "M", 64, "M", 128, 128, "M"),
        batchnorm: bool = True,
        hidden: int = 128,
        dropout: float = 0.5,
    ) -> None:
        c, h, w = _image_shape(input_shape, "VGGNet")
        num_classes = _check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict()
        cin, spatial, nconv, npool = c, (h, w), 0, 0
        for item in cfg:
            if item == "M":
                if _pool_fits(spatial):
                    npool += 1
                    feats[f"pool{npool}"] = nn.MaxPool2d(2)
                    spatial = (spatial[0] // 2, spatial[1] // 2)
                continue
            nconv += 1
            feats[f"conv{nconv}"] = nn.Conv2d(cin, int(item), 3, padding=1)
            if batchnorm:
                feats[f"bn{nconv}"] = nn.BatchNorm2d(int(item))
            feats[f"relu{nconv}"] = nn.ReLU()
            cin = int(item)
        feats["flatten"] = nn.Flatten()
        if dropout > 0:
            feats["drop1"] = nn.Dropout(dropout)
        feats["fc1"] = nn.Linear(cin * spatial[0] * spatial[1], hidden)
        feats[f"relu{nconv + 1}"] = nn.ReLU()
        if dropout > 0:
            feats["drop2"] = nn.Dropout(dropout)
        feats["fc2"] = nn.Linear(hidden, num_classes)
        super().__init__(feats)


class NINNet(nn.Sequential):
    """A small Network-in-Network (Lin et al. 2014) with optional BatchNorm (Im et al. §3.1, A.5).

    Three mlpconv blocks (a kxk conv then two 1x1 convs, each followed by optional BatchNorm and
    ReLU): block 1 (5x5) ends in 3x3/2 max pooling, block 2 (5x5) in 3x3/2 average pooling, both
    with dropout; block 3 (3x3) ends with ``num_classes`` channels and global average pooling. As in
    the original NIN and cifar.torch, a ReLU follows the last conv too.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        width: Channels of every conv but the last (paper's NIN: 192; default here 32).
        batchnorm: Insert BatchNorm after every conv.
        dropout: Dropout probability after blocks 1 and 2 (0 disables it).

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self, input_shape: ShapeLike, num_classes: int, width: int = 32, batchnorm: bool = True, dropout: float = 0.5
    ) -> None:
        c, _, _ = _image_shape(input_shape, "NINNet")
        num_classes = _check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict()
        plan = [(5, width), (1, width), (1, width), (5, width), (1, width), (1, width), (3, width), (1, width)]
        plan.append((1, num_classes))
        cin = c
        for i, (k, cout) in enumerate(plan, start=1):
            feats[f"conv{i}"] = nn.Conv2d(cin, cout, k, padding=k // 2)
            if batchnorm:
                feats[f"bn{i}"] = nn.BatchNorm2d(cout)
            feats[f"relu{i}"] = nn.ReLU()
            cin = cout
            if i in (3, 6):
                block = i // 3
                pool = nn.MaxPool2d if block == 1 else nn.AvgPool2d
                feats[f"pool{block}"] = pool(3, stride=2, padding=1)
                if dropout > 0:
                    feats[f"drop{block}"] = nn.Dropout(dropout)
        feats["gap"] = nn.AdaptiveAvgPool2d(1)
        feats["flatten"] = nn.Flatten()
        super().__init__(feats)


# --------------------------------------------------------------------------- Lipton
class LiptonCNN(nn.Sequential):
    """The "standard three layer" CNN with dropout of Lipton 2016 (weight-space paper).

    The paper gives only "three layer", dropout, L2 weight decay and 819,557 parameters on MNIST.
    Reading used here: three hidden layers, conv 5x5 (32) - relu - pool 2 - conv 5x5 (64) - relu -
    pool 2 - dropout - fc 256 - relu - dropout - fc, "same" padding; 857,738 parameters on 28x28
    MNIST (``hidden=244`` would give 819,974). Weight decay belongs to the optimizer.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: Output size.
        channels: Filters of the two conv layers.
        hidden: Width of the hidden fully connected layer.
        dropout: Dropout probability (0 disables it).

    Shapes:
        Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        input_shape: ShapeLike,
        num_classes: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        c, h, w = _image_shape(input_shape, "LiptonCNN")
        num_classes = _check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(c, channels[0], 5, padding=2),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(channels[0], channels[1], 5, padding=2),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
        )
        flat = math.prod(_probe(nn.Sequential(feats), (c, h, w), "LiptonCNN"))
        if dropout > 0:
            feats["drop1"] = nn.Dropout(dropout)
        feats["fc1"] = nn.Linear(flat, hidden)
        feats["relu3"] = nn.ReLU()
        if dropout > 0:
            feats["drop2"] = nn.Dropout(dropout)
        feats["fc2"] = nn.Linear(hidden, num_classes)
        super().__init__(feats)


# --------------------------------------------------------------------------- initialization
@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run with torch's global CPU generator seeded, restoring its previous state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def init_weights(
    model: nn.Module,
    scheme: InitScheme | str = InitScheme.DEFAULT,
    *,
    seed: int | None = None,
    mean: float = 0.0,
    std: float | None = None,
    include_norm: bool = False,
) -> nn.Module:
    """Re-initialize a freshly built model's weights **in place** and return it.

    This is the one function in the package that writes into a model; call it on models you just
    built (as :func:`build_model` does), never on a caller's trained model.

    Linear and convolution layers are drawn by ``scheme`` (see :class:`InitScheme`). Normalization
    layers keep weight 1 and bias 0, except under ``"normal"`` with ``include_norm=True``, where
    they are drawn too (the "all parameters" reading of Im et al.'s exotic initializations).
    ``"default"`` calls every module's own ``reset_parameters`` (BatchNorm running statistics reset too).

    Args:
        model: A freshly built module.
        scheme: ``"he"``/``"kaiming"``, ``"xavier"``/``"glorot"``, ``"xavier_normal"``, ``"default"`` or ``"normal"``.
        seed: If given, draw from a generator seeded with it (the global RNG state is restored after).
        mean: Mean for ``"normal"``.
        std: Standard deviation for ``"normal"`` (required there).
        include_norm: Under ``"normal"``, also draw normalization layers' weight and bias.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: On an unknown scheme, or ``"normal"`` without ``std``.
    """
    scheme = parse_option(InitScheme, scheme, "init scheme")
    if scheme is InitScheme.NORMAL and (std is None or std < 0):
        raise ValueError("init scheme 'normal' needs std >= 0, e.g. init_weights(model, 'normal', std=0.05)")
    with _seeded(seed), torch.no_grad():
        for module in model.modules():
            if scheme is InitScheme.DEFAULT:
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
                continue
            if isinstance(module, _WEIGHT_LAYERS):
                _draw(module, scheme, mean, std)
            elif isinstance(module, _NORM_LAYERS) and scheme is InitScheme.NORMAL and include_norm:
                for p in (getattr(module, "weight", None), getattr(module, "bias", None)):
                    if isinstance(p, Tensor):
                        p.normal_(mean, std)  # type: ignore[arg-type]
    return model


def _draw(module: nn.Module, scheme: InitScheme, mean: float, std: float | None) -> None:
    weight: Tensor = module.weight  # type: ignore[assignment]
    bias: Tensor | None = module.bias  # type: ignore[assignment]
    if scheme in (InitScheme.HE, InitScheme.KAIMING):
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    elif scheme in (InitScheme.XAVIER, InitScheme.GLOROT):
        nn.init.xavier_uniform_(weight)
    elif scheme is InitScheme.XAVIER_NORMAL:
        nn.init.xavier_normal_(weight)
    else:  # NORMAL
        weight.normal_(mean, std)  # type: ignore[arg-type]
        if bias is not None:
            bias.normal_(mean, std)  # type: ignore[arg-type]
        return
    if bias is not None:
        bias.zero_()


# --------------------------------------------------------------------------- registry
def _regression_mlp(input_shape: ShapeLike, num_classes: int, m: int = 32, depth: int = 3) -> nn.Module:
    return RegressionMLP(m=m, depth=depth, in_features=math.prod(_shape(input_shape)), out_features=num_classes)


def _mlp(
    input_shape: ShapeLike, num_classes: int, hidden: Sequence[int] = (128, 128), activation: str = "relu"
) -> nn.Module:
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
    with _seeded(seed):
        model = MODELS[key](input_shape, num_classes, **kwargs)
        if scheme is not InitScheme.DEFAULT:
            init_weights(model, scheme, mean=init_mean, std=init_std, include_norm=include_norm)
    if dtype is not None:
        model = model.to(dtype)
    return model
