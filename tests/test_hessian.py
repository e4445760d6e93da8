"""Hessian operator, Lanczos, SLQ and trace estimators against dense float64 references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature import (
    HessianOperator,
    HessianSpectrum,
    hessian_directions,
    hessian_eigenpairs,
    hessian_spectrum,
    hessian_trace,
    hutchinson,
    hutchpp,
    rademacher,
    slq,
    spectrum_of,
    top_eigenpairs,
)
from landscape.params import ParamLayout, parameters_to_vector
from landscape.results import load_result
from tests.helpers import dense_hessian

F64 = torch.float64
LOSS = nn.CrossEntropyLoss()


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.fc2 = nn.Linear(5, 3)
        self.unused = nn.Linear(2, 2)  # gets no gradient: zero Hessian rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, stride=2, groups=2, bias=False)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.bn(self.conv1(x)))
        return self.fc(torch.tanh(self.conv2(x)).mean((2, 3)))


def _mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return TinyMLP(), torch.randn(13, 4), torch.randint(0, 3, (13,))


def _cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    m = TinyCNN()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    return m, torch.randn(13, 1, 5, 5), torch.randint(0, 3, (13,))


def _batches(X: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(X[:5], y[:5]), (X[5:7], y[5:7]), (X[7:], y[7:])]  # unequal sizes 5, 2, 6


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
    }


def _assert_untouched(model: nn.Module, snap: dict) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap["state"][k]), k
    assert [p.requires_grad for p in model.parameters()] == snap["requires_grad"]
    assert [m.training for m in model.modules()] == snap["training"]
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def cnn_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    m, X, y = _cnn()
    return m, X, y, dense_hessian(m, LOSS, X, y)


# ----------------------------------------------------------------------------- the HVP itself
@pytest.mark.parametrize("micro_batch_size", ["auto", None, 4])
def test_mlp_hvp_matches_torch_func_hessian(micro_batch_size: str | int | None) -> None:
    m, X, y = _mlp()
    H = dense_hessian(m, LOSS, X, y)
    snap = _snapshot(m)
    op = HessianOperator(m, LOSS, _batches(X, y), dtype=F64, micro_batch_size=micro_batch_size)
    D = op.dense()
    torch.testing.assert_close(D, H, rtol=1e-10, atol=1e-12)
    unused = ParamLayout.from_model(m).layer_index("unused")
    assert torch.count_nonzero(D[unused]) == 0 and torch.count_nonzero(H[unused]) == 0
    assert op.hvp_count == op.n
    _assert_untouched(m, snap)


@pytest.mark.parametrize(
    ("fast_ops", "micro_batch_size", "channels_last"), [(True, None, False), (True, 5, True), (False, 5, False)]
)
def test_cnn_batchnorm_hvp_matches_torch_func_hessian(cnn_case, fast_ops, micro_batch_size, channels_last) -> None:
    # conv1 (one input channel: the unfolded weight-gradient path) feeds an eval BatchNorm (folded into it)
    m, X, y, H = cnn_case
    m.train()  # the caller's mode must survive an eval-mode Hessian
    snap = _snapshot(m)
    op = HessianOperator(
        m,
        LOSS,
        _batches(X, y),
        dtype=F64,
        fast_ops=fast_ops,
        micro_batch_size=micro_batch_size,
        channels_last=channels_last,
    )
    torch.testing.assert_close(op.dense(), H, rtol=1e-10, atol=1e-12)
    _assert_untouched(m, snap)
    m.eval()


def _grad_fn_names(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


NARROW_LOSSES = {
    "mean": (nn.CrossEntropyLoss(), True),
    "sum": (nn.CrossEntropyLoss(reduction="sum"), True),
    "class weights": (nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.0, 2.0], dtype=F64)), True),
    "ignore_index": (nn.CrossEntropyLoss(ignore_index=1), True),
    "F.log_softmax": (lambda out, y: nn.functional.nll_loss(nn.functional.log_softmax(out, 1), y), True),
    "Tensor.log_softmax": (lambda out, y: nn.functional.nll_loss(out.log_softmax(dim=-1), y), True),
    "label smoothing": (nn.CrossEntropyLoss(label_smoothing=0.1), False),  # the native path
    "probability targets": (
        lambda out, y: nn.functional.cross_entropy(out, nn.functional.one_hot(y, 3).to(F64)),
        False,
    ),
    "reduction none in a closure": (
        lambda out, y: (nn.functional.cross_entropy(out, y, reduction="none") ** 2).mean(),
        True,
    ),
    "weights, sum, some ignored": (
        lambda out, y: nn.functional.cross_entropy(
            out,
            torch.where(torch.arange(len(y)) % 3 == 0, -100, y),
            torch.tensor([0.5, 1.0, 2.0], dtype=F64),
            reduction="sum",
        ),
        True,
    ),
}


@pytest.mark.parametrize("case", list(NARROW_LOSSES))
def test_narrow_class_cross_entropy_kernels_keep_the_hessian_exact(case: str) -> None:
    # 300 rows of 3 classes: the fast path writes log-softmax as z - logsumexp(z) (the native CPU kernel is
    # slow on class axes narrower than 16); the Hessian must equal torch.func's through the native ops
    from landscape.curvature._kernels import CurvatureOps

    loss, routed = NARROW_LOSSES[case]
    torch.manual_seed(4)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X, y = torch.randn(300, 4, dtype=F64), torch.randint(0, 3, (300,))
    op = HessianOperator(m, loss, [(X, y)], dtype=F64, micro_batch_size=None)
    torch.testing.assert_close(op.dense(), dense_hessian(m, loss, X, y), rtol=1e-10, atol=1e-12)
    z = m(X)
    with CurvatureOps():
        names = _grad_fn_names(loss(z, y))
    assert ("LogSoftmaxBackward0" not in names) == routed, names


def test_narrow_class_cross_entropy_over_k_dimensional_outputs_keeps_the_hessian_exact() -> None:
    # (N, C, d) logits with (N, d) targets: the class axis is dim 1, as torch's cross-entropy reads it
    torch.manual_seed(5)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3 * 2), nn.Unflatten(1, (3, 2))).double()
    X, y = torch.randn(300, 4, dtype=F64), torch.randint(0, 3, (300, 2))
    for loss in (nn.CrossEntropyLoss(), lambda out, t: nn.functional.nll_loss(out.log_softmax(dim=1), t)):
        op = HessianOperator(m, loss, [(X, y)], dtype=F64, micro_batch_size=None)
        torch.testing.assert_close(op.dense(), dense_hessian(m, loss, X, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda z: torch.log_softmax(z, 1, torch.float64),
        lambda z: z.log_softmax(1, torch.float64),
        lambda z: nn.functional.log_softmax(z, 1, 3, torch.float64),
    ],
    ids=["torch", "Tensor", "functional"],
)
def test_narrow_log_softmax_keeps_a_dtype_passed_by_position(call) -> None:
    # a float32 model asking for its log-probabilities in float64 gets them in float64 under the kernels too
    from landscape.curvature._kernels import CurvatureOps

    z = torch.randn(300, 3)
    want = call(z)
    with CurvatureOps():
        got = call(z)
    assert got.dtype == want.dtype == F64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_dilated_one_channel_conv_and_shared_bn_input_match_torch_func_hessian(
    monkeypatch, channels_last: bool
) -> None:
    import landscape.curvature._kernels as kernels

    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 3, 3, stride=2, dilation=2, padding=1)
            self.bn1 = nn.BatchNorm2d(3)
            self.conv2 = nn.Conv2d(3, 2, 2, bias=False)
            self.bn2 = nn.BatchNorm2d(2, affine=False)
            self.fc = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv1(x)
            h = torch.relu(self.bn1(h)) + 0.5 * torch.tanh(h)  # the pre-BN output is used too: no fold shortcut
            return self.fc(torch.tanh(self.bn2(self.conv2(h))).mean((2, 3)))

    m = Net()
    for bn in (m.bn1, m.bn2):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    X, y = torch.randn(6, 1, 9, 9), torch.randint(0, 3, (6,))
    used = []
    from_cols = kernels.conv_from_cols  # the one-channel convolution's R-forward term, from the unfolded input
    monkeypatch.setattr(kernels, "conv_from_cols", lambda *a: used.append(1) or from_cols(*a))
    op = HessianOperator(m, LOSS, (X, y), dtype=F64, channels_last=channels_last)
    torch.testing.assert_close(op.dense(), dense_hessian(m, LOSS, X, y), rtol=1e-10, atol=1e-12)
    assert len(used) == 2 * op.n  # per product: conv1 itself (feeds tanh) and its BN-folded twin


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pooled_first_convolutions_match_torch_func_hessian(monkeypatch, channels_last: bool) -> None:
    # Convolutions of the input followed by max-pooling take the gathered path (PooledConv); the
    # Hessian must be the same function's: BN folded, ReLU before or after pooling, in-place ReLU,
    # overlapping padded ceil-mode pooling, and a pooled conv whose ReLU output is used elsewhere too.
    import landscape.curvature._kernels as kernels

    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(2, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.b = nn.Conv2d(2, 2, 3, stride=2, bias=False)
            self.c = nn.Conv2d(2, 2, 2)
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = nn.functional.max_pool2d(torch.relu(self.bn(self.a(x))), 2)
            b = torch.max_pool2d(self.b(x), 3, 2, 1, 1, True)  # no ReLU; overlapping, padded, ceil mode
            rc = nn.functional.relu(self.c(x), inplace=True)
            c = nn.MaxPool2d(2)(rc)
            side = torch.tanh(rc).mean((1, 2, 3))  # the ReLU output is also used unpooled
            feats = [torch.tanh(t).mean((2, 3)) for t in (a, b, c)]
            return self.fc(torch.cat([*feats, side[:, None]], 1))

    m = Net()
    m.bn.running_mean.uniform_(-0.5, 0.5)
    m.bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    X, y = torch.randn(6, 2, 9, 9), torch.randint(0, 3, (6,))
    used = []
    apply = kernels.PooledConv.apply
    monkeypatch.setattr(kernels.PooledConv, "apply", lambda *a: used.append(1) or apply(*a))
    op = HessianOperator(m, LOSS, (X, y), dtype=F64, channels_last=channels_last, micro_batch_size=4)
    torch.testing.assert_close(op.dense(), dense_hessian(m, LOSS, X, y), rtol=1e-10, atol=1e-12)
    assert len(used) == 3 * 2  # three pooled convolutions in each of the two micro-batches


@pytest.mark.parametrize("channels_last", [False, True])
def test_small_map_convolutions_and_strided_shortcuts_match_torch_func_hessian(
    monkeypatch, channels_last: bool
) -> None:
    # Convolutions whose input has no more positions than the kernel has taps run as dense matrix products
    # (BN folded into one, a bias and dilation on another, a 1-D one); a 1x1 stride-2 shortcut takes its input
    # gradient from a matrix product scattered onto the strided positions (channels-last only).
    import landscape.curvature._kernels as kernels

    torch.manual_seed(5)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 2, 3, padding=1)
            self.down = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)  # 4x4 -> 2x2: 16 positions > 9 taps
            self.short = nn.Conv2d(2, 3, 1, stride=2, bias=False)
            self.bn = nn.BatchNorm2d(3)
            self.small = nn.Conv2d(3, 2, 3, padding=1, bias=False)  # on 2x2: dense
            self.bn2 = nn.BatchNorm2d(2)
            self.dilated = nn.Conv2d(2, 3, 3, padding=2, dilation=2)  # on 2x2, with a bias: dense
            self.line = nn.Conv1d(3, 2, 3, padding=1)  # on length 2: dense
            self.fc = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.stem(x))
            h = torch.relu(self.bn(self.down(h)) + self.short(h))
            h = torch.tanh(self.dilated(torch.relu(self.bn2(self.small(h)))))
            return self.fc(torch.tanh(self.line(h.mean(2))).mean(2))

    m = Net()
    for bn in (m.bn, m.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    m.eval()
    X, y = torch.randn(7, 1, 4, 4), torch.randint(0, 3, (7,))
    dense, scattered = [], []
    dense_conv, strided = kernels._dense_conv, kernels._strided_pointwise_input_grad
    monkeypatch.setattr(kernels, "_dense_conv", lambda *a: dense.append(a[1].dim()) or dense_conv(*a))

    def scatter(*a: object) -> object:
        scattered.append(strided(*a))
        return scattered[-1]

    monkeypatch.setattr(kernels, "_strided_pointwise_input_grad", scatter)
    op = HessianOperator(m, LOSS, (X, y), dtype=F64, channels_last=channels_last)
    torch.testing.assert_close(op.dense(), dense_hessian(m, LOSS, X, y), rtol=1e-10, atol=1e-12)
    assert sorted(dense) == [3, 4, 4, 4]  # small (and its BN-folded twin), dilated, line; not down or stem
    # the graph's own gradient, then two input gradients per product
    assert sum(g is not None for g in scattered) == (1 + 2 * op.n if channels_last else 0)


def test_conv1d_dilation_and_string_padding_match_torch_func_hessian() -> None:
    torch.manual_seed(2)
    m = nn.Sequential(
        nn.Conv1d(2, 2, 3, dilation=2, padding=2),
        nn.Tanh(),
        nn.Conv1d(2, 3, 3, padding="same"),
        nn.Tanh(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
    )
    X, y = torch.randn(7, 2, 9), torch.randint(0, 3, (7,))
    op = HessianOperator(m, LOSS, (X, y), dtype=F64)
    torch.testing.assert_close(op.dense(), dense_hessian(m, LOSS, X, y), rtol=1e-10, atol=1e-12)


def test_rebuilt_graphs_equal_cached(cnn_case) -> None:
    m, X, y, H = cnn_case
    V = torch.randn(H.shape[0], 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    cached = HessianOperator(m, LOSS, _batches(X, y), dtype=F64, micro_batch_size=None, cache=True)
    rebuilt = HessianOperator(m, LOSS, _batches(X, y), dtype=F64, micro_batch_size=None, cache=False)
    torch.testing.assert_close(cached.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rebuilt.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
    assert cached.cached and not rebuilt.cached
    torch.testing.assert_close(rebuilt.matvec(V[:, 0]), H @ V[:, 0], rtol=1e-10, atol=1e-12)


def test_train_mode_is_the_batch_statistics_hessian(cnn_case) -> None:
    # Reference: central differences of first-order autograd gradients (torch.func.hessian is wrong for
    # train-mode BatchNorm on torch 2.13 CPU: off by 7e-2 against these differences).
    m, X, y, _ = cnn_case
    snap = _snapshot(m)
    layout = ParamLayout.from_model(m)
    m64 = copy.deepcopy(m).double().train()
    m64.bn.track_running_stats, m64.bn.running_mean, m64.bn.running_var = False, None, None  # pure batch stats
    theta = parameters_to_vector(m64)

    def grad(t: torch.Tensor) -> torch.Tensor:
        t = t.clone().requires_grad_(True)
        loss = sum(
            len(yb) / len(y) * LOSS(functional_call(m64, layout.unflatten(t), (Xb.double(),)), yb)
            for Xb, yb in _batches(X, y)
        )
        return torch.autograd.grad(loss, t)[0]

    eps = 1e-6
    ref = torch.stack([(grad(theta + eps * e) - grad(theta - eps * e)) / (2 * eps) for e in torch.eye(len(theta))], 1)
    op = HessianOperator(m, LOSS, _batches(X, y), bn_mode="train", dtype=F64)
    torch.testing.assert_close(op.dense(), ref, rtol=1e-6, atol=1e-8)
    _assert_untouched(m, snap)
    with pytest.raises(ValueError, match="batch statistics"):
        HessianOperator(m, LOSS, (X, y), bn_mode="train", micro_batch_size=4)


def test_subset_is_the_dense_sub_block(cnn_case) -> None:
    m, X, y, H = cnn_case
    op = HessianOperator(m, LOSS, (X, y), params=["conv2", "fc.bias"], dtype=F64)
    assert op.param_names == ["conv2.weight", "fc.bias"]
    idx = op.index
    torch.testing.assert_close(op.dense(), H[idx][:, idx], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="layers"):
        HessianOperator(m, LOSS, (X, y), params=["nope"])


def test_scipy_operator_and_bad_inputs(cnn_case) -> None:
    from scipy.sparse.linalg import eigsh

    m, X, y, H = cnn_case
    op = HessianOperator(m, LOSS, (X, y), dtype=F64)
    top = eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(top), torch.linalg.eigvalsh(H)[-2:].numpy(), rtol=1e-8)
    with pytest.raises(ValueError, match="bn_mode"):
        HessianOperator(m, LOSS, (X, y), bn_mode="frozen")
    with pytest.raises(ValueError, match="shape"):
        op.matvec(torch.zeros(3))
    with pytest.raises(ValueError, match="scalar"):
        HessianOperator(m, nn.CrossEntropyLoss(reduction="none"), (X, y)).matvec(torch.zeros(op.n))


# ----------------------------------------------------------------------------- eigenpairs and directions
def test_top_k_matches_eigvalsh(cnn_case) -> None:
    m, X, y, H = cnn_case
    snap = _snapshot(m)
    op = HessianOperator(m, LOSS, (X, y), dtype=F64)
    pairs = hessian_eigenpairs(op, 4, tol=1e-10)
    exact = torch.linalg.eigvalsh(H)
    torch.testing.assert_close(pairs.values, exact.flip(0)[:4], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(H @ pairs.vectors, pairs.vectors * pairs.values, rtol=0, atol=1e-6)
    assert pairs.converged and pairs.products == op.hvp_count < op.n
    low = hessian_eigenpairs(op, 2, which="SA", tol=1e-10)
    torch.testing.assert_close(low.values, exact[:2], rtol=1e-8, atol=1e-10)
    _assert_untouched(m, snap)


def test_lanczos_finds_repeated_eigenvalues_after_breakdown() -> None:
    # diag(5, 5, 3, 1, 1, ...): Krylov spaces see one copy of each value, the restart finds the second 5.
    d = torch.tensor([5.0, 5.0, 3.0] + [1.0] * 7, dtype=F64)
    pairs = top_eigenpairs(lambda V: d[:, None] * V, 10, 3, tol=1e-10)
    torch.testing.assert_close(pairs.values, torch.tensor([5.0, 5.0, 3.0], dtype=F64))


@pytest.mark.parametrize("basis_dtype", [F64, torch.float32])
def test_lanczos_stops_each_probe_at_its_own_invariant_subspace_and_leaves_v0_alone(basis_dtype) -> None:
    # diag(1 x 20, 2 x 20, 5 x 10): a probe's Krylov space holds one vector per distinct eigenvalue it touches,
    # so probe 0 (an eigenvector) breaks down after 1 step, probe 1 (eigenvalues 1 and 2) after 2, probe 2 after 3,
    # while the other recurrences go on; the Ritz values are those eigenvalues exactly
    from landscape.curvature.lanczos import lanczos, ritz

    d = torch.tensor([1.0] * 20 + [2.0] * 20 + [5.0] * 10, dtype=F64)
    g = torch.Generator().manual_seed(0)
    probes = torch.randn(3, 50, generator=g, dtype=F64)
    probes[0, 1:] = 0.0
    probes[1, 40:] = 0.0
    v0 = probes.T  # (n, p) with contiguous rows: its transpose is the recurrences' own layout
    for start in (v0, v0[:, 2:].contiguous()):  # three probes, and one (an (n, 1) column)
        before = start.clone()
        run = lanczos(lambda V: d[:, None] * V, start, 8, keep_basis=True, basis_dtype=basis_dtype)
        assert torch.equal(start, before)  # the caller's start vectors are not normalized in place
        expected = [[1.0], [1.0, 2.0], [1.0, 2.0, 5.0]][3 - start.shape[1] :]
        assert run.lengths.tolist() == [len(e) for e in expected]
        tol = 1e-12 if basis_dtype == F64 else 1e-5
        for j, e in enumerate(expected):
            theta, _ = ritz(run.alpha[j], run.beta[j], len(e))
            np.testing.assert_allclose(theta, e, rtol=0, atol=tol)
            Q = run.basis[j].to(F64)
            torch.testing.assert_close(Q[: len(e)] @ Q[: len(e)].T, torch.eye(len(e), dtype=F64), rtol=0, atol=tol)
            assert not Q[len(e) :].any()  # rows past a breakdown stay zero


def test_directions_are_full_length_eigenvectors(cnn_case) -> None:
    m, X, y, H = cnn_case
    op = HessianOperator(m, LOSS, (X, y), params="conv2", dtype=F64)
    d = hessian_directions(op, 2, tol=1e-10)
    layout = ParamLayout.from_model(m)
    assert d.shape == (2, layout.numel)
    mask = torch.zeros(layout.numel, dtype=torch.bool)
    mask[op.index] = True
    assert torch.count_nonzero(d[:, ~mask]) == 0
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2, dtype=F64))
    sub = H[op.index][:, op.index]
    lam = torch.linalg.eigvalsh(sub).flip(0)[:2]
    torch.testing.assert_close(sub @ d[:, mask].T, d[:, mask].T * lam, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- SLQ density
def test_slq_density_nodes_weights_and_trace(cnn_case) -> None:
    m, X, y, H = cnn_case
    op = HessianOperator(m, LOSS, (X, y), dtype=F64)
    spec = spectrum_of(op, n_probes=3, steps=12, top_k=2, seed=3)
    exact = torch.linalg.eigvalsh(H).numpy()
    assert spec.nodes.shape == spec.weights.shape == (3, 12)
    np.testing.assert_allclose(spec.weights.sum(1), 1.0, rtol=1e-12)
    span = exact[-1] - exact[0]
    assert spec.nodes.min() >= exact[0] - 1e-9 * span and spec.nodes.max() <= exact[-1] + 1e-9 * span
    grid, rho = spec.density()
    assert abs(np.trapezoid(rho, grid) - 1.0) < 1e-6
    # Gauss quadrature is exact for degree 1: the SLQ trace is Hutchinson's with the same probes.
    Z = rademacher(op.n, 3, torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_allclose(spec.trace["slq"], np.mean(np.einsum("ip,ij,jp->p", Z, H.numpy(), Z)), rtol=1e-9)
    assert spec.bn_mode == "eval" and spec.hvp_count == op.hvp_count
    np.testing.assert_allclose(spec.top_eigenvalues, exact[::-1][:2], rtol=1e-6)


def test_slq_with_steps_past_dimension_recovers_the_spectrum() -> None:
    A = torch.diag(torch.arange(1.0, 9.0, dtype=F64))
    Q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=F64, generator=torch.Generator().manual_seed(0)))
    A = Q @ A @ Q.T
    nodes, weights = slq(lambda V: A @ V, 8, n_probes=2, steps=50)
    for j in range(2):  # a breakdown ends each run at step 8 with every eigenvalue as a node
        used = np.sort(nodes[j][weights[j] > 1e-14])
        np.testing.assert_allclose(used, np.arange(1.0, 9.0), atol=1e-8)


# ----------------------------------------------------------------------------- traces
def _spd(n: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=g))
    return Q @ torch.diag(1.0 / torch.arange(1, n + 1, dtype=F64) ** 1.5) @ Q.T


def test_hutchinson_error_shrinks_with_probes() -> None:
    A = _spd()
    exact = float(torch.trace(A))

    def mean_err(probes: int) -> float:
        errs = [
            abs(hutchinson(lambda V: A @ V, 60, probes, generator=torch.Generator().manual_seed(s)).estimate - exact)
            for s in range(20)
        ]
        return float(np.mean(errs))

    assert mean_err(160) < 0.5 * mean_err(10)


def test_hutchpp_beats_hutchinson_and_is_exact_with_full_sketch() -> None:
    A = _spd()
    exact = float(torch.trace(A))
    err_pp = np.mean(
        [
            abs(hutchpp(lambda V: A @ V, 60, 30, generator=torch.Generator().manual_seed(s)).estimate - exact)
            for s in range(20)
        ]
    )
    err_h = np.mean(
        [
            abs(hutchinson(lambda V: A @ V, 60, 30, generator=torch.Generator().manual_seed(s)).estimate - exact)
            for s in range(20)
        ]
    )
    assert err_pp < err_h
    full = hutchpp(lambda V: A @ V, 60, 180)  # a budget of n or more: the n unit vectors, exact
    assert abs(full.estimate - exact) < 1e-10 * abs(exact) and full.products == 60 and full.exact


def test_operator_trace_estimators() -> None:
    m, X, y = _mlp()
    op = HessianOperator(m, LOSS, _batches(X, y), dtype=F64)
    exact = float(torch.trace(dense_hessian(m, LOSS, X, y)))
    assert abs(hessian_trace(op, 3 * op.n, method="hutchpp").estimate - exact) < 1e-9 * abs(exact)
    est = hessian_trace(op, op.n - 1, method="hutchinson", seed=1)  # below n products: stochastic
    assert not est.exact and abs(est.estimate - exact) < 4 * est.stderr
    with pytest.raises(ValueError, match="hutchpp"):
        hessian_trace(op, 10, method="girard")


def test_one_step_slq_trace_and_its_stderr_are_hutchinsons_on_the_same_probes() -> None:
    """One Lanczos step gives ``n alpha_1 = z^T H z`` per probe: SLQ's trace is then Hutchinson's on the same
    Rademacher probes, and so is its standard error (the sample std, ``ddof=1``, over ``sqrt(p)``); SLQ's was the
    population std's, ``sqrt(3 / 4)`` of it for 4 probes."""
    m, X, y = _mlp()
    op = HessianOperator(m, LOSS, (X, y), dtype=F64)
    spec = spectrum_of(op, n_probes=4, steps=1, top_k=0, seed=3)
    samples = [float(z @ op.matvec(z)) for z in rademacher(op.n, 4, torch.Generator().manual_seed(3)).T]
    est = hutchinson(op.matmat, op.n, 4, generator=torch.Generator().manual_seed(3))
    assert spec.trace["slq"] == pytest.approx(np.mean(samples), rel=1e-12) == est.estimate
    assert spec.trace_stderr["slq"] == pytest.approx(np.std(samples, ddof=1) / 2, rel=1e-10)
    assert spec.trace_stderr["slq"] == pytest.approx(est.stderr, rel=1e-10)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"n_probes": 0}, "n_probes must be a positive integer, got 0"),  # was ZeroDivisionError
        ({"top_k": -1}, "top_k must be a non-negative integer .*, got -1"),  # was silently none
        ({"trace_products": -3}, "trace_products must be a non-negative integer .*, got -3"),
        ({"n_probes": 1.5}, "n_probes must be a positive integer, got 1.5"),
    ],
)
def test_spectrum_counts_are_checked_by_name(bad, message) -> None:
    m, X, y = _mlp()
    with pytest.raises(ValueError, match=message):
        hessian_spectrum(m, LOSS, (X, y), **{"n_probes": 1, "steps": 3, "top_k": 0, **bad})


