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
    "BYTES_PER_POINT",
    "CLIError",
    "DATA_NAMES",
    "DIRECTIONS",
    "check_point_count",
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


#: Bytes a slice holds for each point it evaluates, float64: its grid coordinates (2), the coefficients of its
#: directions (up to 3) and its metrics (loss, accuracy); the intermediate copies come on top.
BYTES_PER_POINT = 7 * 8


def check_point_count(n: int, what: str, budget: str | None) -> None:
    """Refuse a slice of ``n`` points whose arrays alone would not fit in the memory budget.

    numpy raised its own MemoryError (a traceback) at the first grid of ``--resolution 100000x100000``, or worked
    for hours.

    Args:
        n: Points of the slice.
        what: The option and value that asked for them, for the message (``"--resolution 41x31"``).
        budget: ``--memory-budget`` as given (``None``: the engine's default).

    Raises:
        CLIError: If ``n * BYTES_PER_POINT`` exceeds the budget; the message says what it would need.
    """
    from landscape._options import parse_bytes

    limit = parse_bytes(budget)
    need = n * BYTES_PER_POINT
    if need > limit:
        raise CLIError(
            f"{what} is {n:,} points, whose coordinate and result arrays alone need about {_bytes(need)} "
            f"({BYTES_PER_POINT} bytes a point), over the memory budget of {_bytes(limit)} (--memory-budget"
            f"{'' if budget is not None else ', default 1GiB'}); give fewer points or a larger --memory-budget"
        )


def _bytes(n: int) -> str:
    """``"512 B"``, ``"74.5 GiB"``: a size in binary units, as numpy's MemoryError and ``--memory-budget`` state it."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    size, k = float(n), 0
    while size >= 1024 and k < len(units) - 1:
        size, k = size / 1024, k + 1
    return f"{size:.0f} B" if k == 0 else f"{size:.1f} {units[k]}"


def parse_values(spec: str, what: str, budget: str | None = None) -> np.ndarray:
    """Parse ``"a:b:n"`` (``linspace(a, b, n)``), ``"a:b"`` (21 points) or ``"x,y,z"`` into a float array.

    Args:
        spec: The option's value.
        what: The option, for messages.
        budget: ``--memory-budget``: a count ``n`` whose slice would not fit in it is refused before the array is
            made (see :func:`check_point_count`).

    Raises:
        CLIError: On anything else, a value that is not finite (``inf``, ``nan``), or too many points.
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
            if np.isfinite(ends).all():
                check_point_count(n, f"{what} {spec}", budget)
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
    """``"N"`` or ``"NXxNY"`` (``x``, ``X`` or ``,`` between) as ``(nx, ny)``.

    Raises:
        CLIError: On anything else.
    """
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", spec)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise CLIError(f"--resolution {spec!r}: use N (square) or NXxNY, e.g. 41 or 41x31")
    nx = int(m.group(1))
    return nx, int(m.group(2) or nx)


def parse_range(spec: str, what: str) -> tuple[float, float]:
    """``"START:STOP"`` as ``(start, stop)``.

    Raises:
        CLIError: On anything else, or ``STOP <= START``.
    """
    m = re.fullmatch(r"\s*([^:\s]+)\s*:\s*([^:\s]+)\s*", spec)  # (inf and nan read, to be refused as such)
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
