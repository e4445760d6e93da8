"""Edge cases a demanding user hits around landscape.Problem and its analyzers, against plain-torch references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from landscape.analyze.distance import distance_along_path, functional_distance
from landscape.analyze.pca import TrajectoryPCA
from landscape.analyze.saturation import measure_saturation
from landscape.analyze.surface import barycentric, line, plane
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.spectrum import hessian_eigenpairs, hessian_spectrum, hessian_trace, spectrum_of
from landscape.curvature.training import trajectory_curvature
from landscape.functional import hook_attributes
from landscape.params import parameters_to_vector
from landscape.problem import LOSSES, Problem
from landscape.train.loop import Trainer
from landscape.trajectory.store import Trajectory
from landscape.validation import InputError, InputTypeError, loss_kind
from tests.helpers import reparametrized_net


def _frozen_net() -> nn.Module:
    """An MLP whose first layer is frozen (a fine-tuning set-up)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    net[0].requires_grad_(False)
    return net


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def _dense_hessian(net: nn.Module, X: torch.Tensor, y: torch.Tensor, names: list[str]) -> torch.Tensor:
    """torch.func's Hessian of the mean cross-entropy in the named tensors (the others held at the model's values)."""
    fixed = {k: v.detach() for k, v in net.named_parameters()}
    shapes = [fixed[k].shape for k in names]
    sizes = [s.numel() for s in shapes]

    def f(th: torch.Tensor) -> torch.Tensor:
        parts = {k: t.reshape(s) for k, t, s in zip(names, th.split(sizes), shapes)}
        return F.cross_entropy(torch.func.functional_call(net, {**fixed, **parts}, (X,)), y)

    return torch.func.hessian(f)(torch.cat([fixed[k].flatten() for k in names]))


@pytest.mark.parametrize(
    ("params", "names"),
    [("trainable", ["2.weight", "2.bias"]), ("all", ["0.weight", "0.bias", "2.weight", "2.bias"])],
)
def test_hessian_params_all_and_trainable(params, names):
    # docs/arguments.md lists "all" and "trainable" for the Hessian's params=, as for random_plane and sharpness;
    # the operator took them for tensor names and refused them
    net = _frozen_net()
    X, y = _data()
    op = HessianOperator(Problem(net, (X, y)), params=params)
    H = _dense_hessian(net, X, y, names)
    assert op.n == H.shape[0]
    top = torch.linalg.eigvalsh(H).flip(0)[:3]
    torch.testing.assert_close(hessian_eigenpairs(op, 3).values, top, rtol=1e-8, atol=1e-10)


def test_hessian_params_trainable_with_everything_frozen_is_named():
    net = _frozen_net().requires_grad_(False)
    with pytest.raises(ValueError, match="params='trainable' selects no parameter"):
        HessianOperator(Problem(net, _data()), params="trainable")


def test_hessian_params_unknown_name_names_the_argument():
    net = _frozen_net()
    with pytest.raises(ValueError, match=r"^params: 'nope' is neither 'all', 'trainable', a tensor nor a layer"):
        HessianOperator(Problem(net, _data()), params=["nope"])


def _mlp_problem(**kw) -> tuple[Problem, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    a = parameters_to_vector(net).detach()
    return Problem(net, _data(), **kw), a, a + 0.1 * torch.randn_like(a)


@pytest.mark.parametrize("shorthand", [False, True])
def test_slice_bn_mode_unknown_names_the_argument(shorthand):
    # the slices raised "'foo' is not a valid BNMode" (no argument name, no valid values) where the distances
    # and the engine say "unknown bn_mode ..."
    prob, a, b = _mlp_problem()
    args = (prob.model, a, b, prob.data) if shorthand else (prob, a, b)
    with pytest.raises(ValueError, match=r"unknown bn_mode 'foo'; valid values are 'eval', 'train', 'interpolate'"):
        line(*args, bn_mode="foo")
    with pytest.raises(ValueError, match=r"unknown bn_mode 'foo'"):
        barycentric(prob, a, b, 0.5 * a, bn_mode="foo")


def test_slice_bn_mode_reads_like_every_option():
    # options are read case-insensitively everywhere (parse_option); the slices refused "EVAL"
    prob, a, b = _mlp_problem()
    upper = line(prob, a, b, alphas=[0.0, 1.0], bn_mode="EVAL").metrics["loss"]
    torch.testing.assert_close(torch.as_tensor(upper), torch.stack([prob.loss(a), prob.loss(b)]).double())


@pytest.mark.parametrize("size", [0, -2, 2.5])
def test_problem_batch_size_out_of_range_is_named(size):
    # batch_size=0 silently meant one batch, -2 gave "data holds no batch", 2.5 a slicing TypeError deep inside
    net = nn.Sequential(nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match=rf"^batch_size must be a positive integer or None, got {size}$"):
        Problem(net, _data(), batch_size=size)


def test_problem_dtype_not_floating_is_named():
    # dtype=torch.int64 failed at the first product with "mat1 and mat2 must have the same dtype"
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"^dtype must be a floating-point torch dtype .*got torch.int64$"):
        Problem(net, _data(), dtype=torch.int64)


