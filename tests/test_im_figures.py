"""Im, Tao & Branson figures: the shared run pool (figures/im/_setup.py), the measures, two figures at tiny scale."""

import copy
import dataclasses
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from figures.contract import Claim, FigureResult, MissingDataError
from figures.im import _setup as common
from figures.im._setup import (
    ImRuns,
    ImSetup,
    RunSpec,
    converged_premise,
    first_crossing,
    no_difference,
    rise,
    rise_score,
    rises,
)
from figures.im.fig2_3 import edges
from figures.im.fig5_6 import basin_widths
from figures.im.fig8_table2 import LR_GRIDS, barrier_width, n_bumps, pick_rate, pilot_loss
from figures.im.fig9 import NOT_BETTER_MARGIN, equal_evals
from figures.verdict import Verdict, paired_effect
from landscape.params import parameters_to_vector
from landscape.train import default_hyperparameters
from landscape.trajectory import Trajectory
from tests.helpers import check_figure_result, tiny_im_setup

TINY = tiny_im_setup()


@pytest.fixture(scope="module")
def runs(figure_cache):
    return ImRuns(TINY, figure_cache)


def test_runs_share_the_initialization_and_count_gradient_evaluations(runs):
    sgd, adam, rk2, other = runs.many([RunSpec("sgd"), RunSpec("adam"), RunSpec("sgd_rk2"), RunSpec("sgd", init=1)])
    assert torch.equal(sgd.init, adam.init) and torch.equal(sgd.init, rk2.init)
    assert not torch.equal(sgd.init, other.init)
    assert not torch.equal(sgd.final, adam.final)
    assert [r["epoch"] for r in sgd.history] == [0, 1, 2] and sgd.completed
    steps = TINY.steps_per_epoch()
    assert [r["grad_evals"] for r in sgd.history] == [0, steps, 2 * steps]
    assert [r["grad_evals"] for r in rk2.history] == [0, 2 * steps, 4 * steps]  # RK2: two closures per step
    # the logged distance from init is the distance between the stored endpoints
    assert sgd.history[0]["dist_init"] == 0.0
    assert sgd.history[-1]["dist_init"] == pytest.approx(
        float((sgd.final.double() - sgd.init.double()).norm()), rel=1e-6
    )
    # the model at the last snapshot is the final vector
    assert torch.equal(parameters_to_vector(sgd.model(-1)), sgd.final)


def test_runs_are_cached_on_disk(runs, figure_cache, monkeypatch):
    first = runs.get(RunSpec("sgd"))

    def boom(*a, **k):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr("figures.im._runs._train", boom)
    again = ImRuns(TINY, figure_cache).get(RunSpec("sgd"))
    assert torch.equal(again.final, first.final) and again.history == first.history


def test_switch_run_records_the_switch(runs):
    r = runs.get(RunSpec("sgd", then="adam", switch_at=0.5))
    assert r.label == "S1-A1"
    events = [e for i in range(len(r.traj)) for e in r.traj.tags(i).get("events", [])]
    assert events == [{"event": "switch", "from": "sgd", "to": "adam", "step": TINY.steps_per_epoch(), "phase": 1}]
    plain = runs.get(RunSpec("sgd"))
    assert r.history[1] == plain.history[1]  # identical until the switch


def test_spec_and_setup_validation():
    with pytest.raises(ValueError, match="valid"):
        RunSpec("lbfgs")
    with pytest.raises(ValueError, match="then"):
        RunSpec("sgd", switch_at=0.5)
    with pytest.raises(ValueError, match="data_dir"):
        ImSetup(dataset="cifar10")
    for count in ("repetitions", "repetitions_nobn", "repetitions_fig9", "repetitions_switch", "repetitions_nin"):
        with pytest.raises(ValueError, match="repetition count"):
            ImSetup(**{count: 0})
    with pytest.raises(ValueError, match="repetition count"):  # the LSTM figure's count was left out of the check
        ImSetup(repetitions_lstm=0)
    assert RunSpec("sgd", hyper={"lr": 0.1, "a": 1}).hyper == (("a", 1), ("lr", 0.1))
    assert RunSpec("sgd").key() != RunSpec("sgd", batchnorm=False).key()
    # rates after a switch: an override equal to the default is no override (one cache key), others differ
    sw = {"then": "adam", "switch_at": 0.5}
    assert RunSpec("sgd", **sw, then_hyper={"lr": 0.001}).key() == RunSpec("sgd", **sw).key()
    assert RunSpec("sgd", **sw, then_hyper={"lr": 0.0005}).then_hyper == (("lr", 0.0005),)
    assert RunSpec("sgd", **sw, then_hyper={"lr": 0.0005}).key() != RunSpec("sgd", **sw).key()
    with pytest.raises(ValueError, match="then_hyper"):
        RunSpec("sgd", then_hyper={"lr": 0.1})


