import copy

import pytest
import torch
from torch import nn

from landscape.params import ParamLayout, parameters_to_vector
from persistence.penalty import PersistentPenalty
from persistence.trainer import PersistentTrainer, select_champion


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1)).double()


def _naive_penalty(layout, anchors, theta, lam, layers=None, factor=1.0):
    """Explicit loops over solutions and layers, with weight and bias concatenated per layer."""
    total = torch.zeros((), dtype=theta.dtype)
    for a in anchors:
        for name, specs in layout.layers.items():
            if layers is not None and name not in layers:
                continue
            ak = torch.cat([a[s.start : s.stop] for s in specs])
            tk = torch.cat([theta[s.start : s.stop] for s in specs])
            total = total + torch.abs(ak @ tk) / (ak @ ak)
    return lam * factor * total


def test_penalty_equals_naive_reference_and_eq6_gradient():
    net = _mlp()
    lay = ParamLayout.from_model(net)
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(7, lay.numel, generator=g, dtype=torch.float64)
    theta = torch.randn(lay.numel, generator=g, dtype=torch.float64)
    for layers, factor in ((None, None), (["2"], None), (None, 3.5), (["0", "4"], 0.25)):
        pen = PersistentPenalty(lay, anchors, 0.01, layers=layers, depth_factor=factor)
        ref = _naive_penalty(lay, anchors, theta, 0.01, layers, 1.0 if factor is None else factor)
        th = theta.clone().requires_grad_(True)
        val = pen.from_vector(th)
        assert torch.allclose(val, ref, rtol=1e-13, atol=0)
        (grad,) = torch.autograd.grad(val, th)
        # 000 eq. (6): lambda * sum_k sign(<Theta_k^l, theta^l>) Theta_k^l / ||Theta_k^l||^2
        expected = torch.zeros_like(theta)
        for a in anchors:
            for name, specs in lay.layers.items():
                if layers is not None and name not in layers:
                    continue
                idx = torch.cat([torch.arange(s.start, s.stop) for s in specs])
                ak, tk = a[idx], theta[idx]
                expected[idx] += torch.sign(ak @ tk) * ak / (ak @ ak)
        expected *= 0.01 * (1.0 if factor is None else factor)
        assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-15)


def test_partial_penalty_touches_only_the_chosen_layer():
    net = _mlp()
    lay = ParamLayout.from_model(net)
    pen = PersistentPenalty(lay, [parameters_to_vector(net) + 1.0], 0.1, layers=["2"])
    th = parameters_to_vector(net).requires_grad_(True)
    (grad,) = torch.autograd.grad(pen.from_vector(th), th)
    inside = lay.layer_index("2")
    mask = torch.zeros(lay.numel, dtype=torch.bool)
    mask[inside] = True
    assert grad[~mask].abs().max() == 0 and grad[mask].abs().max() > 0


def test_penalty_errors():
    lay = ParamLayout.from_model(_mlp())
    # a str is one layer name, not its characters: "24" is no layer (it penalized layers "2" and "4")
    with pytest.raises(ValueError, match="unknown layer '24'"):
        PersistentPenalty(lay, [torch.ones(lay.numel)], 0.1, layers="24")
    one = PersistentPenalty(lay, [torch.ones(lay.numel)], 0.1, layers="2")
    assert one.layers == ("2",)
    with pytest.raises(ValueError, match="shape"):
        PersistentPenalty(lay, torch.zeros(2, 5), 0.1)
    with pytest.raises(ValueError, match="unknown layer 'fc'"):
        PersistentPenalty(lay, torch.ones(1, lay.numel), 0.1, layers=["fc"])
    with pytest.raises(ValueError, match="all-zero"):
        PersistentPenalty(lay, torch.zeros(1, lay.numel), 0.1)


def test_select_champion():
    ms = [
        {"val_loss": 0.5, "val_accuracy": 0.7},
        {"val_loss": 0.3, "val_accuracy": 0.6},
        {"val_loss": float("nan"), "val_accuracy": 0.9},
    ]
    assert select_champion(ms, "val_loss") == 1
    assert select_champion(ms, "val_accuracy") == 2
    with pytest.raises(KeyError, match="test_loss"):
        select_champion(ms, "test_loss")


def _problem():
    x = torch.linspace(-2, 2, 24, dtype=torch.float64)[:, None]
    y = torch.where(x > 0, 2 * x, -0.5 * x) + 0.3 * torch.sin(3 * x)
    return (x, y), (x[::2] + 0.05, y[::2])


def _pt(out_dir=None, iterations=4, **kw):
    train, val = _problem()
    return PersistentTrainer(
        _mlp(),
        train,
        nn.functional.mse_loss,
        lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9),
        iterations=iterations,
        lam=0.01,
        eval_data={"val": val},
        steps=40,
        out_dir=out_dir,
        **kw,
    )


def test_iterations_start_from_the_same_weights_and_champion_is_best():
    net = _mlp()
    before = copy.deepcopy(net.state_dict())
    pt = _pt(mode="partial").fit()
    starts = [r.trajectory[0].vector for r in pt.results_]
    assert all(torch.equal(s, parameters_to_vector(net)) for s in starts)
    assert {k: torch.equal(v, before[k]) for k, v in net.state_dict().items()} == dict.fromkeys(before, True)
    finals = torch.stack([r.final for r in pt.results_])
    assert len({tuple(f.tolist()) for f in finals}) == 4  # the penalty moved every later iteration
    vals = [r.metrics["val_loss"] for r in pt.results_]
    assert pt.champion_ == min(range(4), key=vals.__getitem__)
    champ = pt.champion_model()
    assert torch.equal(parameters_to_vector(champ), pt.results_[pt.champion_].final)
    layers = [r.layer for r in pt.results_]
    assert layers[0] is None and all(layer in pt.layout.layers for layer in layers[1:])
    assert [r.trajectory[1].tags["persistent_iteration"] for r in pt.results_] == [0, 1, 2, 3]


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    full = _pt(tmp_path / "a", depth_factor=True).fit()
    # interrupted run: only 2 iterations finished, the third left half-written
    part = _pt(tmp_path / "b", depth_factor=True, iterations=2).fit()
    assert len(part.results_) == 2
    (tmp_path / "b" / "iteration_002").mkdir()
    resumed = _pt(tmp_path / "b", depth_factor=True).fit()
    for a, b in zip(full.results_, resumed.results_):
        assert torch.equal(a.final, b.final)
        assert a.metrics == pytest.approx(b.metrics)
    assert full.depth_factor_ == resumed.depth_factor_ and full.depth_factor_ > 0
    with pytest.raises(ValueError, match="other settings"):
        _pt(tmp_path / "b", depth_factor=False).fit()
