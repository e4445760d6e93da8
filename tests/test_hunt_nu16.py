"""Bug hunt nu16: gaps between the Problem path and the other entry points, against brute force in float64.

References: the dense Hessian of the selected parameters (``torch.func.hessian``), hand-written training
loops, float64 sums, and the trainer's own checkpoints.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature import HessianOperator, hessian_directions, hessian_eigenpairs, hessian_trace, spectrum_of
from landscape.params import ParamLayout, parameters_to_vector
from landscape.problem import Problem

F64 = torch.float64


# ----------------------------------------------------------------------------- 1. params= on the Hessian analyses
class _DictNet(nn.Module):
    """A 2-layer tanh MLP (float64) called with a mapping batch's ``x``, returning ``{"logits": (B, 2)}``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(3, 4).double(), nn.Linear(4, 2).double()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc2(torch.tanh(self.fc1(x)))}


def _dict_data() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(12, 3, dtype=F64, generator=g), torch.randint(0, 2, (12,), generator=g)
    return [{"x": X[s : s + 4], "labels": y[s : s + 4]} for s in range(0, 12, 4)]


def _closure(model, batch):
    return nn.functional.cross_entropy(model(batch["x"])["logits"], batch["labels"])


def _dense_block(net: nn.Module, data, names: list[str]) -> torch.Tensor:
    """``torch.func.hessian`` of the mean cross-entropy over ``data`` in the tensors ``names`` (float64)."""
    layout = ParamLayout.from_model(net)
    theta = parameters_to_vector(net).double()
    idx = torch.cat([torch.arange(s.start, s.stop) for s in layout.specs if s.name in names])

    def loss(sub: torch.Tensor) -> torch.Tensor:
        full = theta.index_put((idx,), sub)
        params = layout.unflatten(full)
        n = sum(len(b["labels"]) for b in data)
        return (
            sum(
                len(b["labels"]) * _closure(lambda x: functional_call(net, params, (x,)), b)
                for b in data  # type: ignore[misc]
            )
            / n
        )

    return torch.func.hessian(loss)(theta[idx])


def _problems():
    net = _DictNet()
    data = _dict_data()
    pairs = [(b["x"], b["labels"]) for b in data]
    plain = nn.Sequential(copy.deepcopy(net.fc1), nn.Tanh(), copy.deepcopy(net.fc2))
    # the same function twice: a closure over mapping batches (the operator's general path) and (X, y) pairs
    return [
        ("closure", Problem(net, data, _closure), ["fc2", "fc1.bias"], ["fc1.bias", "fc2.weight", "fc2.bias"]),
        ("pairs", Problem(plain, pairs, "cross_entropy"), ["2"], ["2.weight", "2.bias"]),
    ]


@pytest.mark.parametrize("case", [0, 1])
def test_hessian_analyses_of_a_problem_take_params_as_the_operator_does(case):
    """hessian_eigenpairs / hessian_directions / hessian_trace / spectrum_of given a Problem had no ``params=``
    (only HessianOperator and hessian_spectrum did): the analyses of a parameter block needed the operator built
    by hand. Reference: the dense float64 Hessian of the selected tensors."""
    _, prob, params, names = _problems()[case]
    H = _dense_block(
        _DictNet(), _dict_data(), [{"2.weight": "fc2.weight", "2.bias": "fc2.bias"}.get(n, n) for n in names]
    )
    evals = torch.linalg.eigvalsh(H).flip(0)
    n = H.shape[0]

    op = HessianOperator(prob, params=params)
    assert op.param_names == names and op.n == n
    torch.testing.assert_close(op.dense(), H, rtol=1e-10, atol=1e-12)

    pairs = hessian_eigenpairs(prob, 3, params=params, tol=1e-10)
    torch.testing.assert_close(pairs.values, evals[:3], rtol=1e-8, atol=1e-10)
    assert pairs.vectors.shape == (n, 3)

    est = hessian_trace(prob, n, params=params)  # a budget of n products: the exact trace
    assert est.exact and est.estimate == pytest.approx(float(H.trace()), rel=1e-10)

    spec = spectrum_of(prob, params=params, n_probes=1, steps=n, top_k=2, trace_products=n)
    assert spec.n_params == n and spec.param_names == names
    assert spec.trace["hutchpp"] == pytest.approx(float(H.trace()), rel=1e-10)  # exact at n products
    np.testing.assert_allclose(spec.top_eigenvalues, evals[:2].numpy(), rtol=1e-8)

    D = hessian_directions(prob, 1, params=params, tol=1e-10)
    layout = ParamLayout.from_model(prob.model)
    outside = torch.ones(layout.numel, dtype=torch.bool)
    for s in layout.specs:
        if s.name in names:
            outside[s.start : s.stop] = False
    assert D.shape == (1, layout.numel) and bool((D[0, outside] == 0).all())
    v = D[0, ~outside].double()
    torch.testing.assert_close(v @ H @ v, evals[0], rtol=1e-8, atol=1e-10)  # the top eigenvector's Rayleigh quotient