def _sgd_reference(net: nn.Module, X: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """One epoch of plain SGD (lr 0.1) over the batches in order, by hand; the final parameter vector."""
    m = copy.deepcopy(net)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for xb, yb in zip(X.split(size), y.split(size)):
        opt.zero_grad()
        F.cross_entropy(m(xb), yb).backward()
        opt.step()
    return parameters_to_vector(m).detach()


@pytest.mark.parametrize("kind", ["pair", "numpy", "dataset"])
def test_trainer_takes_a_problem_as_the_problem_reads_its_data(kind):
    # Trainer(Problem(net, (X, y), batch_size=5)) trained full-batch (1 step, the problem's batch size ignored);
    # a numpy pair or a Dataset, which the problem takes, were refused ("batch 0 must be a pair (X, y) of tensors")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = _data(13)
    data = {"pair": (X, y), "numpy": (X.numpy(), y.numpy()), "dataset": TensorDataset(X, y)}[kind]
    tr = Trainer(Problem(net, data, batch_size=5), optimizer_kwargs={"lr": 0.1}, epochs=1, shuffle=False).fit()
    assert tr.step == 3  # ceil(13 / 5)
    torch.testing.assert_close(parameters_to_vector(tr.model).detach(), _sgd_reference(net, X, y, 5))


def test_slice_coordinates_of_two_dimensions_are_refused():
    # a meshgrid passed as xs (or a (2, 2) alphas) was flattened silently into 4 positions
    prob, a, b = _mlp_problem()
    xs, ys = np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 2))
    with pytest.raises(
        ValueError, match=r"^xs must be a 1-D sequence of finite numbers, got an array of shape \(2, 3\)"
    ):
        plane(prob, a, b - a, b - a, xs=xs, ys=ys)
    with pytest.raises(ValueError, match=r"^alphas must be a 1-D sequence .* shape \(2, 2\)"):
        line(prob, a, b, alphas=np.zeros((2, 2)))


def test_distance_along_path_checks_its_alphas():
    # distance_along_path took NaN positions (and 2-D arrays) that line refuses
    prob, a, b = _mlp_problem()
    with pytest.raises(ValueError, match=r"^alphas must be a non-empty sequence of finite numbers, got 1 NaN/inf"):
        distance_along_path(prob, a, b, alphas=[0.0, float("nan")])
    r = distance_along_path(prob, a, b, alphas=0.5)  # a scalar is one position, as in line
    assert r.alphas.tolist() == [0.5]


def test_saturation_of_a_closure_problem_runs_the_closure():
    # with a closure loss the problem's batches are whatever the closure reads ({"x", "labels"} here); the
    # model was called as model(x=...) ("forward() got an unexpected keyword argument 'x'")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    X, y = _data(13)
    batches = [{"x": X[i : i + 5], "labels": y[i : i + 5]} for i in range(0, 13, 5)]

    def closure(model, batch):
        return F.cross_entropy(model(batch["x"]), batch["labels"])

    stats = measure_saturation(Problem(net, batches, closure), percentiles=(50.0, 98.0))["1"]
    with torch.no_grad():
        acts = torch.tanh(net[0](X)).flatten().numpy()
    assert stats.count == acts.size
    np.testing.assert_allclose(stats.values, np.percentile(acts, [50.0, 98.0]), rtol=1e-12)


