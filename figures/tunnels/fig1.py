"""Tunnels, Fig. 1: escaping a flat area by opening tunnels (left) and the gradient norm vs t (right).

Left (Sec. 4.1, App. B.1): the single-hidden-conv-layer sigmoid net starts at a verified saddle (a 1-filter
network at a float64 critical point, its filter duplicated: the control SGD run cannot leave it), then trains by
SGD; at step 50 filters are added by tunnel opening (proposed lambda_t, or a random lambda of the same norm) and
removed again by closing at step 300. Premises: the start is a critical point (gradient norm) and a saddle (a
negative Hessian eigenvalue), and the control stays stuck. Claims are paired over the repetitions (data orders).
The random opening's claim (Sec. 4.1: "Also note the comparison between adding filters using the proposed lambda_t
versus adding filters in a random fashion (using a randomly sampled lambda with equal magnitude as lambda_t), which
provides no improvement") is read as no improvement over the stuck network, the control: "which" attaches to the random
opening, the paragraph's improvement is leaving the flat area, and Sec. 4.4 says the same of the deep CNN ("the random
tunnel opening does not manage to escape the plateau"), which Fig. 2 right tests against the control. So: (control -
random) / loss at the opening while the tunnel is open, held if the interval lies below the 2% a stuck control may drop
(``STUCK_TOL``, the premise's bound, fixed before measuring), not held if above, else inconclusive. Until 2026-12-07 it
was tested as "random ends higher than proposed", which made the proposed arm's success part of the random arm's claim
(not held at quick: random ended 0.21% lower). Quick, 2026-12-07: +2.05% [+1.52%, +2.58%] while open (after closing, as
information: +2.83% [+2.21%, +3.44%]): inconclusive against the 2%, so the golden row went from not held to
inconclusive. The window (while the tunnel is open, where the random filters act) was fixed before this was
measured. At medium the window is the same (inconclusive), but at the end of the 2,000 steps the random arm lies
9.6% [8.6%, 10.7%] below the control, level with the proposed one: on the end of the run the claim would not hold
(given in the detail). "Even after we close the tunnel ... the model continues to remain unstuck" is the same escape
after closing: (control - proposed) / loss at the opening over the last 50 steps, held above the 2% (until
2026-12-07: control - proposed above 0; quick and medium verdicts unchanged, held).
The numbers above are from SGD at learning rate 1.0, where the control rose 6-7% above the saddle's loss within the
first quarter of the run (3-4% at its end), which the premise then allowed (it counted only a drop); the control's 2%
lead over the other arms was mostly that rise. Since the evening of 2026-12-07 the premise is two-sided and the quick
and medium runs use learning rate 0.6, the largest of a grid that meets it (``make_setup``): the control then stays
within 0.9-1.4% of the saddle's loss, and at quick (load 12-18, 2026-12-07) the opening escapes nothing. Drop when
opened -0.0003 [-0.0024, +0.0019] (inconclusive, as before); the random opening improves on the control by 0.18%
[0.09%, 0.28%] while open, below the 2%: held (was inconclusive); after closing the proposed arm lies 0.34% [0.23%,
0.46%] below the control, far from an escape: not held (was held). Means over the last 50 steps: control 1.1564,
proposed 1.1524, saddle 1.1449. The medium verdicts were not rerun at 0.6 (the control's premise is met there too:
within 1.05-1.31% over 2,000 steps).
Right (Sec. 4.2): a network trained to convergence by full-batch L-BFGS and damped Newton steps (float64); tunnels
are opened with several t and the squared full-batch gradient norm is measured right after opening, for 1, 2, ...
tunnels.
Shared settings, the cached saddle and the cached runs: ``figures/tunnels/_setup.py``. Left has a medium setting (the
same runs, 2,000 SGD steps instead of 400: the runs of Fig. 4 at medium, shared); right stays at quick.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch
from torch import nn
from tqdm.auto import tqdm

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, register_figure
from figures.tunnels._newton import lbfgs_then_newton
from figures.tunnels._plots import band_figure
from figures.tunnels._setup import (
    COLORS,
    STUCK_TOL,
    SaddleStart,
    initial_model,
    load_data,
    make_setup,
    paired,
    single_layer_figure,
    window_mean,
)
from figures.verdict import at_most, non_superiority_verdict, paired_effect, superiority_verdict
from landscape.plot import Line, plot_lines
from tunnels import open_tunnels, split_stats

F = nn.functional
ARMS_LEFT = {"control": "control", "proposed": "open_proposed", "random": "open_random"}
CONVERGED_TOL = 1e-3  # premise of Fig. 1 right: gradient norm of the converged network (float64)
POLISH_STEPS = 4  # damped Newton steps after L-BFGS (see converged_model)
POLISH_DAMPING = 1e-4
WINDOW = 50  # steps: "immediately after opening" and "at the end" (fixed before measuring)


@single_layer_figure("tunnels_fig1_left", "Fig. 1 left: tunnel opening escapes a flat area")
def run_left(st: SaddleStart) -> FigureResult:
    """Fig. 1 left at a scale (or for an explicit setup) (signature: :func:`~figures.tunnels._setup.saddle_figure`)."""
    s, info = st.setup, st.info
    res, steps, stats = st.curves(ARMS_LEFT)
    premises = st.premises(res["control"])
    at_open = {m: window_mean(r, s.open_at, s.open_at) for m, r in res.items()}
    soon = {m: window_mean(r, s.open_at + 5, s.open_at + WINDOW) for m, r in res.items()}
    while_open = {m: window_mean(r, s.open_at + 5, s.close_at) for m, r in res.items()}
    final = {m: window_mean(r, s.total_steps - WINDOW, s.total_steps) for m, r in res.items()}
    drop = {m: at_open[m] - soon[m] for m in res}
    # "provides no improvement": the random arm against the stuck control (not against the proposed arm), relative to
    # the loss at the opening, while the tunnel is open; an improvement smaller than the drop a control may show and
    # still count as stuck (STUCK_TOL, the premise's bound, fixed before measuring) is none
    rel_random = ((while_open["control"] - while_open["random"]) / at_open["control"]).tolist()
    e_random = paired_effect(rel_random)
    # "remains unstuck" after closing: still below the control by an escape (the same margin), not merely lower
    rel_unstuck = ((final["control"] - final["proposed"]) / at_open["control"]).tolist()
    e_unstuck = paired_effect(rel_unstuck)

    title = f"Fig. 1 left: {s.tunnels} filter(s) opened at step {s.open_at}, closed at {s.close_at}"
    fig, mfig, ax = band_figure(steps, stats, COLORS, (6.5, 4.2), title, "step", "full-batch training loss")
    for x in (s.open_at, s.close_at):
        fig.add_vline(x=x, line_dash="dot")
        ax.axvline(x, ls=":", color="k")
    fig.add_hline(y=info["loss"], line_dash="dash", line_color="gray")
    ax.axhline(info["loss"], ls="--", color="gray", lw=0.8, label="loss at the saddle")
    ax.legend(fontsize="small")  # again, with the saddle's line

    book = ClaimBook("tunnels_fig1_left", scale=s.scale)
    claims = [
        book(
            "drop-when-opened",
            *paired(drop["proposed"], drop["control"]),
            premises=premises,
            open_at=s.open_at,
            settled=s.open_at + 5,
            window_end=s.open_at + WINDOW,
            n=s.repetitions,
        ),
        book(
            "random-opening-no-better",
            rel_random,
            e_random,
            premises=premises,
            verdict=non_superiority_verdict(e_random, STUCK_TOL),
            settled=s.open_at + 5,
            close_at=s.close_at,
            margin=STUCK_TOL,
            at_open=float(at_open["control"].mean()),
            after_closing=paired_effect((final["control"] - final["random"]) / at_open["control"]),
            window=WINDOW,
            proposed_vs_random=paired_effect((while_open["random"] - while_open["proposed"]) / at_open["control"]),
        ),
        book(
            "unstuck-after-closing",
            rel_unstuck,
            e_unstuck,
            premises=premises,
            verdict=superiority_verdict(e_unstuck, STUCK_TOL),
            margin=STUCK_TOL,
            absolute=paired_effect(final["control"], final["proposed"]),
            window=WINDOW,
            close_at=s.close_at,
            final={m: f.mean() for m, f in final.items()},
            saddle=info["loss"],
        ),
    ]
    caption = (
        f"Fig. 1 left: full-batch training loss (mean and one std over {s.repetitions} minibatch orders) of SGD (lr "
        f"{s.lr}) from a verified saddle (a 1-filter network at a critical point, its filter duplicated "
        f"{s.filters}x: loss {info['loss']:.4f}, gradient norm {info['grad_norm']:.2g}, smallest Hessian "
        f"eigenvalue {info['min_eig']:.3g}, {info['n_negative']} negative). Identical filters get identical "
        f"gradients, so the control cannot leave the saddle's symmetric subspace. {s.tunnels} filter(s) opened "
        f"at step {s.open_at} (proposed lambda_t or a random lambda of the same norm, t = {s.t}) and closed at "
        f"step {s.close_at}. The paper's start (20 Newton steps of 0.1) left a gradient norm of 0.225 "
        "here, from which the control was not stuck; see figures/tunnels/_setup.py."
    )
    return st.result(caption, "loss", fig, mfig, claims)


def converged_model(s, data, steps: int = 300) -> nn.Module:
    """The network trained to convergence in float64 (Sec. 4.2): full-batch L-BFGS, then damped Newton steps.

    L-BFGS alone crawls along a flat valley here (the dense Hessian at its end point has eigenvalues down to
    about -1e-6): after 4 x 250 iterations its gradient norm was below the premise's 1e-3 on one machine and
    2.4e-3 on another, and it needs about 4,000 iterations (40 s) to stay below it. Up to
    :data:`POLISH_STEPS` Newton steps on the dense Hessian damped by :data:`POLISH_DAMPING` then take the
    gradient to about 2e-4, and the iterate with the smallest gradient norm is kept (L-BFGS's own included).
    Tried: undamped Newton diverged (loss 0.31 -> 1e3 in one step), damping 1e-6 diverged, 1e-5 reached 9e-5
    in 8 steps, 1e-3 stalled near 3e-4.
    """
    net = initial_model(s, tuple(data[0].shape[1:])).double()
    model, _ = lbfgs_then_newton(
        net,
        (data[0].double(), data[1]),
        max_iter=steps,
        tolerance_grad=1e-12,
        stop_below=1e-3,
        restarts=4,
        newton_steps=POLISH_STEPS,
        step_size=1.0,
        damping=POLISH_DAMPING,
    )
    return model


def _loss_grad(net: nn.Module, x, y) -> tuple[float, float]:
    params = [p for p in net.parameters()]
    loss = F.cross_entropy(net(x), y)
    g = torch.autograd.grad(loss, params)
    return float(loss.detach()), float(sum(float(gi.pow(2).sum()) for gi in g))


def run_right(
    scale: Scale | str = Scale.QUICK,
    data_dir: Path | None = None,
    *,
    cache: Path | None = None,
    progress: bool = False,
    setup=None,
    lbfgs_steps: int | None = None,
) -> FigureResult:
    """Fig. 1 right at a scale."""
    s = setup or make_setup(scale)
    quick = s.scale == "quick"
    if setup is None and quick:  # 512 images, a quarter relabelled (load_data): without noise the tiny net reaches
        s = dataclasses.replace(s, n_train=512)  # zero loss with weights running off to infinity
    data, desc = load_data(s, data_dir)
    net = converged_model(s, data, lbfgs_steps or (250 if quick else 2000))
    x, y = data[0].double(), data[1]
    loss0, g0 = _loss_grad(net, x, y)
    stats = split_stats(net, (x, y), F.cross_entropy, ["conv1"], batch_size=None)
    ts = np.linspace(0.0, 2.0, 9)
    counts = list(range(1, s.filters + 1))
    sq = np.zeros((len(counts), len(ts)))
    dloss = 0.0
    for i, n in enumerate(tqdm(counts, disable=not progress, leave=False, desc="fig1 right")):
        for j, t in enumerate(ts):
            opened, _ = open_tunnels(net, {"conv1": n}, t=float(t), stats=stats)
            lo, gq = _loss_grad(opened, x, y)
            sq[i, j] = gq
            dloss = max(dloss, abs(lo - loss0))
    # exponent of the jump: ||g'||^2 - ||g||^2 ~ t^p
    jump = sq[0, 1:] - g0  # the gradient before opening is small but not zero: fit the jump
    ok = jump > 0
    p = float(np.polyfit(np.log(ts[1:][ok]), np.log(jump[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")
    rho = stats.rho("conv1").sort(descending=True).values.numpy()
    # additivity: the jump of n tunnels vs the sum of the single-unit predictions 2 t^2 rho_i
    pred = np.array([[2 * t**2 * rho[:n].sum() for t in ts] for n in counts]) + g0
    add_err = float(np.max(np.abs(sq[:, -1] - pred[:, -1]) / pred[:, -1]))
    # the squared norm: the quantity the claims test (quadratic in t, additive in n)
    curves = [Line(ts, sq[i], f"{n} tunnel(s)", slot=i, markers=True) for i, n in enumerate(counts)]
    labels = {"xlabel": "t", "ylabel": "squared full-batch gradient norm"}
    title = "Fig. 1 right: squared gradient norm right after opening vs t"
    fig = plot_lines(curves, title=title, fig=go.Figure(), **labels)  # plotly's own template, as the other panels
    ax = matplotlib.figure.Figure(figsize=(6, 4)).add_subplot()
    mfig = plot_lines(curves, title="Fig. 1 right: ||g||^2 after opening", backend="matplotlib", ax=ax, **labels)
    premises = [
        at_most(
            "the network is trained to convergence (full-batch gradient norm before opening, float64)",
            float(np.sqrt(g0)),
            CONVERGED_TOL,
            detail=f"loss {loss0:.4f}; the paper: 'negligible gradient norm, no change in loss' (the bound is the "
            "gallery's)",
        )
    ]
    right = ClaimBook("tunnels_fig1_right", scale=s.scale)
    claims = [
        right("loss-unchanged", float(f"{dloss:.3g}"), held=dloss <= 1e-10 * max(1.0, loss0), premises=premises),
        right("quadratic-in-t", round(p, 4), held=bool(abs(p - 2) < 0.1), premises=premises, grad_norm=np.sqrt(g0)),
        right("additive-in-tunnels", float(f"{add_err:.3g}"), held=add_err < 0.05, premises=premises),
    ]
    return FigureResult(
        caption="Fig. 1 right: squared full-batch gradient norm right after opening n tunnels (the n filters with the "
        "largest rho) in a network trained to convergence by full-batch L-BFGS and damped Newton (float64), against t.",
        panels=[Panel("gradnorm", plotly=fig, mpl=mfig)],
        claims=claims,
        scaling={
            **s.scaling(desc),
            "epochs": f"L-BFGS + damped Newton to convergence (gradient norm {np.sqrt(g0):.2g})",
            "repetitions": 1,
            "t": "0 to 2, 9 values",
        },
    )


@register_figure("tunnels_fig1_right", paper="tunnels", title="Fig. 1 right: gradient norm after opening vs t")
def run_r(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return run_right(scale, data_dir, progress=progress)
