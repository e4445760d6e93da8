"""Im, Tao & Branson, Figs. 12-15 (A.6): NIN and VGG switching between SGD, Adam and Adadelta at 25% and 50%.

The appendix repeats the switching experiment of Sec. 4.3 (Fig. 7) for more pairs of methods and rates: Fig. 12,
the NIN switching between SGD and Adam; Fig. 13, the VGG between SGD and Adam; Fig. 14, SGD and Adadelta; Fig. 15,
Adam and Adadelta; every switch at epochs 50 and 100 of 200 (here 25% and 50% of training), each panel (a)-(c) with
other learning rates after the switch. From one initialization and minibatch order (:mod:`figures.im._setup`, whose
learning-rate schedule, halved between 8 equal stages, continues across a switch), the unswitched runs of both
methods and the runs switched either way; the new optimizer starts with empty state.

Readings of the garbled captions (fixed before measuring):

- Fig. 12 (NIN): SGD starts at 0.1 and Adam at 0.001; after the switch Adam runs at 0.001 and SGD at 0.1 (a),
  0.05 (b) or 0.01 (c) (the caption's "(left) 0.001 (0.1) ... (middle) ... 0.05 ... (right) ... 0.01").
- Fig. 13 (VGG): Adam 0.001 and SGD 0.05 at first, then (a) SGD 0.05 / Adam 0.001 (the runs of Fig. 7), (b) SGD 0.05 /
  Adam 0.0005, (c) SGD 0.01 / Adam 0.0001.
- Fig. 14 (VGG): Adadelta needs no rate (here its default, 1.0); SGD starts at 0.05 and runs at 0.1 (a), 0.05 (b, its
  caption is missing) or 0.01 (c) after the switch.
- Fig. 15 (VGG): its caption repeats Fig. 14's; read as Fig. 13's Adam rates: Adam 0.001 at first, then 0.001 (a),
  0.0005 (b) or 0.0001 (c).

The quick and medium scales run panel (a) only (``ImSetup.switch_lr_variants``); the full scale all three.

Claims (Sec. 4.3, which the appendix figures illustrate; readings as Fig. 7's, fixed before measuring):
"a different minimum" = the loss on the straight line from the unswitched minimum of the first method to the switched
run's final weights rises sharply (:func:`figures.im._setup.rise_score` >= 1); "the training accuracy jumps to the
characteristic accuracy of the new method" = the switched run ends nearer the unswitched second method's training
accuracy than the first's; "the distance changes behaviour" = after the switch the distance from the initial weights
grows more than 50% faster or slower than without the switch.

Statistics: each claim's measure is taken per initialization (``setup.repetitions_switch`` of them) and tested with
a paired t over them (:func:`figures.verdict.paired_effect`). Premises: the switch happens before convergence (the
unswitched run's training loss still falls by at least 10% from the switch to the end), the switched runs ended at
critical points (:func:`figures.im._setup.converged_premise`), and for the accuracy claim the two methods'
characteristic training accuracies differ (by at least 1 point per initialization: else there is nothing to jump to).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from figures.claims import ClaimBook
from figures.contract import FigureResult, Scale, cache_dir, register_figure
from figures.im._measures import converged_premise, rise_score
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
from figures.im.fig7 import slope_change
from figures.verdict import at_least, paired_effect

__all__ = ["SWITCHES", "SwitchFigure", "switch_figure", "switched_specs"]


@dataclasses.dataclass(frozen=True)
class SwitchFigure:
    """One of Figs. 12-15: the architecture, the two methods, their first rates and the rates after each switch.

    Attributes:
        number: The paper's figure number.
        arch: ``"vgg"`` or ``"nin"``.
        a: First method of the pair.
        b: Second method of the pair.
        start: Hyperparameter overrides of each method before the switch (``{}``: its defaults).
        after: Per panel (a), (b), (c): the overrides of each method after a switch to it.
    """

    number: int
    arch: str
    a: str
    b: str
    start: Mapping[str, Mapping[str, Any]]
    after: tuple[Mapping[str, Mapping[str, Any]], ...]

    def plain(self, method: str, k: int) -> RunSpec:
        """The unswitched run of ``method`` from initialization ``k``."""
        return RunSpec(method, init=k, arch=self.arch, hyper=tuple(dict(self.start.get(method, {})).items()))

    def switched(self, first: str, second: str, f: float, k: int, variant: int) -> RunSpec:
        """The run of ``first`` switched to ``second`` at fraction ``f`` of training (panel ``variant``)."""
        return RunSpec(
            first,
            init=k,
            arch=self.arch,
            hyper=tuple(dict(self.start.get(first, {})).items()),
            then=second,
            switch_at=f,
            then_hyper=tuple(dict(self.after[variant].get(second, {})).items()),
        )


SWITCHES = {
    12: SwitchFigure(
        12,
        "nin",
        "sgd",
        "adam",
        {"sgd": {"lr": 0.1}},
        ({"sgd": {"lr": 0.1}}, {"sgd": {"lr": 0.05}}, {"sgd": {"lr": 0.01}}),
    ),
    13: SwitchFigure(
        13, "vgg", "sgd", "adam", {}, ({}, {"adam": {"lr": 0.0005}}, {"sgd": {"lr": 0.01}, "adam": {"lr": 0.0001}})
    ),
    14: SwitchFigure(
        14, "vgg", "sgd", "adadelta", {}, ({"sgd": {"lr": 0.1}}, {"sgd": {"lr": 0.05}}, {"sgd": {"lr": 0.01}})
    ),
    15: SwitchFigure(
        15, "vgg", "adam", "adadelta", {}, ({"adam": {"lr": 0.001}}, {"adam": {"lr": 0.0005}}, {"adam": {"lr": 0.0001}})
    ),
}
"""The four appendix figures (readings of their captions in the module docstring)."""

FRACTIONS = (0.25, 0.5)
"""Switch points: epochs 50 and 100 of the paper's 200."""

