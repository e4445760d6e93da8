"""The argument parser of ``landscape`` (``python -m landscape``): shared option groups and one subcommand each."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch

from landscape.cli.parsing import DATA_NAMES, DIRECTIONS

__all__ = ["build_parser"]


def _dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; valid: {sorted(table)}")
    return table[name]


# The help of --from and --alphas of the commands along a line.
_LINE_HELP = {
    "line": (
        "TRAJ[:INDEX] or weights file (default --weights)",
        "START:STOP:COUNT or a list (default 0:1:21); with --distance, distances from --from (default 31 "
        "over 0 to 1.5 times the distance to --to, and that distance)",
    ),
    "distance": (
        "reference TRAJ[:INDEX] or FILE (default --weights)",
        "START:STOP:COUNT or a list of positions on the line (default 0:1:11)",
    ),
}


_EXAMPLES = """\
examples ('landscape COMMAND --help' lists a command's options):
  landscape line --from runs/a:0 --to runs/a --alphas -0.5:1.5:41 --data digits --out out/
  landscape plane --trajectory runs/a --data digits --out out/        # around its last snapshot
  landscape pca runs/a runs/b --data digits --out out/                 # the paths on their PCA plane
  landscape hessian --trajectory runs/a --data digits --top-k 5 --out out/
  landscape distance --from runs/a --to runs/b --data digits --out out/
  landscape plane --model mlp --model-kw hidden=[32] --weights w.safetensors --data digits --out out/
  landscape plot out/plane.npz --out out/                              # re-render a saved result
  landscape check runs/a                                               # verify a trajectory store

A trajectory recorded with its model factory (Trainer(..., factory=...)) needs no --model; else give
--model (a zoo name or package.module:factory) and --model-kw. Points are TRAJ[:INDEX] (a snapshot of a
trajectory directory; default the last) or a weights file (.safetensors, or a state dict read with
torch.load(weights_only=True)). Results are written to --out as .npz (landscape.load_result), .html and .png."""


def _command(sub: Any, name: str, parents: Sequence[argparse.ArgumentParser] = (), *, help: str) -> Any:
    """A subcommand whose ``--help`` opens with what it does and its examples from ``landscape --help``."""
    examples = "\n".join(ln for ln in _EXAMPLES.splitlines() if ln.strip().startswith(f"landscape {name} "))
    return sub.add_parser(
        name,
        parents=list(parents),
        help=help,
        description=f"{help[0].upper()}{help[1:]}.\n\nexamples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _line_options(p: argparse.ArgumentParser, command: str, data_help: str) -> None:
    """The options of a command along the line from one point to another (``line``, ``distance``)."""
    start, alphas = _LINE_HELP[command]
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--from", dest="start", metavar="POINT", help=start)
    p.add_argument("--to", dest="end", required=True, metavar="POINT", help="TRAJ[:INDEX] or weights file")
    p.add_argument("--alphas", help=alphas)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m landscape``."""
    p = argparse.ArgumentParser(
        prog="landscape",
        description="Loss-landscape slices, Hessian spectra and functional distances from the command line.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        help="weights of the model: .safetensors or a torch state dict (.pt, read weights_only); also the "
        "default point: the plane's centre, the Hessian's point, the start of line and distance",
    )
    ev.add_argument("--split", choices=("train", "val", "test"), default="train", help="data split (default train)")
    ev.add_argument("--limit", type=int, help="use only the first N examples")
    ev.add_argument("--batch-size", type=int, help="micro-batch size of the evaluation engine")
    ev.add_argument("--memory-budget", help="memory budget of the engine, e.g. 512MB")
    ev.add_argument(
        "--bn-mode",
        choices=("eval", "train", "interpolate", "recompute"),
        default=None,
        help="BatchNorm statistics (default: each model's own running statistics, interpolated between the "
        "models, so a line ends at each model's own loss; eval: the first/centre model's everywhere; train: "
        "each batch's; interpolate: as the default, for line, distance and plane --directions models; "
        "recompute: each point's own, recomputed over the evaluated data first, as torch's update_bn)",
    )
    ev.add_argument("--dtype", type=_dtype, default=torch.float32, help="float32 (default) or float64")

    data_help = (
        f"{' | '.join(DATA_NAMES)} | cifar10:DIR | mnist:DIR | DIR (a folder of CIFAR-10 batches or MNIST IDX files)"
    )
    ln = _command(sub, "line", parents=[ev, out], help="linear interpolation between two points")
    _line_options(ln, "line", data_help)
    ln.add_argument(
        "--distance", action="store_true", help="absolute-distance line from --from toward --to (Im et al. eq. 1)"
    )
    ln.add_argument("--label", help="curve name")

    pl = _command(sub, "plane", parents=[ev, out], help="a 2-D slice around a centre")
    pl.add_argument("--data", required=True, help=data_help)
    pl.add_argument("--center", metavar="POINT", help="centre TRAJ[:INDEX] or weights file")
    pl.add_argument(
        "--directions",
        choices=DIRECTIONS,
        default="filter",
        help="filter/layer/model-normalized or raw random directions, PCA of trajectories, or two models "
        "(default filter)",
    )
    pl.add_argument("--models", nargs=2, metavar="POINT", help="the two other models (--directions models)")
    pl.add_argument("--trajectory", nargs="+", metavar="TRAJ", help="trajectories (--directions pca)")
    pl.add_argument("--range", help="START:STOP of both axes (default -1:1; models -0.5:1.5; pca: around the path)")
    pl.add_argument("--yrange", help="START:STOP of the second axis (default: --range)")
    pl.add_argument("--resolution", default="21", help="N or NXxNY grid points (default 21)")
    # (Defaults None, filled in by the CLI's early checks: an option given with directions that do not use it is
    # refused, not ignored.)
    pl.add_argument("--seed", type=int, help="seed of random directions (default 0)")
    pl.add_argument(
        "--bias-bn",
        choices=("zero", "keep", "copy"),
        help="random directions on biases and BatchNorm parameters (default zero, Li et al.)",
    )
    pl.add_argument("--orthogonal", action="store_true", help="orthogonalize the two random directions")
    pl.add_argument(
        "--frame",
        choices=("anchors", "orthogonal"),
        help="frame of --directions models (default anchors)",
    )
    pl.add_argument(
        "--pca-center",
        choices=("point", "mean", "first", "last"),
        help="PCA centre of --directions pca: --center (default; else the last snapshot) or the snapshots' "
        "mean/first/last",
    )

    pc = _command(sub, "pca", parents=[ev, out], help="PCA of trajectories, optionally with the loss plane")
    pc.add_argument("trajectories", nargs="+", metavar="TRAJ", help="trajectory directories (whole, without :INDEX)")
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

    hs = _command(sub, "hessian", parents=[ev, out], help="Hessian eigenvalue density, top eigenvalues and trace")
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
        help="Hessian-vector products for each of Hutchinson and Hutch++: 0 or at least 3 "
        "(default 0: SLQ's trace only)",
    )
    hs.add_argument("--seed", type=int, default=0, help="seed of the random probes (default 0)")
    hs.add_argument("--linear", action="store_true", help="linear density axis (default log)")

    ds = _command(sub, "distance", parents=[ev, out], help="functional distance and label disagreement along a line")
    _line_options(ds, "distance", data_help)
    ds.add_argument(
        "--output",
        choices=("softmax", "logits"),
        default="softmax",
        help="compare class probabilities (default) or raw outputs",
    )
    ds.add_argument("--label", help="curve name")

    pt = _command(sub, "plot", parents=[out], help="re-render saved results")
    pt.add_argument(
        "results",
        nargs="+",
        metavar="RESULT.npz",
        help="results saved by the commands or Result.save (.npz): line, barrier, distance, functional distance, "
        "sharpness, Hessian spectrum, curvature trace, curve and saturation history results overlay (several of "
        "one kind, or lines with barriers); a plane, bilinear, barycentric or path result is drawn alone",
    )
    pt.add_argument("--path", metavar="PATH.npz", help="a ProjectedPath to overlay on a plane")
    pt.add_argument(
        "--style",
        choices=("filled", "contour", "heatmap"),
        help="2-D style (default filled; heatmap for a plane narrower than 2 x 2 points, which has no contours)",
    )

    ck = _command(sub, "check", help="verify a trajectory store; --repair rebuilds its index, --migrate converts v1")
    ck.add_argument("trajectory", metavar="TRAJ", help="trajectory directory")
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
