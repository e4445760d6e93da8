"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The test models are tiny: intra-op threads gain nothing, and spinning threads stall on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
