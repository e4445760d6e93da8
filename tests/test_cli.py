"""``python -m landscape``: slices from a recorded trajectory, checkpoints, named errors, torchrun."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from landscape.analyze import LineResult, PlaneResult, ProjectedPath, random_directions
from landscape.cli import main
from landscape.data import load_digits_split
from landscape.models import build_model
from landscape.results import load_result
from landscape.train import Trainer
from landscape.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]
N = 150  # --limit: the first N training digits
MODEL = ["--model", "mlp", "--model-kw", "hidden=[8]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny MLPs trained 2 epochs on digits, each recorded into a trajectory on disk."""
    root = tmp_path_factory.mktemp("runs")
    X, y = load_digits_split().train
    X, y = X[:N], y[:N]
    paths = []
    sgd = dict(optimizer="sgd", optimizer_kwargs={"lr": 0.5}, epochs=2, batch_size=50)
    for seed in (0, 1):
        net = build_model("mlp", (1, 8, 8), 10, hidden=[8], seed=seed)
        path = root / f"run{seed}"
        Trainer(net, (X, y), seed=seed, trajectory=Trajectory.create(path), **sgd).fit()
        paths.append(path)
    return paths


def _argv(command: str, *flags: str, model: bool = True, **options: Any) -> list[str]:
    """``python -m landscape``'s arguments for ``command`` on the first N digits (with the MLP unless ``model=False``).

    Each option becomes ``--name value`` (``_`` in a name is ``-``, a trailing one dropped: ``from_`` is ``--from``; a
    list gives several values); each flag becomes ``--flag``; ``--quiet`` ends the list.
    """
    argv = [command, *(MODEL if model else []), "--data", "digits", "--limit", str(N)]
    for name, value in options.items():
        values = value if isinstance(value, list | tuple) else [value]
        argv += [f"--{name.rstrip('_').replace('_', '-')}", *map(str, values)]
    return [*argv, *(f"--{f}" for f in flags), "--quiet"]


def _data64():
    X, y = load_digits_split(dtype=torch.float64).train
    return X[:N], y[:N]


