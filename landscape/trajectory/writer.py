"""The writer of an on-disk trajectory store: group commit in a background thread, and what each call guarantees.

The first append of a ``durable="flush"`` or ``False`` store starts a writer thread. The appending
thread queues each snapshot (a private copy of its tensors, its record, its pack). A batch of them is framed
(record JSON, safetensors header: :func:`landscape.trajectory.fileformat.snapshot_frame`), placed in the pack
with their digests computed, every snapshot of a pack written with one ``writev`` and their index lines with
one ``write``. The appending thread writes a full batch (``PackWriter.BATCH`` snapshots) itself, at the append
that fills it: framing 64 snapshots at once is cheap, while a second thread framing them during the training
steps cost more than the work itself (its wake-ups, the GIL and the caches it shares with the training
thread). The writer thread writes what the appending thread left queued for ``PackWriter.LINGER`` (an idle
or slow appender), the syncs that ``flush`` and ``close`` ask for, and the write-behind syncs below
(``durable="append"`` writes in the appending thread, one snapshot at a time). A lock orders the batches of
the two threads. What a completed call guarantees:

* ``append``, ``durable="append"`` (``True``, the default): the snapshot is written and its pack
  ``fdatasync``-ed: it survives the death of the process (SIGKILL included) and an operating-system crash
  or power loss. That costs one ``fdatasync`` per append (done by the appending thread, which has to wait
  for it anyway). Small snapshots are written into a zero-filled reserve at the end of the pack
  (``PackWriter.RESERVE`` bytes, extended as it fills, cut off at close; none once the disk has no room
  for it): an overwrite leaves the file's
  size alone, so its ``fdatasync`` has no metadata to commit (10 KB: 90-140 us against 190-330 us for a
  growing file on this project's disk). A crash leaves the rest of the reserve, zeros, after the last
  snapshot; recovery removes it like any other incomplete tail.
* ``append``, ``durable="flush"`` or ``False``: the snapshot is copied (later changes to the caller's
  tensors or model do not reach it) and queued. It reaches the operating system within
  ``PackWriter.LINGER`` (0.05 s; the writer thread), sooner once ``PackWriter.BATCH`` (64) snapshots or 4 MB
  are queued (the append that fills the batch writes it before it returns); ``append`` waits while 256
  snapshots or 64 MB are queued. A killed process loses at most the snapshots
  still queued, never one that a returned ``flush`` covered. With ``durable="flush"`` the writer thread also
  syncs the pack and the index whenever ``PackWriter.SYNC_AHEAD`` (1 MiB) of them are unsynced (write-behind,
  never in the appending thread):
  nothing is promised by it, but ``flush`` and ``close`` then have at most that much left to sync.
* ``flush`` (every mode): every snapshot appended before is written and synced, with the index and the
  directories: it survives anything short of damage to the disk.
* ``close``: as ``flush`` (with ``durable=False``: written, not synced); the writer thread ends. An
  unclosed store writes its queue (without syncing) when it is garbage collected or the interpreter exits.

If the writer fails (disk full, I/O error), it truncates what it wrote of the failed batch, writes
nothing more, and the next ``append``, ``flush`` or ``close`` raises :class:`TrajectoryError` naming the
cause and the first snapshot not written; everything written before is intact. A store opened for
appending cannot append from a forked child (its writer thread exists only in the parent).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import hashlib
import os
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from landscape.trajectory.fileformat import (
    SNAPDIR,
    Spec,
    TrajectoryError,
    index_line,
    record_json_fast,
    snapshot_frame,
)
from landscape.trajectory.files import fsync_path, write_all, write_all_at

__all__: list[str] = []


class WriteItem:
    """One queued snapshot (or, with ``rec`` None, a sync request) for the writer thread.

    The snapshot is queued unframed: its record (without ``off``, ``size`` and ``digest``), its segment's JSON
    for the first snapshot of a pack, and its private tensors. The writer frames it, places it in the pack and
    fills those three in (in a batch, away from the training step whose caches framing in the appending thread
    evicted); ``size`` counts the tensor bytes, for the queue's limits.
    """

    __slots__ = ("seq", "i", "new_pack", "rec", "seg", "keep", "sync", "size", "spec", "parts")

    def __init__(
        self,
        *,
        i: int = -1,
        new_pack: str | None = None,
        rec: dict[str, Any] | None = None,
        seg: str = "",
        keep: Mapping[str, Any] | None = None,
        size: int = 0,
        sync: bool = False,
        spec: Spec | None = None,
        parts: list[memoryview] | None = None,
    ) -> None:
        self.seq, self.i, self.new_pack, self.rec, self.seg, self.sync = 0, i, new_pack, rec, seg, sync
        self.keep: Mapping[str, Any] = keep or {}
        self.size = size
        self.spec, self.parts = spec, parts  # the frame's table and tensor bytes, when the appender knows them


class PackWriter:
    """The writer of an on-disk store (group commit).

    It owns the pack and index descriptors. The appending thread queues each snapshot with its record, its
    pack and a private copy of its tensors. A batch of queued snapshots is then framed, placed (each record's
    ``off`` and ``size``) and written at once: their digests computed, every snapshot of a pack written with
    one ``writev``, their index lines with one ``write``, and synced when asked (every batch of a
    ``durable="append"`` store, or a :meth:`sync` request from ``flush`` / ``close``). The appending thread
    writes a batch when BATCH snapshots or BATCH_BYTES are queued (or at once with ``durable="append"``, which
    waits for its sync anyway). With ``threaded`` a daemon thread writes what waited LINGER seconds, the sync
    requests and the write-behind syncs (with INLINE_BATCHES False, every batch: for A/B timings).

    It holds no reference to its :class:`Trajectory`, so an unclosed store is still garbage collected
    (its ``__del__`` writes the queue). After a failure it writes nothing more: the failed batch's
    partial bytes are truncated away (earlier snapshots stay intact) and :attr:`error` is raised to the
    appending thread at its next ``append``, ``flush`` or ``close``.
    """

    #: Snapshots the queue may hold; ``append`` waits beyond that (bounds memory and what a kill loses).
    MAX_QUEUE, MAX_BYTES = 256, 64 * 2**20
    #: The thread wakes for this many queued snapshots or bytes, for a sync, or after LINGER seconds.
    BATCH, BATCH_BYTES, LINGER = 64, 4 * 2**20, 0.05
    #: ``durable="append"``: snapshots of at most RESERVE_MAX bytes go into a zero-filled reserve of RESERVE bytes.
    RESERVE, RESERVE_MAX = 2**20, 2**18
    #: ``durable="flush"`` with a thread: sync once this many bytes are unsynced, so that flush has little left to do.
    SYNC_AHEAD = 2**20
    #: Write in a thread (True) or in the appending thread once BATCH snapshots are queued (False).
    #: ``durable="append"`` always writes in the appending thread: it waits for every sync anyway.
    THREADED = True
    #: With a thread: the appending thread writes a full batch itself, the thread only what waited LINGER, the syncs
    #: and the write-behind (see the module docs). False: the thread writes every batch (for A/B timings).
    INLINE_BATCHES = True

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
        self.unsynced_bytes = 0  # written to the current pack and the index since their last sync
        self.pack_end = self.pack_reserved = 0  # the pack's written bytes and its size with the reserve
        self.reserve = durable == "append"  # write small snapshots into a zero reserve (until the disk is full)
        self.cond = threading.Condition(threading.Lock())
        self.queue: collections.deque[WriteItem] = collections.deque()
        self.seq = 0  # items queued so far
        self.bytes = 0  # bytes of the snapshots queued
        self.urgent = False  # someone waits for the queue: write it now
        self.done = 0  # items processed (written, and synced where asked)
        self.written = 0  # snapshots written to the OS (pack bytes and index line)
        self.error: BaseException | None = None
        self.failed_at = -1  # first snapshot the failed batch held
        self.next_i = first_index  # the snapshot after the last one written
        self.stopping = False
        self.forked = False  # set in a forked child (see _after_fork): no os.getpid() call per append
        self.thread: threading.Thread | None = None
        # Write-behind syncs only where they cost the appending thread nothing: in the writer thread.
        self.write_behind = threaded and durable == "flush"
        self.behind = False  # a write-behind sync is due (the appending thread asks the writer thread for it)
        self.inline = threaded and self.INLINE_BATCHES  # the appending thread writes full batches itself
        self.first_at = 0.0  # time.monotonic() when the oldest queued item was queued
        # Held while a batch is taken from the queue and written (by either thread): batches reach the pack in order.
        # Taken before ``cond``, never the other way round.
        self.wlock = threading.Lock()
        if threaded:
            self.thread = threading.Thread(target=self._run, name="landscape-trajectory-writer", daemon=True)
            self.thread.start()
        WRITERS.add(self)

    # ---------------------------------------------------------- appending thread
    def put(self, item: WriteItem) -> int:
        """Queue an item (waits while the queue is full); returns its sequence number."""
        now = False  # a full batch that this (the appending) thread writes itself
        with self.cond:
            self.raise_error()
            while self.queue and (len(self.queue) >= self.MAX_QUEUE or self.bytes >= self.MAX_BYTES) and not self.error:
                if self.thread is None:
                    self._process()
                    break
                self.urgent = True  # (the writer thread would otherwise wait for LINGER)
                self.cond.notify_all()
                self.cond.wait()
            self.raise_error()
            self.seq += 1
            item.seq = self.seq
            if not self.queue:
                self.first_at = time.monotonic()
            self.queue.append(item)
            self.bytes += item.size
            if item.sync or len(self.queue) >= self.BATCH or self.bytes >= self.BATCH_BYTES:
                if self.thread is None:
                    self._process()
                elif self.inline and not item.sync:
                    now = True
                else:
                    self.cond.notify_all()
        if now:
            with self.wlock:
                self._write_batch()
        return item.seq

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
            self.raise_error()

    def sync(self) -> None:
        """Write everything queued and fsync the pack, the directories and the index."""
        self.wait(self.put(WriteItem(sync=True)))

    def stop(self) -> None:
        """Write everything queued (no sync), end the thread and close its descriptors; never raises."""
        if not self.forked:  # (in a forked child the thread does not exist and the lock may be held)
            with self.cond:
                self.stopping = True
                self.cond.notify_all()
                if self.thread is None and self.queue:
                    self._process()
            if self.thread is not None and self.thread is not threading.current_thread():
                self.thread.join()
        WRITERS.discard(self)
        if not self.forked:  # a forked child's copy must not cut the parent's pack under its later appends
            with contextlib.suppress(OSError):
                self._cut_reserve()
        for name in ("pack_fd", "index_fd", "dir_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def raise_error(self) -> None:
        if self.forked:
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

    def _wait_for_work(self) -> None:
        """Writer thread, ``cond`` held: wait for a sync request, ``urgent``, a write-behind, stop, or LINGER.

        Without :attr:`inline` also for a full batch. A queued item is written at most LINGER after it was queued.
        """
        while True:
            q = self.queue
            if self.stopping or self.urgent or self.behind or any(it.sync for it in q):
                return
            if q and not self.inline and (len(q) >= self.BATCH or self.bytes >= self.BATCH_BYTES):
                return
            left = self.first_at + self.LINGER - time.monotonic() if q else self.LINGER
            if left <= 0:
                return
            self.cond.wait(left)

    def _write_batch(self) -> list[WriteItem]:
        """Take the queue and write it (``wlock`` held, ``cond`` not); returns the batch."""
        with self.cond:
            batch = list(self.queue)
            self.queue.clear()
            self.bytes, self.urgent = 0, False
            if batch:
                self.cond.notify_all()  # room in the queue again
        if not batch:
            return batch
        if self.error is None:
            try:
                self._write(batch)
            except BaseException as e:  # noqa: BLE001 - reported to the appending thread
                self.error = e
        with self.cond:
            self.done = batch[-1].seq
            self.cond.notify_all()
        return batch

    def _sync_behind(self) -> None:
        """Writer thread, ``wlock`` held: the write-behind sync the appending thread asked for (see the module docs)."""
        if self.error is None and self.pack_fd is not None and self.index_fd is not None and self.unsynced_bytes:
            try:
                os.fdatasync(self.pack_fd)
                os.fdatasync(self.index_fd)
                self.unsynced, self.unsynced_bytes = False, 0
            except BaseException as e:  # noqa: BLE001 - reported to the appending thread
                self.failed_at, self.error = self.next_i, e

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
                if not self.stopping:
                    self._wait_for_work()
                behind, self.behind = self.behind, False
            with self.wlock:
                batch = self._write_batch()
                with self.cond:
                    if not batch and not self.queue and self.stopping:
                        return
                if not batch and behind:
                    self._sync_behind()
            if self.error is not None:
                with self.cond:  # nothing more is written; wake every waiter until stop()
                    while not self.stopping:
                        self.queue.clear()
                        self.cond.notify_all()
                        self.cond.wait()
                return

    def _write(self, batch: list[WriteItem]) -> None:
        assert self.index_fd is not None
        lines: list[bytes] = []
        chunk: list[Any] = []  # bytes for the current pack
        sync = any(it.rec is None for it in batch)  # a flush / close: sync everything
        need = False  # a snapshot of a durable="append" store: sync before its appender returns
        first = next((it.i for it in batch if it.rec is not None), None)
        pack_start = None  # (fd, offset) where this batch began writing to the current pack
        index_start = self.index_size
        try:
            off = self.pack_end  # where the next snapshot goes in the current pack
            for it in batch:
                if it.rec is None:
                    continue
                if it.new_pack:
                    self._writev(chunk)
                    chunk = []
                    self._new_pack(it.new_pack)
                    off = 0
                    pack_start = (self.pack_fd, 0)
                elif pack_start is None:
                    pack_start = (self.pack_fd, off)
                rj = record_json_fast(it.rec)
                pre, head, tail, parts, size = snapshot_frame(rj, it.seg, it.keep, it.spec, it.parts)
                h = hashlib.sha256(pre)
                for part in parts:
                    h.update(part)  # releases the GIL for large parts
                digest = h.hexdigest()
                it.rec.update(off=off, size=size, digest=digest)
                off += size
                chunk += [head, digest.encode(), tail, *parts]
                lines.append(index_line(rj, it.rec))
                need = need or self.durable == "append"
            self._writev(chunk)
            if need or (sync and self.unsynced):
                assert self.pack_fd is not None  # _writev wrote to it
                os.fdatasync(self.pack_fd)
                self.unsynced = False
            if lines:
                data = b"".join(lines)
                write_all(self.index_fd, data)  # the index is a cache of the packs: synced by flush
                self.index_size += len(data)
                self.unsynced_bytes += len(data)
            if sync:
                if self.dir_fd is not None:
                    os.fsync(self.dir_fd)
                os.fsync(self.index_fd)
                fsync_path(self.root)  # the entries of the index, the manifest and the pack directory
                self.unsynced_bytes = 0
            elif self.write_behind and self.unsynced_bytes >= self.SYNC_AHEAD and self.pack_fd is not None:
                if threading.current_thread() is self.thread:
                    os.fdatasync(self.pack_fd)  # what a later flush would otherwise wait for (see the module docs)
                    os.fdatasync(self.index_fd)
                    self.unsynced, self.unsynced_bytes = False, 0
                else:  # the appending thread wrote this batch: the writer thread syncs behind it
                    with self.cond:
                        self.behind = True
                        self.cond.notify_all()
            self.written += len(lines)
            self.next_i += len(lines)  # snapshots are queued in order
        except BaseException:
            # e.g. disk full mid-write: leave no partial snapshot or torn line before the next writer's
            self.failed_at = first if first is not None else self.next_i
            if pack_start is not None and pack_start[0] is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(pack_start[0], pack_start[1])
                    if pack_start[0] == self.pack_fd:  # (no O_APPEND: the offset goes back by hand)
                        os.lseek(self.pack_fd, pack_start[1], os.SEEK_SET)
                        self.pack_end = self.pack_reserved = pack_start[1]
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
            n = os.writev(self.pack_fd, part)  # at the descriptor's offset, kept at pack_end
            if n < total:  # a short write (signal, disk nearly full): write the rest plainly
                write_all(self.pack_fd, b"".join(bytes(b) for b in part)[n:])
            end = self.pack_end = self.pack_end + total
            self.unsynced_bytes += total
            if self.reserve and total <= self.RESERVE_MAX and end > self.pack_reserved:
                self._extend_reserve(end)
            self.pack_reserved = max(self.pack_reserved, end)

    def _extend_reserve(self, end: int) -> None:
        """Zeros after the data, synced with it: later small appends overwrite them (see the module docs).

        Only a speed-up: a disk too full for them (or a file size limit) keeps the snapshot just written and
        writes this store's later snapshots without a reserve.
        """
        assert self.pack_fd is not None
        try:
            write_all_at(self.pack_fd, bytes(self.RESERVE), end)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            os.ftruncate(self.pack_fd, end)  # the zeros that fitted
            self.reserve = False
            return
        self.pack_reserved = end + self.RESERVE

    def _cut_reserve(self) -> None:
        """Cut the current pack's unused reserve (at close or a new pack; a crash leaves it to recovery).

        The cut is synced: zeros that came back after a power failure would end a pack that is no longer the last.
        """
        if self.pack_fd is not None and self.pack_reserved > self.pack_end:
            os.ftruncate(self.pack_fd, self.pack_end)
            self.pack_reserved = self.pack_end
            os.fdatasync(self.pack_fd)

    def _new_pack(self, name: str) -> None:
        if self.pack_fd is not None:
            self._cut_reserve()
            if self.unsynced and self.durable != "append":
                os.fdatasync(self.pack_fd)  # flush() only syncs the current pack (rare: once per pack)
            os.close(self.pack_fd)
            self.pack_fd = None
        if self.dir_fd is None:
            (self.root / SNAPDIR).mkdir(exist_ok=True)
            if self.durable:
                fsync_path(self.root)
            self.dir_fd = os.open(self.root / SNAPDIR, os.O_RDONLY)
        self.pack_fd = os.open(self.root / SNAPDIR / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.pack_name, self.pack_end, self.pack_reserved = name, 0, 0
        if self.durable == "append":
            os.fsync(self.dir_fd)  # the new pack's directory entry
        self.unsynced = True


WRITERS: weakref.WeakSet[PackWriter] = weakref.WeakSet()


def _after_fork() -> None:
    # A forked child has no writer threads; its copies of the parent's writers must not be used.
    for w in list(WRITERS):
        w.forked = True


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_after_fork)


@atexit.register
def drain_writers() -> None:
    # An unclosed store's queued snapshots still reach the OS at interpreter exit (not synced: close() syncs).
    for w in list(WRITERS):
        w.stop()