@pytest.mark.parametrize(("name", "fn"), [("l1", F.l1_loss), ("huber", F.huber_loss), ("bce_with_logits", None)])
def test_regression_loss_names_shape_targets_like_the_function(name, fn):
    # Problem(net, (X, y (N,)), "l1") on (N, 1) outputs broadcast to (N, N) (a wrong loss, 0.17 off here): only "mse"
    # among the names was known to be a regression loss, so the targets were not reshaped like the outputs;
    # "bce_with_logits" raised torch's "Target size must be the same as input size"
    torch.manual_seed(0)
    net = nn.Linear(3, 1).double()
    X, _ = _data()
    y = (torch.rand(len(X), dtype=torch.float64) > 0.5).double()
    fn = fn or F.binary_cross_entropy_with_logits
    with pytest.warns(UserWarning, match="reshaped"):
        got = Problem(net, (X, y), name).loss()
    torch.testing.assert_close(got, fn(net(X)[:, 0], y))


def test_every_loss_name_has_the_kind_of_its_function():
    for name, fn in LOSSES.items():
        assert loss_kind(name)[0] is loss_kind(fn)[0], name


class _TwoInputs(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, width), nn.Linear(3, width)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(z)


def _batches(kind: str, X: torch.Tensor, y: torch.Tensor) -> list:
    """Batches of 4 that are not (X, y) pairs: mappings, or (x, z, y) for a two-input model."""
    cut = range(0, len(X), 4)
    if kind == "mapping":
        return [{"x": X[i : i + 4], "z": 2 * X[i : i + 4], "labels": y[i : i + 4]} for i in cut]
    return [(X[i : i + 4], 2 * X[i : i + 4], y[i : i + 4]) for i in cut]


@pytest.mark.parametrize("kind", ["mapping", "two_inputs"])
def test_targets_of_other_batches_are_shaped_like_a_pairs(kind):
    # Regression targets (N,) for (N, 1) outputs in mapping or multi-input batches broadcast to (N, N): a silently
    # wrong loss (a tensor pair is reshaped); class labels (N, 1) raised torch's "multi-target not supported".
    torch.manual_seed(0)
    X, labels = _data()
    reg, cls = _TwoInputs(1).double(), _TwoInputs(2).double()
    y = torch.randn(len(X), dtype=torch.float64)
    with pytest.warns(UserWarning, match="reshaped"):
        got = Problem(reg, _batches(kind, X, y)).loss()
    torch.testing.assert_close(got, F.mse_loss(reg(X, 2 * X)[:, 0], y))
    prob = Problem(cls, _batches(kind, X, labels[:, None]))
    with pytest.warns(UserWarning, match="squeezed"):
        got = prob.loss()
    torch.testing.assert_close(got, F.cross_entropy(cls(X, 2 * X), labels))
    acc = line(prob, prob.theta0, prob.theta0, alphas=[0.0]).metrics["accuracy"]
    assert acc.tolist() == [(cls(X, 2 * X).argmax(1) == labels).double().mean().item()]
    with pytest.raises(InputError, match=r"^data \(batch 0\): largest class label is 5 but the model outputs 2"):
        Problem(cls, _batches(kind, X, labels + 4)).loss()


@pytest.mark.parametrize("loader", [False, True])
def test_spectrum_provenance_says_the_problems_data(loader):
    # data_description defaults to the problem's (docs/arguments.md); a problem whose batches the Hessian's
    # (X, y) kernels take was recorded as "13 samples", losing Problem(..., data_description=...)
    X, y = _data(13)
    net = nn.Sequential(nn.Linear(3, 2)).double()
    data = DataLoader(TensorDataset(X, y), batch_size=4) if loader else (X, y)
    prob = Problem(net, data, data_description="digits, train split")
    options = {"top_k": 1, "steps": 3, "n_probes": 1}
    assert hessian_spectrum(prob, **options).provenance.data == "digits, train split"
    assert spectrum_of(HessianOperator(prob), **options).provenance.data == "digits, train split"
    assert hessian_spectrum(prob, data_description="mine", **options).provenance.data == "mine"


def test_pca_loss_at_a_model_is_named():
    # a model is callable, so project(loss_at=net) called net(points) and failed deep inside with
    # "mat1 and mat2 shapes cannot be multiplied"
    prob, a, _ = _mlp_problem()
    pca = TrajectoryPCA(2).fit(a + 0.1 * torch.randn(4, a.numel(), dtype=a.dtype))
    with pytest.raises(InputTypeError, match=r"^loss_at must be a landscape.Problem or a callable .* got the model"):
        pca.project(a[None], loss_at=prob.model)


