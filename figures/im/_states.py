"""The Im pool's switch states on disk: a plain run's trainer state at a switch step, for the runs switched from it.

A switched run (Figs. 7, 12-15) computes what the plain run of its first method computes up to its switch, so it
continues from that run's :func:`~landscape.train.checkpoint.trainer_state` at the switch step
(:func:`figures.im._training._continue_switch`). When the plain run was trained by another figure (or process),
the state comes from the file it left in ``<pool>/_states/`` instead of from training the first method again.

A file is written whole and renamed (:func:`landscape.trajectory.build_once`) and holds a magic line, the SHA-256
of the rest, and the rest: ``torch.save`` of ``{"run", "step", "code", "loss", "state"}``, read with
``torch.load(weights_only=True)`` (no code runs). A file that is missing, damaged (its digest does not match: a
flipped bit in a tensor is not caught by ``torch.load``), of another run or step, or written by other code reads as
``None``, and the caller trains the first method again: never a wrong state.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from landscape.trajectory import build_once

MAGIC = b"figures.im switch state 1\n"
"""The first line of a state file (the format's version: another one reads as missing)."""

_DIGEST = hashlib.sha256().digest_size


def state_file(root: Path, key: str, step: int, code: str) -> Path:
    """Where the state of run ``key`` (a :meth:`RunSpec.key`) at ``step``, trained by ``code``, lives under ``root``.

    ``root`` is the pool's directory (its name hashes the settings and :data:`figures.im._training.TRAINING_CODE`);
    ``code`` names what else the state depends on (:func:`figures.im._runs._state_code`: the ``landscape`` sources
    and the torch thread count), so a state taken under other code or threads is never continued from.
    """
    return root / "_states" / f"{key}-step{step}-{code}.pt"


def write_state(file: Path, key: str, step: int, code: str, state: Mapping[str, Any], loss: float) -> None:
    """Write a state once (kept as it is when the file exists); an unwritable cache is skipped.

    Args:
        file: :func:`state_file`.
        key: The plain run's key.
        step: The epoch-end step the state was taken at.
        code: The digest in the file's name (:func:`state_file`), checked again when it is read.
        state: :func:`~landscape.train.checkpoint.trainer_state` at ``step``.
        loss: The training loss of that step (the switch point's ``batch_loss``).
    """
    if not math.isfinite(loss) or int(state["step"]) != step:
        raise ValueError(f"a switch state is taken at an epoch end with a finite loss: step {step}, loss {loss}")

    def dump(tmp: Path) -> None:
        buf = io.BytesIO()
        torch.save({"run": key, "step": step, "code": code, "loss": float(loss), "state": dict(state)}, buf)
        payload = buf.getvalue()
        tmp.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)

    try:
        build_once(file, dump)
    except OSError:  # a read-only cache: the state serves this process only
        pass


def read_state(file: Path, key: str, step: int, code: str) -> tuple[dict[str, Any], float] | None:
    """The state :func:`write_state` wrote for run ``key`` at ``step`` by ``code``, with its loss; else ``None``.

    ``None`` for a missing file and for one that cannot be the state asked for (damaged, another format, run, step
    or code: a file copied to another name); a damaged file is removed, so the caller's training writes it again.
    """
    try:
        blob = file.read_bytes()
    except OSError:
        return None
    head, n = len(MAGIC), len(MAGIC) + _DIGEST
    if blob[:head] == MAGIC and hashlib.sha256(blob[n:]).digest() == blob[head:n]:
        try:
            saved = torch.load(io.BytesIO(blob[n:]), weights_only=True)
        except Exception:  # noqa: BLE001 - a payload torch cannot read is a damaged file whatever the error
            saved = None
        if isinstance(saved, dict) and (saved.get("run"), saved.get("step"), saved.get("code")) == (key, step, code):
            state, loss = saved.get("state"), saved.get("loss")
            if isinstance(state, dict) and state.get("step") == step and isinstance(loss, float):
                return state, loss
    file.unlink(missing_ok=True)  # damaged: removed so the caller's training writes it again
    return None
