"""Tests for landscape.train.optim: RK2 wrapper, optimizer switching, the method registry (Im et al.)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from landscape.train import optim

DT = torch.float64


def _net(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 8), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(8, 3))
    return nn.Sequential(*layers).to(DT)


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 4, generator=g, dtype=DT), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def _closure(model: nn.Module, opt, x, y, log: list | None = None, tag=None):
    def closure():
        if log is not None:
            log.append(tag)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def _vec(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _restored(model: nn.Module, opt, make):
    """A copy of ``model`` (from another seed) and a new optimizer ``make(params)``, both loaded from a weights-only
    checkpoint of ``model`` and ``opt``; also the checkpoint."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    net = _net(1)
    net.load_state_dict(ck["model"])
    new = make(net.parameters())
    new.load_state_dict(ck["opt"])
    return net, new, ck


def _same_state(a: dict, b: dict) -> bool:
    sa, sb = a["state"], b["state"]
    if sa.keys() != sb.keys():
        return False
    for k in sa:
        if sa[k].keys() != sb[k].keys():
            return False
        for n in sa[k]:
            x, y = sa[k][n], sb[k][n]
            if isinstance(x, torch.Tensor):
                if not torch.equal(x, y):
                    return False
            elif x != y:
                return False
    return True


INNERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
}


# --------------------------------------------------------------------------- RK2


@pytest.mark.parametrize("inner", list(INNERS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_rk2_euler_equals_plain_optimizer_bitwise(inner, dropout):
    def run(wrap):
        model = _net(0, dropout)
        opt = INNERS[inner](model.parameters())
        opt = optim.RK2(opt, method=(1.0, 0.0, 0.0)) if wrap else opt
        torch.manual_seed(5)  # dropout masks: same_noise rewinds the RNG, so the RNG advances as in a plain step
        out = [(opt.step(_closure(model, opt, x, y)).detach(), _vec(model)) for x, y in _batches(8)]
        return out, (opt.inner if wrap else opt).state_dict(), torch.rand(1)

    (pa, sa, ra), (pb, sb, rb) = run(False), run(True)
    for (la, va), (lb, vb) in zip(pa, pb):
        assert torch.equal(la, lb) and torch.equal(va, vb)
    assert _same_state(sa, sb) and torch.equal(ra, rb)


def test_rk2_euler_named_equals_custom_triple():
    assert optim.RK_COEFFICIENTS[optim.RKMethod.EULER] == (1.0, 0.0, 0.0)
    assert (optim.RK2(torch.optim.SGD(_net().parameters(), lr=0.1), "euler").a1) == 1.0


def _quadratic_final_error(method, n_steps: int, T: float = 1.0) -> float:
    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=DT)  # SPD
    x0 = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    x = nn.Parameter(x0.clone())
    h = T / n_steps
    opt = torch.optim.SGD([x], lr=h)
    if method != "plain":
        opt = optim.RK2(opt, method)

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ A @ x
        loss.backward()
        return loss

    for _ in range(n_steps):
        opt.step(closure)
    exact = torch.linalg.matrix_exp(-A * T) @ x0
    return float((x.detach() - exact).norm())


@pytest.mark.parametrize(
    ("method", "order"), [("plain", 1), ("euler", 1), ("heun", 2), ("ralston", 2), ("midpoint", 2)]
)
def test_rk2_global_error_order_on_linear_ode(method, order):
    # gradient flow of 0.5 x^T A x is dx/dt = -Ax; SGD with lr h is explicit Euler with step h
    ns = [16, 32, 64, 128]
    errs = [_quadratic_final_error(method, n) for n in ns]
    slope = np.polyfit(np.log([1.0 / n for n in ns]), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.15, (method, slope, errs)


@pytest.mark.parametrize("inner", ["momentum", "adam"])
@pytest.mark.parametrize("method", ["midpoint", "heun", "ralston", (0.25, 0.75, 2.0 / 3.0)])
@pytest.mark.parametrize("warmup", [0, 3])
def test_rk2_step_matches_two_plain_copies(inner, method, warmup):
    """Reference: k1, k2 from two independent copies of the plain optimizer started from the same state."""
    model = _net(0)
    opt = INNERS[inner](model.parameters())
    batches = _batches(warmup + 1)
    for x, y in batches[:warmup]:
        opt.step(_closure(model, opt, x, y))
    x, y = batches[-1]
    a1, a2, q1 = optim.RK_COEFFICIENTS[optim.RKMethod(method)] if isinstance(method, str) else method
    theta0 = _vec(model)

    m1, o1 = copy.deepcopy((model, opt))
    o1.step(_closure(m1, o1, x, y))
    k1 = _vec(m1) - theta0
    m2, o2 = copy.deepcopy((model, opt))
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta0 + q1 * k1, m2.parameters())
    o2.step(_closure(m2, o2, x, y))
    k2 = _vec(m2) - (theta0 + q1 * k1)
    expected = theta0 + a1 * k1 + a2 * k2

    rk = optim.RK2(opt, method)
    rk.step(_closure(model, rk, x, y))
    assert torch.allclose(_vec(model), expected, rtol=0, atol=1e-13)
    assert not torch.allclose(_vec(model), _vec(m1), rtol=0, atol=1e-9)  # the RK2 step differs from Euler
    assert _same_state(rk.inner.state_dict(), o1.state_dict())  # state advanced once, by stage 1


def test_rk2_calls_closure_twice_on_the_same_batch():
    model = _net(0, dropout=0.5)
    rk = optim.RK2(torch.optim.Adam(model.parameters(), lr=0.01), "ralston")
    log: list = []
    masks: list = []
    model[2].register_forward_hook(lambda mod, inp, out: masks.append((out == 0).clone()))
    for i, (x, y) in enumerate(_batches(5)):
        rk.step(_closure(model, rk, x, y, log, tag=(i, x.data_ptr())))
    assert [t[0] for t in log] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert all(log[2 * i] == log[2 * i + 1] for i in range(5))
    # same_noise: both stages of one step see the same dropout mask; successive steps see new ones
    assert all(torch.equal(masks[2 * i], masks[2 * i + 1]) for i in range(5))
    assert not torch.equal(masks[0], masks[2])


def test_rk2_returns_stage1_loss():
    model = _net(0)
    x, y = _batches(1)[0]
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), y)
    rk = optim.RK2(torch.optim.SGD(model.parameters(), lr=0.5), "heun")
    assert torch.equal(rk.step(_closure(model, rk, x, y)).detach(), before)


