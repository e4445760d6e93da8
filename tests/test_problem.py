"""landscape.Problem: the one mean loss, gradient and HVP, against brute-force float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.params import parameters_to_vector
from landscape.problem import Problem, as_problem, model_output
from landscape.validation import InputError


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def _data(n: int = 13, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def _reference(net: nn.Module, X: torch.Tensor, y: torch.Tensor):
    """Mean loss, gradient and dense Hessian by torch.func over the whole set in one batch."""
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta = parameters_to_vector(net).detach()

    def f(th: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for k, s in zip(names, shapes):
            n = s.numel()
            parts[k] = th[i : i + n].reshape(s)
            i += n
        return F.cross_entropy(torch.func.functional_call(net, parts, (X,)), y)

    return f(theta), torch.func.grad(f)(theta), torch.func.hessian(f)(theta), theta


def _loop_loss(net: nn.Module, batches, theta: torch.Tensor) -> float:
    """A hand-written loop: sum of per-sample losses over every batch, over the sample count."""
    total, n = 0.0, 0
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    parts, i = {}, 0
    for k, s in zip(names, shapes):
        parts[k] = theta[i : i + s.numel()].reshape(s)
        i += s.numel()
    for X, y in batches:
        for j in range(len(y)):
            out = torch.func.functional_call(net, parts, (X[j : j + 1],))
            total += float(F.cross_entropy(out, y[j : j + 1]))
            n += 1
    return total / n


def _forms(X, y):
    ds = TensorDataset(X, y)
    return {
        "pair": (X, y),
        "pair-batched": "batched",
        "dataset": ds,
        "dataloader": DataLoader(ds, batch_size=4),
        "list": [(X[i : i + 5], y[i : i + 5]) for i in range(0, len(y), 5)],
        "dicts": [{"x": X[i : i + 6], "labels": y[i : i + 6]} for i in range(0, len(y), 6)],
    }


class _DictNet(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(x), "hidden": x}


@pytest.mark.parametrize("form", ["pair", "pair-batched", "dataset", "dataloader", "list", "dicts", "closure"])
def test_mean_loss_grad_hvp_match_references(form):
    net = _net()
    X, y = _data()
    f0, g0, H0, theta = _reference(net, X, y)
    model, loss, kw = net, "cross_entropy", {}
    if form == "pair-batched":
        data, kw = (X, y), {"batch_size": 4}
    elif form == "closure":
        data = [(X[i : i + 4], y[i : i + 4]) for i in range(0, len(y), 4)]

        def loss(model, batch):
            x, t = batch
            return F.cross_entropy(model(x), t)
    elif form == "dicts":
        model, data = _DictNet(net), _forms(X, y)[form]
    else:
        data = _forms(X, y)[form]
    prob = Problem(model, data, loss, **kw)
    assert prob.closure == (form == "closure")
    torch.testing.assert_close(prob.loss(), f0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prob.grad(), g0, rtol=1e-10, atol=1e-12)
    v = torch.randn(prob.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(prob.hvp(v), H0 @ v, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(prob.dense_hessian(), H0, rtol=1e-9, atol=1e-11)
    assert prob.n_samples == len(y)
    # at another point: the loop reference over the data as batched
    th = theta + 0.3 * v
    assert float(prob.loss(th)) == pytest.approx(_loop_loss(net, [(X, y)], th), rel=1e-12)


def test_closure_sum_count_weights_by_its_own_unit():
    net = _net()
    X, y = _data(12)
    w = torch.arange(1, 13, dtype=torch.float64)  # per-sample weights: the mean is over "tokens" of weight w

    def loss(model, batch):
        x, t, wt = batch
        per = F.cross_entropy(model(x), t, reduction="none")
        return (per * wt).sum(), wt.sum()

    prob = Problem(net, (X, y, w), loss, batch_size=5)
    ref = float((F.cross_entropy(net(X), y, reduction="none") * w).sum() / w.sum())
    assert float(prob.loss()) == pytest.approx(ref, rel=1e-12)


def test_multi_input_and_float32_model_in_float64():
    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, x, z):
            return (self.a(x) + self.b(z),)  # a tuple: the first element is the output

    m = Two()
    x, z, t = torch.randn(7, 3), torch.randn(7, 2), torch.randn(7, 2)
    prob = Problem(m, (x, z, t), "mse", dtype=torch.float64)
    m64 = Two().double()
    m64.load_state_dict(m.state_dict())
    ref = F.mse_loss(m64(x.double(), z.double())[0], t.double())
    assert prob.dtype == torch.float64
    torch.testing.assert_close(prob.loss(), ref.detach(), rtol=1e-12, atol=0)
    assert next(m.parameters()).dtype == torch.float32  # not touched


def test_streamed_over_budget_equals_held():
    net = _net()
    X, y = _data(20)
    loader = DataLoader(TensorDataset(X, y), batch_size=3)
    held = Problem(net, loader, "cross_entropy")
    streamed = Problem(net, loader, "cross_entropy", memory_budget=64)
    assert float(held.loss()) == float(streamed.loss())
    assert not held.streamed and streamed.streamed
    torch.testing.assert_close(held.grad(), streamed.grad(), rtol=1e-13, atol=0)


def test_default_loss_follows_target_dtype():
    net = _net()
    X, y = _data()
    assert float(Problem(net, (X, y)).loss()) == pytest.approx(float(F.cross_entropy(net(X), y)), rel=1e-12)
    t = torch.randn(len(y), 4, dtype=torch.float64)
    assert float(Problem(net, (X, t)).loss()) == pytest.approx(float(F.mse_loss(net(X), t)), rel=1e-12)


def test_output_rule():
    t = torch.ones(2)
    assert model_output(t) is t
    assert model_output((t, torch.zeros(1))) is t
    assert model_output({"hidden": torch.zeros(1), "logits": t}) is t
    assert model_output({"a": None, "b": t}) is t

    class Out:
        logits = t

    assert model_output(Out()) is t
    with pytest.raises(TypeError, match="closure"):
        model_output(3)


def test_bad_input_is_named():
    net = _net()
    X, y = _data()
    X[2, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        Problem(net, (X, y)).loss()
    with pytest.raises(ValueError, match="unknown loss"):
        Problem(net, (X, y), "crossentropy")
    with pytest.raises(InputError, match="Problem"):
        as_problem(Problem(net, _data()), _data())
    with pytest.raises(InputError, match="data is missing"):
        as_problem(net)
    with pytest.raises(InputError, match="no batch"):
        Problem(net, []).loss()


def test_batchnorm_train_mode_uses_batch_statistics_and_leaves_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double().train()
    X, y = _data(8)
    y = y % 2
    before = {k: v.clone() for k, v in net.state_dict().items()}
    p_eval, p_train = Problem(net, (X, y)), Problem(net, (X, y), bn_mode="train")
    with torch.no_grad():
        net.eval()
        ref_eval = F.cross_entropy(net(X), y)
        net.train()
        ref_train = F.cross_entropy(
            torch.func.functional_call(net, {k: v.clone() for k, v in net.state_dict().items()}, (X,)), y
        )
    torch.testing.assert_close(p_eval.loss(), ref_eval, rtol=1e-12, atol=0)
    torch.testing.assert_close(p_train.loss(), ref_train, rtol=1e-12, atol=0)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert net.training and all(m.training for m in net.modules())


def test_attention_hvp_selects_the_math_kernel_and_restores_settings():
    torch.manual_seed(0)

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            def heads(t):  # (B, L, 4) -> (B, 2, L, 2): the 4-D form takes the fused CPU kernel
                return t.view(t.shape[0], t.shape[1], 2, 2).transpose(1, 2)

            a = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), is_causal=True)
            return self.out(a.transpose(1, 2).flatten(2).mean(1))

    m = Attn()
    X, y = torch.randn(5, 6, 4), torch.randint(0, 3, (5,))
    prob = Problem(m, (X, y), "cross_entropy")
    v = torch.randn(prob.numel)
    with pytest.raises(RuntimeError, match="flash_attention"):  # the failing case without the kernel choice
        th = prob.theta0.requires_grad_(True)
        t, _ = prob.batch_terms(prob.functional(th), next(prob.batches()))
        (g,) = torch.autograd.grad(t, th, create_graph=True)
        torch.autograd.grad(g @ v, th)
    hv = prob.hvp(v)
    eps = 1e-3
    fd = (prob.grad(prob.theta0 + eps * v) - prob.grad(prob.theta0 - eps * v)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=2e-2, atol=2e-3)
    assert any("math SDPA" in n for n in prob.notes)
    assert torch.backends.cuda.flash_sdp_enabled()  # the global setting is the caller's again


def test_fast_persistent_kernel_is_the_problems_mean_loss():
    """persistence's batched hand-derived MLP kernel computes the Problem's mean MSE and its gradient."""
    from persistence.fast import mlp_loss_and_grad

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(11, 2, dtype=torch.float64), torch.randn(11, 3, dtype=torch.float64)
    prob = Problem(net, (x, y), "mse")
    pts = prob.theta0 + 0.2 * torch.randn(3, prob.numel, dtype=torch.float64)
    loss, grad = mlp_loss_and_grad(net, pts, x, y)
    for s in range(3):
        ref_loss, ref_grad = prob.loss_and_grad(pts[s])
        torch.testing.assert_close(loss[s], ref_loss, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad[s], ref_grad, rtol=1e-10, atol=1e-14)


def test_streamed_problem_gives_the_same_line_and_spectrum_as_held_data():
    """Data over the memory budget is streamed (the general path) and gives the engine's numbers."""
    import landscape

    net = _net()
    X, y = _data(20)
    loader = DataLoader(TensorDataset(X, y), batch_size=6)
    held, streamed = Problem(net, (X, y)), Problem(net, loader, memory_budget=64)
    other = held.theta0 + 0.5
    a = landscape.line(held, held.theta0, other, alphas=[0.0, 0.3, 1.2])
    b = landscape.line(streamed, held.theta0, other, alphas=[0.0, 0.3, 1.2])
    assert streamed.streamed and streamed.pairs() is None
    np.testing.assert_allclose(b.metrics["loss"], a.metrics["loss"], rtol=1e-12)
    np.testing.assert_allclose(b.metrics["accuracy"], a.metrics["accuracy"], rtol=0)
    sa = landscape.hessian_spectrum(held, n_probes=1, steps=5, top_k=2, tol=1e-10)
    sb = landscape.hessian_spectrum(streamed, n_probes=1, steps=5, top_k=2, tol=1e-10)
    np.testing.assert_allclose(sb.top_eigenvalues, sa.top_eigenvalues, rtol=1e-9)


