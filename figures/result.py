"""What a figure function returns: its panels, its claims checked against the paper, and its scaling.

The value objects of the figure contract (:mod:`figures.contract`): :class:`Claim` (one statement of a paper with
its verdict, premises and effect), :class:`Panel` (one plotly and one matplotlib rendering) and
:class:`FigureResult` (what a registered figure function returns). They validate themselves on construction.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from figures.verdict import Effect, Premise, Verdict, json_fields

if TYPE_CHECKING:
    import matplotlib.figure
    import plotly.graph_objects as go

__all__ = ["CLAIM_KEYS", "PANEL_RE", "SCALING_KEYS", "Claim", "FigureResult", "Panel", "Value"]

Value = int | float | str | None
"""A paper value or a measured value: a number, a short string (``"(2, -2)"``, ``"81.39%"``), or ``None``."""

SCALING_KEYS = ("model", "data", "epochs", "repetitions")
"""Keys every :attr:`FigureResult.scaling` must hold (more are welcome: batch size, steps, grid size...)."""

PANEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
"""What a panel key looks like (it becomes a file name)."""


def _plain(value: Any, what: str) -> Value:
    """Numpy/torch scalars to Python; reject anything that is not a number, a string or None."""
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy or torch 0-d scalar
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, a string or None, got a bool; put a pass/fail in `held`")
    if isinstance(value, (int, float)):
        return value
    raise TypeError(f"{what} must be a number, a string or None, got {type(value).__name__}: {value!r}")


CLAIM_KEYS = (
    "statement",
    "paper_value",
    "measured",
    "held",
    "verdict",
    "detail",
    "source",
    "premises",
    "effect",
    "scale",
)
"""The keys of :meth:`Claim.to_dict`, in the order ``claims.json`` writes them (its schema requires each)."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """One statement of a paper checked against what was measured here.

    The verdict is one of :class:`~figures.verdict.Verdict`: held, not held, inconclusive (the effect is
    inside this experiment's noise) or not tested. Give it as ``verdict=`` (usually from
    :func:`figures.verdict.verdict_for` on an :class:`~figures.verdict.Effect` over repeated seeds) or, for
    a claim decided by an exact check, as ``held=True/False``. ``premises`` are the checks that the
    experiment set up the paper's situation; if any is not met the verdict is *not tested*, whatever was
    measured, and ``detail`` is prefixed with the failed premises' numbers.

    Attributes:
        statement: The paper's statement, quoted or closely paraphrased.
        paper_value: The paper's number (or short string) for it, ``None`` when the paper gives none.
        measured: The value measured here: a number or a list of numbers (one per seed, say); ``None`` only
            when not measured. Prose belongs in ``detail``.
        held: ``True``/``False``/``None``; derived from ``verdict`` when that is given (``True`` only for
            held, ``False`` only for not held).
        detail: How it was measured (metric, tolerance, what "held" means), or why it is not testable.
        source: Where the statement and ``paper_value`` are in the paper, by title and section, e.g.
            ``"Lipton 2016, Sec. 3, Fig. 1"``.
        premises: The premise checks this claim rests on.
        effect: The paired effect it was decided on, if comparative.
        verdict: The verdict (derived from ``held`` when not given).
        scale: The scale the verdict comes from (``"quick"``, ``"medium"``, ``"full"``), when it is stated.

    Raises:
        ValueError: If ``statement`` is empty, a claim is not tested or inconclusive without a reason in
            ``detail``, or ``held`` contradicts ``verdict``.
        TypeError: If a value is not a number, a list of numbers, a string or ``None``, or ``held`` is not a
            bool or ``None``.
    """

    statement: str
    paper_value: Value
    measured: Value | list[float]
    held: bool | None = None
    detail: str = ""
    source: str = ""
    premises: tuple[Premise, ...] = ()
    effect: Effect | None = None
    verdict: Verdict | None = None
    scale: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.statement, str) or not self.statement.strip():
            raise ValueError("Claim.statement must be a non-empty string (the paper's statement)")
        object.__setattr__(self, "paper_value", _plain(self.paper_value, "Claim.paper_value"))
        object.__setattr__(self, "measured", _measured(self.measured))
        held = self.held
        if hasattr(held, "item") and getattr(held, "ndim", None) == 0:
            held = held.item()  # numpy.bool_ or a 0-d torch bool tensor
        if held is not None and not isinstance(held, bool):
            raise TypeError(f"Claim.held must be True, False or None, got {type(held).__name__}: {held!r}")
        premises = tuple(self.premises)
        if not all(isinstance(p, Premise) for p in premises):
            raise TypeError("Claim.premises must hold figures.verdict.Premise objects")
        if self.effect is not None and not isinstance(self.effect, Effect):
            raise TypeError(f"Claim.effect must be a figures.verdict.Effect, got {type(self.effect).__name__}")
        object.__setattr__(self, "premises", premises)
        verdict = self.verdict
        if verdict is None:
            verdict = Verdict.NOT_TESTED if held is None else Verdict.HELD if held else Verdict.NOT_HELD
        else:
            verdict = Verdict(verdict)
            implied = {Verdict.HELD: True, Verdict.NOT_HELD: False}.get(verdict)
            if held is not None and held is not implied:
                raise ValueError(f"Claim.held={held} contradicts verdict {verdict.value!r}; give one of them")
        detail = self.detail
        failed = [p for p in premises if not p.met]
        if failed:  # a claim whose premise fails is not tested, whatever was measured
            verdict = Verdict.NOT_TESTED
            detail = "premise not met: " + "; ".join(str(p) for p in failed) + (f". {detail}" if detail else "")
        object.__setattr__(self, "verdict", verdict)
        object.__setattr__(self, "held", {Verdict.HELD: True, Verdict.NOT_HELD: False}.get(verdict))
        object.__setattr__(self, "detail", detail)
        if verdict in (Verdict.NOT_TESTED, Verdict.INCONCLUSIVE) and not detail.strip():
            raise ValueError(f"Claim is {verdict.value}: say why in Claim.detail")

    @property
    def premise_met(self) -> bool:
        """Whether every premise holds (vacuously true without premises)."""
        return all(p.met for p in self.premises)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``)."""
        return json_fields(self, CLAIM_KEYS)


