"""Persistent Neurons: the persistent penalty, the persistent trainer and championship selection.

Source: "Persistent Neurons" (``shared/papers/000_*.txt``, extended version; ``001_*.txt``, preprint).
"""

from persistence.fast import (
    FastPersistentResult,
    SeedsResult,
    fast_persistent_run,
    he_init_vectors,
    mlp_loss_and_grad,
    mlp_widths,
    stack_to_vectors,
    train_seeds_batched,
    vectors_to_stack,
)
from persistence.penalty import PersistentPenalty
from persistence.trainer import IterationResult, PersistentMode, PersistentTrainer, select_champion

__all__ = [
    "PersistentPenalty",
    "PersistentTrainer",
    "PersistentMode",
    "IterationResult",
    "select_champion",
    "FastPersistentResult",
    "SeedsResult",
    "fast_persistent_run",
    "he_init_vectors",
    "mlp_loss_and_grad",
    "mlp_widths",
    "stack_to_vectors",
    "train_seeds_batched",
    "vectors_to_stack",
]
