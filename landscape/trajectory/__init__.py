"""The trajectory store: snapshots of a training run on disk, written crash-safely and read back lazily."""

from landscape.trajectory.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckReport,
    CorruptTrajectoryError,
    Segment,
    Snapshot,
    Trajectory,
    TrajectoryError,
)

__all__ = [
    "CheckReport",
    "CorruptTrajectoryError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Segment",
    "Snapshot",
    "Trajectory",
    "TrajectoryError",
]
