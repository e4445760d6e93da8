"""Tunnels, Fig. 3 (App. C.1): how fast the clone's symmetry with its original is broken, per choice of lambda.

From the verified saddle of Fig. 1 left (``figures/tunnels/_setup.py``), SGD runs; at step 50 one
filter (the largest rho) is opened with the proposed ``lambda_t``, a random direction of the same norm, a
constant vector (``1/2 + t / sqrt(L)`` in every entry) or ``lambda = 1/2``, and the distance
``||K_u - K_u'||_2`` between the filter and its clone is recorded every 5 steps until the closing (step 300;
the runs are those of Fig. 1 left, shared through the cache). Claims: the proposed split
breaks the symmetry fastest (largest distance 50 steps after opening), and ``1/2`` never breaks it.
"""

from __future__ import annotations

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult
from figures.tunnels._plots import band_figure
from figures.tunnels._setup import COLORS, SaddleStart, paired, saddle_premises, single_layer_figure

MODES = ("proposed", "random", "constant", "half")
WINDOW = 50  # steps after opening at which "fastest" is judged (fixed before measuring)
HALF_TOL = 1e-6  # "never broken": the distance stays below this


@single_layer_figure("tunnels_fig3", "Fig. 3: symmetry breaking between a clone and its origin", medium=False)
def run_fig3(st: SaddleStart) -> FigureResult:
    """Fig. 3 at a scale (or for an explicit setup) (signature: :func:`~figures.tunnels._setup.saddle_figure`)."""
    s, info = st.setup, st.info
    res = {m: st.arm(f"open_{m}") for m in MODES}
    dist = {m: np.asarray(r["dist"], dtype=float) for m, r in res.items()}
    steps = np.asarray(res["proposed"]["dist_steps"])
    stats = {m: (d.mean(0), d.std(0)) for m, d in dist.items()}
    i_w = min(int(np.searchsorted(steps, s.open_at + WINDOW)), len(steps) - 1)
    at_w = {m: d[:, i_w] for m, d in dist.items()}
    half_max = float(np.max(dist["half"]))
    fig, mfig, ax = band_figure(
        steps,
        stats,
        COLORS,
        (6, 4),
        "Fig. 3: distance between the cloned filter and its origin",
        "step",
        "||K_u - K_u'||",
        short_title="Fig. 3: symmetry breaking after opening",
    )
    premises = saddle_premises(info)
    book = ClaimBook("tunnels_fig3", scale=s.scale)
    means = ", ".join(f"{m} {at_w[m].mean():.3g}" for m in MODES)
    claims = [
        book(
            "proposed-breaks-symmetry-faster",
            *paired(at_w["proposed"], at_w[other]),
            premises=premises,
            other=other,
            window=WINDOW,
            n=s.repetitions,
            means=means,
        )
        for other in ("random", "constant")
    ]
    claims.append(
        book(
            "half-never-breaks-symmetry",
            half_max,
            held=half_max <= HALF_TOL,
            premises=premises,
            n=s.repetitions,
            tol=HALF_TOL,
            others=min(float(at_w[m].mean()) for m in ("proposed", "random", "constant")),
        )
    )
    caption = (
        f"Fig. 3: distance between the cloned filter and its origin from the opening of one filter at step "
        f"{s.open_at} to its closing at step {s.close_at} (mean and one std over {s.repetitions} runs), for "
        f"the proposed, random, constant and 1/2 splits (t = {s.t}), from the verified saddle of Fig. 1 left "
        f"(gradient norm {info['grad_norm']:.2g}, smallest Hessian eigenvalue {info['min_eig']:.3g})."
    )
    return st.result(caption, "distance", fig, mfig, claims)
