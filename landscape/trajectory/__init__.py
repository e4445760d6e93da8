"""The trajectory store: snapshots of a training run on disk, written crash-safely and read back lazily."""

from landscape.trajectory.cache import build_once, cache_lock, cached_json, lock_path, temp_paths
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
    "build_once",
    "cache_lock",
    "cached_json",
    "lock_path",
    "temp_paths",
    "CheckReport",
    "CorruptTrajectoryError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Segment",
    "Snapshot",
    "Trajectory",
    "TrajectoryError",
]
