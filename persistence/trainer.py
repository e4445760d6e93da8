"""Persistent training and championship selection (Persistent Neurons, PN Algorithm 1 and Sec. 4).

Iteration 0 is the plain model. Every later iteration restarts from *bitwise the same* initial
weights and trains through the shared :class:`~landscape.train.Trainer` with the persistent penalty
of all previous converged solutions as a regularizer. Each iteration is recorded as its own
trajectory, tagged with its iteration (and, in partial mode, its layer). The championship is the
iteration with the best validation metric at its end.

Two engines train an iteration (``engine=``): ``"loop"`` (default) runs it through the shared
:class:`~landscape.train.Trainer` (any model, loss, optimizer, minibatches); ``"batched"``
(:mod:`persistence.batched`) runs a Linear/ReLU MLP on full-batch MSE with momentum SGD through a fast
hand-derived step, up to float rounding the same arithmetic. Both use the same layer draw
(:func:`~persistence.penalty.draw_layer`), the same recording callback and tags, and the same resume.

Resuming: with ``out_dir`` given, each finished iteration is committed to ``out_dir/state.json``
(atomically, after its trajectory is complete); a rerun with the same arguments skips finished
iterations, takes their converged points from their trajectories, and redoes an unfinished one from
scratch, so an interrupted run ends where an uninterrupted one would.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape._options import parse_option, shows_forwarded
from landscape.params import ParamLayout, model_at, parameters_to_vector
from landscape.train import Trainer, evaluate_dataset
from landscape.train.loop import DataLike, OptimizerSpec
from landscape.trajectory import Trajectory
from landscape.validation import validate_training_sets
from persistence.batched import BATCHED_DEFAULTS
from persistence.penalty import PersistentMode, PersistentPenalty, draw_layer

if TYPE_CHECKING:
    from persistence.batched import BatchedEngine

__all__ = ["Engine", "PersistentMode", "IterationResult", "PersistentTrainer", "select_champion"]


class Engine(str, enum.Enum):
    """How an iteration trains: the shared training loop, or the fast batched MLP step."""

    LOOP = "loop"
    BATCHED = "batched"


@dataclass(frozen=True)
class IterationResult:
    """One persistent iteration.

    Attributes:
        iteration: 0 for the plain model, then 1, 2, ...
        final: Converged parameter vector, shape ``(numel,)``.
        metrics: Final metrics (``val_loss``, ``val_accuracy``, ``test_*``, ``train_loss`` ...). ``train_loss``
            differs between the engines: the loop engine's is the :class:`~landscape.train.Trainer`'s, the running
            mean over the last epoch's minibatches of the objective it minimized (loss plus penalty); the batched
            engine's is the loss at the final point without the penalty, with ``train_penalty`` beside it. To
            compare iterations of the loop engine by their training loss, name the training set in ``eval_data``
            (``{"train": data}``) and select by ``"train_loss"`` then, evaluated at the final point.
        layer: The penalized layer in partial mode, ``None`` otherwise.
        trajectory: The recorded trajectory of this iteration.
        history: The batched engine's loss log: ``steps``, ``loss`` (without the penalty), ``penalty`` at the
            logged steps and the iteration's ``time`` in seconds; ``None`` for the loop engine.
    """

    iteration: int
    final: Tensor
    metrics: dict[str, float]
    layer: str | None
    trajectory: Trajectory
    history: dict[str, Any] | None = None


def select_champion(metrics: Sequence[Mapping[str, float]], key: str = "val_loss", mode: str | None = None) -> int:
    """Index of the best entry by one metric.

    Args:
        metrics: One metrics dict per iteration.
        key: The metric, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"`` or ``"max"``; default ``"max"`` for keys containing "acc", else ``"min"``.

    Returns:
        The index of the best entry (the first one on ties).

    Raises:
        KeyError: If an entry lacks ``key``.
    """
    if mode is None:
        mode = "max" if "acc" in key else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    vals = []
    for i, m in enumerate(metrics):
        if key not in m:
            raise KeyError(f"iteration {i} has no metric {key!r}; it has {sorted(m)}")
        vals.append(float(m[key]))
    arr = np.array(vals)
    arr = np.where(np.isnan(arr), np.inf if mode == "min" else -np.inf, arr)
    return int(np.argmin(arr) if mode == "min" else np.argmax(arr))


# Trainer keywords every iteration's run gets from the PersistentTrainer itself; the signature shows the rest of
# Trainer's, and the batched engine's own (persistence.batched.BATCHED_DEFAULTS).
_SETS_ITSELF = ("seed", "eval_data", "regularizer", "trajectory", "tags", "progress")


class PersistentTrainer:
    """Run N persistent iterations from one initialization and select the championship.

    Args:
        model: The initial model; every iteration starts from its exact weights (never modified).
        data: Training data (tensor pair or iterable of batches).
        loss_fn: Mean-reduced loss.
        optimizer: Method name or factory, as for :class:`~landscape.train.Trainer`.
        iterations: Total iterations N including the plain one (PN Fig. 7-8: 20).
        lam: Penalty strength lambda.
        mode: ``"full"`` or ``"partial"``.
        layer: In partial mode, a fixed layer name instead of a random draw per iteration (among the layers with
            trainable parameters, :attr:`trainable_layers`).
        depth_factor: Use the preprint's factor ``|L(w_ini) - L(w_0)|`` (PN preprint eq. 4-5), measured on the
            training data from the initial weights and the plain model's converged weights.
        select_by: Validation metric of the championship, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        eval_data: Named evaluation sets; must contain the set named in ``select_by``.
        seed: Seed of every iteration's training run and of the partial-mode layer draws.
        out_dir: Directory for the trajectories and the resume state (``None``: in memory, no resume).
        progress: Show progress over iterations.
        engine: ``"loop"`` (every iteration through :class:`~landscape.train.Trainer`) or ``"batched"`` (the
            fast step of :mod:`persistence.batched`: Linear/ReLU MLPs, MSE, full-batch momentum SGD; there
            ``select_by`` may also name the training set, ``"train_loss"``, without an evaluation set).
        **trainer_kwargs: Passed to every :class:`~landscape.train.Trainer` (epochs, steps, batch_size ...);
            with ``engine="batched"``, the keywords of :data:`persistence.batched.BATCHED_OPTIONS`.

    Example:
        >>> X = torch.linspace(-1, 1, 32)[:, None]
        >>> net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> pt = PersistentTrainer(net, (X, X.abs()), nn.functional.mse_loss,
        ...                        lambda p: torch.optim.SGD(p, lr=0.05), iterations=3, lam=0.01,
        ...                        eval_data={"val": (X, X.abs())}, steps=20).fit()
        >>> len(pt.results_), pt.champion_ in (0, 1, 2)
        (3, True)
    """

    @shows_forwarded(Trainer, exclude=_SETS_ITSELF, extra=BATCHED_DEFAULTS)
    def __init__(
        self,
        model: nn.Module,
        data: DataLike,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        optimizer: OptimizerSpec,
        *,
        iterations: int,
        lam: float,
        mode: PersistentMode | str = PersistentMode.FULL,
        layer: str | None = None,
        depth_factor: bool = False,
        select_by: str = "val_loss",
        eval_data: Mapping[str, DataLike] | None = None,
        seed: int = 0,
        out_dir: str | os.PathLike[str] | None = None,
        progress: bool = False,
        engine: Engine | str = Engine.LOOP,
        **trainer_kwargs: Any,
    ) -> None:
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1 (the plain model counts), got {iterations}")
        self.mode = parse_option(PersistentMode, mode, "mode")
        self.engine = parse_option(Engine, engine, "engine")
        self.layout = ParamLayout.from_model(model)
        if layer is not None and layer not in self.layout.layers:
            raise ValueError(f"unknown layer {layer!r}; the model's layers are {list(self.layout.layers)}")
        # Partial mode draws among the layers the optimizer moves: a frozen layer's penalty is a constant, and an
        # iteration penalizing it would retrain the plain model. (Without frozen layers: every layer, as before.)
        params = dict(model.named_parameters())
        specs = self.layout.layers.items()
        self.trainable_layers = [n for n, ts in specs if any(params[t.name].requires_grad for t in ts)]
        if layer is not None and layer not in self.trainable_layers:
            raise ValueError(f"layer {layer!r} has no trainable parameter: penalizing it cannot change the run")
        if layer is not None and self.mode is PersistentMode.FULL:  # full mode penalizes every layer: layer unused
            raise ValueError(f"layer={layer!r} fixes the penalized layer of partial mode; pass mode='partial' with it")
        set_name = select_by.split("_", 1)[0]
        sets = {*(eval_data or {}), *({"train"} if self.engine is Engine.BATCHED else ())}
        if not any(select_by.startswith(f"{name}_") for name in sets):
            raise ValueError(
                f"select_by={select_by!r} needs an evaluation set named {set_name!r} in eval_data "
                f"(got {sorted(eval_data or {})})"
            )
        # Checked and cast once here, the training set and every evaluation set alike: every iteration's
        # Trainer (or the batched engine) takes the validated data as it is.
        data, evals = validate_training_sets(model, data, eval_data, loss_fn)
        self.initial = model
        self.data = data
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.iterations = iterations
        self.lam = lam
        self.layer = layer
        self.depth_factor = depth_factor
        self.select_by = select_by
        self.eval_data = evals
        self.seed = seed
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress
        self.trainer_kwargs = trainer_kwargs
        self.results_: list[IterationResult] = []
        self.depth_factor_: float | None = None
        # The batched engine (``None`` for the loop engine): its settings, the backend that ran, the logged steps.
        self.batched_engine: BatchedEngine | None = None
        if self.engine is Engine.BATCHED:
            from persistence.batched import BatchedEngine

            self.batched_engine = BatchedEngine(
                model, data, self.eval_data, loss_fn, optimizer, iterations - 1, trainer_kwargs
            )
            # Its metrics are known now; a wrong name found after the run could not be mended by a rerun
            # (select_by is part of the batched run's resume fingerprint).
            reported = sorted({"train_loss", "train_penalty", *(f"{name}_loss" for name in self.eval_data)})
            if select_by not in reported:
                raise ValueError(f"select_by={select_by!r}: the batched engine reports only the metrics {reported}")

    # --------------------------------------------------------------------- api
    def layer_for(self, iteration: int) -> str | None:
        """The penalized layer: ``None`` in full mode; in partial, the fixed layer or a seeded trainable one."""
        return draw_layer(self.trainable_layers, iteration, mode=self.mode, seed=self.seed, layer=self.layer)

    @property
    def champion_(self) -> int:
        """Index of the championship iteration (best ``select_by``)."""
        return select_champion([r.metrics for r in self.results_], self.select_by)

    def champion_result(self) -> IterationResult:
        """The championship iteration's result (trajectory, metrics, final vector)."""
        return self.results_[self.champion_]

    def champion_model(self) -> nn.Module:
        """A new model at the championship's converged weights."""
        r = self.champion_result()
        snap = r.trajectory[len(r.trajectory) - 1]
        return model_at(self.initial, r.final, snap.buffers or None)

    def fit(self) -> PersistentTrainer:
        """Run (or resume) all iterations; returns ``self``."""
        from tqdm.auto import tqdm

        state = self._load_state()
        self.results_ = []
        for it in tqdm(range(self.iterations), disable=not self.progress, desc="persistent", unit="iter"):
            if it < len(state.get("finished", [])):
                self.results_.append(self._restore(it, state["finished"][it]))
                continue
            res = self._run_iteration(it)
            self.results_.append(res)
            if self.out_dir is not None:
                entry: dict[str, Any] = {"iteration": it, "metrics": res.metrics, "layer": res.layer}
                if res.history is not None:
                    entry["history"] = res.history
                state.setdefault("finished", []).append(entry)
                state["depth_factor"] = self.depth_factor_
                self._save_state(state)
        return self

    # ---------------------------------------------------------------- internals
    def _penalty(self, it: int) -> PersistentPenalty | None:
        if it == 0:
            return None
        anchors = torch.stack([r.final for r in self.results_])
        layer = self.layer_for(it)
        return PersistentPenalty(
            self.layout,
            anchors,
            self.lam,
            layers=None if layer is None else [layer],
            depth_factor=self.depth_factor_ if self.depth_factor else None,
        )

    def _traj_path(self, it: int) -> Path | None:
        return None if self.out_dir is None else self.out_dir / f"iteration_{it:03d}"

    def _run_iteration(self, it: int) -> IterationResult:
        path = self._traj_path(it)
        if path is not None:
            if path.exists():  # an unfinished iteration from an interrupted run: redo it from scratch
                shutil.rmtree(path)
            # synced at close, before state.json names the iteration finished (an unfinished one is redone): an
            # fsync per snapshot ("append") bought nothing here and cost ~10 ms of wall clock each
            traj = Trajectory.create(path, self.layout, meta={"persistent_iteration": it}, durable="flush")
        else:
            traj = Trajectory(layout=self.layout, meta={"persistent_iteration": it})
        layer = self.layer_for(it)
        tags = {"persistent_iteration": it, "persistent_mode": self.mode.value, "lambda": self.lam}
        if layer is not None:
            tags["persistent_layer"] = layer
        if self.depth_factor:
            tags["depth_factor"] = True
        history = None
        if self.batched_engine is None:
            final, metrics = self._run_loop(it, traj, tags)
        else:
            finals = [r.final for r in self.results_]
            anchors = torch.stack(finals) if finals else self.batched_engine.initial.new_zeros(0, self.layout.numel)
            scale = self.lam * (self.depth_factor_ if (self.depth_factor and self.depth_factor_ is not None) else 1.0)
            final, metrics, history = self.batched_engine.run(it, anchors, layer, scale, traj, tags)
            if it == 0 and self.depth_factor:
                self.depth_factor_ = self.batched_engine.depth_factor(final, history)
        if path is not None:
            traj.close()
            traj = Trajectory.open(path)
        return IterationResult(it, final, metrics, layer, traj, history)

    def _run_loop(self, it: int, traj: Trajectory, tags: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        trainer = Trainer(
            self.initial,
            self.data,
            self.loss_fn,
            self.optimizer,
            seed=self.seed,
            eval_data=self.eval_data,
            regularizer=self._penalty(it),
            trajectory=traj,
            tags=tags,
            **self.trainer_kwargs,
        ).fit()
        if it == 0 and self.depth_factor:
            # PN preprint eq. 4: the loss surface's depth from the start point to the plain model's final loss.
            l_ini = evaluate_dataset(self.initial, self.data, self.loss_fn, accuracy=False)["loss"]
            l_0 = evaluate_dataset(trainer.model, self.data, self.loss_fn, accuracy=False)["loss"]
            self.depth_factor_ = abs(l_ini - l_0)
        metrics = dict(trainer.last_metrics)
        for name, d in self.eval_data.items():
            for k, v in evaluate_dataset(trainer.model, d, self.loss_fn).items():
                metrics[f"{name}_{k}"] = v
        return parameters_to_vector(trainer.model), metrics

    def _restore(self, it: int, entry: Mapping[str, Any]) -> IterationResult:
        traj = Trajectory.open(self._traj_path(it))  # type: ignore[arg-type]
        final = traj[len(traj) - 1].vector
        return IterationResult(it, final, dict(entry["metrics"]), entry.get("layer"), traj, entry.get("history"))

    def _fingerprint(self) -> dict[str, Any]:
        fp = {
            "iterations_seed": self.seed,
            "lam": self.lam,
            "mode": self.mode.value,
            "layer": self.layer,
            "depth_factor": self.depth_factor,
            "numel": self.layout.numel,
            "initial_sum": float(parameters_to_vector(self.initial).double().sum()),
        }
        if self.batched_engine is not None:  # the loop engine's fingerprint is unchanged, so its old runs resume
            fp.update(self.batched_engine.settings(), select_by=self.select_by)
        return fp

    def _load_state(self) -> dict[str, Any]:
        if self.out_dir is None:
            return {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        f = self.out_dir / "state.json"
        if not f.exists():
            return {"fingerprint": self._fingerprint(), "finished": []}
        try:
            state = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f} is corrupt ({e}); delete it to restart the persistent run") from e
        if state.get("fingerprint") != self._fingerprint():
            raise ValueError(
                f"{self.out_dir} holds a persistent run with other settings ({state.get('fingerprint')}); "
                "use another out_dir or delete it"
            )
        self.depth_factor_ = state.get("depth_factor")
        return state

    def _save_state(self, state: Mapping[str, Any]) -> None:
        assert self.out_dir is not None
        f = self.out_dir / "state.json"
        tmp = f.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, f)
