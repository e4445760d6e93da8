"""The papers' claims as data: what each figure checks, kept apart from how it measures.

A paper's statements are its specification, so they live in one data file per paper,
``figures/<paper>/claims.toml``, one table per claim under the figure's name::

    [im_fig11.exotic-minimum-worse]
    statement = "The minimum found from the exotic initializations (with batch normalization) is not as good..."
    source = "Im, Tao & Branson, An Empirical Analysis of Deep Network Loss Surfaces, A.5"
    direction = -1          # held if the effect is below 0 (1: above); omit for exact checks
    detail = "measured = per seed, best exotic test accuracy minus ...; effect over {reps} seeds (paired t)..."

Optional fields: ``paper_value`` (a number or a short string; absent means the paper gives none) and
``paper_effect`` (the magnitude of the paper's effect, for :func:`~figures.verdict.verdict_for`). ``detail`` is a
:meth:`str.format` template; the figure passes the values it names (``{effect}`` is the claim's effect). The
``statement`` may name fields too, for a claim whose wording depends on the experiment (a number of runs, a
setting); literal braces are ``{{`` ``}}`` in both templates.

A figure decides its claims through a :class:`ClaimBook`; the verdict comes from the effect and the claim's
``direction``, from ``held=`` for an exact check, or from ``verdict=`` for a rule of the figure's own. Premises
that fail still make a claim *not tested* (:class:`~figures.result.Claim`).

Example:
    >>> from figures.claims import ClaimBook
    >>> from figures.verdict import paired_effect
    >>> book = ClaimBook("im_fig10", scale="quick")
    >>> list(book.keys())
    ['loss-rises-beyond-final']
    >>> eff = paired_effect([0.2, 0.3, 0.25], 0.0)
    >>> values = dict(reps=3, above="3/3", smallest="1.2", median=1.3, argmin="1")
    >>> book("loss-rises-beyond-final", [0.2, 0.3, 0.25], eff, **values).verdict.value
    'held'
"""

from __future__ import annotations

import dataclasses
import functools
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from figures.result import Claim, Value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from figures.verdict import Effect, Premise, Verdict, verdict_for

__all__ = ["ClaimBook", "ClaimSpec", "claims_file", "paper_claims"]

_ROOT = Path(__file__).resolve().parent
_REQUIRED = ("statement", "source")
_OPTIONAL = ("detail", "paper_value", "direction", "paper_effect")


def _fields(template: str) -> set[str]:
    """The names a format template uses (``{a.b}`` and ``{a[0]}`` use ``a``)."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            root = field.split(".", 1)[0].split("[", 1)[0]
            if not root or root.isdigit():
                raise ValueError(f"detail template uses a positional field {{{field}}}; name every field")
            names.add(root)
    return names


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper as written in its ``claims.toml``.

    Attributes:
        figure: The registered figure name that checks it.
        key: The claim's key within the figure (``[a-z0-9-]+``).
        statement: The paper's statement, quoted or closely paraphrased.
        source: Where it is in the paper, by title and section.
        detail: A template of how it is measured and decided (fields filled by the figure).
        paper_value: The paper's number or short string, ``None`` when it gives none.
        direction: ``1`` if held means a positive effect, ``-1`` a negative one, ``None`` for exact checks.
        paper_effect: Magnitude of the paper's effect, when it reports one.
    """

    figure: str
    key: str
    statement: str
    source: str
    detail: str = ""
    paper_value: Value = None
    direction: int | None = None
    paper_effect: float | None = None

    @property
    def fields(self) -> set[str]:
        """The names :attr:`statement` and :attr:`detail` need."""
        return _fields(self.statement) | _fields(self.detail)


def claims_file(paper: str) -> Path:
    """The claims file of a paper: ``figures/<paper>/claims.toml``."""
    return _ROOT / paper / "claims.toml"


def _spec(path: Path, figure: str, key: str, table: Any) -> ClaimSpec:
    where = f"{path.name} [{figure}.{key}]"
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: a claim is a table with {list(_REQUIRED)}, got {type(table).__name__}")
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    missing = [f for f in _REQUIRED if not isinstance(table.get(f), str) or not table[f].strip()]
    if unknown or missing:
        raise ValueError(
            f"{where}: unknown fields {unknown}, missing or empty {missing}; "
            f"a claim has {list(_REQUIRED)} and may have {list(_OPTIONAL)}"
        )
    if table.get("direction", 1) not in (1, -1):
        raise ValueError(f"{where}: direction must be 1 or -1, got {table['direction']!r}")
    try:
        _fields(table["statement"]) | _fields(table.get("detail", ""))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return ClaimSpec(figure=figure, key=key, **table)


