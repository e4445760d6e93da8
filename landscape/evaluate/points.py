"""The evaluation engine: metrics of one architecture at many parameter points over a dataset.

Every slice, interpolation and distance in the package calls :func:`evaluate_points`; none has a loop
of its own. Points come as a ``(P, D)`` matrix, a lazy iterable of ``(D,)`` vectors, or a lazy
:class:`AffinePoints` (``coefs @ basis``: a 201x201 plane never holds 40,401 vectors at once).

Strategies (all give the same numbers up to float rounding; ``tests/test_evaluate.py`` checks each
against ``"loop"`` in float64):

- ``"loop"``: the reference. One point and one of the caller's batches at a time through
  :func:`torch.func.functional_call`, the loss computed by ``loss_fn``.
- ``"functional"``: any model (:mod:`landscape.evaluate._pointwise`). A private copy evaluated one point at
  a time, data re-cut into cache-sized micro-batches (fresh large activations are slow to page in), 2x2 max
  pooling routed through two ``torch.maximum`` of strided views by a ``TorchFunctionMode`` (~10x faster
  than ``F.max_pool2d`` on this CPU, exact), and, when the first parametrized op is a ``Linear``/``Conv2d``
  on the input and the points are affine, its output ``sum_k c_k (W_k x + b_k)`` combined from K
  precomputed maps instead of one layer evaluation per point.
- ``"vmap"``: ``"functional"`` vmapped over chunks of points; chunks vmap cannot handle fall back
  to one point at a time. Measured here it is not faster on CPU, so ``"auto"`` never picks it.
- ``"stacked"``: any model :mod:`torch.fx` traces (no control flow on the data) that returns one
  tensor (BatchNorm on running statistics: not under ``bn_mode="train"``), evaluated for a chunk of
  points at once at the level of operations (traced by :mod:`landscape.evaluate._trace`, run by
  :mod:`landscape.evaluate._stacked`): ``nn.Linear`` and ``F.linear``, ``nn.MaxPool2d`` and
  ``F.max_pool2d``, ``nn.ReLU`` and ``x.relu()`` take the same vectorized handler
  (:mod:`landscape.evaluate._handlers`); operations without one run point by point.
  Many points share one ``bmm`` per linear layer; logits stay class-major ``(P, C, B)`` so the
  cross-entropy's ``log_softmax`` runs over contiguous samples; first layers of affine points are one
  ``(P, K) @ (K, n)`` product (pooled by phase when a 2x2 max pool follows); the large per-step tensors
  go into reused buffers.
- ``"auto"``: ``"stacked"`` when the model passes a probe against ``functional_call`` (plain and
  affine paths), else
  ``"functional"`` (``"loop"`` order for ``bn_mode="train"``, whose statistics depend on the batches).

BatchNorm policy (``bn_mode``, :class:`~landscape.functional.BNMode`): ``"eval"`` (default) uses the
running statistics of the given model (or ``buffers``); ``"train"`` uses each of the caller's batches'
statistics (running buffers are never written, dropout stays off); ``"interpolate"`` uses per-point
buffers ``sum_k c_k B_k`` of an :class:`AffinePoints` whose ``buffers`` are given (Li et al.'s "states");
``"recompute"`` first recomputes every point's running statistics over ``bn_data`` (default: the evaluated
data, in the caller's batches) as :func:`torch.optim.swa_utils.update_bn` does, then evaluates on them (the
remedy of Garipov et al. 2018 for curves and Jordan et al. 2023's "RESET" for interpolated networks; one
extra forward pass over ``bn_data`` per point).

Loss: ``loss_fn`` returns the mean over a batch (like ``nn.CrossEntropyLoss()``); the engine weights
batches by size, so the result is the mean over the dataset. A cross-entropy or NLL loss whose mean weights
samples unequally (class weights, targets equal to its ``ignore_index``) gives the whole data's loss, as one
call over all of it would (weighted sums and summed weights, however the data are cut into batches). A
point whose loss is NaN or inf is returned as such (its accuracy as NaN), counted and reported with a warning,
never raised. The accuracy counts the samples whose label is not the loss's ``ignore_index``.

Under ``torch.distributed`` (initialized, world size > 1) point ``i`` is evaluated by rank
``i % world_size`` and every rank returns all results (all-gather); data must be the same on all ranks.
"""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed
from landscape._batch import dataset_loader, describe_data
from landscape._loss import ignored_label, sum_reduced, weighted_mean
from landscape._options import check_count, parse_bytes, parse_option
from landscape.evaluate._bnstats import StatisticsPass, statistics_inputs
from landscape.evaluate._metrics import MetricSums
from landscape.evaluate._pointwise import PointwiseExec, batch_dependent, find_first_layer, first_input, probe_sizes
from landscape.evaluate._stacked import StackedExec, agrees_with_functional_call
from landscape.evaluate._trace import build_program, untraceable
from landscape.evaluate.affine import AffinePoints, Chunk, iter_chunks, take_block
from landscape.functional import BNMode, FunctionalModel, eval_copy
from landscape.params import ParamLayout, parameters_to_vector
from landscape.validation import check_model, validate_batches

