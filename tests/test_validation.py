"""Bad input (issue 17, item 4): every repro fails clearly or gives the answer on explicitly cast clean data.

Each ``test_repro_*`` failed on ``ed875bd`` (a deep torch error, a numpy error or a silently wrong number).
The property tests drive :mod:`landscape.validation` through its entry points with random shapes, dtypes,
NaN/inf positions and empty data: the result is an :class:`~landscape.InputError` naming the argument, or
equals a reference computed on explicitly cast clean data.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import landscape
import landscape.data.readers as ldata
import tunnels
from landscape import (
    HessianOperator,
    InputError,
    InputWarning,
    Problem,
    Trajectory,
    TrajectoryPCA,
    evaluate_points,
    functional_distance,
    hessian_eigenpairs,
    measure_saturation,
    parameters_to_vector,
)
from landscape.train import Trainer, evaluate_dataset
from landscape.validation import (
    InputTypeError,
    check_labels,
    describe_nonfinite,
    validate_batches,
    validate_training_sets,
)

pytestmark = pytest.mark.filterwarnings("ignore::landscape.validation.InputWarning")


def _mlp(dtype=torch.float32, seed=0, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, c)).to(dtype)


def _data(n=32, seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, c, (n,), generator=g)


def _nan_net(dtype=torch.float32):
    net = _mlp(dtype)
    with torch.no_grad():
        net[0].weight[1, 2] = float("nan")
    return net


def _sgd(p):
    return torch.optim.SGD(p, lr=0.1)


# =========================================================================== repros (issue 17, item 4)
def test_repro_functional_distance_nan_weights_named():
    net, X, y = _mlp(), *_data()
    with pytest.raises(InputError, match=r"^b holds 1 NaN .* in '0\.weight' \(1 of 32\)"):
        functional_distance(net, net, _nan_net(), (X, y))
    with pytest.raises(InputError, match=r"^a holds"):
        functional_distance(net, parameters_to_vector(_nan_net()), net, (X, y))


def test_repro_hessian_nan_weights_named():
    X, y = _data()
    with pytest.raises(InputError, match=r"parameter '0\.weight': 1 NaN of 32 elements \(first at index \(1, 2\)\)"):
        HessianOperator(_nan_net(torch.float64), nn.CrossEntropyLoss(), (X, y))


def test_repro_saturation_counts_nonfinite_activations():
    net = nn.Sequential(nn.Linear(1, 1), nn.Tanh())
    with torch.no_grad():
        net[0].weight.fill_(1e30)
        net[0].bias.zero_()
    x = torch.tensor([[1e-3], [1e10], [-1e10], [0.0]])  # 1e40 overflows float32: +inf and -inf
    with pytest.warns(RuntimeWarning, match="non-finite activations"):
        s = measure_saturation(net, x, layers=["0"], range=(-1, 1))["0"]
    assert s.nonfinite == 2 and s.count == 2 and np.isfinite(s.mean) and np.isfinite(s.std)
    assert measure_saturation(net, x[[0, 3]], layers=["0"], range=(-1, 1))["0"].nonfinite == 0
    x[0, 0] = float("nan")  # NaN inputs are refused, by name
    with pytest.raises(InputError, match=r"data \(batch 0\): inputs holds 1 NaN"):
        measure_saturation(net, x, layers=["0"], range=(-1, 1))


def test_saturation_stats_nonfinite_survives_save(tmp_path):
    net = nn.Sequential(nn.Linear(1, 1), nn.Tanh())
    with torch.no_grad():
        net[0].weight.fill_(1e30)
    with pytest.warns(RuntimeWarning):
        s = measure_saturation(net, torch.tensor([[1e10], [0.0]]), layers=["0"], range=(-1, 1))["0"]
    assert landscape.load_result(s.save(tmp_path / "s")).nonfinite == 1


def test_repro_pca_nan_snapshot_named(tmp_path):
    vecs = torch.randn(5, 20, dtype=torch.float64)
    vecs[2, 3] = float("nan")
    with pytest.raises(InputError, match=r"snapshot 2 \(step 2\): 1 NaN of 20 elements"):
        TrajectoryPCA().fit(vecs)
    net = _mlp()
    traj = Trajectory.create(tmp_path / "t", landscape.ParamLayout.from_model(net))
    for step in range(4):
        v = parameters_to_vector(net).detach() + step
        if step == 3:
            v[40] = float("inf")  # in '2.weight'
        traj.append(v, step=10 * step)
    with pytest.raises(InputError, match=r"snapshot 3 \(step 30\): 1 inf of 67 elements .* in '2\.weight'"):
        TrajectoryPCA().fit(traj)
    with pytest.raises(InputError, match="center holds"):
        TrajectoryPCA(center=torch.full((20,), float("nan"))).fit(vecs[:2])


def test_repro_empty_data_refused():
    net, X, y = _mlp(), *_data()
    with pytest.raises(InputError, match=r"^data holds no samples"):
        evaluate_dataset(net, (X[:0], y[:0]), F.cross_entropy)
    with pytest.raises(InputError, match=r"^data holds no samples"):
        tunnels.split_stats(net, (X[:0], y[:0]), F.cross_entropy)
    with pytest.raises(InputError, match=r"^data holds no samples \(got no batch\)"):
        evaluate_points(net, parameters_to_vector(net)[None], [])
    with pytest.raises(InputError, match="no samples"):
        measure_saturation(net, X[:0])


def test_repro_labels_n1_squeezed_with_a_note():
    net, X, y = _mlp(), *_data()
    want = evaluate_dataset(net, (X, y), F.cross_entropy)
    with pytest.warns(InputWarning, match=r"class labels of shape \(32, 1\) squeezed to \(32,\)"):
        got = evaluate_dataset(net, (X, y[:, None]), F.cross_entropy)
    assert got == want
    pts = parameters_to_vector(net)[None]
    assert evaluate_points(net, pts, (X, y[:, None]))["loss"] == evaluate_points(net, pts, (X, y))["loss"]
    a = Trainer(net, (X, y[:, None]), optimizer=_sgd, steps=3).fit().model
    b = Trainer(net, (X, y), optimizer=_sgd, steps=3).fit().model
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))


@pytest.mark.parametrize(
    "labels, match",
    [
        (lambda y: y + 3, r"largest class label is 5 but the model outputs 3 classes .* at least 6 classes"),
        (lambda y: y - 1, r"smallest class label is -1; expected labels 0 to 2"),
    ],
)
def test_repro_labels_out_of_range_refused(labels, match):
    net, X, y = _mlp(), *_data()
    bad = labels(y)
    with pytest.raises(InputError, match=match):
        evaluate_dataset(net, (X, bad), F.cross_entropy)
    with pytest.raises(InputError, match=match):
        evaluate_points(net, parameters_to_vector(net)[None], (X, bad))
    with pytest.raises(InputError, match=match):
        Trainer(net, (X, bad), optimizer=_sgd, steps=1)
    with pytest.raises(InputError, match=match):
        HessianOperator(net, nn.CrossEntropyLoss(), (X, bad))
    with pytest.raises(InputError, match=match):
        Trainer(net, (X, y), optimizer=_sgd, steps=1, eval_data={"val": (X, bad)})


def test_ignore_index_labels_pass_where_the_loss_ignores_them():
    net, X, y = _mlp(), *_data()
    y2 = y.clone()
    y2[0] = -100  # torch's cross-entropy skips it
    assert np.isfinite(evaluate_dataset(net, (X, y2), F.cross_entropy, accuracy=False)["loss"])
    with pytest.raises(InputError, match="smallest class label is -100"):  # the engine gathers every label
        evaluate_points(net, parameters_to_vector(net)[None], (X, y2))


def test_repro_float64_model_float32_data_one_policy():
    net, X, y = _mlp(torch.float64), *_data()
    with torch.no_grad():
        ref = float(F.cross_entropy(net(X.double()), y))
    assert evaluate_dataset(net, (X, y), F.cross_entropy)["loss"] == pytest.approx(ref, rel=1e-12)
    assert evaluate_points(net, parameters_to_vector(net)[None], (X, y))["loss"][0] == pytest.approx(ref, rel=1e-12)
    got = measure_saturation(net, X)["1"]
    with torch.no_grad():
        acts = torch.tanh(net[0](X.double())).numpy()
    assert got.values[0] == pytest.approx(float(np.percentile(acts, 98)), abs=1e-15)
    a = Trainer(net, (X, y), optimizer=_sgd, steps=2).fit().model
    b = Trainer(net, (X.double(), y), optimizer=_sgd, steps=2).fit().model
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))


def test_repro_integer_images_cast_with_a_note():
    net = _mlp()
    Xi = torch.randint(0, 5, (32, 4), dtype=torch.uint8)
    y = _data()[1]
    Xf = Xi.float()
    with pytest.warns(InputWarning, match=r"inputs are uint8; cast to the model's float32"):
        got = evaluate_dataset(net, (Xi, y), F.cross_entropy)
    assert got == evaluate_dataset(net, (Xf, y), F.cross_entropy)
    pts = parameters_to_vector(net)[None]
    assert evaluate_points(net, pts, (Xi, y))["loss"] == evaluate_points(net, pts, (Xf, y))["loss"]
    assert measure_saturation(net, Xi)["1"].values == measure_saturation(net, Xf)["1"].values
    other = _mlp(seed=1)
    assert functional_distance(net, net, other, (Xi, y)).rms == functional_distance(net, net, other, (Xf, y)).rms
    a = Trainer(net, (Xi, y), optimizer=_sgd, steps=2).fit().model
    b = Trainer(net, (Xf, y), optimizer=_sgd, steps=2).fit().model
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))
    sa = tunnels.split_stats(net, (Xi, y), F.cross_entropy)
    sb = tunnels.split_stats(net, (Xf, y), F.cross_entropy)
    assert all(torch.equal(sa.A[k], sb.A[k]) for k in sb.A)
    n64 = _mlp(torch.float64)
    opi = HessianOperator(n64, nn.CrossEntropyLoss(), (Xi, y))
    opf = HessianOperator(n64, nn.CrossEntropyLoss(), (Xf, y))
    v = torch.randn(opf.n, dtype=torch.float64)
    assert torch.equal(opi.matvec(v), opf.matvec(v))


def test_regression_targets_shaped_like_the_outputs():
    """(N,) targets for (N, 1) outputs: torch's MSE broadcasts to (N, N) (the "loop" strategy gave 0.384 for 0.369)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    X, y = torch.randn(20, 3), torch.randn(20)
    with torch.no_grad():
        ref = float(F.mse_loss(net(X), y[:, None]))
    with pytest.warns(InputWarning, match=r"targets of shape \(20,\) reshaped to \(20, 1\)"):
        assert evaluate_dataset(net, (X, y), F.mse_loss)["loss"] == pytest.approx(ref, rel=1e-6)
    pts = parameters_to_vector(net)[None]
    for strategy in ("auto", "loop", "functional"):
        got = evaluate_points(net, pts, (X, y), loss_fn="mse", strategy=strategy, metrics=("loss",))["loss"][0]
        assert got == pytest.approx(ref, rel=1e-6)
    a = Trainer(net, (X, y), F.mse_loss, optimizer=_sgd, steps=2).fit().model
    b = Trainer(net, (X, y[:, None]), F.mse_loss, optimizer=_sgd, steps=2).fit().model
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))


