"""Tunnels, Table 3 (App. C.2): wall-clock overhead of tunnel opening relative to a training run.

The paper reports the wall-clock time (mean and std over its runs) of the full experimental runs and concludes that
"the overhead from the tunnel opening procedure is a one-time insignificant addition when compared to the
variability of compute times". Here the runs of Fig. 2 right (``figures/tunnels/_deep.py``, one cached computation
for both figures) are timed: each run is its repetition's training up to the opening step plus its continuation
(control, proposed or random); the opening itself is timed inside the run and split into the pass over the data for
the matrices A, the eigen-analysis (SVD of each unit's A) and the rest (surgery, BatchNorm reset, optimizer
rebuild). The paper's numbers are shown as the paper's (its MNIST runs are Sec. 4.1's single-layer network, its
ImageNet runs the deep CNN); ours are measured on one CPU core of a shared machine.

At the medium scale the runs include Fig. 2 right's perturbed-GD and NEON arms, timed the same way (the paper's
"Noisy SGD" and "NEON" rows); their run times include the perturbations and NEON's gradient differences.

Claims (thresholds fixed before measuring): the mean opening overhead of the proposed runs is below the standard
deviation of the control runs' wall-clock times (the paper's comparison), and below 5% of the mean proposed run.
"""

from __future__ import annotations

from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, register_figure
from figures.tunnels._deep import deep_figure
from figures.tunnels._deep_setup import PAPER_TABLE3, DeepSetup
from figures.tunnels._setup import LINE_COLORS
from figures.verdict import at_least

SHARE_LIMIT = 0.05  # "insignificant": less than 5% of the run
PAPER_OPEN_STEP = 5000  # App. B.3: the opening happens at step 5000


def run_times(res: dict[str, Any]) -> dict[str, np.ndarray]:
    """Wall-clock seconds per arm and repetition: training to the opening plus the continuation (incl. opening).

    Args:
        res: The result of :func:`figures.tunnels._deep.deep_runs`.

    Returns:
        ``{arm: array (repetitions,)}``.
    """
    pre = np.asarray(res["times"]["pre"])
    return {a: pre + np.asarray(post) for a, post in res["times"]["post"].items()}


def _ms(a: np.ndarray) -> tuple[float, float]:
    return float(np.mean(a)), float(np.std(a))


