"""Writing the gallery: each figure's files, ``index.html`` and ``claims.json``.

Everything here is offline: plotly's JavaScript is written once as ``<gallery>/plotly.min.js`` and every
page refers to that local file (no CDN). ``index.html`` carries a small self-check script: after load it
counts the plotly divs that rendered (their ``.main-svg`` layer, plus a WebGL canvas for 3-D/GL subplots)
and the JavaScript errors, and writes them into ``<body data-plots-total data-plots-rendered
data-plots-failed data-js-errors data-gallery-check="done">`` so a headless browser's DOM dump shows them.

Files are written to a temporary name and renamed into place, so a crash never leaves half a page.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from figures._provenance import provenance_footer
from figures.contract import FigureResult, FigureSpec, Paper
from figures.schema import CLAIMS_FORMAT, SUMMARY_KEYS
from figures.verdict import Verdict

__all__ = [
    "PLOTLY_JS",
    "cache_key",
    "claims_document",
    "figure_entry",
    "render_figure",
    "summarize",
    "utc_now",
    "write_atomic",
    "write_claims_json",
    "write_index",
    "write_plotly_js",
    "write_reproduction_table",
]

PLOTLY_JS = "plotly.min.js"
PNG_DPI = 120


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def write_if_changed(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically unless the file already holds exactly it; returns ``path``."""
    if not path.is_file() or path.stat().st_size != len(data) or path.read_bytes() != data:
        write_atomic(path, data)
    return path


REPRODUCTION_TABLE = "README.md"


def write_reproduction_table(out: Path) -> Path:
    """Copy ``figures/README.md`` into the gallery as ``out/README.md`` (skipped when already identical).

    Per paper, it tabulates which phenomena reproduce at quick and at medium scale, with the numbers and how they
    were measured. The tables are the record of the sessions that measured them; ``claims.json`` beside them is
    this build's.

    Args:
        out: The gallery directory.

    Returns:
        The path of the copy.
    """
    return write_if_changed(out / REPRODUCTION_TABLE, Path(__file__).with_name("README.md").read_bytes())


def write_plotly_js(out: Path) -> Path:
    """Write plotly's bundled JavaScript as ``out/plotly.min.js`` (skipped when already identical).

    Args:
        out: The gallery directory.

    Returns:
        The path of the script.
    """
    from plotly.offline import get_plotlyjs

    return write_if_changed(out / PLOTLY_JS, get_plotlyjs().encode("utf-8"))


def render_figure(result: FigureResult, stage: Path, name: str) -> list[dict[str, str]]:
    """Write every panel of ``result`` into ``stage`` (the figure's directory, ``<gallery>/<name>/``).

    Per panel: ``<key>.html`` (standalone, loads ``../plotly.min.js``), ``<key>.png`` (matplotlib,
    ``PNG_DPI``) and ``<key>.plotly.json`` (what ``index.html`` embeds). Matplotlib figures are closed.

    Args:
        result: The figure function's result.
        stage: Directory to write into; it becomes ``<gallery>/<name>/``.
        name: The figure's name (for paths relative to the gallery).

    Returns:
        One dict per panel: ``key``, ``caption``, and ``html``/``png``/``json`` paths relative to the gallery.
    """
    panels = []
    for p in result.panels:
        p.plotly.write_html(
            stage / f"{p.key}.html", include_plotlyjs=f"../{PLOTLY_JS}", full_html=True, config={"displaylogo": False}
        )
        (stage / f"{p.key}.plotly.json").write_text(p.plotly.to_json(), encoding="utf-8")
        p.mpl.savefig(stage / f"{p.key}.png", dpi=PNG_DPI, bbox_inches="tight")
        if "matplotlib.pyplot" in sys.modules:  # release pyplot-managed figures; a no-op for plain Figures
            import matplotlib.pyplot as plt

            plt.close(p.mpl)
        panels.append(
            {
                "key": p.key,
                "caption": p.caption,
                "html": f"{name}/{p.key}.html",
                "png": f"{name}/{p.key}.png",
                "json": f"{name}/{p.key}.plotly.json",
            }
        )
    return panels