# ----------------------------------------------------------------------------- result and plots
def test_hessian_spectrum_end_to_end_saves_and_plots(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    m, X, y = _mlp()
    snap = _snapshot(m)
    spec = hessian_spectrum(m, LOSS, (X, y), n_probes=2, steps=10, top_k=2, trace_products=9, dtype=F64)
    _assert_untouched(m, snap)
    assert set(spec.trace) == {"slq", "hutchinson", "hutchpp"}
    back = load_result(spec.save(tmp_path / "spec"))
    assert isinstance(back, HessianSpectrum)
    np.testing.assert_array_equal(back.nodes, spec.nodes)
    assert back.trace == spec.trace and back.bn_mode == "eval" and back.param_names == spec.param_names

    from landscape.plot import plot_spectrum_density

    fig = plot_spectrum_density([spec, back], ["plain", "championship"])
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"
    assert np.all(np.asarray(fig.data[0].y) > 0)
    mfig = plot_spectrum_density(spec, backend="matplotlib")
    assert mfig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="plotly"):
        plot_spectrum_density(spec, backend="bokeh")


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_spectrum_legend_names_the_batchnorm_mode_only_for_a_model_with_batchnorm(tmp_path, backend) -> None:
    # A model without BatchNorm was labelled "(eval BN)", a mode that changes nothing for it.
    import dataclasses

    from landscape.plot import plot_spectrum_density

    m, X, y = _mlp()
    c, Xc, yc = _cnn()  # TinyCNN has a BatchNorm2d
    kw = {"n_probes": 1, "steps": 5, "top_k": 0, "trace_products": 0, "dtype": F64}
    plain = hessian_spectrum(m, LOSS, (X, y), **kw)
    bn = load_result(hessian_spectrum(c, LOSS, (Xc, yc), bn_mode="train", **kw).save(tmp_path / "bn"))
    assert plain.provenance.extra["batchnorm"] is False and bn.provenance.extra["batchnorm"] is True
    old = dataclasses.replace(plain, provenance=dataclasses.replace(plain.provenance, extra={}))  # unrecorded
    fig = plot_spectrum_density([plain, bn, old], ["mlp", "cnn", "saved before"], backend=backend)
    if backend == "plotly":
        names = [t.name for t in fig.data]
    else:
        names = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert names == ["mlp", "cnn (train BN)", "saved before (eval BN)"]


