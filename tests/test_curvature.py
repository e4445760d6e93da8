"""Curvature along a trajectory and during training (issue 22) against dense float64 Hessians.

References are ``torch.func.hessian`` of the mean loss at each snapshot; the warm start is checked against
cold starts (same eigenvalues within the tolerance, fewer products), and the recorder against a run
without it (training unchanged, bitwise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import (
    CurvatureRecorder,
    CurvatureTrace,
    gradient_descent_curvature,
    top_eigenpairs,
    trajectory_curvature,
)
from landscape.params import ParamLayout, parameters_to_vector
from landscape.results import load_result
from landscape.train import Trainer
from landscape.trajectory import Trajectory
from tests.helpers import dense_hessian
from tests.registry import make_case

F64 = torch.float64
CE = nn.CrossEntropyLoss()


def _problem(name: str = "mlp_tanh"):
    """A registry case's model and its data ``(X (24, ...), y (24,))``."""
    case = make_case(name)
    return case.model, case.inputs[0], case.targets


def _gd_trajectory(net: nn.Module, X, y, steps: int, lr: float = 0.5) -> Trajectory:
    traj = Trajectory()
    Trainer(
        net,
        (X, y),
        CE,
        lambda p: torch.optim.SGD(p, lr=lr),
        steps=steps,
        batch_size=None,
        trajectory=traj,
        record_every_steps=1,
        record_every_epochs=None,
    ).fit()
    return traj


def test_eigenvalues_trace_and_layers_equal_the_dense_hessian_at_every_snapshot():
    net, X, y = _problem()
    traj = _gd_trajectory(net, X, y, steps=5)
    n = parameters_to_vector(net).numel()
    tr = trajectory_curvature(
        traj, net, CE, (X, y), k=3, tol=1e-8, per_layer=True, trace_products=3 * n, lr=0.5, progress=False
    )
    assert len(tr) == len(traj) == 6 and tr.eigenvalues.shape == (6, 3) and tr.converged.all()
    assert tr.layer_names == ["0", "2"] and tr.layer_eigenvalues.shape == (6, 2)
    layout = ParamLayout.from_model(net)
    for t in range(len(traj)):
        H = dense_hessian(traj.model_at(net, t), CE, X, y)
        ev = torch.linalg.eigvalsh(H).flip(0)
        np.testing.assert_allclose(tr.eigenvalues[t], ev[:3].numpy(), rtol=1e-7, atol=1e-10)
        assert np.all(np.abs(tr.eigenvalues[t] - ev[:3].numpy()) <= tr.error_bounds[t] + 1e-12)
        # Hutch++ with 3n products sketches the whole space: the trace is exact
        assert tr.trace[t] == pytest.approx(float(torch.trace(H)), rel=1e-8)
        for j, name in enumerate(tr.layer_names):
            i = layout.layer_index(name)
            assert tr.layer_eigenvalues[t, j] == pytest.approx(float(torch.linalg.eigvalsh(H[i][:, i])[-1]), rel=1e-7)
    np.testing.assert_array_equal(tr.steps, traj.steps)
    np.testing.assert_allclose(tr.threshold, 4.0)


def test_warm_start_gives_the_cold_eigenvalues_in_fewer_products():
    """50 snapshots of gradient descent: warm and cold agree within the error bounds; warm spends fewer products.

    Fewer in the Lanczos iteration itself: a warm start also pays for the completeness check at every point
    (a random start with ``block >= k`` needs none), which passes here and changes nothing but the count.
    """
    net, X, y = _problem("cnn_bn")
    traj = _gd_trajectory(net, X, y, steps=49, lr=0.3)
    assert len(traj) == 50
    opts = {"k": 2, "tol": 1e-6, "progress": False}
    warm = trajectory_curvature(traj, net, CE, (X, y), warm_start=True, certify=False, **opts)
    cold = trajectory_curvature(traj, net, CE, (X, y), warm_start=False, **opts)
    assert warm.converged.all() and cold.converged.all()
    diff = np.abs(warm.eigenvalues - cold.eigenvalues)
    assert np.all(diff <= warm.error_bounds + cold.error_bounds + 1e-12), diff.max()
    assert warm.total_hvps < cold.total_hvps, (warm.total_hvps, cold.total_hvps)
    assert warm.hvps[0] == cold.hvps[0]  # the first snapshot has nothing to start from
    assert warm.warm_start and not cold.warm_start
    checked = trajectory_curvature(traj, net, CE, (X, y), warm_start=True, **opts)
    np.testing.assert_array_equal(checked.eigenvalues, warm.eigenvalues)
    np.testing.assert_array_equal(checked.error_bounds, warm.error_bounds)
    assert np.all(checked.hvps[1:] > warm.hvps[1:]) and checked.hvps[0] == warm.hvps[0]