def test_embedding_models_keep_integer_inputs():
    net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 3))
    tokens, y = torch.randint(0, 10, (16, 2)), torch.randint(0, 3, (16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        r = evaluate_dataset(net, (tokens, y), F.cross_entropy)
    assert r["loss"] == pytest.approx(float(F.cross_entropy(net(tokens), y)))


def test_repro_newton_flat_float32_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
    X, y = _data()
    res = tunnels.newton_flat(net, (X, y), F.cross_entropy, steps=1)
    ref = net.double().eval()
    assert res.losses[0] == pytest.approx(float(F.cross_entropy(ref(X.double()), y)), rel=1e-12)
    assert next(res.model.parameters()).dtype == torch.float32


def test_repro_nan_loss_stop_is_tagged():
    net, X, y = _mlp(), *_data()

    class Rec:
        def __init__(self):
            self.rows = []

        def append_model(self, model, **kw):
            self.rows.append(kw)

    rec = Rec()
    nan_loss = lambda out, t: F.cross_entropy(out, t) * float("nan")  # noqa: E731
    with pytest.raises(landscape.train.NonFiniteLossError):
        Trainer(net, (X, y), nan_loss, optimizer=_sgd, steps=5, trajectory=rec).fit()
    assert rec.rows[-1]["tags"]["events"] == [{"step": 1, "event": "nonfinite_loss", "loss": "nan", "action": "raise"}]


def test_repro_unpickler_refuses_build_on_allowed_callables(tmp_path):
    path = tmp_path / "data_batch_1"
    attacks = [
        # GLOBAL numpy.dtype (the package's _plain_dtype), BUILD {'pwned': 1}: sets a function attribute
        b"\x80\x02cnumpy\ndtype\n}X\x05\x00\x00\x00pwnedK\x01sb.",
        # GLOBAL _codecs.encode (the package's _latin1_bytes), BUILD (None, {'__defaults__': ('utf-8',)})
        b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__X\x05\x00\x00\x00utf-8\x85s\x86b.",
    ]
    for raw in attacks:
        path.write_bytes(raw)
        with pytest.raises(ValueError, match="data_batch_1 is not a valid CIFAR-10 python batch: setting the state"):
            ldata.load_cifar_batch(path)
    assert not hasattr(ldata._plain_dtype, "pwned")
    assert ldata._latin1_bytes.__defaults__ == ("latin1",)
    # arrays (BUILD on ndarray and dtype) still load
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    for proto in (2, 4):
        path.write_bytes(pickle.dumps({b"data": arr, b"labels": [1, 2]}, protocol=proto))
        images, labels = ldata.load_cifar_batch(path)
        assert np.array_equal(images.reshape(2, -1), arr) and labels.tolist() == [1, 2]


def test_hessian_functions_refuse_a_model_for_an_operator():
    with pytest.raises(InputTypeError, match="op must be a HessianOperator or a landscape.Problem, got Sequential"):
        hessian_eigenpairs(_mlp(), 1)


def test_messages_name_nan_data_and_weights():
    net, X, y = _mlp(), *_data()
    X[3, 1] = float("inf")
    with pytest.raises(InputError, match=r"^data: inputs holds 1 inf of 128 elements \(first at index \(3, 1\)\)"):
        evaluate_dataset(net, (X, y), F.cross_entropy, batch_size=8)
    with pytest.raises(InputError, match=r"data \(batch 1\): inputs holds 1 inf"):
        evaluate_dataset(net, [(X[:2], y[:2]), (X[2:], y[2:])], F.cross_entropy)
    with pytest.raises(InputError, match=r"^model has non-finite weights: parameter '0\.weight'"):
        Trainer(_nan_net(), _data(), optimizer=_sgd, steps=1)
    with pytest.raises(InputError, match=r"eval_data\['val'\]: inputs holds 1 inf"):
        Trainer(net, _data(), optimizer=_sgd, steps=1, eval_data={"val": (X, y)})
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    bn[1].running_var[0] = float("nan")
    with pytest.raises(InputError, match=r"buffer '1\.running_var'"):
        evaluate_points(bn, parameters_to_vector(bn)[None], _data())
    with pytest.raises(InputTypeError, match="complex"):
        evaluate_dataset(net, (torch.randn(4, 4, dtype=torch.complex64), y[:4]), F.cross_entropy)


def test_dataloader_checked_on_first_pass_cast_on_every_pass():
    net64 = _mlp(torch.float64)
    X, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y[:, None]), batch_size=8)
    a = Trainer(net64, loader, optimizer=_sgd, epochs=2, shuffle=False).fit().model
    b = Trainer(net64, (X.double(), y), optimizer=_sgd, epochs=2, batch_size=8, shuffle=False).fit().model
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))
    bad = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y + 5), batch_size=8)
    with pytest.raises(InputError, match=r"data \(batch 0\): largest class label is 7"):
        Trainer(net64, bad, optimizer=_sgd, epochs=1).fit()


