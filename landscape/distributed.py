"""Scale-out over ``torch.distributed``: data sharded across ranks, sums all-reduced.

An analyzer's work can be split across the ranks of an initialized process group in two ways:

* **points**: every rank holds the whole dataset and evaluates a share of the points (round robin); the
  results are all-gathered. No communication inside a point, so it is the faster split for surfaces
  when the data fits every rank.
* **data**: every rank holds only its share of the data (:class:`~landscape.Problem` with
  ``shard="split"`` or ``shard="given"``) and evaluates every point on it; the per-point sums (loss,
  correct predictions, gradient, Hessian-vector products) and the sample counts are all-reduced, so every
  mean is the mean over all ranks' data. This is the only split for data no single process holds, and the
  only one that parallelizes a single HVP (and so Lanczos, SLQ and Hutch++), whose points are sequential.

**The rule**: a problem whose data is sharded always splits data (no rank could evaluate a point alone);
a problem whose data is replicated (``shard="none"``, the default) splits points for surfaces and
distances and runs second-order methods redundantly on every rank (each rank gets the whole answer).

Every rank must make the same calls in the same order (they are collective). Random start blocks and
probes come from explicitly seeded generators (``seed=`` of the Hessian functions), so every rank draws the
same vectors, runs the same iteration on the same all-reduced products and returns the same result (tested
bitwise across two ranks). Pass the same seed on every rank.

**Shuffled data.** ``shard="split"`` splits a shuffling ``DataLoader`` by a fixed order (the dataset's
indices), never by the loader's shuffle, which each rank draws for itself; each rank shuffles only its share.
Every sum is over the data, whatever the order. Loaders sampling with replacement and ``DistributedSampler``
loaders are refused (``landscape._batch._sampler_order`` says why).

**Empty shares.** A rank's share may be empty (data with fewer samples or batches than ranks, or what is left
after ``drop_last``): that rank still makes every call and takes part in every collective, contributing zero
sums and zero counts, so results still equal one process's. It takes the others' shapes where it needs them
(:func:`all_gather_rows`), and the problem agrees across ranks on every choice that depends on the data (the
engine's fast executors or its general path, the default metrics, a weighted mean), so an empty share sends
every rank down the general path. Rank 0 holds data whenever any rank does (shares are filled in rank order).
When *every* rank's share is empty the mean is undefined: every rank raises the same
:class:`~landscape.validation.InputError` (``"data holds no sample on any of the W ranks"``) at the same call,
as one process raises on empty data; no rank is left waiting in a collective.

**An error on one rank.** An error raised on one rank only (a bad batch in its share, say) is not passed to the
others: they wait in their next collective. Under ``torchrun`` that ends quickly, as the launcher stops every
worker when one exits with an error (measured: about 12 s with gloo). A process that survives its error (a
notebook, an ``except`` around the call) leaves the others waiting until the process group's timeout
(``init_process_group(timeout=...)``), and its next call would pair with their pending collective: after such an
error, restart every rank. The checks of a rank's share (NaN/inf inputs, labels out of range) run on that share
only, so they raise on that rank alone; checks of arguments, and data empty on every rank, raise on every rank at
the same call.

What is sharded: :meth:`Problem.loss / grad / hvp / evaluate <landscape.Problem>`, the evaluation engine
(surfaces, lines, functional distance: custom metrics see global sample indices, on the engine's general path
too; a strided split, which loses the data order, refuses them), the Hessian operator (so
eigenpairs, SLQ density and trace estimates). Results equal one process's to rounding (1e-6 relative in the
tests, float64). Not sharded: :meth:`Problem.objective <landscape.Problem.objective>`, a pure function for
``torch.func`` transforms, inside which no collective can run; it refuses sharded data (it would give one rank's
share of the mean). FSDP2-wrapped models are refused by name (:func:`check_not_fsdp` says why and the recipe).

Example (two processes, each reading half of a dataset)::

    # torchrun --nproc_per_node 2 script.py
    torch.distributed.init_process_group("gloo")
    prob = landscape.Problem(model, dataset, "cross_entropy", shard="split")
    spec = landscape.hessian_spectrum(prob, top_k=3)  # the same on both ranks
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "SHARD_MODES",
    "rank_world",
    "shard_bounds",
    "loader_shard_bounds",
    "all_reduce_sum",
    "broadcast",
    "all_gather_rows",
    "check_not_fsdp",
    "all_gather_strided",
]

SHARD_MODES = ("none", "split", "given")
"""``Problem(shard=...)``: ``"none"`` every rank holds the same data; ``"split"`` the problem keeps only this
rank's contiguous share of the data it is given; ``"given"`` each rank was given its own share."""


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialized default process group, ``(0, 1)`` without one."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of ``n`` items; shares differ by at most one.

    Example:
        >>> [shard_bounds(5, r, 2) for r in range(2)]
        [(0, 3), (3, 5)]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of size {world}")
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def loader_shard_bounds(
    n: int, batch_size: int, drop_last: bool, rank: int, world: int, whole_batches: bool = False
) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of the samples one process reads from a loader read in order.

    A loader over ``n`` samples in batches of ``batch_size`` reads them all, or with ``drop_last`` only the first
    ``n - n % batch_size`` (the short last batch dropped): those are what the ranks share (:func:`shard_bounds`),
    each rank reading its share without dropping, so together they read what one process reads. Splitting all
    ``n`` and letting each rank drop its own short batch would read other samples.

    ``whole_batches``: the ranks share the *batches* one process reads (:func:`shard_bounds` of their number), so
    every rank cuts its share into the same batches as one process: what a model whose output depends on the
    batch needs (BatchNorm on batch statistics, ``bn_mode="train"``). Shares then differ by up to one batch.

    Example:
        >>> [loader_shard_bounds(10, 4, True, r, 2) for r in range(2)]
        [(0, 4), (4, 8)]
        >>> [loader_shard_bounds(24, 5, False, r, 2, whole_batches=True) for r in range(2)]
        [(0, 15), (15, 24)]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    read = n - n % batch_size if drop_last else n
    if not whole_batches:
        return shard_bounds(read, rank, world)
    lo, hi = shard_bounds(-(-read // batch_size), rank, world)
    return lo * batch_size, min(hi * batch_size, read)


def _device() -> torch.device:
    d = torch.distributed
    if d.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Sum each tensor over the ranks, in one collective (packed into one float64 buffer).

    Returns the tensors unchanged (not copied) without a process group of more than one rank.

    Args:
        tensors: Floating or integer tensors of any shapes, the same shapes on every rank.

    Returns:
        The summed tensors, each with its own shape, dtype and device.
    """
    rank, world = rank_world()
    if world == 1:
        return list(tensors)
    dev = _device()
    flat = torch.cat([t.detach().reshape(-1).to(dev, torch.float64) for t in tensors])
    torch.distributed.all_reduce(flat)
    out, s = [], 0
    for t in tensors:
        out.append(flat[s : s + t.numel()].reshape(t.shape).to(device=t.device, dtype=t.dtype))
        s += t.numel()
    return out


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s ``t`` on every rank (a copy; ``t`` itself without a process group)."""
    rank, world = rank_world()
    if world == 1:
        return t
    buf = t.detach().to(_device()).clone().contiguous()
    torch.distributed.broadcast(buf, src)
    return buf.to(t.device)


_DTYPES = (
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.complex128,
    torch.complex64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)
_MAX_DIMS = 16  # trailing dimensions all_gather_rows carries in its header


def all_gather_rows(local: Tensor) -> Tensor:
    """Concatenate every rank's rows in rank order: ``(n_r, *s)`` per rank -> ``(sum n_r, *s)``.

    Ranks may hold different numbers of rows (padded for the collective). Ranks holding rows must agree on the
    trailing shape and dtype; a rank holding none (an empty share of the data) may pass any tensor without rows
    (``torch.empty(0)``, say): it takes the others' trailing shape and dtype, so it need not know them. Two
    collectives: a header (each rank's row count, trailing shape and dtype), then the padded rows.

    Raises:
        ValueError: If ranks holding rows disagree on the trailing shape or dtype (on every rank), or a tensor
            has more than 16 trailing dimensions.
    """
    rank, world = rank_world()
    if world == 1:
        return local
    d, dev = torch.distributed, _device()
    if local.dim() - 1 > _MAX_DIMS:
        raise ValueError(f"all_gather_rows carries up to {_MAX_DIMS} trailing dimensions, got {local.dim() - 1}")
    # header: rows, trailing ndim, dtype code, trailing shape (padded)
    code = _DTYPES.index(local.dtype) if local.dtype in _DTYPES else -1
    shape = list(local.shape[1:]) if local.dim() else []
    head = torch.tensor([local.shape[0] if local.dim() else 0, len(shape), code, *shape], dtype=torch.int64)
    head = torch.cat([head, torch.zeros(3 + _MAX_DIMS - len(head), dtype=torch.int64)]).to(dev)
    heads = [torch.zeros_like(head) for _ in range(world)]
    d.all_gather(heads, head)
    rows = [h.tolist() for h in heads]
    sizes = [r[0] for r in rows]
    layouts = {tuple(r[1 : 3 + r[1]]) for r in rows if r[0] > 0}
    if not layouts:  # no rank holds a row
        return local
    if len(layouts) > 1:
        raise ValueError(f"all_gather_rows: the ranks' rows differ in trailing shape or dtype: {sorted(layouts)}")
    ndim, dcode, *trailing = layouts.pop()
    if dcode == -1 and 0 in sizes:
        raise ValueError("all_gather_rows: the rows' dtype is not one a rank without rows can take (see _DTYPES)")
    dtype = local.dtype if dcode == -1 else _DTYPES[dcode]
    buf = torch.zeros((max(sizes), *trailing), dtype=dtype, device=dev)
    if local.shape[0]:
        buf[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(buf) for _ in range(world)]
    d.all_gather(parts, buf)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)]).to(local.device)