if TYPE_CHECKING:
    from landscape.problem import Problem

__all__ = [
    "Strategy",
    "BNMode",
    "AffinePoints",
    "BatchMetric",
    "evaluate_points",
    "describe_data",
    "parse_bytes",
]

BatchMetric = Callable[[Tensor, Tensor, int], Tensor]
"""A custom metric: ``(outputs (P, B, *out), targets (B, ...), start) -> (P,)`` sums over the batch.

``start`` is the index of the batch's first sample in the dataset. The engine divides the summed
values by the number of samples. Its key in the result is its ``name`` attribute (or ``__name__``).
"""

# Sizes measured best on this 2-core CPU (LeNet-5 and MLP 64-32-10; L2 is 2 MB per core): a micro-batch
# whose largest activation is ~1 MB for one point, and chunks of points whose largest activation is ~8 MB
# (LeNet-5 planes, CPU time, alternating in one process: 30 points/s against 27 with 2 MB / 4 MB; the MLP
# within noise).
_BATCH_BYTES = 1 << 20
_CHUNK_BYTES = 8 << 20
_MAX_CHUNK = 256


class Strategy(str, Enum):
    """How :func:`evaluate_points` computes (see the module docstring)."""

    AUTO = "auto"
    LOOP = "loop"
    FUNCTIONAL = "functional"
    VMAP = "vmap"
    STACKED = "stacked"


# =========================================================================== data
def _read_data(
    data: Any, model: nn.Module, metrics: Sequence[Any], loss_fn: Any, device: torch.device, dtype: torch.dtype
) -> list[tuple[Tensor, Tensor]]:
    """The data read once, checked and normalized by :mod:`landscape.validation` (dtype, labels, NaN, empty)."""
    names = {m for m in metrics if isinstance(m, str)}
    # Targets matter only to the loss and accuracy; custom metrics (e.g. the functional distance) get them as given.
    # (a cross-entropy's ignore_index is allowed: such data take the weighted path of MetricSums)
    # (the accuracy alone checks labels as the loss would: a label equal to its ignore_index is skipped, not refused)
    classes = "cross_entropy" if ignored_label(loss_fn) is None else loss_fn
    loss = loss_fn if "loss" in names else (classes if "accuracy" in names else None)
    return validate_batches(data, model, loss, targets=bool(names & {"loss", "accuracy"}), dtype=dtype, device=device)


def _tensor_output(model: nn.Module, x: Tensor) -> bool:
    """Whether the model (in eval mode, through the package's functional call: never modified) returns a tensor."""
    private = {k: v.clone() for k, v in model.named_buffers()}  # no statistics update reaches the caller's
    with torch.no_grad():
        return isinstance(FunctionalModel(model, private)(x), Tensor)


