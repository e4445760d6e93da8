"""Im switched runs continue from their plain run's state at the switch: the stored results of training them whole."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import figures.im._runs as runs_module
from figures.im._runs import ImRuns, _train
from figures.im._settings import RunSpec
from figures.im.fig7 import switched_specs
from landscape.trajectory import Trajectory
from tests.helpers import tiny_im_setup

# 4 epochs of 3 steps, the rate halved between 4 stages: switches at 25/50/75% are epoch ends (steps 3, 6, 9)
SETUP = dataclasses.replace(tiny_im_setup(), epochs=4, lr_stages=4)


def _whole(spec: RunSpec) -> Trajectory:
    """The run trained from its first step (no state reused), as the pool trained every switched run before."""
    traj = Trajectory()
    _train(SETUP, spec, traj)
    return traj


def _same_run(got: Trajectory, ref: Trajectory) -> None:
    """Bitwise the same snapshots (weights, buffers, steps, epochs, tags, metrics) and history."""
    assert len(got) == len(ref)
    for i in range(len(ref)):
        a, b = got[i], ref[i]
        assert (a.step, a.epoch, a.tags, a.metrics) == (b.step, b.epoch, b.tags, b.metrics)
        assert a.vector.dtype == b.vector.dtype and torch.equal(a.vector, b.vector)
        assert a.buffers.keys() == b.buffers.keys() and all(torch.equal(a.buffers[k], b.buffers[k]) for k in a.buffers)
    assert got.meta["history"] == ref.meta["history"] and got.meta["spec"] == ref.meta["spec"]


SWITCHED = [
    RunSpec("sgd", then="adam", switch_at=0.25),
    RunSpec("sgd", then="adam", switch_at=0.75),
    RunSpec("adam", then="sgd", switch_at=0.5, then_hyper={"lr": 0.01}),
    RunSpec("sgd", init=1, hyper={"lr": 0.1}, then="adadelta", switch_at=0.5),
    RunSpec("adam", arch="nin", then="sgd", switch_at=0.5),
    RunSpec("adam", batchnorm=False, then="sgd", switch_at=0.25),
]


def test_switch_steps_are_the_schedules():
    pool = ImRuns(SETUP)
    assert [pool.switch_step(s) for s in SWITCHED[:3]] == [3, 9, 6]
    assert pool.switch_step(RunSpec("sgd", then="adam", switch_at=0.3)) is None  # step 4: inside epoch 2
    assert pool.switch_step(RunSpec("sgd", then="adam", switch_at=0.0)) is None  # nothing before the switch
    assert pool.switch_step(RunSpec("sgd")) is None


@pytest.mark.parametrize("cached_plain", [False, True], ids=["plain-trained-alongside", "plain-trained-before"])
def test_switched_runs_continue_from_the_plain_run_bitwise(tmp_path, cached_plain):
    """The plain run's state at the switch (kept as it trains, or from a run up to the switch when it was trained
    before) continues into the switched run; every switched run equals the run trained whole, bit for bit."""
    specs = [*SWITCHED, RunSpec("sgd", then="adam", switch_at=0.3)]  # the last switches mid-epoch: trained whole
    plains = list(dict.fromkeys(dataclasses.replace(s, then=None, switch_at=None, then_hyper=()) for s in specs))
    if cached_plain:
        ImRuns(SETUP, tmp_path).many(plains)
    pool = ImRuns(SETUP, tmp_path)
    got = pool.many(specs + plains)
    for spec, run in zip(specs, got):
        _same_run(run.traj, _whole(spec))
        resumed = run.traj.meta["resumed_at_step"]
        assert resumed == pool.switch_step(spec)  # None for the mid-epoch switch
        events = [e for s in run.traj for e in s.tags.get("events", [])]
        assert [e["step"] for e in events] == [pool.switch_step(spec) or 4]
    for spec, run in zip(plains, got[len(specs) :]):  # keeping states changed nothing of the plain runs
        _same_run(run.traj, _whole(spec))
    assert not pool._kept and not pool._keep  # the states are dropped once many() returns


def test_a_pool_in_memory_continues_switched_runs_too():
    pool = ImRuns(SETUP)
    spec = RunSpec("sgd", then="adam", switch_at=0.5)
    (run,) = pool.many([spec])  # no plain run asked for: trained up to the switch, then continued
    assert run.traj.meta["resumed_at_step"] == 6
    _same_run(run.traj, _whole(spec))


@pytest.mark.parametrize("spec", SWITCHED[:4], ids=lambda s: s.key())
def test_the_plain_run_is_the_switched_run_up_to_the_switch(spec):
    """What the continuation rests on: the plain run's state at step k is bitwise the switched run's switch point
    (the same optimizer class, hyperparameters and rate schedule, minibatches and dropout masks until the switch)."""
    k = ImRuns(SETUP).switch_step(spec)
    plain = dataclasses.replace(spec, then=None, switch_at=None, then_hyper=())
    (state, loss) = _train(SETUP, plain, Trajectory(), keep={k}, stop=k)[k]
    whole = _whole(spec)
    (point,) = [s for s in whole if s.step == k]
    model = SETUP.model(spec)
    model.load_state_dict(state["model"])
    ref = whole.model_at(lambda: SETUP.model(spec), list(whole.steps).index(k))
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert point.metrics == {"batch_loss": loss}
    rows = whole.meta["history"][: k // SETUP.steps_per_epoch() + 1]
    assert state["callbacks"][0]["state"]["rows"] == rows  # every per-epoch measure up to the switch


# ---- states on disk: a plain run trained by one figure (process) leaves the states the switched runs continue from

FIG7 = [s for s in switched_specs(SETUP) if s.init == 0]  # SGD <-> Adam at 25/50/75%: steps 3, 6, 9
FIG7_PLAINS = [RunSpec("sgd"), RunSpec("adam")]

_TRAIN_PLAINS = """
import dataclasses, sys
import torch
from figures.im._runs import ImRuns
from figures.im._settings import RunSpec
from tests.helpers import tiny_im_setup
torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
ImRuns(dataclasses.replace(tiny_im_setup(), epochs=4, lr_stages=4), sys.argv[1]).many([RunSpec("sgd"), RunSpec("adam")])
"""


def _spy(monkeypatch) -> list[tuple[str, bool, int | None]]:
    """Record every training the pool starts: (run key, continued from a state, the step it stops at)."""
    calls: list[tuple[str, bool, int | None]] = []

    def spy(setup, spec, traj, *, keep=(), stop=None, start=None):
        calls.append((spec.key(), start is not None, stop))
        return _train(setup, spec, traj, keep=keep, stop=stop, start=start)

    monkeypatch.setattr(runs_module, "_train", spy)
    return calls


def test_the_plan_keeps_fig7s_switch_states_with_the_plain_runs():
    plan = ImRuns(SETUP, "unused").switch_plan()
    assert [plan[p.key()] for p in FIG7_PLAINS] == [{3, 6, 9}, {3, 6, 9}]


def test_a_later_process_continues_from_the_states_on_disk_bitwise(tmp_path, monkeypatch):
    """The plain runs are trained by another process; this one trains only what follows each switch, and every
    switched run is bitwise the run trained whole (from its first step, no state reused)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _TRAIN_PLAINS, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pool = ImRuns(SETUP, tmp_path)
    assert len(list((pool.root / "_states").glob("*.pt"))) == 6  # 2 plain runs x 3 switch steps
    calls = _spy(monkeypatch)
    got = pool.many(FIG7)
    assert sorted(calls) == sorted((s.key(), True, None) for s in FIG7)  # no first method trained again
    for spec, run in zip(FIG7, got):
        assert run.traj.meta["resumed_at_step"] == pool.switch_step(spec)
        _same_run(run.traj, _whole(spec))


