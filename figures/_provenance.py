"""Which code made a figure: the checkout's git commit and the versions of python, torch, numpy and landscape.

Private, for the gallery: :func:`code_provenance` is stamped into every figure's ``record.json`` (and so its
``claims.json`` entry) as ``"provenance"``, and :func:`provenance_footer` shows each distinct one once at the foot of
``index.html``. Neither enters the cache key (``figures.gallery.cache_key``) nor the verdict table: a figure reused
from the cache keeps the provenance of the run that made it.
"""

from __future__ import annotations

import functools
import html
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROVENANCE_KEYS = ("commit", "dirty", "python", "torch", "numpy", "landscape")
"""The keys of :func:`code_provenance`, in the order the footer shows them."""

_CHECKOUT = Path(__file__).resolve().parents[1]  # the directory holding the figures package
_UNKNOWN = "unknown"


def _git(*args: str) -> str | None:
    """``git -C <checkout> <args>``'s output, or None when git is missing, fails or hangs."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_commit() -> tuple[str, bool | None]:
    """The commit checked out where the figures package lives and whether tracked files differ from it.

    Returns:
        ``(sha, dirty)``: the full 40-hex commit, and ``True`` when tracked files have uncommitted changes (untracked
        files such as a gallery written into the checkout do not count). ``("unknown", None)`` outside a git
        checkout, without git, or when the enclosing repository is not this checkout (the package installed inside
        someone else's repository, e.g. a virtualenv in a project); never raises.
    """
    out = _git("rev-parse", "--show-toplevel", "HEAD")
    lines = (out or "").split()
    if len(lines) != 2 or len(lines[1]) != 40:
        return _UNKNOWN, None
    try:
        same = Path(lines[0]).resolve() == _CHECKOUT
    except OSError:
        same = False
    if not same:
        return _UNKNOWN, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return lines[1], None if status is None else bool(status.strip())


@functools.lru_cache(maxsize=1)
def code_provenance() -> dict[str, Any]:
    """The provenance stamped into each figure record: see :data:`PROVENANCE_KEYS`; never raises.

    Computed once per process (a gallery's workers each compute their own, from the same checkout).
    """
    import numpy
    import torch

    from landscape.results import package_version

    commit, dirty = git_commit()
    return {
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "landscape": package_version(),
    }


def _describe(p: Mapping[str, Any]) -> str:
    commit = str(p.get("commit", _UNKNOWN))
    text = f"commit <code>{html.escape(commit)}</code>"
    if p.get("dirty"):
        text += " with uncommitted changes"
    versions = ", ".join(f"{k} {html.escape(str(p.get(k, _UNKNOWN)))}" for k in PROVENANCE_KEYS[2:])
    return f"{text} ({versions})"


def provenance_footer(entries: Sequence[Mapping[str, Any]]) -> str:
    """The index's footer: each distinct provenance of the figures once, most figures first.

    With one provenance (a gallery made in one run, or reused from runs of the same code) it is one line; figures
    reused from a run of other code are named under theirs. Figures without one (pending, or records written
    before records carried it) are counted.

    Args:
        entries: The figures' ``claims.json`` entries.

    Returns:
        A ``<footer class="provenance">`` element, or ``""`` when no entry has a provenance.
    """
    groups: dict[str, tuple[Mapping[str, Any], list[str]]] = {}
    without = 0
    for e in entries:
        p = e.get("provenance")
        if not isinstance(p, Mapping):
            without += e.get("status") != "pending"  # pending figures have not run yet: nothing to attribute
            continue
        key = json.dumps([p.get(k) for k in PROVENANCE_KEYS])
        groups.setdefault(key, (p, []))[1].append(str(e["name"]))
    if not groups:
        return ""
    ranked = sorted(groups.values(), key=lambda group: -len(group[1]))  # stable: ties keep the gallery's order
    if len(ranked) == 1 and not without:
        lines = [f"Made by {_describe(ranked[0][0])}."]
    else:
        lines = [
            f"{len(names)} figure{'s' * (len(names) != 1)} made by {_describe(p)}: "
            + ", ".join(html.escape(n) for n in names)
            for p, names in ranked
        ]
        if without:
            lines.append(f"{without} figure{'s' * (without != 1)} without a provenance record (made by older code)")
    return '<footer class="provenance">' + "".join(f"<p>{line}</p>" for line in lines) + "</footer>"