_SHADES = ("#9ecae1", "#4292c6", "#08519c", "#fc9272", "#ef3b2c", "#a50f15")


def _rates(sf: SwitchFigure, variant: int) -> str:
    def r(m: str, h: Mapping[str, Mapping[str, Any]]) -> str:
        lr = dict(h.get(m, {})).get("lr")
        return "default" if lr is None else f"{lr:g}"

    return "; ".join(f"{LABELS[m]} {r(m, sf.start)} -> {r(m, sf.after[variant])}" for m in (sf.a, sf.b))


def _specs(setup: ImSetup, sf: SwitchFigure) -> dict[tuple[Any, ...], RunSpec]:
    """The runs of one figure: ``("plain", method, init)`` and ``(first, second, fraction, init, variant)``."""
    variants = range(min(setup.switch_lr_variants, len(sf.after)))
    reps = setup.repetitions_switch
    specs = {("plain", m, k): sf.plain(m, k) for k in range(reps) for m in (sf.a, sf.b)}
    return specs | {
        (x, y, f, k, v): sf.switched(x, y, f, k, v)
        for k in range(reps)
        for v in variants
        for x, y in ((sf.a, sf.b), (sf.b, sf.a))
        for f in FRACTIONS
    }


def switched_specs(setup: ImSetup) -> list[RunSpec]:
    """The switched runs of Figs. 12-15 at ``setup`` (the pool reads them: :meth:`ImRuns.switch_plan`)."""
    return [spec for sf in SWITCHES.values() for spec in _specs(setup, sf).values() if spec.then is not None]


