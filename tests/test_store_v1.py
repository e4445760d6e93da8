"""Stores of format version 1 (up to ``ed875bd``): read-only with a clear message, one-command migration.

``tests/data/trajectory_v1`` was written by the version-1 code with :func:`v1_expected`.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from landscape.params import ParamLayout
from landscape.trajectory import FORMAT_VERSION, Trajectory, TrajectoryError

FIXTURE = Path(__file__).parent / "data" / "trajectory_v1"
A = ParamLayout.from_model(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
B = ParamLayout.from_model(nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)))


def v1_expected(i):
    """Keyword arguments of ``append`` for snapshot ``i`` of the fixture, plus its vector."""
    layout = A if i < 2 else B
    dtype = torch.float64 if i < 2 else torch.float32
    return {
        "vector": torch.linspace(-1, 1, layout.numel, dtype=dtype) * (i + 1),
        "step": 10 * i,
        "epoch": i / 2,
        "wall_time": 100.0 + i,
        "metrics": {"loss": 1 / (i + 1)},
        "tags": {"i": i, "event": "grow" if i == 2 else None},
        "buffers": {"bn.running_mean": torch.tensor([i, i + 0.5])},
        "layout": layout,
    }


def assert_fixture(t):
    assert len(t) == 3 and t.meta["model"] == "tiny"
    assert [(s.start, s.stop) for s in t.segments] == [(0, 2), (2, 3)]
    for i in range(3):
        kw, s = v1_expected(i), t[i]
        assert s.vector.dtype == kw["vector"].dtype and torch.equal(s.vector, kw["vector"])
        assert (s.step, s.epoch, s.wall_time, s.metrics, s.tags) == (
            kw["step"],
            kw["epoch"],
            kw["wall_time"],
            kw["metrics"],
            kw["tags"],
        )
        assert torch.equal(s.buffers["bn.running_mean"], kw["buffers"]["bn.running_mean"])
        assert s.layout == kw["layout"]


@pytest.fixture
def v1(tmp_path):
    p = tmp_path / "old"
    shutil.copytree(FIXTURE, p)
    return p


def _files(p):
    return {q.relative_to(p): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}


def test_v1_store_opens_read_only_with_a_clear_message(v1):
    before = _files(v1)
    with pytest.warns(UserWarning, match=r"version-1 trajectory: read-only.*check .* --migrate"):
        t = Trajectory.open(v1)
    assert_fixture(t)
    for attempt in (
        lambda: Trajectory.open(v1, "a"),
        lambda: Trajectory(v1),
        lambda: Trajectory.create(v1, exist_ok=True),
    ):
        with pytest.raises(TrajectoryError, match=r"version-1 trajectory .*opens read-only.*check .* --migrate"):
            attempt()
    assert _files(v1) == before


def test_check_migrate_converts_and_keeps_the_original(v1):
    before = _files(v1)
    rep = Trajectory.check(v1)
    assert rep.version == 1 and rep.intact == [0, 1, 2] and "--migrate" in str(rep)
    rep = Trajectory.check(v1, migrate=True)
    assert rep.version == FORMAT_VERSION and "v1-backup" in str(rep)
    assert _files(v1.with_name("old.v1-backup")) == before  # the original, byte for byte
    t = Trajectory.open(v1)  # no warning: it is a current store now
    assert_fixture(t)
    assert Trajectory.check(v1).ok
    with Trajectory.open(v1, "a") as w:
        kw = v1_expected(2)
        w.append(kw.pop("vector"), **kw)
    assert len(Trajectory.open(v1)) == 4


@pytest.mark.slow
def test_cli_check_migrate(v1):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = [sys.executable, "-m", "landscape", "check", str(v1)]
    out = subprocess.run(run, capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "--migrate" in out.stdout, out.stderr
    out = subprocess.run([*run, "--migrate"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "migrated 3 snapshots" in out.stdout, out.stderr
    assert_fixture(Trajectory.open(v1))
