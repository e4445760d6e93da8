"""Models defined outside the ``landscape`` package, built by reference (``tests_pkg.nets:make``)."""

from torch import nn

VALUE = 3  # not callable: a factory reference to it is an error


def make(width: int = 4, inputs: int = 64, classes: int = 10) -> nn.Module:
    """An MLP on flattened 8x8 digits: ``inputs -> width (tanh) -> classes``."""
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, classes))


class Net(nn.Module):
    """The same MLP as a class (a class is a factory too)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = make(width)

    def forward(self, x):
        return self.body(x)


def not_a_model(width: int = 4) -> str:
    """A factory that returns something else."""
    return f"width {width}"


def bn_dropout() -> nn.Module:
    """The architecture of ``tests/test_no_mutation.py``'s model (BatchNorm and Dropout), for its factory check."""
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 3))
