"""Bug hunt 15 of the curvature package, against brute force in float64.

References: the dense Hessian (``torch.func.hessian``), its trace and eigenvalues, and explicit loops.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature import (
    CurvatureRecorder,
    gradient_descent_curvature,
    hessian_eigenpairs,
    hessian_trace,
    spectrum_of,
    trajectory_curvature,
)
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.lanczos import hutchinson, hutchpp
from landscape.params import ParamLayout, parameters_to_vector
from landscape.problem import Problem
from landscape.train import Trainer
from landscape.trajectory import Trajectory
from tests.helpers import dense_hessian

F64 = torch.float64


def _spd(n: int, seed: int = 0) -> torch.Tensor:
    """A random symmetric positive definite float64 matrix, shape ``(n, n)``."""
    B = torch.randn(n, n, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return B @ B.T + 0.1 * torch.eye(n, dtype=F64)


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 9-parameter regression network and its data ``(X (10, 2), y (10, 1))``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    return net, torch.randn(10, 2, dtype=F64), torch.randn(10, 1, dtype=F64)


# ----------------------------------------------------------------------------- 1. traces at a budget >= n
@pytest.mark.parametrize("estimator", [hutchpp, hutchinson])
@pytest.mark.parametrize(("n", "budget"), [(3, 3), (3, 7), (3, 8), (5, 5), (5, 14), (2, 2)])
def test_trace_estimators_are_exact_with_a_budget_of_at_least_n_products(estimator, n, budget):
    """Hutch++'s sketch has ``budget // 3`` columns, so it spanned the space only from ``3 n`` products: 7
    products on ``n = 3`` gave 8.08 for a trace of 5.65. ``n`` unit vectors give the trace itself."""
    A = _spd(n)
    calls: list[int] = []

    def matmat(V: torch.Tensor) -> torch.Tensor:
        calls.append(V.shape[1])
        return A @ V

    est = estimator(matmat, n, budget, generator=torch.Generator().manual_seed(1))
    assert est.estimate == pytest.approx(float(torch.trace(A)), rel=1e-13)
    assert est.exact and est.stderr == 0.0 and est.products == sum(calls) == n
    assert est.method == estimator.__name__


@pytest.mark.parametrize("estimator", [hutchpp, hutchinson])
def test_trace_estimators_below_n_products_stay_stochastic(estimator):
    est = estimator(lambda V: _spd(10) @ V, 10, 9)
    assert not est.exact and est.products <= 9


@pytest.mark.parametrize("method", ["hutchpp", "hutchinson"])
def test_hessian_trace_with_n_products_is_the_dense_hessians_trace(method):
    net, X, y = _tiny()
    op = HessianOperator(Problem(net, (X, y), "mse"), dtype=F64)
    exact = float(torch.trace(dense_hessian(net, nn.functional.mse_loss, X, y)))
    est = hessian_trace(op, op.n + 1, method=method)
    assert est.exact and est.estimate == pytest.approx(exact, rel=1e-10) and est.products == op.n == 9


def test_spectrum_traces_are_exact_and_say_so_when_the_budget_covers_the_dimension():
    """SLQ's trace was Hutchinson's on its probes even when each run took ``n`` steps, whose ``n`` Ritz values
    are the Hessian's eigenvalues; the other two were estimates at ``trace_products >= n``."""
    net, X, y = _tiny()
    H = dense_hessian(net, nn.functional.mse_loss, X, y)
    exact = float(torch.trace(H))
    spec = spectrum_of(HessianOperator(Problem(net, (X, y), "mse"), dtype=F64), n_probes=2, steps=9, trace_products=9)
    assert set(spec.provenance.extra["trace_exact"]) == {"slq", "hutchinson", "hutchpp"}
    for method in ("slq", "hutchinson", "hutchpp"):
        assert spec.trace[method] == pytest.approx(exact, rel=1e-9), method
        assert spec.trace_stderr[method] == 0.0
    np.testing.assert_allclose(np.sort(spec.nodes[0]), torch.linalg.eigvalsh(H).numpy(), rtol=1e-8, atol=1e-10)
    # fewer steps and products than the dimension: estimates, and not listed as exact
    short = spectrum_of(HessianOperator(Problem(net, (X, y), "mse"), dtype=F64), n_probes=2, steps=4, trace_products=6)
    assert short.provenance.extra["trace_exact"] == [] and short.trace_stderr["hutchpp"] > 0