@functools.cache
def paper_claims(paper: str) -> dict[str, dict[str, ClaimSpec]]:
    """Every claim of a paper: figure name -> key -> spec, in file order.

    Raises:
        FileNotFoundError: If the paper has no ``claims.toml``.
        ValueError: If the file is not valid TOML or a claim is malformed (the message names the table).
    """
    path = claims_file(paper)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    return {fig: {key: _spec(path, fig, key, t) for key, t in claims.items()} for fig, claims in raw.items()}


class ClaimBook:
    """The claims of one figure, read from its paper's ``claims.toml`` and decided one call each.

    Args:
        figure: The registered figure name (its table in the file).
        scale: The scale the verdicts come from, stamped on every claim.
        paper: The paper's package (default: the figure name's prefix before the first ``_``).

    Raises:
        KeyError: If the file has no claims for ``figure``.
    """

    def __init__(self, figure: str, *, scale: str | None = None, paper: str | None = None) -> None:
        self.figure, self.scale = figure, scale
        paper = paper or figure.split("_", 1)[0]
        specs = paper_claims(paper)
        if figure not in specs:
            raise KeyError(f"{claims_file(paper)} has no claims for figure {figure!r}")
        self._specs = specs[figure]

    def keys(self) -> Iterable[str]:
        """The keys of the figure's claims, in file order."""
        return self._specs.keys()

    def __getitem__(self, key: str) -> ClaimSpec:
        try:
            return self._specs[key]
        except KeyError:
            raise KeyError(f"figure {self.figure!r} has no claim {key!r}; it has {list(self._specs)}") from None

    def __call__(
        self,
        key: str,
        measured: Any,
        effect: Effect | None = None,
        *,
        premises: Sequence[Premise] = (),
        held: bool | None = None,
        verdict: Verdict | str | None = None,
        **values: Any,
    ) -> Claim:
        """The claim ``key`` decided on what was measured.

        The verdict is ``verdict`` if given, else ``held`` (an exact check), else :func:`verdict_for` of
        ``effect`` in the claim's direction, else *not tested* (the detail must say why).

        Args:
            key: The claim's key in the figure's table.
            measured: A number or a list of numbers (one per seed, say).
            effect: The paired effect the claim is decided on, if comparative.
            premises: The checks that the experiment set up the paper's situation.
            held: The outcome of an exact check.
            verdict: A verdict decided by a rule of the figure's own.
            **values: The fields the statement and detail templates name (``effect`` is filled in).

        Raises:
            ValueError: If a template field is missing or a value is not used (names both), or an effect comes
                without a direction in the file.
        """
        spec = self[key]
        need = spec.fields - {"effect"}
        if need != set(values) or ("effect" in spec.fields and effect is None):
            raise ValueError(
                f"claim {self.figure}.{key}: the detail template needs {sorted(spec.fields)}, got "
                f"{sorted(values)}{' and an effect' if effect is not None else ' and no effect'}"
            )
        detail = spec.detail.format(effect=effect, **values)
        if verdict is None and held is None and effect is not None:
            if spec.direction is None:
                raise ValueError(f"claim {self.figure}.{key} has an effect but no direction in its claims.toml")
            verdict = verdict_for(effect, direction=spec.direction, paper_effect=spec.paper_effect)
            # a failed premise makes the claim not tested: the reason for a "not held" would then mislead
            premises_met = all(p.met for p in premises)
            if verdict is Verdict.NOT_HELD and premises_met and effect.ci_low <= 0 <= effect.ci_high:
                # not held by the paper's effect size, not by the sign: say so, or the page shows an interval
                # covering 0 called "not held" with no reason
                reach = effect.ci_high if spec.direction == 1 else -effect.ci_low
                if reach <= 0:  # ends at 0 (a zero-width [0, 0] included): no effect of the claimed sign remains
                    detail += (
                        " Not held although the interval covers 0: it ends there, so it holds no effect in the "
                        "claimed direction"
                        + (" (zero width: the same result on every pair)." if effect.ci_low == effect.ci_high else ".")
                    )
                else:
                    detail += (
                        f" Not held although the interval covers 0: in the claimed direction it reaches {reach:.3g}, "
                        f"below the paper's effect ({spec.paper_effect:g} on the same scale), which it rules out."
                    )
        return Claim(
            statement=spec.statement.format(effect=effect, **values),
            paper_value=spec.paper_value,
            measured=measured,
            held=held,
            detail=detail,
            source=spec.source,
            premises=tuple(premises),
            effect=effect,
            verdict=verdict,
            scale=self.scale,
        )
