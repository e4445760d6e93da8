"""The Im figures' memos: a digest of what a computation on a network reads, and the memo frame they share.

:meth:`figures.im._runs.ImRuns.line_losses` and :func:`figures.im._measures.grad_norm` keep their values in this
process and, for a pool cached on disk, in a file beside the runs (:func:`landscape.trajectory.cached_file`), by a
:func:`tensor_digest` of everything the numbers depend on.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from landscape.trajectory import cached_file

T = TypeVar("T")


def memoized(
    memo: dict[str, T],
    key: str,
    compute: Callable[[], T],
    file: Path | None,
    dump: Callable[[T, Path], object],
    load: Callable[[Path], T],
    *,
    again: Callable[[], T] | None = None,
) -> T:
    """``memo[key]``, else the value in ``file``, else ``compute()`` (written to ``file`` whole); kept in ``memo``.

    Args:
        memo: This process's memo.
        key: The value's digest (:func:`tensor_digest`).
        compute: Computes the value.
        file: Where the value is kept on disk (``None``: in this process only).
        dump: ``dump(value, tmp)`` writes the value (see :func:`landscape.trajectory.cached_file`).
        load: ``load(path)`` reads it back; an error it raises for a damaged file has the value computed again.
        again: Computes the value when the cache cannot be written (``OSError``: a read-only cache), where
            ``compute`` may have run already and changed what it reads (default ``compute``).

    Returns:
        The value as read back from the file (what the computation returned) or as computed.
    """
    if key not in memo:
        if file is None:
            memo[key] = compute()
        else:
            try:  # the file is written whole and renamed; a damaged one is computed again
                memo[key] = cached_file(file, compute, dump, load)
            except OSError:  # a read-only cache: the value is memoized in this process only
                memo[key] = (again or compute)()
    return memo[key]


@functools.cache
def _library_digest() -> str:
    """Digest of the ``landscape`` package's sources: a changed evaluation engine never reads an old memoized line.

    Computed on the first :meth:`ImRuns.line_losses` call, not at import (it reads every source file of the package).
    """
    import landscape

    h = hashlib.sha256()
    root = Path(landscape.__file__).parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def tensor_digest(code: str, module: nn.Module, *arrays: Any, options: Mapping[str, Any] | None = None) -> str:
    """A digest of everything a memoized computation on a network reads: equal digests, the same float results.

    The key of the Im figures' memos (:meth:`ImRuns.line_losses`, :func:`figures.im._measures.grad_norm`).

    Args:
        code: A digest of the computation's code (a changed computation never reads an old value).
        module: The network: its ``repr`` (architecture) and every parameter and buffer, by name, bitwise.
        *arrays: Tensors or NumPy arrays, bitwise with dtype and shape; tuples and lists of them (data batches,
            ``(X, y)`` pairs) are taken in order.
        options: Keyword options of the computation (their sorted ``repr``).

    Returns:
        32 hex digits of SHA-256, which also covers the torch thread count (the float rounding of the sums).
    """
    opts = sorted((options or {}).items())
    h = hashlib.sha256(f"{code}|{torch.get_num_threads()}|{module!r}|{opts!r}".encode())

    def add(t: Any) -> None:
        if isinstance(t, tuple | list):
            h.update(f"|[{len(t)}".encode())
            for u in t:
                add(u)
            h.update(b"]")
            return
        a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        h.update(f"|{a.dtype}:{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())

    for name, t in sorted(module.state_dict().items()):
        h.update(f"|{name}".encode())
        add(t)
    for t in arrays:
        add(t)
    return h.hexdigest()[:32]
