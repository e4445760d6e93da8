import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape.data import iterate_batches
from landscape.params import parameters_to_vector
from landscape.train import Callback, NonFiniteLossError, RecordTrajectory, Trainer


class ListRecorder(list):
    """Minimal stand-in with the trajectory's append_model signature."""

    def append_model(self, model, **kw):
        self.append({"vector": parameters_to_vector(model), **kw})


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


def sgd(lr=0.1):
    return lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)


def _fit(net, data=None, **options):
    """``Trainer(net, data, optimizer=sgd(), **options).fit()``; the data default :func:`_data`."""
    return Trainer(net, _data() if data is None else data, optimizer=sgd(), **options).fit()


def test_seeded_runs_are_bitwise_identical_and_seed_matters():
    runs = []
    for seed in (3, 3, 4):
        rec = ListRecorder()
        _fit(_net(), epochs=3, batch_size=8, seed=seed, trajectory=rec, record_every_steps=2)
        runs.append(torch.stack([r["vector"] for r in rec]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_caller_model_untouched_and_initial_snapshot_is_it():
    net = _net()
    before = copy.deepcopy(net.state_dict())
    net.eval()
    rec = ListRecorder()
    tr = Trainer(net, _data(), optimizer=sgd(), epochs=2, batch_size=10, trajectory=rec).fit()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert not net.training
    assert torch.equal(rec[0]["vector"], parameters_to_vector(net))
    assert torch.equal(rec[-1]["vector"], parameters_to_vector(tr.model))
    assert not torch.equal(rec[-1]["vector"], rec[0]["vector"])


@pytest.mark.parametrize("leave", ["break", "error"])
def test_leaving_the_loop_early_finishes_the_run_at_that_step(leave):
    """``for ev in trainer: ... break`` skipped on_train_end: the trajectory lacked the point the model stopped at."""

    class Ends(Callback):
        calls = 0

        def on_train_end(self, trainer):
            Ends.calls += 1

    rec = ListRecorder()
    tr = Trainer(_net(), _data(), optimizer=sgd(), epochs=5, batch_size=8, trajectory=rec, record_every_steps=4)
    tr.callbacks.append(Ends())
    try:
        for ev in tr:
            if ev.step == 7:
                if leave == "error":
                    raise KeyError("the caller's own error")
                break
    except KeyError:
        pass
    assert Ends.calls == 1
    assert [r["step"] for r in rec] == [0, 4, 5, 7]  # every 4 steps, epoch 1 ends at 5, and the last point
    assert torch.equal(rec[-1]["vector"], parameters_to_vector(tr.model))


def test_recording_schedule_steps_epochs_first_last_without_duplicates():
    rec = ListRecorder()
    # 40 samples, batch 16 -> 3 batches/epoch; 7 steps: stops in the middle of epoch 3
    _fit(_net(), steps=7, batch_size=16, trajectory=rec, record_every_steps=2, record_every_epochs=1)
    steps = [r["step"] for r in rec]
    assert steps == [0, 2, 3, 4, 6, 7]
    epoch_end = [r for r in rec if r["step"] in (3, 6)]
    assert all("train_loss" in r["metrics"] for r in epoch_end)


def test_one_full_batch_step_matches_manual_sgd():
    x, y = _data()
    net = nn.Sequential(nn.Linear(5, 3)).double()
    x = x.double()
    tr = Trainer(net, (x, y), optimizer=lambda p: torch.optim.SGD(p, lr=0.5), steps=1, batch_size=None).fit()
    ref = copy.deepcopy(net)
    loss = nn.functional.cross_entropy(ref(x), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected = parameters_to_vector(ref) - 0.5 * torch.cat([g.reshape(-1) for g in grads])
    assert torch.allclose(parameters_to_vector(tr.model), expected, atol=1e-14, rtol=0)


def test_iterable_of_batches_equals_tensor_pair_without_shuffle():
    x, y = _data()
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    a = Trainer(net, (x, y), optimizer=sgd(), epochs=2, batch_size=10, shuffle=False).fit()
    b = Trainer(net, batches, optimizer=sgd(), epochs=2).fit()
    assert torch.equal(parameters_to_vector(a.model), parameters_to_vector(b.model))
    assert a.history_ == b.history_


def test_train_accuracy_of_batched_class_targets_is_reported_when_no_prediction_is_right():
    # A net that always predicts class 2 on labels that are all 0: accuracy 0, which is still a measurement.
    x, _ = _data()
    y = torch.zeros(40, dtype=torch.long)
    net = nn.Linear(5, 3)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 0.0, 10.0]))
    batches = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]
    for data, kw in (((x, y), {"batch_size": 10}), (batches, {})):
        tr = Trainer(net, data, optimizer=sgd(lr=0.0), epochs=2, shuffle=False, **kw).fit()
        assert [h.get("train_accuracy") for h in tr.history_] == [0.0, 0.0]


