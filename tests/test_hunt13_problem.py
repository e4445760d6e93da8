"""Bug hunt 13 in :class:`landscape.Problem` and its data: each test holds one case the problem got wrong before.

Answers are compared with plain float64 references (the model called batch by batch as one process reads the
data), never with the problem's own output.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape
import landscape.distributed
from landscape import Problem


def _bn_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).double()


def _bn_train_reference(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cut: int) -> float:
    """Mean cross-entropy over batches of ``cut`` rows in order, BatchNorm on each batch's statistics."""
    import copy

    m = copy.deepcopy(model).train()
    with torch.no_grad():
        return sum(
            float(F.cross_entropy(m(X[i : i + cut]), y[i : i + cut], reduction="sum")) for i in range(0, len(y), cut)
        ) / len(y)


def _share_sums(monkeypatch, world: int, make) -> float:
    """The mean over ``world`` ranks' shares (``shard="split"``), each rank's batch sums added by hand (no group)."""
    total = count = 0.0
    for rank in range(world):
        monkeypatch.setattr(landscape.distributed, "rank_world", lambda rank=rank: (rank, world))
        prob = make()
        fm = prob.functional()
        with torch.no_grad():
            for b in prob.batches():
                t, c = prob.batch_terms(fm, b)
                total, count = total + float(t), count + c
    return total / count


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("kind", ["pair", "dataset", "loader", "loader_drop_last"])
def test_split_shares_keep_one_process_batches_under_batchnorm(monkeypatch, world, kind):
    # shard="split" divided the samples evenly (24 rows, batches of 5, 2 ranks: 12 and 12, cut 5+5+2 on each rank
    # instead of one process's 5+5+5+5+4): with bn_mode="train" every batch's statistics changed and the sharded
    # loss was off by 48% relative (measured under two gloo processes), or a rank's batch of one sample made
    # BatchNorm raise on that rank only while the others waited in a collective. A model with BatchNorm now has
    # its data shared by whole batches: each rank's batches are one process's.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(24, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    model = _bn_net()
    n = 20 if kind == "loader_drop_last" else 24  # drop_last: the short batch of 4 is dropped
    want = _bn_train_reference(model, X[:n], y[:n], 5)
    data = {
        "pair": lambda: (X, y),
        "dataset": lambda: TensorDataset(X, y),
        "loader": lambda: DataLoader(TensorDataset(X, y), batch_size=5),
        "loader_drop_last": lambda: DataLoader(TensorDataset(X, y), batch_size=5, drop_last=True),
    }[kind]
    bs = 5 if kind in ("pair", "dataset") else None

    def make():
        return Problem(model, data(), "cross_entropy", bn_mode="train", batch_size=bs, shard="split")

    got = _share_sums(monkeypatch, world, make)
    assert got == pytest.approx(want, rel=1e-12)


def test_split_one_batch_refuses_batch_statistics(monkeypatch):
    # One batch (a tensor pair without batch_size) split by samples cannot give the whole batch's statistics:
    # bn_mode="train" is refused by name, at construction and through with_options; eval mode keeps the split.
    monkeypatch.setattr(landscape.distributed, "rank_world", lambda: (0, 2))
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="batch_size="):
        Problem(_bn_net(), (X, y), bn_mode="train", shard="split")
    prob = Problem(_bn_net(), (X, y), shard="split")
    assert prob.n_samples == 4  # eval mode: the samples are split evenly
    with pytest.raises(ValueError, match="batch_size="):
        prob.with_options(bn_mode="train")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))


@pytest.mark.parametrize(
    "form", [lambda X, y: (X, y), lambda X, y: DataLoader(TensorDataset(X, y), batch_size=5), lambda X, y: [(X, y)]]
)
def test_swapped_pair_names_the_data_the_shapes_and_the_slip(form):
    # (y, X) given for (X, y) reached the model and raised torch's "mat1 and mat2 shapes cannot be multiplied
    # (1x20 and 3x5)", naming neither the argument nor the expected shape. The message now names the data, the
    # inputs' shape, the layer and the shape it expects, and that the targets would fit (the original error chained).
    # Two checks can name it: the data check (integer one-value "inputs" beside floating multi-valued "targets",
    # before any forward pass) and, for what that check lets through, the forward-error explanation.
    X, y = torch.randn(20, 3), torch.randint(0, 4, (20,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", landscape.validation.InputWarning)  # if the integer "inputs" are cast
        with pytest.raises(landscape.validation.InputError) as err:
            Problem(_mlp(), form(y, X)).loss()
    msg = str(err.value)
    assert msg.startswith("data") and "swapped" in msg and ("(20, 3)" in msg or "(5, 3)" in msg)


def test_wrong_input_size_names_expected_and_given_shapes():
    y = torch.randint(0, 4, (20,))
    with pytest.raises(
        landscape.validation.InputError, match=r"inputs of shape \(20, 7\).*expects inputs of shape \(N, 3\)"
    ):
        Problem(_mlp(), (torch.randn(20, 7), y)).loss()
    # the evaluation engine's fast path and the Hessian read the same problem
    with pytest.raises(landscape.validation.InputError, match=r"\(20, 7\).*\(N, 3\)"):
        landscape.evaluate_points(Problem(_mlp(), (torch.randn(20, 7), y)), torch.zeros(2, 49))
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(landscape.validation.InputError, match=r"\(20, 1, 4, 4\).*Conv2d.*\(N, 3, H, W\)"):
        Problem(conv, (torch.randn(20, 1, 4, 4), torch.randint(0, 2, (20,)))).loss()


def test_model_errors_not_about_input_shapes_stay_torch_errors():
    # Only a known layer that the tensor it got does not fit is explained; a model reshaping its inputs itself
    # still works, and another model error is raised as it was.
    X, y = torch.randn(20, 4, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    flat = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double()
    with torch.no_grad():
        want = float(F.cross_entropy(flat(X), y))
    assert float(Problem(flat, (X, y)).loss()) == pytest.approx(want, rel=1e-12)

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(16, 2)

        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as err:
        Problem(Broken(), (X.float(), y)).loss()
    assert not isinstance(err.value, landscape.validation.InputError)


def test_integer_inputs_of_a_mapping_batch_name_the_dtype():
    # A mapping (or multi-input) batch keeps its integer tensors (token ids, masks), so raw uint8 pixels reached
    # a Linear layer and raised torch's "mat1 and mat2 must have the same dtype, but got Byte and Float". The
    # message now names the data, the layer and the floating dtype it expects.
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x)

    X, y = torch.randint(0, 255, (10, 3), dtype=torch.uint8), torch.randint(0, 2, (10,))
    with pytest.raises(landscape.validation.InputError, match=r"\(10, 3\).*'lin' \(Linear\).*floating dtype"):
        Problem(Net(), [{"x": X, "y": y}]).loss()
