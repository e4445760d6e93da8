"""A torch loss module with ``reduction="sum"``: the loss is its sum over the whole data, on every path.

The Hessian operator already read such a loss as the sum (``test_hessian_numerics``); ``Problem.loss`` and the
engine took it for a batch mean times the batch size, so their value depended on the batching (34.1 as one
batch of 20, 8.5 in batches of 5). The reference is the module called once on all the data, in float64.
"""

import numpy as np
import pytest
import torch
from torch import nn

from landscape import Problem
from landscape.analyze import line
from landscape.curvature import hessian_spectrum
from landscape.evaluate import evaluate_points


def _case(kind: str):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    X = torch.randn(20, 3, dtype=torch.float64)
    if kind == "cross_entropy":
        return net, X, torch.randint(0, 4, (20,)), nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss()
    return net, X, torch.randn(20, 4, dtype=torch.float64), nn.MSELoss(reduction="sum"), nn.MSELoss()


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_every_path_gives_the_sum_over_the_data_whatever_the_batching(kind):
    net, X, t, total, mean = _case(kind)
    with torch.no_grad():
        want = float(total(net(X), t))
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    for bs in (None, 5, 7):
        prob = Problem(net, (X, t), total, batch_size=bs)
        assert float(prob.loss()) == pytest.approx(want, rel=1e-12), bs
        assert evaluate_points(prob, theta[None])["loss"][0] == pytest.approx(want, rel=1e-12), bs
    for data, bs in (((X, t), 5), ([(X[:13], t[:13]), (X[13:], t[13:])], None)):
        got = evaluate_points(net, theta[None], data, loss_fn=total, batch_size=bs)["loss"][0]
        assert got == pytest.approx(want, rel=1e-12)
    assert line(net, net, net, (X, t), alphas=[0.0], loss_fn=total).metrics["loss"][0] == pytest.approx(want, rel=1e-12)
    # derivatives: the mean's times the number of terms (20 samples; 80 squared errors for the MSE), however batched
    ref, v = Problem(net, (X, t), mean), torch.randn(theta.numel(), dtype=torch.float64)
    terms = t.numel()
    for bs in (None, 6):
        prob = Problem(net, (X, t), total, batch_size=bs)
        torch.testing.assert_close(prob.grad(), terms * ref.grad(), rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(prob.hvp(v), terms * ref.hvp(v), rtol=1e-11, atol=1e-12)


def test_the_hessian_of_a_problem_is_the_shorthands():
    net, X, t, total, _ = _case("cross_entropy")
    kw = {"top_k": 2, "n_probes": 1, "steps": 8, "trace_products": 0, "seed": 0}
    a = hessian_spectrum(Problem(net, (X, t), total, batch_size=6), **kw).top_eigenvalues
    b = hessian_spectrum(net, total, data=(X, t), **kw).top_eigenvalues
    np.testing.assert_allclose(a, b, rtol=1e-8)