def test_params_with_a_built_operator_must_be_its_own_selection():
    _, prob, params, _ = _problems()[1]
    op = HessianOperator(prob, params=params)
    assert hessian_trace(op, op.n, params=params).exact  # the operator's own selection: accepted
    with pytest.raises(ValueError, match="this operator covers"):
        hessian_trace(op, 4, params="all")


# ----------------------------------------------------------------------------- 2. the Trainer on any batch form
class _Out(dict):
    """A ``ModelOutput``-like mapping: the logits by key and by attribute."""

    def __getattr__(self, k):
        return self[k]


class _KwNet(nn.Module):
    """A float32 MLP called as ``model(x=..., mask=...)`` (a mapping batch's inputs), returning ``_Out``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> _Out:
        return _Out(logits=self.body(x * mask))


class _Samples(torch.utils.data.Dataset):
    """A map-style dataset of mapping samples ``{"x", "mask", "labels"}``."""

    def __init__(self, n: int = 22) -> None:
        g = torch.Generator().manual_seed(3)
        self.x, self.mask = torch.randn(n, 5, generator=g), (torch.rand(n, 5, generator=g) > 0.2).float()
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "mask": self.mask[i], "labels": self.y[i]}


def _sgd(p):
    return torch.optim.SGD(p, lr=0.3, momentum=0.9)


def _hand_loop(model, epochs, batches_of_epoch, loss_of):
    """The reference: seed 0, then ``zero_grad; loss_of(model, batch).backward(); step`` over each epoch's batches.

    Returns the trained model and each epoch's mean loss over samples (float64 sums of ``loss * size``).
    """
    torch.manual_seed(0)
    model = copy.deepcopy(model)
    opt = _sgd(model.parameters())
    means = []
    for e in range(epochs):
        total, n = 0.0, 0
        for b in batches_of_epoch(e):
            opt.zero_grad(set_to_none=True)
            loss, size = loss_of(model, b)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * size, n + size
        means.append(total / n)
    return model, means


def _ce_of_mapping(model, b):
    out = model(x=b["x"], mask=b["mask"])
    return nn.functional.cross_entropy(out.logits, b["labels"]), len(b["labels"])


def _assert_bitwise(a: nn.Module, b: nn.Module) -> None:
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_trainer_trains_on_a_shuffling_loader_of_mapping_batches_as_a_hand_written_loop():
    """Trainer refused mapping batches ('batch 0 must be a pair (X, y)') that every analyzer's Problem reads: the
    model is called with the batch without its target key and the loss takes the output rule's logits."""
    from landscape.train import Trainer

    net, ds = _KwNet(), _Samples()
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)  # reshuffled every epoch (global RNG)
    tr = Trainer(net, loader, "cross_entropy", _sgd, epochs=3).fit()
    ref, means = _hand_loop(net, 3, lambda e: loader, _ce_of_mapping)
    _assert_bitwise(tr.model, ref)
    assert [h["train_loss"] for h in tr.history_] == pytest.approx(means, rel=1e-12)
    assert tr.step == 3 * len(loader) and "train_accuracy" in tr.history_[0]


