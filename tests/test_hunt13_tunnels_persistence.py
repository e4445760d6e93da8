"""Bug hunt 13 in ``tunnels/`` and ``persistence/``: each test fails on the code before its fix."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tunnels import split_stats

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.func's first jvp scripts decomps

DT = torch.float64


@pytest.mark.parametrize(
    "loss_fn",
    [nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2], dtype=DT)), nn.CrossEntropyLoss(ignore_index=2)],
    ids=["class-weights", "ignore-index"],
)
def test_split_stats_over_batches_is_the_A_of_the_whole_data_for_a_weighted_mean_loss(loss_fn) -> None:
    # torch's mean of a class-weighted (or ignore_index) cross-entropy divides by the kept targets' summed weights,
    # not the batch size: weighting each batch's A by its size gave an A off by up to 5% of its largest entry.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(32, 3, dtype=DT), torch.randint(0, 3, (32,))
    batched = split_stats(net, (x, y), loss_fn, batch_size=12)  # batches of 12, 12 and 8
    whole = split_stats(net, (x, y), loss_fn, batch_size=None)
    torch.testing.assert_close(batched.A["0"], whole.A["0"], rtol=1e-12, atol=1e-15)
    # A 1 is the gradient of the loss of the whole data in one call w.r.t. each unit's weight row and bias
    gw, gb = torch.autograd.grad(loss_fn(net(x), y), [net[0].weight, net[0].bias])
    torch.testing.assert_close(batched.A["0"].sum(2), torch.cat([gw, gb[:, None]], 1), rtol=1e-12, atol=1e-15)
    assert batched.n_examples == 32 and batched.n_batches == 3


@pytest.mark.parametrize("stats", ["full", "partial"])
def test_schedule_reorganization_splits_by_the_A_of_the_merged_network(stats) -> None:
    # Sec. 3.2: a reorganization closes u2 onto u1, then opens u in u2's slot; the opened network is the merged one,
    # so lambda_star, rho and the unit ranking are those of its A (App. B: "a pass over the entire dataset in order to
    # stay consistent with the theory"), as reorganize(data=...) computes them. The schedule passed the A of the
    # network before the merge: another split for other units ([7, 0] where the merged network ranks [0, 2]).
    from landscape.train import Callback, Trainer
    from tunnels import TunnelSchedule, close_units

    class Before(Callback):
        def on_step_end(self, trainer, event):  # noqa: D102
            if event.step == 3:
                self.model = copy.deepcopy(trainer.model)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.Sigmoid(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    spy = Before()
    sched = TunnelSchedule(
        3, {"0": 2}, action="reorganize", t=1.0, stats=stats, max_batches=2, stats_batch_size=16, warmup_steps=0
    )
    kw = {"optimizer_kwargs": {"lr": 0.1}, "steps": 4, "batch_size": 16, "record_every_epochs": None}
    Trainer(net, (x, y), nn.functional.cross_entropy, "sgd", callbacks=[spy, sched], **kw).fit()
    ((_, ev),) = sched.events_
    merges = [(c.merged_into, c.clone) for c in ev.changes]
    merged, _ = close_units(spy.model, "0", merges, remove=False)
    batches = 2 if stats == "partial" else None
    ref = split_stats(merged, (x, y), nn.functional.cross_entropy, ["0"], max_batches=batches, batch_size=16)
    rho, star = ref.principal("0")
    free = [u for u in torch.argsort(rho, descending=True, stable=True).tolist() if u not in [b for _, b in merges]]
    assert [c.unit for c in ev.changes] == free[:2]  # the top-rho units of the merged network
    for c in ev.changes:
        torch.testing.assert_close(torch.tensor(c.lambdas, dtype=DT), 0.5 + star[c.unit], rtol=1e-6, atol=1e-6)
        assert c.rho == pytest.approx(float(rho[c.unit]), rel=1e-6)


def test_partial_persistent_training_draws_among_the_layers_it_trains() -> None:
    # PN eq. (5): partial persistent training takes one random layer's parameters "into persistent training". A
    # layer whose parameters are all frozen cannot move: its penalty is a constant, so an iteration that drew it
    # retrained the plain model bitwise (iteration 3 here), a silently wasted iteration.
    from persistence import PersistentTrainer, draw_layer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    for p in net[0].parameters():
        p.requires_grad_(False)
    x, y = torch.randn(64, 3, dtype=DT), torch.randint(0, 2, (64,))
    kw = {"optimizer_kwargs": {"lr": 0.1}, "steps": 20, "batch_size": 16, "eval_data": {"val": (x, y)}}
    pt = PersistentTrainer(
        net, (x, y), nn.functional.cross_entropy, "sgd", iterations=5, lam=0.1, mode="partial", seed=1, **kw
    )
    assert [pt.layer_for(i) for i in range(1, 40)] == ["2"] * 39  # the only layer with trainable parameters
    pt.fit()
    assert [r.layer for r in pt.results_] == [None, "2", "2", "2", "2"]
    assert all(not torch.equal(r.final, pt.results_[0].final) for r in pt.results_[1:])  # every iteration persistent
    with pytest.raises(ValueError, match="layer '0' has no trainable parameter"):
        PersistentTrainer(
            net, (x, y), nn.functional.cross_entropy, "sgd", iterations=2, lam=0.1, mode="partial", layer="0", **kw
        )
    # without frozen layers the draw is unchanged: every layer of the model, as draw_layer gives it
    free = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    pt = PersistentTrainer(
        free, (x, y), nn.functional.cross_entropy, "sgd", iterations=2, lam=0.1, mode="partial", seed=1, **kw
    )
    draws = [draw_layer(["0", "2"], i, mode="partial", seed=1) for i in range(40)]
    assert [pt.layer_for(i) for i in range(40)] == draws
