"""TunnelSchedule through the shared Trainer, the damped Newton step, and the PGD / NEON escape baselines."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tunnels
from landscape.params import parameters_to_vector
from landscape.train import Callback, Trainer
from landscape.trajectory import Trajectory
from tunnels import NEONEscape, PerturbedGD, TunnelEvent, TunnelSchedule

F = nn.functional


def _fit(net, data, optimizer, lr, steps, callbacks, **kw):
    """Cross-entropy training in minibatches of 16 with the given callbacks; snapshots by steps only."""
    kw.setdefault("record_every_epochs", None)
    return Trainer(
        net,
        data,
        F.cross_entropy,
        optimizer,
        optimizer_kwargs={"lr": lr},
        steps=steps,
        batch_size=16,
        callbacks=callbacks,
        **kw,
    ).fit()


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(3 * 16, 3))


class _Spy(Callback):
    """Runs before the schedule: keeps a copy of the model after every step (before any surgery)."""

    def __init__(self) -> None:
        self.before: dict[int, nn.Module] = {}

    def on_step_end(self, trainer, event):  # noqa: D102
        self.before[event.step] = copy.deepcopy(trainer.model)


class _LrSpy(Callback):
    """Runs after the schedule: the lr of the next step, the optimizer's state size and a model copy."""

    def __init__(self) -> None:
        self.lrs: dict[int, float] = {}
        self.opt_states: dict[int, int] = {}
        self.models: dict[int, nn.Module] = {}

    def on_step_end(self, trainer, event):  # noqa: D102
        self.lrs[event.step] = trainer.optimizer.param_groups[0]["lr"]  # lr of the next step
        self.opt_states[event.step] = len(trainer.optimizer.state)
        self.models[event.step] = copy.deepcopy(trainer.model)


def test_schedule_open_close_records_events_segments_and_preserves_function():
    X, y = _data()
    net = _net()
    ref = copy.deepcopy(net)
    spy, lr_spy = _Spy(), _LrSpy()
    sched = TunnelSchedule(open_at=3, units={"0": 2}, close_at=7, t=0.5, warmup_steps=4, warmup_start=0.25)
    traj = Trajectory()
    tr = _fit(net, (X, y), "adam", 0.01, 10, [spy, sched, lr_spy], trajectory=traj, record_every_steps=1)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))  # caller's model untouched
    # events: open at 3 (2 filters added), close at 7
    kinds = [(s, ev.kind) for s, ev in sched.events_]
    assert kinds == [(3, "open"), (7, "close")]
    opened = lr_spy.models[3]
    assert opened[0].out_channels == 5 and tr.model[0].out_channels == 3
    # function preserved at the opening step (eval of the grown net equals the net just before)
    with torch.no_grad():
        torch.testing.assert_close(opened(X), spy.before[3](X), rtol=1e-5, atol=1e-6)
    # one trajectory segment per layout: original, opened, closed
    segs = traj.segments
    assert len(segs) == 3
    assert [s.layout.numel for s in segs] == [3 * 10 + 48 * 3 + 3, 5 * 10 + 80 * 3 + 3, 3 * 10 + 48 * 3 + 3]
    tags = [traj.tags(i) for i in range(len(traj))]
    evs = [e for t in tags for e in t.get("events", [])]
    assert [(e["kind"], e["step"]) for e in evs if e.get("type") == "tunnel"] == [("open", 3), ("close", 7)]
    back = TunnelEvent.from_dict(evs[0])
    assert back == sched.open_event_ and back.mode == "proposed" and back.stats == "full"
    # Adam state cleared at opening: the fresh optimizer had no state before its first step
    assert lr_spy.opt_states[2] > 0 and lr_spy.opt_states[3] == 0
    # linear warm-up: steps 4..7 use lr * (0.25 + 0.75 k / 4), k = 0..3, then the base lr again
    expect = {3: 0.0025, 4: 0.004375, 5: 0.00625, 6: 0.008125, 8: 0.01, 9: 0.01}
    for s, v in expect.items():
        assert lr_spy.lrs[s] == pytest.approx(v), s


