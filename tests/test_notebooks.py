"""Every notebook under notebooks/ runs top to bottom (quick parameters via LANDSCAPE_QUICK=1), draws at
least one figure, and prints no progress-bar fallback warning (the set-up installs ipywidgets)."""

import ast
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURE_TYPES = {"image/png", "image/svg+xml", "application/vnd.plotly.v1+json"}
EXECUTED = ROOT / "build" / "notebooks"  # the docs render these copies (docs/_ext/hooks.py): one execution in CI


def _ends_with_a_renderer_call(source: str) -> bool:
    """Whether a code cell's last statement is a bare call of a ``landscape.plot`` function (``plot_*``) without
    ``ax=``, whose value (the figure) is then what the cell shows (with ``ax=`` it draws into the caller's figure)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    body = ast.parse(code).body
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Call):
        return False
    func = body[-1].value.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return name.startswith("plot_") and "ax" not in {k.arg for k in body[-1].value.keywords}


def _text(output) -> str:
    """Everything an output shows as text: streams, tracebacks, plain-text reprs."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join(output.traceback)
    return str(output.get("data", {}).get("text/plain", ""))


def run_notebook(path: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    EXECUTED.mkdir(parents=True, exist_ok=True)
    tmp = EXECUTED / f".{path.name}.tmp"
    nbformat.write(nb, tmp)
    tmp.replace(EXECUTED / path.name)
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    cells = run_notebook(path, tmp_path, monkeypatch)
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(_text(o) for o in outputs)
    # tqdm.auto falls back to a text bar and warns when the kernel lacks ipywidgets
    assert "IProgress not found" not in text and "TqdmWarning" not in text, text[:2000]
    figures = [o for o in outputs if FIGURE_TYPES & set(o.get("data", {}))]
    assert figures, f"{path.name} draws no figure"
    # every cell that ends in a renderer call shows its figure
    for k, cell in enumerate(cells):
        if _ends_with_a_renderer_call(cell.source):
            assert [o for o in cell.get("outputs", []) if FIGURE_TYPES & set(o.get("data", {}))], (path.name, k)


def test_no_cell_hides_the_figure_it_ends_with():
    """A cell ending in a renderer call shows the figure the call returns, unless a ``;`` suppresses it: with
    ``backend="matplotlib"`` the figure is built without pyplot, so nothing else would draw it (notebook 02's
    trajectory plane was missing from its page that way)."""
    hidden = []
    for path in NOTEBOOKS:
        for k, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code" and _ends_with_a_renderer_call(cell.source):
                if cell.source.rstrip().endswith(";"):
                    hidden.append((path.name, k))
    assert hidden == []
