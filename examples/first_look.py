"""Make the README's "A first look" picture: run the README's Python snippet as written and keep what it drew.

The snippet is read from README.md (there is no second copy to drift). The script writes, next to itself:

* ``first_look.json``: the numbers the picture shows (the plane's grid and losses, the projected path and
  its losses, the last epoch's metrics), and
* ``first_look.png``: the snippet's figure, whose PNG text chunk ``landscape-values`` holds the sha256
  of those numbers, so a test can tell that the picture was drawn from the committed numbers.

``tests/test_readme.py`` reruns the snippet and checks the numbers against ``first_look.json`` (to 1e-6)
and the picture's digest against them. After changing the snippet or anything it computes with, run
``python examples/first_look.py`` and commit the two files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
VALUES, PICTURE = HERE / "first_look.json", HERE / "first_look.png"
DIGEST_KEY = "landscape-values"


def snippet() -> str:
    """The first Python code block of the README's "A first look" section (the one that draws)."""
    text = README.read_text()
    section = text.split("## A first look", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    if not blocks:
        raise ValueError("README's 'A first look' section lost its python block")
    return blocks[0]


def run_snippet(workdir: Path) -> dict[str, Any]:
    """Execute the snippet in ``workdir`` (where it saves its PNG); returns its namespace."""
    import torch

    ns: dict[str, Any] = {"__name__": "__first_look__"}
    cwd, threads = Path.cwd(), torch.get_num_threads()
    # One thread: reductions then add in one order, so the numbers repeat exactly on a machine of one kind.
    torch.set_num_threads(1)
    os.chdir(workdir)
    try:
        exec(compile(snippet(), "README.md, A first look", "exec"), ns)  # noqa: S102 - the project's own README
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return ns


def values_of(ns: dict[str, Any]) -> dict[str, Any]:
    """The numbers the picture shows, as JSON-ready lists of floats."""
    surface, path, trainer = ns["surface"], ns["path"], ns["trainer"]
    return {
        "xs": surface.xs.tolist(),
        "ys": surface.ys.tolist(),
        "plane_loss": surface.metrics["loss"].tolist(),
        "path_xy": path.coordinates.tolist(),
        "path_true_loss": path.true_loss.tolist(),
        "path_plane_loss": path.plane_loss.tolist(),
        "final_metrics": {k: float(v) for k, v in trainer.history_[-1].items()},
    }


def digest(values: dict[str, Any]) -> str:
    """sha256 of the numbers' canonical JSON (floats round-trip exactly through JSON)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def main() -> None:
    """Run the snippet, write first_look.json and first_look.png."""
    ns = run_snippet(HERE)
    values = json.loads(json.dumps(values_of(ns)))
    VALUES.write_text(json.dumps(values, indent=1) + "\n")
    # Saved again over the snippet's own PNG, now stamped with the digest of the numbers it shows.
    ns["fig"].savefig(PICTURE, dpi=100, metadata={DIGEST_KEY: digest(values)})
    print(f"wrote {VALUES.relative_to(HERE.parent)} and {PICTURE.relative_to(HERE.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