def test_shuffle_seed_changes_order_but_not_initialization():
    rec_a, rec_b = ListRecorder(), ListRecorder()
    Trainer(_net(), _data(), optimizer=sgd(), epochs=1, batch_size=8, seed=0, shuffle_seed=1, trajectory=rec_a).fit()
    Trainer(_net(), _data(), optimizer=sgd(), epochs=1, batch_size=8, seed=0, shuffle_seed=2, trajectory=rec_b).fit()
    assert torch.equal(rec_a[0]["vector"], rec_b[0]["vector"])
    assert not torch.equal(rec_a[-1]["vector"], rec_b[-1]["vector"])


def test_nonfinite_loss_raises_keeps_snapshots_or_stops():
    x, y = _data()
    # NaN data is refused up front (landscape.validation); a loss that turns NaN is what these modes handle.
    nan_loss = lambda out, t: torch.nn.functional.cross_entropy(out, t) * float("nan")  # noqa: E731
    rec = ListRecorder()
    with pytest.raises(NonFiniteLossError, match="nan at step 1"):
        Trainer(_net(), (x, y), nan_loss, optimizer=sgd(), epochs=2, trajectory=rec).fit()
    assert [r["step"] for r in rec] == [0, 1]
    # the last snapshot says why the run ended
    assert rec[-1]["tags"]["events"][0]["event"] == "nonfinite_loss"
    rec = ListRecorder()
    tr = Trainer(_net(), (x, y), nan_loss, optimizer=sgd(), epochs=5, trajectory=rec, on_nonfinite="stop").fit()
    assert tr.step == 1 and rec[-1]["tags"]["events"][0]["event"] == "nonfinite_loss"
    with pytest.raises(ValueError, match="valid"):
        Trainer(_net(), (x, y), optimizer=sgd(), epochs=1, on_nonfinite="explode")
    x[5, 0] = float("nan")
    with pytest.raises(ValueError, match=r"data: inputs holds 1 NaN"):
        Trainer(_net(), (x, y), optimizer=sgd(), epochs=1)


def test_a_run_stopped_by_a_nonfinite_loss_records_the_same_last_point_raising_or_stopping():
    # The raise mode's last snapshot carried the previous step's epoch (step 7 at epoch 1.5, not 1.75): the loop
    # raised before it moved the epoch on. Either way the run ends at the step whose loss overflowed.
    x = torch.linspace(-1, 1, 16)[:, None]
    y = 3 * x
    net, last = nn.Linear(1, 1), {}
    for mode in ("raise", "stop"):
        rec = ListRecorder()
        tr = Trainer(
            net, (x, y), "mse", lambda p: torch.optim.SGD(p, lr=30.0), epochs=20, batch_size=4,
            shuffle=False, trajectory=rec, record_every_steps=1, on_nonfinite=mode,
        )  # fmt: skip
        if mode == "raise":
            with pytest.raises(NonFiniteLossError):
                tr.fit()
        else:
            tr.fit()
        assert [r["step"] for r in rec] == list(range(tr.step + 1))
        assert [r["epoch"] for r in rec] == [s / 4 for s in range(tr.step + 1)]  # 4 steps an epoch
        last[mode] = rec[-1]
    assert last["raise"]["step"] == last["stop"]["step"] > 4
    assert torch.equal(last["raise"]["vector"], last["stop"]["vector"])
    assert [e["action"] for m in ("raise", "stop") for e in last[m]["tags"]["events"]] == ["raise", "stop"]


def test_a_run_raising_on_a_nonfinite_loss_finishes_every_callback_once():
    """on_nonfinite='raise' ran on_train_end of RecordTrajectory callbacks only; a callback holding a resource (an open
    file, a store of its own) was never finished. Every callback now ends the run once, in order, as a stop does."""
    x, y = _data()
    nan_loss = lambda out, t: torch.nn.functional.cross_entropy(out, t) * float("nan")  # noqa: E731
    calls = []

    class Holder(Callback):
        def __init__(self, name):
            self.name = name

        def on_train_end(self, trainer):
            calls.append((self.name, trainer.step))

    rec = ListRecorder()
    tr = Trainer(_net(), (x, y), nan_loss, optimizer=sgd(), epochs=2, trajectory=rec, callbacks=[Holder("a")])
    tr.callbacks.append(Holder("b"))  # after the recorder too
    with pytest.raises(NonFiniteLossError):
        tr.fit()
    assert calls == [("a", 1), ("b", 1)]
    assert [r["step"] for r in rec] == [0, 1] and rec[-1]["tags"]["events"][0]["action"] == "raise"
    calls.clear()
    with pytest.raises(NonFiniteLossError):
        for _ in Trainer(_net(), (x, y), nan_loss, optimizer=sgd(), epochs=2, callbacks=[Holder("c")]):
            pass  # iterating: the error leaves the generator, which must not finish the callbacks a second time
    assert calls == [("c", 1)]