def test_trajectory_curvature_trace_is_exact_with_n_products_and_says_so(tmp_path):
    net, X, y = _tiny()
    traj = Trajectory.create(tmp_path / "run")
    traj.append_model(net, step=0)
    curv = trajectory_curvature(traj, Problem(net, (X, y), "mse"), trace_products=9, dtype=F64)
    exact = float(torch.trace(dense_hessian(net, nn.functional.mse_loss, X, y)))
    assert curv.trace[0] == pytest.approx(exact, rel=1e-10) and curv.trace_stderr[0] == 0.0
    assert curv.provenance.extra["trace_exact"] is True


# ----------------------------------------------------------------------------- 2. the recorder and a Trainer(problem)
def _bn_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A BatchNorm classifier whose running statistics are far from its batch's: eval and train mode differ."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[1].running_mean.fill_(2.0)
        net[1].running_var.fill_(5.0)
    return net, torch.randn(16, 3, dtype=F64), torch.randint(0, 2, (16,))


def _train_mode_hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dense float64 Hessian of the cross-entropy with BatchNorm's batch statistics (double backward)."""
    m = copy.deepcopy(model).double().train()
    layout = ParamLayout.from_model(m)
    bufs = {k: v.clone() for k, v in m.named_buffers()}

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(m, {**bufs, **layout.unflatten(theta)}, (X,)), y)

    return torch.autograd.functional.hessian(loss, parameters_to_vector(m).detach().double())


def test_curvature_recorder_on_a_trainer_of_a_problem_measures_the_problems_hessian():
    """CurvatureRecorder() on Trainer(Problem(..., bn_mode="train")) measured the eval-mode Hessian (the trainer
    kept only the model, data and loss): the recorder now takes the trainer's Problem."""
    net, X, y = _bn_net()
    problem = Problem(net, (X, y), "cross_entropy", bn_mode="train")
    traj = Trajectory()
    rec = CurvatureRecorder(traj, every_steps=2, k=1, tol=1e-10)
    Trainer(problem, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), steps=4, shuffle=False, callbacks=[rec]).fit()
    trace = rec.trace_
    assert trace.bn_mode == "train" and len(traj) == len(trace) == 3
    for t in range(len(traj)):
        model = traj.model_at(net, t)
        direct = hessian_eigenpairs(problem.with_model(model), 1, tol=1e-12).values[0]
        brute = torch.linalg.eigvalsh(_train_mode_hessian(model, X, y))[-1]
        assert trace.eigenvalues[t, 0] == pytest.approx(float(brute), rel=1e-8) == float(direct)
    # the eval-mode Hessian differs here, so the check above tells the two apart
    eval_top = torch.linalg.eigvalsh(dense_hessian(net, nn.functional.cross_entropy, X, y))[-1]
    assert abs(float(eval_top) - trace.eigenvalues[0, 0]) > 0.1


def test_curvature_recorder_with_its_own_loss_keeps_the_trainers_problems_batchnorm_mode():
    net, X, y = _bn_net()
    problem = Problem(net, (X, y), "cross_entropy", bn_mode="train")
    rec = CurvatureRecorder(loss_fn=nn.functional.cross_entropy, every_steps=1, k=1, tol=1e-10)
    Trainer(problem, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), steps=0, callbacks=[rec]).fit()
    brute = torch.linalg.eigvalsh(_train_mode_hessian(net, X, y))[-1]
    assert rec.trace_.bn_mode == "train" and rec.trace_.eigenvalues[0, 0] == pytest.approx(float(brute), rel=1e-8)