def test_eigenpairs_of_a_model_names_both_accepted_kinds():
    # hessian_eigenpairs / hessian_trace take a Problem too, but a model got "op must be a HessianOperator"
    prob, _, _ = _mlp_problem()
    for fn in (hessian_eigenpairs, hessian_trace):
        with pytest.raises(InputTypeError, match=r"^op must be a HessianOperator or a landscape.Problem, got Seq"):
            fn(prob.model)


@pytest.mark.parametrize("regression", [False, True])
def test_hessian_shorthand_takes_the_default_loss(regression):
    # docs/arguments.md: the loss defaults everywhere to cross-entropy for integer targets, MSE otherwise;
    # HessianOperator(net, data=...) / hessian_spectrum / trajectory_curvature demanded a loss_fn
    torch.manual_seed(0)
    X, labels = _data()
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1 if regression else 2)).double()
    y = torch.randn(len(X), 1, dtype=torch.float64) if regression else labels
    name = "mse" if regression else "cross_entropy"
    want = hessian_eigenpairs(HessianOperator(Problem(net, (X, y), name)), 2).values
    torch.testing.assert_close(hessian_eigenpairs(HessianOperator(net, data=(X, y)), 2).values, want)
    batches = [(X[:6], y[:6]), (X[6:], y[6:])]
    torch.testing.assert_close(hessian_eigenpairs(HessianOperator(net, data=iter(batches)), 2).values, want)
    top = hessian_spectrum(net, data=(X, y), top_k=1, steps=4, n_probes=1).top_eigenvalues
    np.testing.assert_allclose(top, want[:1].numpy(), rtol=1e-8)
    traj = Trajectory()
    traj.append_model(net, step=0)
    curv = trajectory_curvature(traj, net, data=(X, y), progress=False)
    np.testing.assert_allclose(curv.lambda_max[0], want[0].item(), rtol=1e-6)


def test_stacked_strategy_under_train_batchnorm_says_why():
    # strategy='stacked' with bn_mode='train' claimed the (traceable) model "is not one torch.fx can trace"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    prob = Problem(net, _data(), bn_mode="train")
    a = prob.theta0
    with pytest.raises(ValueError, match=r"^strategy='stacked' runs BatchNorm on running statistics only"):
        line(prob, a, a, strategy="stacked")
    line(Problem(net, _data()), a, a, strategy="stacked")  # eval mode: the same model is stacked


def test_a_model_refusing_mapping_batches_is_told_the_rule():
    # a mapping batch calls model(**batch) without its target key; a model taking x positionally got torch's bare
    # "forward() got an unexpected keyword argument 'x'" (from the loss, or from functional_distance / metric
    # "outputs" of a closure problem, whose closure had called the model its own way)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2)).double()
    X, y = _data()
    batches = [{"x": X, "labels": y}]
    rule = r"calls model\(\*\*batch\) without its target key \(here model\(x=\.\.\.\)\)"
    with pytest.raises(InputTypeError, match=rule):
        Problem(net, batches).loss()
    prob = Problem(net, batches, lambda model, b: F.cross_entropy(model(b["x"]), b["labels"]))
    a = prob.theta0
    torch.testing.assert_close(prob.loss(), F.cross_entropy(net(X), y))  # the closure calls it its own way
    with pytest.raises(InputTypeError, match=rule):
        functional_distance(prob, a, a)


def _bad_closures():
    """Closures whose (sum, count) form is broken: a vector sum, a zero count, a 1-tuple."""

    def vector_sum(model, b):
        return F.cross_entropy(model(b[0]), b[1], reduction="none"), len(b[1])

    def no_count(model, b):
        return F.cross_entropy(model(b[0]), b[1], reduction="sum"), 0

    def one_item(model, b):
        return (F.cross_entropy(model(b[0]), b[1]),)

    return [
        (vector_sum, r"^the closure's sum is a Tensor of shape \(10,\); it must be a scalar tensor"),
        (no_count, r"^the loss's counts sum to 0 over the data"),
        (one_item, r"^the closure returned a tuple of 1 item\(s\); it must return the batch mean"),
    ]


