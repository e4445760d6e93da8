"""landscape: loss-landscape analysis and visualization for PyTorch models.

Trainers write trajectories (:class:`Trajectory`), analyzers read them and return result objects
(:class:`Result` subclasses that save without pickle), renderers (``landscape.plot``: one contract,
a plotly and a matplotlib backend) draw those results.
"""

from landscape.analyze.align import (
    AlignmentResult,
    activation_correlations,
    activation_matching,
    interpolate_models,
    matching_objective,
    repair,
    weight_matching,
)
from landscape.analyze.barrier import BarrierResult, barrier_of, barrier_values, loss_barrier
from landscape.analyze.curves import CurveKind, CurveResult, ModeCurve, curve_coefficients, evaluate_curve, fit_curve
from landscape.analyze.directions import (
    directions_from_models,
    normalize_direction,
    orthogonalize,
    random_direction,
    random_directions,
)
from landscape.analyze.distance import DistanceResult, FunctionalDistance, distance_along_path, functional_distance
from landscape.analyze.paths import ProjectedPath, distance_from_init, distance_from_origin, pairwise_end_distances
from landscape.analyze.pca import TrajectoryPCA
from landscape.analyze.permutation import (
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    random_permutation,
)
from landscape.analyze.permutation_spec import AxisPerm, PermutationSpec, PermutationSpecError
from landscape.analyze.permutation_tracing import permutation_spec
from landscape.analyze.saturation import measure_saturation
from landscape.analyze.saturation_recorder import SaturationRecorder
from landscape.analyze.saturation_results import SaturationHistory, SaturationStats
from landscape.analyze.slice_results import BarycentricResult, BilinearResult, LineResult, PlaneResult
from landscape.analyze.surface import (
    barycentric,
    bilinear,
    line,
    line_distance,
    plane,
    plane_through,
    random_plane,
)
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
from landscape.curvature.training import (
    CurvatureRecorder,
    CurvatureTrace,
    edge_of_stability_summary,
    gradient_descent_curvature,
    trajectory_curvature,
)
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
    "line",
    "line_distance",
    "bilinear",
    "barycentric",
    "plane",
    "random_plane",
    "plane_through",
    "LineResult",
    "PlaneResult",
    "BilinearResult",
    "BarycentricResult",
    "functional_distance",
    "distance_along_path",
    "FunctionalDistance",
    "DistanceResult",
    # PCA, Hessian, saturation
    "TrajectoryPCA",
    "ProjectedPath",
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
    "SaturationRecorder",
    # curvature over training, sharpness
    "trajectory_curvature",
    "CurvatureRecorder",
    "CurvatureTrace",
    "gradient_descent_curvature",
    "edge_of_stability_summary",
    "worst_case_sharpness",
    "average_sharpness",
    "m_sharpness",
    "perturbation_scale",
    "SharpnessResult",
    # connecting minima: permutations, alignment, barriers, curves
    "PermutationSpec",
    "PermutationSpecError",
    "AxisPerm",
    "permutation_spec",
    "apply_permutation",
    "compose_permutations",
    "invert_permutation",
    "identity_permutation",
    "random_permutation",
    "AlignmentResult",
    "weight_matching",
    "matching_objective",
    "activation_correlations",
    "activation_matching",
    "repair",
    "interpolate_models",
    "BarrierResult",
    "barrier_values",
    "barrier_of",
    "loss_barrier",
    "CurveKind",
    "ModeCurve",
    "CurveResult",
    "curve_coefficients",
    "fit_curve",
    "evaluate_curve",
]