# ----------------------------------------------------------------------------- 3. the recorded lr under a prefix
def test_trajectory_curvature_finds_the_learning_rate_a_prefixed_recorder_wrote():
    """A recorder's ``metric_prefix`` names its ``<p>lr``; trajectory_curvature looked for ``"lr"`` only, so the
    ``2 / lr`` line of a re-analysis was unknown (NaN)."""
    net, X, y = _tiny()
    problem = Problem(net, (X, y), "mse")
    traj = Trajectory()
    rec = CurvatureRecorder(traj, every_steps=2, k=1, metric_prefix="eos/")
    Trainer(problem, optimizer=lambda p: torch.optim.SGD(p, lr=0.05), steps=4, callbacks=[rec]).fit()
    assert "eos/lr" in traj.metric_names and "lr" not in traj.metric_names
    for prefix in (None, "eos/"):
        curv = trajectory_curvature(traj, problem, metric_prefix=prefix)
        np.testing.assert_array_equal(curv.lr, np.full(len(traj), 0.05))
        np.testing.assert_allclose(curv.threshold, 2 / 0.05)
    with pytest.raises(ValueError, match=r"metric_prefix='val/'.*no metric 'val/lr'.*eos/lr"):
        trajectory_curvature(traj, problem, metric_prefix="val/")


def test_trajectory_curvature_asks_which_recorder_when_two_prefixes_recorded_a_learning_rate():
    net, X, y = _tiny()
    traj = Trajectory()
    traj.append_model(net, step=0, metrics={"a/lambda_max": 1.0, "a/lr": 0.1, "b/lambda_max": 1.0, "b/lr": 0.2})
    problem = Problem(net, (X, y), "mse")
    with pytest.raises(ValueError, match=r"several curvature recorders.*pass metric_prefix="):
        trajectory_curvature(traj, problem)
    assert trajectory_curvature(traj, problem, metric_prefix="b/").lr.tolist() == [0.2]


# ----------------------------------------------------------------------------- 4. frozen parameters
def _half_frozen() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The 9-parameter network with its first layer frozen (6 frozen, 3 trainable parameters)."""
    net, X, y = _tiny()
    net[0].requires_grad_(False)
    return net, X, y


def test_trajectory_curvature_of_the_trainable_block_is_the_dense_blocks():
    """Curvature covered frozen parameters with no way to leave them out (params= as in the parameter vector's
    policy: "all" by default, "trainable" for the block training moves)."""
    net, X, y = _half_frozen()
    traj = Trajectory()
    traj.append_model(net, step=0)
    H = dense_hessian(net, nn.functional.mse_loss, X, y)
    trainable = torch.tensor([p.requires_grad for p in net.parameters() for _ in range(p.numel())])
    block = H[trainable][:, trainable]
    problem = Problem(net, (X, y), "mse")
    curv = trajectory_curvature(traj, problem, params="trainable", k=3, tol=1e-12, per_layer=True, trace_products=3)
    np.testing.assert_allclose(curv.eigenvalues[0], torch.linalg.eigvalsh(block).flip(0).numpy(), rtol=1e-9)
    assert curv.layer_names == ["2"] and curv.layer_eigenvalues[0, 0] == pytest.approx(curv.eigenvalues[0, 0])
    assert curv.trace[0] == pytest.approx(float(torch.trace(block)), rel=1e-12)
    assert curv.provenance.extra["params"] == "trainable"
    # the default covers every parameter, frozen ones included (the parameter vector's policy)
    full = trajectory_curvature(traj, problem, k=1, tol=1e-12)
    assert full.eigenvalues[0, 0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
    assert full.eigenvalues[0, 0] > curv.eigenvalues[0, 0] * 1.01  # so the two differ here


def test_curvature_recorder_measures_the_trainable_block_and_warns_about_frozen_parameters():
    net, X, y = _half_frozen()
    problem = Problem(net, (X, y), "mse")
    opt = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    rec = CurvatureRecorder(every_steps=1, k=1, tol=1e-12, params="trainable")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trainable block asked for: nothing to warn about
        Trainer(problem, optimizer=opt, steps=0, callbacks=[rec]).fit()
    H = dense_hessian(net, nn.functional.mse_loss, X, y)[6:, 6:]  # the trainable block: the last layer's 3
    assert rec.trace_.eigenvalues[0, 0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
    with pytest.warns(UserWarning, match=r"covers 2 frozen parameter tensors.*params='trainable'"):
        Trainer(problem, optimizer=opt, steps=0, callbacks=[CurvatureRecorder(k=1)]).fit()
    trace, _ = gradient_descent_curvature(problem, lr=0.1, steps=1, params="trainable", tol=1e-12)
    assert trace.eigenvalues[0, 0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
