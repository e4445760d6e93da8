"""Tunnels, Fig. 3 (App. C.1): how fast the clone's symmetry with its original is broken, per choice of lambda.

From the verified saddle of Fig. 1 left (``figures/tunnels/_setup.py``), SGD runs; at step 50 one
filter (the largest rho) is opened with the proposed ``lambda_t``, a random direction of the same norm, a
constant vector (``1/2 + t / sqrt(L)`` in every entry) or ``lambda = 1/2``, and the distance
``||K_u - K_u'||_2`` between the filter and its clone is recorded every 5 steps until the closing (step 300;
the runs are those of Fig. 1 left, shared through the cache). Claims: the proposed split
breaks the symmetry fastest (largest distance 50 steps after opening), and ``1/2`` never breaks it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go

from figures.contract import Claim, FigureResult, Panel, Scale, cache_dir, register_figure
from figures.tunnels._setup import (
    COLORS,
    SOURCE,
    SaddleStart,
    band_traces,
    saddle_figure,
    saddle_premises,
)
from figures.verdict import paired_effect, verdict_for

MODES = ("proposed", "random", "constant", "half")
WINDOW = 50  # steps after opening at which "fastest" is judged (fixed before measuring)
HALF_TOL = 1e-6  # "never broken": the distance stays below this


@saddle_figure
def run_fig3(st: SaddleStart) -> FigureResult:
    """Fig. 3 at a scale (or for an explicit setup) (signature: :func:`~figures.tunnels._setup.saddle_figure`)."""
    s, desc, info = st.setup, st.desc, st.info
    res = {m: st.arm(f"open_{m}") for m in MODES}
    dist = {m: np.asarray(r["dist"], dtype=float) for m, r in res.items()}
    steps = np.asarray(res["proposed"]["dist_steps"])
    stats = {m: (d.mean(0), d.std(0)) for m, d in dist.items()}
    i_w = min(int(np.searchsorted(steps, s.open_at + WINDOW)), len(steps) - 1)
    at_w = {m: d[:, i_w] for m, d in dist.items()}
    half_max = float(np.max(dist["half"]))
    fig = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=(6, 4))
    ax = mfig.add_subplot()
    for m, (mu, sd) in stats.items():
        fig.add_traces(band_traces(go, steps, mu, sd, m, COLORS[m]))
        ax.plot(steps, mu, color=COLORS[m], label=m)
        ax.fill_between(steps, mu - sd, mu + sd, color=COLORS[m], alpha=0.2)
    fig.update_layout(
        title="Fig. 3: distance between the cloned filter and its origin",
        xaxis_title="step",
        yaxis_title="||K_u - K_u'||",
    )
    ax.set(xlabel="step", ylabel="||K_u - K_u'||", title="Fig. 3: symmetry breaking after opening")
    ax.legend()
    premises = saddle_premises(info)
    src = f"{SOURCE}, App. C.1, Fig. 3"
    claims = []
    for other in ("random", "constant"):
        e = paired_effect(at_w["proposed"], at_w[other])
        claims.append(
            Claim(
                f"Symmetry is broken faster using our proposed method than with a {other} lambda.",
                None,
                (at_w["proposed"] - at_w[other]).tolist(),
                detail=f"per repetition: ||K_u - K_u'|| {WINDOW} steps after opening, proposed minus {other} "
                f"(paired by data order, n={s.repetitions}); {e}. Means: "
                + ", ".join(f"{m} {at_w[m].mean():.3g}" for m in MODES)
                + ". Held if the interval lies above 0.",
                source=src,
                premises=premises,
                effect=e,
                verdict=verdict_for(e, direction=1),
                scale=s.scale,
            )
        )
    claims.append(
        Claim(
            "In the special case lambda_t = 1/2, symmetry is never broken.",
            0,
            half_max,
            half_max <= HALF_TOL,
            f"largest distance over all {s.repetitions} runs and every recorded step with lambda = 1/2 "
            f"(exact check); held if <= {HALF_TOL:g} (fixed before measuring). In exact arithmetic it is "
            "0; in float32 the clone and its origin sit in different channels whose sums round "
            "differently, and the saddle's negative curvature amplifies that rounding (the other splits "
            f"reach {min(float(at_w[m].mean()) for m in ('proposed', 'random', 'constant')):.3g} or more).",
            src,
            premises=premises,
            scale=s.scale,
        )
    )
    return FigureResult(
        caption=f"Fig. 3: distance between the cloned filter and its origin from the opening of one filter at step "
        f"{s.open_at} to its closing at step {s.close_at} (mean and one std over {s.repetitions} runs), for "
        f"the proposed, random, constant and 1/2 splits (t = {s.t}), from the verified saddle of Fig. 1 left "
        f"(gradient norm {info['grad_norm']:.2g}, smallest Hessian eigenvalue {info['min_eig']:.3g}).",
        panels=[Panel("distance", plotly=fig, mpl=mfig)],
        claims=claims,
        scaling=s.scaling(desc),
    )


@register_figure("tunnels_fig3", paper="tunnels", title="Fig. 3: symmetry breaking between a clone and its origin")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return run_fig3(scale, data_dir, cache=cache_dir(out, "tunnels"), progress=progress)
