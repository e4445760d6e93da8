"""Bug hunt 15 of the analyzers (curves, distances, saturation), against explicit loops in float64."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.analyze import (
    ModeCurve,
    SaturationRecorder,
    distance_from_init,
    distance_from_origin,
    evaluate_curve,
    line,
    measure_saturation,
    pairwise_end_distances,
)
from landscape.params import ParamLayout, parameters_to_vector
from landscape.problem import Problem
from landscape.trajectory import Trajectory
from landscape.validation import InputError

F64 = torch.float64


def _bn_pair() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """Two float64 BatchNorm classifiers of one architecture and their data ``(X (12, 3), y (12,))``."""
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()  # noqa: E731
    a, b = make(), make()
    for m in (a, b):
        with torch.no_grad():  # running statistics unlike the batch's: eval and train mode differ
            m[1].running_mean.uniform_(-1, 1)
            m[1].running_var.uniform_(0.5, 2)
    return a, b, torch.randn(12, 3, dtype=F64), torch.randint(0, 3, (12,))


def _loop_losses(model, control, shape, ts, X, y, train):
    """Mean cross-entropy at each point of the curve, one point at a time (the paper's formulas written out)."""
    w0, theta, w1 = (torch.as_tensor(c, dtype=F64) for c in control)
    layout = ParamLayout.from_model(model)
    out = []
    for t in ts:
        if shape == "bezier":
            w = (1 - t) ** 2 * w0 + 2 * t * (1 - t) * theta + t**2 * w1
        elif t <= 0.5:
            w = 2 * (t * theta + (0.5 - t) * w0)
        else:
            w = 2 * ((t - 0.5) * w1 + (1 - t) * theta)
        m = copy.deepcopy(model).train(train)
        bufs = {k: v.clone() for k, v in m.named_buffers()}
        with torch.no_grad():
            out.append(float(nn.functional.cross_entropy(functional_call(m, {**bufs, **layout.unflatten(w)}, (X,)), y)))
    return np.array(out)


# ----------------------------------------------------------------------------- 5. evaluate_curve's keywords
def test_evaluate_curve_takes_the_slices_keywords_as_written_out_parameters():
    params = inspect.signature(evaluate_curve).parameters
    assert list(params)[:3] == ["problem", "curve", "data"]
    assert {"strategy", "chunk_size", "memory_budget", "batch_size", "bn_data", "data_description"} <= set(params)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert inspect.signature(line).parameters["strategy"].default == params["strategy"].default == "auto"


@pytest.mark.parametrize("shape", ["bezier", "polychain"])
@pytest.mark.parametrize(
    ("strategy", "chunk_size", "memory_budget"), [("loop", None, None), ("vmap", 2, None), ("functional", 3, "64MB")]
)
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_evaluate_curve_of_a_problem_equals_a_loop_over_points(shape, strategy, chunk_size, memory_budget, bn_mode):
    """evaluate_curve took neither a Problem nor the engine's strategy, chunk size or memory budget."""
    a, b, X, y = _bn_pair()
    torch.manual_seed(1)
    w0, w1 = parameters_to_vector(a), parameters_to_vector(b)
    control = torch.stack([w0, 0.5 * (w0 + w1) + 0.3 * torch.randn_like(w0), w1]).numpy()
    curve = ModeCurve(control=control, shape=shape, layout=ParamLayout.from_model(a).to_dict())
    ts = np.linspace(0, 1, 7)
    problem = Problem(a, (X, y), "cross_entropy", bn_mode=bn_mode)
    res = evaluate_curve(problem, curve, ts=ts, strategy=strategy, chunk_size=chunk_size, memory_budget=memory_budget)
    expected = _loop_losses(a, control, shape, ts, X, y, train=bn_mode == "train")
    np.testing.assert_allclose(res.metrics["loss"], expected, rtol=1e-12, atol=1e-13)
    assert res.provenance.extra["bn_mode"] == bn_mode and res.provenance.extra["strategy"] == strategy
    # the shorthand gives the same numbers
    short = evaluate_curve(a, curve, (X, y), ts=ts, bn_mode=bn_mode, strategy=strategy, chunk_size=chunk_size)
    np.testing.assert_allclose(short.metrics["loss"], expected, rtol=1e-12, atol=1e-13)


def test_evaluate_curve_refuses_data_beside_a_problem():
    a, b, X, y = _bn_pair()
    curve = ModeCurve(control=torch.stack([parameters_to_vector(m) for m in (a, a, b)]).numpy())
    with pytest.raises(TypeError, match="Problem, which holds its data"):
        evaluate_curve(Problem(a, (X, y)), curve, (X, y))


# ----------------------------------------------------------------------------- 6. NaN snapshots, no layers
def _run(nan_at: int | None, steps: int = 4, seed: int = 0) -> Trajectory:
    """A trajectory of ``steps`` snapshots of a 13-parameter network; snapshot ``nan_at`` has a NaN in ``2.bias``."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    traj = Trajectory()
    for t in range(steps):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1)
        if t == nan_at:
            bad = copy.deepcopy(net)
            with torch.no_grad():
                bad[2].bias[0] = float("nan")
            traj.append_model(bad, step=10 * t)
        else:
            traj.append_model(net, step=10 * t)
    return traj


@pytest.mark.parametrize("fn", [distance_from_origin, distance_from_init])
def test_distances_along_a_path_refuse_a_nan_snapshot_naming_it(fn):
    """A NaN snapshot gave a silent NaN distance (functional_distance and fit_curve refuse NaN anchors)."""
    with pytest.raises(InputError, match=r"X holds non-finite snapshots: snapshot 2 \(step 20\): 1 NaN .*'2\.bias'"):
        fn(_run(nan_at=2))
    mat = torch.stack([s.vector for s in _run(nan_at=1)])
    with pytest.raises(InputError, match=r"snapshot 1 \(step 1\): 1 NaN"):
        fn(mat)
    # finite snapshots: the distances themselves, in float64
    ok = _run(nan_at=None)
    V = torch.stack([s.vector for s in ok]).double()
    ref = V.norm(dim=1) if fn is distance_from_origin else (V - V[0]).norm(dim=1)
    np.testing.assert_allclose(fn(ok), ref.numpy(), rtol=1e-13)


def test_pairwise_end_distances_refuse_a_nan_final_snapshot_naming_the_trajectory():
    with pytest.raises(InputError, match=r"trajectories\[1\] holds non-finite snapshots: snapshot 3 .*'2\.bias'"):
        pairwise_end_distances([_run(None), _run(nan_at=3, seed=1)])
    # a NaN before the end does not enter the distances between the ends
    runs = [_run(None), _run(nan_at=1, seed=1), _run(None, seed=2)]
    ends = torch.stack([r[len(r) - 1].vector.double() for r in runs])
    np.testing.assert_allclose(pairwise_end_distances(runs), torch.cdist(ends, ends).numpy(), rtol=1e-12, atol=1e-14)


def test_measure_saturation_refuses_an_empty_layer_list():
    """layers=[] returned {}: no layer measured, which reads as "nothing saturates"."""
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
    X = torch.randn(8, 2)
    with pytest.raises(ValueError, match="layers is empty: pass module names and/or module types"):
        measure_saturation(net, X, layers=[])
    with pytest.raises(ValueError, match="layers is empty"):
        SaturationRecorder(X, layers=())
    # the default (every Tanh) is the one measured layer, whose values the histogram counts
    stats = measure_saturation(net, X)
    assert list(stats) == ["1"] and int(stats["1"].counts.sum()) == 8 * 3