class _Wrapped(nn.Module):
    """The same network, its output wrapped as a model's may be: in a tuple, or under ``logits`` in a mapping."""

    def __init__(self, net, form):
        super().__init__()
        self.net, self.form = net, form

    def forward(self, x):
        out = self.net(x)
        return (out, out.detach().norm()) if self.form == "tuple" else {"logits": out, "hidden": x}


@pytest.mark.parametrize("form", ["tuple", "mapping"])
def test_a_model_with_wrapped_outputs_trains_as_its_tensor_output_does(form):
    # Every analyzer reads outputs by the output rule (landscape.model_output); the loop passed the tuple or mapping
    # to the loss (cross_entropy: TypeError at step 1) while the epoch's evaluation applied the rule.
    net, data = _net(), _data()
    options = dict(optimizer=sgd(), epochs=2, batch_size=16, eval_data={"val": _data(seed=1)})
    ref = Trainer(net, data, "cross_entropy", **options).fit()
    got = Trainer(_Wrapped(net, form), data, "cross_entropy", **options).fit()
    assert torch.equal(parameters_to_vector(got.model), parameters_to_vector(ref.model))
    assert got.history_ == ref.history_ and 0 < ref.history_[-1]["train_accuracy"] < 1


def test_one_shot_iterators_are_evaluated_every_epoch_or_refused_clearly_for_training():
    # A generator given as an evaluation set was exhausted by the first epoch's evaluation: the second failed
    # with "data holds no batch" (not naming the set); as training data it failed with "yielded no batch".
    x, y = _data()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 40, 8)]
    options = dict(optimizer=sgd(), epochs=3, batch_size=8)
    ref = Trainer(_net(), (x, y), eval_data={"val": batches}, **options).fit()
    got = Trainer(_net(), (x, y), eval_data={"val": (b for b in batches)}, **options).fit()
    assert [h["val_loss"] for h in got.history_] == [h["val_loss"] for h in ref.history_]
    assert len(got.history_) == 3
    with pytest.raises(ValueError, match="no batch in epoch 2: .* one-shot iterator"):
        Trainer(_net(), (b for b in batches), optimizer=sgd(), epochs=2).fit()


