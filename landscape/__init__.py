"""landscape: loss-landscape analysis and visualization for PyTorch models.

Trainers write trajectories (:class:`Trajectory`), analyzers read them and return result objects
(:class:`Result` subclasses that save without pickle), renderers (``landscape.plot``: one contract,
a plotly and a matplotlib backend) draw those results.

Modules whose public names the front door takes whole are star-imported and their ``__all__`` spliced in.
"""

# ruff: noqa: F403 (each star import takes a module's ``__all__``)

from landscape import analyze, curvature
from landscape.analyze.align import *
from landscape.analyze.barrier import *
from landscape.analyze.curves import *
from landscape.analyze.directions import (
    directions_from_models,
    normalize_direction,
    orthogonalize,
    random_direction,
    random_directions,
)
from landscape.analyze.distance import DistanceResult, FunctionalDistance, distance_along_path, functional_distance
from landscape.analyze.paths import (
    ProjectedPath,
    distance_from_init,
    distance_from_origin,
    make_loss_at,
    pairwise_end_distances,
)
from landscape.analyze.pca import TrajectoryPCA
from landscape.analyze.permutation import *
from landscape.analyze.permutation_spec import AxisPerm, PermutationSpec, PermutationSpecError
from landscape.analyze.permutation_tracing import *
from landscape.analyze.saturation import measure_saturation
from landscape.analyze.saturation_recorder import *
from landscape.analyze.saturation_results import SaturationHistory, SaturationStats
from landscape.analyze.slice_results import *
from landscape.analyze.surface import *
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.sharpness import (
    SharpnessResult,
    average_sharpness,
    m_sharpness,
    perturbation_scale,
    worst_case_sharpness,
)
from landscape.curvature.spectrum import (
    HessianSpectrum,
    hessian_directions,
    hessian_eigenpairs,
    hessian_spectrum,
    hessian_trace,
)
from landscape.curvature.training import *
from landscape.evaluate.affine import AffinePoints
from landscape.evaluate.points import evaluate_points
from landscape.functional import differentiable_kernels, model_output
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
from landscape.problem import Problem, as_problem
from landscape.results import Provenance, Result, load_result
from landscape.train.callbacks import Callback, RecordTrajectory
from landscape.train.loop import Trainer, fit
from landscape.train.recorder import Recorder
from landscape.trajectory.fileformat import CorruptTrajectoryError, TrajectoryError
from landscape.trajectory.records import Segment, Snapshot
from landscape.trajectory.store import Trajectory
from landscape.validation import InputError, InputWarning

__all__ = [
    "Problem",
    "as_problem",
    "differentiable_kernels",
    "model_output",
    # input validation
    "InputError",
    "InputWarning",
    # parameter vectors
    "ParamLayout",
    "TensorSpec",
    "as_param_dict",
    "buffers_dict",
    "functional_forward",
    "model_at",
    "parameters_to_vector",
    "vector_to_dict",
    # results
    "Provenance",
    "Result",
    "load_result",
    # trajectories and training
    "Trajectory",
    "Snapshot",
    "Segment",
    "TrajectoryError",
    "CorruptTrajectoryError",
    "Recorder",
    "Trainer",
    "Callback",
    "RecordTrajectory",
    "fit",
    # evaluation, directions, slices, distance
    "evaluate_points",
    "AffinePoints",
    "random_direction",
    "random_directions",
    "normalize_direction",
    "orthogonalize",
    "directions_from_models",
    *analyze.surface.__all__,
    *analyze.slice_results.__all__,
    "functional_distance",
    "distance_along_path",
    "FunctionalDistance",
    "DistanceResult",
    # PCA, Hessian, saturation
    "TrajectoryPCA",
    "ProjectedPath",
    "make_loss_at",
    "distance_from_origin",
    "distance_from_init",
    "pairwise_end_distances",
    "HessianOperator",
    "HessianSpectrum",
    "hessian_eigenpairs",
    "hessian_directions",
    "hessian_trace",
    "hessian_spectrum",
    "measure_saturation",
    "SaturationStats",
    "SaturationHistory",
    *analyze.saturation_recorder.__all__,
    # curvature over training, sharpness
    *curvature.training.__all__,
    "worst_case_sharpness",
    "average_sharpness",
    "m_sharpness",
    "perturbation_scale",
    "SharpnessResult",
    # connecting minima: permutations, alignment, barriers, curves
    "PermutationSpec",
    "PermutationSpecError",
    "AxisPerm",
    *analyze.permutation_tracing.__all__,
    *analyze.permutation.__all__,
    *analyze.align.__all__,
    *analyze.barrier.__all__,
    *analyze.curves.__all__,
]