def _reference(vector: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy of the MLP at ``vector``, computed directly in float64 (no engine, no CLI)."""
    net = build_model("mlp", (1, 8, 8), 10, hidden=[8], dtype=torch.float64).eval()
    torch.nn.utils.vector_to_parameters(vector.double(), net.parameters())
    X, y = _data64()
    with torch.no_grad():
        out = net(X)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def _files(out: Path, *names: str) -> None:
    for n in names:
        assert (out / n).is_file() and (out / n).stat().st_size > 0, n


def test_line_from_trajectory(runs, tmp_path):
    traj = runs[0]
    out = tmp_path / "line"
    rc = main(_argv("line", dtype="float64", from_=f"{traj}:0", to=traj, alphas="-0.5:1.5:9", out=out))
    assert rc == 0
    _files(out, "line.npz", "line.html", "line.png")
    r = load_result(out / "line.npz")
    assert isinstance(r, LineResult)
    np.testing.assert_array_equal(r.coords, np.linspace(-0.5, 1.5, 9))
    t = Trajectory.open(traj)
    for alpha, i in ((0.0, 0), (1.0, -1)):
        k = int(np.flatnonzero(r.coords == alpha)[0])
        loss, acc = _reference(t[i].vector)
        assert r.metrics["loss"][k] == pytest.approx(loss, rel=1e-12)
        assert r.metrics["accuracy"][k] == acc
    html = (out / "line.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.I)


def test_plane_filter_directions(runs, tmp_path):
    traj = runs[0]
    out = tmp_path / "plane"
    options = dict(dtype="float64", center=f"{traj}:-1", directions="filter", range="-1:1", resolution="5x3")
    rc = main(_argv("plane", seed=7, out=out, name="p", **options))
    assert rc == 0
    _files(out, "p.npz", "p.html", "p.png", "p_surface.html")
    r = PlaneResult.load(out / "p.npz")
    np.testing.assert_array_equal(r.xs, np.linspace(-1, 1, 5))
    np.testing.assert_array_equal(r.ys, np.linspace(-1, 1, 3))
    center = Trajectory.open(traj)[-1].vector
    assert r.metrics["loss"][1, 2] == pytest.approx(_reference(center)[0], rel=1e-12)  # (0, 0) is the centre
    net = build_model("mlp", (1, 8, 8), 10, hidden=[8], dtype=torch.float64)
    want = random_directions(net, 2, seed=7, normalization="filter", reference=center.double())
    np.testing.assert_array_equal(r.directions, want.numpy())
    assert r.provenance.seed == 7 and r.provenance.extra["normalization"] == "filter"


def test_pca_plane_overlays_in_plane_coordinates(runs, tmp_path):
    out = tmp_path / "pca"
    rc = main(_argv("plane", "no-html", directions="pca", trajectory=runs, resolution=4, out=out))
    assert rc == 0
    _files(out, "plane.npz", "plane_path.npz", "plane.png")
    pl, path = PlaneResult.load(out / "plane.npz"), ProjectedPath.load(out / "plane_path.npz")
    vecs = torch.cat([Trajectory.open(p).vectors() for p in runs])
    np.testing.assert_allclose(pl.project(vecs), path.coordinates, atol=1e-5)  # float32 centre and directions
    lo, hi = path.coordinates.min(0), path.coordinates.max(0)  # the default range covers the path
    assert pl.xs[0] < lo[0] and pl.xs[-1] > hi[0] and pl.ys[0] < lo[1] and pl.ys[-1] > hi[1]
    assert np.isfinite(path.true_loss).all() and np.isfinite(path.plane_loss).all()
    plane, path = str(out / "plane.npz"), str(out / "plane_path.npz")
    rc = main(["plot", plane, "--path", path, "--out", str(out), "--name", "again", "--no-png", "--quiet"])
    assert rc == 0
    _files(out, "again.html")


def test_safetensors_checkpoint_and_meta_model(runs, tmp_path):
    net = build_model("mlp", (1, 8, 8), 10, hidden=[8], seed=5)
    ckpt = tmp_path / "net.safetensors"
    safetensors.torch.save_file(dict(net.state_dict()), str(ckpt))
    traj = Trajectory.create(tmp_path / "meta", meta={"model": "mlp", "model_kw": {"hidden": [8]}})
    traj.append_model(build_model("mlp", (1, 8, 8), 10, hidden=[8], seed=6), step=0)
    traj.close()
    out = tmp_path / "ck"
    options = dict(dtype="float64", from_=ckpt, to=tmp_path / "meta", alphas="0,1", out=out)
    rc = main(_argv("line", "no-html", "no-png", model=False, **options))
    assert rc == 0  # the model comes from the trajectory's metadata
    r = LineResult.load(out / "line.npz")
    vec = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert r.metrics["loss"][0] == pytest.approx(_reference(vec)[0], rel=1e-12)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--from": "{root}/nowhere:0"}, "trajectory .*nowhere.* not found"),
        ({"--from": "{traj}:99"}, r"snapshot index 99 out of range; .* has 3 snapshots"),
        ({"--model-kw": "hidden=[9]"}, "architecture mismatch"),
        ({"--model": "resnet99"}, "unknown model 'resnet99'"),
        ({"--alphas": "0:1:x"}, "--alphas '0:1:x': use START:STOP:COUNT"),
        ({"--alphas": "0:inf:3"}, "--alphas '0:inf:3': every value must be finite"),
        ({"--alphas": "nan,1"}, "--alphas 'nan,1': every value must be finite"),
        ({"--data": "cifar11"}, "--data 'cifar11': use digits, mnist-subset"),
        ({"--from": "{root}/net.pt"}, "never pickle"),
    ],
)
def test_errors_are_named(runs, tmp_path, capsys, change, message):
    (tmp_path / "net.pt").write_bytes(b"not read")
    opts = {
        "--model": "mlp",
        "--model-kw": "hidden=[8]",
        "--data": "digits",
        "--from": "{traj}:0",
        "--to": "{traj}",
        "--alphas": "0,1",
        "--out": str(tmp_path / "o"),
    }
    opts.update(change)
    argv = ["line", "--quiet"] + [x.format(traj=runs[0], root=tmp_path) for kv in opts.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("landscape: error: ") and re.search(message, err), err
    assert not (tmp_path / "o" / "line.npz").exists()


@pytest.mark.parametrize("command", ["line", "distance"])
def test_missing_start_point_names_only_options_the_command_has(runs, tmp_path, capsys, command):
    argv = [command, *MODEL, "--data", "digits", "--limit", "20", "--to", str(runs[0]), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "give --from POINT or --weights FILE" in err, err
    assert "--trajectory" not in err  # line and distance have no --trajectory option


def test_ranges_must_be_finite():
    from landscape.cli.parsing import CLIError, parse_range

    assert parse_range("-1:2", "--range") == (-1.0, 2.0)
    with pytest.raises(CLIError, match="--range '0:1e999': START and STOP must be finite"):
        parse_range("0:1e999", "--range")


def test_pca_of_a_grown_network_says_what_the_command_cannot_do(tmp_path, capsys):
    """The analyzer's hint 'pass segment=k' named an argument the command line does not have."""
    traj = Trajectory.create(tmp_path / "grown")
    for k, width in enumerate((2, 2, 4, 4)):
        traj.append_model(torch.nn.Linear(3, width), step=k)
    traj.close()
    assert main(["pca", str(tmp_path / "grown"), "--out", str(tmp_path / "o"), "--quiet", "--no-png", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "segments with different parameter counts (0: [0, 2) D=8, 1: [2, 4) D=16)" in err, err
    assert "pass segment=k" not in err and "TrajectoryPCA(2).fit(Trajectory.open(" in err


@pytest.mark.parametrize("command", ["pca", "plane"])
def test_pca_of_a_snapshot_index_is_refused_not_ignored(runs, tmp_path, capsys, command):
    """``TRAJ:INDEX`` names one snapshot; the PCA read the whole trajectory and dropped the index unsaid."""
    spec = f"{runs[0]}:1"
    argv = [command, spec] if command == "pca" else ["plane", "--directions", "pca", "--trajectory", spec]
    argv += [*MODEL, "--data", "digits", "--limit", "20", "--out", str(tmp_path / "o"), "--quiet", "--no-png"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{spec}: the PCA reads whole trajectories" in err and "--center" in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_plot_re_renders_what_the_hessian_command_saves(tmp_path):
    """``landscape hessian`` writes a HessianSpectrum; ``landscape plot`` said 'no renderer for a HessianSpectrum'."""
    from landscape.curvature import hessian_spectrum

    X, y = _data64()
    files = []
    for seed in (0, 1):
        net = build_model("mlp", (1, 8, 8), 10, hidden=[4], seed=seed, dtype=torch.float64)
        spec = hessian_spectrum(net, F.cross_entropy, (X[:40], y[:40]), n_probes=1, steps=6, top_k=1)
        files.append(str(spec.save(tmp_path / f"h{seed}")))
    out = tmp_path / "again"
    assert main(["plot", *files, "--out", str(out), "--no-png", "--quiet"]) == 0  # two spectra, overlaid
    html = (out / "plot.html").read_text()
    assert all(Path(f).name in html for f in files)  # each density labelled by its file


def test_plot_refuses_a_path_it_cannot_overlay(runs, tmp_path, capsys):
    """``--path`` beside a line result was silently ignored: the user asked for an overlay and got none."""
    from landscape.analyze import TrajectoryPCA, line

    t = Trajectory.open(runs[0])
    path = str(TrajectoryPCA(2).fit([t]).project([t]).save(tmp_path / "path"))
    X, y = load_digits_split().train
    net = build_model("mlp", (1, 8, 8), 10, hidden=[8])
    res = str(line(net, t[0].vector, t[-1].vector, (X[:N], y[:N]), alphas=[0.0, 1.0]).save(tmp_path / "line"))
    out = tmp_path / "o"
    rc = main(["plot", res, "--path", path, "--out", str(out), "--no-png", "--quiet"])
    assert rc == 2 and "--path overlays a trajectory on a plane" in capsys.readouterr().err
    assert not out.exists()  # nothing drawn


@pytest.mark.parametrize(
    "command, option, value",
    [("line", "--batch-size", "-1"), ("hessian", "--probes", "0"), ("hessian", "--top-k", "-1")],
)
def test_counts_are_checked_before_any_work(runs, tmp_path, capsys, command, option, value):
    """--batch-size -1 ended in 'max() arg is an empty sequence', --probes 0 in a ZeroDivisionError traceback."""
    point = ["--from", str(runs[1]), "--to", str(runs[0])] if command == "line" else ["--at", str(runs[0])]
    argv = [command, *MODEL, "--data", "digits", "--limit", "20", *point, option, value, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"landscape: error: {option} {value}: give a" in err, err


def test_out_that_is_a_file_is_refused_before_the_work(runs, tmp_path, capsys):
    """--out FILE raised FileExistsError (a traceback) after the whole computation."""
    f = tmp_path / "taken"
    f.write_text("x")
    argv = ["line", *MODEL, "--data", "digits", "--limit", "20", "--from", str(runs[1]), "--to", str(runs[0])]
    assert main([*argv, "--alphas", "0,1", "--out", str(f / "sub")]) == 2  # a file as a parent, too
    assert main([*argv, "--alphas", "0,1", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"landscape: error: --out {f / 'sub'}: {f} is a file; give a directory" in err, err
    assert f"landscape: error: --out {f}: {f} is a file; give a directory" in err, err


def test_model_required_without_metadata(runs, tmp_path, capsys):
    argv = ["line", "--data", "digits", "--from", f"{runs[0]}:0", "--to", str(runs[0]), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--model is required" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(runs, tmp_path):
    args = _argv("plane", "no-html", center=f"{runs[0]}:-1", resolution="5x4", seed=3)
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    pythonpath = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",  # a free port
        "-m",
        "landscape",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = PlaneResult.load(tmp_path / "one" / "plane.npz"), PlaneResult.load(tmp_path / "two" / "plane.npz")
    np.testing.assert_array_equal(one.directions, two.directions)
    np.testing.assert_allclose(two.metrics["loss"], one.metrics["loss"], rtol=1e-6)
    np.testing.assert_array_equal(two.metrics["accuracy"], one.metrics["accuracy"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["plane.npz", "plane.png"]  # rank 0 only


BN_NET = """
from torch import nn


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 10))
"""


def test_line_between_batchnorm_models_ends_at_each_models_own_loss(tmp_path, monkeypatch):
    """The command's default is the API's: each model keeps its own running statistics (``--bn-mode eval`` forces
    the first model's), so the line's ends are the two networks' own losses, computed here in plain torch."""
    (tmp_path / "bn_net.py").write_text(BN_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import bn_net

    X, y = _data64()
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = bn_net.make().double().train()
        with torch.no_grad():  # different running statistics in each model (and different weights)
            net(X[seed * 50 : seed * 50 + 60] * (1 + seed))
        net.eval()
        safetensors.torch.save_file(dict(net.state_dict()), str(tmp_path / f"bn{seed}.safetensors"))
        with torch.no_grad():
            ends.append(float(F.cross_entropy(net(X), y)))
    common = dict(from_=tmp_path / "bn0.safetensors", to=tmp_path / "bn1.safetensors", alphas="0,1", dtype="float64")
    for mode, want in ((None, ends), ("eval", None)):
        out = tmp_path / f"line_{mode}"
        options = dict(common, out=out, **({"bn_mode": mode} if mode else {}))
        argv = _argv("line", "no-html", "no-png", model=False, **options)
        assert main(["line", "--model", "bn_net:make", *argv[1:]]) == 0
        loss = LineResult.load(out / "line.npz").metrics["loss"]
        assert loss[0] == pytest.approx(ends[0], rel=1e-12)
        if want is not None:
            assert loss[1] == pytest.approx(ends[1], rel=1e-12)
        else:  # the first model's statistics at b's weights: not b's own loss
            assert abs(loss[1] - ends[1]) > 1e-3


def test_the_help_examples_parse():
    """Every example under ``landscape --help`` is a command line the parser accepts, naming a real command."""
    from landscape.cli.app import _join_negative
    from landscape.cli.parser import _EXAMPLES, build_parser

    lines = [ln.split("#")[0].split() for ln in _EXAMPLES.splitlines() if ln.strip().startswith("landscape ")]
    assert {ln[1] for ln in lines} == {"line", "plane", "pca", "hessian", "distance", "plot", "check"}
    for words in lines:
        args = build_parser().parse_args(_join_negative(words[1:]))
        assert args.command == words[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plot", "{tmp}/nope.npz"], "nope.npz: no such file"),
        (["plot", "{traj}"], "is a directory: plot reads the .npz results.*landscape pca"),
        (["pca", "{tmp}/nope"], "trajectory '.*nope' not found"),
        (
            ["plane", "--data", "digits", "--directions", "pca", "--trajectory", "{traj}", "{tmp}/nope"],
            "nope' not found",
        ),
    ],
)
def test_missing_files_are_named_as_what_the_command_reads(runs, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, traj=runs[0]) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("landscape: error: ") and re.search(message, err), err
    assert "weights file" not in err  # neither reads weights files


def test_plot_refuses_mixed_types_and_says_what_to_do(runs, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_argv("line", "no-html", "no-png", from_=f"{runs[0]}:0", to=runs[0], alphas="0,1", out=out)) == 0
    assert main(_argv("distance", "no-html", "no-png", from_=runs[0], to=runs[1], alphas="0,1", out=out)) == 0
    capsys.readouterr()
    assert main(["plot", str(out / "line.npz"), str(out / "distance.npz"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "['DistanceResult', 'LineResult']" in err and "run plot once per type" in err
