r"""Command line: ``landscape {line,plane,pca,hessian,distance,plot,check} ...`` (also ``python -m landscape``).

Compute a slice, a Hessian spectrum or a functional distance from saved trajectories or weights, and
write the result (``.npz``, loadable with :func:`landscape.results.load_result`), an HTML page and a PNG::

    landscape plane --model my_project.nets:make --model-kw '{"width": 8}' --weights w.safetensors \
        --data digits --out out/
    landscape plane --trajectory runs/a --data digits --out out/      # the model recorded in runs/a
    landscape line  --model mlp --model-kw hidden=[32] --data digits \
        --from runs/a:0 --to runs/a:-1 --alphas -0.5:1.5:41 --out out/
    landscape plane --model lenet5 --data mnist-subset --center runs/a:-1 \
        --directions filter --range -1:1 --resolution 41 --out out/
    landscape plane --data digits --directions pca --trajectory runs/a runs/b --out out/
    landscape hessian --trajectory runs/a --data digits --top-k 5 --out out/
    landscape distance --from runs/a:0 --to runs/b --data digits --out out/
    landscape pca runs/a runs/b --out out/ [--data digits --model mlp]
    landscape plot out/plane.npz --path out/plane_path.npz --out out/
    landscape check runs/a [--repair | --migrate]

A point is ``TRAJ[:INDEX]`` (a trajectory directory and a snapshot index, default the last; negative
counts from the end) or a weights file: ``.safetensors`` (a state dict or a snapshot: ``vector`` plus
``buffers/...``) or a torch state dict (``.pt``/``.pth``/``.bin``/``.ckpt``, read with
``torch.load(weights_only=True)``); nothing is unpickled. The model is ``--model``: a name in
:data:`landscape.models.zoo.MODELS` or ``package.module:factory`` (any importable function or class, called
with ``--model-kw``); without ``--model``, the factory recorded in the first trajectory's metadata
(``"model_factory"``, written by ``Trainer(..., factory=...)``; see :mod:`landscape.factory`), else its
``model``/``model_kw`` entries.

HTML pages share one ``plotly.min.js`` written beside them (offline, ~4.7 MB once per folder);
``--cdn`` loads plotly.js from its CDN instead (smaller pages, but viewing them needs a network).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the command joins a gloo process group;
the evaluation engine then shards the points over the processes and gathers them on every rank, and
only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CLIError", "main", "build_parser", "parse_values", "parse_point"]

DATA_NAMES = ("digits", "mnist-subset")
DIRECTIONS = ("filter", "layer", "model", "random", "pca", "models")
_NORMALIZATION = {"filter": "filter", "layer": "layer", "model": "model", "random": "none"}


class CLIError(Exception):
    """A user error of the command line: printed as ``landscape: error: ...`` with exit status 2."""


# =========================================================================== parsing helpers
def parse_values(spec: str, what: str) -> np.ndarray:
    """Parse ``"a:b:n"`` (``linspace(a, b, n)``), ``"a:b"`` (21 points) or ``"x,y,z"`` into a float array.

    Raises:
        CLIError: On anything else.
    """
    try:
        if ":" in spec:
            parts = [p for p in spec.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            n = int(parts[2]) if len(parts) == 3 else 21
            if n < 1:
                raise ValueError
            return np.linspace(float(parts[0]), float(parts[1]), n)
        vals = np.array([float(v) for v in spec.split(",") if v.strip()], dtype=np.float64)
        if not vals.size:
            raise ValueError
        return vals
    except ValueError:
        raise CLIError(f"{what} {spec!r}: use START:STOP:COUNT (e.g. -0.5:1.5:41) or a list like 0,0.5,1") from None


def _resolution(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", spec)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise CLIError(f"--resolution {spec!r}: use N (square) or NXxNY, e.g. 41 or 41x31")
    nx = int(m.group(1))
    return nx, int(m.group(2) or nx)


def _range(spec: str, what: str) -> tuple[float, float]:
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*", spec)
    try:
        lo, hi = float(m.group(1)), float(m.group(2))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise CLIError(f"{what} {spec!r}: use START:STOP, e.g. -1:1") from None
    if not hi > lo:
        raise CLIError(f"{what} {spec!r}: STOP must exceed START")
    return lo, hi


def _model_kw(items: Sequence[str]) -> dict[str, Any]:
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


# =========================================================================== loading
def _open_trajectory(path: Path) -> Any:
    from landscape.trajectory.store import Trajectory, TrajectoryError

    try:
        traj = Trajectory.open(path, "r")
    except FileNotFoundError:
        raise CLIError(f"trajectory {str(path)!r} not found") from None
    except TrajectoryError as e:
        raise CLIError(f"cannot read trajectory {str(path)!r}: {e}") from None
    if len(traj) == 0:
        raise CLIError(f"trajectory {str(path)!r} holds no snapshot")
    return traj


def load_point(spec: str, template: nn.Module) -> nn.Module:
    """A new model at point ``spec`` (trajectory snapshot or weights file), built from ``template``.

    Raises:
        CLIError: On a missing file, a bad index, an unsafe or unreadable file, or an architecture mismatch.
    """
    from landscape.factory import FactoryError, load_state_dict, load_weights

    path, index = parse_point(spec)
    if path.is_dir():
        traj = _open_trajectory(path)
        i = -1 if index is None else index
        if not -len(traj) <= i < len(traj):
            raise CLIError(
                f"{spec}: snapshot index {i} out of range; {str(path)!r} has {len(traj)} snapshots "
                f"(0..{len(traj) - 1}, or negative from the end)"
            )
        from landscape.trajectory.store import CorruptTrajectoryError

        try:
            return traj.model_at(template, i)
        except CorruptTrajectoryError as e:  # a damaged file is not an architecture mismatch
            raise CLIError(f"{spec}: the trajectory is damaged: {e}; see landscape check {str(path)!r}") from None
        except ValueError as e:
            raise CLIError(f"architecture mismatch for {spec}: {e}; check --model and --model-kw") from None
    if index is not None:
        raise CLIError(f"{spec}: an index only applies to a trajectory directory")
    try:
        tensors = load_state_dict(path)
    except FactoryError as e:
        raise CLIError(str(e)) from None
    if "vector" in tensors:  # a trajectory snapshot file
        from landscape.params import ParamLayout

        model = copy.deepcopy(template)
        layout = ParamLayout.from_model(model)
        vec = tensors["vector"]
        if vec.shape != (layout.numel,):
            raise CLIError(
                f"architecture mismatch for {spec}: the snapshot holds {vec.numel()} parameters, the model "
                f"has {layout.numel}; check --model and --model-kw"
            )
        state = {**layout.unflatten(vec), **{k[8:]: v for k, v in tensors.items() if k.startswith("buffers/")}}
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise CLIError(f"architecture mismatch for {spec}: {e}; check --model and --model-kw") from None
        return model
    try:
        return load_weights(template, tensors, what=f"for {spec}")
    except FactoryError as e:
        raise CLIError(f"architecture mismatch: {e}") from None


def load_data(args: argparse.Namespace, dtype: torch.dtype) -> tuple[tuple[Tensor, Tensor], tuple[int, ...], int, str]:
    """``((X, y), input_shape, num_classes, description)`` for ``--data``, ``--split`` and ``--limit``.

    Raises:
        CLIError: On an unknown name, a missing directory or a missing split.
    """
    from landscape import data as D

    spec = args.data
    kind, _, where = spec.partition(":")
    try:
        if spec == "digits":
            splits = D.load_digits_split(dtype=dtype)
        elif spec == "mnist-subset":
            splits = D.load_mnist_subset(dtype=dtype)
        elif kind == "cifar10" and where:
            splits = D.load_cifar10(where, dtype=dtype)
        elif kind == "mnist" and where:
            splits = D.load_mnist_idx(where, dtype=dtype)
        elif Path(spec).is_dir():
            try:
                splits = D.load_cifar10(spec, dtype=dtype)
            except FileNotFoundError as cifar:
                try:
                    splits = D.load_mnist_idx(spec, dtype=dtype)
                except FileNotFoundError as mnist:
                    raise CLIError(f"--data {spec!r} holds neither data set. {cifar} {mnist}") from None
        else:
            raise CLIError(
                f"--data {spec!r}: use {', '.join(DATA_NAMES)}, cifar10:DIR, mnist:DIR or a directory holding "
                "CIFAR-10 batches or MNIST IDX files"
            )
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    pair = getattr(splits, args.split)
    if pair is None:
        raise CLIError(f"--data {spec!r} has no {args.split!r} split; use --split train")
    X, y = pair
    if args.limit is not None:
        X, y = X[: args.limit], y[: args.limit]
    desc = f"{splits.description}; {args.split} split" + (f", first {len(y)}" if args.limit is not None else "")
    return (X, y), tuple(splits.input_shape), int(splits.num_classes), desc


def _first_meta(specs: Sequence[str]) -> tuple[dict[str, Any], str] | None:
    """Run metadata of the first trajectory among ``specs``, and its path."""
    for s in specs:
        path, _ = parse_point(s)
        if path.is_dir():
            return _open_trajectory(path).meta, str(path)
    return None


def build_template(args: argparse.Namespace, points: Sequence[str], shape: tuple[int, ...], classes: int) -> nn.Module:
    """The architecture: ``--model``/``--model-kw``, or the first trajectory's recorded factory or model.

    ``--model`` is a zoo name (:data:`landscape.models.zoo.MODELS`) or ``package.module:factory``; a factory
    recorded in a trajectory is held to :func:`landscape.factory.resolve`'s rules for untrusted references.

    Raises:
        CLIError: If no model is named anywhere, or the factory or builder rejects the options.
    """
    from landscape.factory import FactoryError, FactoryRef, factory_from_meta
    from landscape.models.zoo import build_model

    name, kw = args.model, _model_kw(args.model_kw)
    ref, trusted = None, True
    if name is not None and ":" in name:
        try:
            ref = FactoryRef(name, kw)
        except FactoryError as e:
            raise CLIError(str(e)) from None
    elif name is None:
        found = _first_meta(points)
        meta, where = found if found else ({}, "")
        try:
            ref = factory_from_meta(meta)
        except FactoryError as e:
            raise CLIError(f"{where}: {e}") from None
        if ref is not None:
            ref, trusted = FactoryRef(ref.target, {**ref.kwargs, **kw}), False
            if not args.quiet and _rank() == 0:
                print(f"model: {ref} (recorded in {where})", file=sys.stderr)
        else:
            name, kw = meta.get("model"), {**dict(meta.get("model_kw", {})), **kw}
    if ref is not None:
        try:
            return ref.build(trusted=trusted, dtype=args.dtype)
        except FactoryError as e:
            raise CLIError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the user's factory failed: say which, without a traceback
            raise CLIError(f"building the model {ref} failed: {type(e).__name__}: {e}") from None
    if name is None:
        raise CLIError(
            "--model is required (the trajectory's metadata names no model): a zoo name such as mlp, or "
            "package.module:factory"
        )
    try:
        return build_model(name, shape, classes, seed=0, dtype=args.dtype, **kw)
    except KeyError as e:
        raise CLIError(f"{e.args[0]}; or give package.module:factory for a model of your own") from None
    except (TypeError, ValueError) as e:
        raise CLIError(f"cannot build model {name!r} with {kw}: {e}") from None


def _default_point(args: argparse.Namespace, given: str | None, what: str) -> str:
    """``given``, else ``--weights``, else the last snapshot of the first ``--trajectory``."""
    if given:
        return given
    if getattr(args, "weights", None):
        return str(args.weights)
    trajs = getattr(args, "trajectory", None) or []
    if trajs:
        return str(trajs[0])
    raise CLIError(f"give {what}, --weights FILE or --trajectory TRAJ (its last snapshot)")


# =========================================================================== distributed and output
def _rank() -> int:
    d = torch.distributed
    return d.get_rank() if d.is_available() and d.is_initialized() else 0


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """Join a gloo group when launched by torchrun (``WORLD_SIZE`` > 1) and leave it afterwards."""
    d = torch.distributed
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and d.is_available() and not d.is_initialized():
        d.init_process_group("gloo")
        started = True
    try:
        yield
        if started:  # leave together: gloo torn down under a rank still working aborts it (SIGABRT)
            d.barrier()
    finally:
        if started:
            d.destroy_process_group()


class _Writer:
    """Writes results and figures on rank 0 only, and reports what it wrote."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.out = Path(args.out)
        self.html, self.png, self.quiet = not args.no_html, not args.no_png, args.quiet
        self.plotlyjs = "cdn" if args.cdn else "directory"  # one plotly.min.js per output folder
        self.rank = _rank()
        self.written: list[Path] = []
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)

    def result(self, stem: str, result: Any) -> None:
        if self.rank == 0:
            self.written.append(result.save(self.out / f"{stem}.npz"))

    def figure(self, stem: str, draw: Callable[[str], Any], html: bool = True, png: bool = True) -> None:
        if self.rank != 0:
            return
        from landscape.plot.files import save_html, save_png

        if self.html and html:
            self.written.append(save_html(draw("plotly"), self.out / f"{stem}.html", plotlyjs=self.plotlyjs))
        if self.png and png:
            self.written.append(save_png(draw("matplotlib"), self.out / f"{stem}.png"))

    def report(self, lines: Sequence[str] = ()) -> None:
        if self.rank == 0 and not self.quiet:
            for line in lines:
                print(line)
            for p in self.written:
                print(f"wrote {p}")


