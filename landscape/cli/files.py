"""The commands on saved files: ``plot`` (re-render results) and ``check`` (verify a trajectory store)."""

from __future__ import annotations

import argparse
import math
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


# What plot draws, by result type: (the overlay rule, the renderer's name). A line and a barrier are both curves over
# alpha (plot_line draws either), so they overlay each other; every other type overlays only its own kind.
_DRAWN = {
    "LineResult": ("lines", "plot_line"),
    "BarrierResult": ("lines", "plot_line"),
    "DistanceResult": ("several", "plot_distance"),
    "HessianSpectrum": ("several", "plot_spectrum_density"),
    "CurvatureTrace": ("several", "plot_sharpness"),
    "CurveResult": ("several", "plot_curve_vs_line"),
    "SaturationHistory": ("several", "plot_saturation_curves"),
    "SharpnessResult": ("several", "plot_sharpness_values"),
    "FunctionalDistance": ("several", "plot_functional_distance"),
    "PlaneResult": ("one", "plot_contour / plot_heatmap and plot_surface"),
    "BilinearResult": ("one", "plot_contour / plot_heatmap and plot_surface"),
    "BarycentricResult": ("one", "plot_barycentric"),
    "ProjectedPath": ("one", "plot_trajectory"),
}
# Saved results plot does not draw, and what to do instead.
_REFUSED = {
    "ModeCurve": "it holds a curve's control points, not values along it: evaluate it (landscape.analyze.curves."
    "curve_metrics) and plot the CurveResult",
    "AlignmentResult": "it holds a permutation, not values over a coordinate: apply it and plot a line between the "
    "aligned networks",
    "SaturationStats": "it is one layer's statistics at one point: record them over training (SaturationRecorder) and "
    "plot the SaturationHistory, or draw its histogram yourself (counts, edges)",
}


def _refuse_kind(name: str, kind: str) -> CLIError:
    """The error for a result type plot does not draw, naming the file and the types it draws."""
    why = _REFUSED.get(kind, "no renderer draws it")
    return CLIError(f"{name} holds a {kind}, which plot cannot draw ({why}); plot draws {', '.join(_DRAWN)}")


def cmd_plot(args: argparse.Namespace) -> list[str]:
    """``plot``: re-render saved results (several results of a kind that overlays are drawn in one figure)."""
    from landscape.analyze.paths import ProjectedPath
    from landscape.analyze.slice_results import BilinearResult, PlaneResult
    from landscape.results import load_result

    if args.no_html and args.no_png:  # (the other commands still write their .npz; plot writes only figures)
        raise CLIError("--no-html and --no-png: plot writes only the figures, so nothing would be written; drop one")
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
    for name, r in zip(args.results, results):
        if type(r).__name__ not in _DRAWN:
            raise _refuse_kind(name, type(r).__name__)
    if path is not None and not isinstance(path, ProjectedPath):
        raise CLIError(f"--path {args.path} holds a {type(path).__name__}, not a ProjectedPath")
    if path is not None and not all(isinstance(r, PlaneResult) for r in results):
        got = sorted({type(r).__name__ for r in results})
        raise CLIError(f"--path overlays a trajectory on a plane; the results are {got}: drop --path or plot a plane")
    if path is not None:
        for name, r in zip(args.results, results):
            _check_overlay(r, path, name, args.path)
    names = sorted({type(r).__name__ for r in results})
    overlay = {_DRAWN[n][0] for n in names}
    if len(names) > 1 and overlay != {"lines"}:
        raise CLIError(
            f"cannot draw different result types in one figure: {names}; run plot once per type (several results "
            "of one type are overlaid, and line results with barriers)"
        )
    kind, first = type(results[0]), results[0]
    if len(results) > 1 and overlay == {"one"}:
        overlaid = ", ".join(n for n, (how, _) in _DRAWN.items() if how != "one")
        raise CLIError(f"only {overlaid} results can be overlaid, got {len(results)} {kind.__name__}s")
    style = args.style
    if style is not None and kind not in (PlaneResult, BilinearResult):  # it would be ignored without a word
        raise CLIError(
            f"--style {style} is for planes (PlaneResult, BilinearResult); {args.results[0]} holds a "
            f"{kind.__name__}: drop --style"
        )
    if kind in (PlaneResult, BilinearResult):  # as the plane command draws it; contours need 2 x 2 points
        shape = next(iter(first.metrics.values())).shape
        if style is None:
            style = "filled" if min(shape) >= 2 else "heatmap"
        elif style != "heatmap" and min(shape) < 2:
            raise CLIError(
                f"--style {style}: contours need a grid of at least 2 x 2 points, {args.results[0]} has "
                f"{shape[0]} x {shape[1]}; use --style heatmap"
            )
    draws = _draws(args, results, path, style)
    w = Writer(args)
    for stem, draw in draws.items():
        w.figure(stem, draw)
    w.report(_summary(args, results))
    return [str(p) for p in w.written]


def _draws(
    args: argparse.Namespace, results: list[Any], path: Any, style: str | None
) -> dict[str, Callable[[str], Any]]:
    """The figures of ``results`` (all of a kind :data:`_DRAWN` lists): file stem -> ``backend -> figure``."""
    from landscape import plot as P
    from landscape.plot.saturation import plot_saturation_curves

    kind, first, log, files = type(results[0]).__name__, results[0], args.log, list(args.results)
    draws: dict[str, Callable[[str], Any]] = {}
    if kind in ("LineResult", "BarrierResult"):
        acc = all("accuracy" in r.metrics for r in results)
        draws[args.name] = lambda be: P.plot_line(results, accuracy=acc, log=log, backend=be)
    elif kind == "DistanceResult":
        draws[args.name] = lambda be: P.plot_distance(results, log=log, backend=be)
    elif kind == "PlaneResult" and path is not None:
        draws[args.name] = lambda be: P.plot_trajectory(first, path, log=log, style=style or "filled", backend=be)
    elif kind in ("PlaneResult", "BilinearResult"):
        if style == "heatmap":
            draws[args.name] = lambda be: P.plot_heatmap(first, log=log, backend=be)
        else:
            draws[args.name] = lambda be: P.plot_contour(first, filled=style == "filled", log=log, backend=be)
        draws[f"{args.name}_surface"] = lambda be: P.plot_surface(first, log=log, backend=be)
    elif kind == "HessianSpectrum":  # the density on a log axis, as the hessian command draws it (--log is moot)
        draws[args.name] = lambda be: P.plot_spectrum_density(results, labels=files, backend=be)
    elif kind == "BarycentricResult":
        draws[args.name] = lambda be: P.plot_barycentric(first, log=log, backend=be)
    elif kind == "ProjectedPath":
        draws[args.name] = lambda be: P.plot_trajectory(None, first, log=log, backend=be)
    elif kind == "CurvatureTrace":
        draws[args.name] = lambda be: P.plot_sharpness(results, log=log, backend=be)
    elif kind == "CurveResult":
        draws[args.name] = lambda be: P.plot_curve_vs_line(None, results, backend=be)
    elif kind == "SaturationHistory":
        draws[args.name] = lambda be: plot_saturation_curves(results, backend=be)
    elif kind == "SharpnessResult":  # the files name the measurements (the measure is in the legend)
        draws[args.name] = lambda be: P.plot_sharpness_values(results, labels=files, log=log, backend=be)
    elif kind == "FunctionalDistance":
        draws[args.name] = lambda be: P.plot_functional_distance(results, labels=files, log=log, backend=be)
    else:  # (a type in _DRAWN without a drawing here: a bug, caught by the tests)
        raise CLIError(f"no renderer for a {kind}")
    return draws


def _summary(args: argparse.Namespace, results: list[Any]) -> list[str]:
    """One line per measurement the figure shows as a number (barriers, sharpness, distances); else none."""
    from landscape.plot.measures import sharpness_label

    out = []
    for name, r in zip(args.results, results):
        kind = type(r).__name__
        if kind == "BarrierResult":
            out.append(
                f"{name}: loss barrier {r.loss_barrier:.5g} at alpha {r.peak_alpha:g} (mean definition "
                f"{r.loss_barrier_mean:.5g})"
                + (f", accuracy barrier {r.accuracy_barrier:.4g}" if not math.isnan(r.accuracy_barrier) else "")
            )
        elif kind == "SharpnessResult":
            out.append(f"{name}: {sharpness_label(r)}: {r.value:.5g} (stderr {r.stderr:.2g}, {len(r.values)} values)")
        elif kind == "FunctionalDistance":
            out.append(
                f"{name}: RMS {r.output} distance {r.rms:.5g}, label disagreement {r.disagreement:.4g} over "
                f"{r.n_samples} samples"
            )
    return out


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