def _measured(value: Any) -> Value | list[float]:
    """A claim's measured value: as :func:`_plain`, or a list of numbers (arrays become lists)."""
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1:
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            v = _plain(v, "Claim.measured entry")
            if not isinstance(v, (int, float)):
                raise TypeError(f"Claim.measured as a list must hold numbers, got {type(v).__name__}: {v!r}")
            out.append(v)
        return out
    return _plain(value, "Claim.measured")


@dataclasses.dataclass
class Panel:
    """One rendered panel of a figure, in both renderings.

    Attributes:
        key: File-name stem of the panel (``[a-z0-9][a-z0-9_-]*``), unique within the figure.
        plotly: The interactive figure (written as ``<key>.html`` and embedded in ``index.html``).
        mpl: The static figure (written as ``<key>.png``); prefer ``matplotlib.figure.Figure(...)`` over pyplot.
        caption: Optional caption of this panel alone.

    Raises:
        ValueError: If ``key`` is not a valid file-name stem.
        TypeError: If ``plotly`` or ``mpl`` has the wrong type.
    """

    key: str
    plotly: go.Figure
    mpl: matplotlib.figure.Figure
    caption: str = ""

    def __post_init__(self) -> None:
        import matplotlib.figure
        import plotly.graph_objects as go

        if not isinstance(self.key, str) or not PANEL_RE.match(self.key):
            raise ValueError(f"Panel.key {self.key!r} must match {PANEL_RE.pattern} (it becomes a file name)")
        if not isinstance(self.plotly, go.Figure):
            raise TypeError(
                f"Panel {self.key!r}: plotly must be a plotly.graph_objects.Figure, got {type(self.plotly).__name__}"
            )
        if not isinstance(self.mpl, matplotlib.figure.Figure):
            raise TypeError(
                f"Panel {self.key!r}: mpl must be a matplotlib.figure.Figure, got {type(self.mpl).__name__}"
            )


@dataclasses.dataclass
class FigureResult:
    """What a registered figure function returns.

    Attributes:
        caption: The figure's caption: what is plotted, and how it differs from the paper's figure.
        panels: The rendered panels, in display order (at least one; keys unique).
        claims: The paper's claims checked here (may be empty for a purely illustrative figure).
        scaling: The scale used, recorded next to the figure: at least ``model``, ``data``, ``epochs`` and
            ``repetitions`` (strings or numbers), plus anything else worth stating; JSON-compatible.

    Raises:
        ValueError: If there is no panel, keys repeat, or ``scaling`` misses a required key.
        TypeError: If ``panels``/``claims`` hold the wrong types, or ``scaling`` is not JSON-compatible.
    """

    caption: str
    panels: list[Panel]
    claims: list[Claim]
    scaling: dict[str, Any]

    def __post_init__(self) -> None:
        self.panels = list(self.panels)
        self.claims = list(self.claims)
        if not self.panels:
            raise ValueError("FigureResult.panels is empty: a figure renders at least one Panel")
        if not all(isinstance(p, Panel) for p in self.panels):
            raise TypeError("FigureResult.panels must hold Panel objects")
        keys = [p.key for p in self.panels]
        if len(set(keys)) != len(keys):
            raise ValueError(f"FigureResult.panels has repeated keys: {keys}")
        if not all(isinstance(c, Claim) for c in self.claims):
            raise TypeError("FigureResult.claims must hold Claim objects")
        if not isinstance(self.scaling, Mapping):
            raise TypeError(f"FigureResult.scaling must be a dict, got {type(self.scaling).__name__}")
        missing = [k for k in SCALING_KEYS if k not in self.scaling]
        if missing:
            raise ValueError(
                f"FigureResult.scaling misses {missing}; it needs {list(SCALING_KEYS)} (and may hold more)"
            )
        self.scaling = dict(self.scaling)
        try:
            json.dumps(self.scaling, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"FigureResult.scaling must be JSON-compatible (plain str/int/float/list/dict): {e}") from e