def test_schedule_gradient_jump_matches_eigen_prediction():
    # the gradient of the opened network at the opening point: ||g'||^2 - ||g||^2 = 2 t^2 rho - |A 1|^2 / 2 +
    # |dE/dW_R[:, u]|^2 per unit (tunnels.split); at a generic point we check the A-part through the stats
    X, y = _data()
    net = _net().double()
    Xd = X.double()
    sched = TunnelSchedule(open_at=0, units={"0": [1]}, t=3.0, warmup_steps=0, stats_batch_size=None)
    tr = Trainer(net, (Xd, y), F.cross_entropy, "sgd", optimizer_kwargs={"lr": 0.0}, steps=1, callbacks=[sched])
    tr.fit()
    opened = tr.model
    a = sched.stats_.A["0"][1]
    lam = torch.tensor(sched.open_event_.changes[0].lambdas, dtype=torch.float64)
    loss = F.cross_entropy(opened(Xd), y)
    gw, gb = torch.autograd.grad(loss, [opened[0].weight, opened[0].bias])
    g_u = torch.cat([gw[1].reshape(-1), gb[1:2]])
    g_clone = torch.cat([gw[3].reshape(-1), gb[3:4]])
    torch.testing.assert_close(g_u, a @ lam)
    torch.testing.assert_close(g_clone, a @ (1 - lam))


def test_schedule_restart_and_validation():
    X, y = _data()
    lr_spy = _LrSpy()
    sched = TunnelSchedule(open_at=2, action="restart", warmup_steps=2, warmup_start=0.5)
    _fit(_net(), (X, y), "adam", 0.1, 5, [sched, lr_spy])
    assert sched.events_ == [(2, None)] and lr_spy.opt_states[2] == 0
    assert [lr_spy.lrs[s] for s in (2, 3, 4)] == pytest.approx([0.05, 0.075, 0.1])
    with pytest.raises(ValueError, match="valid"):
        TunnelSchedule(1, action="explode")
    with pytest.raises(ValueError, match="close_at"):
        TunnelSchedule(5, close_at=3)
    with pytest.raises(ValueError, match="ema_decay < 1, got 1.5"):  # at construction, not steps later
        TunnelSchedule(1000, stats="ema", ema_decay=1.5)


def test_schedule_reorganize_and_ema_keep_architecture():
    X, y = _data()
    sched = TunnelSchedule(
        open_at=2, units={"0": 1}, action="reorganize", stats="ema", ema_steps=2, stats_batch_size=16, warmup_steps=0
    )
    tr = _fit(_net(), (X, y), "sgd", 0.1, 4, [sched])
    assert sched.events_[0][1].kind == "reorganize" and sched.stats_.method == "ema"
    assert tr.model[0].out_channels == 3


@pytest.mark.parametrize("mode", ["proposed", "random"])
def test_schedule_ema_averages_ema_steps_batches_whenever_units_are_ranked(mode):
    # units=1 ranks units by rho, so A is needed for a control split too: the documented average over the
    # ema_steps steps before opening, not a single batch at the opening.
    X, y = _data()
    sched = TunnelSchedule(open_at=5, units=1, mode=mode, stats="ema", ema_steps=3, stats_batch_size=16, warmup_steps=0)
    _fit(_net(), (X, y), "sgd", 0.1, 6, [sched])
    assert sched.stats_.method == "ema" and sched.stats_.n_batches == 3 and sched.stats_.n_examples == 48


