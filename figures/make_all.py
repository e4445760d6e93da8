"""Run every registered figure and write the gallery: ``python -m figures.make_all``.

Usage::

    python -m figures.make_all [--scale {quick,medium,full}] [--full] [--only NAME ...] [--data-dir DIR] [--out DIR]
                               [--jobs N] [--force] [--quiet]

Runs at the quick scale (embedded data, two CPU cores; the whole quick gallery is budgeted at 15 minutes) unless
``--scale medium`` (embedded data, the claims that need more compute; budgeted at 2 hours on two cores: figures
without a medium setting run, or are reused, at quick, and each figure says which scale it ran at) or ``--full``
(``--scale full``). Writes into ``--out`` (default ``gallery/``): ``index.html`` (every figure, interactive
and PNG, its caption, scaling, run time and claims table, with a summary of the claims at the top),
``claims.json`` (schema: ``figures.schema.CLAIMS_SCHEMA``), ``plotly.min.js`` (shared, offline) and one
directory per figure with its panels' ``.html``/``.png``/``.plotly.json`` and ``record.json`` (the cache; it also
names the code that made the figure: git commit and versions, see ``figures._provenance``).

A figure that raises, or whose worker process dies, is reported (traceback on stderr and in the gallery) and the
others still run; the exit status is then 1. A rerun reuses every figure whose name, scale and figure code (its
module and the figure modules it imports: ``FigureSpec.source_hash``) are unchanged (``--force`` recomputes).
The index and ``claims.json`` are rewritten after each figure, atomically, and list unfinished figures as pending,
so an interrupted run never leaves a stale gallery that looks complete.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from figures._figure_run import _cached_entry, _clear_leftovers, _failed, _record_path, _run_one
from figures._pool import run_tasks
from figures._provenance import code_provenance
from figures.contract import (
    FigureSpec,
    Paper,
    Scale,
    discover,
    registered,
)
from figures.gallery import (
    cache_key,
    claims_document,
    figure_entry,
    summarize,
    write_claims_json,
    write_index,
    write_plotly_js,
    write_reproduction_table,
)
from figures.verdict_table import golden_report

__all__ = ["GalleryReport", "MEDIUM_BUDGET_S", "QUICK_BUDGET_S", "main", "make_gallery"]

QUICK_BUDGET_S = 15 * 60
"""The whole quick gallery must finish within this many seconds on two CPU cores (issue 5)."""

MEDIUM_BUDGET_S = 2 * 3600
"""The whole medium gallery must finish within this many seconds on two CPU cores (issue 18)."""


@dataclasses.dataclass(frozen=True)
class GalleryReport:
    """What :func:`make_gallery` wrote.

    Attributes:
        out: The gallery directory.
        entries: The figures' ``claims.json`` entries, in gallery order.
        total_runtime_s: Wall time of the run.
        summary: Counts of figures ok/failed/pending and claims held/not held/not tested.
    """

    out: Path
    entries: list[dict[str, Any]]
    total_runtime_s: float
    summary: dict[str, int]

    @property
    def failed(self) -> list[str]:
        """Names of the figures that failed."""
        return [e["name"] for e in self.entries if e["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every figure rendered, 1 otherwise."""
        return 1 if self.failed else 0


def free_cores(sample_s: float = 0.5) -> int:
    """Cores not busy with other work now, at least 1.

    Measured as the idle share of all cores over ``sample_s`` seconds (``/proc/stat``), not the load
    average, which lags by minutes: right after ``.ci/setup.sh`` it still counts the installation as busy.
    Elsewhere, the core count minus the 1-minute load average.
    """
    n = os.cpu_count() or 1

    def cpu_times() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = cpu_times()
        time.sleep(sample_s)
        idle1, total1 = cpu_times()
        free = n * (idle1 - idle0) / max(total1 - total0, 1)
    except (OSError, ValueError, IndexError):
        try:
            free = n - os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - neither (Windows)
            free = n
    return max(1, min(n, int(round(free))))


RUNTIMES = Path(__file__).with_name("runtimes.tsv")