def _recut(batches: list[tuple[Tensor, Tensor]], size: int) -> list[tuple[Tensor, Tensor]]:
    """Re-cut batches into micro-batches of ``size`` (order kept); unchanged if shapes differ."""
    if len({tuple(x.shape[1:]) for x, _ in batches}) != 1 or len({tuple(y.shape[1:]) for _, y in batches}) != 1:
        return batches
    x = batches[0][0] if len(batches) == 1 else torch.cat([b[0] for b in batches])
    y = batches[0][1] if len(batches) == 1 else torch.cat([b[1] for b in batches])
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def _with_statistics(chunks: Iterable[Chunk], stats: StatisticsPass) -> Iterator[Chunk]:
    """The chunks with every point's buffers, its BatchNorm statistics recomputed (``bn_mode="recompute"``)."""
    for chunk in chunks:
        chunk.buffers = [stats(v) for v in chunk.mat]
        yield chunk


def _first_rows(batches: list[tuple[Tensor, Tensor]], n: int) -> Tensor:
    """The data's first ``n`` inputs (fewer if the data are smaller, or if the first batches' shapes differ)."""
    rows = [x[:n] for x, _ in batches[:n]]
    if len({tuple(r.shape[1:]) for r in rows}) != 1:
        return rows[0]
    return torch.cat(rows)[:n] if len(rows[0]) < n else rows[0]


_SHARD_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar("shard_local", default=False)
_START: contextvars.ContextVar[int] = contextvars.ContextVar("start", default=0)


def _interpolated_general(
    problem: Any, points: AffinePoints, metrics: Any, chunk_size: int, progress: bool
) -> dict[str, np.ndarray]:
    """``bn_mode="interpolate"`` on the problem's general path: each point with its own interpolated buffers.

    The general path evaluates one point at a time anyway; each point runs on a private copy of the model holding
    its buffers (``points.buffers_at``), in eval mode, so the statistics are those of the fast path.
    """
    import copy

    del chunk_size  # one point per evaluation: each has buffers of its own
    model = copy.deepcopy(problem.model)
    own = dict(model.named_buffers())
    parts: dict[str, list[np.ndarray]] = {}
    for p in range(len(points)):
        idx = torch.tensor([p])
        with torch.no_grad():
            for k, v in points.buffers_at(idx)[0].items():
                own[k].copy_(v)
        one = problem.with_model(model).with_options(bn_mode="eval")
        for k, v in one.evaluate(points.materialize(idx), metrics, chunk_size=1, progress=progress).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _evaluate_sharded(problem: Any, points: Any, metrics: Any, **kw: Any) -> dict[str, np.ndarray]:
    """A data-sharded problem (:mod:`landscape.distributed`): every point on this rank's share, then combined.

    Per-point means become sums (times the local count), all-reduced with the counts; outputs are gathered in
    rank (= data) order; custom metrics see global sample indices.
    """
    names = [m if isinstance(m, str) else "custom" for m in (metrics or ())]
    if not problem.shard_ordered and ("outputs" in names or "custom" in names):
        raise ValueError(
            "metric 'outputs' and custom metrics need the data order, which a strided shard of an iterable loses; "
            "shard a Dataset, a DataLoader over one, a list of batches or tensors instead"
        )
    n_local = problem.n_samples
    counts = distributed.all_gather_rows(torch.tensor([n_local], dtype=torch.int64))
    rank = distributed.rank_world()[0]
    t_local, t_start = _SHARD_LOCAL.set(True), _START.set(int(counts[:rank].sum()))
    try:
        local = evaluate_points(problem, points, metrics=metrics, **kw)
    finally:
        _SHARD_LOCAL.reset(t_local)
        _START.reset(t_start)
    keys = [k for k in local if k != "outputs"]
    sums = [torch.from_numpy(local[k]) * n_local for k in keys]
    *totals, n = distributed.all_reduce_sum([*sums, torch.tensor(float(n_local), dtype=torch.float64)])
    out = {k: (t / n).numpy() for k, t in zip(keys, totals)}
    if "outputs" in local:
        rows = distributed.all_gather_rows(torch.from_numpy(local["outputs"]).transpose(0, 1).contiguous())
        out["outputs"] = rows.transpose(0, 1).numpy()
    return {k: out[k] for k in local}


# =========================================================================== entry point
def evaluate_points(
    problem: Problem | nn.Module,
    points: Tensor | Iterable[Tensor] | AffinePoints,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]] | None = None,
    *,
    metrics: Sequence[str | BatchMetric] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | str | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    strategy: Strategy | str = Strategy.AUTO,
    bn_mode: BNMode | str | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    bn_data: Any = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Evaluate metrics of a model's architecture at many parameter points over a dataset.

    The caller's model is never modified (a private copy is evaluated through ``functional_call``).

    A :class:`~landscape.problem.Problem` whose data are ``(X, y)`` tensor batches held in memory and whose
    loss is ``(outputs, targets)`` runs through the executors below (in the problem's dtype); any other
    problem (closure losses, mapping or multi-input batches, streamed data) through
    :meth:`Problem.evaluate <landscape.problem.Problem.evaluate>`, one point at a time.

    Args:
        problem: A :class:`~landscape.problem.Problem`, or the model (the architecture; its buffers and
            frozen parameters are used) with ``data`` (and ``loss_fn``) as a shorthand. A model whose outputs are
            not a tensor (a mapping, a tuple, a ``ModelOutput``) is evaluated as ``Problem(model, data, loss_fn)``
            is: its output rule, one point at a time, the batches as given.
        points: ``(P, D)`` matrix, an iterable of ``(D,)`` vectors (consumed lazily), or
            :class:`AffinePoints`; ``D`` is the number of parameters.
        data: Shorthand only: a tensor pair ``(X (N, ...), y (N, ...))`` or an iterable of such batches
            (read once and kept in memory).
        metrics: Names among ``"loss"``, ``"accuracy"``, ``"outputs"``, and/or :data:`BatchMetric`
            callables; default ``("loss", "accuracy")`` for integer class targets, else ``("loss",)``.
        loss_fn: Shorthand only: batch-mean loss ``(outputs, targets) -> scalar``, ``"cross_entropy"`` or
            ``"mse"``; default cross-entropy for integer targets, MSE otherwise.
        batch_size: Micro-batch size (default: the largest activation of one point stays ~2 MB); with
            ``bn_mode="train"``, ``strategy="loop"`` or a model whose outputs depend on the batch (BatchNorm
            without running statistics) the caller's batches are kept unless given.
        chunk_size: Points evaluated together (default: ~4 MB of largest activation, within ``memory_budget``).
        memory_budget: Bytes (or ``"512MB"``) for point chunks, activations and cached first-layer
            maps; default 1 GiB. Outputs and the data themselves are not counted.
        strategy: ``"auto"``, ``"loop"`` (reference), ``"functional"``, ``"vmap"`` or ``"stacked"``.
        bn_mode: ``"eval"``, ``"train"``, ``"interpolate"`` or ``"recompute"`` (see the module docstring);
            default the problem's (``"eval"`` for the shorthand).
        buffers: Buffers to use instead of the model's own (``bn_mode="eval"``/``"train"``; under
            ``"recompute"`` the ones not recomputed).
        bn_data: Under ``bn_mode="recompute"``, the data whose statistics every point takes: an input tensor,
            an ``(X, y)`` pair (one batch: the data's exact mean and unbiased variance) or an iterable of
            batches (tuples whose first entry is the input, as a ``DataLoader`` yields); default the
            evaluated data in the caller's batches. Typically the training data, when ``data`` is a test set.
        progress: Show a tqdm bar over points (rank 0 only).

    Returns:
        ``{"loss": (P,), "accuracy": (P,), "outputs": (P, N, *out), <custom>: (P,)}`` as numpy arrays
        (float64, outputs in the model dtype; bfloat16 ones as float32), in the order of ``points``, on every rank.

    Raises:
        ValueError: On mismatched points, unknown options, accuracy without class targets, or an
            unsupported model or ``bn_mode="train"`` under ``strategy="stacked"``.
        InputError: On empty data, NaN/inf in the data, the buffers or frozen parameters, or class labels
            outside the output width (inputs are cast to the model's dtype; see :mod:`landscape.validation`).
            Points holding NaN/inf are evaluated: their loss is returned as such.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> pts = parameters_to_vector(net).expand(4, -1)
        >>> out = evaluate_points(net, pts, (torch.randn(10, 2), torch.randint(0, 3, (10,))))
        >>> out["loss"].shape
        (4,)
    """
    from landscape.problem import Problem

    batch_size, chunk_size = check_count(batch_size, "batch_size"), check_count(chunk_size, "chunk_size")
    if isinstance(problem, Problem):
        if data is not None or loss_fn is not None:
            raise ValueError("a Problem holds its data and loss; do not pass data or loss_fn with it")
        bn = parse_option(BNMode, problem.bn_mode if bn_mode is None else bn_mode, "bn_mode")
        pairs = problem.pairs()
        if pairs is None or problem.weighted_mean():
            # the general path: closures, mapping / multi-input batches, streamed data, a loss whose batch mean
            # weights samples unequally (the problem's batches define its mean; the engine's own would not)
            interp = isinstance(points, AffinePoints) and points.buffers is not None  # a slice between models
            if bn is BNMode.INTERPOLATE and buffers is None and interp:
                assert isinstance(points, AffinePoints)
                return _interpolated_general(problem, points, metrics, chunk_size or 16, progress)
            if bn in (BNMode.INTERPOLATE, BNMode.RECOMPUTE) or buffers is not None:
                why = (
                    "a closure loss"
                    if problem.closure
                    else "a loss weighting samples unequally"
                    if pairs is not None
                    else "batches or model outputs other than (X, y) tensors and a tensor, or data streamed"
                )
                what = f"bn_mode={bn.value!r}" if buffers is None or bn is not BNMode.EVAL else "buffers="
                raise ValueError(
                    f"{what} runs on the evaluation engine's fast path, which this problem cannot take ({why}); "
                    "pass bn_mode='eval' (the models' own running statistics)"
                    + ("" if bn is not BNMode.INTERPOLATE else ", or points between models (AffinePoints with buffers)")
                )
            return problem.with_options(bn_mode=bn.value).evaluate(
                points, metrics, chunk_size=chunk_size or 16, progress=progress
            )
        if problem.sharded and not _SHARD_LOCAL.get():
            if bn is BNMode.RECOMPUTE and bn_data is None:
                raise ValueError(
                    "bn_mode='recompute' on a data-sharded problem would take each rank's share's statistics; "
                    "pass bn_data= (the same data on every rank)"
                )
            return _evaluate_sharded(
                problem,
                points,
                metrics,
                batch_size=batch_size,
                chunk_size=chunk_size,
                memory_budget=memory_budget,
                strategy=strategy,
                bn_mode=bn,
                buffers=buffers,
                bn_data=bn_data,
                progress=progress,
            )
        model, data, loss_fn = problem.compute_model(), pairs, problem.engine_loss()
    else:
        model = problem

        def _via_problem(general: Problem) -> Any:
            # the shorthand's data or model the engine cannot take: the Problem of the same model, data and loss
            kw = {"chunk_size": chunk_size, "bn_mode": bn_mode, "buffers": buffers, "bn_data": bn_data}
            return evaluate_points(general, points, metrics=metrics, progress=progress, **kw)

        bn = parse_option(BNMode, BNMode.EVAL if bn_mode is None else bn_mode, "bn_mode")
        if data is None:
            raise ValueError("data is missing: pass a landscape.Problem, or the model with data")
        loader = dataset_loader(data, None)  # a map-style Dataset: batched in order, as a Problem batches it
        data = data if loader is None else loader
        if sum_reduced(loss_fn):  # its loss is the sum over the data: the problem counts it so, the engine would not
            return _via_problem(Problem(model, data, loss_fn))
    strategy = parse_option(Strategy, strategy, "strategy")
    if strategy is Strategy.STACKED and bn is BNMode.TRAIN:
        raise ValueError(
            "strategy='stacked' runs BatchNorm on running statistics only; bn_mode='train' (batch statistics) "
            "needs strategy='auto', 'functional', 'vmap' or 'loop'"
        )
    layout = ParamLayout.from_model(model)
    ref = next(iter(model.parameters()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    budget = parse_bytes(memory_budget)
    itemsize = torch.empty((), dtype=dtype).element_size()
    check_model(model, trainable=False)  # frozen parameters and buffers are used at every point
    try:
        batches = _read_data(data, model, ("loss",) if metrics is None else metrics, loss_fn, device, dtype)
    except TypeError as e:  # not (X, y) batches: mapping or multi-input batches, which a Problem reads
        if isinstance(problem, Problem):
            raise
        try:
            general = Problem(model, data, loss_fn)
        except (TypeError, ValueError):  # a Problem cannot read it either: the engine's message says what it takes
            raise e from None
        return _via_problem(general)
    if not isinstance(problem, Problem) and not _tensor_output(model, batches[0][0][:2]):
        # a mapping, tuple or ModelOutput: the problem of the same model, data and loss reads it by the output rule
        # (one point at a time, the batches as given), as evaluate_points(Problem(model, data, loss_fn), ...)
        return _via_problem(Problem(model, batches, loss_fn))
    if metrics is None:  # accuracy for class labels (validation made them (B,) int64), else the loss only
        y0 = batches[0][1]
        classes = not (y0.is_floating_point() or y0.is_complex()) and y0.dim() == 1
        metrics = ("loss", "accuracy") if classes else ("loss",)
    n_samples = sum(int(y.shape[0]) for _, y in batches)
    weighted = "loss" in [m for m in metrics if isinstance(m, str)] and weighted_mean(loss_fn, (y for _, y in batches))
    mset = MetricSums(metrics, loss_fn, batches[0][1], plain=strategy is Strategy.LOOP, weighted=weighted)
    if bn is BNMode.INTERPOLATE and buffers is not None:
        raise ValueError("bn_mode='interpolate' takes buffers from the points' anchors; do not pass buffers")
    if bn_data is not None and bn is not BNMode.RECOMPUTE:
        raise ValueError(f"bn_data= is the data of bn_mode='recompute'; it has no use under bn_mode={bn.value!r}")
    # Private copies: train-mode BatchNorm writes running statistics in place, never into the caller's.
    bufs = {k: v.detach().clone() for k, v in (model.named_buffers() if buffers is None else buffers.items())}
    stats: StatisticsPass | None = None
    if bn is BNMode.RECOMPUTE:  # the caller's batches (before any re-cut): the statistics depend on them
        inputs = [x for x, _ in batches] if bn_data is None else statistics_inputs(model, bn_data, dtype, device)
        stats = StatisticsPass(model, layout, bufs, inputs)
        if not stats.active:  # no BatchNorm with running statistics: nothing to recompute
            stats, bn = None, BNMode.EVAL
    fast = strategy is not Strategy.LOOP
    copy_ = eval_copy(model, bn is BNMode.TRAIN)
    x1 = batches[0][0][:2]  # two samples: train-mode BatchNorm needs more than one value per channel
    x3 = _first_rows(batches, 3)
    max_act, total_act, out_shape = probe_sizes(copy_, x1, bufs)

    affine = isinstance(points, AffinePoints)
    exe: StackedExec | PointwiseExec | None = None
    why = ""  # why the stacked executor cannot take the model (strategy="stacked" says so)
    if strategy in (Strategy.AUTO, Strategy.STACKED) and bn is not BNMode.TRAIN:
        prog = build_program(copy_, key=model)
        if prog is None:
            why = untraceable(copy_) if strategy is Strategy.STACKED else ""
        else:
            exe = StackedExec(copy_, layout, bufs, prog)
            if not agrees_with_functional_call(exe, copy_, layout, bufs, x1, parameters_to_vector(model).to(dtype)):
                why, exe = exe.refusal, None
    if exe is None and strategy is Strategy.STACKED:
        raise ValueError(
            f"strategy='stacked' needs a model that torch.fx can trace into the same function; {type(model).__name__} "
            f"is not one: {why}. Use strategy='auto' (the exact per-point path for such models)"
        )
    if exe is None:
        own_buffers = bn in (BNMode.INTERPOLATE, BNMode.RECOMPUTE)  # every point has buffers of its own
        first = find_first_layer(copy_, layout, x1, bufs) if fast and affine and not own_buffers else None
        exe = PointwiseExec(copy_, layout, bufs, bn is BNMode.TRAIN, first, strategy is Strategy.VMAP)

    # the caller's batches define the loss when a sample's output depends on its batch-mates (batch statistics)
    keep_batches = not fast or bn is BNMode.TRAIN or (batch_size is None and batch_dependent(copy_, x3, bufs))
    if batch_size is not None or not keep_batches:
        micro = batch_size or max(8, min(n_samples, _BATCH_BYTES // max(1, max_act * itemsize)))
        batches = _recut(batches, int(micro))
    B = max(int(y.shape[0]) for _, y in batches)
    per_point = layout.numel * itemsize * 3 + B * total_act * itemsize * 2
    if chunk_size is None:
        if isinstance(exe, StackedExec) or (isinstance(exe, PointwiseExec) and exe.vmap):
            chunk_size = max(1, min(_MAX_CHUNK, _CHUNK_BYTES // max(1, B * max_act * itemsize)))
        else:
            chunk_size = 16
        chunk_size = max(1, min(chunk_size, budget // max(1, per_point)))

    run, first_layer = exe, exe.first  # as the closure below sees them
    # First-layer maps combine the basis in the model's dtype; a point is its combination rounded to the basis
    # dtype, so a basis less precise than the model (float32 directions, a float64 model) takes the plain path.
    basis = (
        points.basis.to(device=device, dtype=dtype)
        if isinstance(points, AffinePoints)
        and first_layer is not None
        and torch.finfo(points.basis.dtype).eps <= torch.finfo(dtype).eps
        else None
    )

    def first_maps(x: Tensor) -> Any:  # in the executor's own form: Tensor (functional), dict (stacked), or None
        if basis is None or first_layer is None:
            return None
        return run.first_maps(first_input(copy_, first_layer, x, bufs), basis)

    # Points split round-robin over the ranks, unless the data is sharded (then every rank takes every point).
    rank, world = (0, 1) if _SHARD_LOCAL.get() else distributed.rank_world()
    counter = [0]
    parts: dict[str, list[Tensor]] = {}
    from tqdm.auto import tqdm

    total = len(points) if hasattr(points, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(
        total=None if total is None else len(range(rank, total, world)),
        desc="points",
        unit="pt",
        disable=not progress or rank != 0,
    )
    block_points = max(chunk_size, budget // 4 // max(1, layout.numel * 8))
    interp = bn is BNMode.INTERPOLATE
    chunks = iter_chunks(points, layout.numel, dtype, device, chunk_size, rank, world, interp, counter)
    if stats is not None:
        chunks = _with_statistics(chunks, stats)
    with torch.no_grad(), bar:
        # Blocks of chunks, data outer: the first-layer maps of a micro-batch are computed once per
        # block and stay in cache while every point of the block uses them.
        while block := take_block(chunks, block_points):
            accs: list[dict[str, Any]] = [{} for _ in block]
            start, done, shown = _START.get(), 0.0, 0  # global index of this rank's first sample
            for x, y in batches:
                Z = first_maps(x) if block[0].coefs is not None else None
                for chunk, acc in zip(block, accs):
                    h, lay = exe.forward(chunk, x, Z)
                    mset.add(acc, h, lay, y, start)
                    done += len(chunk) * int(y.shape[0]) / n_samples  # progress in points
                    if int(done) > shown:
                        bar.update(int(done) - shown)
                        shown = int(done)
                start += int(y.shape[0])
            bar.update(sum(len(c) for c in block) - shown)
            for acc in accs:
                for k, v in mset.finish(acc, n_samples).items():
                    parts.setdefault(k, []).append(v)
    P = counter[0]
    out: dict[str, np.ndarray] = {}
    for k, _ in mset.keys:
        if parts.get(k):
            local = torch.cat(parts[k])
        else:  # a rank without points (fewer points than ranks)
            shape, dt = ((0, n_samples, *out_shape), dtype) if k == "outputs" else ((0,), torch.float64)
            local = torch.empty(shape, dtype=dt)
        res = distributed.all_gather_strided(local, P) if world > 1 else local
        out[k] = (res.float() if res.dtype == torch.bfloat16 else res).numpy()  # numpy has no bfloat16
    if "loss" in out:
        bad = ~np.isfinite(out["loss"])
        if bad.any():
            if "accuracy" in out:
                out["accuracy"][bad] = np.nan
            if rank == 0:
                warnings.warn(
                    f"{int(bad.sum())} of {P} points gave a non-finite loss (NaN or inf); returned as such and "
                    "masked in plots",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return out
