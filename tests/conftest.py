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
