"""The model zoo: the papers' architectures, built by name."""

from landscape.models.blocks import Activation
from landscape.models.cnn import AlexNet, LeNet5, LiptonCNN, NINNet, SigmoidConvNet, TunnelsCNN, VGGNet
from landscape.models.init import InitScheme, init_weights
from landscape.models.mlp import MLP, RegressionMLP
from landscape.models.resnet import BasicBlock, ResNet, ResNet18, SmallResNet
from landscape.models.zoo import MODELS, build_model

__all__ = [
    "Activation",
    "AlexNet",
    "BasicBlock",
    "InitScheme",
    "LeNet5",
    "LiptonCNN",
    "MLP",
    "MODELS",
    "NINNet",
    "RegressionMLP",
    "ResNet",
    "ResNet18",
    "SigmoidConvNet",
    "SmallResNet",
    "TunnelsCNN",
    "VGGNet",
    "build_model",
    "init_weights",
]
