"""The worker processes of ``make_all --jobs N``: a figure whose process dies fails alone.

:class:`concurrent.futures.ProcessPoolExecutor` cannot say which task's process died (killed by the kernel for
memory, a segfault in a C extension): it marks the pool broken and fails every running and queued task, so one
figure killed midway took every figure not yet finished with it. Here each worker runs one figure at a time
over its own pipe, the parent watches each worker's pipe and process sentinel, and a worker that dies
fails the one figure it was running; a fresh worker takes its place for the figures still queued.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Sequence
from multiprocessing.context import SpawnContext
from typing import Any

__all__ = ["WorkerDied", "run_tasks"]


class WorkerDied(Exception):
    """The process running a task ended without returning its result.

    Attributes:
        exitcode: The process's exit code (negative: killed by that signal).
        runtime_s: Seconds from handing the task over to noticing the death.
    """

    def __init__(self, exitcode: int | None, runtime_s: float) -> None:
        self.exitcode, self.runtime_s = exitcode, runtime_s
        how = f"exit code {exitcode}"
        if exitcode is not None and exitcode < 0:
            try:
                how = f"killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"killed by signal {-exitcode}"
        hint = "; out of memory?" if exitcode == -signal.SIGKILL else ""
        super().__init__(f"the worker process running this figure died ({how}{hint}) before returning its result")


def _worker(
    conn: multiprocessing.connection.Connection, fn: Callable[..., Any], init: Callable[..., None], init_args: tuple
) -> None:
    """A worker's loop: run ``fn(*args)`` for each task received, send back the result, stop at ``None``."""
    init(*init_args)
    while (args := conn.recv()) is not None:
        try:
            conn.send((True, fn(*args)))
        except Exception:  # noqa: BLE001 - reported to the parent as this task's error
            conn.send((False, traceback.format_exc()))


class _Slot:
    """One worker process, its end of the pipe and the task it is running."""

    def __init__(self, ctx: SpawnContext, fn: Callable[..., Any], init: Callable[..., None], init_args: tuple) -> None:
        self.conn, child = ctx.Pipe()
        # not a daemon: a figure may start processes of its own
        self.proc = ctx.Process(target=_worker, args=(child, fn, init, init_args), daemon=False)
        self.proc.start()
        child.close()  # the parent's copy: EOF on self.conn once the worker is gone
        self.key: Any = None
        self.t0 = 0.0

    def give(self, key: Any, args: tuple) -> None:
        self.conn.send(args)  # the key stays here: it need not pickle
        self.key, self.t0 = key, time.perf_counter()

    def stop(self, *, now: bool = True) -> None:
        """End the worker: at once (``now``), or after it has had a moment to leave its loop on its own."""
        if not now:
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(5)
        self.conn.close()


def run_tasks(
    ctx: SpawnContext,
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, tuple]],
    workers: int,
    init: Callable[..., None],
    init_args: tuple = (),
) -> Generator[tuple[Any, Any], None, None]:
    """Run ``fn(*args)`` for every ``(key, args)`` of ``tasks`` in ``workers`` processes, in the order given.

    Args:
        ctx: The multiprocessing context (spawn).
        fn: A module-level function (the workers import it by name).
        tasks: ``(key, args)`` pairs; tasks start in this order.
        workers: Number of worker processes (at most ``len(tasks)`` start).
        init: Run once in each worker before its first task.
        init_args: Arguments of ``init``.

    Yields:
        ``(key, result)`` as tasks finish; ``result`` is ``fn``'s return value, a :class:`WorkerDied` when the
        worker died running it, or a :class:`RuntimeError` holding the traceback when ``fn`` raised. Workers still
        running when the caller stops iterating (an interrupt) are terminated.
    """
    queue = deque(tasks)
    slots: list[_Slot] = []
    try:
        for _ in range(min(workers, len(queue))):
            slots.append(_Slot(ctx, fn, init, init_args))
            slots[-1].give(*queue.popleft())
        while slots:
            ready = set(multiprocessing.connection.wait([s.conn for s in slots] + [s.proc.sentinel for s in slots]))
            for slot in [s for s in slots if s.conn in ready or s.proc.sentinel in ready]:
                fresh: _Slot | None = slot
                try:  # a result already sent counts even if the worker died right after
                    ok, result = slot.conn.recv()
                    key, result = slot.key, result if ok else RuntimeError(result)
                except (EOFError, OSError):
                    slot.proc.join(5)
                    key, result = slot.key, WorkerDied(slot.proc.exitcode, time.perf_counter() - slot.t0)
                    slot.stop()
                    slots.remove(slot)
                    fresh = None
                while queue:  # the next task: to this worker, or to a fresh one in place of a dead one
                    if fresh is None:
                        fresh = _Slot(ctx, fn, init, init_args)
                        slots.append(fresh)
                    try:
                        fresh.give(*queue[0])
                    except OSError:  # died between two tasks: the task goes to a fresh worker
                        fresh.stop()
                        slots.remove(fresh)
                        fresh = None
                        continue
                    queue.popleft()
                    break
                else:
                    if fresh is not None:  # nothing left for it
                        with contextlib.suppress(OSError):
                            fresh.conn.send(None)
                        fresh.stop(now=False)
                        slots.remove(fresh)
                yield key, result
    finally:
        for slot in slots:
            slot.stop()
