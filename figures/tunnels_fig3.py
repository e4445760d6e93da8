"""Tunnels (002), Fig. 3 (App. C.1): how fast the clone's symmetry with its original is broken, per choice of lambda.

From the flat-area point of Fig. 1 (damped Newton, ``figures/_tunnels_common.py``), SGD runs; at step 50 one
filter (the largest rho) is opened with the proposed ``lambda_t``, a random direction of the same norm, a
constant vector (``1/2 + t / sqrt(L)`` in every entry) or ``lambda = 1/2``, and the distance
``||K_u - K_u'||_2`` between the filter and its clone is recorded every 5 steps. Claims: the proposed split
breaks the symmetry fastest (largest distance 50 steps after opening), and ``1/2`` never breaks it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch
from torch import nn
from tqdm.auto import tqdm

from figures._tunnels_common import (
    COLORS,
    SOURCE,
    band_traces,
    cache_dir,
    load_data,
    make_setup,
    mean_std,
    newton_point,
)
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure
from landscape.train import Callback, StepEvent, Trainer
from tunnels import TunnelSchedule

MODES = ("proposed", "random", "constant", "half")
WINDOW = 50  # steps after opening at which "fastest" is judged (fixed before measuring)


class _CloneDistance(Callback):
    """Distance between the cloned filter and its origin, every ``every`` steps after the opening."""

    def __init__(self, sched: TunnelSchedule, every: int = 5) -> None:
        self.sched, self.every = sched, every
        self.steps: list[int] = []
        self.dist: list[float] = []

    def on_step_end(self, trainer: Trainer, event: StepEvent) -> None:  # noqa: D102
        ev = self.sched.open_event_
        if ev is None or (event.step - self.sched.open_at) % self.every:
            return
        c = ev.changes[0]
        w = trainer.model.get_submodule(c.producer).weight.detach()
        self.steps.append(event.step)
        self.dist.append(float((w[c.unit] - w[c.clone]).norm()))


def run_fig3(scale: Scale | str, data_dir: Path | None, cache: Path | None, progress: bool = False,
             setup=None) -> FigureResult:
    """Fig. 3 at a scale (or for an explicit setup)."""
    s = setup or make_setup(scale)
    data, desc = load_data(s, data_dir)
    start, _ = newton_point(s, data, cache, progress)
    dist: dict[str, list[list[float]]] = {m: [] for m in MODES}
    steps = None
    for rep in tqdm(range(s.repetitions), disable=not progress, leave=False, desc="fig3"):
        for m in MODES:
            sched = TunnelSchedule(s.open_at, {"conv1": 1}, t=s.t, mode=m, warmup_steps=0, seed=rep)
            rec = _CloneDistance(sched)
            Trainer(start, data, nn.functional.cross_entropy, "sgd", optimizer_kwargs={"lr": s.lr},
                    steps=s.total_steps, batch_size=s.batch_size, seed=rep, callbacks=[sched, rec]).fit()
            dist[m].append(rec.dist)
            steps = np.asarray(rec.steps)
    assert steps is not None
    stats = {m: mean_std(d) for m, d in dist.items()}
    i_w = min(int(np.searchsorted(steps, s.open_at + WINDOW)), len(steps) - 1)
    at_w = {m: float(stats[m][0][i_w]) for m in MODES}
    half_max = float(np.max(np.asarray(dist["half"])))
    fig = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=(6, 4))
    ax = mfig.add_subplot()
    for m, (mu, sd) in stats.items():
        fig.add_traces(band_traces(go, steps, mu, sd, m, COLORS[m]))
        ax.plot(steps, mu, color=COLORS[m], label=m)
        ax.fill_between(steps, mu - sd, mu + sd, color=COLORS[m], alpha=0.2)
    fig.update_layout(title="Fig. 3: distance between the cloned filter and its origin", xaxis_title="step",
                      yaxis_title="||K_u - K_u'||")
    ax.set(xlabel="step", ylabel="||K_u - K_u'||", title="Fig. 3: symmetry breaking after opening")
    ax.legend()
    others = max(at_w[m] for m in ("random", "constant"))
    claims = [
        Claim("Symmetry is broken faster using our proposed method.", None,
              round(at_w["proposed"] / others, 4) if others > 0 else "inf", at_w["proposed"] > others,
              f"measured: mean distance {WINDOW} steps after opening, proposed / max(random, constant) "
              f"({at_w['proposed']:.3g} vs random {at_w['random']:.3g}, constant {at_w['constant']:.3g}); held if > 1.",
              f"{SOURCE}, App. C.1, Fig. 3"),
        Claim("In the special case lambda_t = 1/2, symmetry is never broken.", 0, half_max, half_max <= 1e-6,
              "measured: largest distance over all runs and steps with lambda = 1/2; held if <= 1e-6.",
              f"{SOURCE}, App. C.1, Fig. 3"),
    ]
    return FigureResult(
        caption=f"Fig. 3: distance between the cloned filter and its origin after opening one filter at step "
                f"{s.open_at} (mean and one std over {s.repetitions} runs), for the proposed, random, constant and "
                f"1/2 splits (t = {s.t}).",
        panels=[Panel("distance", plotly=fig, mpl=mfig)], claims=claims, scaling=s.scaling(desc),
    )


@register_figure("tunnels_fig3", paper="tunnels", title="Fig. 3: symmetry breaking between a clone and its origin")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_fig3(scale, data_dir, cache_dir(out), progress)
    finally:
        torch.set_num_threads(n)