def test_lanczos_warm_start_from_exact_eigenvectors_stops_after_one_block():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=F64))
    lam = torch.linspace(5.0, 0.1, 40, dtype=F64)
    A = Q @ torch.diag(lam) @ Q.T
    pairs = top_eigenpairs(lambda V: A @ V, 40, 3, tol=1e-10, v0=Q[:, :3], certify=False)
    assert pairs.products == 3 and pairs.converged
    np.testing.assert_allclose(pairs.values.numpy(), lam[:3].numpy(), rtol=1e-12)
    # the completeness check then finds nothing: same pairs, its products counted
    checked = top_eigenpairs(lambda V: A @ V, 40, 3, tol=1e-10, v0=Q[:, :3])
    assert checked.converged and checked.products > 3
    torch.testing.assert_close(checked.values, pairs.values, rtol=0, atol=0)
    cold = top_eigenpairs(lambda V: A @ V, 40, 3, tol=1e-10)
    np.testing.assert_allclose(pairs.values.numpy(), cold.values.numpy(), rtol=1e-10)
    # a rank-deficient start (a repeated vector) is completed with random directions
    rep = top_eigenpairs(lambda V: A @ V, 40, 3, tol=1e-10, v0=torch.stack([Q[:, 0], Q[:, 0], Q[:, 1]], 1))
    np.testing.assert_allclose(rep.values.numpy(), lam[:3].numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="v0 must have shape"):
        top_eigenpairs(lambda V: A @ V, 40, 3, v0=torch.ones(39, 2, dtype=F64))
    # a wide start with narrow expansion blocks, and a start of one vector for k = 3
    for v0, block in ((Q[:, :3] + 0.01 * torch.randn(40, 3, generator=g, dtype=F64), 1), (Q[:, 0], None)):
        p = top_eigenpairs(lambda V: A @ V, 40, 3, tol=1e-10, v0=v0, block=block)
        assert p.converged
        np.testing.assert_allclose(p.values.numpy(), lam[:3].numpy(), rtol=1e-10)
        r = (A @ p.vectors - p.vectors * p.values).norm(dim=0)  # the reported residuals are the true ones
        np.testing.assert_allclose(p.residuals.numpy(), r.numpy(), atol=1e-12)


def test_recorder_writes_the_dense_top_eigenvalue_and_leaves_training_unchanged():
    net, X, y = _problem("mlp_tanh")
    opt = lambda p: torch.optim.SGD(p, lr=0.2)  # noqa: E731
    traj = Trajectory()
    rec = CurvatureRecorder(traj, every_steps=4, k=2, tol=1e-8, per_layer=True, trace_products=6)
    t1 = Trainer(net, (X, y), CE, opt, steps=10, batch_size=None, callbacks=[rec]).fit()
    plain = Trajectory()
    t2 = Trainer(
        net,
        (X, y),
        CE,
        opt,
        steps=10,
        batch_size=None,
        trajectory=plain,
        record_every_steps=4,
        record_every_epochs=None,
    ).fit()
    assert torch.equal(parameters_to_vector(t1.model), parameters_to_vector(t2.model))  # bitwise
    assert traj.steps.tolist() == plain.steps.tolist() == [0, 4, 8, 10]
    for name in ("lambda_max", "lambda_2", "lr", "hessian_trace", "hessian_hvps", "lambda_max/0", "lambda_max/2"):
        assert name in traj.metric_names, name
    for t in range(len(traj)):
        ev = torch.linalg.eigvalsh(dense_hessian(traj.model_at(net, t), CE, X, y)).flip(0)
        assert traj.metric("lambda_max")[t] == pytest.approx(float(ev[0]), rel=1e-7)
        assert traj.metric("lambda_2")[t] == pytest.approx(float(ev[1]), rel=1e-7)
    np.testing.assert_allclose(traj.metric("lr"), 0.2)
    tr = rec.trace_
    assert tr.steps.tolist() == [0, 4, 8, 10] and tr.indices.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(tr.lambda_max, traj.metric("lambda_max"))
    # read back off the trajectory: the same numbers
    again = trajectory_curvature(traj, net, CE, (X, y), k=2, tol=1e-8, progress=False)
    np.testing.assert_allclose(again.eigenvalues, tr.eigenvalues, rtol=1e-7)
    np.testing.assert_allclose(again.lr, 0.2)  # taken from the recorded "lr" metric


