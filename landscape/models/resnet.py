"""Residual networks: the basic block, ResNet-18 (Persistent Neurons) and a small ResNet for the quick scale."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from landscape.models.blocks import (
    ShapeLike,
    check_classes,
    image_shape,
)

__all__ = ["BasicBlock", "ResNet", "ResNet18", "SmallResNet"]


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
        c, _, _ = image_shape(input_shape, type(self).__name__)
        num_classes = check_classes(num_classes)
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