def all_gather_strided(local: Tensor, total: int) -> Tensor:
    """All-gather ``total`` rows held round-robin: row ``j`` of rank ``r`` is global row ``r + j * world``.

    How the evaluation engine splits points (point ``i`` on rank ``i % world``). Returns ``local`` without a
    process group of more than one rank.
    """
    rank, world = rank_world()
    if world == 1:
        return local
    dev = _device()
    per = -(-total // world)
    buf = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=dev)
    buf[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(buf) for _ in range(world)]
    torch.distributed.all_gather(parts, buf)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r in range(world):
        cnt = len(range(r, total, world))
        out[r::world] = parts[r][:cnt].cpu()
    return out


FSDP_FIX = (
    "evaluate a plain copy instead: build the model unwrapped on every rank and load "
    "torch.distributed.checkpoint.state_dict.get_model_state_dict(model, "
    "options=StateDictOptions(full_state_dict=True)) into it (each rank then holds the whole model; the data can "
    "still be sharded with Problem(shard='split'))"
)


def check_not_fsdp(model: torch.nn.Module) -> None:
    """Refuse a model wrapped by FSDP2 (``fully_shard``), naming the module and the fix.

    Why: every analyzer evaluates a model at other parameters through ``torch.func.functional_call``, which swaps
    the module's tensors for the call. FSDP2's pre-forward hook then all-gathers its own shards and installs
    them as the module's parameters, overriding the swapped ones, so every point would silently evaluate the
    model's own weights (measured: a line of seven points gave seven equal losses).

    Raises:
        InputError: If any submodule is an ``FSDPModule``.
    """
    # An FSDPModule exists only once its package was imported (a submodule's import imports its parents), so a
    # process that never imported it holds no FSDP2 model; importing it here would cost about a second per process.
    if sys.modules.get("torch.distributed.fsdp") is None:
        return
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return
    from landscape.validation import InputError

    for name, m in model.named_modules():
        if isinstance(m, FSDPModule):
            where = f"module {name!r}" if name else "the model"
            raise InputError(
                f"{where} is wrapped by FSDP2 (fully_shard), whose hooks override the evaluated parameters; {FSDP_FIX}"
            )
