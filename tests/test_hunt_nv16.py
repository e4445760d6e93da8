"""Hunt nv16: bugs a new user met, each checked against a brute-force or closed-form answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import Problem, Trainer
from landscape.evaluate import evaluate_points


def _ignored_data(n: int = 40, n_ignored: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    y[torch.randperm(n, generator=g)[:n_ignored]] = -100  # labels nn.CrossEntropyLoss() skips
    return X, y


def _reference_accuracy(net: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        pred = net(X).argmax(1)
    keep = y != -100
    return float((pred[keep] == y[keep]).double().sum()) / int(keep.sum())


def test_accuracy_skips_ignore_index_in_the_engine():
    torch.manual_seed(0)
    X, y = _ignored_data()
    net = nn.Linear(3, 3).double()
    pts = torch.nn.utils.parameters_to_vector(net.parameters()).detach()[None]
    out = evaluate_points(net, pts, (X, y), loss_fn=nn.CrossEntropyLoss(), metrics=("loss", "accuracy"))
    assert out["accuracy"][0] == pytest.approx(_reference_accuracy(net, X, y), abs=1e-12)
    with torch.no_grad():
        ref = float(nn.CrossEntropyLoss()(net(X), y))
    assert out["loss"][0] == pytest.approx(ref, rel=1e-12)


class _DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lin(x)}


def test_accuracy_skips_ignore_index_on_the_general_path():
    # dict outputs take the Problem's general evaluation (one point at a time)
    torch.manual_seed(0)
    X, y = _ignored_data()
    net = _DictNet()
    prob = Problem(net, [(X[:25], y[:25]), (X[25:], y[25:])], nn.CrossEntropyLoss())
    pts = torch.nn.utils.parameters_to_vector(net.parameters()).detach()[None]
    out = evaluate_points(prob, pts, metrics=("accuracy",))
    assert out["accuracy"][0] == pytest.approx(_reference_accuracy(net.lin, X, y), abs=1e-12)


def test_training_accuracy_skips_ignore_index():
    # lr=0: the model stays where it is, so the epoch's training accuracy is the brute-force accuracy at the start
    torch.manual_seed(0)
    X, y = _ignored_data()
    net = nn.Linear(3, 3).double()
    ref = _reference_accuracy(net, X, y)
    tr = Trainer(net, (X, y), nn.CrossEntropyLoss(), lambda p: torch.optim.SGD(p, lr=0.0), batch_size=8, epochs=1)
    tr.fit()
    assert tr.history_[-1]["train_accuracy"] == pytest.approx(ref, abs=1e-12)


class _MappingSamples(torch.utils.data.Dataset):
    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input": self.X[i], "labels": self.y[i]}  # model(input=...)


@pytest.mark.parametrize("form", ["tensor_dataset", "mapping_dataset"])
def test_evaluate_points_shorthand_takes_a_dataset(form):
    # docs/arguments.md: every analyzer's data may be a Dataset; the brute force is the loss at each point
    g = torch.Generator().manual_seed(1)
    X = torch.randn(70, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (70,), generator=g)
    net = nn.Linear(3, 2).double()
    data = torch.utils.data.TensorDataset(X, y) if form == "tensor_dataset" else _MappingSamples(X, y)
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    pts = torch.stack([theta, theta + 0.3 * torch.randn(theta.shape, generator=g, dtype=torch.float64)])
    out = evaluate_points(net, pts, data)
    ref_loss, ref_acc = [], []
    for p in pts:
        torch.nn.utils.vector_to_parameters(p, net.parameters())
        with torch.no_grad():
            o = net(X)
        ref_loss.append(float(nn.functional.cross_entropy(o, y)))
        ref_acc.append(float((o.argmax(1) == y).double().mean()))
    np.testing.assert_allclose(out["loss"], ref_loss, rtol=1e-12)
    np.testing.assert_allclose(out["accuracy"], ref_acc, rtol=1e-12)


class _BNNet(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        out = self.b(torch.relu(self.bn(self.a(x))))
        return {"logits": out} if self.as_dict else out


def _bn_pair(as_dict: bool) -> tuple[nn.Module, nn.Module]:
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = _BNNet(as_dict).double()
        net.train()
        with torch.no_grad():  # running statistics away from (0, 1): interpolating them matters
            net(torch.randn(64, 3, dtype=torch.float64) * (2 + seed) + seed)
        nets.append(net.eval())
    return nets[0], nets[1]


def _interpolated_loss(a: nn.Module, b: nn.Module, t: float, X: torch.Tensor, y: torch.Tensor) -> float:
    # brute force: parameters and running statistics both (1 - t) a + t b, eval mode
    import copy

    net = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    net.load_state_dict({k: (1 - t) * v + t * sb[k] if v.is_floating_point() else v for k, v in sa.items()})
    with torch.no_grad():
        out = net(X)
    return float(nn.functional.cross_entropy(out["logits"] if isinstance(out, dict) else out, y))


def test_line_and_distance_interpolate_bn_statistics_with_dict_outputs():
    from landscape import functional_distance, line, loss_barrier

    g = torch.Generator().manual_seed(2)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    a, b = _bn_pair(as_dict=True)
    ta, tb = _bn_pair(as_dict=False)  # the same weights returning a tensor: the engine's fast path
    alphas = [0.0, 0.25, 0.5, 1.0]
    res = line(a, a, b, (X, y), alphas=alphas)
    ref = [_interpolated_loss(a, b, t, X, y) for t in alphas]
    np.testing.assert_allclose(res.metrics["loss"], ref, rtol=1e-10)
    fast = line(ta, ta, tb, (X, y), alphas=alphas)
    np.testing.assert_allclose(res.metrics["loss"], fast.metrics["loss"], rtol=1e-10)
    d, d_fast = functional_distance(a, a, b, (X, y)), functional_distance(ta, ta, tb, (X, y))
    assert d.rms == pytest.approx(d_fast.rms, rel=1e-10)
    assert d.disagreement == pytest.approx(d_fast.disagreement, abs=1e-12)
    bar = loss_barrier(a, b, (X, y), alphas=alphas, repair=False)
    assert bar.loss_barrier == pytest.approx(loss_barrier(ta, tb, (X, y), alphas=alphas).loss_barrier, abs=1e-10)


class _KwNet(nn.Module):
    """Two inputs, read from mapping batches as keyword arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lin(x) * scale}


class _OneNet(nn.Module):
    """The same function with the scale fixed at 1: (X, y) batches, the path fit_curve always took."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _curve_data() -> tuple[list[dict[str, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    one = torch.ones(10, 1, dtype=torch.float64)
    dicts = [{"x": X[i : i + 10], "scale": one, "labels": y[i : i + 10]} for i in range(0, 40, 10)]
    return dicts, [(X[i : i + 10], y[i : i + 10]) for i in range(0, 40, 10)]


def _endpoints(cls: type[nn.Module]) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(10)
    a = cls()
    torch.manual_seed(11)
    return a, cls()


def test_fit_curve_takes_mapping_batches():
    from landscape.analyze.curves import fit_curve

    dicts, pairs = _curve_data()
    kw = {"epochs": 2, "optimizer_kwargs": {"lr": 0.1}, "seed": 0}
    got = fit_curve(*_endpoints(_KwNet), dicts, **kw)
    ref = fit_curve(*_endpoints(_OneNet), pairs, **kw)  # same weights, same function, same t draws
    np.testing.assert_allclose(got.control, ref.control, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.history["train_loss"], ref.history["train_loss"], rtol=1e-12)


def test_fit_curve_takes_a_closure_loss():
    # a hand-written loop: one t ~ U(0, 1) per step from the seeded global generator, SGD on the bend
    from landscape.analyze.curves import fit_curve
    from landscape.params import functional_forward
    from landscape.train.loop import seed_everything

    def closure(model, batch):
        return nn.functional.cross_entropy(model(batch["x"], scale=batch["scale"])["logits"], batch["labels"])

    dicts, _ = _curve_data()
    a, b = _endpoints(_KwNet)
    got = fit_curve(a, b, dicts, loss_fn=closure, epochs=2, optimizer_kwargs={"lr": 0.1}, seed=0)
    w0 = torch.nn.utils.parameters_to_vector(a.parameters()).detach()
    w1 = torch.nn.utils.parameters_to_vector(b.parameters()).detach()
    bend = (0.5 * (w0 + w1)).requires_grad_(True)
    seed_everything(0)
    for _ in range(2):
        for batch in dicts:
            t = float(torch.rand(()))
            w = (1 - t) ** 2 * w0 + 2 * t * (1 - t) * bend + t**2 * w1  # quadratic Bezier
            out = functional_forward(a, w, batch["x"], scale=batch["scale"], train=True)["logits"]
            loss = nn.functional.cross_entropy(out, batch["labels"])
            (g,) = torch.autograd.grad(loss, bend)
            bend = (bend - 0.1 * g).detach().requires_grad_(True)
    np.testing.assert_allclose(got.control[1], bend.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert not np.allclose(got.control[1], (0.5 * (w0 + w1)).numpy())  # the bend moved


@pytest.mark.parametrize("bad", [np.eye(2, 5), [torch.ones(5), torch.arange(5.0)]])
def test_orthogonalize_refuses_non_tensors_by_name(bad):
    from landscape import orthogonalize

    with pytest.raises(TypeError, match=r"orthogonalize takes one \(K, D\) tensor.*torch\.(as_tensor|stack)"):
        orthogonalize(bad)
    # the fix the message names gives Gram-Schmidt's answer: rows orthogonal, the first unchanged
    fixed = torch.as_tensor(np.asarray(bad)) if isinstance(bad, np.ndarray) else torch.stack(bad)
    out = orthogonalize(fixed.double())
    assert float(out[0] @ out[1]) == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(out[0], fixed[0].double())


def test_directions_from_models_refuses_a_list_and_says_unpack():
    from landscape import directions_from_models

    torch.manual_seed(0)
    net, b, c = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"got list as argument 2.*directions_from_models\(m0, \*models\)"):
        directions_from_models(net, [b, c])
    with pytest.raises(TypeError, match=r"got ndarray as argument 1.*torch\.as_tensor"):
        directions_from_models(np.zeros(8), b)
    d = directions_from_models(net, *[b, c])  # the fix: theta_k - theta_0
    theta = [torch.nn.utils.parameters_to_vector(m.parameters()).detach() for m in (net, b, c)]
    assert torch.equal(d, torch.stack([theta[1] - theta[0], theta[2] - theta[0]]))


class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.nn.functional.relu(self.a(x)))


def test_activation_correlations_of_functional_relu_are_pre_activation_ones():
    # the documented sites: with F.relu the group's site is the producing layer, so the correlations are those of
    # the pre-activations (brute force: Pearson over the samples in float64), not of the ReLU outputs
    from landscape.analyze.align import activation_correlations

    torch.manual_seed(0)
    a, b = _FunctionalRelu(), _FunctionalRelu()
    X = torch.randn(50, 3)
    corr = activation_correlations(a, b, X)
    (key,) = corr
    with torch.no_grad():
        ha, hb = a.a(X).double(), b.a(X).double()
    za = (ha - ha.mean(0)) / ha.std(0, unbiased=False)
    zb = (hb - hb.mean(0)) / hb.std(0, unbiased=False)
    np.testing.assert_allclose(corr[key], (za.T @ zb / len(X)).numpy(), atol=1e-6)


def test_accuracy_alone_skips_ignore_index():
    # metrics=("accuracy",) checked the labels as the engine's own cross-entropy (no ignore_index) and refused -100
    torch.manual_seed(0)
    X, y = _ignored_data()
    net = nn.Linear(3, 3).double()
    pts = torch.nn.utils.parameters_to_vector(net.parameters()).detach()[None]
    out = evaluate_points(net, pts, (X, y), loss_fn=nn.CrossEntropyLoss(), metrics=("accuracy",))
    assert out["accuracy"][0] == pytest.approx(_reference_accuracy(net, X, y), abs=1e-12)
