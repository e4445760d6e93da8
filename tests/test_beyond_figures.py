"""The 'Beyond the papers' figures at a tiny scale: they build, and their verdicts are well-formed."""

import dataclasses

import numpy as np
import pytest

from figures.beyond import PACKAGE_ADDS
from figures.beyond import connect as bc
from figures.contract import FigureResult, Scale
from figures.verdict import Verdict
from tests.helpers import check_figure_result, tiny_im_setup

TINY_IM = tiny_im_setup()  # Im et al.'s pool, which the beyond figures reuse


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(bc, "EPOCHS", 1)
    monkeypatch.setattr(bc, "ALPHAS", np.linspace(0, 1, 5))
    monkeypatch.setattr(bc, "_settings", lambda scale: {"widths": [8, 16], "pairs": 2, "curve_epochs": 1})


def _check(res: FigureResult) -> None:
    assert PACKAGE_ADDS in res.caption  # every caption of the section says it is not a reproduction
    for c in check_figure_result(res, ""):
        assert c.premises
        if not all(p.met for p in c.premises):
            assert c.held is None


@pytest.mark.parametrize("run", [bc.run_rebasin, bc.run_curves])
def test_beyond_figures_build_with_well_formed_verdicts(tiny, tmp_path, run):
    res = run(scale=Scale.QUICK, data_dir=None, out=tmp_path, progress=False)
    _check(res)
    # one epoch of training cannot fit the training set: the premise fails and nothing is held
    assert all(c.verdict is Verdict.NOT_TESTED for c in res.claims)


def test_edge_of_stability_figure_at_a_tiny_scale(monkeypatch, tmp_path):
    from figures.beyond import eos as eos

    monkeypatch.setattr(eos, "STEPS", 40)
    monkeypatch.setattr(eos, "EVERY", 20)
    monkeypatch.setattr(eos, "N_IMAGES", 100)
    monkeypatch.setattr(eos, "CNN_STEPS", 40)
    monkeypatch.setattr(eos, "CNN_EVERY", 20)
    monkeypatch.setattr(eos, "CNN_IMAGES", 50)
    res = eos.run(scale=Scale.QUICK, data_dir=None, out=tmp_path, progress=False)
    _check(res)
    assert len(res.claims) == 2 * (len(eos.LRS) + len(eos.CNN_LRS))
    assert [p.key for p in res.panels] == ["sharpness", "cnn"]
    # 40 steps at lr 1/15 cannot reach 2/lr = 30 from about 7: the hovering claim is not tested there
    assert res.claims[1].verdict is Verdict.NOT_TESTED
    # nor can 40 CNN steps at lr 0.2 climb from about 4 to 2/lr = 10
    cnn = res.claims[2 * len(eos.LRS) :]
    assert "CNN" in cnn[0].statement and cnn[1].verdict is Verdict.NOT_TESTED


def test_progressive_sharpening_needs_a_start_below_the_reached_level():
    # the claim is held when lambda_max / (2/lr) first reaches 0.9 at a record, step 0 included: a run starting at
    # 0.95 would be "held" without any sharpening, so its premise fails; a start at 0.5 that climbs to 1 is held
    from figures.beyond import eos as eos

    def summary(initial, reached):
        return {
            "initial_ratio": initial,
            "reached_step": reached,
            "tail_median_ratio": 1.0,
            "tail_min_ratio": 0.95,
            "tail_max_ratio": 1.05,
            "tail_share_within": 1.0,
        }

    loss = [1.0, 0.1]
    for initial, reached, verdict in ((0.95, 0.0, Verdict.NOT_TESTED), (0.5, 300.0, Verdict.HELD)):
        (sharpening, _) = eos._claims("MLP", [0.1], [summary(initial, reached)], [loss], 1000, Scale.QUICK)
        assert sharpening.verdict is verdict
    assert not eos.starts_below_reach("MLP", 0.1, 0.9).met and eos.starts_below_reach("MLP", 0.1, 0.89).met


def test_im_table1_revisited_at_a_tiny_scale(monkeypatch, tmp_path):
    from figures.beyond import im_table1 as bit

    monkeypatch.setattr(bit, "_setup", lambda scale, data_dir: TINY_IM)
    monkeypatch.setattr(bit, "ALPHAS", np.linspace(0, 1, 3))
    res = bit.run(scale=Scale.QUICK, data_dir=None, out=tmp_path / "fig", progress=False)
    _check(res)
    same, diff = res.claims
    # 21 method pairs from each of 2 inits; one init pair per method
    assert len(same.measured) == 42 and len(diff.measured) == 1
    # two epochs fit nothing at this size: no claim is tested
    assert same.verdict is Verdict.NOT_TESTED and diff.verdict is Verdict.NOT_TESTED
    assert all(r >= 0 for r in same.measured)


