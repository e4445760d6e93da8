"""MkDocs hooks: one API page per public module, and the notebooks with the outputs the test suite made.

API pages are generated at build time (one ``::: module`` page per public module of ``landscape``,
``persistence`` and ``tunnels``, at every depth; a package's page is its docstring and an index of its
modules), so a new module appears in the reference without editing the nav.

Notebooks: ``tests/test_notebooks.py`` executes every notebook (quick settings) and writes the executed copy
to ``build/notebooks/``; the docs render that copy, so CI runs each notebook once. When a copy is missing or
older than its source the source is rendered without outputs, and the build logs it; with
``LANDSCAPE_DOCS_REQUIRE_OUTPUTS=1`` (set by ``.ci/test``) that is an error instead. Plotly figures are
stored in a notebook as plotly JSON only, which nbconvert cannot draw: each gets an HTML rendering
(``plotly.io.to_html`` without the library), and the pages that show one load the site's single copy of
plotly.js, so the rendered notebooks work offline.
"""

from __future__ import annotations

import logging
import os
import pkgutil
from pathlib import Path

import nbformat
import plotly
import plotly.io as pio
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("landscape", "persistence", "tunnels")
EXECUTED = ROOT / "build" / "notebooks"  # written by tests/test_notebooks.py
PREPARED = ROOT / "build" / "docs_notebooks"  # executed copies with HTML for their plotly figures
PLOTLY_JS = "assets/javascripts/plotly.min.js"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
log = logging.getLogger("mkdocs.hooks.landscape")


def _is_package(module: str) -> bool:
    return (ROOT.joinpath(*module.split(".")) / "__init__.py").exists()


def _children(package: str) -> list[str]:
    """Dotted names of the public modules and subpackages directly inside ``package``, sorted."""
    found = pkgutil.iter_modules([str(ROOT.joinpath(*package.split(".")))])
    return sorted(f"{package}.{m.name}" for m in found if not m.name.startswith(("_", "__main__")))


def public_modules(package: str) -> list[str]:
    """Dotted names of a package and of its public modules at every depth (no ``_private`` or ``__main__``)."""
    names = [package]
    for child in _children(package):
        names += public_modules(child) if _is_package(child) else [child]
    return names


def _api_path(module: str) -> str:
    path = "api/" + "/".join(module.split("."))
    return f"{path}/index.md" if _is_package(module) else f"{path}.md"


def _api_page(module: str) -> str:
    if _is_package(module):  # its docstring and an index of its modules; every object is documented once, in its module
        leaf = {False: "{}.md", True: "{}/index.md"}
        links = "\n".join(f"- [`{m}`]({leaf[_is_package(m)].format(m.rsplit('.', 1)[-1])})" for m in _children(module))
        return (
            f"# `{module}`\n\n::: {module}\n    options:\n      members: false\n      show_root_heading: false\n\n"
            f"## Modules\n\n{links}\n"
        )
    return f"# `{module}`\n\n::: {module}\n    options:\n      show_root_heading: false\n"


def _nav(package: str) -> dict[str, list[object]]:
    entries: list[object] = [_api_path(package)]
    for child in _children(package):
        entries.append(_nav(child) if _is_package(child) else _api_path(child))
    return {package: entries}


def _notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def _with_plotly_html(executed: Path, out: Path) -> None:
    """Writes ``executed`` to ``out`` with a ``text/html`` rendering beside every plotly-only output."""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data and "text/html" not in data:
                data["text/html"] = pio.to_html(
                    dict(data[PLOTLY_MIME]), include_plotlyjs=False, full_html=False, validate=False
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Fills the nav's "API reference" and "Notebooks" placeholders with the generated pages."""
    api = [_nav(pkg) for pkg in PACKAGES]
    notebooks = [f"notebooks/{p.name}" for p in _notebooks()]
    for entry in config.nav or []:
        if isinstance(entry, dict) and entry.get("API reference") == "generated":
            entry["API reference"] = ["api.md", *api]
        if isinstance(entry, dict) and entry.get("Notebooks") == "generated":
            entry["Notebooks"] = ["notebooks.md", *notebooks]
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the .ipynb files into notebook pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds the generated API pages, plotly.js and the notebooks (executed copies where current)."""
    for pkg in PACKAGES:
        for module in public_modules(pkg):
            files.append(File.generated(config, _api_path(module), content=_api_page(module)))
    files.append(
        File.generated(
            config, PLOTLY_JS, abs_src_path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js")
        )
    )
    stale = []
    for source in _notebooks():
        executed = EXECUTED / source.name
        if executed.exists() and executed.stat().st_mtime >= source.stat().st_mtime:
            _with_plotly_html(executed, PREPARED / "notebooks" / source.name)
            src_dir = PREPARED
        else:
            stale.append(source.name)
            src_dir = ROOT
        files.append(File(f"notebooks/{source.name}", str(src_dir), config.site_dir, config.use_directory_urls))
    if stale:
        msg = (
            f"notebooks rendered without outputs (no current executed copy in {EXECUTED}): {', '.join(stale)}; "
            "run `python -m pytest tests/test_notebooks.py` first to render them with outputs"
        )
        if os.environ.get("LANDSCAPE_DOCS_REQUIRE_OUTPUTS") == "1":
            raise PluginError(msg)
        log.info(msg)
    return files


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Loads plotly.js (synchronously, before the figures' inline scripts) on pages that draw a plotly figure."""
    if "Plotly.newPlot" not in html:
        return html
    depth = page.url.count("/")  # "notebooks/00_quickstart/" -> 2 levels below the site root
    return f'<script src="{"../" * depth}{PLOTLY_JS}"></script>\n{html}'
