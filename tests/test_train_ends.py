"""How a Trainer run begins and ends: events at the initial point, errors inside the run, the store synced at the end,
and what its loss numbers mean for a sum-reduced loss."""

import copy

import pytest
import torch
from torch import nn

from landscape import Problem
from landscape.params import parameters_to_vector
from landscape.train import Callback, Recorder, RecordTrajectory, Trainer
from landscape.trajectory import Trajectory
from landscape.trajectory.writer import PackWriter


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def sgd(lr=0.1):
    return lambda p: torch.optim.SGD(p, lr=lr)


class Tagger(Callback):
    def on_train_begin(self, trainer):
        trainer.add_event({"event": "warm_start", "source": "checkpoint"})


def test_an_event_raised_at_train_begin_tags_the_initial_snapshot():
    """It was carried into step 1's event list and forced a snapshot at step 1 that was not due, while the
    initial point (step 0, where the event happened) went untagged."""
    first, traj, late = Trajectory(), Trajectory(), Trajectory()
    tr = Trainer(
        _net(), _data(), optimizer=sgd(), epochs=2, batch_size=8, trajectory=traj,
        callbacks=[RecordTrajectory(first), Tagger(), RecordTrajectory(late)],
    )  # fmt: skip
    seen = {ev.step: ev.events for ev in tr if ev.events}
    event = {"step": 0, "event": "warm_start", "source": "checkpoint"}
    for t in (traj, late):  # recorders after the callback: the initial point carries it, no step-1 snapshot is forced
        assert t.steps.tolist() == [0, 5, 10]
        assert t.tags(0)["events"] == [event] and all("events" not in t.tags(i) for i in (1, 2))
    # a recorder before it had written the initial point: the event is late and tags the next snapshot (step 1)
    assert first.steps.tolist() == [0, 1, 5, 10] and first.tags(1)["events"] == [event]
    assert seen == {1: [event]}  # the caller sees it with the first step's events, as before


class Boom(nn.Module):
    """The test net, raising ``error`` in its forward pass at call ``at`` (one call per step with SGD)."""

    def __init__(self, error, at):
        super().__init__()
        self.net, self.error, self.at, self.calls = _net(), error, at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.net(x)


class Ends(Callback):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def on_train_end(self, trainer):
        self.log.append((self.name, trainer.step))


class RaiseAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, event):
        if event.step == self.step:
            raise ValueError("the callback's own error")


@pytest.mark.parametrize("where", ["model", "interrupt", "callback"])
@pytest.mark.parametrize("every_steps", [None, 1])
def test_an_error_inside_the_run_finishes_every_callback_records_why_and_propagates(where, every_steps):
    """Only a NaN loss ended the run: an exception in the model, a callback or Ctrl-C left every callback unfinished
    (no final snapshot of the point the model stopped at, no word of why)."""
    error = {"model": RuntimeError("shape mismatch"), "interrupt": KeyboardInterrupt(), "callback": None}[where]
    model = Boom(error, at=7) if error is not None else _net()  # the 7th forward: the 7th step's closure
    log, traj = [], Trajectory()
    tr = Trainer(
        model, _data(), optimizer=sgd(), epochs=3, batch_size=8, callbacks=[Ends(log, "a")]
        + ([RaiseAt(7)] if error is None else []), trajectory=traj, record_every_steps=every_steps,
    )  # fmt: skip
    tr.callbacks.append(Ends(log, "b"))  # after the recorder too
    tr.model.calls = 0  # the trainer's checks ran the model once
    kind = type(error) if error is not None else ValueError
    with pytest.raises(kind):
        tr.fit()
    stopped = 6 if error is not None else 7  # the model failed inside step 7; the callback after it
    assert tr.step == stopped and log == [("a", stopped), ("b", stopped)]
    # the final point is the model as it stopped, recorded once
    assert int(traj.steps[-1]) == stopped and len(set(traj.steps.tolist())) == len(traj)
    torch.testing.assert_close(traj[-1].vector, parameters_to_vector(tr.model), rtol=0, atol=0)
    # and why: on the final snapshot, or when that step was recorded already, in the run metadata
    events = traj.tags(-1).get("events", []) + traj.meta.get("late_events", [])
    assert [(e["event"], e["error"], e["step"]) for e in events] == [("error", kind.__name__, stopped)]