def test_validated_data_is_not_checked_again(monkeypatch):
    net, X, y = _mlp(), *_data()
    vb = validate_batches((X, y), net, F.cross_entropy)
    calls = []
    monkeypatch.setattr("landscape.validation.BatchChecker.__call__", lambda *a, **k: calls.append(1))
    assert validate_batches(vb, net, F.cross_entropy) is vb and not calls


def test_persistence_entry_points_validate():
    from persistence import PersistentTrainer
    from persistence.fast import mlp_loss_and_grad

    net = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1))
    x, y = torch.linspace(-1, 1, 8)[:, None], torch.zeros(8, 1)
    x[2] = float("nan")
    with pytest.raises(InputError, match=r"x, y: inputs holds 1 NaN"):
        mlp_loss_and_grad(net, parameters_to_vector(net), x, y)
    xi = torch.arange(8)[:, None]  # integers: cast with a note
    want = mlp_loss_and_grad(net, parameters_to_vector(net), xi.float(), y)[0]
    assert torch.equal(mlp_loss_and_grad(net, parameters_to_vector(net), xi, y)[0], want)
    with pytest.raises(InputError, match=r"eval_data\['val'\]: inputs holds 1 NaN"):
        PersistentTrainer(net, (xi, y), F.mse_loss, _sgd, iterations=1, lam=0.1, eval_data={"val": (x, y)}, steps=1)


