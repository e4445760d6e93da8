"""Tunnels, Fig. 2 left (Sec. 4.3): weight reorganization vs random reorganization, perturbed GD and NEON.

Same start as Fig. 1 left: a verified saddle where plain SGD stays exactly stuck (``figures/tunnels/_setup.py``: a
1-filter network at a critical point, its filter duplicated). At step 50: a reorganization (paper: "merge 4 filters into
2", then reopen 2 in the freed slots, without saying which; here the closest pairs are merged and the largest-rho
filters reopened; quick, with 2 filters: 1 merge) with the proposed or a random lambda; or, from step 50 on, perturbed
gradient descent (Jin et al. 2017: a point of the ball of radius 0.5 added every 25 steps, no gradient threshold:
minibatch gradients are never small here) or NEON (Xu & Yang 2017: power iteration on gradient differences over 256
training images, 50 iterations of step 0.4 (below 1 / the largest Hessian eigenvalue at the saddle, 2.15), probe radius
0.01, escape step 0.5, every 25 steps). The baselines' constants are this package's choices (the paper gives none), set
so that each one measurably moves the weights (a premise, checked: the norm of each weight change). A first version
probed NEON with 10 iterations of step 0.05: its curvature estimate stayed positive (+0.009 to +0.018) and it never
fired, so it equalled the control. Medium scale: the same runs, 2,000 SGD steps instead of 400 (the runs of Fig. 4 at
medium, shared).

Claims (paired over the repetitions, which share a data order across arms): the proposed reorganization escapes and
beats random reorganization, perturbed GD and NEON. "Escapes" is an escape as in Figs. 1 left and 2 right: the mean loss
after the reorganization (steps 55 to the end, the window of every claim here) lies below the control's by more than a
stuck control may drop, 2% of the loss at the opening (``STUCK_TOL``: the premise's bound and the other figures' escape,
not chosen for this claim); held if the interval lies above 2%, not held if below. Until 2026-12-07 it was "lower than
the control" (interval above 0), which held at quick on a difference of 0.84% of the loss [0.23%, 1.45%] that left the
proposed arm above the saddle's loss. The window was kept; the detail gives the last 50 steps as information (quick,
2026-12-07: 2.68% [2.00%, 3.36%]; there the proposed arm's mean loss, 1.153, is still above the saddle's, 1.145, and the
control's is 1.185).

Those numbers are from SGD at learning rate 1.0, where the control rose 3-7% above the saddle's loss (the premise then
counted only a drop). Since the evening of 2026-12-07 the premise is two-sided and the quick and medium runs use
learning rate 0.6 (``figures/tunnels/_setup.py``, ``make_setup``: the largest of a grid whose control stays within 2%
of the saddle's loss). Quick at 0.6 (load 12-18): the escape +0.24% [-0.21%, +0.69%], not held as before; random
reorganization still beats the proposed one (-0.49% of the loss [-0.95%, -0.04%] absolute: -0.0049 [-0.0095,
-0.0004]), not held; against perturbed GD +0.0010 [-0.0048, +0.0068] and NEON -0.0022 [-0.0072, +0.0028], both
inconclusive (were not held: at 1.0 each baseline ended lower). Means over steps 55-400: control 1.1569, proposed
1.1542, random 1.1493, PGD 1.1552, NEON 1.1520. Medium not rerun at 0.6.
"""

from __future__ import annotations

from figures.claims import ClaimBook
from figures.contract import FigureResult
from figures.tunnels._plots import band_figure
from figures.tunnels._setup import (
    LINE_COLORS,
    NEON_IMAGES,
    NEON_KW,
    PGD_KW,
    STUCK_TOL,
    SaddleStart,
    moved_premise,
    paired,
    single_layer_figure,
    window_mean,
)
from figures.verdict import paired_effect, superiority_verdict

RUNS = {"control": "control", "proposed": "reorg_proposed", "random": "reorg_random", "pgd": "pgd", "neon": "neon"}
WINDOW = 50  # steps at the end of the run, for the information the escape claim's detail gives (as Fig. 1 left)
BASELINES = {"random": "random weight reorganization (same magnitude)", "pgd": "perturbed GD", "neon": "NEON"}


