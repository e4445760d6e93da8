"""Bug hunt nu17: the analyzers and the Problem centre on realistic models, against brute force in float64.

References: the models' own losses (a float64 copy in eval mode), numpy's statistics, and invariants.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape import Problem
from landscape.analyze import (
    SaturationHistory,
    SaturationRecorder,
    StreamingHistogram,
    TrajectoryPCA,
    distance_from_init,
    pairwise_end_distances,
    random_plane,
    weight_matching,
)
from landscape.params import parameters_to_vector
from landscape.train import Trainer
from landscape.train.checkpoint import load_checkpoint, resume, save_checkpoint
from landscape.trajectory import Trajectory

F64 = torch.float64


class _BNNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> pool -> Linear: a small residual-free ResNet stem with running statistics."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _warm(net: nn.Module, seed: int) -> nn.Module:
    """``net`` with running statistics of its own (train-mode passes over shifted inputs), back in eval mode."""
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, 6, 6, generator=g) * 2 + 1)
    return net.eval()


def _image_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(24, 3, 6, 6, generator=g), torch.randint(0, 5, (24,), generator=g)


def _own_loss(net: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The mean cross-entropy of a float64 copy of ``net`` in eval mode (its running statistics)."""
    m = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(m(X.double()), y))


# ----------------------------------------------------------------------------- 1. random_plane around a snapshot
def test_random_plane_centred_on_a_snapshot_keeps_its_stored_statistics():
    """A snapshot as the centre is the model ``Trajectory.model_at`` rebuilds, as in every other slice.

    The plane's origin passed the snapshot's vector alone, so the problem model's running statistics were used.
    """
    X, y = _image_data()
    template, trained = _BNNet(0), _warm(_BNNet(1), 1)
    traj = Trajectory()
    traj.append_model(template, step=0)
    traj.append_model(trained, step=1)
    want = _own_loss(traj.model_at(template, 1), X, y)
    assert abs(want - _own_loss(template, X, y)) > 1e-3  # the statistics matter here
    res = random_plane(template, (X, y), [0.0], [0.0], center=traj[-1])
    np.testing.assert_allclose(res.metrics["loss"][0, 0], want, rtol=1e-5)


# ----------------------------------------------------------------------------- 2. StreamingHistogram.std
def test_streaming_histogram_std_matches_numpy_on_offset_values():
    """The population std of values far from zero: E[x^2] - E[x]^2 cancelled (15x too large, 0 for constants)."""
    g = torch.Generator().manual_seed(0)
    x = 1000.1 + 1e-6 * torch.randn(3000, dtype=F64, generator=g)
    h = StreamingHistogram(0, 2000, bins=10, exact_limit=0)
    for part in x.split(700):
        h.update(part)
    np.testing.assert_allclose(h.std, np.std(x.numpy()), rtol=1e-6)
    np.testing.assert_allclose(h.mean, np.mean(x.numpy()), rtol=1e-14)
    c = StreamingHistogram(-1, 1, bins=4)
    c.update(torch.full((1000,), 0.1))
    c.update(torch.full((10,), 0.1))
    assert c.std <= 1e-15


# ----------------------------------------------------------------------------- 3. SaturationRecorder in a resumed run
def _saturation_run(epochs: int, traj: Trajectory) -> Trainer:
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    cb = SaturationRecorder(X, histogram_epochs=[0, 2, 3])
    return Trainer(
        net, (X, y), epochs=epochs, batch_size=8, optimizer_kwargs={"lr": 0.1}, trajectory=traj, callbacks=[cb]
    )


