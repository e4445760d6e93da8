import os

import numpy as np
import pytest
import torch
from torch import nn

from landscape.models import RegressionMLP, build_model
from landscape.params import ParamLayout, functional_forward, parameters_to_vector
from landscape.train import Trainer
from landscape.trajectory import Trajectory
from persistence import (
    FastPersistentResult,
    PersistentPenalty,
    PersistentTrainer,
    SeedsResult,
    draw_layer,
    fast_persistent_run,
    he_init_vectors,
    mlp_loss_and_grad,
    mlp_widths,
    stack_to_vectors,
    train_seeds_batched,
    vectors_to_stack,
)

F64 = torch.float64


def _data(n=30, in_features=1, out_features=1, seed=0):
    x = torch.linspace(-3, 3, n, dtype=F64)[:, None]
    if in_features > 1:
        x = torch.cat([x, torch.randn(n, in_features - 1, dtype=F64, generator=torch.Generator().manual_seed(seed))], 1)
    y = 0.5 * x[:, :1] ** 2 + 2 * torch.sin(2 * x[:, :1])
    return x, y.repeat(1, out_features) * torch.arange(1, out_features + 1, dtype=F64)


def _net(seed=3, m=6, **kw):
    return build_model(
        "regression_mlp",
        (kw.pop("in_features", 1),),
        kw.pop("out_features", 1),
        m=m,
        init="he",
        seed=seed,
        dtype=F64,
        **kw,
    )


def _sgd(lr):
    return lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items()) and all(
        p.requires_grad for p in model.parameters()
    )


def test_layout_conversion_matches_param_layout_and_he_init_matches_build_model():
    net = _net()
    assert mlp_widths(net) == (1, 6, 6, 1)
    lay = ParamLayout.from_model(net)
    assert lay.names == ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
    mat = torch.randn(4, lay.numel, dtype=F64)
    stack = vectors_to_stack(mat, mlp_widths(net))
    for t, ref in zip(stack, lay.unflatten_batch(mat).values()):
        assert torch.equal(t, ref)
    assert torch.equal(stack_to_vectors(stack), mat)
    vecs = he_init_vectors([3, 5], m=6, dtype=F64)
    assert torch.equal(vecs[0], parameters_to_vector(net))
    assert torch.equal(vecs[1], parameters_to_vector(_net(seed=5)))
    w = vecs[:, lay["fc2.weight"].slice]  # He: zero biases, weights N(0, 2 / fan_in)
    assert vecs[:, lay["fc2.bias"].slice].abs().max() == 0 and w.std() > 0


def test_hand_derived_gradient_equals_autograd_with_penalty():
    cases = [(_net(), _data()), (_net(m=5, depth=4, in_features=2, out_features=3), _data(17, 2, 3))]
    for net, (x, y) in cases:
        snap = _snapshot(net)
        lay = ParamLayout.from_model(net)
        g = torch.Generator().manual_seed(1)
        pts = torch.randn(3, lay.numel, generator=g, dtype=F64)
        anchors = torch.randn(5, lay.numel, generator=g, dtype=F64)
        names = list(lay.layers)
        for anc, layers, factor in (
            (None, None, None),
            (anchors, None, None),
            (anchors, [names[1]], 2.5),
            (anchors, names[1], None),  # one name as a str, not its characters
            (anchors, [names[0], names[-1]], None),
        ):
            loss, grad = mlp_loss_and_grad(net, pts, x, y, anchors=anc, lam=0.07, layers=layers, depth_factor=factor)
            for j in range(3):
                v = pts[j].clone().requires_grad_(True)
                ref = nn.functional.mse_loss(functional_forward(net, v, x), y)
                if anc is not None:
                    ref = ref + PersistentPenalty(lay, anc, 0.07, layers=layers, depth_factor=factor).from_vector(v)
                (ref_g,) = torch.autograd.grad(ref, v)
                assert torch.allclose(loss[j], ref.detach(), rtol=1e-12, atol=0)
                assert torch.allclose(grad[j], ref_g, rtol=1e-10, atol=1e-13)
        single = mlp_loss_and_grad(net, pts[0], x, y)
        assert single[1].shape == (lay.numel,) and torch.equal(single[1], mlp_loss_and_grad(net, pts[:1], x, y)[1][0])
        assert _unchanged(net, snap)


