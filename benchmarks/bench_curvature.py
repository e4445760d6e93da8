"""Curvature along a trajectory: Hessian-vector products of warm-started against cold-started Lanczos (issue 22).

Run from the repository root::

    python benchmarks/bench_curvature.py            # ~3-6 min on 2 shared CPU cores
    python benchmarks/bench_curvature.py --quick    # smoke run, fewer snapshots
    python benchmarks/bench_curvature.py --no-certify  # both runs without the completeness check

The trajectory: full-batch gradient descent (lr 0.1, the edge-of-stability setting of the notebook) of a
tanh MLP 64-64-64-10 (9,034 parameters) on 1,000 scikit-learn digits with the mean squared error
``1/2 ||f(x) - onehot(y)||^2``, one snapshot every 20 steps: 50 snapshots over 980 steps, through progressive
sharpening (lambda_max 6.8 -> 20) and the edge of stability (hovering at 2/lr = 20). For each ``k`` and
tolerance, :func:`landscape.trajectory_curvature` runs once warm-started and once cold; the table gives
the Hessian-vector products (counts, not time: they do not depend on the machine's load), their ratio, and
the largest eigenvalue difference between the two runs against the largest error bound. Both runs use the
default completeness check of every Lanczos result (``certify=True``; a warm start pays it at every snapshot,
a cold random start of ``k <= 2`` never needs it); ``--no-certify`` turns it off in both.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures.beyond.eos import half_squared_error, onehot_digits  # noqa: E402
from landscape.curvature import trajectory_curvature  # noqa: E402
from landscape.models import MLP  # noqa: E402
from landscape.train import Trainer  # noqa: E402
from landscape.trajectory import Trajectory  # noqa: E402


def build(snapshots: int, every: int, lr: float) -> tuple[Trajectory, nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    data = onehot_digits(1000)
    torch.manual_seed(0)
    net = MLP((1, 8, 8), [64, 64], 10, "tanh")
    traj = Trajectory()
    Trainer(
        net,
        data,
        half_squared_error,
        lambda p: torch.optim.SGD(p, lr=lr),
        steps=(snapshots - 1) * every,  # full batch: the trainer's default batch_size=None
        shuffle=False,
        trajectory=traj,
        record_every_steps=every,
        record_every_epochs=None,
    ).fit()
    return traj, net, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 snapshots, one setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=20, help="gradient-descent steps between snapshots")
    ap.add_argument("--snapshots", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--no-certify", action="store_true", help="no completeness check of the Lanczos results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    snapshots = 10 if args.quick else args.snapshots
    traj, net, data = build(snapshots, args.every, args.lr)
    settings = [(1, 1e-4)] if args.quick else [(1, 1e-4), (1, 1e-6), (5, 1e-4), (5, 1e-6)]
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"load {os.getloadavg()[0]:.2f}; {len(traj)} snapshots, steps {traj.steps[0]}..{traj.steps[-1]}; "
        f"certify={not args.no_certify}"
    )
    print(
        "| k | tol | HVPs cold | HVPs warm | cold / warm | max abs eigenvalue diff | max error bound | "
        "lambda_max first -> last |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for k, tol in settings:
        t0 = time.perf_counter()
        opts = dict(k=k, tol=tol, certify=not args.no_certify, progress=False)
        cold = trajectory_curvature(traj, net, half_squared_error, data, warm_start=False, **opts)
        t1 = time.perf_counter()
        warm = trajectory_curvature(traj, net, half_squared_error, data, warm_start=True, **opts)
        t2 = time.perf_counter()
        diff = float(np.abs(warm.eigenvalues - cold.eigenvalues).max())
        bound = float(np.maximum(warm.error_bounds, cold.error_bounds).max())
        assert warm.converged.all() and cold.converged.all()
        print(
            f"| {k} | {tol:g} | {cold.total_hvps} | {warm.total_hvps} | {cold.total_hvps / warm.total_hvps:.2f} | "
            f"{diff:.1e} | {bound:.1e} | {cold.lambda_max[0]:.2f} -> {cold.lambda_max[-1]:.2f} |"
        )
        print(
            f"#   time cold {t1 - t0:.1f} s, warm {t2 - t1:.1f} s (ratio {(t1 - t0) / (t2 - t1):.2f}), "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
