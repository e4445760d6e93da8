"""Im, Tao & Branson, Table 1: minima of every pair of methods from one initialization.

Lower triangle, cell (row r, column c): the barycentric surface (A.1 eqs. 6-8) over the initial weights and the
final weights of methods c and r, all seven methods trained from one initialization with the same minibatches.
Upper triangle, cell (r, c): the functional distance (Sec. 4.1) of the network at ``(1 - alpha) final_r + alpha
final_c`` from ``final_r`` on the test images: RMS distance of the softmax outputs (solid) and label disagreement
(dashed). The runs come from :mod:`figures.im._setup` (shared with Figs. 2-6, 9, 10).

Readings: "sharp increase" between two finals is the loss on the straight segment between them (the alpha = 1
edge of the barycentric grid) peaking at least 2x the larger endpoint loss and 0.05 nats above it (fixed before
measuring; :func:`figures.im._setup.rise_score` >= 1). The paper's "label disagreement of about 8% ... the maximum
disagreement we could see was 22%" is tested as its scale-free part: disagreement at least a third of the two
networks' summed test error.

BatchNorm (the paper does not say how it evaluated its BatchNorm nets between minima). The lower triangle is a
training-loss surface like Figs. 2-6 and keeps their ``bn_mode="train"`` (:mod:`figures.im._setup`): the surface
images are one batch up to 1,024 images (512 at quick, 1,000 at medium scale), so batch statistics are each point's
own statistics over the images it is evaluated on, which is RESET (Jordan et al. 2023) up to the running variance's
unbiased estimate, and the segments are shared with Figs. 2-3. The test-image side (upper triangle and the claims'
errors and disagreements) recomputes each network's statistics over the surface images and evaluates in eval mode
on them (``bn_mode="recompute"``, as :mod:`figures.beyond.im_table1`). Under ``"train"``, its setting until
2026-12-07, the 449 test images were normalized by their own statistics: Eq. 4.1's ``F(x_i, theta)``, "the output of
the network for weights theta on input x", then depended on the other test images, and the test errors were not
the networks' generalization errors the paper compares with (Fig. 4's). Measured at quick (2026-12-07, one
thread, load 10-11): the finals' test errors move by 0-2 of 449 images (init 0: mean 1.11% recomputed, 0.87% on
test-batch statistics, 0.93% on each network's own running statistics), the disagreement share by -0.03 to +0.01
per init, every verdict is unchanged (not tested: the convergence premise), and the test-side evaluations cost
1.57x (8.2 s against 5.2 s of CPU per figure, three alternating rounds), about +3 s on the figure's 57 s.

Shared evaluations (2026-12-07): the seven triangles' alpha = 0 columns (the initial weights, 11 times each) and their
beta = 0 and 1 edges (the line from the initial weights to one final, six triangles each) are the 21-point init ->
final lines of Figs. 5-6, 8 and 10, memoized by the pool (:func:`triangle`): 90 of a triangle's 121 points are
evaluated here, 1.05 / 1.10 s of CPU per triangle against 1.66 / 1.36 s (one thread, load 14, two alternating rounds).
Init 0's test outputs give the test errors too (they were evaluated twice, once for the accuracy alone).

Statistics: the drawing is init 0; the claims repeat the seven methods from ``setup.repetitions`` initializations
(same minibatches) and test, over the initializations, the log of the weakest pair's rise score (paired t against
0, i.e. against the threshold) and the disagreement share against 1/3. Premise: every run converged.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from plotly.subplots import make_subplots
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, Scale, cache_dir, register_figure
from figures.im._setup import (
    GALLERY,
    ImRuns,
    Run,
    RunSpec,
    converged_premise,
    im_figure,
    mpl_grid,
    rise,
    rise_score,
    rises,
)
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import paired_effect
from landscape.analyze import barycentric, distance_along_path
from landscape.analyze.slice_results import BarycentricResult
from landscape.evaluate import evaluate_points
from landscape.plot import plot_triangle_cell
from landscape.plot.style import CMAP
from landscape.train import METHODS

__all__ = ["init_final_edge", "outputs_kw", "table1", "triangle"]


def _labels(data: object) -> np.ndarray:
    """Class labels of a ``(X, y)`` pair or a list of such batches, shape ``(N,)``."""
    if isinstance(data, tuple):
        return np.asarray(data[1])
    return np.concatenate([np.asarray(y) for _, y in data])  # type: ignore[attr-defined]


def outputs_kw(runs: ImRuns, spec: RunSpec) -> dict[str, Any]:
    """Evaluation options of the test-image side (functional distance, errors): a network's own outputs.

    BatchNorm nets: each point's statistics recomputed over :meth:`~figures.im._runs.ImRuns.surface_data`, then
    eval mode (RESET), so an image's output does not depend on the other test images (see the module docstring).

    Args:
        runs: The pool (its surface images are the statistics data).
        spec: A run of the architecture evaluated.

    Returns:
        Keywords of :func:`~landscape.evaluate.evaluate_points` and the slices.
    """
    kw = runs.eval_kw(spec)
    return {**kw, "bn_mode": "recompute", "bn_data": runs.surface_data()} if spec.batchnorm else kw


def init_final_edge(runs: ImRuns, run: Run, n: int) -> np.ndarray:
    """Training loss on the line from a run's initial to its final weights at ``linspace(0, 1, n)``, ``(n,)``.

    Read from the 21-point init -> final line of Figs. 5-6, 8 and 10 (memoized by the pool) when its positions
    hold these bitwise (``n`` of 2, 3, 5, 6, 11 or 21), else evaluated at ``n`` positions (memoized too).
    """
    fine = np.linspace(0, 1, 21)
    unit = np.linspace(0, 1, n)
    step = 20 // (n - 1) if 20 % (n - 1) == 0 else 0
    if step and np.array_equal(fine[::step], unit):
        return runs.init_final_losses({0: run}, fine, "")[0][::step]
    return runs.init_final_losses({0: run}, unit, "")[0]


def triangle(
    template: nn.Module,
    p0: Tensor,
    p1: Tensor,
    p2: Tensor,
    data: Any,
    edge1: np.ndarray,
    edge2: np.ndarray,
    **kw: Any,
) -> BarycentricResult:
    """The loss of :func:`~landscape.analyze.barycentric` over ``(p0, p1, p2)`` at ``n = len(edge1)``, its edges given.

    The grid's alpha = 0 column is ``p0`` at every beta and its beta = 1 and beta = 0 rows are the lines from ``p0``
    to ``p1`` and to ``p2``, which every triangle of Table 1 shares with others (one init, seven finals): those come
    as ``edge1`` and ``edge2`` (the loss on ``(1 - alpha) p0 + alpha p1`` at the grid's alphas, ``(n,)``), the
    ``(n - 2) x (n - 1)`` points inside are evaluated here. The same points as the slice's own up to float rounding
    of their coefficients (a coefficient that is 0 here adds nothing there).

    Returns:
        The :class:`~landscape.analyze.slice_results.BarycentricResult` of the whole ``n x n`` grid (loss only).
    """
    n = len(edge1)
    unit = np.linspace(0, 1, n)
    inner = barycentric(template, p0, p1, p2, data, alphas=unit[1:], betas=unit[1:-1], **{**kw, "metrics": ("loss",)})
    z = np.empty((n, n))  # [i, j] at (alpha_j, beta_i)
    z[1:-1, 1:] = inner.metrics["loss"]
    z[-1], z[0] = edge1, edge2
    z[:, 0] = edge1[0]
    return dataclasses.replace(
        inner, alphas=unit, betas=unit, metrics={"loss": z}, n_nonfinite=int((~np.isfinite(z)).sum())
    )


@im_figure
def table1(runs: ImRuns, out: Path | None = None) -> FigureResult:
    """Compute and draw Table 1 (see the module docstring) from the pool of runs of one setting.

    Signature: ``(scale="quick", data_dir=None, *, cache=None, progress=False, setup=None, out=None)``, see
    :func:`~figures.im._runs.im_figure`; ``out`` is the directory for ``table1.json`` (per-pair numbers), ``None``
    writes nothing.
    """
    setup, progress = runs.setup, runs.progress
    runs.many([RunSpec(m, init=k) for k in range(setup.repetitions) for m in METHODS])  # one call: shared training
    specs = [RunSpec(m, init=0) for m in METHODS]
    rs = runs.many(specs)
    k = len(rs)  # methods: a k x k table
    template = setup.model(specs[0])
    kw = runs.eval_kw(specs[0])
    data, test = runs.surface_data(), runs.test_data()
    test_kw = outputs_kw(runs, specs[0])
    init = rs[0].init
    pairs = [(c, r) for r in range(k) for c in range(r)]  # c < r: lower cell (r, c), upper cell (c, r)
    bary, dist, seg = {}, {}, {}
    edge = {i: init_final_edge(runs, rs[i], setup.grid) for i in range(k)}
    for c, r in tqdm(pairs, desc="table 1 pairs", disable=not progress, leave=False):
        b = triangle(template, init, rs[c].final, rs[r].final, data, edge[c], edge[r], **kw)
        bary[c, r] = b
        seg[c, r] = b.metrics["loss"][::-1, -1]  # alpha = 1 edge, from final c (beta 1) to final r (beta 0)
        dist[c, r] = distance_along_path(
            template, rs[c].final, rs[r].final, test, alphas=np.linspace(0, 1, 11), **test_kw
        )
    yt = _labels(test)
    outputs = {0: evaluate_points(template, torch.stack([x.final for x in rs]), test, metrics=("outputs",), **test_kw)}
    # the engine's accuracy is this count (ties to the first class, as argmax), so init 0's outputs serve both
    err = 1.0 - (np.asarray(outputs[0]["outputs"]).argmax(-1) == yt[None, :]).mean(1)

    # ---- the same over every initialization: weakest pair's rise score and the disagreement share
    reps = setup.repetitions
    all_runs = list(rs)
    min_score, shares, n_rise_k = [], [], []
    seg_alphas = np.linspace(0, 1, setup.grid)
    for i in tqdm(range(reps), desc="table 1 inits", disable=not progress, leave=False):
        rk = rs if i == 0 else runs.many([RunSpec(m, init=i) for m in METHODS])
        if i:
            all_runs += rk
        scores = []
        for c, r in pairs:
            z = (
                seg[c, r]
                if i == 0
                else runs.line_losses(template, rk[c].final, rk[r].final, seg_alphas, metrics=("loss",), **kw)
            )
            scores.append(rise_score(z))
        min_score.append(float(np.nanmin(scores)) if np.isfinite(scores).any() else math.nan)
        n_rise_k.append(int(np.sum(np.asarray(scores) >= 1)))
        if i not in outputs:
            outputs[i] = evaluate_points(
                template, torch.stack([x.final for x in rk]), test, metrics=("outputs",), **test_kw
            )
        pred = np.asarray(outputs.pop(i)["outputs"]).argmax(-1)  # (7, N)
        wrong = pred != yt[None, :]
        dis_k = [float(np.mean(pred[a] != pred[b])) for b in range(k) for a in range(b)]
        sum_k = [float(wrong[a].mean() + wrong[b].mean()) for b in range(k) for a in range(b)]
        shares.append(float(np.mean(dis_k) / np.mean(sum_k)) if np.mean(sum_k) > 0 else math.nan)
    premise = converged_premise(
        all_runs, data, f"the {len(all_runs)} runs (7 methods x {reps} inits) reached critical points"
    )

    # ---- measures
    rows = []
    for c, r in pairs:
        ratio, height = rise(seg[c, r])
        d = dist[c, r]
        rows.append(
            {
                "a": specs[c].method,
                "b": specs[r].method,
                "rise_ratio": ratio,
                "rise_nats": height,
                "rises": rises(ratio, height),
                "rms": float(d.rms[-1]),
                "disagreement": float(d.disagreement[-1]),
                "summed_error": float(err[c] + err[r]),
            }
        )
    ratios = np.array([x["rise_ratio"] for x in rows])
    weakest = rows[int(np.nanargmin(ratios))] if np.isfinite(ratios).any() else rows[0]
    rms = float(np.mean([x["rms"] for x in rows]))
    dis = float(np.mean([x["disagreement"] for x in rows]))
    sum_err = float(np.mean([x["summed_error"] for x in rows]))
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "table1.json").write_text(
            json.dumps({"test_error": dict(zip(METHODS, err.tolist())), "pairs": rows}, indent=1, default=float)
        )

    # ---- drawing (shared log10 colour range over all lower cells)
    logs = {p: np.log10(np.where(b.metrics["loss"] > 0, b.metrics["loss"], np.nan)) for p, b in bary.items()}
    fin = np.concatenate([z[np.isfinite(z)] for z in logs.values()])
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
    ymax = max(1e-3, max(float(np.nanmax(np.r_[d.rms, d.disagreement])) for d in dist.values())) * 1.05
    names = [LABELS[m] for m in METHODS]

    pfig = make_subplots(k, k, horizontal_spacing=0.012, vertical_spacing=0.012)
    mfig, axes = mpl_grid(k, k, 1.65, 1.5)
    for r in range(k):
        for c in range(k):
            ax, rc = axes[r, c], {"row": r + 1, "col": c + 1}
            if r == c:
                n = "" if r == c == 0 else str(r * k + c + 1)
                pfig.add_annotation(
                    text=f"<b>{names[r]}</b>",
                    x=0.5,
                    y=0.5,
                    showarrow=False,
                    font={"size": 11},
                    xref=f"x{n} domain",
                    yref=f"y{n} domain",
                )
                ax.text(
                    0.5, 0.5, names[r], ha="center", va="center", fontsize=10, weight="bold", transform=ax.transAxes
                )
                ax.set_axis_off()
            elif r > c:
                b, vertices = bary[c, r], ["init", names[c], names[r]]
                first = (r, c) == (1, 0)  # shows the plotly colour bar
                plot_triangle_cell(b, zrange=(lo, hi), log=True, names=vertices, colorbar=first, fig=pfig, **rc)
                plot_triangle_cell(b, zrange=(lo, hi), log=True, backend="matplotlib", ax=ax)
                ax.text(0.0, -0.02, "init", fontsize=6, ha="center", va="top")
            else:
                d = dist[r, c]
                for y, dash, nm in ((d.rms, None, "RMS distance"), (d.disagreement, "dash", "disagreement")):
                    pfig.add_trace(
                        go.Scatter(
                            x=d.alphas,
                            y=y,
                            mode="lines",
                            line={"color": "#444", "dash": dash},
                            name=nm,
                            showlegend=(r, c) == (0, 1),
                            hovertemplate=f"{names[r]} -> {names[c]}, alpha %{{x:.2f}}: %{{y:.3f}}"
                            f" ({nm})<extra></extra>",
                        ),
                        **rc,
                    )
                ax.plot(d.alphas, d.rms, color="#333", lw=1.2)
                ax.plot(d.alphas, d.disagreement, color="#333", lw=1.0, ls="--")
                ax.set_ylim(0, ymax)
                ax.tick_params(labelsize=6)
                if r > 0 or c > 1:
                    ax.set_xticklabels([])
                    ax.set_yticklabels([])
    pfig.update_traces(colorbar={"len": 0.5, "y": 0.25}, selector={"type": "heatmap"})  # beside the lower half
    pfig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    pfig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    for r in range(k):
        for c in range(r + 1, k):
            pfig.update_yaxes(range=[0, ymax], row=r + 1, col=c + 1)
    pfig.update_layout(
        height=900,
        width=980,
        template="plotly_white",
        title="Table 1: init / final / final barycentric loss (lower), functional distance (upper)",
        legend={"orientation": "h", "y": -0.02},
    )
    if pairs:
        shared = ScalarMappable(Normalize(lo, hi), CMAP)
        mfig.colorbar(shared, ax=axes[:, 0], location="left", shrink=0.5, label="log10 training loss")
    mfig.suptitle(
        "Table 1: loss over (init, final c, final r) [lower]; RMS distance (solid) and label "
        "disagreement (dashed) from final r toward final c [upper]",
        fontsize=9,
    )

    log_min = np.log(np.asarray(min_score))
    eff_rise = paired_effect(log_min, 0.0)
    eff_share = paired_effect(shares, 1 / 3)
    book = ClaimBook("im_table1", scale=setup.name)
    n_test = setup.splits().sizes["test"]
    claims = [
        book(
            "pairs-rise-sharply",
            min_score,
            eff_rise,
            premises=[premise],
            pairs=len(rows),
            grid=setup.grid,
            reps=reps,
            n_rise=n_rise_k,
            weakest=f"{LABELS[weakest['a']]}-{LABELS[weakest['b']]}",
            ratio=weakest["rise_ratio"],
            nats=weakest["rise_nats"],
            median=np.nanmedian(ratios),
        ),
        book(
            "functionally-different",
            shares,
            eff_share,
            premises=[premise],
            pairs=len(rows),
            test_images=n_test,
            reps=reps,
            disagreement=dis,
            summed_error=sum_err,
            errors=", ".join(f"{LABELS[m]} {e:.1%}" for m, e in zip(METHODS, err)),
        ),
    ]
    quick = setup.dataset == "digits"
    why = (
        "not comparable at this scale: both numbers grow with the networks' error rate (paper: CIFAR-10 at ~11% "
        f"error; here {np.mean(err):.1%} mean test error), the scale-free version is the claim above"
    )

    def within_factor_2(column: str, value: float, low: float, high: float, paper: str) -> dict[str, Any]:
        """A mean over the pairs held if in ``[low, high]`` (the paper's number / 2, x 2); not decided at quick."""
        per_pair = [x[column] for x in rows]
        return {
            "measured": value,
            "held": None if quick else bool(low <= value <= high),
            "premises": [premise],
            "pairs": len(rows),
            "low": min(per_pair),
            "high": max(per_pair),
            "rule": why if quick else f"held if within a factor 2 of {paper}.",
        }

    claims += [
        book("rms-distance", test_images=n_test, **within_factor_2("rms", rms, 0.08, 0.32, "0.16")),
        book("disagreement", **within_factor_2("disagreement", dis, 0.04, 0.16, "8%")),
    ]
    return FigureResult(
        caption="Table 1: the seven methods trained from one initialization with the same minibatches. Lower "
        "triangle: log10 training loss over the triangle (initial weights [bottom left], final of the "
        "column's method [bottom right], final of the row's method [top]), one colour scale. Upper triangle: "
        "distance of the network interpolated from the row's final (alpha 0) to the column's (alpha 1) from "
        "the row's final: RMS softmax-output distance (solid) and label disagreement (dashed) on the test "
        "images. " + setup.scale_note,
        panels=[Panel("table1", plotly=pfig, mpl=mfig)],
        claims=claims,
        scaling=setup.scaling(
            setup.repetitions,
            grid=f"barycentric {setup.grid} x {setup.grid}; distance at 11 alphas",
            initializations=f"drawn: init 0; claims: {setup.repetitions} inits, each shared by all methods",
            test_outputs="BatchNorm statistics recomputed over the surface images, then eval mode (RESET)",
        ),
    )


@register_figure("im_table1", title="Im et al. Table 1: minima of every pair of methods from one init", **GALLERY)
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return table1(scale, data_dir, cache=cache_dir(out, "im"), progress=progress, out=out)
