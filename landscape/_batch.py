"""The data of a :class:`~landscape.problem.Problem`: batches read from a source, normalized and checked once.

Accepted data: a tensor pair ``(X, y)`` (or a longer tuple of tensors, the last being the targets), a
``torch.utils.data.Dataset`` (wrapped in a ``DataLoader``), a ``DataLoader``, or any re-iterable of batches.
A batch is a tensor (inputs only), a tuple/list ``(*inputs, targets)`` or a mapping (targets under the first
of :data:`TARGET_KEYS` present). A one-shot iterator is read once and kept; any other source is streamed,
and kept after the first pass only when the cast batches fit the memory budget (:class:`BatchReader`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed, validation
from landscape._loss import LOSSES, default_loss_name

__all__ = [
    "Batch",
    "BatchReader",
    "DATASET_BATCH_SIZE",
    "TARGET_KEYS",
    "dataset_loader",
    "describe_data",
    "split_batch",
    "to_device",
]

TARGET_KEYS = ("labels", "label", "targets", "target", "y")
"""Keys of a mapping batch that hold the targets (the first present wins); the rest are model inputs."""


def describe_data(data: Any) -> str:
    """A short provenance description of ``data`` (shapes and dtypes, or the number of batches)."""
    if validation.is_tensor_pair(data):
        x, y = data
        return f"tensor pair X{tuple(x.shape)} {str(x.dtype)[6:]}, y{tuple(y.shape)} {str(y.dtype)[6:]}"
    n = len(data) if hasattr(data, "__len__") else "?"
    return f"{type(data).__name__} of {n} batches"


def to_device(x: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """Tensors (and numpy arrays) inside ``x`` moved to ``device``; floating ones cast to ``dtype``."""
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    if isinstance(x, Tensor):
        if x.is_floating_point():
            return x.to(device=device, dtype=dtype)
        return x.to(device)
    if isinstance(x, Mapping):
        # Its own type when that constructor takes a dict (a Mapping's need not: probed by _rebuildable).
        rebuild: Callable[[dict], Any] = type(x) if type(x) is not dict and _rebuildable(x) else dict
        return rebuild({k: to_device(v, dtype, device) for k, v in x.items()})
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(to_device(v, dtype, device) for v in x))
    if isinstance(x, tuple | list):
        return type(x)(to_device(v, dtype, device) for v in x)
    return x


def _rebuildable(x: Mapping) -> bool:
    cls: Callable[[dict], Any] = type(x)  # a Mapping type promises no constructor: the probe below finds out
    try:
        cls({})
    except Exception:  # noqa: BLE001 - e.g. a BatchEncoding needs more arguments: fall back to a dict
        return False
    return True


def _first_tensor(x: Any) -> Tensor | None:
    if isinstance(x, Tensor):
        return x
    vals = x.values() if isinstance(x, Mapping) else x if isinstance(x, tuple | list) else ()
    for v in vals:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def _nbytes(x: Any) -> int:
    if isinstance(x, Tensor):
        return x.numel() * x.element_size()
    vals = x.values() if isinstance(x, Mapping) else x if isinstance(x, tuple | list) else ()
    return sum(_nbytes(v) for v in vals)


@dataclasses.dataclass
class Batch:
    """One normalized batch.

    Attributes:
        inputs: Positional model inputs.
        kwargs: Keyword model inputs (a mapping batch without its target key).
        targets: The targets, or ``None``.
        raw: The batch as the data gave it (cast), what a closure loss receives.
        size: Number of samples (first dimension of the targets, else of the first input tensor).
    """

    inputs: tuple[Any, ...]
    kwargs: dict[str, Any]
    targets: Tensor | None
    raw: Any
    size: int


def _flat_tensors(x: Any) -> Iterator[Tensor]:
    if isinstance(x, Tensor):
        yield x
        return
    vals = x.values() if isinstance(x, Mapping) else x if isinstance(x, tuple | list) else ()
    for v in vals:
        yield from _flat_tensors(v)


def split_batch(raw: Any, index: int) -> Batch:
    """One raw batch (already cast) split into inputs, keyword inputs and targets (see the module docstring).

    Raises:
        InputTypeError: On a batch of another kind; :class:`~landscape.validation.InputError` on an empty one.
    """
    if isinstance(raw, np.ndarray):
        raw = torch.as_tensor(raw)
    inputs: tuple[Any, ...]
    if isinstance(raw, Tensor):
        inputs, kwargs, targets = (raw,), {}, None
    elif isinstance(raw, Mapping):
        key = next((k for k in TARGET_KEYS if k in raw), None)
        kwargs = {k: v for k, v in raw.items() if k != key}
        inputs, targets = (), (raw[key] if key is not None else None)
    elif isinstance(raw, tuple | list) and raw:
        inputs, kwargs, targets = (tuple(raw[:-1]), {}, raw[-1]) if len(raw) > 1 else ((raw[0],), {}, None)
    else:
        raise validation.InputTypeError(
            f"data (batch {index}): a batch must be a tensor, a tuple (*inputs, targets) or a mapping, got "
            f"{type(raw).__name__}"
        )
    if targets is not None and not isinstance(targets, Tensor):
        targets = torch.as_tensor(targets) if isinstance(targets, np.ndarray | list) else targets
    lead = targets if isinstance(targets, Tensor) else _first_tensor((inputs, kwargs))
    size = int(lead.shape[0]) if isinstance(lead, Tensor) and lead.dim() else 1
    if size == 0:
        raise validation.InputError(f"data (batch {index}) holds no samples; expected at least one")
    return Batch(tuple(inputs), dict(kwargs), targets, raw, size)


def _head(x: Any, size: int) -> Any:
    """The first two samples of batch inputs: tensors whose first dimension is the batch's are cut."""
    if isinstance(x, Tensor):
        return x[:2] if x.dim() and x.shape[0] == size else x
    if isinstance(x, Mapping):
        return {k: _head(v, size) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [_head(v, size) for v in x]
    return x


def _output_shape(model: nn.Module, b: Batch) -> tuple[int, ...] | None:
    """The model's output shape per sample, from two samples of ``b`` in eval mode; ``None`` if it cannot tell."""
    from landscape.functional import hook_attributes, model_output
    from landscape.params import preserved_mode

    ref = validation.floating_reference(model)
    inputs, kwargs = (_head(v, b.size) for v in (list(b.inputs), b.kwargs))
    if ref is not None:  # the model as it is, so its own dtype
        inputs, kwargs = (to_device(v, ref.dtype, ref.device) for v in (inputs, kwargs))
    try:
        with torch.no_grad(), preserved_mode(model, False), hook_attributes(model):  # a hook's attributes put back
            out = model_output(model(*inputs, **kwargs))
    except Exception:  # noqa: BLE001 - the evaluation's own forward raises with full context
        return None
    return tuple(out.shape[1:]) if out.dim() >= 1 else None


class _TensorSource:
    """A tuple of same-length tensors cut into batches of ``batch_size`` (``None``: one batch).

    Without rows it gives one empty batch (which the checks refuse, naming the shapes), or none when
    ``empty_ok`` (a rank's empty share: see :class:`BatchReader`).
    """

    def __init__(self, tensors: tuple[Any, ...], batch_size: int | None, empty_ok: bool = False) -> None:
        self.tensors = tuple(torch.as_tensor(t) for t in tensors)
        self.n = int(self.tensors[0].shape[0]) if self.tensors[0].dim() else 0
        if any(t.dim() == 0 or int(t.shape[0]) != self.n for t in self.tensors):
            shapes = [tuple(t.shape) for t in self.tensors]
            raise validation.InputError(f"data: the tensors must share their first dimension, got shapes {shapes}")
        self.size = batch_size or max(self.n, 1)
        self.empty_ok = empty_ok

    def __len__(self) -> int:
        return max(0 if self.empty_ok else 1, -(-self.n // self.size))

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        if self.n == 0:
            if not self.empty_ok:
                yield self.tensors
            return
        for s in range(0, self.n, self.size):
            yield tuple(t[s : s + self.size] for t in self.tensors)


DATASET_BATCH_SIZE = 64  # a map-style Dataset's batch size when none is given


def dataset_loader(data: Any, batch_size: int | None) -> Any:
    """A map-style ``Dataset`` as a ``DataLoader`` read in order (``batch_size`` default :data:`DATASET_BATCH_SIZE`).

    Returns ``None`` for anything else (an ``IterableDataset`` included), so callers take it as it is.
    """
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        return DataLoader(data, batch_size=batch_size or DATASET_BATCH_SIZE, shuffle=False)
    return None


def _source(data: Any, batch_size: int | None) -> tuple[Any, bool]:
    """``(re-iterable source of raw batches, in_memory)``."""
    from torch.utils.data import DataLoader

    if isinstance(data, tuple | list) and data and all(isinstance(t, Tensor | np.ndarray) for t in data):
        return _TensorSource(tuple(data), batch_size), True
    if isinstance(data, Mapping):
        return [data], True
    if isinstance(data, Tensor):
        raise validation.InputTypeError(
            "data is a single tensor; pass (X, y), a Dataset, a DataLoader or an iterable of batches"
        )
    if isinstance(data, DataLoader):
        return data, False
    loader = dataset_loader(data, batch_size)
    if loader is not None:
        return loader, False
    if isinstance(data, Iterable):
        if iter(data) is data:  # a generator: readable once, so kept
            return list(data), True
        return data, isinstance(data, list | tuple)
    raise validation.InputTypeError(
        f"data must be a tensor pair (X, y), a Dataset, a DataLoader or an iterable of batches, got "
        f"{type(data).__name__}"
    )


def _split_source(source: Any, batch_size: int | None, whole_batches: bool = False) -> Any:
    """This rank's contiguous share of a source (see ``Problem(shard="split")``); the source itself alone.

    ``whole_batches`` (a model with BatchNorm): rows of a tensor pair cut into batches, and the samples of a loader
    read in order, are shared by whole batches, so each rank's batches are one process's
    (:func:`~landscape.distributed.loader_shard_bounds`); batch statistics then match one process's.

    A ``DataLoader`` over a map-style dataset batched by a plain ``BatchSampler`` (its own ``batch_size``, or one
    given) over a sampler :func:`_sampler_order` knows is rebuilt over this rank's share of the sampler's indices
    (:func:`_share_loader`); one with a batch sampler of another kind, or a sampler of a kind not listed there, is
    split by batches (:class:`_StridedSource`), which relies on every rank reading the same batches in the same
    order (a random sampler of one's own must be seeded alike on every rank).

    Raises:
        InputError: For a loader drawing samples at random with replacement, or already sharded by a
            ``DistributedSampler`` (naming the fix).
    """
    from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset

    rank, world = distributed.rank_world()
    if world == 1:
        return source
    if isinstance(source, _TensorSource):
        aligned = whole_batches and batch_size is not None  # one batch (no batch_size) is split by samples
        lo, hi = distributed.loader_shard_bounds(source.n, source.size, False, rank, world, aligned)
        return _TensorSource(tuple(t[lo:hi] for t in source.tensors), batch_size)
    if (
        isinstance(source, DataLoader)
        and isinstance(source.dataset, Dataset)
        and not isinstance(source.dataset, IterableDataset)
    ):
        # Batches of a sampler's samples, cut by a plain BatchSampler (the loader's own for a batch_size); a batch
        # sampler of another kind cuts its batches its own way: they are strided below.
        batches = source.batch_sampler
        if type(batches) is BatchSampler:
            order = _sampler_order(batches.sampler, len(source.dataset))  # type: ignore[arg-type]
            if order is not None:
                # Only the share's samples are read: a share of those one process reads (drop_last drops the tail
                # of the whole data, not of each share), so no rank drops anything itself.
                indices, shuffled, generator = order
                size, drop = batches.batch_size, batches.drop_last
                lo, hi = distributed.loader_shard_bounds(len(indices), size, drop, rank, world, whole_batches)
                return _share_loader(source, indices[lo:hi], size, shuffled, generator)
    if isinstance(source, list | tuple):
        lo, hi = distributed.shard_bounds(len(source), rank, world)
        return list(source[lo:hi])
    return _StridedSource(source, rank, world)


def _sampler_order(sampler: Any, n: int) -> tuple[Sequence[int], bool, torch.Generator | None] | None:
    """``(the dataset indices a sampler draws, in a fixed order; whether it shuffles them; its generator)``.

    ``n`` is the dataset's length.

    The indices are those one pass reads, each once, in some order: all of the dataset's (``SequentialSampler``,
    ``RandomSampler`` without replacement), or a ``SubsetRandomSampler``'s. A shuffling sampler's order differs
    per rank (an unseeded one draws its own permutation on each), so the ranks split this fixed order instead
    (sums over the data do not depend on it) and each shuffles only its share. ``None`` for another sampler
    (split by batches).

    Raises:
        InputError: For a sampler drawing with replacement (``RandomSampler(replacement=True)`` or another
            ``num_samples``, ``WeightedRandomSampler``) or a ``DistributedSampler`` (already a per-rank share).
    """
    from torch.utils.data import (
        DistributedSampler,
        RandomSampler,
        SequentialSampler,
        SubsetRandomSampler,
        WeightedRandomSampler,
    )

    if isinstance(sampler, SequentialSampler):
        return range(n), False, None
    if isinstance(sampler, SubsetRandomSampler):
        return list(sampler.indices), True, sampler.generator
    if isinstance(sampler, RandomSampler) and not sampler.replacement and sampler.num_samples == n:
        return range(n), True, sampler.generator
    if isinstance(sampler, RandomSampler | WeightedRandomSampler):
        raise validation.InputError(
            "data: shard='split' splits the dataset's samples among the ranks, but this DataLoader's "
            f"{type(sampler).__name__} draws {sampler.num_samples} samples at random with replacement (or not all "
            "of them), a random sample no split of the data reproduces; read every sample once (shuffle=True or "
            "False, no sampler), or give each rank a loader of its own with shard='given'"
        )
    if isinstance(sampler, DistributedSampler):
        raise validation.InputError(
            "data: this DataLoader's DistributedSampler already gives each rank a share, which shard='split' would "
            "split again; pass the loader without it (shard='split' shares the samples itself, each once: a "
            "DistributedSampler repeats samples to even the shares, or drops some with drop_last=True)"
        )
    return None


def _share_loader(
    loader: Any, indices: Sequence[int], batch_size: int, shuffled: bool, generator: torch.Generator | None
) -> Any:
    """A ``DataLoader`` like ``loader`` over the dataset samples ``indices`` (a rank's share), read each once.

    Every setting of ``loader`` that still applies is kept: ``batch_size`` (its own, or its ``BatchSampler``'s:
    the share's loader has its own batch size), ``collate_fn``, ``num_workers``,
    ``pin_memory``, ``pin_memory_device``, ``timeout``, ``worker_init_fn``, ``multiprocessing_context``,
    ``generator``, ``prefetch_factor``, ``persistent_workers``, ``in_order`` (those this torch version takes).
    Those that cannot: the ``dataset`` becomes a ``Subset`` of it (workers' ``get_worker_info().dataset`` and a
    ``worker_init_fn`` see the ``Subset``, the dataset itself as its ``.dataset``); the ``sampler`` becomes the
    share's own, a ``SequentialSampler`` or, for a shuffling loader, a ``RandomSampler`` over the share drawing
    from the loader's sampler's ``generator`` (a shuffle of the share, not of the data: see
    :func:`_sampler_order`); ``drop_last`` is ``False``, the short batch having been dropped from the whole data
    before it was split (:func:`~landscape.distributed.loader_shard_bounds`).
    """
    import inspect

    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset

    subset = Subset(loader.dataset, indices)
    accepted = inspect.signature(DataLoader.__init__).parameters
    kept = {k: getattr(loader, k) for k in _LOADER_SETTINGS if k in accepted and hasattr(loader, k)}
    # (an empty share has nothing to shuffle, and a RandomSampler refuses it)
    sampler = RandomSampler(subset, generator=generator) if shuffled and indices else SequentialSampler(subset)
    return DataLoader(subset, batch_size=batch_size, sampler=sampler, drop_last=False, **kept)


_LOADER_SETTINGS = (
    "collate_fn",
    "num_workers",
    "pin_memory",
    "pin_memory_device",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "in_order",
)
"""The ``DataLoader`` settings a rank's rebuilt share keeps (:func:`_share_loader`)."""


class _StridedSource:
    """Batch ``i`` of a re-iterable goes to rank ``i % world`` (the others' batches are skipped, not kept)."""

    def __init__(self, source: Any, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __iter__(self) -> Iterator[Any]:
        for i, b in enumerate(self.source):
            if i % self.world == self.rank:
                yield b


class BatchReader:
    """A problem's data read batch by batch: cast, checked on the first pass, kept in memory when it fits.

    Args:
        data: The data (see the module docstring).
        model: The network (the checks' dtype policy, embedding inputs and output width).
        loss: The loss as given (the target policy).
        closure: Whether the loss is a closure (its batches are cast, not checked against a target policy).
        dtype: Compute dtype (floating tensors are cast to it).
        device: Compute device.
        batch_size: Batch size for a tensor pair (default: one batch) or a ``Dataset`` (default 64).
        memory_budget: Bytes the cast batches may take to be kept after the first pass.
        validate: Check the data (NaN/inf, label range) on the first pass; it is normalized either way.
        shard: ``"split"`` keeps only this rank's share (see :class:`~landscape.problem.Problem`).

    A share may be empty under a process group of more than one rank (``shard="split"`` of data with fewer
    samples or batches than ranks, or ``shard="given"`` an empty one): its passes yield no batch instead of
    raising, so the rank still takes part in every collective with zero sums and counts. Whether any rank
    holds data is the problem's to check, collectively (:attr:`~landscape.problem.Problem.total_samples`).

    Attributes:
        cache: The batches once held in memory, else ``None`` (streamed).
        n_samples: Number of samples, known after the first pass.
        n_batches: Number of batches, known after the first pass.
        all_pairs: Whether every batch read so far is an ``(X, y)`` pair of tensors.
        splits_batch: Whether this rank holds part of a batch (one tensor-pair batch of a BatchNorm model split).
    """

    def __init__(
        self,
        data: Any,
        model: nn.Module,
        loss: Any,
        *,
        closure: bool,
        dtype: torch.dtype,
        device: torch.device,
        batch_size: int | None,
        memory_budget: int,
        validate: bool,
        shard: str,
    ) -> None:
        self.raw = data
        self.model, self.loss, self.closure = model, loss, closure
        self.dtype, self.device = dtype, device
        self.memory_budget, self.validate = memory_budget, validate
        self.source, self.in_memory = _source(data, batch_size)
        # a model with BatchNorm gets one process's batches on every rank (batch statistics); one batch split by
        # samples cannot be one process's batch (then Problem refuses bn_mode="train": splits_batch)
        whole = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        split = shard == "split" and distributed.rank_world()[1] > 1
        self.splits_batch = split and whole and isinstance(self.source, _TensorSource) and batch_size is None
        if split:
            self.source = _split_source(self.source, batch_size, whole)
        # a share of data sharded across ranks may be empty (see above); alone, empty data is refused
        self.empty_ok = shard != "none" and distributed.rank_world()[1] > 1
        if isinstance(self.source, _TensorSource):
            self.source.empty_ok = self.empty_ok
        self.cache: list[Batch] | None = None
        self.n_samples: int | None = None
        self.n_batches: int | None = None
        self.all_pairs = True
        self.checker: validation.BatchChecker | None = None
        self._prechecked = False
        # the target policy of batches other than (X, y) pairs, set on the first such batch (_fit_targets)
        self._target_kind: validation.LossKind | None = None
        self._ignore_index: int | None = None
        self._out_shape: tuple[int, ...] | None = None

    @property
    def streamed(self) -> bool:
        """Whether the data is re-read on every pass (not held in memory)."""
        return self.cache is None and not self.in_memory

    @property
    def random_order(self) -> bool:
        """Whether the source reads its samples in a random order (a ``DataLoader`` with a random sampler).

        The sampler its batches are drawn from: a plain ``BatchSampler``'s (given as ``batch_sampler``, the loader's
        own ``sampler`` is a ``SequentialSampler`` it never reads), else the loader's.
        """
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SubsetRandomSampler, WeightedRandomSampler

        if not isinstance(self.raw, DataLoader):
            return False
        batches = self.raw.batch_sampler
        sampler = batches.sampler if isinstance(batches, BatchSampler) else self.raw.sampler
        return isinstance(sampler, RandomSampler | SubsetRandomSampler | WeightedRandomSampler)

    @property
    def ordered(self) -> bool:
        """Whether the ranks' shares, concatenated in rank order, are the data in order (not a strided split)."""
        return not isinstance(self.source, _StridedSource)

    def describe(self) -> str:
        """The data's description for provenance (the caller's tensors as given, not as cast)."""
        d = self.raw
        if isinstance(self.source, _TensorSource):
            ts = [torch.as_tensor(t) for t in d]
            if len(ts) == 2:
                return describe_data(tuple(ts))
            return "tensors " + ", ".join(f"{tuple(t.shape)} {str(t.dtype)[6:]}" for t in ts)
        n = (
            f"{self.n_batches} batches, {self.n_samples} samples"
            if self.n_batches is not None
            else (f"{len(d)} batches" if hasattr(d, "__len__") else "batches")
        )
        return f"{type(d).__name__} of {n}"

    def _normalize(self, raw: Any, index: int) -> Batch:
        """Cast, check (first pass) and split one raw batch."""
        pair = isinstance(raw, tuple | list) and len(raw) == 2 and all(isinstance(t, Tensor | np.ndarray) for t in raw)
        if pair and not self.closure:
            x, y = (torch.as_tensor(t) for t in raw)
            if self.checker is None:
                self.checker = validation.BatchChecker(self.model, self.loss, dtype=self.dtype, device=self.device)
            if self.cache is None and self.n_samples is None and not self._prechecked:
                # The first pass normalizes every batch (and checks it when validate): validate=False skips the
                # checks only, never the casts and target shapes, or the same data would give another loss.
                single = isinstance(self.source, _TensorSource) and len(self.source) == 1
                x, y = self.checker(x, y, index, single, check=self.validate)  # type: ignore[assignment]
            else:  # a later pass (streamed data), or a pair normalized whole: the first pass's casts again
                x, y = self.checker.recast_inputs(x), self.checker.recast_targets(y.to(self.device))
            return split_batch((x, y), index)
        self.all_pairs = False
        raw = to_device(raw, self.dtype, self.device)
        if self.validate and self.n_samples is None:
            for t in _flat_tensors(raw):
                if t.is_floating_point():
                    validation.check_finite(t, f"data (batch {index})", "Drop or impute those samples.")
        b = split_batch(raw, index)
        if not self.closure and isinstance(b.targets, Tensor):
            b.targets = self._fit_targets(b, index)
        return b

    def _fit_targets(self, b: Batch, index: int) -> Tensor:
        """The targets of a batch other than an ``(X, y)`` pair, normalized by the pairs' policy.

        Class labels ``(N, 1)`` squeezed, regression targets shaped like the outputs (probed once on two
        samples), labels checked against the output width on the first pass (:mod:`landscape.validation`).
        """
        y, where, first = cast(Tensor, b.targets), f"data (batch {index})", self.n_samples is None
        if self._target_kind is None:
            spec = self.loss if self.loss is not None else default_loss_name(y)
            fn = LOSSES[spec] if isinstance(spec, str) else spec  # what the problem calls (cross-entropy ignores -100)
            self._target_kind, self._ignore_index = validation.loss_kind(fn)
            self._out_shape = _output_shape(self.model, b)
        kind, out = self._target_kind, self._out_shape
        with warnings.catch_warnings():
            if not first:  # the first pass said it
                warnings.simplefilter("ignore", validation.InputWarning)
            y = validation.normalize_targets(y, self.dtype, kind, argname=where)
            if kind is validation.LossKind.CLASSIFICATION and out and self.validate and first:
                validation.check_labels(y, out[0], argname=where, ignore_index=self._ignore_index, out_shape=out)
            elif kind is validation.LossKind.REGRESSION and out is not None:
                y = validation.match_regression_shape(y, out, where, note=first)
        return y

    def batches(self) -> Iterator[Batch]:
        """The normalized batches, in order: from memory when held, else read from the source.

        The first pass validates, counts the samples, and keeps the batches when they fit the memory budget.
        """
        if self.cache is not None:
            yield from self.cache
            return
        first = self.n_samples is None
        src = self.source
        # not again after a first pass left early (a peek, as Problem.default_metrics's): the pair is normalized
        fresh = first and not self._prechecked and not self.closure
        if fresh and isinstance(src, _TensorSource) and len(src.tensors) == 2 and src.n > 0:
            # A tensor pair is normalized (and checked) whole, so messages give indices into the caller's tensors.
            self.checker = validation.BatchChecker(self.model, self.loss, dtype=self.dtype, device=self.device)
            x, y = self.checker(*src.tensors, 0, True, check=self.validate)
            assert y is not None  # targets in, targets out
            src.tensors = (x, y)
            self._prechecked = True
        keep: list[Batch] | None = [] if first else None
        held, n, count = 0, 0, 0
        for i, raw in enumerate(self.source):
            b = self._normalize(raw, i)
            n += b.size
            count += 1
            if keep is not None:
                held += _nbytes(b.raw)
                if self.in_memory or held <= self.memory_budget:
                    keep.append(b)
                else:
                    keep = None
            yield b
        if count == 0 and not self.empty_ok:
            raise validation.InputError("data holds no batch; expected at least one sample")
        if first:
            self.n_samples, self.n_batches = n, count
            self.cache = keep

    def held_pairs(self) -> list[Batch] | None:
        """All batches, when every one is an ``(X, y)`` tensor pair and they are held in memory; else ``None``."""
        batches = list(self.batches())
        if not self.all_pairs or self.cache is None:
            return None
        return batches
