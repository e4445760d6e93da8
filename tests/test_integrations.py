"""Lightning and Hugging Face runs record what a hand-written loop records at the same steps.

Each library trains a tiny model on CPU for a few steps (no downloads: a small nn.Module, a config-built
BERT); a plain loop with the same optimizer and batches, recording with ``landscape.train.Recorder``,
is the reference. Both are deterministic on CPU, so the snapshots must agree bitwise.
"""

import copy
import importlib
import logging
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from landscape import Trajectory
from landscape.params import parameters_to_vector
from landscape.train import FACTORY_KEY, Recorder


def make_net(width: int = 6) -> nn.Module:
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.Tanh(), nn.Linear(width, 2))


def _assert_same(got, ref, *, batch_loss=False):
    assert got.steps.tolist() == ref.steps.tolist()
    assert got.epochs.tolist() == ref.epochs.tolist()
    assert [s.layout.specs for s in got.segments] == [s.layout.specs for s in ref.segments]
    for a, b in zip(got, ref):
        assert torch.equal(a.vector, b.vector), a.step
        assert a.buffers.keys() == b.buffers.keys() and a.buffers
        for k in a.buffers:
            assert torch.equal(a.buffers[k], b.buffers[k]), (a.step, k)
        if batch_loss and "batch_loss" in b.metrics:
            assert a.metrics["batch_loss"] == b.metrics["batch_loss"], a.step


def _hand_loop(model, batches, *, loss_of, epochs, max_steps=None, lr, accumulate=1, length_known=True, **rec_kw):
    """The reference: a plain loop over fixed batches with SGD, recording through a Recorder.

    With ``accumulate`` k, gradients of k batches (each loss divided by k) make one optimizer step;
    ``length_known=False`` gives the recorder no ``steps_per_epoch`` (a stream of unknown length).
    """
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(batches) // accumulate) if length_known else None
    rec = Recorder(Trajectory(), steps_per_epoch=steps_per_epoch, **rec_kw)
    rec.begin(model)
    model.train()
    step = 0
    for _ in range(epochs):
        for i, batch in enumerate(batches):
            if i % accumulate == 0:
                opt.zero_grad(set_to_none=True)
            loss = loss_of(model, batch)
            (loss / accumulate if accumulate > 1 else loss).backward()
            if (i + 1) % accumulate and i + 1 < len(batches):
                continue
            opt.step()
            step += 1
            rec.step(model, loss=loss)
            if step == max_steps:
                return rec.close(model)
        rec.epoch_end(model)
    return rec.close(model)


# ------------------------------------------------------------------------------------------- Lightning
def RecordTrajectoryLightning(**kw):  # noqa: N802 - the callback class, imported late
    from landscape.integrations.lightning import RecordTrajectory

    return RecordTrajectory(**kw)


def _lightning():
    pl = pytest.importorskip("lightning.pytorch")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return pl


def _lit_module(pl, net, lr):
    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    return Lit()


def _mse(m, b):
    return nn.functional.mse_loss(m(b[0]), b[1])


def _data20():
    """20 regression samples ``(X (20, 3), y (20, 2))`` and the same cut into 4 batches of 5."""
    g = torch.Generator().manual_seed(1)
    data = torch.randn(20, 3, generator=g), torch.randn(20, 2, generator=g)
    return data, [(data[0][i : i + 5], data[1][i : i + 5]) for i in range(0, 20, 5)]


def _fit(pl, module, loader, cb, *, tmp_path, **options):
    """Fit ``module`` with a quiet one-device CPU Lightning trainer carrying the callback ``cb``."""
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        default_root_dir=tmp_path,
        **options,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no workers", "no validation loop": irrelevant here
        trainer.fit(module, loader)


def _lightning_run(pl, net, data, *, tmp_path, lr, max_epochs, max_steps=-1, **cb_kw):
    cb = RecordTrajectoryLightning(**cb_kw)
    loader = DataLoader(TensorDataset(*data), batch_size=5, shuffle=False)
    module = _lit_module(pl, copy.deepcopy(net), lr)
    _fit(pl, module, loader, cb, tmp_path=tmp_path, max_epochs=max_epochs, max_steps=max_steps, num_sanity_val_steps=0)
    return cb


