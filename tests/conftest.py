"""Shared test set-up."""

import pytest
import torch

from tests.registry import CASES, add_hooks, assert_same_state, make_case, model_state


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The test models are tiny: intra-op threads gain nothing, and spinning threads stall on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the registry of tiny problems (issue 20)
@pytest.fixture(params=list(CASES))
def registry_case(request):
    """Every case of :mod:`tests.registry`, freshly built with hooks on; checks at teardown it was never modified."""
    c = make_case(request.param)
    add_hooks(c.model)
    before = model_state(c.model)
    yield c
    assert_same_state(c.model, before)