def test_gradient_descent_on_a_quadratic_has_the_constant_closed_form_sharpness(tmp_path):
    """Linear model with MSE: ``H = 2 X^T X / N`` at every step, whatever the weights."""
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(30, 4, generator=g, dtype=F64), torch.randn(30, 1, generator=g, dtype=F64)
    net = nn.Linear(4, 1).double()
    Xb = torch.cat([X, torch.ones(30, 1, dtype=F64)], 1)  # the bias is a constant input
    lam = float(torch.linalg.eigvalsh(2 * Xb.T @ Xb / 30)[-1])
    tr, hist = gradient_descent_curvature(
        net, nn.MSELoss(), (X, y), lr=0.1, steps=20, every_steps=5, tol=1e-10, progress=False
    )
    assert tr.steps.tolist() == [0, 5, 10, 15, 20] and len(hist) == 20
    np.testing.assert_allclose(tr.lambda_max, lam, rtol=1e-9)
    np.testing.assert_allclose(tr.threshold, 20.0)
    assert tr.label == "lr=0.1"
    back = load_result(tr.save(tmp_path / "trace"))
    assert isinstance(back, CurvatureTrace)
    np.testing.assert_array_equal(back.eigenvalues, tr.eigenvalues)
    assert back.layer_names == [] and back.lr.tolist() == tr.lr.tolist()


def test_options_are_checked():
    with pytest.raises(ValueError, match="k must be"):
        CurvatureRecorder(k=0)
    with pytest.raises(ValueError, match="tol"):
        CurvatureRecorder(tol=0)
    net, X, y = _problem()
    traj = _gd_trajectory(net, X, y, steps=1)
    with pytest.raises(IndexError, match="out of range"):
        trajectory_curvature(traj, net, CE, (X, y), indices=[5], progress=False)
    with pytest.raises(ValueError, match="lr must be"):
        trajectory_curvature(traj, net, CE, (X, y), lr=[0.1], progress=False)


def _trace(lr: float, label: str, per_layer: bool = False) -> CurvatureTrace:
    net, X, y = _problem()
    traj = _gd_trajectory(net, X, y, steps=3, lr=lr)
    return trajectory_curvature(traj, net, CE, (X, y), k=2, lr=lr, label=label, per_layer=per_layer, progress=False)


def test_plot_sharpness_draws_the_trace_and_its_threshold():
    from landscape import plot

    a, b = _trace(0.5, "a", per_layer=True), _trace(0.25, "b")
    fig = plot.plot_sharpness([a, b])
    names = [t.name for t in fig.data]
    assert names == ["a", "a: 2/lr", "b", "b: 2/lr"]
    np.testing.assert_allclose(fig.data[0].y, a.lambda_max)
    np.testing.assert_allclose(fig.data[1].y, 4.0)
    np.testing.assert_allclose(fig.data[3].y, 8.0)
    np.testing.assert_allclose(fig.data[2].x, b.steps)
    second = plot.plot_sharpness(a, eigenvalue=1, threshold=False)
    assert len(second.data) == 1 and np.allclose(second.data[0].y, a.eigenvalues[:, 1])
    lay = plot.plot_sharpness(a, layer="2")
    np.testing.assert_allclose(lay.data[0].y, a.layer_eigenvalues[:, 1])
    mfig = plot.plot_sharpness([a, b], backend="matplotlib")
    lines = mfig.axes[0].lines
    assert [ln.get_label() for ln in lines] == names
    np.testing.assert_allclose(lines[0].get_ydata(), a.lambda_max)
    np.testing.assert_allclose(np.asarray(lines[1].get_ydata(), float), 4.0)
    with pytest.raises(KeyError, match="no layer"):
        plot.plot_sharpness(b, layer="2")
    with pytest.raises(ValueError, match="eigenvalue 2"):
        plot.plot_sharpness(a, eigenvalue=2)
    with pytest.raises(TypeError):
        plot.plot_sharpness([np.zeros(3)])


