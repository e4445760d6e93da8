"""Tunnels figures (figures/tunnels_*.py) at a tiny scale: they run, and their claims and panels are well formed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from figures.contract import FigureResult, MissingDataError
from figures.tunnels._deep import deep_runs, is_stuck
from figures.tunnels._deep_data import load_imagenet64
from figures.tunnels._deep_setup import DeepSetup
from figures.tunnels._setup import (
    STUCK_TOL,
    Setup,
    duplicate_filters,
    load_data,
    moved_premise,
    saddle_point,
    saddle_premises,
    stuck_premise,
)
from figures.tunnels.fig1 import run_left, run_right
from figures.tunnels.fig3 import run_fig3
from figures.verdict import Verdict, paired_effect
from landscape.models import build_model
from landscape.params import parameters_to_vector
from tests.helpers import check_figure_result
from tunnels import open_tunnels, split_stats

TINY = Setup(
    "quick",
    n_train=64,
    filters=2,
    kernel=5,
    newton_steps=2,
    newton_step_size=1.0,
    lr=1.0,
    batch_size=32,
    open_at=4,
    close_at=8,
    total_steps=12,
    repetitions=2,
    t=1.0,
    label_noise=0.5,
    tunnels=1,
)


def _check(res: FigureResult, keys: list[str], n_claims: int) -> None:
    for c in check_figure_result(res, "Tunnels", keys, n_claims):
        assert c.detail
    assert {"model", "data", "epochs", "repetitions"} <= set(res.scaling)


def test_saddle_is_cached_and_a_critical_point(tmp_path):
    data, _ = load_data(TINY, None)
    a, info = saddle_point(TINY, data, tmp_path)
    b, info2 = saddle_point(TINY, data, tmp_path)  # read back from the safetensors cache
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b)) and info == info2
    w = a.conv1.weight.detach()
    assert torch.equal(w[0], w[1])  # duplicated filters: the control cannot leave the symmetric subspace
    crit = saddle_premises(info)[0]
    assert crit.measured == info["grad_norm"] and crit.met == (info["grad_norm"] <= crit.threshold)


def test_duplicate_filters_preserves_the_function():
    torch.manual_seed(0)
    from landscape.models import SigmoidConvNet

    one = SigmoidConvNet((1, 8, 8), 10, filters=1, kernel_size=5).double()
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    for k in (2, 3):
        net = duplicate_filters(one, k, (1, 8, 8))
        assert net.conv1.out_channels == k and torch.allclose(net(x), one(x), atol=1e-12)


def test_stuck_and_moved_premises_on_synthetic_curves():
    steps = np.arange(0, 105, 5)
    flat = [[1.0 + 0.01 * np.sin(k) for k in range(len(steps))]] * 3
    falling = [list(np.linspace(1.0, 0.5, len(steps)))] * 3
    assert stuck_premise(flat, steps).met
    drop = stuck_premise(falling, steps)
    assert not drop.met and min(drop.measured) > STUCK_TOL
    # a rise is a change too (the paper's stuck run goes "without change of loss"): 3% above the start is not stuck
    lifted = [[1.0] + [1.03 + 0.01 * np.sin(k) for k in range(len(steps) - 1)]] * 2
    up = stuck_premise(lifted, steps)
    assert not up.met and min(up.measured) == pytest.approx(0.03, abs=0.01)
    # a rise confined to one quarter (a transient) counts: every quarter's mean is checked, not only the last
    bump = [[1.0 + (0.1 if 10 <= s <= 25 else 0.0) for s in steps]]
    assert not stuck_premise(bump, steps).met
    assert stuck_premise([[1.0 + (0.005 if 10 <= s <= 25 else 0.0) for s in steps]], steps).met
    # per repetition: one repetition outside the band fails the premise; the measured values are the brute-force ones
    mixed = stuck_premise([[1.0] * len(steps), [1.0] + [0.97] * (len(steps) - 1)], steps)
    assert not mixed.met and mixed.measured == pytest.approx([0.0, 0.03])
    assert moved_premise({"moves": [[0.5, 0.5], [0.4]]}, "PGD").met
    never = moved_premise({"moves": [[], [0.5]]}, "NEON")  # a baseline that never fired in one run
    assert not never.met and never.measured == [0.0, 0.5]


def _assert_escape_verdict(claim) -> None:
    """An escape claim: a paired effect over the repetitions, decided against the stuck control's 2% margin."""
    from figures.tunnels._setup import STUCK_TOL
    from figures.verdict import superiority_verdict

    assert claim.effect == paired_effect(claim.measured)
    if claim.premise_met:
        assert claim.verdict is superiority_verdict(claim.effect, STUCK_TOL)


