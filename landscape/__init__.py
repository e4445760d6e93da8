"""landscape: loss-landscape analysis and visualization for PyTorch models."""

from landscape.params import (
    ParamLayout,
    TensorSpec,
    as_param_dict,
    buffers_dict,
    functional_forward,
    model_at,
    parameters_to_vector,
    vector_to_dict,
)
from landscape.results import Provenance, Result, load_result
from landscape.trajectory import CorruptTrajectoryError, Segment, Snapshot, Trajectory, TrajectoryError

__all__ = [
    "ParamLayout",
    "TensorSpec",
    "as_param_dict",
    "buffers_dict",
    "functional_forward",
    "model_at",
    "parameters_to_vector",
    "vector_to_dict",
    "Provenance",
    "Result",
    "load_result",
    "Trajectory",
    "Snapshot",
    "Segment",
    "TrajectoryError",
    "CorruptTrajectoryError",
]