def test_im_table1_pair_undoes_a_hidden_permutation():
    """A network and a unit-permuted copy of it: the raw line rises, the matched line is flat, units moved."""
    import torch

    from figures.beyond import im_table1 as bit
    from landscape.analyze import apply_permutation, permutation_spec, random_permutation
    from landscape.models import build_model

    a = build_model("vgg", (1, 8, 8), 10, cfg=(6, "M", 8, "M"), hidden=12, dropout=0.0, seed=0)
    spec = permutation_spec(a)
    b = apply_permutation(spec, random_permutation(spec, seed=3), a)
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen))
    r = bit._pairs([("a", "b")], {"a": a, "b": b}, data)[0]
    assert r["moved"] > 0.5
    assert r["before"] > 1e-3  # the midpoint of a and a relabelled a is a different network
    assert abs(r["after"]) < 1e-5 and np.ptp(r["line_after"]) < 1e-5


def test_im_table1_pairs_grouped_by_first_network_are_the_lines_one_by_one():
    """Lines evaluated together from one network (its own point once) are :func:`loss_barrier`'s, line by line."""
    import torch

    from figures.beyond import im_table1 as bit
    from landscape import loss_barrier, weight_matching
    from landscape.models import build_model

    nets = {
        s: build_model("vgg", (1, 8, 8), 10, cfg=(6, "M", 8, "M"), hidden=12, dropout=0.0, seed=s).double()
        for s in range(3)
    }
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(40, 1, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 10, (40,), generator=gen))
    jobs = [(0, 1), (0, 2), (1, 2), (2, 2)]  # two from network 0; a network with itself: the identity, one line
    rows = bit._pairs(jobs, nets, data)
    assert rows[3]["moved"] == 0 and rows[3]["before"] == rows[3]["after"] == 0
    for (i, j), r in zip(jobs, rows):
        aligned = weight_matching(a=nets[i], b=nets[j]).apply(nets[j])
        for when, b in (("before", nets[j]), ("after", aligned)):
            want = loss_barrier(a=nets[i], b=b, data=data, alphas=bit.ALPHAS, bn_mode="recompute")
            np.testing.assert_allclose(r[f"line_{when}"], want.metrics["loss"], rtol=1e-12, atol=1e-12)
            assert r[when] == pytest.approx(want.loss_barrier, rel=1e-9, abs=1e-12)
            assert r[f"acc_{when}"] == pytest.approx(want.accuracy_barrier, abs=1e-12)


