"""A newcomer's slips with the data, each answered by an InputError that names it (not a deep torch error)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape import InputError, Problem, line
from landscape.train import Trainer


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    X, y = torch.randn(12, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (12,))
    return net, X, y


def test_swapped_inputs_and_targets_are_named():
    """``(y, X)``: torch said 'Dimension out of range' from inside Flatten, after a note about casting int64 inputs."""
    net, X, y = _setup()
    with pytest.raises(InputError, match=r"are X and y swapped\? Pass \(X, y\), the inputs first"):
        line(net, net, net, (y, X), [0.0, 1.0])
    with pytest.raises(InputError, match=r"are X and y swapped"):
        Trainer(net, (y, X), epochs=1)
    # integer inputs of one value per sample stay legal for a model that takes them (here: an embedding)
    emb = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2)).double()
    ids, t = torch.randint(0, 5, (6,)), torch.randn(6, 2, dtype=torch.float64)
    r = line(Problem(emb, (ids, t), loss="mse"), emb, emb, alphas=[0.0])
    want = F.mse_loss(emb(ids), t).item()
    np.testing.assert_allclose(r.metrics["loss"][0], want, rtol=1e-12)


def test_one_hot_integer_labels_are_named():
    """Integer one-hot targets reached torch's 'Expected floating point type for target with class probabilities'."""
    net, X, y = _setup()
    onehot = F.one_hot(y, 4)
    calls = (lambda: line(net, net, net, (X, onehot), [0.0]), lambda: Trainer(net, (X, onehot), epochs=1))
    for call in calls:
        with pytest.raises(
            InputError, match=r"integer targets of shape \(12, 4\) .*\(y\.argmax\(1\)\) .*\(y\.float\(\)\)"
        ):
            call()
    # what the message offers works, and both fixes give torch's own cross-entropy
    with torch.no_grad():
        want = F.cross_entropy(net(X), y).item()
    for fixed in (onehot.argmax(1), onehot.double()):
        r = line(Problem(net, (X, fixed), loss="cross_entropy"), net, net, alphas=[0.0])
        np.testing.assert_allclose(r.metrics["loss"][0], want, rtol=1e-12)


def test_trainer_with_float_class_labels_says_what_to_do():
    """Float labels (N,) made the Trainer's default MSE fail inside torch ('The size of tensor a (4) must match')."""
    net, X, y = _setup()
    with pytest.raises(InputError, match=r"targets of shape \(12,\) cannot be compared .* \(12, 4\) .*y\.long\(\)"):
        Trainer(net, (X, y.double()), epochs=1)
    with pytest.raises(InputError, match=r"targets of shape \(12,\) cannot be compared .* \(12, 4\) .*y\.long\(\)"):
        Trainer(net, (X, y.double()), epochs=1, loss_fn=nn.MSELoss())
    trainer = Trainer(net, (X, y), epochs=1).fit()  # integer labels: cross-entropy, trains
    assert np.isfinite(trainer.history_[-1]["train_loss"])


