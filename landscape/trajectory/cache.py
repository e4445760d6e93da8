"""Train once, cache under a lock: the one cached-run helper for results shared between processes.

Several processes (the figure gallery's ``make_all --jobs``, two notebooks) may ask for the same expensive
result at the same time. :func:`build_once` makes exactly one of them compute it and the others wait and read it:

1. If ``final`` exists, it is finished: return at once (no lock taken).
2. Otherwise take an exclusive advisory lock on ``.<name>.lock`` beside it, and look again (another process may
   have finished it while this one waited).
3. Remove any ``.<name>.tmp-*`` left by a writer that was killed: whoever holds the lock is the only writer, so
   a temporary path that exists now belongs to a dead process.
4. Let the caller build the result at a fresh temporary path ``.<name>.tmp-<pid>`` (a file or a directory),
   then ``os.replace`` it to ``final``: readers see the whole result or none of it, never a half-written one.

The lock is ``fcntl.flock``: released by the kernel when its holder dies, so a crash never leaves a stale lock
(on platforms without ``fcntl`` there is no locking: concurrent builders then both compute, and the last rename
wins, which is still never partial). The rename is atomic only within one file system: keep ``final`` and its
temporary sibling in one directory, as :func:`build_once` does.

:func:`cached_file` (and :func:`cached_json`, its JSON case) caches one file and reads it back; a finished file its
reader rejects (a disk error, a file written by something else) is removed under the lock and computed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["build_once", "cache_lock", "cached_file", "cached_json", "lock_path", "temp_paths"]


def lock_path(final: Path | str) -> Path:
    """The lock file guarding ``final``: ``<parent>/.<name>.lock``."""
    final = Path(final)
    return final.parent / f".{final.name}.lock"


def temp_paths(final: Path | str) -> list[Path]:
    """The temporary paths of builds of ``final`` that are in progress or were killed (``.<name>.tmp-*``)."""
    final = Path(final)
    return sorted(final.parent.glob(f".{final.name}.tmp-*"))


@contextlib.contextmanager
def cache_lock(path: Path | str, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on the file ``path`` (created with its parents if missing) for the block.

    Args:
        path: The lock file. Its content is never read or written.
        wait: Block until the lock is free (default). With ``False``, do not wait: the block runs at once and
            is told whether it got the lock.

    Yields:
        ``True`` when the lock is held; ``False`` only with ``wait=False`` when another process holds it (the
        block then runs without the lock and should skip the guarded work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows: no advisory locks
        yield True
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def build_once(final: Path | str, build: Callable[[Path], object], *, wait: bool = True) -> bool | None:
    """Make sure ``final`` exists, building it at most once across processes.

    Args:
        final: Where the finished result lives: a file or a directory (its parent is created if missing).
        build: Called as ``build(tmp)`` with a fresh temporary path beside ``final`` that does not exist yet; it
            must create the whole result there (a file or a directory; its return value is ignored). It is then
            renamed to ``final``. If ``build`` raises, the temporary path is removed and the exception propagates
            (``final`` stays absent).
        wait: If another process is building ``final``, wait for it (default). With ``False``, return ``None``
            at once instead, so the caller can do other work first and call again.

    Returns:
        ``True`` if this call built ``final``, ``False`` if it already existed (or another process built it
        while this one waited), ``None`` with ``wait=False`` when another process holds the lock.

    Raises:
        FileNotFoundError: If ``build`` returned without creating its temporary path.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> build_once(root / "answer.txt", lambda tmp: tmp.write_text("42"))
        True
        >>> build_once(root / "answer.txt", lambda tmp: tmp.write_text("never"))
        False
        >>> (root / "answer.txt").read_text()
        '42'
    """
    final = Path(final)
    if final.exists():
        return False
    with cache_lock(lock_path(final), wait=wait) as held:
        if not held:
            return None
        if final.exists():  # finished by another process while this one waited for the lock
            return False
        for stale in temp_paths(final):  # left by a killed writer: we hold the lock, so nobody else writes
            _remove(stale)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        try:
            build(tmp)
            if not tmp.exists():
                raise FileNotFoundError(f"build_once: build() did not create {tmp} (the result of {final})")
            os.replace(tmp, final)
        except BaseException:
            _remove(tmp)
            raise
    return True


_DAMAGED = (OSError, ValueError, KeyError, TypeError, EOFError)
"""What reading a damaged cache file raises (truncated, not the format, the wrong content)."""


def cached_file(
    path: Path | str, compute: Callable[[], Any], dump: Callable[[Any, Path], object], load: Callable[[Path], Any]
) -> Any:
    """A result computed once and cached as one file (see :func:`build_once`); a damaged file is built again.

    Args:
        path: The file.
        compute: Returns the result.
        dump: ``dump(result, tmp)`` writes the result to the fresh path ``tmp``.
        load: ``load(path)`` reads it back; raising ``OSError``, ``ValueError``, ``KeyError``, ``TypeError`` or
            ``EOFError`` means the file is damaged (a disk error, a writer outside :func:`build_once`, a file of
            another format): it is removed under the lock, and the result computed and written again.

    Returns:
        ``load(path)``: what the file holds, so a first and a later call return equal results.
    """
    path = Path(path)
    for attempt in range(2):
        build_once(path, lambda tmp: dump(compute(), tmp))
        try:
            return load(path)
        except _DAMAGED:
            if attempt:
                raise  # damaged as soon as written: not the file's fault, so not hidden
        with cache_lock(lock_path(path)):  # whoever holds the lock may be replacing it: look again under it
            try:
                return load(path)
            except _DAMAGED:
                path.unlink(missing_ok=True)
    raise AssertionError("unreachable")  # pragma: no cover


def cached_json(path: Path | str | None, compute: Callable[[], Any]) -> Any:
    """A JSON-compatible result computed once and cached as a JSON file (see :func:`cached_file`).

    Args:
        path: The JSON file, or ``None`` to compute without caching.
        compute: Returns the result (JSON-compatible; non-finite floats are written as ``NaN``/``Infinity``).

    Returns:
        The result as read back from the file (so a first and a later call return equal objects), or
        ``compute()`` itself when ``path`` is ``None``. A file that is not valid JSON is computed again.
    """
    if path is None:
        return compute()
    return cached_file(
        path, compute, lambda value, tmp: tmp.write_text(json.dumps(value)), lambda p: json.loads(p.read_text())
    )