def test_im_table1_pair_recomputes_batchnorm_statistics_at_every_point():
    """The lines are RESET's: at each alpha, BatchNorm statistics recomputed over the data, then eval mode.

    Brute force in float64: interpolate the parameters, reset every BatchNorm's running statistics, one train-mode
    pass over the data with momentum None (the data's mean and unbiased variance), eval-mode loss. A line on the
    evaluated batch's own statistics (``bn_mode="train"``: biased variance over 48 images) differs from it by more
    than the tolerance, so the check tells the two apart.
    """
    import copy

    import torch

    from figures.beyond import im_table1 as bit
    from landscape import loss_barrier
    from landscape.models import build_model

    a, b = (build_model("vgg", (1, 8, 8), 10, cfg=(6, "M", 8, "M"), hidden=12, dropout=0.0, seed=s) for s in (0, 1))
    a, b = a.double(), b.double()
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(48, 1, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 10, (48,), generator=gen))
    r = bit._pairs([("a", "b")], {"a": a, "b": b}, data)[0]

    def reset_loss(alpha: float) -> float:
        m = copy.deepcopy(a)
        pb = dict(b.named_parameters())
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_((1 - alpha) * p + alpha * pb[name])
        bns = [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
        assert bns  # the check is about BatchNorm
        for x in bns:
            x.reset_running_stats()
            x.momentum = None
        m.train()
        with torch.no_grad():
            m(data[0])
            m.eval()
            return float(torch.nn.functional.cross_entropy(m(data[0]), data[1]))

    want = np.array([reset_loss(float(al)) for al in bit.ALPHAS])
    np.testing.assert_allclose(r["line_before"], want, rtol=1e-9, atol=1e-12)
    batch_stats = loss_barrier(a=a, b=b, data=data, alphas=bit.ALPHAS, bn_mode="train").metrics["loss"]
    assert np.max(np.abs(np.asarray(batch_stats) - want)) > 1e-6


def test_sharpness_table_at_a_tiny_scale(monkeypatch, tmp_path):
    import json

    from figures.beyond import sharpness as bs
    from figures.persistent._setup import RunSetup

    tiny = dataclasses.replace(TINY_IM, repetitions=1)
    lenet = {
        name: RunSetup(
            name=f"tiny_{i}",
            data="digits",
            model="lenet5",
            mode=mode,
            lam=0.01,
            iterations=2,
            epochs=1,
            batch_size=256,
            record_every_epochs=None,
        )
        for i, (name, mode) in enumerate([("full", "full"), ("partial", "partial")])
    }
    monkeypatch.setattr(bs, "_im_setup", lambda scale, data_dir: tiny)
    monkeypatch.setattr(bs, "_lenet_setups", lambda scale, data_dir: lenet)
    monkeypatch.setattr(bs, "N_IMAGES", 32)
    cheap = {
        k: (d, {**kw, **{o: 2 for o in ("steps", "n_samples", "n_batches") if o in kw}})
        for k, (d, kw) in bs.MEASURES.items()
    }
    monkeypatch.setattr(bs, "MEASURES", cheap)
    out = tmp_path / "fig"
    res = bs.run(scale=Scale.QUICK, data_dir=None, out=out, progress=False)
    _check(res)
    assert len(res.claims) == 2 * len(bs.MEASURES)
    rows = json.loads((out / "sharpness.json").read_text())
    assert len(rows) == 7 + 2 * 2  # 7 optimizers x 1 init; 2 runs x 2 iterations
    # worst-case values are the largest increase found, never below the starting point's (>= 0 up to rounding)
    assert all(r["sharpness"]["worst-case"][0] >= -1e-6 for r in rows)
    # one epoch fits nothing: every claim rests on a failed premise
    assert all(c.verdict is Verdict.NOT_TESTED for c in res.claims)


def test_sharpness_correlation_takes_the_replicates_as_the_unit():
    # The minima of one initialization share it: a pooled rank correlation counts between-initialization differences
    # as evidence. Here sharpness and error rise together across 5 replicates (inits), but within each one the sharper
    # minimum has the lower error (rho -1): pooled it looks held, per replicate it is the opposite.
    from scipy import stats

    from figures.beyond.sharpness import replicate_correlation
    from figures.verdict import spearman_effect, verdict_for

    # 6 replicates: equal rhos are a degenerate sample, decided by the sign test, which needs 6 for a 95% point
    reps6 = [f"init {k}" for k in range(6) for _ in range(4)]
    sharp = [10.0 * k + j for k in range(6) for j in range(4)]
    err = [10.0 * k + (3 - j) for k in range(6) for j in range(4)]
    pooled = spearman_effect(sharp, err)
    assert verdict_for(pooled) is Verdict.HELD
    eff = replicate_correlation(sharp, err, reps6)
    assert eff.n == 6 and eff.mean == -1.0 and verdict_for(eff) is Verdict.NOT_HELD
    reps = reps6[:20]  # 5 replicates of 4 minima
    # against brute force: the t interval of the per-replicate Spearman rhos (this one passes both -1 and 1)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    rhos = [stats.spearmanr(x[4 * k : 4 * k + 4], y[4 * k : 4 * k + 4]).statistic for k in range(5)]
    eff = replicate_correlation(x, y, reps)
    ref = stats.ttest_1samp(rhos, 0.0).confidence_interval(0.95)
    clipped = (max(ref.low, -1.0), min(ref.high, 1.0))  # the t interval, inside the range of a correlation
    assert eff.mean == pytest.approx(np.mean(rhos)) and (eff.ci_low, eff.ci_high) == pytest.approx(clipped)
    # rhos 1, 1, 0.8, 0.8: the t interval of their mean passes 1, where no correlation lies; kept inside [-1, 1]
    # (rhos 1, 1, 1, 0.6 have an equal majority, decided by the sign test since 2026-12-08: figures.verdict)
    reps4 = [f"init {k}" for k in range(4) for _ in range(4)]
    up = [1.0, 2.0, 3.0, 4.0]
    eff = replicate_correlation(up * 4, up * 2 + [2.0, 1.0, 3.0, 4.0] * 2, reps4)
    ref = stats.ttest_1samp([1.0, 1.0, 0.8, 0.8], 0.0).confidence_interval(0.95)
    assert ref.high > 1 and eff.mean == pytest.approx(0.9)
    assert (eff.ci_low, eff.ci_high) == (pytest.approx(ref.low), 1.0)
    # a replicate with a constant variable has no rho and is left out; none left: no evidence at all
    assert replicate_correlation([1, 1, 1, 1, 2, 3], [1, 2, 3, 1, 2, 3], ["a"] * 3 + ["b"] * 3).n == 1
    assert verdict_for(replicate_correlation([1, 1, 1], [1, 2, 3], ["a"] * 3)) is Verdict.INCONCLUSIVE


def test_im_table1_pairs_evaluate_each_network_once_and_only_the_inner_points_per_line(monkeypatch):
    """The ends of the lines are the networks' own points, once each; every line adds only its 9 inner points."""
    import torch

    from figures.beyond import im_table1 as bit
    from landscape.models import build_model

    nets = {
        s: build_model("vgg", (1, 8, 8), 10, cfg=(6, "M", 8, "M"), hidden=12, dropout=0.0, seed=s) for s in range(3)
    }
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen))
    sizes = []
    evaluate = bit._evaluate

    def counting(template, points, data):
        sizes.append(len(points))
        return evaluate(template, points, data)

    monkeypatch.setattr(bit, "_evaluate", counting)
    jobs = [(0, 1), (0, 2), (1, 2)]  # independent seeds: every pair moves units, so two lines each
    rows = bit._pairs(jobs, nets, data)
    assert all(r["moved"] > 0 for r in rows)
    inner = len(bit.ALPHAS) - 2
    assert sizes[0] == len(nets) and sum(sizes[1:]) == 2 * len(jobs) * inner
    for r in rows:  # the ends are the networks' own points: the same at alpha 0 (network a) and 1 (network b)
        assert r["line_before"][0] == r["line_after"][0] and r["line_before"][-1] == r["line_after"][-1]
