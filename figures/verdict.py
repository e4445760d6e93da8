"""Premises, paired statistics and verdicts: what makes a figure's claim mean something.

A reproduction first checks that it set up the paper's situation (the runs converged, the flat area is flat,
the "bad" initialization is the worse one...); those checks are :class:`Premise` objects. A claim whose
premise fails is *not tested*, never held or not held. A comparative claim is decided on repeated seeds (or
on paired test examples) through an :class:`Effect` with a confidence interval, and gets one of four
:class:`Verdict` values:

- ``held``: the interval lies on the paper's side of zero;
- ``not held``: it lies on the other side, or it rules out the paper's effect size (when one is given);
- ``inconclusive``: the interval covers zero and cannot rule out the paper's effect (the effect is inside
  the noise of this experiment);
- ``not tested``: a premise failed, or the experiment cannot test the claim at this scale.

An interval is the set of effects the data allow, and a zero-width one is decided by the same rule as any other
(one rule for every figure): held if every allowed effect is on the claimed side of zero (``ci_low > 0``), not held
if none is (``ci_high <= 0``: an interval ending at zero leaves no effect of the claimed sign, a zero-width interval
at 0 included) or none reaches the paper's size. The effect functions give a zero-width interval only where it is
exact, not where an estimator collapses:

- one network on both sides (``same_network`` of :func:`paired_effect` and :func:`paired_proportions`, e.g. a
  championship that is the plain model, compared over test images, SLQ probes or layers of that one run): every
  difference is 0 by construction, on any sample, so the interval is the point 0;
- :func:`paired_proportions` without discordant examples: the exact bound of the discordant share, not [0, 0];
- :func:`paired_effect` of *n* equal differences (a *degenerate sample*: equal up to the rounding of the inputs,
  e.g. capped counts, or a plain championship in every training seed): the t interval needs a spread and has none
  (``sd = 0``), and a point interval would claim certainty about the population from a sample that merely shows no
  variation. The sample is reported as degenerate and decided by the sign test, the distribution-free test that needs
  no spread: the exact interval for the median from the order statistics, ``[d_(1), d_(n)]`` = the point itself, has
  coverage ``1 - 2 * 0.5 ** n`` (any distribution), so it is used when that reaches the confidence (n >= 6 at 95%)
  and the interval is unbounded below it (n <= 5 at 95%: inconclusive); the p-value is the exact sign test's,
  ``2 * 0.5 ** n`` (1 for differences all 0, which carry no sign). Until 2026-12-07 (late) such a sample gave the
  point interval at any n with p = 0 (held or not held on, say, 3 equal differences), and differences equal only up
  to rounding (``[0.9, 0.8, 0.7] - [0.8, 0.7, 0.6]``) went through the t formula with a spread of 1e-17 and p ~ 1e-31.
- the same for a sample in which *more than half* of the differences are equal (since 2026-12-08,
  :func:`sign_test_effect`), four equal ones and a fifth, say: as the fifth approaches the four, the t interval shrank
  to the point with p -> 0 (5 of 5 positive: held) next to 5 equal ones (inconclusive, sign test p = 0.0625). An
  equal majority is a point mass holding the median, which the normal model excludes as it excludes n equal draws.
  What 5 samples can conclude, and why 5 distinct differences keep the t: figures/README.md ("What five paired...").

A correlation's interval lies in [-1, 1] (:func:`spearman_effect`: Fisher z; :func:`correlation_effect`, a mean over
replicates: its t interval clipped).

Example:
    >>> from figures.verdict import at_most, paired_effect, verdict_for
    >>> eff = paired_effect([0.91, 0.93, 0.92], [0.90, 0.91, 0.90])  # method A vs B over 3 seeds
    >>> verdict_for(eff, direction=1).value
    'held'
    >>> p = at_most("the control run is stuck", 0.31, 0.05, detail="relative loss drop over the run")
    >>> p.met
    False
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "PREMISE_KEYS",
    "Effect",
    "Premise",
    "Verdict",
    "at_least",
    "at_most",
    "converged",
    "correlation_effect",
    "degenerate_effect",
    "equivalence_verdict",
    "json_fields",
    "json_number",
    "non_superiority_verdict",
    "paired_effect",
    "paired_proportions",
    "proportion_effect",
    "sign_test_effect",
    "spearman_effect",
    "superiority_verdict",
    "verdict_for",
]


class StrEnum(str, enum.Enum):
    """A string option that also accepts plain (case-insensitive) strings and lists valid values on error."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            for member in cls:
                if member.value == value.lower():
                    return member
        valid = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown {cls.__name__.lower()} {value!r}; valid values are {valid}")

    def __str__(self) -> str:
        return str(self.value)


