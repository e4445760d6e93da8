"""Worst-case ascent against a written-out reference, and the functional model's mode and flag promises.

The ascent takes no gradient at the last point of a restart (no step follows it): the values must equal those of
the loop that takes one everywhere, written out here with plain autograd on a quadratic loss, with one backward
pass fewer per restart. The functional model writes only the flags that differ from the mode it needs and must
still leave every flag as the caller had it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import m_sharpness, worst_case_sharpness
from landscape.functional import FunctionalModel, hook_attributes, model_modes
from landscape.problem import as_problem

F64 = torch.float64


class _Counting(nn.Module):
    """A linear model counting its forward passes with and without autograd."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 1, bias=False).double()
        self.calls = {"grad": 0, "no_grad": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.calls["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return self.lin(x)


def _reference_ascent(w, X, y, radius, steps, restarts, seed, step_size):
    """Projected L2 ascent on ``mean((X (w + u) - y)^2)``, a gradient at every point (the loop before the change)."""
    gen = torch.Generator().manual_seed(seed)
    base = float(((X @ w - y) ** 2).mean())
    best = []
    for _ in range(restarts):
        z = torch.randn(w.numel(), generator=gen, dtype=F64)
        u = z * (radius / z.norm())

        def f(u):
            u = u.detach().clone().requires_grad_(True)
            loss = ((X @ (w + u) - y) ** 2).mean()
            (g,) = torch.autograd.grad(loss, u)
            return float(loss), g

        value, g = f(u)
        b, alpha = value - base, step_size
        for _ in range(steps):
            gn = float(g.norm())
            if gn == 0 or not math.isfinite(gn):
                break
            v = u + alpha * radius * g / gn
            r = float(v.norm())
            v = v * (radius / r) if r > radius else v
            new, g_new = f(v)
            if new < value:
                alpha /= 2
            u, value, g = v, new, g_new
            b = max(b, value - base)
        best.append(b)
    return base, np.array(best)


@pytest.mark.parametrize("steps", [0, 1, 5])
def test_worst_case_values_match_the_reference_with_one_backward_fewer_per_restart(steps):
    g = torch.Generator().manual_seed(1)
    d, n, restarts = 5, 30, 3
    X, y = torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, 1, generator=g, dtype=F64)
    model = _Counting(d)
    w = model.lin.weight.detach()[0].clone()
    base, want = _reference_ascent(w, X, y[:, 0], 0.3, steps, restarts, seed=7, step_size=1.0)
    problem = as_problem(model, (X, y), nn.MSELoss())
    list(problem.batches())  # the first pass over the batches checks them (one forward): not the measure's
    model.calls.update(grad=0, no_grad=0)
    r = worst_case_sharpness(problem, radius=0.3, steps=steps, restarts=restarts, seed=7)
    np.testing.assert_allclose(r.values, want, rtol=1e-12, atol=1e-15)
    assert r.base_loss == pytest.approx(base, rel=1e-12)
    # one pass for the base, (steps + 1) per restart, of which steps with a gradient (none at the last point)
    assert model.calls == {"grad": restarts * steps, "no_grad": 1 + restarts}
    assert r.loss_evaluations == 1 + restarts * (steps + 1)


def test_m_sharpness_takes_no_gradient_at_a_batch_ascents_last_point():
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(24, 4, generator=g, dtype=F64), torch.randn(24, 1, generator=g, dtype=F64)
    model = _Counting(4)
    problem = as_problem(model, (X, y), nn.MSELoss())
    list(problem.batches())
    model.calls.update(grad=0, no_grad=0)
    r = m_sharpness(problem, m=6, radius=0.2, steps=4, restarts=2, base_loss=1.0)
    # 4 batches: a base pass each, then 2 restarts of 5 points, 4 of them with a gradient
    assert model.calls == {"grad": 4 * 2 * 4, "no_grad": 4 * (1 + 2)}
    assert r.values.shape == (4,) and np.all(r.values >= 0)


class _FlagWrites(nn.Module):
    """Counts writes of ``training`` (``nn.Module.train`` and the functional model write it by attribute)."""

    writes = 0

    def __setattr__(self, name, value):  # noqa: D105
        if name == "training" and "training" in self.__dict__:
            _FlagWrites.writes += 1
        super().__setattr__(name, value)


class _Net(_FlagWrites):
    def __init__(self, flip: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.flip = flip

    def forward(self, x):  # noqa: D102
        out = self.drop(self.bn(self.lin(x)))
        if self.flip:  # a forward that changes a flag itself: the caller's must still come back
            self.lin.training = not self.lin.training
        return out


@pytest.mark.parametrize("bn_train", [False, True])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
def test_functional_model_sees_the_policy_and_leaves_every_flag_as_the_caller_had_it(bn_train, flip, start):
    net = _Net(flip)
    if start != "train":
        net.eval()
    if start == "mixed":
        net.bn.train()
    before = {name: m.training for name, m in net.named_modules()}
    seen = {}
    net.bn.register_forward_hook(lambda m, i, o: seen.update({"bn": m.training}))
    net.lin.register_forward_hook(lambda m, i, o: seen.update({"lin": m.training}))
    tensors = {**dict(net.named_parameters()), **{k: v.clone() for k, v in net.named_buffers()}}
    x = torch.randn(8, 3)
    out = FunctionalModel(net, tensors, bn_train)(x)
    assert seen == {"bn": bn_train, "lin": False}
    assert {name: m.training for name, m in net.named_modules()} == before
    # Dropout off (the two calls agree), BatchNorm by the policy: batch statistics or the running ones
    ref = nn.functional.batch_norm(
        net.lin(x), net.bn.running_mean, net.bn.running_var, net.bn.weight, net.bn.bias, training=bn_train
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(FunctionalModel(net, tensors, bn_train)(x), ref)
    with model_modes(net, bn_train), hook_attributes(net):
        assert net.bn.training == bn_train and not net.training and not net.drop.training
    assert {name: m.training for name, m in net.named_modules()} == before


def test_a_model_already_in_the_mode_is_not_written():
    net = _Net().eval()
    tensors = dict(net.named_parameters()) | dict(net.named_buffers())
    _FlagWrites.writes = 0
    FunctionalModel(net, tensors, False)(torch.randn(5, 3))
    assert _FlagWrites.writes == 0
    FunctionalModel(net, tensors, True)(torch.randn(5, 3))  # BatchNorm (not a _FlagWrites) set and put back
    assert _FlagWrites.writes == 0 and not net.bn.training
    net.train()
    _FlagWrites.writes = 0
    FunctionalModel(net, tensors, False)(torch.randn(5, 3))
    assert _FlagWrites.writes == 2 and net.training  # the root set to eval and back


@pytest.mark.parametrize(
    "values, dtype",
    [
        ([1.0, 2.0, -3.0], torch.float32),
        ([60000.0, 60000.0, 1.0], torch.float16),  # finite elements whose sum overflows: still all finite
        ([3e38, 3e38, -1.0], torch.float32),
        ([1.0, math.inf, -math.inf], torch.float64),  # inf - inf: a NaN sum
        ([math.nan, 1.0, math.inf], torch.float32),
        ([], torch.float32),
        ([1 + 2j, complex(math.inf, 0)], torch.complex64),
        ([1 + 2j, 3 - 1j], torch.complex128),
    ],
)
def test_describe_nonfinite_matches_an_elementwise_test(values, dtype):
    from landscape._checks import describe_nonfinite

    t = torch.tensor(values, dtype=dtype)
    finite = all(math.isfinite(abs(v)) and not math.isnan(abs(v)) for v in t.tolist())
    assert (describe_nonfinite(t) is None) == finite
    if not finite:
        bad = [i for i, v in enumerate(t.tolist()) if not math.isfinite(abs(v))]
        assert f"first at index ({bad[0]},)" in describe_nonfinite(t)


def test_a_module_used_twice_is_left_as_the_caller_had_it():
    """One ``nn.Linear`` applied twice: torch's functional_call alone left it holding the last point's tensors."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 3).double()
    net = nn.Sequential(lin, nn.ReLU(), lin)
    w0, b0 = lin.weight, lin.bias
    before = (w0.detach().clone(), b0.detach().clone())
    X, y = torch.randn(20, 3, dtype=F64), torch.randn(20, 3, dtype=F64)
    r = worst_case_sharpness(net, nn.MSELoss(), (X, y), radius=0.1, steps=3)
    assert lin.weight is w0 and lin.bias is b0 and isinstance(lin.weight, nn.Parameter)
    assert torch.equal(w0.detach(), before[0]) and torch.equal(b0.detach(), before[1])
    # the point's value: the shared layer perturbed at both of its uses (written out)
    W, b = before[0] + 0.01, before[1] - 0.02
    point = {"0.weight": W, "0.bias": b}
    want = nn.functional.linear(torch.relu(nn.functional.linear(X, W, b)), W, b)
    torch.testing.assert_close(FunctionalModel(net, point)(X), want, rtol=0, atol=0)
    assert lin.weight is w0 and torch.equal(w0.detach(), before[0])
    assert r.base_loss == pytest.approx(float(nn.functional.mse_loss(net(X), y)), rel=1e-12)


@pytest.mark.parametrize("penalty", [False, True])
def test_eager_steps_skip_the_unlogged_losses_and_keep_every_number(penalty):
    """The eager stepper (loss and penalty at logged steps only) against make_steps(1): the same bits everywhere."""
    from persistence.mlp import vectors_to_stack
    from persistence.stepper import Backend, Stepper, log_steps, make_steps

    g = torch.Generator().manual_seed(3)
    widths, S, steps = [1, 8, 8, 1], 3, 23
    numel = sum(widths[i] * widths[i + 1] + widths[i + 1] for i in range(3))
    ps0 = vectors_to_stack(torch.randn(S, numel, generator=g, dtype=F64) * 0.5, widths)
    x = torch.linspace(-2, 2, 30, dtype=F64)[:, None]
    y = x**2
    anchors = [torch.randn(2, widths[i] * widths[i + 1] + widths[i + 1], generator=g, dtype=F64) for i in range(3)]
    scales = torch.tensor([0.01, 0.0, 0.02], dtype=F64) if penalty else torch.zeros(3, dtype=F64)
    logged = log_steps(steps, 5)
    ps, losses, pens, _ = Stepper(Backend.EAGER, 1, 0.01, 0.9, penalty=True).run(
        ps0, x, y, steps, logged, anchors=anchors, scales=scales
    )
    ref = make_steps(1, 0.01, 0.9, penalty=True)
    rp, rb = list(ps0), [torch.zeros_like(p) for p in ps0]
    want_l, want_p = [], []
    for t in range(steps + 1):
        if t == steps:  # the final point's loss and penalty: one more (unapplied) step's
            rp_last = rp
        rp_next, rb, ls, pn = ref(rp, rb, x, y, anchors, scales)
        if t in logged:
            want_l.append(ls[0])
            want_p.append(pn[0])
        rp = rp_next
    assert all(torch.equal(a, b) for a, b in zip(ps, rp_last))
    assert torch.equal(losses, torch.stack(want_l, 1)) and torch.equal(pens, torch.stack(want_p, 1))