def _shipped_runtimes() -> dict[tuple[str, str], float]:
    """``figures/runtimes.tsv``: a figure's measured wall time per scale, for a gallery that has no record yet."""
    table: dict[tuple[str, str], float] = {}
    try:
        lines = RUNTIMES.read_text(encoding="utf-8").splitlines()
    except OSError:
        return table
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 3 and not line.startswith("#"):
            try:
                table[parts[0], parts[1]] = float(parts[2])
            except ValueError:
                continue
    return table


def _last_runtime(
    out: Path, name: str, scale: str = "quick", shipped: dict[tuple[str, str], float] | None = None
) -> float:
    """The figure's expected run time: its last run at ``scale`` in ``out``, else the shipped table's, else ``inf``.

    A fresh gallery has no records; without the shipped times it would start the figures in registry order and a
    long one (Im Table 1 at medium: over an hour) could start last and leave one core idle for its whole length.
    """
    try:
        rec = json.loads(_record_path(out, name).read_text(encoding="utf-8"))
        t = rec.get("runtime_s")
        if isinstance(t, (int, float)) and rec.get("scale", scale) == scale:
            return float(t)
    except (OSError, ValueError, AttributeError):
        pass
    shipped = _shipped_runtimes() if shipped is None else shipped
    return shipped.get((name, scale), shipped.get((name, "quick"), math.inf))


# glibc malloc: serve every tensor from the heap and keep freed memory (up to 1 GiB) instead of mapping and unmapping
# each large buffer. With the defaults a medium-scale Im training step page-faults its activations afresh every
# time: the whole medium gallery spent 3,007 s in the kernel against 9,588 s of user time. On that workload
# (benchmarks/bench_allocator.py): system time 1.94 s -> 0.09 s, wall time 0.82x. Read by glibc when a process
# starts, so it reaches the spawned workers; other C libraries ignore it; a value the user set is kept.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


@contextlib.contextmanager
def _allocator_env_for_workers() -> Iterator[None]:
    """Set :data:`ALLOCATOR_ENV` (where unset) while workers are spawned; the caller's environment is restored."""
    added = [var for var in ALLOCATOR_ENV if var not in os.environ]
    os.environ.update({var: ALLOCATOR_ENV[var] for var in added})
    try:
        yield
    finally:
        for var in added:
            os.environ.pop(var, None)


