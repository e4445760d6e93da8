import copy

import pytest
import torch
from torch import nn

from landscape.params import (
    ParamLayout,
    functional_forward,
    model_at,
    parameters_to_vector,
    preserved_mode,
    vector_to_dict,
)
from tests.helpers import small_bn_cnn


def _cnn():
    """conv (1 -> 3) - BatchNorm - ReLU - Dropout - flatten - Linear(48, 5) - ...: on ``(B, 1, 6, 6)`` inputs.

    The Dropout (index 3, in the pooling slot) makes train mode random; index 5 is a Linear.
    """
    torch.manual_seed(0)
    return small_bn_cnn(nn.ReLU, nn.Dropout(0.5), 3 * 4 * 4, 5).double()


def _snapshot(model):
    """Everything about a model that evaluation must leave untouched."""
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {k: p.requires_grad for k, p in model.named_parameters()},
        {k: m.training for k, m in model.named_modules()},
        {k: p.grad for k, p in model.named_parameters()},
    )


def assert_untouched(model, snap):
    state, rg, modes, grads = _snapshot(model)
    for k, v in snap[0].items():
        assert torch.equal(state[k], v), f"{k} changed"
    assert rg == snap[1] and modes == snap[2]
    assert all(g is None for g in grads.values())


def test_layout_names_slices_layers_filter_axes():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 6, 2), nn.Linear(5, 7))
    lay = ParamLayout.from_model(net)
    assert lay.names == tuple(n for n, _ in net.named_parameters())
    assert lay.numel == sum(p.numel() for p in net.parameters())
    pos = 0
    for spec, (_name, p) in zip(lay, net.named_parameters()):
        assert spec.start == pos and spec.stop == pos + p.numel() and spec.shape == tuple(p.shape)
        pos = spec.stop
    assert list(lay.layers) == ["0", "1", "2", "3"]
    assert [s.name for s in lay.layers["0"]] == ["0.weight", "0.bias"]
    axes = {s.name: s.filter_axis for s in lay}
    assert axes == {
        "0.weight": 0,
        "0.bias": None,
        "1.weight": None,
        "1.bias": None,
        "2.weight": 1,
        "2.bias": None,
        "3.weight": 0,
        "3.bias": None,
    }
    idx = lay.layer_index("3")
    assert idx.tolist() == list(range(lay["3.weight"].start, lay["3.bias"].stop))


def test_layout_covers_frozen_by_default_and_roundtrips_json():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    lay = ParamLayout.from_model(net)
    assert lay.names == ("0.weight", "0.bias", "1.weight", "1.bias")  # requires_grad does not change the layout
    trainable = ParamLayout.from_model(net, "trainable")
    assert trainable.names == ("0.bias", "1.weight", "1.bias")
    assert torch.equal(parameters_to_vector(net, params="trainable"), parameters_to_vector(net)[12:])
    for layout in (lay, trainable):
        again = ParamLayout.from_dict(layout.to_dict())
        assert again == layout and again.specs == layout.specs


def test_vector_roundtrip_and_model_at():
    net = _cnn()
    vec = parameters_to_vector(net)
    d = vector_to_dict(net, vec)
    for name, p in net.named_parameters():
        assert torch.equal(d[name], p)
    assert torch.equal(ParamLayout.from_model(net).flatten(d), vec)
    vec2 = vec + 1.0
    other = model_at(net, vec2)
    assert torch.equal(parameters_to_vector(other), vec2)
    assert torch.equal(parameters_to_vector(net), vec)  # original untouched


@pytest.mark.parametrize("train", [False, True])
def test_functional_forward_equals_loaded_copy_float64(train):
    net = _cnn()
    x = torch.randn(6, 1, 6, 6, dtype=torch.float64)
    net.train()
    net(x)  # give BatchNorm non-trivial running statistics
    snap = _snapshot(net)
    vec = parameters_to_vector(net) + 0.01 * torch.randn(ParamLayout.from_model(net).numel, dtype=torch.float64)
    ref_model = model_at(net, vec)
    ref_model.train(train)
    if train:
        ref_model[3].p = 0.0  # dropout is random in train mode: compare with it disabled on both
        net[3].p = 0.0
        snap = _snapshot(net)
    with torch.no_grad():
        ref = ref_model(x)
        got = functional_forward(net, vec, x, train=train)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    assert_untouched(net, snap)


def test_functional_forward_keeps_mode_and_grad_flags_even_on_error():
    net = _cnn()
    net.train()
    net[5].bias.requires_grad_(False)
    snap = _snapshot(net)
    with pytest.raises(RuntimeError):
        functional_forward(net, parameters_to_vector(net), torch.randn(2, 3, 6, 6, dtype=torch.float64))
    assert_untouched(net, snap)


def test_wrong_length_and_mismatched_dict_errors():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="has 5 entries but this architecture has 26"):
        functional_forward(net, torch.zeros(5), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"got shape \(2, 13\)"):
        functional_forward(net, torch.zeros(2, 13), torch.zeros(1, 3))
    other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(5, 3\) but the model expects \(4, 3\)"):
        functional_forward(net, dict(other.named_parameters()), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="no tensor '2.bias'"):
        d = dict(net.named_parameters())
        del d["2.bias"]
        functional_forward(net, d, torch.zeros(1, 3))


