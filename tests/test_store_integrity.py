"""The store never lies: sealed index and manifest, recovery that deletes nothing intact, an unbreakable lock,
``check`` / ``--repair``, and cheap recording (durable modes, cached layouts)."""

import gc
import importlib.util
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from landscape import cli
from landscape.params import ParamLayout, TensorSpec, parameters_to_vector
from landscape.trajectory import CorruptTrajectoryError, Trajectory, TrajectoryError
from landscape.trajectory.fileformat import DTYPES, record_json, record_json_fast
from landscape.trajectory.records import jsonify, metrics_dict
from landscape.trajectory.writer import PackWriter

HELPER = Path(__file__).with_name("_trajectory_writer.py")
_spec = importlib.util.spec_from_file_location("_trajectory_writer", HELPER)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)
ROOT = Path(__file__).resolve().parents[1]


def store(tmp_path, n=6, name="t", **kw):
    t = Trajectory.create(tmp_path / name, **kw)
    for i in range(n):
        append_expected(t, i)
    t.close()
    return tmp_path / name


def append_expected(t, i):
    """Append the writer's snapshot ``i`` (its vector and keywords) to the store ``t``."""
    e = writer.expected(i)
    t.append(e.pop("vector"), **e)


def assert_resumes(t, p, n):
    """``t`` (open for appending, at ``p``) holds snapshots ``0..n-1``, takes snapshot ``n`` and reads it back."""
    assert_all(t, n)
    append_expected(t, n)
    t.close()
    assert_all(Trajectory.open(p), n + 1)


def files(p):
    return {q.relative_to(p): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}


def assert_all(t, n):
    assert len(t) == n
    for i in range(n):
        e, s = writer.expected(i), t[i]
        assert torch.equal(s.vector, e["vector"]) and s.vector.dtype == e["vector"].dtype
        assert (s.step, s.epoch, s.wall_time, s.metrics, s.tags) == (
            e["step"],
            e["epoch"],
            e["wall_time"],
            e["metrics"],
            e["tags"],
        )
        assert all(torch.equal(s.buffers[k], v) for k, v in e["buffers"].items()) and s.layout == e["layout"]


