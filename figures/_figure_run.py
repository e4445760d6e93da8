"""One figure's run and its ``record.json`` (the gallery's cache), for :mod:`figures.make_all`.

Private: :func:`_run_one` runs a figure (in the gallery's process or a spawned worker) into a staging directory
and swaps it in whole; :func:`_failed` writes the record of a figure that raised or whose worker died;
:func:`_cached_entry` reads a record back for reuse; :func:`_clear_leftovers` removes what killed processes left.
``figures.make_all`` schedules these and writes the index.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from figures._pool import WorkerDied
from figures._provenance import code_provenance
from figures.contract import FigureResult, FigureSpec, Scale, get_figure, torch_threads
from figures.gallery import figure_entry, render_figure, utc_now, write_atomic


def _record_path(out: Path, name: str) -> Path:
    return out / name / "record.json"


def _cached_entry(out: Path, spec: FigureSpec, key: str | None) -> dict[str, Any] | None:
    """The figure's earlier entry if it rendered with the same key and all its files are still there."""
    path = _record_path(out, spec.name)
    if key is None or not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if entry.get("status") != "ok" or entry.get("cache_key") != key:
        return None
    if not all((out / p[k]).is_file() for p in entry.get("panels", []) for k in ("html", "png", "json")):
        return None
    return {**entry, "cached": True, "title": spec.title, "paper": spec.paper.value, "module": spec.module}


def _swap_in(stage: Path, final: Path) -> None:
    """Replace the figure's directory with the freshly written one."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)


def _failed(
    out: Path, name: str, spec: FigureSpec | None, scale: str, error: BaseException, runtime_s: float | None = None
) -> dict[str, Any]:
    """Record a figure that failed (raised, or its worker died): its entry, written as its directory's only file.

    Stale outputs of an earlier success would contradict the failure, and so would the half-written staging
    directory of a worker that died: both are removed.
    """
    if isinstance(error, WorkerDied):
        text, runtime_s = f"{error}\n", error.runtime_s
        for stage in out.glob(f".stage-{name}-*"):
            shutil.rmtree(stage, ignore_errors=True)
    else:
        text = "".join(traceback.format_exception(error))
    entry = figure_entry(
        spec,
        name=name,
        scale=scale,
        status="failed",
        error=text,
        runtime_s=None if runtime_s is None else round(runtime_s, 3),
        finished=utc_now(),
        provenance=code_provenance(),
    )
    final = out / name
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True, exist_ok=True)
    write_atomic(final / "record.json", json.dumps(entry, indent=2) + "\n")
    return entry


def _run_one(
    name: str, module: str | None, scale: str, data_dir: str | None, out: str, progress: bool, key: str | None
) -> dict[str, Any]:
    """Run one figure and write its directory; returns its entry and never raises.

    ``module`` is imported first when given (in a ``--jobs`` worker process, to register the figure).
    """
    out_p = Path(out)
    stage = out_p / f".stage-{name}-{os.getpid()}"
    spec = None
    t0 = time.perf_counter()
    try:
        if module is not None:
            importlib.import_module(module)
        spec = get_figure(name)
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        with torch_threads(1):  # the one thread policy: extra threads on busy cores slow torch down
            result = spec.run(
                scale=Scale(scale), data_dir=None if data_dir is None else Path(data_dir), out=stage, progress=progress
            )
        if not isinstance(result, FigureResult):
            raise TypeError(f"figure {name!r} returned {type(result).__name__}, expected figures.contract.FigureResult")
        panels = render_figure(result, stage, name)
        entry = figure_entry(
            spec,
            name=name,
            scale=scale,
            status="ok",
            scaling=result.scaling,
            caption=result.caption,
            runtime_s=round(time.perf_counter() - t0, 3),
            cache_key=key,
            finished=utc_now(),
            provenance=code_provenance(),
            panels=panels,
            claims=[{**c.to_dict(), "scale": c.scale or scale} for c in result.claims],  # every verdict's scale
        )
        write_atomic(stage / "record.json", json.dumps(entry, indent=2, allow_nan=False) + "\n")
        _swap_in(stage, out_p / name)
        return entry
    except Exception as e:  # noqa: BLE001 - a failing figure is reported, the gallery goes on
        entry = _failed(out_p, name, spec, scale, e, runtime_s=time.perf_counter() - t0)
        if spec is None and module is not None:
            entry["module"] = module
        return entry
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # left over only after a failure or an interrupt


def _clear_leftovers(out: Path) -> None:
    """Remove the staging directories and temporary files of processes that are gone.

    A gallery killed outright, or a worker ended with it, leaves ``.stage-<name>-<pid>`` directories (a figure's
    half-written panels) and ``.<file>.<pid>.tmp`` files behind; nothing would remove them later. Those of a process
    still running are kept (another build writing into this gallery).
    """
    for path in [*out.glob(".stage-*"), *out.glob(".*.tmp"), *out.glob("*/.*.tmp")]:
        pid = re.search(r"[-.](\d+)(\.tmp)?$", path.name)
        try:
            if pid is not None:
                os.kill(int(pid[1]), 0)  # raises if the process is gone
        except ProcessLookupError:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass
