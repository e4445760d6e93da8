import copy

import pytest
import torch
from torch import nn

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


def test_seeded_runs_are_bitwise_identical_and_seed_matters():
    runs = []
    for seed in (3, 3, 4):
        rec = ListRecorder()
        Trainer(_net(), _data(), optimizer=sgd(), epochs=3, batch_size=8, seed=seed, trajectory=rec,
                record_every_steps=2).fit()
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


def test_recording_schedule_steps_epochs_first_last_without_duplicates():
    rec = ListRecorder()
    # 40 samples, batch 16 -> 3 batches/epoch; 7 steps: stops in the middle of epoch 3
    Trainer(_net(), _data(), optimizer=sgd(), steps=7, batch_size=16, trajectory=rec, record_every_steps=2,
            record_every_epochs=1).fit()
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
    assert opened[0]["step"] == 3 and opened[0]["tags"]["events"][0]["event"] == "tunnel_open"


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


def test_event_raised_in_the_last_step_is_recorded():
    class Mark(Callback):
        def on_step_end(self, trainer, event):
            if event.step == 3:
                trainer.add_event({"event": "mark"})

    rec = ListRecorder()
    Trainer(_net(), _data(), optimizer=sgd(), steps=3, batch_size=8, callbacks=[Mark()], trajectory=rec).fit()
    assert rec[-1]["step"] == 3 and rec[-1]["tags"]["events"] == [{"step": 3, "event": "mark"}]
