"""A Trainer's epoch-end evaluation keeps each evaluation pair's problem (batches checked once): same numbers.

Reference: a fresh ``evaluate_dataset`` of a copy of the model at each epoch end, and the float64 mean loss and
accuracy computed directly; the weights are still checked at every epoch end.
"""

import copy

import pytest
import torch
from torch import nn

from landscape import Problem
from landscape.train import Callback, Trainer, evaluate_dataset
from landscape.validation import InputError


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


class _Fresh(Callback):
    """At every epoch end: the metrics of a fresh evaluation of a copy of the model, and direct float64 ones."""

    def __init__(self, val):
        self.val, self.fresh, self.direct = val, [], []

    def on_epoch_end(self, trainer, event):  # noqa: D102
        model = copy.deepcopy(trainer.model)
        self.fresh.append(evaluate_dataset(model, self.val, nn.functional.cross_entropy))
        with torch.no_grad():
            out = model.double()(self.val[0].double())
        loss = float(nn.functional.cross_entropy(out, self.val[1]))
        self.direct.append({"loss": loss, "accuracy": float((out.argmax(1) == self.val[1]).double().mean())})


def test_epoch_end_metrics_equal_a_fresh_evaluation_every_epoch():
    val = _data(30, 1)
    fresh = _Fresh(val)
    tr = Trainer(
        _net(),
        _data(40, 0),
        nn.functional.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.5),
        epochs=4,
        batch_size=8,
        eval_data={"val": val},
        callbacks=[fresh],
    ).fit()
    assert len(tr.history_) == 4
    assert len({h["val_loss"] for h in tr.history_}) == 4  # the weights moved: four different points
    for h, f, d in zip(tr.history_, fresh.fresh, fresh.direct):
        assert h["val_loss"] == f["loss"] and h["val_accuracy"] == f["accuracy"]  # bitwise
        assert h["val_loss"] == pytest.approx(d["loss"], rel=1e-5)
        assert h["val_accuracy"] == d["accuracy"]
    assert isinstance(tr._eval_problems["val"], Problem)  # kept over the epochs


def test_epoch_end_evaluation_still_checks_the_weights():
    class Poison(Callback):
        def on_step_end(self, trainer, event):  # noqa: D102
            if event.step == 6:  # in the second epoch, after the first epoch end kept the problem
                with torch.no_grad():
                    trainer.model[0].weight[0, 0] = float("nan")

    tr = Trainer(
        _net(),
        _data(40, 0),
        nn.functional.cross_entropy,
        lambda p: torch.optim.SGD(p, lr=0.5),
        epochs=3,
        batch_size=8,
        eval_data={"val": _data(30, 1)},
        callbacks=[Poison()],
        on_nonfinite="ignore",  # the NaN losses pass: the epoch end's weight check must catch the weights
    )
    with pytest.raises(InputError, match="NaN|nan|finite"):
        tr.fit()
    assert len(tr.history_) == 1  # the first epoch end evaluated, the second refused the weights