def test_fig1_left(tmp_path):
    res = run_left("quick", cache=tmp_path, setup=TINY)
    _check(res, ["loss"], 3)
    # "remains unstuck" after closing is an escape too: relative to the loss at the opening, beyond the 2% margin
    _assert_escape_verdict(res.claims[2])


def test_fig1_right_matches_theory():
    res = run_right("quick", setup=TINY, lbfgs_steps=30)
    _check(res, ["gradnorm"], 3)
    loss_claim, exp_claim, add_claim = res.claims
    assert loss_claim.held  # opening preserves the function exactly in float64, whatever the point
    # 30 L-BFGS steps do not reach a critical point: only well-formedness of the other two claims
    assert math.isfinite(exp_claim.measured) and add_claim.measured >= 0


def test_fig3(tmp_path):
    res = run_fig3("quick", cache=tmp_path, setup=TINY)
    _check(res, ["distance"], 3)
    assert res.claims[2].measured <= 1e-4  # lambda = 1/2 keeps the clone (nearly: float32 rounding) on its origin


def test_fig2_left(tmp_path):
    from figures.tunnels.fig2 import run_fig2_left

    res = run_fig2_left("quick", cache=tmp_path, setup=TINY)
    _check(res, ["loss"], 4)
    # the escape is relative to the loss at the opening and must exceed the stuck control's 2%, not merely 0
    _assert_escape_verdict(res.claims[0])


# ----------------------------------------------------------------------------- Sec. 4.4: Fig. 2 right and Table 3
# stuck_tol 0.5: at this size the stuck criterion must pass for certain (the claims are then True/False, not None)
TINY_DEEP = DeepSetup(
    "quick",
    "mnist_subset",
    n_train=256,
    width=4,
    lr=1e-3,
    batch_size=32,
    open_at=8,
    total_steps=14,
    repetitions=2,
    t=1.0,
    warmup_steps=3,
    warmup_start=0.1,
    window=3,
    stuck_tol=0.5,
    max_inits=1,
    bin=2,
    start="tied",
    converge_steps=6,
    label_noise=0.25,
)


def test_fig2_right_and_table3_share_one_cached_run(tmp_path):
    from figures.tunnels.fig2_right import run_fig2_right
    from figures.tunnels.table3 import run_table3

    _check(run_fig2_right("quick", cache=tmp_path, setup=TINY_DEEP), ["loss"], 3)
    (cached,) = tmp_path.glob("deep_*.json")
    stamp = cached.stat().st_mtime_ns
    _check(run_table3("quick", cache=tmp_path, setup=TINY_DEEP), ["times"], 2)
    assert cached.stat().st_mtime_ns == stamp  # Table 3 read Fig. 2 right's runs instead of training again
    res = deep_runs(TINY_DEEP, None, tmp_path)
    # paired arms: every arm of a repetition continues from the same state, so the curves agree up to the opening
    k = TINY_DEEP.open_at // TINY_DEEP.bin
    for rep in range(TINY_DEEP.repetitions):
        heads = [res["curves"][arm][rep][:k] for arm in ("control", "proposed", "random")]
        assert heads[0] == heads[1] == heads[2]
    assert res["units"]["proposed"] == res["units"]["random"]  # the same largest-rho filters, only lambda differs
    # the timed opening is nested in its run: positive parts that add up to less than the run
    T = res["times"]
    for arm in ("proposed", "random"):
        for rep in range(TINY_DEEP.repetitions):
            a, eig, opening, post = T["a"][arm][rep], T["eigen"][arm][rep], T["open"][arm][rep], T["post"][arm][rep]
            assert 0 < a and 0 < eig and a + eig < opening < post
    assert all(v == 0.0 for v in T["a"]["control"]) and all(v > 0 for v in T["open"]["control"])