@register_figure(
    "tunnels_table3", paper="tunnels", title="Table 3: wall-clock overhead of tunnel opening", scales=("medium",)
)
@deep_figure
def run_table3(s: DeepSetup, res: dict[str, Any]) -> FigureResult:
    """Table 3 at a scale (or for an explicit setup) (signature: :func:`~figures.tunnels._deep.deep_figure`)."""
    T = res["times"]
    runs = run_times(res)
    opening = {k: np.asarray(T[k]["proposed"]) for k in ("open", "a", "eigen")}
    rest = opening["open"] - opening["a"] - opening["eigen"]
    share = opening["open"] / runs["proposed"]
    steps_eq = float(np.mean(opening["open"])) / res["step_time"]

    # ------------------------------------------------------------------ the table: paper's rows, then ours
    where = s.scale
    rows: list[tuple[str, str, float, float]] = []
    for ds, arms in PAPER_TABLE3.items():
        for arm, (m, sd) in arms.items():
            rows.append((f"paper, {ds}", f"{arm} run [s]", m, sd))
    for a in s.arms:
        rows.append((f"ours ({where})", f"{a} run [s]", *_ms(runs[a])))
    for label, v in (
        ("opening, total (proposed) [s]", opening["open"]),
        ("  A: pass over the data [s]", opening["a"]),
        ("  eigen-analysis (SVD) [s]", opening["eigen"]),
        ("  surgery + resets [s]", rest),
        ("opening, total (random) [s]", np.asarray(T["open"]["random"])),
        ("control restart (resets only) [s]", np.asarray(T["open"]["control"])),
    ):
        rows.append((f"ours ({where})", label, *_ms(v)))
    rows.append((f"ours ({where})", "opening share of the proposed run [%]", *_ms(100 * share)))

    def fmt(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"

    cells = [[r[0] for r in rows], [r[1] for r in rows], [fmt(r[2]) for r in rows], [fmt(r[3]) for r in rows]]
    header = ["source", "what", "mean", "std"]
    fig = go.Figure(
        go.Table(
            header={"values": header, "align": "left"},
            cells={"values": cells, "align": ["left", "left", "right", "right"]},
        )
    )
    fig.update_layout(
        title=f"Table 3: wall-clock time of the runs and of tunnel opening (ours: {s.repetitions} "
        "repetitions, one CPU core)",
        height=40 + 28 * (len(rows) + 2),
    )

    mfig = matplotlib.figure.Figure(figsize=(11, 8.5))
    ax_t, ax_b = mfig.subplots(2, 1, height_ratios=[2, 1])
    ax_t.axis("off")
    tab = ax_t.table(
        cellText=[list(c) for c in zip(*cells)],
        colLabels=header,
        cellLoc="left",
        colWidths=[0.2, 0.44, 0.18, 0.18],
        bbox=[0.0, 0.0, 1.0, 1.0],
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    ax_t.set_title("Table 3: the paper's wall-clock times (GPU) and ours (one CPU core)", fontsize=10, pad=8)
    # bars: our runs split into training and opening parts, error bar = std of the run total
    pos = np.arange(len(s.arms))
    train = np.array([np.mean(runs[a] - np.asarray(T["open"][a])) for a in s.arms])
    parts = {
        "A (data pass)": [np.mean(T["a"][a]) for a in s.arms],
        "eigen-analysis": [np.mean(T["eigen"][a]) for a in s.arms],
        "surgery + resets": [
            np.mean(np.asarray(T["open"][a]) - np.asarray(T["a"][a]) - np.asarray(T["eigen"][a])) for a in s.arms
        ],
    }
    ax_b.barh(
        pos, train, color="#c7c7c7", edgecolor=[LINE_COLORS[a] for a in s.arms], linewidth=2, label="training steps"
    )
    left = train.copy()
    for (name, v), c in zip(parts.items(), ("#d62728", "#9467bd", "#7f7f7f")):
        ax_b.barh(pos, v, left=left, color=c, label=name)
        left = left + np.asarray(v)
    ax_b.errorbar(left, pos, xerr=[np.std(runs[a]) for a in s.arms], fmt="none", ecolor="k", capsize=4)
    ax_b.set_yticks(pos, list(s.arms))
    ax_b.set(
        xlabel="wall-clock seconds per run (ours; error bar: one std of the run)",
        title=f"our runs: {s.total_steps} Adam steps, opening after step {s.open_at}",
    )
    ax_b.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    mfig.tight_layout()

    c_mean, c_std = _ms(runs["control"])
    o_mean = float(np.mean(opening["open"]))
    p_mean = float(np.mean(share))
    book = ClaimBook("tunnels_table3", scale=s.scale)
    claims = [
        book(
            "overhead-insignificant",
            round(o_mean, 3),
            held=o_mean < c_std,
            a=np.mean(opening["a"]),
            eigen=np.mean(opening["eigen"]),
            rest=np.mean(rest),
            std=c_std,
            n=s.repetitions,
            mean=c_mean,
        ),
        book(
            "opening-share-small",
            round(100 * p_mean, 2),
            held=p_mean < SHARE_LIMIT,
            premises=[
                at_least(
                    "the runs are as long as the paper's (it opens at step 5000 of a longer run)",
                    s.total_steps,
                    PAPER_OPEN_STEP,
                    detail="a one-time cost is 'insignificant' only relative to a run's length",
                )
            ],
            limit=SHARE_LIMIT,
            n=s.repetitions,
            std=100 * float(np.std(share)),
            steps=steps_eq,
            step_ms=1000 * res["step_time"],
            total=s.total_steps,
            open_at=s.open_at,
        ),
    ]
    return FigureResult(
        caption=f"Table 3: wall-clock time of the Fig. 2 right runs ({s.repetitions} repetitions per arm; a run = "
        f"training to step {s.open_at} plus its continuation to step {s.total_steps}) and of the tunnel "
        "opening inside them (A over the full training data, SVDs, surgery), next to the paper's Table 3 "
        "(its times are GPU seconds of much longer runs; its MNIST rows are the single-layer network of Sec. "
        "4.1, which is not timed here).",
        panels=[Panel("times", plotly=fig, mpl=mfig)],
        claims=claims,
        scaling={**s.scaling(res["data"]), "timing": "time.perf_counter wall clock, one torch thread, shared machine"},
    )
