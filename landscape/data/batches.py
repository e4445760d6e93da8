"""Data in one form for every trainer and analyzer.

A tensor pair ``(X, y)`` or any iterable of ``(X, y)`` batches; :func:`iterate_batches` and :func:`as_batches`
turn either into batches (:func:`iterate_batches` also cuts a longer tuple of tensors, ``(X1, X2, y)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, overload

import torch
from torch import Tensor

__all__ = ["iterate_batches", "as_batches", "Batches", "Pair"]


Pair = tuple[Tensor, Tensor]


# =========================================================================== batching
def _is_pair(data: Any) -> bool:
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and isinstance(data[0], Tensor)
        and isinstance(data[1], Tensor)
    )


def _check_batch(batch: Any, what: str) -> Pair:
    if not _is_pair(batch):
        raise TypeError(
            f"{what} must be a pair (X, y) of tensors, got {type(batch).__name__}; pass data as a tensor pair "
            "(X, y) or an iterable of (X, y) batches"
        )
    x, y = batch
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: inputs have {x.shape[0]} examples but targets have {y.shape[0]}")
    return x, y


def _tensor_tuple(data: Any) -> bool:
    return isinstance(data, tuple | list) and len(data) >= 2 and all(isinstance(t, Tensor) for t in data)


def _check_tuple(data: tuple[Tensor, ...] | list[Tensor], what: str) -> tuple[Tensor, ...]:
    if len(data) == 2:  # the pair's own message (inputs against targets)
        return _check_batch(data, what)
    n = data[0].shape[0]
    for k, t in enumerate(data[1:], 1):
        if t.shape[0] != n:
            raise ValueError(f"{what}: tensor {k} has {t.shape[0]} examples but tensor 0 has {n}")
    return tuple(data)


@overload
def iterate_batches(
    data: Pair | Iterable[Pair],
    batch_size: int | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[Pair]: ...


@overload
def iterate_batches(
    data: tuple[Tensor, ...],
    batch_size: int | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, ...]]: ...


def iterate_batches(
    data: tuple[Tensor, ...] | Iterable[Pair],
    batch_size: int | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, ...]]:
    """Yield ``(X, y)`` batches from a tensor pair (or any tuple of tensors) or an iterable of batches.

    For a tensor pair: ``batch_size=None`` (or at least ``N``) yields the whole set once (shuffled
    when ``shuffle`` and a ``batch_size`` is given); otherwise consecutive batches of ``batch_size``,
    in the order of ``torch.randperm(N, generator=generator)`` when ``shuffle``. An iterable of
    batches (a list, a DataLoader) is passed through, each batch checked.

    A tuple (or list) of more than two tensors of one length, e.g. ``(X1, X2, y)``, is cut the same way:
    each batch is the tuple of every tensor's rows, with the same single ``randperm`` draw per call as a
    pair, so a pair ``(X, y)`` and a tuple ``(X, Z, y)`` given one seeded generator yield the same rows.

    Args:
        data: ``(X (N, ...), y (N, ...))`` (or ``(T1 (N, ...), ..., Tk (N, ...))``) or an iterable of pairs.
        batch_size: Batch size for a tensor tuple.
        shuffle: Shuffle a tensor tuple.
        generator: Generator for the shuffle (seed it for reproducible order).
        drop_last: Drop a final incomplete batch of a tensor tuple.

    Yields:
        ``(X_batch, y_batch)`` pairs (tuples of as many tensors as a tensor tuple has).

    Raises:
        TypeError: If ``data`` or a batch is not of the forms above.
        ValueError: If ``batch_size``/``shuffle`` are given for already-batched data, or sizes disagree.
    """
    if _tensor_tuple(data):
        tensors = _check_tuple(data, "data")  # type: ignore[arg-type]
        n = int(tensors[0].shape[0])
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size is None or batch_size >= n:
            if drop_last and batch_size is not None and batch_size > n:
                return  # the one batch is incomplete, shuffled or not
            if shuffle and batch_size is not None:
                perm = torch.randperm(n, generator=generator)
                yield tuple(t[perm] for t in tensors)
            else:
                yield tensors
            return
        idx = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        if len(tensors) == 2:  # a pair without a generator expression per batch (the Trainer's per-step path)
            x, y = tensors
            for i in range(0, stop, batch_size):
                if idx is None:
                    yield x[i : i + batch_size], y[i : i + batch_size]
                else:
                    j = idx[i : i + batch_size]
                    yield x[j], y[j]
            return
        for i in range(0, stop, batch_size):
            if idx is None:
                yield tuple(t[i : i + batch_size] for t in tensors)
            else:
                j = idx[i : i + batch_size]
                yield tuple(t[j] for t in tensors)
        return
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            f"data must be a tensor pair (X, y) or an iterable of (X, y) batches, got {type(data).__name__}"
        )
    if batch_size is not None or shuffle:
        raise ValueError(
            "data is already batched (an iterable of (X, y)); set batch_size and shuffle where the batches are made"
        )
    for i, batch in enumerate(data):
        yield _check_batch(batch, f"batch {i}")


class Batches:
    """A re-iterable view of data as ``(X, y)`` batches, what analyzers iterate over (possibly many times).

    A one-shot iterator (a generator) is materialized into a list on construction so that it can be
    iterated again; a tensor pair or a re-iterable (list, DataLoader) is kept as is.

    Args:
        data: A tensor pair ``(X, y)`` or an iterable of ``(X, y)`` batches.
        batch_size: Batch size for a tensor pair (``None``: one full batch).
    """

    data: Pair | Iterable[Pair]
    batch_size: int | None

    def __init__(self, data: Pair | Iterable[Pair], batch_size: int | None = None) -> None:
        if isinstance(data, Batches):
            batch_size = data.batch_size if batch_size is None else batch_size
            data = data.data
        if _is_pair(data):
            _check_batch(data, "data")
        elif isinstance(data, Iterator):
            data = list(data)
        elif isinstance(data, Tensor) or not isinstance(data, Iterable):
            raise TypeError(
                f"data must be a tensor pair (X, y) or an iterable of (X, y) batches, got {type(data).__name__}"
            )
        if batch_size is not None and not _is_pair(data):
            raise ValueError("batch_size applies to a tensor pair only; this data is already batched")
        self.data = data
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[Pair]:
        return iterate_batches(self.data, self.batch_size)

    @property
    def num_examples(self) -> int:
        """Total number of examples (iterates once for batched data)."""
        if _is_pair(self.data):
            return int(self.data[0].shape[0])  # type: ignore[index]
        return sum(int(x.shape[0]) for x, _ in self)


def as_batches(data: Pair | Iterable[Pair], batch_size: int | None = None) -> Batches:
    """Normalize "a tensor pair or an iterable of batches" into a re-iterable :class:`Batches`.

    Args:
        data: ``(X (N, ...), y (N, ...))`` or an iterable of such pairs.
        batch_size: Batch size for a tensor pair (``None``: one full batch).

    Returns:
        The batches; iterate them as often as needed.
    """
    return Batches(data, batch_size)