def test_rate_after_the_switch_changes_only_the_second_phase(runs):
    sw = {"then": "sgd", "switch_at": 0.5}
    a, b = runs.many([RunSpec("adam", **sw), RunSpec("adam", **sw, then_hyper={"lr": 0.2})])
    assert a.history[1] == b.history[1]  # identical until the switch
    assert a.history[2]["dist_init"] != b.history[2]["dist_init"]


def test_full_scale_without_cifar_fails_clearly(tmp_path):
    with pytest.raises(MissingDataError, match="--data-dir"):
        ImSetup.for_scale("full", None)
    setup = ImSetup.for_scale("full", tmp_path)  # the directory exists but holds no CIFAR-10
    assert (setup.dataset, setup.epochs, setup.batch_size) == ("cifar10", 200, 128)  # Im et al. Sec. 3.4
    with pytest.raises(MissingDataError, match="cifar-10-batches-py"):
        setup.splits()


def test_measures_closed_forms():
    ratio, height = rise(np.array([0.1, 0.5, 0.25]))  # peak over the larger end, 0.25
    assert ratio == pytest.approx(2.0) and height == pytest.approx(0.25) and rises(ratio, height)
    assert not rises(*rise(np.array([0.2, 0.21, 0.1])))
    assert math.isnan(rise(np.array([0.1, np.nan, 0.2]))[0])
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert first_crossing(x, np.array([1.0, 2.0, 4.0, 8.0]), 3.0) == pytest.approx(1.5)
    assert math.isnan(first_crossing(x, np.ones(4), 2.0))
    # a parabola L = 1 + d^2, init at d = 2: the loss doubles at d = 1, reaches (1 + 5) / 2 = 3 at d = sqrt(2)
    d = np.linspace(0, 3, 3001)
    dbl, half = basin_widths(d, 1 + d**2, 2.0)
    assert dbl == pytest.approx(1.0, abs=1e-5) and half == pytest.approx(math.sqrt(2), abs=1e-5)
    assert basin_widths(d, np.ones_like(d), 2.0) == (3.0, 0.0)  # never doubles: censored at the line's end
    t = np.linspace(0, 1, 21)
    assert n_bumps(np.sin(np.pi * t)) == 1 and n_bumps(np.sin(2 * np.pi * t) ** 2) == 2
    assert barrier_width(np.zeros(5)) == 0.0 and barrier_width(np.array([0.0, 1.0, 1.0, 0.0])) == 0.5
    grid = np.arange(12.0).reshape(3, 4)  # loss[beta, alpha]
    e = edges(grid)
    assert list(e["top"]) == [8, 9, 10, 11] and list(e["right"]) == [3, 7, 11]


def _pilot(losses, epochs=4):
    """A stand-in pilot run whose whole-training-set loss went through ``losses`` (epoch 0 = before training)."""
    traj = Trajectory(meta={"epochs": epochs})
    history = [{"epoch": e, "trainset_loss": v} for e, v in enumerate(losses)]
    return common.Run(RunSpec(batchnorm=False), "pilot", traj, history, lambda: None)


def test_nobn_rate_is_the_pilot_with_the_lowest_training_loss():
    # four pilots from loss 2.3 (epoch 0): one stopped early (lowest loss of all, but diverged: the Trainer stops
    # on a non-finite loss), one ended above its start, two trained
    curves = {
        0.2: [2.3, 0.01],  # stopped after epoch 1 of 4
        0.1: [2.3, 2.0, 2.4, 2.5, 2.6],
        0.05: [2.3, 1.0, 0.5, 0.3, 0.2],
        0.01: [2.3, 2.0, 1.5, 1.2, 1.1],
    }
    losses = {lr: pilot_loss(_pilot(c)) for lr, c in curves.items()}
    assert losses[0.2] == math.inf and losses[0.1] == math.inf  # diverged pilots are excluded
    assert losses[0.05] == 0.2 and losses[0.01] == 1.1
    assert pilot_loss(_pilot([2.3, 1.0, np.nan, np.nan, np.nan])) == math.inf
    # brute force: the lowest finite final loss, whatever the default
    for default in curves:
        assert pick_rate(losses, default) == 0.05
    assert pick_rate({0.1: 0.3, 0.05: 0.3, 0.01: 0.9}, 0.05) == 0.05  # a tie goes to the default
    assert pick_rate({0.2: math.inf, 0.1: math.nan}, 0.05) == 0.05  # nothing trained: the default
    # the grid is the paper's (Sec. 3.4), doubled for RK2, and holds every default rate
    assert LR_GRIDS["sgd_rk2"] == tuple(2 * x for x in LR_GRIDS["sgd"]) and "adadelta" not in LR_GRIDS
    assert all(default_hyperparameters(m)["lr"] in g for m, g in LR_GRIDS.items())


