"""Bug hunt 14 of curvature over training, sharpness and the spectrum, against brute force in float64.

References: the dense Hessian (double backward), its eigendecomposition, and closed forms of quadratic losses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import hessian_spectrum
from tests.helpers import dense_hessian

F64 = torch.float64


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 9-parameter regression network and its data ``(X (10, 2), y (10, 1))``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    return net, torch.randn(10, 2, dtype=F64), torch.randn(10, 1, dtype=F64)


def test_top_k_beyond_the_dimension_gives_every_eigenvalue_and_says_so():
    net, X, y = _tiny()
    ev = torch.linalg.eigvalsh(dense_hessian(net, nn.functional.mse_loss, X, y)).flip(0).numpy()
    assert len(ev) == 9
    with pytest.warns(UserWarning, match="top_k=20 exceeds the Hessian's dimension 9"):
        spec = hessian_spectrum(net, "mse", (X, y), top_k=20, steps=50, n_probes=2, tol=1e-10)
    np.testing.assert_allclose(spec.top_eigenvalues, ev, rtol=1e-9, atol=1e-12)
    extra = spec.provenance.extra
    assert extra["top_k"] == len(spec.top_eigenvalues) == 9 and extra["top_k_requested"] == 20
    assert extra["steps"] == spec.nodes.shape[1] == 9  # the steps too are the ones run
