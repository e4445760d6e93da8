"""Bug hunt 13 in the supporting modules (results, data, models, params): each test holds one case they got wrong.

Every expectation is the right answer (a round trip equal to the original, a documented error, a closed form), never
the code's own output.
"""

from typing import Any

import numpy as np

from landscape.analyze import LineResult
from landscape.results import Provenance, load_result


def _line(metrics: dict[str, Any] | None = None, layout: dict[str, Any] | None = None, **prov: Any) -> LineResult:
    """A small LineResult whose free-form fields (``metrics``, ``layout``, provenance) hold what a test needs."""
    return LineResult(
        coords=np.linspace(0.0, 1.0, 3),
        metrics={"loss": np.array([1.0, 0.5, 2.0])} if metrics is None else metrics,
        anchors=np.zeros((2, 4)),
        anchor_coords=np.array([0.0, 1.0]),
        layout={} if layout is None else layout,
        provenance=Provenance(**prov),
    )


def test_a_damaged_or_truncated_result_file_is_a_value_error_naming_it(tmp_path):
    """A cut-off copy raised zipfile.BadZipFile ('File is not a zip file'), a flipped byte BadZipFile ('Bad CRC-32'),
    a flipped flag NotImplementedError ('compression method not supported') or RuntimeError ('encrypted').

    load_result documents ValueError for a file that is not a saved result; every damage must end there (or, where
    a flipped byte lands in bytes the zip reader ignores, load the original unchanged).
    """
    original = _line()
    raw = original.save(tmp_path / "good").read_bytes()
    bad = tmp_path / "bad.npz"
    cases = [raw[:n] for n in range(0, len(raw), 41)]
    # every byte of the first local header and of the central directory (flags, compression method), a sample between
    for off in sorted({*range(64), *range(len(raw) - 420, len(raw)), *range(0, len(raw), 13)}):
        flipped = bytearray(raw)
        flipped[off] ^= 0xFF
        cases.append(bytes(flipped))
    for data in cases:
        bad.write_bytes(data)
        try:
            back = load_result(bad)
        except ValueError as e:
            assert str(bad) in str(e)
            continue
        for key in ("coords", "anchors", "anchor_coords"):
            np.testing.assert_array_equal(getattr(back, key), getattr(original, key))
        np.testing.assert_array_equal(back.metrics["loss"], original.metrics["loss"])


def test_a_result_whose_seed_is_a_numpy_integer_saves_and_loads(tmp_path):
    """``seed=np.int64(1)`` (a seed from ``np.arange`` or ``rng.integers``) made every result unsaveable: json.dumps
    raised "Object of type int64 is not JSON serializable" from the provenance, after the computation."""
    import torch
    from torch import nn

    from landscape.analyze import random_plane

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    plane = random_plane(net, (X, y), [0.0, 1.0], seed=np.int64(1), progress=False)
    assert plane.provenance.seed == 1
    back = load_result(plane.save(tmp_path / "plane"))
    assert back.provenance.seed == 1 and isinstance(back.provenance.seed, int)
    np.testing.assert_array_equal(back.metrics["loss"], plane.metrics["loss"])
    extra = {"lr": np.float32(0.5), "steps": [np.int32(3)], "ok": np.bool_(True)}
    line = load_result(_line(extra=extra, seed=np.int32(2)).save(tmp_path / "line"))
    assert line.provenance.seed == 2 and line.provenance.extra == {"lr": 0.5, "steps": [3], "ok": True}


def test_arrays_at_the_same_dotted_path_both_round_trip(tmp_path):
    """Arrays are named by their path, ``layout.a.b`` for both ``{"a.b": x}`` and ``{"a": {"b": y}}``: the second
    replaced the first, so ``x`` loaded (and exported to xarray) as ``y``, silently."""
    x, y = np.arange(2.0), np.arange(5, dtype=np.int32)
    line = _line(layout={"a.b": x, "a": {"b": y}})
    for back in (load_result(line.save(tmp_path / "line")), LineResult.from_xarray(line.to_xarray())):
        np.testing.assert_array_equal(back.layout["a.b"], x)
        np.testing.assert_array_equal(back.layout["a"]["b"], y)
        assert back.layout["a"]["b"].dtype == np.int32


