"""Exact shortcuts of the Tunnels figures (session 16): the same numbers with less work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from figures.tunnels._setup import FullLoss
from landscape.train import Callback, Trainer, evaluate_dataset
from tunnels import TunnelSchedule


class _Reference(Callback):
    """The recorder before the shortcut: a new evaluate_dataset problem at every record."""

    def __init__(self, data, every):  # noqa: ANN001 - test helper
        self.data, self.every, self.losses = data, every, []

    def _rec(self, trainer) -> None:  # noqa: ANN001
        self.losses.append(
            evaluate_dataset(trainer.model, self.data, nn.functional.cross_entropy, accuracy=False)["loss"]
        )

    def on_train_begin(self, trainer) -> None:  # noqa: ANN001
        self._rec(trainer)

    def on_step_end(self, trainer, event) -> None:  # noqa: ANN001
        if event.step % self.every == 0:
            self._rec(trainer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_loss_recorder_equals_evaluate_dataset_bitwise_across_an_opening(dtype):
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(1500, 3, generator=g), torch.randint(0, 2, (1500,), generator=g)  # two batches of <= 1024
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)
    fl, ref = FullLoss((X, y), every=2), _Reference((X, y), every=2)
    sched = TunnelSchedule(open_at=3, units={"0": 1}, warmup_steps=0)  # the network grows at step 3
    tr = Trainer(
        net,
        (X, y),
        nn.functional.cross_entropy,
        "sgd",
        optimizer_kwargs={"lr": 0.5},
        steps=8,
        batch_size=64,
        seed=0,
        callbacks=[sched, fl, ref],
    )
    tr.fit()
    assert tr.model[0].out_features == 5  # opened: the recorder followed the new model
    assert fl.steps == [0, 2, 4, 6, 8]
    assert fl.losses == ref.losses  # bitwise: the same batches, casts and sums
    assert len(set(fl.losses)) == len(fl.losses)  # the weights moved between records (not a stale copy)
    with torch.no_grad():  # brute force at the end: the mean cross-entropy in float64
        want = nn.functional.cross_entropy(tr.model.double()(X.double()), y)
    assert abs(fl.losses[-1] - float(want)) <= (1e-6 if dtype == torch.float32 else 1e-12)