def quiet_open(p, mode="r"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Trajectory.open(p, mode)


# --------------------------------------------------------------------------- issue 17 repros
def test_edited_step_in_the_index_is_an_error_naming_the_line(tmp_path):
    with Trajectory.create(tmp_path / "t") as t:
        t.append(torch.zeros(3), step=3)
    index = tmp_path / "t" / "index.jsonl"
    data = index.read_bytes()
    assert data.count(b'"step":3') == 1
    index.write_bytes(data.replace(b'"step":3', b'"step":2'))
    with pytest.raises(CorruptTrajectoryError, match=r"index.jsonl: line 1 \(snapshot 0\) fails its checksum"):
        Trajectory.open(tmp_path / "t")


def test_edited_layout_name_in_the_manifest_is_an_error_naming_the_file(tmp_path):
    with Trajectory.create(tmp_path / "t") as t:
        t.append(torch.zeros(3))
    manifest = tmp_path / "t" / "manifest.json"
    data = manifest.read_bytes()
    assert data.count(b'"vector"') == 1
    manifest.write_bytes(data.replace(b'"vector"', b'"vectos"'))
    for mode in ("r", "a"):
        with pytest.raises(CorruptTrajectoryError, match=r"manifest.json fails its checksum"):
            Trajectory.open(tmp_path / "t", mode)


def test_append_mode_never_deletes_intact_snapshots(tmp_path):
    p = store(tmp_path)
    index = p / "index.jsonl"
    before = files(p)
    index.write_bytes(before[Path("index.jsonl")][: len(before[Path("index.jsonl")]) // 2])
    assert_all(Trajectory.open(p), 6)  # a reader takes the snapshots the index lacks from the packs
    with pytest.warns(UserWarning, match=r"indexed snapshots \[3, 4, 5\] from their packs"):
        t = Trajectory.open(p, "a")
    t.close()
    assert files(p) == before  # the index is exactly what it was: nothing was lost, nothing deleted
    assert_all(Trajectory.open(p), 6)

    index.unlink()  # a lost index is damage: refused, every file left in place, repair is explicit
    for mode in ("r", "a"):
        with pytest.raises(CorruptTrajectoryError, match=r"index.jsonl is missing .*6 snapshots.*--repair"):
            Trajectory.open(p, mode)
    assert files(p) == {k: v for k, v in before.items() if k != Path("index.jsonl")}
    rep = Trajectory.check(p, repair=True)
    assert rep.repaired and rep.intact == list(range(6)), str(rep)
    assert files(p) == before
    assert_all(Trajectory.open(p), 6)


def test_recovery_refuses_damage_and_changes_nothing(tmp_path):
    p = store(tmp_path)
    index = p / "index.jsonl"
    lines = index.read_bytes().split(b"\n")
    pack = p / "snapshots" / "00000000.pack"

    cases = {
        "middle index line": lambda: index.write_bytes(b"\n".join([lines[0], lines[1][:-9], *lines[2:]])),
        # the last snapshot is complete but not indexed (a crash), and damaged (not a crash)
        "damaged unindexed tail": lambda: (
            index.write_bytes(b"\n".join(lines[:5]) + b"\n"),
            _flip(pack, pack.stat().st_size - 3),
        ),
        "pack shorter than the index": lambda: os.truncate(pack, pack.stat().st_size - 50),
        "pack missing": lambda: pack.unlink(),
    }
    clean = files(p)
    for what, damage in cases.items():
        damage()
        before = files(p)
        with pytest.raises(CorruptTrajectoryError, match=r"index.jsonl|00000000.pack"):
            Trajectory.open(p, "a")
        assert files(p) == before, what
        for q, data in clean.items():  # restore
            (p / q).write_bytes(data)


def _flip(f, off, bit=0x01):
    with open(f, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)[0]
        fh.seek(off)
        fh.write(bytes([b ^ bit]))


@pytest.mark.slow
def test_deleting_a_lock_file_does_not_admit_a_second_writer(tmp_path):
    p = store(tmp_path, n=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), "hold", str(p)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        for q in p.rglob("*lock*"):  # whatever lock file there may be, remove it under the live writer
            q.unlink()
        with pytest.raises(TrajectoryError, match="another writer"):
            Trajectory.open(p, "a")
        with pytest.raises(TrajectoryError, match="another writer"):
            Trajectory.check(p, repair=True)
        assert len(Trajectory.open(p)) == 2  # readers are never locked out
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    with Trajectory.open(p, "a") as t:  # released when the writer closes (or dies)
        assert len(t) == 2


# --------------------------------------------------------------------------- check and repair
def test_check_reports_damage_and_repairs_only_when_asked(tmp_path):
    p = store(tmp_path)
    rep = Trajectory.check(p)
    assert rep.ok and rep.intact == list(range(6)) and str(rep).endswith("OK")
    index = p / "index.jsonl"
    lines = index.read_bytes().split(b"\n")
    index.write_bytes(b"\n".join(lines[:2] + [lines[2].replace(b'"step":20', b'"step":21')] + lines[3:]))
    before = files(p)
    rep = Trajectory.check(p)
    assert not rep.ok and rep.recoverable == [2] and rep.lost == []
    assert any(f == "index.jsonl" and "line 3 (snapshot 2)" in w for f, w in rep.problems), rep.problems
    assert files(p) == before  # never by default
    rep = Trajectory.check(p, repair=True)
    assert rep.repaired and "REPAIRED" in str(rep)
    assert (p / "index.jsonl.damaged").read_bytes() == before[Path("index.jsonl")]
    assert_all(Trajectory.open(p), 6)
    assert Trajectory.check(p).ok


def test_check_lost_snapshots(tmp_path):
    p = store(tmp_path)
    rec = [Trajectory.open(p)._records[i] for i in range(6)]
    pack = p / "snapshots" / rec[1]["file"]
    _flip(pack, rec[1]["off"] + rec[1]["size"] - 5)  # snapshot 1's tensors: lost, later ones survive
    before = files(p)
    rep = Trajectory.check(p, repair=True)
    assert rep.lost == [1] and not rep.repaired and "snapshot 1 is lost but later snapshots survive" in str(rep)
    assert files(p) == before

    _flip(pack, rec[1]["off"] + rec[1]["size"] - 5)  # undo; now damage the last snapshot
    last = p / "snapshots" / rec[5]["file"]
    _flip(last, rec[5]["off"] + rec[5]["size"] - 5)
    rep = Trajectory.check(p, repair=True)
    assert rep.repaired and rep.intact == [0, 1, 2, 3, 4], str(rep)
    assert "dropped the lost snapshots 5..5" in str(rep)
    aside = list((p / "snapshots").glob("*.damaged-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == rec[5]["size"]  # moved aside, not deleted
    assert_resumes(Trajectory.open(p, "a"), p, 5)
    assert Trajectory.check(p).ok


def test_cli_check_and_damaged_snapshot_message(tmp_path, capsys):
    p = store(tmp_path, n=3)
    assert cli.main(["check", str(p)]) == 0 and capsys.readouterr().out.strip().endswith("OK")
    rec = Trajectory.open(p)._records[1]
    pack = p / "snapshots" / rec["file"]
    os.truncate(pack, rec["off"] + rec["size"] - 10)
    assert cli.main(["check", str(p)]) == 1
    out = capsys.readouterr().out
    assert "lost (tensors damaged or missing): 1-2" in out and "DAMAGED" in out
    template = nn.Sequential(nn.Linear(40, 50), nn.Linear(50, 3))
    with pytest.raises(cli.CLIError, match=r"the trajectory is damaged: .*00000000.pack is truncated") as e:
        cli.load_point(f"{p}:1", template)
    assert "architecture" not in str(e.value)
    assert cli.main(["check", str(tmp_path / "nothing")]) == 2


# --------------------------------------------------------------------------- recording cost
class _CountingOs:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(os, name)
        if name not in ("fsync", "fdatasync", "open", "write", "writev", "replace"):
            return attr

        def call(*a, **k):
            self.calls.append(name)
            return attr(*a, **k)

        return call


@pytest.mark.parametrize(
    "durable, per_append",
    [
        (True, ["writev", "fdatasync", "write"]),
        ("append", ["writev", "fdatasync", "write"]),
        ("flush", []),
        (False, []),
    ],
)
def test_durable_modes_sync_when_promised(tmp_path, monkeypatch, durable, per_append):
    counting = _CountingOs()
    writer.set_os(counting, monkeypatch.setattr)
    monkeypatch.setattr(PackWriter, "LINGER", 600.0)  # no partial batch on a slow machine
    t = Trajectory.create(tmp_path / "t", durable=durable)
    t.append(torch.zeros(5))
    t.flush()
    counting.calls.clear()
    for _ in range(3):  # one pack, one index: no file is created or renamed per snapshot
        t.append(torch.zeros(5))  # durable="append": written and synced before it returns; else queued
    assert counting.calls == per_append * 3
    counting.calls.clear()
    t.flush()  # group commit: one write of the pack (all three snapshots), one of the index, then the syncs
    synced = ["fsync"] * 2 if per_append else ["writev", "fdatasync", "write", "fsync", "fsync"]
    assert counting.calls == synced + ["open", "fsync"]  # pack (unless synced already), pack directory, index, root
    counting.calls.clear()
    t.append(torch.zeros(5))
    t.close()
    assert (counting.calls.count("fsync") > 0) == bool(durable)
    assert torch.equal(Trajectory.open(tmp_path / "t").vectors(), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="durable"):
        Trajectory.create(tmp_path / "u", durable="always")


@pytest.mark.parametrize("ahead", [True, False])
def test_flush_mode_syncs_behind_in_the_writer_thread_so_flush_has_little_left(tmp_path, monkeypatch, ahead):
    counting = _CountingOs()
    writer.set_os(counting, monkeypatch.setattr)
    monkeypatch.setattr(PackWriter, "LINGER", 600.0)  # the batch is written when BATCH snapshots are queued
    if ahead:
        monkeypatch.setattr(PackWriter, "SYNC_AHEAD", 1)
    t = Trajectory.create(tmp_path / "t", durable="flush")
    for i in range(PackWriter.BATCH):
        t.append(torch.full((5,), float(i)))
    deadline = time.monotonic() + 60
    w = t._writer
    # The appending thread wrote the batch (the 64th append); the writer thread then syncs behind it.
    while (w.done < PackWriter.BATCH or (ahead and w.unsynced_bytes)) and time.monotonic() < deadline:
        time.sleep(0.01)
    behind = ["fdatasync", "fdatasync"] if ahead else []  # the pack, then the index
    calls = counting.calls
    assert "writev" in calls and calls[calls.index("writev") :] == ["writev", "write", *behind]
    counting.calls.clear()
    t.flush()  # the pack is synced already when the writer synced behind
    assert counting.calls == ([] if ahead else ["fdatasync"]) + ["fsync", "fsync", "open", "fsync"]
    t.close()
    assert torch.equal(Trajectory.open(tmp_path / "t").vectors()[:, 0], torch.arange(float(PackWriter.BATCH)))


def _pack(p):
    (pack,) = (p / "snapshots").iterdir()
    return pack


def _live_image(tmp_path, n=4):
    """A ``durable="append"`` writer holding snapshots ``0..n-1``, copied while it is open (a crash image)."""
    import shutil

    t = Trajectory.create(tmp_path / "live", durable="append")
    for i in range(n):
        append_expected(t, i)
    end = t._records[-1]["off"] + t._records[-1]["size"]
    img = tmp_path / "image"
    shutil.copytree(tmp_path / "live", img, ignore=shutil.ignore_patterns(".lock"))
    t.close()
    return img, end, t._records[-1]["size"]


def test_durable_append_writes_into_a_zero_reserve_that_close_cuts(tmp_path):
    # every append durable: the pack is grown ahead in zeros so a small append overwrites instead of growing
    # the file, and its fdatasync has no size to commit; close leaves exactly the snapshots' bytes
    t = Trajectory.create(tmp_path / "t", durable="append")
    append_expected(t, 0)
    pack = _pack(tmp_path / "t")
    size = pack.stat().st_size
    assert size >= PackWriter.RESERVE > t._records[0]["size"]
    for i in range(1, 5):
        append_expected(t, i)
        assert pack.stat().st_size == size  # overwritten in place
    end = t._records[-1]["off"] + t._records[-1]["size"]
    assert not pack.read_bytes()[end:].rstrip(b"\0")
    t.close()
    assert pack.stat().st_size == end
    assert_all(Trajectory.open(tmp_path / "t"), 5)
    flushed = store(tmp_path, 3, "f", durable="flush")  # the other modes write no reserve at all
    assert _pack(flushed).stat().st_size == sum(r["size"] for r in Trajectory.open(flushed)._records)


def test_a_reader_follows_a_live_writer_through_the_reserve_large_snapshots_and_a_new_pack(tmp_path):
    p = tmp_path / "t"
    t = Trajectory.create(p)
    r = None
    for i in range(writer.SWITCH + 2):  # the grown network starts a second pack
        e = writer.expected(i)
        if i % 3 == 1:  # larger than RESERVE_MAX: written past the reserve, not into it
            e["tags"] = {**e["tags"], "pad": "x" * (PackWriter.RESERVE_MAX + 1)}
        t.append(e.pop("vector"), **e)
        if r is None:
            r = Trajectory.open(p)
        else:
            assert r.refresh() == 1
        assert len(r) == i + 1 and torch.equal(r[i].vector, writer.expected(i)["vector"])
        assert len(r.tags(i).get("pad", "")) == (PackWriter.RESERVE_MAX + 1 if i % 3 == 1 else 0)
    t.close()
    assert r.refresh() == 0 and Trajectory.check(p).ok


def test_a_crashed_writers_zero_reserve_is_a_tail_to_drop_not_damage(tmp_path):
    img, end, _ = _live_image(tmp_path)
    assert _pack(img).stat().st_size > end
    assert_all(Trajectory.open(img), 4)  # readers see the snapshots, never the zeros
    report = Trajectory.check(img)
    assert report.ok and "unused zero-filled reserve" in " ".join(report.torn_tail)
    with pytest.warns(UserWarning, match="unused zero-filled reserve"):
        t = Trajectory.open(img, "a")
    assert _pack(img).stat().st_size == end
    assert_resumes(t, img, 4)


@pytest.mark.parametrize("torn", [False, True])
def test_check_repair_cuts_a_zero_reserve_without_moving_zeros_aside(tmp_path, torn):
    img, end, size = _live_image(tmp_path)
    part = _pack(img).read_bytes()[end - size : end - size // 2]  # half a snapshot, as a power failure leaves it
    if torn:
        with open(_pack(img), "r+b") as fh:
            fh.seek(end)
            fh.write(part)
    assert cli.main(["check", str(img), "--repair"]) == 0
    assert (img / "snapshots" / "00000000.pack").stat().st_size == end
    aside = [q for q in (img / "snapshots").iterdir() if "damaged" in q.name]
    assert [q.read_bytes() for q in aside] == ([part.rstrip(b"\0")] if torn else [])  # the torn bytes, no zeros
    assert_all(Trajectory.open(img), 4)


@pytest.mark.parametrize("torn", ["in its tensors", "in its header"])
def test_a_torn_append_into_the_reserve_is_dropped_but_damage_is_refused(tmp_path, torn):
    # Power failed while snapshot 4 was written into the reserve: the disk kept half of it, or only the sectors
    # up to a boundary inside its safetensors header (which then does not parse: still a crash tail).
    img, end, size = _live_image(tmp_path)
    frame = _pack(img).read_bytes()[end - size : end]  # (snapshot 3's bytes stand in for snapshot 4's)
    cut = size // 2 if torn == "in its tensors" else 512 - end % 512
    assert (cut < 8 + int.from_bytes(frame[:8], "little")) == (torn == "in its header")
    with open(_pack(img), "r+b") as fh:
        fh.seek(end)
        fh.write(frame[:cut])
    report = Trajectory.check(img)
    assert report.ok and "partial snapshot in the reserve" in " ".join(report.torn_tail)
    with pytest.warns(UserWarning, match="partial snapshot 4"):
        t = Trajectory.open(img, "a")
    assert_resumes(t, img, 4)
    # a complete snapshot with a flipped byte (the snapshot ends in a few zero bytes of its own; or a byte of
    # its header's JSON, no longer UTF-8) is damage: refused, nothing changed
    img2, end2, size2 = _live_image(tmp_path / "second")
    lines = (img2 / "index.jsonl").read_bytes().split(b"\n")
    (img2 / "index.jsonl").write_bytes(b"\n".join(lines[:-2] + [b""]))  # the index lost snapshot 3's line
    if torn == "in its tensors":
        _flip(_pack(img2), end2 - 1 - size2 // 4, 0xFF)
    else:
        _flip(_pack(img2), end2 - size2 + 20, 0x80)
    before = files(img2)
    with pytest.raises(CorruptTrajectoryError, match="nothing was changed"):
        Trajectory.open(img2, "a")
    assert files(img2) == before


def test_an_index_that_outran_its_pack_is_damage_even_inside_the_reserve(tmp_path):
    # A store copied while live: the pack copied before snapshot 4 reached it, the index after. The pack is
    # long enough (its zero reserve) for every offset the index names, but snapshot 4 there is zeros: damage
    # that mode "a" must refuse (it used to cut the reserve, keep the zeros as snapshot 4 and append after
    # them, leaving a store that check --repair could no longer mend), and that check --repair trims.
    import shutil

    img, _, _ = _live_image(tmp_path)  # snapshots 0-3 and the reserve
    live = store(tmp_path, 5, "whole")  # the same five snapshots: its index is the one copied a moment later
    shutil.copy(live / "index.jsonl", img / "index.jsonl")
    before = files(img)
    with pytest.raises(CorruptTrajectoryError, match=r"not hold snapshot 4 .*outran the pack.*nothing was changed"):
        Trajectory.open(img, "a")
    assert files(img) == before
    report = Trajectory.check(img, repair=True)
    assert report.repaired and report.intact == [0, 1, 2, 3]
    assert_resumes(quiet_open(img, "a"), img, 4)


class _RecordingOs:
    """``os`` for the store's modules that records ``(call, first argument, result)`` of the size and sync calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(os, name)
        if name not in ("open", "close", "truncate", "ftruncate", "unlink", "fsync", "fdatasync"):
            return attr

        def call(*a, **k):
            out = attr(*a, **k)
            self.calls.append((name, str(a[0]) if name in ("open", "truncate", "unlink") else a[0], out))
            return out

        return call

    def synced_after_cut(self):
        """Whether every cut of a pack (ftruncate, truncate, unlink) is followed by a sync of it (or its directory)."""
        for k, (name, what, _) in enumerate(self.calls):
            if name not in ("ftruncate", "truncate", "unlink"):
                continue
            later = self.calls[k + 1 :]
            if name == "ftruncate":  # the pack's own descriptor, before it is closed
                closed = [j for j, (n, fd, _) in enumerate(later) if n == "close" and fd == what]
                later, fds = later[: closed[0] if closed else None], {what}
            else:  # a descriptor opened on the pack (truncate) or its directory (unlink)
                path = what if name == "truncate" else str(Path(what).parent)
                fds = {out for n, p, out in later if n == "open" and p == path}
            if not any(n in ("fsync", "fdatasync") and fd in fds for n, fd, _ in later):
                return False
        return True


def test_every_cut_of_a_pack_is_synced_before_the_store_goes_on(tmp_path, monkeypatch):
    # A cut reserve (at a new pack, at close) or a tail that recovery cut must not come back after a power
    # failure: zeros or a partial snapshot at the end of a pack that is no longer the last one are damage.
    rec = _RecordingOs()
    writer.set_os(rec, monkeypatch.setattr)
    t = Trajectory.create(tmp_path / "t")
    for i in range(writer.SWITCH + 1):  # the grown network starts a new pack: the first pack's reserve is cut
        append_expected(t, i)
    t.close()
    cuts = [c for c in rec.calls if c[0] == "ftruncate"]
    assert len(cuts) == 2 and rec.synced_after_cut()
    writer.set_os(os, monkeypatch.setattr)
    img, _, _ = _live_image(tmp_path / "live")
    rec = _RecordingOs()
    writer.set_os(rec, monkeypatch.setattr)
    quiet_open(img, "a").close()  # recovery cuts the reserve a crash left
    assert [c[0] for c in rec.calls].count("truncate") == 1 and rec.synced_after_cut()


def test_append_model_does_not_rebuild_the_layout_per_snapshot(tmp_path, monkeypatch):
    calls = []
    real = ParamLayout.from_model.__func__
    monkeypatch.setattr(ParamLayout, "from_model", classmethod(lambda cls, m: calls.append(1) or real(cls, m)))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    expected = []
    with Trajectory.create(tmp_path / "t", durable="flush") as t:
        for s in range(10):
            with torch.no_grad():
                net[0].weight.add_(1.0)
            expected.append(parameters_to_vector(net))
            t.append_model(net, step=s)
        assert len(calls) == 1
        net[1] = nn.Linear(4, 3)  # a tunnel-like change: new tensors, new layout, new segment
        t.append_model(net, step=10)
        net[0].bias.requires_grad_(False)  # freezing is not a layout change: same segment, no rebuild
        t.append_model(net, step=11)
        assert len(calls) == 2 and [s.start for s in t.segments] == [0, 10]
    r = Trajectory.open(tmp_path / "t")
    assert all(torch.equal(r[s].vector, expected[s]) for s in range(10))  # the cached path reads fresh values


def test_append_model_cache_sees_replaced_data_buffers_and_modules(tmp_path):
    # The cached path reuses views of the parameters' memory: anything that swaps memory must be seen.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    t = Trajectory()
    expected = []

    def record():
        t.append_model(net)
        expected.append(
            (
                parameters_to_vector(net).clone(),
                {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k},
            )
        )

    record()
    net(torch.randn(5, 3))  # train mode: running statistics change in place
    record()
    net[0].weight.data = torch.randn(4, 3)  # same shape, new memory
    record()
    net[1].running_mean = torch.full((4,), 7.0)  # a reassigned buffer
    record()
    net[2].weight = nn.Parameter(torch.randn(2, 4))  # a replaced parameter, same name and shape
    record()
    with torch.no_grad():
        net[2].bias.add_(1.0)  # in place on the new parameter
    record()
    net[0] = nn.Linear(3, 4)  # a replaced module
    record()
    net.append(nn.Identity())  # a module added: same layout, so the snapshot stays in the segment
    net[0].bias = nn.Parameter(net[0].bias.detach() + 1.0)  # name re-registered with a new parameter
    record()
    del net[0].bias  # removed and added back (a new dict entry, equal name)
    net[0].bias = nn.Parameter(torch.zeros(4))
    record()
    assert len(t.segments) == 1
    for i, (vec, bufs) in enumerate(expected):
        s = t[i]
        assert torch.equal(s.vector, vec), i
        assert all(torch.equal(s.buffers[k], v) for k, v in bufs.items()), i


def test_packs_rotate_and_every_pack_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(Trajectory, "PACK_BYTES", 30_000)  # about two snapshots per pack
    p = store(tmp_path, n=9, durable="flush")
    packs = sorted(q.name for q in (p / "snapshots").glob("*.pack"))
    assert packs == ["00000000.pack", "00000002.pack", "00000004.pack", "00000006.pack", "00000008.pack"]
    assert_all(Trajectory.open(p), 9)
    assert Trajectory.check(p).ok
    (p / "index.jsonl").write_bytes(b"")  # every line lost: the packs still know every snapshot
    rep = Trajectory.check(p)
    assert rep.recoverable == list(range(9)) and rep.lost == []
    assert Trajectory.check(p, repair=True).repaired
    assert_all(Trajectory.open(p), 9)


def test_repair_rebuilds_a_damaged_manifest_from_the_packs(tmp_path):
    p = store(tmp_path, n=8, meta={"seed": 1})  # two segments
    manifest = p / "manifest.json"
    data = manifest.read_bytes()
    manifest.write_bytes(data.replace(b'"1.weight"', b'"1.weighs"', 1))
    with pytest.raises(CorruptTrajectoryError, match="manifest.json fails its checksum"):
        Trajectory.open(p)
    rep = Trajectory.check(p)
    assert not rep.ok and rep.problems[0][0] == "manifest.json"
    rep = Trajectory.check(p, repair=True)
    assert rep.repaired and "rebuilt" in str(rep) and "run metadata (meta)" in str(rep), str(rep)
    assert (p / "manifest.json.damaged").read_bytes() == data.replace(b'"1.weight"', b'"1.weighs"', 1)
    t = Trajectory.open(p)
    assert_all(t, 8)
    assert [(s.start, s.stop) for s in t.segments] == [(0, 6), (6, 8)] and t.meta == {}
    assert Trajectory.check(p).ok


def test_a_deleted_manifest_is_damage_that_repair_rebuilds(tmp_path, capsys):
    p = store(tmp_path, n=8)  # two segments
    (p / "manifest.json").unlink()
    with pytest.raises(CorruptTrajectoryError, match="manifest.json is missing.*check .* --repair"):
        Trajectory.open(p)
    with pytest.raises(CorruptTrajectoryError, match="manifest.json is missing.*check .* --repair"):
        Trajectory(p)  # was "cannot create a trajectory in ...: the directory is not empty"
    assert cli.main(["check", str(p)]) == 1  # reported as damage, not "not a trajectory"
    out = capsys.readouterr().out
    assert "damaged: manifest.json" in out and "DAMAGED" in out, out
    rep = Trajectory.check(p, repair=True)
    assert rep.repaired and "rebuilt" in str(rep), str(rep)
    t = Trajectory.open(p)
    assert_all(t, 8)
    assert [(s.start, s.stop) for s in t.segments] == [(0, 6), (6, 8)]
    assert Trajectory.check(p).ok


def test_one_walk_equals_torchs_named_parameters_and_buffers():
    from landscape.trajectory.capture import named_tensors

    shared = nn.Linear(2, 2)
    inner = nn.Sequential(nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4))
    nets = [
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), inner, nn.Sequential(inner, nn.ReLU())),  # shared module
        nn.Sequential(shared, nn.ReLU(), shared),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten()),
    ]
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight  # a tied parameter under two names
    tied.register_buffer("scale", torch.ones(1), persistent=False)
    nets.append(tied)
    for net in nets:
        params, buffers = named_tensors(net)
        assert [(k, id(v)) for k, v in params] == [(k, id(v)) for k, v in net.named_parameters()]
        assert [(k, id(v)) for k, v in buffers.items()] == [(k, id(v)) for k, v in net.named_buffers()]


# --------------------------------------------------------------------------- group commit (the writer thread)
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
_json = st.recursive(
    _json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=8
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    step=st.integers(-(2**70), 2**70),
    epoch=st.floats(),
    wall=st.floats(),
    metrics=st.dictionaries(st.text(max_size=6), st.floats(), max_size=4),
    tags=st.dictionaries(st.text(max_size=6), _json, max_size=3),
    dtype=st.sampled_from(sorted(DTYPES)),
)
def test_fast_record_json_is_byte_identical_to_json_dumps(step, epoch, wall, metrics, tags, dtype):
    # The writer builds the record by hand; readers verify it with json.dumps: one differing byte = unreadable.
    rec = {"i": 7, "seg": 2, "step": step, "epoch": epoch, "time": wall, "dtype": dtype}
    rec.update(metrics=metrics_dict(metrics), tags=jsonify(tags, "tags"))
    assert record_json_fast(rec) == record_json(rec)


class _FailingOs:
    """``os`` for the trajectory module whose ``writev`` fails with ENOSPC from the ``after``-th call on."""

    def __init__(self, after):
        self.after, self.n = after, 0

    def __getattr__(self, name):
        attr = getattr(os, name)
        if name != "writev":
            return attr

        def writev(fd, bufs):
            self.n += 1
            if self.n >= self.after:
                data = b"".join(bytes(b) for b in bufs)
                os.write(fd, data[: len(data) // 3])  # a partial batch reaches the pack first
                raise OSError(28, "No space left on device")
            return attr(fd, bufs)

        return writev


@pytest.mark.parametrize(
    "surfaces_at, threaded", [("flush", True), ("append", True), ("close", True), ("flush", False), ("close", False)]
)
def test_writer_thread_error_surfaces_and_loses_nothing_written(tmp_path, monkeypatch, surfaces_at, threaded):
    monkeypatch.setattr(PackWriter, "THREADED", threaded)  # the writer thread, or batches inline
    p = tmp_path / "t"
    t = Trajectory.create(p, durable="flush")
    for i in range(4):
        append_expected(t, i)
    t.flush()  # snapshots 0-3 are written and synced (in one batch or more)
    writer.set_os(_FailingOs(after=1), monkeypatch.setattr)
    # All three queued, whatever the machine's load: with the default linger a slow append let the writer fail on
    # snapshot 4 alone, and appending 5 raised inside this loop (seen once at load 8-16).
    monkeypatch.setattr(PackWriter, "LINGER", 60.0)
    for i in range(4, 7):
        append_expected(t, i)  # queued; the next writev fails
    message = r"background writer of .* failed \(OSError: .*No space left.*snapshots before 4 are intact"
    if surfaces_at == "append":
        deadline = time.monotonic() + 30
        while t._writer.error is None and time.monotonic() < deadline:
            with t._writer.cond:
                t._writer.urgent = True  # write now, not after the linger
                t._writer.cond.notify_all()
            time.sleep(0.01)
        with pytest.raises(TrajectoryError, match=message):
            append_expected(t, 7)
    else:
        with pytest.raises(TrajectoryError, match=message):
            getattr(t, surfaces_at)()
    writer.set_os(os, monkeypatch.setattr)
    assert len(t) == 4  # the store forgot what was never written, and is closed for appending
    with pytest.raises(TrajectoryError, match="closed"):
        t.append(torch.zeros(3))
    assert_all(t, 4)  # ... but still reads
    t.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the writer removed its partial batch: recovery has nothing to drop
        r = Trajectory.open(p, "a")
    assert_resumes(r, p, 4)


def test_a_batch_failing_after_a_new_pack_cuts_only_what_it_wrote_to_that_pack(tmp_path, monkeypatch):
    # A batch that starts mid-pack and opens a new pack: a failed write into the new pack must cut the new pack
    # back to its start, not the old pack's offset (the old pack's descriptor is closed by then and its number
    # may already name the new pack, which would then be extended with zeros).
    p = tmp_path / "t"
    t = Trajectory.create(p, durable="flush")
    for i in range(4):
        append_expected(t, i)
    t.flush()
    monkeypatch.setattr(Trajectory, "PACK_BYTES", t._pack_size + 1)  # snapshot 4 still fits, 5 opens a pack
    # One batch for 4-6 whatever the machine's load: the writer thread waits for flush() instead of its linger.
    monkeypatch.setattr(PackWriter, "LINGER", 60.0)
    writer.set_os(_FailingOs(after=2), monkeypatch.setattr)  # 4 reaches the old pack, the new pack's write fails
    for i in range(4, 7):
        append_expected(t, i)
    with pytest.raises(TrajectoryError, match="No space left"):
        t.flush()
    writer.set_os(os, monkeypatch.setattr)
    packs = sorted((p / "snapshots").iterdir())
    assert len(packs) == 2 and packs[1].stat().st_size == 0  # the new pack cut back to nothing, not grown
    t.close()
    r = quiet_open(p, "a")
    assert len(r) in (4, 5)  # snapshot 4 is intact in the old pack: recovery may take it back
    assert_all(r, len(r))
    r.close()
    assert Trajectory.check(p).ok


def test_queued_snapshots_are_private_copies_and_readable_at_once(tmp_path):
    t = Trajectory.create(tmp_path / "t", durable="flush")
    v, b = torch.arange(6.0), torch.tensor([1, 2])
    t.append(v, buffers={"b": b})
    v += 100  # the caller changes its tensors while the snapshot waits in the queue
    b += 100
    s = t[0]  # reading a queued snapshot writes it first
    assert torch.equal(s.vector, torch.arange(6.0)) and torch.equal(s.buffers["b"], torch.tensor([1, 2]))
    t.close()
    s = Trajectory.open(tmp_path / "t")[0]
    assert torch.equal(s.vector, torch.arange(6.0)) and torch.equal(s.buffers["b"], torch.tensor([1, 2]))


@pytest.mark.slow
def test_unclosed_store_writes_its_queue_when_collected_and_at_exit(tmp_path):
    t = Trajectory.create(tmp_path / "gc", durable="flush")
    for i in range(3):
        t.append(torch.full((4,), float(i)))
    del t
    gc.collect()
    assert torch.equal(Trajectory.open(tmp_path / "gc").vectors()[:, 0], torch.tensor([0.0, 1.0, 2.0]))
    code = (
        "import torch, sys; from landscape.trajectory.store import Trajectory\n"
        f"t = Trajectory({str(tmp_path / 'exit')!r}, durable=False)\n"
        "for i in range(40): t.append(torch.full((4,), float(i)))\n"
        "sys.modules['__main__'].keep = t  # alive at exit: only the exit hook can write the queue\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    assert torch.equal(Trajectory.open(tmp_path / "exit").vectors()[:, 0], torch.arange(40.0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_cannot_append_through_its_parents_writer(tmp_path):
    t = Trajectory.create(tmp_path / "t", durable="flush")
    t.append(torch.zeros(2))
    pid = os.fork()
    if pid == 0:  # the child: a clear error, not a silent hang
        try:
            t.append(torch.ones(2))
            code = 2
        except TrajectoryError as e:
            code = 0 if "another process" in str(e) else 3
        except BaseException:  # noqa: BLE001
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    t.close()
    assert len(Trajectory.open(tmp_path / "t")) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_exiting_leaves_its_parents_durable_appends_alone(tmp_path):
    # A child forked from a durable="append" writer (a data-loader worker, a user's os.fork) that exits through
    # the interpreter's exit hook must not cut the pack's zero reserve: the parent appended into it since the fork.
    from landscape.trajectory import writer as writer_module

    p = tmp_path / "t"
    t = Trajectory.create(p)
    for i in range(2):
        append_expected(t, i)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(w)
            os.read(r, 1)  # the parent's appends 2-4 returned: they are synced
            writer_module.drain_writers()  # what atexit runs at the child's exit
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(r)
    for i in range(2, 5):
        append_expected(t, i)
    os.write(w, b"x")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert_all(Trajectory.open(p), 5)  # before the parent closes: its appends were acknowledged
    t.close()
    assert_all(Trajectory.open(p), 5)
    assert Trajectory.check(p).ok


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs SIGKILL")
def test_queued_snapshots_reach_the_disk_without_flush_and_then_survive_sigkill(tmp_path):
    # The writer thread writes a partial batch after LINGER: an idle appender's snapshots do not wait for
    # the next append or flush; once a reader sees them, killing the writer loses none of them.
    p = tmp_path / "t"
    code = (
        "import sys, time, torch\n"
        "from landscape.trajectory.store import Trajectory\n"
        f"t = Trajectory({str(p)!r}, durable='flush')\n"
        "for i in range(5): t.append(torch.full((3,), float(i)))\n"
        "print('appended', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "appended"
        deadline, n = time.monotonic() + 60, 0
        while n < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
            n = len(Trajectory.open(p)) if (p / "snapshots").exists() else 0  # a reader rolls the packs forward
        assert n == 5, "the writer thread did not write an idle appender's queue"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    r = quiet_open(p, "a")
    assert torch.equal(r.vectors()[:, 0], torch.arange(5.0))
    r.close()


def test_a_failed_sync_names_the_first_unwritten_snapshot(tmp_path, monkeypatch):
    class FailingSync:
        def __getattr__(self, name):
            if name == "fdatasync":

                def fail(fd):
                    raise OSError(5, "Input/output error")

                return fail
            return getattr(os, name)

    t = Trajectory.create(tmp_path / "t", durable="flush")
    for i in range(3):
        t.append(torch.full((2,), float(i)))
    writer.set_os(FailingSync(), monkeypatch.setattr)
    with pytest.raises(TrajectoryError, match=r"Input/output error.*snapshots before 0 are intact"):
        t.flush()  # the batch of 0-2 was written, then its sync failed: nothing is vouched for
    writer.set_os(os, monkeypatch.setattr)
    assert len(t) == 0


class _FullDiskOs:
    """``os`` for the store's modules on a disk with room for snapshots but not for a 1 MiB zero reserve."""

    def __getattr__(self, name):
        if name != "pwrite":
            return getattr(os, name)

        def pwrite(fd, data, offset):
            if len(data) > 4096:
                os.pwrite(fd, bytes(data[:4096]), offset)  # what fitted, then the disk is full
                raise OSError(28, "No space left on device")
            return os.pwrite(fd, data, offset)

        return pwrite


def test_a_disk_too_full_for_the_zero_reserve_still_takes_durable_appends(tmp_path, monkeypatch):
    # The reserve only saves a metadata sync: a disk with room for the snapshots but not for 1 MiB of zeros
    # must take every append (it failed the first append of each pack), and leave no zeros behind.
    writer.set_os(_FullDiskOs(), monkeypatch.setattr)
    p = tmp_path / "t"
    t = Trajectory.create(p)
    for i in range(3):
        append_expected(t, i)
        end = t._records[-1]["off"] + t._records[-1]["size"]
        assert _pack(p).stat().st_size == end  # no reserve, nor the part of it that fitted
    t.close()
    writer.set_os(os, monkeypatch.setattr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing for recovery to drop
        assert_resumes(Trajectory.open(p, "a"), p, 3)


def test_a_failed_durable_append_starting_a_segment_keeps_the_earlier_segments(tmp_path, monkeypatch):
    t = Trajectory.create(tmp_path / "t")  # durable="append": written and synced inside append
    t.append(torch.zeros(2))
    t.append(torch.ones(2))
    writer.set_os(_FailingOs(after=1), monkeypatch.setattr)
    with pytest.raises(TrajectoryError, match=r"No space left.*snapshots before 2 are intact"):
        t.append(torch.zeros(3), layout=ParamLayout([TensorSpec("w", (3,), 0, 3, "", None, "")]))
    writer.set_os(os, monkeypatch.setattr)
    assert len(t) == 2 and [(s.start, s.stop) for s in t.segments] == [(0, 2)]
    assert torch.equal(t.vectors(), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    r = quiet_open(tmp_path / "t", "a")
    assert [(s.start, s.stop) for s in r.segments] == [(0, 2)]
    r.close()


def test_a_flipped_version_digit_is_damage_that_check_reports(tmp_path):
    """One byte turned the sealed manifest's version 2 into 3: check() raised 'newer version' instead of reporting."""
    p = store(tmp_path, n=2)
    f = p / "manifest.json"
    raw = f.read_bytes()
    assert raw.count(b'"version": 2') == 1
    f.write_bytes(raw.replace(b'"version": 2', b'"version": 3'))
    rep = Trajectory.check(p)  # never raises on a damaged store
    assert not rep.ok and any(name == "manifest.json" and "checksum" in why for name, why in rep.problems), str(rep)
    with pytest.raises(CorruptTrajectoryError, match="newer than the 2 this package reads.*or the manifest is corrupt"):
        Trajectory.open(p)
    f.write_bytes(raw)  # the original bytes are intact: nothing was rewritten
    assert len(Trajectory.open(p)) == 2
