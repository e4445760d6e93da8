"""Tunnels, Fig. 4 (App. C.5): the full runs of every experiment side by side, and whether the methods end equal.

The paper's Fig. 4 shows the full-length runs of the three experiments (single-layer opening and closing, single-layer
weight reorganization, deep-CNN opening) and notes that "all optimization methods converge to the same loss". No run
is trained here: the panels reuse the cached runs of Figs. 1 left, 2 left (``figures/tunnels/_setup.py``) and 2 right
(``figures/tunnels/_deep.py``); those runs are already their full length. The figure has a medium setting: the
single-layer runs 2,000 SGD steps instead of 400 and the deep CNN adds Fig. 2 right's perturbed-GD and NEON arms (the
same cached runs as Figs. 1 left, 2 left, 2 right and Tables 3 and 4 at medium).

Claims (decided by an equivalence test fixed before measuring: the 95% interval of the paired difference of the final
losses inside +-2% of the control's final loss -> held; excluding 0 -> not held; else inconclusive): per experiment,
the proposed method ends at the same loss as each other method. Premise: the runs converged (the project's default
tolerance, < 1% relative change at the end of the run, per repetition). Against the control, a second premise: the
control can leave its start. It cannot here, in any experiment: the single-layer control starts at an exact saddle of
identical filters and the deep one in a tied subspace, both built so that nothing but an intervention leaves them
(the paper's controls are runs that got stuck). Against such a control "the same final loss" says only whether the
proposed method escaped, which Figs. 1 left, 2 left and 2 right test, so those comparisons are not tested (until
2026-12-07 they were decided: not held at medium, held for the deep CNN at quick, where nothing escaped).

* Single layer: the mean full-batch loss of the last 10% of the run against the 10% before. At the quick scale (400
  SGD steps at learning rate 1.0) the runs sit at a noise floor and the change has either sign: control -0.8% to
  +2.1%, proposed reorganization -0.6% to +1.1%, proposed opening -0.7% to +0.9%, PGD -0.8% to +0.5%, NEON -0.4% to
  +0.7% (5 repetitions each), so "the same final loss" is not tested. Tried outside the gallery: 2,000-step runs
  (windows of 200 steps) meet it (control -0.5% to +0.1%, proposed reorganization -0.75% to -0.34%) but cost about
  4.7x per arm, beyond the quick scale's budget: the medium setting. Measured at medium (5 repetitions, load 5-9):
  the premise is met, changes 0.02% to 0.71% (opening and closing) and 0.02% to 0.78% (reorganization); the
  proposed method ends at the same loss as every other method (random opening +0.0015 [-0.0001, +0.0030], random
  reorganization +0.008 [-0.002, +0.017], PGD +0.002 [-0.009, +0.014], NEON +0.004 [-0.006, +0.014]; margin +-2%
  of the control's loss, 0.023). Against the control it measured -0.109 and -0.107: the control cannot leave its
  saddle at all (identical filters), so it ends above the others by construction (not tested since 2026-12-07).
  Cost: the seven single-layer arms at 2,000 steps took 147 s of wall clock at load 5-9 (within the 315 s of CPU,
  one thread, of all six medium Tunnels figures). A first version used a 5% tolerance, which passed runs whose loss
  was visibly still falling. Since the evening of 2026-12-07 the quick and medium runs use learning rate 0.6 instead
  of 1.0 (to meet the control's two-sided stuck premise, ``make_setup``); at quick, 400 steps then meet this
  convergence premise, and the proposed method ends at the same loss as the random opening (+0.0001 [-0.0011,
  +0.0012]), random reorganization (+0.0034 [-0.0047, +0.0116]), PGD (-0.0041 [-0.0130, +0.0049]) and NEON
  (+0.0009 [-0.0039, +0.0058]): held, where they were not tested (load 12-18). Medium not rerun at 0.6.
* Deep CNN (Fig. 2 right's built plateau): the mean training loss over fixed batches (train-mode BatchNorm) at the end
  against ``window`` steps before; minibatch means carry about 1% sampling noise, too much for a 1% bound. At medium
  the premise covers the baseline arms too, and NEON's runs have not settled (changes 2.9% and 4.6% in two of three
  repetitions: each escape step raises the loss and the next comes 25 steps later; PGD's 0.3-0.8%), so the deep
  claims are not tested there (at quick, with three arms, they are held).
"""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes
from plotly.subplots import make_subplots