class _EventfulSGD(torch.optim.SGD):
    """An optimizer that reports one event at its 3rd step, like an optimizer switch."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.n = 0
        self.pending = []

    def step(self, closure):
        self.n += 1
        if self.n == 3:
            self.pending.append({"event": "switch", "to": "adam"})
        return super().step(closure)

    def pop_events(self):
        out, self.pending = self.pending, []
        return out


def test_optimizer_events_force_a_tagged_snapshot():
    rec = ListRecorder()
    Trainer(_net(), _data(), optimizer=_EventfulSGD, epochs=2, batch_size=8, trajectory=rec, tags={"run": "a"}).fit()
    tagged = [r for r in rec if "events" in r["tags"]]
    assert [r["step"] for r in tagged] == [3]
    assert tagged[0]["tags"]["events"] == [{"event": "switch", "to": "adam"}]
    assert all(r["tags"]["run"] == "a" for r in rec)


def test_replace_model_from_callback_and_stop():
    class Grow(Callback):
        def on_step_end(self, trainer, event):
            if event.step == 2:
                new = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 3))
                trainer.replace_model(new, event={"event": "tunnel_open"})
            if event.step == 4:
                trainer.stop()

    rec = ListRecorder()
    tr = Trainer(_net(), _data(), optimizer=sgd(), epochs=10, batch_size=8, callbacks=[Grow()], trajectory=rec).fit()
    assert tr.step == 4
    sizes = [r["vector"].numel() for r in rec]
    assert sizes[0] == 8 * 5 + 8 + 3 * 8 + 3 and sizes[-1] == 9 * 5 + 9 + 3 * 9 + 3
    opened = [r for r in rec if "events" in r["tags"]]
    # the event tags the snapshot of the step it happened at (it rode on step 3's before): the grown network at step 2
    assert opened[0]["step"] == 2 and opened[0]["tags"]["events"][0]["event"] == "tunnel_open"
    assert opened[0]["vector"].numel() == sizes[-1]


def test_regularizer_is_added_in_the_closure():
    x, y = _data()
    net = nn.Sequential(nn.Linear(5, 3)).double()
    x = x.double()
    reg = lambda m: 0.5 * sum((p**2).sum() for p in m.parameters())  # noqa: E731
    tr = Trainer(net, (x, y), optimizer=lambda p: torch.optim.SGD(p, lr=0.1), steps=1, regularizer=reg).fit()
    ref = copy.deepcopy(net)
    loss = nn.functional.cross_entropy(ref(x), y) + reg(ref)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected = parameters_to_vector(ref) - 0.1 * torch.cat([g.reshape(-1) for g in grads])
    assert torch.allclose(parameters_to_vector(tr.model), expected, atol=1e-14, rtol=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="epochs=... or steps"):
        Trainer(_net(), _data(), optimizer=sgd())
    x, y = _data()
    with pytest.raises(ValueError, match="40 samples but targets have 39"):
        Trainer(_net(), (x, y[:-1]), optimizer=sgd(), epochs=1)
    with pytest.raises(TypeError, match="optimizer instance"):
        Trainer(_net(), (x, y), optimizer=torch.optim.SGD(_net().parameters(), lr=0.1), epochs=1)
    with pytest.raises(ValueError, match="every_steps"):
        RecordTrajectory(ListRecorder(), every_steps=0)
    # a directory given for the trajectory failed at the first snapshot: "'str' object has no attribute 'append_model'"
    with pytest.raises(TypeError, match=r"trajectory must be a Trajectory .* got str; .*Trajectory.create\('runs/a'\)"):
        Trainer(_net(), (x, y), optimizer=sgd(), epochs=1, trajectory="runs/a")


@pytest.mark.parametrize("length", [{"epochs": 1.5}, {"steps": 2.5}, {"epochs": True}, {"steps": -1}, {"epochs": "2"}])
def test_length_of_training_must_be_a_whole_count(length):
    # epochs=1.5 trained two whole epochs and steps=2.5 three steps, silently
    (name,) = length
    with pytest.raises(ValueError, match=f"{name} must be a non-negative integer"):
        Trainer(_net(), _data(), optimizer=sgd(), batch_size=8, **length)
    tr = Trainer(_net(), _data(), optimizer=sgd(), batch_size=8, **{name: np.int64(0)}).fit()  # numpy counts too
    assert tr.step == 0


def test_event_raised_in_the_last_step_is_recorded():
    class Mark(Callback):
        def on_step_end(self, trainer, event):
            if event.step == 3:
                trainer.add_event({"event": "mark"})

    rec = ListRecorder()
    Trainer(_net(), _data(), optimizer=sgd(), steps=3, batch_size=8, callbacks=[Mark()], trajectory=rec).fit()
    assert rec[-1]["step"] == 3 and rec[-1]["tags"]["events"] == [{"step": 3, "event": "mark"}]


class _Marker(Callback):
    """Raises an event {"event": "mark", "at": where} at the given steps, from on_step_end or on_epoch_end."""

    def __init__(self, steps, where="step", nudge=False):
        self.steps, self.where, self.nudge, self.raised = set(steps), where, nudge, []

    def _mark(self, trainer):
        if trainer.step in self.steps:
            if self.nudge:  # a perturbation: the weights change after the step's update
                with torch.no_grad():
                    next(trainer.model.parameters()).add_(0.5)
            trainer.add_event({"event": "mark", "at": self.where})
            self.raised.append({"step": trainer.step, "event": "mark", "at": self.where})

    def on_step_end(self, trainer, event):
        if self.where == "step":
            self._mark(trainer)

    def on_epoch_end(self, trainer, event):
        if self.where == "epoch":
            self._mark(trainer)

    def on_train_end(self, trainer):
        if self.where == "end":
            self._mark(trainer)


def test_an_event_raised_by_a_callback_tags_the_snapshot_of_its_step():
    """A callback's add_event / replace_model at step s forced a snapshot at step s + 1 (or at the epoch end, with
    epoch-only recording), tagged with an event saying step s: the tagged point was one update past the event."""
    from landscape.trajectory import Trajectory

    x, y = _data()
    ref = Trajectory()  # every step, no events: the point after each step
    _fit(_net(), (x, y), epochs=2, batch_size=8, shuffle=False, trajectory=ref, record_every_steps=1)
    cases = [(None, "step", (3, 7)), (2, "step", (3,)), (None, "epoch", (5,)), (3, "epoch", (5,))]
    for every_steps, where, at in cases:
        traj, mark = Trajectory(), _Marker(at, where)
        _fit(
            _net(), (x, y), epochs=2, batch_size=8, shuffle=False, trajectory=traj, record_every_steps=every_steps,
            callbacks=[mark],
        )  # fmt: skip
        tagged = [i for i in range(len(traj)) if traj.tags(i).get("events")]
        assert [traj.tags(i)["events"] for i in tagged] == [[e] for e in mark.raised]
        for i, e in zip(tagged, mark.raised, strict=True):
            assert traj.steps[i] == e["step"]
            assert torch.equal(traj[i].vector, ref[int(e["step"])].vector)  # the point right after step s
        assert len(set(traj.steps.tolist())) == len(traj)


@pytest.mark.parametrize("order", ["marker_first", "recorder_first"])
@pytest.mark.parametrize("where", ["step", "epoch", "end", "body"])
@pytest.mark.parametrize("every_steps,every_epochs", [(1, 1), (1, None), (None, 1), (2, None)])
def test_no_step_is_recorded_twice_for_the_same_weights(order, where, every_steps, every_epochs):
    """An event after the last step's snapshot (a callback after the recorder, on_epoch_end, on_train_end, the loop's
    body) wrote a second snapshot of the same weights at that step, which counts twice in a PCA. Invariants: no two
    snapshots share a step and a point; every event is kept once (a snapshot's tags or the metadata's late_events);
    the last snapshot is the trained model."""
    from landscape.trajectory import Trajectory

    traj, mark = Trajectory(), _Marker({5, 10}, "step" if where == "body" else where)
    rec = RecordTrajectory(traj, every_steps=every_steps, every_epochs=every_epochs)
    tr = Trainer(
        _net(), _data(), optimizer=sgd(), epochs=2, batch_size=8,
        callbacks=[mark, rec] if order == "marker_first" else [rec, mark] if where != "body" else [rec],
    )  # fmt: skip
    for ev in tr:
        if where == "body" and ev.step in (5, 10):
            tr.add_event({"event": "mark", "at": "step"})
            mark.raised.append({"step": ev.step, "event": "mark", "at": "step"})
    steps = traj.steps.tolist()
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 10
    for i in range(1, len(traj)):
        if steps[i] == steps[i - 1]:
            assert not torch.equal(traj[i].vector, traj[i - 1].vector)
    kept = [e for i in range(len(traj)) for e in traj.tags(i).get("events", [])] + traj.meta.get("late_events", [])
    # (an event raised in on_train_end by a callback after the recorder comes when the recording has ended)
    raised = [] if (where, order) == ("end", "recorder_first") else mark.raised
    assert sorted(map(str, kept)) == sorted(map(str, raised))
    assert torch.equal(traj[-1].vector, parameters_to_vector(tr.model))


def test_a_change_of_weights_after_the_steps_snapshot_is_recorded_at_the_same_step():
    """A perturbation applied at the last step by a callback after the recorder is a new point: it is written (a
    second snapshot at that step, tagged), so the trajectory ends at the weights training ended with."""
    from landscape.trajectory import Trajectory

    traj, mark = Trajectory(), _Marker({10}, "step", nudge=True)
    rec = RecordTrajectory(traj, every_steps=1, every_epochs=None)
    tr = _fit(_net(), epochs=2, batch_size=8, callbacks=[rec, mark])
    assert traj.steps.tolist()[-2:] == [10, 10] and not torch.equal(traj[-1].vector, traj[-2].vector)
    assert torch.equal(traj[-1].vector, parameters_to_vector(tr.model))
    assert traj.tags(len(traj) - 1)["events"] == mark.raised and "late_events" not in traj.meta


def test_epoch_metrics_belong_to_the_point_the_epoch_end_snapshot_holds():
    """The epoch's evaluation ran before the step's callbacks: a callback that moved the model at an epoch's last step
    (a perturbation, a tunnel) left the epoch-end snapshot holding the moved weights with the metrics of the point
    before. Invariant: a snapshot's val_loss is the loss of its own weights on the validation set."""
    from landscape.trajectory import Trajectory

    x, y = _data()
    val = _data(24, seed=1)
    traj = Trajectory()
    tr = _fit(
        _net(), (x, y), epochs=2, batch_size=8, eval_data={"val": val}, trajectory=traj,
        callbacks=[_Marker({5, 10}, "step", nudge=True)],
    )  # fmt: skip
    checked = 0
    for snap in traj:
        if "val_loss" in snap.metrics:
            net = traj.model_at(tr.model, snap.index).eval()
            with torch.no_grad():
                want = F.cross_entropy(net(val[0]), val[1]).item()
            assert snap.metrics["val_loss"] == pytest.approx(want, rel=1e-6)
            checked += 1
    assert checked == 2 and traj.steps.tolist() == [0, 5, 10]


