"""Exact shortcuts of the curvature package (session 16): the same numbers with less work.

References: the dense float64 Hessian (``torch.func.hessian``) and the unshortened computation, bitwise.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from landscape.curvature import hessian as hessian_mod
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.tracker import CurvatureTracker
from tests.helpers import dense_hessian

F64 = torch.float64
CE = nn.functional.cross_entropy


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def _small_budget(monkeypatch) -> None:  # noqa: ANN001 - pytest fixture
    """A micro-batch budget small enough that ``"auto"`` splits 200 samples of the tiny network."""
    monkeypatch.setattr(hessian_mod, "_MICRO_BATCH_BYTES", 3000)


def test_auto_micro_batch_size_passed_back_gives_the_same_operator_at_other_weights(monkeypatch):
    _small_budget(monkeypatch)
    X, y = _data()
    first = HessianOperator(_net(0), CE, (X, y))
    size = first.auto_micro_batch_size
    assert size is not None and 16 <= size < len(y)  # "auto" probed and split the data
    other = _net(1)
    auto = HessianOperator(other, CE, (X, y))
    given = HessianOperator(other, CE, (X, y), micro_batch_size=size)
    assert auto.auto_micro_batch_size == size  # the probe sees shapes, not weights
    assert given.auto_micro_batch_size is None and given.micro_batch_size == auto.micro_batch_size
    V = torch.randn(auto.n, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(auto.matmat(V), given.matmat(V))  # the same micro-batches: bitwise the same products
    torch.testing.assert_close(given.matmat(V), dense_hessian(other, CE, X, y) @ V, rtol=1e-10, atol=1e-12)
    # batches kept as given (no re-split by "auto"): nothing to pass back
    assert HessianOperator(other, CE, (X, y), micro_batch_size=None).auto_micro_batch_size is None


def _tracker() -> CurvatureTracker:
    return CurvatureTracker(
        CE,
        _data(),
        k=2,
        tol=1e-8,
        warm_start=True,
        per_layer=False,
        trace_products=0,
        max_steps=None,
        block=None,
        bn_mode="eval",
        dtype=None,
        seed=0,
    )


def test_tracker_probes_the_micro_batch_size_once_per_network_and_its_rows_are_unchanged(monkeypatch):
    _small_budget(monkeypatch)
    probes = []
    probe = HessianOperator._auto_micro_batch

    def counted(self, X, y):  # noqa: ANN001, ANN202 - a spy on the probe
        probes.append(len(y))
        return probe(self, X, y)

    monkeypatch.setattr(HessianOperator, "_auto_micro_batch", counted)
    X, y = _data()
    nets = [_net(s) for s in range(3)]
    wider = nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 3)).double()  # another network: probed anew
    shortcut, plain = _tracker(), _tracker()
    for step, net in enumerate([*nets, wider]):
        shortcut(copy.deepcopy(net), float(step))
    assert len(probes) == 2  # the first network once, the wider one once
    for step, net in enumerate([*nets, wider]):
        plain._micro = None  # the unshortened computation: "auto" probes at every point
        plain(copy.deepcopy(net), float(step))
    assert len(probes) == 2 + 4
    for a, b, net in zip(shortcut.rows, plain.rows, [*nets, wider]):
        assert (a["values"] == b["values"]).all() and a["hvps"] == b["hvps"]  # bitwise the same rows
        top = torch.linalg.eigvalsh(dense_hessian(net, CE, X, y)).flip(0)[:2]
        torch.testing.assert_close(torch.as_tensor(a["values"]), top, rtol=1e-6, atol=1e-8)


def test_ball_measures_share_their_base_loss_and_passing_it_changes_nothing():
    from landscape.curvature import m_sharpness, worst_case_sharpness

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    ).eval()
    with torch.no_grad():  # running statistics away from the defaults, so eval mode matters
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 1, 6, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    kw = {"seed": 0, "progress": False}
    plain = worst_case_sharpness(net, CE, (X, y), radius=0.05, steps=3, **kw)
    ada = worst_case_sharpness(net, CE, (X, y), radius=0.5, steps=3, adaptive="elementwise", **kw)
    msh = m_sharpness(net, CE, (X, y), m=16, radius=0.05, steps=2, n_batches=3, **kw)
    # the invariant the shortcut rests on: L(theta) by the same pass, bitwise, whatever the perturbation's scale
    assert plain.base_loss == ada.base_loss == msh.base_loss
    with torch.no_grad():
        ref = CE(copy.deepcopy(net).double()(X.double()), y)  # brute force in float64
    assert abs(plain.base_loss - float(ref)) <= 1e-6 * float(ref)
    given = [
        worst_case_sharpness(
            net, CE, (X, y), radius=0.5, steps=3, adaptive="elementwise", base_loss=plain.base_loss, **kw
        ),
        m_sharpness(net, CE, (X, y), m=16, radius=0.05, steps=2, n_batches=3, base_loss=plain.base_loss, **kw),
    ]
    for a, b in zip((ada, msh), given):
        assert (a.value, a.stderr, a.base_loss) == (b.value, b.stderr, b.base_loss)
        assert (a.values == b.values).all()
        assert b.loss_evaluations < a.loss_evaluations  # one pass over the data fewer
