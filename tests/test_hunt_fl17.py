"""Session 17 (fl17) fidelity fixes: Lipton's solution premises, the verdict table's near-line reasons."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from figures.lipton import _setup as lipton_setup
from figures.lipton._setup import LiptonRuns
from figures.lipton.fig1 import figure1
from figures.lipton.fig3 import figure3
from figures.verdict import Verdict, paired_effect, sign_test_effect, verdict_for
from figures.verdict_table import main, near_line, verdict_table, write_table
from tests.test_lipton_figures import TINY

# --------------------------------------------------------------------------- Lipton: "from initialization to solution"
# Two runs of 3 epochs: figure 1 needs the single path and the runs from different initializations only.
SMALL = dataclasses.replace(TINY, name="fl17", epochs=3, every=1, pretrain_epochs=1, repetitions=2)


def _fake_losses(inits: list[torch.Tensor], end: float):  # noqa: ANN202 - a LiptonRuns.losses stand-in
    """Training loss 1 at the runs' initializations and ``end`` at every other point: paths that trained to ``end``
    and stayed there (flat over their last quarter), whatever the tiny runs really did."""

    def losses(self: LiptonRuns, points: Iterable[torch.Tensor]) -> np.ndarray:
        return np.array([1.0 if any(torch.equal(v, i) for i in inits) else end for v in points])

    return losses


@pytest.mark.parametrize(("end", "tested"), [(0.05, False), (0.005, True)])
def test_lipton_line_claims_need_a_solution_not_just_training(
    end: float, tested: bool, figure_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path trained to 5% of its initial loss (the old premise) but ending at 0.05 > 0.01 reaches no solution."""
    inits = [t[0].vector for t in LiptonRuns(SMALL, figure_cache).inits()]  # the base run is the first
    monkeypatch.setattr(LiptonRuns, "losses", _fake_losses(inits, end))
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
    # Fig. 3's "the same distance from the origin", the other half of the paper's sentence on solutions ("from the
    # origin and from each other"), stands on the premises of Fig. 1's pairwise-distance claim on the same runs
    origin, pairwise = figure3(setup=SMALL, cache=figure_cache).claims[0], res.claims[2]
    same = {p.statement: (p.measured, p.met) for p in pairwise.premises}
    assert {p.statement: (p.measured, p.met) for p in origin.premises if p.statement in same} == same
    assert len(same) == 2 and (origin.verdict is not Verdict.NOT_TESTED) == tested


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


# --------------------------------------------------------------------------- paired_effect: what 5 differences conclude
def _t_p_df4(t: float) -> float:
    """Two-sided p-value of Student's t with 4 degrees of freedom, closed form (its CDF is algebraic)."""
    u = 1 + t * t / 4
    return 1 - 0.75 * (abs(t) / math.sqrt(u)) * (1 - t * t / (12 * u))