def test_tuples_and_dicts_keyed_by_numbers_round_trip_as_they_are(tmp_path):
    """``{1: x}`` loaded as ``{"1": x}`` (``back[1]`` a KeyError), ``{1: "a", "1": "b"}`` as ``{"1": "b"}`` (one
    entry lost) and ``(3, 4)`` as ``[3, 4]``; files that hold neither stay format 1, which older versions read."""
    import json

    layout = {
        "by_step": {0: np.arange(3.0), 10: np.ones(2)},
        "pairs": {(0, 1): 0.5, (1, 2): (np.int64(7), "b")},
        "mixed": {1: "a", "1": "b", None: 2.5},
        "shape": (3, 4),
        "nested": [(1, (2, 3))],
    }
    line = _line(layout=layout)
    for back in (load_result(line.save(tmp_path / "line")), LineResult.from_xarray(line.to_xarray())):
        got = back.layout
        assert list(got) == list(layout)
        assert list(got["by_step"]) == [0, 10]
        np.testing.assert_array_equal(got["by_step"][0], np.arange(3.0))
        np.testing.assert_array_equal(got["by_step"][10], np.ones(2))
        assert got["pairs"] == {(0, 1): 0.5, (1, 2): (7, "b")}
        assert got["mixed"] == {1: "a", "1": "b", None: 2.5}
        assert got["shape"] == (3, 4) and got["nested"] == [(1, (2, 3))]
    with np.load(_line(layout={"shape": [3, 4]}).save(tmp_path / "plain"), allow_pickle=False) as z:
        assert json.loads(str(z["__header__"]))["__format__"] == 1


def test_he_and_glorot_use_the_fans_of_grouped_and_transposed_convolutions():
    """He: Var(w) = 2 / fan_in; Glorot: |w| <= sqrt(6 / (fan_in + fan_out)), Var(w) = 2 / (fan_in + fan_out), with
    fan_in the inputs of one output unit and fan_out the outputs of one input unit.

    torch's fans made a depthwise conv's Glorot bound 5.7 times too small (fan_out 64 * 9 instead of 9) and a
    transposed conv's He variance 8 times too large (fan_in out * 9 = 72 instead of in * 9 = 576). Ungrouped layers
    keep bitwise the draws of nn.init, so seeded models and the gallery's figures do not move.
    """
    import torch
    from torch import nn

    from landscape.models import init_weights

    def var_ratio(layer: nn.Module, scheme: str, want: float) -> float:
        init_weights(layer, scheme, seed=0)
        return float(layer.weight.double().pow(2).mean()) / want  # mean 0: the second moment is the variance

    k2 = 9
    # transposed conv 64 -> 8 channels (weight (64, 8, 3, 3)): one output unit sums 64 * 9 inputs
    assert abs(var_ratio(nn.ConvTranspose2d(64, 8, 3), "he", 2 / (64 * k2)) - 1) < 0.1
    assert abs(var_ratio(nn.ConvTranspose2d(64, 8, 3), "xavier_normal", 2 / (64 * k2 + 8 * k2)) - 1) < 0.1
    # grouped conv 64 -> 128 channels in 16 groups (weight (128, 4, 3, 3)): fan_in 4 * 9, fan_out 8 * 9
    assert abs(var_ratio(nn.Conv2d(64, 128, 3, groups=16), "xavier_normal", 2 / (4 * k2 + 8 * k2)) - 1) < 0.1
    depthwise = nn.Conv2d(64, 64, 3, groups=64)  # fan_in = fan_out = 9
    bound = (6 / (k2 + k2)) ** 0.5
    assert abs(var_ratio(depthwise, "xavier", bound**2 / 3) - 1) < 0.1
    assert float(depthwise.weight.abs().max()) <= bound and float(depthwise.weight.abs().max()) > 0.9 * bound
    # and ungrouped layers get exactly nn.init's weights
    for layer, scheme, draw in [
        (nn.Linear(7, 5), "he", lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")),
        (nn.Conv2d(3, 6, 5), "xavier", nn.init.xavier_uniform_),
        (nn.Conv1d(4, 2, 3), "xavier_normal", nn.init.xavier_normal_),
    ]:
        init_weights(layer, scheme, seed=3)
        torch.manual_seed(3)
        assert torch.equal(layer.weight, draw(torch.empty_like(layer.weight))), scheme
        assert not layer.bias.any()


def _idx_bytes(arr: np.ndarray) -> bytes:
    """An uncompressed IDX file of ``arr`` (uint8)."""
    import struct

    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def test_mnist_files_whose_train_and_test_images_differ_in_size_are_refused(tmp_path):
    """28x28 training and 32x32 test images made Splits with input_shape (1, 32, 32) and 28x28 training images: a
    model built for input_shape failed on the training data, deep in its forward pass."""
    import pytest

    from landscape.data import load_mnist_idx

    rng = np.random.default_rng(0)
    for name, arr in [
        ("train-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28))),
        ("train-labels-idx1-ubyte", rng.integers(0, 10, 12)),
        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 32, 32))),
        ("t10k-labels-idx1-ubyte", rng.integers(0, 10, 6)),
    ]:
        (tmp_path / name).write_bytes(_idx_bytes(arr))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte holds \(28, 28\) images but .*t10k-images"):
        load_mnist_idx(tmp_path, val_size=4)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(rng.integers(0, 256, (6, 28, 28))))
    splits = load_mnist_idx(tmp_path, val_size=4)
    assert splits.input_shape == (1, 28, 28)
    assert all(p[0].shape[1:] == (1, 28, 28) for p in (splits.train, splits.val, splits.test))


