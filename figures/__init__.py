"""The papers' figures, reproduced, and the gallery that shows them with their claims checked.

Run ``python -m figures.make_all`` to write ``gallery/index.html``. Each ``figures/<paper>/<figure>.py``
registers its figure functions with :func:`register_figure`; see :mod:`figures.contract` for the contract
and a complete minimal figure module.
"""

from figures.contract import (
    Claim,
    FigureResult,
    FigureSpec,
    MissingDataError,
    Panel,
    Paper,
    Scale,
    discover,
    get_figure,
    register_figure,
    registered,
    require_data,
    temporary_registry,
)
from figures.schema import CLAIMS_SCHEMA

__all__ = [
    "CLAIMS_SCHEMA",
    "Claim",
    "FigureResult",
    "FigureSpec",
    "MissingDataError",
    "Panel",
    "Paper",
    "Scale",
    "discover",
    "get_figure",
    "register_figure",
    "registered",
    "require_data",
    "temporary_registry",
]
