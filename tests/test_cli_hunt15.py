"""Bug hunt 15: the command line refuses, before any work, what it used to find out after it or not at all."""

import os
from pathlib import Path

import numpy as np
import pytest

from landscape import load_result
from landscape.cli import main
from landscape.cli.parsing import BYTES_PER_POINT, parse_resolution

N = 60  # --limit: the first N training digits
MODEL = ["--model", "mlp", "--model-kw", "hidden=[4]"]
DATA = ["--data", "digits", "--limit", str(N)]


@pytest.fixture(scope="module")
def run(tiny_digits_run) -> Path:
    return tiny_digits_run  # conftest: a tiny MLP trained on the first N digits, 3 snapshots on disk


@pytest.fixture
def no_work(monkeypatch):
    """The slice analyzers raise if called: a refusal must come before any of them runs."""
    import landscape.analyze.pca as pca
    import landscape.analyze.surface as surface

    def work(*a, **k):
        raise AssertionError("the work ran before the option was refused")

    for name in ("line", "line_distance", "random_plane", "plane_through", "plane"):
        monkeypatch.setattr(surface, name, work)
    monkeypatch.setattr(pca.TrajectoryPCA, "fit", work)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("landscape: error: "), err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["plane", "--center", "{run}", "--resolution", "100000x100000"],
        ["pca", "{run}", "--data", "digits", "--resolution", "100000x100000"],
        ["line", "--from", "{run}:0", "--to", "{run}", "--alphas", "0:1:10000000000"],
    ],
)
def test_a_slice_too_large_for_the_memory_budget_is_refused_with_what_it_needs(run, tmp_path, capsys, no_work, argv):
    # plane --resolution 100000x100000 printed numpy's MemoryError traceback ("Unable to allocate 74.5 GiB") from
    # the first of its grids; line --alphas 0:1:10000000000 the same from np.linspace.
    out = tmp_path / "out"
    argv = [a.format(run=run) for a in argv]
    assert main([*argv, *MODEL, *DATA, "--out", str(out), "--quiet"]) == 2
    err = _one_line_error(capsys)
    need = 10**10 * BYTES_PER_POINT / 2**30  # GiB
    assert "10,000,000,000 points" in err and f"{need:.1f} GiB" in err and "--memory-budget" in err, err
    assert not out.exists()


