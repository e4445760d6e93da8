"""The Trainer's data forms: tensor pairs (numpy arrays read as tensors), iterables of batches, a Problem's data.

Batches that are not ``(X, y)`` pairs (mappings, several inputs) and closure losses ``loss(model, batch)`` take
:class:`GeneralData`: the batches are read as a :class:`~landscape.problem.Problem` reads them (cast to the
model's dtype, checked on the first pass, split by the output rule and the target keys) and each step's loss is
the one a hand-written loop computes on the batch as given.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._batch import BatchReader, dataset_loader
from landscape._loss import LOSSES, check_scalar, check_sum_count, default_loss_name, is_closure, sum_reduced
from landscape._loss import weighted_count as _weighted_count
from landscape.data.batches import _tensor_tuple, iterate_batches
from landscape.functional import model_output
from landscape.validation import InputError, check_model, is_tensor_pair

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
    if isinstance(data, GeneralData):
        return data.epoch(batch_size, shuffle, generator)
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


class GeneralData:
    """Training batches of any form a :class:`~landscape.problem.Problem` reads, with its loss forms.

    Iterated by epoch (:meth:`epoch`) as ``(batch, y)`` pairs for the loop's bookkeeping: ``batch`` is the
    normalized :class:`~landscape._batch.Batch`, ``y`` its targets under an ``(outputs, targets)`` loss (the
    training accuracy counts class labels), else an empty float tensor of the batch's size. A tensor pair (or
    longer tuple of tensors) is cut and shuffled as the loop cuts a pair; any other source is re-read every
    epoch as it comes (a shuffling ``DataLoader`` reshuffles).

    Args:
        model: The network (the dtype and device batches are cast to; the checks' output width).
        data: A tensor tuple or a re-iterable of batches (a map-style ``Dataset`` is batched in order).
        loss: A loss name, ``loss(outputs, targets)``, a closure ``loss(model, batch)`` or ``None``.
        closure: Whether ``loss`` is a closure.
        batch_size: Batch size of a tensor tuple (``None``: one batch) or a ``Dataset`` (default 64).
    """

    def __init__(self, model: nn.Module, data: Any, loss: Any, closure: bool, batch_size: int | None) -> None:
        self.data, self.tensors = data, data if _tensor_tuple(data) else None
        self.source = dataset_loader(data, batch_size) or data
        self.loss, self.closure, self.batch_size = loss, closure, batch_size
        self.count: float | None = None  # the last step's loss count: a (sum, count) closure's, else None (its size)
        self._fn: Callable[..., Tensor] | None = None  # the (outputs, targets) loss, resolved at the first batch
        self._epoch: Iterable[Any] = ()
        ref = next(iter(model.parameters()), None)
        self.reader = BatchReader(
            self,  # re-read every epoch (never cached: memory_budget 0), checked on the first pass
            model,
            loss,
            closure=closure,
            dtype=ref.dtype if ref is not None else torch.get_default_dtype(),
            device=ref.device if ref is not None else torch.device("cpu"),
            batch_size=batch_size,
            memory_budget=0,
            validate=True,
            shard="none",
        )

    def __iter__(self) -> Iterator[Any]:  # the reader's source: this epoch's raw batches
        return iter(self._epoch)

    def __len__(self) -> int:
        """Batches per epoch (``TypeError`` when the source has no length)."""
        if self.tensors is not None:
            n = int(self.tensors[0].shape[0])
            return 1 if self.batch_size is None else -(-n // self.batch_size)
        return len(self.source)

    def epoch(self, batch_size: int | None, shuffle: bool, generator: torch.Generator | None) -> Iterator[Any]:
        """One epoch's ``(batch, y)`` pairs (see the class docstring)."""
        if self.tensors is None:
            self._epoch = self.source
        else:  # cut and shuffled exactly as the loop cuts an (X, y) pair: one randperm draw, the same slices
            self._epoch = iterate_batches(self.tensors, batch_size, shuffle, generator)
        for b in self.reader.batches():
            y = b.targets if not self.closure and isinstance(b.targets, Tensor) else torch.empty(b.size)
            yield b, y

    def step_loss(self, model: nn.Module, b: Any) -> tuple[Tensor, Tensor | None]:
        """``(the batch's loss, the outputs or None)`` at ``model``: what a hand-written loop computes.

        A closure's value on the batch as given (cast), or ``sum / count`` of a ``(sum, count)`` closure; else
        ``loss(outputs, targets)`` with the outputs by the output rule (``model(*inputs, **keyword inputs)``).

        Raises:
            InputError: If an ``(outputs, targets)`` loss meets a batch without targets.
        """
        if self.closure:
            r = self.loss(model, b.raw)
            if isinstance(r, tuple | list):
                total, self.count = check_sum_count(r)
                return total / self.count, None
            return check_scalar(r), None
        if b.targets is None:
            raise InputError(
                "a training batch carries no targets (a mapping batch holds them under 'labels', 'label', "
                "'targets', 'target' or 'y'); name them so, or pass a closure loss(model, batch)"
            )
        if self._fn is None:
            spec = default_loss_name(b.targets) if self.loss is None else self.loss
            self._fn = LOSSES[spec] if isinstance(spec, str) else spec
        out = model_output(model(*b.inputs, **b.kwargs))
        return self._fn(out, b.targets), out

    def prepare(
        self, model: nn.Module, eval_data: Mapping[str, Any] | None, problem: Problem | None
    ) -> tuple[GeneralData, dict[str, Any], Problem]:
        """The trainer's check before its loop: ``(self, its evaluation sets, its problem)``.

        The weights are checked now, the training batches on their first pass; an evaluation set (kept as it
        comes; a one-shot iterator read into a list, since every epoch end evaluates it) is evaluated through a
        problem, which checks it. The problem is the one given, else the same model, data and loss as a
        :class:`~landscape.problem.Problem` (what the trainer's callbacks measure, e.g. CurvatureRecorder).
        """
        from landscape.problem import Problem

        check_model(model)
        evals = {k: list(d) if isinstance(d, Iterator) else d for k, d in (eval_data or {}).items()}
        if problem is None:
            form = "batch" if self.closure else "outputs"
            problem = Problem(model, self.data, self.loss, loss_form=form, batch_size=self.batch_size)
        return self, evals, problem

    def batch_weight(self, y: Tensor) -> float | None:
        """The last step's weight in the epoch's ``train_loss``: its count (``None``: its size)."""
        if self.closure:
            return self.count
        if sum_reduced(self._fn):
            return 1.0
        return _weighted_count(self._fn, y)


def general_data(
    model: nn.Module, data: Any, loss: Any, batch_size: int | None, closure: bool | None = None
) -> tuple[Any, GeneralData | None]:
    """``(data, GeneralData or None)``: the general form when the loss is a closure or a batch is no ``(X, y)`` pair.

    Args:
        model: The network.
        data: The training data as given (a one-shot iterator is returned re-chained after its first batch).
        loss: The loss as given.
        batch_size: The trainer's batch size.
        closure: Whether the loss is a closure (a problem's own reading); ``None``: read as a problem reads it
            (``loss_form="auto"``).
    """
    if closure is None:
        closure = loss is not None and not isinstance(loss, str) and is_closure(loss, "auto")
    if not closure:
        if data is None or isinstance(data, Tensor) or is_tensor_pair(data):
            return data, None
        loader = dataset_loader(data, None)
        if _tensor_tuple(data):  # (*inputs, y): several inputs
            general = True
        elif loader is not None:  # a map-style Dataset: its samples say what its batches are
            first = data[0] if len(data) else None
            general = isinstance(first, Mapping)
        elif isinstance(data, Iterable):
            if isinstance(data, Iterator):  # peeked and chained back
                head = next(data, None)
                data = data if head is None else itertools.chain([head], data)
                first = head
            else:
                first = next(iter(data), None)
            general = isinstance(first, Mapping) or (isinstance(first, tuple | list) and len(first) > 2)
        else:
            return data, None
        if not general:
            return data, None
    if isinstance(data, Iterator):  # read once (the loop re-reads its data every epoch)
        data = list(data)
    return data, GeneralData(model, data, loss, closure, batch_size)