def test_a_subclass_of_a_transposed_conv_keeps_its_filter_axis():
    """Filter axes were looked up by exact class: a subclass of ConvTranspose2d (a user's, or torch's
    ParametrizedConvTranspose2d) got axis 0, its input channels, so filter normalization scaled the wrong slices.

    A ConvTranspose2d weight is ``(in, out, *kernel)``: the filters (output units) are axis 1, and a subclass that
    changes nothing must give the same filter-normalized direction as the plain layer.
    """
    import torch
    from torch import nn

    from landscape.analyze.directions import normalize_direction
    from landscape.params import ParamLayout, parameters_to_vector

    class Deconv(nn.ConvTranspose2d):
        pass

    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(3, 5, 2)
    sub = Deconv(3, 5, 2)
    sub.load_state_dict(plain.state_dict())
    assert ParamLayout.from_model(sub)["weight"].filter_axis == 1  # the axis of size out_channels = 5
    theta = parameters_to_vector(plain)
    d = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1))
    want = normalize_direction(d, theta, plain)
    torch.testing.assert_close(normalize_direction(d, theta, sub), want, rtol=0, atol=0)
    # and the plain layer's answer is Li et al.'s: each output filter w[:, j] of d has the norm of theta's
    dw, tw = want[: 3 * 5 * 4].view(3, 5, 2, 2), theta[: 3 * 5 * 4].view(3, 5, 2, 2)
    torch.testing.assert_close(dw.pow(2).sum((0, 2, 3)).sqrt(), tw.pow(2).sum((0, 2, 3)).sqrt())


def test_a_parametrized_weight_belongs_to_its_module_beside_the_bias():
    """torch.nn.utils.parametrizations (weight_norm, spectral_norm) keep a weight in
    ``0.parametrizations.weight.original*``; the layout made that path a layer of its own, so ``parameter_mask(net,
    "0")`` selected module 0's bias and not its weight, the persistent penalty counted two layers where there is one,
    and a spectral-normed transposed conv's weight got axis 0 (the parametrization container's) for its filters."""
    import torch
    from torch import nn
    from torch.nn.utils import parametrizations

    from landscape.params import ParamLayout, parameter_mask

    torch.manual_seed(0)
    net = nn.Sequential(parametrizations.weight_norm(nn.Linear(3, 4)), nn.Tanh(), nn.Linear(4, 2))
    layout = ParamLayout.from_model(net)
    assert list(layout.layers) == ["0", "2"]
    want = torch.zeros(layout.numel, dtype=torch.bool)
    for s in layout:
        want[s.slice] = s.name.startswith("0.")  # g, v and the bias of module 0
    assert torch.equal(parameter_mask(net, "0"), want) and int(want.sum()) == 4 + 12 + 4
    deconv = parametrizations.spectral_norm(nn.ConvTranspose1d(4, 2, 3))  # weight (in 4, out 2, 3)
    specs = {s.name: s for s in ParamLayout.from_model(deconv)}
    assert specs["parametrizations.weight.original"].filter_axis == 1
    assert specs["parametrizations.weight.original"].layer == specs["bias"].layer == ""


def test_weights_of_a_tied_model_saved_by_safetensors_load(tmp_path):
    """safetensors refuses to save_file a state dict with tied tensors and its save_model writes a tied tensor once;
    load_weights then refused the file ('missing: b.weight'), so a tied model's weights could not be loaded from
    safetensors at all. The loaded copy must compute what the saved model computes, with the tie kept."""
    import safetensors.torch
    import torch
    from torch import nn

    from landscape.factory import load_weights

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    saved = Tied()
    path = tmp_path / "tied.safetensors"
    safetensors.torch.save_model(saved, str(path))
    loaded = load_weights(Tied(), path)
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), saved(x), rtol=0, atol=0)
    assert loaded.a.weight is loaded.b.weight