def test_the_memory_budget_bounds_the_slice_at_its_bytes_a_point(run, tmp_path, capsys):
    """A 20 x 20 plane holds 400 points of BYTES_PER_POINT bytes: refused one byte under that budget, drawn at it."""
    need = 400 * BYTES_PER_POINT
    argv = ["plane", "--center", str(run), "--resolution", "20x20", *MODEL, *DATA, "--quiet", "--no-html", "--no-png"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--memory-budget", str(need - 1)]) == 2
    assert "400 points" in _one_line_error(capsys)
    assert main([*argv, "--out", str(tmp_path / "b"), "--memory-budget", str(need)]) == 0
    assert load_result(tmp_path / "b" / "plane.npz").metrics["loss"].shape == (20, 20)


@pytest.mark.parametrize("target", ["sub/out", "."])
def test_an_out_directory_it_cannot_write_is_refused_before_the_work(
    run, tmp_path, capsys, monkeypatch, no_work, target
):
    # An --out in a directory without write permission (or on a read-only file system) was found only when the
    # first result was written, after the whole slice was computed.
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: answer as the OS does for anyone else
            real = os.access

            def access(path, mode, *a, **k):
                inside = Path(path).resolve() == locked.resolve() and mode & os.W_OK
                return False if inside else real(path, mode, *a, **k)

            monkeypatch.setattr(os, "access", access)
        out = locked / target
        argv = ["line", "--from", f"{run}:0", "--to", str(run), *MODEL, *DATA, "--out", str(out), "--quiet"]
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert f"{locked} is not writable" in err or f"--out {out} is not writable" in err, err
        assert "choose another --out" in err
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "argv",
    [
        ["line", "--from", "{run}:0", "--to", "{run}", "--alphas", "-inf:1"],
        ["line", "--from", "{run}:0", "--to", "{run}", "--alphas", "-nan,0,1"],
        ["distance", "--from", "{run}:0", "--to", "{run}", "--alphas", "-Infinity:1:5"],
        ["plane", "--center", "{run}", "--range", "-inf:1"],
        ["plane", "--center", "{run}", "--yrange", "-1:inf"],
    ],
)
def test_non_finite_values_are_refused_as_such(run, tmp_path, capsys, no_work, argv):
    # --alphas -inf:1 got argparse's "argument --alphas: expected one argument" (the value taken for an option) and a
    # usage screen; --range -inf:1 the same, and --yrange -1:inf "use START:STOP", as if the syntax were wrong.
    argv = [a.format(run=run) for a in argv]
    assert main([*argv, *MODEL, *DATA, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "finite" in err and argv[-2] in err, err


def test_resolution_takes_an_upper_case_x(run, tmp_path):
    # --resolution 41X31 was refused ("use N (square) or NXxNY"): its own help writes NXxNY.
    assert parse_resolution("41X31") == parse_resolution("41x31") == (41, 31)
    losses = []
    for spec in ("5X3", "5x3"):
        out = tmp_path / spec
        argv = ["plane", "--center", str(run), "--resolution", spec, *MODEL, *DATA, "--out", str(out), "--quiet"]
        assert main([*argv, "--no-html", "--no-png"]) == 0
        losses.append(load_result(out / "plane.npz").metrics["loss"])
    assert losses[0].shape == (3, 5)  # rows are y
    np.testing.assert_array_equal(losses[0], losses[1])


@pytest.mark.parametrize(
    ("options", "uses"),
    [
        (["--pca-center", "mean"], "--directions pca"),
        (["--directions", "layer", "--pca-center", "point"], "--directions pca"),  # its default value, given
        (["--frame", "orthogonal"], "--directions models"),
        (["--directions", "pca", "--orthogonal"], "--directions filter/layer/model/random"),
        (["--directions", "models", "--models", "{run}:0", "{run}:1", "--orthogonal"], "filter/layer/model/random"),
        (["--directions", "pca", "--seed", "0"], "filter/layer/model/random"),
        (["--directions", "models", "--models", "{run}:0", "{run}:1", "--bias-bn", "keep"], "filter/layer/model"),
    ],
)
def test_plane_refuses_an_option_its_directions_do_not_use(run, tmp_path, capsys, no_work, options, uses):
    # plane --pca-center mean without --directions pca drew a random filter plane and ignored it; so did --frame
    # outside --directions models and --orthogonal (and --seed, --bias-bn) outside the random directions.
    out = tmp_path / "out"
    argv = ["plane", "--center", str(run), *[o.format(run=run) for o in options], *MODEL, *DATA, "--out", str(out)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    ignored = next(o for o in reversed(options) if o.startswith("--"))  # the option under test comes last
    assert f"error: {ignored}" in err and uses in err and "ignore" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "options",
    [
        ["--directions", "pca", "--pca-center", "mean"],
        ["--directions", "models", "--models", "{run}:0", "{run}:1", "--frame", "orthogonal"],
        ["--directions", "random", "--orthogonal", "--seed", "3", "--bias-bn", "keep"],
    ],
)
def test_plane_takes_the_options_of_its_directions(run, tmp_path, options):
    out = tmp_path / "out"
    argv = ["plane", "--center", str(run), *[o.format(run=run) for o in options], *MODEL, *DATA, "--out", str(out)]
    assert main([*argv, "--resolution", "3", "--quiet", "--no-html", "--no-png"]) == 0
    assert load_result(out / "plane.npz").metrics["loss"].shape == (3, 3)
