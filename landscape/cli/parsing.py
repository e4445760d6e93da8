"""Values of the command line's options: grids of positions, ranges, resolutions, model arguments, points.

Every parser raises :class:`CLIError`, which :func:`landscape.cli.app.main` prints as ``landscape: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLIError",
    "DATA_NAMES",
    "DIRECTIONS",
    "parse_values",
    "parse_resolution",
    "parse_range",
    "parse_model_kw",
    "parse_point",
    "eval_kw",
    "plural",
]

DATA_NAMES = ("digits", "mnist-subset")
DIRECTIONS = ("filter", "layer", "model", "random", "pca", "models")


class CLIError(Exception):
    """A user error of the command line: printed as ``landscape: error: ...`` with exit status 2."""


def plural(n: int, noun: str) -> str:
    """``"1 snapshot"``, ``"6 snapshots"``, ``"0 points"``: the count with the noun in the number it needs."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def parse_values(spec: str, what: str) -> np.ndarray:
    """Parse ``"a:b:n"`` (``linspace(a, b, n)``), ``"a:b"`` (21 points) or ``"x,y,z"`` into a float array.

    Raises:
        CLIError: On anything else, or a value that is not finite (``inf``, ``nan``).
    """
    try:
        if ":" in spec:
            parts = [p for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            n = int(parts[2]) if len(parts) == 3 else 21
            if n < 1:
                raise ValueError
            ends = [float(parts[0]), float(parts[1])]
            vals = np.linspace(ends[0], ends[1], n) if np.isfinite(ends).all() else np.array(ends)
        else:
            vals = np.array([float(v) for v in spec.split(",") if v.strip()], dtype=np.float64)
        if not vals.size:
            raise ValueError
    except ValueError:
        raise CLIError(f"{what} {spec!r}: use START:STOP:COUNT (e.g. -0.5:1.5:41) or a list like 0,0.5,1") from None
    if not np.isfinite(vals).all():
        raise CLIError(f"{what} {spec!r}: every value must be finite (no inf or nan)")
    return vals


def parse_resolution(spec: str) -> tuple[int, int]:
    """``"N"`` or ``"NXxNY"`` as ``(nx, ny)``.

    Raises:
        CLIError: On anything else.
    """
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", spec)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise CLIError(f"--resolution {spec!r}: use N (square) or NXxNY, e.g. 41 or 41x31")
    nx = int(m.group(1))
    return nx, int(m.group(2) or nx)


def parse_range(spec: str, what: str) -> tuple[float, float]:
    """``"START:STOP"`` as ``(start, stop)``.

    Raises:
        CLIError: On anything else, or ``STOP <= START``.
    """
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*", spec)
    try:
        lo, hi = float(m.group(1)), float(m.group(2))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise CLIError(f"{what} {spec!r}: use START:STOP, e.g. -1:1") from None
    if not np.isfinite([lo, hi]).all():
        raise CLIError(f"{what} {spec!r}: START and STOP must be finite")
    if not hi > lo:
        raise CLIError(f"{what} {spec!r}: STOP must exceed START")
    return lo, hi


def parse_model_kw(items: Sequence[str]) -> dict[str, Any]:
    """``--model-kw`` items (JSON objects, or ``KEY=VALUE`` with VALUE as JSON or a bare string) as one dict.

    Raises:
        CLIError: On an item that is neither.
    """
    out: dict[str, Any] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                out.update(json.loads(item))
            except json.JSONDecodeError as e:
                raise CLIError(f"--model-kw {item!r} is not a JSON object ({e})") from None
            continue
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CLIError(f"--model-kw {item!r}: use KEY=VALUE (VALUE as JSON, e.g. hidden=[32,16] activation=tanh)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as activation=tanh
    return out


def parse_point(spec: str) -> tuple[Path, int | None]:
    """Split ``TRAJ[:INDEX]`` into ``(path, index or None)``; a weights file has no index.

    Raises:
        CLIError: If nothing exists at the path.
    """
    if Path(spec).exists():
        return Path(spec), None
    head, sep, tail = spec.rpartition(":")
    if sep and re.fullmatch(r"[-+]?\d+", tail):
        if not Path(head).exists():
            raise CLIError(f"trajectory {head!r} not found (from point {spec!r})")
        return Path(head), int(tail)
    raise CLIError(f"point {spec!r} not found: give TRAJ_DIR[:INDEX] or a weights file (.safetensors, .pt)")


def eval_kw(args: argparse.Namespace, desc: str) -> dict[str, Any]:
    """The evaluation keywords of a slice or distance from the shared options (only those given)."""
    kw: dict[str, Any] = {"data_description": desc, "bn_mode": args.bn_mode, "progress": not args.quiet}
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    if args.memory_budget is not None:
        kw["memory_budget"] = args.memory_budget
    return kw
