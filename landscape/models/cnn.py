"""The papers' convolutional classifiers.

LeNet-5 and AlexNet (Persistent Neurons), the sigmoid and Tunnels CNNs, VGG and NIN (Im et al.), and Lipton's CNN.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from landscape.models.blocks import (
    ShapeLike,
    check_classes,
    image_shape,
    pool_fits,
    probe_shape,
)

__all__ = ["LeNet5", "AlexNet", "SigmoidConvNet", "TunnelsCNN", "VGGNet", "NINNet", "LiptonCNN"]


# --------------------------------------------------------------------------- shared pieces
def _conv_pool_stack(
    c: int,
    channels: Sequence[int],
    paddings: Sequence[int],
    pool: Callable[[], nn.Module] = lambda: nn.MaxPool2d(2),
    lrn: Callable[[], nn.Module] | None = None,
) -> OrderedDict[str, nn.Module]:
    """``conv 5x5 - relu - pool [- local response norm]`` per entry of ``channels``, then flatten.

    LeNet-5's and Lipton's features (max-pool 2, no norm) and AlexNet's (max-pool 3/2, local response norm).
    """
    feats: OrderedDict[str, nn.Module] = OrderedDict()
    cin = c
    for i, (cout, pad) in enumerate(zip(channels, paddings), start=1):
        feats[f"conv{i}"] = nn.Conv2d(cin, cout, 5, padding=pad)
        feats[f"relu{i}"] = nn.ReLU()
        feats[f"pool{i}"] = pool()
        if lrn is not None:
            feats[f"lrn{i}"] = lrn()
        cin = cout
    feats["flatten"] = nn.Flatten()
    return feats


def _flat_size(feats: OrderedDict[str, nn.Module], chw: tuple[int, int, int], model: str) -> int:
    """Width of the flattened features ``feats`` of a ``(C, H, W)`` input (probed, so any layout fits)."""
    return math.prod(probe_shape(nn.Sequential(feats), chw, model))


def _two_hidden_head(flat: int, hidden: tuple[int, int], num_classes: int) -> OrderedDict[str, nn.Module]:
    """``fc - relu - fc - relu - fc``: LeNet-5's and AlexNet's classifier."""
    return OrderedDict(
        fc1=nn.Linear(flat, hidden[0]),
        relu3=nn.ReLU(),
        fc2=nn.Linear(hidden[0], hidden[1]),
        relu4=nn.ReLU(),
        fc3=nn.Linear(hidden[1], num_classes),
    )


def _dropout_head(flat: int, hidden: int, num_classes: int, dropout: float, relu: str) -> OrderedDict[str, nn.Module]:
    """``dropout - fc - relu - dropout - fc`` (no dropout layers at 0): VGG's and Lipton's classifier."""
    head: OrderedDict[str, nn.Module] = OrderedDict()
    if dropout > 0:
        head["drop1"] = nn.Dropout(dropout)
    head["fc1"] = nn.Linear(flat, hidden)
    head[relu] = nn.ReLU()
    if dropout > 0:
        head["drop2"] = nn.Dropout(dropout)
    head["fc2"] = nn.Linear(hidden, num_classes)
    return head


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
        c, h, w = image_shape(input_shape, "LeNet5")
        num_classes = check_classes(num_classes)
        side = min(h, w)
        pad1, pad2 = (0, 0) if side >= 32 else (2, 0) if side >= 16 else (2, 2)
        feats = _conv_pool_stack(c, channels, (pad1, pad2))
        feats.update(_two_hidden_head(_flat_size(feats, (c, h, w), "LeNet5"), hidden, num_classes))
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
        c, h, w = image_shape(input_shape, "AlexNet")
        num_classes = check_classes(num_classes)
        feats = _conv_pool_stack(
            c,
            channels,
            [2] * len(channels),
            pool=lambda: nn.MaxPool2d(3, stride=2, padding=1),
            lrn=(lambda: nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)) if lrn else None,
        )
        feats.update(_two_hidden_head(_flat_size(feats, (c, h, w), "AlexNet"), hidden, num_classes))
        super().__init__(feats)


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
        c, h, w = image_shape(input_shape, "SigmoidConvNet")
        num_classes = check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(c, filters, kernel_size, stride=stride),
            act1=nn.Sigmoid(),
            flatten=nn.Flatten(),
        )
        feats["fc1"] = nn.Linear(_flat_size(feats, (c, h, w), "SigmoidConvNet"), num_classes)
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
        c, h, w = image_shape(input_shape, "TunnelsCNN")
        num_classes = check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict()
        cin, spatial = c, (h, w)
        for i in range(1, 6):
            early = i <= 3
            feats[f"conv{i}"] = nn.Conv2d(cin, width, 3, padding=1, bias=not early)
            if early:
                feats[f"bn{i}"] = nn.BatchNorm2d(width)
            feats[f"relu{i}"] = nn.ReLU()
            if early and pool_fits(spatial):
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
        c, h, w = image_shape(input_shape, "VGGNet")
        num_classes = check_classes(num_classes)
        feats: OrderedDict[str, nn.Module] = OrderedDict()
        cin, spatial, nconv, npool = c, (h, w), 0, 0
        for item in cfg:
            if item == "M":
                if pool_fits(spatial):
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
        feats.update(_dropout_head(cin * spatial[0] * spatial[1], hidden, num_classes, dropout, f"relu{nconv + 1}"))
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
        c, _, _ = image_shape(input_shape, "NINNet")
        num_classes = check_classes(num_classes)
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
        c, h, w = image_shape(input_shape, "LiptonCNN")
        num_classes = check_classes(num_classes)
        feats = _conv_pool_stack(c, channels, (2, 2))
        feats.update(_dropout_head(_flat_size(feats, (c, h, w), "LiptonCNN"), hidden, num_classes, dropout, "relu3"))
        super().__init__(feats)