def test_equal_evals_compares_at_matching_budgets(runs):
    sgd, rk2 = runs.many([RunSpec("sgd"), RunSpec("sgd_rk2")])
    m_rk2, m_sgd, n = equal_evals(rk2, sgd)
    assert n == 1  # RK2's first epoch spends what SGD spends in two
    assert m_rk2 == rk2.history[1]["trainset_loss"] and m_sgd == sgd.history[2]["trainset_loss"]


def _check(res: FigureResult) -> None:
    """Every claim: numeric measured, one of the four verdicts, premises stated, held only on met premises."""
    _check_named(res, TINY.name)


def _check_named(res: FigureResult, scale: str) -> None:
    for c in check_figure_result(res, "Im, Tao & Branson"):
        assert c.premises, f"claim without premises: {c.statement}"
        if c.verdict is Verdict.HELD and c.effect is not None:
            # held on the paper's side of 0, or (a claim of absence, Fig. 9's Midpoint) below its margin
            below_margin = "Non-superiority" in c.detail and c.effect.ci_high < math.log(NOT_BETTER_MARGIN)
            assert c.effect.ci_low > 0 or c.effect.ci_high < 0 or below_margin, c
        if not c.premise_met:
            assert c.verdict is Verdict.NOT_TESTED and c.detail.startswith("premise not met")
        assert c.scale == scale
    assert {"model", "data", "epochs", "repetitions"} <= set(res.scaling)


@pytest.mark.parametrize(
    "name",
    [
        "fig1",
        "fig2_3",
        "table1",
        "fig4",
        "fig5_6",
        "fig7",
        "fig8_table2",
        "fig9",
        "fig10",
        "fig11",
        "fig12",
        "fig13",
        "fig14",
        "fig15",
    ],
)
def test_every_figure_at_tiny_scale(figure_cache, name):
    import importlib

    if name in ("fig12", "fig13", "fig14", "fig15"):
        from figures.im.fig12_15 import switch_figure

        res = switch_figure(setup=TINY, cache=figure_cache, number=int(name[3:]))
        assert len(res.claims) == 3
    else:
        mod = importlib.import_module(f"figures.im.{name}")
        res = getattr(mod, name)(setup=TINY, cache=figure_cache)
    _check(res)
    if name == "fig9":
        assert len(res.claims) == 4
    if name == "table1":  # a k x k table of the seven methods: a name on the diagonal, a triangle below it
        drawn = res.panels[0].plotly
        assert [a.text for a in drawn.layout.annotations] == [f"<b>{m}</b>" for m in common.METHOD_LABELS.values()]
        assert sum(t.type == "heatmap" for t in drawn.data) == 21
    if name == "fig8_table2":  # the rates without BatchNorm and what the pilots measured are on record
        rates = res.scaling["learning_rates_without_bn"]
        assert "Adadelta 1," in rates and all(f"{lr:g} -> " in rates for lr in (0.2, 0.0001, 0.4, 0.0002))
        assert rates.split("(pilots")[1] in res.claims[0].detail
    if name not in ("fig1", "fig4"):  # a scaled-down run says so; the paper's settings (full) say that instead
        assert res.caption.endswith("Scaled down from the paper (see scaling).")
        assert dataclasses.replace(TINY, name="full").scale_note == "At the paper's settings (see scaling)."


def test_rise_score_is_the_sharp_rise_test():
    assert rise_score(np.array([0.1, 0.5, 0.25])) == pytest.approx(1.0)  # 0.5 = 2 x 0.25 and 0.25 nats above
    assert rise_score(np.array([0.001, 0.01, 0.001])) < 1  # 10x, but only 0.009 nats: no barrier
    assert rise_score(np.array([0.3, 0.5, 0.3])) < 1  # +0.2 nats, but not 2x
    for z in ([0.1, 0.5, 0.25], [0.001, 0.01, 0.001], [0.2, 1.0, 0.1]):
        assert (rise_score(np.array(z)) >= 1) == rises(*rise(np.array(z)))
    assert math.isnan(rise_score(np.array([0.1, np.inf])))


