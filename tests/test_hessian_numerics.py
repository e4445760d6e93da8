"""What the Hessian used to get silently wrong (issue 17, item 5): half precision, sum-reduced losses,
batch-dependent layers, and train-mode models."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature import HessianOperator, hessian_eigenpairs, hessian_spectrum
from landscape.params import ParamLayout, parameters_to_vector

F64 = torch.float64
CE = nn.CrossEntropyLoss()


def _mlp(seed: int = 0, n: int = 64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 3)), torch.randn(n, 10), torch.randint(0, 3, (n,))


def _state(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "dtypes": [p.dtype for p in model.parameters()],
        "training": [m.training for m in model.modules()],
    }


def _same(model: nn.Module, snap: dict) -> bool:
    return (
        all(torch.equal(v, snap["state"][k]) for k, v in model.state_dict().items())
        and [p.dtype for p in model.parameters()] == snap["dtypes"]
        and [m.training for m in model.modules()] == snap["training"]
    )


def _whole_hessian(m: nn.Module, loss_fn, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``torch.func.hessian`` of ``loss_fn`` on the whole data in one call, float64, shape ``(n, n)``."""
    layout = ParamLayout.from_model(m)
    theta = parameters_to_vector(m).detach()
    return torch.func.hessian(lambda t: loss_fn(functional_call(m, layout.unflatten(t), (X,)), y))(theta)


# ----------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_models_are_computed_in_float32(half: torch.dtype) -> None:
    m, X, y = _mlp()
    mh = m.to(half)
    snap = _state(mh)
    ref_model = copy.deepcopy(mh).double()  # the half weights, exactly, in float64
    ref = HessianOperator(ref_model, CE, (X.double(), y))
    exact = torch.linalg.eigvalsh(ref.dense()).flip(0)[:5]

    op = HessianOperator(mh, CE, (X.to(half), y))
    pairs = hessian_eigenpairs(op, 5)
    torch.testing.assert_close(pairs.values, exact, rtol=0.05, atol=0)  # half-rounded data: a few %
    # X.to(half) is the data the model sees; against that, float32 rounding only
    ref_h = HessianOperator(ref_model, CE, (X.to(half).double(), y))
    exact_h = torch.linalg.eigvalsh(ref_h.dense()).flip(0)[:5]
    assert bool(((pairs.values - exact_h).abs() <= pairs.error_bounds).all()), (pairs.values, exact_h)
    assert pairs.converged
    assert op.dtype == torch.float32 and op.model_dtype == half
    assert any("float32" in n for n in op.notes)
    assert _same(mh, snap)

    spec = hessian_spectrum(mh, CE, (X.to(half), y), n_probes=2, steps=30, top_k=2)
    # the density ran its steps (it stopped after 1-2 when the breakdown level was 100 eps of bfloat16)
    assert bool(((spec.weights > 0).sum(1) >= 20).all())
    assert spec.provenance.extra["model_dtype"] == str(half) and spec.provenance.extra["dtype"] == "torch.float32"
    assert any("float32" in n for n in spec.provenance.extra["notes"])
    with pytest.raises(ValueError, match=r"bfloat16.*dtype=torch.float32"):
        HessianOperator(m.float(), CE, (X, y), dtype=torch.bfloat16)


