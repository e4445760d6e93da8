"""Benchmark: the cost of the training loop and of recording a trajectory (issue 17, "Recording cost").

The digits MLP (``landscape.models.MLP((1, 8, 8), [32], 10)``: 2,410 parameters, a 9.6 KB float32 snapshot)
on the 1,079 training images of ``landscape.data.load_digits_split()``, batch 64, reshuffled every epoch,
SGD (lr 0.1, momentum 0.9), cross-entropy, one torch thread. Configurations, all in one process:

* ``plain``: the reference, a hand-written torch loop (``zero_grad``, forward, ``cross_entropy``,
  ``backward``, ``step``) over the same batches in the same order (``torch.randperm`` from a generator
  seeded like the Trainer's) from the same initial weights; it computes nothing else;
* ``trainer``: :class:`landscape.train.Trainer` without recording (it still tracks the running loss and
  accuracy, checks every loss for NaN/inf and runs its callbacks);
* ``trainer, train_accuracy=False``: the same without the training-accuracy count, so the loop computes what
  ``plain`` computes plus the float of each loss (the NaN check and the running mean): the Trainer's own
  overhead, like for like;
* ``memory``: the Trainer recording every step into an in-memory :class:`~landscape.trajectory.Trajectory`
  (through the store's ``append_model``, which caches the model's layout between snapshots);
* ``disk ...``: the Trainer recording every step into a store on disk, one row per durability mode the
  store offers (``durable=False``; ``durable="flush"``, group commit, synced at ``flush()`` / ``close()``;
  every append durable). The modes are found from the store's API (see :data:`STORE_MODES`), more can be
  added on the command line with ``--store-mode NAME=JSON``;
* with ``--diagnostics``, where the recording time goes (the store's switches for A/B timings): ``memory`` and
  ``durable="flush"`` through the general ``append`` instead of ``append_model``'s fast path for an unchanged
  model (``Trajectory.FAST_APPEND = False``), and ``durable="flush"`` with every batch written by the writer
  thread instead of the append that fills it (``PackWriter.INLINE_BATCHES = False``).

Every run builds a fresh Trainer (untimed), then times ``fit()`` plus closing the store (``close()``
makes everything durable in the ``"flush"`` mode, so its cost is inside the time). Configurations
alternate within each round (the order reverses every other round), and the ratios are medians over
rounds of the per-round ratio, so slow drifts of the machine's load cancel. Wall and CPU time (of this
thread) are both reported; the load average is printed at start and end. Every recording run is checked:
one snapshot per step plus the initial point, the last one bitwise equal to the plain loop's final weights.

Targets (issue 17): ``trainer`` <= 1.05x ``plain`` (checked on both Trainer rows); every-step recording to
disk <= 1.3x the unrecorded loop (``trainer``) with durability at ``flush()``, <= 2x with every append durable.
Run from the repository root::

    python benchmarks/bench_recording.py                        # ~2-4 min on a quiet 2-core machine
    python benchmarks/bench_recording.py --steps 300 --rounds 5 # quicker
    python benchmarks/bench_recording.py --only plain,trainer --rounds 21
    python benchmarks/bench_recording.py --store-mode 'disk, my mode={"durable": "flush"}'
    python benchmarks/bench_recording.py --diagnostics --only 'trainer;memory;disk, durable="flush"' --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from landscape.data import load_digits_split  # noqa: E402
from landscape.models import MLP  # noqa: E402
from landscape.params import parameters_to_vector  # noqa: E402
from landscape.train import Trainer  # noqa: E402
from landscape.trajectory import Trajectory  # noqa: E402

LR, MOMENTUM, SEED = 0.1, 0.9, 0


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _filesystem(path: str) -> str:
    """Type of the filesystem holding ``path`` (fsync on tmpfs costs nothing, so say where we wrote)."""
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and os.path.realpath(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return fstype


def store_modes() -> dict[str, dict[str, Any]]:
    """The on-disk durability modes this checkout's store offers, as ``Trajectory(path, **kwargs)`` keywords.

    The store of ``ed875bd`` has ``durable=True/False`` (fsync every file or none); group commit adds
    ``durable="flush"`` (synced at ``flush()`` / ``close()``) and ``"append"`` (every append), with a
    ``flush()`` method. Add new modes here (or with ``--store-mode``).
    """
    group_commit = callable(getattr(Trajectory, "flush", None))
    modes: dict[str, dict[str, Any]] = {"disk, durable=False": {"durable": False}}
    if group_commit:
        modes['disk, durable="flush"'] = {"durable": "flush"}
        modes['disk, durable="append"'] = {"durable": "append"}
    else:
        modes["disk, durable=True (every append)"] = {"durable": True}
    return modes


# The Trainer doing the plain loop's work (no training-accuracy count): its own overhead, like for like.
LIKE_FOR_LIKE = "trainer, train_accuracy=False"

# Which row each target is checked on (the first present of the names given).
TARGET_ROWS = {
    "flush": ['disk, durable="flush"'],
    "append": ['disk, durable="append"', "disk, durable=True (every append)"],
}


def _switch_writer(inline: bool) -> None:
    """``PackWriter.INLINE_BATCHES`` for the next store's writer (a diagnostics row turns it off)."""
    try:
        from landscape.trajectory.writer import PackWriter
    except ImportError:  # an older store
        return
    if hasattr(PackWriter, "INLINE_BATCHES"):
        PackWriter.INLINE_BATCHES = inline