def _brute_grad_norm(model, data):
    """The gradient norm written out in float64: the reference for the memoized :func:`grad_norm`."""
    m = model.double().eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.train()
    x, y = data
    loss = torch.nn.functional.cross_entropy(m(x.double()), y)
    return float(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(m.parameters()))]).norm())


def test_grad_norm_is_memoized_per_weights_and_data_and_kept_beside_the_runs(runs, monkeypatch):
    from figures.im import _measures

    sgd, adam = runs.many([RunSpec("sgd"), RunSpec("adam")])
    data = runs.surface_data()
    shutil.rmtree(sgd.traj.path.parent / "_grad_norms", ignore_errors=True)  # what earlier tests stored
    monkeypatch.setattr(_measures, "_GRAD_NORMS", {})
    calls = []
    real = _measures._grad_norm_uncached
    monkeypatch.setattr(_measures, "_grad_norm_uncached", lambda m, d: calls.append(1) or real(m, d))
    g0, g1 = common.grad_norm(sgd, 0, data), common.grad_norm(sgd, -1, data)
    assert g0 == pytest.approx(_brute_grad_norm(sgd.model(0), data), rel=1e-5)
    assert g1 == pytest.approx(_brute_grad_norm(sgd.model(-1), data), rel=1e-5)
    assert len(calls) == 2
    # the same weights and data: the same float, not computed again (adam shares sgd's initial weights)
    assert common.grad_norm(sgd, -1, data) == g1 and common.grad_norm(adam, 0, data) == g0 and len(calls) == 2
    # other weights or other data are computed
    assert common.grad_norm(adam, -1, data) != g1 and len(calls) == 3
    half = (data[0][:5], data[1][:5])
    assert common.grad_norm(sgd, -1, half) == pytest.approx(_brute_grad_norm(sgd.model(-1), half), rel=1e-5)
    assert len(calls) == 4
    # another process (an empty memo) reads the values stored beside the runs, bitwise
    monkeypatch.setattr(_measures, "_GRAD_NORMS", {})
    assert common.grad_norm(sgd, -1, data) == g1 and common.grad_norm(adam, 0, data) == g0 and len(calls) == 4
    assert (sgd.traj.path.parent / "_grad_norms").is_dir()
    # a damaged file is computed again (and rewritten)
    monkeypatch.setattr(_measures, "_GRAD_NORMS", {})
    for f in (sgd.traj.path.parent / "_grad_norms").glob("*.json"):
        f.write_text("{", encoding="utf-8")
    assert common.grad_norm(sgd, -1, data) == g1 and len(calls) == 5
    # a run kept in memory (no cache directory) is computed and memoized in the process only
    mem = ImRuns(TINY).get(RunSpec("sgd"))
    assert mem.traj.path is None and common.grad_norm(mem, -1, data) == g1


