"""Beyond the papers: Im et al.'s Table 1 revisited with weight matching (connecting minima).

Im, Tao and Branson (*An Empirical Analysis of Deep Network Loss Surfaces*, Sec. 4.1, Table 1) ask whether
different optimizers started from one initialization find different minima, and read a rise of the loss on
the straight line between them as a barrier separating them. Since then, Ainsworth, Hayase and Srinivasa
(*Git Re-Basin*, ICLR 2023) showed that much of the barrier between independently trained networks is a
relabelling of their hidden units: permuting one network's units to match the other's weights removes most
of it. This figure asks that question of the minima the Im et al. figures already train (the cached pool of
``figures/im/_setup.py``, nothing retrained): the barrier between

- two optimizers' minima from one initialization (Table 1's pairs: 21 method pairs x 5 initializations), and
- one optimizer's minima from two initializations (Fig. 2's pairs: 10 initialization pairs x 7 methods),

before and after weight matching (:func:`landscape.weight_matching`) of the second network to the first.

The networks are Im et al.'s VGG-style CNN with BatchNorm (quick scale: conv 16-32-64, fc 64, on 8x8 digits).
Its permutation spec derives from the model (4 groups: three convolutions with their BatchNorm, the hidden
fully connected layer). Barriers are on the training loss of the surface images along 11 points of the
straight line (the linear definition of Frankle et al. 2020, :func:`landscape.loss_barrier`). BatchNorm: at every
point, endpoints included, the running statistics are recomputed over training images and the point is then
evaluated in eval mode on them (``bn_mode="recompute"``, as ``torch.optim.swa_utils.update_bn``): Jordan et al.'s
RESET (REPAIR, ICLR 2023), their fix of the variance collapse for BatchNorm networks, and what Git Re-Basin's own
code does for its BatchNorm ResNet-50 (the interpolated network's statistics recomputed over 100 training batches in
train mode, then evaluated with them). The statistics images are the surface images (512 training images at quick
scale, the first of the 1,344), as Git Re-Basin's 100 batches are a part of its training set. Until 2026-12-07 the
lines used ``bn_mode="train"``: every evaluated batch normalized by its own statistics, which is RESET only when the
evaluated images are one batch (512 here, so the numbers hardly differ; at full scale they are 10 batches of
1,000) and makes a network's loss on an image depend on the other images of its batch. Measured at quick (2026-12-07,
one thread, load 12-14): on 6 pairs the barriers before / after matching agree with the old ones to 4 decimals, and
both verdicts are unchanged (Table 1's pairs: not tested, no barrier; two initializations: held, ratio - 0.5 = -0.20
[-0.24, -0.17]); the barrier evaluations cost 1.6x (a statistics pass, then an eval pass per point: median 3.68 s
against 2.26 s for 12 lines, three alternating rounds); the whole figure on the cached pool took 61.6 / 61.3 s of
CPU against 40.0 / 34.6 s before (alternating, load 1-5): about +24 s. Statistics
over all 1,344 training images moved the barriers by up to 0.005 nats and cost 3.0x. REPAIR proper (about 1 s per
pair here) is not run.

The lines from one network are evaluated together (:func:`_lines`: one engine call per first network, its own point
once), since 2026-12-07: 10% less CPU for the barriers (35 of the 175 pairs, two alternating rounds at one thread,
load 11-13: 14.1 / 13.7 s before, 12.6 / 12.5 s after), barriers equal to the per-line ones within 4e-8 nats (the
engine batches the points differently) and accuracies bitwise. The statistics pass cannot be shared with the
evaluation: RESET takes the statistics of the second and later BatchNorm layers from activations normalized with the
batch's biased variance (train mode), while its evaluation normalizes with the unbiased one, so it is close to, not
exactly, train-mode BatchNorm with Bessel's correction.

The ends of the lines are the 35 networks' own points, evaluated once each (:func:`_own`), since 2026-12-07: each
line was evaluated with its alpha = 1 end (a network, or its weight-matched copy, whose loss and accuracy are the
network's: a permutation of hidden units leaves the function unchanged) and each group with its alpha = 0 point, so
the quick figure's 245 lines (105 one-initialization pairs, which matching leaves as they are, and 70 pairs of two
lines) cost 2,240 points instead of about 2,485 (-10%). On 9 of the pairs (6 networks, 12 lines; one thread, load 14-16,
two alternating rounds) 2.59 / 2.70 s of CPU against 3.27 / 2.89 s; barriers before matching bitwise equal, after
matching within 3e-9 nats (the end's loss now the unpermuted network's).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from figures.beyond import PACKAGE_ADDS
from figures.beyond._minima import HALF, MIN_BARRIER, fit_premise, halving_claim, rise_premise
from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, cache_dir, register_figure
from figures.verdict import Premise

ALPHAS = np.linspace(0, 1, 11)  # the Im figures' segment grid (ImSetup.grid)
FLOOR = 1e-4  # barriers below this are drawn at it on the log axis


def _moved(perm: dict[str, np.ndarray]) -> float:
    """Share of hidden units that a permutation moves (0: the identity)."""
    flat = np.concatenate([np.asarray(p) != np.arange(len(p)) for p in perm.values()])
    return float(flat.mean()) if flat.size else 0.0


def _evaluate(template: Any, points: Any, data: Any) -> dict[str, np.ndarray]:
    """Loss and accuracy at ``points`` (``(P, D)``) on ``data``, BatchNorm statistics recomputed over it (RESET)."""
    from landscape.evaluate import evaluate_points

    return evaluate_points(template, points, data, metrics=("loss", "accuracy"), bn_mode="recompute")


def _own(models: dict[Any, Any], data: Any) -> dict[Any, dict[str, float]]:
    """Every network's own loss and accuracy (:func:`_evaluate`): the ends of every line, each evaluated once."""
    from landscape.params import parameters_to_vector

    keys = list(models)
    out = _evaluate(models[keys[0]], torch.stack([parameters_to_vector(models[k]).detach() for k in keys]), data)
    return {k: {m: float(v[i]) for m, v in out.items()} for i, k in enumerate(keys)}


