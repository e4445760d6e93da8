"""The index of an on-disk trajectory store as a reader holds it: loading, following a live writer, crash recovery.

:class:`StoreIndex` is the part of :class:`~landscape.trajectory.store.Trajectory` that turns the
manifest, the index lines and the tail of the packs into records and segments. Recovery (mode ``"a"``)
follows the crash contract of :mod:`landscape.trajectory.store`: it rolls complete snapshots that the
index lacks forward from their packs and removes only one incomplete tail (a torn last index line, a
partial last snapshot); anything else that does not verify is damage, and nothing is changed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from landscape.params import ParamLayout
from landscape.trajectory.fileformat import (
    INDEX,
    MANIFEST,
    SNAPDIR,
    CorruptTrajectoryError,
    all_zeros,
    index_line,
    manifest_bytes,
    opens_segment,
    parse_index_line,
    read_manifest,
    record_json,
    scan_tail,
)
from landscape.trajectory.files import fsync_path, write_atomic

__all__: list[str] = []


class StoreIndex:
    """Records and segments of a store, read from its index and packs (the base of ``Trajectory``)."""

    path: Path | None
    _version: int
    _durable: bool | str
    _meta: dict[str, Any]
    _pending: ParamLayout | None  # layout for the next append when it starts the first segment
    _records: list[dict[str, Any]]  # one parsed index line per snapshot
    _n_indexed: int  # records read from the index; later ones were rolled forward from packs
    _segs: list[tuple[ParamLayout, tuple[str, ...]]]  # (layout, buffer names) per segment
    _seg_start: list[int]
    _manifest_segs: list[tuple[ParamLayout, tuple[str, ...]]]  # as last read from disk
    _manifest_seen: bytes | None  # the manifest's bytes when _reread_manifest last parsed it
    _offset: int  # bytes of the index already parsed
    dropped: list[str]  # what crash recovery removed (a torn index line, a partial snapshot)
    recovered: list[int]  # snapshots recovery indexed from their packs

    # ------------------------------------------------------------- manifest
    def _write_manifest(self) -> None:
        assert self.path is not None
        segs = self._segs if self._segs or self._pending is None else [(self._pending, ())]
        write_atomic(self.path / MANIFEST, manifest_bytes(self._meta, segs), durable=bool(self._durable))

    def _read_manifest(self) -> None:
        assert self.path is not None
        m = read_manifest(self.path)
        self._version, self._meta, self._manifest_segs = m.version, m.meta, m.segments
        self._segs = m.segments[: len(self._seg_start)]

    def _reread_manifest(self) -> None:
        """Read the manifest again if its bytes changed since the last call (parsing a large layout is not free)."""
        assert self.path is not None
        try:
            data: bytes | None = (self.path / MANIFEST).read_bytes()
        except OSError:
            data = None  # missing or unreadable: _read_manifest says so
        if data is None or data != self._manifest_seen:
            self._manifest_seen = data  # (replaced again meanwhile: the next call reads it once more)
            self._read_manifest()

    # ---------------------------------------------------------------- index
    def _add(self, rec: dict[str, Any], where: str) -> None:
        """Append a parsed record, opening its segment if it starts one."""
        n, seg = len(self._records), rec["seg"]
        if seg == len(self._seg_start) and seg >= len(self._manifest_segs):
            self._read_manifest()  # a live writer started a segment since we read it
        if opens_segment(seg, n, len(self._seg_start), len(self._manifest_segs), where):
            self._seg_start.append(n)
            self._segs.append(self._manifest_segs[seg])
        self._records.append(rec)

    def _load_index(self) -> int:
        """Parse complete index lines after ``self._offset``; return the byte length of a torn tail."""
        assert self.path is not None
        try:
            with open(self.path / INDEX, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        for line in data[:end].split(b"\n")[:-1]:
            n = len(self._records)
            where = f"{self.path / INDEX}: line {n + 1}"
            self._add(parse_index_line(line, n, self._version, where), where)
        self._offset += end
        self._n_indexed = len(self._records)
        return len(data) - end

    def _drop_provisional(self) -> None:
        del self._records[self._n_indexed :]
        while self._seg_start and self._seg_start[-1] >= len(self._records):
            self._seg_start.pop()
            self._segs.pop()

    def _scan_tail(self) -> tuple[list[dict[str, Any]], tuple[str, int] | None, str | None]:
        """:func:`~landscape.trajectory.fileformat.scan_tail` after the last indexed snapshot."""
        assert self.path is not None
        if self._version == 1:
            return [], None, None
        return scan_tail(self.path / SNAPDIR, len(self._records), self._records[-1] if self._records else None)

    def _roll_forward(self, write: bool) -> None:
        """Take complete snapshots that the index lacks from the packs (a crash between pack and index)."""
        assert self.path is not None  # only disk stores have packs
        recs, incomplete, damage = self._scan_tail()
        if damage and write:
            raise CorruptTrajectoryError(
                f"{damage}; nothing was changed: run python -m landscape check {self.path} to see the damage"
            )
        if recs and not (self.path / INDEX).exists() and not self._n_indexed:
            raise CorruptTrajectoryError(
                f"{self.path / INDEX} is missing but the packs hold {len(recs)} snapshots; nothing was changed: "
                f"rebuild it with python -m landscape check {self.path} --repair"
            )
        for rec in recs:
            self._add(rec, str(self.path / SNAPDIR / rec["file"]))
        if not write:
            return
        if recs:
            with open(self.path / INDEX, "ab") as fh:
                for rec in recs:
                    fh.write(index_line(record_json(rec), rec))
                fh.flush()
                if self._durable:
                    os.fsync(fh.fileno())
            self._offset += sum(len(index_line(record_json(r), r)) for r in recs)
            self._n_indexed = len(self._records)
            self.recovered += [r["i"] for r in recs]
        if incomplete:
            name, pos = incomplete
            f = self.path / SNAPDIR / name
            with open(f, "rb") as fh:
                fh.seek(pos)
                rest = fh.read()
            if pos:
                os.truncate(f, pos)
            else:
                os.unlink(f)
            if self._durable:  # before a new pack can follow this one (a lost cut would end it in damage)
                fsync_path(f if pos else f.parent)
            what = "the unused zero-filled reserve" if all_zeros(rest) else f"partial snapshot {len(self._records)}"
            self.dropped.append(f"{what} ({len(rest)} bytes at the end of {f})")

    def _recover(self) -> None:
        """Open-for-append recovery: drop a torn index line and a partial last snapshot, index complete ones."""
        assert self.path is not None
        torn = self._load_index()
        recs, _, damage = self._scan_tail()  # decide before changing anything
        if not damage:
            if torn:
                os.truncate(self.path / INDEX, self._offset)
                self.dropped.append(f"torn index line for snapshot {len(self._records)} ({torn} bytes)")
        self._roll_forward(write=True)
        if (self.path / f"{MANIFEST}.tmp").exists():
            os.unlink(self.path / f"{MANIFEST}.tmp")
        if self._records and len(self._manifest_segs) > len(self._segs):
            self._manifest_segs = list(self._segs)  # a segment whose first snapshot never completed
            self._write_manifest()
        if self.dropped or self.recovered:
            what = "; ".join(self.dropped + ([f"indexed snapshots {self.recovered} from their packs"] * bool(recs)))
            warnings.warn(f"recovered {self.path} after a crash: {what}", stacklevel=5)
