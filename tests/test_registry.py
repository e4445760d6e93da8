"""Every analyzer's brute-force check on every model of the test registry (issues 20 and 21).

The registry (:mod:`tests.registry`) holds tiny float64 problems: an MLP, a Linear on token inputs, a CNN
with BatchNorm, a ResNet block, an attention block, an LSTM and a frozen-parameter model with mapping
batches and a closure loss. Covered: the Problem's loss, gradient and HVP (eval and train BatchNorm), every
engine strategy, filter normalization, line, random plane, functional distance (two points and along a
path), evaluate_points' outputs, loss barriers, activation saturation (exact percentiles and histograms
against forward hooks), top eigenpairs, SLQ, Hutchinson / Hutch++ traces, TrajectoryPCA, permutation specs
(function preserved, composition, inverse) and weight matching.
Each test compares an analyzer with a reference written here from the case's raw pieces (the whole data
as one batch through ``torch.func.functional_call``), never with the package's own output. The
``registry_case`` fixture (``conftest.py``) checks at teardown that the model was not modified: parameters
and buffers bitwise, ``requires_grad``, ``.grad``, train flags, hooks and tensor identities.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape import (
    PermutationSpecError,
    TrajectoryPCA,
    apply_permutation,
    compose_permutations,
    distance_along_path,
    evaluate_points,
    functional_distance,
    hessian_eigenpairs,
    hessian_spectrum,
    hessian_trace,
    invert_permutation,
    line,
    loss_barrier,
    measure_saturation,
    normalize_direction,
    permutation_spec,
    random_permutation,
    random_plane,
    weight_matching,
)
from tests.registry import Case, assert_same_state, make_case, model_state, reference_loss, reference_outputs

_DENSE: dict[str, torch.Tensor] = {}


def dense_hessian(case: Case) -> torch.Tensor:
    """``torch.func.hessian`` of the reference loss as a function of the flat vector ``(D, D)`` (cached per case)."""
    if case.name not in _DENSE:
        H = torch.func.hessian(lambda t: reference_loss(case, t))(case.theta0())
        _DENSE[case.name] = (H + H.T) / 2
    return _DENSE[case.name]


def _direction(case: Case, seed: int, scale: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(case.theta0().shape, generator=gen, dtype=torch.float64)


# --------------------------------------------------------------------------- the Problem's loss, gradient, HVP
def test_problem_loss_grad_hvp_match_torch_func(registry_case: Case) -> None:
    case = registry_case
    prob = case.problem()
    assert [s.name for s in prob.layout.specs] == case.param_names()  # the flat order the references assume
    th = case.theta0() + _direction(case, 0, 0.1)  # away from the model's point: theta is honoured
    f = lambda t: reference_loss(case, t)  # noqa: E731
    torch.testing.assert_close(prob.loss(th), f(th), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prob.grad(th), torch.func.grad(f)(th), rtol=1e-10, atol=1e-10)
    H = torch.func.hessian(f)(th)
    V = torch.randn(th.numel(), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flags = _sdp_flags()
    # The attention case needs the math SDPA kernel here: the CPU flash kernel has no double backward.
    torch.testing.assert_close(prob.hvp(V, th), H @ V, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(prob.hvp(V[:, 0], th), H @ V[:, 0], rtol=1e-10, atol=1e-10)
    assert _sdp_flags() == flags, "the caller's attention-kernel settings were not restored"
    assert any("math SDPA" in n for n in prob.notes)
    assert prob.hvp_count == 4


def _sdp_flags() -> tuple[bool, ...]:
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.math_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.cudnn_sdp_enabled())


def test_problem_bn_train_mode_uses_each_batchs_statistics(registry_case: Case) -> None:
    """``bn_mode="train"``: per batch its own statistics, running buffers unused; mean over batches."""
    case = registry_case
    if not case.has_bn:
        pytest.skip("no BatchNorm in this case")
    size = case.problem_kwargs.get("batch_size", case.targets.numel())
    prob = case.problem(bn_mode="train")
    th = case.theta0() + _direction(case, 6, 0.1)

    def f(t: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i in range(0, case.targets.numel(), size):
            part = dataclasses.replace(case, inputs=tuple(x[i : i + size] for x in case.inputs))
            out = reference_outputs(part, t, bn_train=True)
            total = total + case.ref_loss(out, case.targets[i : i + size]) * out.shape[0]
        return total / case.targets.numel()

    torch.testing.assert_close(prob.loss(th), f(th), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prob.grad(th), torch.func.grad(f)(th), rtol=1e-10, atol=1e-10)
    # The engine's slices in train mode use the same per-batch statistics as the Problem.
    a, b = case.theta0(), th
    alphas = np.array([0.0, 0.5, 1.0])
    res = line(prob, a, b, alphas=alphas)
    np.testing.assert_allclose(res.metrics["loss"], [float(f((1 - t) * a + t * b)) for t in alphas], rtol=1e-10)
    v = _direction(case, 7, 1.0)
    # Reverse over reverse: torch.func.hessian's jacfwd vmaps the forward pass, and functorch does not support
    # a train-mode BatchNorm with running statistics under vmap (its "Patching Batch Norm" note); here it
    # returns a product off by ~1e-1 without an error, while reverse-over-reverse and central differences of
    # the gradient agree with the package to 1e-8.
    H = torch.func.jacrev(torch.func.grad(f))(th)
    torch.testing.assert_close(prob.hvp(v, th), H @ v, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(prob.loss(th), case.problem().loss(th))  # the two modes differ here


# --------------------------------------------------------------------------- directions
@pytest.mark.parametrize("bias_bn", ["zero", "copy", "keep"])
def test_filter_normalization_matches_a_per_filter_loop(registry_case: Case, bias_bn: str) -> None:
    """Li et al.'s filter normalization: every row (output unit / filter) of a >1-D tensor scaled to the
    reference's norm of that row; 1-D tensors zeroed, copied or scaled whole (``bias_bn``)."""
    case = registry_case
    theta = case.theta0()
    raw = _direction(case, 12, 1.0)
    got = normalize_direction(raw, theta, case.model, "filter", bias_bn)
    want = []
    for d, w in zip(case.unflatten(raw.clone()).values(), case.unflatten(theta).values(), strict=True):
        d = d.clone()
        if d.dim() <= 1:
            d = {"zero": torch.zeros_like(d), "copy": w.clone(), "keep": d * w.norm() / (d.norm() + 1e-10)}[bias_bn]
        else:
            for j in range(d.shape[0]):
                d[j] *= w[j].norm() / (d[j].norm() + 1e-10)
        want.append(d.reshape(-1))
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-13, atol=0)
    assert not torch.equal(raw, got)