def _lines(a: Any, ends: list[Any], data: Any, own: list[dict[str, float]]) -> list[dict[str, np.ndarray]]:
    """Loss and accuracy on the straight lines from ``a`` to each of ``ends``, at :data:`ALPHAS`.

    The points are :func:`landscape.analyze.line`'s, ``(1 - alpha) a + alpha b``; BatchNorm: every point's
    statistics recomputed over ``data``, then eval mode (RESET, ``bn_mode="recompute"``). The inner points of all
    lines from ``a`` are one evaluation: the engine's set-up (a tenth of an 11-point line here) is paid once per
    network instead of once per line, and each point's numbers are the same computation as in a line of its own but
    for float rounding (the engine batches points differently). The ends are the networks themselves, evaluated once
    each (:func:`_own`) instead of once per line: alpha 0 is ``a``, alpha 1 the end, exactly (``0 * a + 1 * b``).

    Args:
        a: The network at alpha 0 (the template: its other buffers are used at every point).
        ends: The networks at alpha 1, of ``a``'s architecture.
        data: The evaluated (and statistics) data.
        own: ``[a's, then each end's]`` own ``{"loss", "accuracy"}`` (:func:`_own`); a weight-matched end takes the
            unpermuted network's (a permutation of hidden units leaves the function, and so both numbers, unchanged,
            up to float rounding).

    Returns:
        Per network of ``ends``: ``{"loss", "accuracy"}``, each ``(len(ALPHAS),)``.
    """
    from landscape.params import parameters_to_vector

    va = parameters_to_vector(a).detach()
    t = torch.as_tensor(ALPHAS[1:-1], dtype=va.dtype)[:, None]
    out = _evaluate(a, torch.cat([(1 - t) * va + t * parameters_to_vector(b).detach() for b in ends]), data)
    n = len(ALPHAS) - 2
    return [
        {k: np.r_[own[0][k], v[i * n : (i + 1) * n], own[1 + i][k]] for k, v in out.items()} for i in range(len(ends))
    ]


