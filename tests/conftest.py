"""Shared test set-up: one torch thread, a cache directory per figure-test module, the registry's cases.

Helpers that several test modules call live in :mod:`tests.helpers`, the tiny models and problems every
analyzer's brute-force tests run over in :mod:`tests.registry`; test modules never import each other.
Tests marked ``slow`` are deselected by default (``addopts`` in ``pyproject.toml``); run them with
``python -m pytest -m slow`` (CI runs both). The property tests (hypothesis) are derandomized; run them with
``HYPOTHESIS_PROFILE=explore`` to draw new examples.
"""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from tests.registry import CASES, add_hooks, assert_same_state, make_case, model_state

# Property tests draw the same examples on every run, so the suite's verdict does not depend on luck (a CI run
# on a fresh clone must pass or fail for a reason). HYPOTHESIS_PROFILE=explore draws new ones, to look for bugs.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The test models are tiny: intra-op threads gain nothing, and spinning threads stall on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def figure_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty cache directory shared by the tests of one module (trained runs are reused across its tests)."""
    return tmp_path_factory.mktemp(f"{request.module.__name__.rsplit('.', 1)[-1]}_cache")


# --------------------------------------------------------------------------- the registry of tiny problems (issue 20)
@pytest.fixture(params=list(CASES))
def registry_case(request):
    """Every case of :mod:`tests.registry`, freshly built with hooks on; checks at teardown it was never modified."""
    c = make_case(request.param)
    add_hooks(c.model)
    before = model_state(c.model)
    yield c
    assert_same_state(c.model, before)


@pytest.fixture(scope="module")  # per test module, as before: a module may damage its copy
def tiny_digits_run(tmp_path_factory):
    """A tiny MLP (hidden=[4]) trained 2 epochs on the first 60 training digits, recorded into a trajectory on
    disk (3 snapshots): the CLI tests' run (``--model mlp --model-kw hidden=[4] --limit 60``)."""
    from landscape.data import load_digits_split
    from landscape.models import build_model
    from landscape.train import Trainer
    from landscape.trajectory import Trajectory

    path = tmp_path_factory.mktemp("runs") / "a"
    X, y = load_digits_split().train
    net = build_model("mlp", (1, 8, 8), 10, hidden=[4], seed=0)
    Trainer(net, (X[:60], y[:60]), optimizer="sgd", epochs=2, batch_size=30, trajectory=Trajectory.create(path)).fit()
    return path