# --------------------------------------------------------------------------- slices and distances
def test_line_matches_a_loop_over_points(registry_case: Case) -> None:
    case = registry_case
    a, b = case.theta0(), case.theta0() + _direction(case, 2)
    alphas = np.array([-0.5, 0.0, 0.3, 1.0, 1.5])
    res = line(case.problem(), a, b, alphas=alphas)
    ref = [float(reference_loss(case, (1 - t) * a + t * b)) for t in alphas]
    np.testing.assert_allclose(res.metrics["loss"], ref, rtol=1e-10, atol=1e-12)
    if case.closure:  # accuracy needs (outputs, targets) labels: refused by name
        with pytest.raises(ValueError, match="closure"):
            line(case.problem(), a, b, alphas=alphas, metrics=("loss", "accuracy"))
    else:
        acc = [
            float((reference_outputs(case, (1 - t) * a + t * b).argmax(-1) == case.targets).double().mean())
            for t in alphas
        ]
        np.testing.assert_allclose(res.metrics["accuracy"], acc, rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", ["loop", "functional", "vmap", "stacked"])
def test_every_engine_strategy_matches_the_loop_or_refuses_by_name(registry_case: Case, strategy: str) -> None:
    """Each executor of the engine gives the reference losses, or (stacked) refuses a model it cannot chain."""
    case = registry_case
    a, b = case.theta0(), case.theta0() + _direction(case, 11)
    alphas = np.array([0.0, 0.6, 1.0])
    ref = [float(reference_loss(case, (1 - t) * a + t * b)) for t in alphas]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "vmap failed")  # vmap falls back to one point at a time
            res = line(case.problem(), a, b, alphas=alphas, strategy=strategy, metrics=("loss",))
    except ValueError as e:
        assert strategy == "stacked" and "strategy='stacked' supports" in str(e)
        return
    np.testing.assert_allclose(res.metrics["loss"], ref, rtol=1e-10, atol=1e-12)


