"""Analyzers: directions, slices, functional distance, trajectory PCA, curves, barriers, alignment, saturation.

The package re-exports the public names of its modules: the union of their ``__all__``
(the module ``permutation_spec`` goes by ``_permutation_spec`` here: a function the package exports has its name).
"""

# ruff: noqa: F403 (each star import takes a module's ``__all__``, which the package re-exports)

from landscape.analyze import (
    align,
    barrier,
    curves,
    directions,
    distance,
    histogram,
    paths,
    pca,
    permutation,
    permutation_tracing,
    saturation,
    saturation_recorder,
    saturation_results,
    slice_results,
    surface,
)
from landscape.analyze import permutation_spec as _permutation_spec
from landscape.analyze.align import *
from landscape.analyze.barrier import *
from landscape.analyze.curves import *
from landscape.analyze.directions import *
from landscape.analyze.distance import *
from landscape.analyze.histogram import *
from landscape.analyze.paths import *
from landscape.analyze.pca import *
from landscape.analyze.permutation import *
from landscape.analyze.permutation_spec import *
from landscape.analyze.permutation_tracing import *
from landscape.analyze.saturation import *
from landscape.analyze.saturation_recorder import *
from landscape.analyze.saturation_results import *
from landscape.analyze.slice_results import *
from landscape.analyze.surface import *

__all__ = sorted(
    [
        *align.__all__,
        *barrier.__all__,
        *curves.__all__,
        *directions.__all__,
        *distance.__all__,
        *histogram.__all__,
        *paths.__all__,
        *pca.__all__,
        *permutation.__all__,
        *_permutation_spec.__all__,
        *permutation_tracing.__all__,
        *saturation.__all__,
        *saturation_recorder.__all__,
        *saturation_results.__all__,
        *slice_results.__all__,
        *surface.__all__,
    ]
)