def test_saturation_of_a_two_input_problem_equals_the_single_input_shorthand():
    import landscape

    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.act = nn.Linear(3, 4), nn.Tanh()

        def forward(self, x, z):
            return self.act(self.lin(x) + z)

    class One(nn.Module):
        def __init__(self, two: nn.Module, z: torch.Tensor) -> None:
            super().__init__()
            self.two, self.z = two, z

        def forward(self, x):
            return self.two(x, self.z)

    m = Two().double()
    x, z, t = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 4)
    got = landscape.measure_saturation(Problem(m, (x, z, t), "mse"), layers=["act"], exact_limit=100)
    want = landscape.measure_saturation(One(m, z), x, layers=["two.act"], exact_limit=100)
    assert got["act"].percentile(98.0) == pytest.approx(want["two.act"].percentile(98.0), rel=1e-12)


def test_a_batch_closure_must_be_callable():
    import pytest
    import torch
    from torch import nn

    from landscape import Problem
    from landscape.validation import InputError

    net = nn.Linear(3, 2)
    data = (torch.randn(4, 3), torch.randint(0, 2, (4,)))
    with pytest.raises(InputError, match="loss_form='batch' needs a closure"):
        Problem(net, data, "mse", loss_form="batch")


def _as_given(kind: str, X: torch.Tensor, y: torch.Tensor):
    """The same samples as a tensor pair, a list of pairs or a streamed DataLoader; the Problem's extra options."""
    if kind == "pair":
        return (X, y), {}
    if kind == "pair in batches":
        return (X, y), {"batch_size": 4}
    if kind == "list":
        return [(X[:5], y[:5]), (X[5:], y[5:])], {}
    return DataLoader(TensorDataset(X, y), batch_size=4), {"memory_budget": 0}  # streamed: re-read every pass