def test_tied_cnn_is_a_bottleneck_network_and_adam_keeps_it_tied():
    from figures.tunnels._deep import tie_units, tied_spread
    from landscape.train import Trainer

    net = build_model("tunnels_cnn", (1, 28, 28), 10, width=4, seed=1, dtype=torch.float64)
    assert tied_spread(net) > 0
    tie_units(net)
    assert tied_spread(net) == 0.0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (16,), generator=g)
    # reference by hand: one conv4 filter, one conv5 filter whose input is the k equal maps, fc1 on the k equal maps
    net.eval()
    with torch.no_grad():
        h = x
        for name, mod in net.named_children():  # conv1-conv3 with their BN and pooling
            if name == "conv4":
                break
            h = mod(h)
        F = torch.nn.functional
        h4 = F.relu(F.conv2d(h, net.conv4.weight[:1], net.conv4.bias[:1], padding=1))
        h5 = F.relu(F.conv2d(4 * h4, net.conv5.weight[:1, :1], net.conv5.bias[:1], padding=1))
        per = net.fc1.in_features // 4
        ref = F.linear(4 * h5.flatten(1), net.fc1.weight[:, :per], net.fc1.bias)
        assert torch.allclose(net(x), ref, rtol=0, atol=1e-10)
    net.train()
    tr = Trainer(
        net.float(),
        (x.float(), y),
        torch.nn.functional.cross_entropy,
        "adam",
        optimizer_kwargs={"lr": 1e-2},
        steps=5,
        batch_size=8,
        seed=0,
    )
    tr.fit()
    moved = parameters_to_vector(tr.model) - parameters_to_vector(net)
    assert float(moved.norm()) > 0 and tied_spread(tr.model) == 0.0  # trained, and the copies stayed bitwise equal


def test_deep_runs_with_the_papers_initialization_search(tmp_path):
    import dataclasses

    s = dataclasses.replace(TINY_DEEP, start="search", max_inits=2, converge_steps=0, repetitions=1)
    res = deep_runs(s, None, None)
    assert 1 <= len(res["tried"]) <= 2 and res["converge"] == {} and math.isnan(res["tied_spread"][0])
    with pytest.raises(ValueError, match="converge_steps"):
        dataclasses.replace(TINY_DEEP, converge_steps=0)


@pytest.mark.parametrize("mode", ["proposed", "random"])
def test_opening_in_the_deep_cnn_preserves_its_outputs(mode):
    net = build_model("tunnels_cnn", (1, 28, 28), 10, width=4, seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (24,), generator=g)
    with torch.no_grad():  # a few train-mode passes so that BatchNorm's running statistics are not the defaults
        for _ in range(3):
            net(x)
    before = parameters_to_vector(net).clone()
    stats = split_stats(net, (x, y), torch.nn.functional.cross_entropy, ["conv4", "conv5"], train=True)
    new, ev = open_tunnels(net, {"conv4": 1, "conv5": 1}, t=1.0, mode=mode, stats=stats, seed=0)
    assert (new.conv4.out_channels, new.conv5.in_channels, new.conv5.out_channels) == (5, 5, 5)
    assert new.fc1.in_features == net.fc1.in_features + 9  # conv5's maps are 3x3 at 28x28 inputs
    assert [c.producer for c in ev.changes] == ["conv4", "conv5"]
    for train in (False, True):  # eval mode (running statistics) and train mode (batch statistics)
        net.train(train)
        new.train(train)
        with torch.no_grad():
            assert torch.allclose(new(x), net(x), rtol=0, atol=1e-10)
    assert torch.equal(parameters_to_vector(net), before)  # out of place


def test_stuck_criterion():
    flat = np.full(20, 2.3)
    assert is_stuck(flat, 5, 0.01) == (True, 0.0)
    falling = np.linspace(2.3, 1.0, 20)
    stuck, rel = is_stuck(falling, 5, 0.01)
    assert not stuck and rel == pytest.approx((falling[10:15].mean() - falling[15:].mean()) / falling[15:].mean())


def test_imagenet64_npz_batches(tmp_path):
    d = tmp_path / "imagenet64"
    d.mkdir()
    rng = np.random.default_rng(0)
    labels = [rng.integers(1, 1001, 5), rng.integers(1, 1001, 3)]
    for i, lab in enumerate(labels, 1):
        np.savez(
            d / f"train_data_batch_{i}.npz",
            data=rng.integers(0, 256, (len(lab), 12288), dtype=np.uint8),
            labels=lab,
            mean=np.zeros(12288),
        )
    b = load_imagenet64(tmp_path, batch_size=3)
    got = list(b)
    assert len(b) == len(got) == 3 and [x.shape[0] for x, _ in got] == [3, 3, 2]
    assert all(x.shape[1:] == (3, 64, 64) and x.dtype == torch.float32 for x, _ in got)
    assert sorted(torch.cat([y for _, y in got]).tolist()) == sorted((np.concatenate(labels) - 1).tolist())
    assert abs(float(torch.cat([x for x, _ in got]).double().mean())) < 1e-6  # the pixel mean is subtracted
    np.savez(d / "train_data_batch_3.npz", data=np.zeros((2, 100), np.uint8), labels=np.ones(2))
    with pytest.raises(ValueError, match="12288"):
        load_imagenet64(tmp_path, batch_size=3)
    with pytest.raises(MissingDataError, match="imagenet64"):
        load_imagenet64(tmp_path / "nowhere", batch_size=3)


