"""Helper for ``test_trajectory.py``: trajectory writers that get SIGKILLed, and what they write.

``python tests/_trajectory_writer.py serve`` imports torch once, then for every stdin line
``<directory> <plan>`` forks a writer child (cheap, unlike a fresh interpreter) and waits for it.
Stdout carries, in order: ``pid <pid>`` and ``done <i>`` (printed right after ``append`` returned for
snapshot ``i``: with the default ``durable=True`` it is then on disk and synced; with ``"flush"`` only
queued for the writer thread) from the child, then ``exit <wait status>`` from the server.

Plans (``<plan>[:flush]``: the writer uses ``durable="flush"`` and calls ``flush`` after every second
append, printing ``flushed <i>``: snapshots up to ``i`` are on disk and synced; otherwise the default ``durable=True``):
    ``upto:N``  append until the store holds ``N`` snapshots, then exit normally.
    ``run:N``   the same; the test SIGKILLs the child at some moment before.
    ``kill:K``  SIGKILL itself at the K-th file-system call of the store (:data:`IO_MODULES`) after opening
                the store (in the writer thread for pack and index writes); a ``write``, ``writev`` or ``pwrite``
                call first writes half of its bytes (a torn snapshot, batch of snapshots, index line or reserve).
    ``open:K``  the same, counting from before opening (kills during crash recovery).

Every snapshot is a deterministic function of its index (:func:`expected`), so the test can check
bitwise that whatever the store returns is exactly what a writer wrote.

``python tests/_trajectory_writer.py hold <directory>`` opens the store for appending, prints
``held`` and keeps it open until its stdin closes (a live writer for the lock test).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import landscape.trajectory.store as trajectory_module  # noqa: E402
from landscape.params import ParamLayout  # noqa: E402
from landscape.trajectory import check, fileformat, files, index, writer  # noqa: E402

#: The modules of the store that make file-system calls: a test replaces ``os`` in all of them at once.
IO_MODULES = (trajectory_module, index, files, writer, check, fileformat)

SWITCH = 6  # snapshots [0, SWITCH) use the small layout, later ones the grown network's
_LAYOUTS = {
    False: ParamLayout.from_model(nn.Sequential(nn.Linear(40, 50), nn.Linear(50, 3))),
    True: ParamLayout.from_model(nn.Sequential(nn.Linear(40, 80), nn.Linear(80, 3))),
}
_COUNTED = {
    *("open", "write", "writev", "pwrite", "fsync", "fdatasync", "close", "replace", "truncate", "ftruncate", "unlink"),
}


def set_os(value: Any, setattr: Any = setattr) -> None:
    """Make every module of :data:`IO_MODULES` call ``value`` for ``os`` (``setattr``: e.g. ``monkeypatch.setattr``)."""
    for module in IO_MODULES:
        setattr(module, "os", value)


def expected(i: int) -> dict[str, Any]:
    """Keyword arguments of ``Trajectory.append`` for snapshot ``i``, plus its vector as ``vector``."""
    layout = _LAYOUTS[i >= SWITCH]
    g = torch.Generator().manual_seed(1000 + i)
    return {
        "vector": torch.randn(layout.numel, generator=g, dtype=torch.float64),
        "step": 10 * i,
        "epoch": i / 4,
        "wall_time": 1000.0 + i,
        "metrics": {"loss": 1.0 / (i + 1)},
        "tags": {"run": "kill", "i": i, "event": "grow" if i == SWITCH else None},
        "buffers": {"bn.running_mean": torch.randn(5, generator=g), "bn.num_batches_tracked": torch.tensor(i)},
        "layout": layout,
    }


class _KillingOs:
    """Stands in for ``os`` inside the store's modules; SIGKILLs the process at the K-th counted call."""

    def __init__(self, k: int) -> None:
        self.k, self.n = k, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(os, name)
        if name not in _COUNTED:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            if self.n == self.k:
                if name == "write":
                    attr(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)])
                elif name == "writev":  # a torn group commit: half of the batch's bytes
                    data = b"".join(bytes(b) for b in args[1])
                    os.write(args[0], data[: max(1, len(data) // 2)])
                elif name == "pwrite":  # a torn extension of a durable="append" pack's zero reserve
                    os.pwrite(args[0], bytes(args[1])[: max(1, len(args[1]) // 2)], args[2])
                os.kill(os.getpid(), signal.SIGKILL)
            return attr(*args, **kwargs)

        return call


def _say(msg: str) -> None:
    # One write(2) per line: a SIGKILL can then never leave half a line for the server's next message.
    os.write(1, f"{msg}\n".encode())


def _child(directory: str, plan: str) -> None:
    _say(f"pid {os.getpid()}")
    kind, arg, *how = plan.split(":")
    durable = how[0] if how else True
    if kind == "open":
        set_os(_KillingOs(int(arg)))
    traj = trajectory_module.Trajectory(directory, durable=durable)
    if kind == "kill":
        set_os(_KillingOs(int(arg)))
    stop = int(arg) if kind in ("upto", "run") else 10**9
    while len(traj) < stop:
        i = len(traj)
        kw = expected(i)
        traj.append(kw.pop("vector"), **kw)
        _say(f"done {i}")
        if durable == "flush" and i % 2:
            traj.flush()
            _say(f"flushed {i}")
    traj.close()


def serve() -> None:
    """Fork one writer per stdin command; report its output and wait status on stdout."""
    torch.set_num_threads(1)
    while line := sys.stdin.readline():
        directory, plan = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(directory, plan)
            except BaseException:  # noqa: BLE001 - report anything, then leave without cleanup handlers
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        _say(f"exit {status}")


def hold(directory: str) -> None:
    """Hold the store open for appending until stdin closes."""
    with trajectory_module.Trajectory(directory):
        _say("held")
        sys.stdin.read()


if __name__ == "__main__":
    hold(sys.argv[2]) if sys.argv[1] == "hold" else serve()
