"""``main``: parse, check the cheap options early, run the command inside torchrun's process group."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from landscape.cli.files import cmd_check, cmd_plot
from landscape.cli.measures import cmd_distance, cmd_hessian
from landscape.cli.output import process_group
from landscape.cli.parser import build_parser
from landscape.cli.parsing import CLIError, check_point_count, parse_range, parse_resolution, parse_values
from landscape.cli.slices import cmd_line, cmd_pca, cmd_plane

__all__ = ["main"]

_VALUE_OPTIONS = ("--alphas", "--range", "--yrange")
# Commands that take their points as options, not positionally (as pca, plot and check take theirs).
_POINT_OPTIONS = {
    "line": "--from POINT --to POINT",
    "distance": "--from POINT --to POINT",
    "plane": "--center POINT or --trajectory TRAJ",
    "hessian": "--at POINT or --trajectory TRAJ",
}
# Integer options (argparse dest) and their least value.
_COUNTS = {"batch_size": 1, "probes": 1, "lanczos_steps": 1, "top_k": 0, "trace_products": 0}


def _check_early(args: argparse.Namespace) -> None:
    """Validate the cheap options before any data or model is loaded."""
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise CLIError(f"--limit {args.limit}: give a positive number of examples")
    for dest, least in _COUNTS.items():
        value = getattr(args, dest, None)
        if value is not None and value < least:
            what = "a positive integer" if least else "a non-negative integer (0 skips it)"
            raise CLIError(f"--{dest.replace('_', '-')} {value}: give {what}")
    if getattr(args, "trace_products", 0) in (1, 2):  # else refused by Hutch++ after the density and top-k's work
        raise CLIError(
            f"--trace-products {args.trace_products}: Hutch++ needs at least 3 Hessian-vector products; give 0 "
            "(SLQ's trace only) or 3 or more"
        )
    name = getattr(args, "name", None)
    if name is not None and (Path(name).name != name or name in (".", "..")):
        raise CLIError(f"--name {name}: give a file stem such as plane (no directory: the outputs go in --out)")
    if args.command == "plane":  # options of other directions would be ignored: a plane the user did not ask for
        if args.models and args.directions != "models":
            raise CLIError(
                f"--models is for --directions models (the plane through three models), not --directions "
                f"{args.directions}: add --directions models, or drop --models"
            )
        if args.trajectory and len(args.trajectory) > 1 and args.directions != "pca":
            raise CLIError(
                f"--trajectory takes several trajectories with --directions pca only; --directions {args.directions} "
                "is around one centre (the last snapshot of one --trajectory): add --directions pca, or give one"
            )
        _check_plane_options(args)
    out = getattr(args, "out", None)
    if out is not None:  # a file on the way, or a directory it cannot write, would fail the first write: after the work
        _check_out(out)
    budget = getattr(args, "memory_budget", None)
    if budget is not None:
        from landscape._options import parse_bytes

        try:
            parse_bytes(budget)
        except ValueError as e:
            raise CLIError(f"--memory-budget: {e}") from None
    if getattr(args, "alphas", None) is not None:
        parse_values(args.alphas, "--alphas", budget)
    if getattr(args, "resolution", None) is not None:
        nx, ny = parse_resolution(args.resolution)
        check_point_count(nx * ny, f"--resolution {args.resolution}", budget)
    for opt in ("range", "yrange"):
        if getattr(args, opt, None):
            parse_range(getattr(args, opt), f"--{opt}")


# plane's options that only some --directions use, with those directions and the default filled in when not given.
_PLANE_ONLY = {
    "pca_center": (("pca",), "point"),
    "frame": (("models",), "anchors"),
    "orthogonal": (("filter", "layer", "model", "random"), False),
    "seed": (("filter", "layer", "model", "random"), 0),
    "bias_bn": (("filter", "layer", "model", "random"), "zero"),
}


def _check_plane_options(args: argparse.Namespace) -> None:
    """Refuse a plane option its ``--directions`` does not use (it was ignored without a word); fill in defaults."""
    for dest, (kinds, default) in _PLANE_ONLY.items():
        value = getattr(args, dest)
        if value is not None and value is not False and args.directions not in kinds:  # (--seed 0 is given)
            opt = f"--{dest.replace('_', '-')}"
            given = opt if value is True else f"{opt} {value}"
            uses = f"--directions {'/'.join(kinds)}"
            uses = uses if len(kinds) == 1 else f"the random directions ({uses})"
            raise CLIError(
                f"{given} is for {uses} only; --directions {args.directions} would ignore it: drop {opt}, or use "
                f"--directions {kinds[0]}"
            )
        if value is None:
            setattr(args, dest, default)


def _check_out(out: str) -> None:
    """Refuse an ``--out`` that cannot be written: a file on its path, or a directory without write permission."""
    path = Path(out)
    taken = next((q for q in (path, *path.parents) if q.exists() and not q.is_dir()), None)
    if taken is not None:
        raise CLIError(f"--out {out}: {taken} is a file; give a directory")
    # The directory itself, or the nearest existing one above it that the command would create it in.
    base = next((q for q in (path, *path.parents) if q.exists()), None)
    if base is not None and not os.access(base, os.W_OK | os.X_OK):  # (EROFS and permissions; checked, not tried)
        where = "is not writable" if base == path else f"cannot be created: {base} is not writable"
        raise CLIError(f"--out {out} {where}; choose another --out")


def explain_batch_norm(error: Exception, args: argparse.Namespace) -> Exception:
    """BatchNorm's refusal of a one-sample batch under ``--bn-mode train`` as the options that avoid it; else ``error``.

    The commands evaluate ``--limit`` examples of ``--data`` in batches of ``--batch-size`` (one batch without it):
    ``N`` examples in batches of ``B`` end with a batch of ``N % B``.
    """
    from landscape._bn_batches import batch_size_without_single, is_one_value_error

    if not is_one_value_error(error) and "BatchNorm has no statistics" not in str(error):  # (torch's, or ours)
        return error
    n, b = getattr(args, "n_examples", None), getattr(args, "batch_size", None)
    why = "--bn-mode train normalizes each batch by its own statistics, and BatchNorm has none of one sample"
    if n is None:
        return CLIError(f"{why} ({error}); give --bn-mode eval, or data in batches of at least 2 examples")
    if n < 2:
        return CLIError(f"{why}: --limit {n} leaves one example; give --limit 2 or more, or --bn-mode eval")
    if b is None or n % b != 1:  # (not a short last batch: say what torch said)
        return CLIError(f"{why} ({error}); give --bn-mode eval")
    better = batch_size_without_single(n, b)
    return CLIError(
        f"{why}: the last batch (batch {n // b} of {n // b + 1}, counting from 0) holds 1 of the {n} examples in "
        f"batches of --batch-size {b}; give --batch-size {better} (leaves no 1-example batch), --limit {n - 1} (drops "
        "the last example) or --bn-mode eval (the running statistics)"
    )


def _join_negative(argv: Sequence[str]) -> list[str]:
    """``--alphas -0.5:1.5:41`` -> ``--alphas=-0.5:1.5:41``: argparse would take the value for an option."""
    out, i = [], 0
    while i < len(argv):
        # (-inf and -nan too: parse_values then says the values must be finite, not argparse "expected one argument")
        if argv[i] in _VALUE_OPTIONS and i + 1 < len(argv) and re.match(r"-(?:[0-9.]|inf|nan)", argv[i + 1], re.I):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1 for a damaged store from ``check``, 2 on a user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] in _POINT_OPTIONS and not argv[1].startswith("-"):
        # argparse said only "the following arguments are required: --to" or "unrecognized arguments: runs/a"
        print(
            f"landscape {argv[0]}: error: {argv[1]}: {argv[0]} takes its points as options: "
            f"{_POINT_OPTIONS[argv[0]]} (see landscape {argv[0]} --help)",
            file=sys.stderr,
        )
        return 2
    args = build_parser().parse_args(_join_negative(argv))
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
        with process_group():
            status = commands[args.command](args)
    except (CLIError, ValueError) as e:  # analyzers raise ValueError for bad input: report it, no traceback
        said = explain_batch_norm(e, args)
        rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
        print(f"landscape: error: {said}" + (f" (rank {rank})" if rank else ""), file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0  # only check returns a status
