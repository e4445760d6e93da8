"""Bug hunt 14 of curvature over training, sharpness and the spectrum, against brute force in float64.

References: the dense Hessian (double backward), its eigendecomposition, and closed forms of quadratic losses.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature import gradient_descent_curvature, hessian_spectrum, trajectory_curvature
from landscape.params import ParamLayout, parameters_to_vector
from landscape.problem import Problem
from landscape.trajectory import Trajectory
from tests.helpers import dense_hessian

F64 = torch.float64


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 9-parameter regression network and its data ``(X (10, 2), y (10, 1))``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    return net, torch.randn(10, 2, dtype=F64), torch.randn(10, 1, dtype=F64)


def test_top_k_beyond_the_dimension_gives_every_eigenvalue_and_says_so():
    net, X, y = _tiny()
    ev = torch.linalg.eigvalsh(dense_hessian(net, nn.functional.mse_loss, X, y)).flip(0).numpy()
    assert len(ev) == 9
    with pytest.warns(UserWarning, match="top_k=20 exceeds the Hessian's dimension 9"):
        spec = hessian_spectrum(net, "mse", (X, y), top_k=20, steps=50, n_probes=2, tol=1e-10)
    np.testing.assert_allclose(spec.top_eigenvalues, ev, rtol=1e-9, atol=1e-12)
    extra = spec.provenance.extra
    assert extra["top_k"] == len(spec.top_eigenvalues) == 9 and extra["top_k_requested"] == 20
    assert extra["steps"] == spec.nodes.shape[1] == 9  # the steps too are the ones run


def _batch_statistics_hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense float64 Hessian of the cross-entropy with BatchNorm's batch statistics (double backward)."""
    m = copy.deepcopy(model).train()
    layout = ParamLayout.from_model(m)
    bufs = {k: v.clone() for k, v in m.named_buffers()}

    def loss(v: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(m, {**bufs, **layout.unflatten(v)}, (X,)), y)

    return torch.autograd.functional.hessian(loss, parameters_to_vector(m).detach())


def _bn_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():  # running statistics far from the batch's: eval and train mode differ
        net[1].running_mean.fill_(2.0)
        net[1].running_var.fill_(5.0)
    return net, torch.randn(16, 3, dtype=F64), torch.randint(0, 2, (16,))


def test_gradient_descent_curvature_of_a_problem_takes_its_batchnorm_mode():
    """gradient_descent_curvature(Problem(..., bn_mode="train")) measured the eval-mode Hessian (the recorder got
    only the trainer's data and loss): 1.63 for the batch-statistics loss's 3.88 at step 0."""
    net, X, y = _bn_net()
    traj = Trajectory()
    problem = Problem(net, (X, y), bn_mode="train")
    tr, _ = gradient_descent_curvature(problem, lr=0.1, steps=4, every_steps=2, trajectory=traj, tol=1e-10)
    assert tr.bn_mode == "train" and len(traj) == len(tr) == 3
    for t in range(len(traj)):
        H = _batch_statistics_hessian(traj.model_at(net, t), X, y)
        assert tr.eigenvalues[t, 0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)


def test_trajectory_curvature_records_the_dtype_it_computed_in():
    """A float32 model's curvature computed in float64 (dtype=) said nothing of the dtype: the provenance had no
    dtype, model dtype, reduction, BatchNorm flag or the operator's notes (hessian_spectrum's has all)."""
    net, X, y = _bn_net()
    net32 = copy.deepcopy(net).float()
    traj = Trajectory()
    traj.append_model(net32, step=0)
    data = (X.float(), y)
    wide = trajectory_curvature(traj, net32, nn.functional.cross_entropy, data, k=2, tol=1e-12, dtype=F64)
    ev = torch.linalg.eigvalsh(dense_hessian(net32, nn.functional.cross_entropy, X.float(), y)).flip(0)
    # float64 products: the float32 model's Hessian to float64 accuracy (float32 products give ~1e-6)
    np.testing.assert_allclose(wide.eigenvalues[0], ev[:2].numpy(), rtol=1e-10)
    extra = wide.provenance.extra
    assert (extra["dtype"], extra["model_dtype"]) == ("torch.float64", "torch.float32")
    assert extra["reduction"] == "mean" and extra["batchnorm"] is True and isinstance(extra["notes"], list)
    narrow = trajectory_curvature(traj, net32, nn.functional.cross_entropy, data, k=2, tol=1e-5)
    assert narrow.provenance.extra["dtype"] == "torch.float32"


def test_an_unconverged_layer_eigenvalue_is_not_reported_converged():
    """With a product limit, a layer's top eigenvalue came out 0.11 short while the point said converged (only the
    top-k run was counted). Converged must mean every value of the point is within the tolerance."""
    net, X, y = _tiny()
    traj = Trajectory()
    traj.append_model(net, step=0)
    H = dense_hessian(net, nn.functional.mse_loss, X, y)
    layout = ParamLayout.from_model(net)
    exact = {
        name: float(torch.linalg.eigvalsh(H[i][:, i])[-1]) for name in ("0", "2") for i in [layout.layer_index(name)]
    }
    for max_steps in (2, None):
        tr = trajectory_curvature(
            traj, net, nn.functional.mse_loss, (X, y), k=9, tol=1e-10, per_layer=True, max_steps=max_steps
        )
        np.testing.assert_allclose(tr.eigenvalues[0], torch.linalg.eigvalsh(H).flip(0).numpy(), atol=1e-12)
        errors = [abs(tr.layer_eigenvalues[0, j] - exact[name]) for j, name in enumerate(tr.layer_names)]
        assert tr.converged[0] == (max(errors) <= 1e-8), (max_steps, errors)
