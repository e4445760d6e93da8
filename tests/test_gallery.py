"""The figure gallery frame: figures.contract, figures.make_all and figures.gallery on the toy figure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import matplotlib.figure
import matplotlib.image
import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from figures import contract
from figures.contract import (
    Claim,
    FigureResult,
    MissingDataError,
    Panel,
    Scale,
    register_figure,
    require_data,
    temporary_registry,
)
from figures.make_all import main, make_gallery
from figures.schema import CLAIMS_SCHEMA
from tests.helpers import build_toy_gallery

CALLS: dict[str, int] = {}
MODE: dict[str, str] = {"flaky": "ok"}


def _tiny_result(tag: str, held: bool | None = True) -> FigureResult:
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 0, 1]))
    mfig = matplotlib.figure.Figure(figsize=(2, 2))
    mfig.add_subplot().plot([0, 1, 2], [1, 0, 1])
    claim = Claim(
        statement=f"{tag} claim",
        paper_value=1.0,
        measured=np.float32(1.5),
        held=held,
        detail="not testable here" if held is None else "test",
    )
    return FigureResult(
        caption=f"{tag} caption",
        panels=[Panel("main", plotly=fig, mpl=mfig)],
        claims=[claim],
        scaling={"model": "none", "data": "none", "epochs": 0, "repetitions": 1},
    )


def _counted(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    CALLS["counted"] = CALLS.get("counted", 0) + 1
    (out / "extra.txt").write_text(str(scale))  # files written to `out` end up in the figure's directory
    return _tiny_result("counted", held=None)


def _fails(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    CALLS["fails"] = CALLS.get("fails", 0) + 1
    raise RuntimeError("boom: deliberate test failure")


def _flaky(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    if MODE["flaky"] == "raise":
        raise ValueError("flaky failed this time")
    if MODE["flaky"] == "interrupt":
        raise KeyboardInterrupt
    return _tiny_result("flaky", held=False)


def _validate(out: Path) -> dict:
    doc = json.loads((out / "claims.json").read_text())
    jsonschema.Draft202012Validator.check_schema(CLAIMS_SCHEMA)
    jsonschema.validate(doc, CLAIMS_SCHEMA, cls=jsonschema.Draft202012Validator)
    return doc


def _entry(doc: dict, name: str) -> dict:
    (entry,) = [f for f in doc["figures"] if f["name"] == name]
    return entry


@pytest.fixture(scope="module")
def toy_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_gallery(tmp_path_factory.mktemp("gallery"))


def test_toy_gallery_files_offline_and_schema(toy_gallery: Path) -> None:
    out = toy_gallery
    doc = _validate(out)
    assert doc["complete"] and doc["scale"] == "quick"
    toy = _entry(doc, "toy_demo")
    assert toy["status"] == "ok" and not toy["cached"] and toy["error"] is None
    assert toy["runtime_s"] > 0 and {"model", "data", "epochs", "repetitions"} <= set(toy["scaling"])
    # The analytic toy reproduces all of the paper's claims it checks.
    assert len(toy["claims"]) == 3 and all(c["held"] is True for c in toy["claims"])
    assert doc["summary"] == {
        "figures_ok": 1,
        "figures_failed": 0,
        "figures_pending": 0,
        "claims_held": 3,
        "claims_not_held": 0,
        "claims_inconclusive": 0,
        "claims_not_tested": 0,
    }
    assert [p["key"] for p in toy["panels"]] == ["surface", "path"]
    for p in toy["panels"]:
        png = matplotlib.image.imread(out / p["png"])
        assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100
        page = (out / p["html"]).read_text()
        assert '<script charset="utf-8" src="../plotly.min.js"></script>' in page
        assert json.loads((out / p["json"]).read_text())["data"]
    assert (out / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()
    index = (out / "index.html").read_text()
    # Offline: no remote URL at all, every script is a local file that exists.
    assert not re.search(r"https?://", index)
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", index)
    assert scripts == ["plotly.min.js"]
    assert index.count('class="plotly-graph-div"') == 2
    assert index.count('<table class="claims">') == 1
    for c in toy["claims"]:
        assert c["statement"].replace("'", "&#x27;") in index
    assert index.count('<td class="mark" title="held">✓</td>') == 3
    # The per-paper reproduction tables (quick and medium columns) travel with the gallery, linked from the index.
    table = (out / "README.md").read_text(encoding="utf-8")
    assert table == (Path(contract.__file__).with_name("README.md")).read_text(encoding="utf-8")
    heads = [line for line in table.splitlines() if line.startswith("| phenomenon | reproduces at quick scale?")]
    assert sum("| medium |" in h for h in heads) >= 4  # Im, Persistent, Tunnels, Lipton
    assert '<a href="README.md">' in index


def test_cache_reuse_force_and_scale(tmp_path: Path) -> None:
    CALLS.clear()
    with temporary_registry():
        register_figure("counted", paper="im", title="Counted")(_counted)
        args = ["--only", "counted", "--out", str(tmp_path), "--quiet"]
        assert main(args) == 0 and CALLS["counted"] == 1
        png = tmp_path / "counted" / "main.png"
        stamp = png.stat().st_mtime_ns
        assert (tmp_path / "counted" / "extra.txt").read_text() == "quick"
        assert main(args) == 0 and CALLS["counted"] == 1  # reused
        doc = _validate(tmp_path)
        assert _entry(doc, "counted")["cached"] is True and png.stat().st_mtime_ns == stamp
        assert doc["summary"]["claims_not_tested"] == 1
        assert main([*args, "--force"]) == 0 and CALLS["counted"] == 2
        assert _entry(_validate(tmp_path), "counted")["cached"] is False
        assert main([*args, "--full"]) == 0 and CALLS["counted"] == 3  # another scale is another result
        doc = _validate(tmp_path)
        assert doc["scale"] == "full" and (tmp_path / "counted" / "extra.txt").read_text() == "full"


def test_medium_scale_reaches_only_figures_with_a_medium_setting(tmp_path: Path, capsys) -> None:
    seen: dict[str, list[str]] = {}

    def recorder(tag: str):
        def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
            seen.setdefault(tag, []).append(Scale(scale).value)
            res = _tiny_result(tag)
            res.claims.append(
                Claim(statement=f"{tag} own-scale claim", paper_value=None, measured=1.0, held=True, scale="full")
            )  # a scale the figure states itself is kept
            return res

        return run

    with temporary_registry():
        register_figure("has_medium", paper="im", title="M", scales=["medium"])(recorder("has_medium"))
        register_figure("quick_only", paper="im", title="Q")(recorder("quick_only"))
        args = ["--out", str(tmp_path), "--quiet", "--jobs", "1"]
        assert main(args) == 0 and seen == {"has_medium": ["quick"], "quick_only": ["quick"]}
        assert main([*args, "--scale", "medium"]) == 0
        assert seen == {"has_medium": ["quick", "medium"], "quick_only": ["quick"]}  # quick-only: reused
        doc = _validate(tmp_path)
        assert doc["scale"] == "medium"
        med, quick = _entry(doc, "has_medium"), _entry(doc, "quick_only")
        assert (med["scale"], med["cached"]) == ("medium", False)
        assert (quick["scale"], quick["cached"]) == ("quick", True)
        assert [c["scale"] for c in med["claims"]] == ["medium", "full"]  # unset: the figure's run scale
        assert [c["scale"] for c in quick["claims"]] == ["quick", "full"]
        index = (tmp_path / "index.html").read_text()
        assert "verdict from the medium scale" in index and "verdict from the quick scale" in index
        assert "medium budget 120 min" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            main([*args, "--scale", "medium", "--full"])  # contradictory


def test_failing_figure_is_reported_and_others_render(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    CALLS.clear()
    with temporary_registry(include=["toy_demo"]):
        register_figure("always_fails", paper="tunnels", title="Fails")(_fails)
        args = ["--only", "toy_demo", "always_fails", "--out", str(tmp_path), "--quiet", "--jobs", "1"]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "FAILED always_fails" in err and "boom: deliberate test failure" in err
        doc = _validate(tmp_path)
        bad, toy = _entry(doc, "always_fails"), _entry(doc, "toy_demo")
        assert bad["status"] == "failed" and "RuntimeError: boom" in bad["error"] and bad["claims"] == []
        assert toy["status"] == "ok" and doc["summary"]["figures_failed"] == 1 and doc["summary"]["figures_ok"] == 1
        index = (tmp_path / "index.html").read_text()
        assert 'id="fig-always_fails"' in index and "RuntimeError: boom: deliberate test failure" in index
        assert index.count('class="plotly-graph-div"') == 2  # the toy still renders
        # A failure is never cached: the rerun calls it again (and reuses the toy).
        assert main(args) == 1 and CALLS["fails"] == 2
        assert _entry(_validate(tmp_path), "toy_demo")["cached"] is True


def test_failure_and_interrupt_never_leave_a_stale_gallery(tmp_path: Path) -> None:
    with temporary_registry():
        register_figure("flaky", paper="lipton", title="Flaky")(_flaky)
        args = ["--only", "flaky", "--out", str(tmp_path), "--quiet", "--force"]
        MODE["flaky"] = "ok"
        assert main(args) == 0 and (tmp_path / "flaky" / "main.png").is_file()
        assert _validate(tmp_path)["summary"]["claims_not_held"] == 1
        MODE["flaky"] = "raise"
        assert main(args) == 1
        assert not (tmp_path / "flaky" / "main.png").exists()  # the old success is not shown beside the failure
        assert _entry(_validate(tmp_path), "flaky")["status"] == "failed"
        MODE["flaky"] = "interrupt"
        with pytest.raises(KeyboardInterrupt):
            main(args)
        doc = _validate(tmp_path)
        assert not doc["complete"] and _entry(doc, "flaky")["status"] == "pending"
        assert "This gallery is incomplete" in (tmp_path / "index.html").read_text()
        assert not list(tmp_path.glob(".stage-*")) and not list(tmp_path.glob(".*.tmp"))
    MODE["flaky"] = "ok"


def test_broken_figure_module_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A figure module that fails to import shows as a failed figure; the other figures still render."""
    import figures.make_all

    failure = contract.ImportFailure("figures.broken_fig", "Traceback ...\nImportError: no module named nowhere\n")
    with temporary_registry(include=["toy_demo"]):
        monkeypatch.setattr(figures.make_all, "discover", lambda: [failure])
        assert main(["--out", str(tmp_path), "--quiet"]) == 1
        doc = _validate(tmp_path)
        broken = _entry(doc, "broken_fig")
        assert broken["status"] == "failed" and broken["paper"] is None and "nowhere" in broken["error"]
        assert _entry(doc, "toy_demo")["status"] == "ok"
        assert "Figures that failed to load" in (tmp_path / "index.html").read_text()