def _eval_kw(args: argparse.Namespace, desc: str) -> dict[str, Any]:
    kw: dict[str, Any] = {"data_description": desc, "bn_mode": args.bn_mode, "progress": not args.quiet}
    if args.batch_size is not None:
        kw["batch_size"] = args.batch_size
    if args.memory_budget is not None:
        kw["memory_budget"] = args.memory_budget
    return kw


def _loss_range(r: Any) -> str:
    loss = np.asarray(r.metrics.get("loss", np.array([np.nan])), np.float64)
    fin = loss[np.isfinite(loss)]
    span = f"{fin.min():.5g} .. {fin.max():.5g}" if fin.size else "none finite"
    return f"loss {span}; {r.n_nonfinite} non-finite point(s)"


# =========================================================================== commands
def cmd_line(args: argparse.Namespace) -> list[str]:
    """``line``: linear interpolation (or the absolute-distance line) between two points."""
    from landscape.analyze.surface import line, line_distance
    from landscape.plot.curves import plot_line

    data, shape, classes, desc = load_data(args, args.dtype)
    args.start = _default_point(args, args.start, "--from POINT")
    template = build_template(args, [args.start, args.end], shape, classes)
    a, b = load_point(args.start, template), load_point(args.end, template)
    values = None if args.alphas is None else parse_values(args.alphas, "--alphas")
    label = args.label or f"{args.start} -> {args.end}"
    kw = _eval_kw(args, desc)
    if args.distance:
        res = line_distance(a, a, b, data, distances=values, label=label, **kw)
    else:
        res = line(a, a, b, data, alphas=values, label=label, **kw)
    w = _Writer(args)
    w.result(args.name, res)
    w.figure(args.name, lambda be: plot_line(res, accuracy="accuracy" in res.metrics, log=args.log, backend=be))
    w.report([f"{args.name}: {len(res.coords)} points, {_loss_range(res)}"])
    return [str(p) for p in w.written]


