"""The pool of Im, Tao & Branson runs: trained once per setting, cached on disk, shared by every figure."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from figures.contract import FigureResult, figure_function
from figures.im._memo import _library_digest, memoized, tensor_digest
from figures.im._settings import ImSetup, RunSpec
from figures.im._states import read_state, state_file, write_state
from figures.im._training import TRAINING_CODE, Kept, StepDecay, _first_method, _train
from landscape.analyze import line
from landscape.train import METHODS, SwitchSchedule
from landscape.trajectory import Trajectory, build_once

__all__ = ["TRAINING_CODE", "ImRuns", "Kept", "Run", "StepDecay", "im_figure", "tensor_digest"]

K = TypeVar("K")  # the keys of a table of runs


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


def _state_code() -> str:
    """What a switch state was computed by besides the pool's key: the ``landscape`` sources and the thread count.

    A state is continued from only where training its first method again would give it bitwise: under the same
    training code (the pool's key hashes this package's, not ``landscape``'s) and the same number of torch threads
    (the float rounding of the sums), as :func:`tensor_digest` keys the memoized lines.
    """
    return f"{_library_digest()}-t{torch.get_num_threads()}"


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

    A switched run (``RunSpec.then``) whose switch is an epoch end does not train its first part again: the plain run
    of its first method keeps its trainer's state at the switch, and the switched run continues from it
    (:func:`landscape.train.checkpoint.resume`), with the stored results of training it whole. Within one
    :meth:`many` call the state is kept in memory; a pool cached on disk also writes the states at the switch steps
    of the gallery's switched runs (:meth:`switch_plan`) to ``_states/`` (:mod:`figures.im._states`), so a figure
    that switches from a run another figure (or process) trained continues from its file.

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
        self._plans: dict[str, set[int]] | None = None  # switch_plan(), computed on first use

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

    def switch_plan(self) -> dict[str, set[int]]:
        """``{plain run key: steps}``: the states a plain run writes to disk, for the runs switched from it.

        The switch steps (:meth:`switch_step`) of the switched runs of Fig. 7 and Figs. 12-15 at this setting, by the
        plain run of their first method: whichever figure trains that run first leaves the states the others continue
        from. A switched run outside the plan still gets its state, by training its first method up to the switch.
        """
        if self._plans is None:
            from figures.im import fig7, fig12_15  # the figures that switch (they import this module)

            plan: dict[str, set[int]] = {}
            for spec in [*fig7.switched_specs(self.setup), *fig12_15.switched_specs(self.setup)]:
                k = self.switch_step(spec)
                if k is not None:
                    plan.setdefault(_first_method(spec).key(), set()).add(k)
            self._plans = plan
        return self._plans

    def _train(self, spec: RunSpec, traj: Trajectory) -> None:
        """Train ``spec`` into ``traj``, sharing what a switched run and its plain run compute alike.

        A plain run keeps its state at the switch steps of the switched runs :meth:`many` is training and, cached on
        disk, at those of :meth:`switch_plan` (written to ``_states/``). A switched run continues from the state kept
        in memory, else from its file, else after training its first method up to the switch (the plain run was
        trained before the plan had it, or is being trained by another process). Either way its stored results are
        those of training it whole.
        """
        key, k = spec.key(), self.switch_step(spec)
        disk = {} if self.root is None else self.switch_plan()
        if k is None:
            steps = self._keep.get(key, set()) | disk.get(key, set())
            self._store(key, _train(self.setup, spec, traj, keep=steps))
            return
        plain = _first_method(spec)
        pk = plain.key()
        start = self._state(pk, k)
        if start is None:  # not in the plan when the plain run trained, or it is training elsewhere now
            # up to the last switch of this call that has no state either; keeping every state on the way
            stop = max({k} | {s for s in self._keep.get(pk, set()) if s > k and self._state(pk, s) is None})
            steps = {s for s in self._keep.get(pk, set()) | disk.get(pk, set()) | {k} if s <= stop}
            self._store(pk, _train(self.setup, plain, Trajectory(), keep=steps, stop=stop))
            start = self._kept.get((pk, k))
        _train(self.setup, spec, traj, start=start)

    def _state(self, key: str, step: int) -> tuple[dict[str, Any], float] | None:
        """Run ``key``'s state at ``step`` kept in this :meth:`many` call, else from its file (then kept), else None."""
        if (key, step) not in self._kept and self.root is not None:
            code = _state_code()
            got = read_state(state_file(self.root, key, step, code), key, step, code)
            if got is not None:
                self._kept[key, step] = got
        return self._kept.get((key, step))

    def _store(self, key: str, kept: Kept) -> None:
        """Keep a plain run's states for this :meth:`many` call and, cached on disk, write them to ``_states/``."""
        for step, (state, loss) in kept.items():
            self._kept[key, step] = (state, loss)
            if self.root is not None:
                code = _state_code()
                write_state(state_file(self.root, key, step, code), key, step, code, state, loss)

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
        test = self.setup.splits().test
        if test is None:  # every Im data set has a test split (ImSetup.splits)
            raise ValueError(f"the {self.setup.dataset} splits have no test images")
        x, y = test
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
