"""Session 15 newcomer hunt (hu15): models the package did not ship, run through the documented workflows.

Each test checks a brute-force reference or an invariant on a model a user would bring: token inputs through an
embedding, a model returning a dict, data as numpy arrays or mapping batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.analyze import evaluate_curve, fit_curve
from landscape.params import model_at, parameters_to_vector


class _TokenNet(nn.Module):
    """A bag-of-embeddings classifier: token ids ``(N, T)`` int64 in, ``(N, 3)`` logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.emb(tok).mean(1)))


class _DictNet(nn.Module):
    """A classifier returning ``{"logits": (N, 3), "hidden": (N, 5)}``, as Hugging Face-style models do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.cls = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.body(x))
        return {"logits": self.cls(h), "hidden": h}


def _tokens(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 7, (n, 5), generator=g), torch.randint(0, 3, (n,), generator=g)


def _bezier_losses(model: nn.Module, control: np.ndarray, X: torch.Tensor, y: torch.Tensor, ts: list[float]):
    """The cross-entropy at Bezier points ``(1-t)^2 w0 + 2t(1-t) theta + t^2 w1``, one model per point (float64)."""
    w0, th, w1 = torch.as_tensor(control, dtype=torch.float64)
    out = []
    for t in ts:
        net = model_at(model.double(), (1 - t) ** 2 * w0 + 2 * t * (1 - t) * th + t**2 * w1)
        logits = net(X)
        out.append(F.cross_entropy(logits["logits"] if isinstance(logits, dict) else logits, y).item())
    return np.asarray(out)


def test_fit_curve_keeps_token_ids_integer_for_an_embedding_model():
    # The curve module holds the architecture outside its submodules, so the trainer's data check saw no
    # Embedding and cast the token ids to float: torch.embedding then failed deep in the forward.
    X, y = _tokens()
    torch.manual_seed(0)
    a = _TokenNet().double()
    torch.manual_seed(1)
    b = _TokenNet().double()
    before = parameters_to_vector(a).clone()
    curve = fit_curve(a, b, (X, y), optimizer_kwargs={"lr": 0.1}, epochs=2, batch_size=12)
    assert torch.equal(parameters_to_vector(a), before)  # the endpoint is only read
    ts = [0.0, 0.3, 1.0]
    res = evaluate_curve(a, curve, (X, y), ts=ts)
    np.testing.assert_allclose(res.metrics["loss"], _bezier_losses(_TokenNet(), curve.control, X, y, ts), rtol=1e-10)


def test_evaluate_curve_reads_a_model_returning_a_dict_as_fit_curve_trains_it():
    # fit_curve trained on the output rule (a mapping's "logits"); evaluate_curve refused the same model, telling the
    # caller to pass a Problem, which it does not take.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    torch.manual_seed(0)
    a = _DictNet().double()
    torch.manual_seed(1)
    b = _DictNet().double()
    curve = fit_curve(a, b, (X, y), optimizer_kwargs={"lr": 0.1}, epochs=2, batch_size=10)
    ts = [0.0, 0.5, 1.0]
    res = evaluate_curve(a, curve, (X, y), ts=ts)
    np.testing.assert_allclose(res.metrics["loss"], _bezier_losses(_DictNet(), curve.control, X, y, ts), rtol=1e-10)
    ref_acc = [
        (model_at(a, torch.as_tensor(p))(X)["logits"].argmax(1) == y).double().mean().item() for p in curve.points(ts)
    ]
    np.testing.assert_allclose(res.metrics["accuracy"], ref_acc)


def _tanh_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def test_measure_saturation_takes_numpy_arrays_and_mapping_batches_as_every_analyzer():
    # docs/arguments.md: every analyzer's shorthand takes a pair (X, y) and mapping batches; measure_saturation
    # refused numpy arrays ("inputs must be a tensor, got ndarray") and dict batches ("got dict").
    from torch.utils.data import DataLoader, Dataset

    from landscape import measure_saturation

    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    net = _tanh_net()
    with torch.no_grad():
        acts = net[1](net[0](X)).flatten().double().numpy()
    ref = np.percentile(acts, [50.0, 98.0])  # exact: 240 values, under exact_limit

    class Samples(Dataset):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input": X[i], "label": y[i]}  # Sequential's forward takes `input`

    for data in [(X.numpy(), y.numpy()), X.numpy(), DataLoader(Samples(), batch_size=16)]:
        stats = measure_saturation(net, data, percentiles=(50, 98))["1"]
        assert stats.count == 240
        np.testing.assert_allclose(stats.values, ref, rtol=1e-6)


def test_trainer_takes_a_numpy_pair_as_the_same_tensor_pair():
    # Trainer(Problem(net, (X_np, y_np))) trained; Trainer(net, (X_np, y_np)) warned that batch_size was ignored
    # ("this tuple yields its own batches") and then failed on "batch 0 ... got ndarray".
    import warnings

    from landscape.train import Trainer
    from landscape.trajectory import Trajectory

    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    runs = []
    for data, val in [((X, y), (X[:10], y[:10])), ((X.numpy(), y.numpy()), (X[:10].numpy(), y[:10].numpy()))]:
        traj = Trajectory()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "batch_size is ignored"
            tr = Trainer(
                _tanh_net(),
                data,
                optimizer="sgd",
                epochs=2,
                batch_size=16,
                seed=0,
                trajectory=traj,
                eval_data={"v": val},
            ).fit()
        runs.append((tr.history_, torch.stack([s.vector for s in traj])))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