@single_layer_figure("tunnels_fig2_left", "Fig. 2 left: weight reorganization vs PGD and NEON")
def run_fig2_left(st: SaddleStart) -> FigureResult:
    """Fig. 2 left at a scale (or for an explicit setup) (signature: :func:`~figures.tunnels._setup.saddle_figure`)."""
    s, info = st.setup, st.info
    res, steps, stats = st.curves(RUNS)
    after = {r: window_mean(v, s.open_at + 5, s.total_steps) for r, v in res.items()}
    at_open = window_mean(res["control"], s.open_at, s.open_at)
    final = {r: window_mean(v, s.total_steps - WINDOW, s.total_steps) for r, v in res.items()}
    # "escapes": lower than the control by more than a stuck control may drop (STUCK_TOL of the loss at the opening,
    # the premise's bound and Figs. 1 left / 2 right's escape), not merely lower: a plain test against 0 called a
    # 0.85% difference (the proposed arm still above the saddle's loss) an escape
    rel_escape = ((after["control"] - after["proposed"]) / at_open).tolist()
    e_escape = paired_effect(rel_escape)
    base = st.premises(res["control"])
    moved = {"pgd": moved_premise(res["pgd"], "perturbed GD"), "neon": moved_premise(res["neon"], "NEON")}

    fig, mfig, ax = band_figure(
        steps,
        stats,
        LINE_COLORS,
        (6.5, 4.2),
        "Fig. 2 left: weight reorganization vs baselines",
        "step",
        "full-batch training loss",
        short_title="Fig. 2 left: reorganization vs baselines",
        alpha=0.15,
    )
    fig.add_vline(x=s.open_at, line_dash="dot")
    ax.axvline(s.open_at, ls=":", color="k")

    book = ClaimBook("tunnels_fig2_left", scale=s.scale)
    how = {
        "settled": s.open_at + 5,
        "total": s.total_steps,
        "n": s.repetitions,
        "means": ", ".join(f"{r} {after[r].mean():.4f}" for r in RUNS),
    }
    claims = [
        book(
            "reorganization-escapes",
            rel_escape,
            e_escape,
            premises=base,
            verdict=superiority_verdict(e_escape, STUCK_TOL),
            margin=STUCK_TOL,
            at_open=float(at_open.mean()),
            saddle=info["loss"],
            absolute=paired_effect(after["control"], after["proposed"]),
            window=WINDOW,
            at_end=paired_effect((final["control"] - final["proposed"]) / at_open),
            **how,
        )
    ]
    claims += [
        book(
            "reorganization-beats-baseline",
            *paired(after[other], after["proposed"]),
            premises=base + ([moved[other]] if other in moved else []),
            baseline=baseline,
            other=other,
            **how,
        )
        for other, baseline in BASELINES.items()
    ]
    fired = {r: [len(m) for m in res[r]["moves"]] for r in ("pgd", "neon")}
    caption = (
        f"Fig. 2 left: full-batch training loss (mean and one std over {s.repetitions} data orders) of SGD "
        f"from the verified saddle of Fig. 1 left (loss {info['loss']:.4f}, gradient norm "
        f"{info['grad_norm']:.2g}, smallest Hessian eigenvalue {info['min_eig']:.3g}): control, "
        f"reorganization at step {s.open_at} (proposed or random lambda, t = {s.t}), perturbed GD "
        f"(fired {fired['pgd']} times per run) and NEON (fired {fired['neon']} times per run) "
        "from that step on."
    )
    return st.result(
        caption,
        "loss",
        fig,
        mfig,
        claims,
        reorganized=f"1 merge + reopen ({s.scale}, 2 filters); paper: 2",
        pgd=f"radius {PGD_KW['radius']} every {PGD_KW['t_thres']} steps",
        neon=f"{NEON_KW['iterations']} iterations of step {NEON_KW['eta']}, radius {NEON_KW['radius']}, "
        f"escape step {NEON_KW['escape_step']}, every {NEON_KW['t_thres']} steps, gradient "
        f"differences on {NEON_IMAGES} images",
    )