def _pairs(jobs: list[tuple[Any, Any]], models: dict[Any, Any], data: Any) -> list[dict[str, Any]]:
    """Barriers before and after weight matching of ``b`` to ``a``, for every pair ``(a, b)`` of keys of ``models``.

    The lines are evaluated grouped by their first network (:func:`_lines`), their ends once per network (:func:`_own`).
    """
    from landscape import weight_matching
    from landscape.analyze.barrier import barrier_values

    rows, todo = [], {}
    for ka, kb in jobs:
        res = weight_matching(a=models[ka], b=models[kb])
        moved = _moved(res.permutation)
        # the identity permutation leaves b as it is: the line, and so the barrier, are the same
        ends = [models[kb]] if moved == 0 else [models[kb], res.apply(models[kb])]
        rows.append({"moved": moved})
        todo.setdefault(ka, []).append((len(rows) - 1, kb, ends))
    own = _own(models, data)
    for ka, group in todo.items():
        flat = [(kb, b) for _, kb, ends in group for b in ends]
        got = iter(_lines(models[ka], [b for _, b in flat], data, [own[ka]] + [own[kb] for kb, _ in flat]))
        for i, _, ends in group:
            lines = [next(got) for _ in ends]
            before, after = lines[0], lines[-1]
            rows[i].update(
                {
                    "before": barrier_values(ALPHAS, before["loss"])["barrier"],
                    "after": barrier_values(ALPHAS, after["loss"])["barrier"],
                    "acc_before": barrier_values(ALPHAS, before["accuracy"], higher_is_better=True)["barrier"],
                    "acc_after": barrier_values(ALPHAS, after["accuracy"], higher_is_better=True)["barrier"],
                    "line_before": np.asarray(before["loss"]),
                    "line_after": np.asarray(after["loss"]),
                }
            )
    return rows


