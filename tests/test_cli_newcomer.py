"""The command line as a newcomer meets it: counts said in the right number, mismatched files refused by name."""

from pathlib import Path

import numpy as np
import pytest

from landscape.cli import main
from landscape.data import load_digits_split
from landscape.models import build_model
from landscape.trajectory import Trajectory

N = 60  # --limit: the first N training digits
MODEL = ["--model", "mlp", "--model-kw", "hidden=[4]"]


@pytest.fixture(scope="module")
def run(tiny_digits_run) -> Path:
    return tiny_digits_run  # conftest: a tiny MLP trained on the first N digits, 3 snapshots on disk


def _one_snapshot(root: Path) -> Path:
    path = root / "one"
    traj = Trajectory.create(path)
    traj.append_model(build_model("mlp", (1, 8, 8), 10, hidden=[4], seed=0), step=0)
    traj.close()
    return path


def test_a_one_snapshot_trajectory_is_counted_as_one_snapshot(tmp_path, capsys):
    one = str(_one_snapshot(tmp_path))
    rc = main(["line", *MODEL, "--data", "digits", "--from", f"{one}:0", "--to", f"{one}:1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "snapshot index 1 out of range" in err
    assert "has 1 snapshot (0..0" in err and "1 snapshots" not in err


def test_summary_counts_agree_with_their_nouns(run, tmp_path, capsys):
    """One alpha is '1 point' and no bad point is '0 non-finite points', not '1 points' and 'point(s)'."""
    argv = ["line", *MODEL, "--data", "digits", "--limit", "1", "--from", f"{run}:0", "--to", str(run)]
    rc = main([*argv, "--alphas", "0.5", "--out", str(tmp_path), "--no-html", "--no-png"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = out.splitlines()[0]
    assert summary.startswith("line: 1 point, loss ") and summary.endswith("; 0 non-finite points"), summary
    rc = main(["distance", *argv[1:], "--alphas", "1", "--out", str(tmp_path), "--no-html", "--no-png"])
    summary = capsys.readouterr().out.splitlines()[0]
    assert rc == 0 and summary.startswith("distance: 1 point; ") and summary.endswith("over 1 sample"), summary


def _pca(run: Path, out: Path, capsys) -> tuple[str, str]:
    rc = main(["pca", str(run), *MODEL, "--data", "digits", "--limit", str(N), "--resolution", "3", "--out", str(out)])
    assert rc == 0
    assert capsys.readouterr().out.startswith("pca: 3 snapshots;")
    return str(out / "pca_plane.npz"), str(out / "pca_path.npz")


def test_plot_refuses_a_path_over_a_plane_of_other_directions(run, tmp_path, capsys):
    """A PCA path drawn over a random-direction plane was drawn at meaningless positions, without a word."""
    pca_plane, pca_path = _pca(run, tmp_path / "pca", capsys)
    flags = ["--limit", str(N), "--resolution", "3", "--no-html", "--no-png", "--quiet"]
    assert main(["plane", *MODEL, "--data", "digits", "--trajectory", str(run), "--out", str(tmp_path), *flags]) == 0
    out = tmp_path / "o"
    rc = main(["plot", str(tmp_path / "plane.npz"), "--path", pca_path, "--out", str(out), "--no-png", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "plane along random directions" in err and "pca_plane.npz" in err
    assert not out.exists()  # nothing drawn
    rc = main(["plot", pca_plane, "--path", pca_path, "--out", str(out), "--no-png", "--quiet"])
    assert rc == 0 and (out / "plot.html").is_file()  # the matching pair still draws


def test_plot_refuses_a_path_of_another_pca_fit(run, tmp_path, capsys):
    """The plane of one PCA and the path of another (here: centred on the last snapshot, not the mean)."""
    pca_plane, _ = _pca(run, tmp_path / "mean", capsys)
    rc = main(["pca", str(run), "--pca-center", "last", "--out", str(tmp_path / "last"), "--no-png", "--quiet"])
    assert rc == 0
    other = str(tmp_path / "last" / "pca_path.npz")
    rc = main(["plot", pca_plane, "--path", other, "--out", str(tmp_path / "o"), "--no-png", "--quiet"])
    assert rc == 2 and "different PCA fits" in capsys.readouterr().err


def test_plot_refuses_a_path_over_a_plane_whose_directions_are_not_orthonormal(run, tmp_path, capsys):
    """A plane made in Python (no recorded kind) along unnormalized directions cannot be a PCA plane."""
    from landscape.analyze import plane

    _, pca_path = _pca(run, tmp_path / "pca", capsys)
    X, y = load_digits_split().train
    traj = Trajectory.open(run)
    net = build_model("mlp", (1, 8, 8), 10, hidden=[4])
    d1, d2 = traj[0].vector - traj[-1].vector, traj[1].vector - traj[-1].vector
    res = plane(net, traj[-1].vector, d1, d2, (X[:N], y[:N]), xs=[0.0, 1.0], ys=[0.0, 1.0])
    assert not np.allclose(d1.norm().item(), 1.0)
    f = str(res.save(tmp_path / "mine"))
    rc = main(["plot", f, "--path", pca_path, "--out", str(tmp_path / "o"), "--no-png", "--quiet"])
    assert rc == 2 and "not a PCA plane" in capsys.readouterr().err


def test_hessian_top_k_beyond_the_parameter_count_is_refused_before_the_work(run, tmp_path, capsys):
    """``--top-k 5000`` on a 2,410-parameter model ran the density and then Lanczos for every eigenvalue (minutes)."""
    n = sum(p.numel() for p in build_model("mlp", (1, 8, 8), 10, hidden=[4]).parameters())
    argv = ["hessian", *MODEL, "--data", "digits", "--limit", "10", "--trajectory", str(run), "--out", str(tmp_path)]
    rc = main([*argv, "--top-k", str(n + 1), "--quiet"])
    assert rc == 2 and f"--top-k {n + 1}: the model has {n} parameters, so at most {n}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was computed or written


def test_a_training_checkpoint_dict_names_the_entry_that_holds_the_weights(run, tmp_path, capsys):
    """``torch.save({"model": sd, "epoch": 3}, f)``: refused as 'holds a dict', not saying where the weights are."""
    import torch

    sd = build_model("mlp", (1, 8, 8), 10, hidden=[4], seed=3).state_dict()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "ckpt.pt")
    argv = ["line", *MODEL, "--data", "digits", "--limit", "10", "--to", str(run), "--out", str(tmp_path / "o")]
    rc = main([*argv, "--from", str(tmp_path / "ckpt.pt"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a state dict of tensors (keys ['epoch', 'model']); its entry 'model' is one" in err
    torch.save(torch.load(tmp_path / "ckpt.pt")["model"], tmp_path / "weights.pt")  # the fix the message gives
    assert main([*argv, "--from", str(tmp_path / "weights.pt"), "--quiet", "--no-html", "--no-png"]) == 0


@pytest.mark.parametrize(
    "kw, message",
    [
        ("hidden=32", "hidden is the list of hidden-layer widths: hidden=[32] for one layer of 32"),
        ("hiden=[32]", "unexpected keyword argument 'hiden'; its --model-kw options: hidden, activation"),
    ],
)
def test_model_kw_slips_name_the_fix(run, tmp_path, capsys, kw, message):
    """``hidden=32`` said "'int' object is not iterable"; a misspelt option did not list the options there are."""
    argv = ["line", "--model", "mlp", "--model-kw", kw, "--data", "digits", "--to", str(run), "--from", f"{run}:0"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    net = build_model("mlp", (1, 8, 8), 10, hidden=[32])  # what the message offers builds one hidden layer of 32
    assert [m.out_features for m in net.modules() if hasattr(m, "out_features")] == [32, 10]


def test_a_rerun_into_the_same_out_says_which_files_it_replaced(run, tmp_path, capsys):
    """A second command into one --out overwrote the first's results, reporting them as plainly 'wrote'."""
    argv = ["line", *MODEL, "--data", "digits", "--limit", "10", "--from", f"{run}:0", "--to", str(run)]
    argv += ["--alphas", "0,1", "--out", str(tmp_path), "--no-html"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert f"wrote {tmp_path / 'line.npz'}\n" in first and "replaced" not in first
    assert main([*argv, "--alphas", "0,0.5,1"]) == 0
    second = capsys.readouterr().out
    for f in ("line.npz", "line.png"):
        assert f"wrote {tmp_path / f} (replaced the earlier file; --name keeps both)" in second
    assert main([*argv, "--name", "other"]) == 0  # the way out the message names
    assert "replaced" not in capsys.readouterr().out and (tmp_path / "other.npz").is_file()


@pytest.mark.parametrize(
    "command, options", [("line", "--from POINT --to POINT"), ("hessian", "--at POINT or --trajectory TRAJ")]
)
def test_a_point_given_positionally_is_pointed_to_its_option(run, tmp_path, capsys, command, options):
    """``landscape line A B`` said '--to is required'; ``landscape hessian A`` said 'unrecognized arguments: A'."""
    points = [f"{run}:0", str(run)] if command == "line" else [str(run)]
    rc = main([command, *points, *MODEL, "--data", "digits", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {points[0]}: {command} takes its points as options: {options}" in err
    assert not (tmp_path / "o").exists()
