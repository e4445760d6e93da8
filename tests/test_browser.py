"""A real browser check: the gallery's index.html rendered by headless Chromium.

``index.html`` carries a self-check script that writes into ``<body data-*>`` how many plotly figures
rendered (SVG layer, plus a live WebGL scene for 3-D plots) and which JavaScript errors occurred; Chromium's
``--dump-dom`` shows those attributes. Needs Debian's ``chromium`` (``bash .ci/install_chromium.sh``);
``LANDSCAPE_SKIP_BROWSER=1`` skips the test instead of failing it.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import build_toy_gallery, chromium_dom, chromium_executable, feed


def _chromium() -> str:
    exe = chromium_executable()
    if exe is None:
        pytest.fail(
            "headless Chromium not found: run `bash .ci/install_chromium.sh` (installs Debian's chromium), "
            "or set LANDSCAPE_SKIP_BROWSER=1 to skip the browser test"
        )
    return exe


def _dump_dom(exe: str, page: Path, profile: Path, *extra: str) -> str:
    return chromium_dom(exe, page, profile, *extra).stdout


class _Dom(HTMLParser):
    """Collects <body> attributes, plot div ids and the rows of every claims table."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.plot_ids: list[str] = []
        self.claim_rows: list[int] = []
        self._in_claims = False
        self._in_tbody = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "body":
            self.body = a
        elif tag == "div" and "plotly-graph-div" in classes:
            self.plot_ids.append(a.get("id", ""))
        elif tag == "table" and "claims" in classes:
            self._in_claims = True
            self.claim_rows.append(0)
        elif tag == "tbody" and self._in_claims:
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.claim_rows[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_claims = self._in_tbody = False


def _parse(dom: str) -> _Dom:
    return feed(_Dom(), dom)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_gallery(tmp_path_factory.mktemp("browser_gallery"))


def test_index_renders_every_plot_without_js_errors(gallery: Path, tmp_path: Path) -> None:
    exe = _chromium()
    doc = json.loads((gallery / "claims.json").read_text())
    panels = [f"plot-{f['name']}-{p['key']}" for f in doc["figures"] for p in f["panels"]]
    dom = _parse(_dump_dom(exe, gallery / "index.html", tmp_path / "profile"))
    body = dom.body
    assert body.get("data-gallery-check") == "done", f"self-check did not finish: {body}"
    assert json.loads(body["data-js-errors"]) == []
    assert sorted(dom.plot_ids) == sorted(panels) and len(panels) == 2
    assert int(body["data-plots-total"]) == len(panels)
    assert int(body["data-plots-rendered"]) == len(panels), f"not rendered: {body['data-plots-failed']}"
    assert dom.claim_rows == [len(f["claims"]) for f in doc["figures"] if f["status"] == "ok"] == [3]


def test_self_check_catches_errors_and_missing_webgl(gallery: Path, tmp_path: Path) -> None:
    """Negative control: the same page with a thrown error and WebGL switched off must be flagged."""
    exe = _chromium()
    broken = gallery / "broken.html"
    page = (gallery / "index.html").read_text(encoding="utf-8")
    broken.write_text(
        page.replace("</h1>", "</h1><script>throw new Error('injected-test-error')</script>", 1), encoding="utf-8"
    )
    body = _parse(_dump_dom(exe, broken, tmp_path / "profile", "--disable-3d-apis")).body
    assert body.get("data-gallery-check") == "done"
    assert any("injected-test-error" in e for e in json.loads(body["data-js-errors"]))
    assert int(body["data-plots-total"]) == 2 and int(body["data-plots-rendered"]) == 1
    assert body["data-plots-failed"] == "plot-toy_demo-surface"  # the 3-D (WebGL) panel
