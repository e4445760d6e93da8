"""Trajectory store: an append-only, crash-safe, checksummed sequence of parameter snapshots.

A snapshot is a flat parameter vector (see :mod:`landscape.params`) with the model's buffers
(BatchNorm running statistics) beside it, plus step, epoch, wall time, metrics and JSON tags. Runs
of consecutive snapshots that share one :class:`~landscape.params.ParamLayout` form a *segment*; a
tunnel event that grows or shrinks the network starts a new one.

A trajectory lives in memory (``Trajectory()``) or in a directory; both behave the same. On disk
(format version 2)::

    <dir>/manifest.json              format name and version, run metadata, per-segment layouts, "sum"
    <dir>/index.jsonl                one sealed JSON line per snapshot (append-only)
    <dir>/snapshots/00000012.pack    snapshots 12, 13, ... of one segment, back to back

**Packs.** A pack holds consecutive snapshots of one segment (a new pack starts with every segment,
``Trajectory.PACK_BYTES`` and every writer session), each a complete *safetensors* byte string (tensors
``vector`` and ``buffers/<name>``), written in order (a batch of them with one ``writev``). Each one
describes itself in its safetensors metadata: ``record`` (the snapshot's JSON record: index, segment,
step, epoch, time, dtype, metrics, tags), ``segment`` (in the first snapshot of a pack: the segment's
layout and buffer names) and ``digest`` (sha256 of the record, the segment entry, the tensor table and the tensor
bytes). A pack can therefore be verified, and the index and the manifest's segment table rebuilt
from it, without either; only the run metadata (``meta``) lives in the manifest alone.

**Seals.** Every index line and the manifest end in ``"sum":"<sha256 of the bytes before it>"``. An
index line also holds the snapshot's pack, byte offset, size and digest. Reading verifies the seal of
every line at open and the digest of a snapshot when it is read; any mismatch is a
:class:`CorruptTrajectoryError` naming the file, the line or snapshot, and what is wrong.

**Crash contract.** A snapshot is written to its pack before its index line. A snapshot whose
bytes are complete in its pack exists even if its index line is missing or torn: opening rolls such
tail snapshots forward after verifying their digests (mode ``"a"`` writes their index lines). The only
thing recovery ever removes is one incomplete tail: a torn last index line without its newline and a
partial last snapshot (or partial batch of snapshots) at the end of the last pack. Anything else that
does not verify is damage: open refuses, every file is left in place, and :meth:`Trajectory.check`
(``python -m landscape check DIR``) reports it and, with ``repair=True``, rebuilds the index (and a
damaged manifest's segments) from intact packs. Whatever survives the death of the writer is a prefix
of the appended snapshots, each byte-exact. After an operating-system crash or power loss, snapshots
appended since the last sync may be missing (``check --repair`` then trims an index that outran its
packs).

**Group commit and durability** (``durable=``). The first append of a ``"flush"`` or ``False`` store
starts a writer thread. The appending thread prepares each snapshot (a private copy of its tensors,
its record, its safetensors header) and queues it; the writer computes the digests, writes every
queued snapshot of a pack with one ``writev`` and their index lines with one ``write``, and syncs when
asked (``durable="append"`` does the same in the appending thread, one snapshot at a time). What a
completed call guarantees:

* :meth:`~Trajectory.append`, ``durable="append"`` (``True``, the default): the snapshot is written and
  its pack ``fdatasync``-ed: it survives the death of the process (SIGKILL included) and an
  operating-system crash or power loss. That costs one ``fdatasync`` per append (done by the
  appending thread, which has to wait for it anyway).
* :meth:`~Trajectory.append`, ``durable="flush"`` or ``False``: the snapshot is copied (later changes to
  the caller's tensors or model do not reach it) and queued. The writer hands it to the operating
  system within ``_Writer.LINGER`` (0.05 s), sooner once ``_Writer.BATCH`` (64) snapshots or 4 MB
  are queued; ``append`` waits while 256 snapshots or 64 MB are queued. A killed process loses at most
  the snapshots still queued, never one that a returned ``flush`` covered.
* :meth:`~Trajectory.flush` (every mode): every snapshot appended before is written and synced, with
  the index and the directories: it survives anything short of damage to the disk.
* :meth:`~Trajectory.close`: as ``flush`` (with ``durable=False``: written, not synced); the writer
  thread ends and the lock is released. An unclosed store writes its queue (without syncing) when it
  is garbage collected or the interpreter exits.

If the writer fails (disk full, I/O error), it truncates what it wrote of the failed batch, writes
nothing more, and the next ``append``, ``flush`` or ``close`` raises :class:`TrajectoryError` naming
the cause and the first snapshot not written; the store then forgets the unwritten snapshots and
closes (reading stays possible); everything written before is intact. A store opened for appending
cannot append from a forked child (its writer thread exists only in the parent).

The single-writer lock is ``flock`` on the store directory's own descriptor: no lock file to delete,
released by the kernel when the writer dies. Version 1 stores (one ``.safetensors`` file per snapshot,
unsealed index) open read-only; ``python -m landscape check DIR --migrate`` converts them. Nothing is
ever unpickled: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import copy
import functools
import hashlib
import json
import math
import operator
import os
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.params import ParamLayout, TensorSpec, parameters_to_vector

try:  # advisory single-writer lock; released by the OS when the writer dies (also on SIGKILL)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CheckReport",
    "Segment",
    "Snapshot",
    "Trajectory",
    "TrajectoryError",
    "CorruptTrajectoryError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "landscape-trajectory"
FORMAT_VERSION = 2
_MANIFEST, _INDEX, _SNAPDIR, _LOCK = "manifest.json", "index.jsonl", "snapshots", ".lock"
_PACK = ".pack"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
_BUF = "buffers/"
_CORE = ("i", "seg", "step", "epoch", "time", "dtype", "metrics", "tags")  # a record as the pack stores it
_ST_CODES = {  # torch dtype -> safetensors dtype name (the ones torch and safetensors share)
    getattr(torch, t): c
    for t, c in (
        ("float64", "F64"),
        ("float32", "F32"),
        ("float16", "F16"),
        ("bfloat16", "BF16"),
        ("int64", "I64"),
        ("int32", "I32"),
        ("int16", "I16"),
        ("int8", "I8"),
        ("uint8", "U8"),
        ("bool", "BOOL"),
        ("uint16", "U16"),
        ("uint32", "U32"),
        ("uint64", "U64"),
        ("float8_e4m3fn", "F8_E4M3"),
        ("float8_e5m2", "F8_E5M2"),
    )
    if hasattr(torch, t)
}
_SEAL = re.compile(rb',"sum":"([0-9a-f]{64})"\}\s*\Z')
_DURABLE: dict[bool | str, bool | str] = {True: "append", False: False, "append": "append", "flush": "flush"}


class TrajectoryError(ValueError):
    """A trajectory cannot be opened, read or appended to as asked."""


class CorruptTrajectoryError(TrajectoryError):
    """A file of an on-disk trajectory is missing, truncated, corrupted or not what it should be."""


# ----------------------------------------------------------------------------- seals and packs
def _seal(body: bytes) -> bytes:
    """``{...}`` -> ``{...,"sum":"<sha256 of {...}>"}``: any changed byte breaks the seal."""
    return body[:-1] + b',"sum":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'


def _unseal(data: bytes) -> tuple[Any, str | None]:
    """Parse sealed JSON; return ``(object, None)`` or ``(None, what is wrong)``."""
    m = _SEAL.search(data)
    if m is None:
        return None, 'has no checksum (no trailing "sum")'
    body = data[: m.start()] + b"}"
    if hashlib.sha256(body).hexdigest().encode() != m[1]:
        return None, "fails its checksum (sha256 mismatch)"
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as e:  # a sealed body is what we wrote: cannot happen unless forged
        return None, f"is not valid JSON ({e})"


def _record_json(rec: Mapping[str, Any]) -> str:
    return json.dumps({k: rec[k] for k in _CORE}, separators=(",", ":"))


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # == json.dumps(..., separators=(",", ":")), built once
_quote = json.encoder.encode_basestring_ascii  # == json.dumps(a str)


def _jfloat(x: float) -> str:
    # json.dumps's float format (repr, NaN, Infinity): the record must be byte-identical to _record_json's.
    return repr(x) if x - x == 0 else ("NaN" if x != x else ("Infinity" if x > 0 else "-Infinity"))


def _record_json_fast(rec: Mapping[str, Any]) -> str:
    """``_record_json(rec)`` for a record :meth:`Trajectory.append` built, in a quarter of the time."""
    m = rec["metrics"]
    metrics = "{" + ",".join(f"{_quote(k)}:{_jfloat(v)}" for k, v in m.items()) + "}" if m else "{}"
    tags = _ENCODER.encode(rec["tags"]) if rec["tags"] else "{}"
    return (
        f'{{"i":{rec["i"]},"seg":{rec["seg"]},"step":{rec["step"]},"epoch":{_jfloat(rec["epoch"])},'
        f'"time":{_jfloat(rec["time"])},"dtype":"{rec["dtype"]}","metrics":{metrics},"tags":{tags}}}'
    )


def _named_tensors(model: nn.Module) -> tuple[list[tuple[str, Tensor]], dict[str, Tensor]]:
    """``(list(model.named_parameters()), dict(model.named_buffers()))`` in one walk over the modules.

    Same names, order and de-duplication as torch's two generators, at about a third of their cost: for a
    snapshot every step the module walk was the largest part of recording.
    """
    params: list[tuple[str, Tensor]] = []
    buffers: dict[str, Tensor] = {}
    seen_mod: set[int] = set()
    seen_p: set[int] = set()
    seen_b: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    mods: list[tuple[str, nn.Module]] = []
    while stack:  # pre-order, children in registration order: the order of named_modules()
        prefix, m = stack.pop()
        if id(m) in seen_mod:
            continue
        seen_mod.add(id(m))
        mods.append((prefix, m))
        children = [(f"{prefix}.{k}" if prefix else k, c) for k, c in m._modules.items() if c is not None]
        stack.extend(reversed(children))
    for prefix, m in mods:  # named_parameters() lists every module's parameters in module order
        dot = prefix + "." if prefix else ""
        for k, p in m._parameters.items():
            if p is not None and id(p) not in seen_p:
                seen_p.add(id(p))
                params.append((dot + k, p))
    for prefix, m in mods:
        dot = prefix + "." if prefix else ""
        for k, b in m._buffers.items():
            if b is not None and id(b) not in seen_b:
                seen_b.add(id(b))
                buffers[dot + k] = b
    return params, buffers


def _module_sig(mods: list[nn.Module]) -> list[tuple[Any, ...]]:
    # Per module: names and identities of its children, parameters and buffers (C-speed tuple building).
    return [
        (
            *m._modules,
            *map(id, m._modules.values()),
            None,
            *m._parameters,
            *map(id, m._parameters.values()),
            None,
            *m._buffers,
            *map(id, m._buffers.values()),
        )
        for m in mods
    ]


def _tensor_sig(tensors: list[Tensor]) -> list[tuple[Any, ...]]:
    return [(t.data_ptr(), t.shape, t.stride(), t.dtype) for t in tensors]


def _structure(model: nn.Module, tensors: list[Tensor]) -> tuple[Any, ...]:
    """What :func:`_same_structure` compares.

    Every module's children, parameters and buffers (names and identities) and the layout tensors'
    memory, shape, stride and dtype. The objects are held too, so that no identity can be reused.
    """
    mods = list(model.modules())
    held = [(*m._parameters.values(), *m._buffers.values()) for m in mods]
    return mods, _module_sig(mods), tensors, _tensor_sig(tensors), held


def _same_structure(structure: tuple[Any, ...]) -> bool:
    mods, sig, tensors, tsig, _ = structure
    return _module_sig(mods) == sig and _tensor_sig(tensors) == tsig


def _tensor_bytes(t: Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else memoryview(b"")


def _raw_bytes(t: Tensor) -> memoryview:
    """The bytes of a private contiguous CPU tensor, without a copy (numpy's buffer where numpy has the dtype)."""
    if t.dtype in _NUMPY_DTYPES and not t.requires_grad:
        return memoryview(t.numpy().data).cast("B")  # the array's buffer (typed as one)
    return _tensor_bytes(t)


_NUMPY_DTYPES = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
}
_HEAD = f'{{"__metadata__":{{"format":"{FORMAT_NAME}","record":'.encode()


