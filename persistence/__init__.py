"""Persistent Neurons: the persistent penalty, the persistent trainer and championship selection.

Source: "Persistent Neurons" (``shared/papers/000_*.txt``, extended version; ``001_*.txt``, preprint).
"""

from persistence.penalty import PersistentPenalty
from persistence.trainer import IterationResult, PersistentMode, PersistentTrainer, select_champion

__all__ = ["PersistentPenalty", "PersistentTrainer", "PersistentMode", "IterationResult", "select_champion"]
