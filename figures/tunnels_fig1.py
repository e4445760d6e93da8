"""Tunnels (002), Fig. 1: escaping a flat area by opening tunnels (left) and the gradient norm vs t (right).

Left (Sec. 4.1, App. B.1): the single-hidden-conv-layer sigmoid net is brought into a flat area by damped
Newton with the full empirical Hessian, then trained by SGD; at step 50 two filters are added by tunnel
opening (proposed lambda_t, or a random lambda of the same norm) and removed again by closing at step 300.
Right (Sec. 4.2): a network trained to convergence by full-batch L-BFGS (float64); tunnels are opened with
several t and the full-batch gradient norm is measured right after opening, for 1, 2, ... tunnels.
Shared settings and the cached Newton point: ``figures/_tunnels_common.py``.
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

from figures._tunnels_common import (
    COLORS,
    SOURCE,
    FullLoss,
    band_traces,
    cache_dir,
    initial_model,
    load_data,
    make_setup,
    mean_std,
    newton_point,
)
from figures.contract import Claim, FigureResult, Panel, Scale, register_figure
from landscape.train import Trainer
from tunnels import TunnelSchedule, open_tunnels, split_stats

F = nn.functional
LABEL_NOISE = 0.25


def run_left(scale: Scale | str, data_dir: Path | None, cache: Path | None, progress: bool = False,
             setup=None) -> FigureResult:
    """Fig. 1 left at a scale (or for an explicit setup)."""
    s = setup or make_setup(scale)
    data, desc = load_data(s, data_dir)
    start, newton = newton_point(s, data, cache, progress)
    curves: dict[str, list[list[float]]] = {"control": [], "proposed": [], "random": []}
    steps = None
    for rep in tqdm(range(s.repetitions), disable=not progress, leave=False, desc="fig1 left"):
        for mode in curves:
            fl = FullLoss(data, every=5)
            cbs = [] if mode == "control" else [TunnelSchedule(s.open_at, {"conv1": 2}, close_at=s.close_at, t=s.t,
                                                               mode=mode, warmup_steps=0, seed=rep)]
            Trainer(start, data, F.cross_entropy, "sgd", optimizer_kwargs={"lr": s.lr}, steps=s.total_steps,
                    batch_size=s.batch_size, seed=rep, callbacks=[*cbs, fl]).fit()
            curves[mode].append(fl.losses)
            steps = np.asarray(fl.steps)
    assert steps is not None
    stats = {m: mean_std(c) for m, c in curves.items()}
    i_end = len(steps) - 1
    i_open, i_after, i_close = (min(int(np.searchsorted(steps, v)), i_end) for v in (s.open_at, s.open_at + 25,
                                                                                      s.close_at))

    def drop(m: str) -> float:
        return float(stats[m][0][i_open] - stats[m][0][i_after])

    fig = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=(6, 4))
    ax = mfig.add_subplot()
    for m, (mu, sd) in stats.items():
        fig.add_traces(band_traces(go, steps, mu, sd, m, COLORS[m]))
        ax.plot(steps, mu, color=COLORS[m], label=m)
        ax.fill_between(steps, mu - sd, mu + sd, color=COLORS[m], alpha=0.2)
    for x in (s.open_at, s.close_at):
        fig.add_vline(x=x, line_dash="dot")
        ax.axvline(x, ls=":", color="k")
    fig.update_layout(title="Fig. 1 left: opening 2 filters at step 50, closing at 300", xaxis_title="step",
                      yaxis_title="full-batch training loss")
    ax.set(xlabel="step", ylabel="full-batch training loss", title="Fig. 1 left: tunnels in a flat area")
    ax.legend()
    ctrl = stats["control"][0]
    prop, rand = stats["proposed"][0], stats["random"][0]
    claims = [
        Claim("Note the immediate drop in loss when we add the filters (proposed opening).", None,
              round(drop("proposed") - drop("control"), 4), drop("proposed") > max(drop("control"), 0.0),
              "measured: loss decrease over the 25 steps after opening, proposed minus control (mean over "
              f"{s.repetitions} runs); held if the proposed decrease is positive and larger than control's.",
              f"{SOURCE}, Sec. 4.1, Fig. 1 left"),
        Claim("Adding the filters in a random fashion (random lambda of equal magnitude) provides no improvement.",
              None, round(float(ctrl[i_close] - rand[i_close]), 4),
              bool(ctrl[i_close] - rand[i_close] <= 0.05 * ctrl[i_close]),
              "measured: control minus random loss at the closing step; held if random is not more than 5% "
              "below control.", f"{SOURCE}, Sec. 4.1, Fig. 1 left"),
        Claim("Even after we close the tunnel and remove the filters again, the model continues to remain unstuck.",
              None, round(float(prop[i_end]), 4), bool(prop[i_end] < ctrl[i_end] and prop[i_end] <= prop[i_close]),
              "measured: final loss of the proposed runs; held if below control's final loss "
              f"({ctrl[i_end]:.4f}) and not above its loss at closing ({prop[i_close]:.4f}).",
              f"{SOURCE}, Sec. 4.1, Fig. 1 left"),
    ]
    nl, ng = newton["losses"], newton["grad_norms"]
    return FigureResult(
        caption=f"Fig. 1 left: full-batch training loss (mean and one std over {s.repetitions} minibatch orders) of "
                f"SGD from the point damped Newton reached (loss {nl[0]:.3f} -> {nl[-1]:.3f}, gradient norm "
                f"{ng[0]:.3g} -> {ng[-1]:.3g}); 2 filters opened at step {s.open_at} (proposed or random lambda, "
                f"t = {s.t}) and closed at step {s.close_at}.",
        panels=[Panel("loss", plotly=fig, mpl=mfig)], claims=claims,
        scaling=s.scaling(desc),
    )


def converged_model(s, data, steps: int = 300) -> nn.Module:
    """The network trained to convergence by full-batch L-BFGS in float64 (Sec. 4.2)."""
    net = initial_model(s, tuple(data[0].shape[1:])).double()
    x, y = data[0].double(), data[1]
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=steps, history_size=50, tolerance_grad=1e-12,
                            tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    for _ in range(4):  # L-BFGS stops early on a failed line search: restart it (bounded) until the gradient is small
        opt.step(closure)
        g = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        if float(g.norm()) < 1e-3:
            break
    return net


def _loss_grad(net: nn.Module, x, y) -> tuple[float, float]:
    params = [p for p in net.parameters()]
    loss = F.cross_entropy(net(x), y)
    g = torch.autograd.grad(loss, params)
    return float(loss.detach()), float(sum(float(gi.pow(2).sum()) for gi in g))


def run_right(scale: Scale | str, data_dir: Path | None, progress: bool = False, setup=None,
              lbfgs_steps: int | None = None) -> FigureResult:
    """Fig. 1 right at a scale."""
    s = setup or make_setup(scale)
    quick = s.scale == "quick"
    if setup is None and quick:  # 512 images, a quarter relabelled: without noise the tiny net reaches zero loss
        s = dataclasses.replace(s, n_train=512)
    data, desc = load_data(s, data_dir)
    if quick:
        g = torch.Generator().manual_seed(s.seed)
        y = data[1].clone()
        flip = torch.rand(len(y), generator=g) < LABEL_NOISE
        y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
        data = (data[0], y)
        desc += f"; {LABEL_NOISE:.0%} of the labels redrawn at random (a critical point with nonzero loss)"
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
    fig = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=(6, 4))
    ax = mfig.add_subplot()
    for i, n in enumerate(counts):
        fig.add_trace(go.Scatter(x=ts, y=np.sqrt(sq[i]), mode="lines+markers", name=f"{n} tunnel(s)"))
        ax.plot(ts, np.sqrt(sq[i]), "o-", label=f"{n} tunnel(s)")
    fig.update_layout(title="Fig. 1 right: gradient norm right after opening vs t", xaxis_title="t",
                      yaxis_title="full-batch gradient norm")
    ax.set(xlabel="t", ylabel="full-batch gradient norm", title="Fig. 1 right: gradient norm after opening")
    ax.legend()
    claims = [
        Claim("The total loss remains unchanged after tunnel opening, irrespective of the choice of t.", None,
              float(f"{dloss:.3g}"), dloss <= 1e-10 * max(1.0, loss0),
              "measured: largest |loss after - loss before| over all t and tunnel counts, float64; held if "
              "<= 1e-10 (relative).", f"{SOURCE}, Sec. 4.2"),
        Claim("Note the quadratic relationship between t and the gradient norm (squared norm grows as t^2).", 2,
              round(p, 4), bool(abs(p - 2) < 0.1),
              f"measured: exponent of a log-log fit of ||g'||^2 - ||g||^2 against t > 0 for one tunnel (gradient "
              f"norm before opening {np.sqrt(g0):.2g}); held if within 0.1 of 2.", f"{SOURCE}, Sec. 4.2, Fig. 1 right"),
        Claim("The additive effect of the number of filters added, as predicted by the theory.", None,
              float(f"{add_err:.3g}"), add_err < 0.05,
              "measured: largest relative gap, at t = 2, between the squared gradient norm with n tunnels and "
              "||g||^2 + sum of the n largest 2 t^2 rho_i; held if < 5%.", f"{SOURCE}, Sec. 4.2, Fig. 1 right"),
    ]
    return FigureResult(
        caption="Fig. 1 right: full-batch gradient norm right after opening n tunnels (the n filters with the "
                "largest rho) in a network trained to convergence by full-batch L-BFGS (float64), against t.",
        panels=[Panel("gradnorm", plotly=fig, mpl=mfig)], claims=claims,
        scaling={**s.scaling(desc), "epochs": f"L-BFGS to convergence (gradient norm {np.sqrt(g0):.2g})",
                 "repetitions": 1, "t": "0 to 2, 9 values"},
    )


@register_figure("tunnels_fig1_left", paper="tunnels", title="Fig. 1 left: tunnel opening escapes a flat area")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    with _threads():
        return run_left(scale, data_dir, cache_dir(out), progress)


@register_figure("tunnels_fig1_right", paper="tunnels", title="Fig. 1 right: gradient norm after opening vs t")
def run_r(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    with _threads():
        return run_right(scale, data_dir, progress)


class _threads:
    """One torch thread (tiny models; the two cores are shared)."""

    def __enter__(self) -> None:
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.n)

