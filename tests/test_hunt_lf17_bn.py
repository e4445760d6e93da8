"""``bn_mode="train"`` and a one-sample last batch (hunt lf17): an error naming the batch, its size and the fixes.

torch's own message ("Expected more than 1 value per channel when training, got input size [1, 6]") names neither
the batch nor what to change.
"""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from landscape._bn_batches import batch_size_without_single, one_sample_batch_error
from landscape.analyze import LineResult
from landscape.cli import main
from landscape.data import load_digits_split

BN_NET = """
from torch import nn


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 10))
"""


def test_batch_size_without_single_is_the_nearest_that_leaves_no_single_batch():
    """Against a brute-force search: the nearest batch size in [2, n] (the smaller on a tie) with n % c != 1."""
    for n in range(1, 70):
        for b in range(1, n + 1):
            if n % b != 1:
                continue
            ok = [c for c in range(2, n + 1) if n % c != 1]
            want = min(ok, key=lambda c: (abs(c - b), c)) if ok else None
            assert batch_size_without_single(n, b) == want, (n, b)


def test_one_sample_batch_error_names_the_batch_size_and_fixes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).train()
    with pytest.raises(ValueError) as caught:
        net(torch.randn(1, 3))
    e = one_sample_batch_error(caught.value, batch=2, size=1, n_batches=3, n_samples=9, batch_size=4)
    assert e is not None
    text = str(e)
    for part in ("batch 2 (of 3", "holds 1 sample,", "batch_size=3 for 9 samples", "drop_last=True", "bn_mode='eval'"):
        assert part in text, part
    assert one_sample_batch_error(ValueError("another problem"), batch=0, size=1) is None
    assert one_sample_batch_error(RuntimeError(str(caught.value)), batch=0, size=1) is None


def _bn_points(tmp_path, monkeypatch):
    (tmp_path / "bn_net_lf17.py").write_text(BN_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import bn_net_lf17

    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = bn_net_lf17.make().double()
        safetensors.torch.save_file(dict(net.state_dict()), str(tmp_path / f"bn{seed}.safetensors"))
        nets.append(net)
    return nets


def _argv(tmp_path, *extra: str) -> list[str]:
    return [
        "line",
        "--model",
        "bn_net_lf17:make",
        "--from",
        str(tmp_path / "bn0.safetensors"),
        "--to",
        str(tmp_path / "bn1.safetensors"),
        "--alphas",
        "0,1",
        "--data",
        "digits",
        "--dtype",
        "float64",
        "--bn-mode",
        "train",
        "--no-html",
        "--no-png",
        "--quiet",
        *extra,
    ]


def test_cli_one_sample_last_batch_under_bn_mode_train(tmp_path, monkeypatch, capsys):
    nets = _bn_points(tmp_path, monkeypatch)
    out = tmp_path / "out"
    rc = main(_argv(tmp_path, "--limit", "9", "--batch-size", "4", "--out", str(out)))
    err = capsys.readouterr().err
    assert rc == 2
    for part in ("batch 2 of 3", "1 of the 9 examples", "--batch-size 3", "--limit 8", "--bn-mode eval"):
        assert part in err, (part, err)
    assert "Traceback" not in err
    # The advice works: batches of 3 give each batch's statistics, as plain torch computes them (float64).
    X, y = load_digits_split(dtype=torch.float64).train
    X, y = X[:9], y[:9]
    assert main(_argv(tmp_path, "--limit", "9", "--batch-size", "3", "--out", str(out))) == 0
    loss = LineResult.load(out / "line.npz").metrics["loss"]
    for net, got in zip(nets, loss):
        net.train()
        with torch.no_grad():
            want = sum(float(F.cross_entropy(net(X[i : i + 3]), y[i : i + 3], reduction="sum")) for i in (0, 3, 6)) / 9
        assert got == pytest.approx(want, rel=1e-12)
    rc = main(_argv(tmp_path, "--limit", "1", "--out", str(out)))
    assert rc == 2 and "--limit 1 leaves one example" in capsys.readouterr().err


def test_cli_hessian_batch_size_under_bn_mode_train_names_the_option(tmp_path, monkeypatch, capsys):
    _bn_points(tmp_path, monkeypatch)
    argv = ["hessian", "--model", "bn_net_lf17:make", "--at", str(tmp_path / "bn0.safetensors"), "--data", "digits"]
    rc = main([*argv, "--limit", "9", "--batch-size", "4", "--bn-mode", "train", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--batch-size 4 with --bn-mode train" in err and "micro_batch_size" not in err
