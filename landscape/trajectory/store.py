"""Trajectory store: an append-only, crash-safe, checksummed sequence of parameter snapshots.

A snapshot is a flat parameter vector (see :mod:`landscape.params`) with the model's buffers
(BatchNorm running statistics) beside it, plus step, epoch, wall time, metrics and JSON tags. Runs
of consecutive snapshots that share one :class:`~landscape.params.ParamLayout` form a *segment*; a
tunnel event that grows or shrinks the network starts a new one.

A trajectory lives in memory (``Trajectory()``) or in a directory; both behave the same. The parts:

* :mod:`landscape.trajectory.fileformat`: the on-disk format (sealed manifest and index lines, packs of
  self-describing safetensors snapshots), parsed and verified;
* :mod:`landscape.trajectory.index`: loading the index, following a live writer, crash recovery;
* :mod:`landscape.trajectory.writer`: the group-commit writer thread and what ``durable=`` guarantees;
* :mod:`landscape.trajectory.files`: the atomic write and the single-writer lock;
* :mod:`landscape.trajectory.check`: ``check`` / ``repair`` / ``migrate``;
* :mod:`landscape.trajectory.records` and :mod:`landscape.trajectory.capture`: snapshots, segments, and
  what ``append_model`` takes from a model.

**Crash contract.** A snapshot is written to its pack before its index line. A snapshot whose
bytes are complete in its pack exists even if its index line is missing or torn: opening rolls such
tail snapshots forward after verifying their digests (mode ``"a"`` writes their index lines). The only
thing recovery ever removes is one incomplete tail: a torn last index line without its newline and a
partial last snapshot (or partial batch of snapshots) at the end of the last pack, with the zeros of a
``durable="append"`` writer's reserve after it (:func:`~landscape.trajectory.fileformat.crash_tail`). Anything else that
does not verify is damage: open refuses, every file is left in place, and :meth:`Trajectory.check`
(``python -m landscape check DIR``) reports it and, with ``repair=True``, rebuilds the index (and a
damaged manifest's segments) from intact packs. Whatever survives the death of the writer is a prefix
of the appended snapshots, each byte-exact. After an operating-system crash or power loss, snapshots
appended since the last sync may be missing (``check --repair`` then trims an index that outran its
packs).

The single-writer lock is ``flock`` on the store directory's own descriptor: no lock file to delete,
released by the kernel when the writer dies. Version 1 stores (one ``.safetensors`` file per snapshot,
unsealed index) open read-only; ``python -m landscape check DIR --migrate`` converts them. Nothing is
ever unpickled: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import copy
import hashlib
import math
import operator
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.params import ParamLayout
from landscape.trajectory.capture import Capture, Rows, capture_model, same_structure
from landscape.trajectory.check import CheckReport, check_store
from landscape.trajectory.fileformat import (
    BUF,
    DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX,
    LOCK_FILE,
    MANIFEST,
    PACK,
    SNAPDIR,
    CorruptTrajectoryError,
    Spec,
    TrajectoryError,
    pack_names,
    read_header,
    record_json,
    segment_json,
    verify_blob,
)
from landscape.trajectory.files import acquire_lock
from landscape.trajectory.index import StoreIndex
from landscape.trajectory.records import (
    Segment,
    Snapshot,
    flat_layout,
    jsonify,
    layout_difference,
    metrics_dict,
    real_number,
    restore_model,
    segment_index,
    step_number,
)
from landscape.trajectory.writer import PackWriter, WriteItem

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

_DTYPE_NAMES = {d: name for name, d in DTYPES.items()}  # torch.float32 -> "float32"
_DURABLE: dict[bool | str, bool | str] = {True: "append", False: False, "append": "append", "flush": "flush"}
Durable = bool | str  # True / "append", "flush", False
_WALL_TIME = "a real number (Unix time) or None"


def _is_bool(x: Any) -> bool:
    """Whether ``x`` is a boolean scalar (Python's, numpy's, a one-element bool tensor): a mask entry, not an index."""
    return isinstance(x, bool | np.bool_) or (isinstance(x, Tensor) and x.dtype == torch.bool and x.numel() == 1)


def _record(
    i: int,
    seg: int,
    step: int,
    epoch: float,
    wall_time: float | None,
    dtype: str,
    metrics: Mapping[str, float] | None,
    tags: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A snapshot's index record from the caller's values, checked (both append paths build it here)."""
    return {
        "i": i,
        "seg": seg,
        "step": step_number(step),
        "epoch": real_number(epoch, "epoch"),
        "time": time.time() if wall_time is None else real_number(wall_time, "wall_time", _WALL_TIME),
        "dtype": dtype,
        "metrics": metrics_dict(metrics),
        "tags": jsonify(tags, "tags"),
    }