def test_batched_seeds_equal_one_at_a_time_trainer_with_torch_optim():
    x, y = _data(40)
    template = _net()
    snap = _snapshot(template)
    res = train_seeds_batched(template, x, y, [0, 1, 2], steps=200, lr=0.01, log_every=50, backend="eager")
    assert _unchanged(template, snap)
    assert res.losses.shape == (3, 5) and list(res.loss_steps) == [0, 50, 100, 150, 200]
    for j, seed in enumerate([0, 1, 2]):
        model = _net(seed=seed)
        assert np.array_equal(res.initial[j], parameters_to_vector(model).numpy())
        tr = Trainer(model, (x, y), nn.functional.mse_loss, _sgd(0.01), steps=200, batch_size=None)
        step_losses = [ev.loss for ev in tr]  # loss each step starts from
        final = parameters_to_vector(tr.model).numpy()
        assert np.allclose(res.final[j], final, rtol=1e-10, atol=1e-12)
        assert np.allclose(res.losses[j, :-1], np.array(step_losses)[res.loss_steps[:-1]], rtol=1e-10)
        final_loss = float(nn.functional.mse_loss(tr.model(x), y).detach())
        assert res.final_loss[j] == pytest.approx(final_loss, rel=1e-10)
        assert not np.allclose(res.final[j], res.initial[j])  # training moved
    assert res.best == int(np.argmin(res.final_loss))
    assert torch.equal(parameters_to_vector(res.model(1, template)), torch.from_numpy(res.final[1]))
    # explicit starting vectors give the same computation as seeds
    again = train_seeds_batched(template, x, y, torch.from_numpy(res.initial), steps=200, lr=0.01, backend="eager")
    assert np.array_equal(again.final, res.final)


@pytest.mark.parametrize("mode, depth_factor", [("full", False), ("partial", True)])
def test_fast_persistent_run_equals_persistent_trainer(mode, depth_factor):
    x, y = _data(30)
    xv, yv = _data(11)
    net = _net(seed=4)
    snap = _snapshot(net)
    kw = dict(iterations=4, lam=0.5, mode=mode, depth_factor=depth_factor, seed=7)
    fast = fast_persistent_run(
        net,
        x,
        y,
        steps=60,
        lr=0.01,
        eval_data={"val": (xv, yv)},
        select_by="val_loss",
        backend="eager",
        log_every=15,
        **kw,
    )
    assert _unchanged(net, snap)
    ref = PersistentTrainer(
        net, (x, y), nn.functional.mse_loss, _sgd(0.01), eval_data={"val": (xv, yv)}, steps=60, batch_size=None, **kw
    ).fit()
    assert fast.layers == [r.layer for r in ref.results_]
    if mode == "partial":
        assert set(fast.layers[1:]) <= {"fc1", "fc2", "fc3"} and fast.layers[0] is None
        assert fast.depth_factor == pytest.approx(ref.depth_factor_, rel=1e-10)
    for i, r in enumerate(ref.results_):
        assert np.allclose(fast.finals[i], r.final.numpy(), rtol=1e-9, atol=1e-11)
        assert fast.metrics[i]["val_loss"] == pytest.approx(r.metrics["val_loss"], rel=1e-9)
    # the penalty did something: later iterations end elsewhere than the plain model
    assert np.abs(fast.finals[1:] - fast.finals[0]).max() > 1e-3
    assert fast.penalties[0].max() == 0 and fast.penalties[1:, -1].min() > 0
    assert fast.champion == ref.champion_


def test_every_iteration_starts_from_bitwise_the_same_weights_and_trajectories():
    x, y = _data(25)
    net = _net(seed=2)
    init = parameters_to_vector(net).numpy()
    res = fast_persistent_run(
        net, x, y, iterations=3, steps=30, lam=0.3, lr=0.01, record_every=10, log_every=10, backend="eager"
    )
    assert res.snapshots.shape == (3, 4, init.size) and list(res.snapshot_steps) == [0, 10, 20, 30]
    for i in range(3):
        assert np.array_equal(res.snapshots[i, 0], init)
        assert np.array_equal(res.snapshots[i, -1], res.finals[i])
        assert res.losses[i, 0] == res.losses[0, 0]  # the same start gives the same first loss, bitwise
    assert np.array_equal(res.initial, init)
    traj = res.trajectory(2, net)
    assert len(traj) == 4 and traj[0].tags["persistent_iteration"] == 2
    assert torch.equal(traj[3].vector, torch.from_numpy(res.finals[2]))


