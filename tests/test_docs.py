"""The documentation site: built with warnings as errors, then opened in headless Chromium.

``.ci/test`` builds the site once (``mkdocs build --strict``, after the suite has executed the notebooks) and
runs this file with ``LANDSCAPE_DOCS_SITE`` pointing at it; run alone, the module builds its own site into a
temporary directory (notebooks then render with the outputs of an earlier ``tests/test_notebooks.py`` run,
or without outputs). Needs Debian's ``chromium`` (``bash .ci/install_chromium.sh``); a machine without it
skips the browser checks (CI installs it, so they run there).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import landscape.analyze.slice_results
import landscape.analyze.surface
from tests.helpers import chromium_dom, chromium_executable, feed

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prebuilt = os.environ.get("LANDSCAPE_DOCS_SITE")
    if prebuilt:
        path = Path(prebuilt)
        if not path.is_absolute():
            path = ROOT / path
        assert (path / "index.html").is_file(), f"LANDSCAPE_DOCS_SITE={prebuilt} holds no built site"
        return path
    out = tmp_path_factory.mktemp("docs_site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def _open(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and the uncaught JavaScript errors from Chromium's console log."""
    exe = chromium_executable()
    if exe is None:
        pytest.skip("headless Chromium not found (`bash .ci/install_chromium.sh` installs it; CI does)")
    proc = chromium_dom(exe, page, profile, "--enable-logging=stderr", "--v=0")
    errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    return proc.stdout, errors


class _Dom(HTMLParser):
    """Element ids, link targets, the title, text, and plotly divs (rendered ones carry ``js-plotly-plot``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.plots: list[bool] = []
        self.title = ""
        self.text: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag == "title":
            self._in_title = True
        classes = a.get("class", "").split()
        if tag == "div" and "plotly-graph-div" in classes:
            self.plots.append("js-plotly-plot" in classes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text.append(data)


def _parse(dom: str) -> _Dom:
    return feed(_Dom(), dom)


def test_index_renders_with_navigation(site: Path, tmp_path: Path) -> None:
    dom_text, errors = _open(site / "index.html", tmp_path / "profile")
    assert errors == []
    dom = _parse(dom_text)
    assert dom.title.strip().startswith("landscape")
    # every top-level part of the nav is linked from the home page, and each target exists in the site
    for target in (
        "getting-started/",
        "architecture/",
        "api/",
        "notebooks/",
        "arguments/",
        "architecture/analyzers/",
        "architecture/gallery/",
        "api/landscape/analyze/surface/",
    ):
        assert target in dom.hrefs, f"{target} not linked from the index"
        assert (site / target / "index.html").is_file()
    # the search index was built and covers the API pages
    search = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert any(d["location"].startswith("api/landscape/analyze/surface/") for d in search["docs"])


def test_api_page_documents_every_public_name(site: Path, tmp_path: Path) -> None:
    dom_text, errors = _open(site / "api" / "landscape" / "analyze" / "surface" / "index.html", tmp_path / "profile")
    assert errors == []
    dom = _parse(dom_text)
    module = landscape.analyze.surface
    missing = [n for n in module.__all__ if f"landscape.analyze.surface.{n}" not in dom.ids]
    assert missing == [], f"public names without an entry on the API page: {missing}"
    text = "".join("".join(dom.text).split())  # whitespace-free: code spans split text into highlighted tokens
    for obj in (module.line, module.plane):  # the summaries come from the source's docstrings
        summary = inspect.getdoc(obj).split("\n\n")[0]
        assert "".join(summary.split()).replace("`", "") in text.replace("`", ""), summary
    assert ":func:`" not in text and ":class:`" not in text  # Sphinx roles were rendered
    # the result types are documented once, on the page of the module that defines them
    results = landscape.analyze.slice_results
    page = site / "api" / "landscape" / "analyze" / "slice_results" / "index.html"
    dom_text, errors = _open(page, tmp_path / "profile2")
    assert errors == []
    dom = _parse(dom_text)
    missing = [n for n in results.__all__ if f"landscape.analyze.slice_results.{n}" not in dom.ids]
    assert missing == [], f"public names without an entry on the API page: {missing}"


def test_notebook_page_draws_its_plotly_figures(site: Path, tmp_path: Path) -> None:
    page = site / "notebooks" / "01_slices"
    rendered = json.loads((page / "01_slices.ipynb").read_text(encoding="utf-8"))  # the copy the page shows
    expected = sum(
        "application/vnd.plotly.v1+json" in o.get("data", {}) for c in rendered["cells"] for o in c.get("outputs", [])
    )
    dom_text, errors = _open(page / "index.html", tmp_path / "profile")
    assert errors == []
    plots = _parse(dom_text).plots
    assert len(plots) == expected and all(plots), f"{sum(plots)} of {len(plots)} drawn, {expected} in the notebook"
    if os.environ.get("LANDSCAPE_DOCS_REQUIRE_OUTPUTS") == "1":
        assert expected > 0, "the site was built without the notebooks' outputs"


def test_getting_started_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The getting-started page's Python blocks run as written, in order (they share one namespace)."""
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 2, "the getting-started page lost its examples"
    monkeypatch.chdir(tmp_path)  # the example saves plane.npz into the working directory
    ns: dict = {}
    for code in blocks:
        exec(compile(code, "getting-started.md", "exec"), ns)  # noqa: S102 - our own docs
    from landscape import load_result

    again = load_result(tmp_path / "plane.npz")
    assert again.metrics["loss"].shape == ns["surface"].metrics["loss"].shape == (21, 21)
    assert len(ns["traj"]) == ns["trainer"].epochs + 1  # the initial point and one snapshot per epoch
    # the two-solutions block: the barrier is never below the endpoints' interpolation (alpha 0 and 1 are on the
    # grid), and the spectrum's top eigenvalues are the ones hessian_eigenpairs printed
    assert ns["barrier"].loss_barrier >= 0 and 0 <= ns["distance"].disagreement <= 1
    top = ns["spectrum"].top_eigenvalues
    eig = ns["hessian_eigenpairs"](ns["problem"], k=5).values.numpy()
    np.testing.assert_allclose(np.sort(top)[::-1], eig, rtol=1e-4)


