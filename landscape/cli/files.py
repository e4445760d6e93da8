"""The commands on saved files: ``plot`` (re-render results) and ``check`` (verify a trajectory store)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from landscape.cli.output import Writer
from landscape.cli.parsing import CLIError

__all__ = ["cmd_plot", "cmd_check"]


def _check_overlay(plane: Any, path: Any, plane_name: str, path_name: str) -> None:
    """Refuse a plane that is not the PCA plane ``path`` was projected on: its coordinates would mean nothing there.

    The path's ``(x, y)`` are coordinates along its PCA's two orthonormal directions, so the plane must be spanned by
    them: a plane of random, normalized or model directions is refused by its recorded kind, a PCA plane of another
    fit by its explained variance ratios, and any other plane whose two directions are not orthonormal.

    Raises:
        CLIError: Naming both files and which plane to use instead.
    """
    fix = (
        "overlay it on the plane computed with it: `landscape pca TRAJ... --data ...` writes pca_plane.npz beside "
        "pca_path.npz, `landscape plane --directions pca` writes plane.npz beside plane_path.npz"
    )
    from landscape.plot.planes import overlay_mismatch

    why = overlay_mismatch(plane, path)
    if why is not None:
        raise CLIError(
            f"--path {path_name} holds coordinates in its PCA plane, but {plane_name} cannot be that plane ({why}): "
            f"the path would be drawn at meaningless positions; {fix}"
        )


def cmd_plot(args: argparse.Namespace) -> list[str]:
    """``plot``: re-render saved results (several line, distance or Hessian spectrum results are overlaid)."""
    from landscape import plot as P
    from landscape.analyze.distance import DistanceResult
    from landscape.analyze.paths import ProjectedPath
    from landscape.analyze.slice_results import BarycentricResult, BilinearResult, LineResult, PlaneResult
    from landscape.curvature.spectrum import HessianSpectrum
    from landscape.results import load_result

    for name in [*args.results, *([args.path] if args.path else [])]:  # the common slips, said plainly
        if not Path(name).exists():
            raise CLIError(f"{name}: no such file (plot reads the .npz results that the other commands write)")
        if Path(name).is_dir():
            raise CLIError(
                f"{name} is a directory: plot reads the .npz results that the other commands write; to draw a "
                f"trajectory's path, run `landscape pca {name} --data ... --out ...`"
            )
    try:
        results: list[Any] = [load_result(p) for p in args.results]  # dispatched on their type below
        path = load_result(args.path) if args.path else None
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    if path is not None and not isinstance(path, ProjectedPath):
        raise CLIError(f"--path {args.path} holds a {type(path).__name__}, not a ProjectedPath")
    if path is not None and not all(isinstance(r, PlaneResult) for r in results):
        got = sorted({type(r).__name__ for r in results})
        raise CLIError(f"--path overlays a trajectory on a plane; the results are {got}: drop --path or plot a plane")
    if path is not None:
        for name, r in zip(args.results, results):
            _check_overlay(r, path, name, args.path)
    kinds = {type(r) for r in results}
    if len(kinds) > 1:
        raise CLIError(
            f"cannot draw different result types in one figure: {sorted(k.__name__ for k in kinds)}; run plot "
            "once per type (several line, distance or Hessian spectrum results of one type are overlaid)"
        )
    kind, first = kinds.pop(), results[0]
    if len(results) > 1 and kind not in (LineResult, DistanceResult, HessianSpectrum):
        raise CLIError(
            f"only line, distance and Hessian spectrum results can be overlaid, got {len(results)} {kind.__name__}s"
        )
    log, style = args.log, args.style
    if kind in (PlaneResult, BilinearResult):  # as the plane command draws it; contours need 2 x 2 points
        shape = next(iter(first.metrics.values())).shape
        if style is None:
            style = "filled" if min(shape) >= 2 else "heatmap"
        elif style != "heatmap" and min(shape) < 2:
            raise CLIError(
                f"--style {style}: contours need a grid of at least 2 x 2 points, {args.results[0]} has "
                f"{shape[0]} x {shape[1]}; use --style heatmap"
            )
    draws: dict[str, Callable[[str], Any]] = {}
    if kind is LineResult:
        draws[args.name] = lambda be: P.plot_line(
            results, accuracy=all("accuracy" in r.metrics for r in results), log=log, backend=be
        )
    elif kind is DistanceResult:
        draws[args.name] = lambda be: P.plot_distance(results, log=log, backend=be)
    elif kind is PlaneResult and path is not None:
        draws[args.name] = lambda be: P.plot_trajectory(first, path, log=log, style=style, backend=be)
    elif kind in (PlaneResult, BilinearResult):
        if style == "heatmap":
            draws[args.name] = lambda be: P.plot_heatmap(first, log=log, backend=be)
        else:
            draws[args.name] = lambda be: P.plot_contour(first, filled=style == "filled", log=log, backend=be)
        draws[f"{args.name}_surface"] = lambda be: P.plot_surface(first, log=log, backend=be)
    elif kind is HessianSpectrum:  # the density on a log axis, as the hessian command draws it (--log is moot)
        draws[args.name] = lambda be: P.plot_spectrum_density(results, labels=list(args.results), backend=be)
    elif kind is BarycentricResult:
        draws[args.name] = lambda be: P.plot_barycentric(first, log=log, backend=be)
    elif kind is ProjectedPath:
        draws[args.name] = lambda be: P.plot_trajectory(None, first, log=log, backend=be)
    else:
        raise CLIError(f"no renderer for a {kind.__name__}")
    w = Writer(args)
    for stem, draw in draws.items():
        w.figure(stem, draw)
    w.report()
    return [str(p) for p in w.written]


def cmd_check(args: argparse.Namespace) -> int:
    """Verify a trajectory store, print the report; 0 if intact (or repaired, migrated), 1 if damaged."""
    from landscape.trajectory.fileformat import TrajectoryError
    from landscape.trajectory.store import Trajectory

    try:
        rep = Trajectory.check(args.trajectory, repair=args.repair, migrate=args.migrate)
    except FileNotFoundError:
        raise CLIError(f"trajectory {args.trajectory!r} not found") from None
    except TrajectoryError as e:
        raise CLIError(f"cannot check {args.trajectory!r}: {e}") from None
    print(rep)
    return 0 if rep.ok or rep.repaired else 1  # a migrated store checks ok; --migrate mends no damage
