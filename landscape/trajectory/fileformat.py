"""The on-disk format of a trajectory store: sealed JSON, self-describing snapshot blobs, index lines, manifest.

A store directory (format version 2)::

    <dir>/manifest.json              format name and version, run metadata, per-segment layouts, "sum"
    <dir>/index.jsonl                one sealed JSON line per snapshot (append-only)
    <dir>/snapshots/00000012.pack    snapshots 12, 13, ... of one segment, back to back

**Packs.** A pack holds consecutive snapshots of one segment (a new pack starts with every segment,
``Trajectory.PACK_BYTES`` and every writer session), each a complete *safetensors* byte string (tensors
``vector`` and ``buffers/<name>``), written in order. Each one describes itself in its safetensors
metadata: ``record`` (the snapshot's JSON record: index, segment, step, epoch, time, dtype, metrics,
tags), ``segment`` (in the first snapshot of a pack: the segment's layout and buffer names) and
``digest`` (sha256 of the record, the segment entry, the tensor table and the tensor bytes). A pack can
therefore be verified, and the index and the manifest's segment table rebuilt from it, without either;
only the run metadata (``meta``) lives in the manifest alone.

**Seals.** Every index line and the manifest end in ``"sum":"<sha256 of the bytes before it>"``. An
index line also holds the snapshot's pack, byte offset, size and digest. Any mismatch is a
:class:`CorruptTrajectoryError` naming the file, the line or snapshot, and what is wrong.

Everything here is a pure function of bytes (no file is written); nothing is ever unpickled: tensors
are safetensors, everything else JSON. Version 1 stores (one ``.safetensors`` file per snapshot,
unsealed index) are still parsed, read-only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import safetensors.torch
import torch
from torch import Tensor

from landscape.params import ParamLayout

__all__ = ["CorruptTrajectoryError", "FORMAT_NAME", "FORMAT_VERSION", "TrajectoryError"]

SegmentTable = Sequence[tuple[ParamLayout, tuple[str, ...]]]  # (layout, buffer names) per segment

FORMAT_NAME = "landscape-trajectory"
FORMAT_VERSION = 2
MANIFEST, INDEX, SNAPDIR, LOCK_FILE = "manifest.json", "index.jsonl", "snapshots", ".lock"
PACK = ".pack"
DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
BUF = "buffers/"
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


class TrajectoryError(ValueError):
    """A trajectory cannot be opened, read or appended to as asked."""


class CorruptTrajectoryError(TrajectoryError):
    """A file of an on-disk trajectory is missing, truncated, corrupted or not what it should be."""


# ----------------------------------------------------------------------------- seals and packs
def seal(body: bytes) -> bytes:
    """``{...}`` -> ``{...,"sum":"<sha256 of {...}>"}``: any changed byte breaks the seal."""
    return body[:-1] + b',"sum":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'


def unseal(data: bytes) -> tuple[Any, str | None]:
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


def record_json(rec: Mapping[str, Any]) -> str:
    return json.dumps({k: rec[k] for k in _CORE}, separators=(",", ":"))


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # == json.dumps(..., separators=(",", ":")), built once
_quote = json.encoder.encode_basestring_ascii  # == json.dumps(a str)


def _jfloat(x: float) -> str:
    # json.dumps's float format (repr, NaN, Infinity): the record must be byte-identical to record_json's.
    return repr(x) if x - x == 0 else ("NaN" if x != x else ("Infinity" if x > 0 else "-Infinity"))


def record_json_fast(rec: Mapping[str, Any]) -> str:
    """``record_json(rec)`` for a record :meth:`Trajectory.append` built, in a quarter of the time."""
    m = rec["metrics"]
    metrics = "{" + ",".join(f"{_quote(k)}:{_jfloat(v)}" for k, v in m.items()) + "}" if m else "{}"
    tags = _ENCODER.encode(rec["tags"]) if rec["tags"] else "{}"
    return (
        f'{{"i":{rec["i"]},"seg":{rec["seg"]},"step":{rec["step"]},"epoch":{_jfloat(rec["epoch"])},'
        f'"time":{_jfloat(rec["time"])},"dtype":"{rec["dtype"]}","metrics":{metrics},"tags":{tags}}}'
    )


def _tensor_bytes(t: Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else memoryview(b"")


def raw_bytes(t: Tensor) -> memoryview:
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
def table_json(spec: tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]) -> str:
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


def _digest(record_json: str, table_json: str, parts: Iterable[Any]) -> str:
    h = hashlib.sha256(record_json.encode())
    h.update(b"\n" + table_json.encode() + b"\n")
    for p in parts:
        h.update(p)
    return h.hexdigest()


MAX_HEADER_BYTES = 100_000_000
"""A safetensors header length beyond this is garbage, not a snapshot."""


def all_zeros(data: bytes) -> bool:
    """Whether ``data`` holds only zero bytes (a ``durable="append"`` writer's unused reserve), or nothing."""
    return not data.rstrip(b"\0")


def read_header(data: bytes | memoryview) -> tuple[int, dict[str, Any] | None]:
    """``(size of the blob at data[0], header)``; ``(-1, None)`` if incomplete, ``(0, None)`` if garbage."""
    if len(data) < 8:
        return -1, None
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
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


def verify_blob(blob: bytes, header: dict[str, Any], record_json: str | None, digest: str | None) -> str | None:
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


def index_line(record_json: str, rec: Mapping[str, Any]) -> bytes:
    loc = f',"file":"{rec["file"]}","off":{rec["off"]},"size":{rec["size"]},"digest":"{rec["digest"]}"}}'
    return seal((record_json[:-1] + loc).encode()) + b"\n"


def pack_names(snapdir: Path) -> list[str]:
    try:
        names = os.listdir(snapdir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(PACK) and n[:-5].isdigit())


def check_tensors(blob: bytes, rec: Mapping[str, Any], segs: SegmentTable | None) -> str | None:
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


def segment_json(layout: ParamLayout, buffer_names: Sequence[str]) -> str:
    """A segment's entry as the first snapshot of a pack states it (``json.loads`` gives the manifest's entry)."""
    return json.dumps({"layout": layout.to_dict(), "buffer_names": list(buffer_names)})


def parse_segment(entry: Mapping[str, Any]) -> tuple[ParamLayout, tuple[str, ...]]:
    """``(layout, buffer names)`` from a manifest segment entry (or a parsed :func:`segment_json`)."""
    return ParamLayout.from_dict(entry["layout"]), tuple(entry["buffer_names"])


class Frame(NamedTuple):
    """A snapshot blob around a 64-character hole for its digest, which the writer computes and fills in.

    ``head + digest + tail + b"".join(parts)`` is the safetensors byte string; ``sha256(pre + parts)`` is
    the digest (what :func:`verify_blob` checks).
    """

    pre: bytes
    head: bytes
    tail: bytes
    parts: list[memoryview]
    size: int


@functools.lru_cache(maxsize=64)
def _frame_ends(spec: tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]) -> tuple[bytes, bytes, int]:
    # What every snapshot of a segment (but the first of a pack) shares: the header after the digest, what the
    # digest hashes after the record, and the tensor bytes.
    table = table_json(spec)
    return ('"},' + table[1:]).encode(), ("\n" + table + "\n").encode(), sum(s[3] for s in spec)


_PAD = tuple(b" " * k for k in range(8))


Spec = tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]


def frame_spec(tensors: Mapping[str, Tensor], parts: Sequence[memoryview]) -> Spec:
    """``(name, dtype, shape, nbytes)`` of each tensor: what a snapshot's safetensors table describes."""
    return tuple((k, t.dtype, tuple(t.shape), b.nbytes) for (k, t), b in zip(tensors.items(), parts))


def snapshot_frame(
    rj: str,
    segment: str,
    tensors: Mapping[str, Tensor],
    spec: Spec | None = None,
    parts: list[memoryview] | None = None,
) -> Frame:
    """Frame one snapshot (private contiguous CPU tensors) without hashing it.

    Args:
        rj: Its record, as :func:`record_json_fast` gives it.
        segment: Its segment's :func:`segment_json` for the first snapshot of a pack, else ``""``.
        tensors: ``vector`` and ``buffers/<name>``, in that order.
        spec: :func:`frame_spec` of ``tensors`` when the caller knows it (the same for a run of snapshots).
        parts: :func:`raw_bytes` of each tensor when the caller has them.
    """
    if parts is None:
        parts = [raw_bytes(t) for t in tensors.values()]
    if spec is None:
        spec = frame_spec(tensors, parts)
    head = _HEAD + _quote(rj).encode() + b',"digest":"'
    if segment:  # the first snapshot of a pack: built in full (once per pack)
        table = table_json(spec)
        tail = ('",' + '"segment":' + _quote(segment) + "}," + table[1:]).encode()
        pre = (rj + "\n" + segment + "\n" + table + "\n").encode()  # what _digest hashes first
        nbytes = sum(b.nbytes for b in parts)
    else:
        tail, pre_tail, nbytes = _frame_ends(spec)
        pre = rj.encode() + pre_tail
    n = len(head) + 64 + len(tail)
    tail += _PAD[-n % 8]  # safetensors aligns the data to 8 bytes
    n += -n % 8
    return Frame(pre=pre, head=n.to_bytes(8, "little") + head, tail=tail, parts=parts, size=8 + n + nbytes)


