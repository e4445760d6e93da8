"""Training that records its path: the loop, its callbacks, the optimizers (RK2, switching) and recorders."""

from landscape.train.loop import (
    Callback,
    EpochEvent,
    NonFiniteLossError,
    OnNonFinite,
    RecordTrajectory,
    StepEvent,
    Trainer,
    evaluate_dataset,
    fit,
    seed_everything,
)
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
from landscape.train.recorder import (
    FACTORY_KEY,
    Recorder,
    factory_reference,
)

__all__ = [
    "Callback",
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
    "make_optimizer",
    "seed_everything",
]
