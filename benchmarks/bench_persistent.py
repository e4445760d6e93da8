"""Benchmark: the Persistent Neurons 1-D regression experiment at the paper's scale (000 Sec. 3, Fig. 4-5).

Paper settings: the ReLU MLP 1 -> 32 -> 32 -> 1, He initialization, full-batch MSE, SGD with momentum
0.9, lr 0.001, 50,000 steps per run; 100 re-initializations (seeds) and 100 persistent iterations
(lambda = 0.01, the plain model first). Targets on two CPU cores: seeds <= 5 min, persistent <= 15 min.

Measured in one process, on ``landscape.data.regression_1d()`` (float32):

* ``plain loop``: an ``nn.Module`` + ``torch.optim.SGD`` loop (zero_grad, forward, ``mse_loss``, backward,
  step), with a :class:`persistence.PersistentPenalty` of 99 anchors for the persistent rows; run for
  ``--baseline-steps`` steps and projected (per-step time x steps x runs);
* ``PersistentTrainer``: the generic persistent trainer (through ``landscape.train.Trainer``) for
  ``--baseline-steps`` steps of an iteration with an anchor, projected the same way;
* ``fast``: :func:`persistence.fast.train_seeds_batched` (all seeds in one batched computation) and
  :func:`persistence.fast.fast_persistent_run` (compiled multi-step function). Compilation is timed apart
  (a warm-up call with the same shapes), then the run: at paper scale with ``--full``, otherwise with
  ``--steps`` steps per run (all 100 seeds / all 100 iterations, so the anchor matrices have their full
  size) and projected to 50,000 steps.

Before timing, the compiled and eager backends are compared on a short run (largest parameter
difference). The load average is reported at start and end: other processes share the two cores, so
the per-step times of the rows (measured in the same run) are the meaningful comparison. Run from the
repository root::

    python benchmarks/bench_persistent.py                 # projection from short runs (~1-3 min)
    python benchmarks/bench_persistent.py --full --save /tmp/pn_full --json /tmp/pn_full/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAPER_STEPS, PAPER_RUNS, LAM, LR, MU, M = 50_000, 100, 0.01, 1e-3, 0.9, 32  # 000 Sec. 3, Algorithm 1


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _wall_cpu(who: str, what: str, pair: tuple[float, float]) -> dict[str, float]:
    """A (wall, CPU) pair as two JSON entries: ``{who}_{what}`` and ``{who}_cpu_{what}``."""
    return {f"{who}_{what}": pair[0], f"{who}_cpu_{what}": pair[1]}


def plain_loop_per_step(x, y, steps: int, anchors: int) -> tuple[float, float]:
    """Wall and CPU seconds per step of the plain nn.Module + torch.optim loop (with the penalty if anchors)."""
    import torch
    from torch import nn

    from landscape.models import build_model
    from landscape.params import ParamLayout, parameters_to_vector
    from persistence.penalty import PersistentPenalty

    model = build_model("regression_mlp", (1,), 1, m=M, init="he", seed=0)
    pen = None
    if anchors:
        base = parameters_to_vector(model)
        g = torch.Generator().manual_seed(1)
        pen = PersistentPenalty(
            ParamLayout.from_model(model), base + 0.1 * torch.randn(anchors, base.numel(), generator=g), LAM
        )
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MU)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        if pen is not None:
            loss = loss + pen(model)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def generic_trainer_per_step(x, y, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds per step of PersistentTrainer (iterations 0 and 1) through the shared Trainer."""
    import torch
    from torch import nn

    from landscape.models import build_model
    from persistence.trainer import PersistentTrainer

    model = build_model("regression_mlp", (1,), 1, m=M, init="he", seed=0)
    pt = PersistentTrainer(
        model,
        (x, y),
        nn.functional.mse_loss,
        lambda p: torch.optim.SGD(p, lr=LR, momentum=MU),
        iterations=2,
        lam=LAM,
        eval_data={"train": (x, y)},
        select_by="train_loss",
        steps=steps,
        batch_size=None,
        record_every_epochs=None,
    )
    t, c = time.perf_counter(), time.process_time()
    pt.fit()
    return (time.perf_counter() - t) / (2 * steps), (time.process_time() - c) / (2 * steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="run both experiments at the paper's 50,000 steps per run")
    ap.add_argument("--part", choices=["seeds", "persistent", "all"], default="all")
    ap.add_argument("--steps", type=int, default=1000, help="steps per run without --full (projected to 50,000)")
    ap.add_argument("--baseline-steps", type=int, default=300, help="steps timed for the plain-loop baselines")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--seeds-per-call", type=int, default=4, help="steps per compiled call, seeds")
    ap.add_argument("--persistent-per-call", type=int, default=8, help="steps per compiled call, persistent")
    ap.add_argument("--save", default=None, help="directory for the results (seeds.npz, persistent.npz)")
    ap.add_argument("--json", default=None, help="write the measurements to this JSON file")
    args = ap.parse_args()

    import numpy as np
    import torch

    from landscape.data import regression_1d
    from landscape.models import build_model
    from persistence.fast import fast_persistent_run, train_seeds_batched

    torch.set_num_threads(args.threads)
    x, y = regression_1d()
    steps = PAPER_STEPS if args.full else args.steps
    template = build_model("regression_mlp", (1,), 1, m=M, init="he", seed=0)
    out: dict = {
        "load_start": _load(),
        "threads": args.threads,
        "torch": torch.__version__,
        "n": int(x.shape[0]),
        "steps_per_run": steps,
        "paper_steps": PAPER_STEPS,
        "runs": PAPER_RUNS,
        "cpus": os.cpu_count(),
    }
    print(
        f"load average (1/5/15 min) at start: {out['load_start']}; torch threads {args.threads}; "
        f"N = {x.shape[0]} points; {'paper scale' if args.full else f'{steps} steps per run, projected'}"
    )
    rows = []
    total_steps = PAPER_RUNS * PAPER_STEPS

    def row(name: str, per_step: tuple[float, float], total: tuple[float, float], note: str) -> None:
        rows.append(
            {
                "name": name,
                "per_step_us": per_step[0] * 1e6,
                "cpu_per_step_us": per_step[1] * 1e6,
                "total_min": total[0] / 60,
                "cpu_total_min": total[1] / 60,
                "note": note,
            }
        )
        print(
            f"  {name:<46s}{per_step[0] * 1e6:8.1f} us/step {total[0] / 60:6.1f} min   (CPU {per_step[1] * 1e6:7.1f} "
            f"us/step {total[1] / 60:6.1f} min)  {note}",
            flush=True,
        )

    def projected_row(
        name: str, per_step: tuple[float, float], note: str, compile_s: tuple[float, float] = (0.0, 0.0)
    ) -> tuple[float, float]:
        """A row whose total is the compile time plus the per-step time x the experiment's steps; returns it."""
        total = (compile_s[0] + per_step[0] * total_steps, compile_s[1] + per_step[1] * total_steps)
        row(name, per_step, total, note)
        return total

    def fast_row(
        name: str,
        per_step: tuple[float, float],
        compile_s: tuple[float, float],
        fit: tuple[float, float],
        projected_from: str,
        unit: str,
        baselines: dict[str, tuple[float, float]],
    ) -> dict[str, float]:
        """The row of a fast path, and its JSON entry (compile, fit, baselines, per step, projected total)."""
        note = f"compile {compile_s[0]:.0f} s" + ("" if args.full else f"; projected from {projected_from}")
        total = projected_row(name, per_step, note, compile_s)
        entry = {"compile_s": compile_s[0], **_wall_cpu("fit", "s", fit)}
        for who, pair in baselines.items():
            entry.update(_wall_cpu(who, "per_step_s", pair))
        return {
            **entry,
            **_wall_cpu("fast", unit, per_step),
            **_wall_cpu("projected", "min", (total[0] / 60, total[1] / 60)),
        }

    def save(res, name: str) -> None:  # noqa: ANN001
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            res.save(os.path.join(args.save, name))

    def timed(fn, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        t, c = time.perf_counter(), time.process_time()
        r = fn(*a, **k)
        return r, time.perf_counter() - t, time.process_time() - c

    bar = args.full and sys.stderr.isatty()
    print(
        "columns: wall time per step and projected total; CPU time of this process (what an idle core would "
        "need, roughly)"
    )

    if args.part in ("seeds", "all"):
        print("re-initialization baseline: 100 seeds x 50,000 steps")
        b = plain_loop_per_step(x, y, args.baseline_steps, anchors=0)
        projected_row("plain loop (nn.Module + torch.optim)", b, f"projected from {args.baseline_steps} steps")
        kw = dict(backend="compiled", steps_per_call=args.seeds_per_call, threads=args.threads)
        _, compile_s, compile_c = timed(
            train_seeds_batched, template, x, y, range(PAPER_RUNS), steps=2 * args.seeds_per_call, **kw
        )
        short = train_seeds_batched(template, x, y, range(PAPER_RUNS), steps=40, **kw)
        ref = train_seeds_batched(template, x, y, range(PAPER_RUNS), steps=40, backend="eager", threads=args.threads)
        # Per-seed largest difference; seeds that blow up (lr 0.001 is too large for some) amplify any rounding.
        diff = np.abs(short.final - ref.final).max(1)
        blown = ~(ref.losses[:, -1] < 10 * ref.losses[:, 0])
        out["seeds_compiled_vs_eager"] = {
            "median": float(np.median(diff)),
            "max_not_diverging": float(diff[~blown].max()),
            "diverging_seeds": np.flatnonzero(blown).tolist(),
        }
        res, wall, cpu = timed(train_seeds_batched, template, x, y, range(PAPER_RUNS), steps=steps, progress=bar, **kw)
        per = (wall / steps / PAPER_RUNS, cpu / steps / PAPER_RUNS)  # per network-step; one step trains 100 seeds
        out["seeds"] = fast_row(
            "fast: batched, compiled (per network-step)",
            per,
            (compile_s, compile_c),
            (wall, cpu),
            f"{steps} steps",
            "per_network_step_s",
            {"baseline": b},
        )
        if args.full:
            fl = res.final_loss
            out["seeds"]["outcome"] = {
                "best_seed": res.best,
                "best_loss": float(fl.min()),
                "median_loss": float(np.median(fl)),
                "losses": fl.tolist(),
            }
            print(f"  outcome: best seed {res.best} loss {fl.min():.4f}, median {np.median(fl):.4f}")
        save(res, "seeds.npz")
        cv = out["seeds_compiled_vs_eager"]
        print(
            f"  compiled vs eager (100 seeds, 40 steps): largest parameter difference per seed: median "
            f"{cv['median']:.1e}, max {cv['max_not_diverging']:.1e} over seeds whose loss did not blow up "
            f"(blew up: seeds {cv['diverging_seeds']})"
        )

    if args.part in ("persistent", "all"):
        print("persistent training: 100 iterations x 50,000 steps, lambda = 0.01")
        b = plain_loop_per_step(x, y, args.baseline_steps, anchors=PAPER_RUNS - 1)
        projected_row("plain loop + PersistentPenalty (99 anchors)", b, f"projected from {args.baseline_steps}")
        g = generic_trainer_per_step(x, y, args.baseline_steps)
        projected_row("generic PersistentTrainer (2 iterations)", g, f"projected from 2 x {args.baseline_steps}")
        model = build_model("regression_mlp", (1,), 1, m=M, init="he", seed=0)
        kw = dict(iterations=PAPER_RUNS, lam=LAM, lr=LR, momentum=MU, threads=args.threads)
        _, compile_s, compile_c = timed(
            fast_persistent_run,
            model,
            x,
            y,
            steps=args.persistent_per_call,
            backend="compiled",
            steps_per_call=args.persistent_per_call,
            **kw,
        )
        a = fast_persistent_run(
            model, x, y, steps=24, backend="compiled", steps_per_call=args.persistent_per_call, **kw
        )
        e = fast_persistent_run(model, x, y, steps=24, backend="eager", **kw)
        # A sign flip of a near-zero <Theta_k, theta> (eq. 6 is discontinuous there) can separate single iterations.
        diff = np.abs(a.finals - e.finals).max(1)
        out["persistent_compiled_vs_eager"] = {
            "median": float(np.median(diff)),
            "max": float(diff.max()),
            "iterations_above_1e-5": int((diff > 1e-5).sum()),
        }
        res, wall, cpu = timed(
            fast_persistent_run,
            model,
            x,
            y,
            steps=steps,
            backend="compiled",
            steps_per_call=args.persistent_per_call,
            progress=bar,
            log_every=100,
            **kw,
        )
        per = (wall / total_steps * PAPER_STEPS / steps, cpu / total_steps * PAPER_STEPS / steps)
        out["persistent"] = fast_row(
            "fast: compiled multi-step",
            per,
            (compile_s, compile_c),
            (wall, cpu),
            f"100 x {steps} steps",
            "per_step_s",
            {"baseline": b, "generic_trainer": g},
        )
        if args.full:
            c = res.champion
            out["persistent"]["outcome"] = {
                "champion": c,
                "champion_loss": res.metrics[c]["train_loss"],
                "losses": [m["train_loss"] for m in res.metrics],
            }
            print(
                f"  outcome: championship iteration {c}, loss {res.metrics[c]['train_loss']:.4f}; "
                f"plain model {res.metrics[0]['train_loss']:.4f}"
            )
        save(res, "persistent.npz")
        cv = out["persistent_compiled_vs_eager"]
        print(
            f"  compiled vs eager (100 iterations x 24 steps): largest parameter difference per iteration: median "
            f"{cv['median']:.1e}, max {cv['max']:.1e} ({cv['iterations_above_1e-5']} iterations above 1e-5)"
        )

    out["rows"] = rows
    out["load_end"] = _load()
    print(f"load average at end: {out['load_end']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
