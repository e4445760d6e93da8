"""Im, Tao & Branson, Figs. 2-3: 2-D slices through several minima.

Fig. 2: the loss over weights interpolated between two initializations and the final weights SGD reaches from each: a
quartet, so a bilinear slice (A.1 eqs. 3-5) with corners ``final_0 (1, 1)``, ``init_0 (0, 1)``, ``final_1 (1, 0)``,
``init_1 (0, 0)`` (the top and bottom edges are the two training lines, the right edge joins the two minima), and a
barycentric slice (A.1 eqs. 6-8) over ``init_0``, ``final_0``, ``final_1``. Fig. 3: the bilinear slice over the final
weights of four methods from one initialization (SGD, Adam, Adadelta, RMSprop: the paper does not name its four). Runs
from :mod:`figures.im._setup`; "separated by high loss" uses the gallery's sharp-rise test (its Table 1 figure's) on the
square's edges (peak >= 2x the larger endpoint loss and >= 0.05 nats above it: rise score >= 1).

Statistics: the slices are drawn for inits 0 and 1; the claims repeat the measure over ``setup.repetitions``
initializations: Fig. 2 over the pairs of inits (k, k + 1 mod R), Fig. 3 over the inits (its four edges as
straight lines, the weakest counted), and test the mean log rise score against 0 (paired t). Premise: every run
converged (each run counted once: the SGD runs are in both figures; until 2026-12-07 they were listed twice, "25
runs" for the 20 of 5 inits, the same verdict).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Panel, register_figure
from figures.im._setup import GALLERY, ImRuns, Run, RunSpec, converged_premise, im_figure, rise, rise_score
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import paired_effect
from landscape.analyze import barycentric, bilinear
from landscape.plot import plot_barycentric, plot_bilinear

__all__ = ["FIG3_METHODS", "distinct", "edges", "fig2_3"]

FIG3_METHODS = ("sgd", "adam", "adadelta", "rmsprop")


def edges(loss: np.ndarray) -> dict[str, np.ndarray]:
    """The four edges of a bilinear grid ``loss[i (beta), j (alpha)]``, each from one corner to another.

    Returns:
        ``{"top": c1 -> c0, "bottom": c3 -> c2, "left": c3 -> c1, "right": c2 -> c0}`` (Im et al.'s corners
        theta_1..theta_4 = ``c0..c3`` at ``(1, 1), (0, 1), (1, 0), (0, 0)``).
    """
    return {"top": loss[-1, :], "bottom": loss[0, :], "left": loss[:, 0], "right": loss[:, -1]}


def distinct(runs: list[Run]) -> list[Run]:
    """The runs in order, each spec once: Fig. 3's four methods include SGD, whose runs Fig. 2 uses too."""
    seen: set[RunSpec] = set()
    out = []
    for r in runs:
        if r.spec not in seen:
            seen.add(r.spec)
            out.append(r)
    return out


def _panel(key: str, result: object, title: str, draw: object) -> Panel:
    pfig = draw(result, log=True, title=title)  # type: ignore[operator]
    pfig.update_layout(margin={"t": 90}, title={"y": 0.97})  # the title above the top corners' labels
    mfig = draw(result, log=True, title=title, backend="matplotlib")  # type: ignore[operator]
    for ax in mfig.axes:  # the corner labels sit just above the square: lift the title clear of them
        if ax.get_title():
            ax.set_title(ax.get_title(), pad=16)
    return Panel(key, plotly=pfig, mpl=mfig)


