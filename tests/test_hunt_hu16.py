"""Session 16 newcomer hunt (hu16): the public API used as research code uses it.

Each test checks a brute-force reference, a closed form or an invariant on data and models a user would bring:
a ``Dataset``, a ``DataLoader`` of mapping batches, numpy arrays, functional ``forward``s.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from landscape.analyze import (
    activation_correlations,
    activation_matching,
    apply_permutation,
    loss_barrier,
    permutation_spec,
    random_permutation,
    repair,
)


class _KeywordMLP(nn.Module):
    """A tanh MLP whose ``forward`` takes its input by the name ``x`` (what a mapping batch passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


class _Mapping(Dataset):
    """Samples as ``{"x": (4,), "label": ()}`` dicts, as Hugging Face-style datasets give them."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.X[i], "label": self.y[i]}


def _aligned_pair() -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """A float64 network, a copy with its hidden units permuted, the permutation, and 40 samples."""
    torch.manual_seed(0)
    a = _KeywordMLP().double()
    spec = permutation_spec(a)
    perm = random_permutation(spec, seed=3)
    b = apply_permutation(spec, perm, a)
    g = torch.Generator().manual_seed(1)
    return a, b, perm, torch.randn(40, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)


_DATA_FORMS = {
    "Dataset": lambda X, y: TensorDataset(X, y),
    "numpy pair": lambda X, y: (X.numpy(), y.numpy()),
    "mapping batches": lambda X, y: DataLoader(_Mapping(X, y), batch_size=16),
    # a one-shot generator of batches: REPAIR reads its data once per site, and main divided by zero samples
    "generator": lambda X, y: ((X[i : i + 16], y[i : i + 16]) for i in range(0, len(y), 16)),
}


@pytest.mark.parametrize("form", list(_DATA_FORMS))
def test_activation_matching_takes_the_data_every_analyzer_takes(form):
    # Activation matching read only tensor pairs and iterables of (X, y) tensor batches: a Dataset, numpy arrays
    # and mapping batches (which every other analyzer reads) raised "data must be a tensor pair". A permuted copy's
    # activations are a's exactly, so matching must recover the permutation (b's unit perm[i] is a's unit i).
    a, b, perm, X, y = _aligned_pair()
    data = _DATA_FORMS[form](X, y)
    res = activation_matching(a, b, data)
    for g, p in perm.items():
        inverse = torch.argsort(p)  # b = a permuted by p; aligning b back to a applies the inverse
        assert torch.equal(res.perm[g], inverse), g
    aligned = res.apply(b)
    for (k, u), (_, v) in zip(a.state_dict().items(), aligned.state_dict().items()):
        assert torch.equal(u, v), k
    # the correlations are Pearson correlations over the data of the group's site, computed here directly (with
    # a functional tanh there is no activation module to hook: the site is the layer producing the units)
    assert permutation_spec(a).sites["P_fc1"] == (("fc1", -1),)
    corr = activation_correlations(a, a, _DATA_FORMS[form](X, y))
    with torch.no_grad():
        h1 = a.fc1(X)
    np.testing.assert_allclose(corr["P_fc1"], np.corrcoef(h1.numpy().T), atol=1e-12)


@pytest.mark.parametrize("form", list(_DATA_FORMS))
def test_repair_takes_the_data_every_analyzer_takes(form):
    # REPAIR's statistics pass had the same narrow reader. Its defining property (Jordan et al. eq. 4): each
    # repaired channel's mean and standard deviation over the data are the endpoints' interpolated.
    torch.manual_seed(0)
    a, b = _KeywordMLP().double(), _KeywordMLP().double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    new = repair(a, b, _DATA_FORMS[form](X, y), alpha=0.3)

    def stats(m: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        with torch.no_grad():
            h1 = m.fc1(X)
            h2 = m.fc2(torch.tanh(h1))
        return [(h.mean(0), h.std(0, unbiased=False)) for h in (h1, h2)]

    for (mn, sn), (ma, sa), (mb, sb) in zip(stats(new), stats(a), stats(b)):
        torch.testing.assert_close(mn, 0.7 * ma + 0.3 * mb, rtol=0, atol=1e-10)
        torch.testing.assert_close(sn, 0.7 * sa + 0.3 * sb, rtol=0, atol=1e-10)


@pytest.mark.parametrize("form", ["Dataset", "generator"])
def test_loss_barrier_with_repair_takes_a_dataset_or_a_generator(form):
    # loss_barrier(repair=True) evaluated each repaired network through the engine's tensor-pair reader, so a
    # Dataset (which the plain barrier, through `line`, reads) failed; a generator was exhausted after one alpha.
    # Brute force: the cross-entropy of each repaired network, built with repair() itself, and the linear barrier
    # of those losses.
    torch.manual_seed(0)
    a, b = _KeywordMLP().double(), _KeywordMLP().double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    alphas = [0.0, 0.25, 0.5, 1.0]
    res = loss_barrier(a, b, _DATA_FORMS[form](X, y), alphas=alphas, repair=True)
    nets = [a, *(repair(a, b, (X, y), alpha=t) for t in alphas[1:-1]), b]
    with torch.no_grad():
        losses = np.array([F.cross_entropy(m(X), y).item() for m in nets])
    np.testing.assert_allclose(res.metrics["loss"], losses, rtol=1e-12)
    rise = losses - ((1 - np.array(alphas)) * losses[0] + np.array(alphas) * losses[-1])
    assert res.loss_barrier == pytest.approx(max(rise.max(), 0.0), abs=1e-12)
    assert res.path == "line+repair"


def test_the_renderers_page_names_what_each_plot_function_takes():
    # The renderers page said `plot_sharpness` draws "sharpness results"; a newcomer passed the SharpnessResult of
    # worst_case_sharpness and got a TypeError: it draws CurvatureTraces. Every result class a function's
    # signature accepts must be named on its row of the page's table.
    import inspect
    import re
    from pathlib import Path

    import landscape.plot

    page = (Path(__file__).resolve().parents[1] / "docs" / "architecture" / "renderers.md").read_text("utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    checked = 0
    for row in rows:
        funcs, draws = row.split(" | ")[0], " | ".join(row.split(" | ")[1:])
        named = set(re.findall(r"`(\w+)`", draws))
        for fn in re.findall(r"`(\w+)`", funcs):
            sig = inspect.signature(getattr(landscape.plot, fn))
            annotations = " ".join(str(p.annotation) for p in sig.parameters.values())
            takes = set(re.findall(r"\b([A-Z]\w*(?:Result|Trace|Path))\b", annotations))
            assert takes <= named, f"{fn} takes {sorted(takes - named)}, which its row does not name: {row}"
            checked += bool(takes)
    assert checked >= 10  # the table's result-drawing functions were all read


def test_regression_mlp_refuses_an_image_shape_it_cannot_take():
    # build_model("regression_mlp", (1, 8, 8), 10) built Linear(64, 32) without a Flatten: the model it returned
    # failed on its first (N, 1, 8, 8) batch with "mat1 and mat2 shapes cannot be multiplied". Refused at build,
    # naming the model that flattens images; a flat shape (F,) still builds the paper's R^F -> R^k net.
    from landscape.models import build_model

    with pytest.raises(ValueError, match=r"regression_mlp takes flat inputs.*'mlp'"):
        build_model("regression_mlp", (1, 8, 8), 10, seed=0)
    net = build_model("regression_mlp", (5,), 3, m=4, seed=0)
    x = torch.randn(7, 5)
    with torch.no_grad():  # the closed form of the depth-3 ReLU MLP
        h = torch.relu(net.fc2(torch.relu(net.fc1(x))))
        torch.testing.assert_close(net(x), h @ net.fc3.weight.T + net.fc3.bias)
    assert net(x).shape == (7, 3)


class _ConvTanh(nn.Module):
    """Conv -> tanh -> flatten(1) -> Linear: a forward that needs the batch axis (flatten(1) of one sample is wrong)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.act = nn.Tanh()
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


class _TwoInputs(nn.Module):
    """``forward(a, b)``: data as ``(a, b, y)`` batches, the ``(*inputs, y)`` form every analyzer reads."""

    def __init__(self) -> None:
        super().__init__()
        self.la, self.lb, self.act, self.out = nn.Linear(4, 5), nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.la(a) + self.lb(b)))