# ---------------------------------------------------------------------------------------------- Newton
def test_newton_step_on_quadratic_is_exact_minimizer():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x0 = torch.randn(6, generator=g, dtype=torch.float64)

    def f(x):
        return 0.5 * x @ A @ x - b @ x

    H = tunnels.dense_hessian(f, x0, chunk_size=4)
    torch.testing.assert_close(H, A)
    grad = A @ x0 - b
    x1 = x0 + tunnels.damped_newton_step(grad, H)
    torch.testing.assert_close(x1, torch.linalg.solve(A, b))
    # step size scales the step; damping shrinks it
    half = x0 + tunnels.damped_newton_step(grad, H, step_size=0.5)
    torch.testing.assert_close(half, 0.5 * (x0 + x1))
    assert (tunnels.damped_newton_step(grad, H, damping=10.0)).norm() < (x1 - x0).norm()


def test_newton_flat_on_mse_lands_at_the_least_squares_solution():
    # MSE of a linear model is quadratic: one exact Newton step from anywhere lands at the lstsq minimizer.
    # (The Hessian was built forward over reverse, which torch 2.13 cannot do through F.mse_loss's backward.)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    net = nn.Linear(3, 2).double()
    res = tunnels.newton_flat(net, (X, y), F.mse_loss, steps=1, step_size=1.0, damping=0.0)
    sol = torch.linalg.lstsq(torch.cat([X, torch.ones(30, 1, dtype=torch.float64)], 1), y).solution  # (4, 2)
    torch.testing.assert_close(res.model.weight.detach(), sol[:3].T)
    torch.testing.assert_close(res.model.bias.detach(), sol[3])
    assert res.grad_norms[-1] < 1e-10
    f = tunnels.full_batch_objective(net, (X, y), "mse")
    theta = parameters_to_vector(net)
    hess = torch.autograd.functional.hessian(f, theta)
    torch.testing.assert_close(tunnels.dense_hessian(f, theta, chunk_size=3), hess)


def test_newton_flat_reduces_gradient_and_leaves_model():
    X, y = _data(24)
    torch.manual_seed(0)  # exact Newton (damping 0) diverges from some initializations: keep the test deterministic
    net = nn.Sequential(nn.Linear(36, 3), nn.Sigmoid(), nn.Linear(3, 3))
    X = X.reshape(24, -1)
    ref = copy.deepcopy(net)
    f = tunnels.full_batch_objective(net, (X.double(), y), F.cross_entropy, dtype=torch.float64)
    theta = parameters_to_vector(net).double()
    torch.testing.assert_close(tunnels.dense_hessian(f, theta), torch.autograd.functional.hessian(f, theta))
    res = tunnels.newton_flat(net, (X, y), F.cross_entropy, steps=4, step_size=1.0, damping=0.0)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))
    assert len(res.losses) == 5 and res.grad_norms[-1] < res.grad_norms[0]
    assert res.model is not net and next(res.model.parameters()).dtype == torch.float32