def _t_p_df2(t: float) -> float:
    """Two-sided p-value of Student's t with 2 degrees of freedom, closed form."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


@pytest.mark.parametrize("delta", [0.0, 1e-12, 1e-6, 1e-3, 0.5])
def test_four_equal_differences_and_a_fifth_are_decided_as_five_equal_ones(delta: float) -> None:
    # 5 of 5 positive: the exact sign test gives 2 / 2**5 = 0.0625 and no order-statistic interval reaches 95%
    # (coverage of [d_(1), d_(5)] is 1 - 2 / 2**5 = 0.9375). Before, any delta > 0 went to the t interval, which
    # shrinks to the point as delta -> 0 (delta 1e-6: p ~ 1e-7, held) next to delta = 0 (inconclusive).
    eff = paired_effect([1.0, 1.0, 1.0, 1.0, 1.0 + delta])
    assert eff.p_value == 2 / 2**5 and (eff.ci_low, eff.ci_high) == (-math.inf, math.inf)
    assert verdict_for(eff) is Verdict.INCONCLUSIVE and eff.method.startswith("sign test (degenerate sample")
    assert eff.mean == pytest.approx(1.0 + delta / 5, rel=1e-15)


@pytest.mark.parametrize(
    ("d", "p", "interval"),
    [
        # n = 7, 4 equal: 6 positive, 1 negative: p = 2 (1 + 7) / 2**7; [d_(1), d_(7)] covers 1 - 2 / 2**7 >= 0.95,
        # [d_(2), d_(6)] only 1 - 2 * 8 / 2**7 = 0.875
        ([2.0, 2.0, 2.0, 2.0, 3.0, 5.0, -1.0], 2 * 8 / 2**7, (-1.0, 5.0)),
        # n = 8, 5 equal, all positive: p = 2 / 2**8; [d_(2), d_(7)] covers 1 - 2 * 9 / 2**8 = 0.93 < 0.95
        ([3.0] * 5 + [4.0, 5.0, 6.0], 2 / 2**8, (3.0, 6.0)),
        # n = 10, 6 equal: 9 positive, 1 negative: p = 2 (1 + 10) / 2**10; [d_(2), d_(9)] covers
        # 1 - 2 * 11 / 2**10 = 0.979, [d_(3), d_(8)] 1 - 2 * 56 / 2**10 = 0.891
        ([1.0] * 6 + [2.0, 3.0, -4.0, 5.0], 2 * 11 / 2**10, (1.0, 3.0)),
        # ties with 0 carry no sign: 1 positive and 1 negative of 2, p = min(1, 2 * 3 / 4) = 1
        ([0.0, 0.0, 0.0, 0.5, -0.3], 1.0, (-math.inf, math.inf)),
    ],
)
def test_a_majority_of_equal_differences_goes_to_the_exact_sign_test(
    d: list[float], p: float, interval: tuple[float, float]
) -> None:
    eff = paired_effect(d)
    assert eff.p_value == pytest.approx(p, rel=1e-12) and (eff.ci_low, eff.ci_high) == interval
    assert eff.mean == pytest.approx(float(np.mean(d)), rel=1e-14) and eff.n == len(d)
    assert sign_test_effect(d).p_value == eff.p_value  # the same test, called directly


def test_distinct_differences_keep_the_paired_t_against_closed_forms() -> None:
    # what 5 distinct positive differences conclude under the normal model: the t with 4 degrees of freedom
    for d in ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.001, 1.002, 1.003, 1.004], [1.0, 1.0, 2.0, 3.0, 4.0]):
        x = np.asarray(d)
        t = x.mean() / (x.std(ddof=1) / math.sqrt(5))
        eff = paired_effect(d)
        assert eff.method == "paired t" and eff.p_value == pytest.approx(_t_p_df4(t), rel=1e-9)
        assert verdict_for(eff) is Verdict.HELD  # t > 2.776: the sign test's 0.0625 is its floor at n = 5, not data
    assert _t_p_df4(4.242640687119285) == pytest.approx(0.013236, abs=1e-6)  # [1..5]: t = 3 sqrt(2)
    # half the pairs equal is no majority: n = 6 with three equal keeps the t
    assert paired_effect([1.0, 1.0, 1.0, 2.0, 3.0, 4.0]).method == "paired t"
    # n = 3, two equal: the majority rule. Im Fig. 11's "with BatchNorm NIN trains from the exotic initializations"
    # at quick: training accuracies 0.1496, 0.1429, 0.1429 against 50% (two runs collapsed to the same accuracy);
    # the t gave p = 4e-5 (not held); the sign test of 3 of 3 negative gives 2 / 2**3
    im11 = paired_effect([0.14955357142857142, 0.14285714285714285, 0.14285714285714285], 0.5)
    assert im11.p_value == 0.25 and verdict_for(im11) is Verdict.INCONCLUSIVE
    three = paired_effect([1.0, 2.0, 4.0])  # distinct: t with 2 degrees of freedom
    assert three.p_value == pytest.approx(_t_p_df2(7 / 3 / (math.sqrt(7 / 3) / math.sqrt(3))), rel=1e-9)


# --------------------------------------------------------------------------- Tunnels Table 4: a control that can leave
def test_table4_no_difference_needs_a_control_that_can_leave_and_converged_runs(tmp_path: Path) -> None:
    """App. C.3's "no difference, except that the final accuracy is reached faster" compares with runs that reach it.

    The control here is confined to its saddle by construction, so the comparison with it is not tested (as Fig. 4's
    "same final loss" against it); the random opening can leave and is compared, on runs that converged.
    """
    from figures.tunnels.table4 import run_table4
    from figures.verdict import equivalence_verdict
    from tests.test_tunnels_figures import TINY as TINY_TUNNELS

    res = run_table4("quick", cache=tmp_path, setup=TINY_TUNNELS)
    control, random = res.claims[0], res.claims[2]
    assert control.statement.endswith("(here: the proposed opening vs the control).")
    assert random.statement.endswith("(here: the proposed opening vs the random opening).")
    free = "the control can leave its start (it is stuck, not confined by construction)"
    got = {p.statement: p.met for p in control.premises}
    assert got[free] is False and control.verdict is Verdict.NOT_TESTED
    assert free not in {p.statement for p in random.premises}
    assert "the opening and closing runs converged" in got
    assert {p.statement for p in random.premises} == set(got) - {free}
    # the comparison with the random opening is decided by the equivalence test when its premises hold
    if all(p.met for p in random.premises):
        assert random.verdict is equivalence_verdict(paired_effect(random.measured), 0.02)
    else:
        assert random.verdict is Verdict.NOT_TESTED


def test_a_missing_difference_never_makes_an_equal_majority_decide() -> None:
    # a NaN sorts last, next to the order statistic the sign test's interval would end at: [1, nan] read as held
    eff = paired_effect([1.0] * 5 + [math.nan])
    assert eff.method == "paired t" and math.isnan(eff.ci_low) and verdict_for(eff) is Verdict.INCONCLUSIVE