def manifest_bytes(meta: Mapping[str, Any], segments: SegmentTable) -> bytes:
    """The sealed manifest of a store with run metadata ``meta`` and these segments."""
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "meta": meta,
        "segments": [{"layout": lay.to_dict(), "buffer_names": list(b)} for lay, b in segments],
    }
    return seal(json.dumps(manifest, indent=1).encode()) + b"\n"


class Manifest(NamedTuple):
    """A parsed manifest."""

    version: int
    meta: dict[str, Any]
    segments: list[tuple[ParamLayout, tuple[str, ...]]]


def read_manifest(path: Path) -> Manifest:
    """Read and verify the manifest of the store at ``path``.

    Raises:
        TrajectoryError: If ``path`` has no manifest, it is not a trajectory manifest, or it says a newer version.
        CorruptTrajectoryError: If its seal, version or segment table is broken, or it is missing beside
            snapshot packs (the packs describe themselves: ``check --repair`` rebuilds it).
    """
    f = path / MANIFEST
    if not f.is_file():
        if pack_names(path / SNAPDIR):  # a store never has packs without a manifest: it was deleted
            raise CorruptTrajectoryError(
                f"{f} is missing but {path / SNAPDIR} holds snapshot packs; rebuild the manifest from them with "
                f"python -m landscape check {path} --repair"
            )
        raise TrajectoryError(f"{path} is not a trajectory: it has no {MANIFEST}")
    data = f.read_bytes()
    try:
        m = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptTrajectoryError(f"{f} is not valid JSON ({e})") from e
    sealed = isinstance(m, dict) and "sum" in m
    what = unseal(data)[1] if sealed else None
    version = m.get("version") if isinstance(m, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION and m.get("format") == FORMAT_NAME:
        # A newer writer may seal differently: say both possibilities rather than guess. A broken seal is reported
        # as damage (Trajectory.check lists it instead of stopping): one flipped byte can turn "2" into "3".
        raise (CorruptTrajectoryError if what else TrajectoryError)(
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
    try:
        meta = dict(m["meta"])
        segs = [parse_segment(s) for s in m["segments"]]
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptTrajectoryError(f"{f} has a malformed segment table or metadata ({e})") from e
    return Manifest(version=version, meta=meta, segments=segs)


def parse_index_line(line: bytes, n: int, version: int, where: str) -> dict[str, Any]:
    """One complete index line as the record of snapshot ``n``.

    Raises:
        CorruptTrajectoryError: Naming ``where`` (the file and line), if the line is not that record.
    """
    if version == 1:
        try:
            rec = json.loads(line)
            ok = rec["i"] == n and isinstance(rec["seg"], int) and rec["dtype"] in DTYPES
            ok = ok and isinstance(rec["size"], int) and isinstance(rec["sha256"], str)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise CorruptTrajectoryError(f"{where} is corrupted: {line[:200]!r}")
        rec["file"], rec["off"] = f"{n:08d}.safetensors", 0
        return rec
    rec, what = unseal(line)
    if what:
        raise CorruptTrajectoryError(f"{where} (snapshot {n}) {what}: {line[:120]!r}...")
    try:
        ok = isinstance(rec, dict) and rec["i"] == n and rec["dtype"] in DTYPES
        ok = ok and all(isinstance(rec[k], int) for k in ("seg", "off", "size", "step"))
        ok = ok and isinstance(rec["file"], str) and isinstance(rec["digest"], str)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise CorruptTrajectoryError(f"{where} is not record {n} of this store: {line[:200]!r}")
    return rec


def opens_segment(seg: int, n: int, started: int, known: int, where: str) -> bool:
    """Whether snapshot ``n``, recorded in segment ``seg``, starts a new segment of the index.

    Args:
        seg: The snapshot's segment.
        n: The snapshot's index.
        started: Segments the index has started before it.
        known: Segments the manifest lists.
        where: The file (and line) it comes from, for the message.

    Raises:
        CorruptTrajectoryError: If it names a segment the manifest lacks, or skips or goes back a segment.
    """
    if seg == started:
        if seg >= known:
            raise CorruptTrajectoryError(f"{where}: snapshot {n} names segment {seg}, which the manifest lacks")
        return True
    if seg != started - 1:
        raise CorruptTrajectoryError(f"{where}: snapshot {n} jumps to segment {seg}")
    return False


def crash_tail(data: bytes, at: int, size: int, base: int = 0) -> bool:
    """Whether ``data[at:]`` is what a crash leaves in a ``durable="append"`` writer's zero-filled reserve.

    Either zeros only (the unused reserve), or a snapshot that fails its checks (``size``: its length as its
    header states) whose write stopped early: from a 512-byte sector boundary inside it (a disk writes whole
    sectors) to the end of the file there are only zeros, and the file goes on past it. ``base`` is the file
    offset of ``data[0]``. Anything else is damage. A header that does not parse (``size`` 0) may be one
    whose write stopped inside it: the snapshot is then taken to be as long as its stated header.
    """
    if size <= 0 and len(data) - at >= 8:
        size = 8 + int.from_bytes(data[at : at + 8], "little")
    written = len(data[at:].rstrip(b"\0"))
    if written == 0:  # the unused reserve
        return True
    if not 0 < written < size < len(data) - at:
        return False
    sector = -(-(base + at + written) // 512) * 512  # the first sector boundary after the last byte written
    return sector < base + at + size


def _holds(fd: int, rec: Mapping[str, Any]) -> bool:
    """Whether the pack open as ``fd`` holds the header of index record ``rec`` where the record says.

    A pack written with a ``durable="append"`` reserve is long enough for any offset inside the reserve, so
    only the header tells an index that outran its pack (a store copied while live) from one that did not.
    """
    head = os.pread(fd, 8, rec["off"])
    size = int.from_bytes(head, "little") if len(head) == 8 else 0
    if not 0 < size <= min(rec["size"] - 8, MAX_HEADER_BYTES):
        return False
    _, h = read_header(head + os.pread(fd, size, rec["off"] + 8))
    return h is not None and h["__metadata__"].get("digest") == rec["digest"]


def scan_tail(
    snapdir: Path, n: int, last: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], tuple[str, int] | None, str | None]:
    """Complete snapshots in the packs after the last indexed one (what crash recovery rolls forward).

    Args:
        snapdir: The store's pack directory.
        n: Snapshots the index holds.
        last: The record of the last of them (``None`` if ``n`` is 0).

    Returns:
        ``(records, incomplete, damage)``: verified records in order; ``(pack, offset)`` of an
        incomplete last snapshot (a crash tail), or None; what is damaged, or None.
    """
    todo = [(last["file"], last["off"] + last["size"])] if last is not None else []
    todo += [(f, 0) for f in pack_names(snapdir) if int(f[:-5]) >= n and (not n or f != todo[0][0])]
    out: list[dict[str, Any]] = []
    incomplete = None
    for name, pos in todo:
        try:
            with open(snapdir / name, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < pos:
                    return out, None, f"{snapdir / name} is shorter than the index says ({pos} bytes)"
                if last is not None and not out and pos and not _holds(fh.fileno(), last):
                    where = f"byte {last['off']}, where the index says (the index outran the pack)"
                    return out, None, f"{snapdir / name} does not hold snapshot {n - 1} at {where}"
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
            size, h = read_header(view[at:])
            if size < 0:
                incomplete = (name, pos + at)
                break
            blob = bytes(view[at : at + size])
            what = "is not a snapshot" if h is None else verify_blob(blob, h, None, None)
            if what and crash_tail(data, at, size, pos):
                incomplete = (name, pos + at)
                break
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