def test_a_diverging_run_stops_cleanly_and_non_finite_snapshots_give_nan():
    """GD far above 2 / lambda_max on a quadratic diverges: the run stops, curvature stays the closed form."""
    g = torch.Generator().manual_seed(4)
    X, y = torch.randn(30, 4, generator=g, dtype=F64), torch.randn(30, 1, generator=g, dtype=F64)
    Xb = torch.cat([X, torch.ones(30, 1, dtype=F64)], 1)
    lam = float(torch.linalg.eigvalsh(2 * Xb.T @ Xb / 30)[-1])
    tr, hist = gradient_descent_curvature(
        nn.Linear(4, 1).double(), nn.MSELoss(), (X, y), lr=50.0, steps=400, every_steps=50, progress=False
    )
    assert len(hist) < 400  # stopped at the non-finite loss
    np.testing.assert_allclose(tr.lambda_max, lam, rtol=1e-6)
    # a snapshot holding NaN weights has NaN curvature, and the next one starts cold
    net, X2, y2 = _problem()
    traj = Trajectory()
    v = parameters_to_vector(net)
    for vec in (v, torch.full_like(v, float("nan")), v):
        traj.append(vec, layout=ParamLayout.from_model(net))
    out = trajectory_curvature(traj, net, CE, (X2, y2), progress=False)
    assert np.isnan(out.lambda_max[1]) and out.hvps[1] == 0 and not out.converged[1]
    assert out.lambda_max[0] == out.lambda_max[2] and out.hvps[0] == out.hvps[2]


def _synthetic(lam: list[float], lr: float) -> CurvatureTrace:
    T = len(lam)
    z = np.zeros((T, 1))
    return CurvatureTrace(
        steps=np.arange(T) * 10,
        epochs=np.arange(T, dtype=float),
        indices=np.arange(T),
        eigenvalues=np.array(lam, float)[:, None],
        error_bounds=z,
        residuals=z,
        converged=np.ones(T, bool),
        hvps=np.ones(T, np.int64),
        trace=np.full(T, np.nan),
        trace_stderr=np.full(T, np.nan),
        layer_names=[],
        layer_eigenvalues=np.zeros((T, 0)),
        lr=np.full(T, lr),
        k=1,
        tol=1e-4,
        warm_start=True,
        bn_mode="eval",
    )


def test_edge_of_stability_summary_by_hand():
    from landscape.curvature import edge_of_stability_summary

    # 2 / lr = 20: rises 5 -> 19 (ratio 0.95 at step 30), then hovers 19..23
    s = edge_of_stability_summary(_synthetic([5, 10, 15, 19, 21, 20, 23, 19], 0.1), tail=0.5)
    assert s["initial_ratio"] == pytest.approx(0.25) and s["reached_step"] == 30
    assert s["tail_median_ratio"] == pytest.approx(np.median([21, 20, 23, 19]) / 20)
    assert (s["tail_min_ratio"], s["tail_max_ratio"]) == (pytest.approx(0.95), pytest.approx(1.15))
    assert s["tail_share_within"] == 0.75 and s["settled"] == 1.0
    never = edge_of_stability_summary(_synthetic([5, 6, 7, 8], 0.1))
    assert never["reached_step"] == -1 and never["settled"] == 0.0
    with pytest.raises(ValueError, match="learning rate"):
        edge_of_stability_summary(_synthetic([5, 6], float("nan")))