def test_measure_saturation_batches_a_dataset_and_passes_every_input():
    # measure_saturation iterated a Dataset sample by sample, so the model saw (1, 6, 6) images without a batch
    # axis (flatten(1) then refused them), and it passed only the first entry of (*inputs, y) batches (a two-input
    # model raised "missing 1 required positional argument"). Brute force: numpy's percentile of the activations.
    from landscape.analyze import measure_saturation

    torch.manual_seed(0)
    net = _ConvTanh().double()
    X, y = torch.randn(20, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (20,))
    with torch.no_grad():
        acts = torch.tanh(net.conv(X)).numpy().ravel()
    stats = measure_saturation(net, TensorDataset(X, y), layers=["act"], percentiles=(50, 98))["act"]
    assert stats.count == acts.size
    np.testing.assert_allclose(stats.values, np.percentile(acts, [50, 98]), rtol=1e-12)

    two = _TwoInputs().double()
    A, B = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    with torch.no_grad():
        acts = torch.tanh(two.la(A) + two.lb(B)).numpy().ravel()
    loader = DataLoader(TensorDataset(A, B, torch.randint(0, 3, (30,))), batch_size=8)
    for data in (loader, (A, B, torch.zeros(30))):
        stats = measure_saturation(two, data, layers=["act"])["act"]
        assert stats.count == acts.size
        np.testing.assert_allclose(stats.values, np.percentile(acts, [98]), rtol=1e-12)