@pytest.mark.parametrize("inner", ["momentum", "adam"])
def test_rk2_state_dict_round_trip_continues_identically(inner):
    a = _net(0)
    ra = optim.RK2(INNERS[inner](a.parameters()), "ralston")
    batches = _batches(8)
    for x, y in batches[:4]:
        ra.step(_closure(a, ra, x, y))
    b, rb, ck = _restored(a, ra, lambda p: optim.RK2(INNERS[inner](p), "ralston"))
    for x, y in batches[4:]:
        ra.step(_closure(a, ra, x, y))
        rb.step(_closure(b, rb, x, y))
        assert torch.equal(_vec(a), _vec(b))
    with pytest.raises(ValueError, match="coefficients"):
        optim.RK2(INNERS[inner](b.parameters()), "heun").load_state_dict(ck["opt"])
    with pytest.raises(ValueError, match="not an RK2 state_dict"):
        rb.load_state_dict(rb.inner.state_dict())


def test_rk2_optimizer_surface_and_errors():
    model = _net(0)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    rk = optim.RK2(inner)
    assert (rk.a1, rk.a2, rk.q1) == optim.RK_COEFFICIENTS[optim.RKMethod.HEUN]
    assert rk.param_groups is inner.param_groups and rk.state is inner.state and rk.pop_events() == []
    rk.param_groups[0]["lr"] = 0.2
    assert inner.param_groups[0]["lr"] == 0.2
    x, y = _batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    rk.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="closure"):
        rk.step(None)
    with pytest.raises(ValueError, match="heun"):
        optim.RK2(inner, "rk4")
    with pytest.raises(ValueError, match="a1 \\+ a2"):
        optim.RK2(inner, (0.5, 0.6, 1.0))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        optim.RK2(rk)
    with pytest.raises(ValueError, match="LBFGS"):
        optim.RK2(torch.optim.LBFGS(model.parameters()))


# --------------------------------------------------------------------------- switching


def _sgd(lr=0.1):
    return lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)


