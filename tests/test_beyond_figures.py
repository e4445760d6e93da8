"""The 'Beyond the papers' figures at a tiny scale: they build, and their verdicts are well-formed."""

import numpy as np
import pytest

from figures import beyond_connect as bc
from figures.contract import FigureResult, Scale
from figures.verdict import Verdict


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(bc, "EPOCHS", 1)
    monkeypatch.setattr(bc, "ALPHAS", np.linspace(0, 1, 5))
    monkeypatch.setattr(bc, "_settings", lambda scale: {"widths": [8, 16], "pairs": 2, "curve_epochs": 1})


def _check(res: FigureResult) -> None:
    assert isinstance(res, FigureResult) and res.claims
    for c in res.claims:
        assert isinstance(c.verdict, Verdict)
        assert isinstance(c.measured, (int, float, list)) and c.premises
        if c.verdict is Verdict.HELD:
            assert all(p.met for p in c.premises)
        if not all(p.met for p in c.premises):
            assert c.verdict is Verdict.NOT_TESTED and c.held is None


@pytest.mark.parametrize("run", [bc.run_rebasin, bc.run_curves])
def test_beyond_figures_build_with_well_formed_verdicts(tiny, tmp_path, run):
    res = run(scale=Scale.QUICK, data_dir=None, out=tmp_path, progress=False)
    _check(res)
    # one epoch of training cannot fit the training set: the premise fails and nothing is held
    assert all(c.verdict is Verdict.NOT_TESTED for c in res.claims)


def test_edge_of_stability_figure_at_a_tiny_scale(monkeypatch, tmp_path):
    from figures import beyond_eos as eos

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
