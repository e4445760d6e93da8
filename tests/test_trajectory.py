import contextlib
import hashlib
import importlib.util
import json
import math
import os
import pickle
import queue
import random
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.params import ParamLayout, parameters_to_vector
from landscape.trajectory import (
    FORMAT_VERSION,
    CorruptTrajectoryError,
    Segment,
    Trajectory,
    TrajectoryError,
)

HELPER = Path(__file__).with_name("_trajectory_writer.py")
_spec = importlib.util.spec_from_file_location("_trajectory_writer", HELPER)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def big_net(seed=0):  # the small net after a tunnel opened two more hidden units
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))


def bn_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5)
    )


A = ParamLayout.from_model(small_net())
B = ParamLayout.from_model(big_net())


@pytest.fixture(params=["memory", "disk"])
def kind(request):
    return request.param


@pytest.fixture
def make(kind, tmp_path):
    """make(layout=None, meta=None) -> a new trajectory of the parametrized kind."""
    made = []

    def _make(layout=None, meta=None):
        t = (
            Trajectory(layout=layout, meta=meta)
            if kind == "memory"
            else Trajectory.create(tmp_path / f"t{len(made)}", layout, meta=meta)
        )
        made.append(t)
        return t

    yield _make
    for t in made:
        t.close()


def reread(t):
    """The same trajectory as a reader sees it: reopened from disk, or itself in memory."""
    if t.path is None:
        return t
    t.close()
    return Trajectory.open(t.path)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, [
        (m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()
    ]


def assert_unchanged(model, before):
    sd, flags = before
    now = model.state_dict()
    assert sd.keys() == now.keys()
    for k in sd:
        assert torch.equal(sd[k], now[k]) and sd[k].dtype == now[k].dtype, k
    assert flags == state(model)[1]


def assert_snapshot(snap, kw, index):
    assert snap.index == index
    assert snap.vector.dtype == kw["vector"].dtype and torch.equal(snap.vector, kw["vector"])
    assert snap.step == kw["step"] and snap.epoch == kw["epoch"] and snap.wall_time == kw["wall_time"]
    assert snap.metrics == kw["metrics"] and snap.tags == kw["tags"]
    assert snap.buffers.keys() == kw["buffers"].keys()
    for k, v in kw["buffers"].items():
        assert snap.buffers[k].dtype == v.dtype and torch.equal(snap.buffers[k], v), k
    assert snap.layout == kw["layout"]


def fill(t, n, start=0):
    for i in range(start, start + n):
        kw = writer.expected(i)
        assert t.append(kw.pop("vector"), **kw) == i


# --------------------------------------------------------------------------- behaviour (memory and disk)
def test_round_trip_metadata_and_dtypes(make):
    t = make(meta={"model": "mlp", "seed": 3})
    fill(t, 8)  # crosses the layout switch at writer.SWITCH
    t.append(
        torch.arange(B.numel, dtype=torch.float32),
        layout=B,
        step=99,
        metrics={"acc": 0.5},
        tags={"opt": ("sgd", 1)},
        buffers=writer.expected(0)["buffers"],
    )
    t = reread(t)
    assert len(t) == 9 and t.meta == {"model": "mlp", "seed": 3}
    for i in list(range(8)) + [-9, -2]:
        assert_snapshot(t[i], writer.expected(i % 9), i % 9)
    assert [s.index for s in t] == list(range(9))
    last = t[-1]
    assert last.vector.dtype == torch.float32 and torch.equal(last.vector, torch.arange(B.numel, dtype=torch.float32))
    assert last.tags == {"opt": ["sgd", 1]}  # JSON round trip, identical in memory and on disk
    np.testing.assert_array_equal(t.steps, [10 * i for i in range(8)] + [99])
    np.testing.assert_array_equal(t.epochs, [i / 4 for i in range(8)] + [0.0])
    np.testing.assert_array_equal(t.metric("loss")[:8], [1 / (i + 1) for i in range(8)])
    assert math.isnan(t.metric("loss")[8]) and np.isnan(t.metric("acc")[:8]).all() and t.metric("acc")[8] == 0.5
    assert t.metric_names == ["loss", "acc"] and t.tags(2) == {"run": "kill", "i": 2, "event": None}
    with pytest.raises(IndexError, match="9 snapshots"):
        t[9]
    with pytest.raises(TypeError, match="iter_blocks"):
        t[1:3]


def test_segments_follow_layout_changes(make):
    t = make()
    for n, layout in ((3, A), (2, B), (1, A)):
        for _ in range(n):
            t.append(torch.randn(layout.numel), layout=layout)
    t.append(torch.randn(A.numel))  # layout None keeps the current segment
    t = reread(t)
    segs = t.segments
    assert [(s.index, s.start, s.stop) for s in segs] == [(0, 0, 3), (1, 3, 5), (2, 5, 7)]
    assert [s.layout for s in segs] == [A, B, A] and all(isinstance(s, Segment) for s in segs)
    assert [t[i].segment for i in range(7)] == [0, 0, 0, 1, 1, 2, 2] and t.layout == A
    with pytest.raises(ValueError, match="3 segments"):
        t.iter_blocks(2)  # raises on the call, not at the first next()
    with pytest.raises(ValueError, match="segments"):
        t.vectors([2, 3])
    assert t.vectors([3, -3]).shape == (2, B.numel)
    assert [r for r, _ in t.iter_blocks(1, segment=1)] == [range(3, 4), range(4, 5)]
    if t.path is not None:
        t = Trajectory.open(t.path, "a")
    t.append(torch.randn(A.numel), new_segment=True)  # e.g. an event that keeps the shape
    assert [(s.start, s.stop, s.layout) for s in reread(t).segments[2:]] == [(5, 7, A), (7, 8, A)]


def test_iter_blocks_and_vectors_agree_with_snapshots(make):
    t = make()
    for i in range(11):
        dt = torch.float64 if i % 3 == 0 else torch.float32
        t.append(torch.randn(A.numel, dtype=dt), layout=A, step=i)
    t = reread(t)
    ref = torch.stack([s.vector.double() for s in t])
    full = t.vectors()
    assert full.dtype == torch.float64 and torch.equal(full, ref)  # promoted, exact
    for b in (1, 4, 11, 50):
        blocks = list(t.iter_blocks(b))
        assert [r for r, _ in blocks] == [range(s, min(s + b, 11)) for s in range(0, 11, b)]
        assert all(m.shape == (len(r), A.numel) for r, m in blocks)
        assert torch.equal(torch.cat([m for _, m in blocks]), ref)
    assert torch.equal(t.vectors(slice(2, 5), dtype=torch.float32), ref[2:5].float())
    with pytest.raises(ValueError, match="block_size"):
        t.iter_blocks(0)


def test_wrong_vectors_are_rejected_naming_the_problem(make):
    t = make(layout=A)
    with pytest.raises(ValueError, match=rf"5 entries .* has {A.numel}"):
        t.append(torch.zeros(5))
    t.append(torch.zeros(A.numel))
    with pytest.raises(ValueError, match=rf"{B.numel} entries .*current segment.* {A.numel}"):
        t.append(torch.zeros(B.numel))
    with pytest.raises(ValueError, match="flat"):
        t.append(torch.zeros(2, A.numel))
    with pytest.raises(TypeError, match="dtype"):
        t.append(torch.zeros(A.numel, dtype=torch.int64))
    with pytest.raises(TypeError, match="tags\\['bad'\\]"):
        t.append(torch.zeros(A.numel), tags={"bad": object()})
    with pytest.raises(ValueError, match="buffers"):
        t.append(torch.zeros(A.numel), buffers={"x": torch.zeros(1)})
    assert len(t) == 1  # failed appends leave nothing behind
    t = reread(t)
    assert len(t) == 1 and len(t.segments) == 1


def test_step_epoch_and_time_are_checked_by_name(make):
    """A fractional step was truncated silently (2.7 -> 2); None or text failed with int()/float()'s own words."""
    t = make(layout=A)
    v = torch.zeros(A.numel)
    for kw, err, message in [
        ({"step": 2.7}, ValueError, "step must be a whole number .* got 2.7"),
        ({"step": None}, TypeError, "step must be a whole number .* got None"),
        ({"step": "3"}, TypeError, "step must be a whole number .* got '3'"),
        ({"epoch": None}, TypeError, "epoch must be a real number, got None"),
        ({"epoch": "1.5"}, TypeError, "epoch must be a real number, got '1.5'"),
        ({"wall_time": "now"}, TypeError, "wall_time must be a real number .* got 'now'"),
    ]:
        with pytest.raises(err, match=message):
            t.append(v, **kw)
    assert len(t) == 0
    t.append(v, step=np.int64(4), epoch=np.float32(0.5))
    t.append(v, step=5.0, epoch=1, wall_time=np.float64(7.0))
    t.append(v, step=torch.tensor(6), epoch=torch.tensor(1.5))
    t = reread(t)
    assert t.steps.tolist() == [4, 5, 6] and t.epochs.tolist() == [0.5, 1.0, 1.5] and t[1].wall_time == 7.0


def test_empty_trajectory_with_a_layout_gives_empty_matrices_of_its_width(make):
    t = make(layout=A)
    assert t.vectors().shape == (0, A.numel) and t.vectors([]).shape == (0, A.numel)  # (T, numel), T = 0
    assert reread(t).vectors().shape == (0, A.numel)
    assert make().vectors().shape == (0, 0)  # no layout: no width to give


def test_segment_must_be_an_integer(make):
    """segment='0' failed with "'<=' not supported between instances of 'int' and 'str'"."""
    from landscape.analyze import TrajectoryPCA

    t = make(layout=A)
    for k in range(3):
        t.append(torch.full((A.numel,), float(k)) + torch.arange(A.numel) ** 2 * k)
    with pytest.raises(TypeError, match="segment must be an integer index or None, got '0'"):
        list(t.iter_blocks(2, segment="0"))
    with pytest.raises(TypeError, match="segment must be an integer index or None, got '0'"):
        TrajectoryPCA(1).fit(t, segment="0")
    assert [r for r, _ in t.iter_blocks(2, segment=np.int64(0))] == [range(0, 2), range(2, 3)]


def test_stored_tensors_do_not_alias_caller_tensors(make):
    t = make()
    v, buf = torch.randn(A.numel), torch.randn(3)
    t.append(v, layout=A, buffers={"b": buf})
    v_ref, b_ref = v.clone(), buf.clone()
    v.add_(1.0)
    buf.add_(1.0)
    t[0].vector.add_(5.0)
    assert torch.equal(t[0].vector, v_ref) and torch.equal(t[0].buffers["b"], b_ref)


def test_bare_vectors_get_a_flat_layout(make):
    t = make()
    t.append(torch.tensor([0.5, -1.0]), step=0)
    t.append(torch.tensor([0.25, -0.5]), step=1)
    assert t.layout.numel == 2 and t.layout.names == ("vector",)
    assert torch.equal(reread(t).vectors(), torch.tensor([[0.5, -1.0], [0.25, -0.5]]))


def test_batchnorm_model_rebuilds_exactly(make):
    net = bn_net(1)
    x = torch.randn(16, 1, 6, 6)
    for _ in range(3):  # training-mode forwards move the running statistics; plain SGD steps move the weights
        net.zero_grad()
        net(x).square().mean().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad
    before = state(net)
    t = make()
    t.append_model(net, step=3, metrics={"loss": 0.1})
    assert_unchanged(net, before)
    t = reread(t)
    assert set(t.segments[0].buffer_names) == {k for k, _ in net.named_buffers()}
    template = bn_net(7)
    template_before = state(template)
    for rebuilt in (t.model_at(lambda: bn_net(5), 0), t.model_at(template, -1)):
        for k, v in net.state_dict().items():
            assert torch.equal(rebuilt.state_dict()[k], v), k
        rebuilt.eval()
        net.eval()
        assert torch.equal(rebuilt(x), net(x))
        net.train()
    assert_unchanged(template, template_before)


def test_model_at_across_segments(make):
    small, big = small_net(1), big_net(2)
    t = make()
    t.append_model(small, step=0)
    t.append_model(big, step=1, tags={"event": "tunnel-open"})
    t = reread(t)
    assert len(t.segments) == 2
    for i, f, ref in ((0, small_net, small), (1, big_net, big)):
        assert torch.equal(parameters_to_vector(t.model_at(f, i)), parameters_to_vector(ref))
    with pytest.raises(ValueError, match=r"snapshot 1 \(segment 1\).*'0.weight'\(6, 3\).*'0.weight'\(4, 3\)"):
        t.model_at(small_net, 1)
    t2 = Trajectory()
    t2.append_model(bn_net())
    with pytest.raises(ValueError, match="stores buffers .*'1.running_mean'.* but the model has"):
        t2.model_at(lambda: _drop_bn_buffers(bn_net()), 0)


def _drop_bn_buffers(net):
    net[1].track_running_stats = False
    net[1].running_mean = net[1].running_var = net[1].num_batches_tracked = None
    return net


def test_memory_and_disk_agree(tmp_path):
    mem, disk = Trajectory(meta={"a": 1}), Trajectory.create(tmp_path / "d", meta={"a": 1})
    for t in (mem, disk):
        fill(t, 9)
    disk = reread(disk)
    saved = Trajectory.open(mem.save(tmp_path / "saved").path)
    for other in (disk, saved):
        assert len(other) == len(mem) and other.segments == mem.segments and other.meta == mem.meta
        for a, b in zip(mem, other):
            assert_snapshot(
                b,
                {
                    "vector": a.vector,
                    "step": a.step,
                    "epoch": a.epoch,
                    "wall_time": a.wall_time,
                    "metrics": a.metrics,
                    "tags": a.tags,
                    "buffers": a.buffers,
                    "layout": a.layout,
                },
                a.index,
            )


# --------------------------------------------------------------------------- on-disk store
def test_open_and_append_modes(tmp_path):
    p = tmp_path / "run"
    with Trajectory.create(p, A, meta={"seed": 1}) as t:
        assert t.layout == A
    t = Trajectory.open(p, "a")  # an empty store remembers the layout it was created with
    assert len(t) == 0 and t.layout == A
    fill(t, 2)
    t.update_meta({"finished": False})
    with pytest.raises(TrajectoryError, match="another writer"):
        Trajectory.open(p, "a")
    r = Trajectory.open(p)  # readers coexist with the writer, and follow it
    assert len(r) == 2
    with pytest.raises(TrajectoryError, match="read-only"):
        r.append(torch.zeros(A.numel))
    fill(t, 6, start=2)
    assert r.refresh() == 6 and len(r.segments) == 2
    assert_snapshot(r[7], writer.expected(7), 7)
    t.close()
    with pytest.raises(TrajectoryError, match="closed"):
        t.append(torch.zeros(A.numel))
    with pytest.raises(FileExistsError, match="exist_ok"):
        Trajectory.create(p)
    with Trajectory.create(p, exist_ok=True, meta={"finished": True}) as t:
        assert len(t) == 8 and t.meta == {"seed": 1, "finished": True}
        fill(t, 1, start=8)
    with pytest.raises(TrajectoryError, match="ends in a segment .*'0.weight'"):
        Trajectory(p, layout=A)
    t = Trajectory.open(p)
    assert len(t) == 9 and t.meta["finished"] is True
    m = t.meta
    m["seed"] = 99
    assert t.meta["seed"] == 1


def test_a_boolean_mask_selects_snapshots_and_a_bool_is_no_index(make):
    """vectors([True, False]) returned snapshots 1 and 0 (operator.index(True) is 1) and a numpy mask was refused
    as 'got bool'; traj[True] was snapshot 1. A mask selects where it is true, as in numpy; a bool is no index."""
    t = make()
    for k in range(5):
        t.append(torch.full((2,), float(k)), step=10 * k)
    mask = t.steps >= 20
    want = torch.tensor([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    assert torch.equal(t.vectors(mask), want)
    assert torch.equal(t.vectors(mask.tolist()), want)
    assert torch.equal(t.vectors(torch.as_tensor(mask)), want)
    assert t.vectors(np.zeros(5, dtype=bool)).shape == (0, 2)
    assert torch.equal(t.vectors([4, -5]), torch.tensor([[4.0, 4.0], [0.0, 0.0]]))  # integers as before
    with pytest.raises(IndexError, match="one entry per snapshot"):
        t.vectors([True, False])
    with pytest.raises(TypeError, match="got a bool"):
        t[True]
    with pytest.raises(TypeError, match="got a bool"):
        t.vectors([1, True])


def test_the_constructor_says_when_a_path_to_read_did_not_exist(tmp_path):
    """Trajectory(path) on a mistyped path created an empty store without a word; a read then saw 0 snapshots.

    It still creates (a run started with Trajectory(path) works), but a directory that did not exist is named in a
    warning pointing at open() and create(); an existing store or an empty directory made on purpose opens quietly.
    """
    with Trajectory.create(tmp_path / "run") as t:
        fill(t, 2)
    with pytest.warns(UserWarning, match=r"no trajectory at .*run-typo: the directory did not exist.*Trajectory\.open"):
        t = Trajectory(tmp_path / "run-typo")
    assert len(t) == 0
    t.close()
    (tmp_path / "made").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Trajectory(tmp_path / "run") as t:  # an existing store: appended to, no warning
            assert len(t) == 2
        Trajectory(tmp_path / "made").close()  # a directory made for it
        Trajectory.create(tmp_path / "new").close()  # create() is the way to start a run
        Trajectory.create(tmp_path / "new2", exist_ok=True).close()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trajectory.open(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_check_names_a_file_as_a_file(tmp_path, capsys):
    from landscape.cli import main

    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(TrajectoryError, match="notes.txt is a file, not a trajectory directory"):
        Trajectory.check(f)  # as Trajectory.open says, not "the directory does not exist"
    assert main(["check", str(f)]) == 2
    assert "is a file, not a trajectory directory" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trajectory.check(tmp_path / "nothing")


def test_not_a_trajectory_or_newer_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trajectory.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrajectoryError, match="not a trajectory.*manifest.json"):
        Trajectory.open(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(TrajectoryError, match="not a trajectory"):
        Trajectory.open(other)
    with pytest.raises(TrajectoryError, match="not empty"):
        Trajectory.create(other)
    with pytest.raises(TrajectoryError, match="not a trajectory directory"):
        Trajectory.open(other / "notes.txt")
    (other / "manifest.json").write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(TrajectoryError, match="not a trajectory manifest"):
        Trajectory.open(other)
    (other / "manifest.json").write_text("{broken")
    with pytest.raises(CorruptTrajectoryError, match="manifest.json is not valid JSON"):
        Trajectory.open(other)
    p = tmp_path / "new"
    Trajectory.create(p, A).close()
    m = json.loads((p / "manifest.json").read_text())
    m["version"] = FORMAT_VERSION + 1
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(TrajectoryError, match=f"format version {FORMAT_VERSION + 1}, newer"):
        Trajectory.open(p)


def _disk(tmp_path, n=4):
    t = Trajectory.create(tmp_path / "t")
    fill(t, n)
    t.close()
    return tmp_path / "t"


def _loc(p, i):
    """(pack path, byte offset, size) of snapshot i, from its index line."""
    rec = json.loads((p / "index.jsonl").read_bytes().split(b"\n")[i])
    return p / "snapshots" / rec["file"], rec["off"], rec["size"]


def _patch(f, off, data):
    with open(f, "r+b") as fh:
        fh.seek(off)
        fh.write(data)


def test_flipped_byte_and_truncation_are_reported(tmp_path):
    p = _disk(tmp_path)
    f1, off1, size1 = _loc(p, 1)
    f3, off3, size3 = _loc(p, 3)
    assert f1 == f3 and f1.name == "00000000.pack"  # one pack per segment and session
    byte = f1.read_bytes()[off1 + size1 - 7]
    _patch(f1, off1 + size1 - 7, bytes([byte ^ 0x10]))  # inside the vector's bytes: only the digest can notice
    os.truncate(f3, off3 + size3 - 100)
    t = Trajectory.open(p)
    assert_snapshot(t[0], writer.expected(0), 0)
    assert_snapshot(t[2], writer.expected(2), 2)
    with pytest.raises(CorruptTrajectoryError, match=rf"snapshot 1: file .*{f1.name} at byte {off1} fails its digest"):
        t[1]
    with pytest.raises(CorruptTrajectoryError, match=rf"snapshot 3: file .*{f3.name} is truncated"):
        t.vectors([3])
    f1.unlink()
    with pytest.raises(CorruptTrajectoryError, match=rf"{f1.name} is missing"):
        Trajectory.open(p)[0]


def test_iteration_streams_one_file_at_a_time(tmp_path):
    p = _disk(tmp_path, 5)
    f, off, size = _loc(p, 3)
    _patch(f, off, b"garbage!")
    t = Trajectory.open(p)
    it = iter(t)
    assert [next(it).index for _ in range(3)] == [0, 1, 2]  # no up-front read of snapshot 3
    with pytest.raises(CorruptTrajectoryError, match="snapshot 3: .*00000000.pack"):
        next(it)
    blocks = t.iter_blocks(3)
    assert next(blocks)[0] == range(0, 3)
    with pytest.raises(CorruptTrajectoryError, match="snapshot 3: .*00000000.pack"):
        next(blocks)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pickle_payload_executes_nothing(tmp_path):
    live, marker = tmp_path / "live", tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(live)))  # the payload does run when unpickled...
    assert live.exists()
    p = _disk(tmp_path, 2)
    evil = pickle.dumps(_Payload(marker))
    f, off, _ = _loc(p, 1)
    os.truncate(f, off)
    with open(f, "ab") as fh:
        fh.write(evil)
    with pytest.raises(CorruptTrajectoryError, match="00000000.pack"):
        Trajectory.open(p)[1]
    # ...and even with an index line forged (and sealed) to match the pickle, it is never unpickled.
    lines = (p / "index.jsonl").read_bytes().split(b"\n")
    rec = json.loads(lines[1])
    del rec["sum"]
    rec.update(size=len(evil), digest=hashlib.sha256(evil).hexdigest())
    body = json.dumps(rec, separators=(",", ":")).encode()
    sealed = body[:-1] + b',"sum":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'
    (p / "index.jsonl").write_bytes(lines[0] + b"\n" + sealed + b"\n")
    for verify in (True, False):
        with pytest.raises(CorruptTrajectoryError, match="00000000.pack at byte .* is not a valid snapshot"):
            Trajectory.open(p, verify=verify)[1]
    assert not marker.exists()


def test_torn_index_line_and_partial_snapshot_are_dropped(tmp_path):
    p = _disk(tmp_path, 3)
    index = p / "index.jsonl"
    good = index.stat().st_size
    f, off, size = _loc(p, 2)
    pack_good = f.stat().st_size
    with open(index, "ab") as fh:
        fh.write(b'{"i":3,"seg":0,"step":30,"ep')  # a writer died inside this line...
    with open(f, "ab") as fh:
        fh.write(f.read_bytes()[off : off + size // 2])  # ...or inside its snapshot's bytes
    r = Trajectory.open(p)
    assert len(r) == 3 and r.refresh() == 0  # reported as absent, never returned as data
    with pytest.warns(UserWarning, match="torn index line for snapshot 3.*partial snapshot 3"):
        t = Trajectory.open(p, "a")
    assert len(t.dropped) == 2 and index.stat().st_size == good and f.stat().st_size == pack_good
    kw = writer.expected(3)
    assert t.append(kw.pop("vector"), **kw) == 3
    t.close()
    t = Trajectory.open(p)
    assert len(t) == 4
    for i in range(4):
        assert_snapshot(t[i], writer.expected(i), i)


def test_corrupt_index_line_in_the_middle_is_an_error(tmp_path):
    p = _disk(tmp_path, 3)
    lines = (p / "index.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1][:10] + b"#" + lines[1][11:]
    (p / "index.jsonl").write_bytes(b"\n".join(lines))
    for mode in ("r", "a"):
        with pytest.raises(CorruptTrajectoryError, match=r"index.jsonl: line 2 \(snapshot 1\) fails its checksum"):
            Trajectory.open(p, mode)


# --------------------------------------------------------------------------- SIGKILL at many moments
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkilled_writer_loses_nothing_completed(tmp_path):
    """A writer is killed at every file-system call of an append, during recovery, and at random moments.

    After each kill the store must return exactly the bytes the writer wrote for every snapshot it
    holds (a superset of those the writer reported complete) and accept the next writer's appends.
    """
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr.txt", "w"),
        text=True,
        bufsize=1,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(s.strip()) for s in proc.stdout], daemon=True).start()
    store = tmp_path / "store"
    reported: set[int] = set()  # promised to survive the process's death: append returned with durable=True,
    flushed: set[int] = set()  # or a later flush returned (durable="flush" writers: group commit)
    queued: set[int] = set()  # append returned in a durable="flush" writer: queued, not yet promised
    rng = random.Random(0)
    checked = {}

    def run(plan, kill_after=None, delay=None):
        proc.stdin.write(f"{store} {plan}\n")
        pid, done = None, 0
        while True:
            msg, _, arg = lines.get(timeout=30).partition(" ")
            if msg == "pid":
                pid = int(arg)
            elif msg == "flushed":
                flushed.add(int(arg))
                reported.update(range(int(arg) + 1))
            elif msg == "done":
                (queued if plan.endswith(":flush") else reported).add(int(arg))
                done += 1
                if done == kill_after:
                    if delay:
                        threading.Event().wait(delay)
                    with contextlib.suppress(ProcessLookupError):  # it may have finished first
                        os.kill(pid, signal.SIGKILL)
            elif msg == "exit":
                return int(arg)
            else:
                pytest.fail(f"writer said {msg} {arg}; see {tmp_path / 'stderr.txt'}")

    def check():
        t = Trajectory.open(store)
        n = len(t)
        assert reported <= set(range(n)), "a snapshot reported complete was lost"
        assert flushed <= reported
        for i in range(n):
            if checked.get(i) != n:
                assert_snapshot(t[i], writer.expected(i), i)
                checked[i] = n
        expect = [(0, min(n, writer.SWITCH))] + ([(writer.SWITCH, n)] if n > writer.SWITCH else [])
        assert [(s.start, s.stop) for s in t.segments] == expect
        return n

    try:
        assert run("upto:3") == 0 and check() == 3
        killed = []
        # Every call of a plain append, then of the append that starts a new segment (manifest too);
        # after a torn half-written index line, kill the next writer during its crash recovery.
        plans = [f"kill:{k}" for k in range(1, 8)] + [f"open:{k}" for k in (1, 2, 3, 4)] + ["kill:8", "kill:9"]
        plans += ["upto:6"] + [f"kill:{k}" for k in range(1, 18)]
        for plan in plans:
            status = run(plan)
            killed.append(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)
            check()
        assert all(k for k, p in zip(killed, plans) if p.startswith("kill"))
        for _ in range(5):  # the parent kills at random moments
            n = check()
            status = run(f"run:{n + 100}", kill_after=rng.randint(1, 4), delay=rng.uniform(0, 0.02))
            check()
        # Group commit (durable="flush"): every call of the writer thread (pack and index writes of a
        # batch, syncs) and of a segment-starting append and a flush, then random moments; a killed
        # writer loses nothing a returned flush covered, and what survives is exactly what was written.
        flush_plans = [f"kill:{k}:flush" for k in range(1, 13)] + [f"open:{k}:flush" for k in (1, 2, 3)]
        for plan in flush_plans:
            status = run(plan)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, plan
            check()
        assert flushed, "no flush was reached"
        for _ in range(3):
            n = check()
            run(f"run:{n + 300}:flush", kill_after=rng.randint(1, 4), delay=rng.uniform(0, 0.02))
            check()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # recovery may report what it dropped
            t = Trajectory.open(store, "a")
        n = len(t)
        assert n > writer.SWITCH + 3
        fill(t, 1, start=n)
        t.close()
        assert check() == n + 1
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_model_at_rebuilds_a_store_recorded_with_trainable_parameters_only(tmp_path):
    # Stores written before frozen parameters joined the vector hold only the trainable ones.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    old = ParamLayout.from_model(net, params="trainable")
    vec = torch.cat([net[1].weight.detach().reshape(-1), net[1].bias.detach()]) + 1.0
    with Trajectory.create(tmp_path / "t") as t:
        t.append(vec, layout=old, step=0)
    rebuilt = Trajectory.open(tmp_path / "t").model_at(net, 0)
    assert torch.equal(rebuilt[0].weight, net[0].weight) and torch.equal(rebuilt[1].bias, net[1].bias + 1.0)
    other = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="use the factory"):
        Trajectory.open(tmp_path / "t").model_at(other, 0)