@im_figure
def switch_figure(runs: ImRuns, number: int) -> FigureResult:
    """Compute and draw one of Figs. 12-15 (see the module docstring) from the runs of one setting.

    Signature: ``(scale="quick", data_dir=None, *, cache=None, progress=False, setup=None, number)``, see
    :func:`~figures.im._runs.im_figure`; ``number`` is 12, 13, 14 or 15.
    """
    setup = runs.setup
    sf = SWITCHES[number]
    reps = setup.repetitions_switch
    variants = range(min(setup.switch_lr_variants, len(sf.after)))
    dirs = ((sf.a, sf.b), (sf.b, sf.a))
    got = runs.table(_specs(setup, sf))
    template = setup.model(RunSpec(arch=sf.arch))
    kw = runs.loss_kw(RunSpec(arch=sf.arch))
    data = runs.surface_data()
    alphas = np.linspace(0, 1, 21)
    at = [round(setup.epochs * f) for f in FRACTIONS]
    latest = max(FRACTIONS)

    def interp(p: Run, q: Run) -> np.ndarray:
        return runs.line_losses(template, p.final, q.final, alphas, **kw)

    # ---- per initialization: the claims' measures
    scores, jumps, rels, acc_gap, lines0 = [], [], [], [], {}
    drops: dict[float, list[float]] = {}
    for k in range(reps):
        plain = {m: got["plain", m, k] for m in (sf.a, sf.b)}
        acc = {m: 100 * plain[m].last("trainset_accuracy") for m in plain}
        acc_gap.append(abs(acc[sf.a] - acc[sf.b]))
        sc, jp, rl = [], [], []
        for v in variants:
            for x, y in dirs:
                for i, f in enumerate(FRACTIONS):
                    r = got[x, y, f, k, v]
                    s = 100 * r.last("trainset_accuracy")
                    jp.append(abs(s - acc[x]) - abs(s - acc[y]))
                    rl.append(slope_change(r, plain[x], at[i])[2])
                    c = plain[x].curve("surface_loss")
                    drops.setdefault(f, []).append(float(1 - c[-1] / c[at[i]]) if c[at[i]] > 0 else 0.0)
                    if f == latest or k == 0:
                        z = interp(plain[x], r)
                        if k == 0:
                            lines0[x, y, f, v] = z
                        if f == latest:
                            sc.append(rise_score(z))
        scores.append(float(min(sc)))
        jumps.append(float(np.mean(jp)))
        rels.append(float(np.nanmin(rl)) if np.isfinite(rl).any() else math.nan)

    switched = [r for key, r in got.items() if key[0] != "plain"]
    conv = converged_premise(switched, data, f"the {len(switched)} switched runs reached critical points")

    def before(fs: tuple[float, ...]) -> Any:
        vals = [d for f in fs for d in drops[f]]
        return at_least(
            "the switch happens before convergence (the unswitched run still learns)",
            vals,
            0.10,
            detail=f"relative fall of the unswitched run's training loss from the switch "
            f"({', '.join(f'{f:.0%}' for f in fs)} of training) to the end, every switched run "
            f"and init; at least 10%",
        )

    differ = at_least(
        "the two methods' characteristic training accuracies differ",
        acc_gap,
        1.0,
        detail=f"|final training accuracy of unswitched {LABELS[sf.a]} - unswitched {LABELS[sf.b]}| per "
        "init, in points; at least 1 (else a switched run has no characteristic accuracy to "
        "jump to)",
    )
    e1 = paired_effect(np.log(scores).tolist(), 0.0) if np.isfinite(scores).all() and min(scores) > 0 else None
    e2 = paired_effect(jumps, 0.0)
    e3 = paired_effect(rels, 0.5) if np.isfinite(rels).all() else None
    book = ClaimBook(f"im_fig{number}", scale=setup.name)  # one table per figure: the pair is in the statements
    claims = [
        book(
            "late-switch-different-minimum",
            scores,
            e1,
            premises=[before((latest,)), conv],
            latest=latest,
            panels=len(variants),
            reps=reps,
            not_tested="" if e1 else " Not tested: a score is not finite (a loss diverged).",
        ),
        book(
            "accuracy-jumps-to-new-method",
            jumps,
            e2,
            premises=[before(FRACTIONS), conv, differ],
            reps=reps,
            gaps=", ".join(f"{g:.2f}" for g in acc_gap),
        ),
        book(
            "distance-changes-behaviour",
            rels,
            e3,
            premises=[before(FRACTIONS), conv],
            reps=reps,
            not_tested="" if e3 else " Not tested: a slope is not finite.",
        ),
    ]

    # ---- drawing: init 0
    acc_panels: list[tuple[str, list[Curve]]] = []
    dist_panels: list[tuple[str, list[Curve]]] = []
    line_panels = []
    for v in variants:
        tag = f" ({'abc'[v]})" if len(variants) > 1 else ""
        for x, y in dirs:
            title = f"{LABELS[x]} -> {LABELS[y]}{tag}"
            shades = _SHADES[:3] if x == sf.a else _SHADES[3:]
            for metric, sc_, subplots in (("trainset_accuracy", 100.0, acc_panels), ("dist_init", 1.0, dist_panels)):
                cs = [
                    history_curve(got["plain", m, 0], metric, LABELS[m], color(m), scale=sc_, dash=True, width=1.2)
                    for m in (x, y)
                ]
                cs += [
                    history_curve(got[x, y, f, 0, v], metric, got[x, y, f, 0, v].label, shades[i], scale=sc_)
                    for i, f in enumerate(FRACTIONS)
                ]
                subplots.append((title, cs))
            cs = [
                Curve(alphas, lines0[x, y, f, v], got[x, y, f, 0, v].label, shades[i]) for i, f in enumerate(FRACTIONS)
            ]
            line_panels.append((f"from {LABELS[x]}'s minimum (0) to{tag} ...", cs))
    name = f"Fig. {number} ({sf.arch.upper()})"
    panels = switching_panels(
        at,
        acc_panels,
        dist_panels,
        line_panels,
        (
            f"{name}: training accuracy when switching (dotted: switch epochs)",
            f"{name}: distance from the initial weights",
            f"{name}: loss from the unswitched minimum to the switched runs' minima",
        ),
        accuracy_label="training accuracy (%)",
    )
    rates = " | ".join(f"({'abc'[v]}) {_rates(sf, v)}" for v in variants)
    return FigureResult(
        caption=f"Fig. {number}: the {sf.arch.upper()} trained with {LABELS[sf.a]} and {LABELS[sf.b]} from one "
        "initialization, unswitched "
        f"(dashed) and switched to the other method at {', '.join(f'{f:.0%}' for f in FRACTIONS)} of training "
        "(labels: epochs of each). Top: training accuracy; middle: distance from the initial weights; bottom: "
        "training loss on the line from the unswitched minimum to each switched run's minimum. Learning rates "
        f"before -> after the switch: {rates}. " + setup.scale_note,
        panels=panels,
        claims=claims,
        scaling=setup.scaling(
            reps,
            arch=sf.arch,
            drawn="init 0",
            switches=f"at epochs {at} of {setup.epochs}",
            rate_panels=f"{len(variants)} of 3 ({rates})",
        ),
    )


def _register(number: int, title: str) -> None:
    @register_figure(f"im_fig{number}", title=title, **GALLERY)
    def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
        return switch_figure(scale, data_dir, cache=cache_dir(out, "im"), progress=progress, number=number)


_register(12, "Im et al. Fig. 12: NIN switching between SGD and Adam at 25/50%")
_register(13, "Im et al. Fig. 13: VGG switching between SGD and Adam at 25/50%, other rates")
_register(14, "Im et al. Fig. 14: VGG switching between SGD and Adadelta at 25/50%")
_register(15, "Im et al. Fig. 15: VGG switching between Adam and Adadelta at 25/50%")