@pytest.mark.parametrize("kind", ["pair", "pair in batches", "list", "streamed"])
@pytest.mark.parametrize("case", ["labels (N, 1) int32", "uint8 inputs", "mse targets (N,) for outputs (N, 1)"])
@pytest.mark.filterwarnings("ignore::landscape.validation.InputWarning")
def test_validate_false_skips_the_checks_but_not_the_normalization(kind, case):
    # validate=False skipped the normalization of (X, y) batches with the checks: labels (N, 1) or int32 refused
    # by cross-entropy, uint8 inputs refused by the model, and (N,) regression targets broadcast against (N, 1)
    # outputs to an (N, N) difference (a wrong loss, silently). Streamed data lost it on every pass after the first
    # whatever validate said. Same data, same loss and gradient: on every pass, and equal to torch's on the
    # normalized data.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (10,), generator=g)
    if case == "labels (N, 1) int32":
        net, loss, Xg, yg = _net(), "cross_entropy", X, labels[:, None].int()
        ref_fn = lambda m: F.cross_entropy(m(X), labels)  # noqa: E731
    elif case == "uint8 inputs":
        Xg = (X.abs() * 50).to(torch.uint8)
        net, loss, yg = _net(), "cross_entropy", labels
        ref_fn = lambda m: F.cross_entropy(m(Xg.double()), labels)  # noqa: E731
    else:
        net = nn.Sequential(nn.Linear(3, 1)).double()
        loss, Xg, yg = "mse", X, X[:, 0].sin()
        ref_fn = lambda m: F.mse_loss(m(X), yg[:, None])  # noqa: E731
    ref = ref_fn(net)
    (ref_grad,) = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(ref, list(net.parameters()))])]
    for validate in (True, False):
        data, options = _as_given(kind, Xg, yg)
        prob = Problem(net, data, loss, validate=validate, **options)
        for _ in range(2):  # the first pass normalizes (and checks); later passes must give the same batches
            torch.testing.assert_close(prob.loss(), ref.detach(), rtol=1e-12, atol=0)
            torch.testing.assert_close(prob.grad(), ref_grad, rtol=1e-10, atol=1e-12)


def test_validate_false_skips_the_checks():
    net = _net()
    X, y = _data(10)
    X[3, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        Problem(net, (X, y)).loss()
    assert torch.isnan(Problem(net, (X, y), validate=False).loss())  # not refused: the NaN reaches the loss
    X, y = _data(10)
    y[2] = 7  # out of range for 4 classes: refused by the check, by torch's own error without it
    with pytest.raises(InputError, match="7"):
        Problem(net, (X, y)).loss()
    with pytest.raises((IndexError, RuntimeError)):
        Problem(net, (X, y), validate=False).loss()
    for validate in (True, False):  # no data at all: refused either way (nothing to take a mean over)
        with pytest.raises(InputError, match="no batch"):
            Problem(net, [], validate=validate).loss()