def test_random_plane_matches_a_loop_over_the_grid(registry_case: Case) -> None:
    case = registry_case
    xs, ys = np.array([-0.5, 0.0, 0.5]), np.array([-0.25, 0.25])
    res = random_plane(case.problem(), xs=xs, ys=ys, seed=3)
    center, d = torch.as_tensor(res.center), torch.as_tensor(res.directions)
    torch.testing.assert_close(center, case.theta0(), rtol=0, atol=0)
    assert d.shape == (2, center.numel()) and bool((d.norm(dim=1) > 0).all())
    ref = np.array([[float(reference_loss(case, center + x * d[0] + y * d[1])) for x in xs] for y in ys])
    np.testing.assert_allclose(res.metrics["loss"], ref, rtol=1e-10, atol=1e-12)


def test_functional_distance_matches_a_loop(registry_case: Case) -> None:
    case = registry_case
    a, b = case.theta0(), case.theta0() + _direction(case, 4)
    res = functional_distance(case.problem(), a, b)
    pa, pb = (F.softmax(reference_outputs(case, t), dim=-1) for t in (a, b))
    rms = float(((pa - pb) ** 2).sum(-1).mean().sqrt())
    disagreement = float((pa.argmax(-1) != pb.argmax(-1)).double().mean())
    assert res.rms == pytest.approx(rms, rel=1e-10, abs=1e-14)
    assert res.disagreement == pytest.approx(disagreement, abs=1e-12)
    assert res.n_samples == case.targets.numel()


def test_distance_along_path_matches_a_loop(registry_case: Case) -> None:
    case = registry_case
    a, b = case.theta0(), case.theta0() + _direction(case, 8)
    alphas = np.array([0.0, 0.5, 1.0, 2.0])
    res = distance_along_path(case.problem(), a, b, alphas=alphas, output="logits")
    fa = reference_outputs(case, a)
    rms, dis = [], []
    for t in alphas:
        ft = reference_outputs(case, (1 - t) * a + t * b)
        rms.append(float(((ft - fa) ** 2).sum(-1).mean().sqrt()))
        dis.append(float((ft.argmax(-1) != fa.argmax(-1)).double().mean()))
    np.testing.assert_allclose(res.rms, rms, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.disagreement, dis, rtol=0, atol=1e-12)


def test_evaluate_points_outputs_match_a_loop(registry_case: Case) -> None:
    case = registry_case
    pts = torch.stack([case.theta0(), case.theta0() + _direction(case, 9)])
    if case.closure:  # accuracy needs (outputs, targets) class labels: refused by name
        with pytest.raises(ValueError, match="closure"):
            evaluate_points(case.problem(), pts, metrics=("loss", "accuracy"))
    # Outputs need only the model's call, which mapping batches give under a closure too.
    res = evaluate_points(case.problem(), pts, metrics=("loss", "outputs"))
    ref = np.stack([reference_outputs(case, p).numpy() for p in pts])
    np.testing.assert_allclose(res["outputs"], ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res["loss"], [float(reference_loss(case, p)) for p in pts], rtol=1e-10)