# ----------------------------------------------------------------------------- sum reduction
def test_sum_reduced_loss_is_the_hessian_of_the_sum_for_every_micro_batch() -> None:
    m, X, y = _mlp(1, 100)
    m = m.double()
    X = X.double()
    total = nn.CrossEntropyLoss(reduction="sum")
    ref = HessianOperator(m, CE, (X, y), micro_batch_size=None)
    V = torch.randn(ref.n, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    mean = ref @ V
    for mb in (7, 32, None, "auto"):
        op = HessianOperator(m, total, (X, y), micro_batch_size=mb)
        torch.testing.assert_close(op @ V, len(y) * mean, rtol=1e-10, atol=1e-12)
        assert op.reduction == "sum" and any("sum" in n for n in op.notes)
    # batches given by the caller: the sum over all of them
    batches = [(X[:30], y[:30]), (X[30:], y[30:])]
    torch.testing.assert_close(
        HessianOperator(m, total, batches, micro_batch_size=None) @ V, len(y) * mean, rtol=1e-10, atol=1e-12
    )
    # a function with reduction="sum" is detected too
    op = HessianOperator(m, lambda o, t: nn.functional.cross_entropy(o, t, reduction="sum"), (X, y), micro_batch_size=9)
    torch.testing.assert_close(op @ V, len(y) * mean, rtol=1e-10, atol=1e-12)
    # the symptom: top-1 2874 / 409 / 160 at full batch / 256 / 100; now one value
    tops = [hessian_eigenpairs(HessianOperator(m, total, (X, y), micro_batch_size=mb), 1).values for mb in (None, 10)]
    torch.testing.assert_close(tops[0], tops[1], rtol=1e-9, atol=0)


def test_sum_reduced_loss_at_zero_loss_is_still_the_hessian_of_the_sum() -> None:
    """At a teacher's own outputs the loss is 0, a batch's and the batch twice alike: that read as a mean, and
    micro-batches of 5 and two given batches of 10 scaled the Hessian of the sum by 5/20 and 10/20."""
    m, X, _ = _mlp(2, 20)
    m, X = m.double(), X.double()
    with torch.no_grad():
        y = m(X)  # a regression whose targets the model fits exactly
    total = nn.MSELoss(reduction="sum")
    H = _whole_hessian(m, total, X, y)  # Gauss-Newton at zero residuals: positive semi-definite, nonzero
    assert float(torch.linalg.eigvalsh(H)[-1]) > 1
    for op in (
        HessianOperator(m, total, (X, y), micro_batch_size=5),
        HessianOperator(m, total, [(X[:10], y[:10]), (X[10:], y[10:])], micro_batch_size=None),
    ):
        assert op.reduction == "sum"
        torch.testing.assert_close(op.dense(), H)
    # a loss that refuses the moved outputs (BCELoss: probabilities in [0, 1]) keeps the first reading
    sat = nn.Sequential(nn.Linear(10, 1), nn.Sigmoid()).double()
    with torch.no_grad():
        sat[0].weight.zero_()
        sat[0].bias.fill_(100.0)  # outputs exactly 1 in float64: the loss of targets 1 is 0
    op = HessianOperator(sat, nn.BCELoss(), (X, torch.ones(20, 1, dtype=F64)), micro_batch_size=5)
    assert op.reduction == "mean" and op.dense().abs().max() == 0  # saturated: a flat loss


def test_loss_neither_mean_nor_sum_is_refused_when_batched() -> None:
    m, X, y = _mlp(2, 40)

    def odd(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return CE(o, t) * len(t) ** 0.5

    with pytest.raises(ValueError, match="neither a batch mean nor a batch sum"):
        HessianOperator(m, odd, (X, y), micro_batch_size=8)
    op = HessianOperator(m, odd, (X, y), micro_batch_size=None)  # one batch: well defined
    assert op.matvec(torch.zeros(op.n)).shape == (op.n,)


# ----------------------------------------------------------------------------- batch-dependent layers
class DropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x)))))


def _batch_stat_reference(model: nn.Module, batches: list) -> torch.Tensor:
    """Dense Hessian of sum_b (B_b/N) CE over batches, BatchNorm on batch statistics, Dropout off.

    A double-backward loop over unit vectors (torch.func.hessian is off for train-mode BatchNorm on this
    torch, see tests/test_hessian.py).
    """
    m = copy.deepcopy(model).double().eval()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.train()
            mod.track_running_stats = False  # pure batch statistics, no buffer writes
            mod.running_mean = mod.running_var = mod.num_batches_tracked = None
    layout = ParamLayout.from_model(m)
    n = sum(len(b[1]) for b in batches)
    theta = parameters_to_vector(m).requires_grad_(True)
    p = layout.unflatten(theta)
    loss = sum(len(yb) / n * CE(functional_call(m, p, (Xb.double(),)), yb) for Xb, yb in batches)
    (g,) = torch.autograd.grad(loss, theta, create_graph=True)
    eye = torch.eye(len(theta), dtype=F64)
    return torch.stack([torch.autograd.grad(g, theta, e, retain_graph=True)[0] for e in eye])


