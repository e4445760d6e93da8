"""Persistent Neurons, Figs. 7-8: full persistent LeNet-5 from a "bad" and a "good" initialization.

000 Sec. 4: LeNet-5 (ReLU) with every weight and bias drawn from N(0, 0.2) (initialization 1, "bad") or
N(0, 0.05) (initialization 2, "good"); Adam lr 0.001, batch 256, lambda = 0.01 on all layers, 20 iterations
(1 plain + 19 persistent) on CIFAR-10 with its test set split 5,000 / 5,000 into validation and test. Fig. 7:
validation and test error per iteration against the plain model's (horizontal lines). Fig. 8: training curves
of the championships. Paper numbers (Sec. 4): plain val / test accuracy 70.74% / 69.94% (bad) and 71.58% / 71.48%
(good); championship 71.64% / 71.78% (bad) and 72.76% / 73.22% (good).

The runs are shared with Fig. 6 (``figures/_persistent_common.py``: cache, readings, quick scale). "Above"
means strictly above; the championship is picked on validation accuracy, so its test accuracy is the
independent check.
"""

from __future__ import annotations

from pathlib import Path

from figures._persistent_common import (
    SOURCE,
    accuracy_claim_values,
    cache_dir,
    error_sub,
    history_subs,
    layers_used,
    lenet_full_setups,
    pct,
    render,
    run_persistent,
)
from figures.contract import Claim, FigureResult, Scale, register_figure

PAPER = {  # 000 Sec. 4, Fig. 7: validation / test accuracy
    "bad": {"plain_val": 0.7074, "plain_test": 0.6994, "champ_val": 0.7164, "champ_test": 0.7178},
    "good": {"plain_val": 0.7158, "plain_test": 0.7148, "champ_val": 0.7276, "champ_test": 0.7322},
}
LABELS = {"bad": "initialization 1, N(0, 0.2) (bad)", "good": "initialization 2, N(0, 0.05) (good)"}


def figure7_8(scale: Scale | str, data_dir: Path | str | None = None, cache: Path | str | None = None,
              progress: bool = False, setups: dict | None = None) -> FigureResult:
    """The figure at a scale (or at explicit ``setups``, ``{"bad": RunSetup, "good": RunSetup}``)."""
    setups = setups or lenet_full_setups(scale, data_dir)
    runs = {k: run_persistent(s, cache, progress) for k, s in setups.items()}
    v = {k: accuracy_claim_values(pt) for k, pt in runs.items()}
    b, g = v["bad"], v["good"]
    errors = render("errors", [error_sub(runs[k], f"Fig. 7: {LABELS[k]}") for k in ("bad", "good")],
                    "Fig. 7: validation and test error per persistent iteration (LeNet-5, full persistent)")
    curves = render("curves", history_subs(runs["bad"], "init 1 (bad)") + history_subs(runs["good"], "init 2 (good)"),
                    "Fig. 8: training curves of the championships (dotted: plain)", cols=2,
                    caption="Training loss includes the persistent penalty.")

    def both(k: str) -> tuple[bool, str]:
        d = v[k]
        ok = d["champ_val"] > d["plain_val"] and d["champ_test"] > d["plain_test"]
        return ok, (f"val {pct(d['plain_val'])} -> {pct(d['champ_val'])}, test {pct(d['plain_test'])} -> "
                    f"{pct(d['champ_test'])}")

    held_b, txt_b = both("bad")
    held_g, txt_g = both("good")
    src = f"{SOURCE}, Sec. 4, Fig. 7"
    claims = [
        Claim(
            statement="N(0, 0.2) is the worse initialization: the plain model from it has the lower validation "
                      "accuracy.",
            paper_value=f"{pct(PAPER['bad']['plain_val'])} vs {pct(PAPER['good']['plain_val'])}", source=src,
            measured=f"{pct(b['plain_val'])} vs {pct(g['plain_val'])}", held=bool(b["plain_val"] < g["plain_val"]),
            detail=f"plain validation accuracy, bad vs good init; test: {pct(b['plain_test'])} vs "
                   f"{pct(g['plain_test'])}. The premise of the next claims.",
        ),
        Claim(
            statement="Persistent training on the bad initialization reaches at least the plain good "
                      "initialization's validation accuracy.",
            paper_value=f"{pct(PAPER['bad']['champ_val'])} vs {pct(PAPER['good']['plain_val'])}", source=src,
            measured=f"{pct(b['champ_val'])} vs {pct(g['plain_val'])}",
            held=bool(b["champ_val"] >= g["plain_val"]),
            detail=f"championship (iteration {b['champion']}) of the bad init vs the plain good init, validation "
                   f"accuracy; test: {pct(b['champ_test'])} vs {pct(g['plain_test'])}.",
        ),
        Claim(
            statement="Persistent training improves the bad initialization's validation and test accuracy.",
            paper_value=(f"val {pct(PAPER['bad']['plain_val'])} -> {pct(PAPER['bad']['champ_val'])}, test "
                         f"{pct(PAPER['bad']['plain_test'])} -> {pct(PAPER['bad']['champ_test'])}"),
            source=src, measured=txt_b, held=held_b,
            detail=f"plain -> championship (iteration {b['champion']}); held if both are strictly higher.",
        ),
        Claim(
            statement="Persistent training also improves the good initialization (validation and test accuracy).",
            paper_value=(f"val {pct(PAPER['good']['plain_val'])} -> {pct(PAPER['good']['champ_val'])}, test "
                         f"{pct(PAPER['good']['plain_test'])} -> {pct(PAPER['good']['champ_test'])}"),
            source=src, measured=txt_g, held=held_g,
            detail=f"plain -> championship (iteration {g['champion']}); held if both are strictly higher.",
        ),
    ]
    s = setups["bad"]
    scaling = {"model": s.describe_model() + " (and N(0, 0.05))", **s.scaling(),
               "layers": layers_used(runs["bad"])}
    return FigureResult(
        caption="Fig. 7: validation (red) and test (blue) error of each persistent iteration (dashed) against the "
                "plain model's (solid lines), for the bad and the good initialization; the star marks the "
                "championship. Fig. 8: loss and error per epoch of the championship (solid) and the plain model "
                "(dotted).",
        panels=[errors, curves], claims=claims, scaling=scaling,
    )


@register_figure("persistent_fig7_8", paper="persistent",
                 title="Figs. 7-8: full persistent LeNet-5 from bad and good initializations")
def run(scale: Scale, data_dir: Path | None, out: Path, progress: bool) -> FigureResult:
    return figure7_8(scale, data_dir, cache_dir(out), progress)
