"""Recording every step: the fast path of `append_model` (model unchanged) stores what the general path does."""

import threading
import time

import pytest
import torch
from torch import nn

from landscape.params import ParamLayout, parameters_to_vector
from landscape.trajectory import Trajectory
from landscape.trajectory.capture import Rows


def _net(dtype: torch.dtype, buffers: bool) -> nn.Module:
    torch.manual_seed(0)
    mid: nn.Module = nn.BatchNorm1d(5) if buffers else nn.Tanh()
    return nn.Sequential(nn.Linear(3, 5), mid, nn.Linear(5, 2)).to(dtype)


def _train_step(net: nn.Module, k: int) -> None:
    with torch.no_grad():
        for j, p in enumerate(net.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1000 * k + j)).to(p.dtype))
    if any(True for _ in net.buffers()):
        net(torch.randn(4, 3, generator=torch.Generator().manual_seed(k)).to(next(net.parameters()).dtype))


def _store(tmp_path, where: str, name: str) -> Trajectory:
    if where == "memory":
        return Trajectory()
    durable = {"False": False}.get(where, where)
    return Trajectory.create(tmp_path / name, durable=durable)


@pytest.mark.parametrize("where", ["memory", "False", "flush", "append"])
@pytest.mark.parametrize("dtype,buffers", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)])
def test_every_step_snapshots_equal_the_models_vectors_across_blocks(tmp_path, monkeypatch, where, dtype, buffers):
    # Small blocks so that the run crosses several of them; the reference goes through append() with a fresh vector.
    monkeypatch.setattr(Rows, "BLOCK", 4)
    net = _net(dtype, buffers)
    fast, ref = _store(tmp_path, where, "fast"), _store(tmp_path, where, "ref")
    expected = []
    for k in range(11):
        if k:
            _train_step(net, k)
        kw = {"step": k, "epoch": k / 4, "metrics": {"batch_loss": 1.0 / (k + 1)}, "tags": {"k": k} if k % 3 else {}}
        fast.append_model(net, **kw)
        vec = parameters_to_vector(net).clone()
        bufs = {n: b.clone() for n, b in net.named_buffers()}
        ref.append(vec, layout=ParamLayout.from_model(net), buffers=bufs, wall_time=fast.wall_times[-1], **kw)
        expected.append((vec, bufs))
    assert fast._fast is not None  # the fast path was taken (a model on the CPU, unchanged between snapshots)
    for t in (fast, ref):
        t.close()
    if where != "memory":
        fast, ref = Trajectory.open(tmp_path / "fast"), Trajectory.open(tmp_path / "ref")
        assert Trajectory.check(tmp_path / "fast").ok
    assert len(fast) == len(ref) == 11 and len(fast.segments) == 1
    for k, (vec, bufs) in enumerate(expected):
        a, b = fast[k], ref[k]
        assert a.vector.dtype == dtype and torch.equal(a.vector, vec) and torch.equal(b.vector, vec), k
        assert a.buffers.keys() == bufs.keys() and all(torch.equal(a.buffers[n], v) for n, v in bufs.items()), k
        assert (a.step, a.epoch, a.wall_time, a.metrics, a.tags) == (b.step, b.epoch, b.wall_time, b.metrics, b.tags)
    if where != "memory":  # byte for byte the same files: the fast path changes no record and no frame
        for name in ("index.jsonl",):
            lines = [(tmp_path / d / name).read_bytes().splitlines() for d in ("fast", "ref")]
            assert len(lines[0]) == len(lines[1]) == 11
        packs = [sorted((tmp_path / d / "snapshots").iterdir()) for d in ("fast", "ref")]
        assert [p.read_bytes() for p in packs[0]] == [p.read_bytes() for p in packs[1]]


def test_the_fast_path_keeps_to_its_segment_and_checks_every_value(tmp_path):
    net = _net(torch.float32, False)
    t = Trajectory.create(tmp_path / "t", durable="flush")
    t.append_model(net, step=0)
    t.append_model(net, step=1)
    # A segment started by another call (the same layout object, new_segment) ends the fast path's segment.
    t.append(parameters_to_vector(net), layout=t.layout, new_segment=True, step=2)
    t.append_model(net, step=3)
    t.append_model(net, step=4, new_segment=True)
    t.append_model(net, step=5)
    assert [s.start for s in t.segments] == [0, 2, 4]
    with pytest.raises(TypeError, match="epoch"):
        t.append_model(net, step=6, epoch="1")
    with pytest.raises(TypeError, match="metric"):
        t.append_model(net, step=6, metrics={"loss": "x"})
    with pytest.raises(ValueError, match="whole number"):
        t.append_model(net, step=6.5)
    assert len(t) == 6  # a refused snapshot is not stored
    t.close()
    with pytest.raises(Exception, match="closed"):
        t.append_model(net, step=6)
    r = Trajectory.open(tmp_path / "t")
    assert r.steps.tolist() == [0, 1, 2, 3, 4, 5] and torch.equal(r[5].vector, parameters_to_vector(net))


def test_the_append_that_fills_a_batch_writes_it_and_the_thread_writes_what_lingers(tmp_path, monkeypatch):
    from landscape.trajectory.writer import PackWriter

    writers = []
    real = PackWriter._write

    def spy(self, batch):
        writers.append(("thread" if threading.current_thread() is self.thread else "appender", len(batch)))
        return real(self, batch)

    monkeypatch.setattr(PackWriter, "_write", spy)
    monkeypatch.setattr(PackWriter, "LINGER", 600.0)
    net = _net(torch.float32, False)
    t = Trajectory.create(tmp_path / "t", durable="flush")
    for k in range(PackWriter.BATCH):
        t.append_model(net, step=k)
    assert t._writer.written == PackWriter.BATCH  # written before the 64th append returned
    assert writers == [("appender", PackWriter.BATCH)]
    t.append_model(net, step=PackWriter.BATCH)
    t.flush()  # a sync request: the writer thread writes the leftover and syncs
    assert writers[1:] == [("thread", 2)]  # the snapshot and the sync request
    t.close()


def test_batches_of_both_threads_reach_the_pack_in_order(tmp_path, monkeypatch):
    # The writer thread writes what lingers while the appender writes full batches: the lock keeps them in order.
    from landscape.trajectory.writer import PackWriter

    monkeypatch.setattr(PackWriter, "LINGER", 0.0005)
    monkeypatch.setattr(PackWriter, "BATCH", 5)
    net = _net(torch.float32, False)
    expected = []
    with Trajectory.create(tmp_path / "t", durable=False) as t:
        for k in range(300):
            _train_step(net, k + 1)
            t.append_model(net, step=k)
            expected.append(parameters_to_vector(net).clone())
            if k % 7 == 0:
                time.sleep(0.001)  # let the writer thread take a partial batch
    r = Trajectory.open(tmp_path / "t")
    assert Trajectory.check(tmp_path / "t").ok and r.steps.tolist() == list(range(300))
    assert all(torch.equal(r[k].vector, v) for k, v in enumerate(expected))
