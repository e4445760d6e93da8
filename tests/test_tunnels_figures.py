"""Tunnels figures (figures/tunnels_*.py) at a tiny scale: they run, and their claims and panels are well formed."""

from __future__ import annotations

import math

import matplotlib.figure
import plotly.graph_objects as go
import pytest
import torch

from figures._tunnels_common import Setup, load_data, newton_point
from figures.contract import Claim, FigureResult
from figures.tunnels_fig1 import run_left, run_right
from figures.tunnels_fig3 import run_fig3
from landscape.params import parameters_to_vector

TINY = Setup("quick", n_train=64, filters=2, kernel=5, newton_steps=2, newton_step_size=0.1, lr=1.0, batch_size=32,
             open_at=4, close_at=8, total_steps=12, repetitions=1, t=1.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _check(res: FigureResult, keys: list[str], n_claims: int) -> None:
    assert [p.key for p in res.panels] == keys
    for p in res.panels:
        assert isinstance(p.plotly, go.Figure) and len(p.plotly.data) > 0
        assert isinstance(p.mpl, matplotlib.figure.Figure) and p.mpl.axes
    assert len(res.claims) == n_claims
    for c in res.claims:
        assert isinstance(c, Claim) and c.source.startswith("Tunnels") and c.detail
        assert c.held in (True, False) and c.measured is not None
    assert {"model", "data", "epochs", "repetitions"} <= set(res.scaling)


def test_newton_point_is_cached(tmp_path):
    data, _ = load_data(TINY, None)
    a, info = newton_point(TINY, data, tmp_path)
    b, info2 = newton_point(TINY, data, tmp_path)  # read back from the safetensors cache
    assert torch.equal(parameters_to_vector(a), parameters_to_vector(b)) and info == info2
    assert len(info["losses"]) == TINY.newton_steps + 1


def test_fig1_left(tmp_path):
    _check(run_left("quick", None, tmp_path, setup=TINY), ["loss"], 3)


def test_fig1_right_matches_theory():
    res = run_right("quick", None, setup=TINY, lbfgs_steps=30)
    _check(res, ["gradnorm"], 3)
    loss_claim, exp_claim, add_claim = res.claims
    assert loss_claim.held  # opening preserves the function exactly in float64, whatever the point
    # 30 L-BFGS steps do not reach a critical point: only well-formedness of the other two claims
    assert math.isfinite(exp_claim.measured) and add_claim.measured >= 0


def test_fig3(tmp_path):
    res = run_fig3("quick", None, tmp_path, setup=TINY)
    _check(res, ["distance"], 2)
    assert res.claims[1].held and res.claims[1].measured == 0.0  # lambda = 1/2 never breaks the symmetry


def test_fig2_left(tmp_path):
    from figures.tunnels_fig2 import run_fig2_left

    _check(run_fig2_left("quick", None, tmp_path, setup=TINY), ["loss"], 1)