@functools.lru_cache(maxsize=64)
def _table_json(spec: tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]) -> str:
    """The safetensors table of tensors ``(name, dtype, shape, nbytes)``: the same for every snapshot of a segment."""
    table: dict[str, Any] = {}
    off = 0
    for name, dtype, shape, nbytes in spec:
        code = _ST_CODES.get(dtype)
        if code is None:
            raise TypeError(f"tensor {name!r} has dtype {dtype}, which safetensors cannot store")
        table[name] = {"dtype": code, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    return json.dumps(table, separators=(",", ":"))


def _encode(tensors: Mapping[str, Tensor], record_json: str, extra: Mapping[str, str]) -> tuple[bytes, str]:
    """One snapshot as a safetensors byte string carrying its own record and digest; returns ``(blob, digest)``."""
    parts = [_tensor_bytes(t) for t in tensors.values()]
    table_json = _table_json(tuple((k, t.dtype, tuple(t.shape), b.nbytes) for (k, t), b in zip(tensors.items(), parts)))
    digest = _digest(record_json + ("\n" + extra["segment"] if "segment" in extra else ""), table_json, parts)
    meta = {"format": FORMAT_NAME, "record": record_json, "digest": digest, **extra}
    # == json.dumps({"__metadata__": meta, **table}) without serializing the table twice
    header = f'{{"__metadata__":{json.dumps(meta, separators=(",", ":"))},{table_json[1:]}'.encode()
    header += b" " * (-len(header) % 8)  # safetensors aligns the data to 8 bytes
    return b"".join([len(header).to_bytes(8, "little"), header, *parts]), digest


def _digest(record_json: str, table_json: str, parts: Iterable[Any]) -> str:
    h = hashlib.sha256(record_json.encode())
    h.update(b"\n" + table_json.encode() + b"\n")
    for p in parts:
        h.update(p)
    return h.hexdigest()


def _header(data: bytes | memoryview) -> tuple[int, dict[str, Any] | None]:
    """``(size of the blob at data[0], header)``; ``(-1, None)`` if incomplete, ``(0, None)`` if garbage."""
    if len(data) < 8:
        return -1, None
    n = int.from_bytes(data[:8], "little")
    if n > 100_000_000:
        return 0, None
    if len(data) < 8 + n:
        return -1, None
    try:
        h = json.loads(bytes(data[8 : 8 + n]))
        ends = [v["data_offsets"][1] for k, v in h.items() if k != "__metadata__"]
        size = 8 + n + max(ends, default=0)
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, IndexError, AttributeError):
        return 0, None
    if not isinstance(size, int) or not isinstance(h.get("__metadata__"), dict):
        return 0, None
    return (size if len(data) >= size else -1), h


def _verify_blob(blob: bytes, header: dict[str, Any], record_json: str | None, digest: str | None) -> str | None:
    """Check a blob against its own metadata (and the index's record and digest); return what is wrong or None."""
    meta = header["__metadata__"]
    if meta.get("format") != FORMAT_NAME:
        return "is not a snapshot of this format"
    if record_json is not None and meta.get("record") != record_json:
        return "holds a record that differs from the index"
    if digest is not None and meta.get("digest") != digest:
        return "holds a digest that differs from the index"
    rj, seg = meta.get("record"), meta.get("segment")
    if not isinstance(rj, str) or not isinstance(seg, str | None):
        return "has no record"
    rj += "" if seg is None else "\n" + seg  # the first snapshot of a pack also vouches for its layout
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    start = len(blob) - max((v["data_offsets"][1] for v in table.values()), default=0)
    if _digest(rj, json.dumps(table, separators=(",", ":")), [memoryview(blob)[start:]]) != meta.get("digest"):
        return "fails its digest (sha256 mismatch): it is corrupted"
    return None


def _flat_layout(numel: int) -> ParamLayout:
    # Default for a bare vector (e.g. a point on a 2-D toy function): one tensor named "vector".
    return ParamLayout([TensorSpec("vector", (numel,), 0, numel, "", None, "")])


@dataclass(frozen=True)
class Segment:
    """A run of consecutive snapshots sharing one parameter layout and one set of buffer names.

    Attributes:
        index: Position of the segment in the trajectory.
        start: Index of its first snapshot.
        stop: One past its last snapshot.
        layout: Layout of its vectors, each of shape ``(layout.numel,)``.
        buffer_names: Names of the buffers stored with each snapshot (may be empty).
    """

    index: int
    start: int
    stop: int
    layout: ParamLayout
    buffer_names: tuple[str, ...]

    @property
    def indices(self) -> range:
        """Snapshot indices of the segment."""
        return range(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, eq=False, repr=False)
class Snapshot:
    """One point of a trajectory.

    Attributes:
        index: Position in the trajectory.
        vector: Trainable parameters, shape ``(layout.numel,)``, in the dtype they were appended in.
        step: Optimizer step.
        epoch: Epoch (fractional within an epoch).
        wall_time: Unix time of recording.
        metrics: Named numbers (loss, accuracy, ...).
        tags: JSON-compatible tags (run, optimizer, persistent_iteration, event, ...).
        buffers: Buffers by name (BatchNorm running statistics), possibly empty.
        segment: Index of the segment it belongs to.
        layout: Layout of ``vector``.
    """

    index: int
    vector: Tensor
    step: int
    epoch: float
    wall_time: float
    metrics: dict[str, float]
    tags: dict[str, Any]
    buffers: dict[str, Tensor]
    segment: int
    layout: ParamLayout

    def __repr__(self) -> str:
        return (
            f"Snapshot(index={self.index}, step={self.step}, epoch={self.epoch:g}, segment={self.segment}, "
            f"numel={self.vector.numel()}, dtype={self.vector.dtype}, metrics={self.metrics})"
        )


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic | Tensor) and getattr(o, "ndim", 0) == 0:
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-compatible")


def _jsonify(d: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Normalize a mapping to its JSON round trip, so memory and disk stores return the same thing."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be strings, got {k!r}")
        try:
            out[k] = json.loads(json.dumps(v, default=_json_default))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what}[{k!r}] cannot be stored as JSON ({e}); use numbers, strings, lists, dicts") from e
    return out


