"""What a trajectory holds: snapshots and segments, their metadata normalized to JSON, models rebuilt from them."""

from __future__ import annotations

import copy
import json
import numbers
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.params import ParamLayout, TensorSpec

__all__ = ["Segment", "Snapshot"]


def flat_layout(numel: int) -> ParamLayout:
    # Default for a bare vector (e.g. a point on a 2-D toy function): one tensor named "vector".
    spec = TensorSpec(name="vector", shape=(numel,), start=0, stop=numel, layer="", filter_axis=None, module_type="")
    return ParamLayout([spec])


@dataclass(frozen=True)
class Segment:
    """A run of consecutive snapshots sharing one parameter layout and one set of buffer names.

    Attributes:
        index: Position of the segment in the trajectory.
        start: Index of its first snapshot.
        stop: One past its last snapshot.
        layout: Layout of its vectors, each of shape ``(layout.numel,)``.
        buffer_names: Names of the buffers stored with each snapshot (may be empty).
    """

    index: int
    start: int
    stop: int
    layout: ParamLayout
    buffer_names: tuple[str, ...]

    @property
    def indices(self) -> range:
        """Snapshot indices of the segment."""
        return range(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, eq=False, repr=False)
class Snapshot:
    """One point of a trajectory.

    Attributes:
        index: Position in the trajectory.
        vector: Trainable parameters, shape ``(layout.numel,)``, in the dtype they were appended in.
        step: Optimizer step.
        epoch: Epoch (fractional within an epoch).
        wall_time: Unix time of recording.
        metrics: Named numbers (loss, accuracy, ...).
        tags: JSON-compatible tags (run, optimizer, persistent_iteration, event, ...).
        buffers: Buffers by name (BatchNorm running statistics), possibly empty.
        segment: Index of the segment it belongs to.
        layout: Layout of ``vector``.
    """

    index: int
    vector: Tensor
    step: int
    epoch: float
    wall_time: float
    metrics: dict[str, float]
    tags: dict[str, Any]
    buffers: dict[str, Tensor]
    segment: int
    layout: ParamLayout

    def __repr__(self) -> str:
        return (
            f"Snapshot(index={self.index}, step={self.step}, epoch={self.epoch:g}, segment={self.segment}, "
            f"numel={self.vector.numel()}, dtype={self.vector.dtype}, metrics={self.metrics})"
        )


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic | Tensor) and getattr(o, "ndim", 0) == 0:
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-compatible")


def jsonify(d: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Normalize a mapping to its JSON round trip, so memory and disk stores return the same thing."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be strings, got {k!r}")
        try:
            out[k] = json.loads(json.dumps(v, default=_json_default))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what}[{k!r}] cannot be stored as JSON ({e}); use numbers, strings, lists, dicts") from e
    return out


def metrics_dict(d: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for k, v in (d or {}).items():
        if not isinstance(k, str):
            raise TypeError(f"metric names must be strings, got {k!r}")
        try:
            out[k] = float(v)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metric {k!r} must be a number, got {type(v).__name__}") from e
    return out


def step_number(step: Any) -> int:
    """``step`` as an int: an integer (numpy's, an integer tensor of one element) or a whole float.

    Raises:
        ValueError: On a fractional number (it was once truncated silently).
        TypeError: On anything that is not a number.
    """
    if type(step) is int:
        return step
    try:
        return operator.index(step)
    except TypeError:
        pass
    if isinstance(step, numbers.Real):
        whole = float(step)
        if whole.is_integer():
            return int(whole)
        raise ValueError(f"step must be a whole number (the optimizer step), got {step!r}")
    raise TypeError(f"step must be a whole number (the optimizer step), got {step!r}")


def segment_index(segment: Any) -> int | None:
    """``segment`` (a segment index, numpy's integers included, or ``None``) as an int or ``None``.

    Raises:
        TypeError: ``segment must be an integer index or None, got <value>``.
    """
    if segment is None:
        return None
    try:
        return operator.index(segment)
    except TypeError:
        raise TypeError(f"segment must be an integer index or None, got {segment!r}") from None


def real_number(value: Any, what: str, expected: str = "a real number") -> float:
    """``value`` as a float (numbers, numpy and one-element tensors); strings and ``None`` are refused by name.

    Raises:
        TypeError: ``<what> must be <expected>, got <value>``.
    """
    if type(value) is float:
        return value
    if not isinstance(value, str | bytes) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{what} must be {expected}, got {value!r}")


def layout_difference(recorded: ParamLayout, got: ParamLayout) -> str:
    for k, (a, b) in enumerate(zip(recorded.specs, got.specs)):
        if (a.name, a.shape) != (b.name, b.shape):
            return f"tensor #{k} is {a.name!r}{a.shape} in the recording but {b.name!r}{b.shape} in the model"
    n, m = len(recorded), len(got)
    extra = recorded.specs[m].name if n > m else got.specs[n].name
    return f"the recording has {n} tensors, the model {m} (first unmatched: {extra!r})"


def restore_model(factory_or_model: nn.Module | Callable[[], nn.Module], snap: Snapshot) -> nn.Module:
    """A new model holding snapshot ``snap`` exactly (what :meth:`Trajectory.model_at` returns).

    Args:
        factory_or_model: A zero-argument callable returning a fresh model of the snapshot's
            architecture, or a module used as a template (deep-copied, never modified).
        snap: The snapshot.

    Raises:
        ValueError: If the model's layout or buffers do not match the snapshot's segment.
    """
    if isinstance(factory_or_model, nn.Module):
        model = copy.deepcopy(factory_or_model)
    elif callable(factory_or_model):
        model = factory_or_model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the factory returned a {type(model).__name__}, not an nn.Module")
    else:
        raise TypeError(f"expected a model factory or an nn.Module, got {type(factory_or_model).__name__}")
    layout = ParamLayout.from_model(model)
    if layout != snap.layout and ParamLayout.from_model(model, params="trainable") == snap.layout:
        layout = snap.layout  # an older store: the vector covers the trainable parameters only
    if layout != snap.layout:
        raise ValueError(
            f"snapshot {snap.index} (segment {snap.segment}) was recorded with {snap.layout!r} but the model "
            f"has {layout!r}: {layout_difference(snap.layout, layout)}; use the factory of that segment's network"
        )
    own = dict(model.named_buffers())
    if snap.buffers and set(snap.buffers) != set(own):
        raise ValueError(f"snapshot {snap.index} stores buffers {sorted(snap.buffers)} but the model has {sorted(own)}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for spec in layout.specs:
            params[spec.name].copy_(snap.vector[spec.start : spec.stop].view(spec.shape))
        for k, v in snap.buffers.items():
            if own[k].shape != v.shape:
                raise ValueError(
                    f"buffer {k!r} has shape {tuple(v.shape)} in snapshot {snap.index}, "
                    f"{tuple(own[k].shape)} in the model"
                )
            own[k].copy_(v)
    return model
