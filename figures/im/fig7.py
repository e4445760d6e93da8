"""Im, Tao & Branson, Fig. 7 (and Fig. 13): switching optimizer at 25%, 50% and 75% of training.

From one initialization and minibatch order: SGD throughout, Adam throughout, and SGD -> Adam and Adam -> SGD
switched at each of ``setup.switch_fractions`` (Sec. 4.3), each method with its own default learning rate (SGD
0.05, Adam 0.001: the pairing of Fig. 13(a)); the new optimizer starts with empty state
(:class:`landscape.train.SwitchSchedule`). Runs from :mod:`figures.im._setup`. Labels follow the paper's
"S100-A100": epochs of the first method, then of the second.

Readings (fixed before measuring): "a different minimum" = the loss on the straight line between the minimum of the
method used throughout and the switched run's final weights rises sharply (peak >= 2x the larger endpoint loss and >=
0.05 nats above it: the gallery's test, as in its Table 1 figure). "The distance from the initialization changes
behaviour" = after the switch, its mean growth per epoch differs by more than 50% from the growth of the unswitched run
over the same epochs.

The learning-rate schedule (:mod:`figures.im._setup`: halved between 8 equal stages) continues across a switch.
Statistics: the drawing is init 0; the claims repeat every switch from ``setup.repetitions_switch`` initializations and
test per-init measures with a paired t over the initializations (the weakest rise score at the latest switch against 1
in log; the smallest relative slope change against 0.5; the Adam -> SGD distance change against 0). Premises: the switch
happens before convergence (the unswitched run's training loss still falls by at least 10% between the switch and the
end, Sec. 4.3 switches "during the 'minimization' phase", not after it; the 10% is the gallery's), and the switched runs
converged.
"""

from __future__ import annotations

import math

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, register_figure
from figures.im._measures import converged_premise, rise, rise_score
from figures.im._setup import (
    GALLERY,
    Curve,
    ImRuns,
    ImSetup,
    Run,
    RunSpec,
    color,
    history_curve,
    im_figure,
    switching_panels,
)
from figures.im._setup import METHOD_LABELS as LABELS
from figures.verdict import Premise, at_least, paired_effect

__all__ = ["fig7", "slope_change", "switched_specs"]

_SHADES = {"sgd": ["#9ecae1", "#4292c6", "#08519c"], "adam": ["#fc9272", "#ef3b2c", "#a50f15"]}


def switched_specs(setup: ImSetup) -> list[RunSpec]:
    """The switched runs of Fig. 7: SGD -> Adam and Adam -> SGD at each switch fraction, every initialization.

    The pool reads them too (:meth:`ImRuns.switch_plan`: the states the plain runs leave for them).
    """
    return [
        RunSpec(a, init=k, then=b, switch_at=f)
        for k in range(setup.repetitions_switch)
        for a, b in (("sgd", "adam"), ("adam", "sgd"))
        for f in setup.switch_fractions
    ]


def slope_change(switched: Run, plain: Run, at: int) -> tuple[float, float, float]:
    """Mean growth per epoch of the distance from init after epoch ``at``: switched, unswitched, relative change.

    Returns:
        ``(slope of the switched run, slope of the plain run, |difference| / |plain slope|)``.
    """
    ds, dp = switched.curve("dist_init"), plain.curve("dist_init")
    e = min(len(ds), len(dp)) - 1
    if e <= at:
        return math.nan, math.nan, math.nan
    s, p = (ds[e] - ds[at]) / (e - at), (dp[e] - dp[at]) / (e - at)
    return float(s), float(p), float(abs(s - p) / abs(p)) if p != 0 else math.inf


def _curves(plain: dict[str, Run], switched: list[Run], a: str, b: str, metric: str, scale: float = 1.0) -> list[Curve]:
    """Per-epoch curves of the unswitched runs of ``a`` and ``b`` (dashed) and of the runs switched from ``a``."""
    out = [history_curve(plain[m], metric, LABELS[m], color(m), scale=scale, dash=True, width=1.2) for m in (a, b)]
    return out + [history_curve(r, metric, r.label, _SHADES[a][i % 3], scale=scale) for i, r in enumerate(switched)]


