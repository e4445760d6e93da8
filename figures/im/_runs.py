"""The pool of Im, Tao & Branson runs: trained once per setting, cached on disk, shared by every figure."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import FigureResult, figure_function
from figures.im._settings import ImSetup, RunSpec
from figures.im._text import WordLSTM, text_splits, tokenize
from landscape.analyze import line
from landscape.data import Splits
from landscape.params import parameters_to_vector
from landscape.train import (
    METHODS,
    Callback,
    EpochEvent,
    SwitchSchedule,
    Trainer,
    evaluate_dataset,
)
from landscape.trajectory import Trajectory, build_once, cached_file

K = TypeVar("K")  # the keys of a table of runs


class _GradCounter:
    """Cross-entropy that counts its calls under autograd: the gradient evaluations of training."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            self.n += 1
        return nn.functional.cross_entropy(out, y)


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


def _train(setup: ImSetup, spec: RunSpec, traj: Trajectory) -> None:
    """Train one run into ``traj`` (initial and final snapshots, plus the switch point) and store its history."""
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
    tr = Trainer(
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
    ).fit()
    traj.update_meta(
        {"spec": dataclasses.asdict(spec), "history": log.rows, "epochs": epochs, "fit_time_s": tr.fit_time_}
    )


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
            _train,
            WordLSTM,
            text_splits,
            tokenize,
        )
    ).encode()
).hexdigest()


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
        """Training time of the run in seconds."""
        return float(self.traj.meta["fit_time_s"])


@functools.cache
def _library_digest() -> str:
    """Digest of the ``landscape`` package's sources: a changed evaluation engine never reads an old memoized line.

    Computed on the first :meth:`ImRuns.line_losses` call, not at import (it reads every source file of the package).
    """
    import landscape

    h = hashlib.sha256()
    root = Path(landscape.__file__).parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def tensor_digest(code: str, module: nn.Module, *arrays: Any, options: Mapping[str, Any] | None = None) -> str:
    """A digest of everything a memoized computation on a network reads: equal digests, the same float results.

    The key of the Im figures' memos (:meth:`ImRuns.line_losses`, :func:`figures.im._measures.grad_norm`).

    Args:
        code: A digest of the computation's code (a changed computation never reads an old value).
        module: The network: its ``repr`` (architecture) and every parameter and buffer, by name, bitwise.
        *arrays: Tensors or NumPy arrays, bitwise with dtype and shape; tuples and lists of them (data batches,
            ``(X, y)`` pairs) are taken in order.
        options: Keyword options of the computation (their sorted ``repr``).

    Returns:
        32 hex digits of SHA-256, which also covers the torch thread count (the float rounding of the sums).
    """
    opts = sorted((options or {}).items())
    h = hashlib.sha256(f"{code}|{torch.get_num_threads()}|{module!r}|{opts!r}".encode())

    def add(t: Any) -> None:
        if isinstance(t, tuple | list):
            h.update(f"|[{len(t)}".encode())
            for u in t:
                add(u)
            h.update(b"]")
            return
        a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        h.update(f"|{a.dtype}:{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())

    for name, t in sorted(module.state_dict().items()):
        h.update(f"|{name}".encode())
        add(t)
    for t in arrays:
        add(t)
    return h.hexdigest()[:32]


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

    def get(self, spec: RunSpec) -> Run:
        """The finished run of ``spec`` (trained now if not cached)."""
        return self.many([spec])[0]

    def many(self, specs: Sequence[RunSpec]) -> list[Run]:
        """The finished runs of ``specs``, in order (missing ones trained now, with a progress bar)."""
        todo = [s for s in dict.fromkeys(specs) if s.key() not in self._memo]
        bar = tqdm(total=len(todo), desc="im runs", unit="run", disable=not self.progress or not todo, leave=False)
        # First the runs no other process is training (so two figures asking for one pool train it in parallel,
        # not in lockstep), then wait for the rest.
        waiting = []
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
        bar.close()
        return [self._memo[s.key()] for s in specs]

    def table(self, specs: dict[Any, RunSpec]) -> dict[Any, Run]:
        """``{key: run}`` for ``{key: spec}`` (one :meth:`many` call, so concurrent figures share the training)."""
        return dict(zip(specs, self.many(list(specs.values()))))

    def _load_or_train(self, spec: RunSpec, wait: bool = True) -> Run | None:
        """The run, from the cache or trained now; ``None`` if ``wait`` is off and another process trains it."""
        if self.root is None:
            traj = Trajectory()
            _train(self.setup, spec, traj)
        else:
            final = self.root / spec.key()

            def build(tmp: Path) -> None:  # trained whole into a temporary directory, then renamed: never half there
                with Trajectory.create(tmp, durable=False) as t:
                    _train(self.setup, spec, t)

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
        if key not in _LINES:

            def compute() -> np.ndarray:
                return np.asarray(line(template, a, b, data, alphas=alphas, **kw).metrics["loss"], dtype=np.float64)

            if self.root is None:
                _LINES[key] = compute()
            else:
                try:  # the file is written whole and renamed; a damaged one is computed again
                    _LINES[key] = cached_file(
                        self.root / "_lines" / f"{key}.npy", compute, _save_line, _line_reader(len(alphas))
                    )
                except OSError:  # a read-only cache: the value is memoized in this process only
                    _LINES[key] = compute()
        return _LINES[key].copy()

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
