"""Premise checks and verdict statistics on synthetic inputs (issue 18): a premise that fails, an effect
inside the noise, intervals and p-values against scipy and brute force."""

import itertools
import json
import math
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from scipy import stats

from figures.contract import Claim
from figures.make_all import figure_sort_key
from figures.schema import CLAIMS_SCHEMA
from figures.verdict import (
    Effect,
    Verdict,
    at_least,
    at_most,
    converged,
    correlation_effect,
    non_superiority_verdict,
    paired_effect,
    paired_proportions,
    superiority_verdict,
    verdict_for,
)


def test_paired_effect_equals_scipy_paired_t():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.4, 1.0, 7)
    eff = paired_effect(a, b, confidence=0.9)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.9)
    assert eff.mean == pytest.approx(np.mean(a - b), rel=1e-12)
    assert eff.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert (eff.ci_low, eff.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert eff.n == 7 and eff.sd == pytest.approx(np.std(a - b, ddof=1), rel=1e-12)


def test_single_seed_resolves_nothing():
    eff = paired_effect([0.93], [0.92])
    assert math.isinf(eff.ci_low) and math.isinf(eff.ci_high)
    assert verdict_for(eff) is Verdict.INCONCLUSIVE


def test_equal_differences_are_a_degenerate_sample_decided_by_the_sign_test():
    """n equal differences: the sign test's exact median interval, the point only where its coverage reaches 95%.

    Closed form: [d_(1), d_(n)] misses the median only when all n draws fall on one side of it, probability at most
    2 * 0.5 ** n for any distribution, so at 95% it needs n >= 6 (1 - 2/64 = 0.969; n = 5 gives 0.9375). The exact
    two-sided sign-test p-value of n positive signs is 2 * 0.5 ** n. Before this rule three equal differences gave
    the point interval [0.5, 0.5] and p = 0: held, as if three draws with no spread proved the population's effect.
    """
    three = paired_effect([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert (three.mean, three.sd, three.n) == (0.5, 0.0, 3)
    assert (three.ci_low, three.ci_high) == (-math.inf, math.inf) and three.p_value == 0.25
    assert verdict_for(three) is Verdict.INCONCLUSIVE and verdict_for(three, paper_effect=0.1) is Verdict.INCONCLUSIVE
    five = paired_effect([0.28] * 5)  # e.g. one test image's difference in every one of 5 seeds
    assert math.isinf(five.ci_high) and five.p_value == pytest.approx(0.0625, abs=0) and "0.9375" in five.method
    assert verdict_for(five) is Verdict.INCONCLUSIVE
    for n in (6, 7, 10):  # coverage 1 - 2 / 2**n >= 0.95: the exact interval for the median is the point itself
        eff = paired_effect([0.28] * n)
        assert (eff.ci_low, eff.ci_high) == (0.28, 0.28) and eff.p_value == pytest.approx(2 * 0.5**n, rel=1e-15)
        assert verdict_for(eff) is Verdict.HELD and verdict_for(eff, direction=-1) is Verdict.NOT_HELD
    # all differences 0 (a plain championship in every training seed): no sign to count, p = 1; inconclusive at 5
    # seeds, not held at 6 (the median difference is 0 with 96.9% confidence: no effect of either sign)
    zeros5, zeros6 = paired_effect([0.9] * 5, [0.9] * 5), paired_effect([0.0] * 6)
    assert zeros5.p_value == zeros6.p_value == 1.0 and verdict_for(zeros5) is Verdict.INCONCLUSIVE
    assert (zeros6.ci_low, zeros6.ci_high) == (0.0, 0.0) and verdict_for(zeros6) is Verdict.NOT_HELD
    # a lower confidence reaches the point sooner: at 90%, n = 5 (0.9375 >= 0.9)
    assert paired_effect([0.28] * 5, confidence=0.9).ci_low == 0.28


def test_differences_equal_up_to_rounding_are_the_same_degenerate_sample():
    # 0.9 - 0.8, 0.8 - 0.7, 0.7 - 0.6 are 0.1 in exact arithmetic; in float64 they differ in the last bits, and the t
    # formula used that spread (1e-17): p ~ 1e-31 and a point interval, where the sample has no spread at all
    rounded = paired_effect([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert np.ptp(np.subtract([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])) > 0  # the rounding is there
    assert rounded.p_value == 0.25 and math.isinf(rounded.ci_high) and rounded.sd == 0.0
    assert rounded.mean == pytest.approx(0.1, rel=1e-14) and verdict_for(rounded) is Verdict.INCONCLUSIVE
    same_mean = paired_effect([0.1] * 3)  # its mean differs from 0.1 in the last bit: still degenerate
    assert (same_mean.p_value, same_mean.ci_low) == (0.25, -math.inf)
    # a real spread, however small against the values, is not rounding: the t interval, against scipy
    real = paired_effect([1e-9, 2e-9, 3e-9])
    ref = stats.ttest_1samp([1e-9, 2e-9, 3e-9], 0.0)
    assert real.method == "paired t" and real.p_value == pytest.approx(ref.pvalue, rel=1e-10)


def test_same_network_is_an_exact_zero_and_refuses_a_difference():
    one = paired_effect([0.3, 0.7, 0.5], [0.3, 0.7, 0.5], same_network=True)  # e.g. three SLQ probes of one model
    assert (one.mean, one.ci_low, one.ci_high, one.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert verdict_for(one) is Verdict.NOT_HELD and verdict_for(one, direction=-1) is Verdict.NOT_HELD
    assert paired_effect([0.3, 0.7, 0.5], [0.3, 0.7, 0.5]).ci_high == math.inf  # not declared: a degenerate sample
    with pytest.raises(ValueError, match="1 of the 3 differences are not 0"):
        paired_effect([0.3, 0.7, 0.5], [0.3, 0.7, 0.4], same_network=True)


def test_effect_inside_the_noise_is_inconclusive_and_opposite_effect_not_held():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1.0, 5)
    small = paired_effect(noise + 0.01, noise + rng.normal(0, 0.5, 5))  # tiny true effect, large noise
    assert small.ci_low < 0 < small.ci_high and verdict_for(small) is Verdict.INCONCLUSIVE
    opposite = paired_effect([0.1, 0.2, 0.15, 0.12, 0.18], [0.5, 0.62, 0.53, 0.55, 0.58])  # a real spread
    assert verdict_for(opposite, direction=1) is Verdict.NOT_HELD
    assert verdict_for(opposite, direction=-1) is Verdict.HELD


def test_an_interval_that_rules_out_the_papers_effect_is_not_held():
    eff = paired_effect([0.01, -0.01, 0.0, 0.005, -0.004], 0.0)  # tight around zero
    assert eff.ci_low < 0 < eff.ci_high
    assert verdict_for(eff) is Verdict.INCONCLUSIVE
    assert verdict_for(eff, paper_effect=0.05) is Verdict.NOT_HELD  # a 5-point effect would have shown
    assert verdict_for(eff, paper_effect=0.005) is Verdict.INCONCLUSIVE  # too small for this noise


def test_non_superiority_holds_below_the_margin_even_when_significant():
    # "provides no improvement": an advantage that is significant but below the margin is still none, and the
    # verdict does not need the opposite effect to be significant (what a superiority test the other way would ask)
    tiny = paired_effect([0.002, 0.003, 0.0025])  # significant, far below 2%
    assert tiny.ci_low > 0 and non_superiority_verdict(tiny, 0.02) is Verdict.HELD
    assert verdict_for(tiny, direction=-1) is Verdict.NOT_HELD  # the old superiority-the-other-way reading
    big = paired_effect([0.10, 0.12, 0.11])
    assert non_superiority_verdict(big, 0.02) is Verdict.NOT_HELD
    straddle = paired_effect([0.0, 0.05, 0.01])  # interval covers the margin: the data cannot tell
    assert straddle.ci_low < 0.02 < straddle.ci_high and non_superiority_verdict(straddle, 0.02) is Verdict.INCONCLUSIVE
    # a log-ratio margin (the Im Fig. 9 use): 10% lower loss is the margin, equal losses are held
    equal = paired_effect(np.log([1.01, 0.99, 1.0, 1.02]))
    assert non_superiority_verdict(equal, math.log(1.1)) is Verdict.HELD


def test_superiority_needs_an_effect_beyond_the_margin():
    # "escapes the flat area": a difference that is significant but below what a stuck control may drop (2%) is no
    # escape. Tunnels Fig. 2 left at quick: (control - proposed) / loss at the opening about 0.85% [0.2%, 1.5%]
    tiny = paired_effect([0.0002, 0.0003, 0.00025])
    assert tiny.ci_low > 0 and superiority_verdict(tiny, 0.02) is Verdict.NOT_HELD
    assert verdict_for(tiny) is Verdict.HELD  # what a plain test against 0 says
    fig2_left = paired_effect([0.0103, 0.0042, 0.0030, 0.0163, 0.0104])
    assert 0 < fig2_left.ci_low and fig2_left.ci_high < 0.02
    assert superiority_verdict(fig2_left, 0.02) is Verdict.NOT_HELD
    assert superiority_verdict(paired_effect([0.10, 0.12, 0.11]), 0.02) is Verdict.HELD
    straddle = paired_effect([0.0, 0.05, 0.01])
    assert straddle.ci_low < 0.02 < straddle.ci_high and superiority_verdict(straddle, 0.02) is Verdict.INCONCLUSIVE
    # the mirror of non-superiority: away from the margin, they disagree
    for eff in (tiny, paired_effect([0.10, 0.12, 0.11])):
        assert {superiority_verdict(eff, 0.02), non_superiority_verdict(eff, 0.02)} == {Verdict.HELD, Verdict.NOT_HELD}


def test_paired_proportions_p_value_is_the_exact_binomial_on_discordant_pairs():
    rng = np.random.default_rng(2)
    a = rng.random(300) < 0.9
    b = a.copy()
    flip = rng.choice(300, 25, replace=False)
    b[flip] = ~b[flip]
    eff = paired_proportions(a, b)
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    k, m = min(n01, n10), n01 + n10
    brute = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)
    assert eff.p_value == pytest.approx(brute, rel=1e-9)
    assert eff.mean == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert eff.ci_low < eff.mean < eff.ci_high


def test_converged_fails_on_a_falling_curve_and_passes_a_flat_one():
    t = np.arange(100)
    falling = 2.0 * np.exp(-t / 200)  # still losing ~5% over the last 10 points
    flat = 0.5 + 0.5 * np.exp(-t / 5)
    assert not converged(falling).met
    p = converged(np.stack([flat, flat * 1.001]))
    assert p.met and len(p.measured) == 2 and max(p.measured) < 0.01
    with pytest.raises(ValueError, match="at least 2 points"):
        converged([1.0])


def test_converged_on_the_scale_of_training_passes_a_loss_that_halves_near_zero():
    t = np.arange(1, 201)
    ce = 2.3 / t  # cross-entropy on separable data: falls by a constant factor at every level
    rel = converged(ce, last=0.25)
    assert not rel.met and rel.measured[0] == pytest.approx((2.3 / 151 - 2.3 / 200) / (2.3 / 151))
    p = converged(np.stack([ce, 2 * ce]), last=0.25, rel_tol=0.01, scale=[ce[0], 2 * ce[0]])
    want = (1 / 151 - 1 / 200) / 1  # the same change of each curve, relative to its own initial loss
    assert p.met and p.measured == pytest.approx([want, want], rel=1e-12)
    slow = 2.3 * np.exp(-t / 100)  # still descending on the scale of training: 8.6% of the start over the last quarter
    assert not converged(slow, last=0.25, rel_tol=0.01, scale=slow[0]).met


def test_failed_premise_makes_the_claim_not_tested_whatever_was_measured():
    stuck = at_most("the control run is stuck", 0.31, 0.05, detail="relative loss drop of the control")
    ok = at_least("the runs trained", [0.97, 0.98], 0.9)
    c = Claim("Opening escapes the flat area.", None, 0.4, held=True, premises=[ok, stuck])
    assert c.verdict is Verdict.NOT_TESTED and c.held is None
    assert c.detail.startswith("premise not met: the control run is stuck") and "0.31" in c.detail
    good = Claim("Opening escapes the flat area.", None, 0.4, held=True, premises=[ok])
    assert good.verdict is Verdict.HELD and good.held is True and good.premise_met


def test_claim_verdicts_held_mirror_and_schema():
    eff = paired_effect([0.2, 0.3, 0.25], [0.1, 0.1, 0.12])
    c = Claim(
        "A beats B.",
        0.05,
        [0.1, 0.2, 0.13],
        verdict=verdict_for(eff),
        effect=eff,
        scale="quick",
        detail="test accuracy difference over 3 seeds",
    )
    assert c.held is True and c.measured == pytest.approx([0.1, 0.2, 0.13])
    inc = Claim("A beats B.", None, 0.0, verdict="inconclusive", detail="interval covers zero")
    assert inc.held is None and inc.verdict is Verdict.INCONCLUSIVE
    with pytest.raises(ValueError, match="contradicts"):
        Claim("A beats B.", None, 0.0, held=True, verdict="not held")
    with pytest.raises(ValueError, match="say why"):
        Claim("A beats B.", None, 0.0, verdict="inconclusive")
    with pytest.raises(TypeError, match="numbers"):
        Claim("A beats B.", None, [0.1, "x"], held=True)
    claim_schema = CLAIMS_SCHEMA["properties"]["figures"]["items"]["properties"]["claims"]["items"]
    for claim in (c, inc, Claim("x", None, 1.0, held=False, premises=[at_most("p", 2.0, 1.0)])):
        d = json.loads(json.dumps(claim.to_dict(), allow_nan=False))
        jsonschema.validate(d, claim_schema)
    forged = {**c.to_dict(), "premises": [at_most("p", 2.0, 1.0).to_dict()]}  # failed premise, verdict held
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(json.dumps(forged)), claim_schema)


def test_figures_sort_by_paper_then_number():
    names = ["im_table1", "im_fig10", "im_fig2_3", "im_fig9", "persistent_fig12", "persistent_fig1_2"]
    paper = {n: n.split("_")[0] for n in names}
    got = sorted(names, key=lambda n: figure_sort_key(n, paper[n]))
    assert got == ["persistent_fig1_2", "persistent_fig12", "im_fig2_3", "im_fig9", "im_fig10", "im_table1"]
    for x, y in itertools.pairwise(got):
        assert figure_sort_key(x, paper[x]) < figure_sort_key(y, paper[y])


@pytest.mark.slow
def test_make_all_list_prints_every_figure_name():
    out = subprocess.run(
        [sys.executable, "-m", "figures.make_all", "--list"], capture_output=True, text=True, check=True, timeout=120
    )
    names = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert "toy_demo" in names and "im_fig10" in names and len(names) == len(set(names)) >= 20
    assert names.index("im_fig2_3") < names.index("im_fig10")


def test_free_cores_from_idle_share_and_load_average_fallback(monkeypatch):
    import os

    from figures import make_all

    n = os.cpu_count() or 1
    assert 1 <= make_all.free_cores(0.05) <= n
    stats = iter(["cpu 100 0 100 800 0 0 0 0 0 0\n", "cpu 150 0 150 900 0 0 0 0 0 0\n"])  # idle 100 of 200

    class _Stat:
        def __init__(self, *a, **k):
            self.line = next(stats)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def readline(self):
            return self.line

    monkeypatch.setattr(make_all, "open", _Stat, raising=False)
    assert make_all.free_cores(0.0) == max(1, round(n * 0.5))

    def unreadable(*a, **k):
        raise OSError("no /proc/stat")

    monkeypatch.setattr(make_all, "open", unreadable, raising=False)
    monkeypatch.setattr(make_all.os, "getloadavg", lambda: (n + 3.0, 0.0, 0.0))
    assert make_all.free_cores(0.0) == 1  # busier than the machine: still one worker


def test_premise_text_names_the_entry_that_decides():
    # "at least": the smallest entry decides (and fails here); "at most": the largest; the JSON form is unchanged
    low = at_least("every seed trained", [5.0, 0.5, 3.0], 1.0)
    assert not low.met and "measured 0.5 (bound 1)" in str(low)
    high = at_most("every run settled", [0.2, -3.0, 0.9], 1.0)
    assert high.met and "measured 0.9 (bound 1)" in str(high)
    assert set(low.to_dict()) == {"statement", "measured", "threshold", "met", "detail"}


def _interval(lo, hi):
    return Effect((lo + hi) / 2, 0.0, 5, lo, hi, 1.0, 0.95, "given")


def test_one_rule_for_intervals_ending_at_zero_or_the_margin_zero_width_included():
    """An interval holding no effect of the claimed sign (size) is not held; one holding only such effects, held."""
    for direction in (1, -1):
        assert verdict_for(_interval(0.0, 0.0), direction=direction) is Verdict.NOT_HELD  # two arms equal: no effect
        assert verdict_for(_interval(0.0, 0.0), direction=direction, paper_effect=0.01) is Verdict.NOT_HELD
    assert verdict_for(_interval(-0.2, 0.0)) is Verdict.NOT_HELD  # ends at 0: no positive effect allowed
    assert verdict_for(_interval(0.0, 0.2)) is Verdict.INCONCLUSIVE  # starts at 0: "no effect" still allowed
    assert verdict_for(_interval(0.0, 0.2), direction=-1) is Verdict.NOT_HELD
    assert verdict_for(_interval(0.1, 0.1)) is Verdict.HELD  # a zero-width interval off 0 is decided by its side
    assert verdict_for(_interval(-0.1, -0.1)) is Verdict.NOT_HELD
    # the margin verdicts: an interval ending (superiority) or starting (non-superiority) at the margin holds no
    # effect on the claimed side of it
    m = 0.02
    assert superiority_verdict(_interval(m, m), m) is Verdict.NOT_HELD
    assert superiority_verdict(_interval(0.0, m), m) is Verdict.NOT_HELD
    assert superiority_verdict(_interval(m, 0.05), m) is Verdict.INCONCLUSIVE
    assert non_superiority_verdict(_interval(m, m), m) is Verdict.NOT_HELD
    assert non_superiority_verdict(_interval(m, 0.05), m) is Verdict.NOT_HELD
    assert non_superiority_verdict(_interval(0.0, m), m) is Verdict.INCONCLUSIVE
    assert non_superiority_verdict(_interval(0.0, 0.0), m) is Verdict.HELD


def test_paired_proportions_without_discordant_pairs_gives_the_exact_bound_unless_one_network():
    n = 449
    same = np.arange(n) % 7 != 0  # both classifiers right on the same images
    eff = paired_proportions(same, same.copy())
    bound = 1 - 0.025 ** (1 / n)  # Clopper-Pearson upper end of 0 discordant in n: P(0 | bound) = 2.5%
    assert (1 - bound) ** n == pytest.approx(0.025, rel=1e-12)
    assert (eff.mean, eff.ci_low, eff.ci_high, eff.p_value) == pytest.approx((0.0, -bound, bound, 1.0), rel=1e-12)
    assert bound == pytest.approx(0.00818, abs=1e-5)  # 0.82 points: 3.7 images of 449
    assert verdict_for(eff, paper_effect=0.0052) is Verdict.INCONCLUSIVE  # a 2.3-image effect fits inside
    one = paired_proportions(same, same.copy(), same_network=True)  # one network on both sides: exactly 0
    assert (one.mean, one.ci_low, one.ci_high) == (0.0, 0.0, 0.0)
    assert verdict_for(one) is Verdict.NOT_HELD and verdict_for(one, direction=-1) is Verdict.NOT_HELD
    other = same.copy()
    other[0] = ~other[0]
    with pytest.raises(ValueError, match="disagree on 1 of 449"):
        paired_proportions(same, other, same_network=True)
    assert paired_proportions(same, other).method == "McNemar (paired examples)"  # one discordant pair: Wald


def test_correlation_effect_is_the_t_interval_of_the_mean_correlation_clipped_to_minus_one_one():
    # two replicates, closed form: mean 0.3, se = |0.4 - 0.2| / 2 = 0.1, t(0.975, 1 df) = 12.7062047361747
    eff = correlation_effect([0.2, 0.4])
    q = 12.706204736174707
    assert eff.mean == pytest.approx(0.3, rel=1e-12) and eff.p_value == paired_effect([0.2, 0.4]).p_value
    assert (eff.ci_low, eff.ci_high) == (pytest.approx(0.3 - q * 0.1, rel=1e-9), 1.0)  # 0.3 + 1.27 clipped
    # the Fig. 14 case: a t interval on the correlations passes 1; clipped, it ends at 1 and decides the same
    rhos = [0.99, 0.6, 0.97, 0.95]
    raw = paired_effect(rhos)
    fz = correlation_effect(rhos)
    assert raw.ci_high > 1 and fz.ci_high == 1.0 and fz.ci_low == raw.ci_low and fz.mean == raw.mean
    assert verdict_for(fz) is verdict_for(raw) is Verdict.HELD
    # sign symmetry, equal correlations (a point), one replicate (resolves nothing), |rho| = 1 accepted
    neg = correlation_effect([-r for r in rhos])
    assert (neg.mean, neg.ci_low, neg.ci_high) == pytest.approx((-fz.mean, -fz.ci_high, -fz.ci_low), rel=1e-12)
    point = correlation_effect([0.5, 0.5, 0.5])  # a degenerate sample of 3: unbounded, clipped to [-1, 1]
    assert point.mean == pytest.approx(0.5, rel=1e-12) and (point.ci_low, point.ci_high) == (-1.0, 1.0)
    assert correlation_effect([1.0] * 6).ci_low == 1.0  # 6 replicates at rho = 1: the sign test's exact point
    assert (correlation_effect([0.7]).ci_low, correlation_effect([0.7]).ci_high) == (-1.0, 1.0)
    ones = correlation_effect([-0.5, -1.0])
    assert ones.mean == -0.75 and (ones.ci_low, ones.ci_high) == (-1.0, 1.0)  # -0.75 +- 3.18, both ends clipped
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        correlation_effect([0.5, 1.2])
