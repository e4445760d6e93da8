"""The keyword groups of the curvature functions, each declared and documented once, with their defaults.

A group is a ``TypedDict`` that several public functions take as ``**options: Unpack[Group]``; their signatures
list every keyword with its default (:func:`landscape._options.shows_keywords`), and a wrong keyword is a
``TypeError``. The operator's settings (:class:`OperatorOptions`) are taken by :class:`~landscape.HessianOperator`
and :func:`~landscape.hessian_spectrum`; the spectrum's (:class:`SpectrumOptions`) by
:func:`~landscape.curvature.spectrum.spectrum_of` and :func:`~landscape.hessian_spectrum`; the sharpness measures
take :class:`PerturbationOptions` (and :class:`AscentOptions` for the gradient-ascent ones); curvature over training
(:func:`~landscape.curvature.training.trajectory_curvature`, :class:`~landscape.curvature.training.CurvatureRecorder`)
takes :class:`CurvatureOptions`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, TypedDict

import torch

from landscape.functional import BNMode

__all__ = [
    "OperatorOptions",
    "SpectrumOptions",
    "HessianSpectrumOptions",
    "Norm",
    "Adaptive",
    "Distribution",
    "PerturbationOptions",
    "AscentOptions",
    "OPERATOR_DEFAULTS",
    "SPECTRUM_DEFAULTS",
    "SHARPNESS_DEFAULTS",
    "CurvatureOptions",
    "CURVATURE_DEFAULTS",
]


# =========================================================================== the Hessian operator and its spectrum
class OperatorOptions(TypedDict, total=False):
    """How a :class:`HessianOperator` is built (all optional); also taken by :func:`~landscape.hessian_spectrum`.

    Attributes:
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics); ``None`` (default) means
            ``"eval"`` and warns if the model is in train mode with BatchNorm or Dropout.
        micro_batch_size: ``"auto"`` (default), a size, or ``None`` to use the batches as given.
        memory_budget: Bytes the cached gradient graphs may take (default 2 GiB); above it graphs are rebuilt
            per product.
        cache: Force (``True``) or forbid (``False``) graph caching; ``None`` (default) decides by the budget.
        dtype: Compute dtype (e.g. ``torch.float64`` for references); default the model's, float32 for a
            half-precision model.
        fast_ops: Use the double-backward-friendly convolution and eval BatchNorm (same values; default
            ``True``).
        channels_last: Run 2-D convolutions channels-last (``True``/``False``), or ``"auto"`` (default): when
            most ``nn.Conv2d`` layers have at least 8 input channels (oneDNN ran those 1.1-1.4x faster so here,
            and LeNet-5's 1- and 6-channel layers slower). Only with ``fast_ops``.
    """

    bn_mode: BNMode | str | None
    micro_batch_size: int | str | None
    memory_budget: int | str
    cache: bool | None
    dtype: torch.dtype | None
    fast_ops: bool
    channels_last: bool | str


OPERATOR_DEFAULTS: dict[str, Any] = {
    "micro_batch_size": "auto",
    "memory_budget": 2 * 2**30,
    "fast_ops": True,
    "channels_last": "auto",
}


class SpectrumOptions(TypedDict, total=False):
    """The keywords of the SLQ spectrum, :func:`spectrum_of` and :func:`hessian_spectrum` (all optional).

    Attributes:
        n_probes: SLQ probe vectors (PyHessian's ``n_v``; default 4).
        steps: Lanczos steps per probe (PyHessian's ``iter``; default 100).
        top_k: Top eigenvalues to compute (default 5; 0 skips; above the Hessian's dimension ``n``: all ``n``,
            with a warning).
        trace_products: Product budget of each of Hutchinson and Hutch++ (default 0: skips both; else at least
            3, or the Hessian's dimension for the exact trace).
        tol: Eigenvalue tolerance for the top-k (default ``1e-6``).
        seed: Seed of every random vector (default 0).
        data_description: Description of the data for the provenance (default: the problem's).
        progress: Show progress bars (default ``False``).
    """

    n_probes: int
    steps: int
    top_k: int
    trace_products: int
    tol: float
    seed: int
    data_description: str
    progress: bool


class HessianSpectrumOptions(SpectrumOptions, OperatorOptions, total=False):
    """The keywords of :func:`hessian_spectrum`: the spectrum's and the operator's (all optional).

    They are :class:`SpectrumOptions` and :class:`~landscape.curvature.hessian.OperatorOptions`.
    """


SPECTRUM_DEFAULTS: dict[str, Any] = {
    "n_probes": 4,
    "steps": 100,
    "top_k": 5,
    "trace_products": 0,
    "tol": 1e-6,
    "seed": 0,
    "data_description": "",
    "progress": False,
    **OPERATOR_DEFAULTS,
}


# =========================================================================== sharpness
class Norm(str, enum.Enum):
    """Norm of the perturbation ball (on ``u = delta / c``)."""

    L2 = "l2"
    LINF = "linf"


class Adaptive(str, enum.Enum):
    """Scale ``c`` of the perturbation ``delta = c * u``."""

    NONE = "none"  # c = 1
    ELEMENTWISE = "elementwise"  # c = |theta| + eta
    FILTER = "filter"  # c = ||filter|| + eta (|theta| for vector tensors)


class Distribution(str, enum.Enum):
    """Random perturbation of average-case sharpness."""

    GAUSSIAN = "gaussian"  # u ~ N(0, radius^2 I)
    SPHERE = "sphere"  # u uniform on the sphere ||u||_2 = radius


class PerturbationOptions(TypedDict, total=False):
    """The keywords of every sharpness measure (all optional).

    Attributes:
        adaptive: ``"none"`` (default), ``"elementwise"`` or ``"filter"`` (see the module docstring).
        eta: Offset of the adaptive scale (default 0).
        params: Parameters to perturb: ``"all"`` (default), ``"trainable"``, or tensor / layer names.
        seed: Seed of the random draws: starting points, perturbations, the batches' permutation (default 0).
        data_description: Text for the provenance (default ``""``).
        progress: Show a progress bar, over ascent steps, samples or batches (default quiet, as every analyzer).
    """

    adaptive: Adaptive | str
    eta: float
    params: str | Sequence[str]
    seed: int
    data_description: str
    progress: bool


class AscentOptions(PerturbationOptions, total=False):
    """The keywords of the gradient-ascent measures: :class:`PerturbationOptions` and the ascent (all optional).

    Attributes:
        norm: ``"l2"`` (default) or ``"linf"``.
        steps: Ascent steps per restart, and per batch for m-sharpness (default 20).
        restarts: Random restarts, per batch for m-sharpness (default 1).
        step_size: First step as a fraction of ``rho`` (default 1).
    """

    norm: Norm | str
    steps: int
    restarts: int
    step_size: float


SHARPNESS_DEFAULTS: dict[str, Any] = {
    "adaptive": Adaptive.NONE,
    "eta": 0.0,
    "params": "all",
    "seed": 0,
    "data_description": "",
    "progress": False,
    "norm": Norm.L2,
    "steps": 20,
    "restarts": 1,
    "step_size": 1.0,
}


# =========================================================================== curvature over training
class CurvatureOptions(TypedDict, total=False):
    """What is measured at each point of curvature over training (all optional).

    Taken by :func:`~landscape.curvature.training.trajectory_curvature` and
    :class:`~landscape.curvature.training.CurvatureRecorder`.

    Attributes:
        k: Top eigenvalues per point (default 1).
        tol: Relative residual tolerance of the Lanczos stopping rule (default ``1e-4``).
        warm_start: Start Lanczos from the previous points' eigenvectors (default ``True``).
        extrapolate: Degree of the polynomial (in the step) through the last ``extrapolate + 1`` points'
            eigenvectors that gives the start vectors (default 2; 0: the last vectors as they are).
        per_layer: Also the top eigenvalue of each layer's diagonal Hessian block (weight and bias together;
            default ``False``).
        trace_products: Hutch++ products for a trace estimate per point (default 0: skips the trace; else at
            least 3, refused at construction).
        max_steps: Product limit per Lanczos run (default as :func:`landscape.hessian_eigenpairs`).
        block: Lanczos block size (default ``min(k, 2)``; warm: the start block holds all ``k`` previous
            vectors, then the space grows by ``block`` residuals per step).
        certify: Check each Lanczos result for missed eigenvalues (default ``True``; see
            :func:`landscape.curvature.eigensolver.top_eigenpairs`). A warm start pays ``max(6, 0.15 m)``
            products for it at every point (``m`` those of the iteration): it alone catches a start that
            lacks the top eigenvector (e.g. an exact symmetry of the network keeping it out of the previous
            vectors' Krylov space).
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics of the given batches); see
            :class:`~landscape.curvature.hessian.HessianOperator`. Default: the :class:`~landscape.problem.Problem`'s
            when one is given, else ``"eval"``.
        dtype: Compute dtype of the Hessian (default the model's; float64 for references).
        seed: Seed of the random start vectors (default 0).
        params: The parameters whose Hessian block is measured: ``None`` or ``"all"`` (default: every floating
            parameter, frozen ones included, as in the parameter vector), ``"trainable"`` (those with
            ``requires_grad=True``: the block that governs the training dynamics, and so the one to compare with
            ``2 / lr`` when some are frozen), or tensor / layer names. ``per_layer`` then covers the selected
            part of each layer.
    """

    k: int
    tol: float
    warm_start: bool
    extrapolate: int
    per_layer: bool
    trace_products: int
    max_steps: int | None
    block: int | None
    certify: bool
    bn_mode: BNMode | str | None
    dtype: torch.dtype | None
    seed: int
    params: str | Sequence[str] | None


CURVATURE_DEFAULTS: dict[str, Any] = {
    "k": 1,
    "tol": 1e-4,
    "warm_start": True,
    "extrapolate": 2,
    "per_layer": False,
    "trace_products": 0,
    "certify": True,
    "bn_mode": None,
    "seed": 0,
    "params": None,
}