def test_line_losses_are_the_line_memoized_and_kept_beside_the_runs(runs, monkeypatch):
    from figures.im import _runs
    from landscape.analyze import line

    sgd, adam = runs.many([RunSpec("sgd"), RunSpec("adam")])
    template, kw, data = runs.loss_kit()
    alphas = np.linspace(0, 1, 5)
    direct = line(template, sgd.final, adam.final, data, alphas=alphas, **kw).metrics["loss"]
    shutil.rmtree(runs.root / "_lines", ignore_errors=True)  # what earlier tests stored
    monkeypatch.setattr(_runs, "_LINES", {})
    calls = []
    real = _runs.line
    monkeypatch.setattr(_runs, "line", lambda *a, **k: calls.append(1) or real(*a, **k))
    z = runs.line_losses(template, sgd.final, adam.final, alphas, **kw)
    assert z.dtype == np.float64 and np.array_equal(z, direct) and len(calls) == 1
    z[:] = -1  # the caller's copy: the memo keeps its own
    assert np.array_equal(runs.line_losses(template, sgd.final, adam.final, alphas, progress=True, **kw), direct)
    assert len(calls) == 1  # progress is display only: the same key
    # another segment, direction, positions or data are computed
    assert np.array_equal(
        runs.line_losses(template, adam.final, sgd.final, alphas, **kw),
        line(template, adam.final, sgd.final, data, alphas=alphas, **kw).metrics["loss"],
    )
    runs.line_losses(template, sgd.final, adam.final, np.linspace(0, 1, 6), **kw)
    assert len(calls) == 3
    lines = [
        (sgd.final, adam.final, alphas),
        (adam.final, sgd.final, alphas),
        (sgd.final, adam.final, np.linspace(0, 1, 6)),
    ]
    values = [runs.line_losses(template, p, q, al, **kw) for p, q, al in lines]
    # a fresh process reads the file beside the runs, bitwise
    monkeypatch.setattr(_runs, "_LINES", {})
    fresh = ImRuns(TINY, runs.root.parent)
    assert np.array_equal(fresh.line_losses(template, sgd.final, adam.final, alphas, **kw), direct)
    assert len(calls) == 3 and any((runs.root / "_lines").glob("*.npy"))
    # a damaged file (truncated, or a line of other positions) is computed again and rewritten
    files = sorted((runs.root / "_lines").glob("*.npy"))
    files[0].write_bytes(files[0].read_bytes()[:20])
    np.save(files[1], np.zeros(2))
    monkeypatch.setattr(_runs, "_LINES", {})
    again = [fresh.line_losses(template, p, q, al, **kw) for p, q, al in lines]
    assert len(calls) == 5 and all(np.array_equal(z, w) for z, w in zip(again, values))
    # in memory (no cache): computed, memoized in the process only
    monkeypatch.setattr(_runs, "_LINES", {})
    mem = ImRuns(TINY)
    assert np.array_equal(mem.line_losses(template, sgd.final, adam.final, alphas, **kw), direct) and len(calls) == 6


def test_converged_premise_reads_the_gradient_at_the_final_weights(runs):
    sgd = runs.get(RunSpec("sgd"))
    data = runs.surface_data()
    p = converged_premise([sgd], data)
    ratio = common.grad_norm(sgd, -1, data) / common.grad_norm(sgd, 0, data)
    assert p.measured == [pytest.approx(ratio)] and p.met == (ratio <= 0.01)
    assert not p.met  # two epochs of a tiny net: far from a critical point
    assert converged_premise([sgd], data, rel_tol=10.0).met
    assert "relative change of the training loss" in p.detail.lower()
    # a run cut short by a non-finite loss fails
    cut = common.Run(sgd.spec, sgd.label, sgd.traj, sgd.history[:-1], sgd.factory)
    assert not cut.completed and not converged_premise([cut], data, rel_tol=10.0).met
    # a failed premise makes the claim "not tested", whatever the effect
    c = Claim("x", None, 1.0, premises=[p], effect=paired_effect([1, 2, 3]), verdict="held", detail="d")
    assert c.verdict is Verdict.NOT_TESTED and "premise not met" in c.detail


def test_no_difference_verdict():
    tight = paired_effect([0.1, -0.1, 0.05, 0.0, -0.05])
    assert no_difference(0.5, tight, 1.0) is Verdict.HELD
    assert no_difference(0.01, tight, 1.0) is Verdict.NOT_HELD  # a significant difference
    wide = paired_effect([3.0, -2.0, 4.0, -3.0, 1.0])
    assert no_difference(0.5, wide, 1.0) is Verdict.INCONCLUSIVE  # too noisy to see a 1-point difference


def test_step_decay_halves_the_rate_between_stages(runs):
    import torch.nn as nn

    from landscape.train import Callback, Trainer

    seen = []

    class Spy(Callback):
        def on_step_end(self, trainer, event):
            seen.append(trainer.optimizer.param_groups[0]["lr"])

    X, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    net = nn.Linear(3, 2)
    # the decay callback runs before the spy: the rate logged after step s is the rate of step s + 1
    Trainer(
        net,
        (X, y),
        optimizer="sgd",
        optimizer_kwargs={"lr": 0.4},
        epochs=4,
        batch_size=8,
        callbacks=[common.StepDecay(16, 4), Spy()],
    ).fit()
    assert seen[:3] == [0.4] * 3 and seen[3] == pytest.approx(0.2) and seen[-1] == pytest.approx(0.05)