def figure_entry(spec: FigureSpec | None, *, name: str, scale: str, status: str, **fields: Any) -> dict[str, Any]:
    """A figure's entry of ``claims.json`` (see ``CLAIMS_SCHEMA``), defaults filled in."""
    entry: dict[str, Any] = {
        "name": name,
        "title": spec.title if spec else name,
        "paper": spec.paper.value if spec else None,
        "module": spec.module if spec else "",
        "scale": scale,
        "scaling": {},
        "caption": "",
        "runtime_s": None,
        "status": status,
        "error": None,
        "cached": False,
        "cache_key": None,
        "finished": None,
        "panels": [],
        "claims": [],
        "provenance": None,  # figures._provenance.code_provenance() of the run that made (or failed) the figure
    }
    unknown = set(fields) - set(entry)
    if unknown:
        raise TypeError(f"unknown figure entry fields {sorted(unknown)}")
    entry.update(fields)
    return entry


def summarize(entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts of figures ok/failed/pending and of claims per verdict (rendered figures only)."""
    s = dict.fromkeys(SUMMARY_KEYS, 0)
    for e in entries:
        s[f"figures_{e['status']}"] += 1
        for c in e["claims"] if e["status"] == "ok" else ():
            s["claims_" + c["verdict"].replace(" ", "_")] += 1
    return s


def utc_now() -> str:
    """The current time as ISO 8601 UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def claims_document(
    entries: Sequence[Mapping[str, Any]],
    *,
    scale: str,
    total_runtime_s: float,
    not_in_gallery: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole ``claims.json`` document (see ``figures.schema.CLAIMS_SCHEMA``).

    ``not_in_gallery``: the registered figures this gallery does not hold (a run with ``--only``), so that
    ``figures.verdict_table`` tells a figure that was not run from one whose claims disappeared.
    """
    summary = summarize(entries)
    return {
        "format": CLAIMS_FORMAT,
        "generated": utc_now(),
        "scale": scale,
        "complete": summary["figures_pending"] == 0,
        "total_runtime_s": round(total_runtime_s, 3),
        "summary": summary,
        "figures": [dict(e) for e in entries],
        "not_in_gallery": sorted(not_in_gallery),
    }


def write_claims_json(out: Path, document: Mapping[str, Any]) -> Path:
    """Write ``out/claims.json`` atomically."""
    path = out / "claims.json"
    write_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- index.html


def _fmt(value: Any) -> str:
    """A value for the claims table: 4 significant digits for floats, the rest as text."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:8]) + (", …" if len(value) > 8 else "") + "]"
    return str(value)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


_MARK = {Verdict.HELD: "✓", Verdict.NOT_HELD: "✗", Verdict.INCONCLUSIVE: "≈", Verdict.NOT_TESTED: "n.t."}


def _evidence(c: Mapping[str, Any]) -> str:
    """Premise checks and the paired effect, shown beside the claim so a verdict can be judged."""
    parts = []
    for p in c.get("premises") or ():
        cls = "met" if p["met"] else "unmet"
        bound = "" if p["threshold"] is None else f" (bound {_fmt(p['threshold'])})"
        parts.append(
            f'<li class="premise {cls}">{"✓" if p["met"] else "✗"} premise: {html.escape(p["statement"])}: '
            f"{html.escape(_fmt(p['measured']))}{html.escape(bound)}"
            + (f' <span class="how">{html.escape(p["detail"])}</span>' if p["detail"] else "")
            + "</li>"
        )
    e = c.get("effect")
    if e:
        parts.append(
            f'<li class="effect">effect {html.escape(_fmt(e["mean"]))} '
            f"[{html.escape(_fmt(e['ci_low']))}, {html.escape(_fmt(e['ci_high']))}] "
            f"({e['confidence']:.0%} CI, n={e['n']}, p={html.escape(_fmt(e['p_value']))}, "
            f"{html.escape(e['method'])})</li>"
        )
    if c.get("scale"):
        parts.append(f'<li class="scale">verdict from the {html.escape(c["scale"])} scale</li>')
    return f'<ul class="evidence">{"".join(parts)}</ul>' if parts else ""


def _claims_table(claims: Sequence[Mapping[str, Any]]) -> str:
    if not claims:
        return '<p class="no-claims">No claims checked by this figure.</p>'
    rows = []
    for c in claims:
        verdict = Verdict(c["verdict"])  # format-2 entries only: the cache key holds the format
        cls, mark = verdict.value.replace(" ", "-"), _MARK[verdict]
        source = f'<div class="source">{html.escape(c["source"])}</div>' if c["source"] else ""
        rows.append(
            f'<tr class="{cls}"><td>{html.escape(c["statement"])}{source}</td>'
            f'<td class="num">{html.escape(_fmt(c["paper_value"]))}</td>'
            f'<td class="num">{html.escape(_fmt(c["measured"]))}</td>'
            f'<td class="mark" title="{cls.replace("-", " ")}">{mark}</td>'
            f'<td class="detail">{html.escape(c["detail"])}{_evidence(c)}</td></tr>'
        )
    return (
        '<table class="claims"><thead><tr><th>Claim (paper)</th><th>Paper</th><th>Measured here</th>'
        "<th>Verdict</th><th>How measured</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _scaling_list(entry: Mapping[str, Any]) -> str:
    items = [f"<dt>scale</dt><dd>{html.escape(entry['scale'])}</dd>"]
    for k, v in entry["scaling"].items():
        text = json.dumps(v) if isinstance(v, (list, dict)) else _fmt(v)
        items.append(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(text)}</dd>")
    ran = _fmt_time(entry["runtime_s"])
    if entry["cached"]:
        ran += f" (reused from the run of {html.escape(entry['finished'] or '?')})"
    items.append(f"<dt>run time</dt><dd>{ran}</dd>")
    return '<dl class="scaling">' + "".join(items) + "</dl>"


def _plot_div(out: Path, panel: Mapping[str, Any], div_id: str) -> str:
    import plotly.io as pio

    fig = pio.from_json((out / panel["json"]).read_text(encoding="utf-8"))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def _figure_section(out: Path, entry: Mapping[str, Any], fragments: dict[str, str]) -> str:
    name = entry["name"]
    head = (
        f'<h3>{html.escape(entry["title"])} <span class="name">{html.escape(name)}</span> '
        f'<span class="status {entry["status"]}">{entry["status"]}</span></h3>'
    )
    if entry["status"] == "pending":
        return (
            f'<section class="figure pending" id="fig-{name}">{head}<p>Not finished (running, or the build '
            f"was interrupted).</p></section>"
        )
    if entry["status"] == "failed":
        return (
            f'<section class="figure failed" id="fig-{name}">{head}<p>This figure failed; its claims are '
            f'not tested. Traceback:</p><pre class="error">{html.escape(entry["error"] or "")}</pre></section>'
        )
    key = f"{name}:{entry['cache_key']}:{entry['finished']}"
    if key not in fragments:  # build each embedded plot once per process (the index is rewritten often)
        parts = []
        for p in entry["panels"]:
            cap = f'<p class="panel-caption">{html.escape(p["caption"])}</p>' if p["caption"] else ""
            div = _plot_div(out, p, f"plot-{name}-{p['key']}")
            parts.append(
                f'<div class="panel"><div class="interactive">{div}</div>'
                f'<div class="static"><a href="{html.escape(p["png"])}"><img src="{html.escape(p["png"])}" '
                f'alt="{html.escape(entry["title"])}: {html.escape(p["key"])} (PNG)" loading="lazy"></a>'
                f'<div class="links"><a href="{html.escape(p["html"])}">standalone HTML</a> · '
                f'<a href="{html.escape(p["png"])}">PNG</a></div></div>{cap}</div>'
            )
        fragments[key] = "".join(parts)
    return (
        f'<section class="figure ok" id="fig-{name}">{head}<p class="caption">{html.escape(entry["caption"])}</p>'
        f"{_scaling_list(entry)}{fragments[key]}{_claims_table(entry['claims'])}</section>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1400px;
 padding:1em 2em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;margin-top:2em}
.meta{color:#666}.summary{display:flex;gap:1em;flex-wrap:wrap;margin:1em 0}
.summary div{padding:.5em 1em;border-radius:6px;background:#f3f3f3;font-size:1.1em}
.summary .held{background:#e3f4e3}.summary .not-held{background:#fbe3e3}.summary .failed{background:#fbe3e3}
.banner{background:#fff3cd;padding:.7em 1em;border-radius:6px}
table{border-collapse:collapse;margin:.6em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .6em;
 vertical-align:top;text-align:left}th{background:#f6f6f6}td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
td.mark{text-align:center;font-weight:bold}tr.held td.mark{color:#1a7f1a}tr.not-held td.mark{color:#c62828}
tr.inconclusive td.mark{color:#a06000}ul.evidence{margin:.3em 0 0;padding-left:1.1em;font-size:.9em;color:#555}
li.premise.unmet{color:#c62828}li.premise .how{color:#888}
tr.not-tested td.mark{color:#888}.source{color:#777;font-size:.85em}.detail{color:#444;font-size:.9em}
.figure{margin:1.5em 0 2.5em}.name{color:#888;font-weight:normal;font-size:.8em;font-family:monospace}
.status{font-size:.7em;padding:.1em .5em;border-radius:4px;vertical-align:middle}
.status.ok{background:#e3f4e3}.status.failed{background:#fbe3e3}.status.pending{background:#fff3cd}
dl.scaling{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.9em;margin:.5em 0}
dl.scaling dt{color:#666}dl.scaling dd{margin:0}
.panel{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:1em;align-items:start;margin:1em 0}
.panel-caption{grid-column:1/3;color:#444;margin:0}.static img{max-width:100%;border:1px solid #eee}
.links{font-size:.85em}pre.error{background:#fbe3e3;padding:1em;overflow:auto;font-size:.85em}
footer.provenance{border-top:1px solid #ddd;margin-top:2em;color:#666;font-size:.85em}
@media (max-width:900px){.panel{grid-template-columns:1fr}.panel-caption{grid-column:1}}
"""

# Installed first in <head>: records every error and console.error before any plot script runs.
_ERROR_TRAP = """<script>
window.__galleryErrors = [];
window.addEventListener('error', function (e) {
  window.__galleryErrors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || e));
}, true);
window.addEventListener('unhandledrejection', function (e) {
  window.__galleryErrors.push('unhandled promise rejection: ' + String(e.reason));
});
(function () {
  var original = console.error;
  console.error = function () {
    window.__galleryErrors.push(Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
})();
</script>"""

# After load: a plot counts as rendered when its SVG layer exists and, for GL subplots, a canvas with a
# live WebGL context; the result is written into <body data-*> for a headless browser's DOM dump.
_SELF_CHECK = """<script>
(function () {
  function rendered(div) {
    if (!div.querySelector('.main-svg')) return false;
    var fl = div._fullLayout;
    if (fl && fl._has && (fl._has('gl3d') || fl._has('gl2d') || fl._has('gl'))) {
      var canvases = div.querySelectorAll('canvas');
      if (!canvases.length) return false;
      for (var i = 0; i < canvases.length; i++) {
        var c = canvases[i];
        if (!c.width || !c.height) return false;
      }
      if (fl._has('gl3d')) {
        var scenes = fl._subplots.gl3d || [];
        for (var j = 0; j < scenes.length; j++) {
          var s = fl[scenes[j]] && fl[scenes[j]]._scene;
          if (!s || !s.glplot) return false;
        }
      }
    }
    return true;
  }
  function report(final) {
    var divs = document.querySelectorAll('.plotly-graph-div'), ok = 0, failed = [];
    for (var i = 0; i < divs.length; i++) { if (rendered(divs[i])) ok++; else failed.push(divs[i].id); }
    var b = document.body.dataset;
    b.plotsTotal = divs.length; b.plotsRendered = ok; b.plotsFailed = failed.join(' ');
    b.jsErrors = JSON.stringify(window.__galleryErrors);
    b.claimsTables = document.querySelectorAll('table.claims').length;
    if (final || ok === divs.length) { b.galleryCheck = 'done'; return true; }
    return false;
  }
  var tries = 0;
  function poll() { if (!report(++tries > 100)) setTimeout(poll, 50); }
  window.addEventListener('load', function () { setTimeout(poll, 0); });
})();
</script>"""


def write_index(
    out: Path,
    entries: Sequence[Mapping[str, Any]],
    *,
    scale: str,
    total_runtime_s: float,
    fragments: dict[str, str] | None = None,
    note: str = "",
) -> Path:
    """Write ``out/index.html`` atomically: summary, contents, then every figure grouped by paper.

    Args:
        out: The gallery directory (holds ``plotly.min.js`` and the figures' directories).
        entries: The figures' ``claims.json`` entries.
        scale: ``"quick"`` or ``"full"``.
        total_runtime_s: Wall time of the run so far.
        fragments: Cache of rendered plot HTML, reused across rewrites within one run.
        note: Extra text for the header (e.g. figures not part of this gallery).

    Returns:
        The path of ``index.html``.
    """
    fragments = {} if fragments is None else fragments
    s = summarize(entries)
    banner = ""
    if s["figures_pending"]:
        pending = _plural(s["figures_pending"], "figure")
        banner = (
            f'<p class="banner">This gallery is incomplete: {pending} pending (the build is running or was '
            "interrupted).</p>"
        )
    summary = (
        f'<div class="summary"><div class="held">✓ {_plural(s["claims_held"], "claim")} held</div>'
        f'<div class="not-held">✗ {s["claims_not_held"]} not held</div>'
        f"<div>≈ {s['claims_inconclusive']} inconclusive</div>"
        f"<div>n.t. {s['claims_not_tested']} not tested (premise not met or not testable)</div>"
        f"<div>{_plural(s['figures_ok'], 'figure')} rendered</div>"
        + (f'<div class="failed">{_plural(s["figures_failed"], "figure")} failed</div>' if s["figures_failed"] else "")
        + "</div>"
    )
    toc_rows = []
    for e in entries:
        counts = summarize([{**e, "status": "ok"}])
        marks = " · ".join(f"{counts['claims_' + v.value.replace(' ', '_')]} {_MARK[v]}" for v in Verdict)
        toc_rows.append(
            f'<tr><td><a href="#fig-{e["name"]}">{html.escape(e["title"])}</a></td><td>{html.escape(e["name"])}</td>'
            f'<td><span class="status {e["status"]}">{e["status"]}</span></td><td>{marks}'
            f'</td><td class="num">{_fmt_time(e["runtime_s"])}{" (cached)" if e["cached"] else ""}</td></tr>'
        )
    toc = (
        '<table class="contents"><thead><tr><th>Figure</th><th>Name</th><th>Status</th><th>Claims</th>'
        "<th>Run time</th></tr></thead><tbody>" + "".join(toc_rows) + "</tbody></table>"
    )
    sections = []
    order = {p.value: i for i, p in enumerate(Paper)}
    papers = sorted({e["paper"] for e in entries}, key=lambda p: (order.get(p, len(order)), str(p)))
    for paper in papers:
        heading = Paper(paper).citation if paper in order else "Figures that failed to load"
        body = "".join(_figure_section(out, e, fragments) for e in entries if e["paper"] == paper)
        sections.append(f"<h2>{html.escape(heading)}</h2>{body}")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Loss-landscape figure gallery ({html.escape(scale)})</title>
{_ERROR_TRAP}
<script src="{PLOTLY_JS}"></script>
<style>{_CSS}</style></head>
<body data-gallery-check="pending">
<h1>Loss-landscape figure gallery</h1>
<p class="meta">Scale: <b>{html.escape(scale)}</b> · generated {utc_now()} · total run time {_fmt_time(total_runtime_s)}
 · <a href="claims.json">claims.json</a>
 · <a href="{REPRODUCTION_TABLE}">what reproduces, per paper and scale</a>{
        (" · " + html.escape(note)) if note else ""
    }</p>
{banner}{summary}{toc}
{"".join(sections)}
{provenance_footer(entries)}
{_SELF_CHECK}
</body></html>
"""
    path = out / "index.html"
    write_atomic(path, page)
    return path


def cache_key(spec: FigureSpec, scale: str, data_dir: Path | None) -> str | None:
    """Key of a figure's cached result: its name, the scale, its code's hash (and the data dir at full).

    The code is what :meth:`~figures.contract.FigureSpec.source_hash` reads: the figure's modules, claims and the
    verdict rules.

    Returns ``None`` (never reuse) when the module's source cannot be read.
    """
    source = spec.source_hash()
    if source is None:
        return None
    parts = {
        "format": CLAIMS_FORMAT,
        "name": spec.name,
        "scale": scale,
        "source": source,
        "data_dir": str(data_dir.resolve()) if (data_dir is not None and scale == "full") else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