@register_figure("im_fig2_3", title="Im et al. Figs. 2-3: slices through SGD minima, four methods' minima", **GALLERY)
@im_figure
def fig2_3(runs: ImRuns) -> FigureResult:
    """Figs. 2 and 3 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup, progress = runs.setup, runs.progress
    runs.many([RunSpec(m, init=k) for k in range(setup.repetitions) for m in ("sgd", *FIG3_METHODS)])
    s0, s1 = runs.many([RunSpec("sgd", init=0), RunSpec("sgd", init=1)])
    four = runs.many([RunSpec(m, init=0) for m in FIG3_METHODS])
    template = setup.model(s0.spec)
    kw = {**runs.loss_kw(s0.spec), "progress": progress}
    data, n = runs.surface_data(), setup.grid

    b2 = bilinear(template, [s0.final, s0.init, s1.final, s1.init], data, n=n, **kw)
    b2 = dataclasses.replace(b2, anchor_labels=["SGD min 0", "init 0", "SGD min 1", "init 1"])
    t2 = barycentric(template, s0.init, s0.final, s1.final, data, n=n, **kw)
    t2 = dataclasses.replace(t2, anchor_labels=["init 0", "SGD min 0", "SGD min 1"])
    b3 = bilinear(template, [r.final for r in four], data, n=n, **kw)
    b3 = dataclasses.replace(b3, anchor_labels=[LABELS[m] for m in FIG3_METHODS])

    r2 = rise(edges(b2.metrics["loss"])["right"])
    e3 = {k: rise(v) for k, v in edges(b3.metrics["loss"]).items()}
    pair = {"top": "Adam-SGD", "bottom": "RMSprop-Adadelta", "left": "RMSprop-Adam", "right": "Adadelta-SGD"}

    # ---- the measures over every initialization
    reps = setup.repetitions
    alphas = np.linspace(0, 1, n)
    sgd = runs.many([RunSpec("sgd", init=k) for k in range(reps)])
    by_init = [four] + [runs.many([RunSpec(m, init=k) for m in FIG3_METHODS]) for k in range(1, reps)]
    premise = converged_premise(distinct(sgd + [r for rk in by_init for r in rk]), data)
    s2 = []
    for k in range(reps):
        a, b = sgd[k], sgd[(k + 1) % reps]
        if reps < 2 or (k == reps - 1 and reps == 2):
            break
        z = edges(b2.metrics["loss"])["right"] if k == 0 else runs.line_losses(template, a.final, b.final, alphas, **kw)
        s2.append(rise_score(z))
    s3, e3k = [], []
    for k, rk in enumerate(by_init):
        if k == 0:
            sc = {e: rise_score(z) for e, z in edges(b3.metrics["loss"]).items()}
        else:  # the square's edges: top c1 -> c0, bottom c3 -> c2, left c3 -> c1, right c2 -> c0
            c = [r.final for r in rk]
            ends = {"top": (c[1], c[0]), "bottom": (c[3], c[2]), "left": (c[3], c[1]), "right": (c[2], c[0])}
            sc = {e: rise_score(runs.line_losses(template, u, v, alphas, **kw)) for e, (u, v) in ends.items()}
        e3k.append(sc)
        s3.append(float(min(sc.values())))
    eff2 = paired_effect(np.log(s2), 0.0) if s2 else None
    eff3 = paired_effect(np.log(s3), 0.0)
    book = ClaimBook("im_fig2_3", scale=setup.name)
    claims = [
        book(
            "sgd-minima-separated",
            s2,
            eff2,
            premises=[premise],
            pairs=len(s2),
            reps=reps,
            ratio=r2[0],
            nats=r2[1],
        ),
        book(
            "four-minima-separated",
            s3,
            eff3,
            premises=[premise],
            reps=reps,
            per_init="; ".join(", ".join(f"{pair[e]} {v:.2g}" for e, v in sc.items()) for sc in e3k),
            drawn=", ".join(f"{pair[e]} {v[0]:.3g}x (+{v[1]:.3g})" for e, v in e3.items()),
        ),
    ]
    panels = [
        _panel("fig2_bilinear", b2, "Fig. 2: two inits, their SGD minima", plot_bilinear),
        _panel("fig2_barycentric", t2, "Fig. 2: init 0, two SGD minima", plot_barycentric),
        _panel("fig3_bilinear", b3, "Fig. 3: four methods' minima", plot_bilinear),
    ]
    return FigureResult(
        caption="Fig. 2 (two panels): log10 training loss over the bilinear slice through two initializations and "
        "the SGD minima reached from them (top edge: init 0 -> its minimum, bottom: init 1 -> its minimum, "
        "right: minimum to minimum), and over the barycentric slice through init 0 and both minima. Fig. 3: "
        "the bilinear slice through the minima of SGD, Adam, Adadelta and RMSprop from one initialization. "
        + setup.scale_note,
        panels=panels,
        claims=claims,
        scaling=setup.scaling(setup.repetitions, grid=f"{n} x {n}", drawn="inits 0 and 1 (Fig. 2), init 0 (Fig. 3)"),
    )