def test_dropout_is_off_in_train_mode_so_the_operator_is_deterministic_and_symmetric() -> None:
    torch.manual_seed(5)
    m, X, y = DropNet().double().train(), torch.randn(24, 6, dtype=F64), torch.randint(0, 3, (24,))
    snap = _state(m)
    op = HessianOperator(m, CE, (X, y), bn_mode="train")
    D1, D2 = op.dense(), op.dense()
    # graphs rebuilt for every product drew a new mask each time: 20% apart, asymmetric
    rebuilt = HessianOperator(m, CE, (X, y), bn_mode="train", cache=False).dense()
    torch.testing.assert_close(rebuilt, rebuilt.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(rebuilt, D1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(D1, _batch_stat_reference(m, [(X, y)]), rtol=1e-8, atol=1e-10)
    assert torch.equal(D1, D2)  # cached graphs: bitwise repeatable
    assert any("'drop' (Dropout)" in n for n in op.notes)
    assert _same(m, snap)


def test_untracked_batchnorm_keeps_the_batches_or_refuses_by_name() -> None:
    torch.manual_seed(6)
    m = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Tanh(), nn.Linear(8, 3))
    m = m.double().eval()
    X, y = torch.randn(40, 6, dtype=F64), torch.randint(0, 3, (40,))
    with pytest.raises(ValueError, match=r"'1'.*no running stats"):
        HessianOperator(m, CE, (X, y), micro_batch_size=16)
    ref = _batch_stat_reference(m, [(X, y)])
    for mb in ("auto", None):
        op = HessianOperator(m, CE, (X, y), micro_batch_size=mb)
        torch.testing.assert_close(op.dense(), ref, rtol=1e-8, atol=1e-10)
        assert op.micro_batch_size == 40 and any("batch statistics" in n for n in op.notes)
    batches = [(X[:25], y[:25]), (X[25:], y[25:])]
    op = HessianOperator(m, CE, batches, micro_batch_size="auto")
    torch.testing.assert_close(op.dense(), _batch_stat_reference(m, batches), rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- train-mode models
def test_train_mode_model_warns_once_naming_the_choice() -> None:
    torch.manual_seed(7)
    m, X, y = DropNet().train(), torch.randn(24, 6), torch.randint(0, 3, (24,))
    snap = _state(m)
    with pytest.warns(UserWarning, match=r"train mode.*eval-mode.*'bn'.*'drop'.*bn_mode='train'") as rec:
        spec = hessian_spectrum(m, CE, (X, y), n_probes=1, steps=5, top_k=1)
    assert len([w for w in rec if "train mode" in str(w.message)]) == 1
    assert spec.bn_mode == "eval" and any("train mode" in n for n in spec.provenance.extra["notes"])
    assert _same(m, snap)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HessianOperator(m, CE, (X, y), bn_mode="eval")  # chosen explicitly: no warning
        HessianOperator(m.eval(), CE, (X, y))  # eval-mode model: nothing to say
        HessianOperator(nn.Sequential(nn.Linear(6, 3)).train(), CE, (X, y))  # no mode-dependent layer
    assert np.isfinite(spec.top_eigenvalues).all()


def test_weighted_means_are_not_split_into_micro_batches() -> None:
    m, X, y = _mlp(3, 40)
    m, X = m.double(), X.double()
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2], dtype=F64))
    with pytest.raises(ValueError, match="per-sample"):
        HessianOperator(m, weighted, (X, y), micro_batch_size=8)
    y_ignored = y.clone()
    y_ignored[30] = -100  # outside the samples the detection looks at: found by the target scan
    with pytest.raises(ValueError, match="per-sample"):
        HessianOperator(m, CE, (X, y_ignored), micro_batch_size=8)

    def weighted_fn(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a closure: found by the halves
        return nn.functional.cross_entropy(o, t, weight=torch.tensor([1.0, 5.0, 0.2], dtype=F64))

    with pytest.raises(ValueError, match="per-sample"):
        HessianOperator(m, weighted_fn, (X, y), micro_batch_size=8)
    # one batch is exact; label smoothing is still a per-sample mean and may be split
    whole = HessianOperator(m, weighted, (X, y), micro_batch_size=None)
    V = torch.randn(whole.n, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert whole.micro_batch_size == 40 and (whole @ V).abs().sum() > 0
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(
        HessianOperator(m, smooth, (X, y), micro_batch_size=8) @ V,
        HessianOperator(m, smooth, (X, y), micro_batch_size=None) @ V,
        rtol=1e-10,
        atol=1e-12,
    )


def test_weighted_mean_closures_whose_weights_vary_past_the_first_samples_are_not_split() -> None:
    """A closure weighting only later samples unequally (ignored targets past the first 8, class weights on data
    sorted by class) passed the first samples' halves check, and micro-batches of 8 gave Hessians 10% and 52% off."""
    m, X, y = _mlp(3, 40)
    m, X = m.double(), X.double()
    w = torch.tensor([1.0, 5.0, 0.2], dtype=F64)

    def ignoring(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(o, t, ignore_index=-1)

    def weighted(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(o, t, weight=w)

    y_ignored = y.clone()
    y_ignored[20:30] = -1
    order = torch.argsort(y, stable=True)  # sorted by class: every micro-batch of 8 but one holds one class
    for loss_fn, (Xs, ys) in ((ignoring, (X, y_ignored)), (weighted, (X[order], y[order]))):
        with pytest.raises(ValueError, match="per-sample"):
            HessianOperator(m, loss_fn, (Xs, ys), micro_batch_size=8)
        whole = HessianOperator(m, loss_fn, (Xs, ys), micro_batch_size=None)
        torch.testing.assert_close(whole.dense(), _whole_hessian(m, loss_fn, Xs, ys))
    # a per-sample mean on the same sorted data is still split, and exact
    op = HessianOperator(m, nn.functional.cross_entropy, (X[order], y[order]), micro_batch_size=8)
    assert len(op._chunks) == 5
    torch.testing.assert_close(op.dense(), _whole_hessian(m, nn.functional.cross_entropy, X[order], y[order]))
