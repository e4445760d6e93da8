"""Permutation specs: derived permutations leave the function unchanged, compose and invert exactly."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from landscape.analyze import (
    PermutationSpec,
    PermutationSpecError,
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    permutation_spec,
    random_permutation,
)
from landscape.models import build_model
from landscape.models.blocks import ELEMENTWISE_ACTIVATIONS
from landscape.params import ParamLayout, parameters_to_vector


class _ResidualMLP(nn.Module):
    """A residual stream through Linear layers, with a LayerNorm and a functional relu."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.f1 = nn.Linear(8, 6)
        self.f2 = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.f2(torch.relu(self.f1(h)))
        return self.out(self.norm(h))


class _ConvFunctional(nn.Module):
    """Convolutions with functional pooling and ``x.view(B, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(nn.functional.relu(self.bn(self.c1(x))), 2)
        h = torch.tanh(self.c2(h))
        return self.fc(h.view(h.size(0), -1))


class _LSTMNet(nn.Module):
    """Linear -> tanh -> LSTM (1 or 2 layers) -> Linear on the last step or on the last layer's h_n."""

    def __init__(self, layers: int, use_h: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 5)
        self.rnn = nn.LSTM(5, 6, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(6, 2)
        self.use_h = use_h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, _) = self.rnn(torch.tanh(self.inp(x)))
        return self.fc(h[-1] if self.use_h else out[:, -1])


def _conv_flatten_norms() -> nn.Module:
    """Flattened convolution features normalized by BatchNorm1d and LayerNorm: each channel a block of H * W."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.BatchNorm1d(3 * 4 * 4),
        nn.LayerNorm(3 * 4 * 4),
        nn.Linear(3 * 4 * 4, 2),
    ).double()


def _every_elementwise() -> nn.Module:
    """Linear layers joined by each elementwise activation in turn: every one must pass the group on."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for act in ELEMENTWISE_ACTIVATIONS:
        layers += [nn.Linear(4, 4), act()]
    return nn.Sequential(*layers, nn.Linear(4, 2)).double()


def _mlp() -> nn.Module:
    return build_model("mlp", (1, 8, 8), 10, hidden=[7, 5], seed=0, dtype=torch.float64)


# (name, builder, input shape): the registry every acceptance check runs over.
CASES = [
    ("mlp", _mlp, (1, 8, 8)),
    (
        "mlp_tanh",
        lambda: build_model("mlp", (6,), 4, hidden=[5, 5, 5], activation="tanh", seed=1, dtype=torch.float64),
        (6,),
    ),
    ("lenet5", lambda: build_model("lenet5", (1, 8, 8), 10, seed=0, dtype=torch.float64), (1, 8, 8)),
    (
        "vgg_bn",
        lambda: build_model(
            "vgg", (1, 8, 8), 10, cfg=(4, "M", 6, 6), hidden=8, dropout=0.0, seed=0, dtype=torch.float64
        ),
        (1, 8, 8),
    ),
    (
        "small_resnet",
        lambda: build_model("small_resnet", (1, 8, 8), 10, width=4, seed=0, dtype=torch.float64),
        (1, 8, 8),
    ),
    (
        "resnet_2blocks",
        lambda: build_model("small_resnet", (3, 8, 8), 5, width=4, blocks=(2, 2), seed=0, dtype=torch.float64),
        (3, 8, 8),
    ),
    ("residual_mlp", lambda: _ResidualMLP().double(), (5,)),
    ("every_elementwise", _every_elementwise, (4,)),
    ("conv_functional", lambda: _ConvFunctional().double(), (1, 8, 8)),
    ("conv_flatten_norms", _conv_flatten_norms, (2, 6, 6)),
    ("lstm_last_step", lambda: _LSTMNet(1, False).double(), (7, 3)),
    ("lstm2_h_n", lambda: _LSTMNet(2, True).double(), (7, 3)),
]


def _randomize_buffers(m: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g, dtype=torch.float64) - 0.5)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g, dtype=torch.float64) + 0.5)
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=g, dtype=torch.float64) - 0.5)


def _bits(sd: dict[str, torch.Tensor]) -> dict[str, bytes]:
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in sd.items()}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("name", "build", "shape"), CASES, ids=[c[0] for c in CASES])
def test_permutation_preserves_outputs_and_inverse_restores(name, build, shape, train):
    model = build()
    _randomize_buffers(model, 3)
    spec = permutation_spec(model)
    assert spec.groups, "no hidden units found"
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = _bits(model.state_dict())
    for seed in range(3):
        perm = random_permutation(spec, seed=seed)
        new = apply_permutation(spec, perm, model)
        assert _bits(model.state_dict()) == before, "the input model was written"
        changed = any(not torch.equal(p, q) for p, q in zip(model.parameters(), new.parameters()))
        assert changed or all(bool((p == torch.arange(len(p))).all()) for p in perm.values())
        ref, per = copy.deepcopy(model).train(train), copy.deepcopy(new).train(train)
        with torch.no_grad():
            assert float((ref(x) - per(x)).abs().max()) <= 1e-12
            if train:  # train-mode BatchNorm updates its running statistics: permuted alike
                back = apply_permutation(spec, invert_permutation(perm), per)
                for k, v in ref.state_dict().items():
                    assert torch.allclose(back.state_dict()[k].double(), v.double(), atol=1e-12, rtol=0), k
        back = apply_permutation(spec, invert_permutation(perm), new)
        assert _bits(back.state_dict()) == before, "the inverse did not restore the model bitwise"


def test_specs_of_the_zoo():
    resnet = build_model("small_resnet", (1, 8, 8), 10, width=4, seed=0)
    spec = permutation_spec(resnet)
    # stage 0: the stem's stream runs through the identity shortcut; stages 1-2 each start a new stream at
    # their projection shortcut, shared with conv2 of the block
    assert spec.sizes == {
        "P_conv1": 4,
        "P_layers.0.0.conv1": 4,
        "P_layers.1.0.conv1": 8,
        "P_layers.1.0.conv2": 8,
        "P_layers.2.0.conv1": 16,
        "P_layers.2.0.conv2": 16,
    }
    stream = {a.tensor for a in spec.axes_of("P_conv1") if a.axis == 0}
    assert {"conv1.weight", "bn1.running_mean", "layers.0.0.conv2.weight", "layers.0.0.bn2.running_var"} <= stream
    shortcut = {a.tensor for a in spec.axes_of("P_layers.1.0.conv2")}
    assert "layers.1.0.shortcut.conv.weight" in shortcut and "layers.1.0.shortcut.bn.bias" in shortcut
    assert "fc.weight" in {a.tensor for a in spec.axes_of("P_layers.2.0.conv2")}
    # the classifier's outputs are fixed; num_batches_tracked never moves
    assert not any(a.tensor.startswith("fc.") and a.axis == 0 for a in spec.axes)
    assert not any("num_batches_tracked" in a.tensor for a in spec.axes)
    lenet = permutation_spec(build_model("lenet5", (1, 8, 8), 10, seed=0))
    (flat,) = [a for a in lenet.axes if a.tensor == "fc1.weight" and a.axis == 1]
    assert (flat.group, flat.block) == ("P_conv2", 4)  # 16 channels of 2x2 flattened into fc1


def test_lstm_gates_share_one_permutation():
    spec = permutation_spec(_LSTMNet(2, True))
    assert spec.sizes == {"P_inp": 5, "P_rnn.l0": 6, "P_rnn.l1": 6}
    ih = {(a.axis, a.group, a.repeat) for a in spec.tensor_axes("rnn.weight_ih_l1")}
    assert ih == {(0, "P_rnn.l1", 4), (1, "P_rnn.l0", 1)}
    hh = {(a.axis, a.group, a.repeat) for a in spec.tensor_axes("rnn.weight_hh_l0")}
    assert hh == {(0, "P_rnn.l0", 4), (1, "P_rnn.l0", 1)}