def _bn_trajectory() -> tuple[nn.Module, object, torch.Tensor, torch.Tensor]:
    """A float64 BatchNorm MLP and an in-memory trajectory of 4 snapshots with their own running statistics."""
    from landscape import Trajectory

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(24, 3, dtype=torch.float64), torch.randint(0, 2, (24,))
    traj = Trajectory()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for step in range(4):
        net.train()
        opt.zero_grad()
        F.cross_entropy(net(X), y).backward()
        opt.step()
        net.eval()
        traj.append_model(net, step=step)
    return net, traj, X, y


def test_slices_and_distances_take_trajectory_snapshots_with_their_statistics():
    # `line(model, traj[0], traj[-1], data)` raised "an anchor must be a model, a flat vector or a parameter dict,
    # got Snapshot", and the workaround `.vector` silently dropped the snapshot's BatchNorm statistics. A snapshot
    # is the model Trajectory.model_at rebuilds: the line's ends are those models' own losses (brute force).
    from landscape import functional_distance, line, plane_through

    net, traj, X, y = _bn_trajectory()
    ends = [traj.model_at(net, i) for i in (0, -1)]
    with torch.no_grad():
        want = [F.cross_entropy(m(X), y).item() for m in ends]
        probs = [F.softmax(m(X), -1) for m in ends]
    res = line(net, traj[0], traj[-1], (X, y), [0.0, 1.0])
    np.testing.assert_allclose(res.metrics["loss"], want, rtol=1e-12)
    np.testing.assert_allclose(res.metrics["loss"], line(net, *ends, (X, y), [0.0, 1.0]).metrics["loss"], rtol=1e-12)
    dist = functional_distance(net, traj[0], traj[-1], (X, y))
    rms = (probs[0] - probs[1]).square().sum(1).mean().sqrt().item()
    assert dist.rms == pytest.approx(rms, rel=1e-12)
    pt = plane_through(net, traj[1], traj[0], traj[-1], (X, y), xs=[0.0], ys=[0.0])
    with torch.no_grad():
        assert pt.metrics["loss"][0, 0] == pytest.approx(F.cross_entropy(traj.model_at(net, 1)(X), y).item(), 1e-12)