class Trajectory(StoreIndex):
    """Append-only sequence of parameter snapshots, in memory or in a crash-safe directory.

    What a completed call guarantees on disk (the crash contract: the module docstring; the format:
    :mod:`landscape.trajectory.fileformat`; group commit: :mod:`landscape.trajectory.writer`):

    * :meth:`append` returns: with ``durable="append"`` (or ``True``, the default) the snapshot is
      written and synced: it survives SIGKILL, an operating-system crash and power loss. With
      ``"flush"`` or ``False`` it is copied and queued (group commit: written 64 at a time): a killed
      process may lose the snapshots still queued (at most 256 or 64 MB, typically 0.05 s worth).
    * :meth:`flush` returns: every snapshot appended so far, the index and the directory entries are
      written and fsynced (in every ``durable`` mode).
    * :meth:`close` returns: as :meth:`flush` for ``durable="append"`` or ``"flush"`` (``False``:
      written, not synced); the writer thread has ended and the lock is released.
    * A failure of the writer (a batch that could not be written) is raised by the next :meth:`append`,
      :meth:`flush` or :meth:`close`, naming the first snapshot not written; all earlier snapshots are intact.

    Args:
        path: Directory of the store; ``None`` keeps it in memory. An existing store is opened for
            appending (after crash recovery), a missing or empty directory becomes a new store. Creating a
            directory that did not exist warns (a ``UserWarning`` naming it): a mistyped path meant to be
            read would otherwise pass for an empty run. To read a store, :meth:`open` refuses a missing one;
            to start a run, :meth:`create` refuses an existing one (here a rerun appends to it) and does not warn.
        layout: Layout of the vectors to come (default for :meth:`append`). Without one, the first
            :meth:`append` takes a single flat tensor named ``"vector"``.
        meta: Run-level JSON metadata (model name, data, seed, ...); merged into an existing store's.
        durable: When snapshots are written and fsynced: ``"append"`` / ``True`` (before every append
            returns), ``"flush"`` (written in batches of 64, group commit, synced at :meth:`flush`
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
    #: ``append_model`` of an unchanged model takes the fast path (:meth:`_append_fast`); False for A/B timings.
    FAST_APPEND = True

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
        if self._made_dir:
            warnings.warn(
                f"no trajectory at {self.path}: the directory did not exist and a new, empty store was created "
                "there. To read a store use Trajectory.open(path) (an error for a missing path); to start a run "
                "use Trajectory.create(path), which does not warn",
                UserWarning,
                stacklevel=2,
            )

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
        self._writer: PackWriter | None = None  # started by the first append
        self._writer_base = 0  # snapshots the store held when the writer started
        self._rfd: tuple[str, int] | None = None  # the pack last read from
        self._model_cache: Capture | None = None  # what append_model reuses while the model is unchanged
        self._fresh: Tensor | None = None  # a vector append_model just built (no defensive copy needed)
        self._fast: tuple[Any, ...] | None = None  # append_model's state for an unchanged model (_append_fast)
        self._offset = 0  # bytes of the index already parsed
        self._manifest_segs: list[tuple[ParamLayout, tuple[str, ...]]] = []  # as last read from disk
        self._manifest_seen: bytes | None = None  # the manifest's bytes when refresh() last parsed it
        self.dropped: list[str] = []  # what crash recovery removed (a torn index line, a partial snapshot)
        self.recovered: list[int] = []  # snapshots recovery indexed from their packs
        self._made_dir = False  # the directory did not exist and was created here
        if self.path is None:
            self._meta = jsonify(meta, "meta")
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
        fresh = not p.exists() or (p.is_dir() and set(os.listdir(p)) <= {LOCK_FILE, f"{MANIFEST}.tmp"})
        if create == "never" and not p.exists():
            raise FileNotFoundError(f"no trajectory at {p}: the directory does not exist")
        if p.exists() and not p.is_dir():
            raise TrajectoryError(f"{p} is a file, not a trajectory directory")
        if fresh and create != "never":
            self._made_dir = not p.exists()
            p.mkdir(parents=True, exist_ok=True)
            self._meta = jsonify(meta, "meta")
            self._lock()
            self._write_manifest()
        else:
            if create != "never" and not (p / MANIFEST).exists() and not pack_names(p / SNAPDIR):
                # (packs without a manifest are a damaged store: reading the manifest says how to repair it)
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
                    f"{layout_difference(self._segs[-1][0], layout)}; pass layout= to append() to start a new segment"
                )
        if mode == "a":
            self._dir_fd = os.open(p / SNAPDIR, os.O_RDONLY) if (p / SNAPDIR).is_dir() else None
            self._index_fd = os.open(p / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _lock(self) -> None:
        assert self.path is not None
        self._lock_fd = acquire_lock(self.path)
        if self._lock_fd is None:
            raise TrajectoryError(
                f"{self.path} is already open for appending by another writer; open it with mode='r' to read"
            )

    def refresh(self) -> int:
        """Pick up snapshots and metadata another process wrote since this store was opened (mode ``"r"``).

        Returns:
            The number of new snapshots.
        """
        if self.path is None or self._mode == "a":
            return 0
        n = len(self._records)
        self._drop_provisional()
        self._reread_manifest()  # the writer's update_meta calls (a new segment would re-read it anyway)
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
        dtype = _DTYPE_NAMES.get(vector.dtype)
        if dtype is None:
            raise TypeError(f"vector has dtype {vector.dtype}; a parameter vector must be one of {list(DTYPES)}")
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
            layout = cur[0] if cur else self._pending or flat_layout(vector.numel())
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
        rec = _record(i, len(self._segs) - 1 + start, step, epoch, wall_time, dtype, metrics, tags)
        if vector is self._fresh and vector.device.type == "cpu":
            vec = vector  # append_model's own new, detached, contiguous vector needs no copy
        else:
            vec = vector.detach().to("cpu", copy=True).contiguous()
        tensors = {"vector": vec}
        tensors.update({BUF + k: v for k, v in bufs.items()})
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

    def _writer_for_append(self) -> PackWriter:
        w = self._writer
        if w is None:
            assert self.path is not None and self._index_fd is not None
            w = self._writer = PackWriter(
                self.path,
                self._durable,
                self._index_fd,
                self._offset,
                self._dir_fd,
                threaded=PackWriter.THREADED and self._durable != "append",
                first_index=len(self._records),
            )
            self._writer_base = len(self._records)
            self._index_fd = self._dir_fd = None  # the writer owns (and closes) them now
        return w

    def _queue_snapshot(
        self,
        i: int,
        tensors: dict[str, Tensor],
        rec: dict[str, Any],
        start: bool,
        size: int = -1,
        spec: Spec | None = None,
        parts: list[memoryview] | None = None,
    ) -> None:
        """Prepare snapshot ``i`` (all but its digest) and queue it for the writer.

        ``size`` (the tensor bytes), ``spec`` and ``parts`` (see
        :func:`~landscape.trajectory.fileformat.snapshot_frame`) are passed when the caller knows them.
        """
        assert self.path is not None
        w = self._writer_for_append()
        try:
            w.raise_error()
        except TrajectoryError:
            self._writer_failed()
            raise
        new_pack = None
        if not self._pack_name or start or self._pack_size >= self.PACK_BYTES:
            new_pack = f"{i:08d}{PACK}"
        seg = ""
        if new_pack:  # the first snapshot of a pack also carries its segment's layout
            seg = segment_json(*self._segs[rec["seg"]])
        if start:
            self._manifest_segs = list(self._segs)
            self._write_manifest()  # before the segment's first snapshot can reach its pack
        if new_pack:
            self._pack_name, self._pack_size = new_pack, 0
        rec["file"] = self._pack_name  # "off", "size", "digest": set by the writer, which frames the snapshot
        if size < 0:
            size = sum(t.numel() * t.element_size() for t in tensors.values())
        self._pack_size += size  # the data: the headers' few hundred bytes do not matter to PACK_BYTES
        sync = self._durable == "append"
        try:
            item = WriteItem(
                i=i, new_pack=new_pack, rec=rec, seg=seg, keep=tensors, size=size, sync=sync, spec=spec, parts=parts
            )
            seq = w.put(item)
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

    def append_model(
        self,
        model: nn.Module,
        *,
        step: int = 0,
        epoch: float = 0.0,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        wall_time: float | None = None,
        new_segment: bool = False,
    ) -> int:
        """Append ``model``'s parameters (frozen ones included) and buffers, with its layout; the model is only read.

        Args:
            model: The network (a grown or shrunk network starts a new segment).
            step: Optimizer step, as in :meth:`append` (so are the other keywords).
            epoch: Epoch, fractional within an epoch.
            metrics: Named numbers.
            tags: JSON-compatible tags.
            wall_time: Unix time; defaults to now.
            new_segment: Start a new segment even if the layout is unchanged.

        Returns:
            The index of the new snapshot.
        """
        fast = self._fast
        if (
            fast is not None
            and self.FAST_APPEND
            and fast[0] is model
            and fast[1] == len(self._segs) - 1
            and not new_segment
            and wall_time is None
            and not self._closed
            and same_structure(fast[2])
        ):
            return self._append_fast(fast, step, epoch, metrics, tags)
        self._fast = None
        # The model's tensors are walked again only when it changed (see landscape.trajectory.capture).
        current = self._segs[-1][0] if self._segs else None
        layout, vec, buffers, c = capture_model(model, current, self._model_cache)
        if c is not self._model_cache:
            self._model_cache = None
        self._fresh = vec
        try:
            # Buffers uncopied: append copies them once.
            i = self.append(
                vec,
                step=step,
                epoch=epoch,
                metrics=metrics,
                tags=tags,
                buffers=buffers,
                layout=layout,
                wall_time=wall_time,
                new_segment=new_segment,
            )
        finally:
            self._fresh = None
        self._model_cache = c = c if c is not None and self._segs[-1][0] is c[2] else None
        if c is not None and c[3] and vec.device.type == "cpu" and all(v.device.type == "cpu" for v in c[3]):
            # The next snapshots of this model, while it is unchanged, take the fast path (_append_fast).
            size = vec.numel() * vec.element_size() + sum(b.numel() * b.element_size() for b in buffers.values())
            rows = Rows(vec.numel(), vec.dtype)
            spec = (("vector", vec.dtype, (vec.numel(),), size),)  # frame_spec of a snapshot without buffers
            self._fast = (model, len(self._segs) - 1, c[1], c[3], buffers, rows, _DTYPE_NAMES[vec.dtype], size, spec)
        return i

    def _append_fast(
        self,
        fast: tuple[Any, ...],
        step: int,
        epoch: float,
        metrics: Mapping[str, float] | None,
        tags: Mapping[str, Any] | None,
    ) -> int:
        """:meth:`append_model` of a model unchanged since the last one, in the same segment: the same snapshot.

        Recording every step made the general path's checks and copies the largest part of a snapshot's
        cost inside a training loop: here the record is built with the same checks of the caller's values,
        and the parameters are copied with one ``torch.cat`` into a fresh row of a preallocated block
        (:class:`~landscape.trajectory.capture.Rows`), which is the snapshot's own tensor from then on.
        """
        _, seg, _, views, buffers, rows, dtype, size, spec = fast
        i = len(self._records)
        rec = _record(i, seg, step, epoch, None, dtype, metrics, tags)
        vec, data = rows.take()
        torch.cat(views, out=vec)
        tensors = {"vector": vec}
        for k, b in buffers.items():
            tensors[BUF + k] = b.detach().to("cpu", copy=True)
        if self.path is None:
            self._mem.append(tensors)
        elif buffers or data is None:
            self._queue_snapshot(i, tensors, rec, False, size)
        else:  # the frame's table is the same for every snapshot of the model: built once (frame_spec)
            self._queue_snapshot(i, tensors, rec, False, size, spec, [data])
        self._records.append(rec)
        self._n_indexed = len(self._records)
        return i

    def update_meta(self, meta: Mapping[str, Any]) -> None:
        """Merge JSON-compatible keys into the run-level metadata (rewrites the manifest atomically).

        Raises:
            TrajectoryError: If the store is read-only.
        """
        if self.path is not None and (self._mode != "a" or self._closed):
            raise TrajectoryError(f"cannot update metadata of {self!r}: it is read-only or closed")
        self._meta.update(jsonify(meta, "meta"))
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
        f = self.path / SNAPDIR / name
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
            size, h = read_header(data)
            what = "is not a valid snapshot" if size != len(data) or h is None else None
            if what is None and self._verify:
                what = verify_blob(data, h, record_json(rec), rec["digest"])  # type: ignore[arg-type]
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
            buffers={k[len(BUF) :]: v for k, v in t.items() if k.startswith(BUF)},
            segment=rec["seg"],
            layout=self._segs[rec["seg"]][0],
        )

    def _index(self, i: Any) -> int:
        if _is_bool(i):  # operator.index(True) is 1: a mask's entries were taken for snapshots 1 and 0
            raise TypeError("snapshot index must be an integer, got a bool; a boolean mask selects with vectors(mask)")
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
        n, k = len(self), len(self._segs)
        return f"Trajectory({where}, {n} snapshot{'s' * (n != 1)}, {k} segment{'s' * (k != 1)})"

    @property
    def segments(self) -> list[Segment]:
        """The segments, in order (each a run of snapshots sharing one layout)."""
        stops = [*self._seg_start[1:], len(self._records)]
        return [
            Segment(index=k, start=s, stop=e, layout=lay, buffer_names=names)
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
    def durable(self) -> bool | str:
        """When snapshots are synced: ``"append"``, ``"flush"`` or ``False`` (see the class docstring)."""
        return self._durable

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
        """One metric over the trajectory, shape ``(T,)``, float64, NaN where a snapshot lacks it.

        Raises:
            KeyError: If no snapshot has the metric (a typo read as an all-NaN column); the message lists
                :attr:`metric_names`. An empty trajectory gives an empty array.
        """
        records = self._records
        if records and not any(name in r["metrics"] for r in records):
            raise KeyError(f"no snapshot has the metric {name!r}; the metrics recorded are {self.metric_names}")
        return np.array([r["metrics"].get(name, math.nan) for r in records], dtype=np.float64)

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
        dt = [DTYPES[self._records[i]["dtype"]] for i in indices]
        out = dt[0] if dt else torch.float32
        for d in dt[1:]:
            out = torch.promote_types(out, d)
        return out

    def vectors(self, indices: Iterable[int] | slice | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
        """Stack snapshot vectors into a matrix of shape ``(T, numel)``; all must share one segment.

        Args:
            indices: Snapshot indices (negative allowed), a boolean mask with one entry per snapshot (e.g.
                ``traj.steps >= 100``), a slice, or ``None`` for all.
            dtype: Result dtype; default: the promoted dtype of the stored vectors.

        Raises:
            ValueError: If the snapshots span more than one segment.
        """
        if indices is None:
            idx = list(range(len(self)))
        elif isinstance(indices, slice):
            idx = list(range(len(self)))[indices]
        else:
            sel = list(indices)
            if sel and all(_is_bool(b) for b in sel):
                if len(sel) != len(self):
                    raise IndexError(f"a boolean mask needs one entry per snapshot ({len(self)}), got {len(sel)}")
                idx = [k for k, b in enumerate(sel) if b]
            else:
                idx = [self._index(i) for i in sel]
        seg = self._segment_of(idx)
        dtype = dtype or self._dtype(idx)
        if not idx:
            known = self._segs[seg][0] if self._segs else self._pending  # the layout given to an empty store
            return torch.zeros(0, known.numel if known is not None else 0, dtype=dtype)
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
        segs, segment = self.segments, segment_index(segment)
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
        return restore_model(factory_or_model, self[i])

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
            kept = {k: getattr(snap, k) for k in ("step", "epoch", "metrics", "tags", "buffers", "layout", "wall_time")}
            out.append(snap.vector, new_segment=snap.index in self._seg_start, **kept)
        return out

    # ------------------------------------------------------------ check / repair / migrate
    @classmethod
    def check(cls, path: str | os.PathLike[str], *, repair: bool = False, migrate: bool = False) -> CheckReport:
        """Verify every file of an on-disk store and say what is damaged; optionally rebuild its index.

        Every index line's seal, every snapshot's digest and tensors, and the manifest are checked.
        Nothing is changed unless asked. A store that a writer is appending to can be checked: the
        report covers it as indexed when the check began (what the writer appends meanwhile is no damage).

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
            FileNotFoundError: If ``path`` does not exist.
            TrajectoryError: If ``path`` is a file or not a trajectory, or ``repair`` cannot take the writer lock.
        """
        return check_store(cls, path, repair=repair, migrate=migrate)