def test_validate_training_sets_checks_each_set_under_its_name():
    """The one check both trainers run: weights first, then every set cast and named in its error."""
    net64, (X, y) = _mlp(torch.float64), _data()
    data, evals = validate_training_sets(net64, (X, y), {"b": (X[:8], y[:8]), "a": (X, y)}, F.cross_entropy)
    assert list(evals) == ["b", "a"]  # the order given, not sorted
    for (x, t), want in ((data, X), (evals["b"], X[:8]), (evals["a"], X)):
        assert x.dtype == torch.float64 and torch.equal(x, want.double()) and t.dtype == torch.int64
    assert validate_training_sets(net64, (X, y), None, F.cross_entropy)[1] == {}
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match=r"^eval_data\['a'\]: inputs holds 1 NaN"):
        validate_training_sets(net64, (X, y), {"b": (X, y), "a": (bad, y)}, F.cross_entropy)
    with pytest.raises(InputError, match=r"^model has non-finite weights"):  # before any data is read
        validate_training_sets(_nan_net(), (bad, y), None, F.cross_entropy)


# =========================================================================== units
def test_describe_nonfinite_and_check_labels():
    t = torch.tensor([[1.0, float("nan")], [float("inf"), float("-inf")]])
    assert describe_nonfinite(t) == "1 NaN and 2 inf of 4 elements (first at index (0, 1))"
    assert describe_nonfinite(torch.ones(3)) is None and describe_nonfinite(torch.arange(3)) is None
    check_labels(torch.tensor([0, 2, -100]), 3, ignore_index=-100)
    with pytest.raises(InputError, match="largest class label is 3"):
        check_labels(torch.tensor([0, 3]), 3)