def test_saturation_recorder_history_continues_in_a_resumed_run(tmp_path):
    """A run checkpointed after 2 epochs and resumed for a 3rd stores the history of the run trained whole.

    The recorder kept no state, so the resumed run called its on_train_begin: the resumed starting point was
    measured as epoch 0 ("before training") and the stored history became [0, 3], epochs 1 and 2 lost.
    """
    whole = Trajectory()
    _saturation_run(3, whole).fit()
    parts = Trajectory()
    first = _saturation_run(2, parts).fit()
    path = save_checkpoint(first, tmp_path / "ckpt.pt")
    resumed = resume(_saturation_run(3, parts), load_checkpoint(path)).fit()
    want = SaturationHistory.from_trajectory(whole)
    for got in (SaturationHistory.from_trajectory(parts), resumed.callbacks[0].history_):
        np.testing.assert_array_equal(got.epochs, [0.0, 1.0, 2.0, 3.0])
        for name in ("values", "lower", "upper", "mean", "std", "histogram_epochs", "histograms", "edges"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


# ----------------------------------------------------------------------------- 4. a list of numpy (D,) vectors
def test_snapshot_analyses_take_a_list_of_numpy_vectors():
    """A list of (D,) numpy vectors is read as the (T, D) array it stacks to (it was refused with a message that
    listed it as accepted: "pass ... a list of (D,) vectors")."""
    X = np.random.default_rng(0).standard_normal((6, 10)).cumsum(0)
    rows = list(X)
    np.testing.assert_allclose(
        TrajectoryPCA(2).fit(rows).transform(X), TrajectoryPCA(2).fit(X).transform(X), atol=1e-12
    )
    np.testing.assert_allclose(distance_from_init(rows), np.linalg.norm(X - X[0], axis=1), atol=1e-12)
    ends = pairwise_end_distances([rows, X[:3]])
    np.testing.assert_allclose(ends[0, 1], np.linalg.norm(X[-1] - X[2]), rtol=1e-12)


# ----------------------------------------------------------------------------- 5. a cast Problem after training
@pytest.mark.xfail(
    strict=True,
    reason="landscape/_weights.py (not this hunt's file): ModelWeights casts the model's tensors once; in the model's "
    "dtype they alias the live tensors, in another dtype they are a copy taken at construction, so a float64 "
    "Problem of a float32 model keeps the weights and running statistics it was built with",
)
def test_a_cast_problem_reads_the_model_as_it_is_now_like_an_uncast_one():
    """``Problem.loss()`` is the loss at "the model's point": after the model trains in place (an optimizer step, a
    BatchNorm running-statistics update), the float32 problem gives the new loss, the float64 one the old."""
    X, y = _image_data()
    net = _warm(_BNNet(0), 0)
    p32, p64 = Problem(net, (X, y)), Problem(net, (X, y), dtype=F64)
    before = _own_loss(net, X, y)
    np.testing.assert_allclose([float(p32.loss()), float(p64.loss())], before, rtol=1e-5)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net.train()
    nn.functional.cross_entropy(net(X * 2 + 1), y).backward()  # new running statistics too
    opt.step()
    net.eval()
    after = _own_loss(net, X, y)
    assert abs(after - before) > 1e-2
    np.testing.assert_allclose(float(p32.loss()), after, rtol=1e-5)  # holds on main: the float32 tensors are aliases
    np.testing.assert_allclose(float(p64.loss()), after, rtol=1e-10)


# ----------------------------------------------------------------------------- 6. PCA projection of a BatchNorm run
def test_pca_projection_true_loss_is_each_snapshots_own_loss():
    """``project(traj, loss_at=problem)``: a snapshot's true loss is the loss of the model ``model_at`` rebuilds.

    Every snapshot was evaluated on the problem model's running statistics (the last network's here), so the
    earlier snapshots of a BatchNorm run got another network's loss.
    """
    X, y = _image_data()
    nets = [_warm(_BNNet(i), i) for i in range(4)]
    traj = Trajectory()
    for i, net in enumerate(nets):
        traj.append_model(net, step=i)
    want = [_own_loss(traj.model_at(nets[0], i), X, y) for i in range(4)]
    pca = TrajectoryPCA(2).fit(traj)
    for prob in (Problem(nets[-1], (X, y)), Problem(nets[-1], [(X[:10], y[:10]), (X[10:], y[10:])], dtype=F64)):
        got = pca.project(traj, loss_at=prob, points_per_call=3).true_loss
        np.testing.assert_allclose(got, want, rtol=1e-5 if prob.dtype == torch.float32 else 1e-10)
    snaps = pca.project([traj[i] for i in range(4)], loss_at=Problem(nets[-1], (X, y))).true_loss
    np.testing.assert_allclose(snaps, want, rtol=1e-5)


# ----------------------------------------------------------------------------- 7. accuracy of a one-logit classifier
def _logit_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """A one-output (logit) binary classifier in float64, its data (integer labels) and its accuracy ``z > 0``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(50, 4, dtype=F64, generator=g), (torch.rand(50, generator=g) > 0.5).long()
    with torch.no_grad():
        acc = float(((net(X)[:, 0] > 0).long() == y).double().mean())
    assert abs(acc - float((y == 0).double().mean())) > 0.01  # "always class 0" would differ
    return net, X, y, acc


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(out[:, 0], y.double())


class _ByName(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_accuracy_of_a_single_logit_reads_its_sign():
    """Integer labels under a custom loss of a ``(N, 1)`` logit: the accuracy is the share of ``(z > 0) == y``.

    The argmax over one entry is class 0 for every sample, so the accuracy was the share of label 0.
    """
    net, X, y, acc = _logit_net()
    data = [{"x": X[:20], "labels": y[:20]}, {"x": X[20:], "labels": y[20:]}]
    prob = Problem(_ByName(net), data, _bce)
    assert prob.default_metrics() == ("loss", "accuracy")
    res = random_plane(prob, xs=[0.0], ys=[0.0])
    np.testing.assert_allclose(res.metrics["accuracy"][0, 0], acc, rtol=1e-12)


def test_accuracy_of_a_single_logit_on_the_fast_path():
    net, X, y, acc = _logit_net()
    res = random_plane(Problem(net, (X, y), _bce), xs=[0.0], ys=[0.0])
    np.testing.assert_allclose(res.metrics["accuracy"][0, 0], acc, rtol=1e-12)


# ----------------------------------------------------------------------------- 8. a permutation applied to numpy
def test_alignment_applies_to_a_numpy_vector_as_to_the_tensor():
    """A result's vectors are numpy (a line's anchors, a plane's center): ``apply`` raised AttributeError (.items)."""
    torch.manual_seed(0)
    a, b = (nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)) for _ in range(2))
    res = weight_matching(a, b)
    vec = parameters_to_vector(b).detach()
    got = res.apply(vec.numpy(), layout=b)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, parameters_to_vector(res.apply(b)).detach().numpy())