def test_trainer_of_a_problem_with_a_dataset_and_a_sum_count_closure_is_a_hand_written_loop():
    """Trainer(Problem(...)) refused a closure loss ('a closure loss is not supported'); a Dataset of mapping samples
    is batched in order as the problem reads it, and a (sum, count) closure's step follows sum / count."""
    from landscape.train import Trainer

    def closure(model, batch):  # a token-style mean: the count is the unmasked entries
        out = model(x=batch["x"], mask=batch["mask"]).logits
        per = nn.functional.cross_entropy(out, batch["labels"], reduction="none") * batch["mask"][:, 0]
        return per.sum(), float(batch["mask"][:, 0].sum())

    net, ds = _KwNet(), _Samples()
    tr = Trainer(Problem(net, ds, closure, batch_size=5), optimizer=_sgd, epochs=2).fit()
    batches = list(torch.utils.data.DataLoader(ds, batch_size=5))

    def loss_of(model, b):
        s, c = closure(model, b)
        return s / c, c

    ref, means = _hand_loop(net, 2, lambda e: batches, loss_of)
    _assert_bitwise(tr.model, ref)
    # the epoch's train_loss is the mean over the closure's unit (the counts), as the problem's loss is
    assert [h["train_loss"] for h in tr.history_] == pytest.approx(means, rel=1e-12)


def test_trainer_of_a_tensor_pair_problem_with_a_closure_shuffles_as_the_pair_loop_does():
    from landscape.train import Trainer

    g = torch.Generator().manual_seed(5)
    X, y = torch.randn(21, 5, generator=g), torch.randint(0, 3, (21,), generator=g)
    net = _KwNet().body

    def closure(model, batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    tr = Trainer(Problem(net, (X, y), closure), optimizer=_sgd, epochs=2, batch_size=4, shuffle_seed=7).fit()
    order = torch.Generator().manual_seed(7)

    def epoch(e):
        perm = torch.randperm(21, generator=order)
        return [(X[perm[s : s + 4]], y[perm[s : s + 4]]) for s in range(0, 21, 4)]

    ref, _ = _hand_loop(net, 2, epoch, lambda m, b: (closure(m, b), len(b[1])))
    _assert_bitwise(tr.model, ref)
    plain = Trainer(net, (X, y), "cross_entropy", _sgd, epochs=2, batch_size=4, shuffle_seed=7).fit()
    _assert_bitwise(tr.model, plain.model)  # the (outputs, targets) loop on the same pair: the same run


# ----------------------------------------------------------------------------- 3. evaluate_points' shorthand
class _TupleNet(nn.Module):
    """A float64 MLP returning ``(logits, hidden)``: the output rule takes the first element."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc1, self.fc2 = nn.Linear(4, 6).double(), nn.Linear(6, 3).double()

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h), h


@pytest.mark.parametrize("wrap", ["dict", "tuple"])
def test_evaluate_points_shorthand_reads_non_tensor_outputs_as_the_problem_does(wrap):
    """evaluate_points(model, points, data) refused a model returning a mapping or a tuple ('needs a tensor of
    outputs: pass landscape.Problem(...)'), which the Problem path reads by the output rule. Reference: a float64
    loop of cross-entropy and accuracy at every point through functional_call."""
    from landscape import evaluate_points

    net = _TupleNet()
    model = net if wrap == "tuple" else _OutputWrap(net)
    g = torch.Generator().manual_seed(4)
    X, y = torch.randn(13, 4, dtype=F64, generator=g), torch.randint(0, 3, (13,), generator=g)
    layout = ParamLayout.from_model(model)
    theta = parameters_to_vector(model)
    pts = theta + 0.3 * torch.randn(4, theta.numel(), dtype=F64, generator=g)
    got = evaluate_points(model, pts, (X, y), loss_fn="cross_entropy", metrics=["loss", "accuracy"])
    for p in range(4):
        out = functional_call(model, layout.unflatten(pts[p]), (X,))
        logits = out["logits"] if wrap == "dict" else out[0]
        assert got["loss"][p] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-12)
        assert got["accuracy"][p] == float((logits.argmax(1) == y).double().mean())
    same = evaluate_points(Problem(model, (X, y), "cross_entropy"), pts, metrics=["loss", "accuracy"])
    np.testing.assert_array_equal(got["loss"], same["loss"])


class _OutputWrap(nn.Module):
    """The tuple network's logits in a ``ModelOutput``-like mapping."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return _Out(logits=self.net(x)[0])


# ----------------------------------------------------------------------------- 5. trace budgets of 1 or 2 products
@pytest.mark.parametrize("products", [1, 2])
def test_trace_budgets_hutchpp_cannot_use_are_refused_before_any_product(products):
    """The CLI refused --trace-products 1 or 2 up front (session 14); the library did the SLQ density and the top
    eigenvalues first and then failed in Hutch++, and CurvatureRecorder failed at the first point of a run."""
    from landscape.curvature import CurvatureRecorder

    net, data = _DictNet(), _dict_data()
    op = HessianOperator(Problem(net, data, _closure))
    with pytest.raises(ValueError, match=f"trace_products={products}: Hutch\\+\\+ needs at least 3"):
        spectrum_of(op, n_probes=2, steps=5, top_k=1, trace_products=products)
    assert op.hvp_count == 0
    with pytest.raises(ValueError, match="0 \\(no trace\\) or at least 3"):
        CurvatureRecorder(every_steps=1, trace_products=products)


def test_a_budget_of_the_dimension_below_3_products_is_the_exact_trace():
    torch.manual_seed(1)
    net = nn.Linear(1, 1).double()  # 2 parameters
    X, y = torch.randn(7, 1, dtype=F64), torch.randn(7, 1, dtype=F64)
    prob = Problem(net, (X, y), "mse")
    spec = spectrum_of(prob, n_probes=1, steps=2, top_k=0, trace_products=2)
    H = prob.dense_hessian().double()
    assert spec.trace["hutchpp"] == pytest.approx(float(H.trace()), rel=1e-12)
    assert spec.trace["hutchinson"] == pytest.approx(float(H.trace()), rel=1e-12)


# ----------------------------------------------------------------------------- 6. float64 accumulation over batches
def _many_batches(n: int = 2000):
    """A float32 linear regression in ``n`` one-sample batches: targets near 1, so per-batch terms near 1 add up."""
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    g = torch.Generator().manual_seed(6)
    X = torch.randn(n, 2, generator=g)
    y = 1 + 1e-3 * torch.randn(n, 1, generator=g)
    return net, X, y, [(X[i : i + 1], y[i : i + 1]) for i in range(n)]


def test_problem_gradient_and_hvp_over_many_batches_are_accumulated_in_float64():
    """Problem.loss_and_grad and Problem.hvp summed the batches' float32 terms in float32: over 2,000 one-sample
    batches the Hessian products drifted by 9.5 float32 ulps of the largest entry, the gradient by 1.7 and the loss by
    2.0 (0.25 at most, summed in float64; 14 ulps for the products at 4,000 batches). Reference: the closed-form
    gradient and Hessian of the mean squared error of a linear model, in float64 from the same float32 weights and
    data."""
    net, X, y, batches = _many_batches()
    prob = Problem(net, batches, "mse")
    w, b = net.weight.detach().double(), net.bias.detach().double()
    Z = torch.cat([X.double(), torch.ones(len(X), 1, dtype=F64)], 1)  # (n, 3): inputs and the bias' 1
    r = Z @ torch.cat([w.reshape(-1), b]) - y.double()[:, 0]  # residuals, (n,)
    grad_ref = 2 * Z.T @ r / len(r)  # d/dtheta mean(r^2), theta = (w, b)
    H_ref = 2 * Z.T @ Z / len(r)
    loss, grad = prob.loss_and_grad()
    assert grad.dtype == torch.float32
    eps = torch.finfo(torch.float32).eps  # one ulp of the result's rounding: what float64 sums leave
    assert float((grad.double() - grad_ref).abs().max()) <= eps * float(grad_ref.abs().max())
    assert abs(float(loss) - float((r**2).mean())) <= eps * float((r**2).mean())
    hv = prob.hvp(torch.eye(3))
    assert hv.dtype == torch.float32
    assert float((hv.double() - H_ref).abs().max()) <= eps * float(H_ref.abs().max())


def test_engine_general_path_means_over_many_batches_are_float64():
    """evaluate_problem (the engine's general path) already summed in float64 (the claim of float32 sums there did
    not hold); kept as a guard next to the Problem's fix: the mean loss of 2,000 batches within float32 rounding."""
    from landscape.evaluate._general import evaluate_problem

    net, X, y, batches = _many_batches()

    def closure(model, batch):  # the general path
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    prob = Problem(net, batches, closure)
    got = evaluate_problem(prob, parameters_to_vector(net)[None], ("loss",))["loss"][0]
    ref = float(((X.double() @ net.weight.detach().double().T + net.bias.detach().double() - y.double()) ** 2).mean())
    assert abs(got - ref) <= torch.finfo(torch.float32).eps * ref


def test_curvature_recorder_on_a_trainer_of_mapping_batches_measures_their_problem():
    """A Trainer over mapping batches and a closure keeps their Problem (Trainer.problem), so CurvatureRecorder
    measures the Hessian of that loss. Reference: the dense float64 Hessian at the initial point."""
    from landscape.curvature import CurvatureRecorder
    from landscape.train import Trainer

    net, data = _DictNet(), _dict_data()
    rec = CurvatureRecorder(every_steps=2, k=1, tol=1e-10)
    tr = Trainer(net, data, _closure, lambda p: torch.optim.SGD(p, lr=0.1), steps=2, callbacks=[rec]).fit()
    assert tr.problem is not None and tr.problem.closure
    names = [n for n, _ in net.named_parameters()]
    top = float(torch.linalg.eigvalsh(_dense_block(_DictNet(), data, names))[-1])
    assert rec.trace_.steps.tolist() == [0, 2]
    assert rec.trace_.lambda_max[0] == pytest.approx(top, rel=1e-8)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)

    def forward(self, u, v):
        return torch.tanh(self.a(u) + self.b(v))


def test_trainer_on_a_tuple_of_tensors_cuts_and_shuffles_it_as_a_pair():
    """``(U, V, y)``: the model called as ``model(U_b, V_b)``, the rows cut and shuffled as a pair's are."""
    from landscape.train import Trainer

    g = torch.Generator().manual_seed(8)
    U, V, y = torch.randn(18, 3, generator=g), torch.randn(18, 2, generator=g), torch.randint(0, 4, (18,), generator=g)
    net = _TwoInputs()
    tr = Trainer(net, (U, V, y), "cross_entropy", _sgd, epochs=2, batch_size=5, shuffle_seed=3).fit()
    order = torch.Generator().manual_seed(3)

    def epoch(e):
        perm = torch.randperm(18, generator=order)
        return [(U[perm[s : s + 5]], V[perm[s : s + 5]], y[perm[s : s + 5]]) for s in range(0, 18, 5)]

    ref, means = _hand_loop(net, 2, epoch, lambda m, b: (nn.functional.cross_entropy(m(b[0], b[1]), b[2]), len(b[2])))
    _assert_bitwise(tr.model, ref)
    assert [h["train_loss"] for h in tr.history_] == pytest.approx(means, rel=1e-12)