# =========================================================================== properties
FLOATS = [torch.float16, torch.float32, torch.float64]
INTS = [torch.uint8, torch.int32, torch.int64, torch.bool]


@st.composite
def _cases(draw):
    mdtype = draw(st.sampled_from([torch.float32, torch.float64]))
    n = draw(st.integers(0, 6))
    f = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    xdtype = draw(st.sampled_from(FLOATS + INTS))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    if xdtype.is_floating_point:
        x = torch.randn(n, f, generator=g).to(xdtype)
    else:
        x = torch.randint(0, 2 if xdtype == torch.bool else 5, (n, f), generator=g).to(xdtype)
    bad_value = None
    if xdtype.is_floating_point and n and draw(st.booleans()):
        bad_value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, f - 1))] = bad_value
    lo, hi = draw(st.integers(-1, 0)), draw(st.integers(0, c))
    y = torch.randint(lo, hi + 1, (n,), generator=g).to(draw(st.sampled_from([torch.int64, torch.int32])))
    if draw(st.booleans()):
        y = y[:, None]
    return mdtype, c, x, y, seed


def _expect(mdtype, c, x, y, seed):
    """``None`` when the input is bad, else the reference mean cross-entropy on explicitly cast clean data."""
    torch.manual_seed(seed)
    net = nn.Linear(x.shape[1], c).to(mdtype)
    if x.shape[0] == 0 or not bool(torch.isfinite(x.to(torch.float64)).all()):
        return net, None
    yy = y.reshape(-1).long()
    if int(yy.min()) < 0 or int(yy.max()) >= c:
        return net, None
    return net, float(F.cross_entropy(net(x.to(mdtype)).double(), yy))