class Verdict(StrEnum):
    """Outcome of a claim: held, not held, inconclusive (inside the noise) or not tested (premise failed)."""

    HELD = "held"
    NOT_HELD = "not held"
    INCONCLUSIVE = "inconclusive"
    NOT_TESTED = "not tested"


Number = int | float


def _number(value: Any, what: str) -> float | list[float]:
    """A finite-or-not number, or a list of them, as plain Python floats (bools refused)."""
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        value = value.tolist()  # numpy / torch arrays and 0-d scalars
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number or a list of numbers, got a bool")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_number(v, what) for v in value]  # type: ignore[misc]
    raise TypeError(f"{what} must be a number or a list of numbers, got {type(value).__name__}: {value!r}")


def json_number(value: Any) -> Any:
    """Numbers and lists of them for JSON: non-finite floats become the strings nan, inf and -inf."""
    if isinstance(value, list):
        return [json_number(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    return value


def json_fields(result: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON-compatible form of a result dataclass (:class:`Premise`, :class:`Effect`, a claim).

    Numbers and lists of them go through :func:`json_number`, enums become their values, nested results their
    own ``to_dict()``, tuples lists.

    Args:
        result: A dataclass instance.
        names: The fields to write, in this order (default: every field, in declaration order).
    """
    keys = [f.name for f in dataclasses.fields(result)] if names is None else names
    return {k: _json_value(getattr(result, k)) for k in keys}


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return json_number(float(value) if isinstance(value, float) else value)


PREMISE_KEYS = ("statement", "measured", "threshold", "met", "detail")
"""The fields of a premise in ``claims.json``."""


@dataclasses.dataclass(frozen=True)
class Premise:
    """One check that the experiment set up the paper's situation.

    Attributes:
        statement: What must be true, e.g. ``"the runs converged"``.
        measured: The number (or list of numbers, e.g. one per seed) the check looked at.
        threshold: The bound it was compared with (``None`` for a qualitative check).
        met: Whether the premise holds.
        detail: How it was measured and what the threshold means.

    Raises:
        ValueError: If ``statement`` is empty.
        TypeError: If ``measured``/``threshold`` are not numbers or ``met`` is not a bool.
    """

    statement: str
    measured: float | list[float]
    threshold: float | None
    met: bool
    detail: str = ""
    #: ``"<="`` (:func:`at_most`) or ``">="`` (:func:`at_least`): which entry of a list is the worst, for the text.
    side: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.statement, str) or not self.statement.strip():
            raise ValueError("Premise.statement must be a non-empty string")
        object.__setattr__(self, "measured", _number(self.measured, "Premise.measured"))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", _number(self.threshold, "Premise.threshold"))
        met = self.met.item() if hasattr(self.met, "item") else self.met
        if not isinstance(met, bool):
            raise TypeError(f"Premise.met must be a bool, got {type(met).__name__}")
        object.__setattr__(self, "met", met)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return json_fields(self, PREMISE_KEYS)

    def __str__(self) -> str:
        m = self.measured
        if not isinstance(m, float):  # the entry nearest to failing (or failing most): the one that decides
            pick = {"<=": max, ">=": min}.get(self.side)
            m = pick(m, default=math.nan) if pick else max(m, key=abs, default=math.nan)
        bound = "" if self.threshold is None else f" (bound {self.threshold:.3g})"
        return f"{self.statement}: {'met' if self.met else 'NOT met'}, measured {m:.3g}{bound}"


def at_most(statement: str, value: Any, limit: float, *, detail: str = "") -> Premise:
    """Premise ``value <= limit`` (every entry, when ``value`` is a list, e.g. one per seed)."""
    v = _number(value, "value")
    vals = v if isinstance(v, list) else [v]
    return Premise(statement, v, float(limit), bool(vals) and all(x <= limit for x in vals), detail, side="<=")


def at_least(statement: str, value: Any, limit: float, *, detail: str = "") -> Premise:
    """Premise ``value >= limit`` (every entry, when ``value`` is a list)."""
    v = _number(value, "value")
    vals = v if isinstance(v, list) else [v]
    return Premise(statement, v, float(limit), bool(vals) and all(x >= limit for x in vals), detail, side=">=")


def converged(
    curves: Any,
    *,
    last: float = 0.1,
    rel_tol: float = 0.01,
    scale: Any = None,
    what: str = "the runs converged",
    detail: str = "",
) -> Premise:
    """Premise: each loss curve changed by less than ``rel_tol`` (relative) over its last ``last`` fraction.

    The change is ``|L[-1] - L[start]| / max(|s|, 1e-12)`` with ``start`` the first index of the final window
    and ``s`` the ``scale``: by default ``L[start]`` itself, so a curve that is still falling (or rising)
    steadily fails, whatever its level. With ``scale`` the initial loss, the question is instead whether the
    curve is flat on the scale of training (flat on a linear plot from the start): the right question for a
    cross-entropy loss on separable data, which keeps falling by a constant factor at every level.

    Args:
        curves: One loss curve ``(T,)`` or several ``(R, T)`` (one per seed), sampled on a common grid
            (epochs or full-batch evaluations; minibatch losses are too noisy for this test).
        last: Fraction of the curve that forms the final window.
        rel_tol: Largest relative change accepted.
        scale: What the change is relative to: a number or one per curve ``(R,)``; default each curve's value
            at the start of the final window.
        what: The premise's statement.
        detail: Extra description (what the curve is).

    Returns:
        The premise; ``measured`` holds the relative change of each curve.
    """
    arr = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    if arr.shape[1] < 2:
        raise ValueError(f"converged() needs curves of at least 2 points, got shape {arr.shape}")
    start = min(arr.shape[1] - 2, max(0, int(math.floor(arr.shape[1] * (1 - last)))))
    ref = arr[:, start] if scale is None else np.broadcast_to(np.asarray(scale, dtype=np.float64), arr[:, 0].shape)
    change = np.abs(arr[:, -1] - arr[:, start]) / np.maximum(np.abs(ref), 1e-12)
    of = "" if scale is None else " of the reference loss (scale)"
    desc = f"change over the last {last:.0%} of the curve ({arr.shape[1] - start} points) < {rel_tol:g}{of}"
    if scale is None:
        desc = "relative " + desc
    return at_most(what, change.tolist(), rel_tol, detail=f"{desc}{'; ' + detail if detail else ''}")


@dataclasses.dataclass(frozen=True)
class Effect:
    """A paired effect ``a - b`` with its spread and a two-sided confidence interval.

    Attributes:
        mean: Mean paired difference.
        sd: Standard deviation of the differences (``nan`` for a single pair).
        n: Number of pairs (seeds, or test examples for :func:`paired_proportions`).
        ci_low: Lower end of the confidence interval.
        ci_high: Upper end.
        p_value: Two-sided p-value of "no difference".
        confidence: Confidence level of the interval.
        method: The test used.
    """

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return json_fields(self)

    def __str__(self) -> str:
        return (
            f"effect {self.mean:+.4g} [{self.ci_low:+.4g}, {self.ci_high:+.4g}] "
            f"({self.confidence:.0%} CI, n={self.n}, p={self.p_value:.2g}, {self.method})"
        )


def paired_effect(
    a: Sequence[float], b: Sequence[float] | float = 0.0, *, confidence: float = 0.95, same_network: bool = False
) -> Effect:
    """Paired t interval and test for ``a - b`` over repeated seeds (the sign test for a degenerate sample).

    Args:
        a: Values of the first condition, one per seed, shape ``(n,)``.
        b: Values of the second condition for the same seeds, shape ``(n,)``, or a constant.
        confidence: Confidence level of the interval.
        same_network: A and B are one network on every pair (a championship that is the plain model, compared over
            its SLQ probes or its layers): every difference is 0 by construction, and the interval is the point 0.
            Not for pairs over training seeds, where a plain championship is an outcome of training: its 0 is data.

    Returns:
        The effect. With one pair the interval is infinite (a single seed resolves nothing). With ``n >= 2`` equal
        differences (equal up to the rounding of the inputs: :func:`degenerate_effect`) the sign test's exact
        interval for the median, the point itself when ``1 - 2 * 0.5 ** n >= confidence``, else unbounded; when
        more than half of them are equal (up to rounding), the sign test as well (:func:`sign_test_effect`); else the
        paired t.

    Raises:
        ValueError: If the shapes differ, there is no pair, or ``same_network`` is set and a difference is not 0.
    """
    from scipy import stats

    a_arr = np.asarray(a, dtype=np.float64).reshape(-1)
    b_arr = (
        np.broadcast_to(np.asarray(b, dtype=np.float64), a_arr.shape)
        if np.ndim(b) == 0
        else np.asarray(b, dtype=np.float64).reshape(-1)
    )
    if a_arr.shape != b_arr.shape or a_arr.size == 0:
        raise ValueError(f"paired_effect needs two equal-length, non-empty samples, got {a_arr.size} and {b_arr.size}")
    d = a_arr - b_arr
    n, mean = d.size, float(d.mean())
    if same_network:
        if np.any(d != 0):
            raise ValueError(f"same_network=True, but {int(np.sum(d != 0))} of the {n} differences are not 0")
        return Effect(0.0, 0.0, n, 0.0, 0.0, 1.0, confidence, "one network on both sides (difference 0)")
    if n < 2:
        return Effect(mean, math.nan, n, -math.inf, math.inf, 1.0, confidence, "single pair")
    # equal differences, up to the rounding of a - b (a few ulps of the inputs' magnitude): no spread to estimate
    tol = 16 * np.finfo(np.float64).eps * max(float(np.max(np.abs(a_arr))), float(np.max(np.abs(b_arr))))
    if float(np.ptp(d)) <= tol:
        return degenerate_effect(float(np.median(d)), n, confidence=confidence)
    if np.isfinite(d).all() and 2 * _largest_tie(d, tol) > n:  # an equal majority: the module docstring
        return sign_test_effect(d, confidence=confidence, tol=tol)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Effect(mean, sd, n, mean - q * se, mean + q * se, p, confidence, "paired t")


def _largest_tie(d: np.ndarray, tol: float) -> int:
    """How many of the values ``d`` share one value, up to ``tol`` (neighbours in sorted order within ``tol``)."""
    s = np.sort(d)
    breaks = np.flatnonzero(~(np.diff(s) <= tol))  # a NaN breaks a tie
    return int(np.max(np.diff(np.concatenate([[-1], breaks, [s.size - 1]]))))


def sign_test_effect(d: Sequence[float], *, confidence: float = 0.95, tol: float = 0.0) -> Effect:
    """The exact sign test of paired differences, with the order-statistic interval for their median.

    Distribution-free: under any distribution with median ``m`` each difference lies above ``m`` with probability
    at most 1/2, so ``[d_(k), d_(n+1-k)]`` (the k-th smallest and k-th largest) misses ``m`` with probability at most
    ``2 P(B <= k - 1)``, ``B ~ Binomial(n, 1/2)``; the interval uses the largest ``k`` whose coverage
    ``1 - 2 P(B <= k - 1)`` reaches ``confidence``, and is ``(-inf, inf)`` when even ``k = 1`` does not (n <= 5 at
    95%: ``1 - 2 * 0.5 ** 5 = 0.9375``). The p-value is the two-sided sign test's on the differences that are not 0
    (within ``tol``; ties with 0 carry no sign): ``min(1, 2 P(B' <= min(#pos, #neg)))``, ``B' ~ Binomial(#pos + #neg,
    1/2)``, and 1 when every difference is 0. :func:`degenerate_effect` is its case of ``n`` equal differences.

    Args:
        d: The paired differences, ``(n,)``, at least 2.
        confidence: Confidence level of the interval.
        tol: Differences within ``tol`` of 0 count as 0 (the rounding of ``a - b``).

    Returns:
        The effect: the sample's ``mean`` and ``sd``, the interval for the median, the sign test's p-value.
    """
    from scipy import stats

    x = np.sort(np.asarray(d, dtype=np.float64).reshape(-1))
    n = x.size
    if n < 2:
        raise ValueError(f"sign_test_effect needs at least 2 pairs, got {n}")
    pos, neg = int(np.sum(x > tol)), int(np.sum(x < -tol))
    p = 1.0 if pos + neg == 0 else min(1.0, float(2 * stats.binom.cdf(min(pos, neg), pos + neg, 0.5)))
    k = 0  # the largest k with coverage 1 - 2 P(B <= k - 1) >= confidence (0: none)
    while k < n // 2 and 1.0 - 2.0 * float(stats.binom.cdf(k, n, 0.5)) >= confidence:
        k += 1
    head = f"sign test (degenerate sample: {_largest_tie(x, tol)} of {n} differences equal)"
    if k == 0:
        note = f"the order statistics bound the median at {1 - 2 * 0.5**n:.4g} confidence at most, so unbounded"
        return Effect(float(x.mean()), float(x.std(ddof=1)), n, -math.inf, math.inf, p, confidence, f"{head}: {note}")
    cover = 1.0 - 2.0 * float(stats.binom.cdf(k - 1, n, 0.5))
    method = f"{head}, exact interval for the median [d_({k}), d_({n + 1 - k})], coverage {cover:.4g}"
    return Effect(float(x.mean()), float(x.std(ddof=1)), n, float(x[k - 1]), float(x[n - k]), p, confidence, method)


def degenerate_effect(value: float, n: int, *, confidence: float = 0.95) -> Effect:
    """The effect of ``n`` paired differences that all equal ``value`` (a degenerate sample), by the sign test.

    :func:`sign_test_effect`'s case of ``n`` equal differences, with its interval ``[d_(1), d_(n)] = [value, value]``
    (n >= 6 at 95%; unbounded below) and p-value ``min(1, 2 * 0.5 ** n)`` (1 when ``value`` is 0: no sign to count).
    The t interval is undefined without a spread, and the normal model behind it is contradicted by the data (a
    continuous distribution gives equal draws with probability 0): the differences are discrete (counts, ties of one
    network with itself, capped values). The interval is for the median where the t interval is for the mean (here
    the same number); the verdict asks only on which side of 0 (or of a margin) the interval lies.

    Args:
        value: The common difference.
        n: Number of pairs (at least 2).
        confidence: Confidence level of the interval.

    Returns:
        The effect, ``sd = 0``, method naming the degenerate sample and the coverage reached.
    """
    if n < 2:
        raise ValueError(f"degenerate_effect needs at least 2 pairs, got {n}")
    miss = 2.0 * 0.5**n  # P(every draw on one side of the median), the most any distribution allows
    p = 1.0 if value == 0.0 else min(1.0, miss)
    head = f"sign test (degenerate sample: all {n} differences equal)"
    if 1.0 - miss >= confidence:
        return Effect(value, 0.0, n, value, value, p, confidence, f"{head}, exact interval for the median")
    note = f"they bound the median at {1 - miss:.4g} confidence only, so unbounded at {confidence:g}"
    return Effect(value, 0.0, n, -math.inf, math.inf, p, confidence, f"{head}: {note}")


def paired_proportions(
    correct_a: Sequence[bool], correct_b: Sequence[bool], *, confidence: float = 0.95, same_network: bool = False
) -> Effect:
    """Difference of two classifiers' accuracies on the same test examples (McNemar).

    Args:
        correct_a: Whether classifier A got each example right, shape ``(n,)``.
        correct_b: The same for classifier B, shape ``(n,)``.
        confidence: Confidence level of the (Wald, paired) interval.
        same_network: A and B are one network (e.g. a championship that is the plain model): the difference is 0
            on any sample of examples, and the interval is the point 0.

    Returns:
        The accuracy difference A - B, its interval, and the exact McNemar p-value (binomial test on the
        discordant pairs). Without discordant examples the Wald interval would collapse to the point 0, although
        ``n`` examples bound the discordant share only to ``1 - ((1 - confidence) / 2) ** (1 / n)`` (Clopper-
        Pearson, exact), which bounds the difference: the interval is then ``[-bound, +bound]`` (unless
        ``same_network``).
    """
    from scipy import stats

    ca, cb = np.asarray(correct_a, dtype=bool).reshape(-1), np.asarray(correct_b, dtype=bool).reshape(-1)
    if ca.shape != cb.shape or ca.size == 0:
        raise ValueError(f"paired_proportions needs two equal-length, non-empty samples, got {ca.size}, {cb.size}")
    n = ca.size
    b01, b10 = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    mean = (b01 - b10) / n
    sd = math.sqrt(max((b01 + b10) / n - mean**2, 0.0))
    se = sd / math.sqrt(n)
    q = float(stats.norm.ppf(0.5 + confidence / 2))
    p = float(stats.binomtest(b01, b01 + b10, 0.5).pvalue) if b01 + b10 else 1.0
    if same_network:
        if b01 + b10:
            raise ValueError(f"same_network=True, but the two disagree on {b01 + b10} of {n} examples")
        return Effect(0.0, 0.0, n, 0.0, 0.0, 1.0, confidence, "one network on both sides (difference 0)")
    if b01 + b10 == 0:  # the Wald interval collapses: the exact bound of the discordant share bounds the difference
        bound = 1.0 - ((1.0 - confidence) / 2) ** (1.0 / n)
        return Effect(0.0, 0.0, n, -bound, bound, 1.0, confidence, "McNemar, no discordant pairs (exact bound)")
    return Effect(mean, sd, n, mean - q * se, mean + q * se, p, confidence, "McNemar (paired examples)")


def proportion_effect(k: int, n: int, p0: float, *, confidence: float = 0.95) -> Effect:
    """A share ``k / n`` minus a reference ``p0``, with an exact (Clopper-Pearson) interval and binomial test."""
    from scipy import stats

    if n <= 0:
        return Effect(math.nan, math.nan, 0, -math.inf, math.inf, 1.0, confidence, "binomial (no trials)")
    ci = stats.binomtest(k, n, p0).proportion_ci(confidence_level=confidence, method="exact")
    p = float(stats.binomtest(k, n, p0).pvalue)
    share = k / n
    return Effect(
        share - p0,
        math.sqrt(share * (1 - share)),
        n,
        ci.low - p0,
        ci.high - p0,
        p,
        confidence,
        f"binomial vs {p0:g} (Clopper-Pearson)",
    )


def spearman_effect(x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95) -> Effect:
    """Spearman rank correlation with a Fisher-z interval (``n > 3``) and its p-value."""
    from scipy import stats

    n = len(x)
    r = float(stats.spearmanr(x, y).statistic) if n > 2 else math.nan
    p = float(stats.spearmanr(x, y).pvalue) if n > 2 else 1.0
    if not math.isfinite(r) or n <= 3:
        return Effect(r, math.nan, n, -1.0, 1.0, p if math.isfinite(p) else 1.0, confidence, "Spearman (too few)")
    z, se = math.atanh(max(min(r, 0.999999), -0.999999)), 1.06 / math.sqrt(n - 3)
    q = float(stats.norm.ppf(0.5 + confidence / 2))
    return Effect(
        r,
        math.nan,
        n,
        math.tanh(z - q * se),
        math.tanh(z + q * se),
        p,
        confidence,
        "Spearman rank correlation (Fisher z, Fieller se)",
    )


def correlation_effect(rhos: Sequence[float], *, confidence: float = 0.95) -> Effect:
    """Mean of correlations over independent replicates (seeds), with its t interval kept inside [-1, 1].

    A t interval on the correlations can pass 1 (or -1), where no correlation lies; intersected with [-1, 1], the
    range of the mean correlation, it still holds the true value whenever the t interval does (same coverage), and
    the verdict, which depends on the side of 0, is unchanged. Fisher z was not used: the replicates' Spearman
    correlations of a few iterations are often exactly +-1 (6 iterations in order: rho = 1), where z is infinite
    and its mean depends on where it is capped.

    Args:
        rhos: One correlation per replicate, ``(n,)``, each in [-1, 1].
        confidence: Confidence level of the interval.

    Returns:
        The effect of :func:`paired_effect` on the correlations (mean, sd, p-value), its interval clipped to
        [-1, 1] (one replicate: [-1, 1]).
    """
    r = np.asarray(rhos, dtype=np.float64).reshape(-1)
    if r.size == 0 or np.any(~np.isfinite(r)) or np.any(np.abs(r) > 1):
        raise ValueError(f"correlation_effect needs correlations in [-1, 1], got {r.tolist()}")
    t = paired_effect(r.tolist(), 0.0, confidence=confidence)
    lo, hi = max(t.ci_low, -1.0), min(t.ci_high, 1.0)
    return dataclasses.replace(t, ci_low=lo, ci_high=hi, method=f"{t.method} of the correlations, clipped to [-1, 1]")


def verdict_for(effect: Effect, *, direction: int = 1, paper_effect: float | None = None) -> Verdict:
    """The verdict on a claim that the effect is positive (``direction=1``) or negative (``-1``).

    Held when the interval lies strictly on the claimed side of zero. Not held when it holds no effect of the
    claimed sign (it lies on the other side or ends at zero, as the zero-width interval [0, 0] of two arms that
    gave the same result on every pair), or when it rules out an effect of the paper's size (``paper_effect``, a
    magnitude). Otherwise inconclusive: the experiment cannot tell the claim from noise.

    Args:
        effect: The measured effect.
        direction: ``1`` if the paper claims ``a > b``, ``-1`` if it claims ``a < b``.
        paper_effect: The magnitude of the paper's effect, if it reports one.

    Returns:
        held, not held or inconclusive.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction!r}")
    lo, hi = (effect.ci_low, effect.ci_high) if direction == 1 else (-effect.ci_high, -effect.ci_low)
    if lo > 0:
        return Verdict.HELD
    if hi <= 0 or (paper_effect is not None and hi < abs(paper_effect)):
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE


def equivalence_verdict(effect: Effect, margin: float) -> Verdict:
    """Verdict on a claim of equivalence within ``margin`` (fixed before measuring).

    Held if the effect's interval lies inside ``(-margin, margin)``, not held if it excludes 0, else inconclusive.
    """
    if -margin < effect.ci_low and effect.ci_high < margin:
        return Verdict.HELD
    if effect.ci_low > 0 or effect.ci_high < 0:
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE


def non_superiority_verdict(effect: Effect, margin: float) -> Verdict:
    """Verdict on a claim that an effect is *not* larger than ``margin`` (fixed before measuring).

    For claims of absence ("provides no improvement", "does not escape", "does not outperform"): the effect is the
    advantage the paper says is missing, and an advantage below ``margin`` counts as none. Held if the interval
    lies below ``margin``, not held if it holds no advantage below it (it lies above ``margin`` or starts there),
    else inconclusive. A plain test against 0 in the other
    direction would instead need the opposite effect to be significant, which is not what the paper says.

    Args:
        effect: The measured advantage (positive = the advantage the claim denies).
        margin: The largest advantage that still counts as none.
    """
    if effect.ci_high < margin:
        return Verdict.HELD
    if effect.ci_low >= margin:
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE


def superiority_verdict(effect: Effect, margin: float) -> Verdict:
    """Verdict on a claim that an effect is larger than ``margin`` (fixed before measuring).

    The mirror of :func:`non_superiority_verdict`, for claims of a real change ("escapes the flat area"): the effect
    is the claimed advantage, and one no larger than ``margin`` (what a run that did not change may show) counts as
    none. Held if the interval lies above ``margin``, not held if it holds no advantage above it (it lies below
    ``margin`` or ends there), else inconclusive. A plain test
    against 0 would call a tiny but significant difference held.

    Args:
        effect: The measured advantage (positive = the claimed direction).
        margin: The smallest advantage that counts.
    """
    if effect.ci_low > margin:
        return Verdict.HELD
    if effect.ci_high <= margin:
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE
