"""Tests for landscape.models: the zoo builds, runs and round-trips at every input size; inits have the right law."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from landscape.models import (
    MLP,
    MODELS,
    InitScheme,
    LeNet5,
    RegressionMLP,
    ResNet18,
    build_model,
    init_weights,
)
from landscape.models.blocks import ELEMENTWISE_ACTIVATIONS
from landscape.params import ParamLayout, functional_forward, model_at, parameters_to_vector

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# Shrunken widths keep the suite fast; ResNet-18 is tested at full size separately.
SMALL = {
    "mlp": {"hidden": [16, 8]},
    "mlp7_tanh": {"width": 8},
    "lenet5": {},
    "alexnet": {"channels": (8, 8), "hidden": (16, 8)},
    "resnet18": {"width": 4},
    "small_resnet": {"width": 4},
    "sigmoid_convnet": {},
    "tunnels_cnn": {"width": 8},
    "vgg": {"cfg": (8, "M", 16, "M"), "hidden": 16},
    "nin": {"width": 8},
    "lipton_cnn": {"channels": (4, 8), "hidden": 16},
}


def _cases():
    for name in MODELS:
        if name == "regression_mlp":
            yield name, (1,), 1, {"m": 8}
            continue
        for shape in IMAGE_SHAPES:
            yield name, shape, 10, SMALL[name]
    yield "mlp", (5,), 3, {"hidden": [7]}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


def test_every_model_has_a_test_configuration():
    assert set(MODELS) - {"regression_mlp"} == set(SMALL)


@pytest.mark.parametrize("name,shape,classes,kw", list(_cases()))
def test_round_trip_and_forward(name, shape, classes, kw):
    model = build_model(name, shape, classes, seed=0, dtype=torch.float64, **kw)
    saved = _state(model)
    layout = ParamLayout.from_model(model)
    vec = parameters_to_vector(model)
    assert vec.shape == (layout.numel,) == (sum(p.numel() for p in model.parameters()),)

    # vector -> dict -> model copy gives back the very same tensors.
    copy = model_at(model, layout.unflatten(vec))
    assert torch.equal(parameters_to_vector(copy), vec)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), copy.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)

    # A moved point: functional evaluation equals loading it into a copy (float64), model untouched.
    gen = torch.Generator().manual_seed(1)
    moved = vec + 0.01 * torch.randn(vec.shape, generator=gen, dtype=vec.dtype)
    x = torch.randn(2, *shape, generator=gen, dtype=torch.float64)
    out = functional_forward(model, moved, x)
    moved_model = model_at(model, moved)
    assert torch.equal(parameters_to_vector(moved_model), moved)
    moved_model.eval()
    ref = moved_model(x)
    assert out.shape == (2, classes)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert _same_state(model, saved) and model.training


@pytest.mark.parametrize("name,shape,classes,kw", list(_cases()))
def test_layout_orders_weight_then_bias(name, shape, classes, kw):
    model = build_model(name, shape, classes, seed=0, **kw)
    layout = ParamLayout.from_model(model)
    for layer, specs in layout.layers.items():
        leaves = [s.name.rsplit(".", 1)[-1] for s in specs]
        if {"weight", "bias"} <= set(leaves):
            assert leaves.index("weight") < leaves.index("bias"), layer
    # Layers appear in forward order: conv/linear numbering never goes backwards within flat bodies.
    if isinstance(model, nn.Sequential):
        names = [n for n, m in model.named_children() if isinstance(m, nn.Linear | nn.Conv2d)]
        assert [s.layer for s in layout.specs if s.layer in names] == sorted(
            [s.layer for s in layout.specs if s.layer in names], key=names.index
        )


def test_resnet18_full_size_on_cifar():
    model = ResNet18((3, 32, 32), 10)
    # Closed form: the standard CIFAR ResNet-18 has 11,173,962 parameters.
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    saved = _state(model)
    vec = parameters_to_vector(model)
    assert torch.equal(parameters_to_vector(model_at(model, ParamLayout.from_model(model).unflatten(vec))), vec)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert _same_state(model, saved)


def test_parameter_counts_match_closed_forms():
    # Classic CIFAR LeNet-5: conv(3->6,5), conv(6->16,5), 400-120-84-10.
    expected = (3 * 25 + 1) * 6 + (6 * 25 + 1) * 16 + (400 + 1) * 120 + (120 + 1) * 84 + (84 + 1) * 10
    assert sum(p.numel() for p in LeNet5((3, 32, 32), 10).parameters()) == expected == 62_006
    # Lipton reading on MNIST: conv(1->32,5) conv(32->64,5) 'same', two 2x2 pools: 7*7*64 -> 256 -> 10.
    lip = build_model("lipton_cnn", (1, 28, 28), 10)
    assert sum(p.numel() for p in lip.parameters()) == 26 * 32 + (32 * 25 + 1) * 64 + 3137 * 256 + 257 * 10
    # Persistent Neurons eq. (3): theta_1 in R^m, theta_2 in R^{m x m}, theta_3 in R^m, three biases.
    reg = RegressionMLP(m=32)
    assert [tuple(p.shape) for p in reg.parameters()] == [(32, 1), (32,), (32, 32), (32,), (1, 32), (1,)]


def test_sequences_the_tunnels_code_looks_for():
    def kinds(model: nn.Sequential) -> list[str]:
        return [type(m).__name__ for m in model.children()]

    sig = build_model("sigmoid_convnet", (1, 8, 8), 10)
    assert kinds(sig) == ["Conv2d", "Sigmoid", "Flatten", "Linear"]
    tun = build_model("tunnels_cnn", (1, 28, 28), 10, width=8)
    k = kinds(tun)
    i4 = list(dict(tun.named_children())).index("conv4")
    assert k[i4 : i4 + 3] == ["Conv2d", "ReLU", "Conv2d"]
    assert k[i4 + 2 :] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    assert k.count("BatchNorm2d") == 3 and k.count("Conv2d") == 5
    mlp = MLP(4, [5, 6], 2, "tanh")
    assert kinds(mlp) == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    mlp7 = build_model("mlp7_tanh", (1, 8, 8), 10, width=8)
    assert sum(isinstance(m, nn.Linear) for m in mlp7.modules()) == 7


def test_batchnorm_buffers_untouched_by_construction():
    model = build_model("tunnels_cnn", (1, 8, 8), 10, width=4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
            assert int(m.num_batches_tracked) == 0


@pytest.mark.parametrize("init", ["default", "he", "xavier", "normal"])
def test_seeded_construction_is_bitwise_deterministic(init):
    kw = {"init": init, "init_std": 0.1} if init == "normal" else {"init": init}
    rng_before = torch.get_rng_state()
    a = build_model("vgg", (1, 8, 8), 10, seed=5, cfg=(4, "M", 8), hidden=8, **kw)
    b = build_model("vgg", (1, 8, 8), 10, seed=5, cfg=(4, "M", 8), hidden=8, **kw)
    c = build_model("vgg", (1, 8, 8), 10, seed=6, cfg=(4, "M", 8), hidden=8, **kw)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global generator is left alone
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))
    assert _same_state(a, _state(b))
    assert not torch.equal(parameters_to_vector(a), parameters_to_vector(c))


def _big_layers() -> nn.Sequential:
    return nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Conv2d(16, 200, 5), nn.BatchNorm2d(200))


def test_he_init_std_and_zero_bias():
    model = init_weights(_big_layers(), "he", seed=0)
    lin, conv = model[0], model[2]
    for layer, fan_in in ((lin, 400), (conv, 16 * 25)):
        std = layer.weight.std().item()
        assert abs(std / math.sqrt(2 / fan_in) - 1) < 0.02
        assert abs(layer.weight.mean().item()) < 0.02 * math.sqrt(2 / fan_in) * 3
        assert torch.count_nonzero(layer.bias) == 0
    bn = model[3]
    assert torch.equal(bn.weight, torch.ones(200)) and torch.equal(bn.bias, torch.zeros(200))


@pytest.mark.parametrize("scheme", ["xavier", "glorot", "xavier_normal"])
def test_xavier_init_std(scheme):
    model = init_weights(_big_layers(), scheme, seed=0)
    lin, conv = model[0], model[2]
    for layer, fan_in, fan_out in ((lin, 400, 300), (conv, 16 * 25, 200 * 25)):
        target = math.sqrt(2 / (fan_in + fan_out))
        assert abs(layer.weight.std().item() / target - 1) < 0.02
        if scheme != "xavier_normal":  # Glorot's uniform law has a hard bound sqrt(3) * std
            assert layer.weight.abs().max().item() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-7
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("mean,std", [(0.0, 0.2), (0.0, 0.05), (-1.0, 1.0), (-10.0, 0.01)])
def test_normal_init_mean_and_std(mean, std):
    model = init_weights(_big_layers(), "normal", seed=0, mean=mean, std=std)
    w = torch.cat([model[0].weight.flatten(), model[2].weight.flatten()])
    assert abs(w.mean().item() - mean) < 5 * std / math.sqrt(w.numel())
    assert abs(w.std().item() / std - 1) < 0.02
    b = torch.cat([model[0].bias, model[2].bias])  # biases are drawn too
    assert abs(b.mean().item() - mean) < 5 * std / math.sqrt(b.numel())
    assert torch.equal(model[3].weight, torch.ones(200))  # normalization layers keep identity
    drawn = init_weights(_big_layers(), "normal", seed=0, mean=mean, std=std, include_norm=True)
    assert abs(drawn[3].weight.mean().item() - mean) < 5 * std / math.sqrt(200)


def test_default_init_is_pytorch_reset():
    model = init_weights(_big_layers(), "default", seed=0)
    lin = model[0]
    bound = 1 / math.sqrt(400)  # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert lin.weight.abs().max().item() <= bound
    assert abs(lin.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.02
    ref = nn.Linear(400, 300)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref.reset_parameters()
    assert torch.equal(lin.weight, ref.weight)


def test_build_model_with_init_matches_init_weights():
    a = build_model("lenet5", (1, 28, 28), 10, init="he", seed=3)
    b = build_model("lenet5", (1, 28, 28), 10, seed=3)
    assert not torch.equal(parameters_to_vector(a), parameters_to_vector(b))
    for m in a.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            assert torch.count_nonzero(m.bias) == 0
    assert InitScheme("kaiming") is InitScheme.KAIMING


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match="valid names are.*lenet5"):
        build_model("lenet6", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="valid values are.*'he'"):
        build_model("lenet5", (1, 28, 28), 10, init="orthogonal")
    with pytest.raises(ValueError, match="std"):
        build_model("lenet5", (1, 28, 28), 10, init="normal")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model("lenet5", (784,), 10)
    with pytest.raises(ValueError, match="too small"):
        build_model("sigmoid_convnet", (1, 2, 2), 10, kernel_size=3)
    with pytest.raises(ValueError, match="activation"):
        MLP(4, [3], 2, "gelu")
    with pytest.raises(ValueError, match="depth"):
        RegressionMLP(depth=1)
    assert build_model("LeNet-5".replace("-", ""), (1, 8, 8), 10) is not None


@pytest.mark.parametrize("act", ELEMENTWISE_ACTIVATIONS, ids=lambda t: t.__name__)
def test_elementwise_activations_map_each_element_on_its_own(act):
    """What tunnels and permutation tracing rely on: no parameters, and ``f(x)[i]`` depends on ``x[i]`` alone.

    Up to rounding: torch's vectorized and scalar kernels may differ in the last bit.
    """
    m = act()
    assert not list(m.parameters())
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    perm = torch.randperm(6, generator=g)
    tight = {"rtol": 1e-14, "atol": 1e-14}
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(m(x[:, perm]), y[:, perm], **tight)  # commutes with a permutation of channels
        torch.testing.assert_close(m(x[:, [1, 1]]), y[:, [1, 1]], **tight)  # and with a copy of one (a clone)
        one = torch.stack([m(v.reshape(1)) for v in x.reshape(-1)]).reshape(x.shape)
        torch.testing.assert_close(one, y, **tight)  # element by element
