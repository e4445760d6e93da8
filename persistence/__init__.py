"""Persistent Neurons: the persistent penalty, the persistent trainer and championship selection.

Source: "Persistent Neurons", cited as *PN* (the extended version: sections, equations, Algorithm 1 and figures by
its numbering) and *PN preprint* (the preprint, whose eq. 4-5 add the depth factor ``|L(w_ini) - L(w_0)|``).

Modules: :mod:`~persistence.penalty` (the penalty, its modes and the layer draw), :mod:`~persistence.trainer`
(the persistent trainer and its two engines), :mod:`~persistence.batched` (the fast engine),
:mod:`~persistence.mlp` (the MLP's stacked layout and hand-derived loss and gradient),
:mod:`~persistence.stepper` (the compiled multi-step function), :mod:`~persistence.fast` (the paper-scale
1-D regression runs and their results).
"""

from persistence.fast import FastPersistentResult, SeedsResult, fast_persistent_run, train_seeds_batched
from persistence.mlp import he_init_vectors, mlp_loss_and_grad, mlp_widths, stack_to_vectors, vectors_to_stack
from persistence.penalty import PersistentPenalty, draw_layer
from persistence.trainer import Engine, IterationResult, PersistentMode, PersistentTrainer, select_champion

__all__ = [
    "PersistentPenalty",
    "PersistentTrainer",
    "PersistentMode",
    "Engine",
    "IterationResult",
    "draw_layer",
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
