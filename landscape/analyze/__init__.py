"""Analyzers: directions, slices, functional distance, trajectory PCA, curves, barriers, alignment, saturation."""

from landscape.analyze.align import (
    AlignmentResult,
    activation_correlations,
    activation_matching,
    interpolate_models,
    matching_objective,
    repair,
    weight_matching,
)
from landscape.analyze.barrier import (
    BarrierResult,
    barrier_of,
    barrier_values,
    loss_barrier,
)
from landscape.analyze.curves import (
    CurveKind,
    CurveResult,
    ModeCurve,
    curve_coefficients,
    evaluate_curve,
    fit_curve,
)
from landscape.analyze.directions import (
    BiasBN,
    Normalization,
    directions_from_models,
    normalize_direction,
    orthogonalize,
    random_direction,
    random_directions,
)
from landscape.analyze.distance import (
    DistanceResult,
    FunctionalDistance,
    OutputKind,
    distance_along_path,
    functional_distance,
)
from landscape.analyze.histogram import StreamingHistogram
from landscape.analyze.paths import (
    ProjectedPath,
    distance_from_init,
    distance_from_origin,
    make_loss_at,
    pairwise_end_distances,
)
from landscape.analyze.pca import Center, TrajectoryPCA
from landscape.analyze.permutation import (
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    random_permutation,
)
from landscape.analyze.permutation_spec import AxisPerm, Permutation, PermutationSpec, PermutationSpecError
from landscape.analyze.permutation_tracing import permutation_spec
from landscape.analyze.saturation import HISTOGRAM_RANGES, measure_saturation
from landscape.analyze.saturation_recorder import SaturationRecorder
from landscape.analyze.saturation_results import ActivationValue, SaturationHistory, SaturationStats
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

__all__ = [
    "ActivationValue",
    "AlignmentResult",
    "AxisPerm",
    "BarrierResult",
    "BarycentricResult",
    "BiasBN",
    "BilinearResult",
    "Center",
    "CurveKind",
    "CurveResult",
    "DistanceResult",
    "FunctionalDistance",
    "HISTOGRAM_RANGES",
    "LineResult",
    "ModeCurve",
    "Normalization",
    "OutputKind",
    "Permutation",
    "PermutationSpec",
    "PermutationSpecError",
    "PlaneResult",
    "ProjectedPath",
    "SaturationHistory",
    "SaturationRecorder",
    "SaturationStats",
    "StreamingHistogram",
    "TrajectoryPCA",
    "activation_correlations",
    "activation_matching",
    "apply_permutation",
    "barrier_of",
    "barrier_values",
    "barycentric",
    "bilinear",
    "compose_permutations",
    "curve_coefficients",
    "directions_from_models",
    "distance_along_path",
    "distance_from_init",
    "distance_from_origin",
    "evaluate_curve",
    "fit_curve",
    "functional_distance",
    "identity_permutation",
    "interpolate_models",
    "invert_permutation",
    "line",
    "line_distance",
    "loss_barrier",
    "make_loss_at",
    "matching_objective",
    "measure_saturation",
    "normalize_direction",
    "orthogonalize",
    "pairwise_end_distances",
    "permutation_spec",
    "plane",
    "plane_through",
    "random_direction",
    "random_directions",
    "random_permutation",
    "random_plane",
    "repair",
    "weight_matching",
]
