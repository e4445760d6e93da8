"""Checking an on-disk trajectory store file by file, repairing its index or manifest, migrating version 1.

``python -m landscape check DIR [--repair | --migrate]`` and :meth:`Trajectory.check
<landscape.trajectory.store.Trajectory.check>` run :func:`check_store`. It verifies every index line's
seal, every snapshot's digest and tensors, and the manifest, and reports what is intact, what its pack
alone can restore, and what is lost. A repair rebuilds the index (and a damaged manifest's segment table)
from the packs, which describe themselves; it never deletes bytes (unused pack bytes and the old index
are moved aside).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape.trajectory.fileformat import (
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    SNAPDIR,
    CorruptTrajectoryError,
    SegmentTable,
    TrajectoryError,
    all_zeros,
    check_tensors,
    crash_tail,
    index_line,
    manifest_bytes,
    opens_segment,
    pack_names,
    parse_index_line,
    parse_segment,
    read_header,
    read_manifest,
    record_json,
    verify_blob,
)
from landscape.trajectory.files import acquire_lock, fsync_path, write_atomic

if TYPE_CHECKING:
    from landscape.trajectory.store import Trajectory

__all__ = ["CheckReport"]


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
            f"trajectory {self.path} (format version {self.version}): {self.snapshots} "
            f"snapshot{'s' * (self.snapshots != 1)}, "
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


def check_store(cls: type[Trajectory], path: str | os.PathLike[str], *, repair: bool, migrate: bool) -> CheckReport:
    """What :meth:`Trajectory.check <landscape.trajectory.store.Trajectory.check>` does (see there).

    Args:
        cls: The trajectory class (opens and rewrites version-1 stores).
        path: Directory of the store.
        repair: Rebuild the index (and a damaged manifest's segments) from the packs.
        migrate: Convert a version-1 store to the current format.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        TrajectoryError: If ``path`` is a file or not a trajectory, or ``repair`` cannot take the writer lock.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no trajectory at {p}: the directory does not exist")
    if not p.is_dir():
        raise TrajectoryError(f"{p} is a file, not a trajectory directory")
    rep = CheckReport(path=p)
    manifest_ok, segs = True, []
    try:
        manifest = read_manifest(p)
        rep.version, segs = manifest.version, manifest.segments
    except CorruptTrajectoryError as e:
        rep.problems.append((MANIFEST, str(e)))
        rep.unrecoverable.append(f"{MANIFEST}: run metadata and segment table (repair rebuilds the segments)")
        manifest_ok = False
    if rep.version == 1:
        return _check_v1(cls, p, rep, migrate)
    if migrate:
        rep.actions.append(f"nothing to migrate: {p} is already in format version {FORMAT_VERSION}")
    lock = None
    try:
        if repair:
            lock = acquire_lock(p)
            if lock is None:
                raise TrajectoryError(
                    f"{p} is open for appending by another writer, and a repair needs it alone: check it without "
                    "--repair (repair=False) now, or repair it once the writer has closed it"
                )
        again = _check_v2(p, segs, rep, manifest_ok, repair)
    finally:
        if lock is not None:
            os.close(lock)
    if again:  # the manifest was rebuilt: now check (and repair) the rest against it
        rest = check_store(cls, p, repair=True, migrate=False)
        rest.problems[:0], rest.actions[:0] = rep.problems, rep.actions
        rest.unrecoverable[:0] = rep.unrecoverable
        rest.repaired = True
        return rest
    return rep


def _check_v1(cls: type[Trajectory], p: Path, rep: CheckReport, migrate: bool) -> CheckReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = cls.open(p)
    for i in range(len(t)):
        try:
            t[i]  # reads and verifies the snapshot
            rep.intact.append(i)
        except CorruptTrajectoryError as e:
            rep.lost.append(i)
            rep.problems.append((f"{SNAPDIR}/{i:08d}.safetensors", str(e)))
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
    p = Path(os.path.abspath(p))  # "." or ".." (run from inside the store) has no name to put the backup beside
    tmp, backup = p.with_name(p.name + ".v2-migrating"), p.with_name(p.name + ".v1-backup")
    for q in (tmp, backup):
        if q.exists():
            raise TrajectoryError(f"cannot migrate {p}: {q} exists (left by an earlier migration?); move it away")
    t.save(tmp).close()
    os.rename(p, backup)
    os.rename(tmp, p)
    fsync_path(p.parent)
    rep.version = FORMAT_VERSION
    rep.actions.append(f"migrated {len(t)} snapshots to format version {FORMAT_VERSION}; the original is {backup}")
    return rep


def _check_v2(p: Path, segs: SegmentTable, rep: CheckReport, manifest_ok: bool, repair: bool) -> bool:
    """Fill ``rep``; with ``repair``, rebuild the index (or first the manifest: returns True, check again)."""
    snapdir = p / SNAPDIR
    idx: dict[int, dict[str, Any]] = {}
    index_data = b""
    if not (p / INDEX).exists():
        rep.problems.append((INDEX, "is missing"))
    else:
        index_data = (p / INDEX).read_bytes()
        lines = index_data.split(b"\n")
        if lines[-1]:
            rep.torn_tail.append(f"{INDEX}: torn last line without newline ({len(lines[-1])} bytes)")
        for k, line in enumerate(lines[:-1]):
            try:
                idx[k] = parse_index_line(line, k, FORMAT_VERSION, f"{p / INDEX}: line {k + 1}")
            except CorruptTrajectoryError as e:
                rep.problems.append((INDEX, str(e)))
    blobs: dict[int, dict[str, Any]] = {}
    ends: dict[str, int] = {}  # pack -> end of its last verified snapshot
    seg_info: dict[int, str] = {}  # segment -> its layout as the first snapshot of a pack states it
    packs = pack_names(snapdir)
    indexed = {(r["file"], r["off"]) for r in idx.values()}
    for name in packs:
        data = (snapdir / name).read_bytes()
        starts = sorted({0} | {r["off"] for r in idx.values() if r["file"] == name})
        at, view = 0, memoryview(data)
        while at < len(data):
            size, h = read_header(view[at:])
            if size < 0 and name == packs[-1] and not [s for s in starts if s > at]:
                rep.torn_tail.append(f"{SNAPDIR}/{name}: partial snapshot at byte {at} ({len(data) - at} bytes)")
                break
            what = None
            if size <= 0 or h is None:
                what = "is not a complete snapshot"
            else:
                blob = bytes(view[at : at + size])
                what = verify_blob(blob, h, None, None)
                if what is None:
                    rec = json.loads(h["__metadata__"]["record"])
                    rec.update(file=name, off=at, size=size, digest=h["__metadata__"]["digest"])
                    if manifest_ok and isinstance(rec.get("seg"), int) and rec["seg"] >= len(segs):
                        segs = _segments_now(p, segs)  # a live writer started a segment since it was read
                    what = check_tensors(blob, rec, segs if manifest_ok else None)
                    if what is None and rec["i"] in blobs:
                        what = f"repeats snapshot {rec['i']}"
                    if what is None:
                        blobs[rec["i"]] = rec
                        ends[name] = at + size
                        if "segment" in h["__metadata__"]:
                            seg_info.setdefault(rec["seg"], h["__metadata__"]["segment"])
                        at += size
                        continue
            last = name == packs[-1] and not [s for s in starts if s > at] and (name, at) not in indexed
            if last and crash_tail(data, at, size):
                what = "unused zero-filled reserve" if all_zeros(data[at:]) else "partial snapshot in the reserve"
                rep.torn_tail.append(f"{SNAPDIR}/{name}: {what} at byte {at} ({len(data) - at} bytes)")
                break
            rep.problems.append((f"{SNAPDIR}/{name}", f"byte {at}: snapshot {what}"))
            nxt = [s for s in starts if s > at]  # resynchronize at the next offset the index knows
            if not nxt:
                break
            at = nxt[0]
    for name in {r["file"] for r in idx.values()} - set(packs):
        rep.problems.append((f"{SNAPDIR}/{name}", "is missing"))
    if not repair:  # (repair holds the lock: no writer runs)
        _snapshots_appended_meanwhile(p, index_data, idx, blobs, rep)
    n = max([*idx, *blobs], default=-1) + 1
    rep.snapshots = n
    for i in range(n):
        r, b = idx.get(i), blobs.get(i)
        if b is None:
            rep.lost.append(i)
        elif (
            r is not None
            and all(r[k] == b[k] for k in ("file", "off", "size", "digest"))
            and record_json(r) == record_json(b)
        ):
            rep.intact.append(i)
        else:
            rep.recoverable.append(i)
    if rep.lost:
        rep.unrecoverable.append(f"snapshots {_ranges(rep.lost)}: their tensors are damaged or missing")
    if not repair or (rep.ok and not rep.torn_tail):
        return False
    if not manifest_ok:
        return _repair_manifest(p, rep, blobs, seg_info)
    keep = rep.lost[0] if rep.lost else n
    if any(i > keep for i in rep.intact + rep.recoverable):
        rep.unrecoverable.append(
            f"repair refused: snapshot {keep} is lost but later snapshots survive (an index cannot skip one)"
        )
        return False
    # Rebuild the index from the packs' own records, checking segment order as a reader would.
    started = 0
    try:
        for i in range(keep):
            where = f"{SNAPDIR}/{blobs[i]['file']}"
            started += opens_segment(blobs[i]["seg"], i, started, len(segs), where)
    except CorruptTrajectoryError as e:
        rep.unrecoverable.append(f"repair refused: {e}")
        return False
    new = b"".join(index_line(record_json(blobs[i]), blobs[i]) for i in range(keep))
    kept_end: dict[str, int] = {}
    for i in range(keep):
        kept_end[blobs[i]["file"]] = blobs[i]["off"] + blobs[i]["size"]
    for name in packs:  # bytes no kept snapshot uses are moved aside, never deleted; zeros after them are cut
        f, end = snapdir / name, kept_end.get(name, 0)
        with open(f, "rb") as fh:
            fh.seek(end)
            rest = fh.read()
        data = rest.rstrip(b"\0")
        if data and not (name == packs[-1] and crash_tail(rest, 0, max(read_header(rest)[0], 0), end)):
            data = rest  # damage keeps every byte; only a crash tail's zeros are a reserve's, no data
        if data:
            aside = snapdir / f"{name}.damaged-{end}"
            with open(aside, "xb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
            rep.actions.append(f"moved {len(data)} bytes not used by any kept snapshot from {f} to {aside}")
        if len(rest) > len(data):
            what = "zero bytes (a writer's reserve) after them" if data else "bytes of unused zero-filled reserve"
            rep.actions.append(f"removed the {len(rest) - len(data)} {what} at the end of {f}")
        if rest and end:
            os.truncate(f, end)
        elif rest:
            os.unlink(f)
    if new != index_data or not (p / INDEX).exists():  # an empty store's missing index is b"" too
        if (p / INDEX).exists():
            backup, k = p / f"{INDEX}.damaged", 1
            while backup.exists():
                backup, k = p / f"{INDEX}.damaged.{k}", k + 1
            os.link(p / INDEX, backup)
            rep.actions.append(f"kept the old index as {backup}")
        write_atomic(p / INDEX, new, durable=True)
        rep.actions.append(f"rebuilt {p / INDEX} with {keep} snapshots from the packs")
    if keep < n:
        rep.actions.append(f"dropped the lost snapshots {keep}..{n - 1} from the index")
    rep.repaired = True
    rep.intact, rep.recoverable = list(range(keep)), []
    return False


def _segments_now(p: Path, segs: SegmentTable) -> SegmentTable:
    """The manifest's segment table as it is now (a writer rewrites it before a new segment's first snapshot)."""
    try:
        return read_manifest(p).segments
    except CorruptTrajectoryError:
        return segs  # the first reading stands


def _snapshots_appended_meanwhile(
    p: Path, index_data: bytes, idx: dict[int, dict[str, Any]], blobs: dict[int, dict[str, Any]], rep: CheckReport
) -> None:
    """Tell snapshots a writer appended while ``check`` read the packs from ones whose index line is missing.

    ``check`` takes no lock, and a writer puts a snapshot in its pack first, its index line right after
    (and creates the index right after the manifest): packs ahead of the index read before them are a live
    writer's work, not damage. The lock, probed only then, decides: a writer holds it (those snapshots are
    left out: the report covers the store as indexed when read), or none does and the index, now stable,
    holds whatever lines were written since.
    """
    done, missing = index_data.count(b"\n"), (INDEX, "is missing")
    if not any(i >= done for i in blobs) and missing not in rep.problems:
        return
    lock = acquire_lock(p)
    if lock is None:
        if missing in rep.problems and not blobs:
            rep.problems.remove(missing)  # a store being created
        for i in [i for i in blobs if i >= done]:
            del blobs[i]
        return
    try:
        later = (p / INDEX).read_bytes() if (p / INDEX).exists() else b""
    finally:
        os.close(lock)
    if not later.startswith(index_data[: index_data.rfind(b"\n") + 1]):
        return  # not grown by appending: the first reading stands
    for k, line in enumerate(later.split(b"\n")[:-1]):
        if k >= done and k in blobs:
            try:
                idx[k] = parse_index_line(line, k, FORMAT_VERSION, f"{p / INDEX}: line {k + 1}")
            except CorruptTrajectoryError:
                return  # the first reading stands


def _repair_manifest(p: Path, rep: CheckReport, blobs: dict[int, dict[str, Any]], seg_info: dict[int, str]) -> bool:
    """Rebuild a damaged manifest's segment table from the packs (each pack's first snapshot states its layout)."""
    nseg = max((r["seg"] for r in blobs.values()), default=-1) + 1
    missing = [k for k in range(nseg) if k not in seg_info]
    if not blobs or missing:
        rep.unrecoverable.append(
            f"repair refused: the manifest is damaged and no pack states the layout of segments {missing}"
        )
        return False
    segs = []
    for k in range(nseg):
        segs.append(parse_segment(json.loads(seg_info[k])))
    f = p / MANIFEST
    if f.exists():
        backup, k = p / f"{MANIFEST}.damaged", 1
        while backup.exists():
            backup, k = p / f"{MANIFEST}.damaged.{k}", k + 1
        os.link(f, backup)
        rep.actions.append(f"kept the old manifest as {backup}")
    write_atomic(f, manifest_bytes({}, segs), durable=True)
    rep.actions.append(f"rebuilt {f} with {nseg} segments from the packs")
    rep.unrecoverable = [u for u in rep.unrecoverable if not u.startswith(MANIFEST)]
    rep.unrecoverable.append(f"{MANIFEST}: the run metadata (meta), which only the manifest held; it is now empty")
    return True