def test_plane_takes_a_results_numpy_center_and_directions_to_reproduce_it():
    # Results keep their center and directions as numpy arrays "so the slice can be reproduced"; plane() refused
    # them ("an anchor must be ... got ndarray", about a direction). The reproduced grid is the original.
    from landscape import plane, random_plane

    net, _, X, y = _bn_trajectory()
    first = random_plane(net, (X, y), [-0.5, 0.0, 1.0], [0.0, 0.5], seed=3)
    again = plane(net, first.center, first.directions[0], first.directions[1], (X, y), first.xs, first.ys)
    np.testing.assert_allclose(again.metrics["loss"], first.metrics["loss"], rtol=1e-12)
    with torch.no_grad():  # and one grid point by brute force: row i, column j is center + xs[j] d1 + ys[i] d2
        point = torch.from_numpy(first.point(1.0, 0.5))
        from landscape import model_at

        assert again.metrics["loss"][1, 2] == pytest.approx(F.cross_entropy(model_at(net, point)(X), y).item(), 1e-12)


def test_sequence_logits_get_a_label_error_that_names_the_class_axis():
    # A token model's (N, T, V) logits with (N, T) labels: torch's cross-entropy reads classes on axis 1, so the
    # check said "the model outputs 5 classes (labels 0 to 4)" for a vocabulary of 7 and T = 5, and told the user to
    # widen the output layer. It now says which axis is read and which loss fits; that loss gives torch's value.
    from landscape import InputError, line

    torch.manual_seed(0)
    vocab, steps = 7, 5
    ids, labels = torch.randint(0, vocab, (12, steps)), torch.randint(0, vocab, (12, steps))
    labels[:, -2:] = -100  # padding, ignored by torch's cross-entropy
    net = nn.Sequential(nn.Embedding(vocab, 6), nn.Tanh(), nn.Linear(6, vocab)).double()
    for loss_fn in (None, nn.CrossEntropyLoss()):
        with pytest.raises(InputError, match=r"\(N, 5, 7\).*classes on axis 1.*flatten"):
            line(net, net, net, (ids, labels), [0.0], loss_fn=loss_fn)
    res = line(
        net, net, net, (ids, labels), [0.0], loss_fn=lambda out, y: F.cross_entropy(out.flatten(0, -2), y.flatten())
    )
    with torch.no_grad():
        want = F.cross_entropy(net(ids).reshape(-1, vocab), labels.reshape(-1)).item()
    assert res.metrics["loss"][0] == pytest.approx(want, rel=1e-12)


def test_a_factory_given_as_a_function_with_its_arguments_is_recorded():
    # (target, kwargs) with the target a function, as README's ("my_project.nets:make", {"width": 8}) with the
    # function imported, raised "cannot use tuple as a model factory; give ... (target, kwargs)". It names the
    # function by its import path, and the reference rebuilds the architecture of make(width=3).
    from tests_pkg import nets

    from landscape import Recorder
    from landscape.factory import as_factory_ref

    ref = as_factory_ref((nets.make, {"width": 3}))
    assert ref.to_meta() == {"target": "tests_pkg.nets:make", "kwargs": {"width": 3}}
    built, want = ref.build(trusted=False), nets.make(width=3)
    assert [(k, p.shape) for k, p in built.named_parameters()] == [(k, p.shape) for k, p in want.named_parameters()]
    rec = Recorder(None, model=want, factory=(nets.make, {"width": 3}))
    assert rec.close(want).meta["model_factory"] == {"target": "tests_pkg.nets:make", "kwargs": {"width": 3}}


def test_a_factory_named_in_main_is_refused_when_recorded_and_when_read():
    # A function object defined in the running script was refused ("a later process cannot import it"), but the
    # same reference as the string "__main__:make" was recorded; the command line then imported its own __main__
    # and said "__main__ has no attribute 'make'". Both are now refused with the first message.
    from landscape import Recorder
    from landscape.factory import FactoryError, factory_from_meta

    net = nn.Linear(2, 2)
    with pytest.raises(FactoryError, match=r"make is defined in __main__ .* a later process cannot import"):
        Recorder(None, model=net, factory="__main__:make")
    ref = factory_from_meta({"model_factory": {"target": "__main__:make", "kwargs": {}}})  # an older store reads
    with pytest.raises(FactoryError, match=r"make is defined in __main__ .* a later process cannot import"):
        ref.build(trusted=False)
