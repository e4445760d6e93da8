"""Hessian of the full-dataset loss as a linear operator.

The Persistent Neurons paper (§5, Fig. 12) compares Hessian eigenvalue densities of a plain and a
championship ResNet-18, computed with PyHessian (Yao et al. 2020) by stochastic Lanczos quadrature
(Ghorbani, Krishnan & Xiao 2019). This module holds the operator those analyses run on:
:class:`HessianOperator`, ``v -> H v`` for the Hessian of the *full-dataset* loss
``L = (1/N) sum_i loss_i`` (each batch's mean weighted by its size, exact), restricted optionally to a
subset of parameters. One gradient graph per micro-batch is built once and reused by double backward
(the fastest HVP measured on CPU), cached when it fits a memory budget and rebuilt otherwise. The
analyses (top eigenpairs, directions, traces, the SLQ density) are in :mod:`landscape.curvature.spectrum`.

BatchNorm: the Hessian is of the loss with BatchNorm in eval mode (running statistics, the default, as
the issue and PyHessian use) or in train mode (batch statistics of each given batch, so the function
depends on the batching). The result records which. The caller's model is never modified: evaluation goes
through :func:`landscape.params.functional_forward` on detached copies of the weights.

Speed (measured, see ``benchmarks/README.md``): the data is re-split into micro-batches of about 256 MB
of saved activations (the best size depends on the machine: on a 32 MB-L3 Xeon 32 MB micro-batches ran
twice as fast as one full batch, on the 8 MB-L3 EPYC of the latest measurements 4-8x larger ones were
1.2-1.4x faster than those). During graph construction convolutions, ReLU, max-pooling and eval-mode
BatchNorm are routed through custom autograd kernels with cheap double backward
(:mod:`landscape.curvature._kernels`, same function).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed, validation
from landscape._batch import Batch, to_device
from landscape._loss import LOSSES, default_loss_name
from landscape._options import keyword_values, parse_bytes, parse_option, shows_keywords
from landscape.curvature._kernels import CurvatureOps
from landscape.curvature._reduction import splits_exactly
from landscape.curvature.options import OPERATOR_DEFAULTS, OperatorOptions
from landscape.functional import KERNEL_NOTE, BNMode, FunctionalModel, differentiable_kernels
from landscape.params import ParamLayout, TensorSpec, functional_forward, parameter_mask, preserved_mode
from landscape.problem import Problem

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["BNMode", "HessianOperator"]

LossFn = Callable[[Tensor, Tensor], Tensor]

# Saved activations per micro-batch. 32 MB was fastest on a 32 MB-L3 Xeon (LeNet-5 2x faster at ~200
# images than at 1,000); on an 8 MB-L3 EPYC that size ran 1.2-1.4x slower than 256 MB (ResNet 28 vs 224
# images) while 256 MB and one full batch of 1,000 tied.
_MICRO_BATCH_BYTES = 256 * 2**20
_MIN_MICRO_BATCH = 16
# Half precision is computed in float32: Lanczos' noise and breakdown level, 100 eps, is 0.78 in bfloat16
# (a density stopped after 1-2 steps and a converged top-5 of [0.78, 0.008, ...] for [1.60, 0.98, ...]).
_HALF = (torch.float16, torch.bfloat16)
# Modules that draw random numbers in train mode (no deterministic Hessian) and BatchNorm, whose train-mode
# (or untracked) statistics make the function depend on the batching.
_RANDOM_MODULES = (nn.modules.dropout._DropoutNd, nn.RReLU)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm
_MODE_DEPENDENT = (_BATCH_NORM, *_RANDOM_MODULES)


def _names(items: Sequence[Any], model: nn.Module | None = None, most: int = 6) -> str:
    """Text naming modules: ``'a', 'b'`` from paths, or ``'a' (Dropout)`` from modules of ``model``."""
    if model is not None:
        paths = {id(m): n for n, m in model.named_modules()}
        shown = [f"{paths.get(id(m), '?')!r} ({type(m).__name__})" for m in items[:most]]
    else:
        shown = [repr(str(i)) for i in items[:most]]
    return ", ".join(shown) + (f" and {len(items) - most} more" if len(items) > most else "")


# =========================================================================== the operator
def _select(model: nn.Module, layout: ParamLayout, params: str | Sequence[str] | None) -> tuple[TensorSpec, ...]:
    """The tensors a ``params`` selection covers (``None``: all), read as :func:`~landscape.params.parameter_mask`."""
    if params is None:
        return layout.specs
    mask = parameter_mask(model, params, layout)
    chosen = tuple(s for s in layout.specs if bool(mask[s.slice].any()))
    if not chosen:
        raise ValueError(f"params={params!r} selects no parameter (every parameter is frozen); pass 'all' or names")
    return chosen


def _as_batches(data: Any) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        data = [tuple(data)]
    try:
        batches = [tuple(b) for b in data]
    except TypeError:
        raise TypeError("data must be a pair (X, y) of tensors or an iterable of (X, y) batches") from None
    if not batches:
        raise ValueError("data holds no batch")
    for b in batches:
        if len(b) != 2 or not all(isinstance(t, Tensor) for t in b) or len(b[0]) != len(b[1]) or len(b[0]) == 0:
            raise ValueError("every batch must be a pair (X, y) of tensors with the same nonzero first dimension")
    return batches


def _named_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)} or a callable")
    return LOSSES[name]


class HessianOperator:
    """The Hessian of the full-dataset loss as a symmetric linear operator on flat parameter vectors.

    ``L(theta) = sum_b (B_b / N) loss_fn(model(X_b; theta), y_b)`` over the given batches (``loss_fn``
    must return the batch *mean*), so ``H = d^2 L / d theta^2`` is exact for batches of any sizes. Vectors
    live in the coordinates of the selected parameters: a flat ``(n,)`` vector in ``named_parameters()``
    order restricted to the subset. Parameters that get no gradient (unused) or a constant one have zero
    rows and columns.

    In eval mode the data is re-split into micro-batches of about 256 MB of saved activations (see the
    module notes; exact because the loss is a mean of per-sample terms); in train mode the batches are kept as
    given, since BatchNorm batch statistics define the function. The same holds in eval mode for BatchNorm
    layers without running statistics (``track_running_stats=False``): their batches are kept as given, and
    an explicit ``micro_batch_size`` is refused naming them. Dropout (and ``RReLU``) is always off: under
    ``bn_mode="train"`` only BatchNorm runs in train mode, so the operator is deterministic and symmetric.

    ``loss_fn`` may also return the batch *sum* (e.g. ``reduction="sum"``): detected once at construction
    (the loss of a batch repeated twice doubles), the Hessian is then of ``sum_i loss_i`` over all ``N``
    samples, the same for every micro-batch size. A loss that is neither a mean nor a sum is refused when
    the data is split into more than one batch, and a weighted mean (``CrossEntropyLoss``/``NLLLoss`` with
    class weights or ignored targets, or a loss whose value on 8 samples is not the size-weighted mean of
    its values on their halves) is not split into micro-batches. These checks see only the first batch's
    first 8 samples (and the targets), so they catch common cases, not every loss.

    Half-precision models (float16, bfloat16) are computed in float32 on float32 copies of the weights,
    buffers and data (half precision's ``eps`` is too coarse for Lanczos); ``notes`` says so. A model in
    train mode with BatchNorm or Dropout gets the eval-mode Hessian with a warning unless ``bn_mode`` is
    given.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the network (never modified; its weights are
            copied at construction) with ``loss_fn`` and ``data`` as a shorthand.
        loss_fn: Shorthand only: ``loss_fn(outputs, targets) -> scalar`` batch mean, e.g.
            ``nn.CrossEntropyLoss()``, or batch sum, or a loss name; ``None``: cross-entropy for integer
            targets, MSE otherwise.
        data: Shorthand only: a pair ``(X, y)`` or an iterable of ``(X, y)`` batches; read once and kept.
        params: ``None`` or ``"all"`` for every floating parameter (frozen ones included, as in the parameter
            vector), ``"trainable"`` for those with ``requires_grad=True``, or tensor names and/or layer names
            (module paths such as ``"fc1"``, meaning its weight and bias).
        **options: The operator keywords (:class:`OperatorOptions`): ``bn_mode``, ``micro_batch_size``,
            ``memory_budget``, ``cache``, ``dtype``, ``fast_ops``, ``channels_last``.

    Attributes:
        notes: What was done beyond the plain definition (half-precision upcast, sum reduction, batches
            kept for batch statistics, Dropout turned off, train-mode model evaluated in eval mode).
        reduction: ``"mean"`` or ``"sum"``, as detected from ``loss_fn``.
        data_description: The problem's data description (``""`` for the shorthand), for provenance.
        auto_micro_batch_size: The size ``"auto"`` chose (``None``: no re-split), from shapes only, not weights:
            passed as ``micro_batch_size``, it skips the probe for the same network at other weights (the tracker).

    Raises:
        ValueError: On unknown parameter names, bad data, a micro-batch size in train mode or with
            untracked BatchNorm statistics, a half-precision ``dtype``, a loss that is neither a batch mean
            nor a batch sum over several batches, a weighted-mean loss with micro-batches, or a model
            without trainable parameters.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> op = HessianOperator(net, nn.CrossEntropyLoss(), (torch.randn(10, 3), torch.randint(0, 2, (10,))))
        >>> op.matvec(torch.randn(op.n)).shape
        torch.Size([26])
    """

    @shows_keywords(OperatorOptions, OPERATOR_DEFAULTS)
    def __init__(
        self,
        problem: Problem | nn.Module,
        loss_fn: LossFn | str | None = None,
        data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
        params: str | Sequence[str] | None = None,
        **options: Unpack[OperatorOptions],
    ) -> None:
        o = keyword_values("HessianOperator", options, OperatorOptions, OPERATOR_DEFAULTS)
        bn_mode, micro_batch_size, cache, dtype = o["bn_mode"], o["micro_batch_size"], o["cache"], o["dtype"]
        memory_budget, fast_ops, channels_last = o["memory_budget"], o["fast_ops"], o["channels_last"]
        self.problem: Problem | None = None  # set for problems the (X, y) kernels below do not take
        self.data_description = ""
        # data split across ranks: products are all-reduced (every rank makes the same calls)
        self._shard: Problem | None = problem if isinstance(problem, Problem) and problem.sharded else None
        if isinstance(problem, Problem):
            if loss_fn is not None or data is not None:
                raise TypeError("the first argument is a Problem, which holds its data and loss; pass neither")
            if bn_mode is None:
                bn_mode = problem.bn_mode
            dtype = dtype or (problem.dtype if problem.dtype not in _HALF else None)
            # A weighted mean (class weights, ignored labels) is summed by the problem's own batch terms: the
            # (X, y) kernels weight micro-batches by their size.
            pairs = None if problem.weighted_mean() else problem.pairs()
            model = problem.model
            self.data_description = problem.description  # after the first pass, which counts the samples
            if pairs is None:
                self.problem = problem
                data = None
            else:
                loss_fn, data = problem.loss_fn_for(pairs[0][1]), pairs
        else:
            model = problem
            if data is None:
                raise TypeError(
                    "HessianOperator needs a landscape.Problem, or a model with data (and loss_fn): "
                    "HessianOperator(Problem(model, data, loss)) or HessianOperator(model, loss_fn, data)"
                )
            if loss_fn is None:  # the package's one default: cross-entropy for integer targets, MSE otherwise
                batches = _as_batches(data)  # read once (a generator too), kept
                loss_fn = default_loss_name(batches[0][1])
                data = data if validation.is_tensor_pair(data) else batches  # a pair stays one (messages)
            if isinstance(loss_fn, str):
                loss_fn = _named_loss(loss_fn)
        if self.problem is None:
            data = validation.validate_problem(model, data, loss_fn, dtype=dtype)  # weights, data, labels; cast
        else:
            validation.check_model(model)
        self.model = model
        self.loss_fn = loss_fn
        self.notes: list[str] = []
        self.kernels = KERNEL_NOTE
        self._random_modules = [m for m in model.modules() if isinstance(m, _RANDOM_MODULES)]
        if bn_mode is None:
            bn_mode = BNMode.EVAL
            moded = [n for n, m in model.named_modules() if m.training and isinstance(m, _MODE_DEPENDENT)]
            if moded:
                note = (
                    f"the model is in train mode, but the Hessian is of its eval-mode function (BatchNorm running "
                    f"statistics, Dropout off) for {_names(moded)}; pass bn_mode='eval' to say so, or "
                    "bn_mode='train' for BatchNorm batch statistics"
                )
                self.notes.append(note)
                warnings.warn(note, UserWarning, stacklevel=2)
        self.bn_mode: BNMode = parse_option(BNMode, bn_mode, "bn_mode")
        if self.bn_mode is BNMode.INTERPOLATE:
            raise ValueError(
                "bn_mode='interpolate' belongs to evaluating points between models; the Hessian's loss uses "
                "BatchNorm running statistics (bn_mode='eval') or batch statistics (bn_mode='train')"
            )
        self.layout = ParamLayout.from_model(model)
        if self.layout.numel == 0:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        self.specs = _select(model, self.layout, params)
        self.index = torch.cat([torch.arange(s.start, s.stop) for s in self.specs])
        self.n = int(self.index.numel())
        named = dict(model.named_parameters())
        first = named[self.layout.specs[0].name]
        if dtype in _HALF:
            raise ValueError(
                f"dtype={dtype} is too coarse for the Hessian's Lanczos methods (eps {torch.finfo(dtype).eps:.2g}); "
                "pass dtype=torch.float32 (or leave dtype unset: half-precision models are computed in float32)"
            )
        self.model_dtype: torch.dtype = first.dtype
        self.dtype: torch.dtype = dtype or first.dtype
        if self.dtype in _HALF:
            self.dtype = torch.float32
            self.notes.append(f"the model is {first.dtype}; the Hessian is computed in float32 on float32 copies")
        self.device = first.device
        self.memory_budget = parse_bytes(memory_budget)
        self.fast_ops = fast_ops
        if channels_last == "auto":
            convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
            channels_last = 2 * sum(m.in_channels >= 8 for m in convs) > len(convs)
        elif not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        self.channels_last: bool = channels_last
        self.hvp_count = 0
        self.auto_micro_batch_size: int | None = None

        def cast(t: Tensor) -> Tensor:
            t = t.detach().to(self.device)
            return t.to(self.dtype).clone() if t.is_floating_point() else t.clone()

        selected = {s.name for s in self.specs}
        self._leaves = [cast(named[s.name]).requires_grad_(True) for s in self.specs]
        self._params = {s.name: cast(named[s.name]) for s in self.layout.specs if s.name not in selected}
        self._params.update({s.name: leaf for s, leaf in zip(self.specs, self._leaves)})
        # Frozen parameters and buffers ride in functional_forward's `buffers` (it merges both into one dict).
        self._extra = {k: cast(v) for k, v in model.named_parameters() if not v.requires_grad}
        self._extra.update({k: cast(v) for k, v in model.named_buffers()})

        if self.problem is not None:
            self._init_problem(self.problem, micro_batch_size, cache)
            return
        batches = [(cast(X), cast(y)) for X, y in _as_batches(data)]
        self.n_samples = sum(len(y) for _, y in batches) if self._shard is None else self._shard.total_samples
        if self.bn_mode is BNMode.TRAIN and self._random_modules:
            self.notes.append(f"{_names(self._random_modules, model)} off (eval mode): random masks have no Hessian")
        untracked = [  # batch statistics even in eval mode
            n for n, m in model.named_modules() if isinstance(m, _BATCH_NORM) and m.running_mean is None
        ]
        resplit = micro_batch_size is not None and self.bn_mode is BNMode.EVAL and not untracked
        several = len(batches) > 1 or resplit  # may be split: "auto" decides the size only below
        self.reduction, per_sample = self._detect_reduction(*batches[0], several=several)
        if isinstance(loss_fn, nn.CrossEntropyLoss | nn.NLLLoss) and loss_fn.reduction == "mean":
            # class weights and ignored targets anywhere in the data make a weighted mean
            ignored = any(not y.is_floating_point() and bool((y == loss_fn.ignore_index).any()) for _, y in batches)
            per_sample = per_sample and loss_fn.weight is None and not ignored
        if self.bn_mode is BNMode.TRAIN or untracked:
            if micro_batch_size not in (None, "auto"):
                why = "in train mode" if self.bn_mode is BNMode.TRAIN else f"of {_names(untracked)} (no running stats)"
                raise ValueError(
                    f"micro_batch_size would change the BatchNorm batch statistics {why}; pass None "
                    "(or 'auto') and give the batches you want the statistics of"
                )
            if self.bn_mode is BNMode.EVAL:
                self.notes.append(f"batches kept as given: {_names(untracked)} use batch statistics")
            chunks = batches
        elif micro_batch_size is None:
            chunks = batches
        else:
            if len({(b[0].shape[1:], b[1].shape[1:]) for b in batches}) == 1:
                # Same sample shapes: pool the batches so micro-batches need not respect their borders.
                batches = [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))]
            if micro_batch_size == "auto":
                size = self._auto_micro_batch(*max(batches, key=lambda b: len(b[1])))
                self.auto_micro_batch_size = size
            elif isinstance(micro_batch_size, int) and micro_batch_size > 0:
                size = micro_batch_size
            else:
                raise ValueError(f"micro_batch_size must be 'auto', a positive int or None, got {micro_batch_size!r}")
            chunks = [c for X, y in batches for c in zip(X.split(size), y.split(size))]
            if len(chunks) > 1 and per_sample:  # the first samples' check cannot see weights that vary later
                assert loss_fn is not None  # resolved above (a name, the default, or the problem's)
                forward = lambda X: self._forward(X, self._extra)  # noqa: E731 - eval mode: buffers unchanged
                per_sample = splits_exactly(forward, loss_fn, chunks, self.reduction == "mean")
            if len(chunks) > 1 and not per_sample:
                raise ValueError(
                    f"loss_fn is not a {self.reduction} of per-sample terms (a weighted mean, e.g. class weights or "
                    "ignore_index?): its value on a batch differs from its values on the two halves combined, so "
                    "micro-batches would change the Hessian; pass micro_batch_size=None with the batches to use"
                )
        if self.reduction == "sum":
            self.notes.append("loss_fn sums over the batch: the Hessian is of the sum over all samples")
        self.micro_batch_size = max(len(c[1]) for c in chunks)
        self._chunks = chunks
        self._graphs: list[list[Tensor | None]] | None = None
        self._cache = cache
        self.cached: bool | None = None  # decided at the first product

    def _init_problem(self, problem: Problem, micro_batch_size: int | str | None, cache: bool | None) -> None:
        """The general path: the problem's batches (any form, possibly streamed) and its loss, as given."""
        if micro_batch_size not in (None, "auto"):
            raise ValueError(
                "micro_batch_size needs (X, y) tensor batches and an (outputs, targets) loss; this problem's "
                "batches are used as given (set the batch size of its data instead)"
            )
        self.reduction = "mean"
        self.n_samples = problem.n_samples
        self._total = problem.total_count()  # the denominator of the mean (tokens for a (sum, count) closure)
        self.notes.append(f"batches used as given ({problem.description}); loss {problem.loss_name}")
        self.micro_batch_size = 0
        self._chunks = []
        self._graphs = None
        self._cache = False if problem.streamed else cache  # streamed data: graphs are rebuilt per product
        self.cached = None

    def _cast(self, b: Batch) -> Batch:
        """A problem's batch in the operator's dtype (``dtype=`` other than the problem's, or a half model upcast)."""
        if self.problem is None or self.problem.dtype == self.dtype:
            return b
        cast = lambda x: to_device(x, self.dtype, self.device)  # noqa: E731 - floating tensors only
        targets = None if b.targets is None else cast(b.targets)
        return dataclasses.replace(b, inputs=cast(b.inputs), kwargs=cast(b.kwargs), targets=targets, raw=cast(b.raw))

    def _batches(self) -> Iterable[Any]:
        """The chunks a product iterates: micro-batches ``(X, y)``, or the problem's batches."""
        return self._chunks if self.problem is None else self.problem.batches()

    # ------------------------------------------------------------------ graphs
    def _graph(self, X: Any, y: Tensor | None = None, count: list[int] | None = None) -> list[Tensor | None]:
        """Gradient of ``(B / N) * loss`` on one chunk (or problem batch ``X``) with its graph; ``None`` if constant."""
        extra = self._extra
        if self.bn_mode is BNMode.TRAIN:  # running-stat updates go to a private copy per chunk
            extra = {k: v.clone() for k, v in extra.items()}
        hooks: Any = contextlib.nullcontext()
        if count is not None:

            def pack(t: Tensor) -> Tensor:
                count[0] += t.numel() * t.element_size()
                return t

            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        ops = CurvatureOps(self.channels_last) if self.fast_ops else contextlib.nullcontext()
        with torch.enable_grad(), hooks, ops, differentiable_kernels():
            if self.problem is not None:  # the problem's batch: its loss summed over the batch, over the total
                fm = FunctionalModel(self.model, {**extra, **self._params}, self.bn_mode is BNMode.TRAIN)
                total, _ = self.problem.batch_terms(fm, self._cast(X))
                weighted = total / self._total
            else:
                assert y is not None  # without a problem, the chunks are (X, y) pairs
                loss = self._loss(X, y, extra)
                # a sum-reduced loss is already the chunk's share of the total
                weighted = loss * (len(y) / self.n_samples) if self.reduction == "mean" else loss
            grads = torch.autograd.grad(weighted, self._leaves, create_graph=True, allow_unused=True)
        return [g if g is not None and g.requires_grad else None for g in grads]

    def _forward(self, X: Tensor, buffers: dict[str, Tensor]) -> Any:
        """The model at the operator's weights in its BatchNorm mode, Dropout always off."""
        train = self.bn_mode is BNMode.TRAIN
        with preserved_mode(self.model, train):
            for m in self._random_modules if train else ():
                m.training = False  # restored by preserved_mode
            return functional_forward(self.model, self._params, X, buffers=buffers, train=None, layout=self.layout)

    def _loss(self, X: Tensor, y: Tensor, buffers: dict[str, Tensor], out: Any = None) -> Tensor:
        """``loss_fn`` of one chunk (or of the outputs ``out``), checked to be a scalar."""
        assert self.loss_fn is not None  # the (X, y) path: loss_fn is unset only for a problem's batches
        loss = self.loss_fn(self._forward(X, buffers) if out is None else out, y)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(
                f"loss_fn returned shape {tuple(getattr(loss, 'shape', ()))}; it must return a scalar, the batch "
                "mean (e.g. nn.CrossEntropyLoss() with the default reduction='mean') or the batch sum"
            )
        return loss

    def _detect_reduction(self, X: Tensor, y: Tensor, several: bool) -> tuple[str, bool]:
        """``"mean"`` or ``"sum"``, and whether the loss is that reduction of per-sample terms.

        A batch mean is unchanged when the batch is repeated twice, a sum doubles; a per-sample mean (sum)
        of a batch is the size-weighted mean (the sum) of its halves' values, which a weighted mean (class
        weights, ``ignore_index``) is not. One forward pass of a few samples at construction, outside the
        products.
        """
        assert self.loss_fn is not None  # the (X, y) path: loss_fn is unset only for a problem's batches
        s = min(len(y), 8)
        buffers = {k: v.clone() for k, v in self._extra.items()}  # train-mode statistics updates stay private
        with torch.no_grad():
            out = self._forward(X[:s], buffers)
            one = self._loss(X[:s], y[:s], buffers, out)
            if not isinstance(out, Tensor) or out.dim() == 0 or len(out) != s:
                return "mean", True  # outputs not one row per sample: the documented contract (a mean)
            if float(one) == 0 and out.is_floating_point():
                # A loss of 0 (targets fitted exactly, e.g. a teacher's own outputs) is a mean and a sum alike:
                # decide at outputs moved off the fit (the reduction does not depend on where it is read), if the
                # loss takes them (probabilities for BCELoss may not leave [0, 1])
                g = torch.Generator().manual_seed(0)
                moved = out + torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)
                with contextlib.suppress(RuntimeError, ValueError, IndexError, TypeError):
                    out, one = moved, self._loss(X[:s], y[:s], buffers, moved)
            h = s // 2
            try:
                two = self.loss_fn(torch.cat([out, out]), torch.cat([y[:s], y[:s]]))
                halves = (float(self.loss_fn(out[:h], y[:h])), float(self.loss_fn(out[h:], y[h:s]))) if h else None
            except (RuntimeError, ValueError, IndexError, TypeError):
                return "mean", True  # a loss that takes only whole batches: the documented contract
        a, b = float(one), float(two)
        if not (math.isfinite(a) and math.isfinite(b)):
            return "mean", True  # non-finite values are input validation's to report
        reduction = ""
        if abs(b - a) <= 1e-4 * abs(a):
            reduction = "mean"
        elif abs(b - 2 * a) <= 1e-4 * abs(a):
            reduction = "sum"
        if reduction:
            if halves is None:
                return reduction, True
            combined = (h * halves[0] + (s - h) * halves[1]) / s if reduction == "mean" else sum(halves)
            return reduction, abs(combined - a) <= 1e-4 * max(abs(a), *map(abs, halves), 1e-30)
        if several:
            raise ValueError(
                f"loss_fn is neither a batch mean nor a batch sum (a batch gives {a:.6g}, the same batch twice "
                f"{b:.6g}), so the Hessian of the whole data cannot be assembled from batches; use a mean or sum "
                "reduction, or pass one batch with micro_batch_size=None"
            )
        return "mean", True

    def _auto_micro_batch(self, X: Tensor, y: Tensor) -> int:
        """Micro-batch size whose saved activations are about ``_MICRO_BATCH_BYTES``."""
        if len(y) < 4 * _MIN_MICRO_BATCH:
            return len(y)
        s = _MIN_MICRO_BATCH
        small, large = [0], [0]
        self._graph(X[:s], y[:s], small)
        self._graph(X[: 2 * s], y[: 2 * s], large)
        per_sample = max((large[0] - small[0]) / s, 1.0)  # the difference cancels the weights' share
        return int(min(len(y), max(_MIN_MICRO_BATCH, _MICRO_BATCH_BYTES // per_sample)))

    def _ensure_graphs(self) -> None:
        if self.cached is not None:
            return
        count = [0]
        if self.problem is not None:
            chunks = list(self._batches())
            if not chunks:  # a rank's empty share of sharded data: its products are zeros (then all-reduced)
                self.cached, self._graphs = True, []
                return
            first = self._graph(chunks[0], None, count)
            size = chunks[0].size
        else:
            chunks = self._chunks
            first = self._graph(*chunks[0], count)
            size = len(chunks[0][1])
        estimate = count[0] * self.n_samples / size
        self.cached = bool(self._cache) if self._cache is not None else estimate <= self.memory_budget
        if self.cached:
            self._graphs = [first] + [self._graph(*((c, None) if self.problem is not None else c)) for c in chunks[1:]]

    # ------------------------------------------------------------------ products
    def matmat(self, V: Tensor) -> Tensor:
        """Hessian times a block of vectors.

        Args:
            V: Shape ``(n, k)``, any floating dtype.

        Returns:
            ``H @ V``, shape ``(n, k)``, in ``V``'s dtype (accumulated in float64).

        Raises:
            ValueError: If ``V`` has the wrong shape.
        """
        if V.dim() != 2 or V.shape[0] != self.n:
            raise ValueError(f"expected a matrix of shape ({self.n}, k), got {tuple(V.shape)}")
        k = V.shape[1]
        out = torch.zeros(k, self.n, dtype=torch.float64, device=self.device)  # a row per probe, as they come
        self.hvp_count += k
        if k == 0:
            return out.T.to(V.dtype)
        self._ensure_graphs()
        # one contiguous row per probe: strided grad_outputs made every product's kernels copy them first
        Vt = V.detach().to(self.device, self.dtype).T.contiguous()
        splits = [s.numel for s in self.specs]
        cols = [[c.view(s.shape) for c, s in zip(Vt[j].split(splits), self.specs)] for j in range(k)]
        for i, chunk in enumerate(self._batches()):
            if self.cached and self._graphs is not None:
                grads = self._graphs[i]
            else:
                grads = self._graph(chunk, None) if self.problem is not None else self._graph(*chunk)
            live = [j for j, g in enumerate(grads) if g is not None]
            if not live:
                continue
            outputs = [g for g in grads if g is not None]  # grads[j] for j in live
            for j, parts in enumerate(cols):
                hv = torch.autograd.grad(
                    outputs,
                    self._leaves,
                    grad_outputs=[parts[t] for t in live],
                    retain_graph=bool(self.cached) or j < k - 1,
                    allow_unused=True,
                )
                pos = 0
                for h, size in zip(hv, splits):
                    if h is not None:
                        out[j, pos : pos + size] += h.reshape(-1)
                    pos += size
        if self._shard is not None:
            out = distributed.all_reduce_sum([out])[0]
        # (n, k) contiguous: the cast copies for float32 V; for float64 it returns the view and contiguous() copies
        return out.T.to(V.dtype, memory_format=torch.contiguous_format).contiguous()

    def matvec(self, v: Tensor) -> Tensor:
        """Hessian-vector product: ``(n,) -> (n,)`` in ``v``'s dtype.

        Raises:
            ValueError: If ``v`` has the wrong shape.
        """
        if v.dim() != 1:
            raise ValueError(f"expected a vector of shape ({self.n},), got {tuple(v.shape)}")
        return self.matmat(v[:, None])[:, 0]

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self.n, self.n)

    @property
    def param_names(self) -> list[str]:
        """Names of the selected tensors, in vector order."""
        return [s.name for s in self.specs]

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (float64, symmetric) over the same products."""
        from scipy.sparse.linalg import LinearOperator

        def mm(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            y = self.matmat(torch.from_numpy(x.reshape(self.n, -1).copy())).cpu().numpy()
            return y.reshape(x.shape)

        return LinearOperator((self.n, self.n), matvec=mm, rmatvec=mm, matmat=mm, rmatmat=mm, dtype=np.float64)

    def dense(self) -> Tensor:
        """The full matrix, shape ``(n, n)`` float64, by ``n`` products (small models only).

        Raises:
            ValueError: If ``n > 20000``.
        """
        if self.n > 20000:
            raise ValueError(f"a dense Hessian of {self.n} parameters is too large; use products or a subset")
        return self.matmat(torch.eye(self.n, dtype=torch.float64))

    def to_full(self, v: Tensor) -> Tensor:
        """Embed subset coordinates into full parameter vectors (zeros elsewhere).

        Args:
            v: Shape ``(n,)`` or ``(n, k)``.

        Returns:
            Shape ``(numel,)`` or ``(numel, k)`` in ``v``'s dtype, ``numel`` the model's trainable size.
        """
        out = v.new_zeros((self.layout.numel, *v.shape[1:]))
        out[self.index] = v
        return out

    def __repr__(self) -> str:
        return (
            f"HessianOperator(n={self.n}, samples={self.n_samples}, chunks={len(self._chunks) or 'as given'}, "
            f"bn_mode={self.bn_mode.value!r}, cached={self.cached}, hvps={self.hvp_count})"
        )
