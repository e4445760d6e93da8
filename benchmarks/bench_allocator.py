"""glibc malloc settings for the gallery's workers: a medium-scale Im training workload with and without them.

``figures.make_all`` spawns its workers with :data:`figures.make_all.ALLOCATOR_ENV` (large buffers from the heap,
freed memory kept), because with glibc's defaults the medium gallery spent a quarter of its CPU time in the kernel,
page-faulting activation buffers that were unmapped after every step. This runs the same workload (150 SGD steps of
``ImSetup.medium()``'s VGG at its batch size, then 10 forward passes over 1,000 images, one torch thread) in fresh
processes, alternating the two environments, and prints the wall, user and system times and their ratios.

    python benchmarks/bench_allocator.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKLOAD = r"""
import json, resource, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)
from figures.im._settings import ImSetup, RunSpec
s = ImSetup.medium()
m = s.model(RunSpec("sgd"))
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
x, y = torch.randn(s.batch_size, 1, 28, 28), torch.randint(0, 10, (s.batch_size,))
xe = torch.randn(1000, 1, 28, 28)
t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
for _ in range(150):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
with torch.no_grad():
    for _ in range(10):
        m(xe)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt}))
"""


def run(env: dict[str, str]) -> dict[str, float]:
    """One workload in a fresh interpreter with ``env`` (the allocator reads it at start-up)."""
    out = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternate default and tuned runs; print the medians and the tuned / default ratios."""
    from figures.make_all import ALLOCATOR_ENV

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    base["PYTHONPATH"] = os.getcwd() + os.pathsep + base.get("PYTHONPATH", "")
    results: dict[str, list[dict[str, float]]] = {"default": [], "tuned": []}
    for i in range(args.rounds):
        order = ["default", "tuned"] if i % 2 == 0 else ["tuned", "default"]
        for name in order:
            results[name].append(run(base if name == "default" else {**base, **ALLOCATOR_ENV}))
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds, medians")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    for n, m in med.items():
        times = f"wall {m['wall']:.2f} s  user {m['user']:.2f} s  sys {m['sys']:.2f} s"
        print(f"{n:8s} {times}  minor faults {m['minflt']:.0f}")
    print(
        f"tuned / default: wall {med['tuned']['wall'] / med['default']['wall']:.3f}, "
        f"CPU {(med['tuned']['user'] + med['tuned']['sys']) / (med['default']['user'] + med['default']['sys']):.3f}"
    )


if __name__ == "__main__":
    main()