def test_checkpoint_resume_and_save_load(tmp_path):
    x, y = _data(20)
    net = _net(seed=1)
    kw = dict(steps=40, lam=0.3, lr=0.01, backend="eager")
    full = fast_persistent_run(net, x, y, iterations=3, **kw)
    ck = tmp_path / "chain"
    first = fast_persistent_run(net, x, y, iterations=2, checkpoint=ck, **kw)  # "interrupted" after two iterations
    (ck / "iteration_002").mkdir()  # the third iteration left half-written
    resumed = fast_persistent_run(net, x, y, iterations=3, checkpoint=ck, **kw)
    assert np.array_equal(resumed.finals, full.finals)  # the eager step is deterministic: bitwise
    assert np.array_equal(resumed.losses, full.losses) and resumed.metrics == full.metrics
    assert resumed.settings["iteration_times"][:2] == first.settings["iteration_times"]  # not retrained
    assert Trajectory.open(ck / "iteration_002")[0].tags["persistent_iteration"] == 2
    with pytest.raises(ValueError, match="other settings"):
        fast_persistent_run(net, x, y, iterations=3, checkpoint=ck, **{**kw, "lam": 0.2})
    back = FastPersistentResult.load(full.save(tmp_path / "r"))
    assert np.array_equal(back.finals, full.finals) and back.metrics == full.metrics and back.champion == full.champion
    seeds = train_seeds_batched(net, x, y, [0, 1], steps=5, backend="eager")
    assert np.array_equal(SeedsResult.load(seeds.save(tmp_path / "s")).losses, seeds.losses)


def test_errors_name_the_problem():
    x, y = _data(10)
    with pytest.raises(TypeError, match="PersistentTrainer"):
        mlp_widths(nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1)))
    with pytest.raises(TypeError, match="Sequential"):
        mlp_widths(nn.Linear(1, 1))
    with pytest.raises(ValueError, match="no bias"):
        mlp_widths(nn.Sequential(nn.Linear(1, 3, bias=False), nn.ReLU(), nn.Linear(3, 1)))
    net = RegressionMLP(m=4).double()
    with pytest.raises(ValueError, match="valid values are 'auto', 'compiled', 'eager'"):
        train_seeds_batched(net, x, y, [0], steps=1, backend="gpu")
    with pytest.raises(ValueError, match="inputs \\(N, 1\\)"):
        train_seeds_batched(net, torch.zeros(10, 2), y, [0], steps=1)
    with pytest.raises(ValueError, match="unknown layer"):
        fast_persistent_run(net, x, y, iterations=2, steps=1, lam=0.1, mode="partial", layer="fc9")
    with pytest.raises(ValueError, match="select_by"):
        fast_persistent_run(net, x, y, iterations=2, steps=1, lam=0.1, select_by="val_loss")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("LANDSCAPE_TEST_COMPILE") != "1",
    reason="compiles with inductor (~20-60 s); set LANDSCAPE_TEST_COMPILE=1",
)
def test_compiled_backend_equals_eager():
    x, y = _data(12)
    net = _net(m=4)
    kw = dict(iterations=3, steps=21, lam=0.3, lr=0.01, steps_per_call=4)  # 21 = 5 compiled calls + 1 eager step
    a = fast_persistent_run(net, x, y, backend="compiled", **kw)
    b = fast_persistent_run(net, x, y, backend="eager", **kw)
    assert a.settings["backend"] == "compiled"
    assert np.allclose(a.finals, b.finals, rtol=1e-12, atol=1e-13)
    sa = train_seeds_batched(net, x, y, [0, 1], steps=9, backend="compiled", steps_per_call=4)
    sb = train_seeds_batched(net, x, y, [0, 1], steps=9, backend="eager")
    assert np.allclose(sa.final, sb.final, rtol=1e-12, atol=1e-13)


def _engine_run(engine, out_dir=None, iterations=3, lr=0.01, **kw):
    x, y = _data(24)
    xv, yv = _data(9)
    return PersistentTrainer(
        _net(seed=6),
        (x, y),
        nn.functional.mse_loss,
        _sgd(lr),
        iterations=iterations,
        lam=0.4,
        eval_data={"val": (xv, yv)},
        steps=30,
        batch_size=None,
        record_every_steps=10,
        record_every_epochs=None,
        out_dir=out_dir,
        engine=engine,
        **({"backend": "eager"} if engine == "batched" else {}),
        **kw,
    ).fit()


@pytest.mark.parametrize("mode", ["full", "partial"])
def test_loop_and_batched_engines_record_the_same_trajectories(mode):
    loop = _engine_run("loop", mode=mode, depth_factor=mode == "partial", seed=3)
    fast = _engine_run("batched", mode=mode, depth_factor=mode == "partial", seed=3)
    assert [r.layer for r in fast.results_] == [r.layer for r in loop.results_]
    assert fast.depth_factor_ == pytest.approx(loop.depth_factor_, rel=1e-10)
    for a, b in zip(loop.results_, fast.results_):
        ta, tb = a.trajectory, b.trajectory
        assert list(ta.steps) == list(tb.steps) == [0, 10, 20, 30]
        assert np.array_equal(ta.epochs, tb.epochs)
        assert [ta.tags(i) for i in range(len(ta))] == [tb.tags(i) for i in range(len(tb))]
        assert torch.allclose(ta.vectors(), tb.vectors(), rtol=1e-9, atol=1e-11)
        # the batch loss of a recorded step: the loss (with the penalty) that step started from
        assert tb[1].metrics["batch_loss"] == pytest.approx(ta[1].metrics["batch_loss"], rel=1e-9)
        assert b.metrics["val_loss"] == pytest.approx(a.metrics["val_loss"], rel=1e-9)
        assert a.history is None and b.history["steps"][-1] == 30
    assert (fast.results_[1].final - fast.results_[0].final).abs().max() > 1e-3  # the penalty acted
    assert fast.champion_ == loop.champion_