def test_table4_and_its_equivalence_verdict(tmp_path):
    from figures.tunnels.table4 import run_table4
    from figures.verdict import equivalence_verdict

    res = run_table4("quick", cache=tmp_path, setup=TINY)
    _check(res, ["accuracy"], 3)
    assert all(0 <= a <= 1 for a in res.claims[1].measured)
    assert res.claims[1].verdict is Verdict.NOT_TESTED  # a tiny run is not the paper's experiment
    # equivalence: inside the margin -> held; excluding 0 -> not held; wide and covering 0 -> inconclusive
    # differences -0.005, +0.003, +0.005, -0.002, +0.004: a real spread (3 of 5 equal would go to the sign test)
    same = paired_effect([0.90, 0.91, 0.92, 0.90, 0.91], [0.905, 0.907, 0.915, 0.902, 0.906])
    assert equivalence_verdict(same, 0.02) is Verdict.HELD
    worse = paired_effect(
        [0.80, 0.81, 0.82, 0.80, 0.81], [0.90, 0.92, 0.91, 0.90, 0.92]
    )  # equal differences would be degenerate
    assert equivalence_verdict(worse, 0.02) is Verdict.NOT_HELD
    noisy = paired_effect([0.7, 0.95, 0.8, 0.99, 0.75], [0.9, 0.8, 0.9, 0.85, 0.9])
    assert equivalence_verdict(noisy, 0.02) is Verdict.INCONCLUSIVE


def test_fig4_reuses_the_cached_runs(tmp_path):
    from figures.tunnels.fig4 import run_fig4

    res = run_fig4("quick", cache=tmp_path, setup=TINY, deep_setup=TINY_DEEP)
    _check(res, ["loss"], 2 + 4 + 2)  # proposed vs each other arm, per experiment


def test_the_claims_files_paper_values_match_the_papers_tables():
    from figures.claims import ClaimBook
    from figures.tunnels._deep_setup import PAPER_TABLE3
    from figures.tunnels.table4 import PAPER_MNIST

    (pm, ps), (cm, cs) = PAPER_TABLE3["ImageNet"]["proposed"], PAPER_TABLE3["ImageNet"]["control"]
    table3 = ClaimBook("tunnels_table3")["overhead-insignificant"].paper_value
    assert table3 == f"ImageNet: proposed {pm:,} ({ps:,}) s vs control {cm:,} ({cs:,}) s"
    assert ClaimBook("tunnels_table4")["mnist-accuracy"].paper_value == PAPER_MNIST


# ----------------------------------------------------------------------------- the medium scale
def test_medium_settings_and_which_figures_have_them():
    import dataclasses

    from figures.contract import Scale, discover, get_figure
    from figures.tunnels._deep_setup import DEEP_BASELINES, make_deep_setup
    from figures.tunnels._setup import make_setup

    quick, medium = make_setup("quick"), make_setup("medium")
    assert medium == dataclasses.replace(quick, scale="medium", total_steps=2000)  # only the run length changes
    dq, dm = make_deep_setup("quick"), make_deep_setup("medium")
    assert dm == dataclasses.replace(dq, scale="medium", baselines=DEEP_BASELINES) and dq.arms == dq.arms[:3]
    discover()
    # the figures drawn from the single-layer runs or the deep-CNN runs have the medium setting; Fig. 1 right
    # (its own L-BFGS network) and Fig. 3 (the steps around the opening) stay quick
    with_medium = {
        n
        for n in ("fig1_left", "fig1_right", "fig2_left", "fig2_right", "fig3", "fig4", "table3", "table4")
        if Scale.MEDIUM in get_figure(f"tunnels_{n}").scales
    }
    assert with_medium == {"fig1_left", "fig2_left", "fig2_right", "fig4", "table3", "table4"}
    with pytest.raises(ValueError, match="baselines"):
        dataclasses.replace(dq, baselines=("pgd", "sgd"))