def _die_with_parent(parent: int) -> None:
    """End this worker when the gallery's process dies (Linux), instead of training on for nobody.

    Killing ``make_all`` (``kill``, a closed terminal) does not reach the spawned workers, which would otherwise
    finish their figures on cores a new run then counts as busy. ``prctl(PR_SET_PDEATHSIG, SIGTERM)``; a parent
    already gone before the call is caught by the ``getppid`` check after it.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this C library
        return
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(threads: int, parent: int | None = None) -> None:
    """Spawned worker: share the cores among the workers, render without a display, die with the gallery."""
    if parent is not None:
        _die_with_parent(parent)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import matplotlib

    matplotlib.use("Agg")


def figure_sort_key(name: str, paper: str | None) -> tuple[Any, ...]:
    """Sort by paper, then by figure number as a number (``im_fig2_3`` before ``im_fig10``), then by name."""
    rank = {p.value: i for i, p in enumerate(Paper)}
    numbers = tuple(int(n) for n in re.findall(r"\d+", name))
    kind = 1 if re.search(r"_table\d", name) and not re.search(r"_fig\d", name) else 0  # tables after figures
    if "_pp_" in name or not numbers:  # a second version's figures (the preprint), then unnumbered ones
        kind = 2 if numbers else 3
    return rank.get(paper, len(rank)), kind, numbers, name


def _order(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries.values(), key=lambda e: figure_sort_key(e["name"], e["paper"]))


def make_gallery(
    only: Sequence[str] | None = None,
    *,
    scale: Scale | str = Scale.QUICK,
    data_dir: Path | str | None = None,
    out: Path | str = "gallery",
    jobs: int | None = None,
    force: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> GalleryReport:
    """Run the registered figures and write the gallery (the function behind ``python -m figures.make_all``).

    Args:
        only: Names of the figures to run (default: all). Other figures whose cached results are current
            stay in the gallery.
        scale: ``"quick"`` (default), ``"medium"`` or ``"full"``. A figure without settings for ``scale`` (see
            :meth:`~figures.contract.FigureSpec.run_scale`) runs at quick, and its entry says so.
        data_dir: The user's data directory (needed by full-scale figures on real data sets).
        out: The gallery directory (created if missing).
        jobs: Number of figures run in parallel (spawned processes, one torch thread each); 1 runs them in
            this process at one torch thread. Default: the free cores (see :func:`free_cores`).
        force: Recompute figures even when a current cached result exists.
        progress: Show tqdm bars (over figures and each figure's own).
        verbose: Print one line per finished figure (the total-time line always prints).

    Returns:
        The report; ``report.exit_code`` is 1 if any figure failed.

    Raises:
        KeyError: If a name in ``only`` is not registered (the message lists the registered names).
        ValueError: If ``scale`` is unknown or ``jobs < 1``.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    scale = Scale(scale)
    jobs = free_cores() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out)
    data_dir = None if data_dir is None else Path(data_dir).expanduser()
    import_failures = discover()
    specs = registered()
    broken = ", ".join(f.module for f in import_failures)
    for name in only or ():
        if name not in specs:
            hint = f"; modules that failed to import: {broken}" if broken else ""
            raise KeyError(f"no figure named {name!r}; registered: {sorted(specs)}{hint}")
    selected = list(dict.fromkeys(only)) if only else list(specs)
    out.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(out)
    write_plotly_js(out)
    write_reproduction_table(out)

    def say(msg: str) -> None:
        if verbose:
            tqdm.write(msg, file=sys.stderr)

    entries: dict[str, dict[str, Any]] = {}
    todo: list[tuple[FigureSpec, str | None]] = []
    for name, spec in specs.items():
        own = spec.run_scale(scale)  # a figure without a medium setting runs (or is reused) at quick
        key = cache_key(spec, own.value, data_dir)
        cached = None if (force and name in selected) else _cached_entry(out, spec, key)
        if cached is not None:
            entries[name] = cached
        elif name in selected:
            entries[name] = figure_entry(spec, name=name, scale=own.value, status="pending", cache_key=key)
            todo.append((spec, key))
    if not only:
        for f in import_failures:
            # the module's path in the package: figures/im/fig1.py and figures/lipton/fig1.py are two entries
            name = f.module.removeprefix("figures.")
            entries[name] = figure_entry(
                None,
                name=name,
                scale=scale.value,
                status="failed",
                error=f.error,
                module=f.module,
                title=f"module {f.module} failed to import",
                provenance=code_provenance(),
            )
    for f in import_failures:
        tqdm.write(f"FAILED to import {f.module}:\n{f.error}", file=sys.stderr)
    left_out = sorted(set(specs) - set(entries))
    note = f"{len(left_out)} registered figure(s) not in this gallery: {', '.join(left_out)}" if left_out else ""
    fragments: dict[str, str] = {}

    def publish() -> None:
        ordered = _order(entries)
        elapsed = time.perf_counter() - t_start
        document = claims_document(ordered, scale=scale.value, total_runtime_s=elapsed, not_in_gallery=left_out)
        write_claims_json(out, document)
        write_index(out, ordered, scale=scale.value, total_runtime_s=elapsed, fragments=fragments, note=note)

    def finished(entry: dict[str, Any]) -> None:
        entries[entry["name"]] = entry
        if entry["status"] == "failed":
            tqdm.write(f"FAILED {entry['name']} after {entry['runtime_s']:.1f} s:\n{entry['error']}", file=sys.stderr)
        else:
            c = summarize([entry])
            say(
                f"{entry['name']}: ok in {entry['runtime_s']:.1f} s; claims {c['claims_held']} held, "
                f"{c['claims_not_held']} not held, {c['claims_inconclusive']} inconclusive, "
                f"{c['claims_not_tested']} not tested"
            )
        publish()

    # Longest first (the last run time at this scale, else figures/runtimes.tsv; unknown first), so the slowest
    # figure does not start last.
    shipped = _shipped_runtimes()
    todo.sort(key=lambda t: -_last_runtime(out, t[0].name, t[0].run_scale(scale).value, shipped))
    publish()  # the pending figures show as such until they finish
    data_arg = None if data_dir is None else str(data_dir)
    bar = tqdm(total=len(todo), desc="figures", unit="fig", disable=not progress, file=sys.stderr)
    try:
        if jobs == 1 or len(todo) <= 1:
            for spec, key in todo:
                bar.set_postfix_str(spec.name)
                finished(
                    _run_one(
                        spec.name,
                        None,
                        spec.run_scale(scale).value,
                        data_arg,
                        str(out),
                        progress,
                        key,
                    )
                )
                bar.update()
        else:
            tasks = [
                (spec, (spec.name, spec.module, spec.run_scale(scale).value, data_arg, str(out), False, key))
                for spec, key in todo
            ]
            ctx = multiprocessing.get_context("spawn")
            results = run_tasks(ctx, _run_one, tasks, min(jobs, len(todo)), _init_worker, (1, os.getpid()))
            with _allocator_env_for_workers(), contextlib.closing(results):  # closing: an interrupt ends the workers
                for spec, result in results:
                    if not isinstance(result, dict):  # the worker died (out of memory, a crash in C code)
                        result = _failed(out, spec.name, spec, spec.run_scale(scale).value, result)
                    finished(result)
                    bar.update()
    finally:
        bar.close()
    total = time.perf_counter() - t_start
    publish()
    ordered = _order(entries)
    summary = summarize(ordered)
    n_cached = sum(e["cached"] for e in ordered)
    budget = ""
    limit = {Scale.QUICK: QUICK_BUDGET_S, Scale.MEDIUM: MEDIUM_BUDGET_S}.get(scale)
    if limit is not None:
        budget = f"; {scale.value} budget {limit / 60:.0f} min on 2 cores"
        if total > limit:
            budget += " EXCEEDED"
    n = len(ordered)
    print(  # the total-time line prints even with --quiet
        f"gallery: {n} figure{'' if n == 1 else 's'} ({summary['figures_ok']} ok, {summary['figures_failed']} "
        f"failed, {n_cached} reused from cache) in {total:.1f} s total{budget}; claims: {summary['claims_held']} "
        f"held, {summary['claims_not_held']} not held, {summary['claims_inconclusive']} inconclusive, "
        f"{summary['claims_not_tested']} not tested "
        f"-> {out / 'index.html'}",
        file=sys.stderr,
    )
    if scale is Scale.QUICK and not only:  # a changed verdict shows as a diff (issue 20); a warning, not a failure
        print(golden_report(ordered), file=sys.stderr)
    return GalleryReport(out=out, entries=ordered, total_runtime_s=total, summary=summary)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m figures.make_all", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scale",
        choices=[s.value for s in Scale],
        default=None,
        help="quick (default; 15 min on 2 cores), medium (embedded data, more compute, 2 h on 2 cores; "
        "figures without a medium setting run at quick) or full (the papers'; --data-dir, hours)",
    )
    p.add_argument("--full", action="store_true", help="run at the papers' scale: the same as --scale full")
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="run only these figures")
    p.add_argument("--data-dir", type=Path, help="directory holding the data sets full-scale figures need")
    p.add_argument("--out", type=Path, default=Path("gallery"), help="gallery directory (default: gallery/)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="figures run in parallel processes, one torch thread each (default: the free cores)",
    )
    p.add_argument("--force", action="store_true", help="recompute figures even when cached results are current")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-figure lines")
    p.add_argument("--list", action="store_true", help="print the figure names, one per line, and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: every figure rendered, 1: some failed).

    Raises:
        SystemExit: With status 2 on bad arguments (unknown figure name, ``--jobs`` < 1).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.full and args.scale not in (None, Scale.FULL.value):
        parser.error(f"--full contradicts --scale {args.scale}; give one of them")
    scale = Scale.FULL if args.full else Scale(args.scale or Scale.QUICK.value)
    if args.list:
        discover()
        specs = registered()
        for name in sorted(specs, key=lambda n: figure_sort_key(n, specs[n].paper.value)):
            print(f"{name}\t{specs[name].paper.value}\t{specs[name].title}")
        return 0
    try:
        report = make_gallery(
            args.only,
            scale=scale,
            data_dir=args.data_dir,
            out=args.out,
            jobs=args.jobs,
            force=args.force,
            progress=not args.quiet,
            verbose=not args.quiet,
        )
    except KeyError as e:
        parser.error(str(e.args[0]))
    return report.exit_code


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    sys.exit(main())