def test_warm_start_extrapolation_is_exact_on_a_quadratic_path_and_matches_columns():
    from landscape.curvature.tracker import TOP_KEY, CurvatureTracker

    g = torch.Generator().manual_seed(0)
    a = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=F64))[0]
    b, c = (1e-3 * torch.randn(6, 2, generator=g, dtype=F64) for _ in range(2))
    path = lambda t: a + b * t + c * t**2  # noqa: E731  (orthonormal columns, slowly moving)
    tr = CurvatureTracker(
        CE,
        None,
        k=2,
        tol=1e-4,
        warm_start=True,
        per_layer=False,
        trace_products=0,
        max_steps=None,
        block=None,
        bn_mode="eval",
        dtype=None,
        seed=0,
        extrapolate=2,
    )
    for i, t in enumerate((0.0, 3.0, 4.0)):
        tr.step = t
        v = path(t)
        if i == 2:  # columns swapped and one sign flipped, as Lanczos may return them
            v = torch.stack([-v[:, 1], v[:, 0]], 1)
        tr.remember(TOP_KEY, v)
    tr.step = 9.0
    torch.testing.assert_close(tr.start_vectors(TOP_KEY, 6), path(9.0), rtol=1e-10, atol=1e-10)
    assert tr.start_vectors(TOP_KEY, 7) is None  # another dimension: no warm start
    tr.extrapolate = 0
    torch.testing.assert_close(tr.start_vectors(TOP_KEY, 6), path(4.0))


def test_a_problems_batchnorm_mode_is_the_curvatures_default():
    """trajectory_curvature(traj, Problem(..., bn_mode="train")) takes the Hessian of the problem's train-mode
    loss, as HessianOperator(problem) does (bn_mode's documented default: the problem's); it took the eval-mode
    one. Reference: a dense float64 Hessian of the batch-statistics loss, by hand."""
    from landscape.problem import Problem

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():  # running statistics far from the batch's: eval and train mode differ
        net[1].running_mean.fill_(2.0)
        net[1].running_var.fill_(5.0)
    X, y = torch.randn(16, 3, dtype=F64), torch.randint(0, 2, (16,))
    traj = _gd_trajectory(net, X, y, steps=2, lr=0.1)
    tr = trajectory_curvature(traj, Problem(net, (X, y), bn_mode="train"), k=1, tol=1e-10, progress=False)
    assert tr.bn_mode == "train"
    layout = ParamLayout.from_model(net)
    for t in range(len(traj)):
        m = traj.model_at(net, t).train()
        bufs = {k: v.clone() for k, v in m.named_buffers()}

        def loss(v: torch.Tensor, m: nn.Module = m, bufs: dict = bufs) -> torch.Tensor:
            out = torch.func.functional_call(m, {**bufs, **layout.unflatten(v)}, (X,))
            return CE(out, y)

        H = torch.autograd.functional.hessian(loss, parameters_to_vector(m))
        assert tr.eigenvalues[t, 0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)


def test_curvature_analyzers_are_quiet_by_default(capfd):
    """docs/arguments.md: progress bars are off by default in analyzers; these two drew one."""
    net, X, y = _problem()
    traj = _gd_trajectory(net, X, y, steps=2)
    capfd.readouterr()
    trajectory_curvature(traj, net, CE, (X, y), tol=1e-6)
    gradient_descent_curvature(net, CE, (X, y), lr=0.1, steps=2, every_steps=1)
    err = capfd.readouterr().err
    assert "curvature" not in err and "it/s" not in err and "%|" not in err


def test_eigenpairs_repr_is_short_with_the_values_and_the_vectors_shape():
    # The dataclass repr printed the whole (n, k) eigenvector tensor; the summary names k, the values (here
    # the closed-form top three, 10, 9, 8), the vectors' shape and the convergence, whatever n is.
    d = torch.linspace(0, 1, 600, dtype=torch.float64)
    d[:3] = torch.tensor([10.0, 9.0, 8.0], dtype=torch.float64)
    pairs = top_eigenpairs(lambda V: d[:, None] * V, 600, 3, tol=1e-10)
    text = repr(pairs)
    assert text.startswith("EigenPairs(k=3, values=[10, 9, 8], vectors=(600, 3), converged=True, max_residual=")
    assert f"products={pairs.products})" in text and len(text) < 200