@pytest.mark.parametrize(("closure", "message"), _bad_closures())
def test_closure_sum_count_form_is_checked(closure, message):
    # (vector, n) failed deep in torch ("output with shape [] doesn't match the broadcast shape [10]"), counts
    # summing to 0 gave loss=inf silently, a 1-tuple "not enough values to unpack"
    net = nn.Sequential(nn.Linear(3, 2)).double()
    prob = Problem(net, _data(), closure)
    with pytest.raises(ValueError, match=message):
        prob.loss()
    with pytest.raises(ValueError, match=message):
        line(prob, prob.theta0, prob.theta0, alphas=[0.0])


@pytest.mark.parametrize(
    "loss",
    [nn.CrossEntropyLoss(), F.cross_entropy, nn.CrossEntropyLoss(weight=torch.tensor([0.3, 1.0, 2.0]).double())],
    ids=["module-ignore", "function-ignore", "class-weights"],
)
@pytest.mark.parametrize("batch_size", [None, 4])
def test_slices_of_a_weighted_mean_loss_are_the_problems_loss(loss, batch_size):
    # Labels -100 are ignored by torch's cross-entropy, class weights weight the mean: the evaluation engine
    # must give the problem's loss (it gathered every label, -100 crashed it with an index error).
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    X, _ = _data(10)
    y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(2))
    if not isinstance(loss, nn.CrossEntropyLoss) or loss.weight is None:
        y[[1, 5, 6]] = -100
    prob = Problem(net, (X, y), loss, batch_size=batch_size)
    a = prob.theta0
    b = a + 0.1 * torch.randn(prob.numel, dtype=torch.float64)
    got = line(prob, a, b, alphas=[0.0, 1.0]).metrics["loss"]
    np.testing.assert_allclose(got, [float(prob.loss(a)), float(prob.loss(b))], rtol=1e-12)
    if batch_size is None:  # one batch: the problem's loss is torch's
        with torch.no_grad():
            np.testing.assert_allclose(got[0], float(loss(net(X), y)), rtol=1e-12)


_W = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "loss, ignored, log_probs",
    [
        (F.cross_entropy, True, False),
        (nn.CrossEntropyLoss(weight=_W), False, False),
        (nn.CrossEntropyLoss(weight=_W, ignore_index=2, label_smoothing=0.1), True, False),
        (nn.NLLLoss(weight=_W), True, True),
        (F.nll_loss, True, True),
    ],
    ids=["ce-ignored", "ce-weights", "ce-weights-ignore2-smoothing", "nll-weights-ignored", "nll-ignored"],
)
@pytest.mark.parametrize("batch_size", [3, 4, None])
def test_weighted_mean_losses_are_torchs_one_call_whatever_the_batching(loss, ignored, log_probs, batch_size):
    # torch's mean over ignored labels and class weights divides by the summed weights, so a batch's mean times
    # its size is no sum over samples: every path must give the loss of the whole data in one torch call.
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)] + ([nn.LogSoftmax(-1)] if log_probs else [])
    net = nn.Sequential(*layers).double()
    X, _ = _data(11)
    y = torch.randint(0, 3, (11,), generator=torch.Generator().manual_seed(2))
    if ignored:
        y[[1, 5, 6]] = getattr(loss, "ignore_index", -100)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]

    def full(theta):  # the reference: torch's loss over all the data at once
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return loss(torch.func.functional_call(net, params, (X,)), y)

    prob = Problem(net, (X, y), loss, batch_size=batch_size)
    theta = prob.theta0
    v = torch.randn(prob.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    H = torch.func.hessian(full)(theta)
    assert float(prob.loss()) == pytest.approx(float(full(theta)), rel=1e-12)
    torch.testing.assert_close(prob.grad(), torch.func.grad(full)(theta), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(prob.hvp(v), H @ v, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(HessianOperator(prob).matvec(v), H @ v, rtol=1e-10, atol=1e-13)
    other = theta + 0.1 * v
    got = line(prob, theta, other, alphas=[0.0, 1.0]).metrics["loss"]
    np.testing.assert_allclose(got, [float(full(theta)), float(full(other))], rtol=1e-12)


@pytest.mark.parametrize("batched", ["batch_size", "batch_sampler"])
def test_distance_over_a_reshuffling_stream_is_refused_and_over_held_shuffled_data_is_exact(batched):
    # The distance compares each sample's outputs at two points read on two passes: a shuffling DataLoader
    # streamed from its source reads them in another order each time (a network came out 0.13 from itself).
    # One shuffling through a BatchSampler given as batch_sampler was not seen to shuffle (its own sampler is a
    # SequentialSampler it never reads).
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    other = copy.deepcopy(net)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))
    X, y = _data(11)
    with torch.no_grad():
        pa, pb = net(X).softmax(-1), other(X).softmax(-1)
    ref = float((pa - pb).square().sum(1).mean().sqrt())

    def loader():
        ds, g = TensorDataset(X, y), torch.Generator().manual_seed(3)
        if batched == "batch_sampler":
            return DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds, generator=g), 4, drop_last=False))
        return DataLoader(ds, batch_size=4, shuffle=True, generator=g)

    streamed = Problem(net, loader(), memory_budget=0)
    with pytest.raises(ValueError, match="shuffle=False"):
        functional_distance(streamed, net, net)
    held = Problem(net, loader())  # read once, kept: one order for every pass
    assert functional_distance(held, net, net).rms == 0.0
    assert functional_distance(held, net, other).rms == pytest.approx(ref, rel=1e-12)