def _metrics(d: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for k, v in (d or {}).items():
        if not isinstance(k, str):
            raise TypeError(f"metric names must be strings, got {k!r}")
        try:
            out[k] = float(v)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metric {k!r} must be a number, got {type(v).__name__}") from e
    return out


def _layout_difference(recorded: ParamLayout, got: ParamLayout) -> str:
    for k, (a, b) in enumerate(zip(recorded.specs, got.specs)):
        if (a.name, a.shape) != (b.name, b.shape):
            return f"tensor #{k} is {a.name!r}{a.shape} in the recording but {b.name!r}{b.shape} in the model"
    n, m = len(recorded), len(got)
    extra = recorded.specs[m].name if n > m else got.specs[n].name
    return f"the recording has {n} tensors, the model {m} (first unmatched: {extra!r})"


def _write_atomic(path: Path, data: bytes, durable: bool, dir_fd: int | None) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``: ``path`` is old or new, never partial."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable and dir_fd is not None:
        os.fsync(dir_fd)  # make the rename itself survive a power loss


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # one write in practice
        view = view[os.write(fd, view) :]


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Item:
    """One queued snapshot (or, with ``rec`` None, a sync request) for the writer thread."""

    __slots__ = ("seq", "i", "new_pack", "rec", "rj", "pre", "head", "tail", "parts", "keep", "sync", "size")

    def __init__(
        self,
        i: int = -1,
        new_pack: str | None = None,
        rec: dict[str, Any] | None = None,
        rj: str = "",
        pre: bytes = b"",
        head: bytes = b"",
        tail: bytes = b"",
        parts: list[Any] | None = None,
        keep: Any = None,
        sync: bool = False,
    ) -> None:
        self.seq, self.i, self.new_pack, self.rec, self.rj, self.pre = 0, i, new_pack, rec, rj, pre
        self.head, self.tail, self.parts, self.keep, self.sync = head, tail, parts or [], keep, sync
        self.size = rec["size"] if rec is not None else 0


class _Writer:
    """The writer of an on-disk store (group commit).

    It owns the pack and index descriptors. The appending thread prepares each snapshot (record JSON,
    safetensors header around a placeholder for the digest, pack, offset and size: everything that is
    pure Python) and queues it with a private copy of its tensors. A batch of queued snapshots is then
    written at once: their digests computed (``hashlib`` releases the GIL on the tensor bytes), every
    snapshot of a pack written with one ``writev``, their index lines with one ``write``, and synced
    when asked (every batch of a ``durable="append"`` store, or a :meth:`sync` request from ``flush`` /
    ``close``). With ``threaded`` a daemon thread writes the batches (at BATCH snapshots or BATCH_BYTES, a
    sync request or LINGER seconds); without, the appending thread does when BATCH snapshots are queued
    (or at once with ``durable="append"``, which waits for its sync anyway).

    It holds no reference to its :class:`Trajectory`, so an unclosed store is still garbage collected
    (its ``__del__`` writes the queue). After a failure it writes nothing more: the failed batch's
    partial bytes are truncated away (earlier snapshots stay intact) and :attr:`error` is raised to the
    appending thread at its next ``append``, ``flush`` or ``close``.
    """

    #: Snapshots the queue may hold; ``append`` waits beyond that (bounds memory and what a kill loses).
    MAX_QUEUE, MAX_BYTES = 256, 64 * 2**20
    #: The thread wakes for this many queued snapshots or bytes, for a sync, or after LINGER seconds.
    BATCH, BATCH_BYTES, LINGER = 64, 4 * 2**20, 0.05
    #: Write in a thread (True) or in the appending thread once BATCH snapshots are queued (False).
    #: ``durable="append"`` always writes in the appending thread: it waits for every sync anyway.
    THREADED = True

    def __init__(
        self,
        root: Path,
        durable: Any,
        index_fd: int,
        index_size: int,
        dir_fd: int | None,
        threaded: bool,
        first_index: int = 0,
    ) -> None:
        self.root, self.durable = root, durable
        self.index_fd, self.index_size, self.dir_fd = index_fd, index_size, dir_fd
        self.pack_fd: int | None = None
        self.pack_name, self.unsynced = "", False
        self.cond = threading.Condition(threading.Lock())
        self.queue: collections.deque[_Item] = collections.deque()
        self.seq = 0  # items queued so far
        self.bytes = 0  # bytes of the snapshots queued
        self.urgent = False  # someone waits for the queue: write it now
        self.done = 0  # items processed (written, and synced where asked)
        self.written = 0  # snapshots written to the OS (pack bytes and index line)
        self.error: BaseException | None = None
        self.failed_at = -1  # first snapshot the failed batch held
        self.next_i = first_index  # the snapshot after the last one written
        self.stopping = False
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None
        if threaded:
            self.thread = threading.Thread(target=self._run, name="landscape-trajectory-writer", daemon=True)
            self.thread.start()
        _WRITERS.add(self)

    # ---------------------------------------------------------- appending thread
    def put(self, item: _Item) -> int:
        """Queue an item (waits while the queue is full); returns its sequence number."""
        with self.cond:
            self._raise()
            while self.queue and (len(self.queue) >= self.MAX_QUEUE or self.bytes >= self.MAX_BYTES) and not self.error:
                if self.thread is None:
                    self._process()
                    break
                self.cond.notify_all()
                self.cond.wait()
            self._raise()
            self.seq += 1
            item.seq = self.seq
            self.queue.append(item)
            self.bytes += item.size
            if item.sync or len(self.queue) >= self.BATCH or self.bytes >= self.BATCH_BYTES:
                if self.thread is None:
                    self._process()
                else:
                    self.cond.notify_all()
            return self.seq

    def wait(self, seq: int) -> None:
        """Wait until item ``seq`` (and every earlier one) is processed; raise the thread's error if any."""
        with self.cond:
            while self.done < seq and self.error is None:
                if self.thread is None:
                    self._process()
                    continue
                self.urgent = True  # write now, without waiting for a full batch or LINGER
                self.cond.notify_all()
                self.cond.wait()
            self._raise()

    def sync(self) -> None:
        """Write everything queued and fsync the pack, the directories and the index."""
        self.wait(self.put(_Item(sync=True)))

    def stop(self) -> None:
        """Write everything queued (no sync), end the thread and close its descriptors; never raises."""
        if self.pid == os.getpid():  # (in a forked child the thread does not exist and the lock may be held)
            with self.cond:
                self.stopping = True
                self.cond.notify_all()
                if self.thread is None and self.queue:
                    self._process()
            if self.thread is not None and self.thread is not threading.current_thread():
                self.thread.join()
        _WRITERS.discard(self)
        for name in ("pack_fd", "index_fd", "dir_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _raise(self) -> None:
        if self.pid != os.getpid():
            raise TrajectoryError(
                "this store was opened for appending in another process (before a fork); its writer thread "
                "does not exist here: open the store again in this process"
            )
        if self.error is not None:
            raise TrajectoryError(
                f"the background writer of {self.root} failed ({type(self.error).__name__}: {self.error}); "
                f"snapshots before {self.failed_at} are intact in the store (synced up to the last flush that "
                f"returned), {self.failed_at} and later were not written (or only partly, and removed again); "
                "the store is closed: open it again with mode='a' to continue"
            ) from self.error

    def _ready(self) -> bool:
        q = self.queue
        return (
            len(q) >= self.BATCH
            or self.bytes >= self.BATCH_BYTES
            or self.stopping
            or self.urgent
            or any(it.sync for it in q)
        )

    def _process(self) -> None:
        """Without a thread: write the queue now, in the appending thread (``cond`` held)."""
        batch = list(self.queue)
        self.queue.clear()
        self.bytes = 0
        if batch and self.error is None:
            try:
                self._write(batch)
            except BaseException as e:  # noqa: BLE001 - raised by _raise below and at every later call
                self.error = e
        if batch:
            self.done = batch[-1].seq

    # ---------------------------------------------------------- writer thread
    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.stopping:  # batch: wait for BATCH snapshots, BATCH_BYTES, a sync, or LINGER
                    self.cond.wait_for(self._ready, timeout=self.LINGER)
                batch = list(self.queue)
                self.queue.clear()
                self.bytes, self.urgent = 0, False
                if not batch and self.stopping:
                    return
                self.cond.notify_all()  # room in the queue again
            if not batch:
                continue
            if self.error is None:
                try:
                    self._write(batch)
                except BaseException as e:  # noqa: BLE001 - reported to the appending thread
                    self.error = e
            with self.cond:
                self.done = batch[-1].seq
                self.cond.notify_all()
            if self.error is not None:
                with self.cond:  # nothing more is written; wake every waiter until stop()
                    while not self.stopping:
                        self.queue.clear()
                        self.cond.notify_all()
                        self.cond.wait()
                return

    def _write(self, batch: list[_Item]) -> None:
        assert self.index_fd is not None
        lines: list[bytes] = []
        chunk: list[Any] = []  # bytes for the current pack
        sync = any(it.rec is None for it in batch)  # a flush / close: sync everything
        need = False  # a snapshot of a durable="append" store: sync before its appender returns
        first = next((it.i for it in batch if it.rec is not None), None)
        pack_start = None  # (fd, offset) where this batch began writing to the current pack
        index_start = self.index_size
        try:
            for it in batch:
                if it.rec is None:
                    continue
                if it.new_pack:
                    self._writev(chunk)
                    chunk = []
                    self._new_pack(it.new_pack)
                    pack_start = (self.pack_fd, 0)
                elif pack_start is None:
                    pack_start = (self.pack_fd, it.rec["off"])
                h = hashlib.sha256(it.pre)
                for part in it.parts:
                    h.update(part)  # releases the GIL for large parts
                digest = h.hexdigest()
                it.rec["digest"] = digest
                chunk += [it.head, digest.encode(), it.tail, *it.parts]
                lines.append(_index_line(it.rj, it.rec))
                need = need or self.durable == "append"
            self._writev(chunk)
            if need or (sync and self.unsynced):
                assert self.pack_fd is not None  # _writev wrote to it
                os.fdatasync(self.pack_fd)
                self.unsynced = False
            if lines:
                data = b"".join(lines)
                _write_all(self.index_fd, data)  # the index is a cache of the packs: synced by flush
                self.index_size += len(data)
            if sync:
                if self.dir_fd is not None:
                    os.fsync(self.dir_fd)
                os.fsync(self.index_fd)
                _fsync_path(self.root)  # the entries of the index, the manifest and the pack directory
            self.written += len(lines)
            self.next_i += len(lines)  # snapshots are queued in order
        except BaseException:
            # e.g. disk full mid-write: leave no partial snapshot or torn line before the next writer's
            self.failed_at = first if first is not None else self.next_i
            if pack_start is not None and pack_start[0] is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(pack_start[0], pack_start[1])
            with contextlib.suppress(OSError):
                os.ftruncate(self.index_fd, index_start)
            raise

    def _writev(self, chunk: list[Any]) -> None:
        if not chunk:
            return
        assert self.pack_fd is not None
        self.unsynced = True
        for k in range(0, len(chunk), 512):  # IOV_MAX is 1024 on Linux
            part = chunk[k : k + 512]
            total = sum(len(b) for b in part)
            n = os.writev(self.pack_fd, part)
            if n < total:  # a short write (signal, disk nearly full): write the rest plainly
                _write_all(self.pack_fd, b"".join(bytes(b) for b in part)[n:])

    def _new_pack(self, name: str) -> None:
        if self.pack_fd is not None:
            if self.unsynced and self.durable != "append":
                os.fdatasync(self.pack_fd)  # flush() only syncs the current pack (rare: once per pack)
            os.close(self.pack_fd)
            self.pack_fd = None
        if self.dir_fd is None:
            (self.root / _SNAPDIR).mkdir(exist_ok=True)
            if self.durable:
                _fsync_path(self.root)
            self.dir_fd = os.open(self.root / _SNAPDIR, os.O_RDONLY)
        self.pack_fd = os.open(self.root / _SNAPDIR / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.pack_name = name
        if self.durable == "append":
            os.fsync(self.dir_fd)  # the new pack's directory entry
        self.unsynced = True


_WRITERS: weakref.WeakSet[_Writer] = weakref.WeakSet()


@atexit.register
def _drain_writers() -> None:
    # An unclosed store's queued snapshots still reach the OS at interpreter exit (not synced: close() syncs).
    for w in list(_WRITERS):
        w.stop()


def _index_line(record_json: str, rec: Mapping[str, Any]) -> bytes:
    loc = f',"file":"{rec["file"]}","off":{rec["off"]},"size":{rec["size"]},"digest":"{rec["digest"]}"}}'
    return _seal((record_json[:-1] + loc).encode()) + b"\n"


def _pack_names(snapdir: Path) -> list[str]:
    try:
        names = os.listdir(snapdir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(_PACK) and n[:-5].isdigit())


@dataclass
class CheckReport:
    """What :meth:`Trajectory.check` found in an on-disk store (``str(report)`` is a readable summary).

    Attributes:
        path: The store.
        version: Its format version (``None`` if the manifest is unreadable).
        snapshots: Number of snapshots the store should hold (highest index seen in the index or packs, plus one).
        intact: Snapshots whose index line, pack bytes and tensors all verify.
        recoverable: Snapshots whose index line is damaged or missing but whose pack bytes verify by
            themselves (their record is stored in the pack too): ``repair`` restores them exactly.
        lost: Snapshots whose tensors are damaged or missing; nothing can restore them.
        problems: ``(file, what is wrong)`` for every damaged file, line or byte range.
        torn_tail: What ``Trajectory.open(path, "a")`` would drop as the incomplete tail of a crash.
        repaired: Whether ``repair`` rebuilt the index; ``actions`` lists what it (or ``migrate``) did.
        unrecoverable: What cannot be restored from the files that remain.
    """

    path: Path
    version: int | None = None
    snapshots: int = 0
    intact: list[int] = field(default_factory=list)
    recoverable: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    torn_tail: list[str] = field(default_factory=list)
    repaired: bool = False
    actions: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True for a current-format store whose snapshots are all intact (a torn crash tail is not damage)."""
        return not self.problems and not self.recoverable and not self.lost and self.version == FORMAT_VERSION

    def __str__(self) -> str:
        out = [
            f"trajectory {self.path} (format version {self.version}): {self.snapshots} snapshots, "
            f"{len(self.intact)} intact"
        ]
        if self.recoverable:
            out.append(f"recoverable from their packs (check --repair): {_ranges(self.recoverable)}")
        if self.lost:
            out.append(f"lost (tensors damaged or missing): {_ranges(self.lost)}")
        out += [f"damaged: {f}: {what}" for f, what in self.problems]
        out += [f"crash tail (dropped by the next writer): {t}" for t in self.torn_tail]
        out += [f"cannot be recovered: {u}" for u in self.unrecoverable]
        out += [f"done: {a}" for a in self.actions]
        old = self.version == 1 and not self.problems
        out.append("OK" if self.ok else "REPAIRED" if self.repaired else "OLD FORMAT: migrate" if old else "DAMAGED")
        return "\n".join(out)


def _ranges(idx: list[int]) -> str:
    out, s = [], None
    for k, i in enumerate(idx):
        s = i if s is None else s
        if k + 1 == len(idx) or idx[k + 1] != i + 1:
            out.append(str(s) if s == i else f"{s}-{i}")
            s = None
    return ", ".join(out)


Durable = bool | str  # True / "append", "flush", False


class Trajectory:
    """Append-only sequence of parameter snapshots, in memory or in a crash-safe directory.

    What a completed call guarantees on disk (details, the format and the crash contract: the module docstring):

    * :meth:`append` returns: with ``durable="append"`` (or ``True``, the default) the snapshot is
      written and synced: it survives SIGKILL, an operating-system crash and power loss. With
      ``"flush"`` or ``False`` it is copied and queued for the writer thread (group commit): a killed
      process may lose the snapshots still queued (at most 256 or 64 MB, typically 0.05 s worth).
    * :meth:`flush` returns: every snapshot appended so far, the index and the directory entries are
      written and fsynced (in every ``durable`` mode).
    * :meth:`close` returns: as :meth:`flush` for ``durable="append"`` or ``"flush"`` (``False``:
      written, not synced); the writer thread has ended and the lock is released.
    * A failure of the writer thread is raised by the next :meth:`append`, :meth:`flush` or
      :meth:`close`, naming the first snapshot not written; all earlier snapshots are intact.

    Args:
        path: Directory of the store; ``None`` keeps it in memory. An existing store is opened for
            appending (after crash recovery), a missing or empty directory becomes a new store.
        layout: Layout of the vectors to come (default for :meth:`append`). Without one, the first
            :meth:`append` takes a single flat tensor named ``"vector"``.
        meta: Run-level JSON metadata (model name, data, seed, ...); merged into an existing store's.
        durable: When snapshots are written and fsynced: ``"append"`` / ``True`` (before every append
            returns), ``"flush"`` (written in batches by the writer thread, synced at :meth:`flush`
            and :meth:`close`: much cheaper for frequent snapshots) or ``False`` (batches, synced
            only on an explicit :meth:`flush`).
        verify: Check every snapshot's digest (sha256) on read.

    Raises:
        TrajectoryError: If ``path`` holds something that is not a trajectory, a newer format, a
            version-1 store (read-only; migrate it), or a store whose last layout differs from ``layout``.
        CorruptTrajectoryError: If the store is damaged beyond a crash's incomplete tail.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> traj = Trajectory()
        >>> traj.append_model(net, step=0, metrics={"loss": 1.0})
        0
        >>> traj[0].vector.shape, traj.metric("loss")
        (torch.Size([8]), array([1.]))
    """

    #: A new pack starts once the current one holds this many bytes.
    PACK_BYTES = 256 * 2**20

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        layout: ParamLayout | None = None,
        meta: Mapping[str, Any] | None = None,
        durable: Durable = True,
        verify: bool = True,
    ) -> None:
        self._setup(path, "a", "auto", layout, meta, durable, verify)

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        layout: ParamLayout | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
        durable: Durable = True,
    ) -> Trajectory:
        """Create a new on-disk store (missing or empty directory), open for appending.

        Args:
            path: Directory to create.
            layout: Layout of the vectors to come.
            meta: Run-level JSON metadata.
            exist_ok: Open an existing trajectory at ``path`` for appending instead of failing.
            durable: ``"append"`` / ``True``, ``"flush"`` or ``False`` (see the class docstring).

        Raises:
            FileExistsError: If ``path`` holds a trajectory and ``exist_ok`` is false.
            TrajectoryError: If ``path`` is a non-empty directory that is not a trajectory.
        """
        self = cls.__new__(cls)
        self._setup(path, "a", "auto" if exist_ok else "new", layout, meta, durable, True)
        return self

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], mode: str = "r", *, verify: bool = True, durable: Durable = True
    ) -> Trajectory:
        """Open an existing on-disk store.

        Args:
            path: Directory of the store.
            mode: ``"r"`` to read (a live writer's new snapshots appear after :meth:`refresh`),
                ``"a"`` to append (after recovering from a crash: drops a torn last index line and a
                partial last snapshot, indexes complete snapshots the index lacks; refuses anything
                else), taking the single-writer lock.
            verify: Check every snapshot's digest on read.
            durable: ``"append"`` / ``True``, ``"flush"`` or ``False`` (mode ``"a"``; see the class docstring).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            TrajectoryError: If ``path`` is not a trajectory, has a newer format version, is being
                appended to by another writer, or is a version-1 store (mode ``"a"``).
            CorruptTrajectoryError: If a file is damaged (the message names it; see :meth:`check`).
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        self = cls.__new__(cls)
        self._setup(path, mode, "never", None, None, durable, verify)
        return self

    def _setup(
        self,
        path: str | os.PathLike[str] | None,
        mode: str,
        create: str,
        layout: ParamLayout | None,
        meta: Mapping[str, Any] | None,
        durable: Durable,
        verify: bool,
    ) -> None:
        if layout is not None and not isinstance(layout, ParamLayout):
            raise TypeError(f"layout must be a ParamLayout, got {type(layout).__name__}")
        if durable not in _DURABLE or not isinstance(durable, bool | str):
            raise ValueError(f"durable must be True/'append', 'flush' or False, got {durable!r}")
        self.path = None if path is None else Path(path)
        self._mode, self._durable, self._verify, self._closed = mode, _DURABLE[durable], verify, False
        self._version = FORMAT_VERSION
        self._records: list[dict[str, Any]] = []  # one parsed index line per snapshot
        self._n_indexed = 0  # records read from the index; later ones were rolled forward from packs
        self._segs: list[tuple[ParamLayout, tuple[str, ...]]] = []  # (layout, buffer names) per segment
        self._seg_start: list[int] = []
        self._pending = layout  # layout for the next append when it starts the first segment
        self._meta: dict[str, Any] = {}
        self._mem: list[dict[str, Tensor]] = []
        self._index_fd: int | None = None
        self._dir_fd: int | None = None
        self._lock_fd: int | None = None
        self._pack_name, self._pack_size = "", 0  # where the next snapshot goes (the writer creates the pack)
        self._writer: _Writer | None = None  # started by the first append
        self._writer_base = 0  # snapshots the store held when the writer started
        self._rfd: tuple[str, int] | None = None  # the pack last read from
        # append_model's cache: (model, _structure, layout, flat views of the layout's tensors, buffers)
        self._model_cache: tuple[Any, ...] | None = None
        self._fresh: Tensor | None = None  # a vector append_model just built (no defensive copy needed)
        self._offset = 0  # bytes of the index already parsed
        self._manifest_segs: list[tuple[ParamLayout, tuple[str, ...]]] = []  # as last read from disk
        self.dropped: list[str] = []  # what crash recovery removed (a torn index line, a partial snapshot)
        self.recovered: list[int] = []  # snapshots recovery indexed from their packs
        if self.path is None:
            self._meta = _jsonify(meta, "meta")
            return
        try:
            self._open_dir(self.path, mode, create, layout, meta)
        except BaseException:
            self._release()  # release the lock of a store that failed to open
            raise

    def _open_dir(
        self, p: Path, mode: str, create: str, layout: ParamLayout | None, meta: Mapping[str, Any] | None
    ) -> None:
        # A directory holding only what a crashed create() leaves behind counts as empty.
        fresh = not p.exists() or (p.is_dir() and set(os.listdir(p)) <= {_LOCK, f"{_MANIFEST}.tmp"})
        if create == "never" and not p.exists():
            raise FileNotFoundError(f"no trajectory at {p}: the directory does not exist")
        if p.exists() and not p.is_dir():
            raise TrajectoryError(f"{p} is a file, not a trajectory directory")
        if fresh and create != "never":
            p.mkdir(parents=True, exist_ok=True)
            self._meta = _jsonify(meta, "meta")
            self._lock()
            self._write_manifest()
        else:
            if create != "never" and not (p / _MANIFEST).exists():
                raise TrajectoryError(f"cannot create a trajectory in {p}: the directory is not empty")
            if create == "new":
                raise FileExistsError(f"{p} already holds a trajectory; pass exist_ok=True to append to it")
            self._read_manifest()
            if self._version == 1:
                if mode == "a":
                    raise TrajectoryError(
                        f"{p} is a version-1 trajectory (its index and manifest carry no checksums), which "
                        f"opens read-only; convert it with: python -m landscape check {p} --migrate"
                    )
                warnings.warn(
                    f"{p} is a version-1 trajectory: read-only, and damage to its index or manifest cannot be "
                    f"detected; convert it with: python -m landscape check {p} --migrate",
                    UserWarning,
                    stacklevel=4,
                )
            if mode == "a":
                self._lock()
                self._recover()
            else:
                self._load_index()
                self._roll_forward(write=False)
            if not self._records and self._manifest_segs:
                self._pending = self._manifest_segs[0][0]  # layout given at creation
            if meta:
                self.update_meta(meta)
            if layout is not None and not self._records:
                self._pending = layout
            elif layout is not None and layout.specs != self._segs[-1][0].specs:
                raise TrajectoryError(
                    f"{p} ends in a segment with {self._segs[-1][0]!r}, not the given {layout!r}: "
                    f"{_layout_difference(self._segs[-1][0], layout)}; pass layout= to append() to start a new segment"
                )
        if mode == "a":
            self._dir_fd = os.open(p / _SNAPDIR, os.O_RDONLY) if (p / _SNAPDIR).is_dir() else None
            self._index_fd = os.open(p / _INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _lock(self) -> None:
        # flock on the directory's own descriptor: no lock file whose deletion could let a second writer in.
        assert self.path is not None
        self._lock_fd = os.open(self.path, os.O_RDONLY)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise TrajectoryError(
                    f"{self.path} is already open for appending by another writer; open it with mode='r' to read"
                ) from None

    # ------------------------------------------------------------- manifest
    def _manifest(self) -> dict[str, Any]:
        segs = self._segs if self._segs or self._pending is None else [(self._pending, ())]
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "meta": self._meta,
            "segments": [{"layout": lay.to_dict(), "buffer_names": list(b)} for lay, b in segs],
        }

    def _write_manifest(self) -> None:
        assert self.path is not None
        data = _seal(json.dumps(self._manifest(), indent=1).encode()) + b"\n"
        _write_atomic(self.path / _MANIFEST, data, bool(self._durable), None)
        if self._durable:
            _fsync_path(self.path)  # make the rename itself survive a power loss

    def _read_manifest(self) -> None:
        assert self.path is not None
        f = self.path / _MANIFEST
        if not f.is_file():
            raise TrajectoryError(f"{self.path} is not a trajectory: it has no {_MANIFEST}")
        data = f.read_bytes()
        try:
            m = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptTrajectoryError(f"{f} is not valid JSON ({e})") from e
        sealed = isinstance(m, dict) and "sum" in m
        what = _unseal(data)[1] if sealed else None
        version = m.get("version") if isinstance(m, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION and m.get("format") == FORMAT_NAME:
            # A newer writer may seal differently: say both possibilities rather than guess.
            raise TrajectoryError(
                f"{f}: the store says trajectory format version {version}, newer than the {FORMAT_VERSION} this "
                "package reads; upgrade landscape" + (f" (or the manifest is corrupted: it {what})" if what else "")
            )
        if what:
            raise CorruptTrajectoryError(f"{f} {what}: the manifest is corrupted")
        if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
            raise TrajectoryError(f"{f} is not a trajectory manifest (no format {FORMAT_NAME!r})")
        if not isinstance(version, int):
            raise CorruptTrajectoryError(f"{f} has no integer format version")
        if version == 1 and sealed:
            raise CorruptTrajectoryError(f"{f} says version 1 but carries a checksum: the manifest is corrupted")
        if version >= 2 and not sealed:
            raise CorruptTrajectoryError(f'{f} has no checksum (no "sum"): the manifest is corrupted')
        self._version = version
        try:
            self._meta = dict(m["meta"])
            segs = [(ParamLayout.from_dict(s["layout"]), tuple(s["buffer_names"])) for s in m["segments"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptTrajectoryError(f"{f} has a malformed segment table or metadata ({e})") from e
        self._manifest_segs = segs
        self._segs = segs[: len(self._seg_start)]

    # ---------------------------------------------------------------- index
    def _parse_line(self, line: bytes, n: int) -> dict[str, Any]:
        """One complete index line as record ``n``; raises naming the line."""
        assert self.path is not None  # only disk stores have an index
        where = f"{self.path / _INDEX}: line {n + 1}"
        if self._version == 1:
            try:
                rec = json.loads(line)
                ok = rec["i"] == n and isinstance(rec["seg"], int) and rec["dtype"] in _DTYPES
                ok = ok and isinstance(rec["size"], int) and isinstance(rec["sha256"], str)
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise CorruptTrajectoryError(f"{where} is corrupted: {line[:200]!r}")
            rec["file"], rec["off"] = f"{n:08d}.safetensors", 0
            return rec
        rec, what = _unseal(line)
        if what:
            raise CorruptTrajectoryError(f"{where} (snapshot {n}) {what}: {line[:120]!r}...")
        try:
            ok = isinstance(rec, dict) and rec["i"] == n and rec["dtype"] in _DTYPES
            ok = ok and all(isinstance(rec[k], int) for k in ("seg", "off", "size", "step"))
            ok = ok and isinstance(rec["file"], str) and isinstance(rec["digest"], str)
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise CorruptTrajectoryError(f"{where} is not record {n} of this store: {line[:200]!r}")
        return rec

    def _add(self, rec: dict[str, Any], where: str) -> None:
        """Append a parsed record, opening its segment if it starts one."""
        n, seg = len(self._records), rec["seg"]
        if seg == len(self._seg_start):
            if seg >= len(self._manifest_segs):
                self._read_manifest()  # a live writer started a segment since we read it
            if seg >= len(self._manifest_segs):
                raise CorruptTrajectoryError(f"{where}: snapshot {n} names segment {seg}, which the manifest lacks")
            self._seg_start.append(n)
            self._segs.append(self._manifest_segs[seg])
        elif seg != len(self._seg_start) - 1:
            raise CorruptTrajectoryError(f"{where}: snapshot {n} jumps to segment {seg}")
        self._records.append(rec)

    def _load_index(self) -> int:
        """Parse complete index lines after ``self._offset``; return the byte length of a torn tail."""
        assert self.path is not None
        try:
            with open(self.path / _INDEX, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        for line in data[:end].split(b"\n")[:-1]:
            n = len(self._records)
            self._add(self._parse_line(line, n), f"{self.path / _INDEX}: line {n + 1}")
        self._offset += end
        self._n_indexed = len(self._records)
        return len(data) - end

    def _drop_provisional(self) -> None:
        del self._records[self._n_indexed :]
        while self._seg_start and self._seg_start[-1] >= len(self._records):
            self._seg_start.pop()
            self._segs.pop()

    def _scan_tail(self) -> tuple[list[dict[str, Any]], tuple[str, int] | None, str | None]:
        """Complete snapshots in the packs after the last indexed one.

        Returns:
            ``(records, incomplete, damage)``: verified records in order; ``(pack, offset)`` of an
            incomplete last snapshot (a crash tail), or None; what is damaged, or None.
        """
        assert self.path is not None
        if self._version == 1:
            return [], None, None
        snapdir = self.path / _SNAPDIR
        n = len(self._records)
        todo = [(self._records[-1]["file"], self._records[-1]["off"] + self._records[-1]["size"])] if n else []
        todo += [(f, 0) for f in _pack_names(snapdir) if int(f[:-5]) >= n and (not n or f != todo[0][0])]
        out: list[dict[str, Any]] = []
        incomplete = None
        for name, pos in todo:
            try:
                with open(snapdir / name, "rb") as fh:
                    if os.fstat(fh.fileno()).st_size < pos:
                        return out, None, f"{snapdir / name} is shorter than the index says ({pos} bytes)"
                    fh.seek(pos)
                    data = fh.read()
            except FileNotFoundError:
                return out, incomplete, f"{snapdir / name} is missing"
            if not data:
                if pos == 0:
                    incomplete = incomplete or (name, 0)  # an empty new pack: nothing was written to it yet
                continue
            if incomplete is not None:
                return out, incomplete, f"{snapdir / name} holds data after the incomplete snapshot in {incomplete[0]}"
            if pos == 0 and int(name[:-5]) != n + len(out):
                return out, None, f"{snapdir / name} should start with snapshot {name[:-5]}, not {n + len(out)}"
            view, at = memoryview(data), 0
            while at < len(data):
                size, h = _header(view[at:])
                if size < 0:
                    incomplete = (name, pos + at)
                    break
                blob = bytes(view[at : at + size])
                what = "is not a snapshot" if h is None else _verify_blob(blob, h, None, None)
                rec = None if what else json.loads(h["__metadata__"]["record"])  # type: ignore[index]
                if rec is not None and rec.get("i") != n + len(out):
                    what = f"holds snapshot {rec.get('i')} where {n + len(out)} belongs"
                if what:
                    return out, None, f"{snapdir / name} at byte {pos + at}: the snapshot after the index {what}"
                assert rec is not None and h is not None  # what is empty only for a verified snapshot
                rec.update(file=name, off=pos + at, size=size, digest=h["__metadata__"]["digest"])
                out.append(rec)
                at += size
        return out, incomplete, None

    def _roll_forward(self, write: bool) -> None:
        """Take complete snapshots that the index lacks from the packs (a crash between pack and index)."""
        assert self.path is not None  # only disk stores have packs
        recs, incomplete, damage = self._scan_tail()
        if damage and write:
            raise CorruptTrajectoryError(
                f"{damage}; nothing was changed: run python -m landscape check {self.path} to see the damage"
            )
        if recs and not (self.path / _INDEX).exists() and not self._n_indexed:
            raise CorruptTrajectoryError(
                f"{self.path / _INDEX} is missing but the packs hold {len(recs)} snapshots; nothing was changed: "
                f"rebuild it with python -m landscape check {self.path} --repair"
            )
        for rec in recs:
            self._add(rec, str(self.path / _SNAPDIR / rec["file"]))
        if not write:
            return
        if recs:
            with open(self.path / _INDEX, "ab") as fh:
                for rec in recs:
                    fh.write(self._index_line(_record_json(rec), rec))
                fh.flush()
                if self._durable:
                    os.fsync(fh.fileno())
            self._offset += sum(len(self._index_line(_record_json(r), r)) for r in recs)
            self._n_indexed = len(self._records)
            self.recovered += [r["i"] for r in recs]
        if incomplete:
            name, pos = incomplete
            f = self.path / _SNAPDIR / name
            size = f.stat().st_size
            if pos:
                os.truncate(f, pos)
            else:
                os.unlink(f)
            self.dropped.append(f"partial snapshot {len(self._records)} ({size - pos} bytes at the end of {f})")

    def _recover(self) -> None:
        """Open-for-append recovery: drop a torn index line and a partial last snapshot, index complete ones."""
        assert self.path is not None
        torn = self._load_index()
        recs, _, damage = self._scan_tail()  # decide before changing anything
        if not damage:
            if torn:
                os.truncate(self.path / _INDEX, self._offset)
                self.dropped.append(f"torn index line for snapshot {len(self._records)} ({torn} bytes)")
        self._roll_forward(write=True)
        if (self.path / f"{_MANIFEST}.tmp").exists():
            os.unlink(self.path / f"{_MANIFEST}.tmp")
        if self._records and len(self._manifest_segs) > len(self._segs):
            self._manifest_segs = list(self._segs)  # a segment whose first snapshot never completed
            self._write_manifest()
        if self.dropped or self.recovered:
            what = "; ".join(self.dropped + ([f"indexed snapshots {self.recovered} from their packs"] * bool(recs)))
            warnings.warn(f"recovered {self.path} after a crash: {what}", stacklevel=5)

    def refresh(self) -> int:
        """Pick up snapshots another process appended since this store was opened (mode ``"r"``).

        Returns:
            The number of new snapshots.
        """
        if self.path is None or self._mode == "a":
            return 0
        n = len(self._records)
        self._drop_provisional()
        self._load_index()
        self._roll_forward(write=False)
        return len(self._records) - n

    # --------------------------------------------------------------- writing
    def append(
        self,
        vector: Tensor,
        *,
        step: int = 0,
        epoch: float = 0.0,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        buffers: Mapping[str, Tensor] | None = None,
        layout: ParamLayout | None = None,
        wall_time: float | None = None,
        new_segment: bool = False,
    ) -> int:
        """Append one snapshot (what a returned append guarantees depends on ``durable``: see the class docstring).

        Args:
            vector: Trainable parameters, shape ``(layout.numel,)``, any float dtype (stored as given).
            step: Optimizer step.
            epoch: Epoch, fractional within an epoch.
            metrics: Named numbers.
            tags: JSON-compatible tags (run, optimizer, persistent_iteration, event, ...).
            buffers: Buffers by name, e.g. ``buffers_dict(model)``; every snapshot of a segment has the same names.
            layout: Layout of ``vector``; ``None`` keeps the current segment's. A different layout
                (the network grew or shrank) starts a new segment.
            wall_time: Unix time; defaults to now.
            new_segment: Start a new segment even if the layout is unchanged.

        Returns:
            The index of the new snapshot.

        Raises:
            ValueError: If ``vector`` does not fit the layout, or the buffer names change within a segment.
            TypeError: If metrics or tags cannot be stored.
            TrajectoryError: If the store is read-only or closed.
        """
        if self._closed or (self.path is not None and self._mode != "a"):
            raise TrajectoryError(f"cannot append to {self!r}: it is {'closed' if self._closed else 'read-only'}")
        if not isinstance(vector, Tensor):
            raise TypeError(f"vector must be a torch.Tensor, got {type(vector).__name__}")
        dtype = str(vector.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise TypeError(f"vector has dtype {vector.dtype}; a parameter vector must be one of {list(_DTYPES)}")
        if vector.dim() != 1:
            raise ValueError(f"vector must be flat, shape (numel,), got shape {tuple(vector.shape)}")
        bufs = {}
        for k, v in (buffers or {}).items():
            if not isinstance(v, Tensor):
                raise TypeError(f"buffer {k!r} must be a tensor, got {type(v).__name__}")
            # A private copy: memory keeps it, the disk writer writes it later (the caller may change the original).
            bufs[k] = v.detach().to("cpu", copy=True)
        names = tuple(bufs)
        cur = self._segs[-1] if self._segs else None
        if layout is None:
            layout = cur[0] if cur else self._pending or _flat_layout(vector.numel())
        elif not isinstance(layout, ParamLayout):
            raise TypeError(f"layout must be a ParamLayout, got {type(layout).__name__}")
        start = new_segment or cur is None or (layout is not cur[0] and layout.specs != cur[0].specs)
        if not start and cur is not None and names != cur[1] and set(names) != set(cur[1]):
            raise ValueError(
                f"buffers {sorted(names)} differ from {sorted(cur[1])} of segment {len(self._segs) - 1}; "
                "pass the same buffers (e.g. buffers_dict(model)) or new_segment=True"
            )
        if vector.numel() != layout.numel:
            raise ValueError(
                f"vector has {vector.numel()} entries but the layout {'given' if start else 'of the current segment'} "
                f"has {layout.numel} ({len(layout)} tensors); for a network that changed shape pass its "
                "layout= (e.g. ParamLayout.from_model(new_model))"
            )
        i = len(self._records)
        rec: dict[str, Any] = {
            "i": i,
            "seg": len(self._segs) - 1 + start,
            "step": int(step),
            "epoch": float(epoch),
            "time": time.time() if wall_time is None else float(wall_time),
            "dtype": dtype,
            "metrics": _metrics(metrics),
            "tags": _jsonify(tags, "tags"),
        }
        vec = vector.detach()
        if vector is not self._fresh or vec.device.type != "cpu":  # append_model's own copy needs none
            vec = vec.to("cpu", copy=True).contiguous()
        tensors = {"vector": vec}
        tensors.update({_BUF + k: v for k, v in bufs.items()})
        if start:
            self._segs.append((layout, names))
            self._seg_start.append(i)
        try:
            if self.path is None:
                self._mem.append(tensors)
            else:
                self._queue_snapshot(i, tensors, rec, start)
        except BaseException:
            if start and self._seg_start and self._seg_start[-1] == i:  # (a failed writer may have dropped it)
                self._segs.pop()
                self._seg_start.pop()
            raise
        self._records.append(rec)
        self._n_indexed = len(self._records)
        return i

    def _index_line(self, record_json: str, rec: Mapping[str, Any]) -> bytes:
        return _index_line(record_json, rec)

    def _writer_for_append(self) -> _Writer:
        w = self._writer
        if w is None:
            assert self.path is not None and self._index_fd is not None
            w = self._writer = _Writer(
                self.path,
                self._durable,
                self._index_fd,
                self._offset,
                self._dir_fd,
                threaded=_Writer.THREADED and self._durable != "append",
                first_index=len(self._records),
            )
            self._writer_base = len(self._records)
            self._index_fd = self._dir_fd = None  # the writer owns (and closes) them now
        return w

    def _queue_snapshot(self, i: int, tensors: dict[str, Tensor], rec: dict[str, Any], start: bool) -> None:
        """Prepare snapshot ``i`` (all but its digest) and queue it for the writer thread."""
        assert self.path is not None
        w = self._writer_for_append()
        try:
            w._raise()
        except TrajectoryError:
            self._writer_failed()
            raise
        new_pack = None
        if not self._pack_name or start or self._pack_size >= self.PACK_BYTES:
            new_pack = f"{i:08d}{_PACK}"
        seg = ""
        if new_pack:  # the first snapshot of a pack also carries its segment's layout
            lay, names = self._segs[rec["seg"]]
            seg = json.dumps({"layout": lay.to_dict(), "buffer_names": list(names)})
        rj = _record_json_fast(rec)
        parts = [_raw_bytes(t) for t in tensors.values()]
        table = _table_json(tuple((k, t.dtype, tuple(t.shape), b.nbytes) for (k, t), b in zip(tensors.items(), parts)))
        # The safetensors header of _encode with a 64-character hole for the digest, which the writer fills.
        head = _HEAD + _quote(rj).encode() + b',"digest":"'
        tail = ('"' + (',"segment":' + _quote(seg) if seg else "") + "}," + table[1:]).encode()
        n = len(head) + 64 + len(tail)
        tail += b" " * (-n % 8)  # safetensors aligns the data to 8 bytes
        n += -n % 8
        size = 8 + n + sum(b.nbytes for b in parts)
        pre = (rj + ("\n" + seg if seg else "") + "\n" + table + "\n").encode()  # what _digest hashes first
        if start:
            self._manifest_segs = list(self._segs)
            self._write_manifest()  # before the segment's first snapshot can reach its pack
        if new_pack:
            self._pack_name, self._pack_size = new_pack, 0
        rec.update(file=self._pack_name, off=self._pack_size, size=size)  # "digest": set by the writer
        self._pack_size += size
        sync = self._durable == "append"
        try:
            seq = w.put(_Item(i, new_pack, rec, rj, pre, n.to_bytes(8, "little") + head, tail, parts, tensors, sync))
            if sync:
                w.wait(seq)  # every append durable: return once its batch is synced
        except TrajectoryError:
            self._records.append(rec)  # queued: _writer_failed counts it among the unwritten
            self._writer_failed()
            raise

    def flush(self) -> None:
        """Write every snapshot appended so far and fsync it, the index and the directories (any ``durable`` mode).

        After it returns, every snapshot appended before survives the death of the process and an
        operating-system crash. A no-op in memory and for a reader.

        Raises:
            TrajectoryError: If the background writer failed (the message says which snapshots are intact).
        """
        if self.path is None or self._mode != "a" or self._closed:
            return
        if self._writer is None:
            if self._dir_fd is not None:
                os.fsync(self._dir_fd)
            if self._index_fd is not None:
                os.fsync(self._index_fd)
            return
        try:
            self._writer.sync()
        except TrajectoryError:
            self._writer_failed()
            raise

    def _writer_failed(self) -> None:
        """After the writer failed: forget the snapshots it did not write, close the store."""
        w = self._writer
        assert w is not None
        self._n_indexed = min(len(self._records), self._writer_base + w.written)
        self._drop_provisional()
        self._release()

    def append_model(self, model: nn.Module, **kwargs: Any) -> int:
        """Append ``model``'s parameters (frozen ones included) and buffers, with its layout; the model is only read.

        Args:
            model: The network (a grown or shrunk network starts a new segment).
            **kwargs: ``step``, ``epoch``, ``metrics``, ``tags``, ``wall_time``, ``new_segment`` as in :meth:`append`.

        Returns:
            The index of the new snapshot.
        """
        for k in ("layout", "buffers"):
            if k in kwargs:
                raise TypeError(f"append_model takes {k} from the model; use append() to pass it explicitly")
        # The layout is rebuilt only when the parameters themselves change (new tensors or shapes, as a
        # tunnel event does): comparing identities is far cheaper than a rebuild. requires_grad is not part
        # of the layout (see landscape.params), so freezing a tensor keeps the segment.
        # The cache holds flat detached views of the parameters: they share the parameters' memory, so they
        # see in-place updates (optimizer steps). It is used while no module, parameter or buffer of the model
        # was added, removed or replaced (identities, module by module) and no parameter's .data, shape or
        # stride changed.
        c = self._model_cache
        if c is not None and c[0] is model and self._segs and self._segs[-1][0] is c[2] and _same_structure(c[1]):
            layout, vec, buffers = c[2], torch.cat(c[3]) if c[3] else parameters_to_vector(model), c[4]
        else:
            named, buffers = _named_tensors(model)
            layout = ParamLayout.from_model(model)
            if self._segs and layout.specs == self._segs[-1][0].specs:
                layout = self._segs[-1][0]
            vec = parameters_to_vector(model)
            own = dict(named)
            tensors = [own[s.name] for s in layout.specs] if all(s.name in own for s in layout.specs) else None
            c = None
            if tensors is not None and all(p.is_contiguous() for p in tensors):
                views = [p.detach().view(-1) for p in tensors]  # must give exactly what parameters_to_vector gives
                fast = torch.cat(views) if views else None
                if fast is not None and fast.dtype == vec.dtype and torch.equal(fast, vec):
                    c = (model, _structure(model, tensors), layout, views, buffers)
            self._model_cache = None
        self._fresh = vec
        try:
            # Buffers uncopied: append copies them once.
            i = self.append(vec, buffers=buffers, layout=layout, **kwargs)
        finally:
            self._fresh = None
        self._model_cache = c if c is not None and self._segs[-1][0] is c[2] else None
        return i

    def update_meta(self, meta: Mapping[str, Any]) -> None:
        """Merge JSON-compatible keys into the run-level metadata (rewrites the manifest atomically).

        Raises:
            TrajectoryError: If the store is read-only.
        """
        if self.path is not None and (self._mode != "a" or self._closed):
            raise TrajectoryError(f"cannot update metadata of {self!r}: it is read-only or closed")
        self._meta.update(_jsonify(meta, "meta"))
        if self.path is not None:
            self._write_manifest()

    def close(self) -> None:
        """Write everything queued and sync it (unless ``durable=False``), end the writer thread, release the lock.

        Reading stays possible.

        Raises:
            TrajectoryError: If the background writer failed (the store is released all the same).
        """
        w = self._writer
        if not self._closed and w is not None:
            try:
                if self._durable:
                    w.sync()
                else:
                    w.wait(w.seq)
            except TrajectoryError:
                self._writer_failed()
                raise
        elif not self._closed and self._durable and self._index_fd is not None:
            self.flush()
        self._release()

    def _release(self) -> None:
        self._closed = True
        w = getattr(self, "_writer", None)
        if w is not None:
            w.stop()  # writes what is still queued (no sync), closes the pack, index and directory descriptors
        for name in ("_index_fd", "_dir_fd", "_lock_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        if getattr(self, "_rfd", None) is not None:
            os.close(self._rfd[1])  # type: ignore[index]
            self._rfd = None

    def __enter__(self) -> Trajectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._release()  # no fsync at interpreter shutdown: close() is the documented sync point
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --------------------------------------------------------------- reading
    def _read(self, i: int, rec: Mapping[str, Any]) -> tuple[Path, bytes]:
        assert self.path is not None
        w = self._writer
        if w is not None and not self._closed and i >= self._writer_base + w.written:
            try:
                w.wait(w.seq)  # reading a snapshot still queued: write it first
            except TrajectoryError:
                self._writer_failed()
                raise
        name = rec["file"]
        f = self.path / _SNAPDIR / name
        if self._rfd is None or self._rfd[0] != name:
            if self._rfd is not None:
                os.close(self._rfd[1])
                self._rfd = None
            try:
                self._rfd = (name, os.open(f, os.O_RDONLY))
            except FileNotFoundError:
                raise CorruptTrajectoryError(f"snapshot {i}: file {f} is missing") from None
        data = os.pread(self._rfd[1], rec["size"] + (self._version == 1), rec["off"])
        if len(data) != rec["size"]:
            what = "truncated" if len(data) < rec["size"] else "longer than recorded"
            raise CorruptTrajectoryError(
                f"snapshot {i}: file {f} is {what}: {len(data)} bytes at byte {rec['off']}, index says {rec['size']}"
            )
        return f, data

    def _tensors(self, i: int) -> dict[str, Tensor]:
        rec = self._records[i]
        if self.path is None:
            return {k: v.clone() for k, v in self._mem[i].items()}
        f, data = self._read(i, rec)
        if self._version == 1:
            if self._verify and hashlib.sha256(data).hexdigest() != rec["sha256"]:
                raise CorruptTrajectoryError(
                    f"snapshot {i}: file {f} fails its checksum (sha256 mismatch): it is corrupted"
                )
        else:
            size, h = _header(data)
            what = "is not a valid snapshot" if size != len(data) or h is None else None
            if what is None and self._verify:
                what = _verify_blob(data, h, _record_json(rec), rec["digest"])  # type: ignore[arg-type]
            if what:
                raise CorruptTrajectoryError(f"snapshot {i}: file {f} at byte {rec['off']} {what}")
        try:
            tensors = safetensors.torch.load(data)  # parses a JSON header and raw bytes: runs no code
        except Exception as e:  # noqa: BLE001 - any parse failure is corruption
            raise CorruptTrajectoryError(f"snapshot {i}: file {f} is not a valid safetensors snapshot ({e})") from e
        v = tensors.get("vector")
        numel = self._segs[rec["seg"]][0].numel
        if v is None or v.shape != (numel,) or str(v.dtype) != f"torch.{rec['dtype']}":
            raise CorruptTrajectoryError(f"snapshot {i}: file {f} does not hold a ({numel},) {rec['dtype']} vector")
        return tensors

    def _snapshot(self, i: int) -> Snapshot:
        rec, t = self._records[i], self._tensors(i)
        return Snapshot(
            index=i,
            vector=t["vector"],
            step=rec["step"],
            epoch=rec["epoch"],
            wall_time=rec["time"],
            metrics=dict(rec["metrics"]),
            tags=copy.deepcopy(rec["tags"]),
            buffers={k[len(_BUF) :]: v for k, v in t.items() if k.startswith(_BUF)},
            segment=rec["seg"],
            layout=self._segs[rec["seg"]][0],
        )

    def _index(self, i: Any) -> int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(
                f"snapshot index must be an integer, got {type(i).__name__}; use vectors(indices) or iter_blocks()"
            ) from None
        n = len(self._records)
        if not -n <= i < n:
            raise IndexError(f"snapshot index {i} out of range for a trajectory of {n} snapshots")
        return i % n

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Snapshot:
        return self._snapshot(self._index(i))

    def __iter__(self) -> Iterator[Snapshot]:
        """Stream snapshots in order, reading one file at a time."""
        for i in range(len(self._records)):
            yield self._snapshot(i)

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"Trajectory({where}, {len(self)} snapshots, {len(self._segs)} segments)"

    @property
    def segments(self) -> list[Segment]:
        """The segments, in order (each a run of snapshots sharing one layout)."""
        stops = [*self._seg_start[1:], len(self._records)]
        return [
            Segment(k, s, e, lay, names)
            for k, ((lay, names), s, e) in enumerate(zip(self._segs, self._seg_start, stops))
        ]

    @property
    def layout(self) -> ParamLayout:
        """Layout of the last segment (or the layout given for an empty trajectory).

        Raises:
            TrajectoryError: If the trajectory is empty and no layout was given.
        """
        if self._segs:
            return self._segs[-1][0]
        if self._pending is None:
            raise TrajectoryError("this trajectory is empty and was given no layout")
        return self._pending

    @property
    def meta(self) -> dict[str, Any]:
        """A copy of the run-level metadata (change it with :meth:`update_meta`)."""
        return copy.deepcopy(self._meta)

    @property
    def steps(self) -> np.ndarray:
        """Step of every snapshot, shape ``(T,)``, int64."""
        return np.array([r["step"] for r in self._records], dtype=np.int64)

    @property
    def epochs(self) -> np.ndarray:
        """Epoch of every snapshot, shape ``(T,)``, float64."""
        return np.array([r["epoch"] for r in self._records], dtype=np.float64)

    @property
    def wall_times(self) -> np.ndarray:
        """Wall time of every snapshot, shape ``(T,)``, float64."""
        return np.array([r["time"] for r in self._records], dtype=np.float64)

    @property
    def metric_names(self) -> list[str]:
        """Names of all metrics recorded in any snapshot, in order of first appearance."""
        return list(dict.fromkeys(k for r in self._records for k in r["metrics"]))

    def metric(self, name: str) -> np.ndarray:
        """One metric over the trajectory, shape ``(T,)``, float64, NaN where a snapshot lacks it."""
        return np.array([r["metrics"].get(name, math.nan) for r in self._records], dtype=np.float64)

    def tags(self, i: int) -> dict[str, Any]:
        """Tags of snapshot ``i`` (a copy)."""
        return copy.deepcopy(self._records[self._index(i)]["tags"])

    def _segment_of(self, indices: list[int]) -> int:
        segs = {self._records[i]["seg"] for i in indices}
        if len(segs) > 1:
            raise ValueError(
                f"snapshots {indices[0]}..{indices[-1]} span segments {sorted(segs)} with different layouts; "
                "take one segment at a time (trajectory.segments lists their ranges)"
            )
        return segs.pop() if segs else len(self._segs) - 1

    def _dtype(self, indices: Iterable[int]) -> torch.dtype:
        dt = [_DTYPES[self._records[i]["dtype"]] for i in indices]
        out = dt[0] if dt else torch.float32
        for d in dt[1:]:
            out = torch.promote_types(out, d)
        return out

    def vectors(self, indices: Iterable[int] | slice | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
        """Stack snapshot vectors into a matrix of shape ``(T, numel)``; all must share one segment.

        Args:
            indices: Snapshot indices (negative allowed), a slice, or ``None`` for all.
            dtype: Result dtype; default: the promoted dtype of the stored vectors.

        Raises:
            ValueError: If the snapshots span more than one segment.
        """
        if indices is None:
            idx = list(range(len(self)))
        elif isinstance(indices, slice):
            idx = list(range(len(self)))[indices]
        else:
            idx = [self._index(i) for i in indices]
        seg = self._segment_of(idx)
        dtype = dtype or self._dtype(idx)
        if not idx:
            return torch.zeros(0, self._segs[seg][0].numel if self._segs else 0, dtype=dtype)
        return torch.stack([self._tensors(i)["vector"].to(dtype) for i in idx])

    def iter_blocks(
        self, block_size: int, *, segment: int | None = None, dtype: torch.dtype | None = None, progress: bool = False
    ) -> Iterator[tuple[range, Tensor]]:
        """Stream the vectors of one segment in blocks, holding one block in memory at a time.

        Args:
            block_size: Snapshots per block (the last block may be shorter).
            segment: Segment to read; may be omitted when the trajectory has a single segment.
            dtype: Block dtype; default: the promoted dtype of the segment's stored vectors.
            progress: Show a tqdm progress bar.

        Yields:
            ``(indices, block)``: a range of snapshot indices and their vectors, shape ``(len(indices), numel)``.

        Raises:
            ValueError: If ``segment`` is omitted on a multi-segment trajectory, or out of range.
        """
        if int(block_size) < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size}")
        segs = self.segments
        if segment is None:
            if len(segs) > 1:
                ranges = ", ".join(f"{s.index}: [{s.start}, {s.stop})" for s in segs)
                raise ValueError(f"the trajectory has {len(segs)} segments ({ranges}); pass segment=k")
            if not segs:
                return iter(())
            segment = 0
        if not 0 <= segment < len(segs):
            raise ValueError(f"segment {segment} does not exist; the trajectory has {len(segs)} segments")
        s = segs[segment]
        return self._blocks(s, int(block_size), dtype or self._dtype(s.indices), progress)

    def _blocks(self, s: Segment, size: int, dtype: torch.dtype, progress: bool) -> Iterator[tuple[range, Tensor]]:
        for b in tqdm(range(s.start, s.stop, size), disable=not progress, desc="snapshot blocks"):
            r = range(b, min(b + size, s.stop))
            yield r, torch.stack([self._tensors(i)["vector"].to(dtype) for i in r])

    def model_at(self, factory_or_model: nn.Module | Callable[[], nn.Module], i: int) -> nn.Module:
        """Rebuild the model at snapshot ``i`` exactly: the recorded parameters and stored buffers.

        Stores recorded before frozen parameters joined the parameter vector hold only the trainable
        ones; their snapshots still rebuild, with the frozen tensors taken from the template.

        Args:
            factory_or_model: A zero-argument callable returning a fresh model of the snapshot's
                architecture, or a module used as a template (deep-copied, never modified). Frozen
                parameters, and buffers when the snapshot stored none, come from it.
            i: Snapshot index (negative allowed).

        Returns:
            A new module with the snapshot's values (in the template's train/eval mode).

        Raises:
            ValueError: If the model's layout or buffers do not match the snapshot's segment.
        """
        snap = self[i]
        if isinstance(factory_or_model, nn.Module):
            model = copy.deepcopy(factory_or_model)
        elif callable(factory_or_model):
            model = factory_or_model()
            if not isinstance(model, nn.Module):
                raise TypeError(f"the factory returned a {type(model).__name__}, not an nn.Module")
        else:
            raise TypeError(f"expected a model factory or an nn.Module, got {type(factory_or_model).__name__}")
        layout = ParamLayout.from_model(model)
        if layout != snap.layout and ParamLayout.from_model(model, params="trainable") == snap.layout:
            layout = snap.layout  # an older store: the vector covers the trainable parameters only
        if layout != snap.layout:
            raise ValueError(
                f"snapshot {snap.index} (segment {snap.segment}) was recorded with {snap.layout!r} but the model "
                f"has {layout!r}: {_layout_difference(snap.layout, layout)}; use the factory of that segment's network"
            )
        own = dict(model.named_buffers())
        if snap.buffers and set(snap.buffers) != set(own):
            raise ValueError(
                f"snapshot {snap.index} stores buffers {sorted(snap.buffers)} but the model has {sorted(own)}"
            )
        params = dict(model.named_parameters())
        with torch.no_grad():
            for spec in layout.specs:
                params[spec.name].copy_(snap.vector[spec.start : spec.stop].view(spec.shape))
            for k, v in snap.buffers.items():
                if own[k].shape != v.shape:
                    raise ValueError(
                        f"buffer {k!r} has shape {tuple(v.shape)} in snapshot {snap.index}, "
                        f"{tuple(own[k].shape)} in the model"
                    )
                own[k].copy_(v)
        return model

    def save(self, path: str | os.PathLike[str], *, progress: bool = False) -> Trajectory:
        """Copy this trajectory (e.g. an in-memory one) into a new on-disk store, snapshot by snapshot.

        Args:
            path: Missing or empty directory.
            progress: Show a tqdm progress bar.

        Returns:
            The new store, open for appending.
        """
        out = Trajectory.create(path, self._pending if not self._segs else None, meta=self._meta, durable=self._durable)
        for snap in tqdm(self, total=len(self), disable=not progress, desc="saving trajectory"):
            out.append(
                snap.vector,
                step=snap.step,
                epoch=snap.epoch,
                metrics=snap.metrics,
                tags=snap.tags,
                buffers=snap.buffers,
                layout=snap.layout,
                wall_time=snap.wall_time,
                new_segment=snap.index in self._seg_start,
            )
        return out

    # ------------------------------------------------------------ check / repair / migrate
    @classmethod
    def check(cls, path: str | os.PathLike[str], *, repair: bool = False, migrate: bool = False) -> CheckReport:
        """Verify every file of an on-disk store and say what is damaged; optionally rebuild its index.

        Every index line's seal, every snapshot's digest and tensors, and the manifest are checked.
        Nothing is changed unless asked.

        Args:
            path: Directory of the store.
            repair: Rebuild ``index.jsonl`` from the packs (every snapshot's record is stored in its
                pack too, so an intact pack restores its snapshots exactly). Snapshots after the last
                one that survives are dropped from the index; the old index is kept as
                ``index.jsonl.damaged[.N]`` and pack bytes that are not kept are moved aside to
                ``<pack>.damaged-<offset>``, never deleted. Refused while a writer holds the lock,
                when the manifest is damaged, or when a lost snapshot has surviving snapshots after it.
            migrate: Convert a version-1 store: it is rewritten in the current format, the original
                is kept beside it as ``<dir>.v1-backup``.

        Returns:
            The report (``report.ok`` is true for an undamaged store).

        Raises:
            FileNotFoundError: If ``path`` is not a directory.
            TrajectoryError: If ``path`` is not a trajectory, or ``repair`` cannot take the writer lock.
        """
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"no trajectory at {p}: the directory does not exist")
        rep = CheckReport(p)
        t = cls.__new__(cls)
        t._setup(None, "r", "never", None, None, True, True)
        t.path, t._mode = p, "check"
        manifest_ok = True
        try:
            t._read_manifest()
            rep.version = t._version
        except CorruptTrajectoryError as e:
            rep.problems.append((_MANIFEST, str(e)))
            rep.unrecoverable.append(f"{_MANIFEST}: run metadata and segment table (repair rebuilds the segments)")
            manifest_ok = False
        if rep.version == 1:
            return _check_v1(p, rep, migrate)
        if migrate:
            rep.actions.append(f"nothing to migrate: {p} is already in format version {FORMAT_VERSION}")
        try:
            if repair:
                t._lock()
            again = _check_v2(t, rep, manifest_ok, repair)
        finally:
            t._release()
        if again:  # the manifest was rebuilt: now check (and repair) the rest against it
            rest = cls.check(p, repair=True)
            rest.problems[:0], rest.actions[:0] = rep.problems, rep.actions
            rest.unrecoverable[:0] = rep.unrecoverable
            rest.repaired = True
            return rest
        return rep


# ----------------------------------------------------------------------------- check, repair, migrate
def _check_v1(p: Path, rep: CheckReport, migrate: bool) -> CheckReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = Trajectory.open(p)
    for i in range(len(t)):
        try:
            t._tensors(i)
            rep.intact.append(i)
        except CorruptTrajectoryError as e:
            rep.lost.append(i)
            rep.problems.append((f"{_SNAPDIR}/{i:08d}.safetensors", str(e)))
    rep.snapshots = len(t)
    if not migrate:
        rep.unrecoverable.append(
            "format version 1 has no checksums on its index and manifest: damage there cannot be detected; "
            f"convert with: python -m landscape check {p} --migrate"
        )
        return rep
    if rep.lost:
        rep.unrecoverable.append("migration refused: the store has damaged snapshots")
        return rep
    tmp, backup = p.with_name(p.name + ".v2-migrating"), p.with_name(p.name + ".v1-backup")
    for q in (tmp, backup):
        if q.exists():
            raise TrajectoryError(f"cannot migrate {p}: {q} exists (left by an earlier migration?); move it away")
    t.save(tmp).close()
    os.rename(p, backup)
    os.rename(tmp, p)
    _fsync_path(p.parent)
    rep.version = FORMAT_VERSION
    rep.actions.append(f"migrated {len(t)} snapshots to format version {FORMAT_VERSION}; the original is {backup}")
    return rep


def _check_v2(t: Trajectory, rep: CheckReport, manifest_ok: bool, repair: bool) -> bool:
    """Fill ``rep``; with ``repair``, rebuild the index (or first the manifest: returns True, check again)."""
    assert t.path is not None
    p, snapdir = t.path, t.path / _SNAPDIR
    idx: dict[int, dict[str, Any]] = {}
    index_data = b""
    if not (p / _INDEX).exists():
        rep.problems.append((_INDEX, "is missing"))
    else:
        index_data = (p / _INDEX).read_bytes()
        lines = index_data.split(b"\n")
        if lines[-1]:
            rep.torn_tail.append(f"{_INDEX}: torn last line without newline ({len(lines[-1])} bytes)")
        for k, line in enumerate(lines[:-1]):
            try:
                idx[k] = t._parse_line(line, k)
            except CorruptTrajectoryError as e:
                rep.problems.append((_INDEX, str(e)))
    segs = t._manifest_segs
    blobs: dict[int, dict[str, Any]] = {}
    ends: dict[str, int] = {}  # pack -> end of its last verified snapshot
    seg_info: dict[int, str] = {}  # segment -> its layout as the first snapshot of a pack states it
    packs = _pack_names(snapdir)
    for name in packs:
        data = (snapdir / name).read_bytes()
        starts = sorted({0} | {r["off"] for r in idx.values() if r["file"] == name})
        at, view = 0, memoryview(data)
        while at < len(data):
            size, h = _header(view[at:])
            if size < 0 and name == packs[-1] and not [s for s in starts if s > at]:
                rep.torn_tail.append(f"{_SNAPDIR}/{name}: partial snapshot at byte {at} ({len(data) - at} bytes)")
                break
            what = None
            if size <= 0 or h is None:
                what = "is not a complete snapshot"
            else:
                blob = bytes(view[at : at + size])
                what = _verify_blob(blob, h, None, None)
                if what is None:
                    rec = json.loads(h["__metadata__"]["record"])
                    rec.update(file=name, off=at, size=size, digest=h["__metadata__"]["digest"])
                    what = _check_tensors(blob, rec, segs if manifest_ok else None)
                    if what is None and rec["i"] in blobs:
                        what = f"repeats snapshot {rec['i']}"
                    if what is None:
                        blobs[rec["i"]] = rec
                        ends[name] = at + size
                        if "segment" in h["__metadata__"]:
                            seg_info.setdefault(rec["seg"], h["__metadata__"]["segment"])
                        at += size
                        continue
            rep.problems.append((f"{_SNAPDIR}/{name}", f"byte {at}: snapshot {what}"))
            nxt = [s for s in starts if s > at]  # resynchronize at the next offset the index knows
            if not nxt:
                break
            at = nxt[0]
    for name in {r["file"] for r in idx.values()} - set(packs):
        rep.problems.append((f"{_SNAPDIR}/{name}", "is missing"))
    n = max([*idx, *blobs], default=-1) + 1
    rep.snapshots = n
    for i in range(n):
        r, b = idx.get(i), blobs.get(i)
        if b is None:
            rep.lost.append(i)
        elif (
            r is not None
            and all(r[k] == b[k] for k in ("file", "off", "size", "digest"))
            and _record_json(r) == _record_json(b)
        ):
            rep.intact.append(i)
        else:
            rep.recoverable.append(i)
    if rep.lost:
        rep.unrecoverable.append(f"snapshots {_ranges(rep.lost)}: their tensors are damaged or missing")
    if not repair or (rep.ok and not rep.torn_tail):
        return False
    if not manifest_ok:
        return _repair_manifest(t, rep, blobs, seg_info)
    keep = rep.lost[0] if rep.lost else n
    if any(i > keep for i in rep.intact + rep.recoverable):
        rep.unrecoverable.append(
            f"repair refused: snapshot {keep} is lost but later snapshots survive (an index cannot skip one)"
        )
        return False
    # Rebuild the index from the packs' own records, checking segment order as a reader would.
    t._records, t._seg_start, t._segs = [], [], []
    try:
        for i in range(keep):
            t._add(blobs[i], f"{_SNAPDIR}/{blobs[i]['file']}")
    except CorruptTrajectoryError as e:
        rep.unrecoverable.append(f"repair refused: {e}")
        return False
    new = b"".join(t._index_line(_record_json(blobs[i]), blobs[i]) for i in range(keep))
    kept_end: dict[str, int] = {}
    for i in range(keep):
        kept_end[blobs[i]["file"]] = blobs[i]["off"] + blobs[i]["size"]
    for name in packs:  # bytes no kept snapshot uses are moved aside, never deleted
        f, end = snapdir / name, kept_end.get(name, 0)
        size = f.stat().st_size
        if size > end:
            aside = snapdir / f"{name}.damaged-{end}"
            with open(f, "rb") as src, open(aside, "xb") as dst:
                src.seek(end)
                dst.write(src.read())
                dst.flush()
                os.fsync(dst.fileno())
            if end:
                os.truncate(f, end)
            else:
                os.unlink(f)
            rep.actions.append(f"moved {size - end} bytes not used by any kept snapshot from {f} to {aside}")
    if new != index_data:
        if (p / _INDEX).exists():
            backup, k = p / f"{_INDEX}.damaged", 1
            while backup.exists():
                backup, k = p / f"{_INDEX}.damaged.{k}", k + 1
            os.link(p / _INDEX, backup)
            rep.actions.append(f"kept the old index as {backup}")
        _write_atomic(p / _INDEX, new, True, None)
        _fsync_path(p)
        rep.actions.append(f"rebuilt {p / _INDEX} with {keep} snapshots from the packs")
    if keep < n:
        rep.actions.append(f"dropped the lost snapshots {keep}..{n - 1} from the index")
    rep.repaired = True
    rep.intact, rep.recoverable = list(range(keep)), []
    return False


def _repair_manifest(
    t: Trajectory, rep: CheckReport, blobs: dict[int, dict[str, Any]], seg_info: dict[int, str]
) -> bool:
    """Rebuild a damaged manifest's segment table from the packs (each pack's first snapshot states its layout)."""
    assert t.path is not None
    nseg = max((r["seg"] for r in blobs.values()), default=-1) + 1
    missing = [k for k in range(nseg) if k not in seg_info]
    if not blobs or missing:
        rep.unrecoverable.append(
            f"repair refused: the manifest is damaged and no pack states the layout of segments {missing}"
        )
        return False
    segs = []
    for k in range(nseg):
        d = json.loads(seg_info[k])
        segs.append((ParamLayout.from_dict(d["layout"]), tuple(d["buffer_names"])))
    f = t.path / _MANIFEST
    if f.exists():
        backup, k = t.path / f"{_MANIFEST}.damaged", 1
        while backup.exists():
            backup, k = t.path / f"{_MANIFEST}.damaged.{k}", k + 1
        os.link(f, backup)
        rep.actions.append(f"kept the old manifest as {backup}")
    t._segs, t._meta, t._pending, t._durable = segs, {}, None, "append"
    t._write_manifest()
    rep.actions.append(f"rebuilt {f} with {nseg} segments from the packs")
    rep.unrecoverable = [u for u in rep.unrecoverable if not u.startswith(_MANIFEST)]
    rep.unrecoverable.append(f"{_MANIFEST}: the run metadata (meta), which only the manifest held; it is now empty")
    return True


def _check_tensors(
    blob: bytes, rec: Mapping[str, Any], segs: list[tuple[ParamLayout, tuple[str, ...]]] | None
) -> str | None:
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption
        return f"is not valid safetensors ({e})"
    v = tensors.get("vector")
    if segs is None:
        return None
    if not isinstance(rec.get("seg"), int) or not 0 <= rec["seg"] < len(segs):
        return f"names segment {rec.get('seg')}, which the manifest lacks"
    numel = segs[rec["seg"]][0].numel
    if v is None or v.shape != (numel,) or str(v.dtype) != f"torch.{rec.get('dtype')}":
        return f"does not hold a ({numel},) {rec.get('dtype')} vector"
    return None