def test_medium_scale_is_wired_through_make_all(tmp_path, monkeypatch):
    """``make_all --scale medium`` gives the Im figures ImSetup.medium() (here shrunk to the tiny setting)."""
    import dataclasses
    import json

    from figures.make_all import make_gallery

    assert ImSetup.for_scale("medium") == ImSetup.medium() and ImSetup.medium().dataset == "mnist"
    tiny_medium = dataclasses.replace(TINY, name="medium")
    monkeypatch.setattr(ImSetup, "medium", classmethod(lambda cls: tiny_medium))
    rep = make_gallery(["im_fig4"], scale="medium", out=tmp_path, jobs=1, progress=False, verbose=False)
    assert rep.exit_code == 0
    (entry,) = [e for e in json.loads((tmp_path / "claims.json").read_text())["figures"] if e["name"] == "im_fig4"]
    assert entry["scale"] == "medium" and entry["scaling"]["scale"] == "medium"
    assert entry["claims"] and all(c["scale"] == "medium" for c in entry["claims"])


TINY_LSTM = ImSetup(
    name="test-lstm",
    dataset="pydoc",
    train_size=40,
    epochs=2,
    lr_stages=2,
    batch_size=8,
    surface_size=16,
    lstm_vocab=50,
    lstm_embed=4,
    lstm_hidden=6,
    lstm_seq=5,
    repetitions_lstm=2,
)


def test_text_splits_shift_by_one_word(tmp_path):
    s = common.text_splits("pydoc", vocab=50, seq_len=5)
    (x, y), (xt, _) = s.train, s.test
    assert x.shape[1] == 5 and y.shape == x.shape and s.num_classes == 50 and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])  # one running text
    assert 0 <= int(x.min()) and int(x.max()) < 50 and xt.shape[1] == 5
    # Penn Treebank: missing -> the CIFAR-style message; present (any of the usual layouts) -> read, <eos> appended
    with pytest.raises(MissingDataError, match="--data-dir"):
        common.text_splits("ptb", None)
    with pytest.raises(MissingDataError, match="ptb.train.txt"):
        common.text_splits("ptb", tmp_path)
    d = tmp_path / "simple-examples" / "data"
    d.mkdir(parents=True)
    (d / "ptb.train.txt").write_text(" a b a <unk>\n b a\n")
    (d / "ptb.test.txt").write_text(" a c\n")
    s = common.text_splits("ptb", tmp_path, vocab=4, seq_len=2)
    # training words a b a <unk> <eos> b a <eos>: a (3) -> 1, <eos> (2) -> 2, b (2) -> 3, unknown -> 0
    assert s.train[0].tolist() == [[1, 3], [1, 0], [2, 3]] and s.train[1].tolist() == [[3, 1], [0, 2], [3, 1]]
    assert s.test[0].tolist() == [[1, 0]] and s.test[1].tolist() == [[0, 2]]


def test_lstm_figure_at_tiny_scale(tmp_path):
    from figures.contract import MissingDataError as Missing
    from figures.im.lstm import lstm_figure, lstm_setup

    res = lstm_figure(setup=TINY_LSTM, cache=tmp_path)
    _check_named(res, "test-lstm")
    assert len(res.claims) == 2
    run = ImRuns(TINY_LSTM, tmp_path).get(RunSpec("adam", arch="lstm", batchnorm=False))
    acc = run.last("test_accuracy")
    assert 0.0 <= acc <= 1.0  # next-word accuracy per word, not per sequence
    with pytest.raises(Missing, match="ptb.train.txt"):
        lstm_setup("full", tmp_path)
    assert lstm_setup("medium").dataset == "pydoc" and lstm_setup("quick").name == "quick"


def test_accuracy_of_k_dimensional_outputs_is_per_position():
    """evaluate_dataset and the Trainer's running accuracy on (N, C, T) outputs: the share of correct positions."""
    import torch.nn as nn

    from landscape.train import Trainer, evaluate_dataset

    class Fixed(nn.Module):  # predicts class (position mod 3) at every position, whatever the input
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            pos = torch.arange(x.shape[1]) % 3
            out = torch.nn.functional.one_hot(pos, 3).T.float().expand(x.shape[0], 3, x.shape[1])
            return out + 0 * self.w

    x = torch.zeros(4, 6)
    y = (torch.arange(6) % 3).repeat(4, 1)
    y[0, :3] = (y[0, :3] + 1) % 3  # 3 wrong of 24 positions
    assert evaluate_dataset(Fixed(), (x, y), nn.functional.cross_entropy)["accuracy"] == pytest.approx(21 / 24)
    tr = Trainer(Fixed(), (x, y), nn.functional.cross_entropy, "sgd", epochs=1, batch_size=4).fit()
    assert tr.history_[-1]["train_accuracy"] == pytest.approx(21 / 24)


