"""The training loop's progress bar."""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """A tqdm bar over steps, redrawn at most every half second and touched every 64 steps.

    The bar counts the steps itself; tqdm is only told in chunks, so a step costs an integer increment.
    """

    chunk = 64

    def __init__(self, total: int | None) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc="train", unit="step", leave=False, mininterval=0.5)
        self._n = 0

    def update(self) -> None:
        self._n += 1
        if self._n >= self.chunk:
            self._bar.update(self._n)
            self._n = 0

    def close(self) -> None:
        if self._n:
            self._bar.update(self._n)
            self._n = 0
        self._bar.close()