@pytest.mark.parametrize("late", [1.0, 100])
def test_switch_that_never_fires_equals_first_optimizer(late):
    a, b = _net(0), _net(0)
    plain = _sgd()(a.parameters())
    sched = optim.SwitchSchedule(b.parameters(), [(0, _sgd()), (late, "adam")], total_steps=6)
    for x, y in _batches(6):
        plain.step(_closure(a, plain, x, y))
        sched.step(_closure(b, sched, x, y))
        assert sched.pop_events() == []
        assert torch.equal(_vec(a), _vec(b))
    assert sched.phase == 0 and isinstance(sched.optimizer, torch.optim.SGD)
    assert _same_state(plain.state_dict(), sched.optimizer.state_dict())


def test_switch_is_continuous_and_emits_one_event():
    a, b = _net(0), _net(0)
    phases = [(0, ("sgd", {"lr": 0.1})), (0.5, ("adam", {"lr": 0.01}))]
    sched = optim.SwitchSchedule(b.parameters(), phases, total_steps=8)
    assert sched.switch_steps == (0, 4)
    plain = torch.optim.SGD(a.parameters(), lr=0.1)
    events = []
    for i, (x, y) in enumerate(_batches(8)):
        if i == 4:  # the reference switches by hand: a fresh Adam from the current weights
            assert torch.equal(_vec(a), _vec(b))
            plain = torch.optim.Adam(a.parameters(), lr=0.01)
        plain.step(_closure(a, plain, x, y))
        sched.step(_closure(b, sched, x, y))
        events.append(sched.pop_events())
        assert torch.equal(_vec(a), _vec(b)), i
    assert events[3] == [{"event": "switch", "from": "sgd", "to": "adam", "step": 4, "phase": 1}]
    assert all(e == [] for j, e in enumerate(events) if j != 3)
    assert sched.param_groups[0]["lr"] == 0.01 and sched.name == "adam"


def test_switch_at_paper_fractions_and_into_rk2():
    model = _net(0)
    phases = [
        optim.Phase(0, ("sgd", {"lr": 0.05})),
        optim.Phase(0.25, "adam", name="A"),
        optim.Phase(0.5, lambda p: optim.RK2(torch.optim.SGD(p, lr=0.1), "ralston")),
        optim.Phase(0.75, "adadelta"),
    ]
    sched = optim.SwitchSchedule(model.parameters(), phases, total_steps=12)
    assert sched.switch_steps == (0, 3, 6, 9)
    log: list = []
    got = []
    for i, (x, y) in enumerate(_batches(12)):
        sched.step(_closure(model, sched, x, y, log, tag=i))
        got += sched.pop_events()
    assert [(e["from"], e["to"], e["step"]) for e in got] == [
        ("sgd", "A", 3),
        ("A", "sgd_rk2", 6),
        ("sgd_rk2", "adadelta", 9),
    ]
    assert [log.count(i) for i in range(12)] == [1] * 6 + [2] * 3 + [1] * 3  # RK2 phase evaluates twice
    assert isinstance(sched.optimizer, torch.optim.Adadelta)


@pytest.mark.parametrize("save_at", [3, 4, 5])
def test_switch_state_dict_round_trip(save_at):
    phases = [(0, _sgd()), (4, ("adam_rk2", {"lr": 0.01}))]
    a = _net(0)
    sa = optim.SwitchSchedule(a.parameters(), phases)
    batches = _batches(8)
    for x, y in batches[:save_at]:
        sa.step(_closure(a, sa, x, y))
    b, sb, ck = _restored(a, sa, lambda p: optim.SwitchSchedule(p, phases))
    assert sb.phase == sa.phase and sb.steps == save_at
    for x, y in batches[save_at:]:
        sa.step(_closure(a, sa, x, y))
        sb.step(_closure(b, sb, x, y))
        assert torch.equal(_vec(a), _vec(b))
        assert sa.pop_events() == sb.pop_events()
    with pytest.raises(ValueError, match="switch steps"):
        optim.SwitchSchedule(b.parameters(), [(0, _sgd()), (5, "adam")]).load_state_dict(ck["opt"])


def test_switch_param_groups_are_not_shared_between_phases():
    model = _net(0)
    groups = [{"params": list(model[0].parameters()), "lr": 0.3}, {"params": list(model[2].parameters())}]
    sched = optim.SwitchSchedule(groups, [(0, ("sgd", {"lr": 0.1})), (1, "adam")])
    x, y = _batches(1)[0]
    sched.step(_closure(model, sched, x, y))
    assert [g["lr"] for g in sched.param_groups] == [0.3, 0.001]
    assert "betas" in sched.param_groups[0] and "momentum" not in sched.param_groups[0]
    assert "momentum" not in groups[0]  # the caller's group dicts are untouched