def test_newton_flat_keeps_frozen_parameters_and_steps_on_the_trainable_ones():
    # Reference: damped Newton written out on the trainable sub-vector with autograd's dense Hessian (float64).
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(40, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    net[0].bias.requires_grad_(False)
    net[2].weight.requires_grad_(False)
    res = tunnels.newton_flat(net, (X, y), F.cross_entropy, steps=3, step_size=0.5, damping=1e-3)
    assert torch.equal(res.model[0].bias, net[0].bias) and torch.equal(res.model[2].weight, net[2].weight)
    theta = parameters_to_vector(net)
    mask = torch.tensor([], dtype=torch.bool)
    for p in net.parameters():
        mask = torch.cat([mask, torch.full((p.numel(),), p.requires_grad)])
    f = tunnels.full_batch_objective(net, (X, y), F.cross_entropy)

    def sub(x):
        return f(theta.masked_scatter(mask, x))

    x = theta[mask]
    for _ in range(3):
        grad = torch.autograd.functional.jacobian(sub, x)
        hess = torch.autograd.functional.hessian(sub, x)
        lam, v = torch.linalg.eigh(hess)
        x = x - 0.5 * v @ (lam / (lam**2 + 1e-6) * (v.T @ grad))
    torch.testing.assert_close(parameters_to_vector(res.model), theta.masked_scatter(mask, x), rtol=1e-10, atol=1e-12)
    hess0 = torch.autograd.functional.hessian(sub, theta[mask])  # the trainable block only
    assert res.min_eigenvalues[0] == pytest.approx(float(torch.linalg.eigvalsh(hess0)[0]), rel=1e-9)


def test_newton_flat_on_a_float32_problem_keeps_its_batches_and_closure():
    # A float32 Problem is recomputed in float64; its batch_size (the batches a bn_mode="train" loss normalizes
    # over) and loss_form were dropped, so Newton ran on the full-batch statistics loss (0.682 where the problem's
    # is 0.673), and a closure under loss_form="batch" was called as loss(outputs, targets).
    from landscape.params import functional_forward
    from landscape.problem import Problem

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(32, 3, generator=g), torch.randint(0, 2, (32,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    ref = copy.deepcopy(net).double().train()
    theta = parameters_to_vector(ref)

    def batch_stats_loss(v):  # float64 brute force: the mean over the four batches of 8, each with its own statistics
        bufs = {k: b.clone() for k, b in ref.named_buffers()}
        outs = [functional_forward(ref, v, X[i : i + 8].double(), buffers=bufs, train=True) for i in range(0, 32, 8)]
        return torch.stack([F.cross_entropy(o, y[i : i + 8]) for o, i in zip(outs, range(0, 32, 8))]).mean()

    res = tunnels.newton_flat(
        Problem(net, (X, y), "cross_entropy", bn_mode="train", batch_size=8), steps=1, damping=0.1
    )
    assert res.losses[0] == pytest.approx(float(batch_stats_loss(theta)), rel=1e-12)
    grad = torch.autograd.functional.jacobian(batch_stats_loss, theta)
    hess = torch.autograd.functional.hessian(batch_stats_loss, theta)
    lam, v = torch.linalg.eigh(hess)
    step = theta - 0.1 * v @ (lam / (lam**2 + 0.01) * (v.T @ grad))
    torch.testing.assert_close(parameters_to_vector(res.model).double(), step, rtol=1e-5, atol=1e-6)  # float32 model

    def closure(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1])

    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    res = tunnels.newton_flat(Problem(plain, (X, y), closure, loss_form="batch"), steps=0)
    want = F.cross_entropy(copy.deepcopy(plain).double()(X.double()), y).detach()
    assert res.losses[0] == pytest.approx(float(want), rel=1e-12)


# ---------------------------------------------------------------------------------------------- PGD / NEON
def _saddle(x):
    # strict saddle at 0 (Hessian diag(1, -1)); minima at (0, +-1) with f = -1/4
    return 0.5 * x[0] ** 2 - 0.5 * x[1] ** 2 + 0.25 * x[1] ** 4


def test_gd_is_stuck_and_pgd_escapes_strict_saddle():
    x0 = torch.zeros(2, dtype=torch.float64)
    stuck = tunnels.perturbed_gradient_descent(_saddle, x0, lr=0.1, steps=200, radius=0.0, grad_threshold=-1.0)
    assert stuck.values[-1] == 0.0 and not stuck.escapes
    gen = torch.Generator().manual_seed(0)
    res = tunnels.perturbed_gradient_descent(
        _saddle, x0, lr=0.1, steps=200, radius=1e-2, grad_threshold=1e-3, t_thres=20, generator=gen
    )
    assert res.escapes and res.escapes[0] == 0
    assert res.values[-1] == pytest.approx(-0.25, abs=1e-6)


def test_neon_finds_negative_curvature_and_escapes():
    x0 = torch.zeros(2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    d, curv = tunnels.neon_direction(_saddle, x0, radius=1e-3, eta=0.5, iterations=60, generator=gen)
    assert d is not None and abs(float(d[1])) == pytest.approx(1.0, abs=1e-6) and curv == pytest.approx(-1, abs=1e-3)
    # at a minimum there is no negative curvature
    d_min, curv_min = tunnels.neon_direction(_saddle, torch.tensor([0.0, 1.0], dtype=torch.float64), generator=gen)
    assert d_min is None and curv_min > 0
    res = tunnels.neon_descent(
        _saddle, x0, lr=0.1, steps=150, grad_threshold=1e-3, escape_step=0.1, generator=gen, eta=0.5, iterations=60
    )
    assert res.escapes == [0] and res.values[-1] == pytest.approx(-0.25, abs=1e-6)


def test_baseline_callbacks_run_in_trainer():
    X, y = _data(32)
    net = _net()
    pgd = PerturbedGD(start=2, radius=0.1, t_thres=2, seed=0)
    neon = NEONEscape(
        start=2, data=(X, y), t_thres=3, iterations=5, eta=0.05, radius=1e-2, curvature_threshold=-float("inf")
    )
    traj = Trajectory()
    tr = _fit(net, (X, y), "sgd", 0.0, 7, [pgd, neon], trajectory=traj)
    assert pgd.steps_ == [2, 4, 6] and neon.steps_ == [2, 5]  # (an event at the very last step is not recorded)
    moved = parameters_to_vector(tr.model) - parameters_to_vector(net)
    assert float(moved.norm()) > 0  # lr = 0: only the baselines moved the weights
    types = [e["type"] for i in range(len(traj)) for e in traj.tags(i).get("events", [])]
    assert types.count("perturbation") == 3 and types.count("neon") == 2


def test_baseline_callbacks_leave_frozen_parameters_and_step_in_the_trainable_ones():
    # The optimizer never moves a frozen tensor, so neither do the escape baselines: PGD draws from the ball of
    # the trainable parameters, NEON searches (and steps) in them. lr=0 isolates the baselines' moves.
    X, y = _data(32)
    for cb, size in ((PerturbedGD(0, radius=0.3, t_thres=1), 0.3), (_always_neon(X, y), 0.2)):
        net = _net()
        net[0].weight.requires_grad_(False)
        w0, rest0 = net[0].weight.detach().clone(), parameters_to_vector(net)[net[0].weight.numel() :]
        tr = _fit(net, (X, y), "sgd", 0.0, 1, [cb])
        assert cb.steps_ == [1] and torch.equal(tr.model[0].weight, w0)
        move = float((parameters_to_vector(tr.model)[w0.numel() :] - rest0).norm())
        if isinstance(cb, PerturbedGD):
            assert 0 < move <= size
        else:
            assert move == pytest.approx(size, rel=1e-6)  # a unit direction in the trainable parameters


def _always_neon(X, y):
    # curvature_threshold=-inf: every curvature estimate counts, so the escape step is always taken
    return NEONEscape(0, (X, y), escape_step=0.2, t_thres=1, iterations=3, curvature_threshold=-float("inf"))


def test_neon_objective_in_train_mode_is_the_batch_statistics_loss():
    """``bn_mode="train"``: NEON's objective is the loss a training step sees (batch statistics), not eval mode's."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    batches = [(X[:8], y[:8]), (X[8:], y[8:])]
    theta = parameters_to_vector(net).detach()
    f_train = tunnels.full_batch_objective(net, batches, nn.functional.cross_entropy, bn_mode="train")
    f_eval = tunnels.full_batch_objective(net, batches, nn.functional.cross_entropy)
    ref = copy.deepcopy(net).train()
    with torch.no_grad():  # by hand: the mean over the two batches of the batch-statistics loss
        by_hand = sum(float(nn.functional.cross_entropy(ref(xb), yb)) for xb, yb in batches) / 2
        net.eval()
        by_hand_eval = float(nn.functional.cross_entropy(net(X), y))
    assert float(f_train(theta)) == pytest.approx(by_hand, rel=1e-6)
    assert float(f_eval(theta)) == pytest.approx(by_hand_eval, rel=1e-6) and abs(by_hand - by_hand_eval) > 1e-3
    with pytest.raises(ValueError, match="bn_mode"):
        NEONEscape(start=0, data=batches, bn_mode="batch")
