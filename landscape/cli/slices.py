"""The slice commands: ``line`` (interpolation or absolute distance), ``plane`` (around a centre), ``pca``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.cli.loading import build_template, default_point, load_data, load_point, open_trajectory
from landscape.cli.output import Writer
from landscape.cli.parsing import CLIError, eval_kw, parse_point, parse_range, parse_resolution, parse_values, plural

__all__ = ["cmd_line", "cmd_plane", "cmd_pca"]

_NORMALIZATION = {"filter": "filter", "layer": "layer", "model": "model", "random": "none"}


def _loss_summary(r: Any) -> str:
    loss = np.asarray(r.metrics.get("loss", np.array([np.nan])), np.float64)
    fin = loss[np.isfinite(loss)]
    span = f"{fin.min():.5g} .. {fin.max():.5g}" if fin.size else "none finite"
    return f"loss {span}; {plural(r.n_nonfinite, 'non-finite point')}"


def cmd_line(args: argparse.Namespace) -> list[str]:
    """``line``: linear interpolation (or the absolute-distance line) between two points."""
    from landscape.analyze.surface import line, line_distance
    from landscape.plot.curves import plot_line

    data, shape, classes, desc = load_data(args, args.dtype)
    args.start = default_point(args, args.start, "--from POINT")
    template = build_template(args, [args.start, args.end], shape, classes)
    a, b = load_point(args.start, template), load_point(args.end, template)
    values = None if args.alphas is None else parse_values(args.alphas, "--alphas")
    label = args.label or f"{args.start} -> {args.end}"
    kw = eval_kw(args, desc)
    if args.distance:
        res = line_distance(a, a, b, data, distances=values, label=label, **kw)
    else:
        res = line(a, a, b, data, alphas=values, label=label, **kw)
    w = Writer(args)
    w.result(args.name, res)
    w.figure(args.name, lambda be: plot_line(res, accuracy="accuracy" in res.metrics, log=args.log, backend=be))
    w.report([f"{args.name}: {plural(len(res.coords), 'point')}, {_loss_summary(res)}"])
    return [str(p) for p in w.written]


def _grid_axes(args: argparse.Namespace, default: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    nx, ny = parse_resolution(args.resolution)
    lo, hi = parse_range(args.range, "--range") if args.range else default
    ylo, yhi = parse_range(args.yrange, "--yrange") if args.yrange else (lo, hi)
    return np.linspace(lo, hi, nx), np.linspace(ylo, yhi, ny)


def _center_vector(spec: str, template: nn.Module | None) -> Tensor:
    """Float64 parameters at ``spec``; a trajectory snapshot is read without building a model."""
    path, index = parse_point(spec)
    if path.is_dir():
        traj = open_trajectory(path)
        i = -1 if index is None else index
        if not -len(traj) <= i < len(traj):
            has = plural(len(traj), "snapshot")
            raise CLIError(f"{spec}: snapshot index {i} out of range; {str(path)!r} has {has}")
        return traj[i].vector.double()
    if template is None:
        raise CLIError(f"--center {spec}: a .safetensors centre needs --model (and --data)")
    from landscape.params import parameters_to_vector

    return parameters_to_vector(load_point(spec, template)).double()


def _require_trajectories(trajs: Sequence[str]) -> None:
    """Name a missing trajectory as one (parse_point's message would offer a weights file, which a PCA cannot read)."""
    for t in trajs:
        head, sep, _ = t.rpartition(":")
        if not Path(t).exists() and not (sep and Path(head).is_dir()):
            raise CLIError(f"trajectory {t!r} not found (the PCA reads trajectory directories)")


def _pca_plane(
    args: argparse.Namespace, trajs: Sequence[str], center: str | None, data: Any, desc: str, template: Any
) -> tuple[Any, Any, Any]:
    """Fit the PCA of ``trajs``, evaluate the plane around its centre and project the paths with their losses.

    The plane is ``pca.plane_directions()``, so the path's coordinates are the plane's (see
    :func:`landscape.plot.planes.plot_trajectory`). BatchNorm buffers come from ``center`` (default: the last
    snapshot of the last trajectory).

    Returns:
        ``(PlaneResult or None, ProjectedPath, TrajectoryPCA)``; the plane is ``None`` without ``data``.
    """
    from landscape.analyze.pca import TrajectoryPCA
    from landscape.analyze.surface import plane
    from landscape.evaluate.points import evaluate_points

    _require_trajectories(trajs)
    points = [parse_point(t) for t in trajs]
    for t, (_, index) in zip(trajs, points):
        if index is not None:
            raise CLIError(
                f"{t}: the PCA reads whole trajectories, not one snapshot; give the directory without :INDEX "
                "(a centre snapshot goes in --center TRAJ:INDEX)"
            )
    runs = [open_trajectory(path) for path, _ in points]
    for t, run in zip(trajs, runs):  # a grown network: the analyzer's fix (segment=k) has no option here
        if len({s.layout.numel for s in run.segments}) > 1:
            ranges = ", ".join(f"{s.index}: [{s.start}, {s.stop}) D={s.layout.numel}" for s in run.segments)
            raise CLIError(
                f"trajectory {t!r} has segments with different parameter counts ({ranges}) and the PCA needs one "
                f"parameter space; fit one segment from Python: TrajectoryPCA(2).fit(Trajectory.open({t!r}), segment=K)"
            )
    src = runs[0] if len(runs) == 1 else runs
    if args.pca_center == "point":
        pca_center: Any = _center_vector(center, template) if center is not None else "last"
    else:
        pca_center = args.pca_center
    try:
        pca = TrajectoryPCA(2, center=pca_center, progress=not args.quiet).fit(src)
    except ValueError as e:
        raise CLIError(f"cannot fit the PCA: {e}") from None
    if data is None:
        return None, pca.project(src), pca
    base = load_point(center, template) if center is not None else runs[-1].model_at(template, -1)
    kw = eval_kw(args, desc)
    engine_kw = {k: v for k, v in kw.items() if k not in ("data_description", "progress")}  # PCA shows its own bar

    def loss_at(points: Tensor) -> Tensor:
        return torch.from_numpy(evaluate_points(base, points, data, metrics=("loss",), **engine_kw)["loss"])

    path = pca.project(src, loss_at=loss_at, points_per_call=256)
    lo, hi = np.minimum(path.coordinates.min(0), 0.0), np.maximum(path.coordinates.max(0), 0.0)
    pad = 0.25 * np.maximum(hi - lo, 1e-12)  # the path and the centre, with a margin
    nx, ny = parse_resolution(args.resolution)
    xr = parse_range(args.range, "--range") if args.range else (lo[0] - pad[0], hi[0] + pad[0])
    yr = parse_range(args.yrange, "--yrange") if args.yrange else xr if args.range else (lo[1] - pad[1], hi[1] + pad[1])
    c, d1, d2 = pca.plane_directions()
    extra = {
        "directions": "pca",
        "pca_center": str(args.pca_center),
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_[:2]],
    }
    res = plane(base, c, d1, d2, data, np.linspace(xr[0], xr[1], nx), np.linspace(yr[0], yr[1], ny), extra=extra, **kw)
    return res, path, pca


def cmd_plane(args: argparse.Namespace) -> list[str]:
    """``plane``: a 2-D slice around a centre along random, normalized, PCA or model directions."""
    from landscape.analyze.surface import plane_through, random_plane
    from landscape.plot.planes import plot_contour, plot_heatmap, plot_surface, plot_trajectory

    if args.directions == "pca" and args.trajectory:
        _require_trajectories(args.trajectory)
    data, shape, classes, desc = load_data(args, args.dtype)
    kind = args.directions
    args.center = args.center or args.weights
    if args.center is None and kind != "pca" and args.trajectory:
        args.center = str(args.trajectory[0])  # its last snapshot
    points = ([args.center] if args.center else []) + list(args.models or []) + list(args.trajectory or [])
    if not points:
        raise CLIError("give --center POINT, --weights FILE or --trajectory TRAJ (or several with --directions pca)")
    template = build_template(args, points, shape, classes)
    kw = eval_kw(args, desc)
    path = None
    if kind == "pca":
        trajs = args.trajectory or ([str(parse_point(args.center)[0])] if args.center else [])
        if not trajs or not all(parse_point(t)[0].is_dir() for t in trajs):
            raise CLIError("--directions pca needs trajectories: --trajectory TRAJ [TRAJ ...]")
        res, path, _ = _pca_plane(args, trajs, args.center, data, desc, template)
    else:
        if args.center is None:
            raise CLIError(f"--directions {kind} needs --center TRAJ[:INDEX]")
        center = load_point(args.center, template)
        if kind == "models":
            if not args.models or len(args.models) != 2:
                raise CLIError("--directions models needs --models A B (two points; the centre is the third)")
            m1, m2 = (load_point(s, template) for s in args.models)
            xs, ys = _grid_axes(args, (-0.5, 1.5))
            try:
                res = plane_through(center, center, m1, m2, data, xs, ys, frame=args.frame, **kw)
            except ValueError as e:
                raise CLIError(str(e)) from None
        else:
            xs, ys = _grid_axes(args, (-1.0, 1.0))
            res = random_plane(
                center,
                data,
                xs,
                ys,
                center=center,
                seed=args.seed,
                normalization=_NORMALIZATION[kind],
                bias_bn=args.bias_bn,
                orthogonal=args.orthogonal,
                **kw,
            )
    w = Writer(args)
    w.result(args.name, res)
    style = "filled" if min(len(res.xs), len(res.ys)) >= 2 else "heatmap"  # contours need 2 x 2 points
    if path is not None:
        w.result(f"{args.name}_path", path)
        w.figure(args.name, lambda be: plot_trajectory(res, path, log=args.log, style=style, backend=be))
    elif style == "filled":
        w.figure(args.name, lambda be: plot_contour(res, filled=True, log=args.log, backend=be))
    else:
        w.figure(args.name, lambda be: plot_heatmap(res, log=args.log, backend=be))
    w.figure(f"{args.name}_surface", lambda be: plot_surface(res, log=args.log, backend=be), png=False)
    w.report([f"{args.name}: {len(res.ys)} x {len(res.xs)} grid ({kind} directions), {_loss_summary(res)}"])
    return [str(p) for p in w.written]


def cmd_pca(args: argparse.Namespace) -> list[str]:
    """``pca``: PCA of trajectories; with ``--data`` also the loss plane and the path's true losses."""
    import safetensors.torch

    from landscape.plot.planes import plot_trajectory
    from landscape.trajectory.files import write_atomic

    _require_trajectories(args.trajectories)
    data = desc = template = None
    args.center = args.center or args.weights
    if args.data is not None:
        data, shape, classes, desc = load_data(args, args.dtype)
        template = build_template(args, args.trajectories, shape, classes)
    res, path, pca = _pca_plane(args, args.trajectories, args.center, data, desc or "", template)
    w = Writer(args)
    w.result(f"{args.name}_path", path)
    if res is not None:
        w.result(f"{args.name}_plane", res)
    if w.rank == 0:
        f = w.out / f"{args.name}_directions.safetensors"
        blob = safetensors.torch.save(
            {"center": pca.mean_.contiguous(), "components": pca.components_.contiguous()},
            metadata={"explained_variance_ratio": json.dumps([float(v) for v in pca.explained_variance_ratio_])},
        )
        w.note(f)
        w.write(f, lambda: write_atomic(f, blob))  # (safetensors' save_file would raise its own error type)
        w.written.append(f)
    # as plane draws it: contours need a grid of 2 x 2 points (a narrower one failed after the plane's evaluation)
    style = "filled" if res is None or min(len(res.xs), len(res.ys)) >= 2 else "heatmap"
    w.figure(args.name, lambda be: plot_trajectory(res, path, log=args.log, style=style, backend=be))
    evr = ", ".join(f"{100 * v:.2f}%" for v in pca.explained_variance_ratio_)
    w.report(
        [
            f"{args.name}: {plural(pca.n_samples_, 'snapshot')}; explained variance {evr}; "
            f"median off-plane share {100 * path.median_off_plane_ratio:.1f}%"
        ]
    )
    return [str(p) for p in w.written]
