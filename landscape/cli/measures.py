"""The commands that measure at points: ``hessian`` (the spectrum at one point), ``distance`` (along a line)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from torch import nn

from landscape.cli.loading import build_template, default_point, load_data, load_point
from landscape.cli.output import Writer
from landscape.cli.parsing import CLIError, eval_kw, parse_values, plural

__all__ = ["cmd_hessian", "cmd_distance"]


def cmd_hessian(args: argparse.Namespace) -> list[str]:
    """``hessian``: eigenvalue density (SLQ), top eigenvalues and traces of the loss Hessian at one point."""
    from landscape.curvature.spectrum import hessian_spectrum
    from landscape.plot.hessian import plot_spectrum_density

    if args.bn_mode not in (None, "eval", "train"):
        raise CLIError(f"--bn-mode {args.bn_mode}: the Hessian is of one model; use eval or train")
    if args.bn_mode == "train" and args.batch_size is not None:  # (the library says "micro_batch_size")
        raise CLIError(
            f"--batch-size {args.batch_size} with --bn-mode train: the Hessian is of the loss with the batch "
            "statistics of the whole data (--limit examples), and micro-batches would each have their own; drop "
            "--batch-size (or use --bn-mode eval)"
        )
    data, shape, classes, desc = load_data(args, args.dtype)
    at = default_point(args, args.at, "--at POINT")
    model = load_point(at, build_template(args, [at, *(args.trajectory or [])], shape, classes))
    n = sum(p.numel() for p in model.parameters())  # the Hessian is n x n (all parameters)
    if args.top_k > n:  # the spectrum would clamp it after the density's work: every eigenvalue, by Lanczos
        raise CLIError(f"--top-k {args.top_k}: the model has {plural(n, 'parameter')}, so at most {n} eigenvalues")
    options: dict[str, Any] = {}
    if args.batch_size is not None:
        options["micro_batch_size"] = args.batch_size
    if args.memory_budget is not None:  # read by the operator (and checked before the work: cli.app._check_early)
        options["memory_budget"] = args.memory_budget
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
    w = Writer(args)
    w.result(args.name, res)
    w.figure(args.name, lambda be: plot_spectrum_density(res, labels=[at], log=not args.linear, backend=be))
    top = ", ".join(f"{v:.5g}" for v in res.top_eigenvalues)
    traces = ", ".join(f"{k} {v:.5g}" for k, v in res.trace.items())
    w.report(
        [
            f"{args.name}: {plural(res.n_params, 'parameter')}, {plural(res.n_samples, 'sample')}; top eigenvalues "
            f"[{top}]; trace {traces}; {plural(res.hvp_count, 'Hessian-vector product')}"
        ]
    )
    return [str(p) for p in w.written]


def cmd_distance(args: argparse.Namespace) -> list[str]:
    """``distance``: functional distance and label disagreement from ``--from`` along the line to ``--to``."""
    from landscape.analyze.distance import distance_along_path
    from landscape.plot.curves import plot_distance

    data, shape, classes, desc = load_data(args, args.dtype)
    start = default_point(args, args.start, "--from POINT")
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
        **eval_kw(args, desc),
    )
    w = Writer(args)
    w.result(args.name, res)
    w.figure(args.name, lambda be: plot_distance(res, log=args.log, backend=be))
    end = int(np.argmin(np.abs(res.alphas - 1.0)))
    w.report(
        [
            f"{args.name}: {plural(len(res.alphas), 'point')}; at alpha {res.alphas[end]:g}: RMS {args.output} "
            f"distance {res.rms[end]:.5g}, label disagreement {res.disagreement[end]:.4g} "
            f"over {plural(res.n_samples, 'sample')}"
        ]
    )
    return [str(p) for p in w.written]
