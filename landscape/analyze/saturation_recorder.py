"""The training-loop callback that measures saturation before training and every few epochs.

It calls :func:`landscape.analyze.saturation.measure_saturation` on fixed data and stores the
:class:`~landscape.analyze.saturation_results.SaturationHistory` with the trajectory (Persistent Neurons
Fig. 14-15).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from landscape._options import parse_option
from landscape.analyze.saturation import LayerSpec, RangeLike, _refuse_no_layers, measure_saturation
from landscape.analyze.saturation_results import ActivationValue, SaturationHistory, SaturationStats
from landscape.results import Provenance
from landscape.train.callbacks import Callback, EpochEvent, RecordTrajectory
from landscape.train.loop import Trainer

__all__ = ["SaturationRecorder"]


class _MeasureOptions(TypedDict):
    """The recorder's keyword options of :func:`measure_saturation`."""

    value: ActivationValue | str
    bins: int
    range: RangeLike
    exact_limit: int
    batch_size: int | None


class SaturationRecorder(Callback):
    """Training-loop callback: activation percentiles and histograms before training and every few epochs.

    The history (:attr:`history_`) is stored with the trajectory in two ways:

    * authoritative: the whole :class:`SaturationHistory` as JSON in the trajectory's run metadata under
      ``meta_key`` (rewritten after every measurement), read back with
      :meth:`SaturationHistory.from_trajectory`. This does not depend on callback order and includes the
      measurement before training (which the initial snapshot carries too, as below, when the recorder runs
      first).
    * convenient: before training and at epoch ends the percentiles are put into the metrics dict (the same dict as
      ``trainer.last_metrics``) as ``"<metric_prefix>/<layer>/p98"``, so the snapshot that
      :class:`~landscape.train.loop.RecordTrajectory` writes at that step carries them (``traj.metric(...)``).
      This needs the recorder to run *before* ``RecordTrajectory``; ``Trainer(trajectory=...)`` appends its
      recorder after the given callbacks, so that holds by default, and a warning says when it does not.

    Measuring runs the trained model forward over ``data`` in eval mode under a forked RNG, so a run with
    the recorder trains bitwise identically to one without it.

    Args:
        data: Measurement data as for :func:`measure_saturation` (e.g. a fixed validation subset).
        layers: Module names and/or types (default every ``nn.Tanh``).
        percentiles: Percentile levels (Persistent Neurons Fig. 14: 98).
        every_epochs: Measure every k epochs (and always before training).
        histogram_epochs: Epochs whose histograms to keep (default: every measured epoch; 0 = before training).
        trajectory: Where to store; default ``trainer.trajectory``, else the first ``RecordTrajectory``'s.
        meta_key: Metadata key of the stored history.
        metric_prefix: Prefix of the per-snapshot metric names.
        label: Run name put on the history.
        value: As for :func:`measure_saturation`.
        bins: As for :func:`measure_saturation`.
        range: As for :func:`measure_saturation`.
        exact_limit: As for :func:`measure_saturation`.
        batch_size: As for :func:`measure_saturation`.
    """

    def __init__(
        self,
        data: Any,
        layers: LayerSpec | Sequence[LayerSpec] = nn.Tanh,
        percentiles: Sequence[float] = (98.0,),
        every_epochs: int = 1,
        *,
        histogram_epochs: Iterable[float] | None = None,
        trajectory: Any = None,
        meta_key: str = "saturation",
        metric_prefix: str = "sat",
        label: str = "",
        value: ActivationValue | str = ActivationValue.RAW,
        bins: int = 100,
        range: RangeLike = None,  # numpy's name for a histogram range
        exact_limit: int = 65536,
        batch_size: int | None = 1024,
    ) -> None:
        if int(every_epochs) < 1:
            raise ValueError(f"every_epochs must be a positive integer, got {every_epochs}")
        parse_option(ActivationValue, value, "value")
        _refuse_no_layers(layers)  # now, not at the first epoch's end
        measure_kwargs: _MeasureOptions = {
            "value": value,
            "bins": bins,
            "range": range,
            "exact_limit": exact_limit,
            "batch_size": batch_size,
        }
        self.data = data
        self.layers = layers
        self.percentiles = tuple(float(q) for q in percentiles)
        self.every_epochs = int(every_epochs)
        self.histogram_epochs = None if histogram_epochs is None else [float(e) for e in histogram_epochs]
        self.trajectory = trajectory
        self.meta_key = meta_key
        self.metric_prefix = metric_prefix
        self.label = label
        self.measure_kwargs = measure_kwargs
        self._stats: list[dict[str, SaturationStats]] = []
        self._epochs: list[float] = []
        self._store: Any = None
        self._store_found = False  # a resumed run finds its store at the first measurement (load_state_dict has none)

    @property
    def history_(self) -> SaturationHistory:
        """The measurements so far as a :class:`SaturationHistory`.

        Raises:
            RuntimeError: Before the first measurement.
        """
        if not self._stats:
            raise RuntimeError("no measurement yet: the recorder measures when training begins")
        return SaturationHistory.from_stats(
            self._stats, self._epochs, histogram_epochs=self.histogram_epochs, label=self.label
        )

    def metric_name(self, layer: str, q: float) -> str:
        """Snapshot metric name of one layer's percentile, e.g. ``"sat/act1/p98"``."""
        return f"{self.metric_prefix}/{layer}/p{q:g}"

    def _measure(self, trainer: Trainer, epoch: float) -> dict[str, SaturationStats]:
        with torch.random.fork_rng(devices=[]):  # a shuffling DataLoader must not perturb the training RNG
            stats = measure_saturation(
                trainer.model, self.data, self.layers, percentiles=self.percentiles, **self.measure_kwargs
            )
        self._stats.append(stats)
        self._epochs.append(epoch)
        if not self._store_found:
            self._store, self._store_found = self._find_store(trainer), True
        if self._store is not None and hasattr(self._store, "update_meta"):
            self._store.update_meta({self.meta_key: self.history_.to_json()})
        return stats

    def _find_store(self, trainer: Trainer) -> Any:
        """Where the history goes: ``trajectory``, else the trainer's, else the first ``RecordTrajectory``'s."""
        if self.trajectory is not None:
            return self.trajectory
        if trainer.trajectory is not None:
            return trainer.trajectory
        recorders = [cb for cb in trainer.callbacks if isinstance(cb, RecordTrajectory)]
        return recorders[0].trajectory if recorders else None

    def state_dict(self) -> dict[str, Any]:
        """The measurements so far (a checkpoint's; :mod:`landscape.train.checkpoint`), as tensors and plain values.

        A resumed run continues this history: without it the resumed run measured its starting point as the
        measurement before training (epoch 0) and overwrote the stored history with it.
        """
        return {
            "epochs": list(self._epochs),
            "stats": [{k: _stats_state(v) for k, v in m.items()} for m in self._stats],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the history :meth:`state_dict` saved (a resumed run; in place of :meth:`on_train_begin`)."""
        self._epochs = [float(e) for e in state["epochs"]]
        self._stats = [{k: _stats_from(v) for k, v in m.items()} for m in state["stats"]]
        self._store, self._store_found = None, False

    def on_train_begin(self, trainer: Trainer) -> None:  # noqa: D102
        self._stats, self._epochs = [], []
        recorders = [cb for cb in trainer.callbacks if isinstance(cb, RecordTrajectory)]
        self._store, self._store_found = self._find_store(trainer), True
        me = trainer.callbacks.index(self) if self in trainer.callbacks else -1
        if any(trainer.callbacks.index(r) < me for r in recorders):
            warnings.warn(
                "SaturationRecorder runs after a RecordTrajectory callback, so epoch-end snapshots will not carry "
                "the saturation metrics (the history in the trajectory's metadata is complete); put the "
                "SaturationRecorder first",
                stacklevel=2,
            )
        stats = self._measure(trainer, 0.0)
        # RecordTrajectory writes the initial snapshot with trainer.last_metrics: it carries these when it runs after.
        trainer.last_metrics.update(self._metrics(stats))

    def _metrics(self, stats: Mapping[str, SaturationStats]) -> dict[str, float]:
        return {
            self.metric_name(layer, float(q)): float(v)
            for layer, s in stats.items()
            for q, v in zip(s.percentiles, s.values)
        }

    def on_epoch_end(self, trainer: Trainer, event: EpochEvent) -> None:  # noqa: D102
        if (event.epoch + 1) % self.every_epochs:
            return
        stats = self._measure(trainer, float(event.epoch + 1))
        event.metrics.update(self._metrics(stats))  # the same dict as trainer.last_metrics


def _stats_state(s: SaturationStats) -> dict[str, Any]:
    """One layer's statistics as a checkpoint holds them: arrays as tensors (exact), the rest plain."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        out[f.name] = torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
    out["provenance"] = s.provenance.to_dict()
    return out


def _stats_from(d: Mapping[str, Any]) -> SaturationStats:
    """Inverse of :func:`_stats_state`."""
    kw: dict[str, Any] = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in d.items()}
    kw["provenance"] = Provenance.from_dict(d["provenance"])
    return SaturationStats(**kw)