from figures.claims import ClaimBook
from figures.contract import Claim, FigureResult
from figures.tunnels._deep import deep_runs
from figures.tunnels._deep_setup import DeepSetup, make_deep_setup
from figures.tunnels._setup import (
    LINE_COLORS,
    SaddleStart,
    mean_std,
    paired,
    saddle_premises,
    single_layer_figure,
    window_mean,
)
from figures.verdict import Premise, at_most, equivalence_verdict

EQUIV = 0.02  # "the same loss": the paired difference within +-2% of the control's final loss
CONV_LAST, CONV_TOL = 0.1, 0.01  # the project's convergence default: < 1% change over the last 10%
SINGLE_TRAP = "starts at an exact saddle whose filters are identical, which SGD cannot make differ"
DEEP_TRAP = "starts in the tied subspace (conv4 and conv5 one filter each), which Adam cannot leave"
SINGLE = {
    "opening and closing": {"control": "control", "proposed": "open_proposed", "random": "open_random"},
    "weight reorganization": {
        "control": "control",
        "proposed": "reorg_proposed",
        "random": "reorg_random",
        "pgd": "pgd",
        "neon": "neon",
    },
}


def runs_converged(curves: np.ndarray, what: str) -> Premise:
    """Relative change from the mean of the 10% before the last 10% to the mean of the last 10%, per repetition."""
    k = max(1, int(round(curves.shape[1] * CONV_LAST)))
    a, b = curves[:, -2 * k : -k].mean(1), curves[:, -k:].mean(1)
    return at_most(
        f"the {what} runs converged",
        (np.abs(b - a) / a).tolist(),
        CONV_TOL,
        detail=f"relative change between the means of the last two {CONV_LAST:.0%} windows of the run "
        "(window means: minibatch and SGD noise averaged)",
    )


def free_control(trapped: str) -> Premise:
    """Premise of a comparison with the control: it can leave its start, as the paper's stuck runs could."""
    return Premise(
        "the control can leave its start (it is stuck, not confined by construction)",
        0.0 if trapped else 1.0,
        1.0,
        not trapped,
        detail=f"0: the control {trapped}, so it ends above any method that escapes whatever the methods do; "
        "the paper's controls are runs that got stuck in a flat area, and its App. C.5 says 'all optimization "
        "methods converge to the same loss'"
        if trapped
        else "1: the control is a run that got stuck, as the paper's",
    )


def _claims(
    experiment: str,
    final: dict[str, np.ndarray],
    premises: list,
    scale: str,
    trapped: str,
    what: str = "final full-batch loss (mean over the last 10% of the run)",
) -> list[Claim]:
    """The proposed method against each other one: the same final loss, within +-``EQUIV`` of the control's.

    ``trapped`` says how the control was built to stay stuck (an exact saddle of identical filters, a tied
    subspace), or ``""`` for a control that is only stuck: against a trapped control the comparison is not tested.
    """
    book = ClaimBook("tunnels_fig4", scale=scale)
    margin = EQUIV * float(final["control"].mean())
    out = []
    for other in final:
        if other == "proposed":
            continue
        diff, e = paired(final["proposed"], final[other])
        out.append(
            book(
                "same-final-loss",
                diff,
                e,
                premises=[*premises, free_control(trapped)] if other == "control" else premises,
                verdict=equivalence_verdict(e, margin),
                experiment=experiment,
                other=other,
                what=what,
                tol=EQUIV,
                margin=margin,
            )
        )
    return out


