"""Im switched runs continue from their plain run's state at the switch: the stored results of training them whole."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from figures.im._runs import ImRuns, _train
from figures.im._settings import RunSpec
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
