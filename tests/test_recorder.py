"""The plain-PyTorch recorder: the same snapshots as the package's own RecordTrajectory, its metadata, its errors."""

import copy
import json

import pytest
import torch
from torch import nn

from landscape import Trajectory
from landscape.factory import FactoryError
from landscape.params import parameters_to_vector
from landscape.train import FACTORY_KEY, Recorder, Trainer, factory_reference


def make_net(width: int = 6) -> nn.Module:
    """A module-level factory (importable, so its reference is valid)."""
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.Tanh(), nn.Linear(width, 2))


def _data(n=20):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)


def _hand_loop(net, data, *, batch_size, epochs=None, steps=None, lr=0.05, events_at=(), **rec_kw):
    """A hand-written loop doing what Trainer does (no shuffling, SGD), recording with a Recorder."""
    x, y = data
    n_batches = -(-x.shape[0] // batch_size)
    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rec = Recorder(Trajectory(), steps_per_epoch=n_batches, **rec_kw)
    rec.begin(model)
    model.train()
    step, epoch = 0, 0
    while (epochs is None or epoch < epochs) and (steps is None or step < steps):
        run_loss, run_n = 0.0, 0
        for b in range(n_batches):
            xb, yb = x[b * batch_size : (b + 1) * batch_size], y[b * batch_size : (b + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            run_loss += loss.item() * xb.shape[0]
            run_n += xb.shape[0]
            evs = [{"event": "mark"}] if step in events_at else []
            rec.step(model, loss=loss, events=evs)
            if steps is not None and step >= steps:
                break
        else:
            rec.epoch_end(model, metrics={"train_loss": run_loss / run_n})
            epoch += 1
            continue
        break
    return rec.close(model)


class _Mark:
    """Trainer callback raising an event at given steps (forces a snapshot, as the recorder's events= does)."""

    def __init__(self, at):
        self.at = set(at)

    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer, event):
        if event.step in self.at:
            trainer.add_event({"event": "mark"})  # tags (and forces) this step's snapshot, as events= does

    def on_epoch_end(self, trainer, event):
        pass

    def on_train_end(self, trainer):
        pass


def _trainer_run(net, data, *, lr=0.05, events_at=(), every_steps, every_epochs, **schedule):
    """What :func:`_hand_loop` does, by :class:`Trainer`; ``schedule``: its ``batch_size``, ``epochs``, ``steps``."""
    traj = Trajectory()
    cbs = [_Mark(events_at)] if events_at else []
    Trainer(
        net,
        data,
        nn.functional.mse_loss,
        lambda p: torch.optim.SGD(p, lr=lr),
        shuffle=False,
        trajectory=traj,
        record_every_steps=every_steps,
        record_every_epochs=every_epochs,
        callbacks=cbs,
        **schedule,
    ).fit()
    return traj


def assert_same_trajectory(a, b, *, exact=True, metrics=True):
    assert len(a) == len(b), (a.steps.tolist(), b.steps.tolist())
    assert a.steps.tolist() == b.steps.tolist()
    assert a.epochs.tolist() == pytest.approx(b.epochs.tolist(), abs=1e-12)
    for sa, sb in zip(a, b):
        if exact:
            assert torch.equal(sa.vector, sb.vector)
        else:
            torch.testing.assert_close(sa.vector, sb.vector, rtol=0, atol=1e-6)
        assert sorted(sa.buffers) == sorted(sb.buffers)
        for k in sa.buffers:
            assert (
                torch.equal(sa.buffers[k], sb.buffers[k])
                if exact
                else torch.allclose(sa.buffers[k].double(), sb.buffers[k].double(), atol=1e-6)
            )
        if metrics:
            assert sa.metrics.keys() == sb.metrics.keys()
            for k in sa.metrics:
                assert sa.metrics[k] == pytest.approx(sb.metrics[k], rel=1e-12, abs=1e-12), k
            assert sa.tags == sb.tags
    assert [s.layout.specs for s in a.segments] == [s.layout.specs for s in b.segments]


@pytest.mark.parametrize(
    "every_steps,every_epochs,epochs,steps,events_at",
    [
        (None, 1, 3, None, ()),
        (1, None, 2, None, ()),
        (2, 1, 3, None, ()),  # 4 batches an epoch: a step snapshot due at every epoch end goes to epoch_end
        (3, 2, 3, None, (5,)),
        (None, 1, None, 7, ()),  # stops mid-epoch: the final point is the last step
        (5, None, None, 9, (2, 9)),  # an event on the last step
        (None, None, 2, None, ()),  # only the first and last points
    ],
)
def test_hand_loop_records_what_trainer_records(every_steps, every_epochs, epochs, steps, events_at):
    torch.manual_seed(0)
    net, data = make_net(), _data()
    kw = dict(batch_size=5, epochs=epochs, steps=steps, events_at=events_at)
    ref = _trainer_run(net, data, every_steps=every_steps, every_epochs=every_epochs, **kw)
    got = _hand_loop(net, data, every_steps=every_steps, every_epochs=every_epochs, **kw)
    assert len(ref) >= 2
    assert got.segments[0].buffer_names  # BatchNorm statistics stored
    assert_same_trajectory(got, ref)


def test_without_epoch_length_the_step_snapshot_is_kept_and_epoch_end_does_not_repeat_it():
    net = make_net()
    rec = Recorder(None, every_steps=2, every_epochs=1)
    rec.begin(net)
    assert rec.step(net, loss=1.0) is False
    assert rec.step(net, loss=torch.tensor(0.5)) is True  # step 2, end of the epoch unknown
    assert rec.epoch_end(net, metrics={"train_loss": 0.7, "note": "text dropped"}) is False  # step 2 already written
    rec.step(net)
    assert rec.epoch_end(net, metrics={"train_loss": torch.tensor(0.25)}) is True
    traj = rec.close(net)
    assert traj.steps.tolist() == [0, 2, 3]
    assert traj.epochs.tolist() == [0.0, 0.0, 2.0]  # length unknown: completed epochs (as Trainer on an iterable)
    assert traj[1].metrics == {"batch_loss": 0.5}
    assert traj[2].metrics == {"train_loss": 0.25}


def test_framework_step_counts_and_fractional_epochs_are_taken_as_given():
    net = make_net()
    rec = Recorder(None, every_steps=4, every_epochs=None)
    rec.begin(net)
    for s in (2, 4, 6, 8):  # gradient accumulation: the framework's optimizer steps
        rec.step(net, step=s, epoch=s / 8)
    with pytest.raises(ValueError, match="does not advance"):
        rec.step(net, step=8)
    traj = rec.close()
    assert traj.steps.tolist() == [0, 4, 8]
    assert traj.epochs.tolist() == [0.0, 0.5, 1.0]


def test_buffers_false_stores_the_same_vectors_without_buffers():
    torch.manual_seed(0)
    net, data = make_net(), _data()
    with_b = _hand_loop(net, data, batch_size=5, epochs=2, every_steps=3)
    without = _hand_loop(net, data, batch_size=5, epochs=2, every_steps=3, buffers=False)
    assert without.segments[0].buffer_names == () and all(not s.buffers for s in without)
    assert without.steps.tolist() == with_b.steps.tolist()
    for a, b in zip(without, with_b):
        assert torch.equal(a.vector, b.vector)


def test_rebuilt_model_from_the_recorded_factory_matches_the_trained_one(tmp_path):
    torch.manual_seed(0)
    net = make_net(width=5)
    rec = Recorder(tmp_path / "run", every_steps=1, factory=make_net, factory_kwargs={"width": 5}, meta={"seed": 0})
    rec.begin(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = _data()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        rec.step(net)
    rec.close(net)
    traj = Trajectory.open(tmp_path / "run")
    ref = traj.meta[FACTORY_KEY]
    assert ref == {"target": f"{__name__}:make_net", "kwargs": {"width": 5}} and traj.meta["seed"] == 0
    json.dumps(traj.meta)  # plain JSON
    module, name = ref["target"].split(":")
    factory = getattr(__import__(module, fromlist=[name]), name)
    rebuilt = traj.model_at(lambda: factory(**ref["kwargs"]), len(traj) - 1)
    for (n, p), (_, q) in zip(net.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(p, q), n


def test_a_path_is_a_new_store_unless_exist_ok(tmp_path):
    net = make_net()
    with Recorder(tmp_path / "a", every_epochs=None) as rec:
        rec.begin(net)
        rec.step(net)
    assert Trajectory.open(tmp_path / "a").steps.tolist() == [0, 1]  # closed: the lock is free
    with pytest.raises(FileExistsError, match="exist_ok=True"):
        Recorder(tmp_path / "a")
    rec = Recorder(tmp_path / "a", exist_ok=True)
    rec.begin(net, step=1, epoch=0.0)
    rec.step(net)
    rec.close()
    assert Trajectory.open(tmp_path / "a").steps.tolist() == [0, 1, 2]  # the resumed run continues at step 1


class _FailsAt(nn.Module):
    """``make_net()`` raising ``RuntimeError("diverged")`` at its ``at``-th forward call (one a step, from 1)."""

    def __init__(self, at):
        super().__init__()
        self.net, self.at, self.calls = make_net(), at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("diverged")
        return self.net(x)


@pytest.mark.parametrize("every_steps,fail_at", [(None, 7), (None, 9), (2, 7), (3, 7)])
def test_an_exception_in_the_block_ends_the_run_as_the_trainer_does(tmp_path, every_steps, fail_at):
    """The block's exception closed the store without the point the model stopped at and without a word of why,
    where the package's Trainer records both (the error event on the final snapshot, or in the run metadata's
    late_events when that point was recorded already). The same run by both must be the same trajectory."""
    torch.manual_seed(0)
    net, (x, y) = _FailsAt(fail_at), _data()  # 4 batches of 5 an epoch; forward 9 is the first of epoch 3
    sched = dict(every_steps=every_steps, every_epochs=1)
    sgd = lambda p: torch.optim.SGD(p, lr=0.05)  # noqa: E731
    tr = Trainer(copy.deepcopy(net), (x, y), nn.functional.mse_loss, sgd, batch_size=5, epochs=3, shuffle=False,
                 trajectory=Trajectory(), record_every_steps=every_steps)  # fmt: skip
    tr.model.calls = 0  # the trainer's checks ran the model once
    with pytest.raises(RuntimeError, match="diverged"):
        tr.fit()
    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(RuntimeError, match="diverged"), Recorder(tmp_path / "a", steps_per_epoch=4, **sched) as rec:
        rec.begin(model)
        for _ in range(3):
            run = 0.0
            for b in range(0, 20, 5):
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(model(x[b : b + 5]), y[b : b + 5])
                loss.backward()
                opt.step()
                run += loss.item() * 5
                rec.step(model, loss=loss)
            rec.epoch_end(model, metrics={"train_loss": run / 20})
    stopped = fail_at - 1
    with Trajectory.open(tmp_path / "a", "a") as got:  # closed: the writer's lock is free
        want = tr.trajectory
        assert int(got.steps[-1]) == stopped == tr.step
        assert_same_trajectory(got, want)
        events = got.tags(-1).get("events", []) + got.meta.get("late_events", [])
        assert events == [{"step": stopped, "event": "error", "error": "RuntimeError", "message": "diverged"}]
        assert got.meta.get("late_events") == want.meta.get("late_events")
        assert torch.equal(got[-1].vector, parameters_to_vector(model))  # the point the model stopped at


def test_a_store_failing_while_the_block_fails_warns_releases_the_lock_and_the_blocks_error_propagates(
    tmp_path, monkeypatch
):
    net = make_net()

    def full(*a, **k):
        raise OSError("no space left on device")

    warned = pytest.warns(UserWarning, match=r"could not record the end of the run after KeyError.*no space")
    with warned, pytest.raises(KeyError, match="boom") as info, Recorder(tmp_path / "a", every_epochs=None) as rec:
        rec.begin(net)
        with torch.no_grad():
            net[0].bias.add_(1.0)  # a final point is due
        monkeypatch.setattr(rec.trajectory, "append_model", full)
        raise KeyError("boom")
    assert info.value.__context__ is None  # the block's own error, not the store's
    with Trajectory.open(tmp_path / "a", "a") as traj:  # the lock was released all the same
        assert traj.steps.tolist() == [0]


def test_a_given_trajectory_stays_open_and_gets_the_metadata():
    traj = Trajectory(meta={"run": "x"})
    rec = Recorder(traj, factory="pkg.nets:make", meta={"seed": 3})
    rec.begin(make_net())
    assert rec.close() is traj
    assert traj.meta == {"run": "x", "seed": 3, FACTORY_KEY: {"target": "pkg.nets:make", "kwargs": {}}}
    traj.append_model(make_net())  # still writable


def test_factory_reference_forms_and_errors():
    ref = {"target": "pkg.mod:Net.build", "kwargs": {"a": 1}}
    assert factory_reference(ref) == ref
    assert factory_reference(ref, {"b": 2}) == {"target": "pkg.mod:Net.build", "kwargs": {"a": 1, "b": 2}}
    assert factory_reference("pkg:f") == {"target": "pkg:f", "kwargs": {}}
    assert factory_reference(nn.Linear, {"in_features": 2})["target"] == "torch.nn.modules.linear:Linear"
    # the same rules (and messages) as the trainer's factory= (landscape.factory.as_factory_ref)
    with pytest.raises(FactoryError, match="package.module:function"):
        factory_reference("pkg.mod.f")
    with pytest.raises(FactoryError, match="lambda"):
        factory_reference(lambda: make_net())
    with pytest.raises(FactoryError, match="'target'"):
        factory_reference({"kwargs": {}})
    with pytest.raises(FactoryError, match="model factory"):
        factory_reference(3)
    with pytest.raises(FactoryError):
        factory_reference("pkg:f", [1])
    with pytest.raises(FactoryError, match="JSON-compatible"):
        Recorder(None, factory="pkg:f", factory_kwargs={"x": object()})
    with pytest.raises(ValueError, match="without factory"):
        Recorder(None, factory_kwargs={"width": 3})


@pytest.mark.parametrize("bad", [2.5, "2", True, 0])
@pytest.mark.parametrize("name", ["every_steps", "every_epochs"])
def test_schedules_take_positive_integers_alike(name, bad):
    """RecordTrajectory (Trainer's record_every_*) checks its schedule as Recorder does: 2.5 is no period."""
    import numpy as np

    from landscape.train import RecordTrajectory

    for make in (lambda **kw: Recorder(None, **kw), lambda **kw: RecordTrajectory(Trajectory(), **kw)):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer or None, got {bad!r}"):
            make(**{name: bad})
        assert getattr(make(**{name: np.int64(3)}), name) == 3  # numpy integers are integers


def test_step_counts_must_be_whole_numbers():
    """Recorder.step(step=2.5) was truncated to step 2 silently (and begin(step=1.5) to 1)."""
    net = make_net()
    with pytest.raises(ValueError, match="step must be a whole number .* got 1.5"):
        Recorder(None).begin(net, step=1.5)
    rec = Recorder(None, model=net, every_steps=1)
    with pytest.raises(ValueError, match="step must be a whole number .* got 2.5"):
        rec.step(net, step=2.5)
    assert rec.step(net, step=3.0) and rec.trajectory.steps.tolist() == [0, 3]


def test_misuse_is_named():
    net = make_net()
    for kw in ({"every_steps": 0}, {"every_epochs": -1}, {"steps_per_epoch": 1.5}):
        with pytest.raises(ValueError, match="positive integer or None"):
            Recorder(None, **kw)
    with pytest.raises(TypeError, match="Trajectory, a directory path or None"):
        Recorder(3)
    rec = Recorder(None)
    with pytest.raises(RuntimeError, match=r"begin\(model\)"):
        rec.step(net)
    rec.begin(net)
    with pytest.raises(RuntimeError, match="twice"):
        rec.begin(net)
    with pytest.raises(TypeError, match="loss must be a number"):
        rec.step(net, loss=torch.ones(3), events=[{"event": "x"}])
    rec.close()
    with pytest.raises(RuntimeError, match="after close"):
        rec.step(net)


def test_the_model_is_only_read():
    net = make_net()
    before = copy.deepcopy(net.state_dict())
    rec = Recorder(None, every_steps=1)
    rec.begin(net)
    rec.step(net, loss=1.0)
    rec.close(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training


def test_model_in_the_constructor_records_the_initial_point():
    net = make_net()
    rec = Recorder(None, model=net, every_steps=1)
    with pytest.raises(RuntimeError, match="twice"):
        rec.begin(net)
    rec.step(net)
    assert rec.close().steps.tolist() == [0, 1]


def test_add_event_forces_the_next_snapshot_as_trainer_add_event_does():
    """Events between steps: the recorder's add_event and Trainer.add_event (in the body of the loop) tag the same
    snapshots. (A Trainer callback's event tags its own step, as the recorder's step(events=...) does.)"""
    torch.manual_seed(0)
    net, data = make_net(), _data()
    ref = Trajectory()
    trainer = Trainer(
        net,
        data,
        nn.functional.mse_loss,
        lambda p: torch.optim.SGD(p, lr=0.05),
        steps=10,
        batch_size=5,
        shuffle=False,
        trajectory=ref,
        record_every_epochs=None,
    )
    for ev in trainer:
        if ev.step in (3, 10):  # 10 is the last step: the event rides the final snapshot
            trainer.add_event({"event": "mark"})
    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = Recorder(None, model=model, every_epochs=None, steps_per_epoch=4)
    x, y = data
    for s in range(10):
        b = s % 4
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x[5 * b : 5 * b + 5]), y[5 * b : 5 * b + 5])
        loss.backward()
        opt.step()
        rec.step(model, loss=loss)
        if b == 3:
            rec.epoch_end(model)
        if s + 1 in (3, 10):
            rec.add_event({"event": "mark"})
    got = rec.close(model)
    assert got.steps.tolist() == [0, 4, 10] == ref.steps.tolist()
    assert_same_trajectory(got, ref, metrics=False)
    assert [got.tags(i) for i in range(3)] == [ref.tags(i) for i in range(3)]
    assert got.tags(1) == {"events": [{"step": 3, "event": "mark"}]}


def test_an_event_after_its_step_was_recorded_does_not_repeat_the_step_for_the_same_weights():
    """add_event after a recorded step made close() (or a due epoch_end) write the same weights again at that step.

    Unchanged weights: the event rides on the next snapshot, and at close() it is kept in the metadata's
    late_events. Changed weights (a perturbation after the step): the new point is written at the same step.
    """
    net = make_net()
    rec = Recorder(None, every_steps=1, every_epochs=1)
    rec.begin(net)
    rec.step(net)  # step 1 recorded
    rec.add_event({"event": "a"})
    assert rec.epoch_end(net) is False  # due, but step 1 with these weights is written already
    with torch.no_grad():
        net[0].weight.add_(1.0)
    rec.step(net)  # step 2 carries event a
    rec.add_event({"event": "b"})
    traj = rec.close(net)
    assert traj.steps.tolist() == [0, 1, 2]
    assert traj.tags(2) == {"events": [{"step": 1, "event": "a"}]}
    assert traj.meta["late_events"] == [{"step": 2, "event": "b"}]
    rec = Recorder(None, every_steps=1, every_epochs=None, model=net)
    rec.step(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)  # moved after its step was recorded: a new point
    rec.add_event({"event": "nudge"})
    traj = rec.close(net)
    assert traj.steps.tolist() == [0, 1, 1] and not torch.equal(traj[1].vector, traj[2].vector)
    assert traj.tags(2) == {"events": [{"step": 1, "event": "nudge"}]} and "late_events" not in traj.meta
    assert torch.equal(traj[2].vector, parameters_to_vector(net))


def test_a_resumed_run_writes_its_initial_point_only_when_it_is_not_the_stored_last_one(tmp_path):
    """begin(step=N) into a store whose last snapshot is the same point at step N (the interrupted run's final
    point) wrote it again. Another point, another run's tags, or an earlier step (a replay from an older
    checkpoint, which warns) is written."""
    net = make_net()
    with Recorder(tmp_path / "a", every_epochs=None, tags={"run": "x"}, model=net) as rec:
        rec.step(net)
        rec.step(net)
    with Recorder(tmp_path / "a", every_epochs=None, tags={"run": "x"}, exist_ok=True) as rec:
        rec.begin(net, step=2)
        rec.step(net)
    assert Trajectory.open(tmp_path / "a").steps.tolist() == [0, 2, 3]
    with Recorder(tmp_path / "a", every_epochs=None, tags={"run": "y"}, exist_ok=True) as rec:
        rec.begin(net, step=3)  # the same point, but another run's: its own initial snapshot
    moved = copy.deepcopy(net)
    with torch.no_grad():
        moved[0].bias.add_(1.0)
    with Recorder(tmp_path / "a", every_epochs=None, tags={"run": "y"}, exist_ok=True) as rec:
        rec.begin(moved, step=3)  # the same step and tags, another point
    with pytest.warns(UserWarning, match="last snapshot is at step 3, past this run's initial step 1"):
        with Recorder(tmp_path / "a", every_epochs=None, tags={"run": "y"}, exist_ok=True) as rec:
            rec.begin(moved, step=1)
    t = Trajectory.open(tmp_path / "a")
    assert t.steps.tolist() == [0, 2, 3, 3, 3, 1]
    assert [t.tags(i)["run"] for i in range(len(t))] == ["x", "x", "x", "y", "y", "y"]


def test_close_mid_epoch_gives_the_final_point_its_last_steps_metrics_not_the_last_epochs():
    """close() after steps past the last epoch_end labelled the final point with that epoch's metrics (measured at
    another point); it now carries the last step's batch_loss and metrics, and the epoch's only at an epoch end."""
    net = make_net()
    rec = Recorder(None, every_epochs=1, model=net)
    rec.step(net, loss=0.9)
    rec.epoch_end(net, metrics={"train_loss": 0.8, "val_loss": 0.7})
    rec.step(net, loss=torch.tensor(0.5), metrics={"lr": 0.1})
    traj = rec.close(net)
    assert traj.steps.tolist() == [0, 1, 2]
    assert traj[1].metrics == {"train_loss": 0.8, "val_loss": 0.7}
    assert traj[2].metrics == {"batch_loss": 0.5, "lr": pytest.approx(0.1)}
    rec = Recorder(None, every_epochs=2, model=net)
    rec.step(net, loss=0.9)
    rec.epoch_end(net, metrics={"train_loss": 0.8})  # not due: the close writes the point, at an epoch end
    assert rec.close(net)[-1].metrics == {"train_loss": 0.8}


def test_a_run_resumed_mid_epoch_from_its_store_records_what_the_uninterrupted_run_does(tmp_path):
    """begin(step=6, epoch=1.5): the epoch still ends at step 8, as in the run that was never interrupted.

    The resumed recorder counted its epoch from the resume step, so step 8 (an epoch end, due by steps too) was
    written as a step snapshot at epoch 1.5 without the epoch's metrics, and the epoch snapshot was skipped.
    """
    torch.manual_seed(0)
    net, (x, y) = make_net(), _data(8)

    def train(rec, model, opt, start, stop):
        for s in range(start, stop):
            b = s % 4  # 4 steps per epoch, batches of 2
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(x[2 * b : 2 * b + 2]), y[2 * b : 2 * b + 2])
            loss.backward()
            opt.step()
            rec.step(model, loss=loss)
            if b == 3:
                rec.epoch_end(model, metrics={"train_loss": float(s)})

    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = Recorder(tmp_path / "whole", every_steps=2, steps_per_epoch=4, model=model)
    train(rec, model, opt, 0, 12)
    rec.close(model)
    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = Recorder(tmp_path / "resumed", every_steps=2, steps_per_epoch=4, model=model)
    train(rec, model, opt, 0, 6)
    rec.close(model)  # interrupted after step 6: its final point
    rec = Recorder(tmp_path / "resumed", every_steps=2, steps_per_epoch=4, exist_ok=True)
    rec.begin(model, step=6, epoch=1.5)  # the resumed run's initial point is the stored step 6: not written again
    train(rec, model, opt, 6, 12)
    rec.close(model)
    whole, resumed = Trajectory.open(tmp_path / "whole"), Trajectory.open(tmp_path / "resumed")
    assert whole.steps.tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert resumed.steps.tolist() == [0, 2, 4, 6, 8, 10, 12]  # was [0, 2, 4, 6, 6, ...]: step 6 twice
    for a, b in zip(whole, resumed, strict=True):
        assert (a.step, a.epoch, a.metrics) == (b.step, b.epoch, b.metrics)
        assert torch.equal(a.vector, b.vector)