def test_switch_schedule_errors():
    ps = list(_net(0).parameters())
    with pytest.raises(ValueError, match="total_steps"):
        optim.SwitchSchedule(ps, [(0, "sgd"), (0.5, "adam")])
    with pytest.raises(ValueError, match="strictly increasing"):
        optim.SwitchSchedule(ps, [(0, "sgd"), (0.5, "adam"), (0.5, "sgd")], total_steps=10)
    with pytest.raises(ValueError, match="start at 0"):
        optim.SwitchSchedule(ps, [(2, "sgd")])
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        optim.SwitchSchedule(ps, [(0, "sgd"), (1.5, "adam")], total_steps=10)
    with pytest.raises(ValueError, match="valid"):
        optim.SwitchSchedule(ps, [(0, "adamw")])
    with pytest.raises(ValueError, match="params it is given"):
        optim.SwitchSchedule(ps, [(0, lambda p: torch.optim.SGD(ps[:1], lr=0.1))])
    with pytest.raises(TypeError, match="name must be a str"):
        optim.SwitchSchedule(ps, [(0, "sgd", {"lr": 0.1})])


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", optim.METHODS)
def test_every_method_runs_by_name_and_reduces_a_convex_loss(name):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(32, 5, generator=g, dtype=DT)
    y = 0.1 * (X @ torch.randn(5, generator=g, dtype=DT) + 0.3)  # small scale: adaptive steps are ~lr
    w, b = nn.Parameter(torch.zeros(5, dtype=DT)), nn.Parameter(torch.zeros((), dtype=DT))
    opt = optim.make_optimizer(name, [w, b])

    def loss_fn():
        return ((X @ w + b - y) ** 2).mean()

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    first = loss_fn().item()
    losses = [opt.step(closure).item() for _ in range(200)]
    assert losses[0] == first
    assert loss_fn().item() < 0.1 * first, name
    assert opt.param_groups[0]["lr"] == optim.default_hyperparameters(name)["lr"]


def test_registry_defaults_and_overrides():
    ps = list(_net(0).parameters())
    assert optim.METHODS == ("sgd", "momentum", "rmsprop", "adadelta", "adam", "sgd_rk2", "adam_rk2")
    assert optim.make_optimizer("momentum", ps).param_groups[0]["momentum"] == 0.9
    assert optim.make_optimizer(optim.Method.ADAM, ps, lr=0.1).param_groups[0]["lr"] == 0.1
    rk = optim.make_optimizer("sgd_rk2", ps)
    assert isinstance(rk, optim.RK2) and isinstance(rk.inner, torch.optim.SGD) and rk.method == "heun"
    assert rk.param_groups[0]["lr"] == 2 * optim.default_hyperparameters("sgd")["lr"]  # Im et al. 3.4: doubled
    rk = optim.make_optimizer("adam_rk2", ps, method="midpoint", betas=(0.8, 0.9))
    assert isinstance(rk.inner, torch.optim.Adam) and (rk.a1, rk.a2, rk.q1) == (0.0, 1.0, 0.5)
    assert rk.param_groups[0]["betas"] == (0.8, 0.9)
    d = optim.default_hyperparameters("sgd")
    d["lr"] = 9.0
    assert optim.default_hyperparameters("sgd")["lr"] == 0.05  # a copy
    with pytest.raises(ValueError, match="sgd_rk2"):
        optim.make_optimizer("adamw", ps)


def test_trainer_records_switch_event():
    from landscape.train import Trainer

    X, y = _batches(1)[0]
    opt = lambda p: optim.SwitchSchedule(p, [(0, "sgd"), (0.5, "adam_rk2")], total_steps=6)  # noqa: E731
    net = _net(0)
    before = _vec(net)
    evs = list(Trainer(net, (X, y), optimizer=opt, steps=6, record_every_epochs=None))
    assert torch.equal(_vec(net), before)
    tagged = [(e.step, e.events) for e in evs if e.events]
    assert tagged == [(3, [{"event": "switch", "from": "sgd", "to": "adam_rk2", "step": 3, "phase": 1}])]