@register_figure("im_fig7", title="Im et al. Fig. 7: switching between SGD and Adam at 25/50/75%", **GALLERY)
@im_figure
def fig7(runs: ImRuns) -> FigureResult:
    """Fig. 7 from the runs of one setting (module docstring; signature: :func:`~figures.im._runs.im_figure`)."""
    setup = runs.setup
    fr = setup.switch_fractions
    runs.many(
        switched_specs(setup) + [RunSpec(m, init=k) for k in range(setup.repetitions_switch) for m in ("sgd", "adam")]
    )
    plain = {m: runs.get(RunSpec(m, init=0)) for m in ("sgd", "adam")}
    sw = {
        (a, b): runs.many([RunSpec(a, init=0, then=b, switch_at=f) for f in fr])
        for a, b in (("sgd", "adam"), ("adam", "sgd"))
    }
    at = [round(setup.epochs * f) for f in fr]
    template, kw, data = runs.loss_kit()
    alphas = np.linspace(0, 1, 21)

    acc_panels, dist_panels, line_panels = [], [], []
    rises_, slopes, drops, lines0 = {}, {}, {}, {}
    for a, b in sw:
        title = f"{LABELS[a]} -> {LABELS[b]}"
        for metric, what in (("trainset_accuracy", "training"), ("test_accuracy", "test")):
            acc_panels.append((f"{title}: {what} accuracy", _curves(plain, sw[a, b], a, b, metric, 100.0)))
        cs = _curves(plain, sw[a, b], a, b, "dist_init")
        dist_panels.append((title, cs))
        cs = []
        for i, r in enumerate(sw[a, b]):
            z = runs.line_losses(template, plain[a].final, r.final, alphas, **kw)
            lines0[a, b, fr[i]] = z  # init 0's lines: the claims below read them again
            rises_[a, b, fr[i]] = rise(z)
            cs.append(Curve(alphas, z, r.label, _SHADES[a][i % 3]))
            slopes[a, b, fr[i]] = slope_change(r, plain[a], at[i])
            d = r.curve("dist_init")
            drops[a, b, fr[i]] = (d[-1] - d[at[i]]) / d[at[i]] if d[at[i]] > 0 else math.nan
        z = runs.line_losses(template, plain[a].final, plain[b].final, alphas, **kw)
        cs.append(Curve(alphas, z, LABELS[b], color(b), dash=True))
        line_panels.append((f"from {LABELS[a]}'s minimum (0) to ... (1)", cs))

    panels = switching_panels(
        at,
        acc_panels,
        dist_panels,
        line_panels,
        (
            "Fig. 7: accuracy when switching methods (dotted: switch epochs)",
            "Fig. 7: distance from the initial weights per epoch",
            "Fig. 7: loss between the unswitched minimum and the switched runs' minima",
        ),
        accuracy_label="accuracy (%)",
    )

    # ---- the claims over every initialization
    late = max(fr)
    reps = setup.repetitions_switch
    score_late, min_rel, a2s_k, finals = [], [], [], []
    drop_plain: dict[tuple[str, float], list[float]] = {}
    for k in range(reps):
        pk = plain if k == 0 else {m: runs.get(RunSpec(m, init=k)) for m in ("sgd", "adam")}
        swk = (
            sw if k == 0 else {(a, b): runs.many([RunSpec(a, init=k, then=b, switch_at=f) for f in fr]) for a, b in sw}
        )
        finals += [r for v in swk.values() for r in v]
        sc, rels, a2s_here = [], [], []
        for (a, b), rr in swk.items():
            for i, r in enumerate(rr):
                sl = slopes[a, b, fr[i]] if k == 0 else slope_change(r, pk[a], at[i])
                rels.append(sl[2])
                if fr[i] == late:
                    z = (
                        lines0[a, b, fr[i]]
                        if k == 0
                        else runs.line_losses(template, pk[a].final, r.final, alphas, **kw)
                    )
                    sc.append(rise_score(z))
                if a == "adam":
                    d = r.curve("dist_init")
                    a2s_here.append((d[-1] - d[at[i]]) / d[at[i]] if d[at[i]] > 0 else math.nan)
                c = pk[a].curve("surface_loss")
                drop_plain.setdefault((a, fr[i]), []).append(float(1 - c[-1] / c[at[i]]) if c[at[i]] > 0 else 0.0)
        score_late.append(float(min(sc)))
        min_rel.append(float(np.nanmin(rels)) if np.isfinite(rels).any() else math.nan)
        a2s_k.append(float(np.nanmean(a2s_here)))
    conv = converged_premise(finals, data, f"the {len(finals)} switched runs reached critical points")

    def before(keys: list[tuple[str, float]]) -> Premise:
        vals = [v for key in keys for v in drop_plain[key]]
        names = ", ".join(f"{LABELS[a]} at {f:.0%}" for a, f in keys)
        return at_least(
            "the switch happens before convergence (the unswitched run still learns)",
            vals,
            0.10,
            detail=f"relative fall of the unswitched run's training loss from the switch to the end "
            f"({names}; {reps} inits each); at least 10%",
        )

    pre_late = before([("sgd", late), ("adam", late)])
    pre_all = before([(a, f) for a in ("sgd", "adam") for f in fr])
    pre_adam = before([("adam", f) for f in fr])
    eff1 = paired_effect(np.log(score_late).tolist(), 0.0)
    eff2 = paired_effect(min_rel, 0.5)
    eff3 = paired_effect(a2s_k, 0.0)
    table = "; ".join(
        f"{LABELS[a]}->{LABELS[b]} at {f:.0%}: {v[0]:.3g}x (+{v[1]:.3g})" for (a, b, f), v in rises_.items()
    )
    slope_text = "; ".join(
        f"{LABELS[a]}->{LABELS[b]} at {f:.0%}: {v[0]:.3g} vs {v[1]:.3g}/epoch" for (a, b, f), v in slopes.items()
    )
    a2s = [v for (a, _, _), v in drops.items() if a == "adam"]
    book = ClaimBook("im_fig7", scale=setup.name)
    claims = [
        book(
            "late-switch-different-minimum",
            score_late,
            eff1,
            premises=[pre_late, conv],
            late=late,
            reps=reps,
            table=table,
        ),
        book(
            "distance-changes-behaviour",
            min_rel,
            eff2,
            premises=[pre_all, conv],
            switched=len(fr) * 2,
            reps=reps,
            slopes=slope_text,
        ),
        book(
            "adam-to-sgd-distance-decreases",
            a2s_k,
            eff3,
            premises=[pre_adam, conv],
            reps=reps,
            changes=", ".join(f"{v:+.1%}" for v in a2s),
        ),
    ]
    return FigureResult(
        caption="Fig. 7: SGD and Adam from one initialization, unswitched (dashed) and switched to the other method "
        f"at {', '.join(f'{f:.0%}' for f in fr)} of training (labels: epochs of each). Top: training and test "
        "accuracy; middle: distance of the weights from the initial ones; bottom: training loss on the line "
        "from the unswitched minimum (alpha 0) to each switched run's minimum and to the other method's "
        "(dashed). " + setup.scale_note,
        panels=panels,
        claims=claims,
        scaling=setup.scaling(
            setup.repetitions_switch,
            drawn="init 0",
            switches=f"at epochs {at} of {setup.epochs}",
            switch_learning_rates="SGD 0.05, Adam 0.001 before and after (Fig. 13(a)), times the "
            "schedule's current factor",
        ),
    )