def _net() -> nn.Module:
    torch.manual_seed(SEED)
    return MLP((1, 8, 8), [32], 10)


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)


def plain_loop(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int
) -> tuple[float, float, nn.Module, float]:
    """The reference loop; returns wall and CPU seconds, the trained model, and the CPU seconds of all threads."""
    import copy

    model = copy.deepcopy(net)
    opt = _sgd(model.parameters())
    model.train()
    torch.manual_seed(SEED)  # what Trainer(seed=SEED) does first (dropout would draw from it)
    gen = torch.Generator().manual_seed(SEED)
    n, done = x.shape[0], 0
    loss_fn = nn.functional.cross_entropy
    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    while done < steps:
        idx = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            j = idx[i : i + batch]
            xb, yb = x[j], y[j]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return time.perf_counter() - t0, time.thread_time() - c0, model, time.process_time() - p0


def trainer_run(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch: int,
    store: Callable[[], Any] | None,
    **options: Any,
) -> tuple[float, float, Trainer, Any, float]:
    """A Trainer run (recording every step into ``store()`` when given); the store is closed inside the time.

    Returns wall and CPU seconds (of this thread), the trainer, the store, and the CPU seconds of all threads
    (the store's writer thread included).

    ``options`` are more :class:`~landscape.train.Trainer` keywords (``train_accuracy=False``).
    """
    rec = store() if store is not None else None
    traj = rec
    kw: dict[str, Any] = dict(optimizer=_sgd, steps=steps, batch_size=batch, seed=SEED, record_every_epochs=None)
    kw.update(options)
    if rec is not None:
        kw.update(trajectory=rec, record_every_steps=1)
    tr = Trainer(net, (x, y), nn.functional.cross_entropy, **kw)
    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    tr.fit()
    if traj is not None and traj.path is not None:
        traj.close()  # in the "flush" mode this is where the snapshots become durable
    return time.perf_counter() - t0, time.thread_time() - c0, tr, traj, time.process_time() - p0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps per timed run (default 1000)")
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds; medians over rounds (default 9)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--dir", default=None, help="where the on-disk stores go (default: a new temporary directory)")
    ap.add_argument(
        "--only",
        default=None,
        help="configurations to run, separated by commas (by ';' when a name has a comma); plain always runs",
    )
    ap.add_argument(
        "--store-mode",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='an extra on-disk configuration: a row name and Trajectory keywords, e.g. \'mine={"durable": "flush"}\'',
    )
    ap.add_argument("--json", default=None, help="write the measurements to this JSON file")
    ap.add_argument(
        "--diagnostics", action="store_true", help="add rows with the store's fast paths switched off (see above)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    x, y = load_digits_split().train
    net = _net()
    root = args.dir or tempfile.mkdtemp(prefix="bench_recording_")
    os.makedirs(root, exist_ok=True)
    counter = [0]

    def on_disk(kwargs: dict[str, Any], fast: bool = True, inline: bool = True) -> Callable[[], Trajectory]:
        def make() -> Trajectory:
            counter[0] += 1
            _switch_writer(inline)  # read when the store's writer starts (its first append)
            # create(): a new store on purpose (Trajectory(path) warns when it creates one)
            t = Trajectory.create(os.path.join(root, f"run{counter[0]:04d}"), **kwargs)
            if not fast:
                t.FAST_APPEND = False
            return t

        return make

    def general_memory() -> Trajectory:
        t = Trajectory()
        t.FAST_APPEND = False
        return t

    configs: dict[str, Callable[[], Any] | None] = {
        "trainer": None,
        LIKE_FOR_LIKE: None,
        "memory": Trajectory,
    }
    options = {LIKE_FOR_LIKE: {"train_accuracy": False}}  # Trainer keywords of a configuration
    modes = store_modes()
    for spec in args.store_mode:
        name, _, js = spec.partition("=")
        modes[name] = json.loads(js)
    configs.update({name: on_disk(kw) for name, kw in modes.items()})
    if args.diagnostics and hasattr(Trajectory, "FAST_APPEND"):
        configs["memory, general append"] = general_memory
        configs['disk, durable="flush", general append'] = on_disk({"durable": "flush"}, fast=False)
        configs['disk, durable="flush", batches in the writer thread'] = on_disk({"durable": "flush"}, inline=False)
    if args.only:
        keep = {s.strip() for s in args.only.split(";" if ";" in args.only else ",")}
        configs = {k: v for k, v in configs.items() if k in keep}

    out: dict[str, Any] = {
        "load_start": _load(),
        "steps": args.steps,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "store_dir": root,
        "filesystem": _filesystem(root),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in net.parameters()),
        "modes": modes,
    }
    print(
        f"load average (1/5/15 min) at start: {out['load_start']}; torch {torch.__version__}, "
        f"{args.threads} thread(s); stores in {root} ({out['filesystem']})"
    )
    print(
        f"digits MLP, {out['parameters']} parameters ({out['parameters'] * 4 / 1000:.1f} KB per snapshot), "
        f"{x.shape[0]} training images, batch {args.batch_size}, {args.steps} steps per run, {args.rounds} rounds"
    )

    # Warm-up (first-call initializations, allocator) and the correctness checks.
    _, _, ref, _ = plain_loop(net, x, y, args.steps, args.batch_size)
    final = parameters_to_vector(ref)
    for name, store in configs.items():
        _, _, tr, traj, _ = trainer_run(net, x, y, args.steps, args.batch_size, store, **options.get(name, {}))
        if not torch.equal(parameters_to_vector(tr.model), final):
            raise SystemExit(f"{name}: the Trainer's weights differ from the plain loop's")
        if traj is not None:
            if traj.path is not None:
                traj = Trajectory.open(traj.path, "r")
            if len(traj) != args.steps + 1 or not torch.equal(traj[len(traj) - 1].vector, final):
                raise SystemExit(f"{name}: the trajectory has {len(traj)} snapshots or a wrong last one")
            if traj.path is not None:
                traj.close()

    times: dict[str, list[tuple[float, float, float]]] = {"plain": [], **{k: [] for k in configs}}
    order = ["plain", *configs]
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            if name == "plain":
                wall, cpu, _, proc = plain_loop(net, x, y, args.steps, args.batch_size)
            else:
                wall, cpu, _, _, proc = trainer_run(
                    net, x, y, args.steps, args.batch_size, configs[name], **options.get(name, {})
                )
            times[name].append((wall, cpu, proc))
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root, exist_ok=True)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    out["load_end"] = _load()

    def ratio(a: str, b: str, k: int) -> float:
        return statistics.median(tb[k] / ta[k] for ta, tb in zip(times[a], times[b]))

    def best_ratio(a: str, b: str) -> float:  # CPU time of the least disturbed run of each (noise only adds)
        return min(t[1] for t in times[b]) / min(t[1] for t in times[a])

    rows = []
    for name in order:
        wall = statistics.median(t[0] for t in times[name]) / args.steps
        cpu = statistics.median(t[1] for t in times[name]) / args.steps
        row = {
            "config": name,
            "wall_us_per_step": wall * 1e6,
            "cpu_us_per_step": cpu * 1e6,
            "all_threads_cpu_us_per_step": statistics.median(t[2] for t in times[name]) / args.steps * 1e6,
            "vs_plain_wall": ratio("plain", name, 0),
            "vs_plain_cpu": ratio("plain", name, 1),
            "vs_plain_best_cpu": best_ratio("plain", name),
        }
        if "trainer" in times and name not in ("plain", LIKE_FOR_LIKE):
            row["vs_trainer_wall"] = ratio("trainer", name, 0)
            row["vs_trainer_cpu"] = ratio("trainer", name, 1)
            row["vs_trainer_best_cpu"] = best_ratio("trainer", name)
            base = statistics.median(t[0] for t in times["trainer"]) / args.steps
            row["extra_wall_us_per_step"] = (wall - base) * 1e6
        rows.append(row)
    out["rows"] = rows
    out["raw"] = times

    print(f"load average at end: {out['load_end']}")
    print("ratios: wall and CPU are medians over rounds of the per-round ratio, 'best' the ratio of the fastest runs'")
    print("CPU times; 'vs trainer' = relative to not recording; 'extra us' = wall time per step over the trainer;")
    print("'all threads' = CPU time of the process (the store's writer thread included), median per step")
    w = max(36, *(len(n) + 1 for n in order))
    print(
        f"{'configuration':<{w}s}{'wall us/step':>13s}{'CPU us/step':>12s}{'all threads':>12s}{'vs plain':>10s}"
        f"{'(CPU)':>8s}{'(best)':>8s}{'vs trainer':>12s}{'(CPU)':>8s}{'(best)':>8s}{'extra us':>10s}"
    )
    for row in rows:
        vt = (
            (
                f"{row['vs_trainer_wall']:12.3f}{row['vs_trainer_cpu']:8.3f}{row['vs_trainer_best_cpu']:8.3f}"
                f"{row['extra_wall_us_per_step']:10.1f}"
            )
            if "vs_trainer_wall" in row
            else ""
        )
        print(
            f"{row['config']:<{w}s}{row['wall_us_per_step']:13.1f}{row['cpu_us_per_step']:12.1f}"
            f"{row['all_threads_cpu_us_per_step']:12.1f}"
            f"{row['vs_plain_wall']:10.3f}{row['vs_plain_cpu']:8.3f}{row['vs_plain_best_cpu']:8.3f}{vt}"
        )

    by_name = {row["config"]: row for row in rows}
    checks = []  # (what, wall ratio, best CPU ratio, limit); the verdict is on wall time (fsync waits are not CPU)
    if "trainer" in by_name:
        t = by_name["trainer"]
        checks.append(("Trainer <= 1.05x plain loop", t["vs_plain_wall"], t["vs_plain_best_cpu"], 1.05))
    if LIKE_FOR_LIKE in by_name:
        t = by_name[LIKE_FOR_LIKE]
        checks.append(
            ("Trainer, train_accuracy=False <= 1.05x plain loop", t["vs_plain_wall"], t["vs_plain_best_cpu"], 1.05)
        )
    for key, limit, what in (("flush", 1.3, "durable at flush()"), ("append", 2.0, "every append durable")):
        row = next((by_name[n] for n in TARGET_ROWS[key] if n in by_name), None)
        if row is not None and "vs_trainer_wall" in row:
            checks.append(
                (
                    f"{row['config']} ({what}) <= {limit}x unrecorded",
                    row["vs_trainer_wall"],
                    row["vs_trainer_best_cpu"],
                    limit,
                )
            )
        elif key == "flush":
            checks.append((f"disk, {what}: this store has no such mode", float("nan"), float("nan"), limit))
    out["targets"] = [{"target": t, "wall": m, "best_cpu": c, "limit": lim, "met": m <= lim} for t, m, c, lim in checks]
    print("targets (verdict on the wall-time ratio; the best-CPU ratio beside it):")
    for t, m, c, lim in checks:
        verdict = "n/a" if m != m else ("met" if m <= lim else "NOT met")
        print(f"  {t:<62s} wall {m:6.3f}  best CPU {c:6.3f}  {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