def test_init_weights_draws_a_weight_normed_layer():
    """A weight kept by torch.nn.utils.parametrizations.weight_norm is computed from g and v on every access: He
    drew into that temporary, so the layer silently kept PyTorch's default weights (variance 1 / (3 fan_in) instead of
    2 / fan_in) while its bias was zeroed. weight_norm reproduces any weight exactly, so He's variance must hold."""
    import torch
    from torch import nn
    from torch.nn.utils import parametrizations

    from landscape.models import init_weights

    layer = parametrizations.weight_norm(nn.Linear(500, 400))
    init_weights(layer, "he", seed=0)
    var = float(layer.weight.detach().double().pow(2).mean())
    assert abs(var / (2 / 500) - 1) < 0.03  # 200,000 draws: the sample variance is within 0.5% (one sd)
    plain = init_weights(nn.Linear(500, 400), "he", seed=0)  # and the very weights a plain layer gets
    torch.testing.assert_close(layer.weight.detach(), plain.weight.detach())


def test_standardizing_with_an_empty_training_split_is_refused():
    """val=0.5, test=0.5 of the 1,797 digits leaves no training image; 'standardize' then divided every split by the
    NaN statistics of no image, and all 1,797 images came back NaN with only torch's warning."""
    import pytest

    from landscape.data import load_digits_split

    with pytest.raises(ValueError, match="training split is empty"):
        load_digits_split(val=0.5, test=0.5, normalize="standardize")
    s = load_digits_split(val=0.5, test=0.5)  # 'unit' needs no statistics: the same split, finite pixels in [0, 1]
    assert s.sizes == {"train": 0, "val": 899, "test": 898}
    assert float(s.val[0].min()) >= 0 and float(s.val[0].max()) <= 1


def test_normal_init_with_include_norm_draws_every_normalization_layer():
    """Under init 'normal' with include_norm=True normalization layers are drawn too (Im et al.'s "all parameters");
    RMSNorm and SyncBatchNorm were missing from the list and kept weight 1 (and bias 0)."""
    import torch
    from torch import nn

    from landscape.models import init_weights

    norms = [nn.BatchNorm1d(400), nn.LayerNorm(400), nn.SyncBatchNorm(400)]
    if hasattr(nn, "RMSNorm"):
        norms.append(nn.RMSNorm(400))
    for norm in norms:
        init_weights(nn.Sequential(norm), "normal", mean=-1.0, std=0.5, include_norm=True, seed=0)
        for p in norm.parameters():  # 400 draws of N(-1, 0.5^2): the sample mean is within 0.025 (one sd)
            assert abs(float(p.mean()) + 1) < 0.1 and abs(float(p.std()) / 0.5 - 1) < 0.15, type(norm).__name__
        drawn = [p.detach().clone() for p in norm.parameters()]
        init_weights(nn.Sequential(norm), "he", seed=0)  # other schemes leave normalization layers alone
        assert all(torch.equal(p, q) for p, q in zip(norm.parameters(), drawn))


def test_a_recorded_reference_cannot_name_the_distribution_s_figure_or_training_code(tmp_path, monkeypatch):
    """The rule refuses this package's own functions outside landscape.models; installed editable (the development
    setup) the sibling packages persistence, tunnels and figures looked like one's own code, so a trajectory's metadata
    could call figures.make_all:_run_one (a figure run that writes where its ``out`` says). Installed normally they
    sit in site-packages and were refused: the verdict must not depend on how the package is installed."""
    import sys
    import types

    import pytest

    from landscape import factory as FA

    for target in ("figures.make_all:_run_one", "persistence.fast:fast_persistent_run"):
        with pytest.raises(FA.FactoryError, match="pass --model"):
            FA.resolve(target, trusted=False)
        assert callable(FA.resolve(target))  # typed by the user, any callable
    # a user's own package that happens to be called "figures" is still one's own code
    (tmp_path / "figures").mkdir()
    mine = types.ModuleType("figures")
    mine.__file__ = str(tmp_path / "figures" / "__init__.py")
    exec("def make():\n    return None\n", mine.__dict__)
    monkeypatch.setitem(sys.modules, "figures", mine)
    assert FA._own_function(mine.make)


def test_init_weights_draws_a_layer_under_the_old_weight_norm_hook():
    """torch.nn.utils.weight_norm (the hook kept for old code) recomputes the weight from weight_g and weight_v before
    every forward: He drew into the attribute, the next forward put the default weights back (variance 1 / (3 fan_in)
    instead of 2 / fan_in), silently. The layer must compute with the drawn weights, those of a plain layer."""
    import warnings

    import torch
    from torch import nn

    from landscape.models import init_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the hook, not the models that use it
        layer = nn.utils.weight_norm(nn.Linear(500, 400))
    init_weights(layer, "he", seed=0)
    plain = init_weights(nn.Linear(500, 400), "he", seed=0)
    x = torch.randn(3, 500)
    torch.testing.assert_close(layer(x), plain(x))  # the forward recomputes the weight from g and v
    torch.testing.assert_close(layer.weight.detach(), plain.weight.detach())