def test_gradients_flow_through_the_vector_not_the_model():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    snap = _snapshot(net)
    vec = parameters_to_vector(net).requires_grad_(True)
    x = torch.randn(5, 3, dtype=torch.float64)
    functional_forward(net, vec, x).sum().backward()
    # reference: autograd through a copy of the model
    ref = copy.deepcopy(net)
    ref(x).sum().backward()
    ref_grad = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
    assert torch.allclose(vec.grad, ref_grad, atol=1e-12)
    assert_untouched(net, snap)


def test_preserved_mode_restores_mixed_modes():
    net = _cnn()
    net.train()
    net[1].eval()
    with preserved_mode(net, False):
        assert not any(m.training for m in net.modules())
    assert net.training and not net[1].training and net[3].training


# --------------------------------------------------------------------------- issue 17: frozen parameters
def test_frozen_model_has_the_same_vector_and_layout():
    """requires_grad is a training flag other tools flip; it must not change the parameter vector."""
    net = _cnn()
    frozen = copy.deepcopy(net).requires_grad_(False)
    half = copy.deepcopy(net)
    half[0].requires_grad_(False)
    for m in (frozen, half):
        assert ParamLayout.from_model(m) == ParamLayout.from_model(net)
        assert torch.equal(parameters_to_vector(m), parameters_to_vector(net))
    assert ParamLayout.from_model(frozen, "trainable").numel == 0
    assert ParamLayout.from_model(half, "trainable").names == ParamLayout.from_model(net).names[2:]
    with pytest.raises(ValueError, match="params must be one of"):
        ParamLayout.from_model(net, "frozen")


def test_integer_parameters_stay_out_of_the_vector():
    net = nn.Linear(2, 2)
    net.register_parameter("count", nn.Parameter(torch.tensor([3]), requires_grad=False))
    assert ParamLayout.from_model(net).names == ("weight", "bias")
    assert parameters_to_vector(net).shape == (6,)


def test_functional_forward_on_frozen_model_and_dict_without_frozen_tensors():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    vec = parameters_to_vector(net) * 0.5
    want = functional_forward(net, vec, x)
    frozen = copy.deepcopy(net).requires_grad_(False)
    assert torch.equal(functional_forward(frozen, vec, x), want)
    half = copy.deepcopy(net)
    half[0].requires_grad_(False)
    d = {k: v for k, v in vector_to_dict(half, vec).items() if not k.startswith("0.")}
    expect = model_at(net, {**dict(net[0].named_parameters(prefix="0")), **d})(x)
    assert torch.equal(functional_forward(half, d, x), expect)  # frozen tensors left out: the model's own
    with pytest.raises(ValueError, match="no tensor '2.bias'"):  # a trainable tensor left out is an error
        functional_forward(half, {k: v for k, v in d.items() if k != "2.bias"}, x)


def test_wrong_length_message_names_frozen_and_trainable_layouts():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    with pytest.raises(ValueError, match=r"26 parameters .*frozen ones included.*params='trainable'"):
        functional_forward(net, parameters_to_vector(net, params="trainable"), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="no floating-point parameters"):
        ParamLayout.from_model(nn.ReLU()).check_vector(torch.zeros(3))


def test_parameter_mask():
    from landscape.params import parameter_mask

    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    net[0].weight.requires_grad_(False)
    assert parameter_mask(net).all()
    assert parameter_mask(net, "trainable").tolist() == [False] * 4 + [True] * 5
    assert parameter_mask(net, ["1", "0.bias"]).tolist() == [False] * 4 + [True] * 5
    assert parameter_mask(net, "1.bias").tolist() == [False] * 8 + [True]
    with pytest.raises(ValueError, match="neither"):
        parameter_mask(net, "2")
    with pytest.raises(ValueError, match="empty"):
        parameter_mask(net, [])


def test_all_trainable_models_keep_their_recorded_vectors_and_layout():
    """Trajectories recorded before frozen parameters joined the vector (all trainable) read the same."""
    from landscape.trajectory import Trajectory

    net = _cnn()
    lay, old = ParamLayout.from_model(net), ParamLayout.from_model(net, "trainable")
    assert lay.to_dict() == old.to_dict()  # the manifest's layout, byte for byte
    assert torch.equal(parameters_to_vector(net), parameters_to_vector(net, params="trainable"))
    traj = Trajectory()
    traj.append_model(net)
    assert torch.equal(traj[0].vector, parameters_to_vector(net))
    frozen = copy.deepcopy(net).requires_grad_(False)  # a frozen template rebuilds the same model
    rebuilt = traj.model_at(frozen, 0)
    assert torch.equal(parameters_to_vector(rebuilt), parameters_to_vector(net))
    assert not any(p.requires_grad for p in rebuilt.parameters())


def test_point_wins_over_buffers_and_frozen_models_get_the_full_hessian():
    """Callers pass frozen parameters in ``buffers=`` (the Hessian does); the point must decide their value."""
    import torch.nn.functional as F

    from landscape.curvature import HessianOperator

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    vec = parameters_to_vector(net) * 0.5
    stale = {"0.weight": torch.zeros(4, 3, dtype=torch.float64)}
    assert torch.equal(functional_forward(net, vec, x, buffers=stale), functional_forward(net, vec, x))

    dense = torch.func.hessian(lambda v: F.cross_entropy(functional_forward(net, v, x), y))(parameters_to_vector(net))
    for freeze in ("0", ""):
        m = copy.deepcopy(net)
        (m.get_submodule(freeze) if freeze else m).requires_grad_(False)
        op = HessianOperator(m, F.cross_entropy, (x, y))
        assert op.n == 26 and torch.allclose(op.dense(), dense, rtol=0, atol=1e-12)