@pytest.mark.parametrize(
    "every_steps,every_epochs,max_epochs,max_steps",
    [(2, 1, 3, -1), (3, None, 3, 7), (None, 1, 2, -1)],
)
def test_lightning_records_the_hand_written_loop(tmp_path, every_steps, every_epochs, max_epochs, max_steps):
    pl = _lightning()
    torch.manual_seed(0)
    net = make_net()
    data, batches = _data20()
    sched = dict(every_steps=every_steps, every_epochs=every_epochs)
    _lightning_run(
        pl,
        net,
        data,
        tmp_path=tmp_path,
        lr=0.05,
        max_epochs=max_epochs,
        max_steps=max_steps,
        trajectory=tmp_path / "run",
        module="net",
        factory=make_net,
        meta={"seed": 0},
        **sched,
    )
    ref = _hand_loop(
        net,
        batches,
        loss_of=_mse,
        epochs=max_epochs,
        max_steps=max_steps if max_steps > 0 else None,
        lr=0.05,
        **sched,
    )
    got = Trajectory.open(tmp_path / "run")  # the callback closed the store it opened
    assert len(ref) >= 3
    _assert_same(got, ref, batch_loss=True)
    assert got.meta == {"seed": 0, FACTORY_KEY: {"target": f"{__name__}:make_net", "kwargs": {}}}
    if every_epochs:  # epoch snapshots carry what the module logged
        assert "train_loss" in got[int(got.steps.tolist().index(4))].metrics


