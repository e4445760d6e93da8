"""The pool of Im, Tao & Branson runs: trained once per setting, cached on disk, shared by every figure."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import FigureResult, figure_function
from figures.im._memo import _library_digest, memoized, tensor_digest
from figures.im._settings import ImSetup, RunSpec
from figures.im._text import WordLSTM, text_splits, tokenize
from landscape.analyze import line
from landscape.data import Splits
from landscape.params import parameters_to_vector
from landscape.train import (
    METHODS,
    Callback,
    EpochEvent,
    StepEvent,
    SwitchSchedule,
    Trainer,
    evaluate_dataset,
    resume,
    trainer_state,
)
from landscape.trajectory import Trajectory, build_once

K = TypeVar("K")  # the keys of a table of runs


class _GradCounter:
    """Cross-entropy that counts its calls under autograd: the gradient evaluations of training."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.n += 1
        return nn.functional.cross_entropy(out, y)

    def state_dict(self) -> dict[str, int]:
        """The count, for a checkpoint of the run (:mod:`landscape.train.checkpoint`)."""
        return {"n": self.n}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue counting from a checkpoint."""
        self.n = int(state["n"])


class _EpochLog(Callback):
    """Per-epoch history: evaluated metrics, distance from the initial weights, gradient evaluations."""

    def __init__(self, counter: _GradCounter, splits: Splits, surface: tuple[Tensor, Tensor]) -> None:
        self.counter = counter
        self.splits = splits
        self.surface = surface
        self.rows: list[dict[str, float]] = []
        self.theta0: Tensor | None = None

    def _row(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        theta = parameters_to_vector(trainer.model).detach().double()
        dist = float((theta - self.theta0).norm()) if self.theta0 is not None else 0.0
        self.rows.append(
            {
                "epoch": epoch,
                "step": trainer.step,
                "grad_evals": self.counter.n,
                "dist_init": dist,
                "surface_loss": self._surface_loss(trainer.model),
                **{k: float(v) for k, v in metrics.items()},
            }
        )

    def _surface_loss(self, model: nn.Module) -> float:
        """Loss on the surface images as the loss surfaces evaluate it: BatchNorm with batch statistics, no dropout.

        A deterministic function of the weights (the eval-mode loss also moves with the running statistics, which
        are re-estimated from the last few minibatches: a 2-3% wobble at losses near 0.01 that no weight change
        causes), so it is what the convergence premise reads. The model is copied: nothing of it changes.
        """
        m = copy.deepcopy(model).eval()
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.train()
        with torch.no_grad():
            x, y = self.surface
            return float(nn.functional.cross_entropy(m(x), y))

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self.theta0 = parameters_to_vector(trainer.model).detach().double().clone()
        metrics = {}
        for name, d in (("trainset", self.splits.train), ("test", self.splits.test)):
            for k, v in evaluate_dataset(trainer.model, d, nn.functional.cross_entropy).items():
                metrics[f"{name}_{k}"] = v
        self._row(trainer, 0, metrics)

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:  # noqa: D102
        self._row(trainer, event.epoch + 1, event.metrics)

    def state_dict(self) -> dict[str, Any]:
        """The rows so far and the initial weights (a checkpoint's; the count is the loss function's)."""
        return {"rows": copy.deepcopy(self.rows), "theta0": self.theta0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint (in place of ``on_train_begin``, which would evaluate row 0 again)."""
        self.rows, self.theta0 = copy.deepcopy(list(state["rows"])), state["theta0"]


