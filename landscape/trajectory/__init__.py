"""The trajectory store: snapshots of a training run on disk, written crash-safely and read back lazily.

* :mod:`~landscape.trajectory.store`: :class:`Trajectory`, the store itself (in memory or on disk);
* :mod:`~landscape.trajectory.records`: :class:`Snapshot` and :class:`Segment`, what it holds;
* :mod:`~landscape.trajectory.fileformat`: the on-disk format (sealed manifest and index, snapshot packs);
* :mod:`~landscape.trajectory.index`: the index as a reader holds it, and crash recovery;
* :mod:`~landscape.trajectory.writer`: the group-commit writer thread;
* :mod:`~landscape.trajectory.check`: ``check`` / ``repair`` / ``migrate`` and their :class:`CheckReport`;
* :mod:`~landscape.trajectory.capture`: what ``append_model`` takes from a model;
* :mod:`~landscape.trajectory.files`: the package's one atomic write and one advisory lock.
"""

from landscape.trajectory.cache import build_once, cache_lock, cached_file, cached_json, lock_path, temp_paths
from landscape.trajectory.check import CheckReport
from landscape.trajectory.fileformat import FORMAT_NAME, FORMAT_VERSION, CorruptTrajectoryError, TrajectoryError
from landscape.trajectory.files import file_lock, write_atomic
from landscape.trajectory.records import Segment, Snapshot
from landscape.trajectory.store import Trajectory

__all__ = [
    "build_once",
    "cache_lock",
    "cached_file",
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
    "file_lock",
    "write_atomic",
]
