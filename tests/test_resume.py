"""Trainer checkpoint and resume: N epochs, a checkpoint, M more == N + M in one go, bit for bit."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from torch import nn

from landscape.train import (
    Callback,
    CheckpointError,
    SwitchSchedule,
    Trainer,
    load_checkpoint,
    resume,
    save_checkpoint,
    trainer_state,
)
from landscape.trajectory import Trajectory


def _net(dtype: torch.dtype, bn: bool) -> nn.Module:
    torch.manual_seed(3)
    layers: list[nn.Module] = [nn.Linear(5, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3)]  # dropout draws from the global generator
    return nn.Sequential(*layers).to(dtype)


def _data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 5, generator=g, dtype=dtype), torch.randint(0, 3, (40,), generator=g)


class _Counting(Callback):
    """A callback with state: how many steps it saw (and it re-checks the count against the trainer's)."""

    def __init__(self) -> None:
        self.seen = 0

    def on_step_end(self, trainer: Any, event: Any) -> None:
        self.seen += 1
        assert self.seen == trainer.step  # a resumed run that lost the count would fail here

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: Any) -> None:
        self.seen = int(state["seen"])


def _equal(a: Any, b: Any) -> bool:
    """Bitwise equality of nested states (tensors by dtype, shape and bits)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


OPTIMIZERS = {
    "adam": ("adam", {"lr": 0.01}),
    "sgd_momentum": ("sgd", {"lr": 0.05, "momentum": 0.9}),
    # switch at step 7 (inside the first part) and at step 14 (inside the resumed part); 5 steps an epoch
    "switch_before": (lambda p: SwitchSchedule(p, [(0, ("sgd", {"lr": 0.05})), (7, "adam")]), {}),
    "switch_after": (lambda p: SwitchSchedule(p, [(0, ("sgd", {"lr": 0.05})), (14, "adam")]), {}),
}


def _trainer(dtype: torch.dtype, bn: bool, opt: str, epochs: int, traj: Any = None) -> Trainer:
    method, kw = OPTIMIZERS[opt]
    return Trainer(
        _net(dtype, bn),
        _data(dtype),
        optimizer=method,
        optimizer_kwargs=kw,
        epochs=epochs,
        batch_size=8,
        shuffle=True,
        seed=5,
        eval_data={"val": _data(dtype)},
        callbacks=[_Counting()],
        trajectory=traj,
        record_every_steps=3,
        tags={"run": "r"},
    )


def _same_snapshots(a: Trajectory, b: Trajectory) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert (x.step, x.epoch, x.tags, x.metrics) == (y.step, y.epoch, y.tags, y.metrics)
        assert _equal(x.vector, y.vector) and _equal(dict(x.buffers or {}), dict(y.buffers or {}))


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize(("dtype", "bn"), [(torch.float64, True), (torch.float32, True), (torch.float32, False)])
def test_resume_equals_one_run(tmp_path: Any, dtype: torch.dtype, bn: bool, opt: str) -> None:
    whole = _trainer(dtype, bn, opt, 4, Trajectory()).fit()
    first = _trainer(dtype, bn, opt, 2, Trajectory()).fit()
    path = save_checkpoint(first, tmp_path / "ckpt.pt")
    # the resumed run continues the first run's store (where its snapshots are)
    second = resume(_trainer(dtype, bn, opt, 4, first.trajectory), load_checkpoint(path)).fit()
    assert _equal(second.model.state_dict(), whole.model.state_dict())
    assert _equal(second.optimizer.state_dict(), whole.optimizer.state_dict())
    assert second.history_ == whole.history_ and second.step == whole.step == 20
    assert second.callbacks[0].seen == 20
    _same_snapshots(second.trajectory, whole.trajectory)
    if opt.startswith("switch"):  # the switch event was recorded once, at its step
        tagged = [s.step for s in whole.trajectory if s.tags.get("events")]
        assert tagged == [7 if opt == "switch_before" else 14]


def test_checkpoint_inside_the_loop(tmp_path: Any) -> None:
    """A checkpoint taken in ``for event in trainer`` at an epoch end (the run goes on) resumes to the same end."""
    whole = _trainer(torch.float32, True, "switch_after", 5)
    states = {}
    for ev in whole:
        if ev.epoch_end and ev.epoch in (0, 2):
            states[ev.epoch + 1] = trainer_state(whole)
    for done, state in states.items():
        later = resume(_trainer(torch.float32, True, "switch_after", 5), state).fit()
        assert _equal(later.model.state_dict(), whole.model.state_dict()), done
        assert _equal(later.optimizer.state_dict(), whole.optimizer.state_dict()), done
        assert later.history_ == whole.history_
    assert states[1]["epochs_done"] == 1 and states[1]["step"] == 5
    # the state is a copy: training on did not move it
    assert not _equal(states[1]["model"], whole.model.state_dict())


def test_resume_twice_and_by_steps(tmp_path: Any) -> None:
    """Checkpoints chain (1 + 1 + 2 epochs), and steps= counted from the start ends where a one-go run does."""
    whole = _trainer(torch.float64, True, "adam", 4).fit()
    a = _trainer(torch.float64, True, "adam", 1).fit()
    b = resume(_trainer(torch.float64, True, "adam", 2), trainer_state(a)).fit()
    c = resume(_trainer(torch.float64, True, "adam", 4), trainer_state(b)).fit()
    assert _equal(c.model.state_dict(), whole.model.state_dict()) and c.history_ == whole.history_
    by_steps = Trainer(_net(torch.float64, True), _data(torch.float64), steps=13, batch_size=8, seed=5)
    d = Trainer(_net(torch.float64, True), _data(torch.float64), epochs=2, batch_size=8, seed=5).fit()
    e = Trainer(_net(torch.float64, True), _data(torch.float64), steps=13, batch_size=8, seed=5)
    e = resume(e, trainer_state(d))
    assert _equal(e.fit().model.state_dict(), by_steps.fit().model.state_dict())


def _finished(epochs: int = 1, **kw: Any) -> Trainer:
    return _trainer(torch.float32, True, "adam", epochs, **kw).fit()


def test_errors_when_checkpointing() -> None:
    fresh = _trainer(torch.float32, True, "adam", 1)
    with pytest.raises(CheckpointError, match="no epoch yet"):
        trainer_state(fresh)
    mid = Trainer(_net(torch.float32, True), _data(torch.float32), steps=7, batch_size=8).fit()  # 5 steps an epoch
    with pytest.raises(CheckpointError, match="inside epoch 2.*epoch ends only"):
        trainer_state(mid)
    stopped = _trainer(torch.float32, True, "adam", 2)
    for ev in stopped:
        if ev.epoch_end:
            stopped.stop()
    with pytest.raises(CheckpointError, match="was stopped"):
        trainer_state(stopped)


def test_errors_when_loading(tmp_path: Any) -> None:
    path = save_checkpoint(_finished(), tmp_path / "c.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(damaged)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a trainer checkpoint"):
        load_checkpoint(other)
    newer = tmp_path / "newer.pt"
    torch.save({**load_checkpoint(path), "version": 99}, newer)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(newer)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self) -> Any:
        return (print, ("this ran",))


def test_loading_runs_no_code(tmp_path: Any, capsys: Any) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "landscape.trainer_checkpoint", "x": _Evil()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="not a readable trainer checkpoint"):
        load_checkpoint(path)
    assert "this ran" not in capsys.readouterr().out


def _two_groups(params: Any) -> torch.optim.Optimizer:
    p = list(params)
    return torch.optim.Adam([{"params": p[:2]}, {"params": p[2:]}], lr=0.01)


def test_errors_when_resuming() -> None:
    state = trainer_state(_finished(2))
    X, y = _data(torch.float32)
    base: dict[str, Any] = {"optimizer": "adam", "optimizer_kwargs": {"lr": 0.01}, "batch_size": 8, "epochs": 3}
    base["callbacks"] = [_Counting()]
    cases = [
        (Trainer(_net(torch.float32, True), (X, y), **{**base, "batch_size": 4}), "batch_size 8.*has 4"),
        (Trainer(_net(torch.float32, True), (X[:32], y[:32]), **base), "samples 40.*has 32"),
        (Trainer(_net(torch.float32, False), (X, y), **base), "do not fit this trainer's model"),
        (Trainer(_net(torch.float32, True), (X, y), **{**base, "optimizer": "sgd"}), "optimizer 'Adam'.*'SGD'"),
        (Trainer(_net(torch.float32, True), (X, y), **{**base, "epochs": 1}), "pass epochs=2 \\+"),
        (Trainer(_net(torch.float32, True), (X, y), **{**base, "callbacks": []}), "callbacks \\['_Counting'\\]"),
        (
            Trainer(_net(torch.float32, True), (X, y), **{**base, "optimizer": _two_groups, "optimizer_kwargs": {}}),
            "optimizer state does not fit",
        ),
    ]
    for tr, msg in cases:
        with pytest.raises(CheckpointError, match=msg):
            resume(tr, state)
    with pytest.raises(CheckpointError, match="not a trainer checkpoint"):
        resume(Trainer(_net(torch.float32, True), (X, y), **base), {"step": 3})
    started = Trainer(_net(torch.float32, True), (X, y), **base).fit()
    with pytest.raises(RuntimeError, match="already run"):
        resume(started, state)