def test_saturation_layers_given_as_an_instance_or_a_type_name_say_what_to_pass():
    """``layers=nn.Tanh()`` raised "'Tanh' object is not iterable"; ``layers="tanh"`` listed module names only."""
    from landscape import measure_saturation

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    X = torch.randn(20, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^layers got a Tanh instance; pass a module type, nn\.Tanh .*module names$"):
        measure_saturation(net, X, layers=nn.Tanh())
    with pytest.raises(TypeError, match=r"or the module's name '1'$"):
        measure_saturation(net, X, layers=net[1])
    with pytest.raises(KeyError, match=r"no module 'tanh'.*for every Tanh pass the type nn\.Tanh"):
        measure_saturation(net, X, layers="tanh")
    with pytest.raises(KeyError, match=r"no module 'tan'; modules: \['0', '1', '2'\]\"$"):
        measure_saturation(net, X, layers="tan")  # no type of that name: the names alone
    stats = measure_saturation(net, X, layers="1", percentiles=(100.0,))  # what the messages offer works
    with torch.no_grad():
        want = net[1](net[0](X)).abs().max().item()  # the 100th percentile of |tanh| (raw values: the largest)
    assert stats["1"].maximum == pytest.approx(torch.tanh(net[0](X)).max().item(), rel=1e-12)
    assert max(abs(stats["1"].minimum), abs(stats["1"].maximum)) == pytest.approx(want, rel=1e-12)


def test_trainer_batch_size_beside_a_dataloader_is_said_to_be_ignored():
    """``Trainer(net, loader, batch_size=8)`` trained on the loader's batches of 4 and its repr said 'full batch'."""
    net, X, y = _setup()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)
    with pytest.warns(UserWarning, match=r"^batch_size=8 is ignored: .* this DataLoader yields its own batches"):
        trainer = Trainer(net, loader, epochs=1, batch_size=8)
    trainer.fit()
    assert trainer.step == 3  # 12 samples in the loader's batches of 4: three steps, not two of 8
    assert "batches as given" in repr(trainer) and "full batch" not in repr(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(net, (X, y), epochs=1, batch_size=8)  # a tensor pair is cut by it: no warning


def test_a_bfloat16_model_gets_its_line_and_plane():
    """A bfloat16 model ran the whole line, then failed on "Got unsupported ScalarType BFloat16" (numpy has none)."""
    from landscape import random_plane

    torch.manual_seed(0)
    a, b = (nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).bfloat16() for _ in range(2))
    X, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    r = line(a, a, b, (X, y), [0.0, 1.0])
    with torch.no_grad():
        own = [F.cross_entropy(m(X.bfloat16()).float(), y).item() for m in (a, b)]
    np.testing.assert_allclose(r.metrics["loss"], own, rtol=1e-2)  # each end is its model, to bfloat16's precision
    assert r.anchors.dtype == np.float32  # bfloat16 values are exact in float32
    p = random_plane(a, (X, y), [0.0], [0.0], seed=0)
    np.testing.assert_allclose(p.metrics["loss"][0, 0], own[0], rtol=1e-2)


def test_saturation_percentiles_given_as_fractions_are_warned_about():
    """``percentiles=(0.98,)`` silently gave the 0.98th percentile (near the bottom), not the 98th."""
    from landscape import measure_saturation

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    X = torch.randn(200, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"0-100 scale; \(0\.98,\) are all below 1 .* percentiles=\(98,\)"):
        low = measure_saturation(net, X, percentiles=(0.98,))["1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        high = measure_saturation(net, X, percentiles=(98,))["1"]  # the paper's level: no warning
    with torch.no_grad():
        acts = torch.tanh(net[0](X)).reshape(-1).numpy()
    np.testing.assert_allclose(low.values[0], np.percentile(acts, 0.98), rtol=1e-9)  # the value it warned about
    np.testing.assert_allclose(high.values[0], np.percentile(acts, 98), rtol=1e-9)


@pytest.mark.parametrize("call", ["line", "distance_along_path", "line_distance"])
def test_an_integer_where_positions_go_is_refused_as_a_count(call):
    """``line(net, a, b, data, 11)`` returned one point at alpha 11 (far off the segment), not 11 points."""
    from landscape.analyze import distance_along_path, line, line_distance

    torch.manual_seed(0)
    net, other = nn.Linear(3, 2), nn.Linear(3, 2)
    data = (torch.randn(6, 3), torch.randint(0, 2, (6,)))
    f = {"line": line, "distance_along_path": distance_along_path, "line_distance": line_distance}[call]
    with pytest.raises(ValueError, match=r"not a count: got the integer 11; for 11 evenly spaced points pass np\.lin"):
        f(net, net, other, data, 11)
    one = f(net, net, other, data, [11])  # said as a list, the one position is still there
    assert (one.alphas if call == "distance_along_path" else one.coords).tolist() == [11.0]


def test_trainer_eval_data_given_as_one_set_says_it_must_be_named():
    """``eval_data=data.val`` (a pair, not a dict) failed with "'tuple' object has no attribute 'items'"."""
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    with pytest.raises(TypeError, match=r"^eval_data must map names to data sets, e.g. eval_data=\{'val': "):
        Trainer(nn.Linear(3, 2), (X, y), epochs=1, eval_data=(X, y))
    trainer = Trainer(nn.Linear(3, 2), (X, y), epochs=1, eval_data={"val": (X, y)}).fit()
    assert "val_loss" in trainer.history_[-1]