def _draw(fig: go.Figure, ax: Axes, col: int, x: np.ndarray, curves: dict[str, list], legend: bool) -> None:
    """Each method's mean curve over the repetitions: a line in plotly's subplot ``col``, with a std band in mpl."""
    for m, rows in curves.items():
        mu, sd = mean_std(rows)
        color = LINE_COLORS[m]
        fig.add_trace(
            go.Scatter(x=x, y=mu, mode="lines", name=m, line={"color": LINE_COLORS[m]}, showlegend=legend),
            row=1,
            col=col,
        )
        ax.plot(x, mu, color=color, label=m)
        ax.fill_between(x, mu - sd, mu + sd, color=color, alpha=0.15)


@single_layer_figure("tunnels_fig4", "Fig. 4: full runs of the three experiments")
def run_fig4(st: SaddleStart, deep_setup: DeepSetup | None = None) -> FigureResult:
    """Fig. 4 at a scale (or for explicit setups) (signature: :func:`~figures.tunnels._setup.saddle_figure`)."""
    s, info = st.setup, st.info
    ds = deep_setup or make_deep_setup(st.scale)
    deep = deep_runs(ds, st.data_dir, st.cache, st.progress)
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("1 layer: opening and closing", "1 layer: reorganization", "5-layer CNN: opening"),
    )
    mfig = matplotlib.figure.Figure(figsize=(15, 4.2))
    axes = mfig.subplots(1, 3)
    claims: list[Claim] = []
    for col, (name, arms) in enumerate(SINGLE.items()):
        res, steps = st.arms(arms)
        _draw(fig, axes[col], col + 1, steps, {m: r["losses"] for m, r in res.items()}, legend=col == 1)
        axes[col].set(xlabel="step", ylabel="full-batch training loss", title=f"1 layer: {name}")
        axes[col].legend(fontsize=7)
        curves = np.concatenate([np.asarray(r["losses"]) for r in res.values()])
        final = {m: window_mean(r, s.total_steps * (1 - CONV_LAST), s.total_steps) for m, r in res.items()}
        premises = [*saddle_premises(info), runs_converged(curves, name)]
        claims += _claims(f"1 layer, {name}", final, premises, s.scale, SINGLE_TRAP)
    n_bins = len(deep["curves"]["control"][0])
    x = np.minimum(np.arange(n_bins) * ds.bin + ds.bin / 2, ds.total_steps)
    _draw(fig, axes[2], 3, x, {a: deep["curves"][a] for a in ds.arms}, legend=False)
    axes[2].set(xlabel="step", ylabel=f"minibatch loss (mean of {ds.bin} steps)", title="5-layer CNN: opening")
    axes[2].legend(fontsize=7)
    dfinal = {a: np.asarray(deep["full_end"][a]) for a in ds.arms}
    tail = np.concatenate([np.asarray(deep["full_tail"][a]) for a in ds.arms])
    dend = np.concatenate([dfinal[a] for a in ds.arms])
    dconv = at_most(
        "the deep-CNN runs converged",
        (np.abs(dend - tail) / tail).tolist(),
        CONV_TOL,
        detail=f"relative change of the mean training loss over fixed batches (train-mode BatchNorm) over "
        f"the last {ds.window} of {ds.total_steps} steps, per arm and repetition (the minibatch "
        "curves carry about 1% sampling noise in a window)",
    )
    claims += _claims(
        "5-layer CNN, opening",
        dfinal,
        [dconv],
        ds.scale,
        DEEP_TRAP if ds.start == "tied" else "",
        what="final training loss over fixed batches (train-mode BatchNorm)",
    )
    fig.update_xaxes(title_text="step")
    fig.update_layout(title="Fig. 4: full runs of the three experiments", height=430)
    mfig.suptitle("Fig. 4: full runs of the three experiments")
    mfig.tight_layout()
    caption = (
        f"Fig. 4: the full runs (mean and one std over the repetitions) of the single-layer experiments "
        f"({s.total_steps} SGD steps from the verified saddle; Figs. 1 left and 2 left) and of the deep CNN "
        f"({ds.total_steps} Adam steps; Fig. 2 right), reused from their cached runs."
    )
    return st.result(
        caption, "loss", fig, mfig, claims, deep=f"{ds.total_steps} Adam steps, {ds.width} filters, {deep['data']}"
    )