def test_a_run_ending_mid_epoch_does_not_label_its_final_point_with_the_last_epochs_metrics():
    """steps=7 with 5 batches an epoch: the final snapshot (step 7) carried epoch 1's train_loss and val_loss, measured
    at step 5's weights. Invariant: a snapshot's val_loss is its own weights' loss; the final point mid-epoch carries
    its step's batch_loss, as every step snapshot does."""
    from landscape.trajectory import Trajectory

    x, y = _data()
    val = _data(24, seed=1)
    traj = Trajectory()
    tr = Trainer(_net(), (x, y), optimizer=sgd(), steps=7, batch_size=8, eval_data={"val": val}, trajectory=traj)
    losses = {ev.step: ev.loss for ev in tr}
    assert traj.steps.tolist() == [0, 5, 7]
    for snap in traj:
        if "val_loss" in snap.metrics:
            net = traj.model_at(tr.model, snap.index).eval()
            with torch.no_grad():
                assert snap.metrics["val_loss"] == pytest.approx(F.cross_entropy(net(val[0]), val[1]).item(), rel=1e-6)
    assert traj[-1].metrics == {"batch_loss": losses[7]}
    assert set(traj[1].metrics) >= {"train_loss", "val_loss"}  # the epoch end keeps the epoch's


# ----------------------------------------------------------------------------------- recording cost (issue 17)
# The per-step path counts accuracy in chunks and the recorder caches the layout; these pin down that what is
# trained and recorded is bitwise what a hand-written torch loop (and the store's own append_model) gives.