def _barriers(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Barriers before and after weight matching over some pairs (rows of :func:`_pair`), and after / before."""
    before = np.array([r["before"] for r in rows])
    after = np.array([r["after"] for r in rows])
    return before, after, after / np.maximum(before, 1e-12)


def _rises(between: str, before: np.ndarray, pairs: str, more: str = "") -> Premise:
    """The premise that the straight lines rise (:func:`~figures.beyond._minima.rise_premise`), over some pairs."""
    median = np.median(before)
    detail = f"smallest training-loss barrier (nats) over the {len(before)} pairs ({pairs}); median {median:.3g}{more}"
    return rise_premise(between, float(before.min()), detail)


def _setup(scale: Scale, data_dir: Path | None) -> Any:
    from figures.im._setup import ImSetup

    return ImSetup.for_scale(scale, data_dir)


def _fmt(xs: Any) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in xs) + "]"


@register_figure(
    "beyond_im_table1",
    paper="beyond",
    title="Im et al. Table 1 revisited: barriers between minima before and after weight matching",
)
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    from figures.im._setup import METHOD_LABELS, ImRuns, RunSpec, grad_norm
    from landscape.train import METHODS

    setup = _setup(scale, data_dir)
    reps = setup.repetitions
    runs = ImRuns(setup, cache_dir(out, "im"), progress)
    keys = [(m, k) for k in range(reps) for m in METHODS]  # the pool Im's Table 1 trains, in its order
    pool = dict(zip(keys, runs.many([RunSpec(m, init=k) for m, k in keys])))
    data = runs.surface_data()
    models = {key: r.model() for key, r in pool.items()}
    jobs = [("methods", (m1, k), (m2, k)) for k in range(reps) for m1, m2 in itertools.combinations(METHODS, 2)]
    jobs += [("inits", (m, k1), (m, k2)) for m in METHODS for k1, k2 in itertools.combinations(range(reps), 2)]
    rows = [
        {"kind": kind, "a": ka, "b": kb, **row}
        for (kind, ka, kb), row in zip(jobs, _pairs([(ka, kb) for _, ka, kb in jobs], models, data))
    ]
    crit = [grad_norm(r, -1, data) / grad_norm(r, 0, data) for r in pool.values()]
    accs = [r.last("trainset_accuracy") for r in pool.values()]
    same = [r for r in rows if r["kind"] == "methods"]
    diff = [r for r in rows if r["kind"] == "inits"]

    fit = fit_premise(
        accs,
        f"lowest training accuracy of the {len(accs)} runs (7 methods x {reps} initializations, {setup.epochs} "
        "epochs with the halving schedule)",
        "the minima",
    )
    crit_note = (
        "Not critical points by the Im figures' test of Im et al.'s Sec. 3.3 ('the gradient is approximately 0', "
        "taken as final / initial gradient norm <= 0.01, the premise of the Im figures' claims): median "
        f"{np.median(crit):.3g}, largest {max(crit):.3g}, {sum(c <= 0.01 for c in crit)} of {len(crit)} runs meet "
        "it; Git Re-Basin's claim is about trained networks, which these are."
    )

    # ---- one initialization, two optimizers (Table 1's pairs)
    s_before, s_after, ratio_same = _barriers(same)
    s_moved = np.array([r["moved"] for r in same])
    rises_same = _rises(
        "two optimizers' minima from one initialization",
        s_before,
        f"21 method pairs x {reps} initializations",
        f", largest {s_before.max():.3g}; {int(np.sum(s_before >= MIN_BARRIER))} pairs reach {MIN_BARRIER:g}",
    )
    # ---- two initializations, one optimizer (Fig. 2's pairs): per initialization pair, the mean over methods
    d_before, d_after, d_ratio = _barriers(diff)
    init_pairs = list(itertools.combinations(range(reps), 2))
    per_pair = np.array(
        [np.mean([x for r, x in zip(diff, d_ratio) if (r["a"][1], r["b"][1]) == p]) for p in init_pairs]
    )
    rises_diff = _rises(
        "one optimizer's minima from two initializations",
        d_before,
        f"7 methods x {len(init_pairs)} initialization pairs",
    )
    by_method = {m: float(np.mean([x for r, x in zip(diff, d_ratio) if r["a"][0] == m])) for m in METHODS}
    book = ClaimBook("beyond_im_table1", scale=scale.value)
    both = {"half": HALF, "critical": crit_note}  # the two claims' templates share these
    claims = [
        halving_claim(
            book,
            "barrier-is-a-relabelling",
            ratio_same,
            [fit, rises_same],
            kept=int(np.sum(s_moved == 0)),
            most_moved=s_moved.max(),
            before=np.median(s_before),
            after=np.median(s_after),
            **both,
        ),
        halving_claim(
            book,
            "weight-matching-halves-barrier",
            per_pair,
            [fit, rises_diff],
            reps=reps,
            others=reps - 1,
            per_method=", ".join(f"{METHOD_LABELS[m]} {v:.3g}" for m, v in by_method.items()),
            pairs=len(diff),
            lowest=d_ratio.min(),
            highest=d_ratio.max(),
            before=np.median(d_before),
            after=np.median(d_after),
            one_init=np.median(s_before),
            acc_before=np.median([r["acc_before"] for r in diff]),
            acc_after=np.median([r["acc_after"] for r in diff]),
            moved=np.median([r["moved"] for r in diff]),
            **both,
        ),
    ]

    # ---- drawing: barriers by kind (log axis), and the loss along two example lines
    groups = [("one init, two optimizers", same), ("two inits, one optimizer", diff)]
    colors = {"before": "#c62828", "after": "#1565c0"}
    bars = go.Figure()
    mfig = matplotlib.figure.Figure(figsize=(11, 4.2))
    ax, lx = mfig.add_subplot(1, 2, 1), mfig.add_subplot(1, 2, 2)
    for j, when in enumerate(("before", "after")):
        xs, ys = [], []
        for name, rs in groups:
            vals = [max(r[when], FLOOR) for r in rs]
            xs += [name] * len(vals)
            ys += vals
        bars.add_trace(
            go.Box(
                x=xs,
                y=ys,
                name=f"{when} weight matching",
                marker_color=colors[when],
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
            )
        )
        for g, (_, rs) in enumerate(groups):
            vals = np.array([max(r[when], FLOOR) for r in rs])
            pos = g + (j - 0.5) * 0.35
            ax.boxplot([vals], positions=[pos], widths=0.3, showfliers=False, medianprops={"color": colors[when]})
            ax.scatter(
                pos + np.random.default_rng(g).uniform(-0.1, 0.1, len(vals)),
                vals,
                s=6,
                color=colors[when],
                alpha=0.6,
                label=f"{when} weight matching" if g == 0 else None,
            )
    bars.update_layout(
        boxmode="group",
        yaxis_type="log",
        height=430,
        yaxis_title="training-loss barrier (nats)",
        title=f"Barriers between Im et al.'s minima (below {FLOOR:g} drawn at {FLOOR:g})",
    )
    ax.set_yscale("log")
    ax.set_xticks([0, 1], [g[0].replace(", ", ",\n") for g in groups])
    ax.set(ylabel="training-loss barrier (nats)", title="Barriers before / after weight matching")
    ax.legend(fontsize=7)
    examples = [
        next(r for r in same if r["a"] == ("sgd", 0) and r["b"] == ("adam", 0)),
        next(r for r in diff if r["a"] == ("sgd", 0) and r["b"] == ("sgd", 1)),
    ]
    lines = go.Figure()
    for r, dash in zip(examples, ("dot", "solid")):
        name = f"{METHOD_LABELS[r['a'][0]]} init {r['a'][1]} - {METHOD_LABELS[r['b'][0]]} init {r['b'][1]}"
        for when in ("before", "after"):
            lines.add_trace(
                go.Scatter(
                    x=ALPHAS,
                    y=r[f"line_{when}"],
                    mode="lines",
                    name=f"{name}, {when}",
                    line={"color": colors[when], "dash": dash},
                )
            )
            lx.plot(
                ALPHAS, r[f"line_{when}"], color=colors[when], ls=":" if dash == "dot" else "-", label=f"{name}, {when}"
            )
    lines.update_layout(
        yaxis_type="log",
        height=430,
        xaxis_title="alpha",
        yaxis_title="training loss",
        title="Training loss along the line, before and after weight matching",
    )
    lx.set_yscale("log")
    lx.set(xlabel="alpha", ylabel="training loss", title="Loss along two example lines")
    lx.legend(fontsize=6)
    combined = make_subplots(1, 2, subplot_titles=("barriers", "example lines"))
    for t in bars.data:
        combined.add_trace(t, row=1, col=1)
    for t in lines.data:
        combined.add_trace(t, row=1, col=2)
    combined.update_yaxes(type="log")
    combined.update_layout(
        boxmode="group",
        height=450,
        title="Im et al.'s minima: loss barriers before (red) and after (blue) weight matching",
    )
    return FigureResult(
        caption="The minima of Im et al.'s Table 1 (seven optimizers x five initializations, VGG-style CNN with "
        "BatchNorm on 8x8 digits, reused from the Im figures' cache) joined by straight lines. Left: the "
        "training-loss barrier of each pair, for two optimizers from one initialization (Table 1's pairs) "
        "and for one optimizer from two initializations, before and after permuting the second network's "
        "units to match the first's weights. Right: the loss along one pair of each kind. BatchNorm: the "
        "statistics recomputed over the surface images at every point, then eval mode (RESET, as Git Re-Basin's "
        "and REPAIR's code). " + PACKAGE_ADDS,
        panels=[Panel("barriers", plotly=combined, mpl=mfig)],
        claims=claims,
        scaling=setup.scaling(
            f"{reps} initializations x 7 methods (the Im figures' pool); {len(same)} + {len(diff)} pairs",
            alphas=len(ALPHAS),
            alignment="weight matching (Git Re-Basin Alg. 1), 4 permutation groups",
        ),
    )
