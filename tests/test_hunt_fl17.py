"""Session 17 (fl17) fidelity fixes: Lipton's solution premises, the verdict table's near-line reasons."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from figures.lipton import _setup as lipton_setup
from figures.lipton._setup import LiptonRuns
from figures.lipton.fig1 import figure1
from figures.verdict import Verdict
from figures.verdict_table import main, near_line, verdict_table, write_table
from tests.test_lipton_figures import TINY

# --------------------------------------------------------------------------- Lipton: "from initialization to solution"
# Two runs of 3 epochs: figure 1 needs the single path and the runs from different initializations only.
SMALL = dataclasses.replace(TINY, name="fl17", epochs=3, every=1, pretrain_epochs=1, repetitions=2)


def _fake_losses(init: torch.Tensor, end: float):  # noqa: ANN202 - a LiptonRuns.losses stand-in
    """Training loss 1 at the single path's initialization and ``end`` at every other point: a path that trained to
    ``end`` and stayed there (flat over its last quarter), whatever the tiny run really did."""

    def losses(self: LiptonRuns, points: Iterable[torch.Tensor]) -> np.ndarray:
        return np.array([1.0 if torch.equal(v, init) else end for v in points])

    return losses


@pytest.mark.parametrize(("end", "tested"), [(0.05, False), (0.005, True)])
def test_lipton_line_claims_need_a_solution_not_just_training(
    end: float, tested: bool, figure_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path trained to 5% of its initial loss (the old premise) but ending at 0.05 > 0.01 reaches no solution."""
    init = LiptonRuns(SMALL, figure_cache).base()[0].vector
    monkeypatch.setattr(LiptonRuns, "losses", _fake_losses(init, end))
    res = figure1(setup=SMALL, cache=figure_cache)
    line, straight = res.claims[3], res.claims[4]
    assert "initialization to solution" in line.statement and "far from straight" in straight.statement
    for claim in (line, straight):
        met = {p.statement: p.met for p in claim.premises}
        assert met["the single path trained"]  # final / initial = end <= 0.1 in both cases
        assert met["the single path converged"]  # flat: the loss is `end` over the whole last quarter
        assert met["the single path reached a low training loss (the paper's runs: 0.000X)"] == (end <= 0.01)
        assert (claim.verdict is not Verdict.NOT_TESTED) == tested
        assert (claim.held is None) == (not tested)
    # the same premises as the distance claims on solutions (the converged and low-loss premises, same function)
    flat, low, _ = lipton_setup.converged_premise(
        LiptonRuns(SMALL, figure_cache), [LiptonRuns(SMALL, figure_cache).base()], "the single path"
    )
    assert [p.measured for p in line.premises[1:]] == [flat.measured, low.measured]


# --------------------------------------------------------------------------- verdict table: which premise decided
def _prem(statement: str, measured: float | list[float], bound: float, met: bool) -> dict:
    return {"statement": statement, "measured": measured, "threshold": bound, "met": met}


# Lipton Fig. 3 #2 of the sixteenth session's quick gallery: not tested on its low-loss premise (far from its bound),
# with a converged premise that passed near its bound.
CLONES = {
    "premises": [
        _prem("the 5 clones trained", [0.016, 0.029, 0.0115, 0.0115, 0.0116], 0.1, True),
        _prem("the 5 clones converged", [0.00024, 0.0068, 0.0088, 0.0038, 0.0077], 0.01, True),
        _prem("the 5 clones reached a low training loss", [0.037, 0.067, 0.0266, 0.0265, 0.0269], 0.01, False),
    ],
    "effect": None,
}