def test_batched_engine_resume_after_interruption_equals_uninterrupted(tmp_path):
    full = _engine_run("batched", tmp_path / "a", iterations=4, mode="partial", depth_factor=True)
    _engine_run("batched", tmp_path / "b", iterations=2, mode="partial", depth_factor=True)
    (tmp_path / "b" / "iteration_002").mkdir()  # an iteration left half-written
    resumed = _engine_run("batched", tmp_path / "b", iterations=4, mode="partial", depth_factor=True)
    for a, b in zip(full.results_, resumed.results_):
        assert torch.equal(a.final, b.final) and torch.equal(a.trajectory.vectors(), b.trajectory.vectors())
        assert a.metrics == b.metrics and a.layer == b.layer and a.history["loss"] == b.history["loss"]
    assert full.depth_factor_ == resumed.depth_factor_ > 0
    with pytest.raises(ValueError, match="other settings"):  # the engine's settings are part of the fingerprint
        _engine_run("batched", tmp_path / "b", iterations=4, mode="partial", depth_factor=True, lr=0.02)


def test_layer_draw_is_pure():
    names = ["fc1", "fc2", "fc3"]
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    draws = [draw_layer(names, i, mode="partial", seed=5) for i in range(40)]
    assert torch.equal(torch.get_rng_state(), torch_state)  # no global random state consumed
    assert all(a == b for a, b in zip(np.random.get_state()[1], np_state[1]))
    assert draws == [draw_layer(names, i, mode="partial", seed=5) for i in range(40)]  # same inputs, same output
    assert draws[7] == draw_layer(names, 7, mode="partial", seed=5)  # independent of the iterations before
    assert draws[0] is None and set(draws[1:]) == set(names)  # the plain iteration penalizes no single layer
    assert draws != [draw_layer(names, i, mode="partial", seed=6) for i in range(40)]
    assert draw_layer(names, 3, mode="full", seed=5) is None
    assert draw_layer(names, 3, mode="partial", layer="fc2") == "fc2"
    pt = _engine_run("loop", mode="partial", seed=5, iterations=1)
    assert [pt.layer_for(i) for i in range(40)] == draws  # the trainer's draw is this function
    with pytest.raises(ValueError, match="unknown layer"):
        draw_layer(names, 1, mode="partial", layer="fc9")


def test_batched_engine_rejects_what_it_cannot_run():
    x, y = _data(10)
    kw = dict(iterations=2, lam=0.1, eval_data={"val": (x, y)}, steps=5, engine="batched")
    with pytest.raises(ValueError, match="Adam.*engine='loop'"):
        PersistentTrainer(_net(), (x, y), nn.functional.mse_loss, lambda p: torch.optim.Adam(p), **kw)
    with pytest.raises(ValueError, match="mean squared error"):
        PersistentTrainer(_net(), (x, y), nn.functional.l1_loss, _sgd(0.1), **kw)
    with pytest.raises(ValueError, match="full batch"):
        PersistentTrainer(_net(), (x, y), nn.functional.mse_loss, _sgd(0.1), batch_size=4, **kw)
    with pytest.raises(ValueError, match="does not take \\['epochs'\\]"):
        PersistentTrainer(_net(), (x, y), nn.functional.mse_loss, _sgd(0.1), epochs=3, **kw)
    with pytest.raises(ValueError, match="select_by='val_accuracy'.*'train_loss', 'train_penalty', 'val_loss'"):
        PersistentTrainer(_net(), (x, y), nn.functional.mse_loss, _sgd(0.1), **{**kw, "select_by": "val_accuracy"})
    with pytest.raises(ValueError, match="layer='fc2' fixes.*mode='partial'"):  # was ignored: full mode ran
        PersistentTrainer(_net(), (x, y), nn.functional.mse_loss, _sgd(0.1), **{**kw, "layer": "fc2"})
    with pytest.raises(ValueError, match="unknown engine 'gpu'"):
        PersistentTrainer(_net(), (x, y), nn.functional.mse_loss, _sgd(0.1), **{**kw, "engine": "gpu"})