def _grid_axes(args: argparse.Namespace, default: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    nx, ny = _resolution(args.resolution)
    lo, hi = _range(args.range, "--range") if args.range else default
    ylo, yhi = _range(args.yrange, "--yrange") if args.yrange else (lo, hi)
    return np.linspace(lo, hi, nx), np.linspace(ylo, yhi, ny)


def _center_vector(spec: str, template: nn.Module | None) -> Tensor:
    """Float64 parameters at ``spec``; a trajectory snapshot is read without building a model."""
    path, index = parse_point(spec)
    if path.is_dir():
        traj = _open_trajectory(path)
        i = -1 if index is None else index
        if not -len(traj) <= i < len(traj):
            raise CLIError(f"{spec}: snapshot index {i} out of range; {str(path)!r} has {len(traj)} snapshots")
        return traj[i].vector.double()
    if template is None:
        raise CLIError(f"--center {spec}: a .safetensors centre needs --model (and --data)")
    from landscape.params import parameters_to_vector

    return parameters_to_vector(load_point(spec, template)).double()


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

    runs = [_open_trajectory(parse_point(t)[0]) for t in trajs]
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
    kw = _eval_kw(args, desc)
    engine_kw = {k: v for k, v in kw.items() if k not in ("data_description", "progress")}  # PCA shows its own bar

    def loss_at(points: Tensor) -> Tensor:
        return torch.from_numpy(evaluate_points(base, points, data, metrics=("loss",), **engine_kw)["loss"])

    path = pca.project(src, loss_at=loss_at, points_per_call=256)
    lo, hi = np.minimum(path.coordinates.min(0), 0.0), np.maximum(path.coordinates.max(0), 0.0)
    pad = 0.25 * np.maximum(hi - lo, 1e-12)  # the path and the centre, with a margin
    nx, ny = _resolution(args.resolution)
    xr = _range(args.range, "--range") if args.range else (lo[0] - pad[0], hi[0] + pad[0])
    yr = _range(args.yrange, "--yrange") if args.yrange else xr if args.range else (lo[1] - pad[1], hi[1] + pad[1])
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

    data, shape, classes, desc = load_data(args, args.dtype)
    kind = args.directions
    args.center = args.center or args.weights
    if args.center is None and kind != "pca" and args.trajectory:
        args.center = str(args.trajectory[0])  # its last snapshot
    points = ([args.center] if args.center else []) + list(args.models or []) + list(args.trajectory or [])
    if not points:
        raise CLIError("give --center POINT, --weights FILE or --trajectory TRAJ (or several with --directions pca)")
    template = build_template(args, points, shape, classes)
    kw = _eval_kw(args, desc)
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
    w = _Writer(args)
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
    w.report([f"{args.name}: {len(res.ys)} x {len(res.xs)} grid ({kind} directions), {_loss_range(res)}"])
    return [str(p) for p in w.written]


def cmd_pca(args: argparse.Namespace) -> list[str]:
    """``pca``: PCA of trajectories; with ``--data`` also the loss plane and the path's true losses."""
    import safetensors.torch

    from landscape.plot.planes import plot_trajectory

    data = desc = template = None
    args.center = args.center or args.weights
    if args.data is not None:
        data, shape, classes, desc = load_data(args, args.dtype)
        template = build_template(args, args.trajectories, shape, classes)
    res, path, pca = _pca_plane(args, args.trajectories, args.center, data, desc or "", template)
    w = _Writer(args)
    w.result(f"{args.name}_path", path)
    if res is not None:
        w.result(f"{args.name}_plane", res)
    if w.rank == 0:
        f = w.out / f"{args.name}_directions.safetensors"
        safetensors.torch.save_file(
            {"center": pca.mean_.contiguous(), "components": pca.components_.contiguous()},
            str(f),
            metadata={"explained_variance_ratio": json.dumps([float(v) for v in pca.explained_variance_ratio_])},
        )
        w.written.append(f)
    w.figure(args.name, lambda be: plot_trajectory(res, path, log=args.log, backend=be))
    evr = ", ".join(f"{100 * v:.2f}%" for v in pca.explained_variance_ratio_)
    w.report(
        [
            f"{args.name}: {pca.n_samples_} snapshots; explained variance {evr}; "
            f"median off-plane share {100 * path.median_off_plane_ratio:.1f}%"
        ]
    )
    return [str(p) for p in w.written]


def cmd_hessian(args: argparse.Namespace) -> list[str]:
    """``hessian``: eigenvalue density (SLQ), top eigenvalues and traces of the loss Hessian at one point."""
    from landscape.curvature.hessian import hessian_spectrum
    from landscape.evaluate.points import parse_bytes
    from landscape.plot.hessian import plot_spectrum_density

    if args.bn_mode not in ("eval", "train"):
        raise CLIError(f"--bn-mode {args.bn_mode}: the Hessian is of one model; use eval or train")
    data, shape, classes, desc = load_data(args, args.dtype)
    at = _default_point(args, args.at, "--at POINT")
    model = load_point(at, build_template(args, [at, *(args.trajectory or [])], shape, classes))
    options: dict[str, Any] = {}
    if args.batch_size is not None:
        options["micro_batch_size"] = args.batch_size
    if args.memory_budget is not None:
        try:
            options["memory_budget"] = parse_bytes(args.memory_budget)
        except ValueError as e:
            raise CLIError(f"--memory-budget: {e}") from None
    res = hessian_spectrum(
        model,
        nn.functional.cross_entropy,
        data,
        bn_mode=args.bn_mode,
        n_probes=args.probes,
        steps=args.lanczos_steps,
        top_k=args.top_k,
        trace_products=args.trace_products,
        seed=args.seed,
        data_description=f"{desc}; at {at}",
        progress=not args.quiet,
        **options,
    )
    w = _Writer(args)
    w.result(args.name, res)
    w.figure(args.name, lambda be: plot_spectrum_density(res, labels=[at], log=not args.linear, backend=be))
    top = ", ".join(f"{v:.5g}" for v in res.top_eigenvalues)
    traces = ", ".join(f"{k} {v:.5g}" for k, v in res.trace.items())
    w.report(
        [
            f"{args.name}: {res.n_params} parameters, {res.n_samples} samples; top eigenvalues [{top}]; "
            f"trace {traces}; {res.hvp_count} Hessian-vector products"
        ]
    )
    return [str(p) for p in w.written]


def cmd_distance(args: argparse.Namespace) -> list[str]:
    """``distance``: functional distance and label disagreement from ``--from`` along the line to ``--to``."""
    from landscape.analyze.distance import distance_along_path
    from landscape.plot.curves import plot_distance

    data, shape, classes, desc = load_data(args, args.dtype)
    start = _default_point(args, args.start, "--from POINT")
    template = build_template(args, [start, args.end], shape, classes)
    a, b = load_point(start, template), load_point(args.end, template)
    alphas = None if args.alphas is None else parse_values(args.alphas, "--alphas")
    res = distance_along_path(
        a,
        a,
        b,
        data,
        alphas=alphas,
        output=args.output,
        label=args.label or f"{start} -> {args.end}",
        **_eval_kw(args, desc),
    )
    w = _Writer(args)
    w.result(args.name, res)
    w.figure(args.name, lambda be: plot_distance(res, log=args.log, backend=be))
    end = int(np.argmin(np.abs(res.alphas - 1.0)))
    w.report(
        [
            f"{args.name}: {len(res.alphas)} points; at alpha {res.alphas[end]:g}: RMS {args.output} distance "
            f"{res.rms[end]:.5g}, label disagreement {res.disagreement[end]:.4g} "
            f"over {res.n_samples} samples"
        ]
    )
    return [str(p) for p in w.written]


def cmd_check(args: argparse.Namespace) -> int:
    """Verify a trajectory store, print the report; 0 if intact (or repaired, migrated), 1 if damaged."""
    from landscape.trajectory.store import Trajectory, TrajectoryError

    try:
        rep = Trajectory.check(args.trajectory, repair=args.repair, migrate=args.migrate)
    except FileNotFoundError:
        raise CLIError(f"trajectory {args.trajectory!r} not found") from None
    except TrajectoryError as e:
        raise CLIError(f"cannot check {args.trajectory!r}: {e}") from None
    print(rep)
    done = rep.ok or rep.repaired or (args.migrate and rep.version != 1 and not rep.lost)
    return 0 if done else 1


def cmd_plot(args: argparse.Namespace) -> list[str]:
    """``plot``: re-render saved results (several line or distance results are overlaid)."""
    from landscape import plot as P
    from landscape.analyze.distance import DistanceResult
    from landscape.analyze.pca import ProjectedPath
    from landscape.analyze.surface import BarycentricResult, BilinearResult, LineResult, PlaneResult
    from landscape.results import load_result

    try:
        results: list[Any] = [load_result(p) for p in args.results]  # dispatched on their type below
        path = load_result(args.path) if args.path else None
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    if path is not None and not isinstance(path, ProjectedPath):
        raise CLIError(f"--path {args.path} holds a {type(path).__name__}, not a ProjectedPath")
    kinds = {type(r) for r in results}
    if len(kinds) > 1:
        raise CLIError(f"cannot overlay different result types {sorted(k.__name__ for k in kinds)}")
    kind, first = kinds.pop(), results[0]
    if len(results) > 1 and kind not in (LineResult, DistanceResult):
        raise CLIError(f"only line and distance results can be overlaid, got {len(results)} {kind.__name__}s")
    log, style = args.log, args.style
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
    elif kind is BarycentricResult:
        draws[args.name] = lambda be: P.plot_barycentric(first, log=log, backend=be)
    elif kind is ProjectedPath:
        draws[args.name] = lambda be: P.plot_trajectory(None, first, log=log, backend=be)
    else:
        raise CLIError(f"no renderer for a {kind.__name__}")
    w = _Writer(args)
    for stem, draw in draws.items():
        w.figure(stem, draw)
    w.report()
    return [str(p) for p in w.written]


# =========================================================================== parser
def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; valid: {sorted(table)}")
    return table[name]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m landscape``."""
    p = argparse.ArgumentParser(
        prog="landscape",
        description="Loss-landscape slices, Hessian spectra and functional distances from the command line.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{line,plane,pca,hessian,distance,plot,check}")

    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", required=True, help="output directory")
    out.add_argument("--name", help="file stem of the outputs (default: the command name)")
    out.add_argument("--log", action="store_true", help="log scale in the plots")
    out.add_argument("--no-html", action="store_true", help="do not write the interactive HTML")
    out.add_argument("--no-png", action="store_true", help="do not write the PNG")
    out.add_argument("--quiet", action="store_true", help="no progress bars, no summary")
    out.add_argument(
        "--cdn",
        action="store_true",
        help="HTML loads plotly.js from its CDN (needs a network to view); default: one "
        "plotly.min.js written beside the pages",
    )

    ev = argparse.ArgumentParser(add_help=False)
    ev.add_argument(
        "--model",
        metavar="NAME|PKG.MOD:FACTORY",
        help="a name in landscape.models.zoo.MODELS, or package.module:factory (a function or class of "
        "your own, on PYTHONPATH); default: the factory recorded in the trajectory",
    )
    ev.add_argument(
        "--model-kw",
        nargs="+",
        default=[],
        metavar="JSON|KEY=VALUE",
        help="model arguments: a JSON object ('{\"width\": 8}') or KEY=VALUE pairs, VALUE as JSON "
        "(e.g. hidden=[32,16] activation=tanh)",
    )
    ev.add_argument(
        "--weights",
        metavar="FILE",
        help="weights of the model: .safetensors or a torch state dict (.pt, read weights_only); "
        "the default point (plane centre, hessian point, distance start)",
    )
    ev.add_argument("--split", choices=("train", "val", "test"), default="train", help="data split (default train)")
    ev.add_argument("--limit", type=int, help="use only the first N examples")
    ev.add_argument("--batch-size", type=int, help="micro-batch size of the evaluation engine")
    ev.add_argument("--memory-budget", help="memory budget of the engine, e.g. 512MB")
    ev.add_argument(
        "--bn-mode",
        choices=("eval", "train", "interpolate"),
        default="eval",
        help="BatchNorm policy (default eval: running statistics of the first/centre model)",
    )
    ev.add_argument("--dtype", type=_dtype, default=torch.float32, help="float32 (default) or float64")

    data_help = f"{' | '.join(DATA_NAMES)} | cifar10:DIR | mnist:DIR | DIR"
    ln = sub.add_parser("line", parents=[ev, out], help="linear interpolation between two points")
    ln.add_argument("--data", required=True, help=data_help)
    ln.add_argument("--from", dest="start", metavar="POINT", help="TRAJ[:INDEX] or weights file (default --weights)")
    ln.add_argument("--to", dest="end", required=True, metavar="POINT", help="TRAJ[:INDEX] or weights file")
    ln.add_argument("--alphas", help="START:STOP:COUNT or a list (default 0:1:21); distances with --distance")
    ln.add_argument(
        "--distance", action="store_true", help="absolute-distance line from --from toward --to (Im et al. eq. 1)"
    )
    ln.add_argument("--label", help="curve name")

    pl = sub.add_parser("plane", parents=[ev, out], help="a 2-D slice around a centre")
    pl.add_argument("--data", required=True, help=data_help)
    pl.add_argument("--center", metavar="POINT", help="centre TRAJ[:INDEX] or FILE.safetensors")
    pl.add_argument(
        "--directions",
        choices=DIRECTIONS,
        default="filter",
        help="filter/layer/model-normalized or raw random directions, PCA of trajectories, or two models",
    )
    pl.add_argument("--models", nargs=2, metavar="POINT", help="the two other models (--directions models)")
    pl.add_argument("--trajectory", nargs="+", metavar="TRAJ", help="trajectories (--directions pca)")
    pl.add_argument("--range", help="START:STOP of both axes (default -1:1; models -0.5:1.5; pca: around the path)")
    pl.add_argument("--yrange", help="START:STOP of the second axis (default: --range)")
    pl.add_argument("--resolution", default="21", help="N or NXxNY grid points (default 21)")
    pl.add_argument("--seed", type=int, default=0, help="seed of random directions")
    pl.add_argument(
        "--bias-bn",
        choices=("zero", "keep", "copy"),
        default="zero",
        help="direction on biases and BatchNorm parameters (default zero, Li et al.)",
    )
    pl.add_argument("--orthogonal", action="store_true", help="orthogonalize the two random directions")
    pl.add_argument("--frame", choices=("anchors", "orthogonal"), default="anchors", help="--directions models frame")
    pl.add_argument(
        "--pca-center",
        choices=("point", "mean", "first", "last"),
        default="point",
        help="PCA centre: --center (default; else the last snapshot) or the snapshots' mean/first/last",
    )

    pc = sub.add_parser("pca", parents=[ev, out], help="PCA of trajectories, optionally with the loss plane")
    pc.add_argument("trajectories", nargs="+", metavar="TRAJ")
    pc.add_argument("--data", help=f"evaluate the PCA plane and the path's losses on {data_help}")
    pc.add_argument("--center", metavar="POINT", help="centre point (with --pca-center point; default --weights)")
    pc.add_argument(
        "--pca-center",
        choices=("point", "mean", "first", "last"),
        default="mean",
        help="PCA centre (default mean, Lipton 2016; last: Li et al. 2018)",
    )
    pc.add_argument("--range", help="START:STOP of both axes (default: around the path)")
    pc.add_argument("--yrange", help="START:STOP of the second axis")
    pc.add_argument("--resolution", default="21", help="N or NXxNY grid points (default 21)")

    hs = sub.add_parser("hessian", parents=[ev, out], help="Hessian eigenvalue density, top eigenvalues and trace")
    hs.add_argument("--data", required=True, help=data_help)
    hs.add_argument(
        "--at",
        metavar="POINT",
        help="TRAJ[:INDEX] or weights file (default: --weights, else the last snapshot of --trajectory)",
    )
    hs.add_argument("--trajectory", nargs=1, metavar="TRAJ", help="trajectory whose last snapshot to analyze")
    hs.add_argument("--probes", type=int, default=4, help="SLQ probe vectors (default 4)")
    hs.add_argument("--lanczos-steps", type=int, default=100, help="Lanczos steps per probe (default 100)")
    hs.add_argument("--top-k", type=int, default=5, help="top eigenvalues to compute (default 5; 0 skips)")
    hs.add_argument(
        "--trace-products",
        type=int,
        default=0,
        help="Hessian-vector products for each of Hutchinson and Hutch++ (default 0: SLQ's trace only)",
    )
    hs.add_argument("--seed", type=int, default=0, help="seed of the random probes")
    hs.add_argument("--linear", action="store_true", help="linear density axis (default log)")

    ds = sub.add_parser("distance", parents=[ev, out], help="functional distance and label disagreement along a line")
    ds.add_argument("--data", required=True, help=data_help)
    ds.add_argument("--from", dest="start", metavar="POINT", help="reference TRAJ[:INDEX] or FILE (default --weights)")
    ds.add_argument("--to", dest="end", required=True, metavar="POINT", help="TRAJ[:INDEX] or weights file")
    ds.add_argument("--alphas", help="START:STOP:COUNT or a list of positions on the line (default 0:1:11)")
    ds.add_argument(
        "--output",
        choices=("softmax", "logits"),
        default="softmax",
        help="compare class probabilities (default) or raw outputs",
    )
    ds.add_argument("--label", help="curve name")

    pt = sub.add_parser("plot", parents=[out], help="re-render saved results")
    pt.add_argument("results", nargs="+", metavar="RESULT.npz")
    pt.add_argument("--path", metavar="PATH.npz", help="a ProjectedPath to overlay on a plane")
    pt.add_argument("--style", choices=("filled", "contour", "heatmap"), default="filled", help="2-D style")

    ck = sub.add_parser("check", help="verify a trajectory store; --repair rebuilds its index, --migrate converts v1")
    ck.add_argument("trajectory", metavar="TRAJ")
    how = ck.add_mutually_exclusive_group()
    how.add_argument(
        "--repair",
        action="store_true",
        help="rebuild index.jsonl from the intact packs (keeps the old index, unused bytes)",
    )
    how.add_argument(
        "--migrate", action="store_true", help="convert a version-1 store (the original is kept as TRAJ.v1-backup)"
    )
    return p


_VALUE_OPTIONS = ("--alphas", "--range", "--yrange")


def _check_early(args: argparse.Namespace) -> None:
    """Validate the cheap options before any data or model is loaded."""
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise CLIError(f"--limit {args.limit}: give a positive number of examples")
    if getattr(args, "alphas", None) is not None:
        parse_values(args.alphas, "--alphas")
    if getattr(args, "resolution", None) is not None:
        _resolution(args.resolution)
    for opt in ("range", "yrange"):
        if getattr(args, opt, None):
            _range(getattr(args, opt), f"--{opt}")


def _join_negative(argv: Sequence[str]) -> list[str]:
    """``--alphas -0.5:1.5:41`` -> ``--alphas=-0.5:1.5:41``: argparse would take the value for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _VALUE_OPTIONS and i + 1 < len(argv) and re.match(r"-[0-9.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1 for a damaged store from ``check``, 2 on a user error)."""
    args = build_parser().parse_args(_join_negative(list(sys.argv[1:] if argv is None else argv)))
    args.name = getattr(args, "name", None) or args.command
    commands: dict[str, Callable[[argparse.Namespace], list[str] | int]] = {
        "line": cmd_line,
        "plane": cmd_plane,
        "pca": cmd_pca,
        "hessian": cmd_hessian,
        "distance": cmd_distance,
        "plot": cmd_plot,
        "check": cmd_check,
    }
    try:
        _check_early(args)
        with _process_group():
            status = commands[args.command](args)
    except (CLIError, ValueError) as e:  # analyzers raise ValueError for bad input: report it, no traceback
        rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
        print(f"landscape: error: {e}" + (f" (rank {rank})" if rank else ""), file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0  # only check returns a status
