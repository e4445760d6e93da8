"""BatchNorm on each batch's statistics (``bn_mode="train"``) and one-sample batches: an error that says what to do.

In training mode torch's BatchNorm refuses an input with one value per channel ("Expected more than 1 value per
channel when training"): a one-sample batch through a ``BatchNorm1d`` (or a ``BatchNorm2d`` whose feature maps are
1 x 1). Data of ``N`` samples in batches of ``B`` ends with a batch of ``N % B`` samples, one when ``N % B == 1``:
torch's message names neither the batch nor the fix. :func:`one_sample_batch_error` does, for the code that knows
which batch failed; :func:`batch_size_without_single` proposes a batch size.
"""

from __future__ import annotations

__all__ = ["ONE_VALUE", "is_one_value_error", "batch_size_without_single", "one_sample_batch_error"]

ONE_VALUE = "Expected more than 1 value per channel when training"
"""The start of torch's error (``torch.nn.functional._verify_batch_size``)."""


def is_one_value_error(error: BaseException) -> bool:
    """Whether ``error`` is BatchNorm's refusal of an input with one value per channel in training mode."""
    return isinstance(error, ValueError) and ONE_VALUE in str(error)


def batch_size_without_single(n: int, b: int) -> int | None:
    """The batch size nearest ``b`` (the smaller one first on a tie) that leaves no one-sample batch of ``n`` samples.

    Args:
        n: Number of samples.
        b: Batch size that left one (``n % b == 1``).

    Returns:
        ``c`` in ``[2, n]`` with ``n % c != 1`` (``c = n``: one batch of everything), or ``None`` when ``n < 2`` (no
        batch size helps).

    Example:
        >>> batch_size_without_single(9, 4), batch_size_without_single(1201, 100), batch_size_without_single(3, 2)
        (3, 99, 3)
    """
    if n < 2:
        return None
    for d in range(n):
        for c in (b - d, b + d):
            if 2 <= c <= n and n % c != 1:
                return c
    return n  # (not reached: c = n qualifies)


def one_sample_batch_error(
    error: BaseException,
    *,
    batch: int,
    size: int,
    n_batches: int | None = None,
    n_samples: int | None = None,
    batch_size: int | None = None,
) -> ValueError | None:
    """BatchNorm's refusal of a batch as an error naming the batch, its size and the fixes; ``None`` for other errors.

    Meant for the code that iterates the batches, after a forward pass failed (no cost otherwise)::

        try:
            out = model(x)
        except ValueError as e:
            raise one_sample_batch_error(e, batch=i, size=len(x), n_batches=len(batches)) or e

    Args:
        error: The error of the forward pass.
        batch: Index of the batch (from 0).
        size: Its number of samples.
        n_batches: Number of batches, when known.
        n_samples: Number of samples of the data, when known (with ``batch_size``: a batch size is proposed).
        batch_size: Batch size that split them, when known.

    Returns:
        A new :class:`ValueError` (raise it ``from error``), or ``None``.
    """
    if not is_one_value_error(error):
        return None
    where = f"batch {batch}" + (f" (of {n_batches}, counting from 0)" if n_batches is not None else "")
    fixes = []
    if n_samples is not None and batch_size is not None:
        better = batch_size_without_single(n_samples, batch_size)
        if better is not None:
            fixes.append(f"a batch size that leaves no 1-sample batch (batch_size={better} for {n_samples} samples)")
    else:
        fixes.append("a batch size that leaves no 1-sample batch (N samples in batches of B leave N % B last)")
    fixes += ["drop the last batch (a DataLoader's drop_last=True)", "or bn_mode='eval' (the running statistics)"]
    return ValueError(
        f"bn_mode='train' normalizes each batch by its own statistics, but {where} holds {size} "
        f"sample{'s' * (size != 1)}, and BatchNorm has no statistics of one value per channel (torch: {error}); "
        f"give {', '.join(fixes)}"
    )
