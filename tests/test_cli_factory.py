"""The command line on a model of one's own: ``--model pkg.mod:factory``, weights files, the recorded factory.

The model lives in ``tests/tests_pkg`` (outside the package); the acceptance command runs in a subprocess with
only that directory and the worktree on ``PYTHONPATH``. ``hessian`` and ``distance`` results are compared with
the Python API's on the same weights.
"""

import configparser
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from landscape import factory as FA
from landscape.analyze import DistanceResult, PlaneResult, distance_along_path
from landscape.cli import build_parser, main
from landscape.curvature import HessianSpectrum, hessian_spectrum
from landscape.data import load_digits_split
from landscape.params import parameters_to_vector
from landscape.results import load_result
from landscape.train import RecordTrajectory, Trainer, fit
from landscape.trajectory import Trajectory

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
N = 120
TARGET = "tests_pkg.nets:make"
MODEL = ["--model", TARGET, "--model-kw", '{"width": 8}']
QUIET = ["--data", "digits", "--limit", str(N), "--quiet"]

if str(TESTS) not in sys.path:  # pytest puts tests/ on sys.path already; be explicit
    sys.path.insert(0, str(TESTS))
from tests_pkg import nets  # noqa: E402


def _data():
    X, y = load_digits_split().train
    return X[:N], y[:N]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A width-8 model of tests_pkg trained one epoch, recorded with its factory; its weights in two files."""
    root = tmp_path_factory.mktemp("factory")
    torch.manual_seed(0)
    net = nets.make(width=8)
    traj = Trajectory.create(root / "run")
    tr = Trainer(
        net,
        _data(),
        optimizer_kwargs={"lr": 0.5},  # of the default optimizer, SGD
        epochs=1,
        batch_size=40,
        seed=0,
        trajectory=traj,
        factory=(TARGET, {"width": 8}),
    )
    tr.fit()
    traj.close()
    state = {k: v.detach().clone().contiguous() for k, v in tr.model.state_dict().items()}
    safetensors.torch.save_file(state, str(root / "w.safetensors"))
    torch.save(state, root / "w.pt")
    return {"traj": root / "run", "st": root / "w.safetensors", "pt": root / "w.pt", "model": tr.model, "root": root}


def _cli(args, cwd, env_extra=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "landscape", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ----------------------------------------------------------------------------- the recorded factory
def test_trainer_records_the_factory_reference(run):
    meta = Trajectory.open(run["traj"]).meta
    assert meta["model_factory"] == {"target": TARGET, "kwargs": {"width": 8}}
    assert FA.factory_from_meta(meta) == FA.FactoryRef(TARGET, {"width": 8})


def test_record_trajectory_and_fit_take_a_factory(tmp_path):
    t = Trajectory.create(tmp_path / "a")
    RecordTrajectory(t, factory=functools.partial(nets.make, width=5))
    assert t.meta["model_factory"] == {"target": TARGET, "kwargs": {"width": 5}}
    t.close()
    X, y = _data()
    fit(
        nets.Net(),
        (X[:20], y[:20]),
        steps=1,
        trajectory=Trajectory.create(tmp_path / "b"),
        factory=nets.Net,
        record_every_epochs=None,
    )
    assert Trajectory.open(tmp_path / "b").meta["model_factory"] == {"target": "tests_pkg.nets:Net", "kwargs": {}}
    with pytest.raises(ValueError, match="give trajectory= too"):
        Trainer(nets.make(), (X, y), steps=1, factory=TARGET)


def test_the_trainer_refuses_a_factory_that_builds_another_network_before_recording(tmp_path):
    X, y = _data()
    t = Trajectory.create(tmp_path / "c")
    wrong = r"body\.1\.weight \(5, 64\) where the model has body\.1\.weight \(3, 64\)"
    with pytest.raises(FA.FactoryError, match=wrong):
        Trainer(nets.Net(width=3), (X, y), steps=1, trajectory=t, factory=functools.partial(nets.Net, width=5))
    assert "model_factory" not in t.meta and len(t) == 0  # nothing recorded, the store untouched
    # Building the factory's network to compare leaves torch's global random stream where it was.
    net = nets.Net(width=3)
    state = torch.random.get_rng_state()
    ref = FA.check_factory(functools.partial(nets.Net, width=3), net)
    assert ref == FA.FactoryRef("tests_pkg.nets:Net", {"width": 3})
    assert torch.equal(torch.random.get_rng_state(), state)


def test_factory_forms_and_errors():
    assert FA.as_factory_ref({"target": TARGET, "kwargs": {"width": 2}}).to_meta() == {
        "target": TARGET,
        "kwargs": {"width": 2},
    }
    assert FA.as_factory_ref(TARGET, {"width": 2}) == FA.as_factory_ref((TARGET, '{"width": 2}'))
    assert isinstance(FA.build_model(TARGET, {"width": 2}), torch.nn.Sequential)
    for bad, match in [
        ("tests_pkg.nets", "use package.module:function"),
        ("tests_pkg.nets:", "use package.module:function"),
        ("tests_pkg.nope:make", "cannot import module 'tests_pkg.nope'"),
        ("tests_pkg.nets:nope", "has no attribute 'nope'"),
        ("tests_pkg.nets:VALUE", "not a function or class"),
        (lambda: None, "no importable name"),
        (functools.partial(nets.make, 8), "keyword arguments only"),
    ]:
        with pytest.raises(FA.FactoryError, match=match):
            FA.as_factory_ref(bad)
    main_fn = type(nets.make)(nets.make.__code__, {}, "make")
    main_fn.__module__ = "__main__"
    with pytest.raises(FA.FactoryError, match="defined in __main__"):
        FA.as_factory_ref(main_fn)
    with pytest.raises(FA.FactoryError, match="JSON-compatible"):
        FA.FactoryRef(TARGET, {"width": object()})
    with pytest.raises(FA.FactoryError, match="not valid JSON"):
        FA.parse_kwargs('{"width": 8')
    with pytest.raises(FA.FactoryError, match="not a torch.nn.Module"):
        FA.build_model("tests_pkg.nets:not_a_model")
    with pytest.raises(FA.FactoryError, match="check the model kwargs"):
        FA.build_model(TARGET, {"depth": 3})
    # a reference read from a file must name a model class or a function of one's own
    for target in ("os:system", "subprocess:run", "builtins:eval"):
        with pytest.raises(FA.FactoryError, match="standard library"):
            FA.resolve(target, trusted=False)
    with pytest.raises(FA.FactoryError, match="neither an nn.Module class nor a Python function"):
        FA.resolve("torch:zeros", trusted=False)
    assert FA.resolve("tests_pkg.nets:Net", trusted=False) is nets.Net


def test_weights_files_and_mismatch(run, tmp_path):
    ref = dict(run["model"].state_dict())
    template = nets.make(width=8)
    before = parameters_to_vector(template).clone()
    for f in (run["st"], run["pt"]):
        m = FA.load_weights(template, f)
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref[k]), (f, k)
    assert torch.equal(parameters_to_vector(template), before)  # the template is never modified
    with pytest.raises(
        FA.FactoryError,
        match=r"do not fit the model.*shape \(file vs model\): 1.weight \(8, 64\) vs "
        r"\(4, 64\).*--model-kw",
    ):
        FA.load_weights(nets.make(width=4), run["st"])
    torch.save(nets.make(width=8), tmp_path / "pickled.pt")  # a pickled module, not a state dict
    with pytest.raises(FA.FactoryError, match="weights_only"):
        FA.load_state_dict(tmp_path / "pickled.pt")
    (tmp_path / "w.pkl").write_bytes(b"x")
    with pytest.raises(FA.FactoryError, match="give a .safetensors file or a torch state dict"):
        FA.load_state_dict(tmp_path / "w.pkl")


# ----------------------------------------------------------------------------- the command line
def test_console_script_entry_point():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    assert "landscape = landscape.cli:main" in scripts
    assert build_parser().prog == "landscape"


@pytest.mark.slow
def test_plane_on_a_model_outside_the_package(run, tmp_path):
    """The acceptance command, in a fresh process: --model pkg.mod:factory --model-kw JSON --weights FILE."""
    out = tmp_path / "out"
    p = _cli(["plane", *MODEL, "--weights", run["st"], *QUIET, "--resolution", "3", "--out", out], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = load_result(out / "plane.npz")
    assert isinstance(r, PlaneResult)
    np.testing.assert_array_equal(r.center, parameters_to_vector(run["model"]).numpy())
    X, y = _data()
    with torch.no_grad():
        loss = float(F.cross_entropy(run["model"].eval()(X), y))
    assert r.xs[1] == 0 and r.ys[1] == 0
    np.testing.assert_allclose(r.metrics["loss"][1, 1], loss, rtol=1e-5)
    # two pages (contour and 3-D surface) share one plotly.min.js instead of embedding 4.7 MB each
    pages = sorted(out.glob("*.html"))
    assert [q.name for q in pages] == ["plane.html", "plane_surface.html"]
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    for q in pages:
        assert q.stat().st_size < 200_000 and 'src="plotly.min.js"' in q.read_text()


def test_plane_from_the_trajectory_alone(run, tmp_path):
    """``plane --trajectory DIR``: the recorded factory builds the model; same plane as naming it."""
    a, b = tmp_path / "a", tmp_path / "b"
    grid = [*QUIET, "--resolution", "3", "--no-html", "--no-png"]
    assert main(["plane", "--trajectory", str(run["traj"]), *grid, "--out", str(a)]) == 0
    assert main(["plane", *MODEL, "--center", str(run["traj"]), *grid, "--out", str(b)]) == 0
    ra, rb = load_result(a / "plane.npz"), load_result(b / "plane.npz")
    np.testing.assert_array_equal(ra.center, Trajectory.open(run["traj"])[-1].vector.numpy())
    np.testing.assert_array_equal(ra.metrics["loss"], rb.metrics["loss"])


def test_hessian_matches_the_python_api(run, tmp_path):
    opts = ["--probes", "2", "--lanczos-steps", "8", "--top-k", "2", "--trace-products", "6", "--no-png", "--no-html"]
    assert main(["hessian", "--trajectory", str(run["traj"]), *QUIET, *opts, "--out", str(tmp_path / "t")]) == 0
    assert main(["hessian", *MODEL, "--weights", str(run["pt"]), *QUIET, *opts, "--out", str(tmp_path / "w")]) == 0
    model = Trajectory.open(run["traj"]).model_at(nets.make(width=8), -1)
    api = hessian_spectrum(model, F.cross_entropy, _data(), n_probes=2, steps=8, top_k=2, trace_products=6, seed=0)
    for sub in ("t", "w"):
        r = load_result(tmp_path / sub / "hessian.npz")
        assert isinstance(r, HessianSpectrum)
        for field in ("nodes", "weights", "top_eigenvalues"):
            np.testing.assert_allclose(getattr(r, field), getattr(api, field), rtol=1e-6, atol=1e-9, err_msg=field)
        assert r.trace.keys() == api.trace.keys()
        np.testing.assert_allclose([r.trace[k] for k in r.trace], [api.trace[k] for k in r.trace], rtol=1e-6)
        assert r.n_params == api.n_params and r.n_samples == N


def _distance(run, out, alphas, *flags):
    """``landscape distance`` from the run's first snapshot to its weights file, at ``alphas``; the exit code."""
    argv = ["distance", *MODEL, "--from", f"{run['traj']}:0", "--to", str(run["st"]), *QUIET]
    return main([*argv, "--alphas", alphas, "--out", str(out), "--no-png", *flags])


def test_distance_matches_the_python_api(run, tmp_path):
    out = tmp_path / "d"
    assert _distance(run, out, "0:1:5", "--no-html") == 0
    r = load_result(out / "distance.npz")
    assert isinstance(r, DistanceResult)
    a = Trajectory.open(run["traj"]).model_at(nets.make(width=8), 0)
    api = distance_along_path(a, a, run["model"], _data(), alphas=np.linspace(0, 1, 5))
    np.testing.assert_allclose(r.rms, api.rms, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(r.disagreement, api.disagreement)
    assert r.rms[0] == 0 and r.rms[-1] > 0


def test_cdn_pages_reference_the_cdn(run, tmp_path):
    out = tmp_path / "cdn"
    assert _distance(run, out, "0:1:3", "--cdn") == 0
    page = (out / "distance.html").read_text()
    assert "cdn.plot.ly" in page and not (out / "plotly.min.js").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "tests_pkg.nope:make"], "cannot import module 'tests_pkg.nope'"),
        (["--model", "tests_pkg.nets:nope"], "has no attribute 'nope'"),
        (["--model", TARGET, "--model-kw", '{"width": 8'], "is not a JSON object"),
        (["--model", TARGET, "--model-kw", '{"width": 4}'], r"do not fit the model.*1\.weight"),
        (["--model", "tests_pkg.nets:not_a_model"], "not a torch.nn.Module"),
        (["--model", "tests_pkg.nets:"], "use package.module:function"),
    ],
)
def test_clear_errors(run, tmp_path, capsys, args, message):
    rc = main(["hessian", *args, "--weights", str(run["st"]), *QUIET, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("landscape: error: ")
    assert re.search(message, err), err


def test_a_recorded_stdlib_factory_is_refused(run, tmp_path, capsys):
    t = Trajectory.open(run["traj"]).save(tmp_path / "evil")
    marker = tmp_path / "ran"
    t.update_meta({"model_factory": {"target": "os:system", "kwargs": {"command": f"touch {marker}"}}})
    t.close()
    rc = main(["hessian", "--trajectory", str(tmp_path / "evil"), *QUIET, "--out", str(tmp_path / "o")])
    assert rc == 2 and "standard library" in capsys.readouterr().err
    assert not marker.exists()


def test_pickled_weights_are_refused(tmp_path, capsys):
    torch.save(nets.make(width=8), tmp_path / "model.pt")
    rc = main(["hessian", *MODEL, "--weights", str(tmp_path / "model.pt"), *QUIET, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "weights_only" in err and "never pickled" in err