@pytest.mark.parametrize(
    ("claim", "reasons"),
    [
        (CLONES, []),  # decided by the failed premise, 6.7x its bound: not near, whatever the met ones did
        # the failed premise near its bound is the reason, named as failed; the met one near its bound is not
        (
            {"premises": [_prem("flat", 0.0088, 0.01, True), _prem("low", 0.011, 0.01, False)]},
            ["premise 'low' failed: 0.011 vs bound 0.01"],
        ),
        # two failed premises: the verdict changes only if both cross, so one far from its bound decides
        ({"premises": [_prem("a", 0.011, 0.01, False), _prem("b", 0.5, 0.01, False)]}, []),
        (
            {"premises": [_prem("a", 0.011, 0.01, False), _prem("b", 0.0115, 0.01, False)]},
            ["premise 'a' failed: 0.011 vs bound 0.01", "premise 'b' failed: 0.0115 vs bound 0.01"],
        ),
        # a not-tested claim's p-value decided nothing
        ({"premises": [_prem("low", 0.5, 0.01, False)], "effect": {"p_value": 0.03}}, []),
        # every premise met: any near one (it would fail) and the p-value are reasons
        (
            {"premises": [_prem("flat", 0.0088, 0.01, True)], "effect": {"p_value": 0.03}},
            ["p = 0.03", "premise 'flat' met: 0.0088 vs bound 0.01"],
        ),
    ],
)
def test_near_line_names_the_premise_that_decided(claim: dict, reasons: list[str]) -> None:
    assert near_line(claim) == reasons


def test_a_change_decided_far_from_its_line_is_not_allowed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Lipton Fig. 3 #2 held -> not tested on a premise 6.7x its bound is not a machine difference."""
    golden, claims = tmp_path / "golden.tsv", tmp_path / "claims.json"
    statement = "Clones of a model pretrained for 4 epochs diverge."
    doc = {"figures": [{"name": "lipton_fig3", "status": "ok", "claims": [{"statement": statement}]}]}
    doc["figures"][0]["claims"][0]["verdict"] = "held"
    write_table(verdict_table(doc), golden)
    doc["figures"][0]["claims"][0].update(CLONES, verdict="not tested")
    claims.write_text(json.dumps(doc))
    assert main([str(claims), "--golden", str(golden), "--allow-near"]) == 1
    out = capsys.readouterr().out
    assert "held -> not tested" in out and "near its line" not in out and "0 near their line" in out


# --------------------------------------------------------------------------- Tunnels Fig. 2 right: "faster", an escape
@pytest.mark.parametrize(
    ("rel", "met"),
    [
        ([0.05, 0.06, 0.055], True),  # escapes: (control - proposed) / loss at the opening well above 2%
        ([0.0004, 0.0007, 0.0001], False),  # the medium run's 0.01-0.07%: no escape
        ([0.01, 0.05, 0.09], False),  # the interval reaches below 2%: the escape claim is not held, nor the premise
    ],
)
def test_faster_than_the_baselines_presupposes_the_escape(rel: list[float], met: bool) -> None:
    from figures.claims import ClaimBook
    from figures.tunnels.fig2_right import CONTROL_TOL, escaped_premise
    from figures.verdict import paired_effect, superiority_verdict, verdict_for

    e_p = paired_effect(rel)
    premise = escaped_premise(e_p)
    # met exactly when the escape claim (claim 0, same effect and margin) is held
    assert premise.met == met == (superiority_verdict(e_p, CONTROL_TOL) is Verdict.HELD)
    assert premise.threshold == CONTROL_TOL and premise.measured == pytest.approx(e_p.ci_low)
    # the "faster" claim on step differences the baseline clearly loses: decided only with the escape
    later = [120.0, 150.0, 135.0]
    e_t = paired_effect(later)
    values = dict(
        baseline="NEON", margin=CONTROL_TOL, window=50, level=0.02, at_open=1.0, horizon=325.0, n=3, reached="-",
        escape=e_p, final_vs_baseline=e_t, final={"control": 1.0, "proposed": 1.0, "random": 1.0}, final_baseline=1.0,
        baseline_vs_control=e_t, moves="-", minibatch={"control": 1.0, "proposed": 1.0},
    )  # fmt: skip
    book = ClaimBook("tunnels_fig2_right")
    claim = book("proposed-beats-baseline", later, e_t, premises=[premise], verdict=verdict_for(e_t), **values)
    assert claim.verdict is (Verdict.HELD if met else Verdict.NOT_TESTED)
    assert "faster than the baseline NEON (" in claim.statement