def test_a_hook_setting_a_module_attribute_leaves_the_callers_model_as_it_was():
    # weight_norm's pre-hook sets module.weight from the parameters on every call: run at another point, with a
    # graph, it left the caller's module holding that point's weight and graph (then deepcopy(model) failed).
    m = reparametrized_net()
    before = m[0].__dict__["weight"]
    X = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(2))
    prob = Problem(m, (X, y), batch_size=3)
    th = prob.theta0 + 0.1 * torch.randn(prob.numel, dtype=torch.float64)
    loss, grad = prob.loss_and_grad(th)
    ones = torch.ones(prob.numel, dtype=torch.float64)
    torch.testing.assert_close(HessianOperator(prob).matvec(ones), prob.hvp(ones), rtol=1e-10, atol=1e-12)
    prob.hvp(ones, th)
    after = m[0].__dict__["weight"]  # the checks' probe calls the model itself: its own point, no graph
    assert torch.equal(after, before) and after.grad_fn is None
    copy.deepcopy(m)
    at = copy.deepcopy(m)
    torch.nn.utils.vector_to_parameters(th.clone().requires_grad_(True), at.parameters())
    ref = F.cross_entropy(at(X), y)
    (gref,) = [torch.autograd.grad(ref, list(at.parameters()))]
    assert float(loss) == pytest.approx(float(ref), rel=1e-12)
    torch.testing.assert_close(grad, torch.cat([g.reshape(-1) for g in gref]), rtol=1e-10, atol=1e-12)


def test_hook_attributes_leaves_a_hooked_modules_attributes_exactly_as_they_were():
    # Only the tensor attributes a hooked module had before were put back: one a hook added during the call (an
    # activation captured at another point, with its graph) stayed on the caller's module (deepcopy then failed).
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    m[0].kept = torch.zeros(1)

    def capture(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        mod.kept = out  # changed
        mod.activation = out  # added, a tensor
        mod.calls = getattr(mod, "calls", 0) + 1  # added, not a tensor

    m[0].register_forward_hook(capture)
    before = dict(vars(m[0]))
    X, y = _data(6)
    with hook_attributes(m):
        m(X)
        assert "activation" in vars(m[0])  # the hook ran
    assert vars(m[0]).keys() == before.keys() and all(vars(m[0])[k] is v for k, v in before.items())
    prob = Problem(m, (X, y), batch_size=4)
    th = prob.theta0 + 0.1
    for _ in (prob.loss(th), prob.loss_and_grad(th), prob.hvp(torch.ones(prob.numel, dtype=torch.float64), th)):
        assert vars(m[0]).keys() == before.keys() and all(vars(m[0])[k] is v for k, v in before.items())
    copy.deepcopy(m)


def test_mapping_batches_without_a_target_key_are_told_the_keys_on_every_path():
    # The general evaluation path called the loss with targets None (a TypeError from inside torch); the
    # problem's own message did not say which keys hold the targets.
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
            return self.lin(x)

    X, y = _data(6)
    prob = Problem(Net().double(), [{"x": X, "target_ids": y}], "cross_entropy")
    for call in (prob.loss, lambda: line(prob, prob.theta0, prob.theta0 + 1, alphas=[0.0, 1.0])):
        with pytest.raises(InputError, match=r"'labels', 'label', 'targets', 'target', 'y'.*'target_ids'"):
            call()
