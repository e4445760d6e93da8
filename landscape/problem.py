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
  its samples (batch mean times batch size, or the closure's ``(sum, count)``), summed over batches,
  passed through the one reduction hook :meth:`Problem._reduce` (identity in one process; the place where
  sums are all-reduced across ranks under ``torch.distributed``), then divided by the total count. The
  result is the mean over the dataset whatever the batching.
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
import dataclasses
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import distributed, validation
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

LOSSES: dict[str, Callable[..., Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "nll": F.nll_loss,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "huber": F.huber_loss,
    "smooth_l1": F.smooth_l1_loss,
    "bce": F.binary_cross_entropy,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}
"""The loss names a :class:`Problem` accepts (batch means)."""

TARGET_KEYS = ("labels", "label", "targets", "target", "y")
"""Keys of a mapping batch that hold the targets (the first present wins); the rest are model inputs."""

_CLOSURE_NAMES = ("model", "fmodel", "net", "module", "network")
_BN = nn.modules.batchnorm._BatchNorm
KERNEL_NOTE = "second-order products ran with the math SDPA kernel (differentiable); the caller's settings restored"


# =========================================================================== small helpers
def count_correct(out: Tensor, y: Tensor) -> float:
    """Correctly classified samples of a batch: ``argmax`` over the class axis equal to the target.

    For outputs ``(N, C, d1, ...)`` with targets ``(N, d1, ...)`` (the K-dimensional form of ``cross_entropy``,
    e.g. a language model's words), each sample counts its fraction of correct positions.
    """
    if out.dim() > 2 and y.dim() == out.dim() - 1:
        return float((out.argmax(dim=1) == y).flatten(1).float().mean(1).sum())
    return int((out.argmax(dim=-1) == y).sum())


def model_output(out: Any) -> Tensor:
    """The tensor a loss ``(outputs, targets)`` and the metrics see: the documented output rule.

    A tensor is returned as is; an object with a ``logits`` attribute or key (Hugging Face ``ModelOutput``)
    gives its logits; another mapping its first non-``None`` value; a tuple or list its first element.

    Raises:
        TypeError: If no tensor can be found.
    """
    if isinstance(out, Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping):
        for v in out.values():
            if v is not None:
                return model_output(v)
    if isinstance(out, tuple | list) and out:
        return model_output(out[0])
    raise TypeError(
        f"cannot find the output tensor in a {type(out).__name__}; return a tensor, a tuple (first element), "
        "an object with .logits, or pass a closure loss(model, batch)"
    )


@contextlib.contextmanager
def differentiable_kernels() -> Iterator[None]:
    """Select kernels whose backward is differentiable (math scaled-dot-product attention) inside the block.

    The fused CPU flash-attention kernel has no double backward (``derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented``); the math kernel
    computes the same function with plain differentiable ops. The caller's backend choice is restored on
    exit (``torch.nn.attention.sdpa_kernel`` saves and restores it).
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # a torch without the attention module has no fused SDPA kernels either
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _to(x: Any, dtype: torch.dtype, device: torch.device) -> Any:
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
        return rebuild({k: _to(v, dtype, device) for k, v in x.items()})
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(_to(v, dtype, device) for v in x))
    if isinstance(x, tuple | list):
        return type(x)(_to(v, dtype, device) for v in x)
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


def _is_closure(fn: Any, form: str) -> bool:
    if form == "batch":
        return True
    if form == "outputs" or isinstance(fn, str | nn.Module) or fn is None:
        return False
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and (params[0].name in _CLOSURE_NAMES or params[0].annotation in (nn.Module, "nn.Module"))


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


class FunctionalModel:
    """The model evaluated at given parameters: call it like the model; other attributes are the model's.

    Runs :func:`torch.func.functional_call` with the point's parameters and private buffers, in eval mode
    (BatchNorm in train mode when ``bn_train``; Dropout always off). The model's flags are restored after.
    """

    def __init__(self, model: nn.Module, tensors: dict[str, Tensor], bn_train: bool = False) -> None:
        self.__dict__["_fm"] = (model, tensors, bn_train)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        model, tensors, bn_train = self.__dict__["_fm"]
        with _modes(model, bn_train):
            return torch.func.functional_call(model, tensors, args, kwargs, strict=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_fm"][0], name)


@contextlib.contextmanager
def _modes(model: nn.Module, bn_train: bool) -> Iterator[None]:
    saved = [(m, m.training) for m in model.modules()]
    try:
        for m, _ in saved:
            m.training = bn_train and isinstance(m, _BN)
        yield
    finally:
        for m, t in saved:
            m.training = t


# =========================================================================== sources
class _TensorSource:
    """A tuple of same-length tensors cut into batches of ``batch_size`` (``None``: one batch)."""

    def __init__(self, tensors: tuple[Any, ...], batch_size: int | None) -> None:
        self.tensors = tuple(torch.as_tensor(t) for t in tensors)
        self.n = int(self.tensors[0].shape[0]) if self.tensors[0].dim() else 0
        if any(t.dim() == 0 or int(t.shape[0]) != self.n for t in self.tensors):
            shapes = [tuple(t.shape) for t in self.tensors]
            raise validation.InputError(f"data: the tensors must share their first dimension, got shapes {shapes}")
        self.size = batch_size or max(self.n, 1)

    def __len__(self) -> int:
        return max(1, -(-self.n // self.size))

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        if self.n == 0:
            yield self.tensors
            return
        for s in range(0, self.n, self.size):
            yield tuple(t[s : s + self.size] for t in self.tensors)


def _source(data: Any, batch_size: int | None) -> tuple[Any, bool]:
    """``(re-iterable source of raw batches, in_memory)``."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, Problem):
        raise validation.InputTypeError("data is already a Problem; pass it as the first argument instead")
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
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        return DataLoader(data, batch_size=batch_size or 64, shuffle=False), False
    if isinstance(data, Iterable):
        if iter(data) is data:  # a generator: readable once, so kept
            return list(data), True
        return data, isinstance(data, list | tuple)
    raise validation.InputTypeError(
        f"data must be a tensor pair (X, y), a Dataset, a DataLoader or an iterable of batches, got "
        f"{type(data).__name__}"
    )


def _split_source(source: Any, batch_size: int | None) -> Any:
    """This rank's contiguous share of a source (see ``Problem(shard="split")``); the source itself alone."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

    rank, world = distributed.rank_world()
    if world == 1:
        return source
    if isinstance(source, _TensorSource):
        lo, hi = distributed.shard_bounds(source.n, rank, world)
        return _TensorSource(tuple(t[lo:hi] for t in source.tensors), batch_size)
    if (
        isinstance(source, DataLoader)
        and isinstance(source.dataset, Dataset)
        and not isinstance(source.dataset, IterableDataset)
        and source.batch_sampler is not None
    ):
        lo, hi = distributed.shard_bounds(len(source.dataset), rank, world)  # type: ignore[arg-type]
        if isinstance(source.sampler, torch.utils.data.SequentialSampler):  # only the share's samples are read
            return DataLoader(
                Subset(source.dataset, range(lo, hi)),
                batch_size=source.batch_size,
                collate_fn=source.collate_fn,
                num_workers=source.num_workers,
                drop_last=source.drop_last,
            )
    if isinstance(source, list | tuple):
        lo, hi = distributed.shard_bounds(len(source), rank, world)
        return list(source[lo:hi])
    return _StridedSource(source, rank, world)


class _StridedSource:
    """Batch ``i`` of a re-iterable goes to rank ``i % world`` (the others' batches are skipped, not kept)."""

    def __init__(self, source: Any, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __iter__(self) -> Iterator[Any]:
        for i, b in enumerate(self.source):
            if i % self.world == self.rank:
                yield b


# =========================================================================== the problem
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
        validate: Check the data and weights (NaN/inf, labels, empty data) on the first pass.
        shard: Under ``torch.distributed`` (:mod:`landscape.distributed`): ``"none"`` (every rank holds the
            same data; analyzers split points), ``"split"`` (keep only this rank's contiguous share of the
            data given: rows of a tensor pair or a ``Dataset`` (only those samples are ever read), batches of
            a ``DataLoader`` over a map-style dataset or of a list; other iterables: batch ``i`` goes to rank
            ``i % world``) or ``"given"`` (each rank was given its own share). With ``"split"`` or
            ``"given"``, every sum over the data is all-reduced: means, gradients and HVPs are over all
            ranks' data, and every rank must make the same calls. Without a process group all three are
            the same.

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
        InputError: On bad data, weights or options (named, with the fix).
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
        from landscape.evaluate.points import parse_bytes

        if isinstance(model, Problem):
            raise validation.InputTypeError("model is already a Problem; use it directly")
        if not isinstance(model, nn.Module):
            raise validation.InputTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if loss_form not in ("auto", "outputs", "batch"):
            raise ValueError(f"unknown loss_form {loss_form!r}; valid: ['auto', 'outputs', 'batch']")
        if str(getattr(bn_mode, "value", bn_mode)) not in ("eval", "train"):
            raise ValueError(f"unknown bn_mode {bn_mode!r}; valid: ['eval', 'train']")
        if shard not in distributed.SHARD_MODES:
            raise ValueError(f"unknown shard {shard!r}; valid: {list(distributed.SHARD_MODES)}")
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid: {sorted(LOSSES)}, a callable or a closure")
        if loss is not None and not isinstance(loss, str) and not callable(loss):
            raise validation.InputTypeError(f"loss must be a name or a callable, got {type(loss).__name__}")
        distributed.check_not_fsdp(model)
        if validate:
            validation.check_model(model)
        self.model = model
        self.bn_mode: str = str(getattr(bn_mode, "value", bn_mode))
        self.layout = ParamLayout.from_model(model)
        ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
        self.dtype: torch.dtype = dtype or (ref.dtype if ref is not None else torch.float32)
        self.device = (
            torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
        )
        self.loss_spec = loss
        self.closure = _is_closure(loss, loss_form)
        if self.closure and not callable(loss):
            raise validation.InputTypeError(
                f"loss_form='batch' needs a closure loss(model, batch); got {loss!r}: pass the callable, or a loss "
                "name with loss_form='auto'"
            )
        self.memory_budget = parse_bytes(memory_budget)
        self.batch_size = batch_size
        self.validate = validate
        self.notes: list[str] = []
        self.hvp_count = 0
        self._raw = data
        self.shard = shard
        self._total_samples: int | None = None
        self._source, self._in_memory = _source(data, batch_size)
        if shard == "split":
            self._source = _split_source(self._source, batch_size)
        self._cache: list[Batch] | None = None
        self._cast_model: nn.Module | None = None
        self._total: float | None = None
        self._tensor_output: bool | None = None
        self._prechecked = False
        self._checker: validation.BatchChecker | None = None
        self._loss_fn: Callable[..., Any] | None = None
        self._n_samples: int | None = None
        self._n_batches: int | None = None
        self._pairs = True  # every batch a 2-tuple of tensors (the evaluation engine's fast form)
        self._described = data_description
        named = dict(model.named_parameters())
        self._params0 = {s.name: self._cast(named[s.name]) for s in self.layout.specs}
        self._buffers0 = {k: self._cast(v) for k, v in model.named_buffers()}
        self._frozen = {k: self._cast(v) for k, v in named.items() if k not in self._params0}

    # ------------------------------------------------------------------ basics
    def _cast(self, t: Tensor) -> Tensor:
        if hasattr(t, "full_tensor"):  # a DTensor (FSDP2 / tensor parallel): gathered whole, once (collective)
            t = t.full_tensor()
        t = t.detach().to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def __repr__(self) -> str:
        return f"Problem({type(self.model).__name__}, {self.description}, loss={self.loss_name})"

    @property
    def numel(self) -> int:
        """Length ``D`` of the parameter vector."""
        return self.layout.numel

    @property
    def theta0(self) -> Tensor:
        """The model's own parameter vector ``(D,)`` in the compute dtype (a copy)."""
        return self.layout.flatten(self._params0).clone()

    @property
    def loss_name(self) -> str:
        """The loss's name for provenance (``"closure:<name>"`` for a closure)."""
        fn = self.loss_spec
        if isinstance(fn, str):
            return fn
        if fn is None:
            return "auto (cross_entropy for integer targets, else mse)"
        name = getattr(fn, "__name__", type(fn).__name__)
        return f"closure:{name}" if self.closure else name

    @property
    def n_samples(self) -> int:
        """Number of samples (one pass over the data the first time)."""
        if self._n_samples is None:
            for _ in self.batches():
                pass
        return int(self._n_samples)  # type: ignore[arg-type]

    @property
    def description(self) -> str:
        """The data's description for provenance."""
        if self._described is not None:
            return self._described
        d = self._raw
        if isinstance(self._source, _TensorSource):  # the caller's tensors, as given (not as cast)
            ts = [torch.as_tensor(t) for t in d]
            if len(ts) == 2:
                x, y = ts
                return f"tensor pair X{tuple(x.shape)} {str(x.dtype)[6:]}, y{tuple(y.shape)} {str(y.dtype)[6:]}"
            return "tensors " + ", ".join(f"{tuple(t.shape)} {str(t.dtype)[6:]}" for t in ts)
        n = (
            f"{self._n_batches} batches, {self._n_samples} samples"
            if self._n_batches is not None
            else (f"{len(d)} batches" if hasattr(d, "__len__") else "batches")
        )
        return f"{type(d).__name__} of {n}"

    @property
    def streamed(self) -> bool:
        """Whether the data is re-read on every pass (not held in memory)."""
        return self._cache is None and not self._in_memory

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
        """The denominator of the mean: the number of samples, or a ``(sum, count)`` closure's summed counts.

        One forward pass without gradients for such a closure (cached).
        """
        if not self.closure:
            return float(self.total_samples if self.sharded else self.n_samples)
        if self._total is None:
            fm = self.functional()
            with torch.no_grad():
                count = sum(self._batch_terms(fm, b)[1] for b in self.batches())
            self._total = float(self._reduce([torch.tensor(count, dtype=torch.float64)])[0])
        return self._total

    def with_options(self, *, bn_mode: str | None = None) -> Problem:
        """The same problem (same data, caches and layout) with another BatchNorm mode."""
        if bn_mode is None or bn_mode == self.bn_mode:
            return self
        if bn_mode not in ("eval", "train"):
            raise ValueError(f"unknown bn_mode {bn_mode!r}; valid: ['eval', 'train']")
        new = copy.copy(self)
        new.bn_mode = bn_mode
        new.notes = self.notes  # shared: provenance of either says what ran
        return new

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
        new._cast_model = None
        new._tensor_output = None
        named = dict(model.named_parameters())
        new._params0 = {s.name: new._cast(named[s.name]) for s in new.layout.specs}
        new._buffers0 = {k: new._cast(v) for k, v in model.named_buffers()}
        new._frozen = {k: new._cast(v) for k, v in named.items() if k not in new._params0}
        return new

    def compute_model(self) -> nn.Module:
        """The model in the compute dtype and device: the model itself, or a private cast copy (built once)."""
        ref = next((t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()), None)
        if ref is None or (ref.dtype == self.dtype and ref.device == self.device):
            return self.model
        if self._cast_model is None:
            self._cast_model = copy.deepcopy(self.model).to(device=self.device, dtype=self.dtype)
        return self._cast_model

    def engine_loss(self) -> str | Callable[[Tensor, Tensor], Tensor]:
        """The ``(outputs, targets)`` loss for the evaluation engine (names it computes natively stay names).

        Raises:
            ValueError: For a closure loss.
        """
        if self.closure:
            raise ValueError("a closure loss has no (outputs, targets) form")
        fn = self._loss_fn_for(next(iter(self.batches())).targets)
        return self.loss_spec if self.loss_spec in ("cross_entropy", "mse") else fn

    # ------------------------------------------------------------------ data
    def _split(self, raw: Any, index: int) -> Batch:
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

    def _normalize(self, raw: Any, index: int) -> Batch:
        """Cast, check (first pass) and split one raw batch."""
        pair = isinstance(raw, tuple | list) and len(raw) == 2 and all(isinstance(t, Tensor | np.ndarray) for t in raw)
        if pair and not self.closure:
            x, y = (torch.as_tensor(t) for t in raw)
            if self._checker is None:
                self._checker = validation.BatchChecker(
                    self.model, self.loss_spec, dtype=self.dtype, device=self.device
                )
            if self.validate and self._cache is None and self._n_samples is None and not self._prechecked:
                single = isinstance(self._source, _TensorSource) and len(self._source) == 1
                x, y = self._checker(x, y, index, single)  # type: ignore[assignment]
            else:
                x, y = _to(x, self.dtype, self.device), self._retarget(y)
            return self._split((x, y), index)
        self._pairs = False
        raw = _to(raw, self.dtype, self.device)
        if self.validate and self._n_samples is None:
            for t in _flat_tensors(raw):
                if t.is_floating_point():
                    validation.check_finite(t, f"data (batch {index})", "Drop or impute those samples.")
        return self._split(raw, index)

    def _retarget(self, y: Tensor) -> Tensor:
        """Targets as the checker normalized them on the first pass (later passes: cast only)."""
        y = y.to(self.device)
        if self._checker is None:
            return y.to(self.dtype) if y.is_floating_point() else y
        return self._checker.recast_targets(y)

    def batches(self) -> Iterator[Batch]:
        """The normalized batches, in order: from memory when held, else read from the source.

        The first pass validates, counts the samples, and keeps the batches when they fit the memory budget.
        """
        if self._cache is not None:
            yield from self._cache
            return
        first = self._n_samples is None
        src = self._source
        if (
            first
            and self.validate
            and isinstance(src, _TensorSource)
            and len(src.tensors) == 2
            and not self.closure
            and src.n > 0
        ):
            # A tensor pair is checked whole, so messages give indices into the caller's tensors.
            self._checker = validation.BatchChecker(self.model, self.loss_spec, dtype=self.dtype, device=self.device)
            x, y = self._checker(*src.tensors, 0, True)
            assert y is not None  # targets in, targets out
            src.tensors = (x, y)
            self._prechecked = True
        keep: list[Batch] | None = [] if first else None
        held, n, count = 0, 0, 0
        for i, raw in enumerate(self._source):
            b = self._normalize(raw, i)
            n += b.size
            count += 1
            if keep is not None:
                held += _nbytes(b.raw)
                if self._in_memory or held <= self.memory_budget:
                    keep.append(b)
                else:
                    keep = None
            yield b
        if count == 0:
            raise validation.InputError("data holds no batch; expected at least one sample")
        if first:
            self._n_samples, self._n_batches = n, count
            self._cache = keep

    def pairs(self) -> list[tuple[Tensor, Tensor]] | None:
        """The data as checked ``(X, y)`` tensor batches when it is that simple and held in memory, else ``None``.

        The evaluation engine's fast executors and the Hessian operator's kernels take this form.
        """
        if self.closure:
            return None
        batches = list(self.batches())
        if not self._pairs or self._cache is None:
            return None
        if self._tensor_output is None:  # the engine and the Hessian kernels call the model for a tensor
            with torch.no_grad():
                x = batches[0].inputs[0][:2]
                self._tensor_output = isinstance(self.functional()(x), Tensor)
        if not self._tensor_output:
            return None
        out = validation.ValidBatches((b.inputs[0], b.targets) for b in batches)
        out.dtype, out.n_samples, out.targets_checked = self.dtype, self.n_samples, True
        return out

    # ------------------------------------------------------------------ loss
    def _loss_fn_for(self, targets: Tensor | None) -> Callable[[Tensor, Tensor | None], Tensor]:
        """The batch-mean ``loss(outputs, targets)`` (the default resolved from the targets' dtype)."""
        if self._loss_fn is None:
            fn = self.loss_spec
            if fn is None:
                integer = targets is not None and not (targets.is_floating_point() or targets.is_complex())
                fn = "cross_entropy" if integer else "mse"
                self.loss_spec = fn
            self._loss_fn = LOSSES[fn] if isinstance(fn, str) else fn
        return self._loss_fn

    def functional(self, theta: Tensor | Mapping[str, Tensor] | None = None) -> FunctionalModel:
        """The model at ``theta`` (``(D,)`` vector or parameter dict; default the model's own point)."""
        if theta is None:
            params: Mapping[str, Tensor] = self._params0
        elif isinstance(theta, Tensor):
            params = self.layout.unflatten(theta.to(device=self.device, dtype=self.dtype))
        else:
            params = theta
        bufs = self._buffers0
        if self.bn_mode == "train" and bufs:
            bufs = {k: v.clone() for k, v in bufs.items()}  # running statistics updated privately
        return FunctionalModel(self.model, {**self._frozen, **bufs, **params}, self.bn_mode == "train")

    def _outputs(self, fm: FunctionalModel, batch: Batch) -> Tensor:
        """The output tensor of one batch (the output rule applied)."""
        return model_output(fm(*batch.inputs, **batch.kwargs))

    def _batch_terms(self, fm: FunctionalModel, batch: Batch) -> tuple[Tensor, float]:
        """``(sum of the loss over the batch's samples, count)`` at the point ``fm``."""
        if self.closure:
            # A closure is a callable, except under loss_form="batch" with a loss name (then this TypeError).
            r = cast("Callable[..., Any]", self.loss_spec)(fm, batch.raw)
            if isinstance(r, tuple | list):
                total, count = r
                return total, float(count)
            return self._scalar(r) * batch.size, float(batch.size)
        if batch.targets is None:
            raise validation.InputError(
                "the batches carry no targets; give (inputs, targets) batches or a closure loss(model, batch)"
            )
        out = self._outputs(fm, batch)
        return self._scalar(self._loss_fn_for(batch.targets)(out, batch.targets)) * batch.size, float(batch.size)

    @staticmethod
    def _scalar(r: Any) -> Tensor:
        if not isinstance(r, Tensor) or r.dim() != 0:
            raise ValueError(
                f"the loss returned {type(r).__name__} of shape {tuple(getattr(r, 'shape', ()))}; it must return a "
                "scalar tensor (the batch mean), or a closure may return (sum, count)"
            )
        return r

    def _reduce(self, sums: list[Tensor]) -> list[Tensor]:
        """The one reduction hook: per-process sums over batches (the last is the count) -> global sums.

        Identity in one process. Under ``torch.distributed`` with data sharded across ranks this is where
        the sums are all-reduced, so every mean (loss, gradient, HVP) is the mean over all ranks' data.
        """
        if self.shard == "none":
            return sums
        return distributed.all_reduce_sum(sums)

    @property
    def sharded(self) -> bool:
        """Whether the data is split across the ranks of a process group of more than one process."""
        return self.shard != "none" and distributed.rank_world()[1] > 1

    @property
    def total_samples(self) -> int:
        """Number of samples over all ranks (:attr:`n_samples` is this rank's; collective when sharded)."""
        if self._total_samples is None:
            n = torch.tensor(float(self.n_samples), dtype=torch.float64)
            self._total_samples = int(self._reduce([n])[0])
        return self._total_samples

    @property
    def shard_ordered(self) -> bool:
        """Whether the ranks' shares, concatenated in rank order, are the data in order (not a strided split)."""
        return not isinstance(self._source, _StridedSource)

    def objective(self) -> Callable[[Tensor], Tensor]:
        """The mean loss as a pure function ``f(theta (D,)) -> scalar``, differentiable by ``torch.func``.

        The same sum over batches over the same total count as :meth:`loss`, without ``no_grad`` or host
        syncs, so ``torch.func.grad`` / ``jvp`` / ``vmap`` compose with it (forward-mode needs every op of
        the model to support it).
        """
        total = self.total_count()

        def f(theta: Tensor) -> Tensor:
            fm = self.functional(theta)
            out: Tensor | None = None
            for b in self.batches():
                t, _ = self._batch_terms(fm, b)
                out = t if out is None else out + t
            assert out is not None  # batches() raises on data without a batch
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
                t, c = self._batch_terms(fm, b)
                total += t.double()
                count += c
        total, n = self._reduce([total, torch.tensor(count, dtype=torch.float64, device=self.device)])
        return (total / n).to(self.dtype)

    def loss_and_grad(self, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mean loss, gradient (D,))`` at ``theta``, one pass over the data."""
        th = self._theta(theta).requires_grad_(True)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        g = torch.zeros_like(th)
        count = 0.0
        with torch.enable_grad():
            for b in self.batches():
                fm = self.functional(th)
                t, c = self._batch_terms(fm, b)
                if t.requires_grad:
                    (gb,) = torch.autograd.grad(t, th, allow_unused=True)
                    if gb is not None:
                        g += gb
                total += t.detach()
                count += c
        total, g, n = self._reduce([total, g, torch.tensor(count, dtype=self.dtype, device=self.device)])
        return total / n, g / n

    def grad(self, theta: Tensor | None = None) -> Tensor:
        """Gradient ``(D,)`` of the mean loss at ``theta``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, v: Tensor, theta: Tensor | None = None) -> Tensor:
        """Hessian-vector products of the mean loss at ``theta``: ``v`` ``(D,)`` or ``(D, k)``, same shape out.

        Runs under :func:`differentiable_kernels` (math attention); one gradient graph per batch serves all
        ``k`` vectors.
        """
        V = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        one = V.dim() == 1
        V = V[:, None] if one else V
        if V.dim() != 2 or V.shape[0] != self.numel:
            raise ValueError(f"v must have shape ({self.numel},) or ({self.numel}, k), got {tuple(V.shape)}")
        th = self._theta(theta).requires_grad_(True)
        out = torch.zeros_like(V)
        count = 0.0
        with torch.enable_grad(), differentiable_kernels():
            for b in self.batches():
                t, c = self._batch_terms(self.functional(th), b)
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
        out, n = self._reduce([out, torch.tensor(count, dtype=self.dtype, device=self.device)])
        out = out / n
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
        b = next(iter(self.batches()))
        y = b.targets
        integer = y is not None and not (y.is_floating_point() or y.is_complex()) and y.dim() >= 1
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
        from tqdm.auto import tqdm

        from landscape.evaluate.points import AffinePoints

        metrics = (
            self.default_metrics()
            if metrics is None
            else tuple((metrics,) if isinstance(metrics, str) or callable(metrics) else metrics)
        )
        keys: list[tuple[str, Any]] = []
        for m in metrics:
            if isinstance(m, str):
                if m not in ("loss", "accuracy", "outputs"):
                    raise ValueError(f"unknown metric {m!r}; valid: 'loss', 'accuracy', 'outputs' or a callable")
                if self.closure and m == "accuracy":
                    raise ValueError("accuracy needs (outputs, targets) class labels; a closure loss has no targets")
                keys.append((m, None))
            elif callable(m):
                keys.append((str(getattr(m, "name", getattr(m, "__name__", "metric"))), m))
            else:
                raise TypeError(f"a metric must be a name or a callable, got {type(m).__name__}")
        if isinstance(points, AffinePoints):
            P = len(points)
            rows: Iterable[Tensor] = (
                points.materialize(torch.arange(s, min(s + chunk_size, P))) for s in range(0, P, chunk_size)
            )
        else:
            mat = (
                points if isinstance(points, Tensor) else torch.stack([torch.as_tensor(p).reshape(-1) for p in points])
            )
            mat = mat if mat.dim() == 2 else mat[None]
            P = int(mat.shape[0])
            rows = (mat[s : s + chunk_size] for s in range(0, P, chunk_size))
        if self.sharded and not self.shard_ordered and any(k == "outputs" for k, _ in keys):
            raise ValueError(
                "metric 'outputs' needs the data order, which a strided shard of an iterable loses; shard a "
                "Dataset, a DataLoader over one, a list of batches or tensors instead"
            )
        out: dict[str, list[Any]] = {k: [] for k, _ in keys}
        with torch.no_grad(), tqdm(total=P, desc="points", unit="pt", disable=not progress) as bar:
            for chunk in rows:
                validation.check_vector(chunk[0], "points", self.layout)
                fms = [self.functional(th.to(device=self.device, dtype=self.dtype)) for th in chunk]
                sums = {k: torch.zeros(len(fms), dtype=torch.float64) for k, _ in keys if k != "outputs"}
                outs: list[list[Tensor]] = [[] for _ in fms]
                count, start = 0.0, 0
                for b in self.batches():
                    c = float(b.size)
                    for p, fm in enumerate(fms):
                        if self.closure and "loss" in sums:
                            t, c = self._batch_terms(fm, b)
                            sums["loss"][p] += float(t)
                        if self.closure and not any(k != "loss" for k, _ in keys):
                            continue
                        o = self._outputs(fm, b)
                        for k, fn in keys:
                            if k == "loss":
                                if not self.closure:
                                    sums[k][p] += float(self._loss_fn_for(b.targets)(o, b.targets)) * b.size
                            elif k == "accuracy":
                                if b.targets is None:
                                    raise ValueError("metric 'accuracy' needs class-label targets; this data has none")
                                sums[k][p] += float(count_correct(o, b.targets))
                            elif k == "outputs":
                                outs[p].append(o.detach().cpu())
                            else:
                                sums[k][p] += float(fn(o[None], b.targets, start).double().reshape(-1)[0])
                    count += c
                    start += b.size
                names = list(sums)
                *totals, n_t = self._reduce([*(sums[k] for k in names), torch.tensor(count, dtype=torch.float64)])
                sums, n = dict(zip(names, totals)), float(n_t)
                for k, _ in keys:
                    if k == "outputs":
                        stacked = torch.stack([torch.cat(o) for o in outs])  # (p, n_local, *out)
                        if self.sharded:  # rows in rank order = data order for contiguous shares
                            stacked = distributed.all_gather_rows(stacked.transpose(0, 1)).transpose(0, 1)
                        out[k].append(stacked)
                    else:
                        out[k].append(sums[k] / n)
                bar.update(len(fms))
        res = {k: torch.cat(v).numpy() for k, v in out.items()}
        if "loss" in res and "accuracy" in res:
            res["accuracy"][~np.isfinite(res["loss"])] = np.nan
        return res


def _flat_tensors(x: Any) -> Iterator[Tensor]:
    if isinstance(x, Tensor):
        yield x
        return
    vals = x.values() if isinstance(x, Mapping) else x if isinstance(x, tuple | list) else ()
    for v in vals:
        yield from _flat_tensors(v)


def renamed(new: Any, old: Any, old_name: str, new_name: str) -> Any:
    """The value of a keyword given under its new name or its deprecated old one (which warns).

    Raises:
        TypeError: If both are given.
    """
    if old is None:
        return new
    if new is not None:
        raise TypeError(f"{old_name} is the deprecated name of {new_name}; pass only {new_name}")
    warnings.warn(f"{old_name} is deprecated; use {new_name}", DeprecationWarning, stacklevel=3)
    return old


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