def _bn_net():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


def _hand_written_run(net, x, y, *, epochs, batch, seed, every_steps, lr=0.1):
    """What Trainer(..., record_every_steps=every_steps, record_every_epochs=1) records, by a plain torch loop."""
    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    n = x.shape[0]
    per_epoch = -(-n // batch)
    records = []

    def snap(step, epoch, metrics):
        vec = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        bufs = {k: v.detach().clone() for k, v in model.named_buffers()}
        records.append({"step": step, "epoch": epoch, "metrics": dict(metrics), "vector": vec, "buffers": bufs})

    snap(0, 0.0, {})
    step = 0
    for epoch in range(epochs):
        idx = torch.randperm(n, generator=gen)
        run_loss, run_n, correct = 0.0, 0, 0
        for b in range(per_epoch):
            j = idx[b * batch : (b + 1) * batch]
            xb, yb = x[j], y[j]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            step += 1
            lv = loss.item()
            run_loss += lv * xb.shape[0]
            run_n += xb.shape[0]
            correct += int((out.detach().argmax(-1) == yb).sum())
            if b + 1 == per_epoch:
                snap(step, float(epoch + 1), {"train_loss": run_loss / run_n, "train_accuracy": correct / run_n})
            elif step % every_steps == 0:
                snap(step, epoch + (b + 1) / per_epoch, {"batch_loss": lv})
    return model, records


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_recording_is_bitwise_a_hand_written_loop(where, tmp_path):
    from landscape.trajectory import Trajectory

    x, y = _data()
    net = _bn_net()
    ref_model, expected = _hand_written_run(net, x, y, epochs=3, batch=16, seed=7, every_steps=2)
    traj = Trajectory() if where == "memory" else Trajectory.create(tmp_path / "t", durable=False)
    tr = _fit(
        net, (x, y), epochs=3, batch_size=16, seed=7, trajectory=traj, record_every_steps=2, record_every_epochs=1
    )
    if where == "disk":
        traj.close()
        traj = Trajectory.open(tmp_path / "t", "r")
    assert torch.equal(parameters_to_vector(tr.model), parameters_to_vector(ref_model))
    assert [s.step for s in traj] == [r["step"] for r in expected] == [0, 2, 3, 4, 6, 8, 9]
    for snap, exp in zip(traj, expected):
        assert snap.epoch == exp["epoch"]
        assert snap.metrics == exp["metrics"]
        assert torch.equal(snap.vector, exp["vector"])
        assert snap.buffers.keys() == exp["buffers"].keys() and snap.buffers
        assert all(torch.equal(snap.buffers[k], v) for k, v in exp["buffers"].items())
    assert [h["train_accuracy"] for h in tr.history_] == [
        r["metrics"]["train_accuracy"] for r in expected if "train_accuracy" in r["metrics"]
    ]


class _UncachedRecorder:
    """Brute-force reference: rebuilds the layout and flattens from scratch for every snapshot."""

    def __init__(self, traj):
        self.traj = traj

    def append_model(self, model, **kw):
        from landscape.params import ParamLayout, parameters_to_vector

        bufs = {k: v.detach().clone() for k, v in model.named_buffers()}
        return self.traj.append(parameters_to_vector(model), buffers=bufs, layout=ParamLayout.from_model(model), **kw)


def test_cached_layout_recorder_equals_uncached_reference_through_growth_and_freezing():
    from landscape.trajectory import Trajectory

    class Change(Callback):
        def on_step_end(self, trainer, event):
            if event.step == 3:  # grow: a new model, a new segment
                new = nn.Sequential(nn.Linear(5, 9), nn.BatchNorm1d(9), nn.ReLU(), nn.Linear(9, 3))
                trainer.replace_model(new, event={"event": "tunnel_open"})
            if event.step == 5:  # freeze a tensor in place: it stays in the vector, same layout
                trainer.model[0].bias.requires_grad_(False)
            if event.step == 7:  # swap a parameter object in place, same shape
                trainer.model[3].weight = nn.Parameter(trainer.model[3].weight.detach() * 0.5)
                trainer.add_event({"event": "rescale"})

    runs = []
    for fast in (True, False):
        traj = Trajectory()
        rec = traj if fast else _UncachedRecorder(traj)
        _fit(_bn_net(), epochs=3, batch_size=8, seed=2, callbacks=[Change()], trajectory=rec, record_every_steps=1)
        runs.append(traj)
    fast, slow = runs
    assert len(fast) == len(slow) == 16
    assert [s.layout for s in fast.segments] == [s.layout for s in slow.segments]
    assert [(s.start, s.stop) for s in fast.segments] == [(s.start, s.stop) for s in slow.segments]
    assert len(fast.segments) == 2  # the growth; freezing and swapping keep the layout
    for a, b in zip(fast, slow):
        assert (a.step, a.epoch, a.metrics, a.tags, a.segment) == (b.step, b.epoch, b.metrics, b.tags, b.segment)
        assert a.vector.dtype == b.vector.dtype and torch.equal(a.vector, b.vector)
        assert a.buffers.keys() == b.buffers.keys()
        assert all(torch.equal(a.buffers[k], b.buffers[k]) for k in a.buffers)
        assert [(t.name, t.shape) for t in a.layout] == [(t.name, t.shape) for t in b.layout]


def test_accuracy_counted_in_chunks_equals_counting_every_step(monkeypatch):
    from landscape.train.metrics import CorrectCounter

    x, y = _data(n=45)
    runs = []
    for max_elements in (1 << 18, 7, 1):  # one count per epoch, a few steps per count, every step
        monkeypatch.setattr(CorrectCounter, "max_elements", max_elements)
        runs.append(Trainer(_net(), (x, y), optimizer=sgd(), epochs=3, batch_size=8, seed=1).fit().history_)
    assert runs[0] == runs[1] == runs[2]
    _, expected = _hand_written_run(_net(), x, y, epochs=3, batch=8, seed=1, every_steps=10**9)
    assert [h["train_accuracy"] for h in runs[0]] == [r["metrics"]["train_accuracy"] for r in expected[1:]]


@pytest.mark.parametrize("rk2", [False, True])
def test_without_training_accuracy_training_is_bitwise_the_same_and_no_outputs_are_kept(rk2):
    from landscape.train.optim import RK2

    def opt(params):
        sgd_ = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        return RK2(sgd_, "heun") if rk2 else sgd_

    seen = []

    class Peek(Callback):  # the outputs the loop holds for the count, after each step
        def on_step_end(self, trainer, event):
            seen.append(trainer._last_out)

    x, y = _data(n=45)
    a = Trainer(_bn_net(), (x, y), optimizer=opt, epochs=3, batch_size=8, seed=4).fit()
    b = Trainer(
        _bn_net(), (x, y), optimizer=opt, epochs=3, batch_size=8, seed=4, train_accuracy=False, callbacks=[Peek()]
    )
    b.fit()
    assert torch.equal(parameters_to_vector(a.model), parameters_to_vector(b.model))
    assert all(torch.equal(u, v) for u, v in zip(a.model.buffers(), b.model.buffers()))
    assert [h["train_loss"] for h in a.history_] == [h["train_loss"] for h in b.history_]
    assert all("train_accuracy" in h for h in a.history_)
    assert not any("train_accuracy" in h for h in b.history_)
    assert len(seen) == a.step == 18 and all(o is None for o in seen)


def test_progress_bar_does_not_change_training(capsys):
    a = Trainer(_net(), _data(), optimizer=sgd(), epochs=3, batch_size=8, seed=3, progress=True).fit()
    b = Trainer(_net(), _data(), optimizer=sgd(), epochs=3, batch_size=8, seed=3).fit()
    assert torch.equal(parameters_to_vector(a.model), parameters_to_vector(b.model))
    assert a.history_ == b.history_


@pytest.mark.slow
def test_seeded_training_with_recording_is_bitwise_reproducible_across_processes(tmp_path):
    import os
    import subprocess
    import sys

    from landscape.trajectory import Trajectory

    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from landscape.train.loop import Trainer\n"
        "from landscape.trajectory.store import Trajectory\n"
        "torch.set_num_threads(1)\n"  # as this process (tests/conftest.py): reductions may split by thread
        "torch.manual_seed(5)\n"
        "net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)\n"
        "t = Trajectory(sys.argv[1], durable=False)\n"
        "Trainer(net, (x, y), optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), epochs=3,\n"
        "        batch_size=16, seed=7, trajectory=t, record_every_steps=2).fit()\n"
        "t.close()\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    paths = [tmp_path / "a", tmp_path / "b"]
    for p in paths:
        subprocess.run([sys.executable, "-c", script, str(p)], check=True, env=env, cwd=root, timeout=300)
    here = Trajectory()
    _fit(_bn_net(), epochs=3, batch_size=16, seed=7, trajectory=here, record_every_steps=2)
    a, b = (Trajectory.open(p, "r") for p in paths)
    assert len(a) == len(b) == len(here) == 7
    for sa, sb, sh in zip(a, b, here):
        assert torch.equal(sa.vector, sb.vector) and torch.equal(sa.vector, sh.vector)
        assert all(torch.equal(sa.buffers[k], sh.buffers[k]) for k in sh.buffers)
        assert sa.metrics == sb.metrics == sh.metrics and sa.step == sh.step


@pytest.mark.parametrize("form", ["ignored", "class_weights", "ignored_batches"])
def test_running_train_loss_of_a_weighted_mean_is_the_whole_data_loss(form):
    """Cross-entropy with ignored targets or class weights divides by the summed weights, not the batch size:
    with a frozen model (lr 0) the epoch's running loss equals the loss of the whole data in one call."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3)).double()
    x = torch.randn(11, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, -100, 2, -100, -100, 1, 0, 2, -100, 1])
    if form == "class_weights":
        y = y.clamp(min=0)
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64))
    else:
        loss_fn = F.cross_entropy
    data = (x, y) if form != "ignored_batches" else [(x[i : i + 3], y[i : i + 3]) for i in range(0, 11, 3)]
    tr = Trainer(
        net,
        data,
        loss_fn,
        lambda p: torch.optim.SGD(p, lr=0.0),
        epochs=1,
        batch_size=3 if form != "ignored_batches" else None,
    ).fit()
    with torch.no_grad():
        whole = float(loss_fn(net(x), y))
        by_size = sum(float(loss_fn(net(xb), yb)) * len(yb) for xb, yb in iterate_batches((x, y), 3)) / 11
    assert tr.history_[0]["train_loss"] == pytest.approx(whole, rel=1e-12)
    assert abs(by_size - whole) > 1e-3  # the batch-size weighting this replaces would be visibly off


def test_trainer_repr_names_model_optimizer_length_batching_and_progress():
    # The default object repr said nothing. 40 samples in batches of 16 are 3 steps an epoch: 6 after 2 epochs.
    torch.manual_seed(0)
    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    net = nn.Sequential(nn.Linear(4, 3))
    t = Trainer(net, (X, y), optimizer="sgd", optimizer_kwargs={"lr": 0.1, "momentum": 0.9}, epochs=2, batch_size=16)
    head = "Trainer(Sequential, SGD(lr=0.1, momentum=0.9), epochs=2, batch_size=16, data: 40 samples"
    assert repr(t) == head + ", trained 0 steps (0 epochs))"
    t.fit()
    assert repr(t) == head + ", trained 6 steps (2 epochs))"
    batches = [(X[:20], y[:20]), (X[20:], y[20:])]
    adam = Trainer(net, batches, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), steps=5)
    want = "Trainer(Sequential, Adam(lr=0.001), steps=5, batches as given, data: 2 batches per epoch, trained 0 steps"
    assert repr(adam) == want + " (0 epochs))"
