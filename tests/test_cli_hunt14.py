"""Bug hunt 14: the command line end to end, on a store made by training (each test failed before its fix)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from landscape.cli import main

N = 60  # --limit: the first N training digits
MODEL = ["--model", "mlp", "--model-kw", "hidden=[4]"]
DATA = ["--data", "digits", "--limit", str(N)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tiny_digits_run) -> Path:
    return tiny_digits_run  # conftest: a tiny MLP trained on the first N digits, 3 snapshots on disk


def _under_file_size_limit(limit: int, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``main(argv)`` in a process that cannot write files beyond ``limit`` bytes (a disk filling up midway).

    ``RLIMIT_FSIZE`` makes a write past the limit fail with ``EFBIG`` (``SIGXFSZ`` ignored, so it is an error, not
    a kill): the real failure of a real write, partway through the file.
    """
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from landscape.cli import main
        sys.exit(main({argv!r}))
        """
    )
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_figure_write_that_fails_midway_keeps_the_earlier_figure(run, tmp_path):
    # plotly and matplotlib wrote pages and images in place: a write that failed partway (disk full) left a
    # cut-off PNG where the previous run's complete one was (the .npz results were already written atomically).
    out = tmp_path / "out"
    assert main(["line", "--from", f"{run}:0", "--to", str(run), *MODEL, *DATA, "--out", str(out), "--quiet"]) == 0
    png = (out / "line.png").read_bytes()
    assert len(png) > 8000
    proc = _under_file_size_limit(
        4000, ["plot", str(out / "line.npz"), "--out", str(out), "--name", "line", "--no-html"], tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stderr and "line.png" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "line.png").read_bytes() == png  # the earlier image, whole
    assert sorted(p.name for p in out.iterdir()) == ["line.html", "line.npz", "line.png", "plotly.min.js"]


def test_a_plotly_bundle_cut_off_by_a_failed_write_is_not_kept_for_good(run, tmp_path):
    # plotly writes plotly.min.js beside the pages only when it is missing, and in place: a write of its 4.7 MB
    # that failed midway left a cut-off bundle that every later run kept, so every page in the folder was blank.
    from plotly.offline import get_plotlyjs

    out = tmp_path / "out"
    assert main(["line", "--from", f"{run}:0", "--to", str(run), *MODEL, *DATA, "--out", str(out), "--quiet"]) == 0
    (out / "plotly.min.js").unlink()
    proc = _under_file_size_limit(1 << 20, ["plot", str(out / "line.npz"), "--out", str(out), "--no-png"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert main(["plot", str(out / "line.npz"), "--out", str(out), "--no-png", "--quiet"]) == 0
    assert (out / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()


def test_plot_re_renders_a_plane_narrower_than_2_by_2_as_the_plane_command_drew_it(run, tmp_path, capsys):
    # The plane command draws a 1 x N grid as a heatmap (it has no contours); plot's default style (filled
    # contours) refused to re-render that same saved plane: "contours need ... use a heatmap", naming no option.
    from landscape import load_result

    out = tmp_path / "out"
    common = [*MODEL, *DATA, "--out", str(out), "--quiet", "--no-html"]
    assert main(["plane", "--center", str(run), "--resolution", "5x1", *common]) == 0
    assert load_result(out / "plane.npz").metrics["loss"].shape == (1, 5)
    assert main(["plot", str(out / "plane.npz"), "--out", str(out), "--name", "again", "--quiet", "--no-html"]) == 0
    assert {"again.png", "again_surface.png"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main(["plot", str(out / "plane.npz"), "--out", str(out), "--style", "contour", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--style heatmap" in err and "1 x 5" in err, err


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        (["--models", "{run}:0", "{run}:1"], "--directions models"),  # forgot --directions models
        (["--directions", "layer", "--models", "{run}:0", "{run}:1"], "--directions models"),
        (["--trajectory", "{run}", "{run}"], "--directions pca"),  # forgot --directions pca
    ],
)
def test_plane_refuses_options_of_other_directions_instead_of_ignoring_them(run, tmp_path, capsys, options, fix):
    # `plane --center A --models B C` drew a random filter-normalized plane around A without a word about B and C
    # (the plane through the three models needs --directions models); `--trajectory A B` without --directions pca
    # drew a random plane around A's last snapshot and ignored B.
    out = tmp_path / "out"
    argv = ["plane", "--center", str(run), *[o.format(run=run) for o in options], *MODEL, *DATA, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fix in err, err
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("products", ["1", "2"])
def test_hessian_trace_products_hutchpp_cannot_use_are_refused_before_the_work(
    run, tmp_path, capsys, monkeypatch, products
):
    # --trace-products 1 or 2 passed the CLI's check (a non-negative integer), and Hutch++ refused it only after
    # the SLQ density and the top eigenvalues were computed, saying "Hutch++ needs at least 3 products, got 1"
    # without naming the option.
    import landscape.curvature.spectrum as spectrum

    def no_work(*a, **k):
        raise AssertionError("the SLQ density was computed before the option was refused")

    monkeypatch.setattr(spectrum, "slq_runs", no_work)
    argv = ["hessian", "--at", str(run), *MODEL, *DATA, "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--trace-products", products]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--trace-products {products}" in err and "3 or more" in err, err