def _doc_texts() -> dict[str, str]:
    """The README, every docs page and every notebook (markdown and code cells), by name."""
    texts = {
        p.name: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    }
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        texts[nb.name] = "\n".join("".join(c["source"]) for c in cells)
    return texts


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` names a module, or an attribute reached from the longest importable module prefix."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_name_the_docs_import_or_cite_exists() -> None:
    """``from landscape... import x`` in any example, and every `landscape.x.y` in code spans, resolve today."""
    bad = []
    imports = re.compile(r"from ((?:landscape|persistence|tunnels|figures)[\w.]*) import (?:\(([\w,\s]+)\)|([\w, ]+))")
    for where, text in _doc_texts().items():
        for m in imports.finditer(text):
            names = [n for n in re.split(r"[,\s]+", (m.group(2) or m.group(3)).strip()) if n]
            bad += [(where, f"{m.group(1)}.{n}") for n in names if not _resolves(f"{m.group(1)}.{n}")]
        for m in re.finditer(r"`((?:landscape|persistence|tunnels)(?:\.\w+)+)", text):
            if not _resolves(m.group(1)):
                bad.append((where, m.group(1)))
    assert bad == []


def test_shorthand_argument_order_is_as_documented() -> None:
    """docs/arguments.md: a model as the first argument is followed by ``data``, except in the second-order
    functions it names, whose shorthand is ``(model, loss_fn, data)``."""
    import landscape
    import tunnels

    row = next(r for r in (ROOT / "docs" / "arguments.md").read_text().splitlines() if r.startswith("| `problem` |"))
    meaning, where = row.split("|")[2], row.split("|")[3]
    loss_first = set(re.findall(r"`(\w+)`", meaning.split("except in")[1].split(":")[0]))
    assert loss_first == {
        "HessianOperator",
        "hessian_spectrum",
        "worst_case_sharpness",
        "average_sharpness",
        "m_sharpness",
        "trajectory_curvature",
    }
    homes = [landscape, landscape.analyze, landscape.curvature, landscape.train, tunnels]
    for name in re.findall(r"`(\w+)`", where.split(";")[0]):  # the functions that take it first
        fn = next(getattr(h, name) for h in homes if hasattr(h, name))
        params = list(inspect.signature(fn).parameters)
        assert params[0] in ("problem", "model"), name
        if name in loss_first:
            assert params[1:3] == ["loss_fn", "data"], name
        else:  # data after the anchors (if any), before the loss
            assert "data" in params, name
            assert "loss_fn" not in params or params.index("data") < params.index("loss_fn"), name
    curv = list(inspect.signature(landscape.trajectory_curvature).parameters)
    assert curv[1:4] == ["model", "loss_fn", "data"]


def test_getting_started_names_every_extra() -> None:
    """The install section lists the package's extras as setup.cfg declares them, no more, no fewer."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = set(cfg["options.extras_require"])
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    sentence = re.search(r"The extras are (.*?)\.\n", page, re.S).group(1)
    assert set(re.findall(r"`(\w+)` \(", sentence)) == extras