def test_tensor_digest_reads_every_input_bitwise():
    from figures.im._runs import tensor_digest

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    key = tensor_digest("code", net, (x, y), np.linspace(0, 1, 3), options={"bn_mode": "train"})
    assert key == tensor_digest(
        "code", copy.deepcopy(net), (x.clone(), y.clone()), np.linspace(0, 1, 3), options={"bn_mode": "train"}
    )
    other = copy.deepcopy(net)
    other[1].running_var[0] = torch.nextafter(other[1].running_var[0], torch.tensor(2.0))  # one buffer, one ulp
    x2 = x.clone()
    x2[3, 2] = torch.nextafter(x2[3, 2], torch.tensor(9.0))
    variants = [
        tensor_digest("code2", net, (x, y), np.linspace(0, 1, 3), options={"bn_mode": "train"}),
        tensor_digest("code", other, (x, y), np.linspace(0, 1, 3), options={"bn_mode": "train"}),
        tensor_digest("code", net, (x2, y), np.linspace(0, 1, 3), options={"bn_mode": "train"}),
        tensor_digest(
            "code", net, [(x[:2], y[:2]), (x[2:], y[2:])], np.linspace(0, 1, 3), options={"bn_mode": "train"}
        ),
        tensor_digest("code", net, (x, y), np.linspace(0, 1, 4), options={"bn_mode": "train"}),
        tensor_digest("code", net, (x, y), np.linspace(0, 1, 3), options={"bn_mode": "eval"}),
        tensor_digest("code", net, (x, y), np.linspace(0, 1, 3)),
    ]
    assert len({key, *variants}) == 1 + len(variants)


def test_the_library_digest_is_not_computed_at_import():
    code = (
        "import figures.im._runs as r, figures.im._measures, figures.im.fig7\n"
        "assert r._library_digest.cache_info().misses == 0, r._library_digest.cache_info()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_table1_test_outputs_are_each_network_on_recomputed_statistics(runs):
    """Table 1's test-side options give a network's own outputs: brute-force RESET, and no image depends on others."""
    import copy

    from figures.im.table1 import outputs_kw
    from landscape.evaluate import evaluate_points

    spec = RunSpec("sgd")
    run = runs.get(spec)
    opts = outputs_kw(runs, spec)
    x, _ = runs.test_data()
    template = TINY.model(spec)

    def outputs(images, dtype=torch.float32):
        o = dict(opts)
        if "bn_data" in o:
            xs, ys = o["bn_data"]
            o["bn_data"] = (xs.to(dtype), ys)
        return np.asarray(
            evaluate_points(
                copy.deepcopy(template).to(dtype),
                run.final[None].to(dtype),
                (images.to(dtype), torch.zeros(len(images))),
                metrics=("outputs",),
                **o,
            )["outputs"][0]
        )

    # brute force in float64: statistics over the surface images (a cumulative average, as update_bn), then eval mode
    net = copy.deepcopy(run.model(-1)).double().eval()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns, "the tiny VGG has BatchNorm: the test needs statistics to recompute"
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()  # only BatchNorm in train mode: dropout stays off
    xs, _ = runs.surface_data()
    with torch.no_grad():
        net(xs.double())
        net.eval()
        ref = net(x.double()).numpy()
    got = outputs(x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # an image's output is the same whichever other test images are evaluated with it: in float64, where batching
    # moves a sum by ~1e-16 relative (float32's batched kernels differ by machine at ~1e-7), and an output that read
    # the other images (batch statistics) would move by ~1e-1
    whole = outputs(x, torch.float64)
    np.testing.assert_allclose(whole, ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(outputs(x[:5], torch.float64), whole[:5], rtol=1e-12, atol=1e-12)


def test_fig2_3_convergence_premise_counts_each_run_once(figure_cache):
    """Fig. 3's four methods include SGD, whose runs Fig. 2 uses too: the premise lists each of them once."""
    from figures.im.fig2_3 import FIG3_METHODS, distinct, fig2_3

    res = fig2_3(setup=TINY, cache=figure_cache)
    n = TINY.repetitions * len({"sgd", *FIG3_METHODS})  # 2 inits x 4 methods, SGD among them
    for claim in res.claims:
        (premise,) = claim.premises
        assert len(premise.measured) == n and premise.detail.startswith(f"{n} runs:")
    runs = ImRuns(TINY, figure_cache).many([RunSpec("sgd"), RunSpec("adam"), RunSpec("sgd"), RunSpec("sgd", init=1)])
    assert [r.spec for r in distinct(runs)] == [RunSpec("sgd"), RunSpec("adam"), RunSpec("sgd", init=1)]


def _double(model, *vectors):
    """A float64 copy of ``model`` and ``vectors`` as float64 (the brute-force references below)."""
    return copy.deepcopy(model).double(), [v.double() for v in vectors]


def test_fig5_6_profile_is_eq1_on_its_whole_grid(runs):
    """The Eq. 1 profile, half of it read from the init -> final line, is the loss along Eq. 1 at every distance."""
    from figures.im.fig5_6 import UNIT, distance_grid, profile
    from landscape.analyze import line_distance

    assert np.array_equal(np.linspace(0, 1.5, 31)[:21], UNIT)  # the 21 shared positions, bitwise
    assert len(distance_grid(1.0)) == 42 and int(np.isin(distance_grid(1.0), UNIT).sum()) == 21
    run = runs.get(RunSpec("adam", init=1))
    template, kw, data = runs.loss_kit()
    d, z, length = profile(runs, run, template, kw, data)
    assert length == pytest.approx(float((run.init.double() - run.final.double()).norm()))
    assert np.array_equal(d, distance_grid(length))
    m64, (final, init) = _double(template, run.final, run.init)
    data64 = (data[0].double(), data[1])
    ref = line_distance(m64, final, init, data64, distances=d, **kw).metrics["loss"]
    np.testing.assert_allclose(z, ref, rtol=1e-5)


def test_fig10_line_is_the_init_final_line_to_alpha_2(figure_cache):
    """Fig. 10's measure, from its two memoized halves, is the float64 brute force over linspace(0, 2, 41)."""
    from figures.im.fig10 import fig10
    from landscape.analyze import line
    from landscape.train import METHODS

    res = fig10(setup=TINY, cache=figure_cache)
    runs = ImRuns(TINY, figure_cache)
    alphas = np.linspace(0, 2, 41)
    past, i1 = alphas >= 1.25, 20
    per_init = []
    for k in range(TINY.repetitions):
        ratios = []
        for m in METHODS:
            r = runs.get(RunSpec(m, init=k))
            m64, (a, b) = _double(r.factory(), r.init, r.final)
            x, y = runs.surface_data()
            z = line(m64, a, b, (x.double(), y), alphas=alphas, **runs.loss_kw(r.spec)).metrics["loss"]
            ratios.append(z[past].min() / z[i1])
        per_init.append(min(ratios))
    np.testing.assert_allclose(res.claims[0].measured, per_init, rtol=1e-4)


@pytest.mark.parametrize("n", [11, 4])
def test_table1_triangle_from_shared_edges_is_the_barycentric_slice(runs, n):
    """Table 1's triangle, its edges read from the init -> final lines, is the float64 barycentric slice."""
    from figures.im.table1 import init_final_edge, triangle
    from landscape.analyze import barycentric

    c, r = runs.get(RunSpec("sgd")), runs.get(RunSpec("adam"))
    assert torch.equal(c.init, r.init)  # one initialization: the shared vertex
    template = TINY.model(RunSpec())
    kw = {**runs.eval_kw(RunSpec()), "metrics": ("loss",)}
    data = runs.surface_data()
    tri = triangle(
        template, c.init, c.final, r.final, data, init_final_edge(runs, c, n), init_final_edge(runs, r, n), **kw
    )
    m64, (p0, p1, p2) = _double(template, c.init, c.final, r.final)
    ref = barycentric(m64, p0, p1, p2, (data[0].double(), data[1]), n=n, **kw)
    assert tri.metrics["loss"].shape == (n, n) and np.array_equal(tri.alphas, ref.alphas)
    np.testing.assert_allclose(tri.metrics["loss"], ref.metrics["loss"], rtol=1e-5)
    assert tri.n_nonfinite == 0


def test_pool_key_follows_what_training_stores_and_ignores_what_only_selects_runs():
    # Training writes the loss on the first surface_size images into every run's history, so a pool trained with
    # another surface subset must not be reused; a repetition count or grid only picks and evaluates runs.
    base = dataclasses.replace(TINY_LSTM)
    assert dataclasses.replace(base, surface_size=8).key() != base.key()
    assert dataclasses.replace(base, repetitions_lstm=3).key() == base.key()
    assert dataclasses.replace(base, grid=base.grid + 2).key() == base.key()