def test_an_error_in_a_callbacks_train_begin_finishes_those_that_began():
    class Fails(Callback):
        def on_train_begin(self, trainer):
            raise OSError("cannot open the log file")

    log = []
    tr = Trainer(_net(), _data(), optimizer=sgd(), epochs=1, callbacks=[Ends(log, "a"), Fails(), Ends(log, "c")])
    with pytest.raises(OSError, match="log file"):
        tr.fit()
    assert log == [("a", 0)]


@pytest.mark.parametrize("end", ["fit", "interrupt", "recorder"])
def test_a_flush_durable_store_is_synced_when_the_run_ends(tmp_path, monkeypatch, end):
    """fit() left a durable="flush" store's snapshots queued (it syncs at flush() and close() only, and the trainer
    does not close a store it was given): a reader, or a crash after fit() returned, saw none of them."""
    monkeypatch.setattr(PackWriter, "LINGER", 600.0)  # the writer thread would not write a partial batch by itself
    traj = Trajectory.create(tmp_path / "run", durable="flush")
    model = Boom(KeyboardInterrupt(), at=9) if end == "interrupt" else _net()
    if end == "recorder":
        rec = Recorder(traj, every_steps=1)
        rec.begin(model)
        for _ in range(3):
            rec.step(model, loss=1.0)
        rec.close(model)
    else:
        tr = Trainer(model, _data(), optimizer=sgd(), epochs=2, batch_size=8, trajectory=traj, record_every_steps=2)
        tr.model.calls = 0  # the trainer's checks ran the model once
        with pytest.raises(KeyboardInterrupt) if end == "interrupt" else _nothing():
            tr.fit()
    written = len(traj)
    assert written >= 4
    try:
        assert len(Trajectory.open(tmp_path / "run")) == written
    finally:
        traj.close()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_metric_no_snapshot_has_is_a_key_error_naming_those_recorded():
    traj = Trajectory()
    net = nn.Linear(2, 1)
    traj.append_model(net, step=0, metrics={"train_loss": 1.0})
    traj.append_model(net, step=1, metrics={"train_loss": 0.5, "val_loss": 0.7})
    with pytest.raises(KeyError, match=r"'trian_loss'.*\['train_loss', 'val_loss'\]"):
        traj.metric("trian_loss")
    assert traj.metric("val_loss")[0] != traj.metric("val_loss")[0]  # NaN where a snapshot lacks a metric
    assert Trajectory().metric("train_loss").shape == (0,)


@pytest.mark.parametrize("kind", ["mse", "cross_entropy"])
def test_a_sum_reduced_loss_reports_batch_sums_and_their_epoch_sum_as_a_hand_written_loop(kind):
    """The epoch's train_loss was the size-weighted mean of the batches' sums (a number on no scale: neither the
    data's sum that Problem and the evaluation sets report, nor a mean). It is the sum over the epoch's batches."""
    X, y = _data()
    X = X.double()
    if kind == "mse":
        y, fn = torch.randn(40, 3, dtype=torch.float64), nn.MSELoss(reduction="sum")
    else:
        fn = nn.CrossEntropyLoss(reduction="sum")
    net = _net().double()
    # the reference: a plain loop over the same batches (16, 16, 8: the last one uneven)
    ref = [p.detach().clone() for p in net.parameters()]
    hand = _net().double()
    opt = torch.optim.SGD(hand.parameters(), lr=0.01)
    step_losses, epoch_sums = [], []
    for _ in range(2):
        total = 0.0
        for i in range(0, 40, 16):
            opt.zero_grad()
            loss = fn(hand(X[i : i + 16]), y[i : i + 16])
            loss.backward()
            opt.step()
            step_losses.append(loss.item())
            total += loss.item()
        epoch_sums.append(total)
    tr = Trainer(net, (X, y), fn, sgd(0.01), epochs=2, batch_size=16, shuffle=False, eval_data={"val": (X, y)})
    got = [ev.loss for ev in tr]
    assert got == pytest.approx(step_losses, rel=1e-12)
    assert [h["train_loss"] for h in tr.history_] == pytest.approx(epoch_sums, rel=1e-12)
    for p, q in zip(tr.model.parameters(), hand.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), ref))
    # without a step the epoch's train_loss is the data's loss: Problem's, and the evaluation set's
    tr = Trainer(net, (X, y), fn, sgd(0.0), epochs=1, batch_size=16, eval_data={"val": (X, y)}).fit()
    want = float(Problem(net, (X, y), fn).loss())
    assert tr.history_[0]["train_loss"] == pytest.approx(want, rel=1e-12)
    assert tr.history_[0]["val_loss"] == pytest.approx(want, rel=1e-12)