def test_spec_round_trips_through_json():
    import json

    spec = permutation_spec(build_model("small_resnet", (1, 8, 8), 10, width=4, seed=0))
    again = PermutationSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_compose_and_invert():
    model = _mlp()
    spec = permutation_spec(model)
    p, q = random_permutation(spec, seed=1), random_permutation(spec, seed=2)
    two = apply_permutation(spec, q, apply_permutation(spec, p, model))
    one = apply_permutation(spec, compose_permutations(p, q), model)
    assert _bits(two.state_dict()) == _bits(one.state_dict())
    ident = compose_permutations(p, invert_permutation(p))
    assert all(torch.equal(v, identity_permutation(spec)[g]) for g, v in ident.items())


def test_vectors_and_dicts():
    model = _mlp()
    spec = permutation_spec(model)
    perm = random_permutation(spec, seed=4)
    vec = parameters_to_vector(model)
    pv = apply_permutation(spec, perm, vec, layout=model)
    assert torch.equal(pv, parameters_to_vector(apply_permutation(spec, perm, model)))
    assert torch.equal(apply_permutation(spec, invert_permutation(perm), pv, layout=ParamLayout.from_model(model)), vec)
    with pytest.raises(ValueError, match="layout"):
        apply_permutation(spec, perm, vec)
    with pytest.raises(ValueError, match="not a permutation"):
        apply_permutation(spec, {g: torch.zeros(n, dtype=torch.long) for g, n in spec.sizes.items()}, model)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (build_model("alexnet", (3, 32, 32), 10, seed=0), "lrn1"),
        (nn.Sequential(OrderedDict(fc=nn.Linear(3, 4), rnn=nn.LSTM(4, 5, bidirectional=True))), "LSTM 'rnn'"),
        (nn.Sequential(OrderedDict(c=nn.Conv2d(2, 4, 3), g=nn.Conv2d(4, 4, 3, groups=2))), "grouped convolution 'g'"),
    ],
    ids=["lrn", "bidirectional-lstm", "grouped-conv"],
)
def test_unsupported_modules_are_named(model, match):
    with pytest.raises(PermutationSpecError, match=match):
        permutation_spec(model)


def test_concatenation_is_named():
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(torch.cat([h, h], 1))

    with pytest.raises(PermutationSpecError, match="cat"):
        permutation_spec(Cat())


def test_untraceable_model_is_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(PermutationSpecError, match="trace"):
        permutation_spec(Branchy())


class _Reused(nn.Module):
    """One Linear applied twice: first to the input (whose axis is fixed), then to its own output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


class _SharedModule(nn.Module):
    """A module registered under two names (``fc2 is fc``), called on two hidden layers."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.fc2 = self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.tanh(self.fc(torch.tanh(self.inp(x)))))))


class _TiedWeights(nn.Module):
    """Two Linear layers sharing one weight Parameter (own biases), and a head tied to nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.fc1, self.fc2, self.out = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.fc2.weight = self.fc1.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(torch.tanh(self.inp(x))))
        return self.out(torch.tanh(self.fc2(h)))


@pytest.mark.parametrize("build", [_Reused, _SharedModule, _TiedWeights])
def test_shared_tensors_carry_one_permutation(build):
    """A tensor used twice (a module called twice, a shared module, a tied Parameter) moves the same way in every
    use, so a random permutation keeps the function (the invariant); the tied model keeps the tie. The spec was
    derived per use and changed the outputs by ~0.1."""
    torch.manual_seed(0)
    model = build().double()
    x = torch.randn(7, model.inp.in_features if hasattr(model, "inp") else 4, dtype=torch.float64)
    spec = permutation_spec(model)
    for seed in range(3):
        perm = random_permutation(spec, seed=seed)
        new = apply_permutation(spec, perm, model)
        with torch.no_grad():
            torch.testing.assert_close(new(x), model(x), rtol=0, atol=1e-12)
        # the flat vector (each shared tensor once) permutes as the model does
        vec = apply_permutation(spec, perm, parameters_to_vector(model), layout=model)
        assert torch.equal(vec, parameters_to_vector(new))
    if build is _TiedWeights:
        assert new.fc1.weight is new.fc2.weight
        assert spec.sizes == {"P_inp": 5}  # inp's, fc1's and fc2's units: one group through the tied weight
    if build is _Reused:
        assert spec.sizes == {}  # fc's input is the fixed input axis: its units cannot move


# --------------------------------------------------------------------------- reduction and flatten axes
class _Reduce(nn.Module):
    """Convolutions (a residual add, so the rank is carried through it) reduced over axes named either way."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 if how == "pool" else 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        h = h + torch.tanh(self.c2(h))
        if self.how == "pool":  # global average pooling by negative dims: within each channel
            return self.fc(h.mean(dim=(-2, -1)))
        if self.how == "mean":  # a map over the channels (CBAM's spatial attention) by a negative dim
            return self.fc(torch.flatten(h.mean(dim=-3), 1))
        return self.fc(h.amax(dim=-3).flatten(1))


