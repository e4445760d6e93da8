"""Every notebook under notebooks/ runs top to bottom (quick parameters via LANDSCAPE_QUICK=1), draws at
least one figure, and prints no progress-bar fallback warning (the set-up installs ipywidgets)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURE_TYPES = {"image/png", "image/svg+xml", "application/vnd.plotly.v1+json"}
EXECUTED = ROOT / "build" / "notebooks"  # the docs render these copies (docs/_ext/hooks.py): one execution in CI


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
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    outputs = run_notebook(path, tmp_path, monkeypatch)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(_text(o) for o in outputs)
    # tqdm.auto falls back to a text bar and warns when the kernel lacks ipywidgets
    assert "IProgress not found" not in text and "TqdmWarning" not in text, text[:2000]
    figures = [o for o in outputs if FIGURE_TYPES & set(o.get("data", {}))]
    assert figures, f"{path.name} draws no figure"
