"""What the connecting-minima figures share (:mod:`figures.beyond.connect`, :mod:`figures.beyond.im_table1`).

Both join two minima by a straight line and test Ainsworth, Hayase and Srinivasa's claim (*Git Re-Basin*, ICLR 2023,
Sec. 3 and 5) that weight matching removes most of the loss barrier, taken here as at least half of it. Both first check
the same two premises: the endpoints are minima (they fit the training set) and the raw straight line rises (there is a
barrier to remove). The thresholds were fixed before measuring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from figures.claims import ClaimBook
from figures.result import Claim
from figures.verdict import Premise, at_least, paired_effect

__all__ = ["HALF", "MIN_BARRIER", "TRAIN_ACC", "fit_premise", "halving_claim", "rise_premise"]

TRAIN_ACC = 0.97  # premise: the endpoints fit the training set (they are minima, not early-stopped points)
MIN_BARRIER = 0.1  # premise: the straight line between the raw endpoints rises by at least this (nats)
HALF = 0.5  # the gallery's bound for Git Re-Basin's "most": weight matching removes at least half of the barrier


def fit_premise(accuracies: Sequence[float], detail: str, what: str = "the endpoints") -> Premise:
    """The premise that ``what`` fit the training set: the lowest training accuracy reaches :data:`TRAIN_ACC`."""
    return at_least(f"{what} fit the training set", min(accuracies), TRAIN_ACC, detail=detail)


def rise_premise(between: str, smallest: float, detail: str) -> Premise:
    """The premise that the straight lines between ``between`` rise: their smallest barrier reaches :data:`MIN_BARRIER`.

    Args:
        between: What the lines join, e.g. ``"the endpoints"``.
        smallest: The smallest raw training-loss barrier of the lines (nats).
        detail: How it was measured.
    """
    return at_least(f"the straight line between {between} rises", smallest, MIN_BARRIER, detail=detail)


def halving_claim(book: ClaimBook, key: str, ratio: Any, premises: Sequence[Premise], **values: Any) -> Claim:
    """Git Re-Basin's claim on ``ratio``, the barrier after / before weight matching, shape ``(n,)`` (one per pair).

    Held if the paired interval of ``ratio - HALF`` lies below 0 (the claim's direction in ``claims.toml``). The
    claim's templates get ``n`` (the number of ratios) and ``values``.
    """
    return book(key, ratio, paired_effect(ratio, HALF), premises=premises, n=len(ratio), **values)
