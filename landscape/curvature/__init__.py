"""Curvature: the Hessian operator, its spectrum (Lanczos, SLQ, traces), sharpness, and curvature over training."""

from landscape.curvature.eigensolver import EigenPairs, Which, top_eigenpairs
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.lanczos import (
    LanczosRun,
    MatMat,
    TraceEstimate,
    default_sigma,
    gaussian_density,
    hutchinson,
    hutchpp,
    lanczos,
    rademacher,
    ritz,
    slq,
)
from landscape.curvature.sharpness import (
    Adaptive,
    Distribution,
    Norm,
    SharpnessResult,
    average_sharpness,
    m_sharpness,
    perturbation_scale,
    worst_case_sharpness,
)
from landscape.curvature.spectrum import (
    HessianSpectrum,
    TraceMethod,
    hessian_directions,
    hessian_eigenpairs,
    hessian_spectrum,
    hessian_trace,
    spectrum_of,
)
from landscape.curvature.training import (
    CurvatureRecorder,
    CurvatureTrace,
    edge_of_stability_summary,
    gradient_descent_curvature,
    trajectory_curvature,
)
from landscape.functional import BNMode

__all__ = [
    "Adaptive",
    "BNMode",
    "CurvatureRecorder",
    "CurvatureTrace",
    "Distribution",
    "EigenPairs",
    "HessianOperator",
    "HessianSpectrum",
    "LanczosRun",
    "MatMat",
    "Norm",
    "SharpnessResult",
    "TraceEstimate",
    "TraceMethod",
    "Which",
    "average_sharpness",
    "default_sigma",
    "edge_of_stability_summary",
    "gaussian_density",
    "gradient_descent_curvature",
    "hessian_directions",
    "hessian_eigenpairs",
    "hessian_spectrum",
    "hessian_trace",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "m_sharpness",
    "perturbation_scale",
    "rademacher",
    "ritz",
    "slq",
    "spectrum_of",
    "top_eigenpairs",
    "trajectory_curvature",
    "worst_case_sharpness",
]
