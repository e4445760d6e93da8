"""Benchmark: data sharding across processes (issue 19, "Scale-out": >= 1.7x with 2 processes on a data-heavy case).

A data-heavy problem: a 784-256-10 tanh MLP (203,530 parameters, float32) on 24,000 synthetic 28x28 inputs
(seeded Gaussian, 75 MB), batches of 1,000. The work timed, identical in both configurations: 3 gradients,
3 Hessian-vector products and the loss at 8 points (``Problem.evaluate``). Configurations, alternating
within each round (the order reverses every other round), each a fresh process at one torch thread:

* ``one``: one process, ``Problem(shard="none")``, holding the whole dataset;
* ``two``: ``torchrun --nproc_per_node 2`` (gloo), ``Problem(shard="split")``: each rank keeps half.

Each process builds its data and problem untimed, then times the work between two barriers (the slowest
rank counts). The ratio ``one / two`` is the median over rounds of the per-round ratio; results of the two
configurations are checked equal (relative 1e-4 in float32). Run from the repository root::

    python benchmarks/bench_distributed.py            # ~2 min on a quiet 2-core machine
    python benchmarks/bench_distributed.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N, D_IN, HIDDEN, BATCH = 24_000, 784, 256, 1_000


def worker(out: str) -> None:
    """One process of a configuration: build, time the work, write ``{"seconds", "values", "held"}``."""
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT))
    import landscape
    from landscape import distributed

    torch.set_num_threads(1)
    dist = "RANK" in os.environ
    if dist:
        torch.distributed.init_process_group("gloo")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D_IN, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 10))
    if dist:  # each rank keeps only its share (the full tensors are dropped before timing)
        lo, hi = distributed.shard_bounds(N, *distributed.rank_world())
        X, y = X[lo:hi].clone(), y[lo:hi].clone()
    prob = landscape.Problem(model, (X, y), "cross_entropy", batch_size=BATCH, shard="given" if dist else "none")
    prob.loss()  # first pass: validation, untimed
    v = torch.randn(prob.numel, generator=torch.Generator().manual_seed(2))
    pts = prob.theta0[None] + 0.05 * torch.randn(8, prob.numel, generator=torch.Generator().manual_seed(3))
    if dist:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    vals = [float(prob.grad().norm()) for _ in range(3)]
    vals += [float(prob.hvp(v).norm()) for _ in range(3)]
    vals += prob.evaluate(pts, ("loss",), chunk_size=8)["loss"].tolist()
    if dist:
        torch.distributed.barrier()
    sec = time.perf_counter() - t0
    held = int(X.numel() * X.element_size() + y.numel() * y.element_size())
    rank = distributed.rank_world()[0]
    Path(f"{out}.{rank}").write_text(json.dumps({"seconds": sec, "values": vals, "held": held}))
    if dist:
        torch.distributed.destroy_process_group()


def run(config: str, folder: str) -> dict:
    out = os.path.join(folder, config)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    me = [str(Path(__file__).resolve()), "--worker", out]
    if config == "one":
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *me]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(1 if config == "one" else 2)]
    return {
        "seconds": max(r["seconds"] for r in ranks),
        "values": ranks[0]["values"],
        "held": max(r["held"] for r in ranks),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker)
        return
    print(f"load average at start: {os.getloadavg()}")
    ratios, times = [], {"one": [], "two": []}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(a.rounds):
            res = {}
            for config in ("one", "two") if i % 2 == 0 else ("two", "one"):
                res[config] = run(config, folder)
                times[config].append(res[config]["seconds"])
            for u, w in zip(res["one"]["values"], res["two"]["values"]):
                assert abs(u - w) <= 1e-4 * max(abs(u), 1e-12), (u, w)
            ratios.append(res["one"]["seconds"] / res["two"]["seconds"])
            print(
                f"round {i}: one {res['one']['seconds']:.2f} s, two {res['two']['seconds']:.2f} s, "
                f"ratio {ratios[-1]:.2f}"
            )
        held = res["two"]["held"] / res["one"]["held"]
    print(
        f"median one/two: {statistics.median(ratios):.2f}x (target >= 1.7x); median seconds one "
        f"{statistics.median(times['one']):.2f}, two {statistics.median(times['two']):.2f}; each rank held "
        f"{held:.0%} of the data"
    )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
