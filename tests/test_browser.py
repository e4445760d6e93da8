"""A real browser check: the gallery's index.html rendered by headless Chromium.

``index.html`` carries a self-check script that writes into ``<body data-*>`` how many plotly figures
rendered (SVG layer, plus a live WebGL scene for 3-D plots) and which JavaScript errors occurred; Chromium's
``--dump-dom`` shows those attributes. The PNGs are checked too, by a script the test adds to a copy of the page
(:data:`_IMAGE_CHECK`): every ``<img>`` must load with a size. Needs Debian's ``chromium``
(``bash .ci/install_chromium.sh``); ``LANDSCAPE_SKIP_BROWSER=1`` skips the test instead of failing it.
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


# The index's PNGs are loading="lazy". Headless Chromium 156 (Debian's, with the flags of tests.helpers.chromium_dom)
# fetches them anyway, even 20,000 px below its 437-px viewport and before DOMContentLoaded (measured 2026-12-07), but a
# browser that defers them would leave them unloaded: the check scrolls each into view first, waits until every one is
# complete (loaded or broken), and writes into <body data-images-*> how many have a naturalWidth > 0. That catches a
# missing file or one that is no image; a truncated PNG keeps its header's size and passes (img.decode() would tell,
# but under --virtual-time-budget it left even a good image's promise unsettled once a truncated PNG was on the page,
# so it is not used).
# Added to a copy of the page, never to the gallery: a reader's browser should keep loading lazily.
_IMAGE_CHECK = """<script>
(function () {
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images), i = 0, tries = 0;
    function report() {
      var pending = imgs.filter(function (im) { return !im.complete; });
      if (pending.length && ++tries <= 100) { setTimeout(report, 50); return; }
      var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
      var b = document.body.dataset;
      b.imagesTotal = imgs.length;
      b.imagesDecoded = imgs.length - bad.length;
      b.imagesFailed = bad.map(function (im) { return im.getAttribute('src'); }).join(' ');
      b.imagesCheck = 'done';
    }
    function next() {
      if (i < imgs.length) { imgs[i++].scrollIntoView(); setTimeout(next, 50); return; }
      window.scrollTo(0, 0);
      report();
    }
    next();
  });
})();
</script>"""


def _with_image_check(page: str) -> str:
    return page.replace("</body>", _IMAGE_CHECK + "\n</body>", 1)


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


def test_index_renders_every_plot_and_image_without_js_errors(gallery: Path, tmp_path: Path) -> None:
    exe = _chromium()
    doc = json.loads((gallery / "claims.json").read_text())
    panels = [f"plot-{f['name']}-{p['key']}" for f in doc["figures"] for p in f["panels"]]
    index = (gallery / "index.html").read_text(encoding="utf-8")
    checked = gallery / "checked.html"  # index.html with the image check: same directory, same relative links
    checked.write_text(_with_image_check(index), encoding="utf-8")
    dom = _parse(_dump_dom(exe, checked, tmp_path / "profile"))
    body = dom.body
    assert body.get("data-gallery-check") == "done", f"self-check did not finish: {body}"
    assert json.loads(body["data-js-errors"]) == []
    assert sorted(dom.plot_ids) == sorted(panels) and len(panels) == 2
    assert int(body["data-plots-total"]) == len(panels)
    assert int(body["data-plots-rendered"]) == len(panels), f"not rendered: {body['data-plots-failed']}"
    assert dom.claim_rows == [len(f["claims"]) for f in doc["figures"] if f["status"] == "ok"] == [3]
    assert body.get("data-images-check") == "done", f"image check did not finish: {body}"
    assert index.count("<img ") == int(body["data-images-total"]) == len(panels)  # one PNG per panel
    assert int(body["data-images-decoded"]) == len(panels), f"not decoded: {body['data-images-failed']}"


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


def test_image_check_catches_a_missing_and_a_broken_png(gallery: Path, tmp_path: Path) -> None:
    """Negative control of the image check: a missing PNG and one that is no image are reported; a good one 20,000 px
    below the viewport loads."""
    exe = _chromium()
    doc = json.loads((gallery / "claims.json").read_text())
    first, second = [p["png"] for f in doc["figures"] for p in f["panels"]]
    (gallery / "not_an_image.png").write_text("not a PNG\n")
    page = (gallery / "index.html").read_text(encoding="utf-8")
    assert page.count(f'src="{first}"') == page.count(f'src="{second}"') == 1
    far = f'<div style="height:20000px"></div><img src="{second}" loading="lazy" alt="far below">'
    page = page.replace(f'src="{first}"', 'src="missing.png"').replace(f'src="{second}"', 'src="not_an_image.png"')
    checked = gallery / "bad_pngs.html"
    checked.write_text(_with_image_check(page.replace("</body>", far + "\n</body>", 1)), encoding="utf-8")
    body = _parse(_dump_dom(exe, checked, tmp_path / "profile")).body
    assert body.get("data-images-check") == "done"
    assert (body["data-images-total"], body["data-images-decoded"]) == ("3", "1")
    assert body["data-images-failed"] == "missing.png not_an_image.png"