def _bn_net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("given", ["named", "factory", "replace", "switch"])
def test_rk2_euler_trains_a_batchnorm_model_bitwise_as_its_inner_optimizer_statistics_included(given):
    """RK2 evaluates twice a step, and each train-mode forward advanced the BatchNorm running statistics: with the
    Euler coefficients (documented bit for bit the inner optimizer) they had advanced twice as often
    (num_batches_tracked 10 after 5 steps) and the eval-mode model differed."""
    from landscape.train.optim import RK2, SwitchSchedule

    plain = Trainer(_bn_net(), _data(), optimizer=sgd(), epochs=1, batch_size=8, shuffle=False).fit()
    if given == "named":
        spec, kw = "sgd_rk2", {"lr": 0.1, "momentum": 0.0, "method": "euler"}
    elif given == "switch":  # an RK2 phase after a switch
        spec, kw = (
            (lambda p: SwitchSchedule(p, [(0, sgd()), (2, lambda q: RK2(torch.optim.SGD(q, lr=0.1), "euler"))])),
            {},
        )
    else:
        spec, kw = (lambda p: RK2(torch.optim.SGD(p, lr=0.1), "euler")), {}
    tr = Trainer(_bn_net(), _data(), optimizer=spec, optimizer_kwargs=kw, epochs=1, batch_size=8, shuffle=False)
    if given == "replace":  # an optimizer handed over with a new model tracks that model's statistics
        new = copy.deepcopy(tr.model)
        tr.replace_model(new, optimizer=RK2(torch.optim.SGD(new.parameters(), lr=0.1), "euler"))
    tr.fit()
    want, got = plain.model.state_dict(), tr.model.state_dict()
    assert int(got["1.num_batches_tracked"]) == 5
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_an_error_in_rk2s_second_stage_leaves_the_step_undone():
    from landscape.train.optim import RK2

    net = _bn_net()
    opt = RK2(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), "heun")
    X, y = _data()
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 4:  # the second step's stage 2
            raise KeyboardInterrupt
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(X), y)
        loss.backward()
        return loss

    opt.step(closure)
    before = parameters_to_vector(net).clone()
    state = {k: v["momentum_buffer"].clone() for k, v in opt.inner.state.items()}
    with pytest.raises(KeyboardInterrupt):
        opt.step(closure)
    assert torch.equal(parameters_to_vector(net), before)
    assert all(torch.equal(opt.inner.state[k]["momentum_buffer"], v) for k, v in state.items())


def test_a_callback_failing_to_end_a_failed_run_leaves_the_others_ending_it_and_the_first_error_propagating():
    """A store failing mid-run (a full disk) raised again in the recorder's on_train_end, and the callbacks after it
    were never finished; the error shown was the second one."""

    class FullDisk(list):
        def append_model(self, model, **kw):
            if len(self) == 3:
                raise OSError("no space left on device")
            self.append(kw["step"])

    log = []
    tr = Trainer(_net(), _data(), optimizer=sgd(), epochs=2, batch_size=8, trajectory=FullDisk(), record_every_steps=1)
    tr.callbacks.append(Ends(log, "after"))
    with pytest.warns(UserWarning, match=r"RecordTrajectory.on_train_end failed after OSError"):
        with pytest.raises(OSError, match="no space") as info:
            tr.fit()
    assert tr.step == 3 and log == [("after", 3)] and tr.trajectory == [0, 1, 2]
    assert info.value.__context__ is None  # the store's first failure, not the one while ending the run