class _Stream(torch.utils.data.IterableDataset):
    """Batches of unknown length (no __len__): epochs end where the stream does."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize(
    "stream,accumulate,every_steps,steps,epochs",
    [
        (False, 2, 1, [0, 1, 2, 3, 4], [0.0, 0.5, 1.0, 1.5, 2.0]),  # 4 batches an epoch, 2 optimizer steps
        (True, 1, 3, [0, 3, 4, 6, 8], [0.0, 0.0, 1.0, 1.0, 2.0]),  # no steps_per_epoch: the length is unknown
    ],
    ids=["gradient-accumulation", "iterable-of-unknown-length"],
)
def test_lightning_epochs_of_another_length_record_the_hand_written_loop(
    tmp_path, stream, accumulate, every_steps, steps, epochs
):
    pl = _lightning()
    torch.manual_seed(0)
    net = make_net()
    data, batches = _data20()
    cb = RecordTrajectoryLightning(every_steps=every_steps, every_epochs=1, module="net")
    loader = DataLoader(_Stream(batches), batch_size=None) if stream else DataLoader(TensorDataset(*data), batch_size=5)
    module = _lit_module(pl, copy.deepcopy(net), 0.05)
    _fit(pl, module, loader, cb, tmp_path=tmp_path, max_epochs=2, accumulate_grad_batches=accumulate)
    sched = dict(every_steps=every_steps, every_epochs=1)
    ref = _hand_loop(
        net, batches, loss_of=_mse, epochs=2, lr=0.05, accumulate=accumulate, length_known=not stream, **sched
    )
    assert ref.steps.tolist() == steps
    assert ref.epochs.tolist() == epochs
    _assert_same(cb.trajectory, ref, batch_loss=accumulate == 1)  # accumulated: the two log different batch losses


@pytest.mark.parametrize("every_steps,fail_at,steps", [(1, 3, [0, 1, 2, 3]), (None, 6, [0, 4, 6])])
def test_lightning_failure_records_the_point_it_stopped_at_and_why_and_closes_the_store(
    tmp_path, every_steps, fail_at, steps
):
    """on_exception closed the store without a final point or a word of why, where the package's Trainer records
    both: the error event on the final snapshot, or in the run metadata's late_events when that point was
    recorded already (the step whose training_step failed changed nothing)."""
    pl = _lightning()
    torch.manual_seed(0)
    lit = _lit_module(pl, make_net(), 0.05)
    step = lit.training_step

    def failing(batch, batch_idx):
        if lit.global_step == fail_at:
            raise FloatingPointError("diverged")
        return step(batch, batch_idx)

    lit.training_step = failing
    cb = RecordTrajectoryLightning(trajectory=tmp_path / "run", every_steps=every_steps)
    loader = DataLoader(TensorDataset(torch.randn(20, 3), torch.randn(20, 2)), batch_size=5)
    with pytest.raises(FloatingPointError, match="diverged"):
        _fit(pl, lit, loader, cb, tmp_path=tmp_path, max_epochs=2)
    with Trajectory.open(tmp_path / "run", "a") as traj:  # the writer's lock was released
        assert traj.steps.tolist() == steps  # the point it stopped at, once
        assert torch.equal(traj[len(traj) - 1].vector, parameters_to_vector(lit))
        late = traj.meta.get("late_events", [])
        assert bool(late) == (every_steps == 1)  # recorded by steps already: the reason joins the run metadata
        events = traj.tags(len(traj) - 1).get("events", []) + late
        assert events == [{"step": fail_at, "event": "error", "error": "FloatingPointError", "message": "diverged"}]


def test_lightning_records_the_whole_module_by_default(tmp_path):
    pl = _lightning()
    torch.manual_seed(0)
    net = make_net()
    data = torch.randn(10, 3), torch.randn(10, 2)
    cb = _lightning_run(pl, net, data, tmp_path=tmp_path, lr=0.05, max_epochs=1, every_steps=1)
    traj = cb.trajectory
    assert traj.steps.tolist() == [0, 1, 2]
    assert traj.layout.specs[0].name == "net.0.weight"  # the LightningModule's own names
    with pytest.raises(AttributeError, match="children are"):
        _lightning_run(pl, net, data, tmp_path=tmp_path, lr=0.05, max_epochs=1, module="backbone")


# ------------------------------------------------------------------------------------------ Hugging Face
class _Tokens(Dataset):
    def __init__(self, n=12, length=6, vocab=30, seed=2):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def _tiny_bert():
    tf = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    cfg = tf.BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    torch.manual_seed(0)
    return tf, tf.BertForSequenceClassification(cfg)


def _hf_trainer(tf, model, ds, cb, tmp_path, trainer_class=None, eval_dataset=None, **options):
    """A quiet CPU ``transformers.Trainer`` with SGD (lr 0.1, constant), batches of 4 in order, logging every step."""
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    tf.logging.set_verbosity_error()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw = dict(save_strategy="no", per_device_train_batch_size=4, logging_strategy="steps", logging_steps=1)
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        seed=0,
        **{**kw, **options},
    )
    trainer = (trainer_class or tf.Trainer)(
        model=model,
        args=args,
        train_dataset=ds,
        eval_dataset=eval_dataset,
        callbacks=[cb],
        optimizers=(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)),
    )
    trainer.remove_callback(tf.trainer_callback.PrinterCallback)  # disable_tqdm=True prints every log instead
    return trainer


@pytest.mark.parametrize("every_steps,every_epochs,epochs,max_steps", [(2, 1, 2, -1), (4, None, 3, 7)])
def test_huggingface_trainer_records_the_hand_written_loop(tmp_path, every_steps, every_epochs, epochs, max_steps):
    tf, model = _tiny_bert()
    if "train_sampling_strategy" not in tf.TrainingArguments.__dataclass_fields__:
        pytest.skip("this transformers has no sequential sampling option (train_sampling_strategy)")
    from landscape.integrations.huggingface import RecordTrajectory

    ds = _Tokens()
    sched = dict(every_steps=every_steps, every_epochs=every_epochs)
    cb = RecordTrajectory(**sched)
    trainer = _hf_trainer(tf, copy.deepcopy(model), ds, cb, tmp_path, num_train_epochs=epochs, max_steps=max_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    batches = [{k: torch.stack([ds[i][k] for i in range(j, j + 4)]) for k in ds[0]} for j in range(0, len(ds), 4)]
    ref = _hand_loop(
        model,
        batches,
        loss_of=lambda m, b: m(**b).loss,
        epochs=epochs,
        max_steps=max_steps if max_steps > 0 else None,
        lr=0.1,
        **sched,
    )
    got = cb.trajectory
    assert len(ref) >= 3
    _assert_same(got, ref)
    last = got[len(got) - 1]
    assert "loss" in last.metrics and "learning_rate" in last.metrics  # what the trainer logged at that step


def _hf_ready():
    tf, model = _tiny_bert()
    if "train_sampling_strategy" not in tf.TrainingArguments.__dataclass_fields__:
        pytest.skip("this transformers has no sequential sampling option (train_sampling_strategy)")
    from landscape.integrations.huggingface import RecordTrajectory

    return tf, model, RecordTrajectory


def _logged_at(trainer, step):
    """What the trainer logged at ``step`` (its log history, merged), as the numbers a snapshot keeps."""
    out = {}
    for entry in trainer.state.log_history:
        if entry.get("step") == step:
            out.update({k: float(v) for k, v in entry.items() if k not in ("epoch", "step")})
    return out


def test_huggingface_epoch_snapshots_carry_what_was_logged_and_evaluated_at_the_epoch_end(tmp_path):
    """Trainer logs (logging_strategy="epoch") and evaluates (eval_strategy="epoch") after on_epoch_end, so the
    epoch snapshots lacked loss and eval_loss: the trainer's own log history at their step is the reference."""
    tf, model, RecordTrajectory = _hf_ready()
    cb = RecordTrajectory()  # the default schedule: every epoch
    evaluate = dict(eval_strategy="epoch", per_device_eval_batch_size=4, eval_dataset=_Tokens(n=8, seed=3))
    trainer = _hf_trainer(tf, model, _Tokens(), cb, tmp_path, num_train_epochs=3, logging_strategy="epoch", **evaluate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    traj = cb.trajectory
    assert traj.steps.tolist() == [0, 3, 6, 9] and traj.epochs.tolist() == [0.0, 1.0, 2.0, 3.0]
    for i in (1, 2, 3):
        want = _logged_at(trainer, int(traj.steps[i]))
        assert {"loss", "eval_loss"} <= want.keys()
        assert traj[i].metrics == pytest.approx(want, rel=1e-12)


def _failing_trainer_class(tf, fail_at, where):
    class Failing(tf.Trainer):
        """Raises once, when ``fail_at`` steps are done: in the next step's loss, or evaluating that epoch's end."""

        failed = False

        def _fail(self, here):
            if where == here and self.state.global_step == fail_at and not self.failed:
                self.failed = True
                raise FloatingPointError("diverged")

        def compute_loss(self, model, inputs, *a, **k):
            self._fail("step")
            return super().compute_loss(model, inputs, *a, **k)

        def evaluate(self, *a, **k):
            self._fail("evaluate")
            return super().evaluate(*a, **k)

    return Failing


@pytest.mark.parametrize(
    "where,fail_at,steps",
    [("step", 5, [0, 2, 3, 4, 5]), ("step", 4, [0, 2, 3, 4]), ("evaluate", 3, [0, 2, 3])],
)
def test_huggingface_failure_in_the_callbacks_with_block_records_why_and_releases_the_store(
    tmp_path, where, fail_at, steps
):
    """Trainer calls no callback on an exception: a failed run left the store without the point it stopped at, a
    word of why, and locked. Used as a context manager, the callback ends it as the package's Trainer ends one; an
    epoch end whose snapshot waited for its evaluation is written first."""
    tf, model, RecordTrajectory = _hf_ready()
    evaluate = dict(eval_strategy="epoch", per_device_eval_batch_size=4, eval_dataset=_Tokens(n=8, seed=3))
    failing = _failing_trainer_class(tf, fail_at, where)
    with pytest.raises(FloatingPointError, match="diverged"):
        with RecordTrajectory(tmp_path / "run", every_steps=2) as cb:
            trainer = _hf_trainer(
                tf,
                model,
                _Tokens(),
                cb,
                tmp_path,
                failing,
                num_train_epochs=3,
                **(evaluate if where == "evaluate" else {}),
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer.train()
    assert trainer.state.global_step == fail_at
    with Trajectory.open(tmp_path / "run", "a") as traj:  # the writer's lock was released
        assert traj.steps.tolist() == steps
        assert traj.epochs.tolist()[2] == 1.0  # the epoch end (step 3) is the epoch snapshot
        assert torch.equal(traj[len(traj) - 1].vector, parameters_to_vector(model))  # the point it stopped at
        late = traj.meta.get("late_events", [])
        assert bool(late) == (fail_at != 5)  # step 4 (by steps) or 3 (the epoch) was recorded already
        events = traj.tags(len(traj) - 1).get("events", []) + late
        assert events == [{"step": fail_at, "event": "error", "error": "FloatingPointError", "message": "diverged"}]


def test_huggingface_run_failed_without_the_with_block_resumes_from_its_checkpoint_into_the_same_store(tmp_path):
    """Without the context manager no hook hears of the failure: the store stays readable, but the callback kept it
    open and locked, so resuming the run (train(resume_from_checkpoint=True), the same callback) failed with "already
    open for appending by another writer". The callback releases the store of a run that never ended when it starts
    the next; the resumed run continues the trajectory as an uninterrupted run's, bitwise."""
    tf, model, RecordTrajectory = _hf_ready()
    opts = dict(num_train_epochs=3, save_strategy="steps", save_steps=2)
    ref = RecordTrajectory(tmp_path / "ref", every_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hf_trainer(tf, copy.deepcopy(model), _Tokens(), ref, tmp_path / "a", **opts).train()
    cb = RecordTrajectory(tmp_path / "run", every_steps=2, exist_ok=True)  # exist_ok: a resumed run appends
    trainer = _hf_trainer(tf, model, _Tokens(), cb, tmp_path / "b", _failing_trainer_class(tf, 5, "step"), **opts)
    with pytest.raises(FloatingPointError, match="diverged"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert Trajectory.open(tmp_path / "run").steps.tolist() == [0, 2, 3, 4]  # readable meanwhile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=True)  # from step 4's checkpoint
    got, want = Trajectory.open(tmp_path / "run"), ref.trajectory
    assert want.steps.tolist() == [0, 2, 3, 4, 6, 8, 9]
    _assert_same(got, want)  # step 4, the resumed run's initial point, is not written twice


def test_huggingface_best_model_at_end_is_labelled_as_the_best_checkpoint_and_the_trained_end_is_kept(tmp_path):
    """With load_best_model_at_end the final snapshot held the best checkpoint's weights (step 3) labelled with the
    last step (9) and its logs (the step-9 model's eval_loss), and the trained step-9 weights were never recorded
    under a step schedule. References: the same run without load_best_model_at_end (its final weights, bitwise), the
    snapshot at the best step (the checkpoint's weights, bitwise) and the trainer's log history (the best value)."""
    tf, model, RecordTrajectory = _hf_ready()
    evaluate = dict(eval_strategy="epoch", per_device_eval_batch_size=4, eval_dataset=_Tokens(n=8, seed=3))
    best = dict(save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="eval_loss")

    def run(name, sched, **kw):
        cb = RecordTrajectory(**sched)
        trainer = _hf_trainer(tf, copy.deepcopy(model), _Tokens(), cb, tmp_path / name, num_train_epochs=3, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        return trainer, cb.trajectory

    plain = run("plain", dict(every_steps=1), **evaluate)[1]
    trainer, traj = run("best", dict(every_steps=1), **evaluate, **best)  # every step: the best step's weights too
    state = trainer.state
    assert state.best_global_step == 3  # the eval loss rose after the first epoch on this data
    assert traj.steps.tolist() == [*range(10), 9]
    trained, final = traj[len(traj) - 2], traj[len(traj) - 1]
    assert torch.equal(trained.vector, plain[len(plain) - 1].vector)  # labelled step 9: the trained step-9 weights
    assert traj.tags(len(traj) - 2)["events"][0]["event"] == "last_step"
    assert torch.equal(final.vector, traj[3].vector)  # the best checkpoint's weights (step 3)
    assert torch.equal(final.vector, parameters_to_vector(trainer.model))
    (event,) = traj.tags(len(traj) - 1)["events"]
    assert event["event"] == "best_model_loaded" and event["best_step"] == 3 and event["metric"] == "eval_loss"
    assert event["checkpoint"] == state.best_model_checkpoint
    assert final.metrics == {"eval_loss": pytest.approx(_logged_at(trainer, 3)["eval_loss"], rel=1e-12)}
    # schedules that do not record the last step (by steps) or record it at the epoch end: the same two points
    for name, sched, steps in [
        ("steps", dict(every_steps=4, every_epochs=None), [0, 4, 8, 9, 9]),
        ("epochs", {}, [0, 3, 6, 9, 9]),
    ]:
        got = run(name, sched, **evaluate, **best)[1]
        assert got.steps.tolist() == steps
        assert torch.equal(got[3].vector, trained.vector) and torch.equal(got[4].vector, final.vector)
        assert got.tags(4)["events"][0]["best_step"] == 3


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "module,missing,pip_name",
    [
        ("landscape.integrations.lightning", ("lightning.pytorch", "pytorch_lightning"), "lightning"),
        ("landscape.integrations.huggingface", ("transformers",), "transformers"),
    ],
)
def test_missing_library_is_a_clear_import_error(monkeypatch, module, missing, pip_name):
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    monkeypatch.delitem(sys.modules, module, raising=False)
    how = rf"pip install {pip_name} \(or pip install -e \"\.\[integrations\]\" in the clone of landscape\)"
    with pytest.raises(ImportError, match=how):
        importlib.import_module(module)


def test_bad_options_fail_at_construction():
    pytest.importorskip("lightning.pytorch")
    from landscape.integrations.lightning import RecordTrajectory

    with pytest.raises(ValueError, match="positive integer"):
        RecordTrajectory(every_steps=0)
    with pytest.raises(ValueError, match="package.module:function"):  # FactoryError is a ValueError
        RecordTrajectory(factory="not a reference")