class StepDecay(Callback):
    """Halve the learning rate between ``stages`` equal stages of ``total`` steps (cifar.torch's schedule).

    The rate of every parameter group is its own first rate times ``0.5 ** stage``; a group seen for the first time
    (a new optimizer after a switch) takes its current rate as its first, so a switched-to method starts at its own
    rate times the current factor.
    """

    def __init__(self, total: int, stages: int) -> None:
        self.total, self.stages = total, stages

    def _apply(self, trainer: Trainer) -> None:
        stage = min(self.stages - 1, (trainer.step * self.stages) // max(self.total, 1))
        for g in trainer.optimizer.param_groups:
            base = g.setdefault("im_base_lr", g["lr"])
            g["lr"] = base * 0.5**stage

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._apply(trainer)

    def on_step_end(self, trainer: Trainer, event: Any) -> None:  # noqa: D102
        self._apply(trainer)


def _trainer(setup: ImSetup, spec: RunSpec, traj: Trajectory) -> Trainer:
    """The trainer of one run, recording into ``traj`` (initial and final snapshots, plus the switch point)."""
    s = setup.splits()
    counter = _GradCounter()
    xs, ys = s.train
    n = min(setup.surface_size, xs.shape[0])
    log = _EpochLog(counter, s, (xs[:n], ys[:n]))
    hyper = dict(spec.hyper)
    epochs = spec.epochs or setup.epochs
    total = epochs * setup.steps_per_epoch()
    callbacks: list[Callback] = [log]
    if setup.lr_stages > 1:
        callbacks.append(StepDecay(total, setup.lr_stages))
    if spec.then is None:
        optimizer: Any = spec.method
    else:
        second = (spec.then, dict(spec.then_hyper)) if spec.then_hyper else spec.then
        phases = [(0, (spec.method, hyper)), (float(spec.switch_at), second)]  # type: ignore[arg-type]

        def optimizer(params: Any) -> SwitchSchedule:
            return SwitchSchedule(params, phases, total_steps=total)

        hyper = {}
    return Trainer(
        setup.model(spec),
        s.train,
        counter,
        optimizer,
        optimizer_kwargs=hyper,
        epochs=epochs,
        batch_size=setup.batch_size,
        seed=setup.seed,
        shuffle_seed=setup.seed,
        eval_data={"trainset": s.train, "test": s.test},
        trajectory=traj,
        record_every_epochs=None,
        tags={"run": spec.key()},
        callbacks=callbacks,
        on_nonfinite="stop",
    )


Kept = dict[int, tuple[dict[str, Any], float]]
"""A run's states kept at switch steps: ``{step: (trainer_state, the step's training loss)}``."""


def _continue_switch(tr: Trainer, state: Mapping[str, Any], loss: float) -> None:
    """Bring a switched run's new trainer to where it stands after its switch, from the plain run's state there.

    Until the switch the switched run computes what the plain run of its first method computes (the same
    optimizer, hyperparameters, rate schedule, minibatches and dropout masks; the checkpoint tests and the gallery's
    histories show it bitwise), so at the switch step ``k`` (an epoch end) it is the plain run's checkpoint there but
    for what the switch changes: the schedule's second optimizer, built fresh as the switch builds it (its rate set
    by :class:`StepDecay` when the run resumes, as after the switching step), and the run's own snapshots, written
    by its recorder as training would write them (the initial point, and the switch point tagged with the event).
    """
    rec, sched = tr.callbacks[-1], tr.optimizer
    assert isinstance(sched, SwitchSchedule) and len(sched.switch_steps) == 2
    k = sched.switch_steps[1]
    rec.on_train_begin(tr)  # the initial snapshot (the trainer is at its initial point)
    first = sched.name
    resume(tr, state, optimizer=False)  # weights, buffers, generators, counters, history at step k
    params = [p for p in tr.model.parameters() if p.requires_grad]
    fresh = SwitchSchedule(params, [(0, sched.phases[1].optimizer)]).state_dict()["optimizer"]
    sched.load_state_dict({"phase": 1, "steps": k, "switch_steps": [0, k], "events": [], "optimizer": fresh})
    event = {"event": "switch", "from": first, "to": sched.name, "step": k, "phase": 1}
    spe = tr.batches_per_epoch or 1
    rec.on_step_end(tr, StepEvent(step=k, epoch=k // spe - 1, batch=spe - 1, loss=loss, epoch_end=True, events=[event]))


def _train(
    setup: ImSetup,
    spec: RunSpec,
    traj: Trajectory,
    *,
    keep: Collection[int] = (),
    stop: int | None = None,
    start: tuple[Mapping[str, Any], float] | None = None,
) -> Kept:
    """Train one run into ``traj`` and store its history (``spec``, ``history``, ``epochs``, ``fit_time_s``).

    Args:
        setup: The settings.
        spec: The run.
        traj: Its store.
        keep: Epoch-end steps to keep the trainer's state at (the switch steps of runs switched from this one).
        stop: End after this step (a run trained only for the states it keeps).
        start: A switched run's first method's state at the switch step and that step's loss (``keep`` of the
            plain run): the run trains only what follows (:func:`_continue_switch`), with the same result.

    Returns:
        The states kept, by step (a step that was not reached, or whose loss was not finite, is missing).
    """
    tr = _trainer(setup, spec, traj)
    if start is not None:
        _continue_switch(tr, *start)
    kept: Kept = {}
    t0 = time.perf_counter()
    for ev in tr:
        if ev.step in keep and ev.epoch_end and math.isfinite(ev.loss):
            kept[ev.step] = (trainer_state(tr), ev.loss)
        if stop is not None and ev.step >= stop:
            break
    fit_time = time.perf_counter() - t0  # a switched run continued from its plain run's state: the steps after
    log = tr.callbacks[0]
    assert isinstance(log, _EpochLog)
    resumed = None if start is None else int(start[0]["step"])
    traj.update_meta(
        {
            "spec": dataclasses.asdict(spec),
            "history": log.rows,
            "epochs": spec.epochs or setup.epochs,
            "fit_time_s": fit_time,
            "resumed_at_step": resumed,
        }
    )
    return kept


# The code whose change must retrain the cached runs (part of ImSetup.key()).
TRAINING_CODE = hashlib.sha256(
    "".join(
        inspect.getsource(o)
        for o in (
            ImSetup.splits,
            ImSetup.model,
            RunSpec,
            _GradCounter,
            _EpochLog,
            StepDecay,
            _trainer,
            _continue_switch,
            _train,
            WordLSTM,
            text_splits,
            tokenize,
        )
    ).encode()
).hexdigest()


def _first_method(spec: RunSpec) -> RunSpec:
    """The plain run of a switched run's first method: the same run up to the switch."""
    return dataclasses.replace(spec, then=None, switch_at=None, then_hyper=())


@dataclasses.dataclass
class Run:
    """A finished run: its spec, label, stored trajectory and per-epoch history.

    Attributes:
        spec: What was trained.
        label: Short name (:meth:`ImSetup.label`).
        traj: Snapshots: 0 = initial weights, -1 = final weights (a switch run also holds the switch point).
        history: One dict per epoch (epoch 0 = before training): ``epoch``, ``step``, ``grad_evals``,
            ``dist_init``, ``train_loss`` (running, train mode), ``trainset_loss``/``trainset_accuracy`` and
            ``test_loss``/``test_accuracy`` (eval mode).
        factory: Builds a fresh network of the run's architecture.
    """

    spec: RunSpec
    label: str
    traj: Trajectory
    history: list[dict[str, float]]
    factory: Callable[[], nn.Module]

    @property
    def init(self) -> Tensor:
        """Initial weights, shape ``(D,)``."""
        return self.traj.vectors([0])[0]

    @property
    def final(self) -> Tensor:
        """Final weights, shape ``(D,)``."""
        return self.traj.vectors([-1])[0]

    def model(self, i: int = -1) -> nn.Module:
        """The network at snapshot ``i`` (parameters and BatchNorm buffers)."""
        return self.traj.model_at(self.factory, i)

    def curve(self, name: str) -> np.ndarray:
        """A history column over epochs 0..E, shape ``(E + 1,)`` (NaN where missing)."""
        return np.array([r.get(name, math.nan) for r in self.history], dtype=np.float64)

    def last(self, name: str) -> float:
        """The last epoch's value of a history column."""
        return float(self.history[-1].get(name, math.nan))

    @property
    def completed(self) -> bool:
        """Whether training ran all epochs (a non-finite loss stops it early)."""
        return self.history[-1]["epoch"] >= self.traj.meta["epochs"]

    @property
    def fit_time(self) -> float:
        """Training time of the run in seconds.

        A switched run continued from its plain run's state counts the steps after ``traj.meta["resumed_at_step"]``.
        """
        return float(self.traj.meta["fit_time_s"])


_LINES: dict[str, np.ndarray] = {}
"""This process's memo of :meth:`ImRuns.line_losses`, by its :func:`tensor_digest`."""


def _save_line(z: np.ndarray, tmp: Path) -> None:
    with open(tmp, "wb") as fh:  # a file object: np.save would add ".npy" to the temporary name
        np.save(fh, z, allow_pickle=False)


def _line_reader(n: int) -> Callable[[Path], np.ndarray]:
    """Reads a memoized line of ``n`` positions; another shape or dtype is a damaged file (ValueError)."""

    def load(file: Path) -> np.ndarray:
        z = np.load(file, allow_pickle=False)
        if z.shape != (n,) or z.dtype != np.float64:
            raise ValueError(f"{file}: a line of shape {z.shape} and dtype {z.dtype}, expected ({n},) float64")
        return z

    return load


class ImRuns:
    """The pool of runs of one :class:`ImSetup`, trained on first use and cached on disk.

    A switched run (``RunSpec.then``) whose switch is an epoch end does not train its first part again: within one
    :meth:`many` call the plain run of its first method keeps its trainer's state at the switch, and the switched run
    continues from it (:func:`landscape.train.checkpoint.resume`), with the stored results of training it whole.

    Args:
        setup: The settings.
        cache: Root of the on-disk cache (runs go to ``cache / setup.key()``); ``None`` keeps them in memory.
        progress: Show a tqdm bar over the runs being trained.

    Example:
        >>> runs = ImRuns(ImSetup(train_size=64, vgg_cfg=(2, "M"), vgg_hidden=4, epochs=2))
        >>> run = runs.get(RunSpec("adam"))
        >>> [r["epoch"] for r in run.history], run.init.shape == run.final.shape
        ([0, 1, 2], True)
    """

    def __init__(self, setup: ImSetup, cache: Path | str | None = None, progress: bool = False) -> None:
        self.setup = setup
        self.root = None if cache is None else Path(cache) / setup.key()
        self.progress = progress
        self._memo: dict[str, Run] = {}
        # While many() trains: the switch steps to keep each plain run's state at ({plain key: steps}), and the
        # states kept ({(plain key, step): (state, loss)}), from which the switched runs continue (_train's start).
        self._keep: dict[str, set[int]] = {}
        self._kept: dict[tuple[str, int], tuple[dict[str, Any], float]] = {}

    def get(self, spec: RunSpec) -> Run:
        """The finished run of ``spec`` (trained now if not cached)."""
        return self.many([spec])[0]

    def many(self, specs: Sequence[RunSpec]) -> list[Run]:
        """The finished runs of ``specs``, in order (missing ones trained now, with a progress bar)."""
        todo = self._plan([s for s in dict.fromkeys(specs) if s.key() not in self._memo])
        bar = tqdm(total=len(todo), desc="im runs", unit="run", disable=not self.progress or not todo, leave=False)
        # First the runs no other process is training (so two figures asking for one pool train it in parallel,
        # not in lockstep), then wait for the rest.
        waiting = []
        try:
            for spec in todo:
                run = self._load_or_train(spec, wait=False)
                if run is None:
                    waiting.append(spec)
                else:
                    self._memo[spec.key()] = run
                    bar.update()
            for spec in waiting:
                self._memo[spec.key()] = self._load_or_train(spec)  # type: ignore[assignment]
                bar.update()
        finally:
            self._keep, self._kept = {}, {}  # the kept states serve this call's switched runs only
            bar.close()
        return [self._memo[s.key()] for s in specs]

    def switch_step(self, spec: RunSpec) -> int | None:
        """The step a switched run switches at, when it is an epoch end inside training (else ``None``).

        Only such a run continues from its plain run's state (:func:`landscape.train.checkpoint.resume` takes
        checkpoints at epoch ends); a switch elsewhere is trained whole, as before.
        """
        if spec.then is None or spec.switch_at is None:
            return None
        spe = self.setup.steps_per_epoch()
        total = (spec.epochs or self.setup.epochs) * spe
        try:  # the step as the run's SwitchSchedule resolves the fraction
            k = SwitchSchedule([torch.zeros(1)], [(0, "sgd"), (float(spec.switch_at), "sgd")], total).switch_steps[1]
        except ValueError:  # a switch at 0: no first phase to share
            return None
        return k if 0 < k < total and k % spe == 0 else None

    def _plan(self, todo: list[RunSpec]) -> list[RunSpec]:
        """Note the switch steps of the switched runs in ``todo``; the plain runs they switch from go first."""
        for spec in todo:
            k = self.switch_step(spec)
            if k is not None:
                self._keep.setdefault(_first_method(spec).key(), set()).add(k)
        first = [s for s in todo if s.then is None and s.key() in self._keep]
        return first + [s for s in todo if s.then is not None or s.key() not in self._keep]

    def _train(self, spec: RunSpec, traj: Trajectory) -> None:
        """Train ``spec`` into ``traj``, sharing what a switched run and its plain run compute alike.

        A plain run keeps its state at the switch steps of the switched runs :meth:`many` is training; a switched run
        continues from that state, after training its first method up to the switch when none is kept (the plain run
        was trained before, or by another process). Either way its stored results are those of training it whole.
        """
        key, k = spec.key(), self.switch_step(spec)
        if k is None:
            steps = self._keep.get(key, set())
            for step, kept in _train(self.setup, spec, traj, keep=steps).items():
                self._kept[key, step] = kept
            return
        plain = _first_method(spec)
        pk = plain.key()
        if (pk, k) not in self._kept:  # the plain run was trained before (or by another process): up to the switch
            steps = self._keep.get(pk, set()) | {k}
            for step, kept in _train(self.setup, plain, Trajectory(), keep=steps, stop=max(steps)).items():
                self._kept[pk, step] = kept
        _train(self.setup, spec, traj, start=self._kept.get((pk, k)))

    def table(self, specs: dict[Any, RunSpec]) -> dict[Any, Run]:
        """``{key: run}`` for ``{key: spec}`` (one :meth:`many` call, so concurrent figures share the training)."""
        return dict(zip(specs, self.many(list(specs.values()))))

    def _load_or_train(self, spec: RunSpec, wait: bool = True) -> Run | None:
        """The run, from the cache or trained now; ``None`` if ``wait`` is off and another process trains it."""
        if self.root is None:
            traj = Trajectory()
            self._train(spec, traj)
        else:
            final = self.root / spec.key()

            def build(tmp: Path) -> None:  # trained whole into a temporary directory, then renamed: never half there
                with Trajectory.create(tmp, durable=False) as t:
                    self._train(spec, t)

            if build_once(final, build, wait=wait) is None:
                return None  # another process is training it
            traj = Trajectory.open(final)
        meta = traj.meta
        return Run(spec, self.setup.label(spec), traj, list(meta["history"]), lambda: self.setup.model(spec))

    # evaluation data ---------------------------------------------------------------------------
    def surface_data(self) -> tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]:
        """Training images the loss surfaces are evaluated on (batches of at most 1,000 at full scale)."""
        x, y = self.setup.splits().train
        n = min(self.setup.surface_size, x.shape[0])
        x, y = x[:n], y[:n]
        if n <= 1024:
            return (x, y)
        return [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, n, 1000)]

    def test_data(self) -> tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]:
        """Test images (functional distance, accuracy), in batches of at most 1,000 when larger."""
        x, y = self.setup.splits().test
        if x.shape[0] <= 1024:
            return (x, y)
        return [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, x.shape[0], 1000)]

    def method_grid(self, reps: int, methods: Sequence[str] = METHODS) -> dict[tuple[str, int], Run]:
        """``{(method, init): run}`` for ``methods`` (default all :data:`landscape.train.METHODS`), ``reps`` inits."""
        return self.table({(m, k): RunSpec(m, init=k) for k in range(reps) for m in methods})

    def loss_kit(self) -> tuple[nn.Module, dict[str, Any], tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]]:
        """What a loss-surface figure evaluates with: a template model, the loss-only options and the data."""
        return self.setup.model(RunSpec()), self.loss_kw(RunSpec()), self.surface_data()

    def line_losses(self, template: nn.Module, a: Tensor, b: Tensor, alphas: np.ndarray, **kw: Any) -> np.ndarray:
        """``line(template, a, b, self.surface_data(), alphas=alphas, **kw).metrics["loss"]``, memoized.

        Several figures evaluate the same segment (Fig. 8's final -> final lines with BatchNorm include Figs. 5-6's
        three pairs; Fig. 13's switches are Fig. 7's; Figs. 2-3 and Table 1 share edges). The memo is keyed by a
        digest of everything the numbers depend on (:func:`tensor_digest` of the template's architecture and state,
        both endpoints, the data, the positions and the options, and of the ``landscape`` sources), kept in this
        process and, for a pool cached on disk, in ``_lines/`` under it (:func:`landscape.trajectory.cached_file`),
        so a value is computed once per gallery and every figure reads the float array the computation returned.

        Args:
            template: The architecture (its buffers are used where ``bn_mode`` reads them).
            a: Start ``(D,)`` (alpha 0).
            b: End ``(D,)`` (alpha 1).
            alphas: ``(n,)`` positions.
            **kw: Options of :func:`landscape.analyze.line` (``progress`` is only display and not part of the key).

        Returns:
            The loss at each position, ``(n,)`` float64.
        """
        data = self.surface_data()
        options = {k: v for k, v in kw.items() if k != "progress"}
        alphas = np.ascontiguousarray(alphas, dtype=np.float64)
        key = tensor_digest(_library_digest(), template, a, b, data, alphas, options=options)

        def compute() -> np.ndarray:
            return np.asarray(line(template, a, b, data, alphas=alphas, **kw).metrics["loss"], dtype=np.float64)

        file = None if self.root is None else self.root / "_lines" / f"{key}.npy"
        return memoized(_LINES, key, compute, file, _save_line, _line_reader(len(alphas))).copy()

    def init_final_losses(self, runs: Mapping[K, Run], alphas: np.ndarray, desc: str) -> dict[K, np.ndarray]:
        """Training loss on the line from each run's initial to its final weights (Eq. 2), on :meth:`surface_data`.

        Args:
            runs: ``{key: run}``, of any architectures.
            alphas: ``(n,)`` positions on the line (0: the initial weights, 1: the final ones).
            desc: Label of the progress bar.

        Returns:
            ``{key: loss (n,)}``, in the order of ``runs``.
        """
        return {
            key: self.line_losses(r.factory(), r.init, r.final, alphas, **self.loss_kw(r.spec))
            for key, r in tqdm(runs.items(), desc=desc, disable=not self.progress, leave=False)
        }

    @classmethod
    def loss_kw(cls, spec: RunSpec) -> dict[str, Any]:
        """Evaluation options of a run's architecture for the training loss alone (:meth:`eval_kw`)."""
        return {**cls.eval_kw(spec), "metrics": ("loss",)}

    @staticmethod
    def eval_kw(spec: RunSpec) -> dict[str, Any]:
        """Evaluation options of a run's architecture: batch statistics for BatchNorm nets."""
        return {"bn_mode": "train"} if spec.batchnorm else {}


def im_figure(
    body: Callable[..., FigureResult] | None = None, *, settings: Callable[..., ImSetup] | None = None
) -> Any:
    """Give an Im figure the one signature of the gallery's figure functions (use as ``@im_figure``).

    ``body(runs, **options)`` computes and draws the figure from the pool of runs of one setting (its
    ``runs.setup`` and ``runs.progress``). The decorated function is called as
    ``figure(scale="quick", data_dir=None, *, cache=None, progress=False, setup=None, **options)``: the setting
    is ``setup`` if given (tests pass a tiny one), else ``settings(scale, data_dir)``; the runs are cached under
    ``cache`` (``None``: in memory).

    Args:
        body: The figure's computation.
        settings: The setting at a gallery scale (default :meth:`ImSetup.for_scale`); use as
            ``@im_figure(settings=...)``.

    Returns:
        The figure function (or, without ``body``, the decorator).
    """

    def pool(setup: ImSetup, *, cache: Path | str | None, progress: bool, **_: Any) -> tuple[ImRuns]:
        return (ImRuns(setup, cache, progress),)

    decorate = figure_function(settings or ImSetup.for_scale, pool)
    return decorate if body is None else decorate(body)