def _check(call, net, ref):
    if ref is None:
        with pytest.raises(InputError) as e:
            call()
        assert str(e.value).startswith("data")  # names the argument
        assert any(w in str(e.value) for w in ("no samples", "NaN", "inf", "class label"))
    else:
        assert call() == pytest.approx(ref, rel=1e-5, abs=1e-6)


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_cases())
def test_property_evaluate_dataset(case):
    net, ref = _expect(*case)
    _, _, x, y, _ = case
    _check(lambda: evaluate_dataset(net, (x, y), F.cross_entropy, accuracy=False)["loss"], net, ref)


@_SETTINGS
@given(_cases())
def test_property_evaluate_points(case):
    net, ref = _expect(*case)
    _, _, x, y, _ = case
    pts = parameters_to_vector(net)[None]
    _check(lambda: float(evaluate_points(net, pts, (x, y), metrics=("loss",))["loss"][0]), net, ref)


@_SETTINGS
@given(_cases(), st.integers(1, 3))
def test_property_batched_data(case, nb):
    """Iterables of batches: the same verdicts and values as the pair."""
    net, ref = _expect(*case)
    _, _, x, y, _ = case
    batches = list(zip(x.tensor_split(nb), y.tensor_split(nb)))
    if x.shape[0] and any(b[0].shape[0] == 0 for b in batches):  # an empty batch is refused too
        with pytest.raises(InputError, match=r"^data \(batch \d\)"):
            evaluate_dataset(net, batches, F.cross_entropy, accuracy=False)
        return
    _check(lambda: evaluate_dataset(net, batches, F.cross_entropy, accuracy=False)["loss"], net, ref)


@_SETTINGS
@given(_cases())
def test_property_validate_batches_dtypes(case):
    """Inputs come back in the model's dtype (bool and integers too), labels as int64 of shape (N,)."""
    net, ref = _expect(*case)
    _, _, x, y, _ = case
    if ref is None:
        with pytest.raises(InputError):
            validate_batches((x, y), net, F.cross_entropy)
        return
    ((xv, yv),) = validate_batches((x, y), net, F.cross_entropy)
    assert xv.dtype == next(net.parameters()).dtype and torch.equal(xv, x.to(xv.dtype))
    assert yv.dtype == torch.int64 and torch.equal(yv, y.reshape(-1).long())


@_SETTINGS
@given(_cases())
def test_property_measure_saturation(case):
    """Inputs only (targets unused): empty or non-finite inputs refused, else the percentiles of cast data."""
    mdtype, c, x, y, seed = case
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 3), nn.Tanh()).to(mdtype)
    bad = x.shape[0] == 0 or not bool(torch.isfinite(x.to(torch.float64)).all())
    if bad:
        with pytest.raises(InputError, match=r"^data"):
            measure_saturation(net, x, percentiles=(50.0, 98.0))
        return
    got = measure_saturation(net, x, percentiles=(50.0, 98.0))["1"]
    with torch.no_grad():
        acts = net(x.to(mdtype)).double().numpy()
    np.testing.assert_allclose(got.values, np.percentile(acts, [50.0, 98.0]), rtol=0, atol=1e-6)
    assert got.nonfinite == 0 and got.count == acts.size


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_property_trainer(case):
    """Refused at construction, or two steps equal to training on explicitly cast clean data."""
    net, ref = _expect(*case)
    mdtype, _, x, y, _ = case
    if ref is None:
        with pytest.raises(InputError, match=r"data"):
            Trainer(net, (x, y), optimizer=_sgd, steps=2)
        return
    a = Trainer(net, (x, y), optimizer=_sgd, steps=2, batch_size=4).fit().model
    b = Trainer(net, (x.to(mdtype), y.reshape(-1).long()), optimizer=_sgd, steps=2, batch_size=4).fit().model
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b))


