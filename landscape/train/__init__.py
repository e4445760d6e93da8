"""Training that records its path: the loop, its callbacks, the optimizers (RK2, switching) and recorders.

* :mod:`~landscape.train.loop`: :class:`Trainer` and :func:`fit`;
* :mod:`~landscape.train.callbacks`: step and epoch events, :class:`Callback`, :class:`RecordTrajectory`;
* :mod:`~landscape.train.metrics`: :func:`evaluate_dataset` and what the loop measures per epoch;
* :mod:`~landscape.train.optim`: :class:`RK2`, optimizer switches, :func:`make_optimizer`;
* :mod:`~landscape.train.recorder`: :class:`Recorder`, recording from any training loop;
* :mod:`~landscape.train.checkpoint`: checkpoint a :class:`Trainer` at an epoch end and resume it bit for bit.
"""

from landscape.factory import FACTORY_KEY
from landscape.train.callbacks import (
    Callback,
    EpochEvent,
    NonFiniteLossError,
    OnNonFinite,
    RecordTrajectory,
    StepEvent,
)
from landscape.train.checkpoint import CheckpointError, load_checkpoint, resume, save_checkpoint, trainer_state
from landscape.train.loop import Trainer, fit, seed_everything
from landscape.train.metrics import evaluate_dataset
from landscape.train.optim import (
    METHODS,
    RK2,
    RK_COEFFICIENTS,
    Method,
    Phase,
    RKMethod,
    SwitchSchedule,
    default_hyperparameters,
    make_optimizer,
)
from landscape.train.recorder import Recorder, factory_reference

__all__ = [
    "Callback",
    "CheckpointError",
    "EpochEvent",
    "FACTORY_KEY",
    "METHODS",
    "Method",
    "NonFiniteLossError",
    "OnNonFinite",
    "Phase",
    "RK2",
    "RKMethod",
    "RK_COEFFICIENTS",
    "RecordTrajectory",
    "Recorder",
    "StepEvent",
    "SwitchSchedule",
    "Trainer",
    "default_hyperparameters",
    "evaluate_dataset",
    "factory_reference",
    "fit",
    "load_checkpoint",
    "make_optimizer",
    "resume",
    "save_checkpoint",
    "seed_everything",
    "trainer_state",
]