def test_spectrum_provenance_holds_every_setting_its_numbers_depend_on(tmp_path) -> None:
    """The provenance lacked ``tol`` (the top eigenvalues' stopping rule), ``trace_products`` (the Hutchinson and
    Hutch++ estimates) and the memory budget (which stores the Lanczos basis in float32 when small): a saved
    spectrum could not be rerun. Rerun from the loaded provenance, every number is the same, bitwise."""
    m, X, y = _mlp()
    spec = hessian_spectrum(m, LOSS, (X, y), n_probes=2, steps=8, top_k=2, trace_products=6, tol=1e-2, seed=4,
                            memory_budget=2000)  # fmt: skip
    extra = load_result(spec.save(tmp_path / "spec")).provenance.extra
    assert extra["basis_dtype"] == "torch.float32"  # 2000 bytes hold no float64 basis of 2 x 8 x 38
    keys = ("n_probes", "steps", "top_k", "trace_products", "tol", "micro_batch_size", "memory_budget")
    again = hessian_spectrum(m, LOSS, (X, y), seed=spec.provenance.seed, **{k: extra[k] for k in keys})
    np.testing.assert_array_equal(again.nodes, spec.nodes)
    np.testing.assert_array_equal(again.top_eigenvalues, spec.top_eigenvalues)
    assert again.trace == spec.trace
    # the defaults give other numbers: the settings matter
    other = hessian_spectrum(m, LOSS, (X, y), n_probes=2, steps=8, top_k=2, trace_products=9, seed=4)
    assert other.trace["hutchpp"] != spec.trace["hutchpp"] and not np.array_equal(other.nodes, spec.nodes)