class _LSTMFeatureMean(nn.Module):
    """The LSTM output (B, T, H) averaged over its features, the last axis given as 2."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out.mean(2))


class _PartialFlatten(nn.Module):
    """Flattening that keeps an axis apart from the channels: a Linear after it mixes positions, not channels."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.flat = nn.Flatten(1, 2)
        self.fc = nn.Linear(16 if how == "view" else 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c(x))
        if self.how == "view":
            h = h.view(h.size(0), h.size(1), -1)  # (B, C, H * W)
        else:
            h = torch.flatten(h, 1, 2) if self.how == "function" else self.flat(h)  # (B, C * H, W)
        return self.fc(h).mean(dim=1)


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda: _Reduce("pool"), (5, 2, 4, 4)),
        (lambda: _Reduce("mean"), (5, 2, 4, 4)),
        (lambda: _Reduce("amax"), (5, 2, 4, 4)),
        (_LSTMFeatureMean, (5, 4, 3)),
    ],
    ids=["pool-negative-dims", "mean-over-channels", "amax-over-channels", "lstm-feature-mean"],
)
def test_reductions_named_from_either_end_keep_the_function(make, x):
    """A dim counted from the end names the channel axis too: ``mean(dim=-3)`` of a conv output is over the
    channels (a value no permutation changes), not within them. The tracer compared only ``dim == 1`` and kept
    the group on the reduced value, so the next Linear's inputs were permuted: the function changed by ~0.1."""
    torch.manual_seed(0)
    net = make().double()
    spec = permutation_spec(net)
    assert spec.sizes, "the permutable units must stay permutable"
    inp = torch.randn(*x, dtype=torch.float64)
    for seed in range(3):
        new = apply_permutation(spec, random_permutation(spec, seed=seed), net)
        with torch.no_grad():
            torch.testing.assert_close(new(inp), net(inp), rtol=0, atol=1e-12)


@pytest.mark.parametrize("how", ["view", "function", "module"])
def test_a_flatten_that_keeps_an_axis_apart_is_refused(how):
    """``x.view(B, C, -1)`` and ``flatten(x, 1, 2)`` were read as a full flatten: the Linear after them got a
    blocked permutation of its inputs, which are positions (or widths), and the permuted network computed
    another function. Refused by name now."""
    net = _PartialFlatten(how).double()
    with pytest.raises(PermutationSpecError, match="view|flatten|Flatten"):
        permutation_spec(net)


class _InputResidual(nn.Module):
    """A stream added to the input (``x + a(x)``), then a hidden layer that stays permutable."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 4)
        self.o = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ha = self.a(x)
        h = x + ha  # unpermuted: the input does not move, so neither does a's output
        return self.o(torch.relu(self.b(h))) + self.o(torch.relu(self.b(ha)))  # ha read again after the add


def test_a_stream_added_to_the_input_stays_fixed_and_the_rest_permutes():
    """The module docstring's rule: a stream added to an unpermuted value stays fixed. Its value carried the fixed
    group's id, whose 'size' is 0, so the next Linear refused it as 'over an axis other than the channels' and no spec
    came out; now the stream is unpermuted and b's units still permute (function kept to rounding)."""
    torch.manual_seed(0)
    net = _InputResidual().double()
    spec = permutation_spec(net)
    assert spec.sizes == {"P_b": 4}
    assert {(a.tensor, a.axis) for a in spec.axes} == {("b.weight", 0), ("b.bias", 0), ("o.weight", 1)}
    x = torch.randn(6, 3, dtype=torch.float64)
    for seed in range(3):
        new = apply_permutation(spec, random_permutation(spec, seed=seed), net)
        with torch.no_grad():
            torch.testing.assert_close(new(x), net(x), rtol=0, atol=1e-12)


