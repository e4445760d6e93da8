"""Filter normalization of grouped transposed convolutions (hunt lf17).

A ``ConvTranspose`` weight is ``(in, out / groups, *kernel)``: output channel ``g * out_per_group + j`` reads input
channels ``g * in_per_group ... (g + 1) * in_per_group - 1`` through ``weight[g * in_per_group:(g + 1) *
in_per_group, j]``. Slicing along axis 1 alone merged channels ``j`` and ``j + out_per_group`` into one filter
(one scale for both) whenever ``groups > 1``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.analyze.directions import normalize_direction
from landscape.params import ParamLayout, parameters_to_vector

EPS = 1e-10  # Li et al.'s, as in landscape.analyze.directions


def _brute_force(weight_d: torch.Tensor, weight_t: torch.Tensor, groups: int) -> torch.Tensor:
    """Each output channel's filter rescaled on its own, by a loop over output channels (float64)."""
    ipg, opg = weight_t.shape[0] // groups, weight_t.shape[1]
    out = torch.empty_like(weight_d)
    for c in range(groups * opg):
        g, j = divmod(c, opg)
        rows = slice(g * ipg, (g + 1) * ipg)
        d, t = weight_d[rows, j], weight_t[rows, j]
        out[rows, j] = d * t.norm() / (d.norm() + EPS)
    return out


@pytest.mark.parametrize(
    ("cls", "kernel"), [(nn.ConvTranspose1d, (3,)), (nn.ConvTranspose2d, (3, 2)), (nn.ConvTranspose3d, (2, 2, 2))]
)
@pytest.mark.parametrize(("in_ch", "out_ch", "groups"), [(4, 6, 2), (6, 3, 3), (4, 4, 1), (6, 6, 6)])
def test_grouped_conv_transpose_filters_are_output_channels(cls, kernel, in_ch, out_ch, groups):
    torch.manual_seed(0)
    net = nn.Sequential(cls(in_ch, out_ch, kernel, groups=groups, bias=True)).double()
    # Filters of very different norms, so that merging two of them changes both scales.
    with torch.no_grad():
        net[0].weight.mul_(
            torch.logspace(-1, 1, net[0].weight.shape[1], dtype=torch.float64).view(1, -1, *[1] * len(kernel))
        )
    theta = parameters_to_vector(net)
    d = torch.randn_like(theta)
    got = normalize_direction(d, theta, net, "filter", bias_bn="zero")
    n = net[0].weight.numel()
    w_shape = net[0].weight.shape
    want = _brute_force(d[:n].view(w_shape), theta[:n].view(w_shape), groups)
    torch.testing.assert_close(got[:n].view(w_shape), want, rtol=1e-12, atol=0)
    assert torch.equal(got[n:], torch.zeros_like(got[n:]))  # the bias, bias_bn="zero"
    # Invariant: every output channel's filter has the reference's norm (up to the 1e-10).
    ipg, opg = in_ch // groups, out_ch // groups
    gw, tw = got[:n].view(w_shape), theta[:n].view(w_shape)
    for c in range(out_ch):
        g, j = divmod(c, opg)
        rows = slice(g * ipg, (g + 1) * ipg)
        torch.testing.assert_close(gw[rows, j].norm(), tw[rows, j].norm(), rtol=1e-9, atol=0)


def test_grouped_conv_keeps_axis_zero_and_layout_round_trips():
    """A grouped Conv's filters are its axis-0 slices (unchanged); the transposed conv's groups survive to_dict."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.ConvTranspose2d(6, 4, 2, groups=2)).double()
    layout = ParamLayout.from_model(net)
    assert [s.groups for s in layout.specs] == [1, 1, 2, 1]
    again = ParamLayout.from_dict(layout.to_dict())
    assert [s.groups for s in again.specs] == [1, 1, 2, 1]
    assert "groups" not in layout.to_dict()["tensors"][0]  # files of ungrouped layouts are as before
    theta = parameters_to_vector(net)
    d = torch.randn_like(theta)
    got = normalize_direction(d, theta, again, "filter")  # from the stored layout, without the model
    w = net[0].weight
    gw, dw, tw = (v[: w.numel()].view(w.shape) for v in (got, d, theta))
    for c in range(6):
        torch.testing.assert_close(gw[c], dw[c] * tw[c].norm() / (dw[c].norm() + EPS), rtol=1e-12, atol=0)
    s = layout.specs[2]
    t = theta[s.slice].view(s.shape)
    torch.testing.assert_close(s.unfilter(s.filters(t)), t, rtol=0, atol=0)  # the two views are inverse


@pytest.mark.parametrize(("in_ch", "out_ch", "groups"), [(4, 6, 2), (6, 3, 3), (4, 4, 1)])
def test_filter_adaptive_sharpness_scale_of_a_grouped_conv_transpose(in_ch, out_ch, groups):
    """``perturbation_scale(adaptive="filter")`` is each output channel's filter norm (a loop over channels),
    not one norm for channels j and j + out/groups together (0.27 off on ConvTranspose1d(4, 6, 3, groups=2))."""
    from landscape.curvature.sharpness import perturbation_scale

    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose1d(in_ch, out_ch, 3, groups=groups)).double()
    with torch.no_grad():  # filters of very different norms
        net[0].weight.mul_(torch.arange(1, net[0].weight.shape[0] + 1, dtype=torch.float64).view(-1, 1, 1))
    w = net[0].weight.detach()
    ipg, opg = w.shape[0] // groups, w.shape[1]
    ref = torch.empty_like(w)
    for c in range(groups * opg):
        g, j = divmod(c, opg)
        rows = slice(g * ipg, (g + 1) * ipg)
        ref[rows, j] = w[rows, j].norm()
    got = perturbation_scale(net, "filter")
    n = w.numel()
    torch.testing.assert_close(got[:n].view_as(w), ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(got[n:], net[0].bias.detach().abs(), rtol=0, atol=0)