def test_a_damaged_missing_or_foreign_state_is_trained_again(tmp_path, monkeypatch):
    """No state file is trusted that is not the one asked for: a flipped bit in a weight (which torch.load reads
    without complaint), a truncated file, a missing one and one copied from another step all have the first method
    trained again up to the switch, and the switched runs are still bitwise the runs trained whole."""
    ImRuns(SETUP, tmp_path).many(FIG7_PLAINS)
    files = {
        (p.key(), k): runs_module.state_file(tmp_path / SETUP.key(), p.key(), k, runs_module._state_code())
        for p in FIG7_PLAINS
        for k in (3, 6, 9)
    }
    sgd, adam = (p.key() for p in FIG7_PLAINS)
    blob = bytearray(files[sgd, 6].read_bytes())
    blob[-len(blob) // 3] ^= 0x01  # inside the payload
    files[sgd, 6].write_bytes(bytes(blob))
    files[sgd, 9].write_bytes(files[sgd, 9].read_bytes()[:100])
    files[adam, 3].unlink()
    files[adam, 6].write_bytes(files[adam, 9].read_bytes())  # a whole, valid file of another step
    calls = _spy(monkeypatch)
    pool = ImRuns(SETUP, tmp_path)
    got = pool.many(FIG7)
    for spec, run in zip(FIG7, got):
        _same_run(run.traj, _whole(spec))
    retrained = sorted((key, stop) for key, resumed, stop in calls if stop is not None)
    assert retrained == [(adam, 6), (sgd, 9)]  # once per run, up to its last bad state (adam's 9 is read)
    for (key, k), file in files.items():  # and written again, whole: a third pool reads every one
        assert runs_module.read_state(file, key, k, runs_module._state_code()) is not None


@pytest.mark.parametrize("other", ["code", "threads"])
def test_states_of_other_training_code_or_threads_are_not_read(tmp_path, monkeypatch, other):
    """A state file's name carries a digest of the landscape sources (the pool's key leaves them out) and the torch
    thread count (the rounding of the sums): under others the first method is trained again, as before."""
    ImRuns(SETUP, tmp_path).many(FIG7_PLAINS)
    if other == "code":
        monkeypatch.setattr(runs_module, "_library_digest", lambda: "other-code")
    calls = _spy(monkeypatch)
    spec = FIG7[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if other == "threads" else threads)
    try:
        (run,) = ImRuns(SETUP, tmp_path).many([spec])
    finally:
        torch.set_num_threads(threads)
    assert [c for c in calls if c[2] is not None] == [(RunSpec(spec.method).key(), False, 3)]
    if other == "code":  # at another thread count the run is another run's rounding: compared at one thread only
        _same_run(run.traj, _whole(spec))