class _TupleOut(nn.Module):
    """A network returning ``(outputs, aux)``: the output rule reads the first element."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(3, width, dtype=torch.float64)

    def forward(self, x):
        out = self.lin(x)
        return out, out.sum()


def test_targets_are_checked_and_shaped_against_outputs_read_by_the_output_rule():
    # The probe took the model's raw output: a tuple gave no shape, so (N,) regression targets were not shaped like
    # the (N, 1) outputs (MSE broadcast to (N, N): a wrong loss, only warned by torch) and labels went unchecked.
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    net = _TupleOut(1)
    with torch.no_grad():
        expected = ((net.lin(x)[:, 0] - y) ** 2).mean().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        assert Problem(net, (x, y), "mse").loss().item() == pytest.approx(expected, rel=1e-12)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    match = "largest class label is 4 but the model outputs 4 classes"
    with pytest.raises(InputError, match=match):  # was torch's IndexError at the first evaluation
        Problem(_TupleOut(4), (x, labels), "cross_entropy").loss()
    with pytest.raises(InputError, match=match):  # was accepted, until torch's error at the first step
        Trainer(_TupleOut(4), (x, labels), "cross_entropy", epochs=1)


# ------------------------------------------------------------------ session 12: the slips a new user makes
def _slip_setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    X, y = torch.randn(30, 1, 4, 4), torch.randint(0, 5, (30,))
    return net, X, y


def test_slips_are_named_plainly():
    import landscape as L

    net, X, y = _slip_setup()
    with pytest.raises(ValueError, match="xs are the grid's coordinates, not a resolution"):
        L.random_plane(net, (X, y), 21)  # was a 1 x 1 "plane" at x = y = 21
    with pytest.raises(ValueError, match="the data comes before alphas"):
        L.line(net, net, net, [0.0, 1.0], (X, y))  # alphas and data swapped: numpy's inhomogeneous-shape error
    with pytest.raises(InputError, match="class labels must be integers"):
        L.line(net, net, net, (X, y.float()), [0.0])  # float labels chose MSE: torch's size-mismatch error
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got tuple"):
        L.measure_saturation((X, y), net)  # AttributeError: 'tuple' object has no attribute 'named_parameters'
    with pytest.raises(FileNotFoundError, match="no such file"):
        L.load_result("no/such/result.npz")  # was a ValueError
    # What stays valid: one coordinate in a list, one alpha as a number, regression targets shaped like outputs.
    assert L.random_plane(net, (X, y), [0.0]).metrics["loss"].shape == (1, 1)
    assert L.line(net, net, net, (X, y), 0.5).metrics["loss"].shape == (1,)
    assert np.isfinite(L.line(net, net, net, (X, torch.randn(30, 5)), [0.0]).metrics["loss"]).all()


def test_a_second_untagged_run_into_a_non_empty_trajectory_warns(tmp_path):
    import landscape as L

    net, X, y = _slip_setup()
    path = tmp_path / "run"
    L.Trainer(net, (X, y), epochs=1, batch_size=10, trajectory=L.Trajectory.create(path)).fit()
    with pytest.warns(UserWarning, match="already holds 2 snapshots"):
        L.Trainer(net, (X, y), epochs=1, batch_size=10, trajectory=L.Trajectory.open(path, "a")).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tagged run says which run it is: no warning
        L.Trainer(net, (X, y), epochs=1, batch_size=10, trajectory=L.Trajectory.open(path, "a"), tags={"run": 3}).fit()
    assert L.Trajectory.open(path).steps.tolist() == [0, 3, 0, 3, 0, 3]
