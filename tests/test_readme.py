"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README lost its example"
    for code in blocks:
        ns: dict = {}
        exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README
    assert len(ns["traj"]) == 6 and ns["trainer"].step == 85