class _TwoInputs(nn.Module):
    """``model(x, z)``: a problem the (X, y) kernels do not take (the operator runs the problem's batches)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.a(x) + self.b(z)))


@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float16])
def test_operator_dtype_other_than_the_problems_on_its_general_path(model_dtype) -> None:
    """HessianOperator(problem, dtype=float64) of a float32 two-input problem, and the float32 upcast of a float16
    one, ran float64 (float32) weights on the problem's float32 (float16) batches: a dtype error. Reference: the
    dense Hessian of the same (rounded) weights and inputs in float64, by torch.autograd.functional.hessian."""
    from landscape.problem import Problem

    torch.manual_seed(0)
    net = _TwoInputs().to(model_dtype)
    X, Z, y = torch.randn(12, 3), torch.randn(12, 2), torch.randint(0, 3, (12,))
    ref_net = copy.deepcopy(net).double()
    layout = ParamLayout.from_model(ref_net)

    def loss(v: torch.Tensor) -> torch.Tensor:
        # the problem holds its data in the model's dtype: the same rounded inputs
        out = functional_call(ref_net, layout.unflatten(v), (X.to(model_dtype).double(), Z.to(model_dtype).double()))
        return nn.functional.cross_entropy(out, y)

    H = torch.autograd.functional.hessian(loss, parameters_to_vector(ref_net))
    problem = Problem(net, (X, Z, y))
    op = HessianOperator(problem, dtype=torch.float64) if model_dtype == torch.float32 else HessianOperator(problem)
    tol = 1e-12 if model_dtype == torch.float32 else 1e-6  # float32 arithmetic on the float16 weights
    torch.testing.assert_close(op.dense(), H, rtol=0, atol=tol)
