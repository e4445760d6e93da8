"""The Trainer's data forms: tensor pairs (numpy arrays read as tensors), iterables of batches, a Problem's data."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from landscape._batch import dataset_loader
from landscape.data.batches import iterate_batches
from landscape.validation import InputError, is_tensor_pair

if TYPE_CHECKING:
    from landscape.problem import Problem

Batch = tuple[Tensor, Tensor]
DataLike = tuple[Tensor, Tensor] | Iterable[Batch]


def _check_pair(data: tuple[Tensor, Tensor], what: str) -> None:
    x, y = data
    if x.shape[0] != y.shape[0]:
        raise InputError(f"{what}: inputs have {x.shape[0]} samples but targets have {y.shape[0]}")
    if x.shape[0] == 0:
        raise InputError(f"{what}: the data set is empty; expected at least one (X, y) sample")


def _batches(
    data: DataLike, batch_size: int | None, shuffle: bool, generator: torch.Generator | None
) -> Iterator[Batch]:
    # Batching options apply to tensor pairs only; an iterable of batches is taken as it comes.
    if is_tensor_pair(data):
        return iterate_batches(data, batch_size, shuffle, generator)
    return iterate_batches(data)


def _as_tensors(data: Any) -> Any:
    """A pair of numpy arrays (or tensors) as a tensor pair; anything else as it is."""
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor | np.ndarray) for t in data):
        return tuple(torch.as_tensor(t) for t in data)
    return data


def _problem_data(problem: Problem, batch_size: int | None) -> Any:
    """A problem's data in the loop's forms: arrays as tensors, a ``Dataset`` batched in order as the problem does."""
    data = _as_tensors(problem.data)
    if is_tensor_pair(data):
        return data
    loader = dataset_loader(data, batch_size)
    return data if loader is None else loader