class _FlattenAll(nn.Module):
    """``torch.flatten(h)`` flattens the batch axis too (start_dim defaults to 0): a Linear sized for one batch."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3)
        self.fc = nn.Linear(batch * 4 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.c(x))))


def test_flatten_without_start_dim_is_over_the_batch_axis_and_refused():
    """The tracer read a missing start_dim as 1; torch's default is 0, which puts the batch axis first in the
    flattened features, so the channel blocks the spec permuted were not the channels (the permuted network of this
    batch-of-2 model computed another function). A flatten over the batch axis is refused now."""
    with pytest.raises(PermutationSpecError, match="flatten"):
        permutation_spec(_FlattenAll(2).double())


class _PoolOver(nn.Module):
    """Pooling whose window covers the channel axis: of a Linear's output, or 2-d pooling of a Conv1d's (B, C, L)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Linear(3, 6)
        self.c = nn.Conv1d(2, 4, 3)
        self.pool1 = nn.MaxPool1d(3, stride=1, padding=1)
        self.pool2 = nn.MaxPool2d(3, stride=1, padding=1)
        self.o = nn.Linear(6 if how != "conv" else 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "module":  # max over neighbouring features (maxout-like), size kept
            return self.o(self.pool1(torch.relu(self.a(x))))
        if self.how == "function":
            return self.o(nn.functional.avg_pool1d(torch.relu(self.a(x)), 3, 1, 1))
        return self.o(self.pool2(torch.relu(self.c(x))).mean(-1))  # (B, C, L) read as an unbatched (C, H, W)


@pytest.mark.parametrize("how", ["module", "function", "conv"])
def test_pooling_over_the_channel_axis_is_refused(how):
    """Poolings passed the group on whatever the axis: one that pools a Linear's features (or a MaxPool2d over a
    Conv1d's channels) kept the size, and the derived permutations changed the function by 0.3-0.6."""
    with pytest.raises(PermutationSpecError, match="pool"):
        permutation_spec(_PoolOver(how).double())


def test_pooling_over_spatial_axes_still_permutes():
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4 * 4, 2)).double()
    spec = permutation_spec(net)
    assert spec.sizes == {"P_0": 4}
    x = torch.randn(5, 2, 10, dtype=torch.float64)
    new = apply_permutation(spec, random_permutation(spec, seed=0), net)
    with torch.no_grad():
        torch.testing.assert_close(new(x), net(x), rtol=0, atol=1e-12)


class _WrongAxis(nn.Module):
    """A Linear over the width of a conv map (B, C, H, W) with W == C, or BatchNorm1d over the T axis of (B, T, H)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "linear":
            return self.fc(torch.relu(self.c(x))).mean((1, 2))
        out, _ = self.rnn(x)
        return self.fc(torch.tanh(self.bn(out))).mean(1)


@pytest.mark.parametrize("how, match", [("linear", "Linear 'fc'"), ("batchnorm", "BatchNorm1d 'bn'")])
def test_a_layer_over_another_axis_than_the_channels_is_refused(how, match):
    """A Linear takes the last axis and BatchNorm axis 1; the tracer checked only the size. Of a conv map whose width
    equals its channels (or an LSTM output with as many steps as units) it derived a spec that changed the function
    (by 0.18 and 0.008)."""
    with pytest.raises(PermutationSpecError, match=match):
        permutation_spec(_WrongAxis(how).double())
