"""Directions: Li et al.'s filter normalization against a hand-written per-filter loop, and the rest."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analyze import (
    directions_from_models,
    normalize_direction,
    orthogonalize,
    random_direction,
    random_directions,
)
from landscape.params import ParamLayout, parameters_to_vector


def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.ConvTranspose2d(3, 4, 2),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 6),
        nn.LayerNorm(6),
        nn.Linear(6, 2, bias=False),
    )


def reference(direction, theta, m, bias_bn):
    """Per-filter loop as in Li et al.'s net_plotter, one named parameter at a time."""
    out, pos = [], 0
    for name, p in m.named_parameters():
        d = direction[pos : pos + p.numel()].view(p.shape).clone()
        w = theta[pos : pos + p.numel()].view(p.shape)
        pos += p.numel()
        if p.dim() <= 1:
            if bias_bn == "zero":
                d.zero_()
            elif bias_bn == "copy":
                d.copy_(w)
            else:
                d *= w.norm() / (d.norm() + 1e-10)
        else:
            axis = 1 if name.startswith("2.") else 0  # ConvTranspose2d keeps output filters on axis 1
            for j in range(p.shape[axis]):
                dj, wj = d.select(axis, j), w.select(axis, j)
                dj.mul_(wj.norm() / (dj.norm() + 1e-10))
        out.append(d.reshape(-1))
    return torch.cat(out)


@pytest.mark.parametrize("bias_bn", ["zero", "copy", "keep"])
def test_filter_normalization_matches_per_filter_loop(bias_bn):
    m = model()
    theta = parameters_to_vector(m).double()
    raw = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = normalize_direction(raw, theta, m, "filter", bias_bn)
    torch.testing.assert_close(got, reference(raw, theta, m, bias_bn), rtol=1e-14, atol=0)
    assert not torch.equal(raw, got)  # input untouched, result new
    layout = ParamLayout.from_model(m)
    for s in layout:
        if s.filter_axis is not None:  # every filter has its parameter's norm
            d = got[s.slice].view(s.shape).movedim(s.filter_axis, 0).flatten(1).norm(dim=1)
            t = theta[s.slice].view(s.shape).movedim(s.filter_axis, 0).flatten(1).norm(dim=1)
            torch.testing.assert_close(d, t, rtol=1e-9, atol=0)
        elif bias_bn == "zero":
            assert (got[s.slice] == 0).all()
        elif bias_bn == "copy":
            assert torch.equal(got[s.slice], theta[s.slice])


def test_layer_and_model_normalization():
    m = model()
    theta = parameters_to_vector(m).double()
    raw = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    layout = ParamLayout.from_model(m)
    lay = normalize_direction(raw, theta, layout, "layer")
    for s in layout:
        if s.filter_axis is not None:
            torch.testing.assert_close(lay[s.slice].norm(), theta[s.slice].norm(), rtol=1e-12, atol=0)
            torch.testing.assert_close(lay[s.slice] / lay[s.slice].norm(), raw[s.slice] / raw[s.slice].norm())
    mod = normalize_direction(raw, theta, layout, "model", "zero")
    kept = torch.cat([torch.full((s.numel,), s.filter_axis is not None) for s in layout])
    torch.testing.assert_close(mod[kept].norm(), theta[kept].norm(), rtol=1e-12, atol=0)
    torch.testing.assert_close(mod[kept] / raw[kept], torch.full_like(raw[kept], float(mod[kept][0] / raw[kept][0])))
    assert (mod[~kept] == 0).all()
    none = normalize_direction(raw, theta, layout, "none", "keep")
    assert torch.equal(none, raw)
    with pytest.raises(ValueError, match="valid values are 'filter', 'layer', 'model', 'none'"):
        normalize_direction(raw, theta, layout, "filters")
    with pytest.raises(ValueError, match="bias_bn"):
        normalize_direction(raw, theta, layout, "filter", "ignore")


def test_random_directions_are_seeded_and_leave_global_rng_alone():
    m = model()
    state = torch.random.get_rng_state()
    a = random_directions(m, 2, seed=7)
    b = random_directions(m, 2, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert not torch.equal(a, random_directions(m, 2, seed=8))
    g = torch.Generator().manual_seed(7)
    first = random_direction(m, generator=g)
    assert torch.equal(first, a[0]) and torch.equal(random_direction(m, generator=g), a[1])
    theta = parameters_to_vector(m)
    raw = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], normalize_direction(raw, theta, m, "filter", "zero"))


def test_orthogonalize_and_directions_from_models():
    m = model().double()
    d = random_directions(m, 3, seed=1, orthogonal=True)
    assert d.dtype == torch.float64
    assert abs(float(d[0] @ d[1])) < 1e-13 * float(d[0].norm() * d[1].norm())
    assert abs(float(d[2] @ d[0])) < 1e-13 * float(d[2].norm() * d[0].norm())
    raw = random_directions(m, 3, seed=1)
    torch.testing.assert_close(d[0], raw[0])
    with pytest.raises(ValueError, match="linearly dependent"):
        orthogonalize(torch.stack([raw[0], 2 * raw[0]]))
    m = model()
    m1, m2 = model(), model()
    with torch.no_grad():
        for p in [*m1.parameters(), *m2.parameters()]:
            p.add_(torch.randn_like(p))
    dirs = directions_from_models(m, m1, m2)
    t0, t1, t2 = (parameters_to_vector(x) for x in (m, m1, m2))
    assert dirs.shape == (2, t0.numel())
    np.testing.assert_allclose(dirs[0].numpy(), (t1.double() - t0.double()).numpy(), rtol=1e-7)
    assert torch.equal(directions_from_models(t0, t2)[0], (t2.double() - t0.double()).float())
    with pytest.raises(ValueError, match="at least one"):
        directions_from_models(m)


# --------------------------------------------------------------------------- issue 17: frozen parameters
@pytest.mark.parametrize("normalization", ["filter", "layer", "model", "none"])
def test_frozen_model_gets_the_same_directions(normalization):
    m = model()
    frozen = copy.deepcopy(m).requires_grad_(False)  # what loss-landscapes' random_plane leaves behind
    want = random_directions(m, 2, seed=4, normalization=normalization, bias_bn="keep")
    got = random_directions(frozen, 2, seed=4, normalization=normalization, bias_bn="keep")
    assert torch.equal(got, want)
    assert torch.equal(directions_from_models(frozen, m), directions_from_models(m, m))


@pytest.mark.parametrize("bias_bn", ["zero", "keep", "copy"])
def test_trainable_directions_are_zero_on_frozen_tensors(bias_bn):
    m = model()
    m[0].requires_grad_(False)  # fine-tuning: the first conv is frozen
    m[5].weight.requires_grad_(False)
    layout = ParamLayout.from_model(m)
    frozen = torch.zeros(layout.numel, dtype=torch.bool)
    for name in ("0.weight", "0.bias", "5.weight"):
        frozen[layout[name].slice] = True
    full = random_directions(m, 2, seed=1, bias_bn=bias_bn)
    d = random_directions(m, 2, seed=1, bias_bn=bias_bn, params="trainable")
    assert (d[:, frozen] == 0).all() and (full[:, frozen] != 0).any()
    assert torch.equal(d[:, ~frozen], full[:, ~frozen])  # same draw, per-filter scaling: equal elsewhere
    by_name = random_directions(m, 1, seed=1, bias_bn=bias_bn, params=["4", "6.weight"])
    sel = torch.zeros_like(frozen)
    for name in ("4.weight", "4.bias", "6.weight"):
        sel[layout[name].slice] = True
    assert (by_name[0, ~sel] == 0).all() and torch.equal(by_name[0, sel], full[0, sel])


def test_model_normalization_over_the_selected_entries():
    m = model()
    m[4].requires_grad_(False)
    mask = torch.ones(ParamLayout.from_model(m).numel, dtype=torch.bool)
    lay = ParamLayout.from_model(m)
    mask[lay["4.weight"].slice] = False
    mask[lay["4.bias"].slice] = False
    theta = parameters_to_vector(m)
    d = random_direction(m, seed=2, normalization="model", bias_bn="keep", params="trainable")
    assert (d[~mask] == 0).all()
    assert torch.allclose(d.norm(), theta[mask].norm(), rtol=1e-6)


def test_trainable_on_a_fully_frozen_model_is_a_clear_error():
    m = model().requires_grad_(False)
    with pytest.raises(ValueError, match="selects no parameter.*requires_grad=False"):
        random_directions(m, 2, params="trainable")
    with pytest.raises(ValueError, match="selects no parameter"):
        directions_from_models(m, model(), params="trainable")
    with pytest.raises(ValueError, match="no floating-point parameters"):
        random_direction(nn.ReLU())
    with pytest.raises(ValueError, match="origin given as a model"):
        directions_from_models(parameters_to_vector(m), m, params="trainable")


def test_directions_from_models_trainable():
    a, b = model(), model()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)
    a[6].requires_grad_(False)
    d = directions_from_models(a, b, params="trainable")
    sl = ParamLayout.from_model(a)["6.weight"].slice
    assert (d[0, sl] == 0).all() and torch.allclose(d[0, : sl.start], torch.ones(sl.start), atol=1e-6)
