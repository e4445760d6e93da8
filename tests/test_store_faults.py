"""Single-byte flips and truncations of every file of a small store: an error naming the file, or the exact data.

The exhaustive tests flip every byte (XOR 0xFF) and truncate at every offset of every file; the
hypothesis test draws any XOR value. After each fault, reading gives either a
:class:`~landscape.trajectory.TrajectoryError` whose message names the damaged file, or data equal to
the original (vectors and buffers bitwise, metadata equal); opening for appending never changes a
pack (so never deletes an intact snapshot) and leaves a store that reads back the same way; ``check``
reports every fault that makes reading fail.
"""

import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from landscape.params import ParamLayout, TensorSpec
from landscape.trajectory import Trajectory, TrajectoryError

L3 = ParamLayout([TensorSpec("w", (3,), 0, 3, "", None, "")])


def build(p: Path) -> None:
    """Two segments (two packs), buffers, metrics with a NaN, tags."""
    with Trajectory.create(p, meta={"m": 1}) as t:
        t.append(
            torch.tensor([1.5, -2.0]), step=1, metrics={"l": 0.5}, tags={"k": "a"}, buffers={"b": torch.tensor([3])}
        )
        t.append(torch.tensor([0.25, 4.0]), step=2, metrics={"l": math.nan}, buffers={"b": torch.tensor([4])})
        t.append(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), layout=L3, step=3, epoch=1.5)


def content(t: Trajectory) -> list:
    """Everything a reader can get from a store, in comparable form."""
    out = [t.meta, [(s.start, s.stop, s.layout, s.buffer_names) for s in t.segments]]
    for s in t:
        out.append(
            (
                s.index,
                s.step,
                s.epoch,
                s.wall_time,
                repr(s.metrics),
                s.tags,
                s.segment,
                s.layout,
                s.vector.dtype,
                s.vector.tolist(),
                {k: (v.dtype, v.tolist()) for k, v in s.buffers.items()},
            )
        )
    return out


def read(p: Path, mode: str = "r"):
    """The store's content, or the error's message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # recovery reports what it did
            t = Trajectory.open(p, mode, durable=False)  # no fsync: thousands of faults
        try:
            return content(t)
        finally:
            t.close()
    except TrajectoryError as e:
        return str(e)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    p = tmp_path_factory.mktemp("faults") / "store"
    build(p)
    files = {q.relative_to(p): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}
    assert sorted(str(f) for f in files) == [
        "index.jsonl",
        "manifest.json",
        "snapshots/00000000.pack",
        "snapshots/00000002.pack",
    ]
    return p, files, read(p)


def restore(p: Path, files: dict) -> None:
    """Put the pristine bytes back, rewriting only files that differ (in place: no truncation to zero,
    which makes ext4 flush the file on close and would turn thousands of faults into minutes)."""
    for q in list(p.rglob("*")):
        if q.is_file() and q.relative_to(p) not in files:
            q.unlink()
    for rel, data in files.items():
        q = p / rel
        if not q.exists():
            q.write_bytes(data)
        elif q.read_bytes() != data:
            write(q, data)


def write(q: Path, data: bytes) -> None:
    with open(q, "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))


def verdict(p: Path, rel: Path, files: dict, expected: list, append: bool) -> None:
    got = read(p)
    if isinstance(got, str):
        assert rel.name in got, f"{rel}: error does not name the file: {got}"
    else:
        assert got == expected, f"{rel}: reading returned different data"
    if not append:
        return
    before = {q: q.read_bytes() for q in p.rglob("*") if q.is_file()}
    after = read(p, "a")
    if isinstance(after, str):
        assert rel.name in after, f"{rel}: append-mode error does not name the file: {after}"
    now = {q: q.read_bytes() for q in p.rglob("*") if q.is_file()}
    for q, data in before.items():
        if q.suffix == ".pack":
            assert now.get(q) == data, f"{rel}: opening for appending changed {q.name}"
    if now == before:
        return  # recovery changed nothing: reading gives what it gave
    again = read(p)
    assert again == got or (isinstance(again, list) and again == expected), f"{rel}: append mode changed the data"


def _run_all(p, files, expected, op, append):
    for rel, data in files.items():
        for k in range(len(data)):
            restore(p, files)
            write(p / rel, op(data, k))
            verdict(p, rel, files, expected, append)
    restore(p, files)


def _flip(data, k, x=0xFF):
    return data[:k] + bytes([data[k] ^ x]) + data[k + 1 :]


@pytest.mark.slow
def test_every_byte_flip(pristine, tmp_path):
    src, files, expected = pristine
    p = tmp_path / "s"
    shutil.copytree(src, p)
    _run_all(p, files, expected, _flip, append=True)


@pytest.mark.slow
def test_every_truncation(pristine, tmp_path):
    src, files, expected = pristine
    p = tmp_path / "s"
    shutil.copytree(src, p)
    _run_all(p, files, expected, lambda d, k: d[:k], append=True)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_faults(pristine, tmp_path, data):
    src, files, expected = pristine
    p = tmp_path / "h"
    if not p.exists():
        shutil.copytree(src, p)
    restore(p, files)
    rel = data.draw(st.sampled_from(sorted(files)))
    raw = files[rel]
    if data.draw(st.booleans()):
        k, x = data.draw(st.integers(0, len(raw) - 1)), data.draw(st.integers(1, 255))
        write(p / rel, _flip(raw, k, x))
    else:
        write(p / rel, raw[: data.draw(st.integers(0, len(raw) - 1))])
    rep = Trajectory.check(p)  # never raises on a damaged store, and never calls a store it cannot read OK
    if isinstance(read(p), str):
        assert not rep.ok and (rep.problems or rep.recoverable or rep.lost), str(rep)
    verdict(p, rel, files, expected, append=True)