def test_discover_imports_modules_and_collects_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "tmp_figs_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "im_good.py").write_text(
        "from figures.contract import register_figure\n"
        "@register_figure('tmp_good', paper='im', title='Good')\n"
        "def run(scale, data_dir, out, progress):\n    raise NotImplementedError\n"
    )
    (pkg / "im_bad.py").write_text("raise ImportError('missing dependency xyz')\n")
    (pkg / "make_all.py").write_text("raise AssertionError('infrastructure modules are not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with temporary_registry() as reg:
        failures = contract.discover("tmp_figs_pkg")
        assert [f.module for f in failures] == ["tmp_figs_pkg.im_bad"] and "xyz" in failures[0].error
        assert list(reg) == ["tmp_good"] and reg["tmp_good"].module == "tmp_figs_pkg.im_good"
    assert "tmp_good" not in contract.registered()


def test_parallel_jobs_match_serial(toy_gallery: Path, tmp_path: Path) -> None:
    report = make_gallery(["toy_demo"], out=tmp_path, jobs=2, progress=False, verbose=False)
    assert report.exit_code == 0
    par = _entry(_validate(tmp_path), "toy_demo")
    ser = _entry(_validate(toy_gallery), "toy_demo")
    assert par["status"] == "ok" and not par["cached"]
    assert par["claims"] == ser["claims"] and par["cache_key"] == ser["cache_key"]


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--only", "no_such_figure", "--out", str(tmp_path)])
    assert e.value.code == 2 and "toy_demo" in capsys.readouterr().err  # lists the registered names
    with pytest.raises(SystemExit):
        main(["--jobs", "0", "--out", str(tmp_path)])


def test_contract_validation() -> None:
    assert Scale("QUICK") is Scale.QUICK and contract.Paper("lipton").citation.startswith("Lipton")
    assert Scale("medium") is Scale.MEDIUM
    with pytest.raises(ValueError, match="'quick', 'medium', 'full'"):
        Scale("huge")
    with pytest.raises(ValueError, match="valid values"):
        register_figure("x_fig", paper="nature", title="X")
    with pytest.raises(ValueError, match="name"):
        register_figure("Bad-Name", paper="im", title="X")
    contract.discover()
    with pytest.raises(ValueError, match="already registered"):
        register_figure("toy_demo", paper="persistent", title="Again")(_counted)
    with pytest.raises(ValueError, match="why"):
        Claim(statement="s", paper_value=None, measured=None, held=None)
    with pytest.raises(TypeError, match="held"):
        Claim(statement="s", paper_value=None, measured=1.0, held=1)
    with pytest.raises(TypeError, match="bool"):
        Claim(statement="s", paper_value=None, measured=True, held=True)
    c = Claim(statement="s", paper_value=np.int64(3), measured=np.float64("nan"), held=np.bool_(False))
    assert c.held is False and type(c.paper_value) is int and c.to_dict()["measured"] == "nan"
    json.dumps(c.to_dict(), allow_nan=False)
    good = _tiny_result("v")
    with pytest.raises(ValueError, match="repetitions"):
        FigureResult(caption="", panels=good.panels, claims=[], scaling={"model": "m", "data": "d", "epochs": 1})
    with pytest.raises(ValueError, match="repeated"):
        FigureResult(caption="", panels=good.panels * 2, claims=[], scaling=good.scaling)
    with pytest.raises(TypeError, match="JSON"):
        FigureResult(caption="", panels=good.panels, claims=[], scaling={**good.scaling, "x": np.zeros(2)})
    with pytest.raises(TypeError, match="matplotlib"):
        Panel("p", plotly=go.Figure(), mpl=go.Figure())


def test_require_data(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="--data-dir"):
        require_data(None, "cifar-10-batches-py", what="CIFAR-10")
    with pytest.raises(MissingDataError, match="cifar-10-batches-py"):
        require_data(tmp_path, "cifar-10-batches-py", what="CIFAR-10")
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert require_data(str(tmp_path), "cifar-10-batches-py", what="CIFAR-10") == tmp_path


def test_a_registered_figure_function_gets_the_papers_cache_and_its_options(tmp_path) -> None:
    seen = []

    def figure(scale="quick", data_dir=None, *, cache=None, progress=False, which="a"):
        seen.append((Scale(scale), data_dir, cache, progress, which))
        return _tiny_result(which)

    with temporary_registry() as reg:
        register_figure("opt_b", paper="lipton", title="B", options={"which": "b"})(
            register_figure("opt_a", paper="lipton", title="A")(figure)
        )
        out = tmp_path / "gallery" / "opt_b"
        reg["opt_b"].run(scale=Scale.QUICK, data_dir=None, out=out, progress=True)
        reg["opt_a"].run(scale=Scale.QUICK, data_dir=None, out=tmp_path / "gallery" / "opt_a", progress=False)
        assert reg["opt_a"].source == reg["opt_b"].source and reg["opt_b"].module == __name__
        assert reg["opt_b"].source_hash() is not None
    cache = contract.cache_dir(out, "lipton")
    assert seen == [(Scale.QUICK, None, cache, True, "b"), (Scale.QUICK, None, cache, False, "a")]
    with pytest.raises(ValueError, match="options go to a figure function"):
        register_figure("opt_c", paper="lipton", title="C", options={"which": "c"})(_counted)


def test_fresh_gallery_starts_longest_first_from_the_shipped_runtimes(tmp_path: Path, monkeypatch) -> None:
    from figures import make_all

    table = tmp_path / "runtimes.tsv"
    table.write_text("# figure\tscale\tseconds\nshort\tquick\t1\nlong\tquick\t50\nlong\tmedium\t9\nbad\tquick\tx\n")
    monkeypatch.setattr(make_all, "RUNTIMES", table)
    shipped = make_all._shipped_runtimes()
    assert shipped == {("short", "quick"): 1.0, ("long", "quick"): 50.0, ("long", "medium"): 9.0}
    out = tmp_path / "g"
    assert make_all._last_runtime(out, "long", "medium") == 9.0  # no record: the shipped time at this scale
    assert make_all._last_runtime(out, "short", "medium") == 1.0  # no medium time: the quick one
    assert make_all._last_runtime(out, "unknown") == float("inf")
    (out / "long").mkdir(parents=True)
    (out / "long" / "record.json").write_text(json.dumps({"runtime_s": 3.5, "scale": "quick"}))
    assert make_all._last_runtime(out, "long", "quick") == 3.5  # a record at this scale wins
    assert make_all._last_runtime(out, "long", "medium") == 9.0  # a record at another scale does not

    order: list[str] = []

    def recorder(tag: str):
        def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
            order.append(tag)
            return _tiny_result(tag)

        return run

    with temporary_registry():
        for tag in ("short", "unknown", "long"):
            register_figure(tag, paper="im", title=tag)(recorder(tag))
        assert main(["--out", str(tmp_path / "fresh"), "--quiet", "--jobs", "1"]) == 0
    assert order == ["unknown", "long", "short"]


def test_shipped_runtimes_cover_every_registered_figure() -> None:
    from figures import make_all
    from figures.contract import discover, registered

    discover()
    shipped = make_all._shipped_runtimes()
    missing = [n for n, spec in registered().items() if (n, "quick") not in shipped]
    assert not missing, f"add their quick wall time to figures/runtimes.tsv: {missing}"
    no_medium = [n for n, s in registered().items() if "medium" in s.scales and (n, "medium") not in shipped]
    assert not no_medium, f"add their medium wall time to figures/runtimes.tsv: {no_medium}"


def test_worker_allocator_settings_are_scoped_and_keep_the_users(monkeypatch) -> None:
    from figures import make_all

    names = list(make_all.ALLOCATOR_ENV)
    for var in names:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(names[0], "12345")  # the user's own value
    with make_all._allocator_env_for_workers():
        assert os.environ[names[0]] == "12345"
        assert all(os.environ[v] == make_all.ALLOCATOR_ENV[v] for v in names[1:])
    assert os.environ[names[0]] == "12345" and not any(v in os.environ for v in names[1:])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_workers_die_with_a_killed_gallery(tmp_path: Path) -> None:
    """A gallery process killed outright (no cleanup runs) takes its spawned workers with it."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from figures.make_all import _init_worker\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('spawn')\n"
        "    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(1, os.getpid()))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(0.5)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    worker = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        time.sleep(0.1)
    alive = Path(f"/proc/{worker}").exists() and "Z" not in Path(f"/proc/{worker}/stat").read_text().split()[2]
    if alive:
        os.kill(worker, 9)
    assert not alive, "the spawned worker outlived its killed parent"


def test_a_change_of_the_verdict_rules_invalidates_every_cached_figure(tmp_path, monkeypatch) -> None:
    # a figure's cached claims hold verdicts decided by figures/verdict.py, texts written by figures/claims.py and
    # checked by figures/result.py: a rerun after a change there must recompute them, not reuse the old verdicts
    assert {p.name for p in contract.VERDICT_SOURCES} == {"verdict.py", "claims.py", "result.py"}
    assert all(p.is_file() for p in contract.VERDICT_SOURCES)
    rules = tmp_path / "verdict.py"
    rules.write_text("HELD_IF = 'above 0'\n")
    monkeypatch.setattr(contract, "VERDICT_SOURCES", (rules,))
    with temporary_registry() as reg:
        register_figure("rules_a", paper="lipton", title="A")(_counted)
        before = reg["rules_a"].source_hash()
        rules.write_text("HELD_IF = 'above the margin'\n")
        after = reg["rules_a"].source_hash()
        assert before is not None and after is not None and before != after
        rules.write_text("HELD_IF = 'above 0'\n")
        assert reg["rules_a"].source_hash() == before  # the key is the content's, not the file's time
