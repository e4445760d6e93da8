"""Benchmark: streamed trajectory PCA against scikit-learn's PCA on the stacked matrix.

200 snapshots of a ~1M-parameter MLP (784-1000-200-10, 987,210 parameters) in an on-disk trajectory
(a random walk in weight space with a few dominant directions, written once). Each method runs in
its own subprocess so that its peak resident memory (``ru_maxrss``) is its own:

* ``ours``: ``TrajectoryPCA(n_components=10).fit(trajectory)`` streaming from disk (default 512 MiB of
  blocks, and a 128 MiB variant);
* ``sklearn-full`` / ``sklearn-auto``: ``trajectory.vectors()`` (the stacked float32 ``(200, D)``
  matrix) then ``sklearn.decomposition.PCA(10, svd_solver=...)`` (``auto`` picks randomized SVD here).

Reported: wall time (reading included), peak RSS and its increase over the process's RSS just before
the timed part (after imports), and the largest difference of explained variance ratios to ours
(accumulated in float64; scikit-learn computes in float32 on the float32 stack). Run from the repository root::

    python benchmarks/bench_pca.py            # writes to a temporary directory
    python benchmarks/bench_pca.py --snapshots 200 --keep /tmp/pca_traj
    python benchmarks/bench_pca.py --model resnet18 --snapshots 24 --methods ours   # peak memory at D = 11.2M
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_trajectory(path: str, snapshots: int, model: str = "mlp", seed: int = 0) -> int:
    import torch
    from torch import nn

    from landscape.models import build_model
    from landscape.trajectory import Trajectory

    torch.manual_seed(seed)
    if model == "resnet18":
        net = build_model("resnet18", (3, 32, 32), 10)  # 11,173,962 parameters
    else:
        net = nn.Sequential(nn.Linear(784, 1000), nn.Tanh(), nn.Linear(1000, 200), nn.Tanh(), nn.Linear(200, 10))
    traj = Trajectory.create(path, durable=False, meta={"bench": "pca"})
    x = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    d = x.numel()
    g = torch.Generator().manual_seed(seed)
    # drift along a few directions plus small isotropic noise: a low-dimensional path, like training
    dirs = torch.randn(8, d, generator=g) / d**0.5
    scales = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
    for t in range(snapshots):
        torch.nn.utils.vector_to_parameters(x, net.parameters())
        traj.append_model(net, step=t, epoch=float(t))
        x = x + 0.05 * (scales * torch.randn(8, generator=g)) @ dirs + 1e-3 * torch.randn(d, generator=g) / d**0.5
    traj.close()
    return d


def worker(method: str, path: str, k: int) -> dict[str, float | str | list[float]]:
    import numpy as np
    import torch

    from landscape.analyze import TrajectoryPCA
    from landscape.trajectory import Trajectory

    traj = Trajectory.open(path)
    torch.set_num_threads(2)
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    load = 0.0
    if method.startswith("ours"):
        mem = int(method.split(":")[1]) * 2**20 if ":" in method else 512 * 2**20
        pca = TrajectoryPCA(k, memory_budget=mem).fit(traj)
        ratios = pca.explained_variance_ratio_
    else:
        from sklearn.decomposition import PCA

        X = traj.vectors().numpy()  # the stacked (T, D) float32 matrix
        load = time.perf_counter() - t0
        solver = method.split("-")[1]
        pca = PCA(k, svd_solver=solver, random_state=0).fit(X)
        ratios = pca.explained_variance_ratio_
    elapsed = time.perf_counter() - t0
    return {
        "method": method,
        "seconds": elapsed,
        "load_seconds": load,
        "peak_mib": _peak_mib(),
        "rss_before_mib": rss0,
        "ratios": np.asarray(ratios, dtype=float).tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=200)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument(
        "--model",
        choices=["mlp", "resnet18"],
        default="mlp",
        help="mlp: 987,210 parameters (the benchmark); resnet18: 11.2M (memory check, use --methods ours)",
    )
    ap.add_argument("--keep", help="directory for the trajectory (kept and reused); default: a temporary one")
    ap.add_argument("--methods", default="ours,ours:128,sklearn-full,sklearn-auto")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.components)))
        return

    tmp = None
    path = args.keep
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_pca_")
        path = os.path.join(tmp.name, "traj")
    if not os.path.exists(os.path.join(path, "manifest.json")):
        t0 = time.perf_counter()
        d = make_trajectory(path, args.snapshots, args.model)
        print(f"wrote {args.snapshots} snapshots of {d:,} parameters in {time.perf_counter() - t0:.1f} s")
    rows = []
    for method in args.methods.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", method, "--path", path, "--components", str(args.components)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = rows[0]["ratios"]  # ours accumulates in float64; sklearn computes in the input's float32
    print(f"\n{args.snapshots} snapshots, k={args.components}, torch threads=2, load average {os.getloadavg()[0]:.1f}")
    print(
        f"| method | time (s) | of which reading the stack (s) | peak RSS (MiB) | increase over baseline (MiB) "
        f"| max abs diff of variance ratios to {rows[0]['method']} |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        err = max(abs(a - b) for a, b in zip(r["ratios"], ref))
        print(
            f"| {r['method']} | {r['seconds']:.1f} | {r['load_seconds']:.1f} | {r['peak_mib']:.0f} "
            f"| {r['peak_mib'] - r['rss_before_mib']:.0f} | {err:.1e} |"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
