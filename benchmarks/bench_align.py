"""Benchmark: weight matching of two ResNet-18s (CIFAR variant, random weights, 11.2M parameters each).

Times, at the thread count given (default 1):

* ``spec``: deriving the permutation spec by ``torch.fx`` tracing (``permutation_spec``);
* ``match``: ``weight_matching(a, b)`` end to end (float64 copies, coordinate descent to convergence,
  one objective evaluation per sweep), with the number of sweeps;
* ``apply``: applying the permutation to ``b`` (a new model, parameters and buffers permuted).

The cost matrices are float64 Gram products, ``2 * numel * n`` flops per tensor axis per sweep; the
script reports that count and the float64 ``torch.mm`` rate measured in the same run (on 2048 x 2048), so
the matching's share of the machine's matmul speed can be read even on a shared, loaded machine.

Also checks the recovered permutation: matching ``a`` against a relabelled copy of itself must restore
``a`` bitwise. Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/bench_align.py
    python benchmarks/bench_align.py --threads 2 --width 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage (64: ResNet-18)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from landscape.analyze import apply_permutation, permutation_spec, random_permutation, weight_matching
    from landscape.models import build_model

    a = build_model("resnet18", (3, 32, 32), 10, width=args.width, seed=0)
    b = build_model("resnet18", (3, 32, 32), 10, width=args.width, seed=1)
    n_params = sum(p.numel() for p in a.parameters())
    times: dict[str, list[float]] = {"spec": [], "match": [], "apply": []}
    sweeps = 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        spec = permutation_spec(a)
        t1 = time.perf_counter()
        res = weight_matching(a, b, spec=spec)
        t2 = time.perf_counter()
        res.apply(b)
        t3 = time.perf_counter()
        times["spec"].append(t1 - t0)
        times["match"].append(t2 - t1)
        times["apply"].append(t3 - t2)
        sweeps = len(res.objective) - 1
    params = dict(a.named_parameters())
    per_sweep = sum(2 * params[ax.tensor].numel() * spec.sizes[ax.group] for ax in spec.axes if ax.tensor in params)
    flops = sweeps * per_sweep
    x = torch.randn(2048, 2048, dtype=torch.float64)
    torch.mm(x, x)
    t0 = time.perf_counter()
    for _ in range(3):
        torch.mm(x, x)
    mm_rate = 3 * 2 * 2048**3 / (time.perf_counter() - t0)
    relabelled = apply_permutation(spec, random_permutation(spec, seed=3), a)
    back = weight_matching(a, relabelled, spec=spec).apply(relabelled)
    exact = all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), back.state_dict().values()))
    print(
        json.dumps(
            {
                "model": f"ResNet-18 (CIFAR), width {args.width}",
                "parameters": n_params,
                "groups": len(spec.groups),
                "threads": args.threads,
                "sweeps": sweeps,
                "objective_start": float(res.objective[0]),
                "objective_end": float(res.objective[-1]),
                "recovers_relabelled_copy_bitwise": exact,
                **{f"{k}_s_best": round(min(v), 3) for k, v in times.items()},
                "gram_gflop": round(flops / 1e9, 1),
                "mm_float64_gflops": round(mm_rate / 1e9, 2),
                "match_share_of_mm_rate": round(flops / min(times["match"]) / mm_rate, 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
