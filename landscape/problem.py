"""The problem: a model, its data and its loss, normalized once (the package's one centre).

Every analyzer takes a :class:`Problem` first; a bare ``(model, data, loss)`` is a shorthand that builds one
(:func:`as_problem`). A problem owns:

* **the data**, read batch by batch. Accepted: a tensor pair ``(X, y)`` (or a longer tuple of tensors,
  the last being the targets), a ``torch.utils.data.Dataset`` (wrapped in a ``DataLoader``), a
  ``DataLoader``, or any re-iterable of batches. A batch is a tensor (inputs only), a tuple/list
  ``(*inputs, targets)`` (the model is called as ``model(*inputs)``), or a mapping (the model is called
  as ``model(**batch)`` without the target key, the first of ``labels``, ``label``, ``targets``,
  ``target``, ``y`` present). numpy arrays become tensors; floating tensors are cast to the compute
  dtype. A one-shot iterator (a generator) is read once and kept. Any other source is **streamed**:
  re-read on every pass, and kept in memory after the first pass only when the cast batches fit
  ``memory_budget``.
* **the loss**, in one of three forms:

  - a name: ``"cross_entropy"``, ``"nll"``, ``"mse"``, ``"l1"``, ``"huber"``, ``"smooth_l1"``,
    ``"bce"``, ``"bce_with_logits"``; ``None`` picks cross-entropy for integer targets, MSE otherwise
    (the same default everywhere in the package);
  - ``loss(outputs, targets) -> scalar`` batch mean (e.g. ``nn.CrossEntropyLoss()``);
  - a *closure* ``loss(model, batch) -> scalar`` for anything else (language models, several
    outputs, auxiliary terms). ``model`` is a :class:`FunctionalModel`: call it like the model (it runs
    at the evaluated point); its attributes are the model's. ``batch`` is the batch as the data gives
    it (cast). The closure returns the batch mean, or a pair ``(sum, count)`` for a mean over another
    unit (tokens). A callable is a closure when ``loss_form="batch"``, or, with ``loss_form="auto"``,
    when its first parameter is named ``model``, ``fmodel``, ``net``, ``module`` or ``network``.

* **the output rule** (:func:`model_output`): a tensor is the output; an object with a ``logits``
  attribute or key (Hugging Face ``ModelOutput``) gives its ``logits``; another mapping its first
  value, a tuple or list its first element.
* **the one mean loss, gradient and Hessian-vector product** over the data
  (:meth:`Problem.loss`, :meth:`Problem.grad`, :meth:`Problem.hvp`): per batch the sum of the loss over
  its samples (batch mean times batch size, or the closure's ``(sum, count)``), summed over batches in float64,
  passed through the one reduction hook :meth:`Problem.reduce_sums` (identity in one process; the place where
  sums are all-reduced across ranks under ``torch.distributed``), then divided by the total count and returned
  in the compute dtype. The result is the mean over the dataset whatever the batching.
* **the parameter layout** (:attr:`Problem.layout`, built once), the compute ``dtype`` and ``device``,
  the BatchNorm mode (``"eval"``: running statistics; ``"train"``: each batch's statistics, running
  buffers never written; Dropout is always off), input validation (:mod:`landscape.validation`: NaN/inf,
  labels, dtypes, empty data) and the data description that goes into provenance.
* **differentiable kernels**: second-order products run under :func:`differentiable_kernels` (the math
  scaled-dot-product-attention kernel, whose backward is differentiable; the fused CPU flash kernel's
  is not), and restore the caller's kernel settings after; :attr:`Problem.notes` says so.

The model is never modified: it is evaluated through :func:`torch.func.functional_call` on copies of
its parameters and buffers; its train/eval flags are restored after every call.

Example:
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> prob = Problem(net, (torch.randn(10, 3), torch.randint(0, 2, (10,))), "cross_entropy")
    >>> prob.grad().shape
    torch.Size([26])
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed, validation
from landscape._batch import TARGET_KEYS, Batch, BatchReader
from landscape._loss import (
    LOSSES,
    check_scalar,
    check_sum_count,
    check_total,
    class_targets,
    count_correct,
    default_loss_name,
    is_closure,
    loss_name,
    sum_reduced,
    weighted_count,
    weighted_mean,
    weighted_terms,
)
from landscape._options import check_choice, check_count, parse_bytes
from landscape._options import renamed as renamed  # re-exported: its users import it from here
from landscape._weights import ModelWeights, compute_placement
from landscape.functional import KERNEL_NOTE as KERNEL_NOTE  # re-exported
from landscape.functional import FunctionalModel, differentiable_kernels, model_output, plain_batch_norm
from landscape.params import ParamLayout

__all__ = [
    "Problem",
    "Batch",
    "FunctionalModel",
    "as_problem",
    "model_output",
    "count_correct",
    "differentiable_kernels",
    "LOSSES",
    "TARGET_KEYS",
]


class Problem:
    """A model, its data and its loss: the one mean loss, gradient and HVP over the data.

    See the module docstring for the accepted data, losses and outputs.

    Args:
        model: The network (never modified).
        data: A tensor pair ``(X, y)`` (or ``(*inputs, y)``), a ``Dataset``, a ``DataLoader`` or a
            re-iterable of tuple / mapping batches.
        loss: A loss name, ``loss(outputs, targets)`` or a closure ``loss(model, batch)``; ``None``:
            cross-entropy for integer targets, MSE otherwise.
        loss_form: ``"auto"``, ``"outputs"`` (``loss(outputs, targets)``) or ``"batch"`` (a closure).
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (each batch's statistics).
        dtype: Compute dtype (e.g. ``torch.float64`` for references); default the model's.
        device: Compute device; default the model's.
        batch_size: Batch size for a tensor pair (default: one batch) or a ``Dataset`` (default 64).
        memory_budget: Bytes (or ``"512MB"``) the cast batches may take to be kept after the first pass;
            above it the data is streamed on every pass. Default 1 GiB.
        data_description: The data's description for provenance (default: derived from the data).
        validate: Check the data and weights (NaN/inf, label range) on the first pass. ``False`` skips these
            checks only: the data is normalized either way (casts, class labels ``(N, 1)`` squeezed, regression
            targets shaped like the outputs), so valid data gives the same loss, and data without a sample is
            refused either way.
        shard: How the data is held under ``torch.distributed`` (:mod:`landscape.distributed`):

            * ``"none"``: every rank holds the same data; analyzers split points.
            * ``"split"``: keep only this rank's contiguous share of the data given. Rows of a tensor pair; a
              ``Dataset``; a ``DataLoader`` over a map-style dataset read in order or shuffled: a share of the
              dataset's indices (or a ``SubsetRandomSampler``'s) in a fixed order, never of the loader's shuffle,
              which each rank draws for itself (sums do not depend on the order; a shuffling loader shuffles its
              share). Only the share's samples are read; with ``drop_last``, a share of those one process reads.
              The rebuilt loader keeps the loader's settings but its dataset (a ``Subset`` of it), its sampler (the
              share's) and ``drop_last`` (applied before the split). Batches of a list. Other iterables, a
              ``DataLoader`` with a batch sampler of another kind than ``BatchSampler`` or a sampler of its own
              among them: batch ``i`` goes to rank ``i % world`` (every rank must read the same batches: seed
              a random sampler alike on every rank). A loader sampling with replacement or through a
              ``DistributedSampler`` is refused, naming the fix. A model with BatchNorm gets whole batches (each
              rank's batches are one process's, so are batch statistics); ``bn_mode="train"`` is refused on one
              tensor-pair batch split by samples (pass ``batch_size``).
            * ``"given"``: each rank was given its own share.

            With ``"split"`` or ``"given"``, every sum over the data is all-reduced: means, gradients and HVPs
            are over all ranks' data, and every rank must make the same calls. A rank's share may be empty (fewer
            samples or batches than ranks): it contributes zero sums and counts; when every share is empty each
            rank raises :class:`~landscape.validation.InputError`. Without a process group all three are the same
            (and empty data is refused).

    Attributes:
        model: The network.
        layout: Its parameter layout (all floating parameters, frozen ones included, built once).
        dtype: Compute dtype.
        device: Compute device.
        bn_mode: ``"eval"`` or ``"train"``.
        closure: Whether the loss is a closure over ``(model, batch)``.
        notes: What was done beyond the plain definition (kernel choices), for provenance.
        hvp_count: Number of Hessian-vector products computed (one per vector).

    Raises:
        InputError: On bad data or weights (named, with the fix); ``ValueError`` on a bad option.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss: str | Callable[..., Any] | None = None,
        *,
        loss_form: str = "auto",
        bn_mode: str = "eval",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        memory_budget: int | str | None = None,
        data_description: str | None = None,
        validate: bool = True,
        shard: str = "none",
    ) -> None:
        if isinstance(model, Problem):
            raise validation.InputTypeError("model is already a Problem; use it directly")
        if not isinstance(model, nn.Module):
            raise validation.InputTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(data, Problem):
            raise validation.InputTypeError("data is already a Problem; pass it as the first argument instead")
        closure = is_closure(loss, loss_form)  # raises on an unknown loss, loss name or loss_form
        self.bn_mode: str = check_choice(bn_mode, ("eval", "train"), "bn_mode")
        check_choice(shard, distributed.SHARD_MODES, "shard")
        batch_size = check_count(batch_size, "batch_size")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating-point torch dtype (e.g. torch.float64) or None, got {dtype}")
        distributed.check_not_fsdp(model)
        if validate:
            validation.check_model(model)
        self.model = model
        self.layout = ParamLayout.from_model(model)
        self.dtype, self.device = compute_placement(model, dtype, device)
        self.loss_spec = loss
        self.closure = closure
        self.memory_budget = parse_bytes(memory_budget)
        self.batch_size = batch_size
        self.validate = validate
        self.notes: list[str] = []
        self.hvp_count = 0
        self.shard = shard
        self._total_samples: int | None = None
        self._data = BatchReader(
            data,
            model,
            loss,
            closure=self.closure,
            dtype=self.dtype,
            device=self.device,
            batch_size=batch_size,
            memory_budget=self.memory_budget,
            validate=validate,
            shard=shard,
        )
        self._check_bn_split(self.bn_mode)
        self._total: float | None = None
        self._weighted: bool | None = None  # see weighted_mean (cached: it reads every batch's targets)
        self._tensor_output: bool | None = None
        self._loss_fn: Callable[..., Any] | None = None
        self._described = data_description
        self._weights = ModelWeights(model, self.layout, self.dtype, self.device)

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        return f"Problem({type(self.model).__name__}, {self.description}, loss={self.loss_name})"

    @property
    def numel(self) -> int:
        """Length ``D`` of the parameter vector."""
        return self.layout.numel

    @property
    def theta0(self) -> Tensor:
        """The model's own parameter vector ``(D,)`` in the compute dtype (a copy)."""
        return self.layout.flatten(self._weights.params).clone()

    @property
    def loss_name(self) -> str:
        """The loss's name for provenance (``"closure:<name>"`` for a closure)."""
        return loss_name(self.loss_spec, self.closure)

    @property
    def n_samples(self) -> int:
        """Number of samples (one pass over the data the first time)."""
        if self._data.n_samples is None:
            for _ in self.batches():
                pass
        return int(self._data.n_samples)  # type: ignore[arg-type]

    @property
    def data(self) -> Any:
        """The data as given (before normalization; this rank's share is read from it)."""
        return self._data.raw

    @property
    def description(self) -> str:
        """The data's description for provenance."""
        return self._described if self._described is not None else self._data.describe()

    @property
    def streamed(self) -> bool:
        """Whether the data is re-read on every pass (not held in memory)."""
        return self._data.streamed

    def provenance(self) -> dict[str, Any]:
        """What goes into a result's provenance: data, loss, dtype, BatchNorm mode, notes."""
        return {
            "data": self.description,
            "loss": self.loss_name,
            "dtype": str(self.dtype).replace("torch.", ""),
            "bn_mode": self.bn_mode,
            "notes": list(self.notes),
        }

    def total_count(self) -> float:
        """The denominator of the mean: the number of samples, or the summed counts of the batches' loss terms.

        Counts: a ``(sum, count)`` closure's (one forward pass without gradients), or the summed class weights
        of a weighted-mean loss (see :meth:`weighted_mean`; read from the targets). Cached.
        """
        if not self.closure and sum_reduced(self.loss_spec):
            return 1.0  # the loss is the sum over the data (see batch_terms)
        if not self.closure and not self.weighted_mean():
            return float(self.total_samples if self.sharded else self.n_samples)
        if self._total is None:
            if self.closure:
                fm = self.functional()
                with torch.no_grad():
                    count = sum(self.batch_terms(fm, b)[1] for b in self.batches())
            else:
                count = 0.0
                for b in self.batches():
                    y = self.targets_of(b)
                    c = weighted_count(self.loss_fn_for(y), y)
                    count += float(b.size) if c is None else c
            self._total = check_total(float(self.reduce_sums([torch.tensor(count, dtype=torch.float64)])[0]))
        return self._total

    def with_options(self, *, bn_mode: str | None = None) -> Problem:
        """The same problem (same data, caches and layout) with another BatchNorm mode."""
        if bn_mode is None or bn_mode == self.bn_mode:
            return self
        new = copy.copy(self)
        new.bn_mode = self._check_bn_split(check_choice(bn_mode, ("eval", "train"), "bn_mode"))
        new.notes = self.notes  # shared: provenance of either says what ran
        return new

    def _check_bn_split(self, bn_mode: str) -> str:
        """``bn_mode``, unless ``"train"`` while the ranks hold parts of one batch (whose statistics would differ).

        Raises:
            ValueError: Then, naming the fix (``batch_size``: the ranks share whole batches).
        """
        if bn_mode == "train" and self._data.splits_batch:
            raise ValueError(
                "bn_mode='train' normalizes by each batch's statistics, but shard='split' divides this tensor pair's "
                "one batch among the ranks, whose statistics would differ from the whole batch's; pass batch_size= "
                "(the ranks then share whole batches) or bn_mode='eval'"
            )
        return bn_mode

    def with_model(self, model: nn.Module) -> Problem:
        """The same data and loss (batches read and checked once, shared) with another model.

        For the next snapshot of a trajectory, say. The weights are checked; the compute dtype stays the problem's.
        """
        if self.validate:
            validation.check_model(model)
        new = copy.copy(self)
        new.model = model
        new.layout = ParamLayout.from_model(model)
        new.notes = list(self.notes)
        new.hvp_count = 0
        new._tensor_output = None
        new._weights = ModelWeights(model, new.layout, self.dtype, self.device)
        return new

    def compute_model(self) -> nn.Module:
        """The model in the compute dtype and device: the model itself, or a private cast copy (built once)."""
        return self._weights.compute_model()

    def engine_loss(self) -> str | Callable[[Tensor, Tensor], Tensor]:
        """The ``(outputs, targets)`` loss for the evaluation engine (names it computes natively stay names).

        Raises:
            ValueError: For a closure loss.
        """
        if self.closure:
            raise ValueError("a closure loss has no (outputs, targets) form")
        fn = self.loss_fn_for(next(iter(self.batches())).targets)
        return self.loss_spec if self.loss_spec in ("cross_entropy", "mse") else fn

    # ------------------------------------------------------------------ data
    def batches(self) -> Iterator[Batch]:
        """The normalized batches, in order: from memory when held, else read from the source.

        The first pass validates, counts the samples, and keeps the batches when they fit the memory budget.
        """
        return self._data.batches()

    def pairs(self) -> list[tuple[Tensor, Tensor]] | None:
        """The data as checked ``(X, y)`` tensor batches when it is that simple and held in memory, else ``None``.

        The evaluation engine's fast executors and the Hessian operator's kernels take this form. When sharded, a
        collective: pairs on every rank or on none (any rank's share not that simple, or empty, makes it ``None``).
        """
        if self.closure:
            return None
        batches = self._data.held_pairs()
        if batches and self._tensor_output is None:  # the engine and the Hessian kernels call the model for a tensor
            with torch.no_grad():
                x = batches[0].inputs[0][:2]
                try:
                    self._tensor_output = isinstance(self.functional()(x), Tensor)
                except RuntimeError as e:
                    raise self._explained(batches[0], e) from e
        # Every rank must take the same path (the engine's executors and its general path make different
        # collectives): the fast one only when every rank's share is simple, so never with an empty share.
        simple = not self._any_rank(not (batches and self._tensor_output))
        if not simple:
            return None
        assert batches is not None  # simple
        out = validation.ValidBatches((b.inputs[0], b.targets) for b in batches)
        out.dtype, out.n_samples, out.targets_checked = self.dtype, self.n_samples, True
        return out

    def weighted_mean(self) -> bool:
        """Whether the ``(outputs, targets)`` loss weights this data's samples unequally (class weights, ignore_index).

        Then each batch contributes its weighted sum and summed weights (:func:`landscape._loss.weighted_terms`),
        so every mean is the loss of the whole data in one call, however the data is cut into batches. The
        evaluation engine, which cuts batches its own way and gathers every label, takes the problem's batches.
        Cached (it reads every batch's targets once).
        """
        if self.closure:
            return False
        if sum_reduced(self.loss_spec):  # a sum over the data: the engine's own batch-size weighting does not apply
            return True
        if self._weighted is None:
            batches = list(self.batches())
            first = batches[0].targets if batches else None  # an empty share (sharded) has none: the others decide
            flag = first is not None and weighted_mean(self.loss_fn_for(first), (b.targets for b in batches))
            # every rank must take the same path (total_count reduces across ranks on one)
            self._weighted = self._any_rank(flag)
        return self._weighted

    # ------------------------------------------------------------------ loss
    def loss_fn_for(self, targets: Tensor | None) -> Callable[[Tensor, Tensor | None], Tensor]:
        """The batch-mean ``loss(outputs, targets)`` (the default resolved from the targets' dtype)."""
        if self._loss_fn is None:
            fn = self.loss_spec
            if fn is None:
                fn = default_loss_name(targets)
                self.loss_spec = fn
            self._loss_fn = LOSSES[fn] if isinstance(fn, str) else fn
        return self._loss_fn

    def functional(self, theta: Tensor | Mapping[str, Tensor] | None = None) -> FunctionalModel:
        """The model at ``theta`` (``(D,)`` vector or parameter dict; default the model's own point)."""
        return self._weights.functional(theta, self.bn_mode == "train")

    def outputs(self, fm: FunctionalModel, batch: Batch) -> Tensor:
        """The output tensor of one batch (the output rule applied).

        Raises:
            InputTypeError: If the model refuses a mapping batch's keys as keyword arguments (naming the rule).
        """
        try:
            out = fm(*batch.inputs, **batch.kwargs)
        except RuntimeError as e:  # a layer the inputs do not fit (a wrong input size, (y, X) given for (X, y))
            raise self._explained(batch, e) from e
        except TypeError as e:
            if not batch.kwargs:
                raise
            call = ", ".join(f"{k}=..." for k in batch.kwargs)
            why = "; a closure calls the model its own way, but outputs (distances, metrics) follow this rule"
            raise validation.InputTypeError(
                f"the model refused its batch ({e}): a mapping batch calls model(**batch) without its target key "
                f"(here model({call})); give batches the model takes that way, or (inputs, targets) tuples"
                + (why if self.closure else "")
            ) from e
        return model_output(out)

    def _explained(self, batch: Batch, error: RuntimeError) -> Exception:
        """The model's error on a batch as an :class:`InputError` naming the layer the inputs do not fit, else itself.

        Only after a forward pass failed (:func:`~landscape.validation.explain_forward_error`): no cost otherwise.
        """
        return validation.explain_forward_error(self.model, batch.inputs, batch.kwargs, batch.targets) or error

    def batch_terms(self, fm: FunctionalModel, batch: Batch) -> tuple[Tensor, float]:
        """``(sum of the loss over the batch's samples, count)`` at the point ``fm``."""
        if self.closure:
            # A closure is a callable, except under loss_form="batch" with a loss name (then this TypeError).
            r = cast("Callable[..., Any]", self.loss_spec)(fm, batch.raw)
            if isinstance(r, tuple | list):
                return check_sum_count(r)
            return check_scalar(r) * batch.size, float(batch.size)
        targets = self.targets_of(batch)
        return self.loss_terms(self.outputs(fm, batch), targets, batch.size)

    def loss_terms(self, out: Tensor, targets: Tensor, size: int) -> tuple[Tensor, float]:
        """``(sum, count)`` of the ``(outputs, targets)`` loss on one batch of ``size`` samples, given its outputs.

        A weighted mean gives its weighted sum and summed weights; a sum-reduced torch loss module its sum,
        counted as the batch's share of the data (the counts add up to one: the loss is the sum over the data);
        any other batch mean, times the batch size, and the size.
        """
        fn = self.loss_fn_for(targets)
        weighted = weighted_terms(fn, out, targets)
        if weighted is not None:
            return weighted
        if sum_reduced(fn):
            n = float(self.total_samples if self.sharded else self.n_samples)
            return check_scalar(fn(out, targets)), size / n
        return check_scalar(fn(out, targets)) * size, float(size)

    def targets_of(self, batch: Batch) -> Tensor:
        """The targets of a batch for the ``(outputs, targets)`` loss.

        Raises:
            InputError: If the batch carries none (for a mapping batch, naming the keys that hold targets).
        """
        if batch.targets is not None:
            return batch.targets
        where = ""
        if isinstance(batch.raw, Mapping):
            keys = ", ".join(repr(k) for k in TARGET_KEYS)
            where = f" (a mapping batch holds them under one of {keys}; this one has {', '.join(map(repr, batch.raw))})"
        raise validation.InputError(
            f"the batches carry no targets{where}; give (inputs, targets) batches, name the targets' key so, or "
            "pass a closure loss(model, batch)"
        )

    def reduce_sums(self, sums: list[Tensor]) -> list[Tensor]:
        """The one reduction hook: per-process sums over batches (the last is the count) -> global sums.

        Identity in one process. Under ``torch.distributed`` with data sharded across ranks this is where
        the sums are all-reduced, so every mean (loss, gradient, HVP) is the mean over all ranks' data.
        """
        if self.shard == "none":
            return sums
        return distributed.all_reduce_sum(sums)

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank: a collective when sharded, ``flag`` itself otherwise."""
        if not self.sharded:
            return flag
        return float(self.reduce_sums([torch.tensor([float(flag)], dtype=torch.float64)])[0][0]) > 0

    def _means(self, sums: list[Tensor], count: float, dtype: torch.dtype) -> list[Tensor]:
        """Sums over this process's batches divided by the count (in ``dtype``), both through :meth:`reduce_sums`."""
        if self.sharded:
            self.total_samples  # noqa: B018 - (collective, cached) raises when every rank's share is empty
        *totals, n = self.reduce_sums([*sums, torch.tensor(count, dtype=dtype, device=self.device)])
        check_total(float(n))
        return [t / n for t in totals]

    @property
    def sharded(self) -> bool:
        """Whether the data is split across the ranks of a process group of more than one process."""
        return self.shard != "none" and distributed.rank_world()[1] > 1

    @property
    def total_samples(self) -> int:
        """Number of samples over all ranks (:attr:`n_samples` is this rank's; collective when sharded, cached).

        Raises:
            InputError: When sharded and every rank's share is empty (on every rank: the same error as one
                process's empty data). One empty share is fine: it contributes zero sums and counts.
        """
        if self._total_samples is None:
            n = torch.tensor(float(self.n_samples), dtype=torch.float64)
            total = int(self.reduce_sums([n])[0])
            if total == 0:  # only sharded: alone, the first pass over empty data raised already
                world = distributed.rank_world()[1]
                raise validation.InputError(
                    f"data holds no sample on any of the {world} ranks (shard={self.shard!r}); expected at least one "
                    "sample in all"
                )
            self._total_samples = total
        return self._total_samples

    @property
    def reshuffled(self) -> bool:
        """Whether every pass reads the samples in a new order: a shuffling ``DataLoader`` streamed, not held.

        One pass over such data when it was never read (that pass decides whether the batches are kept). When
        sharded, a collective: true on every rank when any rank re-reads its share.
        """
        if not self._data.random_order:
            return False
        # the first pass (counting) decides whether batches are kept; the same answer on every rank (callers refuse
        # on it before collectives): any rank's says
        return self._any_rank(self.n_samples > 0 and self.streamed)

    @property
    def shard_ordered(self) -> bool:
        """Whether the ranks' shares, concatenated in rank order, are the data in order (not a strided split)."""
        return self._data.ordered

    def objective(self) -> Callable[[Tensor], Tensor]:
        """The mean loss as a pure function ``f(theta (D,)) -> scalar``, differentiable by ``torch.func``.

        The same sum over batches over the same total count as :meth:`loss`, without ``no_grad`` or host
        syncs, so ``torch.func.grad`` / ``jvp`` / ``vmap`` compose with it (forward-mode needs every op of
        the model to support it). BatchNorm on batch statistics (``bn_mode="train"``, or without running
        statistics) runs as plain ops here: ``torch.func.hessian`` through ``F.batch_norm`` was wrong.

        Raises:
            ValueError: When the data is sharded across ranks: the function would sum this rank's batches only
                (a share of the mean), and a collective cannot run inside ``torch.func`` transforms.
        """
        if self.sharded:
            raise ValueError(
                f"objective() is a pure function of this process's data, but the data is sharded across ranks "
                f"(shard={self.shard!r}): it would give this rank's share of the mean. Use loss(), grad() and hvp() "
                "(or the analyzers), whose sums are all-reduced, or shard='none' with the whole data on every rank"
            )
        total = self.total_count()
        # batch-statistics BatchNorm (train mode, or untracked) as plain ops: torch.func.hessian through
        # F.batch_norm was wrong (see functional.plain_batch_norm)
        bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())

        def f(theta: Tensor) -> Tensor:
            fm = self.functional(theta)
            out: Tensor | None = None
            with plain_batch_norm() if bn else contextlib.nullcontext():
                for b in self.batches():
                    t, _ = self.batch_terms(fm, b)
                    out = t if out is None else out + t
            assert out is not None  # batches() raises on data without a batch (alone; sharded data is refused above)
            return out / total

        return f

    def _theta(self, theta: Tensor | None) -> Tensor:
        if theta is None:
            return self.theta0
        theta = torch.as_tensor(theta)
        validation.check_vector(theta, "theta", self.layout)
        return theta.detach().to(device=self.device, dtype=self.dtype)

    def loss(self, theta: Tensor | None = None) -> Tensor:
        """Mean loss over the data at ``theta`` (default the model's point); a 0-d tensor."""
        fm = self.functional(self._theta(theta))
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0.0
        with torch.no_grad():
            for b in self.batches():
                t, c = self.batch_terms(fm, b)
                total += t.double()
                count += c
        (mean,) = self._means([total], count, torch.float64)
        return mean.to(self.dtype)

    def loss_and_grad(self, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mean loss, gradient (D,))`` at ``theta``, one pass over the data, in the compute dtype.

        The batches' sums are accumulated in float64 (as :meth:`loss`): in float32 a mean over many batches
        drifted (Hessian products off by 9.5 float32 ulps over 2,000 batches, the gradient by 1.7).
        """
        th = self._theta(theta).requires_grad_(True)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        g = torch.zeros_like(th, dtype=torch.float64)
        count = 0.0
        with torch.enable_grad():
            for b in self.batches():
                fm = self.functional(th)
                t, c = self.batch_terms(fm, b)
                if t.requires_grad:
                    (gb,) = torch.autograd.grad(t, th, allow_unused=True)
                    if gb is not None:
                        g += gb
                total += t.detach()
                count += c
        mean, g = self._means([total, g], count, torch.float64)
        return mean.to(self.dtype), g.to(self.dtype)

    def grad(self, theta: Tensor | None = None) -> Tensor:
        """Gradient ``(D,)`` of the mean loss at ``theta``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, v: Tensor, theta: Tensor | None = None) -> Tensor:
        """Hessian-vector products of the mean loss at ``theta``: ``v`` ``(D,)`` or ``(D, k)``, same shape out.

        Runs under :func:`differentiable_kernels` (math attention); one gradient graph per batch serves all
        ``k`` vectors. The batches' products are accumulated in float64 and returned in the compute dtype.
        """
        V = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        one = V.dim() == 1
        V = V[:, None] if one else V
        if V.dim() != 2 or V.shape[0] != self.numel:
            raise ValueError(f"v must have shape ({self.numel},) or ({self.numel}, k), got {tuple(V.shape)}")
        th = self._theta(theta).requires_grad_(True)
        out = torch.zeros_like(V, dtype=torch.float64)
        count = 0.0
        with torch.enable_grad(), differentiable_kernels():
            for b in self.batches():
                t, c = self.batch_terms(self.functional(th), b)
                count += c
                if not t.requires_grad:
                    continue
                (g,) = torch.autograd.grad(t, th, create_graph=True, allow_unused=True)
                if g is None or not g.requires_grad:
                    continue
                for j in range(V.shape[1]):
                    (hv,) = torch.autograd.grad(g, th, V[:, j], retain_graph=j + 1 < V.shape[1], allow_unused=True)
                    if hv is not None:
                        out[:, j] += hv
        self._note_kernels()
        self.hvp_count += V.shape[1]
        (out,) = self._means([out], count, torch.float64)
        out = out.to(self.dtype)
        return out[:, 0] if one else out

    def _note_kernels(self) -> None:
        if KERNEL_NOTE not in self.notes:
            self.notes.append(KERNEL_NOTE)

    def dense_hessian(self, theta: Tensor | None = None) -> Tensor:
        """The full ``(D, D)`` Hessian of the mean loss (``D`` HVPs; for small models and references)."""
        return self.hvp(torch.eye(self.numel, dtype=self.dtype, device=self.device), theta)

    # ------------------------------------------------------------------ many points
    def default_metrics(self) -> tuple[str, ...]:
        """``("loss", "accuracy")`` for class targets under an ``(outputs, targets)`` loss, else ``("loss",)``."""
        if self.closure:
            return ("loss",)
        b = next(iter(self.batches()), None)
        integer = b is not None and class_targets(b.targets) and b.targets.dim() >= 1  # type: ignore[union-attr]
        if self.sharded:  # the same metrics on every rank: an empty share has no targets, the ranks with data decide
            self.total_samples  # noqa: B018 - (collective, cached) raises when every share is empty
            vote = torch.tensor([float(b is not None), float(integer)], dtype=torch.float64)
            held, votes = self.reduce_sums([vote])[0].tolist()
            integer = votes == held
        return ("loss", "accuracy") if integer else ("loss",)

    def evaluate(
        self,
        points: Any,
        metrics: Sequence[Any] | None = None,
        *,
        chunk_size: int = 16,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Metrics at many points, one point at a time, data outer (each batch read once per chunk of points).

        The general path behind :func:`~landscape.evaluate.points.evaluate_points` for problems its fast executors
        do not take (closures, mapping or multi-input batches, streamed data).

        Args:
            points: ``(P, D)`` matrix, an iterable of ``(D,)`` vectors, or :class:`~landscape.evaluate.AffinePoints`.
            metrics: ``"loss"``, ``"accuracy"``, ``"outputs"`` and/or ``BatchMetric`` callables
                ``(outputs (P, B, *out), targets, start) -> (P,)`` sums; default :meth:`default_metrics`.
            chunk_size: Points per pass over the data.
            progress: A tqdm bar over points.

        Returns:
            ``{name: (P,) float64}`` (``"outputs"``: ``(P, N, *out)``), as numpy arrays.

        Raises:
            ValueError: On unknown metrics, or accuracy/outputs under a closure loss.
        """
        from landscape.evaluate._general import evaluate_problem

        return evaluate_problem(self, points, metrics, chunk_size=chunk_size, progress=progress)


def as_problem(
    problem: Problem | nn.Module,
    data: Any = None,
    loss: str | Callable[..., Any] | None = None,
    *,
    bn_mode: str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    memory_budget: int | str | None = None,
    data_description: str | None = None,
    argname: str = "problem",
) -> Problem:
    """A :class:`Problem` as given, or built from the shorthand ``(model, data, loss)``.

    Args:
        problem: A problem, or a model (then ``data`` is required).
        data: The data of the shorthand; must be ``None`` with a problem.
        loss: The loss of the shorthand; must be ``None`` with a problem.
        bn_mode: Shorthand only: see :class:`Problem` (default ``"eval"``).
        dtype: Shorthand only: see :class:`Problem`.
        batch_size: Shorthand only: see :class:`Problem`.
        memory_budget: Shorthand only: see :class:`Problem`.
        data_description: Shorthand only: see :class:`Problem`.
        argname: The first argument's name, for messages.

    Raises:
        InputTypeError: On a problem with data or loss, or a model without data.
    """
    if isinstance(problem, Problem):
        if data is not None or loss is not None:
            raise validation.InputTypeError(
                f"{argname} is a Problem, which already holds its data and loss; do not pass data or loss_fn too"
            )
        return problem
    if not isinstance(problem, nn.Module):
        raise validation.InputTypeError(
            f"{argname} must be a landscape.Problem or an nn.Module, got {type(problem).__name__}"
        )
    if data is None:
        raise validation.InputTypeError(
            "data is missing; pass a landscape.Problem(model, data, loss) or the model with data"
        )
    return Problem(
        problem,
        data,
        loss,
        bn_mode=bn_mode or "eval",
        dtype=dtype,
        batch_size=batch_size,
        memory_budget=memory_budget,
        data_description=data_description,
    )
