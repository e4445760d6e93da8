"""Curvature: the Hessian operator, its spectrum (Lanczos, SLQ, traces), sharpness, and curvature over training.

The package re-exports the public names of its modules: the union of their ``__all__``
(the module ``lanczos`` goes by ``_lanczos`` here: a function the package exports has its name).
"""

# ruff: noqa: F403 (each star import takes a module's ``__all__``, which the package re-exports)

from landscape.curvature import eigensolver, hessian, options, sharpness, spectrum, training
from landscape.curvature import lanczos as _lanczos
from landscape.curvature.eigensolver import *
from landscape.curvature.hessian import *
from landscape.curvature.lanczos import *
from landscape.curvature.options import *
from landscape.curvature.sharpness import *
from landscape.curvature.spectrum import *
from landscape.curvature.training import *

__all__ = sorted(
    [
        *eigensolver.__all__,
        *hessian.__all__,
        *_lanczos.__all__,
        *options.__all__,
        *sharpness.__all__,
        *spectrum.__all__,
        *training.__all__,
    ]
)
