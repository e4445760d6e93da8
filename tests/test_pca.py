import copy
import types

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from landscape.analyze import (
    ProjectedPath,
    TrajectoryPCA,
    distance_from_init,
    distance_from_origin,
    make_loss_at,
    pairwise_end_distances,
)
from landscape.params import ParamLayout, functional_forward, parameters_to_vector
from landscape.results import load_result
from landscape.train import Trainer
from landscape.trajectory import Trajectory


def _walk(t=25, d=300, seed=0, offset=3.0):
    g = torch.Generator().manual_seed(seed)
    # anisotropic random walk far from the origin: a few dominant directions, like a training path
    steps = torch.randn(t, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d, dtype=torch.float64)
    return steps.cumsum(0) + offset


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def _recorded(path=None, seed=0, epochs=12):
    traj = Trajectory.create(path)
    Trainer(
        _net(),
        _data(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9),
        epochs=epochs,
        batch_size=16,
        seed=seed,
        trajectory=traj,
    ).fit()
    return traj


def _assert_matches_sklearn(pca, X, k):
    sk = PCA(n_components=k, svd_solver="full").fit(X)
    np.testing.assert_allclose(pca.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(pca.explained_variance_, sk.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(pca.singular_values_, sk.singular_values_, rtol=1e-9)
    np.testing.assert_allclose(pca.mean_.numpy(), sk.mean_, rtol=1e-12, atol=1e-12)
    comp = pca.components_.numpy()
    signs = np.sign((comp * sk.components_).sum(1))
    assert np.all(np.abs(signs) == 1)
    np.testing.assert_allclose(comp * signs[:, None], sk.components_, atol=1e-9)
    proj = sk.transform(X)
    np.testing.assert_allclose(pca.transform(torch.from_numpy(X)) * signs, proj, atol=1e-8 * np.abs(proj).max())
    np.testing.assert_allclose(pca.coordinates_ * signs, proj, atol=1e-8 * np.abs(proj).max())


@pytest.mark.parametrize("block_size", [None, 1, 4, 7])
def test_matches_sklearn_on_random_walk_for_any_block_size(block_size):
    X = _walk()
    pca = TrajectoryPCA(n_components=4, block_size=block_size).fit(X)
    _assert_matches_sklearn(pca, X.numpy(), 4)


def test_streamed_equals_in_memory_and_float32_input():
    X = _walk(t=31, d=500).float()
    whole = TrajectoryPCA(3, block_size=10_000).fit(X)
    streamed = TrajectoryPCA(3, block_size=2).fit(X)
    tiny_memory = TrajectoryPCA(3, memory_budget=1).fit(X)  # one snapshot per block
    for p in (streamed, tiny_memory):
        torch.testing.assert_close(p.components_, whole.components_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(p.explained_variance_ratio_, whole.explained_variance_ratio_, rtol=1e-11)
        np.testing.assert_allclose(p.transform(X), whole.transform(X), atol=1e-9)
    _assert_matches_sklearn(whole, X.double().numpy(), 3)


def test_matches_sklearn_on_recorded_trajectory_on_disk(tmp_path):
    traj = _recorded(tmp_path / "run")
    reopened = Trajectory.open(tmp_path / "run")
    X = reopened.vectors(dtype=torch.float64).numpy()
    pca = TrajectoryPCA(3, block_size=3).fit(reopened)
    _assert_matches_sklearn(pca, X, 3)
    assert pca.lengths_ == [len(traj)]
    # cumulative explained variance beyond the fitted components (Lipton: top-10 share)
    full = PCA().fit(X).explained_variance_ratio_
    for k in (1, 2, 5, 10):
        assert pca.cumulative_explained_variance(k) == pytest.approx(full[:k].sum(), rel=1e-9)


def test_several_trajectories_jointly_equal_pca_of_stacked_matrix():
    runs = [_recorded(seed=s, epochs=6) for s in (0, 1, 2)]
    X = torch.cat([r.vectors(dtype=torch.float64) for r in runs]).numpy()
    pca = TrajectoryPCA(2, block_size=4).fit(runs)
    _assert_matches_sklearn(pca, X, 2)
    assert pca.lengths_ == [len(r) for r in runs]
    path = pca.project(runs)
    assert [len(c) for c in path.split()] == pca.lengths_
    np.testing.assert_allclose(np.concatenate(path.split()), pca.transform(runs))


def test_fraction_n_components_picks_same_k_as_sklearn():
    X = _walk(t=40, d=200, seed=3)
    for frac in (0.5, 0.9, 0.99):
        assert TrajectoryPCA(frac).fit(X).n_components_ == PCA(frac, svd_solver="full").fit(X.numpy()).n_components_


@pytest.mark.parametrize("center", ["first", "last", 5, -3, "vector"])
def test_centering_on_snapshot_or_vector_matches_manual(center):
    X = _walk(t=20, d=150, seed=4)
    if center == "vector":
        c = torch.linspace(-1, 4, 150, dtype=torch.float64)
    else:
        k = {"first": 0, "last": -1}.get(center, center)
        c = X[k]
    pca = TrajectoryPCA(3, center=c if center == "vector" else center, block_size=3).fit(X)
    assert torch.equal(pca.mean_, c)
    Xc = (X - c).numpy()
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(pca.explained_variance_ratio_, (s**2 / (s**2).sum())[:3], rtol=1e-9)
    np.testing.assert_allclose(pca.singular_values_, s[:3], rtol=1e-9)
    np.testing.assert_allclose(np.abs((pca.components_.numpy() * vt[:3]).sum(1)), 1, atol=1e-9)
    np.testing.assert_allclose(pca.transform(X), Xc @ pca.components_.numpy().T, atol=1e-10)
    if center in ("first", 5):
        assert np.allclose(pca.transform(X)[pca.center_index_], 0, atol=1e-12)


def test_plane_coordinates_are_consistent_with_the_plane():
    X = _walk(t=30, d=400, seed=5)
    pca = TrajectoryPCA(2, block_size=4).fit(X)
    center, d1, d2 = pca.plane_directions()
    D = torch.stack([d1, d2])
    torch.testing.assert_close(D @ D.T, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)
    xy = pca.transform(X)
    points = center + torch.from_numpy(xy) @ D  # center + x d1 + y d2
    np.testing.assert_allclose(pca.transform(points), xy, atol=1e-10)  # the plane point has the same (x, y)
    residual = X - points
    torch.testing.assert_close(residual @ D.T, torch.zeros(30, 2, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(pca.inverse_transform(xy), points, rtol=0, atol=1e-12)


def test_off_plane_distance_and_losses_equal_brute_force(tmp_path):
    traj = _recorded(epochs=8)
    net = _net(seed=7)
    before = copy.deepcopy(net.state_dict())
    data = _data(n=50, seed=9)
    pca = TrajectoryPCA(3, center="last").fit(traj)
    loss_at = make_loss_at(net, data, batch_size=16)  # through the evaluation engine
    path = pca.project(traj, loss_at=loss_at, points_per_call=3)

    X = traj.vectors(dtype=torch.float64)
    center, d1, d2 = pca.plane_directions()
    D = torch.stack([d1, d2])
    r = X - center
    proj = (r @ D.T) @ D
    np.testing.assert_allclose(path.coordinates, (r @ D.T).numpy(), atol=1e-10)
    np.testing.assert_allclose(path.displacement, r.norm(dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(path.off_plane, (r - proj).norm(dim=1).numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(path.off_plane**2 + (path.coordinates**2).sum(1), path.displacement**2, rtol=1e-9)
    last = len(traj) - 1
    assert path.off_plane_ratio[last] == 0  # the centre itself
    # losses: brute force through the model at each snapshot and at each plane point
    x, y = data
    for t in (0, 3, last):
        direct = nn.functional.cross_entropy(functional_forward(net, X[t].float(), x), y)
        assert path.true_loss[t] == pytest.approx(float(direct), rel=1e-5)
        plane_pt = (center + torch.from_numpy(path.coordinates[t]) @ D).float()
        plane = nn.functional.cross_entropy(net_at(net, plane_pt)(x), y).detach()
        assert path.plane_loss[t] == pytest.approx(float(plane), rel=1e-5)
    np.testing.assert_array_equal(path.steps, traj.steps)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    # saves and loads without pickle
    loaded = load_result(path.save(tmp_path / "path"))
    assert isinstance(loaded, ProjectedPath)
    np.testing.assert_array_equal(loaded.off_plane, path.off_plane)
    np.testing.assert_array_equal(loaded.plane_loss, path.plane_loss)


def net_at(net, vec):
    m = copy.deepcopy(net)
    torch.nn.utils.vector_to_parameters(vec, m.parameters())
    return m.eval()


def test_distances_match_brute_force():
    runs = [_walk(t=10, d=50, seed=s) for s in range(3)]
    np.testing.assert_allclose(distance_from_origin(runs[0], block_size=3), runs[0].norm(dim=1).numpy(), rtol=1e-12)
    got = distance_from_init(runs, block_size=4)
    want = np.concatenate([(r - r[0]).norm(dim=1).numpy() for r in runs])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    ends = torch.stack([r[-1] for r in runs])
    np.testing.assert_allclose(pairwise_end_distances(runs), torch.cdist(ends, ends).numpy(), rtol=1e-12, atol=1e-12)


def test_streaming_reads_each_snapshot_twice_when_it_fits_and_never_holds_the_matrix():
    class Counting:
        """Trajectory stand-in that counts reads and the largest read."""

        def __init__(self, X):
            self.X, self.reads, self.largest = X, 0, 0
            self.layout = ParamLayout.from_model(nn.Linear(X.shape[1] - 1, 1))
            self.steps, self.epochs = np.arange(len(X)), np.arange(len(X), dtype=float)

        @property
        def segments(self):
            from landscape.trajectory import Segment

            return [Segment(0, 0, len(self.X), self.layout, ())]

        def __len__(self):
            return len(self.X)

        def vectors(self, idx):
            self.reads += len(idx)
            self.largest = max(self.largest, len(idx))
            return self.X[list(idx)]

        def __getitem__(self, i):
            self.reads += 1
            return types.SimpleNamespace(vector=self.X[i])

    X = _walk(t=12, d=41)
    src = Counting(X)
    TrajectoryPCA(2, block_size=100).fit(src)
    assert src.reads == 1 + 2 * 11  # the first snapshot once (cached), the others once per pass
    src.reads = 0
    pca = TrajectoryPCA(2, block_size=4).fit(src)
    # Gram pass: resident reads plus streamed reads of everything after each block (8 + 4), then the components
    assert src.reads == 1 + 11 + 8 + 4 + 11
    assert src.largest <= 1
    _assert_matches_sklearn(pca, X.numpy(), 2)


def test_errors_are_clear():
    X = _walk(t=6, d=20)
    with pytest.raises(ValueError, match="valid"):
        TrajectoryPCA(center="median").fit(X)
    with pytest.raises(ValueError, match="at least two"):
        TrajectoryPCA().fit(X[:1])
    with pytest.raises(RuntimeError, match="not fitted"):
        TrajectoryPCA().transform(X)
    pca = TrajectoryPCA(2).fit(X)
    with pytest.raises(ValueError, match="21 parameters"):
        pca.transform(torch.zeros(3, 21))
    line = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None] * torch.ones(1, 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="span only 1"):
        TrajectoryPCA(2).fit(line)
    with pytest.raises(ValueError, match="n_components"):
        TrajectoryPCA(0).fit(X)
    with pytest.raises(ValueError, match="two components"):
        TrajectoryPCA(1).fit(X).plane_directions()
    with pytest.raises(TypeError, match="k must be an integer in \\[0, 6\\], got 2.5"):  # was 'slice indices must be'
        pca.cumulative_explained_variance(2.5)
    assert pca.cumulative_explained_variance(np.int64(6)) == pytest.approx(1.0)


def test_multi_segment_trajectory_needs_a_segment():
    traj = Trajectory()
    small, big = nn.Linear(3, 2), nn.Linear(3, 4)
    for s in range(3):
        traj.append_model(small, step=s)
    for s in range(3, 7):
        with torch.no_grad():
            big.weight.add_(0.1 * torch.randn(4, 3))
        traj.append_model(big, step=s)
    with pytest.raises(ValueError, match="segment=k"):
        TrajectoryPCA(2).fit(traj)
    pca = TrajectoryPCA(2).fit(traj, segment=1)
    assert pca.n_samples_ == 4 and pca.n_features_in_ == parameters_to_vector(big).numel()
    _assert_matches_sklearn(pca, traj.vectors(range(3, 7), dtype=torch.float64).numpy(), 2)


@pytest.mark.parametrize("t, d, center", [(12, 50, "mean"), (12, 50, "last"), (12, 50, "vector"), (30, 8, "mean")])
def test_n_components_none_keeps_every_direction_the_snapshots_span(t, d, center):
    X = _walk(t=t, d=d, seed=4)
    c = torch.randn(d, dtype=torch.float64) if center == "vector" else center
    pca = TrajectoryPCA(None, center=c).fit(X)
    origin = X.mean(0) if center == "mean" else X[-1] if center == "last" else c
    s = np.linalg.svd((X - origin).numpy(), compute_uv=False)
    rank = int((s > 1e-6 * s[0]).sum())  # the numpy SVD's rank of the centred snapshots
    assert rank == (min(t - 1, d) if center != "vector" else min(t, d))
    assert pca.n_components_ == rank
    np.testing.assert_allclose(pca.singular_values_, s[:rank], rtol=1e-9)
    assert pca.explained_variance_ratio_.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(X)).numpy(), X.numpy(), atol=1e-9)


def test_repr_says_the_options_then_what_was_fitted_and_explained():
    # The default object repr said nothing. Fitted: k, the centre, T and D, the trajectories, and the explained
    # variance ratios (sklearn's, to the 3 digits shown).
    import re

    g = torch.Generator().manual_seed(0)
    runs = [torch.randn(12, 30, generator=g, dtype=torch.float64).cumsum(0) for _ in range(2)]
    pca = TrajectoryPCA(3)
    assert repr(pca) == "TrajectoryPCA(n_components=3, center='mean', not fitted)"
    assert (
        repr(TrajectoryPCA(0.9, center=torch.zeros(30)))
        == "TrajectoryPCA(n_components=0.9, center=vector (30,), not fitted)"
    )
    pca.fit(runs)
    text = repr(pca)
    assert text.startswith("TrajectoryPCA(k=3, center='mean', fitted on 24 snapshots (2 trajectories) of D=30, ")
    ratios = [float(v) for v in re.search(r"explained_variance_ratio=\[(.*?)\]", text).group(1).split(", ")]
    want = PCA(3).fit(torch.cat(runs).numpy()).explained_variance_ratio_
    np.testing.assert_allclose(ratios, want, rtol=5e-3)
    assert "(1 trajectory)" in repr(TrajectoryPCA(2).fit(runs[0]))


def test_projected_path_provenance_counts_trajectories_in_words():
    # It read "1 trajectory(ies)": the noun now agrees with the number.
    g = torch.Generator().manual_seed(1)
    runs = [torch.randn(5, 8, generator=g, dtype=torch.float64).cumsum(0) for _ in range(2)]
    pca = TrajectoryPCA(2).fit(runs)
    assert pca.project(runs[0]).provenance.data == "1 trajectory, 5 snapshots"
    assert pca.project(runs).provenance.data == "2 trajectories, 10 snapshots"
    assert pca.project(runs[0][:1]).provenance.data == "1 trajectory, 1 snapshot"
