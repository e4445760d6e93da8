"""Bug hunt 13 in ``tunnels/`` and ``persistence/``: each test fails on the code before its fix."""

from __future__ import annotations

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
