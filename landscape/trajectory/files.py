"""The file layer: the one atomic write and the one advisory lock of the package.

Every module of :mod:`landscape` that replaces a file does it through :func:`write_atomic` (write a
temporary file, ``fsync`` it, rename it over the target, ``fsync`` the directory): a reader sees the old
file or the new one, never a partial one, and with ``durable`` the new one survives a power loss once
the call returns. Single-writer exclusion is :func:`acquire_lock` (``flock``: released by the kernel when
the holder dies, SIGKILL included, so there is no stale lock to clean up) or, around a block,
:func:`file_lock`.

File-system calls go through this module's ``os``, so a test can count or fail them (the kill tests of
the trajectory store replace ``os`` in every module of :mod:`landscape.trajectory` that does I/O).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:  # advisory locks; released by the OS when the holder dies (also on SIGKILL)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["acquire_lock", "file_lock", "fsync_path", "write_all", "write_all_at", "write_atomic"]


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to the descriptor ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:  # one write in practice
        view = view[os.write(fd, view) :]


def write_all_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` to ``fd`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or directory by path (for a directory: makes its entries, e.g. a rename, durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` by ``data`` atomically: readers see the old content or the new, never a partial file.

    Writes ``<path>.tmp``, then ``os.replace`` renames it over ``path``; if either fails, ``<path>.tmp`` is removed.

    Args:
        path: The file to write (its directory must exist).
        data: Its new content.
        durable: ``fsync`` the temporary file before the rename and the directory after it, so the new
            content survives an operating-system crash or power loss once the call returns. Without it
            the write is still atomic with respect to other processes and to the death of this one.
    """
    path = Path(path)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a failed write leaves the old file and nothing else
        raise
    if durable:
        fsync_path(path.parent)  # make the rename itself survive a power loss


def acquire_lock(path: str | os.PathLike[str], *, wait: bool = False) -> int | None:
    """Take an exclusive advisory lock (``flock``) on a directory or a lock file.

    A directory is locked through its own descriptor (no lock file whose deletion could let a second
    holder in); any other path is a lock file, created if missing. The lock lasts until the returned
    descriptor is closed, or the process dies.

    Args:
        path: A directory, or the lock file.
        wait: Block until the lock is free; otherwise return ``None`` at once if another holder has it.

    Returns:
        The descriptor holding the lock (close it to release), or ``None`` if it is held elsewhere.
    """
    fd = os.open(path, os.O_RDONLY) if os.path.isdir(path) else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover - Windows: no advisory locks
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, wait: bool = True) -> Iterator[bool]:
    """Hold :func:`acquire_lock` on ``path`` for the block (its parent directories are created).

    Args:
        path: A directory, or the lock file.
        wait: Block until the lock is free; otherwise yield ``False`` at once if another holder has it.

    Yields:
        Whether the lock is held (always ``True`` with ``wait``).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = acquire_lock(path, wait=wait)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)