def test_deep_baselines_leave_the_three_arms_unchanged_and_move_the_weights(tmp_path):
    import dataclasses

    from figures.tunnels._deep_setup import DEEP_ARMS
    from figures.tunnels._setup import NEON_KW, PGD_KW
    from figures.tunnels.fig2_right import run_fig2_right
    from figures.tunnels.fig4 import run_fig4
    from figures.tunnels.table3 import run_table3

    with_b = dataclasses.replace(TINY_DEEP, baselines=("pgd", "neon"))
    res = deep_runs(with_b, None, tmp_path)
    plain = deep_runs(TINY_DEEP, None, tmp_path)
    for key in ("curves", "full_end", "full_tail", "loss_end"):  # the baselines run after the three arms
        assert {a: res[key][a] for a in DEEP_ARMS} == plain[key]
    for a in ("pgd", "neon"):  # paired: every arm continues from the repetition's state at the opening
        k = with_b.open_at // with_b.bin
        assert [c[:k] for c in res["curves"][a]] == [c[:k] for c in res["curves"]["control"]]
    pgd = np.concatenate(res["moves"]["pgd"])
    post = with_b.total_steps - with_b.open_at
    assert len(pgd) == with_b.repetitions * len(range(1, post + 1, PGD_KW["t_thres"]))
    assert np.all((pgd > 0) & (pgd <= PGD_KW["radius"] * (1 + 1e-5)))  # a point of the ball
    neon = np.concatenate([m for m in res["moves"]["neon"] if m] or [np.zeros(0)])
    np.testing.assert_allclose(neon, NEON_KW["escape_step"], rtol=1e-4)  # a unit direction times the escape step
    assert len(res["neon_curvatures"]) == with_b.repetitions and res["lam_max"] > 0
    assert res["neon_eta"] == pytest.approx(0.86 / res["lam_max"])
    assert min(res["untied"]["pgd"]) > 0  # a random perturbation breaks the tie the control keeps
    assert res["neon_images"] == min(256, 256 // with_b.batch_size * with_b.batch_size)
    fig = run_fig2_right("quick", cache=tmp_path, setup=with_b)
    _check(fig, ["loss"], 5)
    named = [c.statement.split("faster than the baseline ")[1].split(" (")[0] for c in fig.claims[3:]]
    assert named == ["perturbed GD", "NEON"]
    for c in fig.claims[3:]:  # "faster": steps to the escape level, baseline minus proposed, one per repetition
        assert len(c.measured) == with_b.repetitions and "steps after the opening" in c.detail
        assert all(abs(v) <= with_b.total_steps - with_b.open_at + with_b.bin for v in c.measured)
    _check(run_table3("quick", cache=tmp_path, setup=with_b), ["times"], 2)
    _check(run_fig4("quick", cache=tmp_path, setup=TINY, deep_setup=with_b), ["loss"], 2 + 4 + 4)


def test_both_verdict_needs_both_parts():
    from figures.tunnels.fig2_right import both_verdict

    H, N, I = Verdict.HELD, Verdict.NOT_HELD, Verdict.INCONCLUSIVE
    table = {(H, H): H, (H, N): N, (N, H): N, (H, I): I, (I, H): I, (I, I): I, (N, I): N, (I, N): N, (N, N): N}
    assert {k: both_verdict(*k) for k in table} == table


def test_steps_to_level_is_the_first_full_window_after_the_opening_at_or_below_the_level():
    # "faster" (Fig. 2 right's baselines): steps from the opening to the end of the first window of minibatch losses
    # whose mean reaches the level; brute force over windows of whole bins, never mixing in steps before the opening
    from figures.tunnels.fig2_right import steps_to_level

    rng = np.random.default_rng(0)
    open_at, bin_steps, window = 30, 5, 15
    for _ in range(50):
        curve = rng.normal(1.0, 0.05, 20)
        level = float(rng.uniform(0.93, 1.0))
        k, first = window // bin_steps, open_at // bin_steps
        ref = math.inf
        for end in range(first + k, len(curve) + 1):  # windows ending at each bin end after the opening
            if np.mean(curve[end - k : end]) <= level:
                ref = float((end - first) * bin_steps)
                break
        assert steps_to_level(curve, level, open_at, bin_steps, window) == ref
    drop = np.r_[np.ones(6), np.full(6, 0.5)]  # the loss halves right at the opening: reached after one window
    assert steps_to_level(drop, 0.6, open_at, bin_steps, window) == window
    assert steps_to_level(np.ones(12), 0.9, open_at, bin_steps, window) == math.inf  # never: censored by the caller
    low_before = np.r_[np.zeros(6), np.ones(6)]  # low only before the opening: does not count
    assert steps_to_level(low_before, 0.5, open_at, bin_steps, window) == math.inf
