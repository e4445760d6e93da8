"""Trajectory store: an append-only, crash-safe sequence of parameter snapshots.

A snapshot is a flat parameter vector (see :mod:`landscape.params`) with the model's buffers
(BatchNorm running statistics) beside it, plus step, epoch, wall time, metrics and JSON tags. Runs
of consecutive snapshots that share one :class:`~landscape.params.ParamLayout` form a *segment*; a
tunnel event that grows or shrinks the network starts a new one.

A trajectory lives in memory (``Trajectory()``) or in a directory; both behave the same::

    <dir>/manifest.json                  format name and version, run metadata, per-segment layouts
    <dir>/index.jsonl                    one JSON line per completed snapshot (append-only)
    <dir>/snapshots/00000012.safetensors vector and buffers of snapshot 12

Nothing is ever unpickled: tensors are safetensors, everything else JSON. Writing snapshot ``i``
goes (1) new segment only: manifest to a temporary file, fsync, ``os.replace``; (2) the tensors to
``00000012.safetensors.tmp``, fsync, ``os.replace``; (3) one line with the file's size and sha256
appended to the index, fsync. A snapshot exists once its index line ends in a newline, so a writer
killed at any moment leaves every earlier snapshot intact; opening in ``"a"`` mode drops the torn
line and orphaned files. Appending is O(1): the manifest is rewritten only when a segment starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.params import ParamLayout, TensorSpec, buffers_dict, parameters_to_vector

try:  # advisory single-writer lock; released by the OS when the writer dies (also on SIGKILL)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Segment",
    "Snapshot",
    "Trajectory",
    "TrajectoryError",
    "CorruptTrajectoryError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "landscape-trajectory"
FORMAT_VERSION = 1
_MANIFEST, _INDEX, _SNAPDIR, _LOCK = "manifest.json", "index.jsonl", "snapshots", ".lock"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
_BUF = "buffers/"


class TrajectoryError(ValueError):
    """A trajectory cannot be opened, read or appended to as asked."""


class CorruptTrajectoryError(TrajectoryError):
    """A file of an on-disk trajectory is missing, truncated, corrupted or not what it should be."""


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


def _flat_layout(numel: int) -> ParamLayout:
    # Default for a bare vector (e.g. a point on a 2-D toy function): one tensor named "vector".
    return ParamLayout([TensorSpec("vector", (numel,), 0, numel, "", None, "")])


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


class Trajectory:
    """Append-only sequence of parameter snapshots, in memory or in a crash-safe directory.

    Args:
        path: Directory of the store; ``None`` keeps it in memory. An existing store is opened for
            appending (after crash recovery), a missing or empty directory becomes a new store.
        layout: Layout of the vectors to come (default for :meth:`append`). Without one, the first
            :meth:`append` takes a single flat tensor named ``"vector"``.
        meta: Run-level JSON metadata (model name, data, seed, ...); merged into an existing store's.
        durable: fsync every file (survives power loss). Without it a killed process still loses
            nothing that was completed; only an operating-system crash could.
        verify: Check every snapshot file's sha256 on read.

    Raises:
        TrajectoryError: If ``path`` holds something that is not a trajectory, a newer format, or a
            store whose last layout differs from ``layout``.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> traj = Trajectory()
        >>> traj.append_model(net, step=0, metrics={"loss": 1.0})
        0
        >>> traj[0].vector.shape, traj.metric("loss")
        (torch.Size([8]), array([1.]))
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        layout: ParamLayout | None = None,
        meta: Mapping[str, Any] | None = None,
        durable: bool = True,
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
        durable: bool = True,
    ) -> Trajectory:
        """Create a new on-disk store (missing or empty directory), open for appending.

        Args:
            path: Directory to create.
            layout: Layout of the vectors to come.
            meta: Run-level JSON metadata.
            exist_ok: Open an existing trajectory at ``path`` for appending instead of failing.
            durable: fsync every file (see the class docstring).

        Raises:
            FileExistsError: If ``path`` holds a trajectory and ``exist_ok`` is false.
            TrajectoryError: If ``path`` is a non-empty directory that is not a trajectory.
        """
        self = cls.__new__(cls)
        self._setup(path, "a", "auto" if exist_ok else "new", layout, meta, durable, True)
        return self

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], mode: str = "r", *, verify: bool = True, durable: bool = True
    ) -> Trajectory:
        """Open an existing on-disk store.

        Args:
            path: Directory of the store.
            mode: ``"r"`` to read (a torn last snapshot is ignored; a live writer's new snapshots
                appear after :meth:`refresh`), ``"a"`` to append (drops a half-written snapshot left
                by a crash, then takes the single-writer lock).
            verify: Check every snapshot file's sha256 on read.
            durable: fsync every file written (mode ``"a"``; see the class docstring).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            TrajectoryError: If ``path`` is not a trajectory, has a newer format version, or is
                being appended to by another writer (mode ``"a"``).
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
        durable: bool,
        verify: bool,
    ) -> None:
        if layout is not None and not isinstance(layout, ParamLayout):
            raise TypeError(f"layout must be a ParamLayout, got {type(layout).__name__}")
        self.path = None if path is None else Path(path)
        self._mode, self._durable, self._verify, self._closed = mode, durable, verify, False
        self._records: list[dict[str, Any]] = []  # one parsed index line per snapshot
        self._segs: list[tuple[ParamLayout, tuple[str, ...]]] = []  # (layout, buffer names) per segment
        self._seg_start: list[int] = []
        self._pending = layout  # layout for the next append when it starts the first segment
        self._meta: dict[str, Any] = {}
        self._mem: list[dict[str, Tensor]] = []
        self._index_fd = self._dir_fd = self._lock_fd = None
        self._offset = 0  # bytes of the index already parsed
        self._manifest_segs: list[tuple[ParamLayout, tuple[str, ...]]] = []  # as last read from disk
        self.dropped: list[str] = []  # what crash recovery removed (half-written snapshots, stray files)
        if self.path is None:
            self._meta = _jsonify(meta, "meta")
            return
        try:
            self._open_dir(self.path, mode, create, layout, meta)
        except BaseException:
            self.close()  # release the lock of a store that failed to open
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
            if mode == "a":
                self._lock()
                self._recover()
            else:
                self._load_index()
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
        assert self.path is not None
        self._lock_fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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
        data = json.dumps(self._manifest(), indent=1).encode()
        _write_atomic(self.path / _MANIFEST, data, self._durable, None)
        if self._durable:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _read_manifest(self) -> None:
        assert self.path is not None
        f = self.path / _MANIFEST
        if not f.is_file():
            raise TrajectoryError(f"{self.path} is not a trajectory: it has no {_MANIFEST}")
        try:
            m = json.loads(f.read_bytes())
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptTrajectoryError(f"{f} is not valid JSON ({e})") from e
        if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
            raise TrajectoryError(f"{f} is not a trajectory manifest (no format {FORMAT_NAME!r})")
        version = m.get("version")
        if not isinstance(version, int):
            raise CorruptTrajectoryError(f"{f} has no integer format version")
        if version > FORMAT_VERSION:
            raise TrajectoryError(
                f"{self.path} was written in trajectory format version {version}, newer than the "
                f"{FORMAT_VERSION} this package reads; upgrade landscape"
            )
        try:
            self._meta = dict(m["meta"])
            segs = [(ParamLayout.from_dict(s["layout"]), tuple(s["buffer_names"])) for s in m["segments"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptTrajectoryError(f"{f} has a malformed segment table or metadata ({e})") from e
        self._manifest_segs = segs
        self._segs = segs[: len(self._seg_start)]

    # ---------------------------------------------------------------- index
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
        for line in data[:end].splitlines():
            n = len(self._records)
            try:
                rec = json.loads(line)
                ok = rec["i"] == n and isinstance(rec["seg"], int) and rec["dtype"] in _DTYPES
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise CorruptTrajectoryError(f"{self.path / _INDEX}: line {n + 1} is corrupted: {line[:200]!r}")
            seg = rec["seg"]
            if seg == len(self._seg_start):
                if seg >= len(self._manifest_segs):
                    self._read_manifest()  # a live writer started a segment since we read it
                if seg >= len(self._manifest_segs):
                    raise CorruptTrajectoryError(f"{self.path / _INDEX}: line {n + 1} names unknown segment {seg}")
                self._seg_start.append(n)
                self._segs.append(self._manifest_segs[seg])
            elif seg != len(self._seg_start) - 1:
                raise CorruptTrajectoryError(f"{self.path / _INDEX}: line {n + 1} jumps to segment {seg}")
            self._records.append(rec)
        self._offset += end
        return len(data) - end

    def _recover(self) -> None:
        """Open-for-append recovery: drop a torn index line, stray files and unused manifest segments."""
        assert self.path is not None
        torn = self._load_index()
        if torn:
            os.truncate(self.path / _INDEX, self._offset)
            self.dropped.append(f"torn index line for snapshot {len(self._records)} ({torn} bytes)")
        snapdir = self.path / _SNAPDIR
        if snapdir.is_dir():
            for name in sorted(os.listdir(snapdir)):
                stem = name.split(".", 1)[0]
                if name.endswith(".tmp") or (stem.isdigit() and int(stem) >= len(self._records)):
                    os.unlink(snapdir / name)
                    self.dropped.append(f"half-written snapshot file {snapdir / name}")
        if (self.path / f"{_MANIFEST}.tmp").exists():
            os.unlink(self.path / f"{_MANIFEST}.tmp")
        if self._records and len(self._manifest_segs) > len(self._segs):
            self._manifest_segs = list(self._segs)  # a segment whose first snapshot never completed
            self._write_manifest()
        if self.dropped:
            warnings.warn(f"recovered {self.path} after a crash: dropped {'; '.join(self.dropped)}", stacklevel=5)

    def refresh(self) -> int:
        """Pick up snapshots another process appended since this store was opened (mode ``"r"``).

        Returns:
            The number of new snapshots.
        """
        if self.path is None or self._mode == "a":
            return 0
        n = len(self._records)
        self._load_index()
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
        """Append one snapshot; it is complete (and crash-safe) when this returns.

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
            bufs[k] = v.detach().to("cpu", copy=True).contiguous()
        names = tuple(bufs)
        cur = self._segs[-1] if self._segs else None
        if layout is None:
            layout = cur[0] if cur else self._pending or _flat_layout(vector.numel())
        elif not isinstance(layout, ParamLayout):
            raise TypeError(f"layout must be a ParamLayout, got {type(layout).__name__}")
        start = new_segment or cur is None or layout.specs != cur[0].specs
        if not start and set(names) != set(cur[1]):
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
        tensors = {"vector": vector.detach().to("cpu", copy=True).contiguous()}
        tensors.update({_BUF + k: v for k, v in bufs.items()})
        if start:
            self._segs.append((layout, names))
            self._seg_start.append(i)
        try:
            if self.path is None:
                self._mem.append(tensors)
            else:
                self._write_snapshot(i, tensors, rec, start)
        except BaseException:
            if start:
                self._segs.pop()
                self._seg_start.pop()
            if self._index_fd is not None:  # e.g. disk full mid-line: never leave a torn line before the next one
                os.ftruncate(self._index_fd, self._offset)
            raise
        self._records.append(rec)
        return i

    def _write_snapshot(self, i: int, tensors: dict[str, Tensor], rec: dict[str, Any], start: bool) -> None:
        assert self.path is not None and self._index_fd is not None
        if start:
            self._manifest_segs = list(self._segs)
            self._write_manifest()
        if self._dir_fd is None:
            (self.path / _SNAPDIR).mkdir(exist_ok=True)
            self._dir_fd = os.open(self.path / _SNAPDIR, os.O_RDONLY)
        data = safetensors.torch.save(tensors, metadata={"format": FORMAT_NAME, "index": str(i)})
        rec["size"], rec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        _write_atomic(self._snap_path(i), data, self._durable, self._dir_fd)
        line = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
        view = memoryview(line)
        while view:  # one write in practice; a torn line has no newline and is dropped on recovery
            view = view[os.write(self._index_fd, view) :]
        if self._durable:
            os.fsync(self._index_fd)
        self._offset += len(line)

    def append_model(self, model: nn.Module, **kwargs: Any) -> int:
        """Append ``model``'s trainable parameters and buffers, with its layout; the model is only read.

        Args:
            model: The network (a grown or shrunk network starts a new segment).
            **kwargs: ``step``, ``epoch``, ``metrics``, ``tags``, ``wall_time``, ``new_segment`` as in :meth:`append`.

        Returns:
            The index of the new snapshot.
        """
        for k in ("layout", "buffers"):
            if k in kwargs:
                raise TypeError(f"append_model takes {k} from the model; use append() to pass it explicitly")
        layout = ParamLayout.from_model(model)
        if self._segs and layout.specs == self._segs[-1][0].specs:
            layout = self._segs[-1][0]
        return self.append(parameters_to_vector(model), buffers=buffers_dict(model), layout=layout, **kwargs)

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
        """Release the writer lock and file handles; reading stays possible, appending does not."""
        self._closed = True
        for name in ("_index_fd", "_dir_fd", "_lock_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __enter__(self) -> Trajectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --------------------------------------------------------------- reading
    def _snap_path(self, i: int) -> Path:
        assert self.path is not None
        return self.path / _SNAPDIR / f"{i:08d}.safetensors"

    def _tensors(self, i: int) -> dict[str, Tensor]:
        rec = self._records[i]
        if self.path is None:
            return {k: v.clone() for k, v in self._mem[i].items()}
        f = self._snap_path(i)
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            raise CorruptTrajectoryError(f"snapshot {i}: file {f} is missing") from None
        if len(data) != rec["size"]:
            what = "truncated" if len(data) < rec["size"] else "longer than recorded"
            raise CorruptTrajectoryError(
                f"snapshot {i}: file {f} is {what}: {len(data)} bytes, index says {rec['size']}"
            )
        if self._verify and hashlib.sha256(data).hexdigest() != rec["sha256"]:
            raise CorruptTrajectoryError(
                f"snapshot {i}: file {f} fails its checksum (sha256 mismatch): it is corrupted"
            )
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
        """Rebuild the model at snapshot ``i`` exactly: trainable parameters and stored buffers.

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
