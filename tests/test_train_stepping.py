"""How the Trainer steps its optimizer, counts its training accuracy and reads an evaluation set's loss.

References: the same run stepped as ``optimizer.step(closure)`` (forced by a no-op global step pre-hook), bitwise;
the order of a pre-hook against the closure; a brute-force float64 accuracy; the closure loss evaluated by hand.
"""

import copy

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from landscape import Problem
from landscape.train import Trainer
from landscape.train._stepping import closure_first
from landscape.train.metrics import CorrectCounter
from landscape.train.optim import make_optimizer


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _vector(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


OPTIMIZERS = [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=0.01),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    lambda p: torch.optim.RMSprop(p, lr=0.01),
    lambda p: torch.optim.Adagrad(p, lr=0.1),
]


@pytest.mark.parametrize("factory", OPTIMIZERS)
def test_closure_first_steps_equal_step_closure_bitwise(factory):
    # The reference run is forced through optimizer.step(closure) by a global pre-hook that does nothing.
    x, y = _data()
    kw = dict(optimizer=factory, epochs=3, batch_size=16, seed=3)
    fast = Trainer(_net(), (x, y), **kw)
    assert closure_first(fast.optimizer)
    fast.fit()
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: None)
    try:
        ref = Trainer(_net(), (x, y), **kw).fit()
    finally:
        handle.remove()
    assert torch.equal(_vector(fast.model), _vector(ref.model))
    assert fast.history_ == ref.history_


def test_a_pre_hook_still_runs_before_the_closure():
    # A step pre-hook sees the step before its closure (as optimizer.step(closure) runs them): the regularizer is
    # evaluated inside the closure, so the log alternates pre, closure.
    x, y = _data()
    log = []

    def reg(model):
        log.append("closure")
        return torch.zeros((), dtype=torch.float64)

    def factory(params):
        opt = torch.optim.SGD(params, lr=0.1)
        opt.register_step_pre_hook(lambda o, a, k: log.append("pre"))
        return opt

    Trainer(_net(), (x, y), optimizer=factory, steps=3, batch_size=16, regularizer=reg).fit()
    assert log == ["pre", "closure"] * 3


def test_stepping_under_no_grad_trains_as_fit_does():
    # Iterated inside torch.no_grad() the closure must still see grad mode on (step(closure) enables it).
    x, y = _data()
    kw = dict(optimizer="sgd", optimizer_kwargs={"lr": 0.1}, epochs=2, batch_size=16)
    ref = Trainer(_net(), (x, y), **kw).fit()
    tr = Trainer(_net(), (x, y), **kw)
    with torch.no_grad():
        for _ in tr:
            pass
    assert torch.equal(_vector(tr.model), _vector(ref.model))


def test_closure_first_only_for_stock_step():
    params = list(_net().parameters())

    class Own(torch.optim.SGD):
        def step(self, closure=None):  # a step of its own (SAM-like optimizers read the closure themselves)
            return super().step(closure)

    class Same(torch.optim.Adam):  # inherits Adam's step
        pass

    patched = torch.optim.SGD(params, lr=0.1)
    patched.step = lambda closure=None: None
    scheduled = torch.optim.SGD(params, lr=0.1)
    torch.optim.lr_scheduler.StepLR(scheduled, 2)  # wraps the instance's step in a call counter
    assert closure_first(Same(params)) and closure_first(scheduled)
    assert not closure_first(Own(params, lr=0.1))
    assert not closure_first(patched)
    assert not closure_first(torch.optim.LBFGS(params))
    assert not closure_first(make_optimizer("sgd_rk2", params, lr=0.1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ignore", [None, 2])
def test_correct_counter_equals_brute_force(dtype, ignore):
    # Ties (a repeated maximum), NaN rows and ignored labels, over several chunks; the reference counts row by row.
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(7, 4, generator=g).round().to(dtype) for _ in range(5)]
    outs[1][2] = float("nan")
    ys = [torch.randint(0, 4, (7,), generator=g) for _ in range(5)]
    counter = CorrectCounter(ignore)
    counter.outs.extend(outs[:3])
    counter.ys.extend(ys[:3])
    counter.reduce()
    counter.outs.extend(outs[3:])
    counter.ys.extend(ys[3:])
    hit = kept = 0
    for o, t in zip(outs, ys):
        for row, label in zip(o.double().tolist(), t.tolist()):
            if label == ignore:
                continue
            kept += 1
            nan = [i for i, v in enumerate(row) if v != v]
            best = nan[0] if nan else row.index(max(row))  # the first NaN, else the first maximum
            hit += best == label
    assert counter.result() == pytest.approx(hit / kept, abs=0)


def test_eval_set_reads_a_closure_loss_as_training_does():
    # A closure whose first parameter is not named like a model is one under loss_form="batch": training reads it
    # so, and the epoch-end evaluation set must too (it was read as loss(outputs, targets) and failed).
    x, y = _data()
    xv, yv = _data(13, seed=5)

    def loss(m, batch):
        xb, yb = batch
        return nn.functional.cross_entropy(m(xb), yb)

    tr = Trainer(Problem(_net(), (x, y), loss, loss_form="batch"), epochs=2, eval_data={"val": (xv, yv)}).fit()
    model = copy.deepcopy(tr.model).eval()
    with torch.no_grad():
        expected = float(loss(model, (xv, yv)))
    assert tr.history_[-1]["val_loss"] == pytest.approx(expected, rel=1e-12)