def test_loss_barrier_matches_a_loop(registry_case: Case) -> None:
    case = registry_case
    a = case.theta0()
    b = a + _direction(case, 10, 0.5)
    other = copy.deepcopy(case.model)
    with torch.no_grad():
        for p, v in zip(other.parameters(), case.unflatten(b).values(), strict=True):
            p.copy_(v)
    alphas = np.linspace(0, 1, 5)
    res = loss_barrier(
        case.model, other, case.data, alphas=alphas, loss_fn=case.loss, metrics=("loss",), **case.problem_kwargs
    )
    L = np.array([float(reference_loss(case, (1 - t) * a + t * b)) for t in alphas])
    np.testing.assert_allclose(res.metrics["loss"], L, rtol=1e-10)
    excess = L - ((1 - alphas) * L[0] + alphas * L[-1])
    assert res.loss_barrier == pytest.approx(excess.max(), rel=1e-9, abs=1e-12)
    assert res.peak_alpha == alphas[excess.argmax()]
    assert res.loss_barrier_mean == pytest.approx(L.max() - (L[0] + L[-1]) / 2, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- curvature
def test_hessian_eigenpairs_top3_match_dense_eigvalsh(registry_case: Case) -> None:
    case = registry_case
    H = dense_hessian(case)
    evals = torch.linalg.eigvalsh(H)
    pairs = hessian_eigenpairs(case.problem(), k=3, tol=1e-10)
    assert pairs.converged
    norm = float(evals.abs().max())
    got = torch.as_tensor(pairs.values)
    torch.testing.assert_close(got, evals.flip(0)[:3], rtol=0, atol=1e-8 * norm)
    # The vectors are eigenvectors of the reference Hessian, not only of the package's operator.
    V = torch.as_tensor(pairs.vectors)
    assert float((H @ V - V * got).norm(dim=0).max()) <= 1e-7 * norm


def test_slq_first_moment_matches_the_dense_trace(registry_case: Case) -> None:
    """Trace/n from the SLQ quadrature vs the dense Hessian's, within five standard errors.

    Each probe's first moment is ``v^T H v / v^T v`` exactly (Gauss quadrature is exact to degree
    ``2m - 1``). For Rademacher or Gaussian probes its variance is at most ``2 ||H||_F^2 / n^2``, so the
    mean of ``p`` probes is within ``5 sqrt(2 / p) ||H||_F / n`` of ``tr(H) / n`` but with probability
    ~1e-6 (a fixed seed: the test is deterministic). Ritz values lie inside the spectrum, exactly.
    """
    case = registry_case
    H = dense_hessian(case)
    n = H.shape[0]
    evals = torch.linalg.eigvalsh(H)
    p = 4
    spec = hessian_spectrum(case.problem(), n_probes=p, steps=12, top_k=0)
    assert spec.nodes.shape == (p, 12)
    np.testing.assert_allclose(spec.weights.sum(axis=1), 1.0, rtol=0, atol=1e-10)
    first = (spec.weights * spec.nodes).sum(axis=1).mean()
    tol = 5 * math.sqrt(2 / p) * float(torch.linalg.norm(H)) / n
    assert abs(first - float(evals.mean())) <= tol
    assert spec.trace["slq"] / n == pytest.approx(first, rel=1e-10, abs=1e-12)
    slack = 1e-8 * float(evals.abs().max())
    used = spec.nodes[spec.weights > 1e-12]
    assert used.min() >= float(evals[0]) - slack and used.max() <= float(evals[-1]) + slack


def test_slq_with_full_steps_finds_eigenvalues(registry_case: Case) -> None:
    """With ``n`` steps the Krylov space is invariant: every weighted Ritz value is an eigenvalue."""
    case = registry_case
    H = dense_hessian(case)
    evals = torch.linalg.eigvalsh(H).numpy()
    n = H.shape[0]
    if n > 250:
        pytest.skip(f"{n} steps: the smaller cases (attention's math-SDPA path is in the eigenpair test) suffice")
    spec = hessian_spectrum(case.problem(), n_probes=1, steps=n, top_k=0)
    used = spec.nodes[spec.weights > 1e-8]
    gap = np.abs(used[:, None] - evals[None, :]).min(axis=1)
    assert gap.max() <= 1e-7 * np.abs(evals).max()
    # The first moment is then v^T H v / v^T v of the probe: inside the spectrum's convex hull.
    first = float((spec.weights * spec.nodes).sum())
    assert evals[0] - 1e-9 <= first <= evals[-1] + 1e-9


def test_hessian_trace_matches_the_dense_trace(registry_case: Case) -> None:
    """Hutchinson within five standard deviations of its Rademacher bound; Hutch++ exact with ``3 n`` products.

    A Rademacher probe's ``v^T H v`` has variance ``2 (||H||_F^2 - sum_i H_ii^2) <= 2 ||H||_F^2``. Hutch++
    with ``m >= 3 n`` products sketches a basis of the whole space, so its deflated trace is exact.
    """
    case = registry_case
    H = dense_hessian(case)
    n, trace = H.shape[0], float(torch.trace(H))
    p = 30
    est = hessian_trace(case.problem(), n_products=p, method="hutchinson", seed=1)
    assert abs(est.estimate - trace) <= 5 * math.sqrt(2 / p) * float(torch.linalg.norm(H))
    if n <= 130:  # the exact branch costs 3 n products: the smaller cases suffice
        exact = hessian_trace(case.problem(), n_products=3 * n, method="hutchpp", seed=1)
        assert exact.estimate == pytest.approx(trace, rel=1e-9, abs=1e-9 * float(torch.linalg.norm(H)))


# --------------------------------------------------------------------------- activation saturation
_HOOKED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.Tanh, nn.ReLU)  # modules whose output is one tensor


def _hand_activations(case: Case, names: list[str]) -> dict[str, np.ndarray]:
    """Every output value of the named modules over all samples, one batch, eval mode, by forward hooks."""
    net = copy.deepcopy(case.model).eval()
    mods = dict(net.named_modules())
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: out[n].append(o.detach().reshape(-1))) for n in names]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        net(*case.inputs, **case.kwargs)
    for h in hs:
        h.remove()
    assert all(len(v) <= 1 for v in out.values()), "a module ran twice: the labels would be name#k"
    # MultiheadAttention's out_proj is a Linear whose weight is used without calling the module: never ran
    return {n: torch.cat(v).numpy() for n, v in out.items() if v}


def test_saturation_matches_a_hand_hook(registry_case: Case) -> None:
    """Exact percentiles, histogram counts, mean and std of each layer's activations over the case's data."""
    case = registry_case
    names = [k for k, m in case.model.named_modules() if k and isinstance(m, _HOOKED)]
    if not names:
        pytest.skip("no module with a single-tensor output (the LSTM and attention return tuples)")
    acts = _hand_activations(case, names)
    names = list(acts)
    lo = min(float(a.min()) for a in acts.values()) - 1.0
    hi = max(float(a.max()) for a in acts.values()) + 1.0
    qs = (0.0, 2.0, 50.0, 98.0, 100.0)
    prob = case.problem()
    stats = measure_saturation(prob, layers=names, range=(lo, hi), percentiles=qs, bins=13)
    assert list(stats) == names  # forward order, one label per module
    for name, s in stats.items():
        a = acts[name]
        assert s.exact and s.count == a.size
        np.testing.assert_allclose(s.values, np.percentile(a, qs), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(s.counts, np.histogram(a, bins=s.edges)[0])
        assert s.mean == pytest.approx(a.mean(), rel=1e-10, abs=1e-12)
        assert s.std == pytest.approx(a.std(), rel=1e-10, abs=1e-12)


def test_saturation_of_a_fresh_problem_counts_only_the_data() -> None:
    # the first pass's 2-sample output-shape probe (validation) once ran while the hooks were on
    case = make_case("mlp_tanh")
    stats = measure_saturation(case.problem(), layers=["2"], range=(-10.0, 10.0))
    assert stats["2"].count == case.targets.numel() * 3  # 24 samples, 3 outputs


# --------------------------------------------------------------------------- PCA of a few points of the case
def test_trajectory_pca_matches_numpy_svd(registry_case: Case) -> None:
    case = registry_case
    gen = torch.Generator().manual_seed(5)
    X = case.theta0() + 0.1 * torch.randn(6, case.theta0().numel(), generator=gen, dtype=torch.float64).cumsum(0)
    pca = TrajectoryPCA(n_components=3).fit(X)
    Xn = X.numpy()
    Xc = Xn - Xn.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(pca.mean_.numpy(), Xn.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pca.singular_values_, s[:3], rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_, s[:3] ** 2 / 5, rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio_, s[:3] ** 2 / (s**2).sum(), rtol=1e-10)
    comps = pca.components_.numpy()
    signs = np.sign((comps * vt[:3]).sum(1))
    np.testing.assert_allclose(comps * signs[:, None], vt[:3], rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.abs(pca.transform(X)), np.abs(Xc @ vt[:3].T), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- permutations (issue 21)
def _outputs(model: torch.nn.Module, case: Case, train: bool) -> torch.Tensor:
    net = copy.deepcopy(model).train(train)  # a copy: train mode writes running statistics
    with torch.no_grad():
        return net(*case.inputs, **case.kwargs)


def test_permutation_preserves_the_function_and_inverts_bitwise(registry_case: Case) -> None:
    case = registry_case
    if case.perm_error is not None:
        with pytest.raises(PermutationSpecError, match=case.perm_error):
            permutation_spec(case.model)
        return
    spec = permutation_spec(case.model)
    perm = random_permutation(spec, seed=0)
    assert any(not torch.equal(p, torch.arange(p.numel())) for p in perm.values()), "the permutation is the identity"
    new = apply_permutation(spec, perm, case.model)
    assert any(not torch.equal(v, case.model.state_dict()[k]) for k, v in new.state_dict().items())
    for train in (False, True) if case.has_bn else (False,):
        diff = (_outputs(new, case, train) - _outputs(case.model, case, train)).abs().max()
        assert float(diff) <= 1e-12, f"outputs moved by {float(diff):.2e} (BatchNorm train={train})"
    # Composition: one application of compose(p, q) is two applications, bitwise.
    q = random_permutation(spec, seed=1)
    twice, once = apply_permutation(spec, q, new), apply_permutation(spec, compose_permutations(perm, q), case.model)
    for k, v in twice.state_dict().items():
        assert torch.equal(once.state_dict()[k], v), f"compose_permutations disagrees with two applications on {k!r}"
    back = apply_permutation(spec, invert_permutation(perm), new)
    for k, v in case.model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), f"the inverse does not restore {k!r} bitwise"
    # The flat-vector form gives the same point: the same loss through the Problem. A vector holds no
    # buffers, so with BatchNorm the Problem runs on batch statistics (running ones would stay unpermuted).
    prob = case.problem(bn_mode="train" if case.has_bn else "eval")
    moved = apply_permutation(spec, perm, case.theta0(), layout=case.model)
    assert float(prob.loss(moved)) == pytest.approx(float(prob.loss()), rel=1e-12, abs=1e-14)
    torch.testing.assert_close(moved, torch.cat([p.reshape(-1) for p in new.parameters()]), rtol=0, atol=0)


def test_weight_matching_undoes_a_permutation(registry_case: Case) -> None:
    """Aligning a permuted copy to its original recovers it bitwise, at the Cauchy-Schwarz maximum ``||theta||^2``."""
    case = registry_case
    if case.perm_error is not None:
        with pytest.raises(PermutationSpecError, match=case.perm_error):
            weight_matching(case.model, copy.deepcopy(case.model))
        return
    spec = permutation_spec(case.model)
    b = apply_permutation(spec, random_permutation(spec, seed=3), case.model)
    res = weight_matching(case.model, b)
    assert np.all(np.diff(res.objective) >= -1e-12 * abs(res.objective[-1]))
    assert res.objective[-1] == pytest.approx(float(case.theta0().square().sum()), rel=1e-12)
    aligned = res.apply(b)
    for k, v in case.model.state_dict().items():
        assert torch.equal(aligned.state_dict()[k], v), f"weight matching did not restore {k!r}"


def test_the_no_mutation_check_sees_every_kind_of_change() -> None:
    """The fixture's check is not vacuous: each kind of write it guards against trips it."""
    writes = {
        "tensor": lambda m: m[1].running_mean.add_(1e-12),
        "training": lambda m: m.train(not m.training),
        "hooks": lambda m: m[0].register_forward_hook(lambda *_: None),
        "requires_grad": lambda m: m[0].weight.requires_grad_(False),
        "gradient": lambda m: setattr(m[0].weight, "grad", torch.zeros_like(m[0].weight)),
        "ids": lambda m: setattr(m[0], "bias", torch.nn.Parameter(m[0].bias.detach().clone())),
    }
    for what, write in writes.items():
        case = make_case("cnn_bn")
        before = model_state(case.model)
        write(case.model)
        with pytest.raises(AssertionError, match=what if what != "tensor" else "running_mean"):
            assert_same_state(case.model, before)
